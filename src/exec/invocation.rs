//! What one trial runs, said once for every executor. The main type is [`Invocation`]: the
//! command line, environment, files to stage and files to collect of a trial's check, with
//! every path relative to the trial's folder. The host executor renders it in a scratch folder,
//! the Docker executor in `/runtime-matrix/<key>/` inside the container, so both run the same
//! command; changing an nbconvert flag is one edit here.

use crate::config::DockerRuntime;
use crate::config::{CheckKind, Executor};
use crate::engine::{CONTAINER_ROOT, ContainerSpec, GpuRequest};
use crate::exec::runner::Request;
use crate::plan::TrialSpec;
use std::path::{Path, PathBuf};

/// The nbconvert configuration that records each cell's progress; staged as `hooks.py`.
const HOOKS_SCRIPT: &str = include_str!("nbconvert_hooks.py");

/// The folder, inside the trial folder, that a check runs in. For a notebook it mirrors the
/// notebooks folder: the notebook's own folder at its relative path, and its data files at
/// theirs, so that `../data/x.csv` reads as in Jupyter; the notebook runs in its own folder.
pub(crate) const WORK: &str = "work";
/// Where a notebook's nbconvert hooks are staged, in the trial folder.
const HOOKS: &str = "hooks.py";
/// Where the hooks report each cell as it runs, in the trial folder.
const PROGRESS: &str = "progress.jsonl";
/// Where nbconvert writes the executed notebook, in the trial folder.
const OUT: &str = "out";

/// The environment variables that differ between trials of one runtime and machine: a runner
/// shared by those trials does not have them; each trial's request does.
pub(crate) const PER_TRIAL: [&str; 3] = [
    "RUNTIME_MATRIX_TRIAL",
    "RUNTIME_MATRIX_PROGRESS",
    "RUNTIME_MATRIX_GPUS",
];

/// A word of a command line or an environment value: plain text, or a path inside the trial
/// folder, which each executor places where its trial folder is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Word {
    Text(String),
    InFolder(String),
}

impl Word {
    fn render(&self, folder: &str) -> String {
        match self {
            Word::Text(text) => text.clone(),
            Word::InFolder(relative) => in_folder(folder, relative),
        }
    }
}

/// A file written into the trial folder before the check runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Staged {
    /// Its path in the trial folder.
    pub(crate) path: &'static str,
    /// Its contents.
    pub(crate) contents: &'static str,
}

/// A notebook's `data` globs and the folder they are resolved in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Data {
    /// The notebooks folder: files keep their paths under it in [`WORK`].
    pub(crate) notebooks_dir: PathBuf,
    /// As declared, checked at load.
    pub(crate) globs: Vec<String>,
}

/// One trial's check, ready to run in any trial folder.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Invocation {
    program: String,
    args: Vec<Word>,
    /// In order: a later entry wins over an earlier one of the same name.
    env: Vec<(String, Word)>,
    /// Written into the trial folder before the check runs.
    pub(crate) staged: Vec<Staged>,
    /// The folder copied into [`WORK`] (hidden entries skipped): the notebook's own.
    pub(crate) work_source: Option<PathBuf>,
    /// Where in [`WORK`] that folder goes: its path under the notebooks folder, `` for the
    /// notebooks folder itself.
    pub(crate) work_dir: String,
    /// The check's working folder, in the trial folder: [`WORK`], or a notebook's folder in it.
    pub(crate) cwd: String,
    /// The notebook's data globs, expanded by the trial that stages them.
    pub(crate) data: Option<Data>,
    /// Where the check reports each cell as it runs (read back for a notebook).
    pub(crate) progress: Option<String>,
    /// Where the executed notebook is written (read back for a notebook).
    pub(crate) executed: Option<String>,
    /// The notebook's file name, in [`WORK`], and its cell timeout in seconds.
    notebook: Option<(String, f64)>,
    /// A notebook's parameters, built-ins first ([`TrialSpec::notebook_parameters`]).
    parameters: Option<Vec<(String, serde_json::Value)>>,
    /// Seconds the whole check may take.
    deadline: f64,
}

