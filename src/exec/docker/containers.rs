//! Containers and reaping. The main type is [`Lease`], a trial's hold on its container that
//! removes it when dropped, after a success, a failure or a panic alike. Containers are labelled
//! with their owner process, so that a later run reaps those of a run that was killed.

use super::run::{DockerExecutor, Trial};
use crate::engine::{
    ContainerSpec, Engine, ExecOutcome, LABEL_HOST, LABEL_KEEP, LABEL_PID, LABEL_PID_START,
    LABEL_TRIAL,
};
use crate::error::{EngineError, chain};
use crate::exec::live::{self, Owner};
use std::collections::BTreeMap;
use std::time::Duration;

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

impl DockerExecutor {
    /// Creates and starts a container, unpacking the tar archive `files` at `/` in it before it
    /// starts (its main process may need them). Secrets are not passed here but to each trial
    /// (see `run_in_container`): a container's create body is what `docker inspect` shows, and
    /// containers kept with `RUNTIME_MATRIX_KEEP` outlive the run.
    pub(super) async fn create(
        &self,
        engine: &Engine,
        container: &ContainerSpec,
        name: &str,
        machine: &str,
        files: Option<Vec<u8>>,
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
        let unique = unique_name(&readable, self.owner.pid);
        let creating = live::creating();
        if let Some(signal) = live::interrupted() {
            return Err(EngineError::Earlier {
                message: format!("interrupted by signal {signal}"),
                image: false,
            });
        }
        let id = engine
            .create_container(&unique, container.create_body(), machine)
            .await?;
        live::track_container(&id, engine);
        drop(creating);
        let started = async {
            for network in &container.joins {
                engine.connect_network(network, &id, None).await?;
            }
            if let Some(files) = files {
                engine.upload(&id, "/", files).await?;
            }
            engine.start_container(&id, machine).await
        };
        if let Err(error) = started.await {
            let _ = engine.remove_container(&id).await;
            live::forget_container(&id);
            return Err(error);
        }
        Ok(id)
    }

    /// Stops the runners this process started, which removes their containers, then removes
    /// the services and networks it started.
    pub(crate) fn shutdown(&self) {
        self.runners.shutdown();
        self.shutdown_services();
    }
}

/// `runtime-matrix-<readable>-<pid>-<nanos>`: readable in `docker ps`, unique per attempt.
fn unique_name(readable: &str, pid: u32) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!("runtime-matrix-{readable}-{pid}-{nanos:08x}")
}

/// Removes the containers that runs on this host left behind when they were killed. The
/// runner containers of cargo-nextest runs (this one's or another's) are left alone: the
/// process that started one has ended while the run's other processes use it, and it stops
/// by itself once idle.
pub(super) async fn reap(engine: &Engine, owner: &Owner) {
    let Ok(containers) = engine.our_containers().await else {
        return;
    };
    let mut removed = 0;
    for container in containers {
        let labels = container.labels.unwrap_or_default();
        if owner.is_orphan(&labels)
            && !labels.contains_key(super::runners::LABEL_SHARED)
            && let Some(id) = container.id
            && engine.remove_container(&id).await.is_ok()
        {
            removed += 1;
        }
    }
    if removed > 0 {
        eprintln!("runtime-matrix: removed {removed} container(s) left by runs that are gone");
    }
    let removed = remove_orphan_networks(engine, owner, false)
        .await
        .unwrap_or(0);
    if removed > 0 {
        eprintln!("runtime-matrix: removed {removed} network(s) left by runs that are gone");
    }
}

