//! The example matrix's container trials under cargo-nextest, which runs each trial in a process
//! of its own: the processes of one run attach to one runner container per runtime and machine
//! instead of starting their own, every trial gives its verdict, and the runners' containers
//! are gone by themselves soon after the run, with no process left to remove them.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Containers of run `run_id`, running now: id and runner label.
fn runners_of_run(run_id: &str) -> Vec<(String, String)> {
    let output = Command::new("docker")
        .args(["ps", "--no-trunc", "--filter"])
        .arg(format!("label=runtime-matrix.run-id={run_id}"))
        .args(["--format", "{{.ID}} {{.Label \"runtime-matrix.runner\"}}"])
        .output()
        .expect("the docker CLI runs");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let (id, runner) = line.split_once(' ')?;
            Some((id.to_owned(), runner.to_owned()))
        })
        .collect()
}

#[test]
fn nextest_processes_share_one_runner_per_runtime_and_machine_and_leave_nothing() {
    support::ensure_base_image();
    let run_id = format!("nextest-{}", std::process::id());
    let root = env!("CARGO_MANIFEST_DIR");
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    for (key, _) in std::env::vars() {
        if key.starts_with("RUNTIME_MATRIX_") || key.starts_with("NEXTEST") {
            command.env_remove(key);
        }
    }
    let mut child = command
        .current_dir(root)
        .args([
            "nextest",
            "run",
            "--no-fail-fast",
            "--test",
            "matrix",
            // The container trials are the ignored ones.
            "--run-ignored",
            "only",
        ])
        .env("RUNTIME_MATRIX_RUN_ID", &run_id)
        .env("RUNTIME_MATRIX_RUNNER_IDLE", "10s")
        .env("RUNTIME_MATRIX_NVML", "/nonexistent/libnvidia-ml.so.1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cargo-nextest runs (install it with `cargo install cargo-nextest`)");
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < Duration::from_secs(600), "nextest hung");
        for (id, runner) in runners_of_run(&run_id) {
            seen.entry(runner).or_default().insert(id);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // Every container trial of the example matrix ran, each in a process of its own.
    let trials = stderr.matches("        PASS [").count();
    assert_eq!(trials, 11, "{stderr}");
    // The three container runtimes on the CPU machine: one runner container each, for all of
    // their trials' processes.
    assert_eq!(seen.len(), 3, "{seen:?}");
    for (runner, containers) in &seen {
        assert_eq!(containers.len(), 1, "runner {runner}: {containers:?}");
    }
    // No process is left to stop them: they stop by themselves once idle.
    let ended = Instant::now();
    assert!(
        support::wait_for(Duration::from_secs(60), || runners_of_run(&run_id)
            .is_empty()),
        "containers of the run are left: {:?}",
        runners_of_run(&run_id)
    );
    eprintln!(
        "the runners were gone {:.1}s after the run",
        ended.elapsed().as_secs_f64()
    );
    assert_eq!(support::containers_of_run(&run_id), Vec::<String>::new());
}
