//! Staging a trial's files into its container: a tar archive, uploaded through the engine's
//! archive API so that a remote engine works as well as the local one. The main function is
//! [`trial_files`].

use crate::exec::invocation::{Invocation, WORK, in_folder};
use crate::fsx::{Limit, STAGED, read_bounded, size};
use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::Path;

/// What goes into the trial folder at `folder`: the work folder (with the notebook's folder
/// copied in), and the invocation's staged files. `None` is a folder.
pub(super) fn trial_files(
    invocation: &Invocation,
    folder: &str,
) -> std::io::Result<BTreeMap<String, Option<Vec<u8>>>> {
    let work = in_folder(folder, WORK);
    let mut files = match &invocation.work_source {
        Some(source) => folder_files(source, &work)?,
        None => BTreeMap::from([(work, None)]),
    };
    for staged in &invocation.staged {
        files.insert(
            in_folder(folder, staged.path),
            Some(staged.contents.as_bytes().to_vec()),
        );
    }
    Ok(files)
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
    fn a_device_in_the_notebooks_folder_is_named_not_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("data.csv"), "a,b\n").unwrap();
        let files = folder_files(dir.path(), "/w").unwrap();
        assert_eq!(files["/w/data.csv"].as_deref(), Some(&b"a,b\n"[..]));

        let zero = dir.path().join("zero.bin");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let error = folder_files(dir.path(), "/w").unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "{}: a character device, not a regular file (give a regular file)",
                zero.display()
            )
        );
    }
}
