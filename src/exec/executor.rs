//! The executor every trial of a process shares: it leases a trial's GPUs, dispatches it to
//! its runtime's executor (host or Docker) and cleans what comes back into an [`Outcome`].

use super::docker::{self, Keep};
use super::host;
use super::provision::Provisioner;
use super::verdict;
use crate::config::{Executor as ExecutorKind, Matrix};
use crate::notebook::CellTiming;
use crate::plan::TrialSpec;
use crate::record::{RunDir, SetupStep, TrialImage};
use crate::verdict::Failure;
use std::path::PathBuf;

/// What running one check produced.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// `None` when the check passed. Its texts may hold colour codes for a terminal, and no
    /// other control sequence; records keep them plain.
    pub failure: Option<Failure>,
    /// Per-cell durations of a notebook.
    pub cells: Vec<CellTiming>,
    /// The tagged cells a consistency check compares, with what they printed: for a notebook
    /// declared in `[consistency]` that ran to its end.
    pub consistent: Option<Vec<crate::record::ConsistentCell>>,
    /// The executed notebook, kept under the run folder.
    pub artifact: Option<PathBuf>,
    /// A failed notebook's executed notebook as HTML, beside [`artifact`](Outcome::artifact).
    pub html: Option<PathBuf>,
    /// Why a failed notebook has no executed notebook, or no HTML of it.
    pub artifact_note: Option<String>,
    /// The time spent after the check ended on its artifacts (rendering HTML): the harness
    /// takes it off the trial's duration, like the setup.
    pub after_check: std::time::Duration,
    /// The image a container trial ran in.
    pub image: Option<TrialImage>,
    /// The engine a container trial ran on.
    pub engine: Option<crate::record::TrialEngine>,
    /// What a passing check found worth keeping.
    pub note: Option<String>,
    /// The GPUs the trial held, by UUID.
    pub gpus: Vec<String>,
    /// What the trial's processes used.
    pub resources: Option<crate::record::Resources>,
    /// The services the trial used.
    pub services: Vec<crate::record::TrialService>,
    /// The setup the trial did or waited for before its check ran (an image built or pulled,
    /// a virtualenv provisioned, a runner started), with the seconds it spent on each: the
    /// harness takes them off the trial's duration.
    pub setup: Vec<SetupStep>,
}

impl From<&crate::engine::ImageInfo> for TrialImage {
    fn from(image: &crate::engine::ImageInfo) -> TrialImage {
        TrialImage {
            reference: image.reference.clone(),
            id: image.id.clone(),
            digest: image.digest.clone(),
            labels: image.labels.clone(),
        }
    }
}

/// Why a trial's GPUs could not be leased; the message is the trial's failure summary.
#[derive(Debug, thiserror::Error)]
#[error("{trial} could not lease its GPUs: {error}")]
struct TrialLeaseError {
    /// The trial.
    trial: String,
    /// Why.
    error: crate::gpu::lease::LeaseError,
}

/// Leases `spec`'s GPUs when this host has enough of the machine's model; `None` when the
/// machine has none, or when the host cannot tell (no driver: the engine is asked for a count).
fn lease_gpus(
    spec: &TrialSpec,
    lock_dir: &std::path::Path,
    timeout: std::time::Duration,
) -> Result<Option<crate::gpu::lease::Lease>, TrialLeaseError> {
    let machine = &spec.machine;
    if machine.gpus == 0 {
        return Ok(None);
    }
    let crate::gpu::Detection::Found(host) = crate::gpu::detect() else {
        return Ok(None);
    };
    let candidates: Vec<String> = host
        .matching(machine)
        .iter()
        .map(|gpu| gpu.uuid.clone())
        .collect();
    if candidates.len() < machine.gpus as usize {
        return Ok(None);
    }
    let model = machine.gpu_model.as_deref().unwrap_or("*");
    crate::gpu::lease::acquire(
        &candidates,
        machine.gpus as usize,
        lock_dir,
        timeout,
        || {
            eprintln!(
                "runtime-matrix: {} waits for {} GPU(s) matching `{model}`; other trials hold them",
                spec.name, machine.gpus
            )
        },
    )
    .map(Some)
    .map_err(|error| TrialLeaseError {
        trial: spec.name.clone(),
        error,
    })
}

/// Runs checks; shared by every trial of a process.
pub struct Executor {
    pub(super) provisioner: Provisioner,
    pub(super) docker: docker::DockerExecutor,
    lock_dir: PathBuf,
    lease_timeout: std::time::Duration,
    /// Where running notebooks' cells are said, for the heartbeat.
    pub(super) progress: std::sync::Arc<crate::progress::Board>,
    /// The host runtimes' runners.
    pub(super) runners: super::runner::Runners,
    /// How many trials this process runs at once.
    pub(super) slots: usize,
    /// How many trials of each runtime and machine this process will run, once the harness
    /// says: a runner never keeps more kernels warm than it can be given notebooks at once.
    planned: std::sync::Mutex<std::collections::HashMap<(String, String), usize>>,
    /// How long a runner idles before it exits by itself.
    pub(super) runner_idle: std::time::Duration,
    /// Host interpreters' identities for result reuse keys, found once per process.
    pub(super) identities: std::sync::Mutex<std::collections::HashMap<PathBuf, Identity>>,
}

/// An interpreter's identity, or why it could not be found, once per process.
pub(super) type Identity = std::sync::Arc<std::sync::OnceLock<Result<serde_json::Value, String>>>;

