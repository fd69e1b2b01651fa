//! The host executor: notebooks and commands run by a Python on this host, each in a scratch
//! copy of its folder.

use super::Outcome;
use super::process::{self, Ended, Finished};
use super::provision::Provisioner;
use super::verdict::{self, NotebookRun, setup_failure};
use crate::config::CheckKind;
use crate::error::chain;
use crate::notebook::ProcessEnd;
use crate::plan::TrialSpec;
use crate::record::{Category, RunDir};
use std::path::{Path, PathBuf};
use std::process::Command;

const HOOKS: &str = include_str!("nbconvert_hooks.py");

pub(super) fn run(
    provisioner: &Provisioner,
    python: &str,
    packages: &[String],
    spec: &TrialSpec,
    run: &RunDir,
) -> Outcome {
    let jupyter = spec
        .runtime
        .checks
        .iter()
        .any(|check| matches!(check.kind, CheckKind::Notebook { .. }));
    let python = match provisioner.python(&spec.runtime.name, python, packages, jupyter) {
        Ok(python) => python,
        Err(error) => {
            let category = match error {
                crate::error::ProvisionError::Python { .. } => Category::Runtime,
                _ => Category::Infrastructure,
            };
            return setup_failure(category, chain(&error));
        }
    };
    let scratch = match tempfile::Builder::new().prefix("runtime-matrix-").tempdir() {
        Ok(scratch) => scratch,
        Err(error) => {
            return setup_failure(
                Category::Infrastructure,
                format!("cannot create a scratch folder: {error}"),
            );
        }
    };
    let token = format!(
        "{}-{}",
        run.run_id,
        crate::plan::shard_of(&spec.name, u64::MAX)
    );
    let result = match &spec.check.kind {
        CheckKind::Notebook { relative, path } => {
            notebook(&python, spec, run, scratch.path(), relative, path, &token)
        }
        CheckKind::Command { run: line } => {
            Ok(command(&python, spec, scratch.path(), line, &token))
        }
    };
    result.unwrap_or_else(|message| setup_failure(Category::Infrastructure, message))
}

/// A command line for a runtime: its environment, and its Python first on `PATH`.
fn base_command(program: &Path, python: &Path, spec: &TrialSpec, scratch: &Path) -> Command {
    let mut command = Command::new(program);
    let bin = python.parent().unwrap_or(Path::new("/"));
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![bin.to_path_buf()];
    paths.extend(std::env::split_paths(&path));
    command
        .env("PATH", std::env::join_paths(paths).unwrap_or(path))
        .env("RUNTIME_MATRIX_TRIAL", &spec.name)
        .env("RUNTIME_MATRIX_RUNTIME", &spec.runtime.name)
        .env("RUNTIME_MATRIX_MACHINE", &spec.machine.name)
        .env("PYDEVD_DISABLE_FILE_VALIDATION", "1")
        .env("JUPYTER_PLATFORM_DIRS", "1")
        .env("JUPYTER_RUNTIME_DIR", scratch.join("jupyter-runtime"))
        .env("PYTHONUNBUFFERED", "1")
        .envs(&spec.runtime.env);
    command
}

fn notebook(
    python: &Path,
    spec: &TrialSpec,
    run: &RunDir,
    scratch: &Path,
    relative: &str,
    path: &Path,
    token: &str,
) -> Result<Outcome, String> {
    let original: serde_json::Value = std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
        .map_err(|error| format!("cannot read notebook {}: {error}", path.display()))?;
    let folder = path.parent().unwrap_or(Path::new("."));
    let work = scratch.join("work");
    copy_folder(folder, &work).map_err(|error| {
        format!(
            "cannot copy {} to a scratch folder: {error}",
            folder.display()
        )
    })?;
    let hooks = scratch.join("hooks.py");
    let progress_path = scratch.join("progress.jsonl");
    let out = scratch.join("out");
    std::fs::write(&hooks, HOOKS)
        .map_err(|error| format!("cannot write {}: {error}", hooks.display()))?;
    let file_name = path.file_name().unwrap_or_default();

    let mut command = base_command(python, python, spec, scratch);
    command
        .args([
            "-m",
            "nbconvert",
            "--to",
            "notebook",
            "--execute",
            "--config",
        ])
        .arg(&hooks)
        .arg("--output-dir")
        .arg(&out)
        .arg(format!(
            "--ExecutePreprocessor.timeout={}",
            spec.check.cell_timeout.as_secs().max(1)
        ))
        .arg(file_name)
        .current_dir(&work)
        .env("RUNTIME_MATRIX_PROGRESS", &progress_path);
    let finished = process::run(command, spec.check.timeout, token)
        .map_err(|error| format!("cannot start {}: {error}", python.display()))?;

    let end = process_end(&finished);
    let progress = std::fs::read_to_string(&progress_path).unwrap_or_default();
    let executed = std::fs::read(out.join(file_name)).ok();
    let result = NotebookRun {
        original: &original,
        progress: &progress,
        output: &finished.output,
        end,
        executed,
    };
    Ok(verdict::notebook(spec, run, relative, result))
}

fn process_end(finished: &Finished) -> ProcessEnd {
    match finished.ended {
        Ended::Exited(0) => ProcessEnd::Success,
        Ended::Exited(code) => ProcessEnd::Failed(code),
        Ended::Deadline => ProcessEnd::Deadline,
    }
}

fn command(python: &Path, spec: &TrialSpec, scratch: &Path, line: &str, token: &str) -> Outcome {
    let mut command = base_command(Path::new("sh"), python, spec, scratch);
    command.arg("-c").arg(line).current_dir(scratch);
    let finished = match process::run(command, spec.check.timeout, token) {
        Ok(finished) => finished,
        Err(error) => {
            return setup_failure(
                Category::Infrastructure,
                format!("cannot start `sh`: {error}"),
            );
        }
    };
    verdict::command(spec, line, process_end(&finished), &finished.output)
}

/// Copies `from` into `to`, skipping hidden entries (`.ipynb_checkpoints`, `.git`).
fn copy_folder(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let target: PathBuf = to.join(entry.file_name());
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            copy_folder(&entry.path(), &target)?;
        } else if file_type.is_file() || file_type.is_symlink() {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
