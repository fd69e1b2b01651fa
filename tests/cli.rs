//! The `runtime-matrix` command: `plan` in text and JSON, and `report` merging the records
//! of several shards into one set of reports.

mod support;

use support::{fixtures, harness, output, runtime_matrix};

#[test]
fn plan_json_has_every_trial_and_every_exclusion_with_its_reason() {
    let config = fixtures().join("matrices/commands.toml");
    let (code, stdout, _) = output(
        runtime_matrix()
            .args(["plan", "--format", "json", "--config"])
            .arg(&config),
    );
    assert_eq!(code, Some(0));
    let plan: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let trials = plan["plan"]["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 8);
    assert_eq!(trials[0]["name"], "alpha::cpu::cmd::fails");
    assert_eq!(
        trials[0]["check"]["kind"]["run"],
        "echo 'partial output'; echo 'something broke' >&2; exit 3"
    );
    assert_eq!(trials[0]["runtime"]["env"]["GREETING"], "hello from alpha");
    let reasons: Vec<(&str, &str)> = plan["plan"]["excluded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["reason"].as_str().unwrap()))
        .collect();
    assert!(reasons.contains(&(
        "alpha::a100::cmd::ok",
        "machine `a100` needs 1 GPU(s) matching `*A100*`; this host has no NVIDIA driver (NVML: a libloading error occurred: /nonexistent/libnvidia-ml.so.1: cannot open shared object file: No such file or directory) (set RUNTIME_MATRIX_MACHINES=a100 to run it here anyway)"
    )), "{reasons:?}");
    assert!(reasons.contains(&(
        "alpha::cpu-large::cmd::slow",
        "excluded by matrix.toml: too slow for the large machine's queue"
    )));
    assert!(reasons.contains(&(
        "alpha::cpu::cmd::nightly-only",
        "not in stage `pre-merge` (runs in: nightly)"
    )));
}

#[test]
fn report_merges_shards_into_one_report() {
    let out = tempfile::tempdir().unwrap();
    let config = fixtures().join("matrices/commands.toml");
    for (shard, run) in [("1/2", "shard-1"), ("2/2", "shard-2")] {
        let mut command = harness(&config, out.path(), run, &[]);
        let (code, _, stderr) = output(command.env("RUNTIME_MATRIX_SHARD", shard));
        assert!(matches!(code, Some(0 | 101)), "{stderr}");
    }
    let merged = out.path().join("merged");
    let (code, stdout, stderr) = output(
        runtime_matrix()
            .arg("report")
            .arg(out.path().join("shard-1"))
            .arg(out.path().join("shard-2"))
            .arg("--out")
            .arg(&merged),
    );
    assert_eq!(
        code,
        Some(101),
        "failures in the records fail the report: {stdout}{stderr}"
    );
    assert!(
        stdout.contains("merged 8 trial records from 2 runs") && stdout.contains(", 0 not run\n"),
        "{stdout}"
    );

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(merged.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["schema"], 1);
    assert_eq!(report["summary"]["total"], 8);
    assert_eq!(report["summary"]["unexpected_passes"], 1);
    // Each shard planned what it ran, so the merge of both is complete.
    assert_eq!(report["summary"]["not_run"], 0, "{}", report["not_run"]);
    assert_eq!(report["interrupted"], false);
    assert_eq!(report["runs_without_plan"], serde_json::json!([]));
    // Shard exclusions vanish once the other shard's record is merged; real ones stay.
    let excluded: Vec<&str> = report["excluded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert!(
        excluded
            .iter()
            .all(|reason| !reason.starts_with("in shard")),
        "{excluded:?}"
    );
    assert!(excluded.contains(&"excluded by matrix.toml: too slow for the large machine's queue"));

    let markdown = std::fs::read_to_string(merged.join("report.md")).unwrap();
    assert!(
        markdown.contains("| runtime | a100 | cpu | cpu-large |"),
        "{markdown}"
    );
    assert!(
        markdown.contains("### `alpha::cpu::cmd::fails`"),
        "{markdown}"
    );
    let junit = std::fs::read_to_string(merged.join("junit.xml")).unwrap();
    assert_eq!(junit.matches("<testcase ").count(), 8 + excluded.len());
    assert!(junit.contains("<failure message=\"`echo &apos;partial output&apos;; echo &apos;something broke&apos; &gt;&amp;2; exit 3` exited with code 3\" type=\"exit-code\">"), "{junit}");
}

#[test]
fn report_of_a_folder_without_records_is_a_setup_error() {
    let empty = tempfile::tempdir().unwrap();
    let (code, _, stderr) = output(runtime_matrix().arg("report").arg(empty.path()));
    assert_eq!(code, Some(2));
    assert!(stderr.contains("no records found under"), "{stderr}");
}

#[test]
fn report_of_runs_without_a_plan_says_what_it_cannot_know() {
    // A run folder from a runtime-matrix older than plans: its records merge as before.
    let out = tempfile::tempdir().unwrap();
    let config = fixtures().join("matrices/commands.toml");
    let (code, _, stderr) = output(&mut harness(
        &config,
        out.path(),
        "old",
        &["alpha::cpu::cmd::ok"],
    ));
    assert_eq!(code, Some(0), "{stderr}");
    std::fs::remove_dir_all(out.path().join("old/planned")).unwrap();
    let (code, stdout, stderr) = output(runtime_matrix().arg("report").arg(out.path().join("old")));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let markdown = std::fs::read_to_string(out.path().join("old/report.md")).unwrap();
    assert!(
        markdown
            .contains("Run(s) `old` recorded no plan (made by a runtime-matrix older than plans)"),
        "{markdown}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("old/report.json")).unwrap())
            .unwrap();
    assert_eq!(report["runs_without_plan"], serde_json::json!(["old"]));
}

#[test]
fn clean_keeps_the_newest_run_folders_and_nothing_else() {
    let out = tempfile::tempdir().unwrap();
    let config = fixtures().join("matrices/commands.toml");
    for run_id in ["first", "second", "third"] {
        let (code, stdout, stderr) = output(&mut harness(
            &config,
            out.path(),
            run_id,
            &["--exact", "alpha::cpu::cmd::ok"],
        ));
        assert_eq!(code, Some(0), "{stdout}\n{stderr}");
        // Run folders are told apart by when they last changed.
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::fs::create_dir_all(out.path().join("cache/venvs")).unwrap();
    let (code, stdout, stderr) = output(
        runtime_matrix()
            .args(["clean", "--runs", "2", "--config"])
            .arg(&config)
            .env("RUNTIME_MATRIX_OUT", out.path()),
    );
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "removed 1 run folder from {}, kept the newest 2",
            out.path().display()
        )),
        "{stdout}"
    );
    let mut left: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["cache", "latest", "second", "third"]);
}

