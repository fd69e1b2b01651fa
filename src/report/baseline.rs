//! Comparing a run with an earlier one. The main type is [`Comparison`]: what newly fails, what
//! was fixed, what still fails, which trials are new or gone, and which slowed down, between a
//! [`Report`] and a [`Baseline`] (a run folder's records or a `report.json`).
//!
//! A trial is compared by what each side says of it: a status where it ran, or skipped,
//! excluded or not run. Only a trial that runs and fails now can be a new failure, and only
//! one that runs and does not fail now can be fixed: a trial that did not run proves nothing
//! either way. A failure the baseline does not show failing (it passed there, was skipped or
//! excluded there, or is not in it at all) is new, so that a baseline made without some trials
//! never lets their failures through a gate.

use super::Report;
use super::text::count;
use crate::error::BaselineError;
use crate::verdict::Status;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// What a report says of one trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// It ran and passed.
    Passed,
    /// It ran and failed.
    Failed,
    /// It ran and failed the declared way.
    ExpectedFailure,
    /// It ran and passed though declared to fail.
    UnexpectedPass,
    /// libtest ignored it (container trials are opt-in).
    Skipped,
    /// Declared, but not run by any merged run: excluded, or in a shard not merged.
    Excluded,
    /// Planned, but it left no record.
    NotRun,
}

impl Outcome {
    /// The outcome as reports spell it: `passed`, `expected-failure`, `not-run`...
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed => "failed",
            Outcome::ExpectedFailure => "expected-failure",
            Outcome::UnexpectedPass => "unexpected-pass",
            Outcome::Skipped => "skipped",
            Outcome::Excluded => "excluded",
            Outcome::NotRun => "not-run",
        }
    }

    /// Whether it ran and fails the run.
    fn is_failure(self) -> bool {
        matches!(self, Outcome::Failed | Outcome::UnexpectedPass)
    }

    /// Whether it ran and does not fail the run.
    fn is_success(self) -> bool {
        matches!(self, Outcome::Passed | Outcome::ExpectedFailure)
    }
}

impl From<Status> for Outcome {
    fn from(status: Status) -> Outcome {
        match status {
            Status::Passed => Outcome::Passed,
            Status::Failed => Outcome::Failed,
            Status::ExpectedFailure => Outcome::ExpectedFailure,
            Status::UnexpectedPass => Outcome::UnexpectedPass,
        }
    }
}

/// One trial as one side of a comparison has it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Side {
    outcome: Outcome,
    /// The trial's own seconds, where it ran.
    seconds: Option<f64>,
    /// The peak memory of its processes, where it ran and was measured.
    peak_memory: Option<u64>,
}

/// Every trial of a report by name, with what the report says of it. A name in several lists
/// (not in a merged report, but in one written by hand) counts as the first of: ran, not
/// run, skipped, excluded.
fn sides_of(report: &Report) -> BTreeMap<String, Side> {
    let mut sides = BTreeMap::new();
    for trial in &report.trials {
        sides.insert(
            trial.trial.clone(),
            Side {
                outcome: trial.status.into(),
                // A reused trial did not run: no time to compare.
                seconds: Some(trial.seconds).filter(|_| trial.reused.is_none()),
                peak_memory: trial.resources.as_ref().and_then(|r| r.peak_memory_bytes),
            },
        );
    }
    let others = (report.not_run.iter().map(|n| (&n.name, Outcome::NotRun)))
        .chain(report.skipped.iter().map(|s| (&s.name, Outcome::Skipped)))
        .chain(report.excluded.iter().map(|e| (&e.name, Outcome::Excluded)));
    for (name, outcome) in others {
        sides.entry(name.clone()).or_insert(Side {
            outcome,
            seconds: None,
            peak_memory: None,
        });
    }
    sides
}

/// An earlier run's trials, to compare a report with.
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    /// Where it was read from, as given.
    pub source: String,
    /// The run ids it merged.
    pub runs: Vec<String>,
    trials: BTreeMap<String, Side>,
}

/// The part of a `report.json` a baseline needs; the rest is not read, so that a report with
/// fields added since (schema 1 keeps old fields) still serves.
#[derive(Deserialize)]
struct StoredReport {
    #[serde(default)]
    runs: Vec<String>,
    trials: Vec<StoredTrial>,
    #[serde(default)]
    not_run: Vec<StoredName>,
    #[serde(default)]
    skipped: Vec<StoredName>,
    #[serde(default)]
    excluded: Vec<StoredName>,
}

