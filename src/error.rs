//! Errors the library reports to users, in one place.
//!
//! Messages are lowercase fragments; the cause sits in `#[source]` and is printed by the caller
//! as a chain, never repeated in the text.

use std::fmt;
use std::path::PathBuf;

/// Exit code of a run whose trials all passed.
pub const EXIT_OK: u8 = 0;
/// Exit code of a run in which at least one trial failed (libtest's own code).
pub const EXIT_TRIALS_FAILED: u8 = 101;
/// Exit code when the run could not start: bad config, bad selection, unwritable output.
pub const EXIT_SETUP: u8 = 2;
/// An interrupted run exits with this plus the signal's number: 130 for SIGINT, 143 for SIGTERM.
pub const EXIT_INTERRUPTED_BASE: i32 = 128;

/// A problem with `matrix.toml`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("failed to read matrix config at {path} (set RUNTIME_MATRIX_CONFIG to use another file)", path = path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        error: std::io::Error,
    },
    /// The file is not valid TOML, or a value has the wrong type.
    #[error("failed to parse matrix config at {path}", path = path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause, with line and column.
        #[source]
        error: toml::de::Error,
    },
    /// The file parsed, but what it declares does not hold together.
    #[error("invalid matrix config at {path}:\n{problems}", path = path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found, not just the first.
        problems: Problems,
        /// The unknown keys found on the way, which may explain the problems; they are
        /// printed before the error, as they would be for a valid matrix.
        warnings: Vec<String>,
    },
}

impl ConfigError {
    /// Warnings to print before this error: the unknown keys of an invalid matrix.
    pub fn warnings(&self) -> &[String] {
        match self {
            ConfigError::Invalid { warnings, .. } => warnings,
            ConfigError::Read { .. } | ConfigError::Parse { .. } => &[],
        }
    }
}

/// One problem found while validating, at a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `runtimes.torch.machines`.
    pub key: String,
    /// What is wrong with the entry there, and the fix when there is one.
    pub message: String,
}

/// The problems of one file, printed one per line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  - {}: {}", problem.key, problem.message)?;
        }
        Ok(())
    }
}

/// A bad selection from the environment or the command line.
#[derive(Debug, thiserror::Error)]
pub enum SelectionError {
    /// `RUNTIME_MATRIX_SHARD` (or `--shard`) is not `K/N` with 1 <= K <= N.
    #[error("invalid shard `{0}` (expected K/N with 1 <= K <= N, e.g. 2/4)")]
    Shard(String),
    /// An unknown stage was asked for.
    #[error("unknown stage `{name}`{hint} (declared: {declared})")]
    Stage {
        /// What was asked for.
        name: String,
        /// A suggestion, or nothing.
        hint: String,
        /// The stages the matrix declares.
        declared: String,
    },
    /// An unknown machine was asked for.
    #[error("unknown machine `{name}` in RUNTIME_MATRIX_MACHINES{hint} (declared: {declared})")]
    Machine {
        /// What was asked for.
        name: String,
        /// A suggestion, or nothing.
        hint: String,
        /// The machines the matrix declares.
        declared: String,
    },
}

/// A `RUNTIME_MATRIX_*` variable set to a value it does not accept; found before anything runs.
#[derive(Debug, thiserror::Error)]
#[error("invalid {variable} `{value}` (use {accepted})")]
pub struct SettingsError {
    /// The variable, e.g. `RUNTIME_MATRIX_LEASE_TIMEOUT`.
    pub variable: &'static str,
    /// Its value, trimmed.
    pub value: String,
    /// The forms it accepts.
    pub accepted: &'static str,
}

