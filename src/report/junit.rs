//! `junit.xml`, written with quick-junit (cargo-nextest's writer).
//!
//! Layout, chosen for how CI test views show it: one `<testsuite>` per runtime (GitHub test
//! reporters and GitLab's test report list suites as sections, so a runtime reads as one row
//! of the grid); each trial a `<testcase>` named by its full trial name, `runtime::machine::check`
//! (what `cargo test -- --exact` takes, and what viewers that show only names need), with
//! classname `runtime.machine` (Jenkins splits a classname at its last dot into package and
//! class: runtime, then machine).
//!
//! Consistency checks (`consistency::nb::<path>`), which have no runtime or machine, are the
//! cases of a `consistency` suite, with classname `consistency`.
//!
//! Statuses: a notebook or runtime failure and an unexpected pass are `<failure>`; an
//! infrastructure failure (the engine, provisioning, I/O) and a planned trial that left no record
//! are `<error>`: CI gates and test views pass a suite whose cases were skipped, and a trial an
//! interrupted run never finished proved nothing. Excluded trials are `<skipped>` with their
//! reason, and so are container trials left out because they are opt-in; an expected failure passes, saying so in its `<system-out>`; a reused trial passes, its `<system-out>` starting `reused from run X`.
//!
//! The output validates against the Jenkins xUnit plugin's `junit-10.xsd` (the schema pytest
//! checks its own JUnit output with), which is stricter than GitHub's and GitLab's parsers: no
//! per-case timestamps (records keep them) and no `skipped` count on `<testsuites>`.
//!
//! Times are wall-clock: a suite's is the span from its first trial's start to its last trial's
//! end, not the sum of its trials, which run in parallel.

use super::Report;
use crate::record::TrialRecord;
use crate::verdict::{Category, Status};
use chrono::{DateTime, FixedOffset};
use quick_junit::{NonSuccessKind, TestCase, TestCaseStatus, TestSuite};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::Duration;

/// Writes `report` as JUnit XML.
pub fn write(report: &Report, out: &mut impl Write) -> std::io::Result<()> {
    let mut suites: BTreeMap<&str, Suite> = BTreeMap::new();
    for t in &report.trials {
        suites
            .entry(suite_of(&t.runtime))
            .or_default()
            .add_record(t);
    }
    for n in &report.not_run {
        let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
        status
            .set_type("not-run")
            .set_message(one_line(&format!("not run: {}", n.reason)));
        let case = case(&n.name, &n.runtime, &n.machine, status);
        suites
            .entry(suite_of(&n.runtime))
            .or_default()
            .cases
            .push(case);
    }
    for e in report.excluded.iter().chain(&report.skipped) {
        let mut status = TestCaseStatus::skipped();
        status.set_message(one_line(&e.reason));
        let case = case(&e.name, &e.runtime, &e.machine, status);
        suites.entry(&e.runtime).or_default().cases.push(case);
    }

    let mut junit = quick_junit::Report::new("runtime-matrix");
    let mut whole = Span::default();
    for (runtime, suite) in suites {
        let mut test_suite = TestSuite::new(runtime);
        suite.span.stamp(&mut test_suite);
        if !suite.hosts.is_empty() {
            let hosts: Vec<String> = suite.hosts.into_iter().collect();
            test_suite
                .extra
                .insert("hostname".into(), one_line(&hosts.join(", ")).into());
        }
        test_suite.add_test_cases(suite.cases);
        whole.merge(&suite.span);
        junit.add_test_suite(test_suite);
    }
    junit.set_time(whole.duration());
    let xml = junit.to_string().map_err(std::io::Error::other)?;
    out.write_all(without_root_skipped(&xml).as_bytes())
}

/// `xml` without the `skipped` count quick-junit always puts on `<testsuites>`: the Jenkins
/// xUnit schema (`junit-10.xsd`, which pytest also validates its output against) does not allow
/// it there, and every viewer counts skips from the suites, which keep theirs.
fn without_root_skipped(xml: &str) -> String {
    let Some(root) = xml.find("<testsuites ") else {
        return xml.to_owned();
    };
    let tag_end = xml[root..].find('>').map_or(xml.len(), |end| root + end);
    let Some(attribute) = xml[root..tag_end].find(" skipped=\"").map(|at| root + at) else {
        return xml.to_owned();
    };
    let value = attribute + " skipped=\"".len();
    let close = xml[value..tag_end]
        .find('"')
        .map_or(tag_end, |end| value + end + 1);
    format!("{}{}", &xml[..attribute], &xml[close..])
}

/// A runtime's test cases, and when and where its trials ran.
#[derive(Default)]
struct Suite {
    cases: Vec<TestCase>,
    span: Span,
    hosts: BTreeSet<String>,
}

