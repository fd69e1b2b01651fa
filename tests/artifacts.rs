//! Failed notebooks readable without Jupyter (issue 11, item 6), on the host and in containers
//! (`fixtures/matrices/html.toml`): a failed notebook leaves an HTML rendering beside its
//! executed notebook, holding the error, and report.md links both with paths that resolve from
//! where it lies, a merged report elsewhere too; a passing notebook has no HTML; a notebook that
//! never started keeps no executed notebook and says so; a runtime without nbconvert keeps the
//! verdict and says why there is no HTML; a secret the notebook printed is masked in the HTML.

mod support;

use std::path::{Path, PathBuf};
use support::{containers_of_run, fixtures, harness, output, records, runtime_matrix};

/// Has HTML's and JSON's special characters, so that every escaped spelling must be masked.
const SECRET: &str = "s3cr3t<&>\"value'";

/// The links of `report` (a report.md), resolved from its folder and percent-decoded.
fn links(report: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(report).unwrap();
    let folder = report.parent().unwrap();
    text.split("](")
        .skip(1)
        .map(|rest| {
            let target = &rest[..rest.find(')').unwrap()];
            let mut bytes = Vec::new();
            let mut raw = target.bytes();
            while let Some(byte) = raw.next() {
                match byte {
                    b'%' => {
                        let hex: String = raw.by_ref().take(2).map(char::from).collect();
                        bytes.push(u8::from_str_radix(&hex, 16).unwrap());
                    }
                    byte => bytes.push(byte),
                }
            }
            folder.join(String::from_utf8(bytes).unwrap())
        })
        .collect()
}

/// Checks the failed notebook `trial` of `run` has its executed notebook and HTML beside it,
/// the HTML holding `error`, and that `report` links both to those very files.
fn rendered(run: &Path, record: &serde_json::Value, error: &str, reports: &[PathBuf]) -> String {
    let trial = record["trial"].as_str().unwrap();
    assert_eq!(record["status"], "failed", "{trial}");
    let artifact = run.join(record["artifact"].as_str().unwrap());
    let html = run.join(
        record["html"]
            .as_str()
            .unwrap_or_else(|| panic!("{trial} has no HTML: {record:#}")),
    );
    assert_eq!(html, artifact.with_extension("html"), "{trial}");
    let text = std::fs::read_to_string(&html).unwrap();
    assert!(text.contains(error), "{} lacks {error}", html.display());
    assert!(text.contains("<html"), "{} is not HTML", html.display());
    for report in reports {
        let linked: Vec<PathBuf> = links(report)
            .into_iter()
            .filter_map(|link| link.canonicalize().ok())
            .collect();
        for file in [&artifact, &html] {
            assert!(
                linked.contains(&file.canonicalize().unwrap()),
                "{} does not link {}",
                report.display(),
                file.display()
            );
        }
    }
    text
}

#[test]
fn failed_notebooks_are_kept_as_html_and_linked_from_the_report() {
    support::ensure_base_image();
    let out = tempfile::tempdir().unwrap();
    let mut command = harness(
        &fixtures().join("matrices/html.toml"),
        out.path(),
        "html",
        &["--include-ignored", "--test-threads", "2"],
    );
    let (code, stdout, stderr) = output(command.env("RUNTIME_MATRIX_TEST_TOKEN", SECRET));
    assert_eq!(code, Some(101), "{stdout}\n{stderr}");
    let run = out.path().join("html");
    let records = records(out.path(), "html");

    // The same report, merged into another folder: its links lead to the same files.
    let merged = out.path().join("merged/reports");
    let (code, stdout, stderr) = output(
        runtime_matrix()
            .arg("report")
            .arg(&run)
            .arg("--out")
            .arg(&merged),
    );
    assert_eq!(code, Some(101), "{stdout}\n{stderr}");
    let reports = [run.join("report.md"), merged.join("report.md")];

    for runtime in ["host", "base"] {
        let failing = &records[&format!("{runtime}::cpu::nb::notebooks/failing_cell")];
        rendered(&run, failing, "ZeroDivisionError", &reports);
        // Rendering is not the trial's time: a trivial notebook's cells take well under 10s.
        assert!(failing["seconds"].as_f64().unwrap() < 10.0, "{failing:#}");

        let passing = &records[&format!("{runtime}::cpu::nb::notebooks/passing")];
        assert_eq!(passing["status"], "passed");
        assert!(passing["artifact"].is_string());
        assert_eq!(passing.get("html"), None, "{passing:#}");
        let html = run
            .join(passing["artifact"].as_str().unwrap())
            .with_extension("html");
        assert!(!html.exists(), "{}", html.display());

        // A notebook that never started: no executed notebook posing as one, and a note why.
        let never = &records[&format!("{runtime}::cpu::nb::corpus-notebooks/unknown_kernel")];
        assert_eq!(never["failure"]["kind"], "no-such-kernel");
        assert_eq!(never["artifact"], serde_json::Value::Null);
        assert_eq!(never.get("html"), None);
        assert_eq!(
            never["artifact_note"],
            "no executed notebook: the notebook never started (no cell ran)"
        );
        let folder = run.join(format!("artifacts/{runtime}/cpu/corpus-notebooks"));
        assert!(!folder.exists(), "{}", folder.display());
    }
    for report in &reports {
        let text = std::fs::read_to_string(report).unwrap();
        assert!(
            text.contains("No executed notebook: the notebook never started (no cell ran)"),
            "{text}"
        );
    }

    // The secret the notebook printed and raised is masked in every spelling, in the HTML too.
    let leaks = &records["base::cpu::nb::notebooks/secret/leaks_secret"];
    let html = rendered(&run, leaks, "rejected token ***", &reports);
    for spelling in [SECRET, "s3cr3t&lt;&amp;&gt;", "s3cr3t"] {
        assert!(!html.contains(spelling), "the HTML holds {spelling}");
    }
    for file in walk(out.path()) {
        let text = String::from_utf8_lossy(&std::fs::read(&file).unwrap()).into_owned();
        assert!(
            !text.contains("s3cr3t"),
            "{} holds the secret",
            file.display()
        );
    }

    // Without nbconvert: the same verdict, no HTML, and why.
    let without = &records["no-nbconvert::cpu::nb::notebooks/failing_cell"];
    assert_eq!(without["failure"]["kind"], "cell-error", "{without:#}");
    assert_eq!(without["failure"]["cell"]["ename"], "ZeroDivisionError");
    assert!(without["artifact"].is_string());
    assert_eq!(without.get("html"), None, "{without:#}");
    let note = without["artifact_note"].as_str().unwrap();
    assert!(
        note.starts_with("no HTML: nbconvert is not installed in the runtime"),
        "{note}"
    );
    let report = std::fs::read_to_string(&reports[0]).unwrap();
    assert!(report.contains(&format!("({note})")), "{report}");
    assert_eq!(containers_of_run("html"), Vec::<String>::new());
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
