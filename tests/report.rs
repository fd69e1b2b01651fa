//! The report renderers, in memory: a fixed set of records (passed with notebook parameters,
//! a failing cell with its executed notebook and its HTML, a notebook that never started, an
//! expected failure, an unexpected pass, a failed command, a GPU failure with a known cause,
//! a consistency check whose notebook printed differently in two runtimes) and exclusions, merged and rendered as Markdown, JUnit XML and JSON, each compared byte for
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
    // Container trials one shard left out as opt-in; another shard ran one of them.
    let skipped: Vec<Excluded> = read("skipped.json");
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
        skipped,
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

/// junit.xml as a JUnit library (quick-junit's reader) reads it: every trial a case named by
/// its trial, an infrastructure failure an error, a notebook or runtime failure a failure, an
/// exclusion a skip, suite times wall-clock rather than sums.
#[test]
fn junit_parses_with_a_junit_library_and_infrastructure_failures_are_errors() {
    let mut xml = Vec::new();
    junit::write(&report(), &mut xml).unwrap();
    let parsed = quick_junit::Report::deserialize(xml.as_slice()).unwrap();
    assert_eq!(
        (parsed.tests, parsed.failures, parsed.errors),
        (14, 6, 1),
        "{}",
        String::from_utf8_lossy(&xml)
    );
    // The consistency check, which has no runtime, is a case of a suite of its own.
    let consistency = parsed
        .test_suites
        .iter()
        .find(|suite| suite.name.as_str() == "consistency")
        .unwrap();
    let case = &consistency.test_cases[0];
    assert_eq!(case.name.as_str(), "consistency::nb::smoke");
    assert_eq!(
        case.classname.as_ref().map(|c| c.as_str()),
        Some("consistency")
    );
    assert!(matches!(
        &case.status,
        quick_junit::TestCaseStatus::NonSuccess { kind: quick_junit::NonSuccessKind::Failure, ty: Some(ty), .. }
            if ty.as_str() == "inconsistent"
    ));
    let torch = parsed
        .test_suites
        .iter()
        .find(|suite| suite.name.as_str() == "torch")
        .unwrap();
    let status = |name: &str| {
        let case = torch
            .test_cases
            .iter()
            .find(|case| case.name.as_str() == name)
            .unwrap_or_else(|| panic!("no case {name}"));
        assert_eq!(
            case.classname.as_ref().map(|c| c.as_str()),
            name.rsplit_once("::")
                .and_then(|(rest, _)| rest.rsplit_once("::"))
                .map(|(runtime_machine, _)| runtime_machine.replacen("::", ".", 1))
                .as_deref()
        );
        &case.status
    };
    use quick_junit::{NonSuccessKind, TestCaseStatus};
    assert!(matches!(
        status("torch::cpu::cmd::version"),
        TestCaseStatus::NonSuccess { kind: NonSuccessKind::Error, message: Some(m), .. }
            if !m.as_str().contains('\n') && m.as_str().contains("cannot reach the Docker engine")
    ));
    assert!(matches!(
        status("torch::cpu::nb::failing_cell"),
        TestCaseStatus::NonSuccess {
            kind: NonSuccessKind::Failure,
            ..
        }
    ));
    assert!(matches!(
        status("torch::a100::nb::smoke"),
        TestCaseStatus::Skipped { .. }
    ));
    assert!(matches!(
        status("torch::cpu::nb::smoke"),
        TestCaseStatus::Success { .. }
    ));
    // The torch trials ran from 02:00:00 to 02:01:15.25 (the GPU check's pull and its 12 s),
    // in parallel: the suite's time is that span, less than the sum of its cases' times.
    assert_eq!(torch.time, Some(std::time::Duration::from_millis(75_250)));
    assert!(torch.extra.get("hostname").is_some());
}

/// junit.xml validates against the Jenkins xUnit plugin's JUnit schema (`junit-10.xsd`), the
/// schema pytest checks its own JUnit output against, taken from pytest's source distribution on
/// PyPI and checked with the `xmlschema` package, both set up once under the test cache.
#[test]
fn junit_validates_against_the_jenkins_xunit_schema() {
    let tools = support::junit_schema_tools();
    for (name, report) in [("junit.xml", report()), ("interrupted", interrupted())] {
        let mut xml = Vec::new();
        junit::write(&report, &mut xml).unwrap();
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &xml).unwrap();
        let (code, stdout, stderr) = support::output(
            std::process::Command::new(&tools.python)
                .arg("-c")
                .arg("import sys, xmlschema; xmlschema.XMLSchema(sys.argv[1]).validate(sys.argv[2]); print('valid')")
                .arg(&tools.xsd)
                .arg(file.path()),
        );
        assert_eq!(code, Some(0), "{name}: {stdout}\n{stderr}");
    }
    // And it can fail: an attribute the schema does not allow is refused.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        file.path(),
        "<testsuites><testsuite name=\"a\" tests=\"1\" failures=\"0\" errors=\"0\"><testcase name=\"x\" colour=\"red\"/></testsuite></testsuites>",
    )
    .unwrap();
    let (code, _, stderr) = support::output(
        std::process::Command::new(&tools.python)
            .arg("-c")
            .arg("import sys, xmlschema; xmlschema.XMLSchema(sys.argv[1]).validate(sys.argv[2])")
            .arg(&tools.xsd)
            .arg(file.path()),
    );
    assert_ne!(code, Some(0));
    assert!(stderr.contains("colour"), "{stderr}");
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
        (10, 2, 6, 1, 1, 3, 0)
    );
    // The consistency check passed where a cargo-nextest process recorded it (its verdict
    // deferred): merged with both trials of its notebook, it fails.
    let merged = report();
    let check = merged
        .trials
        .iter()
        .find(|t| t.trial == "consistency::nb::smoke")
        .unwrap();
    assert_eq!(check.status, runtime_matrix::record::Status::Failed);
    let consistency = check.consistency.as_ref().unwrap();
    assert!(!consistency.deferred);
    assert_eq!(consistency.compared.len(), 2);
    // One shard left two container trials out as opt-in; the other ran one of them. One
    // trial was left to a shard no merged run ran, and one excluded as another shard's was
    // run there.
    let merged = report();
    let skipped: Vec<&str> = merged.skipped.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(skipped, ["torch::cpu::cmd::lint"]);
    assert_eq!(merged.summary.skipped, 1);
    let excluded: Vec<(&str, &str)> = merged
        .excluded
        .iter()
        .map(|e| (e.name.as_str(), e.reason.as_str()))
        .collect();
    assert!(excluded.contains(&(
        "plain::cpu::cmd::other-shard",
        "in shard 2/2, not 1/2, and no merged run ran that shard"
    )));
    assert!(
        !excluded
            .iter()
            .any(|(name, _)| *name == "torch::cpu::nb::failing_cell")
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
    // The other exclusion left is the trial no merged shard ran.
    assert_eq!((report.summary.not_run, report.summary.excluded), (2, 2));
    assert_eq!(
        report.incomplete().as_deref(),
        Some(
            "run `nightly-2` was interrupted by SIGTERM; 2 planned trial(s) did not run: \
             `plain::h100::cmd::disk`, `torch::h100::nb::smoke`"
        )
    );
}