impl Executor {
    /// An executor for `matrix`'s trials in run `run_id`, keeping provisioned virtualenvs and
    /// image locks under `cache`.
    pub fn new(matrix: &Matrix, cache: PathBuf, keep: Keep, run_id: &str) -> Executor {
        let builds = matrix
            .runtimes
            .iter()
            .filter_map(|runtime| match &runtime.executor {
                ExecutorKind::Docker(docker) => docker
                    .build
                    .clone()
                    .map(|build| (docker.image.clone(), build)),
                ExecutorKind::Host { .. } => None,
            })
            .chain(matrix.services.iter().filter_map(|service| {
                service
                    .build
                    .clone()
                    .map(|build| (service.image.clone(), build))
            }))
            .collect();
        Executor {
            docker: docker::DockerExecutor::new(builds, keep, run_id, &cache),
            provisioner: Provisioner::new(cache),
            lock_dir: crate::gpu::lease::default_lock_dir(),
            lease_timeout: crate::settings::DEFAULT_LEASE_TIMEOUT,
            progress: Default::default(),
            runners: Default::default(),
            slots: 1,
            planned: Default::default(),
            runner_idle: crate::settings::DEFAULT_RUNNER_IDLE,
            identities: Default::default(),
        }
    }

    /// Runs up to `slots` trials at once: each runner keeps that many kernels warm. Its idle
    /// runners exit by themselves after `idle` (`RUNTIME_MATRIX_RUNNER_IDLE`).
    pub fn with_runners(mut self, slots: usize, idle: std::time::Duration) -> Executor {
        self.slots = slots.max(1);
        self.runner_idle = idle;
        self.docker.runner_idle = idle;
        self
    }

    /// Says which trials this process will run, by runtime and machine.
    pub(crate) fn expect<'a>(&self, trials: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let mut planned = super::live::lock(&self.planned);
        for (runtime, machine) in trials {
            *planned
                .entry((runtime.to_owned(), machine.to_owned()))
                .or_default() += 1;
        }
    }

    /// How many of `spec`'s runtime and machine's trials may run at once here: the test
    /// threads, or fewer when this process has fewer of them to run.
    pub(super) fn slots_for(&self, spec: &TrialSpec) -> usize {
        let key = (spec.runtime.name.clone(), spec.machine.name.clone());
        let planned = super::live::lock(&self.planned).get(&key).copied();
        planned.map_or(self.slots, |n| n.min(self.slots)).max(1)
    }

    /// Leases GPUs through the lock files in `lock_dir`, waiting up to `timeout` for them
    /// (`RUNTIME_MATRIX_LOCK_DIR`, `RUNTIME_MATRIX_LEASE_TIMEOUT`).
    pub fn with_gpu_leases(mut self, lock_dir: PathBuf, timeout: std::time::Duration) -> Executor {
        self.lock_dir = lock_dir;
        self.lease_timeout = timeout;
        self
    }

    /// Gives each Docker engine call `limit` to answer (`RUNTIME_MATRIX_ENGINE_TIMEOUT`).
    pub fn with_engine_timeout(mut self, limit: std::time::Duration) -> Executor {
        self.docker.engine_limit = limit;
        self
    }

    /// Says on `board` which cell each running host notebook is in.
    pub(crate) fn with_progress(
        mut self,
        board: std::sync::Arc<crate::progress::Board>,
    ) -> Executor {
        self.docker.board = board.clone();
        self.progress = board;
        self
    }

    /// Runs the check of `spec`, keeping artifacts in `run`. A trial on a GPU machine first
    /// leases that many of this host's matching GPUs, and holds them while its check runs.
    pub(crate) fn run(&self, spec: &TrialSpec, run: &RunDir) -> Outcome {
        let lease = match lease_gpus(spec, &self.lock_dir, self.lease_timeout) {
            Ok(lease) => lease,
            Err(error) => {
                return verdict::setup_failure(
                    crate::verdict::Category::Infrastructure,
                    error.to_string(),
                );
            }
        };
        let gpus = lease
            .as_ref()
            .map(|lease| lease.uuids.clone())
            .unwrap_or_default();
        let gpus = gpus.as_slice();
        let sampler = crate::gpu::usage::GpuSampler::start(gpus);
        let outcome = match &spec.runtime.executor {
            ExecutorKind::Host { python, packages } => {
                host::run(self, python, packages, spec, run, gpus)
            }
            ExecutorKind::Docker(docker) => {
                self.docker
                    .run(spec, docker, run, gpus, self.slots_for(spec))
            }
        };
        if outcome.failure.is_some() {
            self.docker.services_failed(spec);
        }
        let gpu_memory = sampler.map(|sampler| sampler.finish()).unwrap_or_default();
        let resources = match gpu_memory.is_empty() {
            true => outcome.resources.clone(),
            false => Some(crate::record::Resources {
                gpu_memory_bytes: gpu_memory,
                ..outcome.resources.clone().unwrap_or_default()
            }),
        };
        // Its texts are cleaned where outside text enters (verdict, notebook) and once more by
        // the harness, plain for the record and for a terminal in the message.
        Outcome {
            gpus: gpus.to_vec(),
            resources,
            ..outcome
        }
    }

    /// The tokio runtime the executor blocks on; signal handling runs there.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.docker.handle()
    }

    /// Stops what outlives single trials: the runners this process started, and their
    /// containers. Under cargo-nextest the other processes of the run may still need them:
    /// they are left to stop by themselves when idle.
    pub fn shutdown(&self) {
        if std::env::var_os("NEXTEST_RUN_ID").is_some() {
            return;
        }
        self.runners.shutdown();
        self.docker.shutdown();
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor").finish_non_exhaustive()
    }
}

/// Kills host processes left by harness runs that were killed outright; says how many.
pub fn reap_orphan_processes() {
    let killed = super::process::reap_orphans();
    if killed > 0 {
        eprintln!("runtime-matrix: killed {killed} process(es) left by runs that are gone");
    }
}
