//! Staging a trial's files into its container: a tar archive, uploaded through the engine's
//! archive API so that a remote engine works as well as the local one. The main function is
//! [`trial_files`]; a notebook's data set goes to its runner's container once, by
//! [`DockerExecutor::stage_data`], and the runner copies it into each trial's folder.

use super::run::DockerExecutor;
use crate::engine::{CONTAINER_ROOT, Engine};
use crate::error::EngineError;
use crate::exec::Outcome;
use crate::exec::data::DataSet;
use crate::exec::invocation::{Invocation, WORK, in_folder};
use crate::exec::live::lock;
use crate::fsx::{Limit, STAGED, read_bounded, size};
use crate::record::{SetupKind, SetupStep};
use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// What goes into the trial folder at `folder`: the work folder (with the notebook's folder
/// copied in at its path under the notebooks folder), and the invocation's staged files.
/// `None` is a folder.
pub(super) fn trial_files(
    invocation: &Invocation,
    folder: &str,
) -> std::io::Result<BTreeMap<String, Option<Vec<u8>>>> {
    let mut work = in_folder(folder, WORK);
    // Every folder on the way, writable as the folders below are.
    let mut folders = vec![work.clone()];
    for part in invocation.work_dir.split('/').filter(|p| !p.is_empty()) {
        work = format!("{work}/{part}");
        folders.push(work.clone());
    }
    let mut files = match &invocation.work_source {
        Some(source) => folder_files(source, &work)?,
        None => BTreeMap::new(),
    };
    files.extend(folders.into_iter().map(|folder| (folder, None)));
    for staged in &invocation.staged {
        files.insert(
            in_folder(folder, staged.path),
            Some(staged.contents.as_bytes().to_vec()),
        );
    }
    Ok(files)
}

/// Where a runner's container holds data set `key`: uploaded once, copied by the runner into
/// each trial's folder.
fn data_store(key: &str) -> String {
    format!("{CONTAINER_ROOT}/data/{key}")
}

/// Bytes of a data set per chunk of its upload: at most a few chunks are in memory at once.
const CHUNK: usize = 1 << 20;

impl DockerExecutor {
    /// Puts data set `set` into runner container `container`, once per runner, whichever
    /// process of the run comes first; returns where it is there, and the setup step of the
    /// upload when this trial did it. The archive streams from the files to the engine. A data
    /// set that cannot be read fails the trial (`Ok(Err(..))`); the engine's errors are `Err`.
    pub(super) fn stage_data(
        &self,
        engine: &Engine,
        container: &str,
        set: &DataSet,
    ) -> Result<Result<(String, Option<SetupStep>), Outcome>, EngineError> {
        let store = data_store(&set.key());
        let marker = format!("{store}.staged");
        let staged = format!("{container}|{}", set.key());
        if lock(&self.staged_data).contains(&staged) {
            return Ok(Ok((store, None)));
        }
        // The processes of a run (cargo-nextest) share a runner: one uploads, the others wait
        // for it and find its marker. One lock file per data set, not per container: lock
        // files outlive runs.
        let lock_file = self.locks.join(format!("data-{}.lock", set.key()));
        let _held = std::fs::create_dir_all(&self.locks)
            .and_then(|()| std::fs::File::create(&lock_file))
            .and_then(|file| file.lock().map(|()| file))
            .map_err(|error| {
                super::diagnosis::io_error("lock the data set of", container, error)
            })?;
        let start = std::time::Instant::now();
        if self
            .runtime
            .block_on(engine.download_file(container, &marker))?
            .is_some()
        {
            lock(&self.staged_data).insert(staged);
            return Ok(Ok((store, None)));
        }
        let (sender, mut receiver) = tokio::sync::mpsc::channel(4);
        let closed = Arc::new(AtomicBool::new(false));
        let packer = {
            let (set, prefix, closed) = (set.clone(), store.clone(), closed.clone());
            std::thread::spawn(move || {
                let chunks = Chunks {
                    sender: sender.clone(),
                    pending: Vec::with_capacity(CHUNK),
                    closed,
                };
                let packed = set.write_tar(&prefix, chunks).and_then(|mut chunks| {
                    chunks
                        .send()
                        .map_err(|error| crate::error::DataError::Read {
                            path: prefix.into(),
                            error,
                        })
                });
                if let Err(error) = &packed {
                    // The engine must not take a cut archive for a whole one.
                    let _ = sender.blocking_send(Err(std::io::Error::other(error.to_string())));
                }
                packed
            })
        };
        let chunks = futures_util::stream::poll_fn(move |context| receiver.poll_recv(context));
        // Setup, not the trial's time: long enough for a large set at 8 MiB/s.
        let limit = engine.request_limit() + Duration::from_secs(set.bytes / (8 << 20));
        let uploaded = self
            .runtime
            .block_on(engine.upload_stream(container, "/", chunks, limit));
        let packed = packer.join();
        // Whichever failed first is to blame: a file that changed cuts the upload short, an
        // upload that failed stops the packing.
        if let Ok(Err(error)) = &packed
            && !closed.load(Ordering::SeqCst)
        {
            return Ok(Err(crate::exec::data::failure(error)));
        }
        uploaded?;
        match packed {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Ok(Err(crate::exec::data::failure(&error))),
            Err(_) => {
                let panicked = std::io::Error::other("packing the archive panicked");
                return Err(super::diagnosis::io_error(
                    "pack the data set of",
                    container,
                    panicked,
                ));
            }
        }
        let marker = archive(&BTreeMap::from([(marker, Some(Vec::new()))])).map_err(|error| {
            super::diagnosis::io_error("pack the data set of", container, error)
        })?;
        self.runtime
            .block_on(engine.upload(container, "/", marker))?;
        lock(&self.staged_data).insert(staged);
        let step = SetupStep {
            kind: SetupKind::Data,
            subject: set.describe(),
            seconds: start.elapsed().as_secs_f64(),
        };
        Ok(Ok((store, Some(step))))
    }
}

