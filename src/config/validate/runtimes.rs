//! `[runtimes.NAME]`: the executor (host, or docker with its image and limits), environment and
//! target machines of each runtime. Its checks are compiled in [`super::checks`].

use super::checks::{CheckDefaults, NotebooksDir, Override};
use super::compiler::{Compiler, DEFAULT_CELL_TIMEOUT, DEFAULT_TIMEOUT, key_part, shown};
use crate::config::matrix::{Build, DockerRuntime, Executor, Isolation, PullPolicy, Runtime};
use crate::config::raw::{RawBuild, RawRuntime};
use crate::config::suggest::did_you_mean;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const EXECUTORS: [&str; 2] = ["host", "docker"];
const PULL_POLICIES: [&str; 3] = ["if-missing", "always", "never"];

/// What runtimes are compiled against: the sections compiled before them.
pub(super) struct Scope<'a> {
    /// The folder holding the matrix file.
    pub(super) root: &'a Path,
    /// The declared stages.
    pub(super) stages: &'a [String],
    /// The declared machines.
    pub(super) machine_names: &'a [&'a str],
    /// Where notebook globs are resolved.
    pub(super) notebooks_dir: &'a NotebooksDir,
}

impl Compiler {
    /// The runtimes, in name order, with their checks; `overrides` learn which were used.
    pub(super) fn runtimes(
        &mut self,
        raw: &BTreeMap<String, RawRuntime>,
        scope: &Scope,
        overrides: &mut [Override],
    ) -> Vec<Runtime> {
        let mut runtimes = Vec::new();
        for (name, r) in raw {
            runtimes.extend(self.runtime(name, r, scope, overrides));
        }
        if raw.is_empty() {
            self.problem(
                "runtimes",
                "no runtimes declared (add e.g. `[runtimes.NAME]` with `notebooks = [\"*.ipynb\"]`)",
            );
        }
        runtimes
    }

    /// One runtime; `None` when its executor is unknown, since nothing else can be judged.
    fn runtime(
        &mut self,
        name: &str,
        r: &RawRuntime,
        scope: &Scope,
        overrides: &mut [Override],
    ) -> Option<Runtime> {
        let key = format!("runtimes.{}", key_part(name));
        self.name(&key, "runtime", name);
        let executor = self.executor(&key, scope.root, r)?;
        self.env(&key, &r.env);
        for (text, setting) in [
            (&r.python, "python"),
            (&r.image, "image"),
            (&r.network, "network"),
        ] {
            if let Some(text) = text {
                self.no_nul(&format!("{key}.{setting}"), "the value", text);
            }
        }
        for package in &r.packages {
            self.no_nul(&format!("{key}.packages"), "a package", package);
        }
        let machines = self.target_machines(&key, r.machines.as_deref(), scope.machine_names);
        let defaults = CheckDefaults {
            timeout: self.duration(
                &format!("{key}.timeout"),
                r.timeout.as_deref(),
                DEFAULT_TIMEOUT,
            ),
            cell_timeout: self.duration(
                &format!("{key}.cell-timeout"),
                r.cell_timeout.as_deref(),
                DEFAULT_CELL_TIMEOUT,
            ),
            tags: r.tags.clone(),
            stages: self
                .stage_list(&format!("{key}.stages"), r.stages.as_ref(), scope.stages)
                .unwrap_or_else(|| scope.stages.to_vec()),
            data: self.data_globs(&format!("{key}.data"), &r.data),
        };
        if !r.data.is_empty() && r.notebooks.is_empty() {
            self.warn(format!(
                "{key}.data has no effect: the runtime has no notebooks, and data is staged \
                 with notebooks only"
            ));
        }

        let mut checks = self.notebook_checks(
            &key,
            &r.notebooks,
            &defaults,
            scope.notebooks_dir,
            overrides,
        );
        checks.extend(self.command_checks(&key, &r.commands, &defaults, scope.stages));
        let is_docker = matches!(executor, Executor::Docker(_));
        checks.extend(self.gpu_checks(&key, r, is_docker, &defaults));
        if r.notebooks.is_empty() && r.commands.is_empty() && r.framework.is_none() {
            self.problem(
                &key,
                "declares no notebooks and no commands, so it has nothing to check",
            );
        }
        for check in &mut checks {
            check.tags.sort();
            check.tags.dedup();
        }
        Some(Runtime {
            name: name.to_owned(),
            description: r.description.clone(),
            executor,
            env: r.env.clone(),
            machines,
            parameters: self.parameters(&key, &r.parameters),
            checks,
            // Filled in by the services section, which names the runtimes using each.
            services: Vec::new(),
        })
    }

