//! The Docker executor: each trial runs in a container of its runtime's image on its
//! machine's engine. Files go in and executed notebooks come out through the engine's archive
//! API, so a remote engine works as well as the local one; every command runs under an
//! in-container time limit, because stopping a `docker exec` client does not stop the process.

use super::Outcome;
use super::live::{self, Owner, lock};
use super::verdict::{self, NotebookRun, setup_failure};
use crate::config::{Build, CheckKind, DockerRuntime, PullPolicy};
use crate::engine::{
    ContainerSpec, Engine, ImageInfo, LABEL_HOST, LABEL_KEEP, LABEL_PID, LABEL_PID_START,
    LABEL_RUN, LABEL_TRIAL, PullProgress,
};
use crate::error::{EngineError, chain};
use crate::notebook::{FailureKind, ProcessEnd};
use crate::plan::TrialSpec;
use crate::record::{Category, Failure, RunDir};
use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

const HOOKS: &str = include_str!("nbconvert_hooks.py");
/// How long past a check's deadline the harness waits for the in-container limit to act.
const GRACE: Duration = Duration::from_secs(30);

/// When containers are kept instead of removed (`RUNTIME_MATRIX_KEEP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Keep {
    /// Always removed.
    #[default]
    Never,
    /// Kept when the trial failed.
    Failed,
    /// Always kept.
    Always,
}

impl Keep {
    /// Parses `failed` or `always`; anything else is an error naming the accepted values.
    pub fn parse(text: &str) -> Result<Keep, String> {
        match text.trim() {
            "" | "never" => Ok(Keep::Never),
            "failed" => Ok(Keep::Failed),
            "always" => Ok(Keep::Always),
            other => Err(format!(
                "invalid RUNTIME_MATRIX_KEEP `{other}` (use `failed` or `always`)"
            )),
        }
    }
}

type Cell<T> = Arc<OnceCell<Result<T, String>>>;

/// Runs Docker trials; one per process, shared by its trials.
pub(super) struct DockerExecutor {
    runtime: tokio::runtime::Runtime,
    owner: &'static Owner,
    keep: Keep,
    run_id: String,
    locks: std::path::PathBuf,
    /// Every image the matrix knows how to build, so that a Dockerfile's `FROM` one of them
    /// builds it first.
    builds: BTreeMap<String, Build>,
    engines: Mutex<HashMap<String, Arc<OnceCell<Engine>>>>,
    images: Mutex<HashMap<(String, String, PullPolicy), Cell<ImageInfo>>>,
    reused: Mutex<HashMap<(String, String), Cell<String>>>,
}

impl DockerExecutor {
    pub(super) fn new(
        builds: BTreeMap<String, Build>,
        keep: Keep,
        run_id: &str,
        cache: &Path,
    ) -> DockerExecutor {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("runtime-matrix-engine")
            .build()
            .expect("a tokio runtime can be built");
        DockerExecutor {
            runtime,
            owner: Owner::me(),
            keep,
            run_id: run_id.to_owned(),
            locks: cache.join("images"),
            builds,
            engines: Mutex::default(),
            images: Mutex::default(),
            reused: Mutex::default(),
        }
    }

