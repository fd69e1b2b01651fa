//! A runtime's checks: its notebooks (with `[[overrides]]` applied), its commands, and the GPU
//! checks. The main type is [`Override`].

use super::compiler::{Compiler, DEFAULT_CELL_TIMEOUT, DEFAULT_TIMEOUT, key_part, shown};
use crate::config::matrix::{Check, CheckKind, Parameters};
use crate::config::raw::{RawCommand, RawMatrix, RawOverride, RawRuntime};
use crate::config::suggest::did_you_mean;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

const FRAMEWORKS: [&str; 3] = ["torch", "tensorflow", "jax"];
/// Time for the GPU checks, which start Python once (and import a framework).
const GPU_CHECK_TIMEOUT: Duration = Duration::from_secs(300);

/// An `[[overrides]]` entry, compiled once: the notebooks it matches, what it sets on them,
/// and whether it matched any.
pub(super) struct Override {
    /// The glob as written, for the warning when it matches nothing.
    notebooks: String,
    /// `None` when the glob is invalid (already reported).
    pattern: Option<glob::Pattern>,
    timeout: Option<Duration>,
    cell_timeout: Option<Duration>,
    tags: Vec<String>,
    stages: Option<Vec<String>>,
    /// Data globs, already checked.
    data: Vec<String>,
    parameters: Parameters,
    used: bool,
}

impl Override {
    /// Applies this override to the check of the notebook at `relative`, if it matches.
    fn apply(&mut self, relative: &str, check: &mut Check) {
        if !self.pattern.as_ref().is_some_and(|p| p.matches(relative)) {
            return;
        }
        self.used = true;
        check.timeout = self.timeout.unwrap_or(check.timeout);
        check.cell_timeout = self.cell_timeout.unwrap_or(check.cell_timeout);
        check.tags.extend(self.tags.iter().cloned());
        if let Some(stages) = &self.stages {
            check.stages = stages.clone();
        }
        for glob in &self.data {
            if !check.data.contains(glob) {
                check.data.push(glob.clone());
            }
        }
        check.parameters.extend(self.parameters.clone());
    }
}

/// What a runtime's checks inherit from it.
pub(super) struct CheckDefaults {
    pub(super) timeout: Duration,
    pub(super) cell_timeout: Duration,
    pub(super) tags: Vec<String>,
    pub(super) stages: Vec<String>,
    /// Data globs, already checked; notebooks only.
    pub(super) data: Vec<String>,
}

/// The folder notebook globs are resolved in.
pub(super) struct NotebooksDir {
    /// Absolute.
    pub(super) path: PathBuf,
    /// As written in `notebooks-dir`, for messages.
    relative: String,
    /// With every symlink resolved, if it exists: notebooks must resolve to files inside it.
    canonical: Option<PathBuf>,
}

impl NotebooksDir {
    /// `notebooks-dir` (default `notebooks`) under `root`; it must exist if a runtime has
    /// notebooks.
    pub(super) fn new(c: &mut Compiler, root: &Path, raw: &RawMatrix) -> NotebooksDir {
        let relative = raw
            .notebooks_dir
            .clone()
            .unwrap_or_else(|| "notebooks".into());
        let path = root.join(&relative);
        let any_notebooks = raw.runtimes.values().any(|r| !r.notebooks.is_empty());
        if any_notebooks && !path.is_dir() {
            c.problem(
                "notebooks-dir",
                format!("notebooks folder `{relative}` does not exist"),
            );
        }
        let canonical = path.canonicalize().ok();
        NotebooksDir {
            path,
            relative,
            canonical,
        }
    }

    /// Why the notebook at `path` may not be run: it resolves, through symlinks, to a file
    /// outside the folder, which globs may not leave either.
    fn escape(&self, path: &Path, relative: &str) -> Option<String> {
        let (Some(folder), Ok(resolved)) = (&self.canonical, path.canonicalize()) else {
            // A broken link: reading it says so.
            return None;
        };
        (!resolved.starts_with(folder)).then(|| {
            format!(
                "notebook `{}` links to {}, outside the notebooks folder `{}` (copy it into the folder instead)",
                shown(relative),
                resolved.display(),
                self.relative
            )
        })
    }
}

/// The most characters of a notebook's path under the notebooks folder.
const MAX_NOTEBOOK_PATH: usize = 200;

