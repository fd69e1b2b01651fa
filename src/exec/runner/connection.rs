//! One client connection to a runner. The main type is [`Connection`]: it writes requests as
//! JSON lines and routes the runner's events, read by a reader of the transport's own (a
//! thread for a socket, a task for a container's exec stream), to the trial that waits for them.

use super::{Event, Reply, Request, RunnerError};
use crate::exec::live::lock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

/// Writes one whole line to the runner, or fails.
pub(crate) type LineWriter = Box<dyn FnMut(&[u8]) -> std::io::Result<()> + Send>;

/// A connection to one runner, shared by the trials of a process that run on it.
pub(crate) struct Connection {
    /// What the runner serves, for messages: "runtime `r` on machine `m`".
    pub(crate) serves: String,
    writer: Mutex<Option<LineWriter>>,
    waiting: Mutex<HashMap<String, mpsc::Sender<Event>>>,
    /// Why the connection ended; set once.
    ended: Mutex<Option<String>>,
    next: AtomicU64,
}

impl Connection {
    pub(crate) fn new(serves: String, writer: LineWriter) -> Connection {
        Connection {
            serves,
            writer: Mutex::new(Some(writer)),
            waiting: Mutex::default(),
            ended: Mutex::default(),
            next: AtomicU64::new(1),
        }
    }

    /// Takes in one line the runner wrote; the reader calls it for each. False when it is not
    /// an event (what the transport itself said, e.g. that the runner's program is missing).
    pub(crate) fn dispatch(&self, line: &[u8]) -> bool {
        let Ok(event) = serde_json::from_slice::<Event>(line) else {
            return false;
        };
        // A trial's events carry its id; an answer to a question (`hello`) is named by its event.
        let id = event.id.clone().unwrap_or_else(|| event.event.clone());
        let sender = lock(&self.waiting).get(&id).cloned();
        if let Some(sender) = sender {
            let _ = sender.send(event);
        }
        true
    }

    /// Marks the connection as ended, for `reason`: every trial waiting on it stops waiting.
    pub(crate) fn end(&self, reason: impl Into<String>) {
        let mut ended = lock(&self.ended);
        if ended.is_none() {
            *ended = Some(reason.into());
        }
        drop(ended);
        lock(&self.writer).take();
        lock(&self.waiting).clear();
    }

    /// Why the connection ended, if it did.
    pub(crate) fn ended(&self) -> Option<String> {
        lock(&self.ended).clone()
    }

    fn send(&self, request: &serde_json::Value) -> Result<(), RunnerError> {
        let mut line = serde_json::to_vec(request).unwrap_or_default();
        line.push(b'\n');
        let mut writer = lock(&self.writer);
        let result = match writer.as_mut() {
            Some(write) => write(&line),
            None => return Err(self.gone()),
        };
        drop(writer);
        result.map_err(|error| {
            self.end(format!("writing to it failed: {error}"));
            self.gone()
        })
    }

    fn gone(&self) -> RunnerError {
        RunnerError::Gone {
            serves: self.serves.clone(),
            reason: self
                .ended()
                .unwrap_or_else(|| "its connection closed".into()),
        }
    }

    /// Sends `op` and waits up to `wait` for the event named as the op that answers it
    /// (`hello`). One question of a kind at a time.
    pub(crate) fn ask(&self, op: serde_json::Value, wait: Duration) -> Result<Event, RunnerError> {
        let id = op["op"].as_str().unwrap_or_default().to_owned();
        let receiver = self.register(&id)?;
        self.send(&op)?;
        let answer = receiver.recv_timeout(wait);
        lock(&self.waiting).remove(&id);
        match answer {
            Ok(event) => Ok(event),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(self.gone()),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(RunnerError::Silent {
                serves: self.serves.clone(),
                waited: wait,
            }),
        }
    }

    /// Sends `op` as a request of its own (it gets an id) and waits up to `wait` for the
    /// first event with that id, which answers it; several may be asked at once.
    pub(crate) fn call(
        &self,
        mut op: serde_json::Value,
        wait: Duration,
    ) -> Result<Event, RunnerError> {
        let id = format!("t{}", self.next.fetch_add(1, Ordering::Relaxed));
        let receiver = self.register(&id)?;
        op["id"] = id.clone().into();
        let answer = self
            .send(&op)
            .and_then(|()| match receiver.recv_timeout(wait) {
                Ok(event) => Ok(event),
                Err(mpsc::RecvTimeoutError::Disconnected) => Err(self.gone()),
                Err(mpsc::RecvTimeoutError::Timeout) => Err(RunnerError::Silent {
                    serves: self.serves.clone(),
                    waited: wait,
                }),
            });
        lock(&self.waiting).remove(&id);
        answer
    }

    /// Sends `op`, which has no answer.
    pub(crate) fn tell(&self, op: serde_json::Value) -> Result<(), RunnerError> {
        self.send(&op)
    }

    fn register(&self, id: &str) -> Result<mpsc::Receiver<Event>, RunnerError> {
        let (sender, receiver) = mpsc::channel();
        // Registered under the lock `end` clears, after checking it has not ended: an event
        // channel is never left waiting on a dead connection.
        let mut waiting = lock(&self.waiting);
        if self.ended().is_some() {
            return Err(self.gone());
        }
        waiting.insert(id.to_owned(), sender);
        Ok(receiver)
    }

