//! Merging the records, plans and interruptions of any runs into one [`Report`], and writing
//! its three renderings.

use super::baseline::{Baseline, Comparison, Thresholds};
use super::{json, junit, markdown};
use crate::error::OutputError;
use crate::plan::Excluded;
use crate::record::{Interruption, RunContents, SetupKind, TrialRecord, read_dir, write_atomic};
use crate::verdict::Status;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The report schema version; bumped on incompatible changes.
pub const REPORT_SCHEMA: u32 = 1;

/// Counts over a report, and the setup its runs did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, schemars::JsonSchema)]
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
    /// Left out because libtest ignored them: container trials are opt-in.
    pub skipped: usize,
    /// Planned, but left no record: interrupted, killed, or in a shard not merged.
    pub not_run: usize,
    /// Of the trials counted, those not executed because their inputs were unchanged since
    /// they passed (`--reuse-results`): each counts with the status it is reused with.
    /// Omitted when none was.
    #[serde(skip_serializing_if = "is_zero")]
    pub reused: usize,
    /// The setup the runs did, by runtime, machine, kind and subject: none of it is counted in
    /// any trial's seconds.
    pub setup: Vec<RunSetup>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Setup a run did for a runtime on a machine: an image built or pulled, a virtualenv
/// provisioned, a runner started.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct RunSetup {
    /// The runtime.
    pub runtime: String,
    /// The machine.
    pub machine: String,
    /// What was set up.
    pub kind: SetupKind,
    /// What for: the image reference, or the virtualenv's folder.
    pub subject: String,
    /// The most seconds a trial's record spent on it: the trial that did it spent them all,
    /// those that waited for it spent less.
    pub seconds: f64,
}

/// The setup in `records`, one entry per runtime, machine, kind and subject, with the most
/// seconds any record spent on it, in that order.
fn setup_of(records: &[TrialRecord]) -> Vec<RunSetup> {
    let mut most: BTreeMap<(&str, &str, SetupKind, &str), f64> = BTreeMap::new();
    for record in records {
        for step in &record.setup {
            let key = (
                record.runtime.as_str(),
                record.machine.as_str(),
                step.kind,
                step.subject.as_str(),
            );
            let seconds = most.entry(key).or_insert(step.seconds);
            *seconds = seconds.max(step.seconds);
        }
    }
    most.into_iter()
        .map(|((runtime, machine, kind, subject), seconds)| RunSetup {
            runtime: runtime.to_owned(),
            machine: machine.to_owned(),
            kind,
            subject: subject.to_owned(),
            seconds,
        })
        .collect()
}

/// Whether an exclusion's reason is only that the trial is in another shard.
fn is_shard(reason: &str) -> bool {
    reason.starts_with(crate::plan::SHARD_REASON)
}

/// A trial a merged run planned but did not finish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct NotRun {
    /// `runtime::machine::check`.
    pub name: String,
    /// The runtime.
    pub runtime: String,
    /// The machine.
    pub machine: String,
    /// The check.
    pub check: String,
    /// The run that planned it.
    pub run_id: String,
    /// Why it has no record, e.g. `the run was interrupted`.
    pub reason: String,
}

/// Records of one or more runs, merged: one entry per trial.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Report {
    /// The report format's version, [`REPORT_SCHEMA`].
    #[schemars(extend("const" = REPORT_SCHEMA))]
    pub schema: u32,
    /// The run ids merged.
    pub runs: Vec<String>,
    /// The hosts that ran trials.
    pub hosts: Vec<String>,
    /// The Docker engines container trials ran on, as `NAME (ENDPOINT)`; several may share a
    /// host. Empty when no record names its engine.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub engines: Vec<String>,
    /// Counts.
    pub summary: Summary,
    /// One record per trial, by name.
    pub trials: Vec<TrialRecord>,
    /// Trials declared but not run anywhere in the merged runs, by name. A trial that every
    /// merged run left to another shard says that none of them ran it.
    pub excluded: Vec<Excluded>,
    /// Trials a merged run left out because libtest ignored them (container trials are
    /// opt-in: `--include-ignored`), and no merged run ran, by name.
    pub skipped: Vec<Excluded>,
    /// Whether a merged run was cut short by SIGINT or SIGTERM.
    pub interrupted: bool,
    /// How each interrupted run was interrupted.
    pub interruptions: Vec<Interruption>,
    /// Trials a merged run planned that have no record, by name.
    pub not_run: Vec<NotRun>,
    /// Runs that recorded no plan (made by a runtime-matrix older than plans): trials they
    /// planned but did not finish cannot be listed.
    pub runs_without_plan: Vec<String>,
    /// This report compared with an earlier run's, when one was given
    /// ([`Report::compare`]); omitted otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Comparison>,
}