/// A writer that sends what it is given to the engine's upload in chunks of [`CHUNK`], waiting
/// while the upload is behind.
struct Chunks {
    sender: tokio::sync::mpsc::Sender<std::io::Result<Vec<u8>>>,
    pending: Vec<u8>,
    /// Set when the upload stopped taking chunks.
    closed: Arc<AtomicBool>,
}

impl Chunks {
    fn send(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.pending, Vec::with_capacity(CHUNK));
        self.sender.blocking_send(Ok(chunk)).map_err(|_| {
            self.closed.store(true, Ordering::SeqCst);
            std::io::Error::other("the engine stopped taking the archive")
        })
    }
}

impl std::io::Write for Chunks {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= CHUNK {
            self.send()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Files under `folder` (hidden ones skipped), keyed by their path under `prefix`. Each must
/// be a regular file (or a symlink to one), and all together at most [`STAGED`], since they
/// are held in memory; an error names the file.
fn folder_files(folder: &Path, prefix: &str) -> std::io::Result<BTreeMap<String, Option<Vec<u8>>>> {
    let mut files = BTreeMap::from([(prefix.to_owned(), None)]);
    let mut left = STAGED.bytes;
    let mut stack = vec![folder.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path();
            let relative = path
                .strip_prefix(folder)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            let key = format!("{prefix}/{relative}");
            if entry.file_type()?.is_dir() {
                files.insert(key, None);
                stack.push(path);
            } else if crate::fsx::regular_file(&path).is_err() {
                // Not a regular file (a FIFO, a device, a socket, a link to nothing): nothing to
                // copy, and opening it could block. Left out, so that it fails only a notebook
                // that needs it, never its neighbours.
                continue;
            } else {
                let limit = Limit {
                    bytes: left,
                    ..STAGED
                };
                let bytes = read_bounded(&path, limit).map_err(|error| {
                    let path = path.display();
                    let message = match error.kind() {
                        // The limit is the folder's, whatever is left of it for this file.
                        ErrorKind::FileTooLarge => format!(
                            "{path}: the folder holds more than {}, the most {} may hold",
                            size(STAGED.bytes),
                            STAGED.what
                        ),
                        _ => format!("{path}: {error}"),
                    };
                    std::io::Error::new(error.kind(), message)
                })?;
                left -= bytes.len() as u64;
                files.insert(key, Some(bytes));
            }
        }
    }
    Ok(files)
}

/// A tar archive of `files`: `None` is a folder. Paths are relative to `/`.
pub(super) fn archive(files: &BTreeMap<String, Option<Vec<u8>>>) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, contents) in files {
        let path = path.trim_start_matches('/');
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        match contents {
            None => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o777);
                header.set_size(0);
                header.set_cksum();
                builder.append_data(&mut header, format!("{path}/"), std::io::empty())?;
            }
            Some(bytes) => {
                header.set_mode(0o666);
                header.set_size(bytes.len() as u64);
                header.set_cksum();
                builder.append_data(&mut header, path, bytes.as_slice())?;
            }
        }
    }
    builder.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notebooks_folder_goes_to_its_path_in_the_work_folder_and_data_does_not() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let matrix = crate::Matrix::load(&root.join("fixtures/matrices/data.toml")).unwrap();
        let plan = crate::Plan::new(&matrix, &crate::Selection::default());
        let spec = plan
            .trials
            .iter()
            .find(|t| t.name == "docker::cpu::nb::analysis/report")
            .unwrap();
        let invocation = Invocation::for_trial(spec, "python3");
        let files = trial_files(&invocation, "/t").unwrap();
        let paths: Vec<&str> = files.keys().map(String::as_str).collect();
        assert_eq!(
            paths,
            [
                "/t/hooks.py",
                "/t/work",
                "/t/work/analysis",
                "/t/work/analysis/deeper",
                "/t/work/analysis/deeper/again.ipynb",
                "/t/work/analysis/report.ipynb",
                "/t/work/analysis/summary.ipynb",
            ]
        );
        assert_eq!(files["/t/work/analysis"], None);
    }

    #[test]
    fn a_device_or_fifo_in_the_notebooks_folder_is_left_out_not_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("data.csv"), "a,b\n").unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero.bin")).unwrap();
        std::os::unix::fs::symlink("/nowhere", dir.path().join("dangling.csv")).unwrap();
        let fifo = std::ffi::CString::new(dir.path().join("fifo.ipynb").to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let files = folder_files(dir.path(), "/w").unwrap();
        assert_eq!(files.keys().collect::<Vec<_>>(), ["/w", "/w/data.csv"]);
        assert_eq!(files["/w/data.csv"].as_deref(), Some(&b"a,b\n"[..]));
    }
}
