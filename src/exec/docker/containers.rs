//! Containers and reaping. The main type is [`Lease`], a trial's hold on its container that
//! removes it when dropped, after a success, a failure or a panic alike. Containers are labelled
//! with their owner process, so that a later run reaps those of a run that was killed.

use super::diagnosis::category_of;
use super::run::{Cell, DockerExecutor, Trial};
use crate::engine::{
    ContainerSpec, Engine, ExecOutcome, LABEL_HOST, LABEL_KEEP, LABEL_PID, LABEL_PID_START,
    LABEL_RUN, LABEL_TRIAL,
};
use crate::error::{EngineError, chain};
use crate::exec::live::{self, Owner, lock};
use crate::verdict::Category;
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
    /// A container for `trial`: its own, or the runtime's shared one on this machine.
    pub(super) fn container(
        &self,
        engine: &Engine,
        trial: &Trial<'_>,
    ) -> Result<Lease<'_>, EngineError> {
        let spec = trial.spec;
        let mut body = trial.container.clone().with_label(LABEL_RUN, &self.run_id);
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
        if !trial.docker.reuse_container {
            let id = self.runtime.block_on(self.create(
                engine,
                &body,
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
            self.create(engine, &body, &shared, &spec.machine.name)
                .await
                .map_err(|e| (chain(&e), category_of(&e) == Category::Runtime))
        }));
        match id {
            Ok(id) => Ok(Lease {
                executor: self,
                engine: engine.clone(),
                id: id.clone(),
                reused: true,
                armed: false,
            }),
            Err((message, image)) => Err(EngineError::Earlier {
                message: message.clone(),
                image: *image,
            }),
        }
    }

    /// Creates and starts a container. Secrets are not passed here but to each exec (see
    /// `execute`): a container's create body is what `docker inspect` shows, and containers
    /// kept with `RUNTIME_MATRIX_KEEP` outlive the run.
    async fn create(
        &self,
        engine: &Engine,
        container: &ContainerSpec,
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
        if let Err(error) = engine.start_container(&id, machine).await {
            let _ = engine.remove_container(&id).await;
            live::forget_container(&id);
            return Err(error);
        }
        Ok(id)
    }

    /// Removes the containers shared by several trials.
    pub(crate) fn shutdown(&self) {
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

/// `runtime-matrix-<readable>-<pid>-<nanos>`: readable in `docker ps`, unique per attempt.
fn unique_name(readable: &str, pid: u32) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!("runtime-matrix-{readable}-{pid}-{nanos:08x}")
}

/// A trial's hold on a container: removed when dropped (after success, failure or a panic),
/// unless kept or shared.
pub(super) struct Lease<'a> {
    executor: &'a DockerExecutor,
    pub(super) engine: Engine,
    pub(super) id: String,
    pub(super) reused: bool,
    armed: bool,
}

impl Lease<'_> {
    /// Leaves the container in place; returns its id.
    pub(super) fn keep(mut self) -> String {
        self.armed = false;
        live::forget_container(&self.id);
        self.id.clone()
    }

    /// Marks a shared container as unusable: it is removed now, and the next trial gets a new one.
    pub(super) fn poison(&self) {
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
pub(super) async fn reap(engine: &Engine, owner: &Owner) {
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

/// `runtime-matrix clean` over several engines (`None` is `DOCKER_HOST` or the local socket),
/// each call given `limit` to answer: an engine that fails or stays silent is reported and
/// the others are still cleaned. Each result is the engine's endpoint and how many containers
/// went. Synchronous, as the rest of the crate sees the engine: it owns its runtime.
pub fn clean_all(
    endpoints: &[Option<String>],
    limit: Duration,
) -> std::io::Result<Vec<Result<(String, usize), EngineError>>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(async {
        let mut results = Vec::new();
        for endpoint in endpoints {
            let result = async {
                let engine = Engine::connect_within(endpoint.as_deref(), limit).await?;
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
    /// Test hook: creates `spec`'s container as its trial would (engine, image, lease), calls
    /// `during` with the container's id while the lease holds it, then lets the lease go. A
    /// panic in `during` unwinds through the lease, as a panicking check would. Panics when
    /// `spec` is not a Docker trial. An engine failure comes back as its message.
    pub fn with_trial_container<R>(
        &self,
        spec: &crate::plan::TrialSpec,
        during: impl FnOnce(&str) -> R,
    ) -> Result<R, String> {
        self.with_container(spec, during)
            .map_err(|error| crate::error::chain(&error))
    }

    fn with_container<R>(
        &self,
        spec: &crate::plan::TrialSpec,
        during: impl FnOnce(&str) -> R,
    ) -> Result<R, EngineError> {
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
            .block_on(executor.engine(spec.machine.docker.as_deref(), executor.engine_limit))?;
        // Its setup is nobody's trial time: the hook runs no check.
        let _ = executor.runtime.block_on(executor.image(
            &engine,
            &docker.image,
            docker.pull,
            docker.build.as_ref(),
        ))?;
        let lease = executor.container(&engine, &trial)?;
        Ok(during(&lease.id))
    }
}
