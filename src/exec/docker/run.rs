//! Running one trial in a container. The main type is [`DockerExecutor`]: it connects to the
//! machine's engine, resolves the image, leases a container, stages the trial's
//! [`Invocation`], runs it under an in-container time limit and judges what came back.

use super::containers::{Keep, reap};
use super::diagnosis::{after_failure_note, category_of, io_error, missing_tool};
use super::staging::{archive, trial_files};
use crate::config::{Build, CheckKind, DockerRuntime, PullPolicy};
use crate::engine::{Address, Condition, ContainerSpec, Engine, GpuRequest, ImageInfo, TlsFiles};
use crate::error::EngineError;
use crate::exec::Outcome;
use crate::exec::data::DataSet;
use crate::exec::invocation::{Invocation, WORK, container_of, in_folder, trial_folder};
use crate::exec::live::{Owner, lock};
use crate::exec::redact::{MIN_SECRET_BYTES, redact, redact_file};
use crate::exec::verdict::{self, NotebookRun, setup_failure};
use crate::gpu::HostGpus;
use crate::notebook::ProcessEnd;
use crate::plan::TrialSpec;
use crate::record::RunDir;
use crate::verdict::{Category, Failure, FailureKind};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OnceCell;

/// How long past a check's deadline the harness waits for the in-container limit to act; it
/// acts at once unless the container is paused or the engine stopped answering.
const GRACE: Duration = Duration::from_secs(2);

/// How long the engine may take, past the deadline, to say how a container stands.
const AFTER_DEADLINE: Duration = Duration::from_secs(3);

/// A value computed once per process and shared; an error is kept as its message, and whether
/// the runtime's image is to blame (rather than the engine or the host).
pub(super) type Cell<T> = Arc<OnceCell<Result<T, (String, bool)>>>;

/// Runs Docker trials; one per process, shared by its trials.
pub(crate) struct DockerExecutor {
    pub(super) runtime: tokio::runtime::Runtime,
    pub(super) owner: &'static Owner,
    pub(super) keep: Keep,
    pub(super) run_id: String,
    pub(super) locks: std::path::PathBuf,
    /// How long one engine call may take (`RUNTIME_MATRIX_ENGINE_TIMEOUT`).
    pub(crate) engine_limit: Duration,
    /// Every image the matrix knows how to build, so that a Dockerfile's `FROM` one of them
    /// builds it first.
    pub(super) builds: BTreeMap<String, Build>,
    pub(super) engines: Mutex<HashMap<Address, Arc<OnceCell<Engine>>>>,
    pub(super) images:
        Mutex<HashMap<(String, String, PullPolicy), Cell<super::images::ResolvedImage>>>,
    /// The runners of this process, one per runtime, machine and GPU lease.
    pub(super) runners: crate::exec::runner::Runners,
    /// The data sets known to be in a runner's container, as `container|key`.
    pub(super) staged_data: Mutex<std::collections::HashSet<String>>,
    /// How long a runner idles before it exits by itself (`RUNTIME_MATRIX_RUNNER_IDLE`).
    pub(crate) runner_idle: Duration,
    /// Where running notebooks' cells are said, for the heartbeat.
    pub(crate) board: Arc<crate::progress::Board>,
    /// The services this process started or found, and their networks.
    pub(super) services: super::services::Services,
}

/// One trial's run in a container: what every step needs.
pub(super) struct Trial<'a> {
    pub(super) spec: &'a TrialSpec,
    pub(super) docker: &'a DockerRuntime,
    pub(super) run: &'a RunDir,
    /// The GPUs the trial holds, by UUID.
    pub(super) gpus: &'a [String],
    pub(super) invocation: Invocation,
    pub(super) container: ContainerSpec,
    /// The real values of the runtime's secrets.
    pub(super) secrets: BTreeMap<String, String>,
    /// The trial's folder inside the container.
    pub(super) folder: String,
    /// How many trials of its runtime and machine this process may run at once.
    pub(super) slots: usize,
    /// The network joining its runner to its runtime's services, once they run.
    pub(super) network: Option<String>,
    /// `RUNTIME_MATRIX_SERVICE_<NAME>_*`, once its services run.
    pub(super) service_env: Vec<(String, String)>,
    /// The values of its services' secrets, masked in what the check left.
    pub(super) service_secrets: Vec<String>,
}

