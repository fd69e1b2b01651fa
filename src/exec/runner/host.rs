//! Host runners: `runner.py` as a process of its own under the runtime's Python, listening on
//! a unix socket under this user's temporary folder. It is detached (its own process group,
//! no parent-death signal), so that the other processes of a cargo-nextest run attach to it
//! rather than start their own: the socket is found by the runner's key, under a file lock.

use super::{Connection, LineWriter, Runner, SCRIPT, START_LIMIT, key_name};
use crate::error::RunnerError;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long a runner asked to stop may take before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// What starting a host runner needs.
pub(crate) struct HostRunner<'a> {
    /// The runtime's interpreter.
    pub(crate) python: &'a Path,
    /// "runtime `r` on machine `m`".
    pub(crate) serves: String,
    /// Its key: the same for every process of the run that needs this runner.
    pub(crate) key: String,
    /// Its environment on top of this process's: its kernels inherit it.
    pub(crate) env: Vec<(String, String)>,
    /// How long it idles before it exits by itself.
    pub(crate) idle: Duration,
    /// The trials this process may run on it at once.
    pub(crate) slots: usize,
    /// Whether the runtime has notebooks: then the runner keeps kernels warm.
    pub(crate) notebooks: bool,
    /// The run it belongs to: it and every process it starts carry `<run>-runner-...` as
    /// their trial token, so that an interrupted run kills them all and tests can find them.
    pub(crate) run_id: String,
}

/// The folder of this user's host runners: sockets, logs, and the kernels' own folders.
fn folder() -> std::io::Result<PathBuf> {
    // SAFETY: getuid cannot fail and touches no memory.
    let uid = unsafe { libc::getuid() };
    let folder = std::env::temp_dir().join(format!("runtime-matrix-runners-{uid}"));
    std::fs::create_dir_all(&folder)?;
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o700))?;
    Ok(folder)
}

/// The runner program as a file, written once per version of it.
fn script(folder: &Path) -> std::io::Result<PathBuf> {
    let path = folder.join(format!("runner-{}.py", key_name(SCRIPT)));
    if !path.exists() {
        let partial = folder.join(format!("runner-{}.partial", std::process::id()));
        std::fs::write(&partial, SCRIPT)?;
        std::fs::rename(&partial, &path)?;
    }
    Ok(path)
}