    pub(super) fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime.handle()
    }

    pub(super) fn run(
        &self,
        spec: &TrialSpec,
        docker: &DockerRuntime,
        run: &RunDir,
        gpus: &[String],
    ) -> Outcome {
        let Some(mut container) = ContainerSpec::for_trial(spec) else {
            return setup_failure(Category::Infrastructure, "not a docker trial".into());
        };
        if !gpus.is_empty() {
            container = container
                .with_gpus(crate::engine::GpuRequest::Devices(gpus.to_vec()))
                .with_env("RUNTIME_MATRIX_GPUS", gpus.join(","));
        }
        let mut secrets = BTreeMap::new();
        for name in &docker.secrets {
            match std::env::var(name) {
                Ok(value) => {
                    secrets.insert(name.clone(), value);
                }
                Err(_) => {
                    return setup_failure(
                        Category::Infrastructure,
                        format!(
                            "secret `{name}` of runtime `{}` is not set in the environment (export it before the run)",
                            spec.runtime.name
                        ),
                    );
                }
            }
        }
        let outcome = match self.run_in_container(spec, docker, &container, &secrets, run, gpus) {
            Ok(outcome) => outcome,
            Err(error) => setup_failure(category_of(&error), chain(&error)),
        };
        redact(outcome, secrets.values())
    }

    fn run_in_container(
        &self,
        spec: &TrialSpec,
        docker: &DockerRuntime,
        container: &ContainerSpec,
        secrets: &BTreeMap<String, String>,
        run: &RunDir,
        gpus: &[String],
    ) -> Result<Outcome, EngineError> {
        let engine = self
            .runtime
            .block_on(self.engine(spec.machine.docker.as_deref()))?;
        let image_info = self.runtime.block_on(self.image(
            &engine,
            &docker.image,
            docker.pull,
            docker.build.as_ref(),
        ))?;
        let host = match crate::gpu::detect() {
            crate::gpu::Detection::Found(host) => Some(host),
            crate::gpu::Detection::NoDriver(_) => None,
        };
        if let Some(host) = host.filter(|_| spec.machine.gpus > 0) {
            let declared = crate::gpu::checks::declared_cuda(&image_info.env, &image_info.labels);
            if let Err(summary) = crate::gpu::checks::preflight(&docker.image, declared, host) {
                let mut outcome = setup_failure(Category::Runtime, summary);
                outcome.failure = outcome.failure.map(Failure::with_cause);
                return Ok(Outcome {
                    image: Some(image_info),
                    ..outcome
                });
            }
        }
        let lease = self.container(&engine, spec, docker, container, secrets)?;
        let folder = crate::engine::trial_folder(&spec.name);

        let (files, original) = match &spec.check.kind {
            CheckKind::Notebook { path, .. } => {
                let original: serde_json::Value = std::fs::read(path)
                    .ok()
                    .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                    .unwrap_or_default();
                let mut files = folder_files(
                    path.parent().unwrap_or(Path::new(".")),
                    &format!("{folder}/work"),
                )
                .map_err(|error| io_error("read the notebook's folder for", &spec.name, error))?;
                files.insert(
                    format!("{folder}/hooks.py"),
                    Some(HOOKS.as_bytes().to_vec()),
                );
                (files, Some(original))
            }
            CheckKind::Command { .. } => (BTreeMap::from([(format!("{folder}/work"), None)]), None),
            CheckKind::GpuVisible => (
                BTreeMap::from([
                    (format!("{folder}/work"), None),
                    (
                        format!("{folder}/probe.py"),
                        Some(crate::gpu::PROBE_SCRIPT.as_bytes().to_vec()),
                    ),
                ]),
                None,
            ),
            CheckKind::GpuFramework { .. } => (
                BTreeMap::from([
                    (format!("{folder}/work"), None),
                    (
                        format!("{folder}/framework.py"),
                        Some(crate::gpu::FRAMEWORK_SCRIPT.as_bytes().to_vec()),
                    ),
                ]),
                None,
            ),
        };
        let archive =
            archive(&files).map_err(|error| io_error("pack the files of", &spec.name, error))?;
        self.runtime
            .block_on(engine.upload(&lease.id, "/", archive))?;

        let env: Vec<String> = container
            .env
            .iter()
            .map(|(key, value)| format!("{key}={}", secrets.get(key).unwrap_or(value)))
            .collect();
        let wait = spec.check.timeout + GRACE;
        let exec = self.runtime.block_on(engine.exec(
            &lease.id,
            container.command.clone(),
            &container.workdir,
            env,
            wait,
        ))?;
        let end = match exec.exit_code {
            Some(0) => ProcessEnd::Success,
            // `timeout -s KILL` exits 137 when it killed the check at the deadline.
            Some(137) if exec.elapsed + Duration::from_millis(500) >= spec.check.timeout => {
                ProcessEnd::Deadline
            }
            Some(code) => ProcessEnd::Failed(i32::try_from(code).unwrap_or(-1)),
            None => ProcessEnd::Deadline,
        };
        if exec.exit_code.is_none() {
            // The in-container limit did not act: the container cannot be trusted any more.
            lease.poison();
        }

        let outcome = if let Some(missing) =
            missing_tool(&exec.output, exec.exit_code, &docker.python, &docker.image)
        {
            Outcome {
                failure: Some(Failure {
                    kind: FailureKind::MissingTool,
                    category: Category::Runtime,
                    summary: missing,
                    cell: None,
                    exit_code: exec.exit_code.and_then(|c| i32::try_from(c).ok()),
                    output_tail: Some(super::provision::tail(&exec.output, 30)),
                    cause: None,
                }),
                ..Outcome::default()
            }
        } else {
            match (&spec.check.kind, original) {
                (CheckKind::Notebook { relative, path }, Some(original)) => {
                    let file = path.file_name().unwrap_or_default().to_string_lossy();
                    let progress = self
                        .runtime
                        .block_on(
                            engine.download_file(&lease.id, &format!("{folder}/progress.jsonl")),
                        )
                        .ok()
                        .flatten()
                        .unwrap_or_default();
                    let executed = match end {
                        ProcessEnd::Success => self.runtime.block_on(
                            engine.download_file(&lease.id, &format!("{folder}/out/{file}")),
                        )?,
                        _ => None,
                    };
                    let progress = String::from_utf8_lossy(&progress);
                    let result = NotebookRun {
                        original: &original,
                        progress: &progress,
                        output: &exec.output,
                        end,
                        executed,
                    };
                    verdict::notebook(spec, run, relative, result)
                }
                (CheckKind::Command { run: line }, _) => {
                    verdict::command(spec, line, end, &exec.output)
                }
                (kind @ (CheckKind::GpuVisible | CheckKind::GpuFramework { .. }), _) => {
                    let judged =
                        verdict::judge_gpu_check(kind, &exec.output, gpus, spec.machine.gpus, host);
                    verdict::gpu_check(spec, judged, end, &exec.output)
                }
                (CheckKind::Notebook { .. }, None) => unreachable!("notebooks are read above"),
            }
        };
        let mut outcome = Outcome {
            image: Some(image_info),
            ..outcome
        };
        if outcome.failure.is_some() && exec.exit_code.is_some() {
            let (running, oom_kills) = self
                .runtime
                .block_on(engine.after_failure(&lease.id, exec.exit_code == Some(137)));
            let note = if !running {
                Some("the container stopped while the check ran: it was killed from outside, or by the engine".to_owned())
            } else if oom_kills > 0 {
                let limit = docker
                    .memory
                    .map(|m| format!(" of {} MiB", m / (1024 * 1024)))
                    .unwrap_or_default();
                Some(format!(
                    "the container hit its memory limit{limit}: the OOM killer ended {oom_kills} process(es); raise `memory`, or use less"
                ))
            } else {
                None
            };
            if let (Some(note), Some(failure)) = (note, outcome.failure.as_mut()) {
                failure.summary = format!("{} ({note})", failure.summary);
            }
        }
        Ok(self.finish(lease, spec, container, outcome))
    }

    /// Removes or keeps the trial's container, as `RUNTIME_MATRIX_KEEP` says.
    fn finish(
        &self,
        lease: Lease<'_>,
        spec: &TrialSpec,
        container: &ContainerSpec,
        outcome: Outcome,
    ) -> Outcome {
        let keep = match self.keep {
            Keep::Never => false,
            Keep::Failed => outcome.failure.is_some(),
            Keep::Always => true,
        };
        if keep && !lease.reused {
            let prefix = match lease.engine.endpoint() {
                "unix:///var/run/docker.sock" => String::new(),
                endpoint => format!("DOCKER_HOST={endpoint} "),
            };
            let id = lease.keep();
            let short: String = id.chars().take(12).collect();
            eprintln!(
                "runtime-matrix: kept container {short} of {} (remove it with `runtime-matrix clean`):\n  {prefix}docker exec -it {short} bash\n  {prefix}docker exec -it -w {} {short} {}",
                spec.name,
                container.workdir,
                shell_words(&container.command)
            );
        }
        outcome
    }

    /// The engine at `endpoint`, connected once per process; the first connection reaps the
    /// containers of runs on this host whose process is gone.
    async fn engine(&self, endpoint: Option<&str>) -> Result<Engine, EngineError> {
        let key = endpoint.unwrap_or("").to_owned();
        let cell = lock(&self.engines).entry(key).or_default().clone();
        if let Some(engine) = cell.get() {
            return Ok(engine.clone());
        }
        // A failed connection is not cached: the engine may come back for later trials.
        let engine = Engine::connect(endpoint).await?;
        let engine = cell
            .get_or_init(|| async {
                reap(&engine, self.owner).await;
                engine
            })
            .await;
        Ok(engine.clone())
    }

    /// The image `reference`, resolved once per process (and built or pulled at most once per
    /// run, across processes, under a file lock).
    async fn image(
        &self,
        engine: &Engine,
        reference: &str,
        pull: PullPolicy,
        build: Option<&Build>,
    ) -> Result<ImageInfo, EngineError> {
        let key = (engine.endpoint().to_owned(), reference.to_owned(), pull);
        let cell = lock(&self.images).entry(key).or_default().clone();
        let resolved = cell
            .get_or_init(|| async {
                self.resolve(engine, reference, pull, build)
                    .await
                    .map_err(|e| chain(&e))
            })
            .await;
        match resolved {
            Ok(info) => Ok(info.clone()),
            Err(message) => Err(EngineError::Earlier {
                message: message.clone(),
                image: true,
            }),
        }
    }

    async fn resolve(
        &self,
        engine: &Engine,
        reference: &str,
        pull: PullPolicy,
        build: Option<&Build>,
    ) -> Result<ImageInfo, EngineError> {
        let present = engine.image(reference).await?;
        match (pull, present) {
            (PullPolicy::Never, Some(info)) | (PullPolicy::IfMissing, Some(info)) => {
                return Ok(info);
            }
            (PullPolicy::Never, None) => {
                return Err(EngineError::ImageMissing {
                    image: reference.to_owned(),
                    hint: " and pull = \"never\" (build or load it first, or set pull = \"if-missing\")".into(),
                });
            }
            _ => {}
        }
        // Pull or build under a lock shared with other processes of this host.
        let lock_path = self
            .locks
            .join(format!("{:016x}.lock", crate::names::folder_key(reference)));
        let marker = lock_path.with_extension(format!("run-{}", self.run_id));
        let _lock = tokio::task::spawn_blocking({
            let lock_path = lock_path.clone();
            move || -> std::io::Result<std::fs::File> {
                std::fs::create_dir_all(lock_path.parent().unwrap_or(Path::new(".")))?;
                let file = std::fs::File::create(&lock_path)?;
                file.lock()?;
                Ok(file)
            }
        })
        .await
        .map_err(|e| io_error("lock", reference, std::io::Error::other(e)))?
        .map_err(|e| io_error("lock", reference, e))?;
        if let Some(info) = engine.image(reference).await?
            && (pull == PullPolicy::IfMissing || marker.exists())
        {
            return Ok(info);
        }
        match build {
            Some(build) => self.build(engine, reference, build).await?,
            None => pull_with_progress(engine, reference).await?,
        }
        let _ = std::fs::write(&marker, b"");
        engine
            .image(reference)
            .await?
            .ok_or_else(|| EngineError::ImageMissing {
                image: reference.to_owned(),
                hint: " after it was built or pulled (did the build tag another name?)".into(),
            })
    }

    async fn build(
        &self,
        engine: &Engine,
        reference: &str,
        build: &Build,
    ) -> Result<(), EngineError> {
        let start = Instant::now();
        match build {
            Build::Context {
                context,
                dockerfile,
            } => {
                // Images this one is built FROM, when the matrix knows how to build them.
                let text = std::fs::read_to_string(context.join(dockerfile)).unwrap_or_default();
                for base in from_images(&text) {
                    if let Some(base_build) = self.builds.get(&base).filter(|_| base != reference) {
                        Box::pin(self.image(
                            engine,
                            &base,
                            PullPolicy::IfMissing,
                            Some(base_build),
                        ))
                        .await?;
                    }
                }
                eprintln!(
                    "runtime-matrix: building image {reference} from {}",
                    context.display()
                );
                engine
                    .build(reference, context, dockerfile, |line| {
                        if line.starts_with("Step ") {
                            eprintln!("runtime-matrix:   {line}");
                        }
                    })
                    .await?;
            }
            Build::Script { script } => {
                eprintln!(
                    "runtime-matrix: building image {reference} with {} (once; later runs reuse it)",
                    script.display()
                );
                let mut command = std::process::Command::new(script);
                command
                    .current_dir(script.parent().unwrap_or(Path::new(".")))
                    .env("RUNTIME_MATRIX_IMAGE", reference)
                    .env("DOCKER_HOST", engine.endpoint());
                let token = format!(
                    "build-{}-{}",
                    std::process::id(),
                    crate::names::folder_key(reference)
                );
                let finished = tokio::task::spawn_blocking(move || {
                    super::process::run(command, Duration::from_secs(3600), &token)
                })
                .await
                .map_err(|e| {
                    io_error(
                        "run the build script of",
                        reference,
                        std::io::Error::other(e),
                    )
                })?
                .map_err(|e| io_error("run the build script of", reference, e))?;
                if finished.ended != super::process::Ended::Exited(0) {
                    return Err(EngineError::Build {
                        image: reference.to_owned(),
                        from: script.display().to_string(),
                        output: super::provision::tail(&finished.output, 30),
                    });
                }
            }
        }
        eprintln!(
            "runtime-matrix: built image {reference} in {:.0?}",
            start.elapsed()
        );
        Ok(())
    }

    /// A container for `spec`: its own, or the runtime's shared one on this machine.
    fn container(
        &self,
        engine: &Engine,
        spec: &TrialSpec,
        docker: &DockerRuntime,
        container: &ContainerSpec,
        secrets: &BTreeMap<String, String>,
    ) -> Result<Lease<'_>, EngineError> {
        let mut body = container.clone().with_label(LABEL_RUN, &self.run_id);
        body = body
            .with_label(LABEL_PID, self.owner.pid.to_string())
            .with_label(LABEL_PID_START, &self.owner.start)
            .with_label(LABEL_HOST, &self.owner.host);
        if self.keep != Keep::Never {
            body = body.with_label(
                LABEL_KEEP,
                if self.keep == Keep::Always {
                    "always"
                } else {
                    "failed"
                },
            );
        }
        if !docker.reuse_container {
            let id = self.runtime.block_on(self.create(
                engine,
                &body,
                secrets,
                &spec.name,
                &spec.machine.name,
            ))?;
            return Ok(Lease {
                executor: self,
                engine: engine.clone(),
                id,
                reused: false,
                armed: true,
            });
        }
        let shared = format!("{}::{}", spec.runtime.name, spec.machine.name);
        let key = (spec.runtime.name.clone(), spec.machine.name.clone());
        let cell = lock(&self.reused).entry(key).or_default().clone();
        let body = body.with_label(LABEL_TRIAL, &shared);
        let id = self.runtime.block_on(cell.get_or_init(|| async {
            self.create(engine, &body, secrets, &shared, &spec.machine.name)
                .await
                .map_err(|e| chain(&e))
        }));
        match id {
            Ok(id) => Ok(Lease {
                executor: self,
                engine: engine.clone(),
                id: id.clone(),
                reused: true,
                armed: false,
            }),
            Err(message) => Err(EngineError::Earlier {
                message: message.clone(),
                image: false,
            }),
        }
    }

    async fn create(
        &self,
        engine: &Engine,
        container: &ContainerSpec,
        secrets: &BTreeMap<String, String>,
        name: &str,
        machine: &str,
    ) -> Result<String, EngineError> {
        let readable: String = name
            .replace("::", "-")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .take(48)
            .collect();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let unique = format!("runtime-matrix-{readable}-{}-{nanos:08x}", self.owner.pid);
        let creating = live::creating();
        if let Some(signal) = live::interrupted() {
            return Err(EngineError::Earlier {
                message: format!("interrupted by signal {signal}"),
                image: false,
            });
        }
        let id = engine
            .create_container(&unique, container.create_body(secrets), machine)
            .await?;
        live::track_container(&id, engine);
        drop(creating);
        if let Err(error) = engine.start_container(&id, machine).await {
            let _ = engine.remove_container(&id).await;
            live::forget_container(&id);
            return Err(error);
        }
        Ok(id)
    }

    /// Removes the containers shared by several trials.
    pub(super) fn shutdown(&self) {
        let reused: Vec<Cell<String>> = lock(&self.reused).drain().map(|(_, cell)| cell).collect();
        let engines: Vec<Engine> = lock(&self.engines)
            .values()
            .filter_map(|cell| cell.get().cloned())
            .collect();
        for cell in reused {
            if let Some(Ok(id)) = cell.get() {
                for engine in &engines {
                    if self.runtime.block_on(engine.remove_container(id)).is_ok() {
                        live::forget_container(id);
                        break;
                    }
                }
            }
        }
    }
}

