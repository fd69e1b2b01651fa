//! Consistency across the matrix: the tagged cells of a notebook declared in `[consistency]`
//! must print the same in every runtime and machine that ran it. The main function is
//! [`rejudge`], which gives a consistency check's record its verdict from the records of its
//! notebook's trials, in-process at the end of a run and again whenever runs are merged.
//!
//! A consistency check's record is a [`TrialRecord`] without runtime or machine, carrying a
//! [`ConsistencyResult`](crate::record::ConsistencyResult) with the settings it compares with,
//! so that `runtime-matrix report` judges merged shards again without matrix.toml.

mod judge;
mod normalise;
mod pending;

pub(crate) use judge::{Seen, Verdict, judge};
pub(crate) use pending::{Pending, SETUP_ALLOWANCE, Waited};

use crate::plan::{ConsistencySpec, Excluded};
use crate::record::{ConsistencyResult, NotCompared, TrialRecord};
use crate::report::NotRun;

/// The settings of `spec`'s check, with nothing compared yet.
pub(crate) fn result_of(spec: &ConsistencySpec) -> ConsistencyResult {
    ConsistencyResult {
        notebook: spec.notebook.clone(),
        notebook_check: spec.notebook_check.clone(),
        tag: spec.tag.clone(),
        float_tolerance: spec.float_tolerance,
        sanitizers: spec.sanitizers.clone(),
        deferred: false,
        compared: Vec::new(),
        not_compared: Vec::new(),
        cells: 0,
        groups: Vec::new(),
    }
}

/// What the records, plans and exclusions of merged runs hold of the trials of
/// `notebook_check`: their records, and those without one, with the reason.
pub(crate) fn seen<'a>(
    notebook_check: &str,
    trials: &'a [TrialRecord],
    not_run: &[NotRun],
    skipped: &[Excluded],
    excluded: &[Excluded],
) -> Seen<'a> {
    let mut missing: Vec<NotCompared> = not_run
        .iter()
        .filter(|n| n.check == notebook_check)
        .map(|n| NotCompared {
            trial: n.name.clone(),
            runtime: n.runtime.clone(),
            machine: n.machine.clone(),
            reason: format!("not run: {}", n.reason),
        })
        .collect();
    for (what, entries) in [("skipped", skipped), ("excluded", excluded)] {
        missing.extend(
            entries
                .iter()
                .filter(|e| e.check == notebook_check)
                .map(|e| NotCompared {
                    trial: e.name.clone(),
                    runtime: e.runtime.clone(),
                    machine: e.machine.clone(),
                    reason: format!("{what}: {}", e.reason),
                }),
        );
    }
    Seen {
        records: trials.iter().collect(),
        missing,
    }
}

/// Gives the consistency check's `record` its verdict from `seen`: status, failure, note and
/// what it compared. Any other record is left as it is.
pub(crate) fn rejudge(record: &mut TrialRecord, seen: Seen) {
    let Some(mut result) = record.consistency.clone() else {
        return;
    };
    result.deferred = false;
    let Verdict {
        status,
        failure,
        note,
    } = judge(&mut result, record.expected.as_ref(), seen);
    record.status = status;
    record.failure = failure;
    record.note = Some(note).filter(|note| !note.is_empty());
    record.consistency = Some(result);
}