#[derive(Deserialize)]
struct StoredTrial {
    trial: String,
    status: Status,
    seconds: f64,
    #[serde(default)]
    resources: Option<crate::record::Resources>,
    /// Set when the trial was reused, not run: its seconds say nothing.
    #[serde(default)]
    reused: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct StoredName {
    name: String,
}

/// The most of a `report.json` read as a baseline: a report of ten thousand trials is tens
/// of MiB.
const REPORT_LIMIT: crate::fsx::Limit = crate::fsx::Limit {
    bytes: 512 * 1024 * 1024,
    what: "a report.json",
};

impl Baseline {
    /// The trials of `report`, as a baseline read from `source`.
    pub fn of_report(report: &Report, source: impl Into<String>) -> Baseline {
        Baseline {
            source: source.into(),
            runs: report.runs.clone(),
            trials: sides_of(report),
        }
    }

    /// Reads a baseline from `path`: a run folder or a folder of run folders (their records,
    /// merged as `report` merges them), a folder of reports only (its `report.json`, as a
    /// downloaded CI artifact may be), or a `report.json`.
    pub fn read(path: &Path) -> Result<Baseline, BaselineError> {
        let source = path.display().to_string();
        let metadata = std::fs::metadata(path).map_err(|error| BaselineError::Read {
            path: path.to_owned(),
            error: Box::new(error),
        })?;
        if !metadata.is_dir() {
            return Baseline::read_report_json(path);
        }
        match super::read_report(&[path.to_owned()]) {
            Ok(report) => Ok(Baseline::of_report(&report, source)),
            Err(crate::error::OutputError::NoRecords(_)) if path.join("report.json").is_file() => {
                Baseline::read_report_json(&path.join("report.json"))
            }
            Err(error) => Err(BaselineError::Read {
                path: path.to_owned(),
                error: Box::new(error),
            }),
        }
    }

    fn read_report_json(path: &Path) -> Result<Baseline, BaselineError> {
        let bytes =
            crate::fsx::read_bounded(path, REPORT_LIMIT).map_err(|error| BaselineError::Read {
                path: path.to_owned(),
                error: Box::new(error),
            })?;
        let not_a_report = |error| BaselineError::NotAReport {
            path: path.to_owned(),
            error,
        };
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(not_a_report)?;
        // Checked first: a later schema's trials may not parse as this one's, and then the
        // schema is what to say.
        match value.get("schema").and_then(serde_json::Value::as_u64) {
            Some(schema) if schema == u64::from(super::REPORT_SCHEMA) => {}
            found => {
                return Err(BaselineError::Schema {
                    path: path.to_owned(),
                    found: found.map_or("none".to_owned(), |s| s.to_string()),
                });
            }
        }
        let stored: StoredReport = serde_json::from_value(value).map_err(not_a_report)?;
        let mut trials = BTreeMap::new();
        for trial in stored.trials {
            trials.insert(
                trial.trial,
                Side {
                    outcome: trial.status.into(),
                    seconds: Some(trial.seconds).filter(|_| trial.reused.is_none()),
                    peak_memory: trial.resources.and_then(|r| r.peak_memory_bytes),
                },
            );
        }
        let others = (stored.not_run.into_iter().map(|n| (n, Outcome::NotRun)))
            .chain(stored.skipped.into_iter().map(|s| (s, Outcome::Skipped)))
            .chain(stored.excluded.into_iter().map(|e| (e, Outcome::Excluded)));
        for (entry, outcome) in others {
            trials.entry(entry.name).or_insert(Side {
                outcome,
                seconds: None,
                peak_memory: None,
            });
        }
        Ok(Baseline {
            source: path.display().to_string(),
            runs: stored.runs,
            trials,
        })
    }
}

/// How much slower a trial must be than in the baseline to be called slower: both hold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Thresholds {
    /// At least this many times the baseline's seconds.
    pub slower_ratio: f64,
    /// And at least this many seconds more.
    pub slower_seconds: f64,
}

impl Thresholds {
    /// `--slower-ratio`'s default.
    pub const DEFAULT_RATIO: f64 = 1.5;
    /// `--slower-seconds`' default: below it, a few seconds of noise on a loaded CI runner
    /// would flag short trials.
    pub const DEFAULT_SECONDS: f64 = 5.0;
}

impl Default for Thresholds {
    fn default() -> Thresholds {
        Thresholds {
            slower_ratio: Thresholds::DEFAULT_RATIO,
            slower_seconds: Thresholds::DEFAULT_SECONDS,
        }
    }
}

/// One trial whose outcome a comparison lists.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Change {
    /// `runtime::machine::check`.
    pub name: String,
    /// What the report says of it now; omitted for a trial the report does not have.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Outcome>,
    /// What the baseline says of it; omitted for a trial the baseline does not have.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_status: Option<Outcome>,
}

/// A trial that took longer than in the baseline, beyond both [`Thresholds`].
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct SlowDown {
    /// `runtime::machine::check`.
    pub name: String,
    /// Its seconds now.
    pub seconds: f64,
    /// Its seconds in the baseline.
    pub baseline_seconds: f64,
    /// `seconds / baseline_seconds`; omitted when the baseline's were 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
}