/// Two shards of a matrix with a host runtime and an opt-in container runtime, run without
/// `--include-ignored` and merged: every declared trial appears once in each report, with the
/// status it has, and none as "not in this shard".
#[test]
fn merged_shards_account_for_every_trial_once_in_all_three_reports() {
    let out = tempfile::tempdir().unwrap();
    let config = fixtures().join("matrices/shards.toml");
    let mut runs = Vec::new();
    for shard in ["1/2", "2/2"] {
        let run_id = format!("shard-{}", &shard[..1]);
        let (code, stdout, stderr) = output(
            harness(&config, out.path(), &run_id, &[])
                .env("RUNTIME_MATRIX_SHARD", shard)
                .env("RUNTIME_MATRIX_NVML", "/nonexistent/libnvidia-ml.so.1"),
        );
        // The failing command is in one of the shards.
        assert!(matches!(code, Some(0 | 101)), "{stdout}\n{stderr}");
        runs.push(out.path().join(&run_id));
    }
    let merged = out.path().join("merged");
    let (code, stdout, stderr) = output(
        runtime_matrix()
            .arg("report")
            .args(&runs)
            .arg("--out")
            .arg(&merged),
    );
    assert_eq!(code, Some(101), "{stdout}\n{stderr}");

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(merged.join("report.json")).unwrap()).unwrap();
    let names = |key: &str| -> Vec<String> {
        report[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                t[if key == "trials" { "trial" } else { "name" }]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    let (trials, skipped, excluded) = (names("trials"), names("skipped"), names("excluded"));
    assert_eq!(trials.len(), 6, "{trials:?}");
    assert_eq!(
        skipped,
        ["containers::cpu::cmd::one", "containers::cpu::cmd::two"]
    );
    // The GPU machine's trials are excluded for want of a GPU, not for their shard.
    assert_eq!(excluded.len(), 2, "{excluded:?}");
    for entry in report["excluded"].as_array().unwrap() {
        let reason = entry["reason"].as_str().unwrap();
        assert!(reason.contains("needs 1 GPU"), "{reason}");
    }
    let mut all: Vec<&String> = trials.iter().chain(&skipped).chain(&excluded).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 10, "every trial once: {all:?}");
    assert_eq!(report["summary"]["skipped"], 2);
    assert_eq!(report["summary"]["failed"], 1);
    assert_eq!(report["not_run"].as_array().unwrap().len(), 0);

    let markdown = std::fs::read_to_string(merged.join("report.md")).unwrap();
    assert!(
        markdown.contains("6 trials ran: 5 passed, 1 failed, 0 expected failures, 0 unexpected passes; 2 skipped (opt-in); 2 excluded."),
        "{markdown}"
    );
    assert!(markdown.contains("container trials are opt-in: run with --include-ignored"));
    assert!(!markdown.contains("in shard"), "{markdown}");

    let junit = std::fs::read_to_string(merged.join("junit.xml")).unwrap();
    let parsed = quick_junit::Report::deserialize_from_str(&junit).unwrap();
    assert_eq!((parsed.tests, parsed.failures, parsed.errors), (10, 1, 0));
    let cases: Vec<&str> = parsed
        .test_suites
        .iter()
        .flat_map(|s| &s.test_cases)
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(cases.len(), 10);
    let skipped_cases = parsed
        .test_suites
        .iter()
        .flat_map(|s| &s.test_cases)
        .filter(|c| matches!(c.status, quick_junit::TestCaseStatus::Skipped { .. }))
        .count();
    assert_eq!(skipped_cases, 4);
}

