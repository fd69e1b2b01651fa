//! Result reuse (issue 13, item 6): with `--reuse-results` (or
//! `RUNTIME_MATRIX_REUSE_RESULTS=1`) a trial whose inputs are unchanged since it passed (or
//! failed the declared way) is not executed again, and says so in its record, report.md,
//! report.json, junit.xml and the console; editing a notebook, a data file, a parameter, a
//! timeout or the image re-runs exactly the trials they feed; a failing trial always runs
//! again; a secret's value never reaches the store; an unreadable entry is a miss with a
//! warning; `clean --reuse` empties the store; without the switch nothing is reused.

mod support;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use support::{ensure_base_image, harness, output, records, runtime_matrix};

/// A notebook that prints `text`, and whose parameter cell takes `greeting`.
fn notebook(text: &str) -> String {
    serde_json::json!({
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "cells": [
            {"cell_type": "code", "id": "p", "metadata": {"tags": ["parameters"]},
             "source": "greeting = 'default'", "execution_count": null, "outputs": []},
            {"cell_type": "code", "id": "c", "metadata": {},
             "source": format!("print(greeting, {text:?})"), "execution_count": null, "outputs": []},
        ]
    })
    .to_string()
}

/// A notebook that reads `../data/values.csv`.
const READS_DATA: &str = r#"{"nbformat": 4, "nbformat_minor": 5,
 "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
 "cells": [{"cell_type": "code", "id": "c", "metadata": {}, "execution_count": null, "outputs": [],
   "source": "print(open('../data/values.csv').read())"}]}"#;

/// A notebook that fails the declared way.
const FAILS: &str = r#"{"nbformat": 4, "nbformat_minor": 5,
 "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
 "cells": [{"cell_type": "code", "id": "c", "metadata": {}, "execution_count": null, "outputs": [],
   "source": "raise ValueError('declared to fail')"}]}"#;

/// A host runtime over `nb/` (a, b, fails) with data for `b`, a parameter for `a`, a passing
/// and a failing command.
fn host_matrix(greeting: &str, ok_timeout: &str) -> String {
    format!(
        r#"notebooks-dir = "notebooks"

[machines.cpu]
gpus = 0

[runtimes.host]
python = "python3"
notebooks = ["nb/*.ipynb"]
timeout = "60s"
commands.ok = {{ run = "true", timeout = "{ok_timeout}" }}
commands.fails = "exit 3"

[[overrides]]
notebooks = "nb/a.ipynb"
parameters = {{ greeting = "{greeting}" }}

[[overrides]]
notebooks = "nb/b.ipynb"
data = ["data/*.csv"]

[[expected-failures]]
runtime = "host"
check = "nb::nb/fails"
reason = "it raises on purpose"
matches = "ValueError"
"#
    )
}

