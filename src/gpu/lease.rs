//! GPU leases: a trial that needs N GPUs holds N specific ones, exclusively, for as long as it
//! runs, across threads, processes (cargo-nextest) and concurrent runs on the host. Each GPU
//! is a lock file locked with `File::try_lock`; a trial takes all of its GPUs at once or none
//! and waits without holding any, so trials needing several GPUs cannot deadlock.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// GPUs held by one trial; released when dropped.
#[derive(Debug)]
pub struct Lease {
    /// The held GPUs' UUIDs.
    pub uuids: Vec<String>,
    _locks: Vec<File>,
}

/// The folder of the host's GPU lock files unless `RUNTIME_MATRIX_LOCK_DIR` names another: a
/// folder in the system's temporary directory, shared by every run on the host.
pub fn default_lock_dir() -> PathBuf {
    std::env::temp_dir().join("runtime-matrix-gpu-locks")
}

/// Why a lease could not be had. The I/O error is part of the message rather than its
/// source: the message becomes a trial's one-line failure summary.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Fewer GPUs match than the trial needs: waiting would not help.
    #[error("needs {count} GPU(s) but only {matching} match")]
    TooFew {
        /// GPUs needed.
        count: usize,
        /// GPUs that match.
        matching: usize,
    },
    /// The lock folder could not be created.
    #[error("cannot create the GPU lock folder {}: {error}", path.display())]
    LockDir {
        /// The folder.
        path: PathBuf,
        /// What went wrong.
        error: std::io::Error,
    },
    /// A GPU's lock file could not be opened.
    #[error("cannot open GPU lock {}: {error}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// What went wrong.
        error: std::io::Error,
    },
    /// Other trials held the GPUs for the whole wait.
    #[error(
        "waited {} for {count} GPU(s); other trials held them all the while (raise RUNTIME_MATRIX_LEASE_TIMEOUT, or run fewer trials at once)",
        humantime::format_duration(Duration::from_secs(waited.as_secs()))
    )]
    TimedOut {
        /// How long it waited.
        waited: Duration,
        /// GPUs needed.
        count: usize,
    },
}

/// Takes `count` of the `candidates` (UUIDs) as soon as that many are free, waiting up to
/// `timeout`. `waiting` is called once, when the first attempt finds too few free. A lease of
/// zero GPUs is empty and takes no lock.
pub fn acquire(
    candidates: &[String],
    count: usize,
    dir: &Path,
    timeout: Duration,
    waiting: impl FnOnce(),
) -> Result<Lease, LeaseError> {
    if candidates.len() < count {
        return Err(LeaseError::TooFew {
            count,
            matching: candidates.len(),
        });
    }
    if count == 0 {
        return Ok(Lease {
            uuids: Vec::new(),
            _locks: Vec::new(),
        });
    }
    std::fs::create_dir_all(dir).map_err(|error| LeaseError::LockDir {
        path: dir.to_owned(),
        error,
    })?;
    let start = Instant::now();
    let mut waiting = Some(waiting);
    // Processes start their search at different GPUs, so that they do not all contend for the first.
    let offset = std::process::id() as usize % candidates.len();
    let mut pause = Duration::from_millis(10);
    loop {
        let mut held = Vec::new();
        for i in 0..candidates.len() {
            let uuid = &candidates[(i + offset) % candidates.len()];
            let path = dir.join(format!("{}.lock", uuid.replace(['/', '\\'], "_")));
            let file = match File::create(&path) {
                Ok(file) => file,
                Err(error) => return Err(LeaseError::Lock { path, error }),
            };
            if file.try_lock().is_ok() {
                held.push((uuid.clone(), file));
                if held.len() == count {
                    let (uuids, locks) = held.into_iter().unzip();
                    return Ok(Lease {
                        uuids,
                        _locks: locks,
                    });
                }
            }
        }
        drop(held);
        if start.elapsed() >= timeout {
            return Err(LeaseError::TimedOut {
                waited: timeout,
                count,
            });
        }
        if let Some(waiting) = waiting.take() {
            waiting();
        }
        // A little jitter, so that waiting trials do not retry in lock step.
        let jitter = Duration::from_millis(
            u64::from(std::process::id() % 7) + (start.elapsed().subsec_nanos() % 13) as u64,
        );
        std::thread::sleep(pause + jitter);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpus(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("GPU-{i}")).collect()
    }

    #[test]
    fn holds_distinct_gpus_and_releases_them_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = acquire(&gpus(2), 1, dir.path(), Duration::ZERO, || {}).unwrap();
        let second = acquire(&gpus(2), 1, dir.path(), Duration::ZERO, || {}).unwrap();
        assert_ne!(first.uuids, second.uuids);
        let error = acquire(&gpus(2), 1, dir.path(), Duration::from_millis(50), || {}).unwrap_err();
        assert!(
            matches!(error, LeaseError::TimedOut { count: 1, .. }),
            "{error}"
        );
        assert!(error.to_string().starts_with("waited "), "{error}");
        drop(first);
        assert_eq!(
            acquire(&gpus(2), 1, dir.path(), Duration::ZERO, || {})
                .unwrap()
                .uuids
                .len(),
            1
        );
    }

    #[test]
    fn a_multi_gpu_lease_waits_without_holding_any() {
        let dir = tempfile::tempdir().unwrap();
        let one = acquire(&gpus(2), 1, dir.path(), Duration::ZERO, || {}).unwrap();
        let mut waited = false;
        // While one GPU is held, a two-GPU lease cannot be had, and holds nothing meanwhile.
        assert!(
            acquire(&gpus(2), 2, dir.path(), Duration::from_millis(50), || {
                waited = true
            })
            .is_err()
        );
        assert!(waited);
        let other = acquire(&gpus(2), 1, dir.path(), Duration::ZERO, || {}).unwrap();
        assert_ne!(one.uuids, other.uuids);
        drop((one, other));
        assert_eq!(
            acquire(&gpus(2), 2, dir.path(), Duration::ZERO, || {})
                .unwrap()
                .uuids
                .len(),
            2
        );
    }

    #[test]
    fn too_few_matching_gpus_is_an_error_at_once() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            acquire(&gpus(1), 2, dir.path(), Duration::from_secs(60), || {})
                .unwrap_err()
                .to_string(),
            "needs 2 GPU(s) but only 1 match"
        );
    }

    #[test]
    fn a_lease_of_no_gpus_is_empty_even_without_candidates() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("never-created");
        let lease = acquire(&[], 0, &missing, Duration::ZERO, || {}).unwrap();
        assert!(lease.uuids.is_empty());
        // It takes no lock, so it creates nothing either.
        assert!(!missing.exists());
        let lease = acquire(&gpus(2), 0, dir.path(), Duration::ZERO, || {}).unwrap();
        assert!(lease.uuids.is_empty());
    }
}