impl Invocation {
    /// The invocation of `spec`'s check, run with `python` (the runtime's interpreter).
    pub(crate) fn for_trial(spec: &TrialSpec, python: &str) -> Invocation {
        let text = |word: &str| Word::Text(word.to_owned());
        let mut env: Vec<(String, Word)> = [
            ("RUNTIME_MATRIX_TRIAL", spec.name.as_str()),
            ("RUNTIME_MATRIX_RUNTIME", &spec.runtime.name),
            ("RUNTIME_MATRIX_MACHINE", &spec.machine.name),
            ("PYDEVD_DISABLE_FILE_VALIDATION", "1"),
            ("JUPYTER_PLATFORM_DIRS", "1"),
            ("PYTHONUNBUFFERED", "1"),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), text(value)))
        .collect();
        env.extend(
            spec.runtime
                .env
                .iter()
                .map(|(key, value)| (key.clone(), text(value))),
        );
        let mut invocation = Invocation {
            program: python.to_owned(),
            args: Vec::new(),
            env,
            staged: Vec::new(),
            work_source: None,
            work_dir: String::new(),
            cwd: WORK.into(),
            data: None,
            progress: None,
            executed: None,
            notebook: None,
            parameters: spec.notebook_parameters(),
            deadline: spec.check.timeout.as_secs_f64(),
        };
        match &spec.check.kind {
            CheckKind::Notebook { path, relative } => {
                let file = path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                let dir = relative
                    .rsplit_once('/')
                    .map(|(dir, _)| dir.to_owned())
                    .unwrap_or_default();
                // The notebooks folder: the notebook's path less its relative one.
                let notebooks_dir = path
                    .ancestors()
                    .nth(relative.split('/').count())
                    .unwrap_or(Path::new("."))
                    .to_path_buf();
                invocation.cwd = match dir.as_str() {
                    "" => WORK.into(),
                    dir => format!("{WORK}/{dir}"),
                };
                invocation.work_dir = dir;
                if !spec.check.data.is_empty() {
                    invocation.data = Some(Data {
                        notebooks_dir,
                        globs: spec.check.data.clone(),
                    });
                }
                invocation.args = vec![
                    text("-m"),
                    text("nbconvert"),
                    text("--to"),
                    text("notebook"),
                    text("--execute"),
                    text("--config"),
                    Word::InFolder(HOOKS.into()),
                    text("--output-dir"),
                    Word::InFolder(OUT.into()),
                    Word::Text(format!(
                        "--ExecutePreprocessor.timeout={}",
                        spec.check.cell_timeout.as_secs().max(1)
                    )),
                    Word::Text(file.clone()),
                ];
                invocation.staged.push(Staged {
                    path: HOOKS,
                    contents: HOOKS_SCRIPT,
                });
                invocation.work_source =
                    Some(path.parent().unwrap_or(Path::new(".")).to_path_buf());
                invocation.progress = Some(PROGRESS.into());
                invocation.executed = Some(format!("{OUT}/{file}"));
                invocation.notebook = Some((file, spec.check.cell_timeout.as_secs_f64().max(1.0)));
                invocation.env.push((
                    "RUNTIME_MATRIX_PROGRESS".into(),
                    Word::InFolder(PROGRESS.into()),
                ));
            }
            CheckKind::Command { run } => {
                invocation.program = "sh".into();
                invocation.args = vec![text("-c"), text(run)];
            }
            CheckKind::GpuVisible => {
                invocation.args = vec![Word::InFolder("probe.py".into())];
                invocation.staged.push(Staged {
                    path: "probe.py",
                    contents: crate::gpu::PROBE_SCRIPT,
                });
            }
            CheckKind::GpuFramework { framework } => {
                invocation.args = vec![
                    Word::InFolder("framework.py".into()),
                    text(framework),
                    Word::Text(spec.machine.gpus.to_string()),
                ];
                invocation.staged.push(Staged {
                    path: "framework.py",
                    contents: crate::gpu::FRAMEWORK_SCRIPT,
                });
            }
        }
        invocation
    }

    /// The trial as a runner takes it, with the trial folder at `folder`: a notebook is run by
    /// the runner itself (nbclient, as nbconvert does), anything else as a process.
    pub(crate) fn request(&self, folder: &str) -> Request {
        let env = self.env(folder);
        match (&self.notebook, &self.progress, &self.executed) {
            (Some((file, cell_timeout)), Some(progress), Some(executed)) => Request::notebook(
                folder.to_owned(),
                (format!("{}/{file}", self.cwd), self.cwd.clone()),
                env,
                (*cell_timeout, self.deadline),
                progress.clone(),
                executed.clone(),
            )
            .with_parameters(self.parameters.clone()),
            _ => Request::process(folder.to_owned(), self.command(folder), env, self.deadline),
        }
    }

    /// The program and its arguments, with the trial folder at `folder`.
    pub(crate) fn command(&self, folder: &str) -> Vec<String> {
        std::iter::once(self.program.clone())
            .chain(self.args.iter().map(|word| word.render(folder)))
            .collect()
    }

    /// Sets `key` to `value` for the check, over the runtime's environment.
    pub(crate) fn set_env(&mut self, key: &str, value: &str) {
        self.env
            .push((key.to_owned(), Word::Text(value.to_owned())));
    }

    /// The environment, in order (a later entry wins), with the trial folder at `folder`.
    pub(crate) fn env(&self, folder: &str) -> Vec<(String, String)> {
        self.env
            .iter()
            .map(|(key, value)| (key.clone(), value.render(folder)))
            .collect()
    }
}

