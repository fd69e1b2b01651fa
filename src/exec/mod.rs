//! Running one trial's check. The main type is [`Executor`], which dispatches each trial to
//! its runtime's executor (host or Docker) and returns an [`Outcome`]. It never panics on bad
//! input and never leaves a process or a container behind.
//!
//! The public API is synchronous: the executor owns one tokio runtime for the Docker engine and
//! blocks on it, so nothing outside knows about tokio or bollard.

mod docker;
mod host;
mod live;
pub mod process;
mod provision;
mod verdict;

pub use docker::{Keep, clean};
pub use live::{install_interrupt_handler, interrupted};
pub use provision::{Provisioner, default_cache};

use crate::config::{Executor as ExecutorKind, Matrix};
use crate::notebook::CellTiming;
use crate::plan::TrialSpec;
use crate::record::{Failure, RunDir};
use std::path::PathBuf;

/// What running one check produced.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// `None` when the check passed.
    pub failure: Option<Failure>,
    /// Per-cell durations of a notebook.
    pub cells: Vec<CellTiming>,
    /// The executed notebook, kept under the run folder.
    pub artifact: Option<PathBuf>,
    /// The image a container trial ran in.
    pub image: Option<crate::engine::ImageInfo>,
}

/// Runs checks; shared by every trial of a process.
pub struct Executor {
    provisioner: Provisioner,
    docker: docker::DockerExecutor,
}

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
            .collect();
        Executor {
            docker: docker::DockerExecutor::new(builds, keep, run_id, &cache),
            provisioner: Provisioner::new(cache),
        }
    }

    /// Runs the check of `spec`, keeping artifacts in `run`.
    pub fn run(&self, spec: &TrialSpec, run: &RunDir) -> Outcome {
        match &spec.runtime.executor {
            ExecutorKind::Host { python, packages } => {
                host::run(&self.provisioner, python, packages, spec, run)
            }
            ExecutorKind::Docker(docker) => self.docker.run(spec, docker, run),
        }
    }

    /// The tokio runtime the executor blocks on; signal handling runs there.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.docker.handle()
    }

    /// Removes what outlives single trials: containers shared by a runtime's trials.
    pub fn shutdown(&self) {
        self.docker.shutdown();
    }
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor").finish_non_exhaustive()
    }
}
