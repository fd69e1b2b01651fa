//! One record per trial. The main type is [`TrialRecord`], written as one JSON file per trial
//! under the run's folder (`RunDir`) so that runs split over processes (cargo-nextest),
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Expectation {
    /// Why the failure is expected.
    pub reason: String,
    /// Text the failure had to contain.
    pub matches: Option<String>,
}

/// Everything one trial left behind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TrialRecord {
    /// The record format's version, [`RECORD_SCHEMA`].
    #[schemars(extend("const" = RECORD_SCHEMA))]
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
    /// The parameters declared for a notebook trial (runtime's, machine's, overrides'
    /// merged), as its notebook was given them; the built-ins it was also given are its
    /// runtime, its machine and the machine's GPU count. Omitted when none were declared.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, serde_json::Value>,
    /// How it ended.
    pub status: Status,
    /// Why it failed: set for failed and expected-failure trials.
    pub failure: Option<Failure>,
    /// The expected-failure declaration, if one covered the trial.
    pub expected: Option<Expectation>,
    /// Start time, RFC 3339.
    pub started_at: String,
    /// Wall-clock seconds of the trial itself, without its [`setup`](TrialRecord::setup).
    pub seconds: f64,
    /// The setup this trial did or waited for (building or pulling its image, provisioning
    /// its virtualenv), with the seconds it spent on each; never counted in `seconds`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub setup: Vec<SetupStep>,
    /// Per-cell durations of a notebook.
    pub cells: Vec<CellTiming>,
    /// The executed notebook, relative to the run folder (in a report: to the report's folder).
    pub artifact: Option<String>,
    /// A failed notebook's executed notebook rendered as HTML, beside [`artifact`]
    /// (relative as it is), so that the failure reads without Jupyter.
    ///
    /// [`artifact`]: TrialRecord::artifact
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    /// Why a failed notebook lacks an artifact, said whole: `no executed notebook: the notebook
    /// never started (no cell ran)`, or `no HTML: ...` when its runtime could not render it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_note: Option<String>,
    /// The GPUs the trial held, by UUID.
    #[serde(default)]
    pub gpus: Vec<String>,
    /// What a passing check found worth keeping (a GPU check's summary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The image a container trial ran in: reference, id and registry digest.
    #[serde(default)]
    pub image: Option<TrialImage>,
    /// What the trial's processes used: memory, CPU time and GPU memory. Omitted when
    /// nothing was measured (the trial never started a process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// The host that ran it.
    pub host: String,
    /// Set when the trial was not executed because its inputs were unchanged since an earlier
    /// run where it passed, or failed the declared way (`--reuse-results`): that run's outcome
    /// stands, its status and failure included. Its `seconds` are then 0, and it has no cells,
    /// setup or artifact of this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused: Option<Reused>,
    /// The Docker engine a container trial ran on: its endpoint and the name it gives its
    /// host. Omitted for host trials, and by records older than it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<TrialEngine>,
    /// A notebook trial's cells that `[consistency]` compares across runtimes and machines:
    /// those carrying its tag, with the text they printed. Set when the notebook is declared
    /// in `consistency.notebooks` and ran to its end (empty when no cell carries the tag);
    /// omitted otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent: Option<Vec<ConsistentCell>>,
    /// A consistency check's comparison (`consistency::nb::<path>`): its settings, the
    /// executions it compared and those it could not. Such a record has no runtime or machine
    /// (both are empty); omitted for every other trial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<ConsistencyResult>,
    /// The services the trial used, in name order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<TrialService>,
}

/// The most text of one cell a record keeps for comparison; the rest is cut, and the cell
/// says so.
pub const CONSISTENT_CELL_LIMIT: usize = 64 * 1024;

/// The most text all the compared cells of one record keep together: later cells are cut
/// (to nothing once it is spent), and say so. A record must stay well under the size a
/// report reads.
pub const CONSISTENT_TEXT_LIMIT: usize = 2 * 1024 * 1024;