impl Report {
    /// Merges what run folders hold. When a trial has several records (a re-run), the one
    /// that started last wins; a trial excluded in one shard but run in another counts as run;
    /// a trial planned by any run but recorded by none is not run, even where another shard
    /// excluded it. Each consistency check is judged again from every merged record of its
    /// notebook. The setup is every record's, a re-run's replaced records included: it
    /// was done all the same.
    pub fn merge(contents: RunContents) -> Report {
        let RunContents {
            records,
            excluded,
            skipped,
            planned,
            mut runs_without_plan,
            mut interruptions,
        } = contents;
        let setup = setup_of(&records);
        let mut by_name: BTreeMap<String, TrialRecord> = BTreeMap::new();
        for record in records {
            match by_name.get(&record.trial) {
                Some(existing) if existing.started_at >= record.started_at => {}
                _ => {
                    by_name.insert(record.trial.clone(), record);
                }
            }
        }
        let mut not_run: BTreeMap<String, NotRun> = BTreeMap::new();
        for (run_id, p) in planned {
            if by_name.contains_key(&p.name) {
                continue;
            }
            let reason = if interruptions.iter().any(|i| i.run_id == run_id) {
                "the run was interrupted"
            } else {
                "the run left no record of it (killed, or it crashed)"
            };
            not_run.entry(p.name.clone()).or_insert(NotRun {
                name: p.name,
                runtime: p.runtime,
                machine: p.machine,
                check: p.check,
                run_id,
                reason: reason.to_owned(),
            });
        }
        let mut skipped_by_name: BTreeMap<String, Excluded> = BTreeMap::new();
        for entry in skipped {
            if !by_name.contains_key(&entry.name) && !not_run.contains_key(&entry.name) {
                skipped_by_name.entry(entry.name.clone()).or_insert(entry);
            }
        }
        // A trial one shard leaves to another is run, not run or skipped there; excluded only
        // when no merged run had it, and then for a reason other than its shard if there is one.
        let mut excluded_by_name: BTreeMap<String, Excluded> = BTreeMap::new();
        for entry in excluded {
            if by_name.contains_key(&entry.name)
                || not_run.contains_key(&entry.name)
                || skipped_by_name.contains_key(&entry.name)
            {
                continue;
            }
            match excluded_by_name.get(&entry.name) {
                Some(kept) if !is_shard(&kept.reason) || is_shard(&entry.reason) => {}
                _ => {
                    excluded_by_name.insert(entry.name.clone(), entry);
                }
            }
        }
        for entry in excluded_by_name.values_mut() {
            if is_shard(&entry.reason) {
                entry.reason = format!("{}, and no merged run ran that shard", entry.reason);
            }
        }
        let mut trials: Vec<TrialRecord> = by_name.into_values().collect();
        let excluded: Vec<Excluded> = excluded_by_name.into_values().collect();
        let skipped: Vec<Excluded> = skipped_by_name.into_values().collect();
        let not_run: Vec<NotRun> = not_run.into_values().collect();
        // Consistency checks are judged again from every merged record of their notebook, so
        // that shards that each ran one runtime give the verdict one run of all would.
        for i in 0..trials.len() {
            let Some(notebook_check) = trials[i]
                .consistency
                .as_ref()
                .map(|c| c.notebook_check.clone())
            else {
                continue;
            };
            let mut record = trials[i].clone();
            let seen =
                crate::consistency::seen(&notebook_check, &trials, &not_run, &skipped, &excluded);
            crate::consistency::rejudge(&mut record, seen);
            trials[i] = record;
        }
        let count = |status: Status| trials.iter().filter(|t| t.status == status).count();
        let summary = Summary {
            total: trials.len(),
            passed: count(Status::Passed),
            failed: count(Status::Failed),
            expected_failures: count(Status::ExpectedFailure),
            unexpected_passes: count(Status::UnexpectedPass),
            excluded: excluded.len(),
            skipped: skipped.len(),
            not_run: not_run.len(),
            reused: trials.iter().filter(|t| t.reused.is_some()).count(),
            setup,
        };
        let mut runs: Vec<String> = trials.iter().map(|t| t.run_id.clone()).collect();
        runs.extend(interruptions.iter().map(|i| i.run_id.clone()));
        runs.extend(not_run.iter().map(|n| n.run_id.clone()));
        runs.sort();
        runs.dedup();
        let mut hosts: Vec<String> = trials.iter().map(|t| t.host.clone()).collect();
        hosts.sort();
        hosts.dedup();
        let mut engines: Vec<String> = trials
            .iter()
            .filter_map(|t| t.engine.as_ref().map(ToString::to_string))
            .collect();
        engines.sort();
        engines.dedup();
        interruptions.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        runs_without_plan.sort();
        runs_without_plan.dedup();
        Report {
            schema: REPORT_SCHEMA,
            runs,
            hosts,
            engines,
            summary,
            trials,
            excluded,
            skipped,
            interrupted: !interruptions.is_empty(),
            interruptions,
            not_run,
            runs_without_plan,
            baseline: None,
        }
    }