impl DockerExecutor {
    pub(crate) fn new(
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
            engine_limit: crate::engine::DEFAULT_REQUEST_LIMIT,
            builds,
            engines: Mutex::default(),
            images: Mutex::default(),
            runners: Default::default(),
            staged_data: Mutex::default(),
            runner_idle: crate::settings::DEFAULT_RUNNER_IDLE,
            board: Default::default(),
            services: Default::default(),
        }
    }

    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime.handle()
    }

    pub(crate) fn run(
        &self,
        spec: &TrialSpec,
        docker: &DockerRuntime,
        run: &RunDir,
        gpus: &[String],
        slots: usize,
    ) -> Outcome {
        let secrets = match secrets_of(spec, docker) {
            Ok(secrets) => secrets,
            Err(refused) => return setup_failure(Category::Infrastructure, refused.to_string()),
        };
        let mut trial = Trial {
            slots,
            ..Trial::new(spec, docker, run, gpus, secrets)
        };
        // What was set up, and the image, are the trial's whatever ends it afterwards.
        let mut setup = Vec::new();
        let mut image = None;
        let mut engine = None;
        let mut services = Vec::new();
        let used = (&mut setup, &mut image, &mut engine, &mut services);
        let outcome = match self.run_in_container(&mut trial, used) {
            Ok(outcome) => outcome,
            Err(error) => verdict::engine_failure(category_of(&error), &error),
        };
        setup.extend(outcome.setup);
        Outcome {
            setup,
            image: outcome.image.or(image),
            engine: outcome.engine.or(engine),
            services,
            ..outcome
        }
    }

    /// The steps of a trial once its runtime's image is known: each step's errors end the
    /// trial as a setup failure. The trial runs on its runtime's runner for this machine, in a
    /// folder of its own in the runner's container, which is removed after it.
    fn run_in_container(
        &self,
        trial: &mut Trial<'_>,
        (setup, image_used, engine_used, services_used): Used<'_>,
    ) -> Result<Outcome, EngineError> {
        let (spec, docker) = (trial.spec, trial.docker);
        // No call of the trial waits longer than the trial itself may take.
        let limit = self.engine_limit.min(spec.check.timeout + GRACE);
        let engine = self
            .runtime
            .block_on(self.engine(&engine_address(&spec.machine), limit))?
            .with_limit(limit);
        *engine_used = Some(crate::record::TrialEngine {
            endpoint: engine.endpoint().to_owned(),
            name: engine.name().map(str::to_owned),
        });
        let (image, made) = self.runtime.block_on(self.image(
            &engine,
            &docker.image,
            docker.pull,
            docker.build.as_ref(),
        ))?;
        setup.extend(made);
        *image_used = Some((&image).into());
        let host = match crate::gpu::detect() {
            crate::gpu::Detection::Found(host) => Some(host),
            crate::gpu::Detection::NoDriver(_) => None,
        };
        if let Some(outcome) = preflight(trial, &image, host.filter(|_| spec.machine.gpus > 0)) {
            return Ok(outcome);
        }
        if let Some(outcome) = verdict::notebook_file_failure(spec) {
            return Ok(outcome);
        }
        // Before the runner, which joins their network.
        match self.use_services(&engine, spec, true, setup) {
            Ok(used) => {
                *services_used = used.records;
                trial.network = used.network;
                trial.service_env = used.env;
                trial.service_secrets = used.secrets;
            }
            Err(reason) => return Ok(setup_failure(Category::Infrastructure, reason)),
        }
        let trial: &Trial<'_> = trial;
        // Found before a runner starts: a data set that cannot be staged fails the trial now.
        let data = match &trial.invocation.data {
            Some(data) => match DataSet::find(&data.notebooks_dir, &data.globs) {
                Ok(set) => Some(set),
                Err(error) => return Ok(crate::exec::data::failure(&error)),
            },
            None => None,
        };
        let key = self.runner_key(&engine, trial);
        let serves = format!(
            "runtime `{}` on machine `{}`",
            spec.runtime.name, spec.machine.name
        );
        let started = self.runners.get(&key, &serves, || {
            self.start_runner(&engine, trial, &key, &serves)
        });
        let (runner, waited) = match started {
            Ok(started) => started,
            Err(crate::error::RunnerError::Engine(error)) => return Err(error),
            Err(error) => return Ok(runner_failure(&error, trial)),
        };
        if let Some(waited) = waited {
            setup.push(crate::record::SetupStep {
                kind: crate::record::SetupKind::Runner,
                subject: docker.image.clone(),
                seconds: waited.as_secs_f64(),
            });
        }
        let container = runner.container.clone().unwrap_or_default();
        self.board
            .runner(&spec.name, &format!("runner {}", short_id(&container)));
        let files = trial_files(&trial.invocation, &trial.folder)
            .map_err(|error| io_error("read the notebook's folder for", &spec.name, error))?;
        let archive =
            archive(&files).map_err(|error| io_error("pack the files of", &spec.name, error))?;
        self.runtime
            .block_on(engine.upload(&container, "/", archive))?;
        let data = match data.filter(|_| !runner.bare) {
            Some(set) => match self.stage_data(&engine, &container, &set)? {
                Ok((store, step)) => {
                    setup.extend(step);
                    Some(store)
                }
                Err(failed) => return Ok(failed),
            },
            None => None,
        };

        let ran = match runner.bare {
            true => self.run_bare(&engine, &container, trial)?,
            false => self.run_on(&engine, &key, &runner, trial, data.as_deref())?,
        };
        let ran = match ran {
            Ok(ran) => ran,
            Err(failed) => return Ok(failed),
        };
        // Secrets are masked in what the check left, before the harness adds its own words.
        let outcome = redact(
            self.judge(&engine, &container, trial, &ran, host)?,
            trial.secrets.values().chain(&trial.service_secrets),
        );
        let mut outcome = Outcome {
            image: Some((&image).into()),
            resources: ran.resources.clone(),
            ..outcome
        };
        // Rendered from the kept notebook, secrets masked already, and masked again in the
        // HTML: escaping may spell a secret anew.
        if let Some(artifact) = crate::exec::html::wanted(&outcome).filter(|_| !runner.bare) {
            let started = std::time::Instant::now();
            let rendered = self.render(&engine, &container, &runner, trial, artifact);
            crate::exec::html::keep(&mut outcome, rendered);
            if let Some(html) = &outcome.html {
                let secrets: Vec<_> = trial
                    .secrets
                    .values()
                    .chain(&trial.service_secrets)
                    .collect();
                redact_file(html, &secrets);
            }
            outcome.after_check += started.elapsed();
        }
        if outcome.failure.is_some() && ran.exit_code.is_some() {
            let (running, oom_kills) = self
                .runtime
                .block_on(engine.after_failure(&container, ran.exit_code == Some(137)));
            if let (Some(note), Some(failure)) = (
                after_failure_note(running, oom_kills, docker.memory),
                outcome.failure.as_mut(),
            ) {
                failure.summary = format!("{} ({note})", failure.summary);
            }
        }
        Ok(self.finish(&key, &runner, trial, outcome))
    }

    /// Runs the trial on `runner`, with the data set the runner holds at `data` copied into
    /// its work folder first. A runner that went away or stopped answering fails the trial
    /// (`Ok(Err(outcome))`), unless the engine is to blame (`Err`).
    fn run_on(
        &self,
        engine: &Engine,
        key: &str,
        runner: &Arc<crate::exec::runner::Runner>,
        trial: &Trial<'_>,
        data: Option<&str>,
    ) -> Result<Result<Ran, Outcome>, EngineError> {
        use crate::error::RunnerError;
        let spec = trial.spec;
        let container = runner.container.clone().unwrap_or_default();
        let mut request = trial.invocation.request(&trial.folder);
        if let Some(data) = data {
            request = request.with_data(data, WORK);
        }
        for (name, value) in trial
            .secrets
            .iter()
            .chain(trial.service_env.iter().map(|(k, v)| (k, v)))
        {
            request = request.with_env(name, value);
        }
        if !trial.gpus.is_empty() {
            request = request.with_env("RUNTIME_MATRIX_GPUS", &trial.gpus.join(","));
        }
        let reply = runner.connection.run(
            &request,
            spec.check.timeout + crate::exec::runner::ANSWER_GRACE,
            |event| self.progress(spec, event),
        );
        let error = match reply {
            Ok(reply) => {
                return Ok(Ok(Ran {
                    end: reply.end(),
                    exit_code: reply.exit,
                    output: reply.output,
                    resources: reply.resources,
                }));
            }
            Err(error) => error,
        };
        // Whether the engine is to blame: a paused container, an engine that went silent or
        // that cannot be reached any more.
        let limit = engine.request_limit().min(AFTER_DEADLINE);
        let mut condition = self.runtime.block_on(engine.condition(&container, limit));
        // A container killed from outside ends the runner's stream a moment before the engine
        // says it stopped: give it that moment before blaming the connection.
        let settle = std::time::Instant::now();
        while matches!(error, RunnerError::Gone { .. })
            && matches!(condition, Ok(Condition::Running))
            && settle.elapsed() < Duration::from_secs(2)
        {
            std::thread::sleep(Duration::from_millis(100));
            condition = self.runtime.block_on(engine.condition(&container, limit));
        }
        if matches!(error, RunnerError::Silent { .. }) {
            self.runners.discard(key, runner);
        }
        match (condition, error) {
            (Ok(Condition::Paused), _) => Err(EngineError::Paused {
                container: short_id(&container),
                deadline: spec.check.timeout,
            }),
            (Err(EngineError::Silent { .. }), RunnerError::Silent { waited, .. }) => {
                Err(EngineError::Silent {
                    endpoint: engine.endpoint().to_owned(),
                    call: "exec",
                    target: format!("container {}", short_id(&container)),
                    limit: waited,
                })
            }
            (Ok(Condition::Stopped | Condition::Gone), RunnerError::Gone { serves, .. }) => {
                let reason = format!(
                    "its container {} stopped (killed from outside, or by the engine)",
                    short_id(&container)
                );
                Ok(Err(runner_failure(
                    &RunnerError::Gone { serves, reason },
                    trial,
                )))
            }
            // Its container runs, or the engine cannot say: the connection to it was lost.
            (condition, RunnerError::Gone { reason, .. })
                if condition.is_err() || reason == super::runners::CLOSED =>
            {
                Err(EngineError::ConnectionLost {
                    endpoint: engine.endpoint().to_owned(),
                    operation: "talk to the runner in",
                    target: format!("container {}", short_id(&container)),
                    error: Box::new(bollard::errors::Error::IOError {
                        err: std::io::Error::other(reason),
                    }),
                })
            }
            (_, error) => Ok(Err(runner_failure(&error, trial))),
        }
    }

    /// Runs a command trial in a container with no runner (its image has no Python): one
    /// `docker exec` under an in-container time limit. Other checks need Python.
    fn run_bare(
        &self,
        engine: &Engine,
        container: &str,
        trial: &Trial<'_>,
    ) -> Result<Result<Ran, Outcome>, EngineError> {
        let (spec, docker) = (trial.spec, trial.docker);
        if !matches!(spec.check.kind, CheckKind::Command { .. }) {
            let said = format!("exec: \"{}\"", docker.python);
            let missing = missing_tool(&said, None, &docker.python, &docker.image).unwrap_or(said);
            return Ok(Err(missing_tool_failure(missing, None, "")));
        }
        let env: Vec<String> = trial
            .container
            .env
            .iter()
            .map(|(key, value)| format!("{key}={}", trial.secrets.get(key).unwrap_or(value)))
            .chain(
                trial
                    .service_env
                    .iter()
                    .map(|(key, value)| format!("{key}={value}")),
            )
            .collect();
        let start = std::time::Instant::now();
        let exec = self.runtime.block_on(engine.exec(
            container,
            trial.container.command.clone(),
            &trial.container.workdir,
            env,
            spec.check.timeout + GRACE,
        ))?;
        let elapsed = start.elapsed();
        let end = match exec.exit_code {
            Some(0) => ProcessEnd::Success,
            // `timeout -s KILL` exits 137 when it killed the check at the deadline.
            Some(137) if elapsed + Duration::from_millis(500) >= spec.check.timeout => {
                ProcessEnd::Deadline
            }
            Some(code) => ProcessEnd::Failed(i32::try_from(code).unwrap_or(-1)),
            None => ProcessEnd::Deadline,
        };
        // A bare `docker exec` has no runner to measure it.
        Ok(Ok(Ran {
            end,
            exit_code: exec.exit_code,
            output: exec.output,
            resources: None,
        }))
    }

    /// The executed notebook `artifact` as HTML, rendered by the runtime's nbconvert on
    /// `runner` in the trial's folder and copied out (at most [`COLLECTED`] of it); else why
    /// not.
    ///
    /// [`COLLECTED`]: crate::fsx::COLLECTED
    fn render(
        &self,
        engine: &Engine,
        container: &str,
        runner: &crate::exec::runner::Runner,
        trial: &Trial<'_>,
        artifact: &Path,
    ) -> Result<Vec<u8>, String> {
        let (notebook, html) = crate::exec::html::paths(artifact);
        let bytes = crate::fsx::read_bounded(artifact, crate::fsx::COLLECTED)
            .map_err(|error| format!("cannot read {}: {error}", artifact.display()))?;
        let source = in_folder(&trial.folder, &notebook);
        let parent = source.rsplit_once('/').map_or("", |(parent, _)| parent);
        let files = BTreeMap::from([(parent.to_owned(), None), (source, Some(bytes))]);
        let archive = archive(&files).map_err(|error| format!("cannot pack it: {error}"))?;
        self.runtime
            .block_on(engine.upload(container, "/", archive))
            .map_err(|error| crate::error::chain(&error))?;
        if let Some(why) = runner
            .render(&trial.folder, &notebook, &html)
            .map_err(|error| crate::error::chain(&error))?
        {
            return Err(why);
        }
        let path = in_folder(&trial.folder, &html);
        let limit = crate::fsx::COLLECTED.bytes;
        match self
            .runtime
            .block_on(engine.download_file_within(container, &path, limit))
        {
            Ok(Some(bytes)) => Ok(bytes),
            Ok(None) => Err(format!("nbconvert wrote no {html}")),
            Err(error) => Err(crate::error::chain(&error)),
        }
    }

    /// Puts a notebook's cells on the progress board as its runner reports them.
    fn progress(&self, spec: &TrialSpec, event: &crate::exec::runner::Event) {
        if let (Some(phase), Some(index), Some(time)) = (&event.phase, event.index, event.time) {
            self.board.cell(&spec.name, phase == "start", index, time);
        }
    }

    /// The verdict on what the check printed and left in its trial folder.
    fn judge(
        &self,
        engine: &Engine,
        container: &str,
        trial: &Trial<'_>,
        ran: &Ran,
        host: Option<&HostGpus>,
    ) -> Result<Outcome, EngineError> {
        let (spec, docker) = (trial.spec, trial.docker);
        let end = ran.end;
        if let Some(missing) =
            missing_tool(&ran.output, ran.exit_code, &docker.python, &docker.image)
        {
            return Ok(missing_tool_failure(missing, ran.exit_code, &ran.output));
        }
        let download = |relative: &Option<String>| -> Result<Option<Vec<u8>>, EngineError> {
            match relative {
                Some(relative) => self
                    .runtime
                    .block_on(engine.download_file(container, &in_folder(&trial.folder, relative))),
                None => Ok(None),
            }
        };
        Ok(match &spec.check.kind {
            CheckKind::Notebook { relative, .. } => {
                let progress = download(&trial.invocation.progress)
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                let executed = download(&trial.invocation.executed)?;
                let progress = String::from_utf8_lossy(&progress);
                let result = NotebookRun {
                    progress: &progress,
                    output: &ran.output,
                    end,
                    executed,
                };
                verdict::notebook(spec, trial.run, relative, result)
            }
            CheckKind::Command { run: line } => verdict::command(spec, line, end, &ran.output),
            kind @ (CheckKind::GpuVisible | CheckKind::GpuFramework { .. }) => {
                let judged = verdict::judge_gpu_check(
                    kind,
                    &ran.output,
                    trial.gpus,
                    spec.machine.gpus,
                    host,
                );
                verdict::gpu_check(spec, judged, end, &ran.output)
            }
        })
    }

    /// Removes the trial's folder from its runner, or keeps the trial's container (a runner
    /// of its own when containers are kept) as `RUNTIME_MATRIX_KEEP` says.
    fn finish(
        &self,
        key: &str,
        runner: &std::sync::Arc<crate::exec::runner::Runner>,
        trial: &Trial<'_>,
        outcome: Outcome,
    ) -> Outcome {
        let (spec, container) = (trial.spec, &trial.container);
        let keep = match self.keep {
            Keep::Never => false,
            Keep::Failed => outcome.failure.is_some(),
            Keep::Always => true,
        };
        let own = trial.docker.isolation == crate::config::Isolation::Container
            || self.keep != Keep::Never;
        if !keep {
            runner.remove(&trial.folder);
            if own {
                self.runners.discard(key, runner);
            }
            return outcome;
        }
        self.runners.forget(key);
        let id = runner.container.clone().unwrap_or_default();
        crate::exec::live::forget_container(&id);
        let engine_endpoint = spec.machine.docker.clone().unwrap_or_default();
        let docker = match (engine_endpoint.as_str(), &spec.machine.tls) {
            ("" | "unix:///var/run/docker.sock", _) => "docker".to_owned(),
            // The docker CLI reads TLS files from one folder by fixed names: name them instead.
            (endpoint, Some(tls)) => format!(
                "docker -H {endpoint} --tlsverify --tlscacert {} --tlscert {} --tlskey {}",
                tls.ca.display(),
                tls.cert.display(),
                tls.key.display()
            ),
            (endpoint, None) => format!("DOCKER_HOST={endpoint} docker"),
        };
        let short = short_id(&id);
        // Secrets went to the check only: say how to pass them again.
        let (pass, note) = match container.secrets.as_slice() {
            [] => (String::new(), String::new()),
            names => (
                names.iter().map(|name| format!("-e {name} ")).collect(),
                format!(
                    "\n  its secrets ({}) are not stored in the container, so `docker inspect` \
                     does not show them; `-e NAME` passes each from your environment",
                    names.join(", ")
                ),
            ),
        };
        eprintln!(
            "runtime-matrix: kept container {short} of {} (remove it with `runtime-matrix clean`):\n  {docker} exec -it {short} bash\n  {docker} exec -it -w {} {pass}{short} {}{note}",
            spec.name,
            container.workdir,
            shell_words(&container.command)
        );
        outcome
    }

    /// The engine at `address`, connected once per process (given `limit` to answer then);
    /// the first connection reaps the containers of runs on this host whose process is gone.
    pub(super) async fn engine(
        &self,
        address: &Address,
        limit: Duration,
    ) -> Result<Engine, EngineError> {
        let cell = lock(&self.engines)
            .entry(address.clone())
            .or_default()
            .clone();
        if let Some(engine) = cell.get() {
            return Ok(engine.clone());
        }
        // A failed connection is not cached: the engine may come back for later trials.
        let engine = Engine::connect_within(address, limit)
            .await?
            .with_limit(self.engine_limit);
        let engine = cell
            .get_or_init(|| async {
                reap(&engine, self.owner).await;
                // The engine's own name for its host, for records: cheap, once per engine.
                let name = engine.system().await.ok().and_then(|system| system.name);
                engine.with_name(name)
            })
            .await;
        Ok(engine.clone())
    }
}

