//! Warm runners: no interpreter or kernel start on a notebook's critical path. The main type is
//! [`Runner`]: one long-lived process per runtime and machine (and GPU lease) in a run, running
//! `runner.py` under the runtime's Python, which takes trials over a unix socket, runs each in
//! its own folder with a fresh kernel taken from a pool started ahead of need, and streams
//! their events back. For a container runtime the runner is its container's main process and
//! the harness reaches its socket through one `docker exec` per process; for a host runtime it
//! is a process of its own, detached so that the other processes of a cargo-nextest run find it.
//!
//! A runner exits by itself once no connection and no trial has been seen for its idle period,
//! so nothing is left behind when no harness process remains to stop it.

mod connection;
pub(crate) mod host;

use crate::error::RunnerError;
use crate::exec::live::lock;
pub(crate) use connection::{Connection, LineWriter};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The runner program, shipped in the crate.
pub(crate) const SCRIPT: &str = include_str!("runner.py");

/// How long a runner may take to start and say hello: an interpreter, its imports and a
/// first kernel in a busy container (the runner itself answers after 60s at most, ready
/// kernel or not).
pub(crate) const START_LIMIT: Duration = Duration::from_secs(90);

/// How long past a trial's deadline the harness waits for the runner's answer before it
/// counts the runner as not answering: the runner kills a trial at its deadline itself.
pub(crate) const ANSWER_GRACE: Duration = Duration::from_secs(4);

/// How long rendering a notebook as HTML may take in the runtime; past it the runtime's
/// nbconvert is stopped and the trial has no HTML.
pub(crate) const RENDER_LIMIT: Duration = Duration::from_secs(30);

/// One trial, as the runner takes it: every path but `folder` is relative to `folder`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Request {
    /// `notebook` or `process`.
    kind: &'static str,
    /// The trial folder.
    folder: String,
    /// The working folder, relative to the trial folder.
    cwd: String,
    /// The trial's own environment, on top of the runner's.
    env: BTreeMap<String, String>,
    /// Seconds the whole trial may take.
    deadline: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    notebook: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cell_timeout: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    progress: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    executed: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    argv: Option<Vec<String>>,
    /// A folder the runner holds (a data set staged once for all its trials) and where in the
    /// trial folder it is copied before the notebook starts: the trial changes only its copy.
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<DataCopy>,
}

/// A folder a runner copies into a trial's folder.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct DataCopy {
    /// Absolute.
    from: String,
    /// Relative to the trial folder.
    to: String,
}

impl Request {
    /// A process run with `argv` in the trial folder's `work/`.
    pub(crate) fn process(
        folder: String,
        argv: Vec<String>,
        env: Vec<(String, String)>,
        deadline: f64,
    ) -> Request {
        Request {
            kind: "process",
            folder,
            cwd: crate::exec::invocation::WORK.into(),
            env: env.into_iter().collect(),
            deadline,
            notebook: None,
            cell_timeout: None,
            progress: None,
            executed: None,
            argv: Some(argv),
            data: None,
        }
    }

    /// A notebook at `notebook` run in `cwd` (both relative to the trial folder), its progress
    /// events appended to `progress` and the executed notebook written to `executed`.
    pub(crate) fn notebook(
        folder: String,
        (notebook, cwd): (String, String),
        env: Vec<(String, String)>,
        timeouts: (f64, f64),
        progress: String,
        executed: String,
    ) -> Request {
        let (cell_timeout, deadline) = timeouts;
        Request {
            kind: "notebook",
            folder,
            cwd,
            env: env.into_iter().collect(),
            deadline,
            notebook: Some(notebook),
            cell_timeout: Some(cell_timeout),
            progress: Some(progress),
            executed: Some(executed),
            argv: None,
            data: None,
        }
    }

    /// The trial with the runner's folder `from` copied into its folder's `to` (relative)
    /// before it starts.
    pub(crate) fn with_data(mut self, from: &str, to: &str) -> Request {
        self.data = Some(DataCopy {
            from: from.to_owned(),
            to: to.to_owned(),
        });
        self
    }

    /// The trial's environment with `key` set to `value`.
    pub(crate) fn with_env(mut self, key: &str, value: &str) -> Request {
        self.env.insert(key.to_owned(), value.to_owned());
        self
    }
}

