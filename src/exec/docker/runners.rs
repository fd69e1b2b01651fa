//! Runner containers: one per runtime and machine (and GPU lease) in a run, its main process
//! `runner.py serve`, reached through one `docker exec ... runner.py connect` per harness
//! process. The container removes itself when the runner exits, on its idle period or when the
//! run's owner stops it; under cargo-nextest the processes of one run find it by its labels,
//! under a file lock, and attach to it.

use super::diagnosis::missing_tool;
use super::run::{DockerExecutor, Trial};
use crate::engine::{
    CONTAINER_ROOT, ContainerSpec, Engine, ExecChunk, LABEL_HOST, LABEL_KEEP, LABEL_PID,
    LABEL_PID_START, LABEL_RUN, LABEL_TRIAL,
};
use crate::error::{EngineError, RunnerError, chain};
use crate::exec::live;
use crate::exec::runner::{Connection, LineWriter, Runner, SCRIPT, key_name};
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// Label: the runner a container runs, by its key's name.
pub(crate) const LABEL_RUNNER: &str = "runtime-matrix.runner";
/// Label: a runner shared by the processes of a cargo-nextest run. It outlives the process
/// that started it while the run's others attach, and stops by itself once idle, so no run
/// reaps it (two nextest runs on one engine would otherwise stop each other's runners).
pub(crate) const LABEL_SHARED: &str = "runtime-matrix.shared";
/// The runner program inside a runner container.
const SCRIPT_PATH: &str = "/runtime-matrix/runner.py";
/// Why a runner's connection ended when neither the engine nor the runner said why.
pub(super) const CLOSED: &str = "its connection closed";
/// The runner's socket inside its container.
const SOCKET: &str = "/runtime-matrix/runner.sock";

impl DockerExecutor {
    /// The key of `trial`'s runner: the same in every process of the run that needs it.
    pub(super) fn runner_key(&self, engine: &Engine, trial: &Trial<'_>) -> String {
        let spec = trial.spec;
        let own = match trial.docker.isolation == crate::config::Isolation::Container
            || self.keep != super::Keep::Never
        {
            true => spec.name.as_str(),
            false => "",
        };
        format!(
            "{}|{}|{}|{}|{}|{own}|{}",
            self.run_id,
            engine.endpoint(),
            spec.runtime.name,
            spec.machine.name,
            trial.gpus.join(","),
            crate::exec::runner::scope()
        )
    }

    /// Starts `trial`'s runner container, or, when another process of the run has one running,
    /// attaches to it. An image without the runtime's Python gets its container with no runner
    /// in it: commands still run there.
    pub(super) fn start_runner(
        &self,
        engine: &Engine,
        trial: &Trial<'_>,
        key: &str,
        serves: &str,
    ) -> Result<Runner, RunnerError> {
        let failed = |error: &(dyn std::error::Error + 'static)| RunnerError::Start {
            serves: serves.to_owned(),
            reason: chain(error),
        };
        let name = key_name(key);
        std::fs::create_dir_all(&self.locks).map_err(|e| failed(&e))?;
        let lock = std::fs::File::create(self.locks.join(format!("runner-{name}.lock")))
            .and_then(|file| file.lock().map(|()| file))
            .map_err(|e| failed(&e))?;
        let found = self.runtime.block_on(self.running_runner(engine, &name))?;
        let (id, owned) = match found {
            Some(id) => (id, false),
            None => (
                self.runtime
                    .block_on(self.create_runner(engine, trial, &name))?,
                true,
            ),
        };
        drop(lock);
        let runner = self.connect(engine, &id, serves, owned, trial)?;
        let notebooks = trial
            .spec
            .runtime
            .checks
            .iter()
            .any(|check| matches!(check.kind, crate::config::CheckKind::Notebook { .. }));
        match runner.hello(trial.slots, notebooks) {
            Ok(_) => Ok(runner),
            Err(error) => {
                let text = chain(&error);
                let python = &trial.docker.python;
                if missing_tool(&text, None, python, &trial.docker.image).is_some() {
                    let stop = self.stopper(engine, &id, runner.connection.clone());
                    return Ok(Runner::bare(runner.connection.clone(), &id, owned, stop));
                }
                runner.stop();
                Err(error)
            }
        }
    }

