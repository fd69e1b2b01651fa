//! The first pass: `matrix.toml` as plain serde types, before any reference is checked.

use super::keys::UnknownKey;
use schemars::JsonSchema;
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

/// `matrix.toml`: which runtimes must work on which machines, and what proves it.
// Its JSON Schema (`runtime-matrix schema matrix`) is derived from these types, doc comments
// included (editors show them); it forbids unknown keys, which the loader only warns about, so
// that an editor flags typos.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[schemars(deny_unknown_fields, title = "runtime-matrix matrix.toml")]
pub(super) struct RawMatrix {
    /// Folder of notebooks, relative to matrix.toml; notebook globs and check names are
    /// relative to it.
    pub notebooks_dir: Option<String>,
    /// Declared stages, and the one run when RUNTIME_MATRIX_STAGE is unset.
    pub stages: Option<RawStages>,
    /// Machines the platform offers, by name.
    #[serde(default)]
    pub machines: BTreeMap<String, RawMachine>,
    /// Runtimes (environments notebooks and commands must work in), by name.
    #[serde(default)]
    pub runtimes: BTreeMap<String, RawRuntime>,
    /// Per-notebook settings, by glob under notebooks-dir.
    #[serde(default)]
    pub overrides: Vec<RawOverride>,
    /// Trials never run: wildcards over runtime, machine and check, with the reason.
    #[serde(default)]
    pub exclude: Vec<RawRule>,
    /// Trials known to fail: they pass only while they fail the declared way. A rule whose
    /// `check` is a consistency check (`consistency::nb::<path>`) declares an expected
    /// difference.
    #[serde(default)]
    pub expected_failures: Vec<RawRule>,
    /// Notebooks whose tagged cells must print the same in every runtime and machine.
    pub consistency: Option<RawConsistency>,
    /// Services (a database, a tracking server) started beside the trials of the runtimes
    /// that use them, by name.
    #[serde(default)]
    pub services: BTreeMap<String, RawService>,
}

/// `[consistency]`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[schemars(deny_unknown_fields)]
pub(super) struct RawConsistency {
    /// Globs under notebooks-dir of the notebooks compared, e.g. `["numpy/*.ipynb"]`; each
    /// becomes a `consistency::nb::<path>` check (default: none).
    #[serde(default)]
    pub notebooks: Vec<String>,
    /// The tag of the cells whose outputs are compared (default `consistent`).
    pub tag: Option<String>,
    /// Relative tolerance for numbers in compared texts, with the same absolute floor near 0,
    /// e.g. `1e-9` (default 0: exact).
    pub float_tolerance: Option<f64>,
    /// Regex replacements applied to every compared text, in order (nbval-style).
    #[serde(default)]
    pub sanitizers: Vec<RawSanitizer>,
}

/// `[[consistency.sanitizers]]`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[schemars(deny_unknown_fields)]
pub(super) struct RawSanitizer {
    /// A regular expression (Rust `regex` syntax), e.g. `'\d{4}-\d{2}-\d{2}T[0-9:.]+'`.
    pub regex: String,
    /// What each match becomes, e.g. `"<TIMESTAMP>"`; `$1` names a group (default: empty).
    pub replace: Option<String>,
}

/// `[stages]`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[schemars(deny_unknown_fields)]
pub(super) struct RawStages {
    /// Declared stages, in order, e.g. `["pre-merge", "nightly"]`.
    pub names: Vec<String>,
    /// The stage run when RUNTIME_MATRIX_STAGE is unset.
    pub default: Option<String>,
}

/// `[machines.NAME]`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[schemars(deny_unknown_fields)]
pub(super) struct RawMachine {
    /// Number of GPUs; 0 for a CPU-only machine.
    pub gpus: u32,
    /// Wildcard over the GPU model name, e.g. `*H100*`.
    pub gpu: Option<String>,
    /// The Docker engine for this machine (`unix://...`, `tcp://host:2376` with `tls`,
    /// `ssh://user@host`); default DOCKER_HOST, else the local socket. Plain TCP to another
    /// host is refused unless `insecure = true`.
    pub docker: Option<String>,
    /// Accept plain, unauthenticated TCP to another host's engine (anyone who can reach the
    /// port is root there); warned about on every run.
    pub insecure: Option<bool>,
    /// TLS to a `tcp://` or `https://` engine: the CA that signed the engine's certificate,
    /// our client certificate and its key (paths relative to matrix.toml's folder).
    pub tls: Option<RawTls>,
    /// Free text for reports.
    pub description: Option<String>,
    /// Tags every trial on this machine carries.
    #[serde(default)]
    pub tags: Vec<String>,
    /// GitHub Actions runner labels of this machine's CI jobs (`runs-on`), one label or a
    /// list, e.g. `["self-hosted", "h100"]` (default `ubuntu-latest`).
    pub runs_on: Option<RawLabels>,
    /// GitLab runner tags of this machine's CI jobs, e.g. `["gpu", "h100"]`.
    pub ci_tags: Option<Vec<String>>,
    /// How many CI jobs split this machine's trials (default 1).
    pub shards: Option<i64>,
    /// Notebook parameters, over the runtime's (papermill-style).
    #[serde(default)]
    #[schemars(with = "SchemaParameters")]
    pub parameters: RawParameters,
}

