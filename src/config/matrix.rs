//! The validated matrix: what every later stage works from.

use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// A validated `matrix.toml`: runtimes, machines, their checks, and the rules over them.
#[derive(Debug, Clone, Serialize)]
pub struct Matrix {
    /// The file it was loaded from.
    pub path: PathBuf,
    /// The folder holding the file; relative paths in it are resolved from here.
    pub root: PathBuf,
    /// Where notebook globs are resolved, and what check names are relative to.
    pub notebooks_dir: PathBuf,
    /// Declared stages, in order.
    pub stages: Vec<String>,
    /// The stage selected when none is asked for.
    pub default_stage: String,
    /// Machines by name, in name order.
    pub machines: Vec<Machine>,
    /// Runtimes by name, in name order, each with its checks.
    pub runtimes: Vec<Runtime>,
    /// Services by name, in name order.
    pub services: Vec<Service>,
    /// Combinations that are never run.
    pub exclusions: Vec<Exclusion>,
    /// Combinations known to fail, and how; consistency checks' expected differences too.
    pub expected_failures: Vec<ExpectedFailure>,
    /// The notebooks compared across runtimes and machines, and how.
    pub consistency: Consistency,
    /// Problems that do not stop the matrix from loading (unknown keys, unused overrides).
    pub warnings: Vec<String>,
}

/// A kind of machine the platform offers: how many GPUs, of which model.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Machine {
    /// Its name in the matrix and in trial names.
    pub name: String,
    /// Number of GPUs; 0 for a CPU-only machine.
    pub gpus: u32,
    /// A wildcard pattern over the GPU model name, e.g. `*H100*`.
    pub gpu_model: Option<String>,
    /// The Docker engine that serves this machine (`unix://...`, `tcp://...`, `https://...`,
    /// `ssh://user@host`); `DOCKER_HOST` or the local socket when unset.
    pub docker: Option<String>,
    /// The TLS files for a `tcp://` or `https://` engine, when declared; without them,
    /// `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH` apply as the docker CLI reads them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<MachineTls>,
    /// Free text for reports.
    pub description: Option<String>,
    /// Tags every trial on this machine carries.
    pub tags: Vec<String>,
    /// GitHub Actions runner labels of its CI jobs; empty when the matrix declares none (the
    /// generated workflow then uses `ubuntu-latest`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub runs_on: Vec<String>,
    /// GitLab runner tags of its CI jobs; empty when the matrix declares none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ci_tags: Vec<String>,
    /// How many CI jobs split its trials (at least 1).
    pub shards: u32,
    /// Parameters given to the notebooks that run on it, over the runtime's.
    #[serde(skip_serializing_if = "Parameters::is_empty")]
    pub parameters: Parameters,
}

/// `machines.NAME.tls`: absolute paths of the files of a TLS connection to the engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct MachineTls {
    /// The CA certificate that signed the engine's certificate.
    pub ca: std::path::PathBuf,
    /// Our client certificate.
    pub cert: std::path::PathBuf,
    /// Its private key.
    pub key: std::path::PathBuf,
}

/// Notebook parameters by name, papermill-style: each becomes a `name = value` line of the
/// cell the runner injects (see [`BUILTIN_PARAMETERS`]). Values are JSON: strings, integers,
/// finite floats, booleans, arrays and tables, as TOML gives them.
pub type Parameters = BTreeMap<String, serde_json::Value>;

/// The start of every built-in parameter's name; no declared parameter may use it.
pub const BUILTIN_PREFIX: &str = "runtime_matrix_";

/// The parameters every injected cell sets, before the declared ones: the runtime's name, the
/// machine's name and the machine's GPU count.
pub const BUILTIN_PARAMETERS: [&str; 3] = [
    "runtime_matrix_runtime",
    "runtime_matrix_machine",
    "runtime_matrix_gpus",
];

/// How a runtime's checks are executed.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Executor {
    /// On this host, under a Python interpreter (provisioned into a virtualenv when needed).
    Host {
        /// The interpreter: a name looked up on `PATH`, or a path.
        python: String,
        /// pip requirements the runtime needs beyond nbconvert and ipykernel.
        packages: Vec<String>,
    },
    /// In a container of the runtime's image, on the machine's Docker engine.
    Docker(Box<DockerRuntime>),
}

/// How a Docker runtime's containers are made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct DockerRuntime {
    /// The image reference, e.g. `registry.example.com/torch:2.4-cuda12.4`.
    pub image: String,
    /// When to pull it.
    pub pull: PullPolicy,
    /// How to build it instead of pulling, if declared.
    pub build: Option<Build>,
    /// The interpreter inside the image.
    pub python: String,
    /// Memory limit in bytes.
    pub memory: Option<i64>,
    /// Process limit.
    pub pids: Option<i64>,
    /// Docker network mode: `none` (the default), `bridge`, `host`, or a network's name.
    pub network: String,
    /// How far apart its trials are kept.
    pub isolation: Isolation,
    /// Names of host environment variables passed in and redacted from every output.
    pub secrets: Vec<String>,
}