/// A trial whose processes needed more memory than in the baseline, beyond both
/// [`HEAVIER_RATIO`] and [`HEAVIER_BYTES`].
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Heavier {
    /// `runtime::machine::check`.
    pub name: String,
    /// Its peak memory now, in bytes.
    pub peak_memory_bytes: u64,
    /// Its peak memory in the baseline, in bytes.
    pub baseline_peak_memory_bytes: u64,
}

/// A trial is heavier when its peak memory is at least this many times the baseline's...
pub const HEAVIER_RATIO: f64 = 1.5;
/// ...and at least this much more: a machine is sized in hundreds of MiB, and a kernel's
/// few MiB of noise should not be flagged.
pub const HEAVIER_BYTES: u64 = 100 * 1024 * 1024;

/// A report compared with a [`Baseline`]: report.json's `baseline` object. Each list is by
/// trial name, but [`Comparison::slower`], which is the largest slow-down first.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Comparison {
    /// Where the baseline was read from, as given.
    pub source: String,
    /// The baseline's run ids.
    pub runs: Vec<String>,
    /// What counts as slower.
    #[serde(flatten)]
    pub thresholds: Thresholds,
    /// Failing now (failed, or an unexpected pass), and not failing in the baseline: it
    /// passed there, did not run there, or is not in it.
    pub new_failures: Vec<Change>,
    /// Running and not failing now (passed, or an expected failure), failing in the baseline.
    pub fixed: Vec<Change>,
    /// Failing now and in the baseline.
    pub still_failing: Vec<Change>,
    /// In the report, in any status, and not in the baseline.
    pub new_trials: Vec<Change>,
    /// In the baseline, in any status, and not in the report.
    pub removed_trials: Vec<Change>,
    /// Run with the same outcome (passed or expected failure) on both sides, and slower now
    /// beyond both thresholds.
    pub slower: Vec<SlowDown>,
    /// Run with the same outcome on both sides, measured on both, and needing at least
    /// [`HEAVIER_RATIO`] times and [`HEAVIER_BYTES`] more memory now: the largest growth first.
    pub heavier: Vec<Heavier>,
}

impl Comparison {
    /// Compares `report` with `baseline`.
    pub fn new(report: &Report, baseline: &Baseline, thresholds: Thresholds) -> Comparison {
        let now = sides_of(report);
        let mut comparison = Comparison {
            source: baseline.source.clone(),
            runs: baseline.runs.clone(),
            thresholds,
            new_failures: Vec::new(),
            fixed: Vec::new(),
            still_failing: Vec::new(),
            new_trials: Vec::new(),
            removed_trials: Vec::new(),
            slower: Vec::new(),
            heavier: Vec::new(),
        };
        for (name, side) in &now {
            let before = baseline.trials.get(name);
            let change = Change {
                name: name.clone(),
                status: Some(side.outcome),
                baseline_status: before.map(|b| b.outcome),
            };
            if before.is_none() {
                comparison.new_trials.push(change.clone());
            }
            let failed_before = before.is_some_and(|b| b.outcome.is_failure());
            if side.outcome.is_failure() && failed_before {
                comparison.still_failing.push(change);
            } else if side.outcome.is_failure() {
                comparison.new_failures.push(change);
            } else if side.outcome.is_success() && failed_before {
                comparison.fixed.push(change);
            }
            if let Some(slow_down) = before.and_then(|b| slow_down(name, b, side, thresholds)) {
                comparison.slower.push(slow_down);
            }
            if let Some(heavier) = before.and_then(|b| heavier(name, b, side)) {
                comparison.heavier.push(heavier);
            }
        }
        for (name, side) in &baseline.trials {
            if !now.contains_key(name) {
                comparison.removed_trials.push(Change {
                    name: name.clone(),
                    status: None,
                    baseline_status: Some(side.outcome),
                });
            }
        }
        comparison.heavier.sort_by(|a, b| {
            let growth = |h: &Heavier| {
                h.peak_memory_bytes
                    .saturating_sub(h.baseline_peak_memory_bytes)
            };
            growth(b).cmp(&growth(a)).then_with(|| a.name.cmp(&b.name))
        });
        comparison.slower.sort_by(|a, b| {
            let gain = |s: &SlowDown| s.seconds - s.baseline_seconds;
            gain(b)
                .total_cmp(&gain(a))
                .then_with(|| a.name.cmp(&b.name))
        });
        comparison
    }

    /// The failures `--fail-on new` fails on: every new failure, and every unexpected pass,
    /// even one the baseline had (its declaration is stale, which only the matrix can fix).
    pub fn blocking(&self) -> Vec<&Change> {
        let unexpected = self
            .still_failing
            .iter()
            .filter(|c| c.status == Some(Outcome::UnexpectedPass));
        self.new_failures.iter().chain(unexpected).collect()
    }