/// The most tagged cells one record keeps; the last one kept says that later ones were cut.
pub const CONSISTENT_CELLS_MAX: usize = 1000;

/// One cell of a notebook trial whose outputs a consistency check compares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ConsistentCell {
    /// 0-based index among the cells, the one tagged `injected-parameters` not counted.
    pub index: usize,
    /// The cell's id (nbformat 4.5), by which cells are matched when another execution has
    /// it too (nbformat makes up a random one for a cell without); else by index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The first lines of its source, for messages.
    pub source: String,
    /// What it printed, in output order: `text/plain` of its results and displays, and its
    /// stdout and stderr, each ending with a newline; at most [`CONSISTENT_CELL_LIMIT`] bytes.
    pub text: String,
    /// Whether `text` was cut at [`CONSISTENT_CELL_LIMIT`] or [`CONSISTENT_TEXT_LIMIT`], or
    /// later tagged cells were left out at [`CONSISTENT_CELLS_MAX`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// A regex replacement applied to every compared text before comparison, nbval-style.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Sanitizer {
    /// The regular expression (Rust `regex` syntax).
    pub regex: String,
    /// What each match becomes; `$1` names a group.
    pub replace: String,
}

/// One notebook execution a consistency check compared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Execution {
    /// The notebook trial, `runtime::machine::nb::<path>`.
    pub trial: String,
    /// Its runtime.
    pub runtime: String,
    /// Its machine.
    pub machine: String,
    /// The run it ran in.
    pub run_id: String,
}

/// A notebook trial a consistency check could not compare, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NotCompared {
    /// The notebook trial.
    pub trial: String,
    /// Its runtime.
    pub runtime: String,
    /// Its machine.
    pub machine: String,
    /// Why: it failed, did not run, was excluded or skipped, or recorded no outputs.
    pub reason: String,
}

/// A group of executions that printed the same (normalised) text in a differing cell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OutputGroup {
    /// Its executions, as `runtime on machine`.
    pub executions: Vec<String>,
    /// The cell's normalised text in this group, cut to a few lines.
    pub excerpt: String,
}

/// What a consistency check compared, how, and what it found. The settings are kept so that
/// `runtime-matrix report` can judge merged runs again without matrix.toml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ConsistencyResult {
    /// The notebook, relative to notebooks-dir: `numpy/arrays.ipynb`.
    pub notebook: String,
    /// The check of its trials: `nb::numpy/arrays`.
    pub notebook_check: String,
    /// The tag of the compared cells.
    pub tag: String,
    /// Relative tolerance for numbers (with the same absolute floor near 0); 0 is exact.
    pub float_tolerance: f64,
    /// Replacements applied to every compared text, in order.
    #[serde(default)]
    pub sanitizers: Vec<Sanitizer>,
    /// Whether the verdict waits for the run's records to be merged (`runtime-matrix
    /// report`): under cargo-nextest, where each trial is a process of its own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deferred: bool,
    /// The executions compared, by trial.
    pub compared: Vec<Execution>,
    /// The notebook's trials that were not compared, by trial.
    pub not_compared: Vec<NotCompared>,
    /// How many tagged cells were compared.
    pub cells: usize,
    /// For the first cell that differs: its executions grouped by what they printed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<OutputGroup>,
}

/// Where a reused trial's outcome comes from: the run in which it last ran with the same
/// inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Reused {
    /// That run's id.
    pub run_id: String,
    /// When the trial started there, RFC 3339.
    pub at: String,
    /// The host it ran on.
    pub host: String,
    /// Its seconds there.
    pub seconds: f64,
}

/// A service a trial used, as its record keeps it (secrets in its URL masked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TrialService {
    /// Its name in the matrix.
    pub name: String,
    /// The image its container ran.
    pub image: TrialImage,
    /// The host the trial reached it at: the service's name from a container, `127.0.0.1`
    /// from this host.
    pub host: String,
    /// The port the trial reached its first port at.
    pub port: u16,
    /// The URL the trial was given, secrets masked, when the service declares one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The engine it ran on.
    pub engine: String,
}

