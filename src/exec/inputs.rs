//! A trial's inputs, for result reuse (`crate::reuse`): everything that decides what its check
//! runs and where, gathered as JSON without running anything slow. The main function is
//! [`Executor::reuse_inputs`].
//!
//! Covered: the trial's spec (runtime, machine, check, tags, parameters, expected-failure
//! rule; paths under the project made relative, so that another checkout shares the key; the
//! runtime's environment values and the names of its secrets, as hashes and names: never a
//! secret's value), the notebook's bytes, the files staged beside it (its folder, less other
//! notebooks, which are checks of their own) and its data set, the image id and registry
//! digest (container runtimes) or the interpreter and its installed distributions (host
//! runtimes), the settings and image of each service the runtime uses, the host's GPU models
//! and driver, and runtime-matrix's version and commit.

use super::Executor;
use super::data::DataSet;
use super::invocation::Invocation;
use crate::config::{CheckKind, Executor as ExecutorKind};
use crate::plan::TrialSpec;
use crate::record::TrialImage;
use crate::reuse::sha256;
use serde_json::{Map, Value, json};
use sha2::Digest;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Prints the interpreter's version, prefix and import path, one a line.
const IDENTITY_PROBE: &str = "import sys\n\
print('%d.%d.%d' % sys.version_info[:3])\n\
print(sys.implementation.name)\n\
print(sys.prefix)\n\
for p in sys.path: print(p)";

impl Executor {
    /// The inputs of `spec`'s trial. `image`: the image it ran in, when it has run; otherwise
    /// the engine is asked. An error says which input cannot be known now (an image the engine
    /// does not have yet, a notebook that cannot be read): the trial then runs.
    pub(crate) fn reuse_inputs(
        &self,
        spec: &TrialSpec,
        image: Option<&TrialImage>,
    ) -> Result<Value, String> {
        let mut inputs = Map::new();
        inputs.insert("trial".into(), Value::from(spec.name.as_str()));
        inputs.insert(
            "runtime-matrix".into(),
            json!({
                "version": env!("CARGO_PKG_VERSION"),
                "commit": env!("RUNTIME_MATRIX_COMMIT"),
            }),
        );
        inputs.insert("spec".into(), spec_inputs(spec)?);
        // The GPUs read here are this host's: a GPU machine on another host's engine has GPUs
        // and a driver this host cannot see, so its trials always run.
        if spec.machine.gpus > 0
            && let Some(endpoint) = &spec.machine.docker
            && !endpoint.starts_with("unix://")
        {
            return Err(format!(
                "the GPUs behind the engine at {endpoint} cannot be seen from this host"
            ));
        }
        inputs.insert("gpus".into(), gpu_inputs());
        let invocation = Invocation::for_trial(spec, "python");
        if let CheckKind::Notebook { path, .. } = &spec.check.kind {
            inputs.insert(
                "notebook".into(),
                Value::from(hash_file(path).map_err(|e| format!("{}: {e}", path.display()))?),
            );
            if let Some(folder) = &invocation.work_source {
                inputs.insert("staged".into(), folder_inputs(folder, path)?);
            }
        }
        if let Some(data) = &invocation.data {
            let set = DataSet::find(&data.notebooks_dir, &data.globs)
                .map_err(|error| crate::error::chain(&error))?;
            let mut files = Map::new();
            for file in &set.files {
                let hash =
                    hash_file(&file.path).map_err(|e| format!("{}: {e}", file.path.display()))?;
                files.insert(file.relative.clone(), Value::from(hash));
            }
            inputs.insert("data".into(), Value::Object(files));
        }
        let environment = match &spec.runtime.executor {
            ExecutorKind::Docker(docker) => {
                let image = match image {
                    Some(image) => image.clone(),
                    None => self
                        .docker
                        .image_for_reuse(
                            &crate::exec::engine_address(&spec.machine),
                            &docker.image,
                            docker.pull,
                            docker.build.as_ref(),
                        )?
                        .map(|info| TrialImage::from(&info))
                        .ok_or_else(|| {
                            format!("the engine does not have image `{}` yet", docker.image)
                        })?,
                };
                // Whether each secret is there (a trial without one fails), never its value.
                let secrets: BTreeMap<&str, bool> = docker
                    .secrets
                    .iter()
                    .map(|name| (name.as_str(), std::env::var_os(name).is_some()))
                    .collect();
                json!({
                    "image": { "id": image.id, "digest": image.digest },
                    "secrets-set": secrets,
                })
            }
            ExecutorKind::Host { python, packages } => {
                let jupyter = spec
                    .runtime
                    .checks
                    .iter()
                    .any(|check| matches!(check.kind, CheckKind::Notebook { .. }));
                let python = self
                    .provisioner
                    .python_before_trials(&spec.runtime.name, python, packages, jupyter)
                    .map_err(|error| crate::error::chain(&error))?;
                json!({ "python": self.python_identity(&python)? })
            }
        };
        if let Value::Object(environment) = environment {
            inputs.extend(environment);
        }
        if !spec.runtime.services.is_empty() {
            inputs.insert("services".into(), self.service_inputs(spec)?);
        }
        Ok(Value::Object(inputs))
    }