    /// The failures `--fail-on new` lets pass: failing in the baseline too, and not an
    /// unexpected pass.
    pub fn known(&self) -> Vec<&Change> {
        self.still_failing
            .iter()
            .filter(|c| c.status != Some(Outcome::UnexpectedPass))
            .collect()
    }

    /// One line of counts: `1 new failure, 0 fixed, 2 still failing, ...`.
    pub fn counts(&self) -> String {
        format!(
            "{}, {} fixed, {} still failing, {}, {}, {} slower, {} heavier",
            count(self.new_failures.len(), "new failure", "new failures"),
            self.fixed.len(),
            self.still_failing.len(),
            count(self.new_trials.len(), "new trial", "new trials"),
            count(self.removed_trials.len(), "removed trial", "removed trials"),
            self.slower.len(),
            self.heavier.len()
        )
    }

    /// What counts as slower, in words: `at least 1.5× and 5s more`.
    fn threshold_text(&self) -> String {
        format!(
            "at least {}× and {}s more",
            self.thresholds.slower_ratio, self.thresholds.slower_seconds
        )
    }

    /// Every listed trial with what changed, the most pressing first: (what, change).
    fn rows(&self) -> Vec<(&'static str, &Change)> {
        let lists: [(&'static str, &Vec<Change>); 5] = [
            ("new failure", &self.new_failures),
            ("fixed", &self.fixed),
            ("new trial", &self.new_trials),
            ("removed trial", &self.removed_trials),
            ("still failing", &self.still_failing),
        ];
        lists
            .into_iter()
            .flat_map(|(what, list)| list.iter().map(move |change| (what, change)))
            .collect()
    }
}

/// The slow-down of a trial that had the same passing outcome on both sides and took longer
/// now beyond both thresholds. A failing trial's time says how soon it failed, not how fast
/// it runs, so it is not compared.
fn slow_down(name: &str, before: &Side, now: &Side, thresholds: Thresholds) -> Option<SlowDown> {
    if before.outcome != now.outcome || !now.outcome.is_success() {
        return None;
    }
    let (seconds, baseline_seconds) = (now.seconds?, before.seconds?);
    let slower = seconds >= baseline_seconds * thresholds.slower_ratio
        && seconds - baseline_seconds >= thresholds.slower_seconds;
    slower.then(|| SlowDown {
        name: name.to_owned(),
        seconds,
        baseline_seconds,
        ratio: (baseline_seconds > 0.0).then(|| seconds / baseline_seconds),
    })
}

/// The memory growth of a trial that had the same passing outcome on both sides, measured on
/// both, beyond [`HEAVIER_RATIO`] and [`HEAVIER_BYTES`].
fn heavier(name: &str, before: &Side, now: &Side) -> Option<Heavier> {
    if before.outcome != now.outcome || !now.outcome.is_success() {
        return None;
    }
    let (peak, baseline_peak) = (now.peak_memory?, before.peak_memory?);
    let heavier = peak as f64 >= baseline_peak as f64 * HEAVIER_RATIO
        && peak.saturating_sub(baseline_peak) >= HEAVIER_BYTES;
    heavier.then(|| Heavier {
        name: name.to_owned(),
        peak_memory_bytes: peak,
        baseline_peak_memory_bytes: baseline_peak,
    })
}

/// `12.3 MiB`.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// `2.5×`, or nothing when the baseline took no time.
fn times(ratio: Option<f64>) -> String {
    ratio.map(|r| format!(", {r:.1}×")).unwrap_or_default()
}

fn outcome_text(outcome: Option<Outcome>) -> &'static str {
    outcome.map_or("—", Outcome::as_str)
}

/// The most trials of one kind the console lists; report.md and report.json list all.
const SHOWN: usize = 10;

/// The comparison for a terminal: its counts, then each listed trial, at most `SHOWN` (ten) of a
/// kind.
pub fn write_text(comparison: &Comparison, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "compared with baseline {}: {}",
        comparison.source,
        comparison.counts()
    )?;
    let mut shown: BTreeMap<&str, usize> = BTreeMap::new();
    for (what, change) in comparison.rows() {
        let n = shown.entry(what).or_default();
        *n += 1;
        if *n <= SHOWN {
            let now = match change.status {
                Some(outcome) => outcome.as_str(),
                None => "not in this run",
            };
            let before = match change.baseline_status {
                Some(outcome) => outcome.as_str(),
                None => "not in the baseline",
            };
            writeln!(out, "  {what}: {} ({now}; was {before})", change.name)?;
        }
    }
    for (i, s) in comparison.slower.iter().enumerate() {
        if i < SHOWN {
            writeln!(
                out,
                "  slower: {} {:.2}s (was {:.2}s{})",
                s.name,
                s.seconds,
                s.baseline_seconds,
                times(s.ratio)
            )?;
        }
    }
    let mut more: Vec<(&str, usize)> = shown
        .into_iter()
        .filter(|(_, n)| *n > SHOWN)
        .map(|(what, n)| (what, n - SHOWN))
        .collect();
    for (i, h) in comparison.heavier.iter().enumerate() {
        if i < SHOWN {
            writeln!(
                out,
                "  heavier: {} {} peak memory (was {})",
                h.name,
                mib(h.peak_memory_bytes),
                mib(h.baseline_peak_memory_bytes)
            )?;
        }
    }
    if comparison.slower.len() > SHOWN {
        more.push(("slower", comparison.slower.len() - SHOWN));
    }
    if comparison.heavier.len() > SHOWN {
        more.push(("heavier", comparison.heavier.len() - SHOWN));
    }
    for (what, n) in more {
        writeln!(out, "  ... and {n} more {what} (see report.md)")?;
    }
    Ok(())
}

