//! Live progress while trials run. The main type is [`Board`]: the trials running now, when
//! each started, and, for a host notebook, the cell it is running, read from the events the
//! nbconvert hooks append to its `progress.jsonl`. A [`Heartbeat`] prints a `SLOW` line on
//! stderr for each trial that has run one period, and again each period after, as
//! cargo-nextest does for slow tests: libtest says nothing of a trial until it ends.
//!
//! The heartbeat's thread is stopped and joined when the [`Heartbeat`] is dropped, which the
//! harness does before it returns: nothing is printed after the run, and no thread outlives it.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The most of a progress file read per trial per tick: a cell's `done` event carries its
/// outputs, which may be large; the rest is read on the next ticks.
const READ_PER_TICK: u64 = 4 << 20;
/// The start of an event line kept to parse it: the event, index and time come first.
const HEAD: usize = 160;

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
            },
        );
        Begun {
            board: self,
            trial: trial.to_owned(),
        }
    }

    /// Says that `trial`'s notebook reports its cells' start and end to the file at `path`.
    pub(crate) fn watch_cells(&self, trial: &str, path: PathBuf) {
        if let Some(running) = self.lock().get_mut(trial) {
            running.cells = Some(CellWatch::new(path));
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
            lines.push((
                first,
                format!(
                    "runtime-matrix: SLOW [>{:>4}s] {trial}{cell}",
                    shown.as_secs()
                ),
            ));
        }
        lines
    }
}

/// Follows a notebook's progress events, reading only what was appended since the last look.
#[derive(Debug)]
struct CellWatch {
    path: PathBuf,
    offset: u64,
    /// The start of the line being read.
    head: Vec<u8>,
    /// The cell started and not yet done: its 0-based index and when it started (Unix time).
    current: Option<(u64, f64)>,
}

impl CellWatch {
    fn new(path: PathBuf) -> CellWatch {
        CellWatch {
            path,
            offset: 0,
            head: Vec::new(),
            current: None,
        }
    }

    /// The running cell and for how many seconds it has run; `None` between cells, or before
    /// the first.
    fn running(&mut self) -> Option<(u64, f64)> {
        self.read();
        let (index, started) = self.current?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        Some((index, (now - started).max(0.0)))
    }

    fn read(&mut self) {
        // The file appears when the first cell starts; until then there is nothing to say.
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return;
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut chunk = Vec::new();
        let Ok(read) = file.take(READ_PER_TICK).read_to_end(&mut chunk) else {
            return;
        };
        self.offset += read as u64;
        for &byte in &chunk {
            if byte == b'\n' {
                let head = std::mem::take(&mut self.head);
                self.event(&String::from_utf8_lossy(&head));
            } else if self.head.len() < HEAD {
                self.head.push(byte);
            }
        }
    }

    /// Takes in one event line's head: `{"event": "start", "index": 3, "time": 1.5, ...`
    /// as the hooks write it.
    fn event(&mut self, head: &str) {
        let field = |name: &str| {
            let rest = &head[head.find(&format!("\"{name}\": "))? + name.len() + 4..];
            let end = rest.find([',', '}']).unwrap_or(rest.len());
            Some(rest[..end].trim().to_owned())
        };
        let index = field("index").and_then(|index| index.parse::<u64>().ok());
        match (field("event").as_deref(), index) {
            (Some("\"start\""), Some(index)) => {
                let time = field("time").and_then(|time| time.parse().ok());
                self.current = time.map(|time| (index, time));
            }
            (Some("\"done\""), Some(index)) if self.current.is_some_and(|(i, _)| i == index) => {
                self.current = None;
            }
            _ => {}
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
    fn the_running_cell_comes_from_the_last_start_not_yet_done() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("progress.jsonl");
        let mut watch = CellWatch::new(path.clone());
        assert_eq!(watch.running(), None);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let big = "x".repeat(10_000);
        let text = format!(
            "{{\"event\": \"start\", \"index\": 0, \"time\": {now}}}\n\
             {{\"event\": \"done\", \"index\": 0, \"time\": {now}, \"cell\": {{\"source\": \"{big}\"}}}}\n\
             {{\"event\": \"start\", \"index\": 1, \"time\": {}}}\n",
            now - 3.0
        );
        std::fs::write(&path, &text).unwrap();
        let (index, seconds) = watch.running().unwrap();
        assert_eq!(index, 1);
        assert!((3.0..10.0).contains(&seconds), "{seconds}");
        // A done event written in two pieces ends the cell once its line is complete.
        let done =
            format!("{{\"event\": \"done\", \"index\": 1, \"time\": {now}, \"cell\": {{}}}}");
        let (first, second) = done.split_at(20);
        std::fs::write(&path, format!("{text}{first}")).unwrap();
        assert_eq!(watch.running().map(|(i, _)| i), Some(1));
        std::fs::write(&path, format!("{text}{first}{second}\n")).unwrap();
        assert_eq!(watch.running(), None);
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