/// A trial's hold on a container: removed when dropped (after success, failure or a panic),
/// unless kept or shared.
struct Lease<'a> {
    executor: &'a DockerExecutor,
    engine: Engine,
    id: String,
    reused: bool,
    armed: bool,
}

impl Lease<'_> {
    /// Leaves the container in place; returns its id.
    fn keep(mut self) -> String {
        self.armed = false;
        live::forget_container(&self.id);
        self.id.clone()
    }

    /// Marks a shared container as unusable: it is removed now, and the next trial gets a new one.
    fn poison(&self) {
        let executor = self.executor;
        if self.reused {
            lock(&executor.reused)
                .retain(|_, cell| !matches!(cell.get(), Some(Ok(id)) if id == &self.id));
            let _ = executor
                .runtime
                .block_on(self.engine.remove_container(&self.id));
            live::forget_container(&self.id);
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if self.armed {
            match self
                .executor
                .runtime
                .block_on(self.engine.remove_container(&self.id))
            {
                Ok(()) => live::forget_container(&self.id),
                Err(error) => eprintln!("runtime-matrix: {}", chain(&error)),
            }
        }
    }
}

/// Removes the containers that runs on this host left behind when they were killed.
async fn reap(engine: &Engine, owner: &Owner) {
    let Ok(containers) = engine.our_containers().await else {
        return;
    };
    let mut removed = 0;
    for container in containers {
        let labels = container.labels.unwrap_or_default();
        if owner.is_orphan(&labels)
            && let Some(id) = container.id
            && engine.remove_container(&id).await.is_ok()
        {
            removed += 1;
        }
    }
    if removed > 0 {
        eprintln!("runtime-matrix: removed {removed} container(s) left by runs that are gone");
    }
}

