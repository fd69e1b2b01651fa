//! Notebooks with their data (issue 11, item 4), on the host and in containers: with `data`, a
//! notebook in a subfolder reads `../data/...` (and a nested file) as in Jupyter; without it,
//! the same notebook fails with `FileNotFoundError`; a notebook that changes its copy of the
//! data changes nothing for the next trial on the same runner, and the runner container gets
//! the data once; a glob that matches nothing and a data set over the limit fail their trial
//! before the notebook starts, naming the glob or the file; listing reads no data.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::{containers_of_run, fixtures, harness, output, records, runtime_matrix};

fn matrix() -> PathBuf {
    fixtures().join("matrices/data.toml")
}

/// Every run reaps the containers of harnesses that are gone, which is what a runner shared
/// under cargo-nextest is between its processes: the test that needs one runs alone among the
/// container tests here (as in tests/runner.rs).
static ENGINE: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// The fixture data, as the notebooks expect to find it in every trial.
const PRICES: &str = "item,price\napple,3\npear,4\n";

/// Runs the trials of kind `kind` (`host` or `docker`) one after the other, in name order.
fn run(
    out: &Path,
    run_id: &str,
    kind: &str,
) -> std::collections::BTreeMap<String, serde_json::Value> {
    let filter = format!("[{kind}]");
    let (code, stdout, stderr) = output(
        harness(
            &matrix(),
            out,
            run_id,
            &["--include-ignored", "--test-threads", "1", &filter],
        )
        .env("RUNTIME_MATRIX_RUNNER_IDLE", "2s"),
    );
    assert_eq!(code, Some(101), "{stdout}\n{stderr}");
    records(out, run_id)
}

/// What every runtime kind must show: the notebooks with data pass, the one without fails on
/// its first read, the one whose glob matches nothing never starts, and the fixture data is
/// as it was.
fn assert_data_staged(
    records: &std::collections::BTreeMap<String, serde_json::Value>,
    runtime: &str,
) {
    for notebook in [
        "analysis/deeper/again",
        "analysis/report",
        "analysis/summary",
    ] {
        let record = &records[&format!("{runtime}::cpu::nb::{notebook}")];
        assert_eq!(record["status"], "passed", "{notebook}: {record:#}");
    }

    let without = &records[&format!("{runtime}-without-data::cpu::nb::analysis/report")];
    assert_eq!(without["status"], "failed", "{without:#}");
    assert_eq!(without["failure"]["kind"], "cell-error");
    assert_eq!(without["failure"]["cell"]["ename"], "FileNotFoundError");
    assert_eq!(
        without["failure"]["cell"]["evalue"],
        "[Errno 2] No such file or directory: '../data/prices.csv'"
    );

    let missing = &records[&format!("{runtime}-missing-data::cpu::nb::analysis/report")];
    assert_eq!(missing["failure"]["kind"], "setup", "{missing:#}");
    assert_eq!(missing["failure"]["category"], "notebook");
    let summary = missing["failure"]["summary"].as_str().unwrap();
    assert!(
        summary.starts_with(
            "cannot stage the notebook's data: data glob `not-fetched/*.parquet` matches no file under "
        ) && summary.ends_with("data-notebooks (fix the glob, or put the data there)"),
        "{summary}"
    );

    // Each trial changed its copy only.
    let data = fixtures().join("data-notebooks/data");
    assert_eq!(
        std::fs::read_to_string(data.join("prices.csv")).unwrap(),
        PRICES
    );
    assert!(data.join("nested/rates.csv").is_file());
}

#[test]
fn host_notebooks_read_their_data_at_its_paths_and_change_only_their_copy() {
    let out = tempfile::tempdir().unwrap();
    let records = run(out.path(), "host-data", "host");
    assert_data_staged(&records, "host");
}

