//! CI fan-out: the jobs a matrix needs on a CI system, one per machine (times its `shards`),
//! on the runners its `runs-on` or `ci-tags` name, and the files that run them. The main type
//! is [`Job`]; [`github`] and [`gitlab`] write the job matrix and the workflow files.
//!
//! runtime-matrix schedules nothing itself: the CI system runs the jobs, each with
//! `RUNTIME_MATRIX_MACHINES` and `RUNTIME_MATRIX_SHARD` set, and a merge job puts their run
//! folders together with `runtime-matrix report`.

pub(crate) mod github;
pub(crate) mod gitlab;

use crate::config::Matrix;
use crate::plan::{Plan, shard_of};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The runner labels of a machine that declares none.
pub(crate) const DEFAULT_RUNS_ON: &str = "ubuntu-latest";

/// The prefix of every run folder's artifact name; the merge job downloads them by it.
pub(crate) const ARTIFACT_PREFIX: &str = "runtime-matrix-run-";

/// One CI job: one shard of one machine's trials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Job {
    /// The machine (RUNTIME_MATRIX_MACHINES).
    pub machine: String,
    /// GitHub Actions runner labels.
    pub runs_on: Vec<String>,
    /// The shard, `K/N` (RUNTIME_MATRIX_SHARD).
    pub shard: String,
    /// K, for cache keys (which must not hold `/`).
    pub shard_index: u32,
    /// The run id (RUNTIME_MATRIX_RUN_ID), unique among the jobs: the run folder's name.
    pub run_id: String,
    /// The name of the artifact that carries the run folder.
    pub artifact: String,
    /// How many trials it runs, as planned when the matrix was made.
    pub trials: usize,
    /// GitLab runner tags (not part of the GitHub matrix).
    #[serde(skip)]
    pub ci_tags: Vec<String>,
}

/// A machine that gets no job, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Skipped {
    pub machine: String,
    pub reason: String,
}

/// The jobs `plan` (planned over every machine) needs: one per machine and shard that has
/// trials. A machine whose trials are all excluded (or not in the stage, or not of the
/// selected tags) gets no job, and neither does a shard that no trial hashes to: an empty job
/// would only start a runner to run nothing.
pub(crate) fn jobs(matrix: &Matrix, plan: &Plan) -> (Vec<Job>, Vec<Skipped>) {
    let mut per_shard: BTreeMap<&str, BTreeMap<u32, usize>> = BTreeMap::new();
    for trial in &plan.trials {
        let machine = &trial.machine;
        let shard = shard_of(&trial.name, u64::from(machine.shards)) as u32;
        *per_shard
            .entry(machine.name.as_str())
            .or_default()
            .entry(shard)
            .or_default() += 1;
    }
    let mut jobs = Vec::new();
    let mut skipped = Vec::new();
    let mut run_ids = BTreeSet::new();
    for machine in &matrix.machines {
        let Some(shards) = per_shard.get(machine.name.as_str()) else {
            // The first reason, as `plan` gives it: usually every trial has the same.
            let reason = match plan.excluded.iter().find(|e| e.machine == machine.name) {
                Some(excluded) => format!(
                    "none of its trials runs in stage `{}` (e.g. `{}`: {})",
                    plan.stage, excluded.name, excluded.reason
                ),
                None => "no runtime targets it".to_owned(),
            };
            skipped.push(Skipped {
                machine: machine.name.clone(),
                reason,
            });
            continue;
        };
        let runs_on = match machine.runs_on.is_empty() {
            true => vec![DEFAULT_RUNS_ON.to_owned()],
            false => machine.runs_on.clone(),
        };
        for (&k, &trials) in shards {
            let n = machine.shards;
            let base = format!("{}-{k}of{n}", slug(&machine.name));
            // Machine names that differ only in characters a run id cannot hold stay apart.
            let mut run_id = base.clone();
            let mut suffix = 2;
            while !run_ids.insert(run_id.clone()) {
                run_id = format!("{base}-{suffix}");
                suffix += 1;
            }
            jobs.push(Job {
                machine: machine.name.clone(),
                runs_on: runs_on.clone(),
                shard: format!("{k}/{n}"),
                shard_index: k,
                artifact: format!("{ARTIFACT_PREFIX}{run_id}"),
                run_id,
                trials,
                ci_tags: machine.ci_tags.clone(),
            });
        }
    }
    (jobs, skipped)
}