    /// The running container of runner `name` in this run, if another process started one.
    async fn running_runner(
        &self,
        engine: &Engine,
        name: &str,
    ) -> Result<Option<String>, EngineError> {
        let containers = engine.our_containers().await?;
        Ok(containers.into_iter().find_map(|container| {
            let labels = container.labels.unwrap_or_default();
            let running = container.state.map(|s| s.to_string()) == Some("running".into());
            (running
                && labels.get(LABEL_RUNNER).map(String::as_str) == Some(name)
                && labels.get(LABEL_RUN) == Some(&self.run_id))
            .then_some(container.id)
            .flatten()
        }))
    }

    /// Creates the runner's container, puts the runner program in it, and starts it.
    async fn create_runner(
        &self,
        engine: &Engine,
        trial: &Trial<'_>,
        name: &str,
    ) -> Result<String, EngineError> {
        let spec = trial.spec;
        let python = &trial.docker.python;
        let kept = self.keep != super::Keep::Never;
        // A kept container must outlive its runner's idle period: its runner waits for good.
        let idle = match kept {
            true => u32::MAX.to_string(),
            false => self.runner_idle.as_secs().max(1).to_string(),
        };
        // The runner when the image has the runtime's Python, else an idle loop, so that
        // commands can still run in the container (and a notebook says what is missing).
        let launcher = "if command -v \"$0\" >/dev/null 2>&1; then exec \"$0\" \"$@\"; fi; \
                        trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done";
        let main = [
            "sh",
            "-c",
            launcher,
            python,
            SCRIPT_PATH,
            "serve",
            "--socket",
            SOCKET,
            "--root",
            "/runtime-matrix/runner",
            "--idle",
            &idle,
        ]
        .map(String::from)
        .to_vec();
        let mut container = trial
            .runner_container()
            .with_main(main, !kept)
            .with_label(LABEL_RUNNER, name)
            .with_label(LABEL_RUN, &self.run_id)
            .with_label(LABEL_PID, self.owner.pid.to_string())
            .with_label(LABEL_PID_START, &self.owner.start)
            .with_label(LABEL_HOST, &self.owner.host)
            .with_label(
                LABEL_TRIAL,
                format!("{}::{} (runner)", spec.runtime.name, spec.machine.name),
            );
        if crate::exec::runner::scope().is_empty() {
            container = container.with_label(LABEL_SHARED, "nextest");
        }
        if kept {
            let keep = match self.keep {
                super::Keep::Always => "always",
                _ => "failed",
            };
            container = container.with_label(LABEL_KEEP, keep);
        }
        let readable = format!("runner-{}-{}", spec.runtime.name, spec.machine.name);
        let files = BTreeMap::from([(SCRIPT_PATH.to_owned(), Some(SCRIPT.as_bytes().to_vec()))]);
        let archive = super::staging::archive(&files)
            .map_err(|error| super::diagnosis::io_error("pack the runner for", &readable, error))?;
        self.create(
            engine,
            &container,
            &readable,
            &spec.machine.name,
            Some(archive),
        )
        .await
    }

    /// What stops the runner in container `id`: asked to end, then its container removed.
    fn stopper(
        &self,
        engine: &Engine,
        id: &str,
        connection: Arc<Connection>,
    ) -> Box<dyn Fn() + Send + Sync> {
        let engine = engine.clone();
        let id = id.to_owned();
        let handle = self.runtime.handle().clone();
        Box::new(move || {
            let _ = connection.tell(serde_json::json!({"op": "shutdown"}));
            connection.end("it was stopped");
            if handle.block_on(engine.remove_container(&id)).is_ok() {
                live::forget_container(&id);
            }
        })
    }

