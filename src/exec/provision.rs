//! Making a runtime's Python able to execute notebooks. The main type is [`Provisioner`].
//!
//! A host runtime names an interpreter and, optionally, pip packages. When the interpreter
//! already has nbconvert and ipykernel and no packages are asked for, it is used as it is.
//! Otherwise a virtualenv is created for it under the cache folder, once: its name hashes the
//! interpreter, its version and the packages, and a file lock keeps parallel trials and
//! parallel processes (cargo-nextest) from building it twice.

use super::process::{self, Ended};
use crate::error::ProvisionError;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const PROBE: &str = "import sys, importlib.util as u\n\
print(sys.executable)\n\
print('%d.%d.%d' % sys.version_info[:3])\n\
print(all(u.find_spec(m) for m in ('nbconvert', 'nbclient', 'ipykernel')))";
const REQUIRED: [&str; 2] = ["nbconvert", "ipykernel"];
const READY_MARKER: &str = ".runtime-matrix-ready";

/// An interpreter, the packages it must have, and whether it must run notebooks.
type PythonKey = (String, Vec<String>, bool);

/// Resolves each runtime's Python once per process.
#[derive(Debug)]
pub struct Provisioner {
    cache: PathBuf,
    resolved: Mutex<HashMap<PythonKey, PathBuf>>,
}

impl Provisioner {
    /// A provisioner keeping its virtualenvs under `cache`.
    pub fn new(cache: PathBuf) -> Provisioner {
        Provisioner {
            cache,
            resolved: Mutex::new(HashMap::new()),
        }
    }

    /// The interpreter to run `runtime`'s checks with, provisioning it if needed: when
    /// `jupyter` is set (the runtime has notebooks) it must have nbconvert and ipykernel.
    pub fn python(
        &self,
        runtime: &str,
        python: &str,
        packages: &[String],
        jupyter: bool,
    ) -> Result<PathBuf, ProvisionError> {
        let key = (python.to_owned(), packages.to_vec(), jupyter);
        // Held while provisioning, so that trials of one runtime wait for a single install.
        let mut resolved = self
            .resolved
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(path) = resolved.get(&key) {
            return Ok(path.clone());
        }
        let path = self.provision(runtime, python, packages, jupyter)?;
        resolved.insert(key, path.clone());
        Ok(path)
    }

    fn provision(
        &self,
        runtime: &str,
        python: &str,
        packages: &[String],
        jupyter: bool,
    ) -> Result<PathBuf, ProvisionError> {
        let python_error = |detail: String| ProvisionError::Python {
            runtime: runtime.to_owned(),
            python: python.to_owned(),
            detail,
        };
        let mut probe = Command::new(python);
        probe.args(["-c", PROBE]);
        let token = format!("probe-{}", std::process::id());
        let finished = process::run(probe, Duration::from_secs(60), &token)
            .map_err(|e| python_error(e.to_string()))?;
        let lines: Vec<&str> = finished.output.lines().collect();
        let [executable, version, ready] = lines.as_slice() else {
            return Err(python_error(format!(
                "unexpected probe output: {}",
                tail(&finished.output, 5)
            )));
        };
        if finished.ended != Ended::Exited(0) {
            return Err(python_error(tail(&finished.output, 5)));
        }
        if packages.is_empty() && (*ready == "True" || !jupyter) {
            return Ok(PathBuf::from(executable));
        }

        let mut wanted: Vec<String> = REQUIRED
            .iter()
            .map(|p| p.to_string())
            .chain(packages.iter().cloned())
            .collect();
        wanted.sort();
        wanted.dedup();
        let key =
            crate::names::folder_key(&format!("{executable}\n{version}\n{}", wanted.join("\n")));
        let venvs = self.cache.join("venvs");
        let venv = venvs.join(format!("py{version}-{key:016x}"));
        let venv_python = venv.join("bin").join("python");
        std::fs::create_dir_all(&venvs).map_err(|error| ProvisionError::Cache {
            path: venvs.clone(),
            error,
        })?;
        let lock_path = venv.with_extension("lock");
        let lock = std::fs::File::create(&lock_path).map_err(|error| ProvisionError::Cache {
            path: lock_path.clone(),
            error,
        })?;
        lock.lock().map_err(|error| ProvisionError::Cache {
            path: lock_path.clone(),
            error,
        })?;
        if venv.join(READY_MARKER).exists() {
            return Ok(venv_python);
        }

        eprintln!(
            "runtime-matrix: provisioning a virtualenv for runtime `{runtime}` (python {version}; {}) in {}; later runs reuse it",
            wanted.join(", "),
            venv.display()
        );
        let start = Instant::now();
        let installed = install(runtime, executable, &venv, &wanted);
        // Said on failure too: a trial waiting on it has been silent as long.
        match &installed {
            Ok(()) => eprintln!(
                "runtime-matrix: virtualenv for runtime `{runtime}` is ready, provisioned in {:.1?}",
                start.elapsed()
            ),
            Err(_) => eprintln!(
                "runtime-matrix: provisioning the virtualenv for runtime `{runtime}` failed after {:.1?}",
                start.elapsed()
            ),
        }
        installed.map(|()| venv_python)
    }
}

/// Creates the virtualenv at `venv` with `executable` and installs `wanted` in it, then marks
/// it ready.
fn install(
    runtime: &str,
    executable: &str,
    venv: &Path,
    wanted: &[String],
) -> Result<(), ProvisionError> {
    let venv_python = venv.join("bin").join("python");
    let _ = std::fs::remove_dir_all(venv);
    let install_error = |step: &str, output: &str| ProvisionError::Install {
        runtime: runtime.to_owned(),
        step: step.to_owned(),
        venv: venv.to_path_buf(),
        output: tail(output, 20),
    };
    let mut create = Command::new(executable);
    create.arg("-m").arg("venv").arg(venv);
    step(create, Duration::from_secs(300), "python -m venv")
        .map_err(|(s, o)| install_error(&s, &o))?;
    let mut install = Command::new(&venv_python);
    install
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--progress-bar",
            "off",
        ])
        .args(wanted);
    step(install, Duration::from_secs(1800), "pip install")
        .map_err(|(s, o)| install_error(&s, &o))?;
    let marker = venv.join(READY_MARKER);
    std::fs::write(&marker, wanted.join("\n")).map_err(|error| ProvisionError::Cache {
        path: marker,
        error,
    })?;
    Ok(())
}

fn step(command: Command, deadline: Duration, name: &str) -> Result<(), (String, String)> {
    let token = format!("provision-{}", std::process::id());
    match process::run(command, deadline, &token) {
        Ok(finished) if finished.ended == Ended::Exited(0) => Ok(()),
        Ok(finished) if finished.ended == Ended::Deadline => Err((
            name.to_owned(),
            format!(
                "timed out after {}\n{}",
                humantime::format_duration(deadline),
                finished.output
            ),
        )),
        Ok(finished) => Err((name.to_owned(), finished.output)),
        Err(error) => Err((name.to_owned(), error.to_string())),
    }
}

/// The last `lines` lines of `text`.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.trim_end().lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The default cache folder for a matrix at `root`.
pub fn default_cache(out_root: &Path) -> PathBuf {
    out_root.join("cache")
}
