//! The first pass: `matrix.toml` as plain serde types, before any reference is checked.

use super::keys::UnknownKey;
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

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
    pub isolation: Option<String>,
    pub framework: Option<String>,
    pub gpu_checks: Option<bool>,
    #[serde(default)]
    pub secrets: Vec<String>,
    pub description: Option<String>,
    #[serde(default)]
    pub notebooks: Vec<String>,
    /// Globs under `notebooks-dir` of files staged with every notebook.
    #[serde(default)]
    pub data: Vec<String>,
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

/// How a runtime's image is built: a Dockerfile context folder, or a table.
#[derive(Debug)]
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

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct RawBuildTable {
    pub context: Option<String>,
    pub dockerfile: Option<String>,
    pub script: Option<String>,
}

/// A command is either its shell line, or a table with the line and per-command settings.
#[derive(Debug)]
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
    /// Globs under `notebooks-dir` staged with the notebooks it matches, besides the runtime's.
    #[serde(default)]
    pub data: Vec<String>,
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