/// The end of a run names what libtest's summary does not (expected failures, setup apart,
/// the slowest trials), and, as after `cargo nextest run`, `report` with no folder merges the
/// newest run.
#[test]
fn a_run_ends_with_a_summary_and_report_without_a_folder_takes_the_newest_run() {
    let out = tempfile::tempdir().unwrap();
    let config = fixtures().join("matrices/commands.toml");
    let (code, stdout, stderr) = output(&mut harness(
        &config,
        out.path(),
        "summarised",
        &["alpha::cpu::cmd::"],
    ));
    assert_eq!(code, Some(101), "{stdout}\n{stderr}");
    let summary = stderr
        .lines()
        .skip_while(|line| !line.contains(" ran: "))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        summary.starts_with("runtime-matrix: 3 trials ran: 1 passed, 2 failed, 0 expected failures, 0 unexpected passes"),
        "{stderr}"
    );
    assert!(summary.contains("\n  slowest:\n"), "{summary}");
    assert!(
        summary.contains(&format!(
            "runtime-matrix: reports written to {}",
            out.path().join("summarised").display()
        )),
        "{summary}"
    );

    std::fs::remove_file(out.path().join("summarised/report.md")).unwrap();
    let (code, stdout, stderr) = output(
        runtime_matrix()
            .args(["report", "--config"])
            .arg(&config)
            .env("RUNTIME_MATRIX_OUT", out.path()),
    );
    assert_eq!(code, Some(101), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "reports written to {}",
            out.path().join("summarised").display()
        )),
        "{stdout}"
    );
    assert!(out.path().join("summarised/report.md").exists());

    let empty = tempfile::tempdir().unwrap();
    let (code, _, stderr) = output(
        runtime_matrix()
            .args(["report", "--config"])
            .arg(&config)
            .env("RUNTIME_MATRIX_OUT", empty.path()),
    );
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("no run to report on") && stderr.contains("run the matrix first"),
        "{stderr}"
    );
}

/// `--version` says the version and the commit the binary was built from, so that a bug report
/// names exactly which code ran.
#[test]
fn version_names_the_commit() {
    let (code, stdout, _) = output(runtime_matrix().arg("--version"));
    assert_eq!(code, Some(0));
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    assert_eq!(
        stdout.trim(),
        format!(
            "runtime-matrix {} (commit {head})",
            env!("CARGO_PKG_VERSION")
        )
    );
}