/// Why the notebook at `relative` (under the notebooks folder) cannot name a trial: trial
/// names are single libtest lines, and become file names.
fn notebook_name_problem(relative: &str) -> Option<String> {
    if relative.chars().any(char::is_control) {
        Some(format!(
            "notebook file name `{}` has a control character (rename it: trial names are single lines)",
            shown(relative)
        ))
    } else if relative.chars().count() > MAX_NOTEBOOK_PATH {
        Some(format!(
            "notebook path `{}` is {} characters long; the most is {MAX_NOTEBOOK_PATH} (trial names become file names)",
            shown(relative),
            relative.chars().count()
        ))
    } else {
        None
    }
}

impl Compiler {
    /// The `[[overrides]]`, with their globs and settings checked.
    pub(super) fn overrides(&mut self, raw: &[RawOverride], stages: &[String]) -> Vec<Override> {
        let mut overrides = Vec::new();
        for (i, o) in raw.iter().enumerate() {
            let key = format!("overrides[{i}]");
            let pattern = self.glob_pattern(&format!("{key}.notebooks"), &o.notebooks);
            let timeout = o
                .timeout
                .as_deref()
                .map(|t| self.duration(&format!("{key}.timeout"), Some(t), DEFAULT_TIMEOUT));
            let cell_timeout = o.cell_timeout.as_deref().map(|t| {
                self.duration(
                    &format!("{key}.cell-timeout"),
                    Some(t),
                    DEFAULT_CELL_TIMEOUT,
                )
            });
            let stages = self.stage_list(&format!("{key}.stages"), o.stages.as_ref(), stages);
            let data = self.data_globs(&format!("{key}.data"), &o.data);
            overrides.push(Override {
                notebooks: o.notebooks.clone(),
                pattern,
                timeout,
                cell_timeout,
                tags: o.tags.clone(),
                stages,
                data,
                parameters: self.parameters(&key, &o.parameters),
                used: false,
            });
        }
        overrides
    }

    /// Warns about overrides that matched no notebook of any runtime.
    pub(super) fn unused_overrides(&mut self, overrides: &[Override]) {
        for o in overrides {
            if o.pattern.is_some() && !o.used {
                self.warn(format!(
                    "override `{}` matches no notebook of any runtime",
                    o.notebooks
                ));
            }
        }
    }

    /// The notebooks the runtime's globs match, by path; each must be an executable notebook.
    pub(super) fn notebook_checks(
        &mut self,
        key: &str,
        globs: &[String],
        defaults: &CheckDefaults,
        notebooks_dir: &NotebooksDir,
        overrides: &mut [Override],
    ) -> Vec<Check> {
        let glob_key = format!("{key}.notebooks");
        let mut notebooks = BTreeSet::new();
        for pattern_text in globs {
            let Some(pattern) = self.glob_pattern(&glob_key, pattern_text) else {
                continue;
            };
            let (found, unnamable) = notebook_files(&notebooks_dir.path, &pattern);
            for name in &unnamable {
                self.problem(
                    &glob_key,
                    format!("notebook file name `{}` is not valid UTF-8 (rename it: trial names are text)", shown(name)),
                );
            }
            if found.is_empty() && unnamable.is_empty() {
                self.problem(
                    &glob_key,
                    format!(
                        "`{pattern_text}` matches no notebook under `{}`",
                        notebooks_dir.relative
                    ),
                );
            }
            notebooks.extend(found);
        }
        let mut checks = Vec::new();
        for relative in notebooks {
            let path = notebooks_dir.path.join(&relative);
            if let Some(problem) =
                notebook_name_problem(&relative).or_else(|| notebooks_dir.escape(&path, &relative))
            {
                self.problem(&glob_key, problem);
                continue;
            }
            let mut check = Check {
                name: format!(
                    "nb::{}",
                    relative.strip_suffix(".ipynb").unwrap_or(&relative)
                ),
                kind: CheckKind::Notebook {
                    relative: relative.clone(),
                    path,
                },
                timeout: defaults.timeout,
                cell_timeout: defaults.cell_timeout,
                tags: defaults.tags.clone(),
                stages: defaults.stages.clone(),
                data: defaults.data.clone(),
                parameters: Parameters::new(),
                consistent_tag: None,
            };
            for o in overrides.iter_mut() {
                o.apply(&relative, &mut check);
            }
            checks.push(check);
        }
        checks
    }