/// How far apart a Docker runtime's trials are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// A fresh kernel, folder and temporary folder per notebook, in a runner container shared
    /// by the runtime's trials on a machine: no interpreter or kernel start per notebook.
    #[default]
    Notebook,
    /// A container of its own per trial.
    Container,
}

/// When a Docker runtime's image is pulled (or built).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PullPolicy {
    /// Only when the engine does not have it.
    IfMissing,
    /// Once per run.
    Always,
    /// Never: a missing image fails the trial.
    Never,
}

/// How to build an image instead of pulling it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Build {
    /// `docker build` of a context folder.
    Context {
        /// The folder, absolute.
        context: PathBuf,
        /// The Dockerfile, relative to the context.
        dockerfile: String,
    },
    /// A script that must leave the image in the engine; it gets the reference in
    /// `RUNTIME_MATRIX_IMAGE`.
    Script {
        /// The script, absolute.
        script: PathBuf,
    },
}

impl Executor {
    /// The short name used as the trial kind: `host`.
    pub fn name(&self) -> &'static str {
        match self {
            Executor::Host { .. } => "host",
            Executor::Docker(_) => "docker",
        }
    }
}

/// A runtime: an environment notebooks and commands run in.
#[derive(Debug, Clone, Serialize)]
pub struct Runtime {
    /// Its name in the matrix and in trial names.
    pub name: String,
    /// Free text for reports.
    pub description: Option<String>,
    /// Where and how its checks run.
    pub executor: Executor,
    /// Environment variables set for every check.
    pub env: BTreeMap<String, String>,
    /// Names of the machines it targets, in name order.
    pub machines: Vec<String>,
    /// Parameters given to its notebooks.
    #[serde(skip_serializing_if = "Parameters::is_empty")]
    pub parameters: Parameters,
    /// Its checks, notebooks first (by path), then commands (by name).
    pub checks: Vec<Check>,
    /// The services its trials use, by name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Service>,
}

/// A service: a container started beside the trials of the runtimes that use it, once per
/// run and engine, and reached by them through `RUNTIME_MATRIX_SERVICE_<NAME>_*` variables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Service {
    /// Its name in the matrix; its variables use it upper-cased (see [`Service::env_prefix`]).
    pub name: String,
    /// Free text for reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The image reference.
    pub image: String,
    /// When to pull it.
    pub pull: PullPolicy,
    /// How to build it instead of pulling, if declared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build: Option<Build>,
    /// Environment of its container.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Names of host environment variables passed to its container and redacted everywhere.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// Its container's command, instead of the image's CMD.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// The container ports it serves; the first is `_PORT`.
    pub ports: Vec<u16>,
    /// When it counts as ready.
    pub ready: Readiness,
    /// How long it may take to become ready.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub ready_timeout: Duration,
    /// The URL template given to trials as `_URL`, if declared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Names of the runtimes that use it, in name order.
    pub runtimes: Vec<String>,
}

/// When a service counts as ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Readiness {
    /// Its container port `port` accepts a connection (checked through its published port).
    Port {
        /// The container port.
        port: u16,
    },
    /// A line of its logs contains `text`.
    Log {
        /// The text.
        text: String,
    },
    /// The shell line `run`, run in its container, exits 0.
    Command {
        /// The line given to `sh -c`.
        run: String,
    },
}

impl std::fmt::Display for Readiness {
    /// As `plan` shows it: `port 6379 accepts connections`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Readiness::Port { port } => write!(f, "port {port} accepts connections"),
            Readiness::Log { text } => write!(f, "its logs say `{text}`"),
            Readiness::Command { run } => write!(f, "`{run}` succeeds in it"),
        }
    }
}

impl Service {
    /// The start of its variables' names: `RUNTIME_MATRIX_SERVICE_<NAME>`, the name
    /// upper-cased with `-` and `.` as `_`.
    pub fn env_prefix(&self) -> String {
        env_prefix(&self.name)
    }
}

/// [`Service::env_prefix`] of a service called `name`.
pub(crate) fn env_prefix(name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| match c {
            '-' | '.' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect();
    format!("RUNTIME_MATRIX_SERVICE_{name}")
}

/// One thing to verify in a runtime: a notebook to execute or a command to run.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Check {
    /// `nb::<path under notebooks-dir, without .ipynb>` or `cmd::<name>`.
    pub name: String,
    /// What runs.
    pub kind: CheckKind,
    /// The whole-check deadline; the process tree is killed when it passes.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
    /// The per-cell timeout given to nbconvert (notebooks only).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub cell_timeout: Duration,
    /// The runtime's tags and the check's own.
    pub tags: Vec<String>,
    /// The stages the check runs in.
    pub stages: Vec<String>,
    /// Globs under the notebooks folder of the files staged with a notebook, at the same
    /// relative paths: the runtime's, then those of the overrides that match it. Expanded by
    /// the trial, not at load.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<String>,
    /// Parameters the `[[overrides]]` matching this notebook set, later entries winning;
    /// they win over the runtime's and the machine's. Empty for other checks.
    #[serde(skip_serializing_if = "Parameters::is_empty")]
    pub parameters: Parameters,
    /// The tag of the cells whose outputs are compared across runtimes and machines, when
    /// `[consistency]` declares this notebook; `None` for other checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_tag: Option<String>,
}

