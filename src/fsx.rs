//! Reading files the tool did not write, or that a check could have replaced: the config,
//! notebooks, records, staged folders. The main function is [`read_bounded`], which reads
//! regular files only and never more than a [`Limit`], so that a FIFO, a device or an endless
//! file gives a clear error instead of a hang or an exhausted memory.

use std::fs::{File, FileType, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The most the tool reads of one kind of file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limit {
    /// Bytes.
    pub(crate) bytes: u64,
    /// What the file is, for the message: `a matrix config`.
    pub(crate) what: &'static str,
}

const MIB: u64 = 1024 * 1024;

/// `matrix.toml`: a matrix of thousands of trials is a few hundred KiB.
pub(crate) const CONFIG: Limit = Limit {
    bytes: 4 * MIB,
    what: "a matrix config",
};
/// A file a check left behind: the executed notebook, its progress.
pub(crate) const COLLECTED: Limit = Limit {
    bytes: 256 * MIB,
    what: "a file a check leaves",
};
/// One trial's record; records keep only bounded tails of output, so they are KiB.
pub(crate) const RECORD: Limit = Limit {
    bytes: 16 * MIB,
    what: "a record",
};
/// A run's `excluded.json`: one short entry per trial not run.
pub(crate) const EXCLUDED: Limit = Limit {
    bytes: 64 * MIB,
    what: "a run's excluded.json",
};
/// A run's list of planned trials: one short entry per trial.
pub(crate) const PLANNED: Limit = Limit {
    bytes: 64 * MIB,
    what: "a run's list of planned trials",
};
/// A run's interruption mark: a few fields.
pub(crate) const INTERRUPTION: Limit = Limit {
    bytes: MIB,
    what: "a run's interruption mark",
};
/// A Dockerfile, read for the images it is built `FROM`.
pub(crate) const DOCKERFILE: Limit = Limit {
    bytes: MIB,
    what: "a Dockerfile",
};
/// Everything a Docker trial stages from its notebook's folder, which is held in memory to
/// be sent to the engine as one archive.
pub(crate) const STAGED: Limit = Limit {
    bytes: 512 * MIB,
    what: "a notebook's folder sent to a container",
};

/// A notebook's data set, all its files together: staged by streaming, never held in memory,
/// but copied into each trial's folder (and, for a container, uploaded to its runner once).
pub(crate) const DATA: Limit = Limit {
    bytes: 4 * 1024 * MIB,
    what: "a notebook's data set",
};

/// Reads the regular file at `path` (a symlink is followed), refusing anything else and
/// anything larger than `limit`, without ever blocking on the open (a FIFO) or reading past
/// the limit (`/dev/zero`).
pub(crate) fn read_bounded(path: &Path, limit: Limit) -> io::Result<Vec<u8>> {
    // Checked before opening: opening a FIFO blocks until a writer comes, and opening some
    // devices does something.
    let metadata = regular_file(path)?;
    if metadata.len() > limit.bytes {
        return Err(too_large(limit));
    }
    // O_NONBLOCK in case the path was swapped for a FIFO since; the type is checked again on
    // what was opened. It changes nothing for a regular file.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    check_type(file.metadata()?.file_type())?;
    read_at_most(file, limit)
}

/// The metadata of `path` (a symlink is followed) if it is a regular file; otherwise an error
/// saying what it is.
pub(crate) fn regular_file(path: &Path) -> io::Result<Metadata> {
    let metadata = std::fs::metadata(path)?;
    check_type(metadata.file_type())?;
    Ok(metadata)
}

/// Reads `file` to its end, failing as soon as it gives more than `limit`: a file can grow
/// after its size was checked.
fn read_at_most(file: File, limit: Limit) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    file.take(limit.bytes + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit.bytes {
        return Err(too_large(limit));
    }
    Ok(bytes)
}

fn check_type(file_type: FileType) -> io::Result<()> {
    let kind = if file_type.is_file() {
        return Ok(());
    } else if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a named pipe (FIFO)"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "not a file"
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{kind}, not a regular file (give a regular file)"),
    ))
}

fn too_large(limit: Limit) -> io::Error {
    io::Error::new(
        io::ErrorKind::FileTooLarge,
        format!(
            "larger than {}, the most {} may be",
            size(limit.bytes),
            limit.what
        ),
    )
}

/// `4 MiB`, or `100 bytes` below a MiB.
pub(crate) fn size(bytes: u64) -> String {
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: Limit = Limit {
        bytes: 8,
        what: "a test file",
    };

    #[test]
    fn reads_a_regular_file_up_to_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"12345678").unwrap();
        assert_eq!(read_bounded(&path, SMALL).unwrap(), b"12345678");
        std::fs::write(&path, b"123456789").unwrap();
        let error = read_bounded(&path, SMALL).unwrap_err();
        assert_eq!(
            error.to_string(),
            "larger than 8 bytes, the most a test file may be"
        );
    }

    #[test]
    fn refuses_devices_fifos_and_folders_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let link = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        for (path, kind) in [
            (fifo.as_path(), "a named pipe (FIFO)"),
            (link.as_path(), "a character device"),
            (Path::new("/dev/zero"), "a character device"),
            (dir.path(), "a directory"),
        ] {
            let error = read_bounded(path, CONFIG).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!("{kind}, not a regular file (give a regular file)")
            );
        }
    }

    #[test]
    fn a_growing_file_is_read_no_further_than_the_limit() {
        // /proc files report a size of 0 but have content: the read itself is bounded.
        let file = File::open("/proc/self/status").unwrap();
        let error = read_at_most(file, SMALL).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::FileTooLarge);
    }
}