/// A project folder: the matrix, its notebooks and data, a store and an output folder.
struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new(matrix: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        let project = Project { dir };
        project.write("matrix.toml", matrix);
        project.write("notebooks/nb/a.ipynb", &notebook("a"));
        project.write("notebooks/nb/b.ipynb", READS_DATA);
        project.write("notebooks/nb/fails.ipynb", FAILS);
        project.write("notebooks/data/values.csv", "x\n1\n");
        project
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    fn write(&self, relative: &str, text: &str) {
        let path = self.path(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn out(&self) -> PathBuf {
        self.path("out")
    }

    fn store(&self) -> PathBuf {
        self.path("store")
    }

    /// Runs the matrix as `run_id` with `args` and result reuse switched on by `switch`
    /// (`flag`, `env` or `off`); returns the exit code, stderr and the records.
    fn run(
        &self,
        run_id: &str,
        switch: &str,
        extra: &[&str],
    ) -> (Option<i32>, String, BTreeMap<String, Value>) {
        let mut args: Vec<&str> = extra.to_vec();
        if switch == "flag" {
            args.push("--reuse-results");
        }
        let mut command = harness(&self.path("matrix.toml"), &self.out(), run_id, &args);
        command
            .env("RUNTIME_MATRIX_REUSE_DIR", self.store())
            .env("RUNTIME_MATRIX_RUNNER_IDLE", "2s");
        if switch == "env" {
            command.env("RUNTIME_MATRIX_REUSE_RESULTS", "1");
        }
        let (code, stdout, stderr) = output(&mut command);
        let records = records(&self.out(), run_id);
        (code, format!("{stdout}\n{stderr}"), records)
    }

    /// Every file of the store, as text.
    fn store_text(&self) -> String {
        let mut text = String::new();
        for entry in std::fs::read_dir(self.store()).unwrap() {
            text.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
        }
        text
    }
}

/// Asserts that `instance` validates against the shipped schema `file` (under `schemas/`).
fn assert_valid(file: &str, instance: &Value) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("schemas")
        .join(file);
    let schema: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|error| format!("{}: {error}", error.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{file}: {}\n{instance}",
        errors.join("\n")
    );
}

/// The trials of `records` that were executed (not reused), by check.
fn executed(records: &BTreeMap<String, Value>) -> BTreeSet<String> {
    records
        .values()
        .filter(|r| r.get("reused").is_none())
        .map(|r| r["check"].as_str().unwrap().to_owned())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn unchanged_trials_are_reused_and_each_edit_reruns_exactly_the_trials_it_feeds() {
    let project = Project::new(&host_matrix("hi", "30s"));
    let all = set(&[
        "nb::nb/a",
        "nb::nb/b",
        "nb::nb/fails",
        "cmd::ok",
        "cmd::fails",
    ]);

    let (code, said, first) = project.run("r1", "flag", &[]);
    assert_eq!(code, Some(101), "{said}");
    assert_eq!(executed(&first), all, "{said}");
    assert_eq!(first["host::cpu::cmd::fails"]["status"], "failed");
    assert_eq!(
        first["host::cpu::nb::nb/fails"]["status"],
        "expected-failure"
    );

    // Everything that ended OK is reused, the expected failure as an expected failure; the
    // failing command runs again.
    let (code, said, second) = project.run("r2", "env", &[]);
    assert_eq!(code, Some(101), "{said}");
    assert_eq!(executed(&second), set(&["cmd::fails"]), "{said}");
    assert_eq!(second["host::cpu::cmd::fails"]["status"], "failed");
    let reused = &second["host::cpu::nb::nb/a"];
    assert_eq!(reused["status"], "passed");
    assert_eq!(reused["reused"]["run_id"], "r1");
    assert_eq!(reused["seconds"], 0.0);
    let expected = &second["host::cpu::nb::nb/fails"];
    assert_eq!(expected["status"], "expected-failure");
    assert_eq!(expected["reused"]["run_id"], "r1");
    assert!(
        expected["failure"]["summary"]
            .as_str()
            .unwrap()
            .contains("ValueError"),
        "{expected}"
    );
    assert!(
        said.contains("result reuse: 4 of 5 trials reused"),
        "{said}"
    );
    assert!(
        said.contains("host::cpu::nb::nb/a: reused from run r1"),
        "{said}"
    );
    assert!(
        said.contains("(4 reused from earlier runs, not executed)"),
        "{said}"
    );
    let run = project.out().join("r2");
    let markdown = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(
        markdown.contains("(4 reused from earlier runs, not executed)")
            && markdown.contains("| `host::cpu::nb::nb/a` | passed | reused from run `r1` |"),
        "{markdown}"
    );
    let json: Value =
        serde_json::from_slice(&std::fs::read(run.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["summary"]["reused"], 4);
    assert_valid("report.schema.json", &json);
    for record in second.values() {
        assert_valid("record.schema.json", record);
    }
    let junit = std::fs::read_to_string(run.join("junit.xml")).unwrap();
    assert_eq!(junit.matches("reused from run r1").count(), 4, "{junit}");

    // One input at a time: exactly the trials it feeds run again (and the failing command).
    project.write("notebooks/nb/a.ipynb", &notebook("a, edited"));
    let (_, said, records) = project.run("r3", "flag", &[]);
    assert_eq!(
        executed(&records),
        set(&["nb::nb/a", "cmd::fails"]),
        "{said}"
    );
    assert!(
        said.contains("host::cpu::nb::nb/a: changed since run r1: notebook"),
        "{said}"
    );

    project.write("notebooks/data/values.csv", "x\n2\n");
    let (_, said, records) = project.run("r4", "flag", &[]);
    assert_eq!(
        executed(&records),
        set(&["nb::nb/b", "cmd::fails"]),
        "{said}"
    );

    project.write("matrix.toml", &host_matrix("hello", "30s"));
    let (_, said, records) = project.run("r5", "flag", &[]);
    assert_eq!(
        executed(&records),
        set(&["nb::nb/a", "cmd::fails"]),
        "{said}"
    );

    project.write("matrix.toml", &host_matrix("hello", "31s"));
    let (_, said, records) = project.run("r6", "flag", &[]);
    assert_eq!(
        executed(&records),
        set(&["cmd::ok", "cmd::fails"]),
        "{said}"
    );

    // Without the switch, everything runs; the store is left as it was.
    let (_, said, records) = project.run("r7", "off", &[]);
    assert_eq!(executed(&records), all, "{said}");
    assert!(!said.contains("result reuse"), "{said}");

    // An entry that cannot be read is a miss, with a warning, and is written anew.
    for entry in std::fs::read_dir(project.store()).unwrap() {
        std::fs::write(entry.unwrap().path(), "{ not json").unwrap();
    }
    let (code, said, records) = project.run("r8", "flag", &[]);
    assert_eq!(code, Some(101), "{said}");
    assert_eq!(executed(&records), all, "{said}");
    assert!(said.contains("cannot be read"), "{said}");
    let (_, said, records) = project.run("r9", "flag", &[]);
    assert_eq!(executed(&records), set(&["cmd::fails"]), "{said}");
    assert_eq!(records["host::cpu::cmd::ok"]["reused"]["run_id"], "r8");

    // `clean --reuse` empties the store: the next run executes everything.
    let (code, stdout, stderr) = output(
        runtime_matrix()
            .env("RUNTIME_MATRIX_REUSE_DIR", project.store())
            .args(["clean", "--reuse", "--config"])
            .arg(project.path("matrix.toml")),
    );
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("removed 4 result reuse entries"),
        "{stdout}"
    );
    // `runtime-matrix report` says the count too (as under cargo-nextest).
    let (code, stdout, stderr) = output(
        runtime_matrix()
            .arg("report")
            .arg(project.out().join("r9"))
            .arg("--out")
            .arg(project.path("merged")),
    );
    assert_eq!(code, Some(101), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("(4 reused from earlier runs, not executed)"),
        "{stdout}"
    );
    let (_, said, records) = project.run("r10", "flag", &[]);
    assert_eq!(executed(&records), all, "{said}");
}

/// Removes the images the test built (by id: a retag leaves the first one untagged) when the
/// test ends, however it ends.
struct Images(std::sync::Mutex<Vec<String>>);

impl Drop for Images {
    fn drop(&mut self) {
        for id in self.0.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = std::process::Command::new("docker")
                .args(["image", "rm", "--force", "--no-prune", id])
                .output();
        }
    }
}

/// Tags a new image as `reference`: the base image with `label`, so another image id.
fn build_image(reference: &str, label: &str) {
    let mut build = std::process::Command::new("docker")
        .args(["build", "-q", "--label"])
        .arg(format!("reuse-test={label}"))
        .args(["-t", reference, "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    build
        .stdin
        .take()
        .unwrap()
        .write_all(b"FROM runtime-matrix/jupyter-base:bookworm\n")
        .unwrap();
    let done = build.wait_with_output().unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
}

fn image_id(reference: &str) -> String {
    let out = std::process::Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", reference])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn a_container_runtime_reruns_when_its_image_changes_and_its_secrets_never_reach_the_store() {
    ensure_base_image();
    let reference = format!("runtime-matrix/reuse-test-{}:latest", std::process::id());
    let images = Images(Default::default());
    build_image(&reference, "one");
    images.0.lock().unwrap().push(image_id(&reference));
    let secret = format!("reuse-secret-{}-value", std::process::id());
    let matrix = format!(
        r#"notebooks-dir = "notebooks"

[machines.cpu]
gpus = 0

[runtimes.host]
python = "python3"
notebooks = ["nb/a.ipynb"]
timeout = "60s"

[runtimes.box]
image = "{reference}"
pull = "never"
notebooks = ["nb/a.ipynb"]
gpu-checks = false
timeout = "60s"
secrets = ["REUSE_TEST_SECRET"]
env = {{ VISIBLE_SETTING = "plain-setting-value" }}
commands.secret = "test -n \"$REUSE_TEST_SECRET\""
"#
    );
    let project = Project::new(&matrix);
    let run_as = |run_id: &str, with_secret: bool, expected: i32| {
        let mut args = vec!["--include-ignored", "--reuse-results"];
        args.push("--test-threads=2");
        let mut command = harness(&project.path("matrix.toml"), &project.out(), run_id, &args);
        command
            .env("RUNTIME_MATRIX_REUSE_DIR", project.store())
            .env("RUNTIME_MATRIX_RUNNER_IDLE", "2s")
            .env_remove("REUSE_TEST_SECRET");
        if with_secret {
            command.env("REUSE_TEST_SECRET", &secret);
        }
        let (code, stdout, stderr) = output(&mut command);
        assert_eq!(code, Some(expected), "{stdout}\n{stderr}");
        (
            format!("{stdout}\n{stderr}"),
            records(&project.out(), run_id),
        )
    };
    let run = |run_id: &str| run_as(run_id, true, 0);
    let box_trials = set(&["box::cpu::cmd::secret", "box::cpu::nb::nb/a"]);
    let trials = |records: &BTreeMap<String, Value>| -> BTreeSet<String> {
        records
            .iter()
            .filter(|(_, r)| r.get("reused").is_none())
            .map(|(name, _)| name.clone())
            .collect()
    };

    let (said, first) = run("c1");
    assert_eq!(trials(&first).len(), 3, "{said}");
    let (said, second) = run("c2");
    assert!(trials(&second).is_empty(), "{said}");
    assert_eq!(second["box::cpu::cmd::secret"]["reused"]["run_id"], "c1");

    // The store names the secret and hashes the runtime's environment: no value is there.
    let stored = project.store_text();
    assert!(stored.contains("REUSE_TEST_SECRET"), "{stored}");
    assert!(stored.contains(&image_id(&reference)), "{stored}");
    assert!(!stored.contains(&secret), "{stored}");
    assert!(!stored.contains("plain-setting-value"), "{stored}");

    // The same reference on another image: its trials run again, the host's do not.
    build_image(&reference, "two");
    images.0.lock().unwrap().push(image_id(&reference));
    let (said, third) = run("c3");
    assert_eq!(trials(&third), box_trials, "{said}");
    assert!(said.contains("changed since run c1: image"), "{said}");
    let (said, fourth) = run("c4");
    assert!(trials(&fourth).is_empty(), "{said}");
    assert_eq!(fourth["box::cpu::nb::nb/a"]["reused"]["run_id"], "c3");

    // A secret that is not set fails the runtime's trials: they are not reused as passing.
    let (said, fifth) = run_as("c5", false, 101);
    assert_eq!(trials(&fifth), box_trials, "{said}");
    assert_eq!(fifth["box::cpu::cmd::secret"]["status"], "failed");
}
