//! Settings from the environment. The main type is [`Options`]: every `RUNTIME_MATRIX_*`
//! variable the harness takes is read and validated once, by [`Options::from_env`], before
//! any trial runs or is listed; a bad value is a [`SettingsError`] naming the variable and the
//! forms it accepts, and the run exits 2. Nothing below the harness reads these variables.
//!
//! They are variables, not flags, so that `cargo test`, `cargo nextest run` and IDE runners,
//! which pass only libtest's flags, all take them.

use crate::config::Matrix;
use crate::error::{SelectionError, SettingsError};
use crate::exec::Keep;
use crate::plan::Selection;
use std::path::PathBuf;
use std::time::Duration;

/// How long a trial waits for its GPUs when `RUNTIME_MATRIX_LEASE_TIMEOUT` is not set.
pub const DEFAULT_LEASE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// How often a running trial is said to be still running when `RUNTIME_MATRIX_HEARTBEAT` is
/// not set, and how long it runs before the first time.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);

/// How long a runner idles before it exits by itself when `RUNTIME_MATRIX_RUNNER_IDLE` is not
/// set: long enough to bridge the gap between two cargo-nextest processes, short enough that
/// nothing of a run is left a minute after it.
pub const DEFAULT_RUNNER_IDLE: Duration = Duration::from_secs(20);

/// The run ids [`Options::from_vars`] accepts, as its message says them.
pub const RUN_ID_RULE: &str =
    "1 to 128 letters, digits, `.`, `_` or `-`, not `.` or `..`: run ids name a folder";

/// Whether `id` is a plain, bounded file-name component, so that the run's folder is one
/// folder under the output folder ([`RUN_ID_RULE`]). nextest's UUIDs are.
pub fn is_plain_run_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && id != "."
        && id != ".."
}

/// Settings read from the environment. Every field has a documented variable.
#[derive(Debug, Clone)]
pub struct Options {
    /// `RUNTIME_MATRIX_CONFIG`: the matrix file (default `matrix.toml`).
    pub config: PathBuf,
    /// `RUNTIME_MATRIX_OUT`: where run folders go (default `target/runtime-matrix` beside the
    /// matrix, or under `CARGO_TARGET_DIR`).
    pub out: Option<PathBuf>,
    /// `RUNTIME_MATRIX_RUN_ID` (else `NEXTEST_RUN_ID`, else a timestamp and the process id),
    /// a plain file name: 1 to 128 letters, digits, `.`, `_` or `-`, not `.` or `..`.
    pub run_id: Option<String>,
    /// `RUNTIME_MATRIX_STAGE`.
    pub stage: Option<String>,
    /// `RUNTIME_MATRIX_TAGS`, e.g. `gpu,!slow`.
    pub tags: Option<String>,
    /// `RUNTIME_MATRIX_SHARD`, e.g. `2/4`; checked with the selection, which the command line
    /// can also set (`--shard`).
    pub shard: Option<String>,
    /// `RUNTIME_MATRIX_MACHINES`: machine names, or `all`.
    pub machines: Option<String>,
    /// `RUNTIME_MATRIX_CACHE`: where provisioned virtualenvs live.
    pub cache: Option<PathBuf>,
    /// `RUNTIME_MATRIX_KEEP`: `failed` or `always` keeps containers for inspection.
    pub keep: Keep,
    /// `RUNTIME_MATRIX_LEASE_TIMEOUT`: how long a trial waits for its GPUs (default 30m).
    pub lease_timeout: Duration,
    /// `RUNTIME_MATRIX_LOCK_DIR`: the host's GPU lease lock files, shared by every run on it.
    pub lock_dir: PathBuf,
    /// `RUNTIME_MATRIX_NVML`: the NVML library, when not `libnvidia-ml.so.1` on the loader's
    /// path.
    pub nvml: Option<PathBuf>,
    /// `RUNTIME_MATRIX_ENGINE_TIMEOUT`: how long one Docker engine call may go unanswered
    /// (default 30s); checks' own deadlines bound their commands.
    pub engine_timeout: Duration,
    /// `RUNTIME_MATRIX_HEARTBEAT`: how often a trial still running is said on stderr, with
    /// its notebook's running cell (default 15s, `off` for never). Off by default under
    /// cargo-nextest, which captures a trial's stderr and prints its own SLOW lines.
    pub heartbeat: Option<Duration>,
    /// `RUNTIME_MATRIX_RUNNER_IDLE`: how long a runner waits for another trial before it
    /// exits by itself (default 20s). A run that ends stops its runners at once; this is for
    /// cargo-nextest, whose processes share them, and for a harness that was killed.
    pub runner_idle: Duration,
    /// `RUNTIME_MATRIX_BASELINE`: a run folder, a folder of run folders, or a report.json, to
    /// compare the run's reports with; it must exist. Its contents are read when the run
    /// starts, before any trial.
    pub baseline: Option<PathBuf>,
    /// `RUNTIME_MATRIX_REUSE_RESULTS` (`1` or `0`; the matrix target's `--reuse-results` flag
    /// sets it too): a trial whose inputs are unchanged since it last passed is not executed
    /// again; its record says the run it is reused from.
    pub reuse_results: bool,
    /// `RUNTIME_MATRIX_REUSE_DIR`: the result reuse store (default `reuse` under the output
    /// folder, beside the run folders).
    pub reuse_dir: Option<PathBuf>,
}