/// The Docker engine a container trial ran on, as its record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TrialEngine {
    /// Where it was reached: `unix:///var/run/docker.sock`, `tcp://host:2376`, `ssh://...`.
    pub endpoint: String,
    /// The name the engine gives its host (`docker info`'s `Name`), when it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl std::fmt::Display for TrialEngine {
    /// `NAME (ENDPOINT)`, or the endpoint alone.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{name} ({})", self.endpoint),
            None => f.write_str(&self.endpoint),
        }
    }
}

/// What one trial's processes used, measured by its runner (memory, CPU) and by the harness
/// through NVML (GPU memory). Each figure is omitted when it is unknown.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Resources {
    /// The peak resident memory of the trial's processes together, sampled, and never below
    /// one process's own high-water mark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
    /// The user and system CPU time of the trial's processes (a notebook's kernel from the
    /// moment the notebook started, and whatever it started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_seconds: Option<f64>,
    /// The peak GPU memory the processes on each leased GPU used together, by GPU UUID.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub gpu_memory_bytes: BTreeMap<String, u64>,
}

impl Resources {
    /// `None` when no figure is known, so that the record omits it.
    pub(crate) fn known(self) -> Option<Resources> {
        (self.peak_memory_bytes.is_some()
            || self.cpu_seconds.is_some()
            || !self.gpu_memory_bytes.is_empty())
        .then_some(self)
    }
}

/// One step of setup a trial did or waited for: work done once per runtime and machine (or
/// once per run), that no check's duration or deadline is charged with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SetupStep {
    /// What was set up.
    pub kind: SetupKind,
    /// What it was set up for: the image reference (a build, a pull, a runner container), the
    /// virtualenv's folder, or a host runner's Python.
    pub subject: String,
    /// The seconds this trial spent on it: doing it, or waiting for the trial or process that
    /// did.
    pub seconds: f64,
}

/// What kind of setup a [`SetupStep`] was.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum SetupKind {
    /// A virtualenv provisioned for a host runtime.
    Provision,
    /// An image built from its context or script.
    Build,
    /// An image pulled from its registry.
    Pull,
    /// A persistent runner started for a runtime on a machine.
    Runner,
    /// A notebook's data set uploaded to a runner, once for all its trials.
    Data,
    /// A service started (or found) and waited for until it was ready.
    Service,
}

impl SetupKind {
    /// The kind as records spell it: `provision`, `build`, `pull`, `runner`, `data`, `service`.
    pub fn as_str(self) -> &'static str {
        match self {
            SetupKind::Provision => "provision",
            SetupKind::Build => "build",
            SetupKind::Pull => "pull",
            SetupKind::Runner => "runner",
            SetupKind::Data => "data",
            SetupKind::Service => "service",
        }
    }
}

/// The image a container trial ran in, as its record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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

/// A trial a run set out to run, written before any trial starts, so that a report can name
/// the trials an interrupted or killed run never finished.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Planned {
    /// `runtime::machine::check`.
    pub name: String,
    /// The runtime.
    pub runtime: String,
    /// The machine.
    pub machine: String,
    /// The check.
    pub check: String,
}

/// How a run was interrupted: its `interrupted.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Interruption {
    /// The run.
    pub run_id: String,
    /// The signal's number.
    pub signal: i32,
    /// `SIGINT` or `SIGTERM`.
    pub signal_name: String,
    /// When it was received, RFC 3339.
    pub at: String,
    /// The host the run was on.
    pub host: String,
}

impl Interruption {
    /// An interruption of `run_id` on `host` by `signal`, now.
    pub(crate) fn now(run_id: &str, host: &str, signal: i32) -> Interruption {
        let signal_name = match signal {
            libc::SIGINT => "SIGINT".to_owned(),
            libc::SIGTERM => "SIGTERM".to_owned(),
            other => format!("signal {other}"),
        };
        Interruption {
            run_id: run_id.to_owned(),
            signal,
            signal_name,
            at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            host: host.to_owned(),
        }
    }
}

