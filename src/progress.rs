//! Live progress while trials run. The main type is [`Board`]: the trials running now, when
//! each started, and, for a notebook, the cell it is running and on which runner, as its runner
//! reports cells starting and finishing. A [`Heartbeat`] prints a `SLOW` line on
//! stderr for each trial that has run one period, and again each period after, as
//! cargo-nextest does for slow tests: libtest says nothing of a trial until it ends.
//!
//! The heartbeat's thread is stopped and joined when the [`Heartbeat`] is dropped, which the
//! harness does before it returns: nothing is printed after the run, and no thread outlives it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The trials running now; shared by the trials and the heartbeat.
#[derive(Debug, Default)]
pub(crate) struct Board {
    running: Mutex<BTreeMap<String, Running>>,
}

#[derive(Debug)]
struct Running {
    started: Instant,
    /// When the next line is due, counted from `started`.
    next: Duration,
    /// Whether a line has been said for it.
    said: bool,
    cells: Option<CellWatch>,
    /// The runner it runs on, when known.
    runner: Option<String>,
}

/// Marks a trial as running until it is dropped.
#[must_use = "the trial counts as running until this is dropped"]
pub(crate) struct Begun<'a> {
    board: &'a Board,
    trial: String,
}

impl Drop for Begun<'_> {
    fn drop(&mut self) {
        self.board.lock().remove(&self.trial);
    }
}

impl Board {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Running>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Marks `trial` as running from now, its first line due after `period`.
    pub(crate) fn begin(&self, trial: &str, period: Duration) -> Begun<'_> {
        self.lock().insert(
            trial.to_owned(),
            Running {
                started: Instant::now(),
                next: period,
                said: false,
                cells: None,
                runner: None,
            },
        );
        Begun {
            board: self,
            trial: trial.to_owned(),
        }
    }

    /// Says which runner `trial` runs on, e.g. `runner 1a2b3c4d5e6f`.
    pub(crate) fn runner(&self, trial: &str, runner: &str) {
        if let Some(running) = self.lock().get_mut(trial) {
            running.runner = Some(runner.to_owned());
        }
    }

    /// Says that `trial`'s notebook started (`started` true) or finished cell `index`, at
    /// `time` (Unix seconds).
    pub(crate) fn cell(&self, trial: &str, started: bool, index: u64, time: f64) {
        if let Some(running) = self.lock().get_mut(trial) {
            running
                .cells
                .get_or_insert_with(CellWatch::default)
                .event(started, index, time);
        }
    }

    /// The lines due now, one per trial that has run past its next due time, each with
    /// whether it is the first said of its trial.
    fn due(&self, period: Duration) -> Vec<(bool, String)> {
        let mut lines = Vec::new();
        for (trial, running) in self.lock().iter_mut() {
            let elapsed = running.started.elapsed();
            if elapsed < running.next {
                continue;
            }
            let shown = running.next;
            while running.next <= elapsed {
                running.next += period;
            }
            let cell = running
                .cells
                .as_mut()
                .and_then(CellWatch::running)
                .map(|(index, seconds)| format!(" (cell {index} running for {seconds:.0}s)"))
                .unwrap_or_default();
            let first = !std::mem::replace(&mut running.said, true);
            let on = running
                .runner
                .as_ref()
                .map(|runner| format!(" on {runner}"))
                .unwrap_or_default();
            lines.push((
                first,
                format!(
                    "runtime-matrix: SLOW [>{:>4}s] {trial}{on}{cell}",
                    shown.as_secs()
                ),
            ));
        }
        lines
    }
}

/// The cell a notebook is running, as its runner reports cells starting and finishing.
#[derive(Debug, Default)]
struct CellWatch {
    /// The cell started and not yet done: its 0-based index and when it started (Unix time).
    current: Option<(u64, f64)>,
}

impl CellWatch {
    /// The running cell and for how many seconds it has run; `None` between cells, or before
    /// the first.
    fn running(&mut self) -> Option<(u64, f64)> {
        let (index, started) = self.current?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        Some((index, (now - started).max(0.0)))
    }

