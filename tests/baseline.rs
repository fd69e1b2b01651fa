//! Comparing a run with an earlier one: two real runs of notebooks on a host runtime where one
//! notebook broke and one slowed down (0.1 s to 5 s, against thresholds of 2× and 3 s, so that
//! no load on the machine makes it flaky), compared by `runtime-matrix report --baseline` both
//! ways, gated with `--fail-on new`, and taken by the harness from `RUNTIME_MATRIX_BASELINE`.

mod support;

use std::path::{Path, PathBuf};
use support::{harness, output, runtime_matrix};

/// A matrix of one host runtime on one machine, with one notebook per `(name, source)` of
/// `notebooks`, each a single code cell.
fn matrix(dir: &Path, notebooks: &[(&str, &str)]) -> PathBuf {
    let folder = dir.join("notebooks");
    std::fs::create_dir_all(&folder).unwrap();
    for (name, source) in notebooks {
        let notebook = serde_json::json!({
            "cells": [{"cell_type": "code", "execution_count": null, "metadata": {},
                       "outputs": [], "source": source}],
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                        "language": "python"}},
            "nbformat": 4, "nbformat_minor": 4
        });
        std::fs::write(folder.join(format!("{name}.ipynb")), notebook.to_string()).unwrap();
    }
    let path = dir.join("matrix.toml");
    let toml = "[machines.cpu]\ngpus = 0\n\n[runtimes.base]\npython = \"python3\"\n\
                notebooks = [\"*.ipynb\"]\n";
    std::fs::write(&path, toml).unwrap();
    path
}

const BEFORE: &[(&str, &str)] = &[
    ("steady", "print('steady')"),
    ("breaks", "print('fine')"),
    ("slows", "import time; time.sleep(0.1)"),
    ("known", "raise RuntimeError('still broken')"),
];

const AFTER: &[(&str, &str)] = &[
    ("steady", "print('steady')"),
    ("breaks", "raise RuntimeError('now broken')"),
    ("slows", "import time; time.sleep(5)"),
    ("known", "raise RuntimeError('still broken')"),
];

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The trial names of the comparison's list `key`.
fn names<'a>(baseline: &'a serde_json::Value, key: &str) -> Vec<&'a str> {
    baseline[key]
        .as_array()
        .unwrap_or_else(|| panic!("no `{key}` in {baseline}"))
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect()
}

