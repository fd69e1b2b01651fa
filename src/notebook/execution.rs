//! What one notebook execution did: which cells ran, how long each took, and, when it
//! failed, which cell, how, and with what exception.
//!
//! The runner (`exec/runner/runner.py`) appends a `start` event before each cell and a `done`
//! event, with the executed cell, after it, to the trial's `progress.jsonl`, as nbconvert does
//! with `exec/nbconvert_hooks.py` (kept so that a kept container's paste line reproduces a
//! trial with nbconvert). That is how a notebook stopped at its deadline or by a dead kernel
//! still names the cell that was running, and how a failed notebook keeps the outputs of the
//! cells that did run.

use crate::sanitise::{for_terminal, plain};
use crate::verdict::{CellFailure, FailureKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// How the runner starts the output of a trial whose file nbformat refused (runner.py's
/// `INVALID`).
const INVALID: &str = "InvalidNotebook: ";

/// How long one cell took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CellTiming {
    /// 0-based cell index.
    pub index: usize,
    /// Seconds from execute request to reply.
    pub seconds: f64,
}

/// The `start` and `done` events of one execution.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    started: Vec<(usize, f64)>,
    done: BTreeMap<usize, (f64, Value)>,
}

#[derive(Deserialize)]
struct Event {
    event: String,
    index: usize,
    time: f64,
    #[serde(default)]
    cell: Value,
}

impl Progress {
    /// Parses the JSON-lines progress file. A torn last line (the process was killed while
    /// writing it) is skipped.
    pub fn parse(text: &str) -> Progress {
        let mut progress = Progress::default();
        for event in text
            .lines()
            .filter_map(|line| serde_json::from_str::<Event>(line).ok())
        {
            match event.event.as_str() {
                "start" => progress.started.push((event.index, event.time)),
                "done" => {
                    progress.done.insert(event.index, (event.time, event.cell));
                }
                _ => {}
            }
        }
        progress
    }

    /// Whether any cell started.
    pub fn any_started(&self) -> bool {
        !self.started.is_empty()
    }

    /// The cell that started last and never finished, if any.
    pub fn running(&self) -> Option<usize> {
        self.started
            .last()
            .map(|(index, _)| *index)
            .filter(|index| !self.done.contains_key(index))
    }

    /// Per-cell durations, from the cells' `metadata.execution` timestamps when present and
    /// from the events otherwise.
    pub fn timings(&self) -> Vec<CellTiming> {
        let started: BTreeMap<usize, f64> = self.started.iter().copied().collect();
        self.done
            .iter()
            .map(|(index, (done_at, cell))| {
                let seconds = execution_seconds(cell)
                    .or_else(|| started.get(index).map(|start| done_at - start))
                    .unwrap_or(0.0);
                CellTiming {
                    index: *index,
                    seconds: seconds.max(0.0),
                }
            })
            .collect()
    }
}

fn execution_seconds(cell: &Value) -> Option<f64> {
    let execution = cell.get("metadata")?.get("execution")?;
    let time = |key: &str| {
        let text = execution.get(key)?.as_str()?;
        humantime::parse_rfc3339_weak(text.trim_end_matches('Z')).ok()
    };
    let start = time("iopub.execute_input").or_else(|| time("iopub.status.busy"))?;
    let end = time("shell.execute_reply")?;
    Some(end.duration_since(start).ok()?.as_secs_f64())
}

/// How the nbconvert process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessEnd {
    /// Exit code 0.
    Success,
    /// Exited non-zero or by a signal (the code, or 128 + signal).
    Failed(i32),
    /// Killed by the harness at the deadline.
    Deadline,
}

/// The verdict on one notebook execution.
#[derive(Debug, Clone)]
pub struct ExecutionReport {
    /// `None` when the notebook ran to the end.
    pub failure: Option<(FailureKind, Option<CellFailure>, String)>,
    /// Per-cell durations of the cells that finished.
    pub cells: Vec<CellTiming>,
}