    /// Runs `request` and waits for its end, up to `wait`; `on_event` sees every event of the
    /// trial as it comes (cells starting and finishing). Past `wait` the trial is cancelled and
    /// the runner counts as not answering.
    pub(crate) fn run(
        &self,
        request: &Request,
        wait: Duration,
        mut on_event: impl FnMut(&Event),
    ) -> Result<Reply, RunnerError> {
        let id = format!("t{}", self.next.fetch_add(1, Ordering::Relaxed));
        let receiver = self.register(&id)?;
        let mut op = serde_json::to_value(request).unwrap_or_default();
        op["op"] = "run".into();
        op["id"] = id.clone().into();
        if let Err(error) = self.send(&op) {
            lock(&self.waiting).remove(&id);
            return Err(error);
        }
        let deadline = Instant::now() + wait;
        let result = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match receiver.recv_timeout(left) {
                Ok(event) if event.event == "end" => break Ok(Reply::from(event)),
                Ok(event) => on_event(&event),
                Err(mpsc::RecvTimeoutError::Disconnected) => break Err(self.gone()),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = self.tell(serde_json::json!({"op": "cancel", "id": id}));
                    break Err(RunnerError::Silent {
                        serves: self.serves.clone(),
                        waited: wait,
                    });
                }
            }
        };
        lock(&self.waiting).remove(&id);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A connection whose writer hands each line to `lines`.
    fn connection() -> (Arc<Connection>, mpsc::Receiver<serde_json::Value>) {
        let (sender, lines) = mpsc::channel();
        let writer: LineWriter = Box::new(move |line: &[u8]| {
            let _ = sender.send(serde_json::from_slice(line).unwrap());
            Ok(())
        });
        (
            Arc::new(Connection::new("runtime `r`".into(), writer)),
            lines,
        )
    }

    fn request() -> Request {
        Request::process("/t".into(), vec!["true".into()], Vec::new(), 5.0)
    }

    #[test]
    fn routes_events_to_their_trial_and_ends_at_the_end_event() {
        let (connection, lines) = connection();
        let runner = connection.clone();
        let answer = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let reply = runner.run(&request(), Duration::from_secs(5), |event| {
                seen.push(event.event.clone())
            });
            (reply, seen)
        });
        let sent = lines.recv().unwrap();
        assert_eq!(sent["op"], "run");
        let id = sent["id"].as_str().unwrap().to_owned();
        connection.dispatch(br#"{"id":"other","event":"end","exit":3}"#);
        connection.dispatch(format!(r#"{{"id":"{id}","event":"started"}}"#).as_bytes());
        connection.dispatch(
            format!(r#"{{"id":"{id}","event":"end","exit":0,"ended":"exited","output":"hi"}}"#)
                .as_bytes(),
        );
        let (reply, seen) = answer.join().unwrap();
        let reply = reply.unwrap();
        assert_eq!((reply.exit, reply.output.as_str()), (Some(0), "hi"));
        assert_eq!(seen, ["started"]);
    }

    #[test]
    fn a_call_gets_the_answer_with_its_own_id() {
        let (connection, lines) = connection();
        let runner = connection.clone();
        let answer = std::thread::spawn(move || {
            runner.call(
                serde_json::json!({"op": "render", "folder": "/t"}),
                Duration::from_secs(5),
            )
        });
        let sent = lines.recv().unwrap();
        assert_eq!(
            (&sent["op"], &sent["folder"]),
            (&"render".into(), &"/t".into())
        );
        let id = sent["id"].as_str().unwrap().to_owned();
        connection.dispatch(br#"{"id":"other","event":"rendered","note":"not this one"}"#);
        connection.dispatch(
            format!(r#"{{"id":"{id}","event":"rendered","note":"nbconvert is not installed"}}"#)
                .as_bytes(),
        );
        let event = answer.join().unwrap().unwrap();
        assert_eq!(event.note.as_deref(), Some("nbconvert is not installed"));
    }

    #[test]
    fn a_connection_that_ends_fails_the_trials_waiting_on_it() {
        let (connection, lines) = connection();
        let runner = connection.clone();
        let answer =
            std::thread::spawn(move || runner.run(&request(), Duration::from_secs(30), |_| {}));
        lines.recv().unwrap();
        connection.end("its container is gone");
        let error = answer.join().unwrap().unwrap_err();
        assert_eq!(
            error.to_string(),
            "the runner for runtime `r` stopped: its container is gone"
        );
        // Later trials fail at once.
        let error = connection
            .run(&request(), Duration::from_secs(30), |_| {})
            .unwrap_err();
        assert!(matches!(error, RunnerError::Gone { .. }), "{error}");
    }

    #[test]
    fn a_runner_that_does_not_answer_in_time_is_silent_and_the_trial_is_cancelled() {
        let (connection, lines) = connection();
        let error = connection
            .run(&request(), Duration::from_millis(50), |_| {})
            .unwrap_err();
        assert!(matches!(error, RunnerError::Silent { .. }), "{error}");
        let _run = lines.recv().unwrap();
        assert_eq!(lines.recv().unwrap()["op"], "cancel");
    }
}