/// `relative`, a path inside the trial folder at `folder`.
pub(crate) fn in_folder(folder: &str, relative: &str) -> String {
    format!("{folder}/{relative}")
}

/// The folder of one trial inside its container: distinct per trial, so that a container
/// reused by several trials keeps them apart.
pub(crate) fn trial_folder(trial: &str) -> String {
    format!("{CONTAINER_ROOT}/{:016x}", crate::names::folder_key(trial))
}

/// The container of a Docker trial, decided without an engine (`plan` shows it); `None` for
/// other executors. Its command is the trial's `Invocation` under an in-container time limit,
/// because stopping a `docker exec` client does not stop the process.
pub fn trial_container(spec: &TrialSpec) -> Option<ContainerSpec> {
    let Executor::Docker(docker) = &spec.runtime.executor else {
        return None;
    };
    let invocation = Invocation::for_trial(spec, &docker.python);
    Some(container_of(spec, docker, &invocation))
}

/// The container that runs `invocation`, `spec`'s, on a Docker runtime.
pub(crate) fn container_of(
    spec: &TrialSpec,
    docker: &DockerRuntime,
    invocation: &Invocation,
) -> ContainerSpec {
    let gpus = match spec.machine.gpus {
        0 => GpuRequest::None,
        n => GpuRequest::Count(n),
    };
    let folder = trial_folder(&spec.name);
    let mut container = ContainerSpec::new(&docker.image)
        .with_limits(docker.memory, docker.pids, &docker.network)
        .with_gpus(gpus)
        .with_label("runtime-matrix.project", spec.project.to_string())
        .with_label(crate::engine::LABEL_TRIAL, &spec.name);
    for (key, value) in invocation.env(&folder) {
        container = container.with_env(key, value);
    }
    for secret in &docker.secrets {
        container = container.with_secret(secret);
    }
    let deadline = spec.check.timeout.as_secs().max(1).to_string();
    let command = ["timeout", "-s", "KILL", &deadline]
        .map(String::from)
        .into_iter()
        .chain(invocation.command(&folder))
        .collect();
    container.with_command(command, in_folder(&folder, &invocation.cwd))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(name: &str) -> TrialSpec {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let matrix = crate::Matrix::load(&root.join("fixtures/matrices/docker.toml")).unwrap();
        let plan = crate::Plan::new(&matrix, &crate::Selection::default());
        plan.trials.into_iter().find(|t| t.name == name).unwrap()
    }

    #[test]
    fn a_notebook_runs_nbconvert_with_its_hooks_in_the_trial_folder() {
        let spec = trial("base::cpu::nb::passing");
        let invocation = Invocation::for_trial(&spec, "python3");
        let command = invocation.command("/t");
        assert_eq!(
            command[..9],
            [
                "python3",
                "-m",
                "nbconvert",
                "--to",
                "notebook",
                "--execute",
                "--config",
                "/t/hooks.py",
                "--output-dir"
            ]
        );
        assert_eq!(command[9], "/t/out");
        assert_eq!(command.last().map(String::as_str), Some("passing.ipynb"));
        assert_eq!(invocation.executed.as_deref(), Some("out/passing.ipynb"));
        assert_eq!(invocation.staged[0].path, "hooks.py");
        assert!(invocation.staged[0].contents.contains("progress"));
        let env = invocation.env("/t");
        assert_eq!(
            env.last(),
            Some(&(
                "RUNTIME_MATRIX_PROGRESS".to_owned(),
                "/t/progress.jsonl".to_owned()
            ))
        );
    }

    #[test]
    fn a_notebook_runs_in_its_own_folder_of_a_work_folder_that_mirrors_the_notebooks_folder() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let matrix = crate::Matrix::load(&root.join("fixtures/matrices/data.toml")).unwrap();
        let plan = crate::Plan::new(&matrix, &crate::Selection::default());
        let spec = plan
            .trials
            .iter()
            .find(|t| t.name == "docker::cpu::nb::analysis/deeper/again")
            .unwrap();
        let invocation = Invocation::for_trial(spec, "python3");
        let notebooks = root.join("fixtures/data-notebooks");
        assert_eq!(invocation.work_dir, "analysis/deeper");
        assert_eq!(invocation.cwd, "work/analysis/deeper");
        assert_eq!(
            invocation
                .work_source
                .clone()
                .unwrap()
                .canonicalize()
                .unwrap(),
            notebooks.join("analysis/deeper").canonicalize().unwrap()
        );
        let data = invocation.data.clone().unwrap();
        assert_eq!(data.globs, ["data/**", "shared/*.csv"]);
        assert_eq!(
            data.notebooks_dir.canonicalize().unwrap(),
            notebooks.canonicalize().unwrap()
        );
        let request = serde_json::to_value(invocation.request("/t")).unwrap();
        assert_eq!(request["notebook"], "work/analysis/deeper/again.ipynb");
        assert_eq!(request["cwd"], "work/analysis/deeper");
        let container = trial_container(spec).unwrap();
        assert_eq!(
            container.workdir,
            format!("{}/work/analysis/deeper", trial_folder(&spec.name))
        );

        // At the top of the notebooks folder, and without data, as before.
        let spec = trial("base::cpu::nb::passing");
        let invocation = Invocation::for_trial(&spec, "python3");
        assert_eq!(
            (invocation.work_dir.as_str(), invocation.cwd.as_str()),
            ("", "work")
        );
        assert_eq!(invocation.data, None);
        let request = serde_json::to_value(invocation.request("/t")).unwrap();
        assert_eq!(request["notebook"], "work/passing.ipynb");
        assert_eq!(request.get("data"), None);
    }

    #[test]
    fn the_container_runs_the_invocation_under_a_time_limit() {
        let spec = trial("base::cpu::cmd::ok");
        let container = trial_container(&spec).unwrap();
        let folder = trial_folder(&spec.name);
        let invocation = Invocation::for_trial(&spec, "python3");
        assert_eq!(container.command[..3], ["timeout", "-s", "KILL"]);
        assert_eq!(container.command[4..], invocation.command(&folder)[..]);
        assert_eq!(container.workdir, format!("{folder}/work"));
        assert!(folder.starts_with("/runtime-matrix/"), "{folder}");
    }
}
