//! Running one trial's check. The main type is [`Executor`], which dispatches each trial to
//! the runtime's executor and returns an [`Outcome`]; it never panics on bad input and never
//! leaves a process behind.

mod host;
pub mod process;
mod provision;

pub use provision::{Provisioner, default_cache};

use crate::config::Executor as ExecutorKind;
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
}

/// Runs checks; shared by every trial of a process.
#[derive(Debug)]
pub struct Executor {
    provisioner: Provisioner,
}

impl Executor {
    /// An executor keeping provisioned virtualenvs under `cache`.
    pub fn new(cache: PathBuf) -> Executor {
        Executor {
            provisioner: Provisioner::new(cache),
        }
    }

    /// Runs the check of `spec`, keeping artifacts in `run`.
    pub fn run(&self, spec: &TrialSpec, run: &RunDir) -> Outcome {
        match &spec.runtime.executor {
            ExecutorKind::Host { python, packages } => {
                host::run(&self.provisioner, python, packages, spec, run)
            }
        }
    }
}