impl ExecutionReport {
    /// Reads one execution: the original `notebook`, its `progress` events, nbconvert's
    /// combined `output`, and how the process ended.
    pub fn read(
        notebook: &Value,
        progress: &Progress,
        output: &str,
        end: ProcessEnd,
    ) -> ExecutionReport {
        let cells = progress.timings();
        let output = plain(output);
        let running = progress
            .running()
            .map(|index| cell_failure(notebook, index, None));
        let failure = match end {
            ProcessEnd::Success => None,
            ProcessEnd::Deadline => Some((FailureKind::Deadline, running, String::new())),
            ProcessEnd::Failed(code) => Some(if let Some(problem) = invalid(progress, &output) {
                (FailureKind::InvalidNotebook, None, problem.to_owned())
            } else if output.contains("CellTimeoutError") {
                (
                    FailureKind::CellTimeout,
                    running,
                    last_line_with(&output, "CellTimeoutError"),
                )
            } else if output.contains("DeadKernelError") {
                (
                    FailureKind::KernelDied,
                    running,
                    last_line_with(&output, "DeadKernelError"),
                )
            } else if output.contains("NoSuchKernel") {
                (
                    FailureKind::NoSuchKernel,
                    None,
                    last_line_with(&output, "No such kernel"),
                )
            } else if let Some(failure) = first_error(progress, notebook) {
                let summary = format!(
                    "{}: {}",
                    failure.ename.as_deref().unwrap_or("error"),
                    failure.evalue.as_deref().unwrap_or("")
                );
                (FailureKind::CellError, Some(failure), summary)
            } else {
                (
                    FailureKind::ExitCode,
                    running,
                    format!("nbconvert exited with code {code}"),
                )
            }),
        };
        ExecutionReport { failure, cells }
    }
}

/// What nbformat found wrong with a file the runner refused: its output starts with
/// [`INVALID`], and no cell started.
fn invalid<'a>(progress: &Progress, output: &'a str) -> Option<&'a str> {
    let problem = output.strip_prefix(INVALID)?;
    progress
        .started
        .is_empty()
        .then(|| problem.lines().next().unwrap_or_default().trim())
}

fn last_line_with(output: &str, needle: &str) -> String {
    output
        .lines()
        .rev()
        .find(|line| line.contains(needle))
        .map(|line| line.trim().to_owned())
        .unwrap_or_default()
}

fn first_error(progress: &Progress, notebook: &Value) -> Option<CellFailure> {
    progress.done.iter().find_map(|(index, (_, cell))| {
        let error =
            cell.get("outputs")?.as_array()?.iter().find(|output| {
                output.get("output_type").and_then(Value::as_str) == Some("error")
            })?;
        Some(cell_failure(notebook, *index, Some(error)))
    })
}

fn cell_failure(notebook: &Value, index: usize, error: Option<&Value>) -> CellFailure {
    let source = notebook
        .get("cells")
        .and_then(|cells| cells.get(index))
        .and_then(|cell| cell.get("source"))
        .map(source_text)
        .unwrap_or_default();
    let text = |key: &str| {
        error
            .and_then(|e| e.get(key))
            .and_then(Value::as_str)
            .map(for_terminal)
    };
    let traceback = error
        .and_then(|e| e.get("traceback"))
        .and_then(Value::as_array)
        .map(|lines| {
            let lines: Vec<&str> = lines.iter().filter_map(Value::as_str).collect();
            for_terminal(&lines.join("\n"))
        });
    CellFailure {
        index,
        source_excerpt: for_terminal(&excerpt(&source, 6)),
        ename: text("ename"),
        evalue: text("evalue"),
        traceback,
    }
}

/// The first `lines` lines of `source`, with `...` when there is more.
pub(crate) fn excerpt(source: &str, lines: usize) -> String {
    let mut all = source.lines();
    let mut kept: Vec<&str> = all.by_ref().take(lines).collect();
    if all.next().is_some() {
        kept.push("...");
    }
    kept.join("\n")
}

