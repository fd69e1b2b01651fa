//! Jupyter notebooks: checking that a file is one, and reading what an execution left. The
//! main type is [`ExecutionReport`], built from nbconvert's progress events and stderr.

mod execution;
mod validate;

pub use execution::{CellTiming, ExecutionReport, ProcessEnd, Progress};
pub use validate::check_notebook;
