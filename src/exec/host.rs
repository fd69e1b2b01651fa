//! The host executor: notebooks and commands run by a Python on this host, each in a scratch
//! copy of its folder. The main type is `Job`: the trial's [`Invocation`] rendered with the
//! scratch folder as its trial folder.

use super::Outcome;
use super::invocation::{Invocation, WORK};
use super::process::{self, Ended, Finished};
use super::provision::Provisioner;
use super::verdict::{self, NotebookRun, setup_failure};
use crate::config::CheckKind;
use crate::error::chain;
use crate::notebook::ProcessEnd;
use crate::plan::TrialSpec;
use crate::progress::Board;
use crate::record::RunDir;
use crate::verdict::Category;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One trial's run on the host: what every step needs.
struct Job<'a> {
    spec: &'a TrialSpec,
    run: &'a RunDir,
    /// The GPUs the trial holds, by UUID.
    gpus: &'a [String],
    python: PathBuf,
    /// The trial folder.
    scratch: &'a Path,
    invocation: Invocation,
    /// Marks every process of the trial, so that none outlives it.
    token: String,
    /// Where the running cell is said.
    progress: &'a Board,
}

pub(super) fn run(
    provisioner: &Provisioner,
    progress: &Board,
    python: &str,
    packages: &[String],
    spec: &TrialSpec,
    run: &RunDir,
    gpus: &[String],
) -> Outcome {
    let jupyter = spec
        .runtime
        .checks
        .iter()
        .any(|check| matches!(check.kind, CheckKind::Notebook { .. }));
    let found = provisioner.python(&spec.runtime.name, python, packages, jupyter);
    let (python, provisioned) = match found {
        Ok(found) => found,
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
    let job = Job {
        spec,
        run,
        gpus,
        invocation: Invocation::for_trial(spec, &python.to_string_lossy()),
        python,
        scratch: scratch.path(),
        token: format!("{}-{}", run.run_id, crate::names::folder_key(&spec.name)),
        progress,
    };
    let result = match &spec.check.kind {
        CheckKind::Notebook { relative, path } => job.notebook(relative, path),
        CheckKind::Command { run: line } => job.command(line),
        CheckKind::GpuFramework { .. } => job.framework(),
        CheckKind::GpuVisible => {
            Err("gpu::visible needs a container; host runtimes do not have it".into())
        }
    };
    let mut outcome =
        result.unwrap_or_else(|message| setup_failure(Category::Infrastructure, message));
    outcome.setup.extend(provisioned);
    outcome
}

impl Job<'_> {
    /// The trial's command line: the runtime's environment, its GPUs, and its Python first on
    /// `PATH`, run in the work folder.
    fn command_line(&self) -> Command {
        let folder = self.scratch.to_string_lossy();
        let mut words = self.invocation.command(&folder).into_iter();
        let mut command = Command::new(words.next().unwrap_or_default());
        command.args(words);
        let bin = self.python.parent().unwrap_or(Path::new("/"));
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![bin.to_path_buf()];
        paths.extend(std::env::split_paths(&path));
        let spec = self.spec;
        command
            .env("PATH", std::env::join_paths(paths).unwrap_or(path))
            .env("RUNTIME_MATRIX_GPUS", self.gpus.join(","))
            .env("JUPYTER_RUNTIME_DIR", self.scratch.join("jupyter-runtime"));
        // CUDA takes UUIDs too. A CPU trial on a GPU host gets none; a GPU trial gets exactly
        // its lease (or, with no lease, what the host has).
        if spec.machine.gpus == 0 || !self.gpus.is_empty() {
            command.env("CUDA_VISIBLE_DEVICES", self.gpus.join(","));
        }
        // After the host's own variables: the runtime's environment wins, as in a container.
        command.envs(self.invocation.env(&folder));
        command.current_dir(self.scratch.join(WORK));
        command
    }

    /// Writes the invocation's files into the scratch folder, the notebook's folder into `work/`.
    fn stage(&self) -> Result<(), String> {
        let work = self.scratch.join(WORK);
        match &self.invocation.work_source {
            Some(folder) => copy_folder(folder, &work).map_err(|error| {
                format!(
                    "cannot copy {} to a scratch folder: {error}",
                    folder.display()
                )
            })?,
            None => std::fs::create_dir_all(&work)
                .map_err(|error| format!("cannot create {}: {error}", work.display()))?,
        }
        for staged in &self.invocation.staged {
            let path = self.scratch.join(staged.path);
            std::fs::write(&path, staged.contents)
                .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
        }
        Ok(())
    }

    /// A file the check left in the scratch folder; the check may have made it anything, so
    /// only a regular file of bounded size is read.
    fn collected(&self, relative: &Option<String>) -> Option<Vec<u8>> {
        let path = self.scratch.join(relative.as_deref()?);
        crate::fsx::read_bounded(&path, crate::fsx::COLLECTED).ok()
    }

    fn execute(&self, command: Command) -> Result<Finished, String> {
        let program = command.get_program().to_string_lossy().into_owned();
        process::run(command, self.spec.check.timeout, &self.token)
            .map_err(|error| format!("cannot start {program}: {error}"))
    }

    fn notebook(&self, relative: &str, path: &Path) -> Result<Outcome, String> {
        let original: serde_json::Value = crate::fsx::read_bounded(path, crate::fsx::NOTEBOOK)
            .map_err(|e| e.to_string())
            .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
            .map_err(|error| format!("cannot read notebook {}: {error}", path.display()))?;
        self.stage()?;
        if let Some(events) = &self.invocation.progress {
            self.progress
                .watch_cells(&self.spec.name, self.scratch.join(events));
        }
        let finished = self.execute(self.command_line())?;
        let progress = self
            .collected(&self.invocation.progress)
            .unwrap_or_default();
        let result = NotebookRun {
            original: &original,
            progress: &String::from_utf8_lossy(&progress),
            output: &finished.output,
            end: process_end(&finished),
            executed: self.collected(&self.invocation.executed),
        };
        Ok(verdict::notebook(self.spec, self.run, relative, result))
    }

    fn command(&self, line: &str) -> Result<Outcome, String> {
        self.stage()?;
        let finished = self.execute(self.command_line())?;
        Ok(verdict::command(
            self.spec,
            line,
            process_end(&finished),
            &finished.output,
        ))
    }

    fn framework(&self) -> Result<Outcome, String> {
        self.stage()?;
        let finished = self.execute(self.command_line())?;
        let host = match crate::gpu::detect() {
            crate::gpu::Detection::Found(host) => Some(host),
            crate::gpu::Detection::NoDriver(_) => None,
        };
        let judged = verdict::judge_gpu_check(
            &self.spec.check.kind,
            &finished.output,
            self.gpus,
            self.spec.machine.gpus,
            host,
        );
        Ok(verdict::gpu_check(
            self.spec,
            judged,
            process_end(&finished),
            &finished.output,
        ))
    }
}

fn process_end(finished: &Finished) -> ProcessEnd {
    match finished.ended {
        Ended::Exited(0) => ProcessEnd::Success,
        Ended::Exited(code) => ProcessEnd::Failed(code),
        Ended::Deadline => ProcessEnd::Deadline,
    }
}

/// Copies `from` into `to`, skipping hidden entries (`.ipynb_checkpoints`, `.git`). Files,
/// and what symlinks point to, must be regular files: copying a FIFO would block and copying
/// `/dev/zero` would never end. The error names the file.
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
        } else {
            let path = entry.path();
            let named = |error: std::io::Error| {
                std::io::Error::new(error.kind(), format!("{}: {error}", path.display()))
            };
            crate::fsx::regular_file(&path).map_err(named)?;
            std::fs::copy(&path, &target).map_err(named)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copying_a_notebooks_folder_refuses_what_is_not_a_regular_file() {
        let from = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        std::fs::write(from.path().join("data.csv"), "a,b\n").unwrap();
        let zero = from.path().join("zero.bin");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let error = copy_folder(from.path(), &to.path().join("work")).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "{}: a character device, not a regular file (give a regular file)",
                zero.display()
            )
        );
    }
}
