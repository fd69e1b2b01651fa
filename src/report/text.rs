//! Plain-text descriptions of trials and failures, shared by the harness's failure messages
//! and the reports.

use crate::record::TrialRecord;
use crate::verdict::FailureKind;
use std::fmt::Write;
use std::path::Path;

/// `n` things, in the singular for one: `1 trial`, `2 trials`, `0 trials`.
pub fn count(n: usize, one: &str, many: &str) -> String {
    match n {
        1 => format!("1 {one}"),
        n => format!("{n} {many}"),
    }
}

/// How the trials that ran ended: `2 passed, 1 failed, 0 expected failures, 1 unexpected pass`,
/// with `(N reused from earlier runs, not executed)` when some were reused.
pub(crate) fn outcomes(s: &crate::report::Summary) -> String {
    let reused = match s.reused {
        0 => String::new(),
        n => format!(" ({n} reused from earlier runs, not executed)"),
    };
    format!(
        "{} passed, {} failed, {}, {}{reused}",
        s.passed,
        s.failed,
        count(s.expected_failures, "expected failure", "expected failures"),
        count(s.unexpected_passes, "unexpected pass", "unexpected passes"),
    )
}

/// `notebook `x.ipynb`` or `command `name``, from a check name.
pub fn describe_check(check: &str) -> String {
    match (check.strip_prefix("nb::"), check.strip_prefix("cmd::")) {
        (Some(notebook), _) => format!("notebook `{notebook}.ipynb`"),
        (_, Some(command)) => format!("command `{command}`"),
        _ => format!("check `{check}`"),
    }
}

/// A kind, category or cause as records spell it, e.g. `cell-error` or `no-kernel-image`.
pub fn name_of(value: &impl serde::Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The lines after a failure's headline: the cell, its source, the exception, where the
/// executed notebook and its HTML are (or why there are none). `run` resolves their relative
/// paths.
pub fn failure_details(record: &TrialRecord, run: Option<&Path>) -> String {
    let mut out = String::new();
    let Some(failure) = &record.failure else {
        return out;
    };
    let category = name_of(&failure.category);
    let _ = write!(out, "\n  category: {category}");
    // A notebook may fail with one runtime's or machine's parameters only: say which it had.
    if !record.parameters.is_empty() {
        let parameters: Vec<String> = record
            .parameters
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        let _ = write!(out, "\n  parameters: {}", parameters.join(" "));
    }
    if let Some(cause) = failure.cause {
        let _ = write!(out, "\n  cause: {}: {}", name_of(&cause), cause.explain());
    }
    match &failure.cell {
        Some(cell) => {
            let _ = write!(out, "\n  cell {} (0-based):", cell.index);
            for line in cell.source_excerpt.lines() {
                let _ = write!(out, "\n    | {line}");
            }
            match (&cell.ename, &cell.evalue) {
                (Some(name), value) => {
                    let _ = write!(out, "\n  {name}: {}", value.as_deref().unwrap_or(""));
                }
                _ => {
                    let _ = write!(out, "\n  {}", failure.summary);
                }
            }
            if let Some(traceback) = &cell.traceback {
                let _ = write!(out, "\n  traceback:");
                for line in traceback.lines() {
                    let _ = write!(out, "\n    {line}");
                }
            }
        }
        None => {
            let _ = write!(out, "\n  {}", failure.summary);
        }
    }
    // The cell and its exception say more than nbconvert's own traceback; the record keeps
    // the output either way.
    let show_output = match failure.kind {
        FailureKind::ExitCode | FailureKind::Inconsistent => true,
        FailureKind::Setup => false,
        _ => failure.cell.is_none(),
    };
    if let (true, Some(tail)) = (show_output, &failure.output_tail)
        && !tail.trim().is_empty()
    {
        let label = match failure.kind {
            FailureKind::Inconsistent => "how the outputs differ",
            _ => "output (last lines)",
        };
        let _ = write!(out, "\n  {label}:");
        for line in tail.lines() {
            let _ = write!(out, "\n    {line}");
        }
    }
    let path = |relative: &String| {
        run.map(|run| run.join(relative).display().to_string())
            .unwrap_or_else(|| relative.clone())
    };
    if let Some(artifact) = &record.artifact {
        let _ = write!(out, "\n  executed notebook: {}", path(artifact));
    }
    if let Some(html) = &record.html {
        let _ = write!(out, "\n  as HTML: {}", path(html));
    }
    if let Some(note) = &record.artifact_note {
        let _ = write!(out, "\n  {note}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_say_one_thing_in_the_singular() {
        assert_eq!(count(1, "trial", "trials"), "1 trial");
        assert_eq!(count(0, "trial", "trials"), "0 trials");
        assert_eq!(
            count(2, "unexpected pass", "unexpected passes"),
            "2 unexpected passes"
        );
    }
    use crate::verdict::Failure;
    use rstest::rstest;

    #[rstest]
    #[case("nb::numpy/arrays", "notebook `numpy/arrays.ipynb`")]
    #[case("cmd::version", "command `version`")]
    #[case("gpu::visible", "check `gpu::visible`")]
    fn describes_checks(#[case] check: &str, #[case] expected: &str) {
        assert_eq!(describe_check(check), expected);
    }

    #[test]
    fn a_named_cause_and_the_parameters_are_in_the_failure_message() {
        use crate::verdict::{Category, GpuCause, Status};
        let failure = Failure {
            kind: FailureKind::CellError,
            category: Category::Runtime,
            summary:
                "RuntimeError: CUDA error: no kernel image is available for execution on the device"
                    .into(),
            cell: None,
            exit_code: Some(1),
            output_tail: None,
            cause: Some(GpuCause::NoKernelImage),
        };
        let record = TrialRecord {
            schema: 1,
            run_id: "r".into(),
            trial: "torch::h100::nb::train".into(),
            runtime: "torch".into(),
            machine: "h100".into(),
            check: "nb::train".into(),
            executor: "docker".into(),
            tags: vec![],
            parameters: Default::default(),
            status: Status::Failed,
            failure: Some(failure),
            expected: None,
            started_at: "2026-11-22T00:00:00Z".into(),
            seconds: 1.0,
            setup: vec![],
            cells: vec![],
            artifact: None,
            html: None,
            artifact_note: None,
            gpus: vec![],
            note: None,
            image: None,
            resources: None,
            host: "h".into(),
            reused: None,
            engine: None,
            consistent: None,
            consistency: None,
            services: Vec::new(),
        };
        let details = failure_details(&record, None);
        assert!(
            details.contains("\n  cause: no-kernel-image: the framework was built without kernels"),
            "{details}"
        );
        assert!(!details.contains("parameters"), "{details}");
        let record = TrialRecord {
            parameters: [
                ("batch".to_owned(), serde_json::json!(64)),
                ("device".to_owned(), serde_json::json!("cuda")),
            ]
            .into(),
            ..record
        };
        let details = failure_details(&record, None);
        assert!(
            details.starts_with(
                "\n  category: runtime\n  parameters: batch=64 device=\"cuda\"\n  cause:"
            ),
            "{details}"
        );
    }
}
