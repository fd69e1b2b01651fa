//! Consistency across the matrix: a notebook's tagged cells compared across two host runtimes
//! that differ only in an environment variable (`fixtures/consistency/`). A difference fails the
//! notebook's `consistency::nb::<path>` check naming the cell, both sides and a diff; sanitizers
//! and a float tolerance make noise agree; shards merged by `runtime-matrix report` get the
//! verdict one run gets; expected differences work like expected failures; listing reads no
//! notebook.

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use support::{fixtures, harness, output, records, runtime_matrix};

/// A matrix of two host runtimes, `alpha` and `beta`, running `notebooks` (under
/// `fixtures/consistency`) with `[consistency]` and the rest of `extra` appended.
fn matrix(dir: &Path, notebooks: &[&str], extra: &str) -> PathBuf {
    let globs: Vec<String> = notebooks.iter().map(|n| format!("\"{n}\"")).collect();
    let toml = format!(
        r#"notebooks-dir = "{}"

[machines.cpu]
gpus = 0

[runtimes.alpha]
python = "python3"
notebooks = [{globs}]
env = {{ FLAVOUR = "alpha" }}
timeout = "60s"

[runtimes.beta]
python = "python3"
notebooks = [{globs}]
env = {{ FLAVOUR = "beta" }}
timeout = "60s"

{extra}
"#,
        fixtures().join("consistency").display(),
        globs = globs.join(", "),
    );
    let path = dir.join("matrix.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

#[test]
fn a_cell_that_prints_differently_fails_naming_the_cell_the_sides_and_a_diff() {
    let dir = tempfile::tempdir().unwrap();
    let config = matrix(
        dir.path(),
        &["differs.ipynb"],
        "[consistency]\nnotebooks = [\"differs.ipynb\"]\n",
    );
    let out = dir.path().join("out");
    let (code, stdout, stderr) =
        output(&mut harness(&config, &out, "one", &["--test-threads", "4"]));
    assert_eq!(code, Some(101), "{stdout}\n{stderr}");
    // The libtest failure says it all.
    assert!(
        stdout.contains(
            "consistency of notebook `differs.ipynb` across runtimes and machines failed"
        ),
        "{stdout}"
    );
    let records = records(&out, "one");
    assert_eq!(records["alpha::cpu::nb::differs"]["status"], "passed");
    assert_eq!(
        records["alpha::cpu::nb::differs"]["consistent"][0]["text"],
        "runtime flavour: alpha\nsame in both\n"
    );
    let check = &records["consistency::nb::differs"];
    assert_eq!(check["status"], "failed", "{check:#}");
    assert_eq!(
        (check["runtime"].as_str(), check["machine"].as_str()),
        (Some(""), Some(""))
    );
    let failure = &check["failure"];
    assert_eq!(failure["kind"], "inconsistent");
    assert_eq!(failure["category"], "notebook");
    assert_eq!(
        failure["summary"],
        "cell 1 (id `flavour`: `print('runtime flavour:', os.environ['FLAVOUR'])`) printed \
         differently: alpha on cpu | beta on cpu"
    );
    assert_eq!(failure["cell"]["index"], 1);
    let details = text(&failure["output_tail"]);
    assert!(
        details.contains("[1] alpha on cpu\n[2] beta on cpu"),
        "{details}"
    );
    assert!(
        details.contains(
            "diff [1] -> [2]: from line 1\n  - runtime flavour: alpha\n  + runtime flavour: beta"
        ) && !details.contains("- same in both"),
        "{details}"
    );
    let consistency = &check["consistency"];
    assert_eq!(
        consistency["cells"], 2,
        "the agreeing cell was compared too"
    );
    assert_eq!(consistency["compared"].as_array().unwrap().len(), 2);
    assert_eq!(consistency["groups"][1]["executions"][0], "beta on cpu");

    // The reports: a Consistency section with the cell and the diff, a JUnit case in a
    // `consistency` suite, and no grid row without a runtime.
    let run = out.join("one");
    let markdown = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(markdown.contains("## Consistency"), "{markdown}");
    assert!(
        markdown.contains("| `differs.ipynb` | ❌ differ |"),
        "{markdown}"
    );
    assert!(markdown.contains("  + runtime flavour: beta"), "{markdown}");
    assert!(
        !markdown.contains("| **** |"),
        "a grid row without runtime:\n{markdown}"
    );
    let junit = std::fs::read_to_string(run.join("junit.xml")).unwrap();
    assert!(junit.contains("<testsuite name=\"consistency\""), "{junit}");
    assert!(
        junit.contains("<testcase name=\"consistency::nb::differs\" classname=\"consistency\""),
        "{junit}"
    );
    let report = read_json(&run.join("report.json"));
    assert_eq!(report["summary"]["failed"], 1);
    assert_eq!(report["summary"]["passed"], 2);
}

#[test]
fn sanitizers_and_a_float_tolerance_make_noise_agree_and_nothing_tagged_fails() {
    let dir = tempfile::tempdir().unwrap();
    let notebooks = ["timestamp.ipynb", "floats.ipynb", "untagged.ipynb"];
    let declared = "notebooks = [\"timestamp.ipynb\", \"floats.ipynb\", \"untagged.ipynb\"]";
    let exact = matrix(
        dir.path(),
        &notebooks,
        &format!("[consistency]\n{declared}\n"),
    );
    let out = dir.path().join("out");
    let (code, stdout, _) = output(&mut harness(
        &exact,
        &out,
        "exact",
        &["--test-threads", "6"],
    ));
    assert_eq!(code, Some(101), "{stdout}");
    let exact = records(&out, "exact");
    let stamp = &exact["consistency::nb::timestamp"];
    assert_eq!(stamp["status"], "failed");
    assert!(
        text(&stamp["failure"]["summary"]).starts_with("cell 0 (id `stamp`"),
        "{stamp:#}"
    );
    let floats = &exact["consistency::nb::floats"];
    assert_eq!(floats["status"], "failed");
    assert!(
        text(&floats["failure"]["output_tail"]).contains("  - 0.30000000000000004\n  + 0.3"),
        "{floats:#}"
    );
    let untagged = &exact["consistency::nb::untagged"];
    assert_eq!(untagged["status"], "failed");
    assert_eq!(untagged["failure"]["kind"], "nothing-tagged");
    assert_eq!(
        untagged["failure"]["summary"],
        "no cell tagged `consistent` in untagged.ipynb: tag the cells to compare, or drop it from consistency.notebooks"
    );

    let normalised = matrix(
        dir.path(),
        &notebooks[..2],
        "[consistency]\nnotebooks = [\"timestamp.ipynb\", \"floats.ipynb\"]\nfloat-tolerance = 1e-9\n\
         [[consistency.sanitizers]]\nregex = '\\d{4}-\\d{2}-\\d{2}T[0-9:.]+'\nreplace = \"<TIMESTAMP>\"\n",
    );
    let (code, stdout, _) = output(&mut harness(
        &normalised,
        &out,
        "normalised",
        &["--test-threads", "6"],
    ));
    assert_eq!(code, Some(0), "{stdout}");
    let normalised = records(&out, "normalised");
    for check in ["consistency::nb::timestamp", "consistency::nb::floats"] {
        assert_eq!(
            normalised[check]["status"], "passed",
            "{:#}",
            normalised[check]
        );
    }
    assert_eq!(
        normalised["consistency::nb::timestamp"]["note"],
        "2 executions agree on 2 cells: alpha on cpu, beta on cpu"
    );
    // The settings travel in the record, so that a merge needs no matrix.toml.
    assert_eq!(
        normalised["consistency::nb::floats"]["consistency"]["float_tolerance"],
        1e-9
    );
    assert_eq!(
        normalised["consistency::nb::timestamp"]["consistency"]["sanitizers"][0]["replace"],
        "<TIMESTAMP>"
    );
}

#[test]
fn cells_without_ids_are_matched_by_index_even_with_injected_parameters() {
    // nbformat gives a 4.5 cell without an id a random one as it runs it, different in every
    // execution; `beta`'s declared parameter puts a cell in front of the notebook's.
    let dir = tempfile::tempdir().unwrap();
    let config = matrix(
        dir.path(),
        &["noids.ipynb"],
        "[consistency]\nnotebooks = [\"noids.ipynb\"]\n",
    );
    let toml = std::fs::read_to_string(&config).unwrap().replace(
        "env = { FLAVOUR = \"beta\" }",
        "env = { FLAVOUR = \"beta\" }\nparameters = { extra = 1 }",
    );
    std::fs::write(&config, toml).unwrap();
    let out = dir.path().join("out");
    let (code, stdout, stderr) =
        output(&mut harness(&config, &out, "one", &["--test-threads", "4"]));
    let records = records(&out, "one");
    let cells = |trial: &str| records[trial]["consistent"].clone();
    assert_eq!(
        code,
        Some(0),
        "{stdout}\n{stderr}\n{:#}",
        records["consistency::nb::noids"]
    );
    assert_eq!(cells("alpha::cpu::nb::noids")[0]["index"], 1);
    assert_eq!(
        cells("beta::cpu::nb::noids")[0]["index"],
        1,
        "{:#}",
        cells("beta::cpu::nb::noids")
    );
    assert_eq!(
        records["consistency::nb::noids"]["note"],
        "2 executions agree on 1 cell: alpha on cpu, beta on cpu"
    );
}

#[test]
fn shards_merged_by_report_give_the_verdict_of_one_run_of_both() {
    let dir = tempfile::tempdir().unwrap();
    let config = matrix(
        dir.path(),
        &["differs.ipynb"],
        "[consistency]\nnotebooks = [\"differs.ipynb\"]\n",
    );
    let out = dir.path().join("out");
    // Each shard runs one runtime (and the consistency check): alone, it has nothing to compare.
    for (run, other) in [("shard-alpha", "beta::"), ("shard-beta", "alpha::")] {
        let (code, stdout, _) = output(&mut harness(&config, &out, run, &["--skip", other]));
        assert_eq!(code, Some(0), "{stdout}");
        let check = &records(&out, run)["consistency::nb::differs"];
        assert_eq!(check["status"], "passed");
        assert!(
            text(&check["note"]).starts_with("nothing compared: only "),
            "{check:#}"
        );
    }
    let merged = dir.path().join("merged");
    let (code, _, stderr) = output(
        runtime_matrix()
            .arg("report")
            .arg(out.join("shard-alpha"))
            .arg(out.join("shard-beta"))
            .arg("--out")
            .arg(&merged),
    );
    let (one_code, stdout, _) = output(&mut harness(&config, &out, "both", &[]));
    assert_eq!(one_code, Some(101), "{stdout}");
    assert_eq!(code, one_code, "{stderr}");
    let (code, _, _) = output(
        runtime_matrix()
            .arg("report")
            .arg(out.join("both"))
            .arg("--out")
            .arg(dir.path().join("one")),
    );
    assert_eq!(code, Some(101));

    let check = |report: &Value| -> Value {
        let check = report["trials"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["trial"] == "consistency::nb::differs")
            .cloned()
            .unwrap();
        serde_json::json!({
            "status": check["status"],
            "failure": check["failure"],
            "compared": check["consistency"]["compared"].as_array().unwrap().iter()
                .map(|e| e["trial"].clone()).collect::<Vec<_>>(),
        })
    };
    let merged = read_json(&merged.join("report.json"));
    let one = read_json(&dir.path().join("one/report.json"));
    assert_eq!(check(&merged), check(&one));
    assert_eq!(check(&merged)["status"], "failed");
    assert_eq!(merged["summary"]["failed"], 1);

    // Compared with a baseline by name: against a shard where it passed, it is a new failure.
    let compared = dir.path().join("compared");
    let (code, _, stderr) = output(
        runtime_matrix()
            .arg("report")
            .arg(out.join("both"))
            .arg("--baseline")
            .arg(out.join("shard-alpha"))
            .args(["--fail-on", "new", "--out"])
            .arg(&compared),
    );
    assert_eq!(code, Some(101), "{stderr}");
    let comparison = &read_json(&compared.join("report.json"))["baseline"];
    let new_failures: Vec<&str> = comparison["new_failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| text(&c["name"]))
        .collect();
    assert_eq!(new_failures, ["consistency::nb::differs"], "{comparison:#}");
}

#[test]
fn an_expected_difference_is_an_expected_failure_and_agreeing_fails_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let config = matrix(
        dir.path(),
        &["differs.ipynb", "timestamp.ipynb"],
        "[consistency]\nnotebooks = [\"differs.ipynb\", \"timestamp.ipynb\"]\n\
         [[consistency.sanitizers]]\nregex = '\\d{4}-\\d{2}-\\d{2}T[0-9:.]+'\nreplace = \"<TIMESTAMP>\"\n\
         [[expected-failures]]\ncheck = \"consistency::nb::differs\"\n\
         reason = \"each runtime says its own flavour\"\nmatches = \"runtime flavour: beta\"\n\
         [[expected-failures]]\ncheck = \"consistency::nb::timestamp\"\n\
         reason = \"the clock differs\"\n",
    );
    let out = dir.path().join("out");
    let (code, stdout, _) = output(&mut harness(
        &config,
        &out,
        "expected",
        &["--test-threads", "6"],
    ));
    assert_eq!(code, Some(101), "{stdout}");
    let records = records(&out, "expected");
    assert_eq!(
        records["consistency::nb::differs"]["status"],
        "expected-failure"
    );
    assert_eq!(
        records["consistency::nb::differs"]["expected"]["reason"],
        "each runtime says its own flavour"
    );
    assert_eq!(
        records["consistency::nb::timestamp"]["status"],
        "unexpected-pass"
    );
    assert!(
        stdout.contains(
            "consistency of notebook `timestamp.ipynb` across runtimes and machines: the outputs \
             agree, but a difference is declared (the clock differs); they agree now, so remove \
             or narrow the [[expected-failures]] entry in matrix.toml"
        ),
        "{stdout}"
    );
}

#[test]
fn listing_shows_consistency_checks_and_reads_no_notebook() {
    let dir = tempfile::tempdir().unwrap();
    let notebooks = dir.path().join("notebooks");
    std::fs::create_dir(&notebooks).unwrap();
    // A FIFO: opening it to read would block forever.
    let fifo = notebooks.join("blocks.ipynb");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let config = dir.path().join("matrix.toml");
    std::fs::write(
        &config,
        "[machines.cpu]\ngpus = 0\n[runtimes.alpha]\npython = \"python3\"\nnotebooks = [\"*.ipynb\"]\n\
         [runtimes.beta]\npython = \"python3\"\nnotebooks = [\"*.ipynb\"]\n\
         [consistency]\nnotebooks = [\"*.ipynb\"]\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let (code, stdout, _) = output(&mut harness(&config, &out, "list", &["--list"]));
    assert_eq!(code, Some(0));
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.ends_with(": test"))
            .collect::<Vec<_>>(),
        [
            "[host] alpha::cpu::nb::blocks: test",
            "[host] beta::cpu::nb::blocks: test",
            "[consistency] consistency::nb::blocks: test",
        ]
    );
    // Name filters and `--exact` select it like any trial; `!consistency` plans none.
    let (_, stdout, _) = output(&mut harness(
        &config,
        &out,
        "list",
        &["--list", "--exact", "consistency::nb::blocks"],
    ));
    assert_eq!(
        stdout.lines().filter(|l| l.ends_with(": test")).count(),
        1,
        "{stdout}"
    );
    let (_, stdout, _) = output(
        harness(&config, &out, "list", &["--list"]).env("RUNTIME_MATRIX_TAGS", "!consistency"),
    );
    assert!(!stdout.contains("consistency::"), "{stdout}");
    assert!(!out.exists(), "listing wrote output");
}

#[test]
fn under_cargo_nextest_the_check_defers_its_verdict_to_the_merge() {
    let dir = tempfile::tempdir().unwrap();
    let config = matrix(
        dir.path(),
        &["differs.ipynb"],
        "[consistency]\nnotebooks = [\"differs.ipynb\"]\n",
    );
    let out = dir.path().join("out");
    // As cargo-nextest runs them: a process per trial, the consistency check's maybe first.
    for name in [
        "[consistency] consistency::nb::differs",
        "[host] alpha::cpu::nb::differs",
        "[host] beta::cpu::nb::differs",
    ] {
        let (code, stdout, _) = output(
            harness(&config, &out, "nextest", &[name, "--exact"]).env("NEXTEST_RUN_ID", "run"),
        );
        assert_eq!(code, Some(0), "{name}: {stdout}");
    }
    let check = &records(&out, "nextest")["consistency::nb::differs"];
    assert_eq!(check["status"], "passed");
    assert_eq!(
        check["note"],
        "compared when the run's records are merged (`runtime-matrix report`)"
    );
    assert_eq!(check["consistency"]["deferred"], true);
    let (code, _, _) = output(runtime_matrix().arg("report").arg(out.join("nextest")));
    assert_eq!(code, Some(101), "the merge finds the difference");
    let report = read_json(&out.join("nextest/report.json"));
    let check = report["trials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["trial"] == "consistency::nb::differs")
        .unwrap();
    assert_eq!(check["status"], "failed");
    assert_eq!(check["failure"]["kind"], "inconsistent");
    assert!(check["consistency"].get("deferred").is_none(), "{check:#}");
}

#[test]
fn reused_trials_are_compared_with_the_outputs_their_entry_kept() {
    let dir = tempfile::tempdir().unwrap();
    let config = matrix(
        dir.path(),
        &["differs.ipynb"],
        "[consistency]\nnotebooks = [\"differs.ipynb\"]\n",
    );
    let out = dir.path().join("out");
    for run in ["first", "second"] {
        let (code, stdout, _) = output(
            harness(&config, &out, run, &["--test-threads", "4"])
                .env("RUNTIME_MATRIX_REUSE_RESULTS", "1"),
        );
        assert_eq!(code, Some(101), "{run}: {stdout}");
    }
    let second = records(&out, "second");
    let alpha = &second["alpha::cpu::nb::differs"];
    assert_eq!(alpha["reused"]["run_id"], "first", "{alpha:#}");
    assert_eq!(
        alpha["consistent"][0]["text"],
        "runtime flavour: alpha\nsame in both\n"
    );
    // The check itself is never reused: it compares the reused outputs again.
    let check = &second["consistency::nb::differs"];
    assert!(check.get("reused").is_none(), "{check:#}");
    assert_eq!(check["status"], "failed");
    assert_eq!(check["consistency"]["compared"][0]["run_id"], "second");
}

#[test]
fn a_signal_ends_a_waiting_consistency_check_without_a_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let config = matrix(
        dir.path(),
        &["sleeps.ipynb"],
        "[consistency]\nnotebooks = [\"sleeps.ipynb\"]\n",
    );
    let out = dir.path().join("out");
    let child = harness(&config, &out, "signal", &["--test-threads", "4"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let alpha = out.join("signal/records");
    let alpha_done = || {
        std::fs::read_dir(&alpha)
            .map(|entries| {
                entries.flatten().any(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with("alpha.cpu.nb.sleeps")
                })
            })
            .unwrap_or(false)
    };
    assert!(
        support::wait_for(std::time::Duration::from_secs(60), alpha_done),
        "alpha's trial never ended"
    );
    // The consistency check has started, and waits for beta's sleeping trial.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let start = std::time::Instant::now();
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(
        start.elapsed() < std::time::Duration::from_secs(15),
        "took {:?} to stop",
        start.elapsed()
    );
    // No verdict from half the executions: the check is listed as not run.
    let records = records(&out, "signal");
    assert_eq!(
        records.keys().collect::<Vec<_>>(),
        ["alpha::cpu::nb::sleeps"]
    );
    let report = read_json(&out.join("signal/report.json"));
    let not_run: Vec<&str> = report["not_run"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| text(&n["name"]))
        .collect();
    assert_eq!(
        not_run,
        ["beta::cpu::nb::sleeps", "consistency::nb::sleeps"]
    );
    let markdown = std::fs::read_to_string(out.join("signal/report.md")).unwrap();
    assert!(
        markdown.contains("| `consistency::nb::sleeps` | ⛔ not run | the run was interrupted |"),
        "{markdown}"
    );
    assert_eq!(support::leftover_processes("signal"), Vec::<String>::new());
}