impl HostRunner<'_> {
    /// The trial token the runner and everything it starts carry.
    pub(crate) fn token(&self) -> String {
        format!("{}-runner-{}", self.run_id, key_name(&self.key))
    }

    /// The runner for this key: the one another process of the run started, or a new one.
    pub(crate) fn start(self) -> Result<Runner, RunnerError> {
        let failed = |reason: String| RunnerError::Start {
            serves: self.serves.clone(),
            reason,
        };
        let folder = folder().map_err(|error| {
            failed(format!(
                "cannot make its folder under {}: {error}",
                std::env::temp_dir().display()
            ))
        })?;
        let name = key_name(&self.key);
        let socket = folder.join(format!("{name}.sock"));
        let log = folder.join(format!("{name}.log"));
        // One process at a time looks for it and starts it.
        let lock = std::fs::File::create(folder.join(format!("{name}.lock")))
            .and_then(|file| file.lock().map(|()| file))
            .map_err(|error| failed(format!("cannot lock {}: {error}", folder.display())))?;
        let (stream, owned) = match UnixStream::connect(&socket) {
            Ok(stream) => (stream, false),
            Err(_) => (self.spawn(&folder, &socket, &log)?, true),
        };
        drop(lock);
        let pid = Arc::new(AtomicU32::new(0));
        let token = self.token();
        let runner = self.connect(stream, owned, &log, pid.clone(), token)?;
        match runner.hello(self.slots, self.notebooks) {
            Ok(hello) => {
                pid.store(hello.pid.unwrap_or(0), Ordering::SeqCst);
                Ok(runner)
            }
            Err(error) => {
                runner.stop();
                Err(error)
            }
        }
    }

    /// Starts the runner process and waits until its socket accepts connections.
    fn spawn(&self, folder: &Path, socket: &Path, log: &Path) -> Result<UnixStream, RunnerError> {
        let failed = |reason: String| RunnerError::Start {
            serves: self.serves.clone(),
            reason,
        };
        let script =
            script(folder).map_err(|error| failed(format!("cannot write its program: {error}")))?;
        let output = std::fs::File::create(log)
            .map_err(|error| failed(format!("cannot create {}: {error}", log.display())))?;
        let root = folder.join(format!("{}.d", key_name(&self.key)));
        let mut command = Command::new(self.python);
        command
            .arg(&script)
            .arg("serve")
            .arg("--socket")
            .arg(socket)
            .arg("--root")
            .arg(&root)
            .arg("--idle")
            .arg(self.idle.as_secs().max(1).to_string())
            .env(crate::exec::process::TOKEN_VAR, self.token())
            .env_remove(crate::exec::process::OWNER_VAR)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(output.try_clone().map_err(|e| failed(e.to_string()))?)
            .stderr(output)
            .process_group(0);
        // Owned by this process, so that the next run reaps it should this one be killed;
        // under cargo-nextest by no process, since the run's others use it: it ends by itself
        // when idle.
        if std::env::var_os("NEXTEST_RUN_ID").is_none() {
            let owner = crate::exec::live::Owner::me();
            command.env(
                crate::exec::process::OWNER_VAR,
                format!("{}:{}", owner.pid, owner.start),
            );
        }
        // An interrupted run kills it, its kernels and their processes: tracked before it
        // starts, and not started at all once the run is interrupted.
        crate::exec::live::track_token(&self.token());
        if let Some(signal) = crate::exec::live::interrupted() {
            return Err(failed(format!("interrupted by signal {signal}")));
        }
        let mut child = command
            .spawn()
            .map_err(|error| failed(format!("cannot run {}: {error}", self.python.display())))?;
        if crate::exec::live::interrupted().is_some() {
            // The clean-up may have come between the check and the start.
            crate::exec::process::sweep(&self.token());
        }
        let start = Instant::now();
        loop {
            if let Ok(stream) = UnixStream::connect(socket) {
                // Reaped when it exits, so that it leaves no zombie while this process lives.
                std::thread::spawn(move || child.wait());
                return Ok(stream);
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(failed(format!(
                    "it exited ({status}) before it was ready:\n{}",
                    log_tail(log)
                )));
            }
            if start.elapsed() > START_LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                return Err(failed(format!(
                    "it was not ready within {}s:\n{}",
                    START_LIMIT.as_secs(),
                    log_tail(log)
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn connect(
        &self,
        stream: UnixStream,
        owned: bool,
        log: &Path,
        pid: Arc<AtomicU32>,
        token: String,
    ) -> Result<Runner, RunnerError> {
        let reading = stream.try_clone().map_err(|error| RunnerError::Start {
            serves: self.serves.clone(),
            reason: error.to_string(),
        })?;
        let mut writing = stream;
        let writer: LineWriter = Box::new(move |line: &[u8]| writing.write_all(line));
        let connection = Arc::new(Connection::new(self.serves.clone(), writer));
        let reader = connection.clone();
        let log = log.to_path_buf();
        std::thread::Builder::new()
            .name("runner-reader".into())
            .spawn(move || {
                for line in BufReader::new(reading).split(b'\n') {
                    match line {
                        Ok(line) => {
                            reader.dispatch(&line);
                        }
                        Err(_) => break,
                    }
                }
                reader.end(format!("its process exited (its log: {})", log.display()));
            })
            .map_err(|error| RunnerError::Start {
                serves: self.serves.clone(),
                reason: error.to_string(),
            })?;
        let stopping = connection.clone();
        // Asked to end, which kills its kernels and trials; made to, should it not answer.
        let stop = Box::new(move || {
            let _ = stopping.tell(serde_json::json!({"op": "shutdown"}));
            stopping.end("it was stopped");
            let pid = pid.load(Ordering::SeqCst) as libc::pid_t;
            let start = Instant::now();
            // SAFETY: kill with signal 0 only asks whether the process exists.
            while pid > 0 && unsafe { libc::kill(pid, 0) } == 0 {
                if start.elapsed() > STOP_GRACE {
                    // SAFETY: a plain signal to a process this user started.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // Whatever it could not stop carries its token.
            crate::exec::process::sweep(&token);
            crate::exec::live::forget_token(&token);
        });
        Ok(Runner::new(connection, owned, stop))
    }
}

/// The last lines of a runner's log, for an error.
fn log_tail(log: &Path) -> String {
    let text = crate::fsx::read_bounded(log, crate::fsx::COLLECTED)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default();
    crate::exec::provision::tail(&crate::sanitise::for_terminal(&text), 20)
}