#[test]
fn a_comparison_names_what_broke_and_what_slowed_and_fail_on_new_gates_on_the_break_only() {
    let out = tempfile::tempdir().unwrap();
    let (old_config, new_config) = (out.path().join("old"), out.path().join("new"));
    std::fs::create_dir_all(&old_config).unwrap();
    std::fs::create_dir_all(&new_config).unwrap();
    let runs = out.path().join("runs");
    let (code, stdout, stderr) = output(&mut harness(
        &matrix(&old_config, BEFORE),
        &runs,
        "old",
        &[],
    ));
    assert_eq!(
        code,
        Some(101),
        "the known failure fails it\n{stdout}\n{stderr}"
    );
    let old = runs.join("old");
    // The harness compares its own reports with the baseline it is given.
    let (code, stdout, stderr) = output(
        harness(&matrix(&new_config, AFTER), &runs, "new", &[])
            .env("RUNTIME_MATRIX_BASELINE", &old),
    );
    assert_eq!(code, Some(101), "{stdout}\n{stderr}");
    let new = runs.join("new");
    let report = json(&new.join("report.json"));
    assert_eq!(report["schema"], 1);
    assert_eq!(
        names(&report["baseline"], "new_failures"),
        ["base::cpu::nb::breaks"]
    );
    assert!(
        stderr.contains("compared with baseline ")
            && stderr.contains("  new failure: base::cpu::nb::breaks (failed; was passed)\n"),
        "{stderr}"
    );
    assert_eq!(
        report["baseline"]["slower_seconds"], 5.0,
        "the default thresholds"
    );

    // New against old, with thresholds the slow-down passes by far.
    let compared = out.path().join("compared");
    let report_of = |dir: &Path, baseline: &Path, to: &Path, more: &[&str]| {
        output(
            runtime_matrix()
                .arg("report")
                .arg(dir)
                .arg("--baseline")
                .arg(baseline)
                .args(["--slower-ratio", "2", "--slower-seconds", "3", "--out"])
                .arg(to)
                .args(more),
        )
    };
    let (code, stdout, stderr) = report_of(&new, &old, &compared, &[]);
    assert_eq!(
        code,
        Some(101),
        "any failure fails by default\n{stdout}\n{stderr}"
    );
    let baseline = &json(&compared.join("report.json"))["baseline"];
    assert_eq!(names(baseline, "new_failures"), ["base::cpu::nb::breaks"]);
    assert_eq!(names(baseline, "slower"), ["base::cpu::nb::slows"]);
    assert_eq!(names(baseline, "still_failing"), ["base::cpu::nb::known"]);
    for key in ["fixed", "new_trials", "removed_trials"] {
        assert_eq!(names(baseline, key), Vec::<&str>::new(), "{key}");
    }
    let slow = &baseline["slower"][0];
    assert!(
        slow["seconds"].as_f64().unwrap() >= 5.0
            && slow["baseline_seconds"].as_f64().unwrap() < 2.0,
        "{slow}"
    );
    assert_eq!(baseline["slower_ratio"], 2.0);
    assert!(
        stdout.contains(&format!(
            "compared with baseline {}: 1 new failure, 0 fixed, 1 still failing, 0 new trials, \
             0 removed trials, 1 slower, 0 heavier\n  new failure: base::cpu::nb::breaks (failed; was \
             passed)\n  still failing: base::cpu::nb::known (failed; was failed)\n  slower: \
             base::cpu::nb::slows ",
            old.display()
        )),
        "{stdout}"
    );
    let markdown = std::fs::read_to_string(compared.join("report.md")).unwrap();
    assert!(
        markdown.contains("## Compared with baseline\n")
            && markdown
                .contains("| ❌ new failure | `base::cpu::nb::breaks` | failed | passed |\n")
            && markdown.contains("| still failing | `base::cpu::nb::known` | failed | failed |\n")
            && markdown.contains("| `base::cpu::nb::slows` | "),
        "{markdown}"
    );

    // Gated on new failures only: the break fails it, and the known failure is not named.
    let (code, stdout, stderr) = report_of(&new, &old, &compared, &["--fail-on", "new"]);
    assert_eq!(code, Some(101), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("error: 1 failure the baseline does not have: `base::cpu::nb::breaks`\n"),
        "{stderr}"
    );
    assert!(!stderr.contains("nb::known"), "{stderr}");

    // Old against new (as a report.json): the break is fixed, and the only failure left is
    // one the baseline has too, which `--fail-on new` lets pass, and the default does not.
    let reverse = out.path().join("reverse");
    let new_json = new.join("report.json");
    let (code, stdout, stderr) = report_of(&old, &new_json, &reverse, &["--fail-on", "new"]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("1 failure the baseline has too (not failing the report: --fail-on new)"),
        "{stdout}"
    );
    let baseline = &json(&reverse.join("report.json"))["baseline"];
    assert_eq!(names(baseline, "fixed"), ["base::cpu::nb::breaks"]);
    assert_eq!(names(baseline, "new_failures"), Vec::<&str>::new());
    assert_eq!(names(baseline, "still_failing"), ["base::cpu::nb::known"]);
    assert_eq!(names(baseline, "slower"), Vec::<&str>::new());
    let (code, _, _) = report_of(&old, &new_json, &reverse, &[]);
    assert_eq!(code, Some(101));
}

#[test]
fn a_baseline_that_cannot_be_read_stops_the_run_before_any_trial_and_names_the_variable() {
    let out = tempfile::tempdir().unwrap();
    let config = matrix(out.path(), &[("steady", "print('steady')")]);
    let runs = out.path().join("runs");
    let missing = out.path().join("no-such-run");
    let (code, _, stderr) =
        output(harness(&config, &runs, "r", &[]).env("RUNTIME_MATRIX_BASELINE", &missing));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: invalid RUNTIME_MATRIX_BASELINE `{}` (use a run folder, a folder of run \
             folders, or a report.json, that exists)",
            missing.display()
        )),
        "{stderr}"
    );
    let not_a_report = out.path().join("notes.json");
    std::fs::write(&not_a_report, "{\"schema\": 1}").unwrap();
    let (code, _, stderr) =
        output(harness(&config, &runs, "r", &[]).env("RUNTIME_MATRIX_BASELINE", &not_a_report));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: invalid RUNTIME_MATRIX_BASELINE `{path}`\n  caused by: baseline {path} is not \
             a runtime-matrix report.json\n  caused by: missing field `trials`",
            path = not_a_report.display()
        )),
        "{stderr}"
    );
    assert!(!runs.join("r").exists(), "a trial ran: {stderr}");

    // `--fail-on new` means nothing without a baseline.
    let (code, _, stderr) = output(
        runtime_matrix()
            .arg("report")
            .arg(out.path())
            .args(["--fail-on", "new"]),
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--baseline <OLD>"), "{stderr}");
}
