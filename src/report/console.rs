//! What a run says at its end, after libtest's own summary: the expected failures and
//! unexpected passes by name, the setup apart from the trials' time, the slowest trials. The
//! main function is [`summary`].

use super::Report;
use super::text::count;
use crate::record::SetupKind;
use crate::verdict::Status;
use std::collections::BTreeMap;
use std::fmt::Write;

/// How many of the slowest trials are named.
const SLOWEST: usize = 5;

/// The end-of-run summary of `report`, each line starting `runtime-matrix:` or indented.
pub(crate) fn summary(report: &Report) -> String {
    let s = &report.summary;
    let mut out = String::new();
    let _ = write!(
        out,
        "runtime-matrix: {} ran: {}",
        count(s.total, "trial", "trials"),
        super::text::outcomes(s),
    );
    if s.not_run > 0 {
        let _ = write!(out, "; {} not run", s.not_run);
    }
    if s.skipped > 0 {
        let _ = write!(
            out,
            "; {} skipped (container trials are opt-in: --include-ignored)",
            s.skipped
        );
    }
    if s.excluded > 0 {
        let _ = write!(out, "; {} excluded", s.excluded);
    }
    out.push('\n');
    for (status, heading) in [
        (
            Status::UnexpectedPass,
            "unexpected passes (they pass now: remove their [[expected-failures]] entries)",
        ),
        (Status::ExpectedFailure, "expected failures"),
    ] {
        let trials: Vec<_> = report
            .trials
            .iter()
            .filter(|t| t.status == status)
            .collect();
        if trials.is_empty() {
            continue;
        }
        let _ = writeln!(out, "  {heading}:");
        for t in trials {
            let reason = t.expected.as_ref().map(|e| e.reason.as_str()).unwrap_or("");
            let _ = writeln!(out, "    {} ({reason})", t.trial);
        }
    }
    let trial_seconds: f64 = report.trials.iter().map(|t| t.seconds).sum();
    if !s.setup.is_empty() {
        let mut by_kind: BTreeMap<String, f64> = BTreeMap::new();
        for step in &s.setup {
            *by_kind.entry(kind_name(step.kind)).or_default() += step.seconds;
        }
        let total: f64 = by_kind.values().sum();
        let parts: Vec<String> = by_kind
            .iter()
            .map(|(kind, seconds)| format!("{kind} {seconds:.1}s"))
            .collect();
        let _ = writeln!(
            out,
            "  setup: {total:.1}s ({}), apart from the trials' own {trial_seconds:.1}s",
            parts.join(", ")
        );
    }
    // A reused trial did not run: it is not among this run's slowest.
    let mut slowest: Vec<_> = report
        .trials
        .iter()
        .filter(|t| t.reused.is_none())
        .collect();
    slowest.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    if !slowest.is_empty() {
        let _ = writeln!(out, "  slowest:");
        for t in slowest.into_iter().take(SLOWEST) {
            let _ = writeln!(out, "    {:>7.2}s  {}", t.seconds, t.trial);
        }
    }
    out
}

fn kind_name(kind: SetupKind) -> String {
    super::text::name_of(&kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Expectation, RunContents, SetupStep, TrialRecord};

    fn record(name: &str, status: Status, seconds: f64) -> TrialRecord {
        let mut record: TrialRecord = serde_json::from_value(serde_json::json!({
            "schema": 1, "run_id": "r", "trial": name, "runtime": "rt", "machine": "m",
            "check": "cmd::x", "executor": "host", "tags": [], "status": "passed",
            "failure": null, "expected": null, "started_at": "2026-12-01T00:00:00.000Z",
            "seconds": seconds, "cells": [], "artifact": null, "host": "h"
        }))
        .unwrap();
        record.status = status;
        if status != Status::Passed {
            record.expected = Some(Expectation {
                reason: "known".into(),
                matches: None,
            });
        }
        record
    }

    #[test]
    fn names_expected_failures_unexpected_passes_setup_and_the_slowest() {
        let mut slow = record("rt::m::cmd::slow", Status::Passed, 9.5);
        slow.setup = vec![SetupStep {
            kind: SetupKind::Provision,
            subject: "venv".into(),
            seconds: 20.0,
        }];
        let report = Report::merge(RunContents {
            records: vec![
                slow,
                record("rt::m::cmd::broken", Status::ExpectedFailure, 1.0),
                record("rt::m::cmd::fixed", Status::UnexpectedPass, 0.5),
            ],
            ..RunContents::default()
        });
        let text = summary(&report);
        assert_eq!(
            text,
            "runtime-matrix: 3 trials ran: 1 passed, 0 failed, 1 expected failure, 1 unexpected pass\n\
             \x20 unexpected passes (they pass now: remove their [[expected-failures]] entries):\n\
             \x20   rt::m::cmd::fixed (known)\n\
             \x20 expected failures:\n\
             \x20   rt::m::cmd::broken (known)\n\
             \x20 setup: 20.0s (provision 20.0s), apart from the trials' own 11.0s\n\
             \x20 slowest:\n\
             \x20      9.50s  rt::m::cmd::slow\n\
             \x20      1.00s  rt::m::cmd::broken\n\
             \x20      0.50s  rt::m::cmd::fixed\n"
        );
    }
}
