//! Jupyter notebooks: checking that a file is one, and reading what an execution left. The
//! main type is [`ExecutionReport`], built from nbconvert's progress events and stderr.

mod execution;
mod validate;

pub use execution::{CellTiming, ExecutionReport, ProcessEnd, Progress};
pub use validate::{NotebookError, NotebookSummary, check_notebook};

/// A cell's source as one string, whether nbformat stored it as a string or a list of lines.
pub(crate) fn source_text(source: &serde_json::Value) -> String {
    match source {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Array(lines) => lines.iter().filter_map(|line| line.as_str()).collect(),
        _ => String::new(),
    }
}