/// report.md's "Compared with baseline" section: the counts, then one table of every listed
/// trial and one of the slow-downs.
pub(crate) fn write_markdown(comparison: &Comparison, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "## Compared with baseline\n")?;
    let runs = match comparison.runs.as_slice() {
        [] => String::new(),
        runs => {
            let runs: Vec<String> = runs.iter().map(|r| format!("`{r}`")).collect();
            format!(" (runs {})", runs.join(", "))
        }
    };
    writeln!(
        out,
        "Baseline `{}`{runs}. Slower means {} than there; heavier, at least {HEAVIER_RATIO}× and {} more peak memory.\n",
        comparison.source.replace('`', "'"),
        comparison.threshold_text(),
        mib(HEAVIER_BYTES)
    )?;
    let headline = comparison.counts();
    match comparison.new_failures.is_empty() {
        true => writeln!(out, "{headline}.\n")?,
        false => {
            let (first, rest) = headline.split_once(", ").unwrap_or((&headline, ""));
            writeln!(out, "**{first}**, {rest}.\n")?;
        }
    }
    let rows = comparison.rows();
    if !rows.is_empty() {
        writeln!(
            out,
            "| change | trial | now | baseline |\n|---|---|---|---|"
        )?;
        for (what, change) in rows {
            let what = match what {
                "new failure" => "❌ new failure",
                "fixed" => "✅ fixed",
                other => other,
            };
            writeln!(
                out,
                "| {what} | `{}` | {} | {} |",
                change.name,
                outcome_text(change.status),
                outcome_text(change.baseline_status)
            )?;
        }
        writeln!(out)?;
    }
    if !comparison.slower.is_empty() {
        writeln!(
            out,
            "| slower | seconds | baseline seconds | ratio |\n|---|---:|---:|---:|"
        )?;
        for s in &comparison.slower {
            let ratio = s.ratio.map(|r| format!("{r:.1}×")).unwrap_or_default();
            writeln!(
                out,
                "| `{}` | {:.2} | {:.2} | {ratio} |",
                s.name, s.seconds, s.baseline_seconds
            )?;
        }
        writeln!(out)?;
    }
    if !comparison.heavier.is_empty() {
        writeln!(
            out,
            "| heavier | peak memory | baseline peak memory |\n|---|---:|---:|"
        )?;
        for h in &comparison.heavier {
            writeln!(
                out,
                "| `{}` | {} | {} |",
                h.name,
                mib(h.peak_memory_bytes),
                mib(h.baseline_peak_memory_bytes)
            )?;
        }
        writeln!(out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Excluded;
    use crate::record::{RunContents, TrialRecord};

    fn record(name: &str, status: Status, seconds: f64) -> TrialRecord {
        TrialRecord {
            schema: 1,
            run_id: "run".into(),
            trial: name.into(),
            runtime: "py".into(),
            machine: "cpu".into(),
            check: name.rsplit("::").next().unwrap().into(),
            executor: "host".into(),
            tags: vec![],
            parameters: Default::default(),
            status,
            failure: None,
            expected: None,
            started_at: "2026-11-22T00:00:00Z".into(),
            seconds,
            setup: vec![],
            cells: vec![],
            artifact: None,
            html: None,
            resources: None,
            artifact_note: None,
            gpus: vec![],
            note: None,
            image: None,
            host: "h".into(),
            reused: None,
            engine: None,
            consistent: None,
            consistency: None,
            services: Vec::new(),
        }
    }

    fn left_out(name: &str) -> Excluded {
        Excluded {
            name: name.into(),
            runtime: "py".into(),
            machine: "cpu".into(),
            check: name.into(),
            reason: "because".into(),
        }
    }

    /// A report of `ran` (name, status, seconds), with `skipped` and `excluded` trials.
    fn report(ran: &[(&str, Status, f64)], skipped: &[&str], excluded: &[&str]) -> Report {
        Report::merge(RunContents {
            records: ran.iter().map(|(n, s, t)| record(n, *s, *t)).collect(),
            skipped: skipped.iter().map(|n| left_out(n)).collect(),
            excluded: excluded.iter().map(|n| left_out(n)).collect(),
            ..RunContents::default()
        })
    }

    fn names(changes: &[Change]) -> Vec<&str> {
        changes.iter().map(|c| c.name.as_str()).collect()
    }

    use Status::{ExpectedFailure, Failed, Passed, UnexpectedPass};

    #[test]
    fn each_trial_lands_in_the_list_its_two_outcomes_say() {
        let before = report(
            &[
                ("steady", Passed, 1.0),
                ("breaks", Passed, 1.0),
                ("known", Failed, 1.0),
                ("repaired", Failed, 1.0),
                ("declared", Failed, 1.0),
                ("removed", Passed, 1.0),
            ],
            &["opt-in"],
            &[],
        );
        let now = report(
            &[
                ("steady", Passed, 1.0),
                ("breaks", Failed, 1.0),
                ("known", Failed, 1.0),
                ("repaired", Passed, 1.0),
                ("declared", ExpectedFailure, 1.0),
                ("added", Failed, 1.0),
                ("opt-in", Failed, 1.0),
            ],
            &[],
            &[],
        );
        let c = Comparison::new(
            &now,
            &Baseline::of_report(&before, "old"),
            Thresholds::default(),
        );
        // A failure the baseline did not show failing is new, wherever it came from.
        assert_eq!(names(&c.new_failures), ["added", "breaks", "opt-in"]);
        assert_eq!(
            c.new_failures[2],
            Change {
                name: "opt-in".into(),
                status: Some(Outcome::Failed),
                baseline_status: Some(Outcome::Skipped)
            }
        );
        assert_eq!(c.new_failures[0].baseline_status, None);
        assert_eq!(names(&c.fixed), ["declared", "repaired"]);
        assert_eq!(names(&c.still_failing), ["known"]);
        assert_eq!(names(&c.new_trials), ["added"]);
        assert_eq!(names(&c.removed_trials), ["removed"]);
        assert_eq!(c.removed_trials[0].status, None);
        assert!(c.slower.is_empty());
        assert_eq!(
            c.counts(),
            "3 new failures, 2 fixed, 1 still failing, 1 new trial, 1 removed trial, 0 slower, 0 heavier"
        );
    }

    #[test]
    fn trials_that_did_not_run_now_are_neither_new_failures_nor_fixed() {
        let before = report(
            &[
                ("was-failing", Failed, 1.0),
                ("was-passing", Passed, 1.0),
                ("was-excluded-failing", Failed, 1.0),
            ],
            &[],
            &[],
        );
        let mut now = report(&[], &["was-failing"], &["was-excluded-failing"]);
        now.not_run.push(crate::report::NotRun {
            name: "was-passing".into(),
            runtime: "py".into(),
            machine: "cpu".into(),
            check: "was-passing".into(),
            run_id: "run".into(),
            reason: "the run was interrupted".into(),
        });
        let c = Comparison::new(
            &now,
            &Baseline::of_report(&before, "old"),
            Thresholds::default(),
        );
        assert!(c.new_failures.is_empty(), "{:?}", c.new_failures);
        assert!(c.fixed.is_empty(), "{:?}", c.fixed);
        assert!(c.still_failing.is_empty(), "{:?}", c.still_failing);
        assert!(c.new_trials.is_empty() && c.removed_trials.is_empty());
        // And a trial that passes now but did not run in the baseline was not fixed.
        let c = Comparison::new(
            &report(&[("was-failing", Passed, 1.0)], &[], &[]),
            &Baseline::of_report(&now, "old"),
            Thresholds::default(),
        );
        assert!(c.fixed.is_empty() && c.new_failures.is_empty(), "{c:?}");
    }

    #[test]
    fn a_reused_trial_is_never_slower_or_faster_than_its_baseline() {
        let mut before = report(&[("t", Passed, 0.0)], &[], &[]);
        before.trials[0].reused = Some(crate::record::Reused {
            run_id: "r0".into(),
            at: "2026-12-02T00:00:00Z".into(),
            host: "h".into(),
            seconds: 1.0,
        });
        let now = report(&[("t", Passed, 5.0)], &[], &[]);
        let thresholds = Thresholds {
            slower_ratio: 2.0,
            slower_seconds: 1.0,
        };
        let c = Comparison::new(&now, &Baseline::of_report(&before, "old"), thresholds);
        assert!(c.slower.is_empty(), "{c:?}");
        // And as read back from report.json.
        let dir = tempfile::tempdir().unwrap();
        crate::report::write_all(&before, dir.path()).unwrap();
        let read = Baseline::read(&dir.path().join("report.json")).unwrap();
        assert!(Comparison::new(&now, &read, thresholds).slower.is_empty());
        // Without the mark, the same seconds are a slow-down: the test can fail.
        before.trials[0].reused = None;
        let c = Comparison::new(&now, &Baseline::of_report(&before, "old"), thresholds);
        assert_eq!(c.slower.len(), 1);
    }

    #[test]
    fn a_slow_down_must_pass_both_thresholds_and_compares_passing_trials_only() {
        let before = report(
            &[
                ("much-slower", Passed, 0.1),
                ("ratio-only", Passed, 0.1),
                ("seconds-only", Passed, 10.0),
                ("failing-slower", Failed, 0.1),
                ("now-failing", Passed, 0.1),
                ("from-nothing", Passed, 0.0),
                ("faster", Passed, 9.0),
            ],
            &[],
            &[],
        );
        let now = report(
            &[
                ("much-slower", Passed, 3.0),
                ("ratio-only", Passed, 0.9),
                ("seconds-only", Passed, 14.0),
                ("failing-slower", Failed, 9.0),
                ("now-failing", Failed, 9.0),
                ("from-nothing", Passed, 2.0),
                ("faster", Passed, 1.0),
            ],
            &[],
            &[],
        );
        let thresholds = Thresholds {
            slower_ratio: 2.0,
            slower_seconds: 1.0,
        };
        let c = Comparison::new(&now, &Baseline::of_report(&before, "old"), thresholds);
        let slower: Vec<(&str, Option<f64>)> = c
            .slower
            .iter()
            .map(|s| (s.name.as_str(), s.ratio))
            .collect();
        // The largest slow-down in seconds first.
        assert_eq!(
            slower,
            [("much-slower", Some(30.0)), ("from-nothing", None)]
        );
        assert_eq!(c.slower[0].baseline_seconds, 0.1);
        // On the boundary both thresholds count as reached.
        let c = Comparison::new(
            &report(&[("t", Passed, 3.0)], &[], &[]),
            &Baseline::of_report(&report(&[("t", Passed, 1.0)], &[], &[]), "old"),
            Thresholds {
                slower_ratio: 3.0,
                slower_seconds: 2.0,
            },
        );
        assert_eq!(c.slower.len(), 1);
    }

    #[test]
    fn new_failures_and_every_unexpected_pass_block_and_known_failures_do_not() {
        let before = report(
            &[
                ("known", Failed, 1.0),
                ("stale", UnexpectedPass, 1.0),
                ("fine", Passed, 1.0),
            ],
            &[],
            &[],
        );
        let baseline = Baseline::of_report(&before, "old");
        let same = Comparison::new(
            &report(
                &[
                    ("known", Failed, 1.0),
                    ("stale", UnexpectedPass, 1.0),
                    ("fine", Passed, 1.0),
                ],
                &[],
                &[],
            ),
            &baseline,
            Thresholds::default(),
        );
        let blocking: Vec<&str> = same.blocking().iter().map(|c| c.name.as_str()).collect();
        assert_eq!(blocking, ["stale"]);
        let known: Vec<&str> = same.known().iter().map(|c| c.name.as_str()).collect();
        assert_eq!(known, ["known"]);
        let only_known = Comparison::new(
            &report(&[("known", Failed, 1.0), ("fine", Passed, 1.0)], &[], &[]),
            &baseline,
            Thresholds::default(),
        );
        assert!(only_known.blocking().is_empty());
    }

    #[test]
    fn a_report_json_reads_back_as_the_baseline_its_report_is() {
        let mut before = report(
            &[("a", Passed, 1.5), ("b", ExpectedFailure, 2.0)],
            &["c"],
            &["d"],
        );
        // A report that was itself compared still serves as a baseline.
        let earlier = Baseline::of_report(&before, "older");
        before.compare(&earlier, Thresholds::default());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        let mut bytes = Vec::new();
        crate::report::json::write(&before, &mut bytes).unwrap();
        std::fs::write(&path, &bytes).unwrap();
        let read = Baseline::read(&path).unwrap();
        assert_eq!(
            read,
            Baseline::of_report(&before, path.display().to_string())
        );
        assert_eq!(read.runs, ["run"]);
        // A folder of reports only (a downloaded artifact) reads its report.json.
        assert_eq!(Baseline::read(dir.path()).unwrap().trials, read.trials);
    }

    #[test]
    fn a_file_that_is_not_a_schema_1_report_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let error = |json: &str| {
            let path = dir.path().join("report.json");
            std::fs::write(&path, json).unwrap();
            let error = Baseline::read(&path).unwrap_err();
            crate::error::chain(&error).replace(&dir.path().display().to_string(), "DIR")
        };
        assert_eq!(
            error(r#"{"schema": 2, "trials": {}}"#),
            "baseline DIR/report.json has report schema 2, this runtime-matrix reads schema 1 \
             (compare with its run folder instead)"
        );
        assert_eq!(
            error("[1, 2]"),
            "baseline DIR/report.json has report schema none, this runtime-matrix reads schema 1 \
             (compare with its run folder instead)"
        );
        assert_eq!(
            error(r#"{"schema": 1, "trials": [{"trial": "a"}]}"#),
            "baseline DIR/report.json is not a runtime-matrix report.json\n  caused by: missing \
             field `status`"
        );
        let missing = Baseline::read(&dir.path().join("nope")).unwrap_err();
        assert!(
            crate::error::chain(&missing).starts_with(&format!(
                "cannot read baseline {}/nope (give a run folder, a folder of run folders, or a \
                 report.json)\n  caused by: No such file",
                dir.path().display()
            )),
            "{}",
            crate::error::chain(&missing)
        );
    }

    #[test]
    fn markdown_and_text_name_every_change_and_json_has_the_baseline_object() {
        let before = report(
            &[
                ("slows", Passed, 0.1),
                ("breaks", Passed, 1.0),
                ("gone", Passed, 1.0),
            ],
            &[],
            &[],
        );
        let mut now = report(&[("slows", Passed, 3.0), ("breaks", Failed, 1.0)], &[], &[]);
        // `slows` also needs 300 MiB where it needed 100; `breaks` grew too, but failed.
        let with_memory = |report: &mut Report, name: &str, mib: u64| {
            let trial = report.trials.iter_mut().find(|t| t.trial == name).unwrap();
            trial.resources = Some(crate::record::Resources {
                peak_memory_bytes: Some(mib << 20),
                ..Default::default()
            });
        };
        let mut before = before;
        with_memory(&mut before, "slows", 100);
        with_memory(&mut now, "slows", 300);
        with_memory(&mut before, "breaks", 100);
        with_memory(&mut now, "breaks", 900);
        let thresholds = Thresholds {
            slower_ratio: 2.0,
            slower_seconds: 1.0,
        };
        let comparison = now
            .compare(&Baseline::of_report(&before, "runs/old"), thresholds)
            .clone();
        let mut md = Vec::new();
        write_markdown(&comparison, &mut md).unwrap();
        assert_eq!(
            String::from_utf8(md).unwrap(),
            "## Compared with baseline\n\n\
             Baseline `runs/old` (runs `run`). Slower means at least 2× and 1s more than there; \
             heavier, at least 1.5× and 100.0 MiB more peak memory.\n\n\
             **1 new failure**, 0 fixed, 0 still failing, 0 new trials, 1 removed trial, 1 slower, 1 heavier.\n\n\
             | change | trial | now | baseline |\n|---|---|---|---|\n\
             | ❌ new failure | `breaks` | failed | passed |\n\
             | removed trial | `gone` | — | passed |\n\n\
             | slower | seconds | baseline seconds | ratio |\n|---|---:|---:|---:|\n\
             | `slows` | 3.00 | 0.10 | 30.0× |\n\n\
             | heavier | peak memory | baseline peak memory |\n|---|---:|---:|\n\
             | `slows` | 300.0 MiB | 100.0 MiB |\n\n"
        );
        let mut text = Vec::new();
        write_text(&comparison, &mut text).unwrap();
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "compared with baseline runs/old: 1 new failure, 0 fixed, 0 still failing, 0 new \
             trials, 1 removed trial, 1 slower, 1 heavier\n  \
             new failure: breaks (failed; was passed)\n  \
             removed trial: gone (not in this run; was passed)\n  \
             slower: slows 3.00s (was 0.10s, 30.0×)\n  \
             heavier: slows 300.0 MiB peak memory (was 100.0 MiB)\n"
        );
        let json = serde_json::to_value(&now).unwrap();
        assert_eq!(json["schema"], 1);
        assert_eq!(
            json["baseline"],
            serde_json::json!({
                "source": "runs/old",
                "runs": ["run"],
                "slower_ratio": 2.0,
                "slower_seconds": 1.0,
                "new_failures": [{"name": "breaks", "status": "failed", "baseline_status": "passed"}],
                "fixed": [],
                "still_failing": [],
                "new_trials": [],
                "removed_trials": [{"name": "gone", "baseline_status": "passed"}],
                "slower": [{"name": "slows", "seconds": 3.0, "baseline_seconds": 0.1, "ratio": 30.0}],
                "heavier": [{"name": "slows", "peak_memory_bytes": 300u64 << 20, "baseline_peak_memory_bytes": 100u64 << 20}],
            })
        );
        // Without a baseline, report.json is what it was: no `baseline` key.
        let plain = serde_json::to_value(report(&[("a", Passed, 1.0)], &[], &[])).unwrap();
        assert!(plain.get("baseline").is_none(), "{plain}");
    }
}
