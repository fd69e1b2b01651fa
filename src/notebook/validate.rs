//! Checking that a file is a notebook nbconvert can execute, before any trial needs it.

use serde_json::Value;
use std::path::Path;

/// What the matrix needs to know about a valid notebook.
#[derive(Debug, Clone)]
pub struct NotebookSummary {
    /// `metadata.kernelspec.name`, when declared.
    pub kernel: Option<String>,
}

/// Why a file is not a notebook nbconvert can execute.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotebookError {
    /// The file could not be read.
    #[error("cannot be read: {0}")]
    Read(String),
    /// Not JSON at all (or truncated).
    #[error("is not valid JSON ({0})")]
    Json(String),
    /// JSON, but not a notebook, or a notebook with a broken part.
    #[error("is not a valid notebook: {0}")]
    Invalid(String),
    /// A notebook in a format version nbconvert's execution does not take.
    #[error(
        "is nbformat {0}, but only nbformat 4 can be executed (convert it with \
         `jupyter nbconvert --to notebook --nbformat 4 --inplace`)"
    )]
    Version(u64),
}

/// Reads `path`, a regular file of at most 64 MiB, and checks it is an nbformat 4 notebook.
pub fn check_notebook(path: &Path) -> Result<NotebookSummary, NotebookError> {
    let bytes = crate::fsx::read_bounded(path, crate::fsx::NOTEBOOK)
        .map_err(|error| NotebookError::Read(error.to_string()))?;
    let notebook: Value =
        serde_json::from_slice(&bytes).map_err(|error| NotebookError::Json(error.to_string()))?;
    summarise(&notebook)
}

pub(crate) fn summarise(notebook: &Value) -> Result<NotebookSummary, NotebookError> {
    let invalid = |what: String| Err(NotebookError::Invalid(what));
    let Some(object) = notebook.as_object() else {
        return invalid("the top level is not a JSON object".into());
    };
    let Some(version) = object.get("nbformat").and_then(Value::as_u64) else {
        return invalid("`nbformat` is missing".into());
    };
    if version != 4 {
        return Err(NotebookError::Version(version));
    }
    let minor = object
        .get("nbformat_minor")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let Some(cells) = object.get("cells").and_then(Value::as_array) else {
        return invalid("`cells` is missing or not a list".into());
    };
    for (index, cell) in cells.iter().enumerate() {
        let cell_type = cell.get("cell_type").and_then(Value::as_str);
        match cell_type {
            Some("code" | "markdown" | "raw") => {}
            Some(other) => return invalid(format!("cell {index} has unknown cell_type `{other}`")),
            None => return invalid(format!("cell {index} has no `cell_type`")),
        }
        match cell.get("source") {
            Some(Value::String(_)) => {}
            Some(Value::Array(lines)) if lines.iter().all(Value::is_string) => {}
            _ => return invalid(format!("cell {index} has no valid `source`")),
        }
        if minor >= 5 && cell.get("id").and_then(Value::as_str).is_none() {
            return invalid(format!(
                "cell {index} has no `id`, which nbformat 4.{minor} requires (re-save the \
                 notebook with Jupyter, or set nbformat_minor to 4)"
            ));
        }
    }
    let kernel = object
        .get("metadata")
        .and_then(|metadata| metadata.get("kernelspec"))
        .and_then(|spec| spec.get("name"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(NotebookSummary { kernel })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    fn code_cell(id: Option<&str>) -> Value {
        let mut cell = json!({"cell_type": "code", "metadata": {}, "outputs": [], "source": "1"});
        if let Some(id) = id {
            cell["id"] = json!(id);
        }
        cell
    }

    #[test]
    fn accepts_a_plain_notebook() {
        let notebook = json!({"nbformat": 4, "nbformat_minor": 5,
            "metadata": {"kernelspec": {"name": "python3"}}, "cells": [code_cell(Some("a"))]});
        let summary = summarise(&notebook).unwrap();
        assert_eq!(summary.kernel.as_deref(), Some("python3"));
    }

    #[rstest]
    #[case(json!([1, 2]), "the top level is not a JSON object")]
    #[case(json!({"cells": []}), "`nbformat` is missing")]
    #[case(json!({"nbformat": 4, "nbformat_minor": 5, "cells": [code_cell(None)]}), "cell 0 has no `id`")]
    #[case(json!({"nbformat": 4, "nbformat_minor": 4}), "`cells` is missing")]
    #[case(json!({"nbformat": 4, "cells": [{"cell_type": "widget", "source": ""}]}), "unknown cell_type `widget`")]
    #[case(json!({"nbformat": 4, "cells": [{"cell_type": "code", "source": 3}]}), "cell 0 has no valid `source`")]
    fn rejects_broken_notebooks(#[case] notebook: Value, #[case] expected: &str) {
        let error = summarise(&notebook).unwrap_err().to_string();
        assert!(error.contains(expected), "{error}");
    }

    #[test]
    fn rejects_nbformat_3_with_the_conversion_command() {
        let error = summarise(&json!({"nbformat": 3, "worksheets": []})).unwrap_err();
        assert_eq!(error, NotebookError::Version(3));
        assert!(error.to_string().contains("--nbformat 4"));
    }

    #[test]
    fn ids_are_optional_before_4_5() {
        let notebook = json!({"nbformat": 4, "nbformat_minor": 4, "cells": [code_cell(None)]});
        assert!(summarise(&notebook).is_ok());
    }
}