    /// The runtime's `commands`, by name.
    pub(super) fn command_checks(
        &mut self,
        key: &str,
        commands: &BTreeMap<String, RawCommand>,
        defaults: &CheckDefaults,
        declared_stages: &[String],
    ) -> Vec<Check> {
        let mut checks = Vec::new();
        for (command, raw_command) in commands {
            let command_key = format!("{key}.commands.{}", key_part(command));
            self.name(&command_key, "command", command);
            let (run, timeout, tags, stages) = match raw_command {
                RawCommand::Line(run) => (run.clone(), defaults.timeout, Vec::new(), None),
                RawCommand::Table(t) => (
                    t.run.clone(),
                    self.duration(
                        &format!("{command_key}.timeout"),
                        t.timeout.as_deref(),
                        defaults.timeout,
                    ),
                    t.tags.clone(),
                    self.stage_list(
                        &format!("{command_key}.stages"),
                        t.stages.as_ref(),
                        declared_stages,
                    ),
                ),
            };
            if run.trim().is_empty() {
                self.problem(&command_key, "the command is empty");
            }
            self.no_nul(&command_key, "the command", &run);
            checks.push(Check {
                name: format!("cmd::{command}"),
                kind: CheckKind::Command { run },
                timeout,
                cell_timeout: timeout,
                tags: defaults.tags.iter().cloned().chain(tags).collect(),
                stages: stages.unwrap_or_else(|| defaults.stages.clone()),
                data: Vec::new(),
                parameters: Parameters::new(),
                consistent_tag: None,
            });
        }
        checks
    }

    /// The GPU checks: what a container sees (`gpu::visible`, docker runtimes only), and
    /// whether the runtime's framework can use it (`gpu::framework`).
    pub(super) fn gpu_checks(
        &mut self,
        key: &str,
        r: &RawRuntime,
        is_docker: bool,
        defaults: &CheckDefaults,
    ) -> Vec<Check> {
        let mut checks = Vec::new();
        if r.gpu_checks.unwrap_or(is_docker) {
            if !is_docker {
                self.problem(
                    format!("{key}.gpu-checks"),
                    "gpu::visible needs a container: it only applies to docker runtimes",
                );
            } else {
                checks.push(gpu_check("gpu::visible", CheckKind::GpuVisible, defaults));
            }
        }
        if let Some(framework) = &r.framework {
            if FRAMEWORKS.contains(&framework.as_str()) {
                let kind = CheckKind::GpuFramework {
                    framework: framework.clone(),
                };
                checks.push(gpu_check("gpu::framework", kind, defaults));
            } else {
                let hint = did_you_mean(framework, FRAMEWORKS);
                self.problem(
                    format!("{key}.framework"),
                    format!(
                        "unknown framework `{framework}`{hint} (known: torch, tensorflow, jax)"
                    ),
                );
            }
        }
        checks
    }

    /// The data globs at `key`, in order without repeats, each checked as a glob that stays
    /// inside the notebooks folder. Nothing is read: the files are found by each trial.
    pub(super) fn data_globs(&mut self, key: &str, globs: &[String]) -> Vec<String> {
        let mut checked: Vec<String> = Vec::new();
        for glob in globs {
            if glob.trim().is_empty() {
                self.problem(
                    key,
                    "an empty data glob matches nothing (use e.g. \"data/**\" or \"shared/*.csv\")",
                );
            } else if glob.contains('\0') {
                self.no_nul(key, "a data glob", glob);
            } else if self.glob_pattern(key, glob).is_some() && !checked.contains(glob) {
                checked.push(glob.clone());
            }
        }
        checked
    }

    /// Compiles a notebook glob, refusing patterns that would leave the notebooks folder.
    pub(super) fn glob_pattern(&mut self, key: &str, text: &str) -> Option<glob::Pattern> {
        let escapes = Path::new(text).components().any(|part| {
            matches!(
                part,
                Component::ParentDir | Component::RootDir | Component::Prefix(_)
            )
        });
        if escapes {
            self.problem(key, format!("`{text}` points outside the notebooks folder (globs are relative to it, without `..`)"));
            return None;
        }
        match glob::Pattern::new(text) {
            Ok(pattern) => Some(pattern),
            Err(error) => {
                self.problem(key, format!("`{text}` is not a valid glob ({error})"));
                None
            }
        }
    }
}