/// How to reach `machine`'s engine: its endpoint, and its TLS files when it declares them.
pub(crate) fn engine_address(machine: &crate::config::Machine) -> Address {
    Address {
        endpoint: machine.docker.clone(),
        tls: machine.tls.as_ref().map(|tls| TlsFiles {
            ca: tls.ca.clone(),
            cert: tls.cert.clone(),
            key: tls.key.clone(),
            origin: format!("machines.{}.tls", machine.name),
        }),
    }
}

impl<'a> Trial<'a> {
    /// The trial's invocation and container, with its GPUs and the values of its secrets.
    pub(super) fn new(
        spec: &'a TrialSpec,
        docker: &'a DockerRuntime,
        run: &'a RunDir,
        gpus: &'a [String],
        secrets: BTreeMap<String, String>,
    ) -> Trial<'a> {
        let invocation = Invocation::for_trial(spec, &docker.python);
        let mut container = container_of(spec, docker, &invocation);
        if !gpus.is_empty() {
            container = container
                .with_gpus(GpuRequest::Devices(gpus.to_vec()))
                .with_env("RUNTIME_MATRIX_GPUS", gpus.join(","));
        }
        Trial {
            spec,
            docker,
            run,
            gpus,
            invocation,
            container,
            secrets,
            folder: trial_folder(&spec.name),
            slots: 1,
            network: None,
            service_env: Vec::new(),
            service_secrets: Vec::new(),
        }
    }
}

