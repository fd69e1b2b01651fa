//! A notebook's data: the files its runtime's and overrides' `data` globs match under the
//! notebooks folder, staged into its trial folder at the same relative paths so that
//! `../data/x.csv` reads as it does in Jupyter. The main type is [`DataSet`]: found by each
//! trial, never at load (listing reads no file), and bounded by [`crate::fsx::DATA`] and
//! [`MAX_FILES`]. Files are streamed, never held in memory whole.

use crate::error::DataError;
use crate::verdict::Category;
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// The outcome of a trial whose data set cannot be staged: its notebook never started. The
/// matrix's data (a glob, a file, the size) is to blame, unless reading failed.
pub(crate) fn failure(error: &DataError) -> crate::exec::Outcome {
    let category = match error {
        DataError::Read { .. } => Category::Infrastructure,
        _ => Category::Notebook,
    };
    crate::exec::verdict::setup_failure(
        category,
        format!(
            "cannot stage the notebook's data: {}",
            crate::error::chain(error)
        ),
    )
}

/// The most files a data set may have: each is a tar entry, and a copy in every trial folder.
pub(crate) const MAX_FILES: usize = 100_000;

/// One file of a data set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DataFile {
    /// Its path under the notebooks folder, with `/` separators: where it goes in `work/`.
    pub(crate) relative: String,
    /// Where it is read from.
    pub(crate) path: PathBuf,
    /// Its size when it was found.
    pub(crate) size: u64,
    /// Its modification time in nanoseconds since the epoch when it was found: with the size,
    /// what tells a changed file from the one a runner already holds.
    modified: i128,
}

/// The files a notebook's data globs match, by relative path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DataSet {
    /// In relative path order, each once, whichever globs match it.
    pub(crate) files: Vec<DataFile>,
    /// All of them together.
    pub(crate) bytes: u64,
    /// Names this set: its folder and its files' paths, sizes and modification times.
    key: u64,
}

impl DataSet {
    /// The files `globs` match under `notebooks_dir`. A glob that matches nothing, a file that
    /// is not a regular file, and a set over [`crate::fsx::DATA`] or [`MAX_FILES`] are errors
    /// naming the glob, the file and the limit.
    pub(crate) fn find(notebooks_dir: &Path, globs: &[String]) -> Result<DataSet, DataError> {
        find_within(notebooks_dir, globs, crate::fsx::DATA.bytes, MAX_FILES)
    }

    /// A name for this set that changes when any of its files does: 16 hex digits.
    pub(crate) fn key(&self) -> String {
        format!("{:016x}", self.key)
    }

    /// `3 files, 1.2 MiB`, for setup steps and messages.
    pub(crate) fn describe(&self) -> String {
        let files = match self.files.len() {
            1 => "1 file".to_owned(),
            n => format!("{n} files"),
        };
        format!("{files}, {:.1} MiB", self.bytes as f64 / (1024.0 * 1024.0))
    }

    /// Copies every file to its relative path under `work`, streaming each. A file that changed
    /// size since it was found is an error: it may be being written.
    pub(crate) fn copy_into(&self, work: &Path) -> Result<(), DataError> {
        for file in &self.files {
            let target = work.join(&file.relative);
            let failed = |error| DataError::Read {
                path: file.path.clone(),
                error,
            };
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(failed)?;
            }
            let mut source = file.open_take().map_err(failed)?;
            // A copy of an earlier stage (the notebook's own folder) may be there, read-only.
            let _ = std::fs::remove_file(&target);
            let mut out = std::fs::File::create(&target).map_err(failed)?;
            // `Take<File>` to `File`: the kernel copies (copy_file_range), no buffer here.
            let copied = io::copy(&mut source, &mut out).map_err(failed)?;
            if copied < file.size {
                return Err(failed(shrank(file.size - copied)));
            }
        }
        Ok(())
    }

    /// Writes a tar archive of every file, at `prefix/<relative>` (`prefix` without its leading
    /// `/`), to `out`, streaming each file; folders are world-writable and files writable, so
    /// that a trial running as any user can change its copy.
    pub(crate) fn write_tar<W: Write>(&self, prefix: &str, out: W) -> Result<W, DataError> {
        let prefix = prefix.trim_matches('/');
        let mut builder = tar::Builder::new(out);
        let mut folders = std::collections::BTreeSet::new();
        let written = |error| DataError::Read {
            path: PathBuf::from(prefix),
            error,
        };
        for file in &self.files {
            let mut folder = String::from(prefix);
            for part in Path::new(&file.relative)
                .parent()
                .into_iter()
                .flat_map(Path::iter)
            {
                folder = format!("{folder}/{}", part.to_string_lossy());
                if folders.insert(folder.clone()) {
                    let mut header = tar::Header::new_gnu();
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(0o777);
                    header.set_mtime(0);
                    header.set_size(0);
                    header.set_cksum();
                    builder
                        .append_data(&mut header, format!("{folder}/"), io::empty())
                        .map_err(written)?;
                }
            }
            let source = file.open().map_err(|error| DataError::Read {
                path: file.path.clone(),
                error,
            })?;
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o666);
            header.set_mtime(u64::try_from(file.modified / 1_000_000_000).unwrap_or(0));
            header.set_size(file.size);
            header.set_cksum();
            builder
                .append_data(&mut header, format!("{prefix}/{}", file.relative), source)
                .map_err(|error| DataError::Read {
                    path: file.path.clone(),
                    error,
                })?;
        }
        builder.into_inner().map_err(written)
    }
}