/// One event a runner sent: a trial started, a cell started or finished, a trial ended; or
/// its hello.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Event {
    #[serde(default)]
    pub(crate) id: Option<String>,
    pub(crate) event: String,
    #[serde(default)]
    pub(crate) phase: Option<String>,
    #[serde(default)]
    pub(crate) index: Option<u64>,
    #[serde(default)]
    pub(crate) time: Option<f64>,
    #[serde(default)]
    pub(crate) exit: Option<i64>,
    #[serde(default)]
    pub(crate) ended: Option<String>,
    #[serde(default)]
    pub(crate) output: Option<String>,
    #[serde(default)]
    pub(crate) message: Option<String>,
    #[serde(default)]
    pub(crate) pid: Option<u32>,
    /// Why a `render` made no HTML.
    #[serde(default)]
    pub(crate) note: Option<String>,
}

/// How a trial on a runner ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Its check ran to the end (the exit code says how).
    Exited,
    /// The runner killed it at its deadline.
    Deadline,
    /// It was cancelled (its harness is going away).
    Cancelled,
}

/// What a runner answered for one trial.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    /// The exit code (1 when a notebook failed); `None` when it was killed.
    pub(crate) exit: Option<i64>,
    pub(crate) ended: Ended,
    /// The check's output, or for a notebook its kernel's and the runner's words.
    pub(crate) output: String,
}

impl From<Event> for Reply {
    fn from(event: Event) -> Reply {
        let ended = match event.ended.as_deref() {
            Some("deadline") => Ended::Deadline,
            Some("cancelled") => Ended::Cancelled,
            _ => Ended::Exited,
        };
        Reply {
            exit: event.exit,
            ended,
            output: event.output.or(event.message).unwrap_or_default(),
        }
    }
}

impl Reply {
    /// How the check ended, as a process would have.
    pub(crate) fn end(&self) -> crate::notebook::ProcessEnd {
        use crate::notebook::ProcessEnd;
        match (self.ended, self.exit) {
            (Ended::Deadline, _) => ProcessEnd::Deadline,
            (_, Some(0)) => ProcessEnd::Success,
            (_, Some(code)) => ProcessEnd::Failed(i32::try_from(code).unwrap_or(-1)),
            (_, None) => ProcessEnd::Failed(-1),
        }
    }
}

/// A started runner, as one harness process holds it.
pub(crate) struct Runner {
    pub(crate) connection: Arc<Connection>,
    /// When this process started it or attached to it.
    pub(crate) ready_at: Instant,
    /// Stops it: asked to end, then made to. Called for a runner this process started,
    /// when the run ends or the runner stopped answering.
    stop: Box<dyn Fn() + Send + Sync>,
    /// Whether this process started it (else another process of the run did).
    pub(crate) owned: bool,
    /// Its container, for a container runtime's.
    pub(crate) container: Option<String>,
    /// Set when its image has no Python: there is no runner, only its container, where
    /// commands run one `docker exec` each.
    pub(crate) bare: bool,
}

impl Runner {
    pub(crate) fn new(
        connection: Arc<Connection>,
        owned: bool,
        stop: Box<dyn Fn() + Send + Sync>,
    ) -> Runner {
        Runner {
            connection,
            ready_at: Instant::now(),
            stop,
            owned,
            container: None,
            bare: false,
        }
    }

    /// A container with no runner in it (its image has no Python), stopped by `stop`.
    pub(crate) fn bare(
        connection: Arc<Connection>,
        id: &str,
        owned: bool,
        stop: Box<dyn Fn() + Send + Sync>,
    ) -> Runner {
        Runner {
            bare: true,
            ..Runner::new(connection, owned, stop).in_container(id)
        }
    }

    /// The runner, running in container `id`.
    pub(crate) fn in_container(mut self, id: &str) -> Runner {
        self.container = Some(id.to_owned());
        self
    }

    /// Says hello with `slots`, the trials this process may run at once on it: when the
    /// runtime has `notebooks`, the runner keeps that many kernels warm, and answers once the
    /// first is ready (its start is the runner's setup, not a notebook's time).
    pub(crate) fn hello(&self, slots: usize, notebooks: bool) -> Result<Event, RunnerError> {
        let kernel = notebooks.then_some("python3");
        self.connection.ask(
            serde_json::json!({"op": "hello", "slots": slots.max(1), "kernel": kernel}),
            START_LIMIT,
        )
    }

    /// Stops it: asked to end, then made to.
    pub(crate) fn stop(&self) {
        (self.stop)();
    }

