//! The run folders under the output folder: telling them apart from the rest (the virtualenv
//! cache, `latest`, a user's own files), and keeping only the newest. The main function is
//! [`prune_runs`].

use crate::error::OutputError;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Removes all but the newest `keep` run folders directly under `root`, newest by their last
/// change (the folder itself or its `records/`, where trials write); returns the removed ones.
/// Only folders holding a `records/` folder are run folders: nothing else under `root` is
/// touched, nor is anything reached through a symlink. A missing `root` holds no runs.
pub(crate) fn prune_runs(root: &Path, keep: usize) -> Result<Vec<PathBuf>, OutputError> {
    let read = |error| OutputError::Read {
        path: root.to_owned(),
        error,
    };
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(read(error)),
    };
    let mut runs: Vec<(SystemTime, PathBuf)> = Vec::new();
    for entry in entries {
        let path = entry.map_err(read)?.path();
        if let Some(changed) = run_folder_changed(&path) {
            runs.push((changed, path));
        }
    }
    // Newest first; equal times by name, so that the choice is the same every time.
    runs.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
    let mut removed = Vec::new();
    for (_, path) in runs.into_iter().skip(keep) {
        std::fs::remove_dir_all(&path).map_err(|error| OutputError::Write {
            path: path.clone(),
            error,
        })?;
        removed.push(path);
    }
    Ok(removed)
}

/// When the run folder at `path` last changed, or `None` when it is not a run folder.
fn run_folder_changed(path: &Path) -> Option<SystemTime> {
    let folder = std::fs::symlink_metadata(path).ok()?;
    let records = std::fs::symlink_metadata(path.join("records")).ok()?;
    if !folder.is_dir() || !records.is_dir() {
        return None;
    }
    let changed = |metadata: &std::fs::Metadata| metadata.modified().ok();
    changed(&folder).max(changed(&records))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn run_folder(root: &Path, name: &str, age: u64) -> PathBuf {
        let path = root.join(name);
        std::fs::create_dir_all(path.join("records")).unwrap();
        let when = SystemTime::now() - Duration::from_secs(age);
        for dir in [path.join("records"), path.clone()] {
            std::fs::File::open(&dir)
                .unwrap()
                .set_modified(when)
                .unwrap();
        }
        path
    }

    #[test]
    fn keeps_the_newest_runs_and_nothing_else_is_touched() {
        let root = tempfile::tempdir().unwrap();
        let old = run_folder(root.path(), "2026-01-01T00-00-00-1", 300);
        let older = run_folder(root.path(), "zz-custom-id", 400);
        let newest = run_folder(root.path(), "a-custom-id", 10);
        let middle = run_folder(root.path(), "2026-01-02T00-00-00-2", 100);
        std::fs::create_dir_all(root.path().join("cache/venvs/x")).unwrap();
        std::fs::write(root.path().join("latest"), "a-custom-id\n").unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let linked = run_folder(elsewhere.path(), "linked", 1);
        std::os::unix::fs::symlink(&linked, root.path().join("linked")).unwrap();

        let mut removed = prune_runs(root.path(), 2).unwrap();
        removed.sort();
        assert_eq!(removed, vec![old, older]);
        assert!(newest.exists() && middle.exists() && linked.exists());
        assert!(root.path().join("cache/venvs/x").exists());
        assert!(root.path().join("latest").exists());

        assert_eq!(prune_runs(root.path(), 0).unwrap().len(), 2);
        assert!(linked.exists(), "a symlinked folder is not this root's run");
    }

    #[test]
    fn a_missing_output_folder_holds_no_runs() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(
            prune_runs(&root.path().join("none"), 1).unwrap(),
            Vec::<PathBuf>::new()
        );
    }
}
