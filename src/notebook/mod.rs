//! Jupyter notebooks: reading what an execution left. The main type is [`ExecutionReport`],
//! built from the runner's progress events, the notebook it ran and its output. Whether a file
//! is a notebook at all is nbformat's decision, made in the runtime by the runner, never at load.

mod consistent;
mod execution;

pub(crate) use consistent::consistent_cells;
pub use execution::{CellTiming, ExecutionReport, ProcessEnd, Progress};
