//! One record per trial. The main type is [`TrialRecord`], written as one JSON file per trial
//! under the run's folder ([`RunDir`]) so that runs split over processes (cargo-nextest),
//! shards and hosts merge later without any process having seen every result.

use crate::error::OutputError;
use crate::notebook::CellTiming;
use crate::plan::Excluded;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

// The verdict vocabulary is the record's too; these paths are what users reading records know.
pub use crate::verdict::{Category, CellFailure, Failure, FailureKind, GpuCause, Status};

/// The record schema version; bumped on incompatible changes.
pub const RECORD_SCHEMA: u32 = 1;

/// The expected-failure declaration a trial was judged against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expectation {
    /// Why the failure is expected.
    pub reason: String,
    /// Text the failure had to contain.
    pub matches: Option<String>,
}

/// Everything one trial left behind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    /// [`RECORD_SCHEMA`].
    pub schema: u32,
    /// The run this trial belongs to.
    pub run_id: String,
    /// `runtime::machine::check`.
    pub trial: String,
    /// Runtime name.
    pub runtime: String,
    /// Machine name.
    pub machine: String,
    /// Check name.
    pub check: String,
    /// `host`.
    pub executor: String,
    /// The trial's tags.
    pub tags: Vec<String>,
    /// How it ended.
    pub status: Status,
    /// Why it failed: set for failed and expected-failure trials.
    pub failure: Option<Failure>,
    /// The expected-failure declaration, if one covered the trial.
    pub expected: Option<Expectation>,
    /// Start time, RFC 3339.
    pub started_at: String,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Per-cell durations of a notebook.
    pub cells: Vec<CellTiming>,
    /// The executed notebook, relative to the run folder.
    pub artifact: Option<String>,
    /// The GPUs the trial held, by UUID.
    #[serde(default)]
    pub gpus: Vec<String>,
    /// What a passing check found worth keeping (a GPU check's summary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The image a container trial ran in: reference, id and registry digest.
    #[serde(default)]
    pub image: Option<TrialImage>,
    /// The host that ran it.
    pub host: String,
}

/// The image a container trial ran in, as its record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrialImage {
    /// The reference it was asked for by.
    pub reference: String,
    /// The engine's image id (`sha256:...`).
    pub id: String,
    /// The registry digest (`name@sha256:...`), when it came from a registry.
    pub digest: Option<String>,
    /// Labels, e.g. a declared CUDA version.
    pub labels: BTreeMap<String, String>,
}

/// The folder of one run: `records/`, `artifacts/`, `excluded.json` and the reports.
#[derive(Debug, Clone)]
pub struct RunDir {
    /// The run's id.
    pub run_id: String,
    /// The folder.
    pub path: PathBuf,
}

impl RunDir {
    /// Creates (or reopens) the folder of `run_id` under `root`; `run_id` must be a plain file
    /// name ([`crate::settings::RUN_ID_RULE`]).
    pub fn create(root: &Path, run_id: &str) -> Result<RunDir, OutputError> {
        // Settings refuse a bad one first; this keeps every caller inside `root`.
        if !crate::settings::is_plain_run_id(run_id) {
            return Err(OutputError::RunId(run_id.to_owned()));
        }
        let path = root.join(run_id);
        for dir in [path.join("records"), path.join("artifacts")] {
            std::fs::create_dir_all(&dir)
                .map_err(|error| OutputError::CreateDir { path: dir, error })?;
        }
        // A pointer to the newest run, for people and scripts; losing the race is harmless.
        let _ = write_atomic(&root.join("latest"), format!("{run_id}\n").as_bytes());
        Ok(RunDir {
            run_id: run_id.to_owned(),
            path,
        })
    }

    /// Where the executed notebook of `trial` is kept.
    pub fn artifact_path(&self, runtime: &str, machine: &str, relative: &str) -> PathBuf {
        self.path
            .join("artifacts")
            .join(runtime)
            .join(machine)
            .join(relative)
    }

    /// Writes `record` atomically under `records/`.
    pub fn write_record(&self, record: &TrialRecord) -> Result<PathBuf, OutputError> {
        let path = self
            .path
            .join("records")
            .join(record_file_name(&record.trial));
        let json = serde_json::to_vec_pretty(record).expect("records always serialise");
        write_atomic(&path, &json).map_err(|error| OutputError::Write {
            path: path.clone(),
            error,
        })?;
        Ok(path)
    }