/// What `python` in `image` has: runs one short, labelled container that imports nbconvert and
/// ipykernel, and removes it. `Ok` holds the versions; `Err` what is missing.
pub async fn image_tools(engine: &Engine, image: &str, python: &str) -> Result<String, String> {
    let owner = Owner::me();
    let spec = ContainerSpec::new(image)
        .with_label(LABEL_PID, owner.pid.to_string())
        .with_label(LABEL_PID_START, &owner.start)
        .with_label(LABEL_HOST, &owner.host)
        .with_label(LABEL_TRIAL, "doctor");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let name = format!("runtime-matrix-doctor-{}-{nanos:08x}", owner.pid);
    let id = engine
        .create_container(&name, spec.create_body(&BTreeMap::new()), "doctor")
        .await
        .map_err(|e| chain(&e))?;
    live::track_container(&id, engine);
    let script = "import sys, nbconvert, ipykernel; print('python %d.%d.%d, nbconvert %s, ipykernel %s' % (sys.version_info[:3] + (nbconvert.__version__, ipykernel.__version__)))";
    let command = ["timeout", "-s", "KILL", "60", python, "-c", script]
        .map(String::from)
        .to_vec();
    let result = async {
        engine
            .start_container(&id, "doctor")
            .await
            .map_err(|e| chain(&e))?;
        let exec = engine
            .exec(&id, command, "/", Vec::new(), Duration::from_secs(90))
            .await
            .map_err(|e| chain(&e))?;
        match exec.exit_code {
            Some(0) => Ok(exec.output.trim().to_owned()),
            code => Err(missing_tool(&exec.output, code, python, image)
                .unwrap_or_else(|| super::provision::tail(&exec.output, 1))),
        }
    }
    .await;
    let _ = engine.remove_container(&id).await;
    live::forget_container(&id);
    result
}

