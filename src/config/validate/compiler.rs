//! [`Compiler`]: the problems and warnings of one file, the helpers every section shares, and
//! [`compile`], which runs the sections in order.

use super::checks::NotebooksDir;
use crate::config::keys::UnknownKey;
use crate::config::matrix::Matrix;
use crate::config::raw::RawMatrix;
use crate::config::suggest::did_you_mean;
use crate::error::{ConfigError, Problem, Problems};
use std::path::Path;
use std::time::Duration;

/// A whole-check deadline when none is declared.
pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// nbconvert's per-cell timeout when none is declared.
pub(super) const DEFAULT_CELL_TIMEOUT: Duration = Duration::from_secs(300);
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// What validating one file has found so far.
pub(super) struct Compiler {
    /// The file as the user named it, for warnings.
    pub(super) file: String,
    pub(super) problems: Vec<Problem>,
    pub(super) warnings: Vec<String>,
}

/// Compiles `raw`, parsed from `path`, into a [`Matrix`]; `unknown_keys` become warnings.
///
/// Sections are compiled in file order (stages, machines, notebooks folder, overrides,
/// runtimes, services, consistency, rules), which is the order problems are reported in.
pub(in crate::config) fn compile(
    path: &Path,
    raw: RawMatrix,
    unknown_keys: Vec<UnknownKey>,
) -> Result<Matrix, ConfigError> {
    // Absolute, because checks run with a scratch folder as their working directory.
    let root = std::path::absolute(path)
        .ok()
        .and_then(|file| file.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| ".".into());
    let mut c = Compiler {
        file: path.display().to_string(),
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    for key in &unknown_keys {
        let hint = did_you_mean(key.name(), key.siblings().iter().copied());
        c.warn(format!("unknown key `{key}` is ignored{hint}"));
    }

    let (stages, default_stage) = c.declared_stages(raw.stages.as_ref());
    let machines = c.machines(&raw.machines, &root);
    let machine_names: Vec<&str> = raw.machines.keys().map(String::as_str).collect();
    let notebooks_dir = NotebooksDir::new(&mut c, &root, &raw);
    let mut overrides = c.overrides(&raw.overrides, &stages);
    let scope = super::runtimes::Scope {
        root: &root,
        stages: &stages,
        machine_names: &machine_names,
        notebooks_dir: &notebooks_dir,
    };
    let mut runtimes = c.runtimes(&raw.runtimes, &scope, &mut overrides);
    let services = c.services(&raw.services, &root, &mut runtimes);
    c.unused_overrides(&overrides);
    let consistency = c.consistency(raw.consistency.as_ref(), &mut runtimes);
    let (exclusions, expected_failures) = c.rules(&raw, &runtimes, &machine_names, &consistency);

    if !c.problems.is_empty() {
        // Only the unknown keys: they may explain the problems (a misspelt key leaves its
        // setting unset), while the other warnings may be consequences of them.
        c.warnings.truncate(unknown_keys.len());
        return Err(ConfigError::Invalid {
            path: path.to_owned(),
            problems: Problems(c.problems),
            warnings: c.warnings,
        });
    }
    Ok(Matrix {
        path: path.to_owned(),
        root,
        notebooks_dir: notebooks_dir.path,
        stages,
        default_stage,
        machines,
        runtimes,
        services,
        exclusions,
        expected_failures,
        consistency,
        warnings: c.warnings,
    })
}

impl Compiler {
    /// A compiler for a file no test reads: for testing one section alone.
    #[cfg(test)]
    pub(super) fn for_tests() -> Compiler {
        Compiler {
            file: "matrix.toml".into(),
            problems: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Records a problem with the entry at `key`.
    pub(super) fn problem(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    /// Records a warning about this file.
    pub(super) fn warn(&mut self, message: impl AsRef<str>) {
        let warning = format!("{}: {}", self.file, message.as_ref());
        self.warnings.push(warning);
    }

    /// A duration setting at `key`; `default` when unset or invalid (the problem is recorded).
    pub(super) fn duration(
        &mut self,
        key: &str,
        text: Option<&str>,
        default: Duration,
    ) -> Duration {
        let Some(text) = text else { return default };
        match humantime::parse_duration(text) {
            Ok(duration) if duration.is_zero() => {
                self.problem(
                    key,
                    format!("timeout `{text}` is zero (use e.g. \"90s\" or \"10m\")"),
                );
                default
            }
            Ok(duration) if duration > MAX_TIMEOUT => {
                self.problem(key, format!("timeout `{text}` is longer than 24h"));
                default
            }
            Ok(duration) => duration,
            Err(_) => {
                self.problem(
                    key,
                    format!("invalid duration `{text}` (use e.g. \"90s\", \"10m\" or \"1h 30m\")"),
                );
                default
            }
        }
    }

    /// Checks that the name of a `what` (stage, machine...) can appear in trial names, which
    /// become file names and single libtest lines.
    pub(super) fn name(&mut self, key: &str, what: &str, name: &str) {
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            self.problem(
                key,
                format!(
                    "{what} name `{}` may only use letters, digits, `-`, `_` and `.`",
                    shown(name)
                ),
            );
        } else if name.len() > MAX_NAME {
            self.problem(
                key,
                format!(
                    "{what} name `{}` is {} characters long; the most is {MAX_NAME} (trial names become file names)",
                    shown(name),
                    name.len()
                ),
            );
        }
    }

    /// Refuses a NUL byte in `text`, the `what` at `key`: no process can be given one.
    pub(super) fn no_nul(&mut self, key: &str, what: &str, text: &str) {
        if text.contains('\0') {
            self.problem(
                key,
                format!("{what} contains a NUL byte, which no process can be given (remove it)"),
            );
        }
    }
}

/// The most characters a runtime, machine, command or stage name may have.
pub(super) const MAX_NAME: usize = 100;

/// A name as key paths show it: whole, unless it is too long to be valid.
pub(super) fn key_part(name: &str) -> String {
    if name.len() > MAX_NAME {
        shown(name)
    } else {
        name.to_owned()
    }
}

/// `text` as a message shows it: control characters escaped, and cut after 40 characters.
pub(super) fn shown(text: &str) -> String {
    let mut shown = String::new();
    for c in text.chars().take(40) {
        if c.is_control() {
            shown.extend(c.escape_debug());
        } else {
            shown.push(c);
        }
    }
    if text.chars().count() > 40 {
        shown.push_str("...");
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_shown_on_one_line_and_cut() {
        assert_eq!(shown("Bob's \"nb\"\n\0.ipynb"), "Bob's \"nb\"\\n\\0.ipynb");
        assert_eq!(shown(&"r".repeat(10_000)), format!("{}...", "r".repeat(40)));
        assert_eq!(key_part(&"r".repeat(100)), "r".repeat(100));
    }
}