impl Suite {
    fn add_record(&mut self, t: &TrialRecord) {
        // A container trial ran on its engine's host; several engines may share one.
        self.hosts.insert(match &t.engine {
            Some(engine) => engine.to_string(),
            None => t.host.clone(),
        });
        let failure = t.failure.as_ref();
        let details = super::text::failure_details(t, None);
        let status = match t.status {
            Status::Passed | Status::ExpectedFailure => TestCaseStatus::success(),
            Status::UnexpectedPass => {
                let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                status
                    .set_type("unexpected-pass")
                    .set_message("passed, but declared as an expected failure");
                if let Some(expected) = &t.expected {
                    status.set_description(format!("expected to fail: {}", expected.reason));
                }
                status
            }
            Status::Failed => {
                let kind = match failure.map(|f| f.category) {
                    Some(Category::Infrastructure) => NonSuccessKind::Error,
                    _ => NonSuccessKind::Failure,
                };
                let mut status = TestCaseStatus::non_success(kind);
                if let Some(f) = failure {
                    status
                        .set_type(super::text::name_of(&f.kind))
                        .set_message(one_line(&f.summary));
                }
                status.set_description(details.trim_start());
                status
            }
        };
        let mut case = case(&t.trial, &t.runtime, &t.machine, status);
        case.set_time(Duration::from_secs_f64(t.seconds.max(0.0)));
        let started = DateTime::parse_from_rfc3339(&t.started_at).ok();
        let mut out = system_out(t, &details);
        // In the output, not a per-case property: junit-10.xsd has none.
        if let Some(reused) = &t.reused {
            out.insert_str(
                0,
                &format!(
                    "reused from run {} (ran at {} on {}, {:.2}s): its inputs are unchanged, so it was not executed\n",
                    reused.run_id, reused.at, reused.host, reused.seconds
                ),
            );
        }
        if !out.is_empty() {
            case.set_system_out(out);
        }
        self.cases.push(case);
        if let Some(started) = started {
            let setup: f64 = t.setup.iter().map(|step| step.seconds).sum();
            let end = started + chrono::Duration::milliseconds(((setup + t.seconds) * 1e3) as i64);
            self.span.add(started, end);
        }
    }
}

/// What a viewer shows as the trial's output: why an expected failure failed, the output tail,
/// where the executed notebook is.
fn system_out(t: &TrialRecord, details: &str) -> String {
    let mut out = String::new();
    if let (Status::ExpectedFailure, Some(expected)) = (t.status, &t.expected) {
        out.push_str(&format!("expected failure ({}):", expected.reason));
        out.push_str(details);
        out.push('\n');
        return out;
    }
    if let Some(tail) = t.failure.as_ref().and_then(|f| f.output_tail.as_deref())
        && !tail.trim().is_empty()
    {
        out.push_str(tail.trim_end());
        out.push('\n');
    }
    if let Some(artifact) = &t.artifact {
        out.push_str(&format!("executed notebook: {artifact}\n"));
    }
    if let Some(html) = &t.html {
        out.push_str(&format!("as HTML: {html}\n"));
    }
    out
}

/// A `<testcase>` named by its trial, in class `runtime.machine`.
fn case(name: &str, runtime: &str, machine: &str, status: TestCaseStatus) -> TestCase {
    let mut case = TestCase::new(name, status);
    case.set_classname(match runtime {
        "" => CONSISTENCY_SUITE.to_owned(),
        _ => format!("{runtime}.{machine}"),
    });
    case
}

/// The suite of consistency checks, which have no runtime.
const CONSISTENCY_SUITE: &str = "consistency";

/// The suite of a record or planned trial of `runtime`: its runtime's, or the consistency
/// checks' for a record without runtime.
fn suite_of(runtime: &str) -> &str {
    match runtime {
        "" => CONSISTENCY_SUITE,
        runtime => runtime,
    }
}

/// `text` on one line: an attribute's newlines become spaces when a viewer reads it.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// From the first start to the last end of some trials.
#[derive(Default)]
struct Span {
    start: Option<DateTime<FixedOffset>>,
    end: Option<DateTime<FixedOffset>>,
}

impl Span {
    fn add(&mut self, start: DateTime<FixedOffset>, end: DateTime<FixedOffset>) {
        self.start = Some(self.start.map_or(start, |s| s.min(start)));
        self.end = Some(self.end.map_or(end, |e| e.max(end)));
    }

    fn merge(&mut self, other: &Span) {
        if let (Some(start), Some(end)) = (other.start, other.end) {
            self.add(start, end);
        }
    }

    fn duration(&self) -> Duration {
        match (self.start, self.end) {
            (Some(start), Some(end)) => (end - start).to_std().unwrap_or_default(),
            _ => Duration::ZERO,
        }
    }

    fn stamp(&self, suite: &mut TestSuite) {
        if let Some(start) = self.start {
            suite.set_timestamp(start);
        }
        suite.set_time(self.duration());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_root_loses_its_skipped_count() {
        let xml = "<?xml version=\"1.0\"?>\n<testsuites name=\"runtime-matrix\" tests=\"2\" skipped=\"1\" failures=\"0\">\n<testsuite name=\"a\" skipped=\"1\">";
        assert_eq!(
            without_root_skipped(xml),
            "<?xml version=\"1.0\"?>\n<testsuites name=\"runtime-matrix\" tests=\"2\" failures=\"0\">\n<testsuite name=\"a\" skipped=\"1\">"
        );
        assert_eq!(without_root_skipped("<testsuites/>"), "<testsuites/>");
    }
}