/// `name` with every character a run id or an artifact name cannot hold made `-`.
fn slug(name: &str) -> String {
    let slug: String = name
        .chars()
        .map(
            |c| match c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                true => c,
                false => '-',
            },
        )
        .collect();
    // A run id is at most 128 bytes; the shard and a suffix need some.
    slug.chars().take(96).collect()
}

/// How the CI jobs get the `runtime-matrix` command (the plan and merge jobs need it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CliSource {
    /// `cargo install --path DIR`: this repository (`.`), or a checkout beside the project.
    Path(String),
    /// `cargo install --git URL [--rev REV] runtime-matrix`.
    Git { url: String, rev: Option<GitRef> },
    /// `cargo install runtime-matrix --version X` from crates.io.
    Version(String),
}

/// Which commit of a git source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GitRef {
    Rev(String),
    Tag(String),
    Branch(String),
}

impl CliSource {
    /// `path:DIR`, `git:URL`, `git:URL#REV` or `version:X`.
    pub(crate) fn parse(text: &str) -> Result<CliSource, String> {
        let text = text.trim();
        let nonempty = |value: &str, what: &str| match value.trim().is_empty() {
            true => Err(format!("`{text}` names no {what}")),
            false => Ok(value.trim().to_owned()),
        };
        if let Some(dir) = text.strip_prefix("path:") {
            return Ok(CliSource::Path(nonempty(dir, "folder")?));
        }
        if let Some(git) = text.strip_prefix("git:") {
            let (url, rev) = match git.rsplit_once('#') {
                Some((url, rev)) => (url, Some(GitRef::Rev(nonempty(rev, "revision")?))),
                None => (git, None),
            };
            return Ok(CliSource::Git {
                url: nonempty(url, "repository URL")?,
                rev,
            });
        }
        if let Some(version) = text.strip_prefix("version:") {
            return Ok(CliSource::Version(nonempty(version, "version")?));
        }
        Err(format!(
            "`{text}` is not a source of the runtime-matrix command (use path:DIR, git:URL, \
             git:URL#REV or version:X)"
        ))
    }

    /// How the project beside `config` gets runtime-matrix: this repository itself, or the
    /// `runtime-matrix` dependency its Cargo.toml declares (path, git or crates.io).
    pub(crate) fn detect(config: &Path) -> Result<CliSource, String> {
        let dir = config
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let manifest = dir.join("Cargo.toml");
        let hint = "say how with --cli path:DIR, git:URL[#REV] or version:X";
        let text = crate::fsx::read_bounded(&manifest, crate::fsx::CONFIG)
            .map_err(|error| format!("cannot read {} ({error}); {hint}", manifest.display()))?;
        let toml: toml::Table = String::from_utf8_lossy(&text)
            .parse()
            .map_err(|error| format!("cannot parse {} ({error}); {hint}", manifest.display()))?;
        if toml
            .get("package")
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
            == Some("runtime-matrix")
        {
            return Ok(CliSource::Path(".".into()));
        }
        let dependency = ["dev-dependencies", "dependencies"]
            .iter()
            .find_map(|table| toml.get(*table)?.get("runtime-matrix"))
            .ok_or_else(|| {
                format!(
                    "{} does not depend on runtime-matrix; {hint}",
                    manifest.display()
                )
            })?;
        let field = |name: &str| dependency.get(name).and_then(|v| v.as_str());
        if let Some(version) = dependency.as_str() {
            return Ok(CliSource::Version(version.to_owned()));
        }
        if let Some(path) = field("path") {
            // Relative to the manifest, which is where the workflow's commands run.
            return Ok(CliSource::Path(path.to_owned()));
        }
        if let Some(url) = field("git") {
            let rev = field("rev")
                .map(|r| GitRef::Rev(r.to_owned()))
                .or_else(|| field("tag").map(|t| GitRef::Tag(t.to_owned())))
                .or_else(|| field("branch").map(|b| GitRef::Branch(b.to_owned())));
            return Ok(CliSource::Git {
                url: url.to_owned(),
                rev,
            });
        }
        if let Some(version) = field("version") {
            return Ok(CliSource::Version(version.to_owned()));
        }
        Err(format!(
            "{}: cannot tell where its runtime-matrix dependency comes from; {hint}",
            manifest.display()
        ))
    }