/// `tls = { ca = "...", cert = "...", key = "..." }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[schemars(deny_unknown_fields)]
pub(super) struct RawTls {
    /// The CA certificate (PEM) that signed the engine's certificate.
    pub ca: String,
    /// Our client certificate (PEM), signed by a CA the engine trusts.
    pub cert: String,
    /// The client certificate's private key (PEM).
    pub key: String,
}

/// One label, or a list of labels.
#[derive(Debug, Clone, JsonSchema)]
#[schemars(untagged)]
pub(super) enum RawLabels {
    One(String),
    Many(Vec<String>),
}

impl RawLabels {
    /// The labels, in order.
    pub(super) fn to_vec(&self) -> Vec<String> {
        match self {
            RawLabels::One(label) => vec![label.clone()],
            RawLabels::Many(labels) => labels.clone(),
        }
    }
}

impl<'de> Deserialize<'de> for RawLabels {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LabelsVisitor;
        impl<'de> Visitor<'de> for LabelsVisitor {
            type Value = RawLabels;
            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a runner label, or a list of runner labels")
            }
            fn visit_str<E: de::Error>(self, label: &str) -> Result<RawLabels, E> {
                Ok(RawLabels::One(label.to_owned()))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<RawLabels, A::Error> {
                Vec::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(RawLabels::Many)
            }
        }
        deserializer.deserialize_any(LabelsVisitor)
    }
}

/// `parameters = { epochs = 1, device = "cuda" }`: values as TOML gives them, checked later.
pub(super) type RawParameters = BTreeMap<String, toml::Value>;

/// [`RawParameters`] as the schema shows them: any value by name (the loader checks names and
/// values).
type SchemaParameters = BTreeMap<String, serde_json::Value>;

/// `[runtimes.NAME]`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[schemars(deny_unknown_fields)]
pub(super) struct RawRuntime {
    /// Where its checks run: `host`, or `docker` (the default when `image` is set).
    #[schemars(extend("enum" = ["host", "docker"]))]
    pub executor: Option<String>,
    /// The interpreter: on the host, a name on PATH or a path; in a container, inside the image.
    pub python: Option<String>,
    /// pip requirements to provision a host runtime's virtualenv with.
    #[serde(default)]
    pub packages: Vec<String>,
    /// A container runtime's image reference.
    pub image: Option<String>,
    /// When to pull the image (default `if-missing`).
    #[schemars(extend("enum" = ["if-missing", "always", "never"]))]
    pub pull: Option<String>,
    /// How to build the image instead of pulling it: a Dockerfile context folder, or a table
    /// with `context` (and `dockerfile`) or `script`.
    pub build: Option<RawBuild>,
    /// Container memory limit, e.g. `512m` or `4g`.
    pub memory: Option<String>,
    /// Container process limit.
    pub pids: Option<i64>,
    /// Docker network mode: `none` (the default), `bridge`, `host`, or a network's name.
    pub network: Option<String>,
    /// From before runners: has no effect, and warns.
    #[serde(default)]
    pub reuse_container: bool,
    /// `notebook` (the default): trials share a runner container, each with a fresh kernel and
    /// folders; `container`: a container per trial.
    #[schemars(extend("enum" = ["notebook", "container"]))]
    pub isolation: Option<String>,
    /// The framework whose GPU use the `gpu::framework` check proves.
    #[schemars(extend("enum" = ["torch", "tensorflow", "jax"]))]
    pub framework: Option<String>,
    /// Whether docker runtimes get the `gpu::visible` check (default true).
    pub gpu_checks: Option<bool>,
    /// Names of host environment variables passed to each check and redacted everywhere.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Free text for reports.
    pub description: Option<String>,
    /// Globs of notebooks under notebooks-dir; each notebook is a check.
    #[serde(default)]
    pub notebooks: Vec<String>,
    /// Globs under `notebooks-dir` of files staged with every notebook.
    #[serde(default)]
    pub data: Vec<String>,
    /// Commands by name; each is a check (`cmd::NAME`): a shell line, or a table with `run`.
    #[serde(default)]
    pub commands: BTreeMap<String, RawCommand>,
    /// Environment variables set for every check.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Names of the machines it targets (default: all).
    pub machines: Option<Vec<String>>,
    /// Whole-check deadline, e.g. `10m`.
    pub timeout: Option<String>,
    /// Per-cell deadline of its notebooks, e.g. `2m`.
    pub cell_timeout: Option<String>,
    /// Tags every check of this runtime carries.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The stages its checks run in (default: all).
    pub stages: Option<Vec<String>>,
    /// Notebook parameters (papermill-style).
    #[serde(default)]
    #[schemars(with = "SchemaParameters")]
    pub parameters: RawParameters,
}