    /// Takes in a cell's start (`started` true) or end.
    fn event(&mut self, started: bool, index: u64, time: f64) {
        if started {
            self.current = Some((index, time));
        } else if self.current.is_some_and(|(i, _)| i == index) {
            self.current = None;
        }
    }
}

/// Prints the [`Board`]'s due lines on stderr from a thread of its own, until dropped.
#[derive(Debug)]
pub(crate) struct Heartbeat {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Heartbeat {
    /// Starts printing `board`'s trials that have run `period`, each `period`; `None` when
    /// the thread cannot be started (the run goes on without it). With `one_at_a_time`, libtest
    /// has left `test NAME ... ` open on the terminal until the trial ends: a trial's first
    /// line starts on a line of its own.
    pub(crate) fn start(
        board: Arc<Board>,
        period: Duration,
        one_at_a_time: bool,
    ) -> Option<Heartbeat> {
        let (stop, stopped) = mpsc::channel::<()>();
        // Often enough that a line is at most a quarter period late.
        let tick = (period / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
        let thread = std::thread::Builder::new()
            .name("heartbeat".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
                    // After a signal the trials are being stopped, and the clean-up speaks.
                    if crate::exec::interrupted().is_some() {
                        break;
                    }
                    for (first, line) in board.due(period) {
                        let open = if first && one_at_a_time { "\n" } else { "" };
                        eprintln!("{open}{line}");
                    }
                }
            })
            .ok()?;
        Some(Heartbeat {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        // Dropping the sender wakes the thread at once; it holds no lock across a wait.
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trial_is_said_once_per_period_after_its_first_and_not_after_it_ends() {
        let board = Board::default();
        let period = Duration::from_millis(200);
        let begun = board.begin("rt::cpu::nb::slow", period);
        assert!(board.due(period).is_empty());
        std::thread::sleep(Duration::from_millis(250));
        let line = "runtime-matrix: SLOW [>   0s] rt::cpu::nb::slow";
        assert_eq!(board.due(period), [(true, line.to_owned())]);
        // Not again within the same period, and not as the first again.
        assert!(board.due(period).is_empty());
        std::thread::sleep(Duration::from_millis(200));
        assert!(matches!(board.due(period).as_slice(), [(false, _)]));
        drop(begun);
        std::thread::sleep(Duration::from_millis(250));
        assert!(board.due(period).is_empty());
    }

    #[test]
    fn the_running_cell_is_the_last_started_and_not_yet_done() {
        let board = Board::default();
        let period = Duration::from_millis(100);
        let _begun = board.begin("rt::cpu::nb::slow", period);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        board.runner("rt::cpu::nb::slow", "runner 1a2b3c4d5e6f");
        board.runner("rt::cpu::nb::slow", "runner 1a2b3c4d5e6f");
        board.cell("rt::cpu::nb::slow", true, 0, now);
        board.cell("rt::cpu::nb::slow", false, 0, now);
        board.cell("rt::cpu::nb::slow", true, 1, now - 3.0);
        // A late end of another cell does not end the running one.
        board.cell("rt::cpu::nb::slow", false, 0, now);
        std::thread::sleep(Duration::from_millis(150));
        let lines = board.due(period);
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0]
                .1
                .ends_with("rt::cpu::nb::slow on runner 1a2b3c4d5e6f (cell 1 running for 3s)"),
            "{lines:?}"
        );
        board.cell("rt::cpu::nb::slow", false, 1, now);
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            board.due(period)[0]
                .1
                .ends_with("rt::cpu::nb::slow on runner 1a2b3c4d5e6f")
        );
        // A trial not on the board is not put there by its cells.
        board.cell("other", true, 0, now);
        assert_eq!(board.lock().len(), 1);
    }

    #[test]
    fn the_heartbeat_stops_at_once_when_dropped() {
        let board = Arc::new(Board::default());
        let heartbeat = Heartbeat::start(board, Duration::from_secs(3600), false).unwrap();
        let start = Instant::now();
        drop(heartbeat);
        assert!(start.elapsed() < Duration::from_millis(500));
    }
}
