//! Merging records into reports. The main type is [`Report`]; [`json`], [`markdown`] and
//! [`junit`] render it to any `impl Write`.

pub mod json;
pub mod junit;
pub mod markdown;
pub mod text;

use crate::error::OutputError;
use crate::plan::Excluded;
use crate::record::{TrialRecord, read_dir, write_atomic};
use crate::verdict::Status;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The report schema version; bumped on incompatible changes.
pub const REPORT_SCHEMA: u32 = 1;

/// Counts over a report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Trials that ran.
    pub total: usize,
    /// Passed.
    pub passed: usize,
    /// Failed.
    pub failed: usize,
    /// Failed the declared way.
    pub expected_failures: usize,
    /// Passed though declared to fail.
    pub unexpected_passes: usize,
    /// Declared but not run.
    pub excluded: usize,
}

/// Records of one or more runs, merged: one entry per trial.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// [`REPORT_SCHEMA`].
    pub schema: u32,
    /// The run ids merged.
    pub runs: Vec<String>,
    /// The hosts that ran trials.
    pub hosts: Vec<String>,
    /// Counts.
    pub summary: Summary,
    /// One record per trial, by name.
    pub trials: Vec<TrialRecord>,
    /// Trials declared but not run anywhere in the merged runs, by name.
    pub excluded: Vec<Excluded>,
}

impl Report {
    /// Merges `records` and `excluded`. When a trial has several records (a re-run), the one
    /// that started last wins; a trial excluded in one shard but run in another counts as run.
    pub fn merge(records: Vec<TrialRecord>, excluded: Vec<Excluded>) -> Report {
        let mut by_name: BTreeMap<String, TrialRecord> = BTreeMap::new();
        for record in records {
            match by_name.get(&record.trial) {
                Some(existing) if existing.started_at >= record.started_at => {}
                _ => {
                    by_name.insert(record.trial.clone(), record);
                }
            }
        }
        let mut excluded_by_name: BTreeMap<String, Excluded> = BTreeMap::new();
        for entry in excluded {
            if !by_name.contains_key(&entry.name) {
                excluded_by_name.entry(entry.name.clone()).or_insert(entry);
            }
        }
        let trials: Vec<TrialRecord> = by_name.into_values().collect();
        let excluded: Vec<Excluded> = excluded_by_name.into_values().collect();
        let count = |status: Status| trials.iter().filter(|t| t.status == status).count();
        let summary = Summary {
            total: trials.len(),
            passed: count(Status::Passed),
            failed: count(Status::Failed),
            expected_failures: count(Status::ExpectedFailure),
            unexpected_passes: count(Status::UnexpectedPass),
            excluded: excluded.len(),
        };
        let mut runs: Vec<String> = trials.iter().map(|t| t.run_id.clone()).collect();
        runs.sort();
        runs.dedup();
        let mut hosts: Vec<String> = trials.iter().map(|t| t.host.clone()).collect();
        hosts.sort();
        hosts.dedup();
        Report {
            schema: REPORT_SCHEMA,
            runs,
            hosts,
            summary,
            trials,
            excluded,
        }
    }

    /// Whether any trial failed the run.
    pub fn has_failures(&self) -> bool {
        self.summary.failed + self.summary.unexpected_passes > 0
    }
}

/// Reads the records under each of `dirs`, merges them, and writes `report.json`,
/// `report.md` and `junit.xml` into `out`. Returns `out`.
pub fn write_from_dirs(dirs: &[PathBuf], out: &Path) -> Result<PathBuf, OutputError> {
    let report = read_report(dirs)?;
    write_all(&report, out)?;
    Ok(out.to_owned())
}

/// Reads and merges the records under each of `dirs`.
pub fn read_report(dirs: &[PathBuf]) -> Result<Report, OutputError> {
    let mut records = Vec::new();
    let mut excluded = Vec::new();
    for dir in dirs {
        let (mut r, mut e) = read_dir(dir)?;
        // Records written elsewhere (an older version, by hand) are cleaned like ours.
        r.iter_mut().for_each(crate::sanitise::record);
        records.append(&mut r);
        excluded.append(&mut e);
    }
    if records.is_empty() && excluded.is_empty() {
        let names: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        return Err(OutputError::NoRecords(names.join(", ")));
    }
    Ok(Report::merge(records, excluded))
}

type Renderer = fn(&Report, &mut Vec<u8>) -> std::io::Result<()>;

/// Writes the three report files into `out`, each atomically.
pub fn write_all(report: &Report, out: &Path) -> Result<(), OutputError> {
    std::fs::create_dir_all(out).map_err(|error| OutputError::CreateDir {
        path: out.to_owned(),
        error,
    })?;
    let renderers: [(&str, Renderer); 3] = [
        ("report.json", json::write),
        ("report.md", markdown::write),
        ("junit.xml", junit::write),
    ];
    for (name, render) in renderers {
        let path = out.join(name);
        let mut bytes = Vec::new();
        render(report, &mut bytes)
            .and_then(|()| write_atomic(&path, &bytes))
            .map_err(|error| OutputError::Write { path, error })?;
    }
    Ok(())
}