/// The values of the runtime's secrets, from this process's environment: an unset one, or one
/// too short to mask, fails the trial before any engine is asked. An empty one has nothing to
/// hide.
fn secrets_of(
    spec: &TrialSpec,
    docker: &DockerRuntime,
) -> Result<BTreeMap<String, String>, SecretError> {
    let mut secrets = BTreeMap::new();
    for name in &docker.secrets {
        let (name, runtime) = (name.clone(), spec.runtime.name.clone());
        let Ok(value) = std::env::var(&name) else {
            return Err(SecretError::Unset { name, runtime });
        };
        if !value.is_empty() && value.len() < MIN_SECRET_BYTES {
            return Err(SecretError::TooShort { name, runtime });
        }
        secrets.insert(name, value);
    }
    Ok(secrets)
}

/// A secret a runtime declares that cannot be passed safely.
#[derive(Debug, thiserror::Error)]
pub(super) enum SecretError {
    /// The environment does not set it.
    #[error(
        "secret `{name}` of runtime `{runtime}` is not set in the environment (export it before the run)"
    )]
    Unset { name: String, runtime: String },
    /// Its value is too short to be masked without revealing it.
    #[error(
        "secret `{name}` of runtime `{runtime}` is shorter than {} bytes: masking so short a value in the output would reveal it (use a longer secret, or pass the value in `env` if it is not secret)",
        MIN_SECRET_BYTES
    )]
    TooShort { name: String, runtime: String },
}