/// The forms `RUNTIME_MATRIX_REUSE_RESULTS` accepts, as its message says them.
const SWITCH: &str = "`1` (or `true`) to reuse results, `0` (or `false`) not to";

/// An on/off setting's value.
fn switch(variable: &'static str, text: &str) -> Result<bool, SettingsError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(SettingsError {
            variable,
            value: text.trim().to_owned(),
            accepted: SWITCH,
        }),
    }
}

impl Default for Options {
    fn default() -> Options {
        Options {
            config: "matrix.toml".into(),
            out: None,
            run_id: None,
            stage: None,
            tags: None,
            shard: None,
            machines: None,
            cache: None,
            keep: Keep::default(),
            lease_timeout: DEFAULT_LEASE_TIMEOUT,
            lock_dir: crate::gpu::lease::default_lock_dir(),
            nvml: None,
            engine_timeout: crate::engine::DEFAULT_REQUEST_LIMIT,
            heartbeat: Some(DEFAULT_HEARTBEAT),
            runner_idle: DEFAULT_RUNNER_IDLE,
            baseline: None,
            reuse_results: false,
            reuse_dir: None,
        }
    }
}

/// The duration `text` of setting `variable`, refused below `min` with the forms `accepted`.
fn duration(
    variable: &'static str,
    text: &str,
    min: Duration,
    accepted: &'static str,
) -> Result<Duration, SettingsError> {
    humantime::parse_duration(text.trim())
        .ok()
        .filter(|value| *value >= min)
        .ok_or_else(|| SettingsError {
            variable,
            value: text.trim().to_owned(),
            accepted,
        })
}