/// A cell's source as one string, whether nbformat stored it as a string or a list of lines.
fn source_text(source: &serde_json::Value) -> String {
    match source {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Array(lines) => lines.iter().filter_map(|line| line.as_str()).collect(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn notebook() -> Value {
        json!({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
            {"cell_type": "code", "id": "a", "source": ["x = 1\n", "y = 2"], "outputs": [], "metadata": {}},
            {"cell_type": "code", "id": "b", "source": "x / 0", "outputs": [], "metadata": {}},
            {"cell_type": "code", "id": "c", "source": "print(x)", "outputs": [], "metadata": {}},
        ]})
    }

    fn done(index: usize, outputs: Value) -> String {
        let cell = json!({"cell_type": "code", "id": "x", "source": "", "metadata": {"execution": {
            "iopub.execute_input": "2026-11-22T10:00:00.000000Z",
            "shell.execute_reply": "2026-11-22T10:00:01.500000Z"}}, "outputs": outputs});
        format!(
            "{{\"event\": \"start\", \"index\": {index}, \"time\": 100.0}}\n{}\n",
            json!({"event": "done", "index": index, "time": 101.0, "cell": cell})
        )
    }

    #[test]
    fn reads_the_failing_cell_of_an_error() {
        let error = json!([{"output_type": "error", "ename": "ZeroDivisionError", "evalue": "division by zero",
            "traceback": ["\u{1b}[31m---------\u{1b}[0m", "\u{1b}[31mZeroDivisionError\u{1b}[0m: division by zero"]}]);
        let progress = Progress::parse(&(done(0, json!([])) + &done(1, error)));
        let report = ExecutionReport::read(
            &notebook(),
            &progress,
            "CellExecutionError ...",
            ProcessEnd::Failed(1),
        );
        let (kind, cell, summary) = report.failure.unwrap();
        assert_eq!(kind, FailureKind::CellError);
        assert_eq!(summary, "ZeroDivisionError: division by zero");
        let cell = cell.unwrap();
        assert_eq!(cell.index, 1);
        assert_eq!(cell.source_excerpt, "x / 0");
        // Colours stay for terminals; records keep the plain text.
        let traceback = cell.traceback.unwrap();
        assert!(
            traceback.contains("\u{1b}[31mZeroDivisionError"),
            "{traceback:?}"
        );
        assert_eq!(
            plain(&traceback),
            "---------\nZeroDivisionError: division by zero"
        );
        assert_eq!(
            report.cells,
            vec![
                CellTiming {
                    index: 0,
                    seconds: 1.5
                },
                CellTiming {
                    index: 1,
                    seconds: 1.5
                }
            ]
        );
    }

    #[test]
    fn names_the_running_cell_at_the_deadline_and_skips_a_torn_line() {
        let text = done(0, json!([]))
            + "{\"event\": \"start\", \"index\": 1, \"time\": 101.0}\n{\"event\": \"do";
        let progress = Progress::parse(&text);
        assert_eq!(progress.running(), Some(1));
        let report = ExecutionReport::read(&notebook(), &progress, "", ProcessEnd::Deadline);
        let (kind, cell, _) = report.failure.unwrap();
        assert_eq!(kind, FailureKind::Deadline);
        assert_eq!(cell.unwrap().index, 1);
    }

    #[test]
    fn tells_cell_timeouts_and_dead_kernels_apart() {
        let progress = Progress::parse("{\"event\": \"start\", \"index\": 2, \"time\": 1.0}\n");
        let timeout = "nbclient.exceptions.CellTimeoutError: A cell timed out while it was being executed, after 2 seconds.";
        let report = ExecutionReport::read(&notebook(), &progress, timeout, ProcessEnd::Failed(1));
        let (kind, cell, summary) = report.failure.unwrap();
        assert_eq!((kind, cell.unwrap().index), (FailureKind::CellTimeout, 2));
        assert!(summary.contains("after 2 seconds"));
        let died = "raise DeadKernelError(\"Kernel died\") from None\nnbclient.exceptions.DeadKernelError: Kernel died";
        let report = ExecutionReport::read(&notebook(), &progress, died, ProcessEnd::Failed(1));
        let (kind, _, summary) = report.failure.unwrap();
        assert_eq!(kind, FailureKind::KernelDied);
        assert_eq!(summary, "nbclient.exceptions.DeadKernelError: Kernel died");
    }

    #[test]
    fn a_file_nbformat_refused_fails_as_invalid_with_its_reason() {
        let output =
            "InvalidNotebook: cell 0, field `id`: 'a b' does not match '^[a-zA-Z0-9-_]+$'\n";
        let report = ExecutionReport::read(
            &Value::Null,
            &Progress::default(),
            output,
            ProcessEnd::Failed(1),
        );
        let (kind, cell, summary) = report.failure.unwrap();
        assert_eq!(kind, FailureKind::InvalidNotebook);
        assert!(cell.is_none());
        assert_eq!(
            summary,
            "cell 0, field `id`: 'a b' does not match '^[a-zA-Z0-9-_]+$'"
        );
    }

    #[test]
    fn a_notebook_that_ran_is_never_called_invalid_by_what_it_printed() {
        let progress = Progress::parse(&done(0, json!([])));
        let report = ExecutionReport::read(
            &notebook(),
            &progress,
            "InvalidNotebook: printed by a cell\n",
            ProcessEnd::Failed(1),
        );
        assert_ne!(report.failure.unwrap().0, FailureKind::InvalidNotebook);
    }

    #[test]
    fn excerpts_mark_what_was_cut() {
        assert_eq!(excerpt("a\nb\nc", 2), "a\nb\n...");
        assert_eq!(excerpt("a\nb", 2), "a\nb");
    }
}