    /// The arguments of `cargo install` after its options.
    pub(crate) fn install_args(&self) -> Vec<String> {
        match self {
            CliSource::Path(dir) => vec!["--path".into(), dir.clone()],
            CliSource::Git { url, rev } => {
                let mut args = vec!["--git".into(), url.clone()];
                match rev {
                    Some(GitRef::Rev(r)) => args.extend(["--rev".into(), r.clone()]),
                    Some(GitRef::Tag(t)) => args.extend(["--tag".into(), t.clone()]),
                    Some(GitRef::Branch(b)) => args.extend(["--branch".into(), b.clone()]),
                    None => {}
                }
                args.push("runtime-matrix".into());
                args
            }
            CliSource::Version(version) => {
                vec!["runtime-matrix".into(), "--version".into(), version.clone()]
            }
        }
    }
}

/// `arg` quoted for a POSIX shell, only when it needs it.
pub(crate) fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@+,%".contains(&b));
    match plain {
        true => arg.to_owned(),
        false => format!("'{}'", arg.replace('\'', r"'\''")),
    }
}

/// `text` as a YAML scalar: a JSON string is a valid YAML double-quoted scalar.
pub(crate) fn yaml_string(text: &str) -> String {
    serde_json::to_string(text).expect("strings always serialise")
}

/// The top-level environment lines that make every job select `stage` and `tags`, as the
/// command was given them: the plan job's matrix and each job's trials then agree.
fn selection_env(stage: Option<&str>, tags: Option<&str>) -> String {
    [
        ("RUNTIME_MATRIX_STAGE", stage),
        ("RUNTIME_MATRIX_TAGS", tags),
    ]
    .into_iter()
    .filter_map(|(name, value)| Some(format!("  {name}: {}\n", yaml_string(value?))))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("path:.", CliSource::Path(".".into()))]
    #[case("path: ../runtime-matrix ", CliSource::Path("../runtime-matrix".into()))]
    #[case("git:https://example.com/rm.git", CliSource::Git { url: "https://example.com/rm.git".into(), rev: None })]
    #[case("git:https://example.com/rm.git#1a2b3c", CliSource::Git { url: "https://example.com/rm.git".into(), rev: Some(GitRef::Rev("1a2b3c".into())) })]
    #[case("version:0.1", CliSource::Version("0.1".into()))]
    fn parses_cli_sources(#[case] text: &str, #[case] source: CliSource) {
        assert_eq!(CliSource::parse(text), Ok(source));
    }

    #[rstest]
    #[case("path:")]
    #[case("git:#abc")]
    #[case("cargo install runtime-matrix")]
    fn refuses_what_is_no_cli_source(#[case] text: &str) {
        assert!(CliSource::parse(text).is_err(), "{text}");
    }

    #[test]
    fn quotes_for_the_shell_only_when_needed() {
        assert_eq!(shell_quote("matrix.toml"), "matrix.toml");
        assert_eq!(shell_quote("my matrix.toml"), "'my matrix.toml'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn run_ids_hold_only_what_a_run_id_may() {
        assert_eq!(slug("h100 x8/big"), "h100-x8-big");
        assert!(crate::settings::is_plain_run_id(&format!(
            "{}-1of2",
            slug("é$")
        )));
    }
}
