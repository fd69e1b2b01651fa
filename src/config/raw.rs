//! The first pass: `matrix.toml` as plain serde types, before any reference is checked.

use super::keys::UnknownKey;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct RawMatrix {
    pub notebooks_dir: Option<String>,
    pub stages: Option<RawStages>,
    #[serde(default)]
    pub machines: BTreeMap<String, RawMachine>,
    #[serde(default)]
    pub runtimes: BTreeMap<String, RawRuntime>,
    #[serde(default)]
    pub overrides: Vec<RawOverride>,
    #[serde(default)]
    pub exclude: Vec<RawRule>,
    #[serde(default)]
    pub expected_failures: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct RawStages {
    pub names: Vec<String>,
    pub default: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct RawMachine {
    pub gpus: u32,
    pub gpu: Option<String>,
    pub docker: Option<String>,
    pub description: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct RawRuntime {
    pub executor: Option<String>,
    pub python: Option<String>,
    #[serde(default)]
    pub packages: Vec<String>,
    pub image: Option<String>,
    pub pull: Option<String>,
    pub build: Option<RawBuild>,
    pub memory: Option<String>,
    pub pids: Option<i64>,
    pub network: Option<String>,
    #[serde(default)]
    pub reuse_container: bool,
    pub framework: Option<String>,
    pub gpu_checks: Option<bool>,
    #[serde(default)]
    pub secrets: Vec<String>,
    pub description: Option<String>,
    #[serde(default)]
    pub notebooks: Vec<String>,
    #[serde(default)]
    pub commands: BTreeMap<String, RawCommand>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub machines: Option<Vec<String>>,
    pub timeout: Option<String>,
    pub cell_timeout: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub stages: Option<Vec<String>>,
}

/// How a runtime's image is built: a Dockerfile context folder, or a script.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawBuild {
    Context(String),
    Table(RawBuildTable),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct RawBuildTable {
    pub context: Option<String>,
    pub dockerfile: Option<String>,
    pub script: Option<String>,
}

/// A command is either its shell line, or a table with the line and per-command settings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawCommand {
    Line(String),
    Table(RawCommandTable),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct RawCommandTable {
    pub run: String,
    pub timeout: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub stages: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct RawOverride {
    pub notebooks: String,
    pub timeout: Option<String>,
    pub cell_timeout: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub stages: Option<Vec<String>>,
}

/// An `[[exclude]]` or `[[expected-failures]]` entry: which trials it covers, and why.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct RawRule {
    pub runtime: Option<String>,
    pub machine: Option<String>,
    pub check: Option<String>,
    pub reason: Option<String>,
    /// For expected failures: text the failure message must contain.
    pub matches: Option<String>,
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