/// `[services.NAME]`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[schemars(deny_unknown_fields)]
pub(super) struct RawService {
    /// The service's image reference, built or pulled as runtime images are.
    pub image: Option<String>,
    /// When to pull the image (default `if-missing`).
    #[schemars(extend("enum" = ["if-missing", "always", "never"]))]
    pub pull: Option<String>,
    /// How to build the image instead of pulling it: a Dockerfile context folder, or a table
    /// with `context` (and `dockerfile`) or `script`.
    pub build: Option<RawBuild>,
    /// Environment variables of the service's container.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Names of host environment variables passed to the service's container and redacted
    /// everywhere.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// The container's command, instead of the image's CMD (its ENTRYPOINT stays).
    pub command: Option<Vec<String>>,
    /// The container ports it serves, e.g. `[6379]`; the first is `_PORT`.
    #[serde(default)]
    pub ports: Vec<i64>,
    /// When it is ready: `{ port = N }` (accepts connections; the default, on the first
    /// port), `{ log = "..." }` (a line of its logs contains the text) or
    /// `{ command = "..." }` (a shell line run in its container exits 0).
    pub ready: Option<RawReady>,
    /// How long it may take to become ready (default `60s`).
    pub ready_timeout: Option<String>,
    /// A connection URL given to trials as `_URL`: `{host}`, `{port}`, `{port:N}` and
    /// `{env:NAME}` (one of its env or secrets) are replaced, e.g. `redis://{host}:{port}`.
    pub url: Option<String>,
    /// Names of the runtimes whose trials use it (default: none).
    #[serde(default)]
    pub runtimes: Vec<String>,
    /// Free text for reports.
    pub description: Option<String>,
}

/// `ready = { ... }`: exactly one of its keys.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[schemars(deny_unknown_fields)]
pub(super) struct RawReady {
    /// A container port (one of `ports`) that must accept connections.
    pub port: Option<i64>,
    /// Text a line of the container's logs must contain.
    pub log: Option<String>,
    /// A shell line run in the container that must exit 0.
    pub command: Option<String>,
}

/// How a runtime's image is built: a Dockerfile context folder, or a table.
#[derive(Debug, JsonSchema)]
#[schemars(untagged)]
pub(super) enum RawBuild {
    Context(String),
    Table(RawBuildTable),
}

impl StringOrTable for RawBuild {
    type Table = RawBuildTable;
    const EXPECTING: &'static str =
        "a build context folder, or a table with `context` (and optional `dockerfile`) or `script`";
    fn from_string(context: String) -> Self {
        RawBuild::Context(context)
    }
    fn from_table(table: RawBuildTable) -> Self {
        RawBuild::Table(table)
    }
}

/// `build = { ... }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[schemars(deny_unknown_fields)]
pub(super) struct RawBuildTable {
    /// A Dockerfile context folder, relative to matrix.toml.
    pub context: Option<String>,
    /// The Dockerfile, relative to the context (default `Dockerfile`).
    pub dockerfile: Option<String>,
    /// A script that leaves the image in the engine; it gets RUNTIME_MATRIX_IMAGE.
    pub script: Option<String>,
}

/// A command is either its shell line, or a table with the line and per-command settings.
#[derive(Debug, JsonSchema)]
#[schemars(untagged)]
pub(super) enum RawCommand {
    Line(String),
    Table(RawCommandTable),
}

impl StringOrTable for RawCommand {
    type Table = RawCommandTable;
    const EXPECTING: &'static str =
        "a shell line, or a table with `run` and optional `timeout`, `tags` and `stages`";
    fn from_string(line: String) -> Self {
        RawCommand::Line(line)
    }
    fn from_table(table: RawCommandTable) -> Self {
        RawCommand::Table(table)
    }
}

/// `commands.NAME = { ... }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[schemars(deny_unknown_fields)]
pub(super) struct RawCommandTable {
    /// The line given to `sh -c`.
    pub run: String,
    /// Its deadline, e.g. `1m`.
    pub timeout: Option<String>,
    /// Tags of this check, besides the runtime's.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The stages it runs in.
    pub stages: Option<Vec<String>>,
}