/// Everything the run folders under one path hold, as `report` merges it. Records read from
/// a run folder have their artifacts' paths joined to that folder, as found from here, so
/// that a report written anywhere links them ([`crate::report::write_all`]).
#[derive(Debug, Clone, Default)]
pub struct RunContents {
    /// Every record.
    pub records: Vec<TrialRecord>,
    /// Every exclusion.
    pub excluded: Vec<Excluded>,
    /// Every trial a run left out because libtest ignored it (container trials are opt-in).
    pub skipped: Vec<Excluded>,
    /// Every planned trial, with the run that planned it.
    pub planned: Vec<(String, Planned)>,
    /// Runs that recorded no plan (made by a runtime-matrix older than plans): what they
    /// planned but did not finish cannot be known.
    pub runs_without_plan: Vec<String>,
    /// The runs that were interrupted.
    pub interruptions: Vec<Interruption>,
}

impl RunContents {
    /// Adds what `other` holds.
    pub(crate) fn append(&mut self, mut other: RunContents) {
        self.records.append(&mut other.records);
        self.excluded.append(&mut other.excluded);
        self.skipped.append(&mut other.skipped);
        self.planned.append(&mut other.planned);
        self.runs_without_plan.append(&mut other.runs_without_plan);
        self.interruptions.append(&mut other.interruptions);
    }

    /// Whether nothing at all was found.
    pub(crate) fn is_empty(&self) -> bool {
        self.records.is_empty()
            && self.excluded.is_empty()
            && self.skipped.is_empty()
            && self.planned.is_empty()
            && self.interruptions.is_empty()
    }
}

/// The folder of one run: `records/`, `artifacts/`, `excluded.json`, `planned/`, `skipped/`, an
/// `interrupted.json` when a signal cut it short, and the reports.
#[derive(Debug, Clone)]
pub(crate) struct RunDir {
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

    /// Writes the trials this process is about to run, before it runs any. Each distinct list
    /// is a file of its own under `planned/`, named after its contents: under cargo-nextest
    /// every process plans its one trial into the same run folder, and a re-run with another
    /// filter adds its list; a report reads the union.
    pub fn write_planned(&self, planned: &[Planned]) -> Result<(), OutputError> {
        let mut names: Vec<&str> = planned.iter().map(|p| p.name.as_str()).collect();
        names.sort_unstable();
        let key = crate::names::folder_key(&names.join("\n"));
        let path = self.path.join("planned").join(format!("{key:016x}.json"));
        if path.exists() {
            return Ok(());
        }
        let json = serde_json::to_vec_pretty(planned).expect("plans always serialise");
        write_atomic(&path, &json).map_err(|error| OutputError::Write { path, error })
    }

    /// Writes the trials this process leaves out because libtest ignores them, with why, like
    /// [`RunDir::write_planned`]: a file of its own under `skipped/` per distinct list.
    pub fn write_skipped(&self, skipped: &[Excluded]) -> Result<(), OutputError> {
        if skipped.is_empty() {
            return Ok(());
        }
        let mut names: Vec<&str> = skipped.iter().map(|p| p.name.as_str()).collect();
        names.sort_unstable();
        let key = crate::names::folder_key(&names.join("\n"));
        let path = self.path.join("skipped").join(format!("{key:016x}.json"));
        if path.exists() {
            return Ok(());
        }
        let json = serde_json::to_vec_pretty(skipped).expect("skipped trials always serialise");
        write_atomic(&path, &json).map_err(|error| OutputError::Write { path, error })
    }

    /// Marks the run as interrupted, so that its reports, and any merge of it, say so.
    pub fn write_interrupted(&self, interruption: &Interruption) -> Result<(), OutputError> {
        let path = self.path.join(INTERRUPTED);
        let json = serde_json::to_vec_pretty(interruption).expect("interruptions always serialise");
        write_atomic(&path, &json).map_err(|error| OutputError::Write { path, error })
    }

