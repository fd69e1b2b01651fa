//! What this process has running right now: containers and host process trees. An
//! interrupted run (Ctrl-C, SIGTERM) removes them all, which ends the trials waiting on them,
//! before the harness returns; a later run reaps the containers of a run that could not
//! (SIGKILL), by their owner labels.

use crate::engine::{Engine, LABEL_HOST, LABEL_KEEP, LABEL_PID, LABEL_PID_START};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex, OnceLock};
use std::time::Duration;

static CONTAINERS: LazyLock<Mutex<HashMap<String, Engine>>> = LazyLock::new(Default::default);
static NETWORKS: LazyLock<Mutex<HashMap<String, Engine>>> = LazyLock::new(Default::default);
static TOKENS: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Default::default);
/// The signal that interrupted this run, or 0.
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);
/// When the interrupt handler finished its clean-up.
static CLEANED_UP: OnceLock<std::time::Instant> = OnceLock::new();
/// Containers being created right now: not yet tracked, so not yet removable.
static CREATING: AtomicUsize = AtomicUsize::new(0);

/// Marks a container creation as in flight until the guard drops (after it is tracked).
pub(crate) fn creating() -> impl Drop {
    struct Creating;
    impl Drop for Creating {
        fn drop(&mut self) {
            CREATING.fetch_sub(1, Ordering::SeqCst);
        }
    }
    CREATING.fetch_add(1, Ordering::SeqCst);
    Creating
}

/// The signal that interrupted this run, if one did. Trials cut short by it leave no record:
/// their failure would be the interruption's, not the runtime's.
pub fn interrupted() -> Option<i32> {
    match INTERRUPTED.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

/// Locks `mutex`, recovering it from a panicked holder: the registries stay usable.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Records that container `id` on `engine` exists until [`forget_container`].
pub(crate) fn track_container(id: &str, engine: &Engine) {
    lock(&CONTAINERS).insert(id.to_owned(), engine.clone());
}

/// Records that container `id` is gone (or kept on purpose).
pub(crate) fn forget_container(id: &str) {
    lock(&CONTAINERS).remove(id);
}

/// Records that network `id` on `engine` exists until [`forget_network`]: removed after the
/// containers on an interrupt.
pub(crate) fn track_network(id: &str, engine: &Engine) {
    lock(&NETWORKS).insert(id.to_owned(), engine.clone());
}

/// Records that network `id` (or name) is gone.
pub(crate) fn forget_network(id: &str) {
    lock(&NETWORKS).remove(id);
}

/// Records that processes carrying `token` may be running.
pub(crate) fn track_token(token: &str) {
    lock(&TOKENS).insert(token.to_owned());
}

/// Records that no process carries `token` any more.
pub(crate) fn forget_token(token: &str) {
    lock(&TOKENS).remove(token);
}

/// Removes every tracked container and kills every tracked process tree.
pub(crate) async fn clean_up_everything() {
    let tokens: Vec<String> = lock(&TOKENS).drain().collect();
    for token in tokens {
        super::process::sweep(&token);
    }
    let containers: Vec<(String, Engine)> = lock(&CONTAINERS).drain().collect();
    let removals = containers
        .iter()
        .map(|(id, engine)| engine.remove_container(id));
    let _ = tokio::time::timeout(
        Duration::from_secs(30),
        futures_util::future::join_all(removals),
    )
    .await;
    // Services' networks, once the containers on them are gone.
    let networks: Vec<(String, Engine)> = lock(&NETWORKS).drain().collect();
    let removals = networks
        .iter()
        .map(|(id, engine)| engine.remove_network(id));
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        futures_util::future::join_all(removals),
    )
    .await;
}