    /// The services `spec`'s runtime uses: each one's settings (its environment's values as
    /// hashes, its secrets by name) and its image's id and digest, as the engine has it.
    fn service_inputs(&self, spec: &TrialSpec) -> Result<Value, String> {
        let root = format!("{}/", spec.project.trim_end_matches('/'));
        let mut services = Map::new();
        for service in &spec.runtime.services {
            let mut settings = serde_json::to_value(service)
                .map_err(|error| format!("service `{}`'s settings: {error}", service.name))?;
            relativize(&mut settings, &root);
            if let Some(Value::Object(env)) = settings.pointer_mut("/env") {
                for (_, value) in env.iter_mut() {
                    let hashed = sha256(value.as_str().unwrap_or_default().as_bytes());
                    *value = Value::from(format!("sha256:{hashed}"));
                }
            }
            let image = self
                .docker
                .image_for_reuse(
                    &crate::exec::engine_address(&spec.machine),
                    &service.image,
                    service.pull,
                    service.build.as_ref(),
                )?
                .ok_or_else(|| {
                    format!(
                        "the engine does not have service `{}`'s image `{}` yet",
                        service.name, service.image
                    )
                })?;
            services.insert(
                service.name.clone(),
                json!({ "settings": settings, "image": { "id": image.id, "digest": image.digest } }),
            );
        }
        Ok(Value::Object(services))
    }

    /// What identifies interpreter `python`: its version, implementation, prefix, and every
    /// distribution on its import path with its version (the `*.dist-info` and `*.egg-info`
    /// names); found once per process.
    fn python_identity(&self, python: &Path) -> Result<Value, String> {
        let cell = super::live::lock(&self.identities)
            .entry(python.to_owned())
            .or_default()
            .clone();
        cell.get_or_init(|| probe_identity(python)).clone()
    }
}

fn probe_identity(python: &Path) -> Result<Value, String> {
    let mut command = std::process::Command::new(python);
    command.args(["-I", "-c", IDENTITY_PROBE]);
    let token = super::provision::unique_token("reuse-probe");
    let finished = super::process::run(command, Duration::from_secs(60), &token)
        .map_err(|error| format!("cannot run {}: {error}", python.display()))?;
    if finished.ended != super::process::Ended::Exited(0) {
        return Err(format!(
            "{} did not say what it is: {}",
            python.display(),
            super::provision::tail(&finished.output, 5)
        ));
    }
    let mut lines = finished.output.lines();
    let version = lines.next().unwrap_or_default().to_owned();
    let implementation = lines.next().unwrap_or_default().to_owned();
    let prefix = lines.next().unwrap_or_default().to_owned();
    let mut distributions = Vec::new();
    for dir in lines.filter(|line| !line.is_empty()) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".dist-info") || name.ends_with(".egg-info") {
                distributions.push(name);
            }
        }
    }
    distributions.sort();
    distributions.dedup();
    Ok(json!({
        "executable": python.display().to_string(),
        "version": version,
        "implementation": implementation,
        "prefix": prefix,
        "distributions": distributions,
    }))
}

/// The spec as plans show it, with paths under the project relative to it and the runtime's
/// environment values hashed.
fn spec_inputs(spec: &TrialSpec) -> Result<Value, String> {
    let mut value =
        serde_json::to_value(spec).map_err(|error| format!("the trial's settings: {error}"))?;
    let root = format!("{}/", spec.project.trim_end_matches('/'));
    relativize(&mut value, &root);
    if let Some(Value::Object(env)) = value.pointer_mut("/runtime/env") {
        for (_, value) in env.iter_mut() {
            let hashed = sha256(value.as_str().unwrap_or_default().as_bytes());
            *value = Value::from(format!("sha256:{hashed}"));
        }
    }
    Ok(value)
}

/// Rewrites every string under `root` to its path relative to it.
fn relativize(value: &mut Value, root: &str) {
    match value {
        Value::String(text) => {
            if let Some(relative) = text.strip_prefix(root) {
                *text = format!("./{relative}");
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| relativize(item, root)),
        Value::Object(map) => map.values_mut().for_each(|item| relativize(item, root)),
        _ => {}
    }
}

/// The host's GPU models and driver; not their UUIDs, so that identical hosts share keys.
fn gpu_inputs() -> Value {
    match crate::gpu::detect() {
        crate::gpu::Detection::Found(host) => {
            let mut gpus: Vec<Value> = host
                .gpus
                .iter()
                .map(|gpu| {
                    json!({
                        "name": gpu.name,
                        "memory_mib": gpu.memory_mib,
                        "compute_capability": gpu.compute_capability,
                    })
                })
                .collect();
            gpus.sort_by_key(|gpu| gpu.to_string());
            json!({ "driver": host.driver, "cuda_driver": host.cuda_driver, "gpus": gpus })
        }
        crate::gpu::Detection::NoDriver(_) => Value::from("no driver"),
    }
}

/// The SHA-256 of a file's bytes, read in chunks; only a regular file is opened.
fn hash_file(path: &Path) -> std::io::Result<String> {
    crate::fsx::regular_file(path)?;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The files staged from a notebook's folder (what the executors copy: hidden entries and
/// what is not a regular file left out), by relative path, each with its hash. Other
/// notebooks in it are left out: they are checks of their own, and editing one re-runs only
/// its trials (a notebook that reads another names it in `data`).
fn folder_inputs(folder: &Path, notebook: &Path) -> Result<Value, String> {
    let mut files = BTreeMap::new();
    let mut stack: Vec<PathBuf> = vec![folder.to_owned()];
    while let Some(dir) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).map_err(|error| format!("{}: {error}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|error| format!("{}: {error}", dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            let file_type = entry
                .file_type()
                .map_err(|error| format!("{}: {error}", path.display()))?;
            if file_type.is_dir() {
                stack.push(path);
                continue;
            }
            if name.ends_with(".ipynb") || path == notebook {
                continue;
            }
            if crate::fsx::regular_file(&path).is_err() {
                continue;
            }
            let relative = path
                .strip_prefix(folder)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            let hash = hash_file(&path).map_err(|error| format!("{}: {error}", path.display()))?;
            files.insert(relative, Value::from(hash));
        }
    }
    Ok(Value::Object(files.into_iter().collect()))
}