impl Options {
    /// Reads and checks every `RUNTIME_MATRIX_*` variable; a blank one counts as unset.
    pub fn from_env() -> Result<Options, SettingsError> {
        Options::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads and checks the settings `var` gives by variable name.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Options, SettingsError> {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let defaults = Options::default();
        let keep = match var("RUNTIME_MATRIX_KEEP") {
            Some(text) => Keep::parse(&text).map_err(|_| SettingsError {
                variable: "RUNTIME_MATRIX_KEEP",
                value: text.trim().to_owned(),
                accepted: "`failed` or `always`",
            })?,
            None => defaults.keep,
        };
        let lease_timeout = match var("RUNTIME_MATRIX_LEASE_TIMEOUT") {
            Some(text) => duration(
                "RUNTIME_MATRIX_LEASE_TIMEOUT",
                &text,
                Duration::ZERO,
                "a duration, e.g. `30m` or `90s`",
            )?,
            None => defaults.lease_timeout,
        };
        let mut run_id = None;
        for variable in ["RUNTIME_MATRIX_RUN_ID", "NEXTEST_RUN_ID"] {
            if let Some(text) = var(variable) {
                // Not trimmed: a run id with spaces is refused rather than changed.
                if !is_plain_run_id(&text) {
                    return Err(SettingsError {
                        variable,
                        value: text.escape_debug().to_string(),
                        accepted: RUN_ID_RULE,
                    });
                }
                run_id = Some(text);
                break;
            }
        }
        let engine_timeout = match var("RUNTIME_MATRIX_ENGINE_TIMEOUT") {
            Some(text) => duration(
                "RUNTIME_MATRIX_ENGINE_TIMEOUT",
                &text,
                Duration::from_secs(1),
                "a duration of at least 1s, e.g. `30s` or `2m`",
            )?,
            None => defaults.engine_timeout,
        };
        let heartbeat = match var("RUNTIME_MATRIX_HEARTBEAT") {
            Some(text) if text.trim() == "off" => None,
            Some(text) => Some(duration(
                "RUNTIME_MATRIX_HEARTBEAT",
                &text,
                Duration::from_secs(1),
                "a duration of at least 1s, e.g. `15s`, or `off`",
            )?),
            // nextest shows only a failed trial's stderr, after it ends, where a heartbeat
            // would be noise; its own SLOW lines say what runs long.
            None if var("NEXTEST_RUN_ID").is_some() => None,
            None => defaults.heartbeat,
        };
        let runner_idle = match var("RUNTIME_MATRIX_RUNNER_IDLE") {
            Some(text) => duration(
                "RUNTIME_MATRIX_RUNNER_IDLE",
                &text,
                Duration::from_secs(1),
                "a duration of at least 1s, e.g. `20s` or `5m`",
            )?,
            None => defaults.runner_idle,
        };
        let baseline = match var("RUNTIME_MATRIX_BASELINE") {
            // Only whether it is there: reading it is the run's job, and listing (once per
            // trial under cargo-nextest) must stay fast.
            Some(text) if std::fs::metadata(&text).is_err() => {
                return Err(SettingsError {
                    variable: "RUNTIME_MATRIX_BASELINE",
                    value: text,
                    accepted: "a run folder, a folder of run folders, or a report.json, that exists",
                });
            }
            Some(text) => Some(PathBuf::from(text)),
            None => None,
        };
        let reuse_results = match var("RUNTIME_MATRIX_REUSE_RESULTS") {
            Some(text) => switch("RUNTIME_MATRIX_REUSE_RESULTS", &text)?,
            None => defaults.reuse_results,
        };
        Ok(Options {
            reuse_results,
            reuse_dir: var("RUNTIME_MATRIX_REUSE_DIR").map(PathBuf::from),
            config: var("RUNTIME_MATRIX_CONFIG")
                .map(PathBuf::from)
                .unwrap_or(defaults.config),
            out: var("RUNTIME_MATRIX_OUT").map(PathBuf::from),
            run_id,
            stage: var("RUNTIME_MATRIX_STAGE"),
            tags: var("RUNTIME_MATRIX_TAGS"),
            shard: var("RUNTIME_MATRIX_SHARD"),
            machines: var("RUNTIME_MATRIX_MACHINES"),
            cache: var("RUNTIME_MATRIX_CACHE").map(PathBuf::from),
            keep,
            lease_timeout,
            lock_dir: var("RUNTIME_MATRIX_LOCK_DIR")
                .map(PathBuf::from)
                .unwrap_or(defaults.lock_dir),
            nvml: var("RUNTIME_MATRIX_NVML").map(PathBuf::from),
            engine_timeout,
            heartbeat,
            runner_idle,
            baseline,
        })
    }

    /// The folder run folders go under, for a matrix at `matrix`.
    pub fn out_root(&self, matrix: &Matrix) -> PathBuf {
        let root = match (&self.out, std::env::var_os("CARGO_TARGET_DIR")) {
            (Some(out), _) => out.clone(),
            (None, Some(target)) => PathBuf::from(target).join("runtime-matrix"),
            (None, None) => matrix.root.join("target").join("runtime-matrix"),
        };
        // Absolute, because checks run with a scratch folder as their working directory.
        std::path::absolute(&root).unwrap_or(root)
    }

    /// The result reuse store's folder, for a matrix at `matrix`: `RUNTIME_MATRIX_REUSE_DIR`,
    /// or `reuse` under [`Options::out_root`]. Absolute.
    pub fn reuse_dir(&self, matrix: &Matrix) -> PathBuf {
        let dir = match &self.reuse_dir {
            Some(dir) => dir.clone(),
            None => self.out_root(matrix).join(crate::reuse::DIR_NAME),
        };
        std::path::absolute(&dir).unwrap_or(dir)
    }

    /// Makes host GPU detection use [`Options::nvml`]. Detection runs at most once per
    /// process, so the first call before it counts; the harness and the CLI call this first.
    pub(crate) fn configure_detection(&self) {
        crate::gpu::use_library(self.nvml.clone());
    }

    /// The selection these options ask for.
    pub fn selection(&self, matrix: &Matrix) -> Result<Selection, SelectionError> {
        self.configure_detection();
        Selection::parse(
            matrix,
            self.stage.as_deref(),
            self.tags.as_deref(),
            self.shard.as_deref(),
            self.machines.as_deref(),
            || crate::gpu::detect().clone(),
        )
    }
}

/// This host's name, as records and container owner labels carry it.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> Result<Options, SettingsError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Options::from_vars(|name| vars.get(name).cloned())
    }

    #[test]
    fn unset_and_blank_variables_take_the_defaults() {
        let options = parse(&[
            ("RUNTIME_MATRIX_LEASE_TIMEOUT", "  "),
            ("RUNTIME_MATRIX_KEEP", ""),
        ])
        .unwrap();
        assert_eq!(options.config, PathBuf::from("matrix.toml"));
        assert_eq!(options.keep, Keep::Never);
        assert_eq!(options.lease_timeout, Duration::from_secs(1800));
        assert_eq!(options.lock_dir, crate::gpu::lease::default_lock_dir());
        assert_eq!(options.nvml, None);
        assert_eq!(options.engine_timeout, Duration::from_secs(30));
        assert_eq!(options.heartbeat, Some(Duration::from_secs(15)));
    }

    #[test]
    fn the_heartbeat_is_a_period_or_off_and_off_under_nextest_unless_set() {
        let heartbeat = |vars: &[(&str, &str)]| parse(vars).unwrap().heartbeat;
        assert_eq!(
            heartbeat(&[("RUNTIME_MATRIX_HEARTBEAT", "2s")]),
            Some(Duration::from_secs(2))
        );
        assert_eq!(heartbeat(&[("RUNTIME_MATRIX_HEARTBEAT", " off ")]), None);
        assert_eq!(heartbeat(&[("NEXTEST_RUN_ID", "n")]), None);
        assert_eq!(
            heartbeat(&[("NEXTEST_RUN_ID", "n"), ("RUNTIME_MATRIX_HEARTBEAT", "5s")]),
            Some(Duration::from_secs(5))
        );
        let error = parse(&[("RUNTIME_MATRIX_HEARTBEAT", "0s")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid RUNTIME_MATRIX_HEARTBEAT `0s` (use a duration of at least 1s, e.g. `15s`, or `off`)"
        );
    }

    #[test]
    fn values_are_parsed_into_their_types() {
        let options = parse(&[
            ("RUNTIME_MATRIX_LEASE_TIMEOUT", " 90s "),
            ("RUNTIME_MATRIX_KEEP", "failed"),
            ("RUNTIME_MATRIX_LOCK_DIR", "/run/locks"),
            ("RUNTIME_MATRIX_NVML", "/opt/libnvidia-ml.so.1"),
            ("NEXTEST_RUN_ID", "nextest-run"),
            ("RUNTIME_MATRIX_ENGINE_TIMEOUT", "5s"),
        ])
        .unwrap();
        assert_eq!(options.engine_timeout, Duration::from_secs(5));
        assert_eq!(options.lease_timeout, Duration::from_secs(90));
        assert_eq!(options.keep, Keep::Failed);
        assert_eq!(options.lock_dir, PathBuf::from("/run/locks"));
        assert_eq!(options.nvml, Some(PathBuf::from("/opt/libnvidia-ml.so.1")));
        assert_eq!(options.run_id.as_deref(), Some("nextest-run"));
    }

    #[test]
    fn a_bad_value_names_the_variable_and_the_accepted_forms() {
        let error = parse(&[("RUNTIME_MATRIX_LEASE_TIMEOUT", "abc")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid RUNTIME_MATRIX_LEASE_TIMEOUT `abc` (use a duration, e.g. `30m` or `90s`)"
        );
        let error = parse(&[("RUNTIME_MATRIX_KEEP", " sometimes ")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid RUNTIME_MATRIX_KEEP `sometimes` (use `failed` or `always`)"
        );
        // Under a second, a loaded engine would miss it for every call.
        let error = parse(&[("RUNTIME_MATRIX_ENGINE_TIMEOUT", "500ms")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid RUNTIME_MATRIX_ENGINE_TIMEOUT `500ms` (use a duration of at least 1s, e.g. `30s` or `2m`)"
        );
    }

    #[test]
    fn result_reuse_is_off_unless_switched_on() {
        assert!(!parse(&[]).unwrap().reuse_results);
        assert!(
            parse(&[("RUNTIME_MATRIX_REUSE_RESULTS", "1")])
                .unwrap()
                .reuse_results
        );
        assert!(
            parse(&[("RUNTIME_MATRIX_REUSE_RESULTS", " True ")])
                .unwrap()
                .reuse_results
        );
        assert!(
            !parse(&[("RUNTIME_MATRIX_REUSE_RESULTS", "0")])
                .unwrap()
                .reuse_results
        );
        let error = parse(&[("RUNTIME_MATRIX_REUSE_RESULTS", "maybe")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid RUNTIME_MATRIX_REUSE_RESULTS `maybe` (use `1` (or `true`) to reuse results, `0` (or `false`) not to)"
        );
        let options = parse(&[("RUNTIME_MATRIX_REUSE_DIR", "/cache/reuse")]).unwrap();
        assert_eq!(options.reuse_dir, Some(PathBuf::from("/cache/reuse")));
    }

    #[test]
    fn a_baseline_is_a_path_that_exists() {
        let dir = tempfile::tempdir().unwrap();
        let there = dir.path().display().to_string();
        let options = parse(&[("RUNTIME_MATRIX_BASELINE", &there)]).unwrap();
        assert_eq!(options.baseline, Some(dir.path().to_owned()));
        assert_eq!(parse(&[]).unwrap().baseline, None);
        let missing = format!("{there}/no-such-run");
        let error = parse(&[("RUNTIME_MATRIX_BASELINE", &missing)]).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "invalid RUNTIME_MATRIX_BASELINE `{missing}` (use a run folder, a folder of run \
                 folders, or a report.json, that exists)"
            )
        );
    }

    #[rstest::rstest]
    #[case("../../x")]
    #[case("/abs")]
    #[case("a/b")]
    #[case("..")]
    #[case(".")]
    #[case("a b")]
    #[case("a\nb")]
    fn a_run_id_that_is_not_a_plain_file_name_is_refused(#[case] id: &str) {
        let error = parse(&[("RUNTIME_MATRIX_RUN_ID", id)]).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "invalid RUNTIME_MATRIX_RUN_ID `{}` (use {RUN_ID_RULE})",
                id.escape_debug()
            )
        );
        let error = parse(&[("NEXTEST_RUN_ID", id)]).unwrap_err();
        assert_eq!(error.variable, "NEXTEST_RUN_ID");
    }

    #[test]
    fn run_ids_nextest_and_the_harness_make_are_plain() {
        for id in [
            "f2bc7c69-1dbb-4ab1-9b1c-ac8c0d3b6a0e",
            "2026-12-01T21-34-53-4242",
            "ci.1234_shard-2",
            &"x".repeat(128),
        ] {
            let options = parse(&[("NEXTEST_RUN_ID", id)]).unwrap();
            assert_eq!(options.run_id.as_deref(), Some(id));
        }
        assert!(parse(&[("RUNTIME_MATRIX_RUN_ID", &"x".repeat(129))]).is_err());
    }
}