    /// The variables at `key.env`: valid names, values without NUL.
    pub(super) fn env(&mut self, key: &str, env: &BTreeMap<String, String>) {
        for (env_name, value) in env {
            if env_name.is_empty() || env_name.contains(['=', '\0']) {
                self.problem(
                    format!("{key}.env"),
                    format!(
                        "`{}` is not a valid environment variable name",
                        shown(env_name)
                    ),
                );
            } else {
                self.no_nul(
                    &format!("{key}.env.{}", key_part(env_name)),
                    "the value",
                    value,
                );
            }
        }
    }

    /// Where the runtime's checks run; `None` for an unknown executor.
    fn executor(&mut self, key: &str, root: &Path, r: &RawRuntime) -> Option<Executor> {
        let default_executor = if r.image.is_some() { "docker" } else { "host" };
        match r.executor.as_deref().unwrap_or(default_executor) {
            "host" => {
                for (set, name) in [
                    (r.image.is_some(), "image"),
                    (r.pull.is_some(), "pull"),
                    (r.build.is_some(), "build"),
                    (r.memory.is_some(), "memory"),
                    (r.pids.is_some(), "pids"),
                    (r.network.is_some(), "network"),
                    (r.reuse_container, "reuse-container"),
                    (r.isolation.is_some(), "isolation"),
                    (!r.secrets.is_empty(), "secrets"),
                ] {
                    if set {
                        self.problem(
                            format!("{key}.{name}"),
                            "only applies to docker runtimes (set `image`, or executor = \"docker\")",
                        );
                    }
                }
                Some(Executor::Host {
                    python: r.python.clone().unwrap_or_else(|| "python3".into()),
                    packages: r.packages.clone(),
                })
            }
            "docker" => Some(Executor::Docker(Box::new(
                self.docker_runtime(key, root, r),
            ))),
            other => {
                let hint = did_you_mean(other, EXECUTORS);
                self.problem(
                    format!("{key}.executor"),
                    format!("unknown executor `{other}`{hint} (known: host, docker)"),
                );
                None
            }
        }
    }

    /// The machines a runtime targets, in name order: every machine unless it lists some.
    fn target_machines(
        &mut self,
        key: &str,
        list: Option<&[String]>,
        machine_names: &[&str],
    ) -> Vec<String> {
        let Some(list) = list else {
            return machine_names.iter().map(|m| m.to_string()).collect();
        };
        let mut seen = BTreeSet::new();
        for machine in list {
            if !machine_names.contains(&machine.as_str()) {
                let hint = did_you_mean(machine, machine_names.iter().copied());
                self.problem(
                    format!("{key}.machines"),
                    format!("unknown machine `{machine}`{hint}"),
                );
            } else if !seen.insert(machine) {
                self.problem(
                    format!("{key}.machines"),
                    format!("machine `{machine}` is listed twice"),
                );
            }
        }
        if list.is_empty() {
            self.problem(
                format!("{key}.machines"),
                "an empty machine list would never run (remove the key to target every machine)",
            );
        }
        let mut list = list.to_vec();
        list.sort();
        list.dedup();
        list
    }

    /// The settings of a docker runtime: image, pull policy, build, limits and secrets.
    fn docker_runtime(&mut self, key: &str, root: &Path, r: &RawRuntime) -> DockerRuntime {
        if !r.packages.is_empty() {
            self.problem(
                format!("{key}.packages"),
                "only applies to host runtimes (install packages in the image)",
            );
        }
        let image = r.image.clone().unwrap_or_default();
        if image.trim().is_empty() {
            self.problem(
                format!("{key}.image"),
                "a docker runtime needs `image`, e.g. \"jupyter/base-notebook:latest\"",
            );
        }
        let pull = self.pull_policy(key, r.pull.as_deref());
        let build = r
            .build
            .as_ref()
            .and_then(|build| self.build(key, root, build));
        let memory = r.memory.as_deref().and_then(|text| self.memory(key, text));
        if r.pids.is_some_and(|pids| pids < 16) {
            self.problem(
                format!("{key}.pids"),
                "a process limit below 16 cannot start a kernel",
            );
        }
        self.secrets(key, &r.secrets, &r.env);
        DockerRuntime {
            image,
            pull,
            build,
            python: r.python.clone().unwrap_or_else(|| "python3".into()),
            memory,
            pids: r.pids,
            network: r.network.clone().unwrap_or_else(|| "none".into()),
            isolation: self.isolation(key, r),
            secrets: r.secrets.clone(),
        }
    }