#[test]
fn container_notebooks_read_their_data_staged_once_per_runner_and_change_only_their_copy() {
    let _engine = ENGINE
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let out = tempfile::tempdir().unwrap();
    let records = run(out.path(), "docker-data", "docker");
    assert_data_staged(&records, "docker");
    // report and summary share a data set: the runner's container got it with the first, as
    // setup apart from the trial's time; the second copied the runner's, unchanged by the first.
    let steps = |trial: &str| -> Vec<String> {
        records[&format!("docker::cpu::nb::analysis/{trial}")]["setup"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|step| step["kind"] == "data")
            .map(|step| step["subject"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(steps("report"), ["2 files, 0.0 MiB"]);
    assert_eq!(steps("summary"), Vec::<String>::new());
    // deeper/ has shared/fx.csv too (its override): a data set of its own.
    assert_eq!(steps("deeper/again"), ["3 files, 0.0 MiB"]);
    assert_eq!(containers_of_run("docker-data"), Vec::<String>::new());
}

#[test]
fn a_data_set_over_the_limit_fails_its_trial_at_once_naming_the_file_and_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let notebooks = dir.path().join("notebooks");
    std::fs::create_dir_all(notebooks.join("big")).unwrap();
    std::fs::create_dir_all(notebooks.join("analysis")).unwrap();
    std::fs::copy(
        fixtures().join("notebooks/passing.ipynb"),
        notebooks.join("analysis/passing.ipynb"),
    )
    .unwrap();
    std::fs::write(notebooks.join("big/a.csv"), "a\n").unwrap();
    // Sparse: 5 GiB that take no room, and that nothing may read.
    let big = notebooks.join("big/huge.bin");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(5 << 30)
        .unwrap();
    let config = dir.path().join("matrix.toml");
    std::fs::write(
        &config,
        "[machines.cpu]\ngpus = 0\n\n[runtimes.py]\npython = \"python3\"\nnotebooks = [\"analysis/*.ipynb\"]\ndata = [\"big/**\"]\n",
    )
    .unwrap();
    let start = Instant::now();
    let (code, stdout, stderr) = output(&mut harness(&config, dir.path(), "big", &[]));
    assert_eq!(code, Some(101), "{stdout}\n{stderr}");
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "{:?}",
        start.elapsed()
    );
    let record = &records(dir.path(), "big")["py::cpu::nb::analysis/passing"];
    assert_eq!(record["failure"]["category"], "notebook", "{record:#}");
    assert_eq!(
        record["failure"]["summary"],
        format!(
            "cannot stage the notebook's data: {}: with it the data set holds more than 4096 MiB, the most a notebook's data set may hold (narrow the data globs)",
            big.display()
        )
    );
}

#[test]
fn listing_and_plan_read_no_data_and_plan_shows_each_trials_globs() {
    let (code, stdout, stderr) = output(
        runtime_matrix()
            .arg("run")
            .arg("--config")
            .arg(matrix())
            .args(["--", "--list", "--format", "terse", "--ignored"]),
    );
    assert_eq!(code, Some(0), "{stderr}");
    // `not-fetched/*.parquet` matches nothing: that is for the trial to say, not the listing.
    assert!(
        stdout.contains("[docker] docker-missing-data::cpu::nb::analysis/report: test"),
        "{stdout}"
    );
    let (code, stdout, stderr) = output(runtime_matrix().arg("plan").arg("--config").arg(matrix()));
    assert_eq!(code, Some(0), "{stderr}");
    for line in [
        "[host] host::cpu::nb::analysis/deeper/again  (deadline 1m, cell timeout 5m; tags: cpu,host,notebook; data: data/**, shared/*.csv)",
        "[host] host::cpu::nb::analysis/report  (deadline 1m, cell timeout 5m; tags: cpu,host,notebook; data: data/**)",
        "[host] host-without-data::cpu::nb::analysis/report  (deadline 1m, cell timeout 5m; tags: cpu,host,notebook)",
    ] {
        assert!(stdout.contains(line), "missing `{line}` in:\n{stdout}");
    }
    let (code, stdout, _) = output(
        runtime_matrix()
            .args(["plan", "--format", "json", "--config"])
            .arg(matrix()),
    );
    assert_eq!(code, Some(0));
    let plan: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let again = plan["plan"]["trials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "docker::cpu::nb::analysis/deeper/again")
        .unwrap();
    assert_eq!(
        again["check"]["data"],
        serde_json::json!(["data/**", "shared/*.csv"])
    );
    assert!(
        again["container"]["workdir"]
            .as_str()
            .unwrap()
            .ends_with("/work/analysis/deeper"),
        "{again:#}"
    );
}

#[test]
fn data_on_a_runtime_without_notebooks_warns_that_it_has_no_effect() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("matrix.toml");
    std::fs::write(
        &config,
        "[machines.cpu]\ngpus = 0\n\n[runtimes.sh]\ncommands.ok = \"true\"\ndata = [\"data/**\"]\n",
    )
    .unwrap();
    let (code, _, stderr) = output(runtime_matrix().arg("plan").arg("--config").arg(&config));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(
            "runtimes.sh.data has no effect: the runtime has no notebooks, and data is staged with notebooks only"
        ),
        "{stderr}"
    );
}

#[test]
fn under_nextest_a_second_process_finds_the_data_set_the_first_gave_their_runner() {
    let _engine = ENGINE
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let out = tempfile::tempdir().unwrap();
    let run_id = "data-nextest";
    let exact = |trial: &str| {
        let mut command = harness(
            &matrix(),
            out.path(),
            run_id,
            &["--include-ignored", "--exact", trial],
        );
        command
            .env("NEXTEST_RUN_ID", run_id)
            .env("RUNTIME_MATRIX_RUNNER_IDLE", "10s");
        output(&mut command)
    };
    let (code, stdout, stderr) = exact("docker::cpu::nb::analysis/report");
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let (code, stdout, stderr) = exact("docker::cpu::nb::analysis/summary");
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("(another process of the run started it)"),
        "{stderr}"
    );
    let records = records(out.path(), run_id);
    let data_steps = |trial: &str| {
        records[trial]["setup"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|step| step["kind"] == "data")
            .count()
    };
    assert_eq!(data_steps("docker::cpu::nb::analysis/report"), 1);
    assert_eq!(data_steps("docker::cpu::nb::analysis/summary"), 0);
    // No process stops a runner shared under cargo-nextest: it idles out.
    assert!(
        support::wait_for(Duration::from_secs(40), || containers_of_run(run_id)
            .is_empty()),
        "{:?}",
        containers_of_run(run_id)
    );
}