/// Removes the containers of this project whose owner is gone: orphans, and those kept on
/// purpose. Returns how many.
pub async fn clean(engine: &Engine) -> Result<usize, EngineError> {
    let owner = Owner::me();
    let mut removed = 0;
    for container in engine.our_containers().await? {
        let mut labels = container.labels.unwrap_or_default();
        labels.remove(LABEL_KEEP);
        if owner.is_orphan(&labels)
            && let Some(id) = container.id
        {
            engine.remove_container(&id).await?;
            removed += 1;
        }
    }
    Ok(removed)
}

async fn pull_with_progress(engine: &Engine, reference: &str) -> Result<(), EngineError> {
    let start = Instant::now();
    let live = std::io::stderr().is_terminal();
    let mut last = PullProgress::default();
    eprintln!("runtime-matrix: pulling image {reference}");
    engine
        .pull(reference, |progress| {
            if live {
                eprint!(
                    "\rruntime-matrix:   {}/{} layers, {:.1}/{:.1} MB   ",
                    progress.done,
                    progress.layers,
                    progress.current as f64 / 1e6,
                    progress.total as f64 / 1e6
                );
            }
            last = progress.clone();
        })
        .await?;
    if live {
        eprintln!();
    }
    eprintln!(
        "runtime-matrix: pulled image {reference}: {} layers, {:.1} MB in {:.1?}",
        last.layers,
        last.total as f64 / 1e6,
        start.elapsed()
    );
    Ok(())
}