/// A problem with the run's output folder or its records.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// A folder could not be created.
    #[error("cannot create output folder {path} (set RUNTIME_MATRIX_OUT to a writable folder)", path = path.display())]
    CreateDir {
        /// The folder.
        path: PathBuf,
        /// The cause.
        #[source]
        error: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {path}", path = path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        error: std::io::Error,
    },
    /// A file could not be read.
    #[error("cannot read {path}", path = path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        error: std::io::Error,
    },
    /// A record is not valid JSON of the expected schema.
    #[error("record {path} is not a valid runtime-matrix record", path = path.display())]
    BadRecord {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        error: serde_json::Error,
    },
    /// A run id that is not a plain file name, so its folder would not be under the output
    /// folder.
    #[error("invalid run id `{0}` (use {rule})", rule = crate::settings::RUN_ID_RULE)]
    RunId(String),
    /// `report` was given folders that hold no records.
    #[error(
        "no records found under {0} (give the run folder, e.g. target/runtime-matrix/<run-id>)"
    )]
    NoRecords(String),
}

/// A baseline to compare a report with cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// The path cannot be read, or its records cannot.
    #[error("cannot read baseline {path} (give a run folder, a folder of run folders, or a report.json)", path = path.display())]
    Read {
        /// The folder or file.
        path: PathBuf,
        /// The cause.
        #[source]
        error: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The file is not JSON of a report.
    #[error("baseline {path} is not a runtime-matrix report.json", path = path.display())]
    NotAReport {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        error: serde_json::Error,
    },
    /// The report has a schema this version does not read.
    #[error(
        "baseline {path} has report schema {found}, this runtime-matrix reads schema {expected} (compare with its run folder instead)",
        path = path.display(),
        expected = crate::report::REPORT_SCHEMA
    )]
    Schema {
        /// The file.
        path: PathBuf,
        /// The schema it has, or `none`.
        found: String,
    },
    /// `RUNTIME_MATRIX_BASELINE` names a baseline that cannot be read.
    #[error("invalid RUNTIME_MATRIX_BASELINE `{value}`", value = path.display())]
    Setting {
        /// The variable's value.
        path: PathBuf,
        /// Why it cannot be read.
        #[source]
        error: Box<BaselineError>,
    },
}

/// Formats `error` and its chain of causes, one per line, for a terminal.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str("\n  caused by: ");
        text.push_str(&cause.to_string().trim_end().replace('\n', "\n    "));
        source = cause.source();
    }
    text
}

/// A runtime's Python could not be made ready to execute notebooks.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProvisionError {
    /// The interpreter does not exist or does not run.
    #[error(
        "python `{python}` of runtime `{runtime}` cannot be run: {detail} (install it, or set runtimes.{runtime}.python)"
    )]
    Python {
        /// The runtime.
        runtime: String,
        /// The configured interpreter.
        python: String,
        /// What happened.
        detail: String,
    },
    /// Creating the virtualenv or installing into it failed.
    #[error("provisioning a virtualenv for runtime `{runtime}` failed at `{step}` (see the output below; remove {venv} to start over)\n{output}", venv = venv.display())]
    Install {
        /// The runtime.
        runtime: String,
        /// The step that failed.
        step: String,
        /// The virtualenv folder.
        venv: PathBuf,
        /// The tail of the step's output.
        output: String,
    },
    /// The cache folder could not be prepared or locked.
    #[error("cannot prepare the virtualenv cache at {path} (set RUNTIME_MATRIX_CACHE to a writable folder)", path = path.display())]
    Cache {
        /// The folder or lock file.
        path: PathBuf,
        /// The cause.
        #[source]
        error: std::io::Error,
    },
}

/// `duration` in whole seconds, as a user sets limits: `8s`, `2m 30s`.
fn seconds(duration: &std::time::Duration) -> humantime::FormattedDuration {
    humantime::format_duration(std::time::Duration::from_secs(
        duration.as_secs_f64().round() as u64,
    ))
}