impl DataFile {
    /// A reader of exactly the size this file had when it was found: a file that shrank since
    /// is an error (an archive entry must hold the bytes its header says), one that grew is
    /// read no further.
    fn open(&self) -> io::Result<impl Read> {
        Ok(Exact {
            inner: self.open_take()?,
            left: self.size,
        })
    }

    /// This file, read no further than the size it had when it was found.
    fn open_take(&self) -> io::Result<io::Take<std::fs::File>> {
        crate::fsx::regular_file(&self.path)?;
        Ok(std::fs::File::open(&self.path)?.take(self.size))
    }
}

/// The error of a file that is `left` bytes shorter than when it was found.
fn shrank(left: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("it shrank by {left} bytes while it was staged"),
    )
}

/// A reader that must give exactly `left` more bytes.
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        if read == 0 && self.left > 0 && !buf.is_empty() {
            return Err(shrank(self.left));
        }
        self.left -= read as u64;
        Ok(read)
    }
}

/// How data globs are matched: `*` stays within a folder, and hidden files and folders match
/// only a glob that names their leading dot.
const MATCH: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: true,
};

/// [`DataSet::find`] with its limits given.
fn find_within(
    notebooks_dir: &Path,
    globs: &[String],
    max_bytes: u64,
    max_files: usize,
) -> Result<DataSet, DataError> {
    let mut found: BTreeMap<String, DataFile> = BTreeMap::new();
    for glob in globs {
        // Checked at load; a glob that no longer compiles matches nothing.
        let pattern = glob::Pattern::new(glob).ok();
        let matched = match &pattern {
            Some(pattern) => walk(notebooks_dir, glob, pattern, &mut found, max_files)?,
            None => 0,
        };
        if matched == 0 {
            return Err(DataError::NoMatch {
                glob: glob.clone(),
                notebooks_dir: notebooks_dir.to_path_buf(),
            });
        }
    }
    let mut bytes = 0u64;
    let mut listing = notebooks_dir.display().to_string();
    for file in found.values() {
        bytes = bytes.saturating_add(file.size);
        if bytes > max_bytes {
            return Err(DataError::TooLarge {
                path: file.path.clone(),
                limit: max_bytes,
            });
        }
        listing.push_str(&format!(
            "\n{}\0{}\0{}",
            file.relative, file.size, file.modified
        ));
    }
    Ok(DataSet {
        files: found.into_values().collect(),
        bytes,
        key: crate::names::folder_key(&listing),
    })
}

