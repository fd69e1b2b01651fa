//! Result reuse (`--reuse-results`, `RUNTIME_MATRIX_REUSE_RESULTS=1`). The main type is
//! [`Store`]: a folder with one entry per trial, written when the trial ends OK (passed, or
//! failed the declared way), holding the key of the inputs it ran with. A later run whose key
//! for that trial is the same does not execute it: its record says the earlier outcome, with
//! [`Reused`](crate::record::Reused) naming the run it came from.
//!
//! The key is the SHA-256 of a canonical JSON (keys sorted, no spaces) of the trial's inputs,
//! which the executor gathers ([`crate::exec::Executor::reuse_inputs`]); the entry keeps that
//! JSON, so that a miss can say which input changed. Failures are never stored, so never
//! reused. A store entry that cannot be read is a miss with a warning, never a failure.
//! Entries are written atomically (a temporary file renamed), since cargo-nextest processes
//! write theirs at once.

use crate::record::{ConsistentCell, Reused, TrialImage, TrialRecord};
use crate::verdict::{Failure, Status};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The store's folder under the output folder, beside the run folders.
pub const DIR_NAME: &str = "reuse";

/// The entry format's version; an entry of another version is a miss.
const ENTRY_SCHEMA: u32 = 1;

/// The most an entry may hold: its inputs name every staged file, with a hash each.
const ENTRY: crate::fsx::Limit = crate::fsx::Limit {
    bytes: 64 * 1024 * 1024,
    what: "a result reuse entry",
};

/// The SHA-256 of `bytes`, as 64 hex digits.
pub(crate) fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `value` as JSON with every object's keys sorted and no whitespace: the same inputs always
/// give the same text, whatever order maps were built in.
pub(crate) fn canonical(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(key.as_str()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// A trial's inputs and their key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Key {
    /// SHA-256 of the canonical inputs, hex.
    pub(crate) hash: String,
    /// The inputs, as gathered.
    pub(crate) inputs: Value,
}

impl Key {
    /// The key of `inputs`.
    pub(crate) fn new(inputs: Value) -> Key {
        Key {
            hash: sha256(canonical(&inputs).as_bytes()),
            inputs,
        }
    }
}

/// What the store keeps of a trial that ended OK.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// [`ENTRY_SCHEMA`].
    schema: u32,
    /// The trial's name.
    trial: String,
    /// [`Key::hash`].
    key: String,
    /// [`Key::inputs`], for finding out why a trial was not reused.
    inputs: Value,
    /// The run the trial ran in.
    run_id: String,
    /// When it started there.
    started_at: String,
    /// Where.
    host: String,
    /// Its seconds there.
    seconds: f64,
    /// `passed` or `expected-failure`.
    status: Status,
    /// An expected failure's failure, as its record had it.
    #[serde(default)]
    failure: Option<Failure>,
    /// What the passing check found worth keeping.
    #[serde(default)]
    note: Option<String>,
    /// The image it ran in.
    #[serde(default)]
    image: Option<TrialImage>,
    /// The tagged cells' outputs of a notebook declared in `[consistency]`: a reused trial is
    /// compared like one that ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    consistent: Option<Vec<ConsistentCell>>,
    /// The services it used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    services: Vec<crate::record::TrialService>,
}

/// Whether a trial that ended with `status` may be reused: it passed, or failed the declared
/// way. Failures, unexpected passes included, always run again.
pub(crate) fn reusable(status: Status) -> bool {
    matches!(status, Status::Passed | Status::ExpectedFailure)
}

/// What the store says of a trial and its key.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// The trial passed with these inputs in an earlier run.
    Hit(Box<Entry>),
    /// It runs; when the store had an entry for it with other inputs, the run that entry came
    /// from and the inputs that changed since.
    Miss(Option<(String, Vec<String>)>),
}

