//! The report renderers, in memory: a fixed set of records (passed with notebook parameters,
//! a failing cell with its executed notebook and its HTML, a notebook that never started, an
//! expected failure, an unexpected pass, a failed command, a GPU failure with a known cause)
//! and exclusions, merged and rendered as Markdown, JUnit XML and JSON, each compared byte for
//! byte with its expected file in `fixtures/reports/`. The same records as an incomplete run
//! (`fixtures/reports/interrupted/`: run `nightly-2` interrupted by SIGTERM before two of its
//! planned trials finished, one of them excluded by the other run, and a run of an older
//! runtime-matrix without a plan) are snapshots of their own. After an intended change to a
//! renderer, `UPDATE_REPORT_SNAPSHOTS=1 cargo test --test report` rewrites them; review the diff.

mod support;

use runtime_matrix::plan::Excluded;
use runtime_matrix::record::{Interruption, Planned, RunContents, TrialRecord};
use runtime_matrix::report::{Report, json, junit, markdown};
use std::path::PathBuf;

type Renderer = fn(&Report, &mut Vec<u8>) -> std::io::Result<()>;

fn dir() -> PathBuf {
    support::fixtures().join("reports")
}

fn read<T: serde::de::DeserializeOwned>(name: &str) -> T {
    serde_json::from_slice(&std::fs::read(dir().join(name)).unwrap()).unwrap()
}

/// The fixed records, read as the report command reads records: from their JSON; each run
/// planned the trials it recorded.
fn contents() -> RunContents {
    let records: Vec<TrialRecord> = read("records.json");
    let excluded: Vec<Excluded> = read("excluded.json");
    let planned = records
        .iter()
        .map(|r| {
            let planned = Planned {
                name: r.trial.clone(),
                runtime: r.runtime.clone(),
                machine: r.machine.clone(),
                check: r.check.clone(),
            };
            (r.run_id.clone(), planned)
        })
        .collect();
    RunContents {
        records,
        excluded,
        planned,
        ..RunContents::default()
    }
}

fn report() -> Report {
    Report::merge(contents())
}

/// The same runs, but `nightly-2` was interrupted before two more of its planned trials
/// finished, and `nightly-0` comes from a runtime-matrix that recorded no plan.
fn interrupted() -> Report {
    let mut contents = contents();
    let more: Vec<Planned> = read("interrupted/planned.json");
    contents
        .planned
        .extend(more.into_iter().map(|p| ("nightly-2".to_owned(), p)));
    contents
        .interruptions
        .push(read::<Interruption>("interrupted/interrupted.json"));
    contents.runs_without_plan.push("nightly-0".to_owned());
    Report::merge(contents)
}

/// Renders the report and compares it with `expected`, naming the first line that differs.
fn matches_snapshot(report: Report, render: Renderer, expected: &str) {
    let mut bytes = Vec::new();
    render(&report, &mut bytes).unwrap();
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
    matches_snapshot(report(), markdown::write, "report.md");
}

#[test]
fn junit_has_a_case_per_trial_failures_with_escaped_messages_and_skipped_exclusions() {
    matches_snapshot(report(), junit::write, "junit.xml");
}

#[test]
fn json_keeps_every_record_field_and_the_summary() {
    matches_snapshot(report(), json::write, "report.json");
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
            summary.excluded,
            summary.not_run
        ),
        (7, 1, 4, 1, 1, 2, 0)
    );
    assert_eq!(report().incomplete(), None);
}

#[test]
fn markdown_of_an_interrupted_run_says_so_and_lists_what_did_not_run() {
    matches_snapshot(interrupted(), markdown::write, "interrupted/report.md");
}

#[test]
fn junit_of_an_interrupted_run_has_an_error_per_trial_that_did_not_run() {
    matches_snapshot(interrupted(), junit::write, "interrupted/junit.xml");
}

#[test]
fn json_of_an_interrupted_run_keeps_the_interruption_and_what_did_not_run() {
    matches_snapshot(interrupted(), json::write, "interrupted/report.json");
}

#[test]
fn a_trial_planned_but_not_run_counts_as_not_run_even_where_another_run_excluded_it() {
    let report = interrupted();
    assert!(report.interrupted);
    let not_run: Vec<&str> = report.not_run.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(
        not_run,
        ["plain::h100::cmd::disk", "torch::h100::nb::smoke"]
    );
    assert_eq!((report.summary.not_run, report.summary.excluded), (2, 1));
    assert_eq!(
        report.incomplete().as_deref(),
        Some(
            "run `nightly-2` was interrupted by SIGTERM; 2 planned trial(s) did not run: \
             `plain::h100::cmd::disk`, `torch::h100::nb::smoke`"
        )
    );
}