fn gpu_check(name: &str, kind: CheckKind, defaults: &CheckDefaults) -> Check {
    Check {
        name: name.to_owned(),
        kind,
        timeout: GPU_CHECK_TIMEOUT,
        cell_timeout: GPU_CHECK_TIMEOUT,
        tags: defaults
            .tags
            .iter()
            .cloned()
            .chain(["gpu-check".to_owned()])
            .collect(),
        stages: defaults.stages.clone(),
        data: Vec::new(),
        parameters: Parameters::new(),
        consistent_tag: None,
    }
}

/// The `.ipynb` files under `dir` whose relative path matches `pattern`, skipping checkpoints.
/// Also returns, lossily, the names of notebooks that are not UTF-8: they cannot be named in
/// trial names, and are reported rather than skipped.
fn notebook_files(dir: &Path, pattern: &glob::Pattern) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut found = BTreeSet::new();
    let mut unnamable = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            if file_type.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "ipynb") {
                let Ok(relative) = path.strip_prefix(dir) else {
                    continue;
                };
                let Some(relative) = relative.to_str() else {
                    unnamable.insert(relative.to_string_lossy().into_owned());
                    continue;
                };
                let relative = relative.replace(std::path::MAIN_SEPARATOR, "/");
                let options = glob::MatchOptions {
                    require_literal_separator: true,
                    ..Default::default()
                };
                if pattern.matches_with(&relative, options) {
                    found.insert(relative);
                }
            }
        }
    }
    (found, unnamable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiler() -> Compiler {
        Compiler {
            file: "matrix.toml".into(),
            problems: Vec::new(),
            warnings: Vec::new(),
        }
    }

    #[test]
    fn data_globs_stay_in_the_notebooks_folder_and_are_never_expanded_at_load() {
        let mut c = compiler();
        let globs: Vec<String> = [
            "data/**",
            "shared/*.csv",
            "data/**",
            "not-there-at-all/**",
            "../up/*.csv",
            "data/../../x",
            "/abs/*.csv",
            "data/[",
            " ",
        ]
        .map(String::from)
        .to_vec();
        let checked = c.data_globs("runtimes.r.data", &globs);
        // Kept in order, once; a glob that matches nothing here is the trial's to judge.
        assert_eq!(checked, ["data/**", "shared/*.csv", "not-there-at-all/**"]);
        let problems: Vec<String> = c
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.key, p.message))
            .collect();
        assert_eq!(
            problems,
            [
                "runtimes.r.data: `../up/*.csv` points outside the notebooks folder (globs are relative to it, without `..`)",
                "runtimes.r.data: `data/../../x` points outside the notebooks folder (globs are relative to it, without `..`)",
                "runtimes.r.data: `/abs/*.csv` points outside the notebooks folder (globs are relative to it, without `..`)",
                "runtimes.r.data: `data/[` is not a valid glob (Pattern syntax error near position 5: invalid range pattern)",
                "runtimes.r.data: an empty data glob matches nothing (use e.g. \"data/**\" or \"shared/*.csv\")",
            ]
        );
    }

    #[test]
    fn an_override_adds_its_data_to_the_notebooks_it_matches() {
        let mut c = compiler();
        let raw: Vec<RawOverride> = toml::from_str::<BTreeMap<String, Vec<RawOverride>>>(
            r#"overrides = [
                { notebooks = "deep/*.ipynb", data = ["shared/*.csv", "data/**"] },
                { notebooks = "other.ipynb", data = ["other/**"] },
            ]"#,
        )
        .unwrap()
        .remove("overrides")
        .unwrap();
        let mut overrides = c.overrides(&raw, &[]);
        let check = |relative: &str| Check {
            name: format!("nb::{relative}"),
            kind: CheckKind::Command { run: "true".into() },
            timeout: DEFAULT_TIMEOUT,
            cell_timeout: DEFAULT_CELL_TIMEOUT,
            tags: Vec::new(),
            stages: Vec::new(),
            data: vec!["data/**".into()],
            parameters: Parameters::new(),
            consistent_tag: None,
        };
        let mut deep = check("deep/x.ipynb");
        let mut top = check("top.ipynb");
        for o in overrides.iter_mut() {
            o.apply("deep/x.ipynb", &mut deep);
            o.apply("top.ipynb", &mut top);
        }
        assert_eq!(deep.data, ["data/**", "shared/*.csv"]);
        assert_eq!(top.data, ["data/**"]);
        assert!(c.problems.is_empty());
    }
}