/// Removes the services' networks of runs on this host whose owner is gone (and, with
/// `kept`, those kept on purpose), once their containers are: returns how many.
async fn remove_orphan_networks(
    engine: &Engine,
    owner: &Owner,
    kept: bool,
) -> Result<usize, EngineError> {
    let mut removed = 0;
    for network in engine.our_networks().await? {
        let mut labels = network.labels;
        if kept {
            labels.remove(LABEL_KEEP);
        }
        if owner.is_orphan(&labels) && engine.remove_network(&network.id).await.is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Removes the containers of this project whose owner is gone: orphans, and those kept on
/// purpose (services included), then their services' networks. Returns how many containers.
/// A running runner of a cargo-nextest run is left alone (unless kept): the process that
/// started it is gone while the run's others still use it, and it stops by itself once idle.
pub async fn clean(engine: &Engine) -> Result<usize, EngineError> {
    let owner = Owner::me();
    let mut removed = 0;
    for container in engine.our_containers().await? {
        let mut labels = container.labels.unwrap_or_default();
        let running = container.state.map(|s| s.to_string()) == Some("running".into());
        if running
            && labels.contains_key(super::runners::LABEL_SHARED)
            && !labels.contains_key(LABEL_KEEP)
        {
            continue;
        }
        labels.remove(LABEL_KEEP);
        if owner.is_orphan(&labels)
            && let Some(id) = container.id
        {
            engine.remove_container(&id).await?;
            removed += 1;
        }
    }
    remove_orphan_networks(engine, owner, true).await?;
    Ok(removed)
}

/// `runtime-matrix clean` over several engines (no endpoint: `DOCKER_HOST` or the local socket),
/// each call given `limit` to answer: an engine that fails or stays silent is reported and
/// the others are still cleaned. Each result is the engine's endpoint and how many containers
/// went. Synchronous, as the rest of the crate sees the engine: it owns its runtime.
pub fn clean_all(
    engines: &[crate::engine::Address],
    limit: Duration,
) -> std::io::Result<Vec<Result<(String, usize), EngineError>>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(async {
        let mut results = Vec::new();
        for address in engines {
            let result = async {
                let engine = Engine::connect_within(address, limit).await?;
                let removed = clean(&engine).await?;
                Ok((engine.endpoint().to_owned(), removed))
            };
            results.push(result.await);
        }
        results
    }))
}

/// Runs `command` once in a short-lived container of `image`, labelled with this process as
/// its owner and `purpose` as its trial, and removes it whatever happened: for probes outside
/// any trial (`doctor`). `wait` bounds the exec.
pub(crate) async fn run_once(
    engine: &Engine,
    image: &str,
    purpose: &str,
    command: Vec<String>,
    wait: Duration,
) -> Result<ExecOutcome, EngineError> {
    let owner = Owner::me();
    let spec = ContainerSpec::new(image)
        .with_label(LABEL_PID, owner.pid.to_string())
        .with_label(LABEL_PID_START, &owner.start)
        .with_label(LABEL_HOST, &owner.host)
        .with_label(LABEL_TRIAL, purpose);
    let name = unique_name(purpose, owner.pid);
    let id = engine
        .create_container(&name, spec.create_body(), purpose)
        .await?;
    live::track_container(&id, engine);
    let result = async {
        engine.start_container(&id, purpose).await?;
        engine.exec(&id, command, "/", Vec::new(), wait).await
    }
    .await;
    let _ = engine.remove_container(&id).await;
    live::forget_container(&id);
    result
}

impl crate::exec::Executor {
    /// Test hook: starts `spec`'s runner container as its trial would (engine, image, runner)
    /// and calls `during` with the container's id. The container outlives `during`, panic or
    /// not, as a runner does: it goes when the executor shuts down or is dropped. Panics when
    /// `spec` is not a Docker trial. A failure comes back as its message.
    pub fn with_trial_container<R>(
        &self,
        spec: &crate::plan::TrialSpec,
        during: impl FnOnce(&str) -> R,
    ) -> Result<R, String> {
        let executor = &self.docker;
        let crate::config::Executor::Docker(docker) = &spec.runtime.executor else {
            panic!("{} is not a docker trial", spec.name);
        };
        // Never written to: the check does not run.
        let run = crate::record::RunDir {
            run_id: String::new(),
            path: std::path::PathBuf::new(),
        };
        // No secret values: the check, which would read them, does not run.
        let trial = Trial::new(spec, docker, &run, &[], BTreeMap::new());
        let engine = executor
            .runtime
            .block_on(executor.engine(
                &super::run::engine_address(&spec.machine),
                executor.engine_limit,
            ))
            .map_err(|error| chain(&error))?;
        executor
            .runtime
            .block_on(executor.image(&engine, &docker.image, docker.pull, docker.build.as_ref()))
            .map_err(|error| chain(&error))?;
        let key = executor.runner_key(&engine, &trial);
        let serves = format!(
            "runtime `{}` on machine `{}`",
            spec.runtime.name, spec.machine.name
        );
        let (runner, _) = executor
            .runners
            .get(&key, &serves, || {
                executor.start_runner(&engine, &trial, &key, &serves)
            })
            .map_err(|error| chain(&error))?;
        Ok(during(runner.container.as_deref().unwrap_or_default()))
    }
}
