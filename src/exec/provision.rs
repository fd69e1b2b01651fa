//! Making a runtime's Python able to execute notebooks. The main type is [`Provisioner`].
//!
//! A host runtime names an interpreter and, optionally, pip packages. When the interpreter
//! already has nbconvert and ipykernel and no packages are asked for, it is used as it is.
//! Otherwise a virtualenv is created for it under the cache folder, once: its name hashes the
//! interpreter, its version and the packages, and a file lock keeps parallel trials and
//! parallel processes (cargo-nextest) from building it twice. Provisioning is setup, not trial
//! time: [`Provisioner::python`] says how long each call spent on it, doing it or waiting.

use super::process::{self, Ended};
use crate::error::ProvisionError;
use crate::record::{SetupKind, SetupStep};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PROBE: &str = "import sys, importlib.util as u\n\
print(sys.executable)\n\
print('%d.%d.%d' % sys.version_info[:3])\n\
print(all(u.find_spec(m) for m in ('nbconvert', 'nbclient', 'ipykernel')))";
const REQUIRED: [&str; 2] = ["nbconvert", "ipykernel"];
const READY_MARKER: &str = ".runtime-matrix-ready";

/// An interpreter, the packages it must have, and whether it must run notebooks.
type PythonKey = (String, Vec<String>, bool);

/// An interpreter resolved for a [`PythonKey`].
#[derive(Debug, Clone)]
struct Resolved {
    python: PathBuf,
    /// The virtualenv's folder and when this process finished provisioning it (or waiting for
    /// another process to); `None` when nothing had to be provisioned.
    provisioned: Option<(String, Instant)>,
}

/// Resolves each runtime's Python once per process.
#[derive(Debug)]
pub struct Provisioner {
    cache: PathBuf,
    /// One slot per key, locked while it is resolved, so that trials needing the same
    /// interpreter wait for a single install and trials needing another do not.
    resolved: Mutex<HashMap<PythonKey, Arc<Mutex<Option<Resolved>>>>>,
    /// Provisioning done before any trial asked (for a result reuse key): the first trial of
    /// the key to ask is given it as its setup, so that the reports still show it.
    unclaimed: Mutex<HashMap<PythonKey, SetupStep>>,
}

impl Provisioner {
    /// A provisioner keeping its virtualenvs under `cache`.
    pub fn new(cache: PathBuf) -> Provisioner {
        Provisioner {
            cache,
            resolved: Mutex::new(HashMap::new()),
            unclaimed: Mutex::new(HashMap::new()),
        }
    }

    /// The interpreter to run `runtime`'s checks with, provisioning it if needed: when
    /// `jupyter` is set (the runtime has notebooks) it must have nbconvert and ipykernel.
    /// With it, the provisioning this call did or waited for (its own seconds on it): `None`
    /// when the interpreter was ready before the call.
    pub fn python(
        &self,
        runtime: &str,
        python: &str,
        packages: &[String],
        jupyter: bool,
    ) -> Result<(PathBuf, Option<SetupStep>), ProvisionError> {
        let start = Instant::now();
        let key = (python.to_owned(), packages.to_vec(), jupyter);
        let slot = self
            .resolved
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        // Held while provisioning: another trial of the same key waits here.
        let mut slot = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let resolved = match &*slot {
            Some(resolved) => resolved.clone(),
            None => slot
                .insert(self.provision(runtime, python, packages, jupyter)?)
                .clone(),
        };
        // A provisioning that ended after this call began is one this call did or waited for.
        let step = resolved
            .provisioned
            .filter(|(_, ended)| *ended >= start)
            .map(|(venv, _)| SetupStep {
                kind: SetupKind::Provision,
                subject: venv,
                seconds: start.elapsed().as_secs_f64(),
            });
        let step = step.or_else(|| {
            self.unclaimed
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .remove(&key)
        });
        Ok((resolved.python, step))
    }

    /// [`Provisioner::python`] outside any trial: the provisioning it did or waited for is
    /// handed to the first trial that asks for the same interpreter.
    pub fn python_before_trials(
        &self,
        runtime: &str,
        python: &str,
        packages: &[String],
        jupyter: bool,
    ) -> Result<PathBuf, ProvisionError> {
        let (found, step) = self.python(runtime, python, packages, jupyter)?;
        if let Some(step) = step {
            self.unclaimed
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert((python.to_owned(), packages.to_vec(), jupyter), step);
        }
        Ok(found)
    }

    fn provision(
        &self,
        runtime: &str,
        python: &str,
        packages: &[String],
        jupyter: bool,
    ) -> Result<Resolved, ProvisionError> {
        let python_error = |detail: String| ProvisionError::Python {
            runtime: runtime.to_owned(),
            python: python.to_owned(),
            detail,
        };
        let mut probe = Command::new(python);
        probe.args(["-c", PROBE]);
        let token = unique_token("probe");
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
            return Ok(Resolved {
                python: PathBuf::from(executable),
                provisioned: None,
            });
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
        // Busy: another process (cargo-nextest runs one per trial) is provisioning it.
        let waited = match lock.try_lock() {
            Ok(()) => false,
            Err(std::fs::TryLockError::WouldBlock) => {
                lock.lock().map_err(|error| ProvisionError::Cache {
                    path: lock_path.clone(),
                    error,
                })?;
                true
            }
            Err(std::fs::TryLockError::Error(error)) => {
                return Err(ProvisionError::Cache {
                    path: lock_path.clone(),
                    error,
                });
            }
        };
        let subject = venv.display().to_string();
        if venv.join(READY_MARKER).exists() {
            return Ok(Resolved {
                python: venv_python,
                provisioned: waited.then(|| (subject, Instant::now())),
            });
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
        installed.map(|()| Resolved {
            python: venv_python,
            provisioned: Some((subject, Instant::now())),
        })
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

/// A token of this process's own for one probe or provisioning step: at its end everything
/// carrying it is killed, so two running at once (runtimes of other packages provisioning side by
/// side) must not share one, or the first to finish kills the other.
pub(super) fn unique_token(what: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{what}-{}-{n}", std::process::id())
}

fn step(command: Command, deadline: Duration, name: &str) -> Result<(), (String, String)> {
    let token = unique_token("provision");
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Runtimes with other interpreters probe side by side; the first probe to end must not
    /// kill the others (it did when they shared a token).
    #[test]
    fn probes_of_other_interpreters_side_by_side_all_succeed() {
        let python = which_python3();
        let dir = tempfile::tempdir().unwrap();
        let provisioner = Provisioner::new(dir.path().join("cache"));
        let spellings: Vec<String> = (0..6)
            .map(|i| {
                let link = dir.path().join(format!("python-{i}"));
                std::os::unix::fs::symlink(&python, &link).unwrap();
                link.to_string_lossy().into_owned()
            })
            .collect();
        std::thread::scope(|scope| {
            let calls: Vec<_> = spellings
                .iter()
                .map(|spelling| {
                    let provisioner = &provisioner;
                    scope.spawn(move || provisioner.python("rt", spelling, &[], false).map(drop))
                })
                .collect();
            for call in calls {
                call.join().unwrap().unwrap();
            }
        });
    }

    fn which_python3() -> PathBuf {
        let output = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .unwrap();
        PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
    }
}