    /// The pull policy at `key.pull`: `if-missing` when unset.
    pub(super) fn pull_policy(&mut self, key: &str, pull: Option<&str>) -> PullPolicy {
        match pull.unwrap_or("if-missing") {
            "if-missing" => PullPolicy::IfMissing,
            "always" => PullPolicy::Always,
            "never" => PullPolicy::Never,
            other => {
                let hint = did_you_mean(other, PULL_POLICIES);
                self.problem(
                    format!("{key}.pull"),
                    format!(
                        "unknown pull policy `{other}`{hint} (known: if-missing, always, never)"
                    ),
                );
                PullPolicy::IfMissing
            }
        }
    }

    /// The names at `key.secrets`: valid variable names, none also set in `env`.
    pub(super) fn secrets(
        &mut self,
        key: &str,
        secrets: &[String],
        env: &BTreeMap<String, String>,
    ) {
        for secret in secrets {
            if secret.is_empty() || secret.contains(['=', '\0']) {
                self.problem(
                    format!("{key}.secrets"),
                    format!(
                        "`{}` is not a valid environment variable name",
                        shown(secret)
                    ),
                );
            }
            if env.contains_key(secret) {
                self.problem(
                    format!("{key}.secrets"),
                    format!("`{secret}` is also set in env; secrets take their value from the host's environment"),
                );
            }
        }
    }

    /// How far apart the runtime's trials are kept; `reuse-container`, from before runners,
    /// warns that it has no effect any more.
    fn isolation(&mut self, key: &str, r: &RawRuntime) -> Isolation {
        if r.reuse_container {
            self.warn(format!(
                "{key}.reuse-container has no effect any more: a runtime's trials on a machine \
                 share one runner container by default (remove it; `isolation = \"container\"` \
                 gives each trial its own)"
            ));
        }
        match r.isolation.as_deref() {
            None | Some("notebook") => Isolation::Notebook,
            Some("container") => Isolation::Container,
            Some(other) => {
                self.problem(
                    format!("{key}.isolation"),
                    format!(
                        "unknown isolation `{}` (use `notebook` or `container`)",
                        shown(other)
                    ),
                );
                Isolation::Notebook
            }
        }
    }

    /// How the image is built: a context folder with its Dockerfile, or a script.
    pub(super) fn build(&mut self, key: &str, root: &Path, build: &RawBuild) -> Option<Build> {
        let (context, dockerfile, script) = match build {
            RawBuild::Context(context) => (Some(context.clone()), None, None),
            RawBuild::Table(t) => (t.context.clone(), t.dockerfile.clone(), t.script.clone()),
        };
        match (context, script) {
            (Some(context), None) => {
                let dockerfile = dockerfile.unwrap_or_else(|| "Dockerfile".into());
                let folder = root.join(&context);
                if !folder.join(&dockerfile).is_file() {
                    self.problem(
                        format!("{key}.build"),
                        format!("no `{dockerfile}` in build context `{context}`"),
                    );
                }
                Some(Build::Context {
                    context: folder,
                    dockerfile,
                })
            }
            (None, Some(script)) => {
                let path = root.join(&script);
                if !path.is_file() {
                    self.problem(
                        format!("{key}.build.script"),
                        format!("build script `{script}` does not exist"),
                    );
                }
                Some(Build::Script { script: path })
            }
            _ => {
                self.problem(
                    format!("{key}.build"),
                    "give either a context folder (`build = \"images/x\"` or `{ context, dockerfile }`) or `{ script }`",
                );
                None
            }
        }
    }

    /// A memory limit in bytes, at least Docker's minimum.
    fn memory(&mut self, key: &str, text: &str) -> Option<i64> {
        match parse_bytes(text) {
            Some(bytes) if bytes >= 6 * 1024 * 1024 => Some(bytes),
            Some(_) => {
                self.problem(
                    format!("{key}.memory"),
                    format!("memory limit `{text}` is below Docker's minimum of 6m"),
                );
                None
            }
            None => {
                self.problem(
                    format!("{key}.memory"),
                    format!("invalid memory size `{text}` (use e.g. \"512m\" or \"4g\")"),
                );
                None
            }
        }
    }
}

/// `512m`, `4g`, `1.5GiB`, `1048576`: Docker's binary multiples.
fn parse_bytes(text: &str) -> Option<i64> {
    let text = text.trim().to_ascii_lowercase();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let multiplier: f64 = match unit.trim().trim_end_matches("ib").trim_end_matches('b') {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((number * multiplier) as i64)
}