/// The images a Dockerfile builds `FROM`.
fn from_images(dockerfile: &str) -> Vec<String> {
    dockerfile
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if !words.next()?.eq_ignore_ascii_case("FROM") {
                return None;
            }
            words.find(|w| !w.starts_with("--")).map(str::to_owned)
        })
        .collect()
}

/// What a container lacks, recognised from an exec's output, said so a user can fix it.
fn missing_tool(output: &str, exit_code: Option<i64>, python: &str, image: &str) -> Option<String> {
    if output.contains("exec: \"timeout\"") {
        return Some(format!(
            "image `{image}` has no `timeout` command (GNU coreutils), which every check runs under inside the container"
        ));
    }
    let no_python = output.contains(&format!("failed to run command '{python}'"))
        || output.contains(&format!("exec: \"{python}\""));
    if no_python
        || (exit_code == Some(127) && output.contains(python) && output.contains("No such file"))
    {
        return Some(format!(
            "image `{image}` has no `{python}` (install Python in the image, or set the runtime's `python` to its interpreter)"
        ));
    }
    if output.contains("No module named nbconvert")
        || output.contains("No module named 'nbconvert'")
    {
        return Some(format!(
            "`{python}` in image `{image}` has no nbconvert (install jupyter-nbconvert, or `pip install nbconvert ipykernel`, in the image)"
        ));
    }
    None
}