/// `[[overrides]]`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[schemars(deny_unknown_fields)]
pub(super) struct RawOverride {
    /// Glob of the notebooks under notebooks-dir it applies to.
    pub notebooks: String,
    /// Whole-check deadline.
    pub timeout: Option<String>,
    /// Globs under `notebooks-dir` staged with the notebooks it matches, besides the runtime's.
    #[serde(default)]
    pub data: Vec<String>,
    /// Per-cell deadline.
    pub cell_timeout: Option<String>,
    /// Tags added to the notebooks it matches.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The stages the notebooks it matches run in.
    pub stages: Option<Vec<String>>,
    /// Notebook parameters, over the runtime's and the machine's.
    #[serde(default)]
    #[schemars(with = "SchemaParameters")]
    pub parameters: RawParameters,
}

/// An `[[exclude]]` or `[[expected-failures]]` entry: which trials it covers, and why.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[schemars(deny_unknown_fields)]
pub(super) struct RawRule {
    /// Wildcard over runtime names (default `*`).
    pub runtime: Option<String>,
    /// Wildcard over machine names (default `*`).
    pub machine: Option<String>,
    /// Wildcard over check names, e.g. `nb::numpy/*` (default `*`).
    pub check: Option<String>,
    /// Why; shown by `plan` and in reports.
    // Optional for serde, so that the validator's error names the entry; required for editors.
    #[schemars(required)]
    pub reason: Option<String>,
    /// For expected failures: text the failure message must contain.
    pub matches: Option<String>,
}

/// A value written either as a string or as a table (`build`, `commands.X`).
///
/// Deserialized through a visitor, as cargo-nextest does, rather than by trying each variant
/// on a buffered copy: a wrong shape then names both accepted forms, and the table is read
/// from the same deserializer, so serde_ignored still sees (and warns about) its unknown keys.
pub(super) trait StringOrTable: Sized {
    /// The table form.
    type Table: DeserializeOwned;
    /// What the value may be, for "invalid type: ..., expected ..." messages.
    const EXPECTING: &'static str;
    /// The value written as a string.
    fn from_string(text: String) -> Self;
    /// The value written as a table.
    fn from_table(table: Self::Table) -> Self;
}

struct StringOrTableVisitor<T>(PhantomData<T>);

impl<'de, T: StringOrTable> Visitor<'de> for StringOrTableVisitor<T> {
    type Value = T;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str(T::EXPECTING)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
        Ok(T::from_string(text.to_owned()))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::Table::deserialize(MapAccessDeserializer::new(map)).map(T::from_table)
    }
}

impl<'de> Deserialize<'de> for RawBuild {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StringOrTableVisitor(PhantomData))
    }
}

impl<'de> Deserialize<'de> for RawCommand {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StringOrTableVisitor(PhantomData))
    }
}

/// Parses `text`, returning the matrix and the keys that were not recognised.
pub(super) fn parse(text: &str) -> Result<(RawMatrix, Vec<UnknownKey>), toml::de::Error> {
    let deserializer = toml::Deserializer::parse(text)?;
    let mut unknown = Vec::new();
    let raw = serde_ignored::deserialize(deserializer, |path| {
        unknown.push(UnknownKey::from_path(&path))
    })?;
    Ok((raw, unknown))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_commands_take_a_string_or_a_table() {
        let text = r#"
            [runtimes.a]
            build = "images/a"
            commands = { line = "true", table = { run = "false", timeout = "5s" } }
            [runtimes.b]
            build = { context = "images/b", dockerfile = "Other" }
            [runtimes.c]
            build = { script = "build.sh" }
            [runtimes.c.commands.header]
            run = "true"
            tags = ["x"]
        "#;
        let (raw, unknown) = parse(text).unwrap();
        assert_eq!(unknown, []);
        let runtime = |name: &str| &raw.runtimes[name];
        assert!(matches!(&runtime("a").build, Some(RawBuild::Context(c)) if c == "images/a"));
        assert!(matches!(
            &runtime("b").build,
            Some(RawBuild::Table(RawBuildTable { context: Some(c), dockerfile: Some(d), script: None }))
                if c == "images/b" && d == "Other"
        ));
        assert!(matches!(
            &runtime("c").build,
            Some(RawBuild::Table(RawBuildTable { script: Some(s), .. })) if s == "build.sh"
        ));
        let commands = &runtime("a").commands;
        assert!(matches!(&commands["line"], RawCommand::Line(l) if l == "true"));
        assert!(matches!(
            &commands["table"],
            RawCommand::Table(RawCommandTable { run, timeout: Some(t), .. }) if run == "false" && t == "5s"
        ));
        assert!(matches!(
            &runtime("c").commands["header"],
            RawCommand::Table(RawCommandTable { run, tags, .. }) if run == "true" && tags == &["x"]
        ));
    }
}