/// On SIGINT or SIGTERM: mark the run interrupted, so that nothing new starts, then remove
/// every container and kill every process tree of the run. The trials waiting on them see
/// them end and return; the harness, not this task, writes the reports and returns the exit
/// code. [`interrupt_cleaned_up`] says when the clean-up is done.
pub fn install_interrupt_handler(handle: &tokio::runtime::Handle) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = handle.block_on(async {
        (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        )
    }) else {
        return;
    };
    handle.spawn(async move {
        let (number, name) = tokio::select! {
            _ = interrupt.recv() => (libc::SIGINT, "SIGINT"),
            _ = terminate.recv() => (libc::SIGTERM, "SIGTERM"),
        };
        INTERRUPTED.store(number, Ordering::SeqCst);
        let containers = lock(&CONTAINERS).len();
        eprintln!("\nruntime-matrix: {name} received; stopping trials and removing {containers} container(s)");
        clean_up_everything().await;
        // Containers whose creation was under way were not tracked yet: wait for them, and
        // remove them too. Nothing new starts once the run is interrupted.
        let start = std::time::Instant::now();
        while CREATING.load(Ordering::SeqCst) > 0 && start.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        clean_up_everything().await;
        let _ = CLEANED_UP.set(std::time::Instant::now());
    });
}

/// When the interrupt handler finished removing what the run had running, if it has.
pub fn interrupt_cleaned_up() -> Option<std::time::Instant> {
    CLEANED_UP.get().copied()
}

/// Who owns the containers this process creates.
#[derive(Debug, Clone)]
pub(crate) struct Owner {
    pub pid: u32,
    pub start: String,
    pub host: String,
}

impl Owner {
    /// This process: read once, since it cannot change while the process runs.
    pub fn me() -> &'static Owner {
        static ME: LazyLock<Owner> = LazyLock::new(|| {
            let pid = std::process::id();
            Owner {
                pid,
                start: process_start(pid).unwrap_or_default(),
                host: crate::settings::hostname(),
            }
        });
        &ME
    }

    /// Whether a container with `labels` belongs to a process on this host that is gone, and
    /// was not kept on purpose.
    pub fn is_orphan(&self, labels: &HashMap<String, String>) -> bool {
        let (Some(host), Some(pid)) = (labels.get(LABEL_HOST), labels.get(LABEL_PID)) else {
            return false;
        };
        if host != &self.host || labels.contains_key(LABEL_KEEP) {
            return false;
        }
        let Ok(pid) = pid.parse::<u32>() else {
            return false;
        };
        match process_start(pid) {
            None => true,
            Some(start) => labels
                .get(LABEL_PID_START)
                .is_some_and(|label| label != &start),
        }
    }
}

/// Whether process `pid` is the one that started at `start` and still runs.
pub(crate) fn is_alive(pid: u32, start: &str) -> bool {
    process_start(pid).is_some_and(|now| now == start)
}

/// Process `pid`'s start time, as owner labels carry it; `None` when it is not running.
pub(crate) fn start_of(pid: u32) -> Option<String> {
    process_start(pid)
}

/// A process's start time in clock ticks since boot (field 22 of `/proc/PID/stat`), which
/// tells a live owner from a later process that reused its pid.
fn process_start(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(host: &str, pid: u32, start: Option<&str>) -> HashMap<String, String> {
        let mut labels = HashMap::from([
            (LABEL_HOST.to_owned(), host.to_owned()),
            (LABEL_PID.to_owned(), pid.to_string()),
        ]);
        if let Some(start) = start {
            labels.insert(LABEL_PID_START.to_owned(), start.to_owned());
        }
        labels
    }

    #[test]
    fn only_containers_of_dead_owners_on_this_host_are_orphans() {
        let me = Owner::me();
        assert!(
            !me.is_orphan(&labels(&me.host, me.pid, Some(&me.start))),
            "a live owner"
        );
        assert!(
            me.is_orphan(&labels(&me.host, me.pid, Some("1"))),
            "a reused pid"
        );
        assert!(
            me.is_orphan(&labels(&me.host, u32::MAX - 1, None)),
            "a dead owner"
        );
        assert!(
            !me.is_orphan(&labels("another-host", u32::MAX - 1, None)),
            "another host's"
        );
        let mut kept = labels(&me.host, u32::MAX - 1, None);
        kept.insert(LABEL_KEEP.to_owned(), "failed".to_owned());
        assert!(!me.is_orphan(&kept), "kept on purpose");
        assert!(!me.is_orphan(&HashMap::new()), "not ours");
    }
}