fn category_of(error: &EngineError) -> Category {
    match error {
        EngineError::ImageMissing { .. }
        | EngineError::Pull { .. }
        | EngineError::Build { .. }
        | EngineError::Earlier { image: true, .. } => Category::Runtime,
        _ => Category::Infrastructure,
    }
}

fn io_error(operation: &'static str, target: &str, error: std::io::Error) -> EngineError {
    EngineError::Operation {
        operation,
        target: target.to_owned(),
        error: bollard::errors::Error::IOError { err: error },
    }
}

/// Files under `folder` (hidden ones skipped), keyed by their path under `prefix`.
fn folder_files(folder: &Path, prefix: &str) -> std::io::Result<BTreeMap<String, Option<Vec<u8>>>> {
    let mut files = BTreeMap::from([(prefix.to_owned(), None)]);
    let mut stack = vec![folder.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path();
            let relative = path
                .strip_prefix(folder)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            let key = format!("{prefix}/{relative}");
            if entry.file_type()?.is_dir() {
                files.insert(key, None);
                stack.push(path);
            } else {
                files.insert(key, Some(std::fs::read(&path)?));
            }
        }
    }
    Ok(files)
}

/// A tar archive of `files`: `None` is a folder. Paths are relative to `/`.
fn archive(files: &BTreeMap<String, Option<Vec<u8>>>) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, contents) in files {
        let path = path.trim_start_matches('/');
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        match contents {
            None => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o777);
                header.set_size(0);
                header.set_cksum();
                builder.append_data(&mut header, format!("{path}/"), std::io::empty())?;
            }
            Some(bytes) => {
                header.set_mode(0o666);
                header.set_size(bytes.len() as u64);
                header.set_cksum();
                builder.append_data(&mut header, path, bytes.as_slice())?;
            }
        }
    }
    builder.into_inner()
}

/// Replaces every secret value in the outcome's texts with `***`.
fn redact<'a>(mut outcome: Outcome, secrets: impl Iterator<Item = &'a String>) -> Outcome {
    let secrets: Vec<&String> = secrets.filter(|s| !s.is_empty()).collect();
    if secrets.is_empty() {
        return outcome;
    }
    let scrub = |text: &mut String| {
        for secret in &secrets {
            if text.contains(secret.as_str()) {
                *text = text.replace(secret.as_str(), "***");
            }
        }
    };
    if let Some(failure) = outcome.failure.as_mut() {
        scrub(&mut failure.summary);
        if let Some(tail) = failure.output_tail.as_mut() {
            scrub(tail);
        }
        if let Some(cell) = failure.cell.as_mut() {
            for text in [&mut cell.source_excerpt]
                .into_iter()
                .chain(cell.evalue.as_mut())
                .chain(cell.traceback.as_mut())
            {
                scrub(text);
            }
        }
    }
    if let Some(artifact) = &outcome.artifact
        && let Ok(mut text) = std::fs::read_to_string(artifact)
    {
        let before = text.clone();
        scrub(&mut text);
        if text != before {
            let _ = crate::record::write_atomic(artifact, text.as_bytes());
        }
    }
    outcome
}

