//! Staging a trial's files into its container: a tar archive, uploaded through the engine's
//! archive API so that a remote engine works as well as the local one. The main function is
//! [`trial_files`].

use crate::exec::invocation::{Invocation, WORK, in_folder};
use std::collections::BTreeMap;
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

/// Files under `folder` (hidden ones skipped), keyed by their path under `prefix`.
fn folder_files(folder: &Path, prefix: &str) -> std::io::Result<BTreeMap<String, Option<Vec<u8>>>> {
    let mut files = BTreeMap::from([(prefix.to_owned(), None)]);
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
                files.insert(key, Some(std::fs::read(&path)?));
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