/// The result reuse store: one JSON file per trial.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store in `dir` (made when the first entry is written).
    pub fn new(dir: PathBuf) -> Store {
        Store { dir }
    }

    /// Its folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, trial: &str) -> PathBuf {
        self.dir
            .join(format!("{:016x}.json", crate::names::folder_key(trial)))
    }

    /// Whether `trial` passed with `key`'s inputs before. An entry that cannot be read or
    /// parsed is a miss, with a warning naming it.
    pub(crate) fn lookup(&self, trial: &str, key: &Key) -> Lookup {
        let path = self.path(trial);
        let bytes = match crate::fsx::read_bounded(&path, ENTRY) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Lookup::Miss(None);
            }
            Err(error) => {
                warn_unreadable(trial, &path, &error.to_string());
                return Lookup::Miss(None);
            }
        };
        let entry: Entry = match serde_json::from_slice(&bytes) {
            Ok(entry) => entry,
            Err(error) => {
                warn_unreadable(trial, &path, &error.to_string());
                return Lookup::Miss(None);
            }
        };
        // Another trial of the same file name (a hash collision) or another format.
        if entry.schema != ENTRY_SCHEMA || entry.trial != trial || !reusable(entry.status) {
            return Lookup::Miss(None);
        }
        if entry.key == key.hash {
            return Lookup::Hit(Box::new(entry));
        }
        Lookup::Miss(Some((
            entry.run_id.clone(),
            changed(&entry.inputs, &key.inputs),
        )))
    }

    /// Keeps `record`'s outcome under `key`, when it may be reused; an entry another process
    /// writes at the same time is replaced whole, never mixed.
    pub(crate) fn save(&self, record: &TrialRecord, key: &Key) -> std::io::Result<()> {
        if !reusable(record.status) || record.reused.is_some() {
            return Ok(());
        }
        let entry = Entry {
            schema: ENTRY_SCHEMA,
            trial: record.trial.clone(),
            key: key.hash.clone(),
            inputs: key.inputs.clone(),
            run_id: record.run_id.clone(),
            started_at: record.started_at.clone(),
            host: record.host.clone(),
            seconds: record.seconds,
            status: record.status,
            failure: record.failure.clone(),
            note: record.note.clone(),
            image: record.image.clone(),
            consistent: record.consistent.clone(),
            services: record.services.clone(),
        };
        let json = serde_json::to_vec_pretty(&entry).expect("entries always serialise");
        crate::record::write_atomic(&self.path(&record.trial), &json)
    }

    /// Removes every entry; says how many there were. A store that is not there is empty.
    pub fn clear(&self) -> std::io::Result<usize> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(error) => return Err(error),
        };
        let mut removed = 0;
        for entry in entries {
            let path = entry?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            // Its entries, and temporary files a killed writer left.
            if name.ends_with(".json") || name.starts_with(".tmp-") {
                std::fs::remove_file(&path)?;
                removed += usize::from(name.ends_with(".json"));
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
        Ok(removed)
    }
}

fn warn_unreadable(trial: &str, path: &Path, error: &str) {
    eprintln!(
        "warning: the result reuse entry of {trial} at {} cannot be read ({error}); the trial runs, and its entry is rewritten if it passes",
        path.display()
    );
}

/// The top-level inputs that differ between `before` and `now`, by name (`notebook`,
/// `image`, `spec.check`...): what a user needs to know why a trial ran again.
fn changed(before: &Value, now: &Value) -> Vec<String> {
    let (Value::Object(before), Value::Object(now)) = (before, now) else {
        return vec!["inputs".into()];
    };
    let mut names: Vec<&String> = before.keys().chain(now.keys()).collect();
    names.sort();
    names.dedup();
    let mut changed = Vec::new();
    for name in names {
        match (before.get(name), now.get(name)) {
            (Some(Value::Object(a)), Some(Value::Object(b))) if name == "spec" => {
                let mut fields: Vec<&String> = a.keys().chain(b.keys()).collect();
                fields.sort();
                fields.dedup();
                changed.extend(
                    fields
                        .into_iter()
                        .filter(|f| a.get(*f) != b.get(*f))
                        .map(|f| format!("spec.{f}")),
                );
            }
            (a, b) if a != b => changed.push(name.clone()),
            _ => {}
        }
    }
    changed
}

/// The record of a trial reused from `entry`, in run `run_id` on `host`, starting now.
pub(crate) fn record_of(entry: &Entry, mut record: TrialRecord, started_at: String) -> TrialRecord {
    record.status = entry.status;
    record.failure = entry.failure.clone();
    record.note = entry.note.clone();
    record.image = entry.image.clone();
    record.consistent = entry.consistent.clone();
    record.services = entry.services.clone();
    record.started_at = started_at;
    record.seconds = 0.0;
    record.reused = Some(Reused {
        run_id: entry.run_id.clone(),
        at: entry.started_at.clone(),
        host: entry.host.clone(),
        seconds: entry.seconds,
    });
    record
}

impl Entry {
    /// The run it came from.
    pub(crate) fn run_id(&self) -> &str {
        &self.run_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let a = json!({"b": 1, "a": {"d": [1, {"z": 0, "y": "x"}], "c": null}});
        assert_eq!(
            canonical(&a),
            r#"{"a":{"c":null,"d":[1,{"y":"x","z":0}]},"b":1}"#
        );
        assert_eq!(Key::new(a.clone()).hash, Key::new(a).hash);
        assert_eq!(sha256(b"").len(), 64);
    }

    #[test]
    fn a_miss_names_the_inputs_that_changed() {
        let before = json!({"notebook": "1", "image": "x", "spec": {"check": 1, "machine": 2}});
        let now = json!({"notebook": "2", "image": "x", "spec": {"check": 3, "machine": 2}});
        assert_eq!(changed(&before, &now), ["notebook", "spec.check"]);
    }
}