    /// Compares this report with `baseline`, keeping the comparison in the report.
    pub fn compare(&mut self, baseline: &Baseline, thresholds: Thresholds) -> &Comparison {
        self.baseline
            .insert(Comparison::new(self, baseline, thresholds))
    }

    /// Whether any trial failed the run.
    pub fn has_failures(&self) -> bool {
        self.summary.failed + self.summary.unexpected_passes > 0
    }

    /// Why the merged runs do not prove what they planned: an interruption, or planned trials
    /// without a record, naming how many and a few of them. `None` when nothing is missing
    /// that the runs' plans know of.
    pub fn incomplete(&self) -> Option<String> {
        if !self.interrupted && self.not_run.is_empty() {
            return None;
        }
        let mut text = match self.interruptions.as_slice() {
            [] => String::new(),
            [one] => format!(
                "run `{}` was interrupted by {}",
                one.run_id, one.signal_name
            ),
            many => format!("{} runs were interrupted", many.len()),
        };
        if !self.not_run.is_empty() {
            let shown: Vec<String> = self
                .not_run
                .iter()
                .take(3)
                .map(|n| format!("`{}`", n.name))
                .collect();
            let more = match self.not_run.len() {
                n if n > 3 => format!(" and {} more", n - 3),
                _ => String::new(),
            };
            if !text.is_empty() {
                text.push_str("; ");
            }
            text.push_str(&format!(
                "{} planned trial(s) did not run: {}{more}",
                self.not_run.len(),
                shown.join(", ")
            ));
        }
        Some(text)
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
    let mut contents = RunContents::default();
    for dir in dirs {
        let mut more = read_dir(dir)?;
        // Records written elsewhere (an older version, by hand) are cleaned like ours.
        more.records.iter_mut().for_each(crate::sanitise::record);
        contents.append(more);
    }
    if contents.is_empty() {
        let names: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        return Err(OutputError::NoRecords(names.join(", ")));
    }
    Ok(Report::merge(contents))
}

type Renderer = fn(&Report, &mut Vec<u8>) -> std::io::Result<()>;

/// Writes the three report files into `out`, each atomically. The records' artifact paths
/// (as [`read_report`] found them) become relative to `out`, so that the reports' links work
/// wherever `out` is and from wherever they are read.
pub fn write_all(report: &Report, out: &Path) -> Result<(), OutputError> {
    std::fs::create_dir_all(out).map_err(|error| OutputError::CreateDir {
        path: out.to_owned(),
        error,
    })?;
    let mut report = report.clone();
    for trial in &mut report.trials {
        for kept in trial.artifact.iter_mut().chain(trial.html.iter_mut()) {
            *kept = relative_to(Path::new(kept), out)
                .to_string_lossy()
                .into_owned();
        }
    }
    let report = &report;
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

/// `path` as a path relative to the folder `base`, both taken from the current folder and
/// read lexically (`..` removes the component before it): `../run-1/artifacts/x.ipynb`.
fn relative_to(path: &Path, base: &Path) -> PathBuf {
    use std::path::Component;
    fn lexical(path: &Path) -> Vec<Component<'_>> {
        let mut parts: Vec<Component<'_>> = Vec::new();
        for part in path.components() {
            match part {
                Component::CurDir => {}
                Component::ParentDir if matches!(parts.last(), Some(Component::Normal(_))) => {
                    parts.pop();
                }
                part => parts.push(part),
            }
        }
        parts
    }
    let (Ok(path), Ok(base)) = (std::path::absolute(path), std::path::absolute(base)) else {
        return path.to_owned();
    };
    let (path, base) = (lexical(&path), lexical(&base));
    let common = path.iter().zip(&base).take_while(|(a, b)| a == b).count();
    let mut relative = PathBuf::new();
    for _ in common..base.len() {
        relative.push("..");
    }
    relative.extend(&path[common..]);
    relative
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_paths_become_relative_to_the_reports_folder() {
        let path = Path::new("/out/shard-1/run/./artifacts/py/cpu/x.ipynb");
        assert_eq!(
            relative_to(path, Path::new("/out/merged/../merged/report")),
            Path::new("../../shard-1/run/artifacts/py/cpu/x.ipynb")
        );
        assert_eq!(
            relative_to(path, Path::new("/out/shard-1/run")),
            Path::new("artifacts/py/cpu/x.ipynb")
        );
        let here = std::env::current_dir().unwrap();
        assert_eq!(
            relative_to(Path::new("run/artifacts/x.html"), &here.join("run")),
            Path::new("artifacts/x.html")
        );
    }

    /// A passed record of `runtime::machine::check` in run `rN` (started at N o'clock) with
    /// `setup`.
    fn record(run_id: &str, trial: &str, setup: serde_json::Value) -> TrialRecord {
        let (runtime, rest) = trial.split_once("::").unwrap();
        let (machine, check) = rest.split_once("::").unwrap();
        serde_json::from_value(serde_json::json!({
            "schema": 1, "run_id": run_id, "trial": trial, "runtime": runtime,
            "machine": machine, "check": check, "executor": "docker", "tags": [],
            "status": "passed", "failure": null, "expected": null,
            "started_at": format!("2026-12-01T0{}:00:00.000Z", &run_id[1..]), "seconds": 1.0,
            "setup": setup, "cells": [], "artifact": null, "host": "h",
        }))
        .unwrap()
    }

    #[test]
    fn the_summary_keeps_each_setup_once_with_the_most_seconds_a_trial_spent_on_it() {
        let build = |seconds: f64| serde_json::json!([{"kind": "build", "subject": "img:1", "seconds": seconds}]);
        let records = vec![
            // Two trials waited for the build the first did; a re-run found it built.
            record("r1", "torch::cpu::nb::a", build(35.5)),
            record("r1", "torch::cpu::nb::b", build(34.0)),
            record("r1", "torch::cpu::nb::c", build(12.25)),
            record("r2", "torch::cpu::nb::a", serde_json::json!([])),
            // The same image on another machine is that machine's setup.
            record(
                "r1",
                "torch::gpu::nb::a",
                serde_json::json!([
                    {"kind": "pull", "subject": "img:1", "seconds": 3.0},
                    {"kind": "provision", "subject": "/venvs/py", "seconds": 2.0},
                ]),
            ),
        ];
        let report = Report::merge(RunContents {
            records,
            ..RunContents::default()
        });
        let setup: Vec<(&str, &str, SetupKind, &str, f64)> = report
            .summary
            .setup
            .iter()
            .map(|s| {
                let (runtime, machine, subject) = (&s.runtime, &s.machine, &s.subject);
                (
                    runtime.as_str(),
                    machine.as_str(),
                    s.kind,
                    subject.as_str(),
                    s.seconds,
                )
            })
            .collect();
        assert_eq!(
            setup,
            [
                ("torch", "cpu", SetupKind::Build, "img:1", 35.5),
                ("torch", "gpu", SetupKind::Provision, "/venvs/py", 2.0),
                ("torch", "gpu", SetupKind::Pull, "img:1", 3.0),
            ]
        );
        // The re-run's record replaced the one that built, but the build was done all the same.
        assert!(report.trials[0].setup.is_empty());
    }
}