    /// Writes the trials this run planned but did not run, once per run.
    pub fn write_excluded(&self, excluded: &[Excluded]) -> Result<(), OutputError> {
        let path = self.path.join("excluded.json");
        if path.exists() {
            return Ok(());
        }
        let json = serde_json::to_vec_pretty(excluded).expect("exclusions always serialise");
        write_atomic(&path, &json).map_err(|error| OutputError::Write { path, error })
    }
}

/// The most characters of a trial's name a record file name keeps, so that with its key the
/// name stays within the 255 bytes file systems allow.
const READABLE_MAX: usize = 200;

/// A file name for a trial's record: readable, and unique even where two names map to the
/// same characters or share their first 200 (the key is the whole name's).
pub fn record_file_name(trial: &str) -> String {
    let readable: String = trial
        .replace("::", ".")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(READABLE_MAX)
        .collect();
    format!("{readable}.{:08x}.json", crate::names::record_key(trial))
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, and renames it over `path`, so
/// that a reader sees the old file or the whole new one, never a torn one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut file = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|error| error.error)?;
    Ok(())
}

/// Reads every record and exclusion under `dir`: a run folder, or a folder of run folders.
/// Each is a regular file of bounded size (16 MiB a record, 64 MiB an `excluded.json`).
pub fn read_dir(dir: &Path) -> Result<(Vec<TrialRecord>, Vec<Excluded>), OutputError> {
    let mut records = Vec::new();
    let mut excluded = Vec::new();
    let runs: Vec<PathBuf> = if dir.join("records").is_dir() {
        vec![dir.to_owned()]
    } else {
        let entries = std::fs::read_dir(dir).map_err(|error| OutputError::Read {
            path: dir.to_owned(),
            error,
        })?;
        let mut runs: Vec<PathBuf> = entries
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.join("records").is_dir())
            .collect();
        runs.sort();
        runs
    };
    for run in runs {
        let records_dir = run.join("records");
        let entries = std::fs::read_dir(&records_dir).map_err(|error| OutputError::Read {
            path: records_dir.clone(),
            error,
        })?;
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|e| e == "json"))
            .filter(|path| {
                !path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        paths.sort();
        for path in paths {
            let bytes = crate::fsx::read_bounded(&path, crate::fsx::RECORD).map_err(|error| {
                OutputError::Read {
                    path: path.clone(),
                    error,
                }
            })?;
            let record = serde_json::from_slice(&bytes)
                .map_err(|error| OutputError::BadRecord { path, error })?;
            records.push(record);
        }
        let excluded_path = run.join("excluded.json");
        // A run folder without one is a run still starting; one that cannot be read is an
        // error, since the report would lose what it says was not run.
        if excluded_path.symlink_metadata().is_ok() {
            let bytes = crate::fsx::read_bounded(&excluded_path, crate::fsx::EXCLUDED).map_err(
                |error| OutputError::Read {
                    path: excluded_path.clone(),
                    error,
                },
            )?;
            let list: Vec<Excluded> =
                serde_json::from_slice(&bytes).map_err(|error| OutputError::BadRecord {
                    path: excluded_path,
                    error,
                })?;
            excluded.extend(list);
        }
    }
    Ok((records, excluded))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_file_names_keep_their_names_and_fit_any_file_system() {
        assert_eq!(
            record_file_name("base::cpu::cmd::ok"),
            "base.cpu.cmd.ok.803470d1.json"
        );
        // The longest trial name a valid matrix makes: two 100-character names and a notebook
        // path of 200.
        let longest = format!(
            "{}::{}::nb::{}",
            "r".repeat(100),
            "m".repeat(100),
            "n".repeat(200)
        );
        let name = record_file_name(&longest);
        assert!(name.len() <= 255, "{} bytes", name.len());
        let other = format!("{longest}x");
        assert_ne!(record_file_name(&other), name, "the key tells them apart");
    }

    #[test]
    fn a_run_folder_stays_under_its_root() {
        let root = tempfile::tempdir().unwrap();
        let error = RunDir::create(&root.path().join("out"), "../x").unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "invalid run id `../x` (use {})",
                crate::settings::RUN_ID_RULE
            )
        );
        assert!(!root.path().join("x").exists());
    }
}