/// Adds the files under `notebooks_dir` that `pattern` (`glob`) matches to `found`, and the
/// files under the folders it matches; returns how many it matched, counting those already
/// found. Only the folder named by the glob's literal leading part is walked; symlinked
/// folders are not followed (they could loop).
fn walk(
    notebooks_dir: &Path,
    glob: &str,
    pattern: &glob::Pattern,
    found: &mut BTreeMap<String, DataFile>,
    max_files: usize,
) -> Result<usize, DataError> {
    let parts: Vec<&str> = glob.split('/').filter(|part| !part.is_empty()).collect();
    let literal: Vec<&str> = parts[..parts.len().saturating_sub(1)]
        .iter()
        .take_while(|part| !part.contains(['*', '?', '[']))
        .copied()
        .collect();
    let hidden = parts.iter().any(|part| part.starts_with('.'));
    let start = literal.join("/");
    let mut matched = 0;
    // (folder, its relative path, whether a glob matched it or a folder above it)
    let mut stack = vec![(notebooks_dir.join(&start), start, false)];
    while let Some((folder, relative, whole)) = stack.pop() {
        let entries = match std::fs::read_dir(&folder) {
            Ok(entries) => entries,
            // The glob's literal folder is not there (or is a file): it matches nothing.
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                continue;
            }
            Err(error) => {
                return Err(DataError::Read {
                    path: folder,
                    error,
                });
            }
        };
        for entry in entries {
            let entry = entry.map_err(|error| DataError::Read {
                path: folder.clone(),
                error,
            })?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                // Not UTF-8: no glob names it (a `*` does not match it either).
                continue;
            };
            if name.starts_with('.') && (whole || !hidden) {
                continue;
            }
            let path = entry.path();
            let child = match relative.as_str() {
                "" => name.to_owned(),
                _ => format!("{relative}/{name}"),
            };
            let file_type = entry.file_type().map_err(|error| DataError::Read {
                path: path.clone(),
                error,
            })?;
            let matches = whole || pattern.matches_with(&child, MATCH);
            if file_type.is_dir() {
                stack.push((path, child, matches));
                continue;
            }
            if !matches {
                continue;
            }
            if file_type.is_symlink() && std::fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            let metadata = crate::fsx::regular_file(&path).map_err(|error| {
                let path = path.clone();
                match error.kind() {
                    io::ErrorKind::InvalidInput => DataError::NotAFile { path, error },
                    _ => DataError::Read { path, error },
                }
            })?;
            matched += 1;
            if !found.contains_key(&child) && found.len() >= max_files {
                return Err(DataError::TooMany { limit: max_files });
            }
            let modified = metadata
                .modified()
                .ok()
                .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |since| since.as_nanos() as i128);
            found.insert(
                child.clone(),
                DataFile {
                    relative: child,
                    path,
                    size: metadata.len(),
                    modified,
                },
            );
        }
    }
    Ok(matched)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A notebooks folder with `files` (relative path, contents).
    fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (relative, contents) in files {
            let path = dir.path().join(relative);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, contents).unwrap();
        }
        dir
    }

    fn relatives(set: &DataSet) -> Vec<&str> {
        set.files.iter().map(|f| f.relative.as_str()).collect()
    }

    fn globs(globs: &[&str]) -> Vec<String> {
        globs.iter().map(|g| g.to_string()).collect()
    }

    #[test]
    fn globs_match_files_at_their_relative_paths_each_once() {
        let dir = folder(&[
            ("data/prices.csv", "a,b\n"),
            ("data/nested/deep/x.csv", "1\n"),
            ("data/.hidden.csv", "h\n"),
            ("data/.cache/y.csv", "h\n"),
            ("shared/a.csv", "a\n"),
            ("shared/b.txt", "b\n"),
            ("shared/sub/c.csv", "c\n"),
            ("analysis/report.ipynb", "{}"),
        ]);
        let set = DataSet::find(
            dir.path(),
            &globs(&["data/**", "shared/*.csv", "data/*.csv"]),
        )
        .unwrap();
        assert_eq!(
            relatives(&set),
            ["data/nested/deep/x.csv", "data/prices.csv", "shared/a.csv"]
        );
        assert_eq!(set.bytes, 4 + 2 + 2);
        assert_eq!(set.describe(), "3 files, 0.0 MiB");
        // A glob that names the dot matches hidden files.
        let set = DataSet::find(dir.path(), &globs(&["data/.hidden.csv"])).unwrap();
        assert_eq!(relatives(&set), ["data/.hidden.csv"]);
    }

    #[test]
    fn a_glob_naming_a_folder_stages_all_of_it() {
        let dir = folder(&[
            ("data/a.csv", "a"),
            ("data/sub/b.csv", "b"),
            ("other.csv", "o"),
        ]);
        let set = DataSet::find(dir.path(), &globs(&["data"])).unwrap();
        assert_eq!(relatives(&set), ["data/a.csv", "data/sub/b.csv"]);
        let set = DataSet::find(dir.path(), &globs(&["*.csv"])).unwrap();
        assert_eq!(relatives(&set), ["other.csv"]);
    }

    #[test]
    fn a_glob_that_matches_nothing_is_named() {
        let dir = folder(&[("data/a.csv", "a")]);
        for glob in ["missing/**", "data/*.parquet", "data/a.csv/x"] {
            let error = DataSet::find(dir.path(), &globs(&["data/**", glob])).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!(
                    "data glob `{glob}` matches no file under {} (fix the glob, or put the data there)",
                    dir.path().display()
                )
            );
        }
    }

    #[test]
    fn limits_name_the_file_that_crosses_them_without_reading_it() {
        let dir = folder(&[("data/a.csv", "12345"), ("data/b.csv", "67890")]);
        // Sparse: a set this large is refused from its sizes alone.
        let big = std::fs::File::create(dir.path().join("data/c.bin")).unwrap();
        big.set_len(64 << 30).unwrap();
        let error = find_within(dir.path(), &globs(&["data/*.csv"]), 8, 10).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "{}: with it the data set holds more than 8 bytes, the most a notebook's data set may hold (narrow the data globs)",
                dir.path().join("data/b.csv").display()
            )
        );
        let error = DataSet::find(dir.path(), &globs(&["data/**"])).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("data/c.bin: with it the data set holds more than 4096 MiB"),
            "{error}"
        );
        let error = find_within(dir.path(), &globs(&["data/*.csv"]), 100, 1).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the data globs match more than 1 files, the most a notebook's data set may have (narrow the data globs, or pack the files into an archive)"
        );
    }

    #[test]
    fn a_device_or_fifo_is_named_not_read() {
        let dir = folder(&[("data/a.csv", "a")]);
        let zero = dir.path().join("data/zero.bin");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let error = DataSet::find(dir.path(), &globs(&["data/**"])).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "{}: a character device, not a regular file (give a regular file)",
                zero.display()
            )
        );
    }

    #[test]
    fn the_key_changes_with_any_file_and_copies_are_independent() {
        let dir = folder(&[("data/a.csv", "a,b\n"), ("data/sub/b.csv", "1\n")]);
        let glob = globs(&["data/**"]);
        let first = DataSet::find(dir.path(), &glob).unwrap();
        assert_eq!(first.key(), DataSet::find(dir.path(), &glob).unwrap().key());
        let work = tempfile::tempdir().unwrap();
        first.copy_into(work.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(work.path().join("data/sub/b.csv")).unwrap(),
            "1\n"
        );
        // The trial's copy is its own.
        std::fs::write(work.path().join("data/a.csv"), "changed").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("data/a.csv")).unwrap(),
            "a,b\n"
        );
        std::fs::write(dir.path().join("data/a.csv"), "a,b,c\n").unwrap();
        let changed = DataSet::find(dir.path(), &glob).unwrap();
        assert_ne!(first.key(), changed.key());
    }

    #[test]
    fn the_archive_holds_each_file_under_the_prefix() {
        let dir = folder(&[("data/a.csv", "a,b\n"), ("data/sub/b.csv", "1\n")]);
        let set = DataSet::find(dir.path(), &globs(&["data/**"])).unwrap();
        let bytes = set.write_tar("/runtime-matrix/data/k", Vec::new()).unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut entries = BTreeMap::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            let mut text = String::new();
            entry.read_to_string(&mut text).unwrap();
            entries.insert(path, text);
        }
        assert_eq!(
            entries,
            BTreeMap::from([
                ("runtime-matrix/data/k/data/".to_owned(), String::new()),
                (
                    "runtime-matrix/data/k/data/a.csv".to_owned(),
                    "a,b\n".to_owned()
                ),
                ("runtime-matrix/data/k/data/sub/".to_owned(), String::new()),
                (
                    "runtime-matrix/data/k/data/sub/b.csv".to_owned(),
                    "1\n".to_owned()
                ),
            ])
        );
        // A file that shrank since it was found would make a corrupt archive: it is an error.
        std::fs::write(dir.path().join("data/sub/b.csv"), "").unwrap();
        let error = set.write_tar("p", Vec::new()).unwrap_err();
        assert_eq!(
            crate::error::chain(&error),
            format!(
                "cannot stage {} with the notebook\n  caused by: it shrank by 2 bytes while it was staged",
                dir.path().join("data/sub/b.csv").display()
            )
        );
    }
}