    /// Forgets an earlier interruption of this run id: a run started again under the same id
    /// replaces it. (Under cargo-nextest processes share the folder and keep the mark.)
    pub fn clear_interrupted(&self) -> Result<(), OutputError> {
        let path = self.path.join(INTERRUPTED);
        match std::fs::remove_file(&path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                Err(OutputError::Write { path, error })
            }
            _ => Ok(()),
        }
    }
}

/// The interruption mark in a run folder.
const INTERRUPTED: &str = "interrupted.json";

/// The most characters of a trial's name a record file name keeps, so that with its key the
/// name stays within the 255 bytes file systems allow.
const READABLE_MAX: usize = 200;

/// A file name for a trial's record: readable, and unique even where two names map to the
/// same characters or share their first 200 (the key is the whole name's).
pub(crate) fn record_file_name(trial: &str) -> String {
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
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut file = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|error| error.error)?;
    Ok(())
}

/// Reads every record, exclusion, plan and interruption under `dir`: a run folder, or a
/// folder of run folders.
pub(crate) fn read_dir(dir: &Path) -> Result<RunContents, OutputError> {
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
    let mut contents = RunContents::default();
    for run in runs {
        contents.append(read_run(&run)?);
    }
    Ok(contents)
}

/// Reads one run folder.
fn read_run(run: &Path) -> Result<RunContents, OutputError> {
    let mut contents = RunContents::default();
    for path in json_files(&run.join("records"))? {
        let mut record: TrialRecord = read_json(&path, crate::fsx::RECORD)?;
        for kept in record.artifact.iter_mut().chain(record.html.iter_mut()) {
            *kept = run.join(&*kept).to_string_lossy().into_owned();
        }
        contents.records.push(record);
    }
    // A file that is there but cannot be read (a dangling link, a device) is an error: the
    // report would lose what it says.
    let excluded_path = run.join("excluded.json");
    if excluded_path.symlink_metadata().is_ok() {
        contents.excluded = read_json(&excluded_path, crate::fsx::EXCLUDED)?;
    }
    let interrupted_path = run.join(INTERRUPTED);
    if interrupted_path.symlink_metadata().is_ok() {
        contents
            .interruptions
            .push(read_json(&interrupted_path, crate::fsx::INTERRUPTION)?);
    }
    // A run folder is named after its run id, though it may be given as `.`.
    let run_id = match contents.interruptions.first() {
        Some(interruption) => interruption.run_id.clone(),
        None => std::path::absolute(run)
            .ok()
            .and_then(|path| Some(path.file_name()?.to_string_lossy().into_owned()))
            .unwrap_or_else(|| run.display().to_string()),
    };
    let planned_dir = run.join("planned");
    let plans = if planned_dir.is_dir() {
        json_files(&planned_dir)?
    } else {
        Vec::new()
    };
    if plans.is_empty() {
        contents.runs_without_plan.push(run_id.clone());
    }
    let skipped_dir = run.join("skipped");
    if skipped_dir.is_dir() {
        for path in json_files(&skipped_dir)? {
            let list: Vec<Excluded> = read_json(&path, crate::fsx::PLANNED)?;
            contents.skipped.extend(list);
        }
    }
    for path in plans {
        let list: Vec<Planned> = read_json(&path, crate::fsx::PLANNED)?;
        contents
            .planned
            .extend(list.into_iter().map(|p| (run_id.clone(), p)));
    }
    Ok(contents)
}

/// The `.json` files in `dir`, by name, without the temporary files of unfinished writes.
fn json_files(dir: &Path) -> Result<Vec<PathBuf>, OutputError> {
    let entries = std::fs::read_dir(dir).map_err(|error| OutputError::Read {
        path: dir.to_owned(),
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
    Ok(paths)
}

/// Reads and parses one JSON file of a run folder: a regular file of at most `limit`.
fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    limit: crate::fsx::Limit,
) -> Result<T, OutputError> {
    let bytes = crate::fsx::read_bounded(path, limit).map_err(|error| OutputError::Read {
        path: path.to_owned(),
        error,
    })?;
    serde_json::from_slice(&bytes).map_err(|error| OutputError::BadRecord {
        path: path.to_owned(),
        error,
    })
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
