//! The report renderers, in memory: a fixed set of records (passed, a failing cell, an
//! expected failure, an unexpected pass, a failed command, a GPU failure with a known cause)
//! and exclusions, merged and rendered as Markdown, JUnit XML and JSON, each compared byte for
//! byte with its expected file in `fixtures/reports/`. After an intended change to a renderer,
//! `UPDATE_REPORT_SNAPSHOTS=1 cargo test --test report` rewrites them; review the diff.

mod support;

use runtime_matrix::plan::Excluded;
use runtime_matrix::record::TrialRecord;
use runtime_matrix::report::{Report, json, junit, markdown};
use std::path::PathBuf;

type Renderer = fn(&Report, &mut Vec<u8>) -> std::io::Result<()>;

fn dir() -> PathBuf {
    support::fixtures().join("reports")
}

/// The fixed records, read as the report command reads records: from their JSON.
fn report() -> Report {
    let read = |name: &str| std::fs::read(dir().join(name)).unwrap();
    let records: Vec<TrialRecord> = serde_json::from_slice(&read("records.json")).unwrap();
    let excluded: Vec<Excluded> = serde_json::from_slice(&read("excluded.json")).unwrap();
    Report::merge(records, excluded)
}

/// Renders the report and compares it with `expected`, naming the first line that differs.
fn matches_snapshot(render: Renderer, expected: &str) {
    let mut bytes = Vec::new();
    render(&report(), &mut bytes).unwrap();
    let actual = String::from_utf8(bytes).expect("reports are UTF-8");
    let path = dir().join(expected);
    if std::env::var_os("UPDATE_REPORT_SNAPSHOTS").is_some() {
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let wanted = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (UPDATE_REPORT_SNAPSHOTS=1 writes it)",
            path.display()
        )
    });
    if actual == wanted {
        return;
    }
    let (line, (got, want)) = actual
        .lines()
        .chain(std::iter::repeat("<end of output>"))
        .zip(wanted.lines().chain(std::iter::repeat("<end of file>")))
        .enumerate()
        .find(|(_, (got, want))| got != want)
        .unwrap_or((0, ("(line endings differ)", "")));
    panic!(
        "{} differs from what the renderer writes, first at line {}:\n  expected: {want}\n  actual:   {got}\n\
         whole output:\n{actual}",
        path.display(),
        line + 1
    );
}

#[test]
fn markdown_shows_the_grid_failures_with_their_cells_causes_and_exclusions() {
    matches_snapshot(markdown::write, "report.md");
}

#[test]
fn junit_has_a_case_per_trial_failures_with_escaped_messages_and_skipped_exclusions() {
    matches_snapshot(junit::write, "junit.xml");
}

#[test]
fn json_keeps_every_record_field_and_the_summary() {
    matches_snapshot(json::write, "report.json");
}

#[test]
fn the_summary_counts_each_status_once() {
    let summary = report().summary;
    assert_eq!(
        (
            summary.total,
            summary.passed,
            summary.failed,
            summary.expected_failures,
            summary.unexpected_passes,
            summary.excluded
        ),
        (6, 1, 3, 1, 1, 2)
    );
}