    /// Opens this process's connection to the runner in container `id`.
    fn connect(
        &self,
        engine: &Engine,
        id: &str,
        serves: &str,
        owned: bool,
        trial: &Trial<'_>,
    ) -> Result<Runner, RunnerError> {
        let command = [&trial.docker.python, SCRIPT_PATH, "connect", SOCKET]
            .map(String::from)
            .to_vec();
        let exec = self
            .runtime
            .block_on(engine.open_exec(id, command))
            .map_err(|error| RunnerError::Start {
                serves: serves.to_owned(),
                reason: chain(&error),
            })?;
        let input = Arc::new(tokio::sync::Mutex::new(exec.input));
        let handle = self.runtime.handle().clone();
        let limit = engine.request_limit();
        let writer: LineWriter = Box::new(move |line: &[u8]| {
            let input = input.clone();
            let line = line.to_vec();
            handle.block_on(async move {
                let write = async {
                    let mut input = input.lock().await;
                    input.write_all(&line).await?;
                    input.flush().await
                };
                tokio::time::timeout(limit, write)
                    .await
                    .unwrap_or_else(|_| Err(std::io::Error::other("the engine stopped taking it")))
            })
        });
        let connection = Arc::new(Connection::new(serves.to_owned(), writer));
        let reader = connection.clone();
        let mut output = exec.output;
        let short: String = id.chars().take(12).collect();
        self.runtime.spawn(async move {
            let mut line = Vec::new();
            let mut errors = Vec::new();
            let mut failure = None;
            while let Some(chunk) = output.next().await {
                match chunk {
                    Ok(ExecChunk::Out(bytes)) => {
                        for byte in bytes {
                            if byte == b'\n' {
                                if !reader.dispatch(&line) {
                                    errors.extend_from_slice(&line);
                                    errors.push(b'\n');
                                }
                                line.clear();
                            } else {
                                line.push(byte);
                            }
                        }
                    }
                    Ok(ExecChunk::Err(bytes)) => {
                        errors.extend_from_slice(&bytes);
                        let excess = errors.len().saturating_sub(4096);
                        errors.drain(..excess);
                    }
                    Err(error) => {
                        failure = Some(chain(&error));
                        break;
                    }
                }
            }
            // The engine says why an exec could not start on its output, without a newline.
            errors.extend_from_slice(&line);
            let excess = errors.len().saturating_sub(4096);
            errors.drain(..excess);
            let said = crate::sanitise::for_terminal(String::from_utf8_lossy(&errors).trim());
            let reason = match (failure, said.is_empty()) {
                (Some(failure), _) => failure,
                (None, false) => format!("its container {short} said: {said}"),
                // The trial asks the engine why.
                (None, true) => CLOSED.to_owned(),
            };
            reader.end(reason);
        });
        let stop = self.stopper(engine, id, connection.clone());
        Ok(Runner::new(connection, owned, stop).in_container(id))
    }
}

impl Trial<'_> {
    /// The runner container of this trial's runtime and machine: its limits, network, GPUs and
    /// the runtime's environment; nothing of the trial itself, since other trials share it.
    pub(super) fn runner_container(&self) -> ContainerSpec {
        // A runtime with no network gets its services' network alone; one with a network
        // keeps it and joins theirs too.
        let (network, join) = match (&self.network, self.docker.network.as_str()) {
            (Some(services), "none") => (services.clone(), None),
            (services, own) => (own.to_owned(), services.clone()),
        };
        let mut container = ContainerSpec::new(&self.docker.image)
            .with_limits(self.docker.memory, self.docker.pids, network)
            .with_gpus(self.container.gpus.clone())
            .with_label("runtime-matrix.project", self.spec.project.to_string())
            .with_command(Vec::new(), CONTAINER_ROOT);
        for (key, value) in &self.container.env {
            if !crate::exec::invocation::PER_TRIAL.contains(&key.as_str()) {
                container = container.with_env(key, value);
            }
        }
        for secret in &self.container.secrets {
            container = container.with_secret(secret);
        }
        if let Some(join) = join {
            container = container.joining(join);
        }
        container
    }
}