/// A Docker engine operation failed. Each variant names what was being done and to what; the
/// engine's own error is the source.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EngineError {
    /// The engine does not answer at all.
    #[error(
        "cannot reach the Docker engine at {endpoint} (is it running? start it with `sudo systemctl start docker`, \
         or set DOCKER_HOST, or machines.NAME.docker, to an engine that is)"
    )]
    Unreachable {
        /// Where it was looked for.
        endpoint: String,
        /// The cause.
        #[source]
        error: bollard::errors::Error,
    },
    /// The TLS handshake with the engine failed.
    #[error(
        "the TLS handshake with the Docker engine at {endpoint} failed: {problem} (check {check})"
    )]
    Tls {
        /// The engine.
        endpoint: String,
        /// What went wrong, in words a user can act on.
        problem: String,
        /// Where the TLS files were set.
        check: String,
        /// The cause.
        #[source]
        error: Box<bollard::errors::Error>,
    },
    /// A TLS file cannot be read.
    #[error("cannot read the {what} {} for the Docker engine at {endpoint} (check {origin})", path.display())]
    TlsFile {
        /// The engine.
        endpoint: String,
        /// Which file.
        what: &'static str,
        /// Its path.
        path: std::path::PathBuf,
        /// Where it was set.
        origin: String,
        /// The cause.
        #[source]
        error: std::io::Error,
    },
    /// The ssh connection to the engine's host, or the engine behind it, failed.
    #[error(
        "cannot reach the Docker engine at {endpoint} over ssh (check that `ssh {destination} docker system dial-stdio` \
         works from this shell without a prompt: the host's key in known_hosts, your key in ssh-agent or ~/.ssh/config, \
         and docker on the remote PATH)"
    )]
    Ssh {
        /// The engine.
        endpoint: String,
        /// `user@host[:port]`.
        destination: String,
        /// The cause, with the ssh client's own words.
        #[source]
        error: Box<bollard::errors::Error>,
    },
    /// The socket exists but this user may not use it.
    #[error(
        "permission denied on the Docker socket at {endpoint} (add your user to the `docker` group and log in again, \
         or run as root)"
    )]
    PermissionDenied {
        /// The socket.
        endpoint: String,
        /// The cause.
        #[source]
        error: bollard::errors::Error,
    },
    /// The image is not in the engine, and the policy or the registry says it will not be.
    #[error("image `{image}` is not in the Docker engine{hint}")]
    ImageMissing {
        /// The image.
        image: String,
        /// What to do.
        hint: String,
    },
    /// Pulling failed.
    #[error("failed to pull image `{image}`{hint}")]
    Pull {
        /// The image.
        image: String,
        /// What to do, from the registry's answer.
        hint: String,
        /// The cause.
        #[source]
        error: bollard::errors::Error,
    },
    /// Building failed.
    #[error("failed to build image `{image}` from {from}\n{output}")]
    Build {
        /// The image.
        image: String,
        /// The context or script.
        from: String,
        /// The tail of the build's output.
        output: String,
    },
    /// The engine cannot give containers GPUs.
    #[error(
        "the Docker engine at {endpoint} has no NVIDIA runtime, so machine `{machine}` cannot get its GPUs (install the \
         NVIDIA Container Toolkit on the engine's host and restart the engine, or run this machine's trials on an engine \
         that has it)"
    )]
    NoNvidiaRuntime {
        /// The engine.
        endpoint: String,
        /// The machine asking for GPUs.
        machine: String,
        /// The cause.
        #[source]
        error: bollard::errors::Error,
    },
    /// The connection to the engine broke during an operation.
    #[error(
        "lost the connection to the Docker engine at {endpoint} while trying to {operation} {target} (check the engine, and the network to it)"
    )]
    ConnectionLost {
        /// The engine.
        endpoint: String,
        /// What was being done.
        operation: &'static str,
        /// The image or container.
        target: String,
        /// The cause.
        #[source]
        error: Box<bollard::errors::Error>,
    },
    /// The engine accepted the connection but did not answer a call in time.
    #[error(
        "the Docker engine at {endpoint} did not answer `{call}` for {target} within {} (it accepts connections but stopped answering: \
         check it with `docker info`, and restart it if that hangs too; what it still holds of this run is removed by the next run \
         on this host, or by `runtime-matrix clean`)",
        seconds(limit)
    )]
    Silent {
        /// The engine.
        endpoint: String,
        /// The call that went unanswered: `create container`, `exec`...
        call: &'static str,
        /// The image or container.
        target: String,
        /// How long it was given.
        limit: std::time::Duration,
    },
    /// A check's command did not end at its deadline because its container was paused.
    #[error(
        "container {container} was paused (`docker pause`) while the check ran, so its deadline of {} could not act \
         (nothing of this project pauses containers: find what did, e.g. a monitoring tool, and keep it away from them)",
        seconds(deadline)
    )]
    Paused {
        /// The container.
        container: String,
        /// The check's deadline.
        deadline: std::time::Duration,
    },
    /// An earlier trial of this process already failed the same way (image resolution and
    /// shared containers are done once per process); the message is that failure's.
    #[error("{message}")]
    Earlier {
        /// The first failure, with its causes.
        message: String,
        /// Whether it was the runtime's image (rather than the engine or the host).
        image: bool,
    },
    /// Another engine operation failed.
    #[error("failed to {operation} {target}")]
    Operation {
        /// What was being done: `create a container from`, `start container`...
        operation: &'static str,
        /// The image or container.
        target: String,
        /// The cause.
        #[source]
        error: bollard::errors::Error,
    },
}

