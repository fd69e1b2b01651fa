//! The host executor: notebooks and commands run by the runtime's runner, a warm Python on
//! this host, each in a scratch copy of its folder. The main type is `Job`: the trial's
//! [`Invocation`] rendered with the scratch folder as its trial folder.

use super::Outcome;
use super::data::DataSet;
use super::executor::Executor;
use super::invocation::{Invocation, PER_TRIAL, WORK};
use super::runner::ANSWER_GRACE;
use super::runner::host::HostRunner;
use super::verdict::{self, NotebookRun, setup_failure};
use crate::config::CheckKind;
use crate::error::DataError;
use crate::error::chain;
use crate::plan::TrialSpec;
use crate::record::RunDir;
use crate::verdict::Category;
use std::path::{Path, PathBuf};

/// One trial's run on the host: what every step needs.
struct Job<'a> {
    executor: &'a Executor,
    spec: &'a TrialSpec,
    run: &'a RunDir,
    /// The GPUs the trial holds, by UUID.
    gpus: &'a [String],
    python: PathBuf,
    /// The trial folder.
    scratch: &'a Path,
    invocation: Invocation,
}

pub(super) fn run(
    executor: &Executor,
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
    let found = executor
        .provisioner
        .python(&spec.runtime.name, python, packages, jupyter);
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
    // Its services run on the machine's engine, on this host, published on loopback.
    let mut service_setup = Vec::new();
    let services = match executor.docker.host_services(spec, &mut service_setup) {
        Ok(services) => services,
        Err(reason) => {
            let failed = setup_failure(Category::Infrastructure, reason);
            return Outcome {
                setup: provisioned.into_iter().chain(service_setup).collect(),
                ..failed
            };
        }
    };
    let mut invocation = Invocation::for_trial(spec, &python.to_string_lossy());
    for (key, value) in &services.env {
        invocation.set_env(key, value);
    }
    let job = Job {
        executor,
        spec,
        run,
        gpus,
        invocation,
        python,
        scratch: scratch.path(),
    };
    let mut outcome = match spec.check.kind {
        CheckKind::GpuVisible => {
            Err("gpu::visible needs a container; host runtimes do not have it".into())
        }
        _ => job.run(),
    }
    .unwrap_or_else(|message| setup_failure(Category::Infrastructure, message));
    outcome = super::redact::redact(outcome, services.secrets.iter());
    outcome.setup.extend(provisioned);
    outcome.setup.extend(service_setup);
    outcome.services = services.records;
    outcome
}