/// `[consistency]`: the notebooks whose tagged cells must print the same in every runtime and
/// machine, and how their texts are normalised before they are compared.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct Consistency {
    /// The declared notebooks, by path under the notebooks folder (those the globs matched
    /// among the runtimes' notebooks), each a `consistency::nb::<path>` check.
    pub notebooks: Vec<String>,
    /// The tag of the compared cells.
    pub tag: String,
    /// Relative tolerance for numbers, with the same absolute floor near 0; 0 is exact.
    pub float_tolerance: f64,
    /// Replacements applied to every compared text, in order.
    pub sanitizers: Vec<crate::record::Sanitizer>,
}

/// The default tag of compared cells.
pub const CONSISTENT_TAG: &str = "consistent";

/// How consistency checks' names begin: `consistency::nb::<path>`.
pub const CONSISTENCY_PREFIX: &str = "consistency::";

/// The consistency check of the notebook at `relative` (under notebooks-dir):
/// `consistency::nb::<path without .ipynb>`, its trials' check name after the prefix.
pub fn consistency_check_name(relative: &str) -> String {
    format!(
        "{CONSISTENCY_PREFIX}nb::{}",
        relative.strip_suffix(".ipynb").unwrap_or(relative)
    )
}

/// What a check runs.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum CheckKind {
    /// A notebook executed with `jupyter nbconvert --execute`.
    Notebook {
        /// Path relative to the notebooks folder, with `/` separators.
        relative: String,
        /// Absolute path.
        path: PathBuf,
    },
    /// A shell command; its exit code decides.
    Command {
        /// The line given to `sh -c`.
        run: String,
    },
    /// `gpu::visible`: the container sees exactly the GPUs it was given, and the host's driver.
    GpuVisible,
    /// `gpu::framework`: the runtime's framework imports, sees its GPUs, has kernels for them
    /// and computes on them.
    GpuFramework {
        /// `torch`, `tensorflow` or `jax`.
        framework: String,
    },
}

/// An `[[exclude]]` rule: matching trials are never run.
#[derive(Debug, Clone, Serialize)]
pub struct Exclusion {
    /// Wildcard over runtime names.
    pub runtime: String,
    /// Wildcard over machine names.
    pub machine: String,
    /// Wildcard over check names.
    pub check: String,
    /// Why; shown by `plan` and in reports.
    pub reason: String,
}

/// An `[[expected-failures]]` rule: matching trials pass only while they fail the declared way.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ExpectedFailure {
    /// Wildcard over runtime names.
    pub runtime: String,
    /// Wildcard over machine names.
    pub machine: String,
    /// Wildcard over check names.
    pub check: String,
    /// Why the combination is known to fail.
    pub reason: String,
    /// Text the failure must contain to count as the expected one.
    pub matches: Option<String>,
}

/// Serialises durations as humantime strings (`"1m 30s"`) in plans and records (so their
/// schema says `String`).
pub(crate) mod humantime_serde {
    use serde::Serializer;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(*duration))
    }
}

/// Whether a rule's wildcards cover one trial.
fn rule_covers(patterns: [&str; 3], runtime: &str, machine: &str, check: &str) -> bool {
    super::wildcard_match(patterns[0], runtime)
        && super::wildcard_match(patterns[1], machine)
        && super::wildcard_match(patterns[2], check)
}

impl Exclusion {
    /// Whether this rule covers the trial of `check` of `runtime` on `machine` (by name).
    pub fn covers(&self, runtime: &str, machine: &str, check: &str) -> bool {
        rule_covers(
            [&self.runtime, &self.machine, &self.check],
            runtime,
            machine,
            check,
        )
    }
}

impl ExpectedFailure {
    /// Whether this rule covers the consistency check `name` (`consistency::nb::<path>`): only
    /// rules whose check pattern starts with `consistency::` do, so that `check = "*"` never
    /// declares a notebook's outputs as expected to differ.
    pub fn covers_consistency(&self, name: &str) -> bool {
        self.check.starts_with(CONSISTENCY_PREFIX) && super::wildcard_match(&self.check, name)
    }

    /// Whether this rule covers the trial of `check` of `runtime` on `machine` (by name).
    pub fn covers(&self, runtime: &str, machine: &str, check: &str) -> bool {
        rule_covers(
            [&self.runtime, &self.machine, &self.check],
            runtime,
            machine,
            check,
        )
    }
}

impl Matrix {
    /// The machine called `name`.
    pub fn machine(&self, name: &str) -> Option<&Machine> {
        self.machines.iter().find(|machine| machine.name == name)
    }

    /// The runtime called `name`.
    pub fn runtime(&self, name: &str) -> Option<&Runtime> {
        self.runtimes.iter().find(|runtime| runtime.name == name)
    }

    /// The service called `name`.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|service| service.name == name)
    }
}