/// A runner (the warm process that runs a runtime's trials on a machine) failed the trial it
/// was given; the trial fails as infrastructure, and the next trial gets a new runner.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunnerError {
    /// It could not be started.
    #[error("cannot start the runner for {serves}: {reason}")]
    Start {
        /// "runtime `r` on machine `m`".
        serves: String,
        /// Why, with what it printed.
        reason: String,
    },
    /// It went away while the trial waited (killed from outside, or its container stopped).
    #[error("the runner for {serves} stopped: {reason}")]
    Gone {
        /// "runtime `r` on machine `m`".
        serves: String,
        /// What is known of why.
        reason: String,
    },
    /// The engine failed while the runner's container was made.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// It did not answer within the trial's deadline and a grace period.
    #[error(
        "the runner for {serves} did not answer within {} (it is stopped; the next trial gets a new one)",
        seconds(waited)
    )]
    Silent {
        /// "runtime `r` on machine `m`".
        serves: String,
        /// How long the trial waited.
        waited: std::time::Duration,
    },
}

/// A notebook's data set (the files its `data` globs match) cannot be staged: the trial fails
/// before its notebook starts.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DataError {
    /// A glob matches no file: a typo, or data that is not there (not checked out, not
    /// fetched), which the notebook would otherwise meet as a `FileNotFoundError`.
    #[error(
        "data glob `{glob}` matches no file under {notebooks_dir} (fix the glob, or put the data there)",
        notebooks_dir = notebooks_dir.display()
    )]
    NoMatch {
        /// The glob as written.
        glob: String,
        /// The notebooks folder it is resolved in.
        notebooks_dir: PathBuf,
    },
    /// A file is not a regular file (a FIFO, a device, a folder where a file was expected).
    #[error("{path}: {error}", path = path.display())]
    NotAFile {
        /// The file.
        path: PathBuf,
        /// What it is.
        error: std::io::Error,
    },
    /// Together the files are larger than a data set may be.
    #[error(
        "{path}: with it the data set holds more than {limit}, the most a notebook's data set may hold (narrow the data globs)",
        path = path.display(),
        limit = crate::fsx::size(*limit)
    )]
    TooLarge {
        /// The file that crossed the limit.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
    },
    /// The globs match more files than a data set may have.
    #[error(
        "the data globs match more than {limit} files, the most a notebook's data set may have (narrow the data globs, or pack the files into an archive)"
    )]
    TooMany {
        /// The limit.
        limit: usize,
    },
    /// A file or folder could not be read, or changed while it was staged.
    #[error("cannot stage {path} with the notebook", path = path.display())]
    Read {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        #[source]
        error: std::io::Error,
    },
}