impl Job<'_> {
    /// The environment of this trial's runner, on top of this process's: its Python first on
    /// `PATH`, its GPUs, and the runtime's environment, which its kernels inherit.
    fn runner_env(&self) -> Vec<(String, String)> {
        let bin = self.python.parent().unwrap_or(Path::new("/"));
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![bin.to_path_buf()];
        paths.extend(std::env::split_paths(&path));
        let path = std::env::join_paths(paths).unwrap_or(path);
        let mut env = vec![
            ("PATH".to_owned(), path.to_string_lossy().into_owned()),
            ("RUNTIME_MATRIX_GPUS".to_owned(), self.gpus.join(",")),
        ];
        // CUDA takes UUIDs too. A CPU trial on a GPU host gets none; a GPU trial gets exactly
        // its lease (or, with no lease, what the host has).
        if self.spec.machine.gpus == 0 || !self.gpus.is_empty() {
            env.push(("CUDA_VISIBLE_DEVICES".to_owned(), self.gpus.join(",")));
        }
        // After the host's own variables: the runtime's environment wins, as in a container.
        env.extend(
            self.invocation
                .env(&self.scratch.to_string_lossy())
                .into_iter()
                .filter(|(key, _)| !PER_TRIAL.contains(&key.as_str())),
        );
        env
    }

    /// Writes the invocation's files into the scratch folder, the notebook's folder into `work/`
    /// at its path under the notebooks folder.
    fn stage(&self) -> Result<(), String> {
        let work = self.scratch.join(WORK).join(&self.invocation.work_dir);
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

    /// The notebook's data set, found before anything is copied: one that cannot be staged
    /// (a glob that matches nothing, a file that is not one, a set over the limit) fails the
    /// trial, naming the glob or file.
    fn find_data(&self) -> Result<Option<DataSet>, DataError> {
        self.invocation
            .data
            .as_ref()
            .map(|data| DataSet::find(&data.notebooks_dir, &data.globs))
            .transpose()
    }

    /// A file the check left in the scratch folder; the check may have made it anything, so
    /// only a regular file of bounded size is read.
    fn collected(&self, relative: &Option<String>) -> Option<Vec<u8>> {
        let path = self.scratch.join(relative.as_deref()?);
        crate::fsx::read_bounded(&path, crate::fsx::COLLECTED).ok()
    }

    /// Runs the trial on its runtime's runner and judges what came back.
    fn run(&self) -> Result<Outcome, String> {
        let spec = self.spec;
        if let Some(outcome) = verdict::notebook_file_failure(spec) {
            return Ok(outcome);
        }
        let data = match self.find_data() {
            Ok(data) => data,
            Err(error) => return Ok(super::data::failure(&error)),
        };
        self.stage()?;
        // Straight from the source, a copy per trial: no trial sees another's changes, and a
        // copy from the runner's own copy would cost the same.
        if let Err(error) = data.map_or(Ok(()), |set| set.copy_into(&self.scratch.join(WORK))) {
            return Ok(super::data::failure(&error));
        }
        let executor = self.executor;
        let key = format!(
            "{}|host|{}|{}|{}|{}|{}",
            self.run.run_id,
            spec.runtime.name,
            spec.machine.name,
            self.gpus.join(","),
            self.python.display(),
            super::runner::scope()
        );
        let serves = format!(
            "runtime `{}` on machine `{}`",
            spec.runtime.name, spec.machine.name
        );
        let start = || {
            HostRunner {
                python: &self.python,
                serves: serves.clone(),
                key: key.clone(),
                env: self.runner_env(),
                idle: executor.runner_idle,
                slots: executor.slots_for(spec),
                notebooks: spec
                    .runtime
                    .checks
                    .iter()
                    .any(|check| matches!(check.kind, CheckKind::Notebook { .. })),
                run_id: self.run.run_id.clone(),
            }
            .start()
        };
        let (runner, waited) = match executor.runners.get(&key, &serves, start) {
            Ok(started) => started,
            Err(error) => return Ok(setup_failure(Category::Infrastructure, chain(&error))),
        };
        // The runner's start is setup, whatever ends the trial afterwards.
        let setup: Vec<_> = waited
            .map(|waited| crate::record::SetupStep {
                kind: crate::record::SetupKind::Runner,
                subject: self.python.display().to_string(),
                seconds: waited.as_secs_f64(),
            })
            .into_iter()
            .collect();
        let folder = self.scratch.to_string_lossy();
        // The runner has its `PATH` and GPUs already (they are part of its key); the request
        // adds the trial's own environment.
        let request = self.invocation.request(&folder);
        let reply = runner
            .connection
            .run(&request, spec.check.timeout + ANSWER_GRACE, |event| {
                if let (Some(phase), Some(index), Some(time)) =
                    (&event.phase, event.index, event.time)
                {
                    executor
                        .progress
                        .cell(&spec.name, phase == "start", index, time);
                }
            });
        let reply = match reply {
            Ok(reply) => reply,
            Err(error) => {
                if matches!(error, crate::error::RunnerError::Silent { .. }) {
                    executor.runners.discard(&key, &runner);
                }
                let failed = setup_failure(Category::Infrastructure, chain(&error));
                return Ok(Outcome { setup, ..failed });
            }
        };
        let end = reply.end();
        let mut outcome = match &spec.check.kind {
            CheckKind::Notebook { relative, .. } => {
                let progress = self
                    .collected(&self.invocation.progress)
                    .unwrap_or_default();
                let result = NotebookRun {
                    progress: &String::from_utf8_lossy(&progress),
                    output: &reply.output,
                    end,
                    executed: self.collected(&self.invocation.executed),
                };
                verdict::notebook(spec, self.run, relative, result)
            }
            CheckKind::Command { run: line } => verdict::command(spec, line, end, &reply.output),
            kind => {
                let host = match crate::gpu::detect() {
                    crate::gpu::Detection::Found(host) => Some(host),
                    crate::gpu::Detection::NoDriver(_) => None,
                };
                let judged = verdict::judge_gpu_check(
                    kind,
                    &reply.output,
                    self.gpus,
                    spec.machine.gpus,
                    host,
                );
                verdict::gpu_check(spec, judged, end, &reply.output)
            }
        };
        outcome.setup.extend(setup);
        outcome.resources = reply.resources;
        if let Some(artifact) = super::html::wanted(&outcome) {
            let started = std::time::Instant::now();
            let rendered = self.render(&runner, artifact);
            super::html::keep(&mut outcome, rendered);
            outcome.after_check += started.elapsed();
        }
        Ok(outcome)
    }

    /// The executed notebook `artifact` as HTML, rendered by the runtime's nbconvert on
    /// `runner` in the scratch folder; else why not.
    fn render(&self, runner: &super::runner::Runner, artifact: &Path) -> Result<Vec<u8>, String> {
        let (notebook, html) = super::html::paths(artifact);
        let source = self.scratch.join(&notebook);
        std::fs::create_dir_all(source.parent().unwrap_or(self.scratch))
            .and_then(|()| std::fs::copy(artifact, &source))
            .map_err(|error| format!("cannot copy {}: {error}", artifact.display()))?;
        let folder = self.scratch.to_string_lossy();
        match runner.render(&folder, &notebook, &html) {
            Ok(None) => {
                let html = self.scratch.join(&html);
                crate::fsx::read_bounded(&html, crate::fsx::COLLECTED)
                    .map_err(|error| format!("cannot read {}: {error}", html.display()))
            }
            Ok(Some(why)) => Err(why),
            Err(error) => Err(chain(&error)),
        }
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
            // What is not a regular file (a FIFO, a device, a socket, a link to nothing) has no
            // contents to copy, and opening it could block: it is left out, so that one odd
            // file fails only the notebook that needs it, never its neighbours.
            if crate::fsx::regular_file(&path).is_err() {
                continue;
            }
            let named = |error: std::io::Error| {
                std::io::Error::new(error.kind(), format!("{}: {error}", path.display()))
            };
            std::fs::copy(&path, &target).map_err(named)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copying_a_notebooks_folder_leaves_out_what_is_not_a_regular_file() {
        let from = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        std::fs::write(from.path().join("data.csv"), "a,b\n").unwrap();
        std::os::unix::fs::symlink("/dev/zero", from.path().join("zero.bin")).unwrap();
        let fifo =
            std::ffi::CString::new(from.path().join("fifo.ipynb").to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let work = to.path().join("work");
        copy_folder(from.path(), &work).unwrap();
        let mut copied: Vec<_> = std::fs::read_dir(&work)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        copied.sort();
        assert_eq!(copied, ["data.csv"]);
    }
}