    /// Renders the notebook at `notebook` in the trial folder `folder` as HTML at `html` (both
    /// relative to `folder`), with the runtime's nbconvert under [`RENDER_LIMIT`]: `Ok(None)`
    /// when it did, else why not.
    pub(crate) fn render(
        &self,
        folder: &str,
        notebook: &str,
        html: &str,
    ) -> Result<Option<String>, RunnerError> {
        let op = serde_json::json!({
            "op": "render", "folder": folder, "notebook": notebook, "html": html,
            "limit": RENDER_LIMIT.as_secs_f64(),
        });
        let answer = self.connection.call(op, RENDER_LIMIT + ANSWER_GRACE)?;
        Ok(match answer.event.as_str() {
            "rendered" => answer.note,
            // An older runner, or a request it refused.
            _ => Some(answer.message.unwrap_or(answer.event)),
        })
    }

    /// Removes a finished trial's folder; nothing waits for it.
    pub(crate) fn remove(&self, folder: &str) {
        let _ = self
            .connection
            .tell(serde_json::json!({"op": "remove", "folder": folder}));
    }
}

/// Where one key's runner is kept; locked while it starts, so that trials wait for one start.
type Slot = Arc<Mutex<Option<Arc<Runner>>>>;

/// The runners of one process, one per key; a runner that died or stopped answering is
/// replaced for the next trial.
#[derive(Default)]
pub(crate) struct Runners {
    slots: Mutex<HashMap<String, Slot>>,
}

impl Runners {
    /// The runner for `key` (it `serves` "runtime `r` on machine `m`"), started by `start`
    /// when there is none (or it ended), saying so on stderr. Also the time this trial spent
    /// waiting for a runner to start, when one started while it waited.
    pub(crate) fn get(
        &self,
        key: &str,
        serves: &str,
        start: impl FnOnce() -> Result<Runner, RunnerError>,
    ) -> Result<(Arc<Runner>, Option<Duration>), RunnerError> {
        let arrived = Instant::now();
        let slot = lock(&self.slots).entry(key.to_owned()).or_default().clone();
        let mut held = lock(&slot);
        if let Some(runner) = held.as_ref()
            && (runner.bare || runner.connection.ended().is_none())
        {
            let waited = (runner.ready_at > arrived).then(|| arrived.elapsed());
            return Ok((runner.clone(), waited));
        }
        if let Some(dead) = held.take() {
            (dead.stop)();
        }
        eprintln!("runtime-matrix: starting the runner for {serves}");
        let runner = Arc::new(start()?);
        let how = match (runner.owned, runner.bare) {
            (_, true) => " (its image has no Python: only commands run there)",
            (false, _) => " (another process of the run started it)",
            (true, false) => "",
        };
        eprintln!(
            "runtime-matrix: the runner for {serves} is ready in {:.1}s{how}",
            arrived.elapsed().as_secs_f64()
        );
        *held = Some(runner.clone());
        Ok((runner, Some(arrived.elapsed())))
    }

    /// Stops `runner` and forgets it, when it is still `key`'s: the next trial gets a new one.
    pub(crate) fn discard(&self, key: &str, runner: &Arc<Runner>) {
        let slot = lock(&self.slots).get(key).cloned();
        if let Some(slot) = slot {
            let mut held = lock(&slot);
            if held.as_ref().is_some_and(|held| Arc::ptr_eq(held, runner)) {
                held.take();
            }
        }
        runner
            .connection
            .end("it stopped answering and was stopped");
        (runner.stop)();
    }

    /// Forgets `key`'s runner without stopping it (its container is kept for inspection).
    pub(crate) fn forget(&self, key: &str) {
        let slot = lock(&self.slots).remove(key);
        if let Some(runner) = slot.and_then(|slot| lock(&slot).take()) {
            runner.connection.end("it was kept");
        }
    }

    /// Stops every runner this process started (the run is over), and lets go of the others.
    pub(crate) fn shutdown(&self) {
        let slots: Vec<_> = lock(&self.slots).drain().map(|(_, slot)| slot).collect();
        for slot in slots {
            if let Some(runner) = lock(&slot).take() {
                if runner.owned {
                    (runner.stop)();
                }
                runner.connection.end("the run is over");
            }
        }
    }
}

/// What makes a runner's key this process's own: nothing under cargo-nextest, whose processes
/// share the run's runners, else this process (two runs given the same run id by hand must
/// not stop each other's runners).
pub(crate) fn scope() -> String {
    match std::env::var_os("NEXTEST_RUN_ID") {
        Some(_) => String::new(),
        None => std::process::id().to_string(),
    }
}

/// A short stable name for `key`, fit for a file or a label.
pub(crate) fn key_name(key: &str) -> String {
    format!("{:016x}", crate::names::folder_key(key))
}