/// What a trial used, said whatever ends it: its setup steps, image, engine and services.
type Used<'a> = (
    &'a mut Vec<crate::record::SetupStep>,
    &'a mut Option<crate::record::TrialImage>,
    &'a mut Option<crate::record::TrialEngine>,
    &'a mut Vec<crate::record::TrialService>,
);

/// How a check ended on its runner.
pub(super) struct Ran {
    end: ProcessEnd,
    exit_code: Option<i64>,
    output: String,
    resources: Option<crate::record::Resources>,
}

/// The outcome of a trial its runner could not run: infrastructure, but for an image that
/// lacks what a runner needs, which is the runtime's.
fn runner_failure(error: &crate::error::RunnerError, trial: &Trial<'_>) -> Outcome {
    let text = crate::error::chain(error);
    match missing_tool(&text, None, &trial.docker.python, &trial.docker.image) {
        Some(missing) => missing_tool_failure(missing, None, ""),
        None => setup_failure(Category::Infrastructure, text),
    }
}

/// The outcome of a check whose image lacks a tool every check of its kind needs.
fn missing_tool_failure(summary: String, exit_code: Option<i64>, output: &str) -> Outcome {
    Outcome {
        failure: Some(Failure {
            kind: FailureKind::MissingTool,
            category: Category::Runtime,
            summary,
            cell: None,
            exit_code: exit_code.and_then(|c| i32::try_from(c).ok()),
            output_tail: (!output.is_empty()).then(|| crate::exec::provision::tail(output, 30)),
            cause: None,
        }),
        ..Outcome::default()
    }
}

/// A GPU trial whose image declares a CUDA newer than this host's driver supports fails
/// before a container starts.
fn preflight(trial: &Trial<'_>, image: &ImageInfo, host: Option<&HostGpus>) -> Option<Outcome> {
    let host = host?;
    let image_name = &trial.docker.image;
    let declared = crate::gpu::checks::declared_cuda(&image.env, &image.labels);
    let error = crate::gpu::checks::preflight(image_name, declared, host).err()?;
    Some(Outcome {
        image: Some(image.into()),
        ..verdict::preflight_failure(&error)
    })
}

/// The first 12 characters of a container id, as `docker ps` shows it.
fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
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

    #[rstest]
    #[case(&["sh", "-c", "echo 'hi'"], "sh -c 'echo '\\''hi'\\'''")]
    #[case(&["timeout", "-s", "KILL", "60", "python3"], "timeout -s KILL 60 python3")]
    fn quotes_commands_for_the_shell(#[case] words: &[&str], #[case] expected: &str) {
        let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        assert_eq!(shell_words(&words), expected);
    }
}