/// `command` as a line a shell would split back into the same words.
fn shell_words(command: &[String]) -> String {
    command
        .iter()
        .map(|word| {
            if !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+".contains(c))
            {
                word.clone()
            } else {
                format!("'{}'", word.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[test]
    fn finds_the_images_a_dockerfile_builds_from() {
        let dockerfile = "# base\nFROM --platform=linux/amd64 runtime-matrix/base:1 AS build\nRUN true\nfrom debian:bookworm\n";
        assert_eq!(
            from_images(dockerfile),
            ["runtime-matrix/base:1", "debian:bookworm"]
        );
    }

    #[rstest]
    #[case(
        "OCI runtime exec failed: exec failed: unable to start container process: exec: \"timeout\": executable file not found in $PATH",
        Some(126),
        "no `timeout` command"
    )]
    #[case(
        "timeout: failed to run command 'python3': No such file or directory",
        Some(127),
        "has no `python3`"
    )]
    #[case(
        "/usr/bin/python3: No module named nbconvert",
        Some(1),
        "has no nbconvert"
    )]
    fn recognises_what_an_image_lacks(
        #[case] output: &str,
        #[case] code: Option<i64>,
        #[case] expected: &str,
    ) {
        let message = missing_tool(output, code, "python3", "img").unwrap();
        assert!(message.contains(expected), "{message}");
    }

    #[test]
    fn an_ordinary_failure_is_not_a_missing_tool() {
        assert_eq!(
            missing_tool(
                "ZeroDivisionError: division by zero",
                Some(1),
                "python3",
                "img"
            ),
            None
        );
    }

    #[test]
    fn secrets_are_redacted_from_failures() {
        let outcome = Outcome {
            failure: Some(Failure {
                kind: FailureKind::ExitCode,
                category: Category::Runtime,
                summary: "token hunter2 rejected".into(),
                cell: None,
                exit_code: Some(1),
                output_tail: Some("using hunter2".into()),
                cause: None,
            }),
            ..Outcome::default()
        };
        let secret = "hunter2".to_owned();
        let failure = redact(outcome, [&secret].into_iter()).failure.unwrap();
        assert_eq!(failure.summary, "token *** rejected");
        assert_eq!(failure.output_tail.as_deref(), Some("using ***"));
    }

    #[rstest]
    #[case(&["sh", "-c", "echo 'hi'"], "sh -c 'echo '\\''hi'\\'''")]
    #[case(&["timeout", "-s", "KILL", "60", "python3"], "timeout -s KILL 60 python3")]
    fn quotes_commands_for_the_shell(#[case] words: &[&str], #[case] expected: &str) {
        let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        assert_eq!(shell_words(&words), expected);
    }

    #[test]
    fn a_panicking_trial_still_removes_its_container() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let matrix = crate::Matrix::load(&root.join("fixtures/matrices/docker.toml")).unwrap();
        let plan = crate::Plan::new(&matrix, &crate::Selection::default());
        let spec = plan
            .trials
            .iter()
            .find(|t| t.name == "base::cpu::cmd::ok")
            .unwrap();
        let crate::config::Executor::Docker(docker) = &spec.runtime.executor else {
            panic!("the fixture's base runtime is a docker runtime");
        };
        let cache = root.join("target/runtime-matrix/cache");
        let executor =
            super::super::Executor::new(&matrix, cache, Keep::Never, "panic-test").docker;
        let engine = executor.runtime.block_on(executor.engine(None)).unwrap();
        executor
            .runtime
            .block_on(executor.image(&engine, &docker.image, docker.pull, docker.build.as_ref()))
            .unwrap();
        let container = ContainerSpec::for_trial(spec).unwrap();
        let mut id = String::new();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let lease = executor
                .container(&engine, spec, docker, &container, &BTreeMap::new())
                .unwrap();
            id = lease.id.clone();
            panic!("a check panicked while its container ran");
        }));
        assert!(panicked.is_err());
        let ours = executor.runtime.block_on(engine.our_containers()).unwrap();
        assert!(!id.is_empty());
        assert!(
            ours.iter().all(|c| c.id.as_deref() != Some(id.as_str())),
            "the container outlived the panic"
        );
    }
}
