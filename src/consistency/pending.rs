//! Waiting, in one process, for the notebook trials a consistency check compares. The main
//! type is [`Pending`]: a count per notebook check of the trials that have not ended, which
//! each trial lowers when its record is written ([`Pending::ended`]), and a consistency check
//! waits on ([`Pending::wait`]) without ever waiting past an interrupt or its limit.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How often a wait looks at the interrupt flag.
const POLL: Duration = Duration::from_millis(200);
/// Beyond the awaited trials' own deadlines, the time a wait allows for their setup (an image
/// build, a virtualenv, a GPU lease): a trial is never waited on forever.
pub(crate) const SETUP_ALLOWANCE: Duration = Duration::from_secs(30 * 60);

/// The notebook trials of this process that have not ended, by notebook check.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// By notebook check: how many of its trials have not ended, and their deadlines summed.
    left: Mutex<HashMap<String, (usize, Duration)>>,
    ended: Condvar,
}

/// How a wait ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Waited {
    /// Every awaited trial ended.
    Ended,
    /// The limit passed first: this many had not ended.
    TimedOut(usize),
    /// A signal came first.
    Interrupted(i32),
}

/// Lowers its notebook check's count when dropped: when a trial returns, or panics.
pub(crate) struct EndGuard<'a> {
    pending: &'a Pending,
    check: String,
}

impl Drop for EndGuard<'_> {
    fn drop(&mut self) {
        let mut left = self.pending.lock();
        if let Some((count, _)) = left.get_mut(&self.check) {
            *count = count.saturating_sub(1);
        }
        drop(left);
        self.pending.ended.notify_all();
    }
}

impl Pending {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, (usize, Duration)>> {
        self.left
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts one trial of `check`, with its `deadline`, as not ended: before any trial starts.
    pub(crate) fn expect(&self, check: &str, deadline: Duration) {
        let mut left = self.lock();
        let (count, deadlines) = left.entry(check.to_owned()).or_default();
        *count += 1;
        *deadlines += deadline;
    }

    /// A guard that says a trial of `check` ended when it is dropped.
    pub(crate) fn ended(&self, check: &str) -> EndGuard<'_> {
        EndGuard {
            pending: self,
            check: check.to_owned(),
        }
    }

    /// Waits until every trial of `check` counted by [`Pending::expect`] has ended, a signal
    /// came (`interrupted` says which), or the awaited trials' deadlines and
    /// [`SETUP_ALLOWANCE`] passed.
    pub(crate) fn wait(&self, check: &str, interrupted: impl Fn() -> Option<i32>) -> Waited {
        let start = Instant::now();
        let mut left = self.lock();
        let limit = left.get(check).map_or(Duration::ZERO, |(_, d)| *d) + SETUP_ALLOWANCE;
        loop {
            // First: after a signal, trials end early, and what they left is not to be judged.
            if let Some(signal) = interrupted() {
                return Waited::Interrupted(signal);
            }
            let count = left.get(check).map_or(0, |(count, _)| *count);
            if count == 0 {
                return Waited::Ended;
            }
            if start.elapsed() >= limit {
                return Waited::TimedOut(count);
            }
            left = self
                .ended
                .wait_timeout(left, POLL)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_wait_ends_when_every_counted_trial_has_ended_even_by_a_panic() {
        let pending = Arc::new(Pending::default());
        pending.expect("nb::a", Duration::from_secs(1));
        pending.expect("nb::a", Duration::from_secs(1));
        pending.expect("nb::b", Duration::from_secs(1));
        let ok = {
            let pending = pending.clone();
            std::thread::spawn(move || {
                let _ended = pending.ended("nb::a");
                std::thread::sleep(Duration::from_millis(50));
            })
        };
        let panics = {
            let pending = pending.clone();
            std::thread::spawn(move || {
                let _ended = pending.ended("nb::a");
                panic!("a trial that panics still ends");
            })
        };
        assert_eq!(pending.wait("nb::a", || None), Waited::Ended);
        ok.join().unwrap();
        assert!(panics.join().is_err());
        // Another notebook's trial is not waited for; one nobody counted is not either.
        assert_eq!(pending.wait("nb::none", || None), Waited::Ended);
    }

    #[test]
    fn a_wait_ends_at_an_interrupt() {
        let pending = Pending::default();
        pending.expect("nb::a", Duration::from_secs(3600));
        assert_eq!(pending.wait("nb::a", || Some(2)), Waited::Interrupted(2));
        // Even when its trials have ended (early, because of the signal).
        drop(pending.ended("nb::a"));
        assert_eq!(pending.wait("nb::a", || Some(2)), Waited::Interrupted(2));
    }
}
