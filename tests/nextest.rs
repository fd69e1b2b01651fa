//! The example matrix's container trials under cargo-nextest, which runs each trial in a process
//! of its own: the processes of one run attach to one runner container per runtime and machine
//! (and to one container of its service) instead of starting their own, every trial gives its
//! verdict, and the runners' containers are gone by themselves soon after the run, with no
//! process left to remove them; the service, owned by the nextest process, is reaped once it
//! is gone. And the
//! matrix target runs from a `cargo nextest archive` unpacked elsewhere (build once on a CPU
//! box, run on the GPU runners).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runner containers of run `run_id`, running now: id and runner label.
fn runners_of_run(run_id: &str) -> Vec<(String, String)> {
    let output = Command::new("docker")
        .args(["ps", "--no-trunc", "--filter"])
        .arg(format!("label=runtime-matrix.run-id={run_id}"))
        .args(["--filter", "label=runtime-matrix.runner"])
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
    let mut services = BTreeSet::new();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < Duration::from_secs(600), "nextest hung");
        for (id, runner) in runners_of_run(&run_id) {
            seen.entry(runner).or_default().insert(id);
        }
        services.extend(services_of_run(&run_id));
        std::thread::sleep(Duration::from_millis(200));
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // Every container trial of the example matrix ran, each in a process of its own.
    let trials = stderr.matches("        PASS [").count();
    assert_eq!(trials, 14, "{stderr}");
    // One container of the example's service for every process that used it.
    assert_eq!(services.len(), 1, "{services:?}");
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
    // The service belongs to the nextest process, which is gone: the next run (here `clean`)
    // removes it and its network.
    let (code, _, stderr) =
        support::output(support::runtime_matrix().current_dir(root).arg("clean"));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(support::containers_of_run(&run_id), Vec::<String>::new());
    let networks = Command::new("docker")
        .args(["network", "ls", "-q", "--filter"])
        .arg(format!("label=runtime-matrix.run-id={run_id}"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&networks.stdout), "");
}

/// Ids of the service containers of run `run_id`, running now.
fn services_of_run(run_id: &str) -> Vec<String> {
    let output = Command::new("docker")
        .args(["ps", "-q", "--no-trunc", "--filter"])
        .arg(format!("label=runtime-matrix.run-id={run_id}"))
        .args(["--filter", "label=runtime-matrix.service"])
        .output()
        .expect("the docker CLI runs");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Copies the folder `from` into `to`, recursively.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// What the checkout's copy of the smoke notebook prints.
const MARKER: &str = "this notebook is the checkout's";

/// Build once, run on the GPU runner: the matrix target archived with `cargo nextest archive`
/// runs from the archive unpacked in another folder, against a checkout of the project's files
/// in a third one (`--workspace-remap`). matrix.toml, the notebooks and the run folder are the
/// checkout's, not the build's.
#[test]
fn the_matrix_target_runs_from_a_nextest_archive_unpacked_in_another_folder() {
    support::ensure_base_image();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let scratch = tempfile::tempdir().unwrap();
    let archive = scratch.path().join("matrix.tar.zst");
    let cargo = || {
        let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        for (key, _) in std::env::vars() {
            if key.starts_with("RUNTIME_MATRIX_") || key.starts_with("NEXTEST") {
                command.env_remove(key);
            }
        }
        command
    };

    // The build machine.
    let (code, stdout, stderr) = support::output(
        cargo()
            .current_dir(root)
            .args(["nextest", "archive", "--test", "matrix", "--archive-file"])
            .arg(&archive),
    );
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");

    // The runner: the project's files checked out elsewhere (nextest wants the workspace's
    // manifest; the matrix reads matrix.toml, the notebooks and the image folders),
    // and the archive unpacked in a folder of its own.
    let checkout = scratch.path().join("checkout");
    copy_tree(&root.join("notebooks"), &checkout.join("notebooks"));
    copy_tree(&root.join("images"), &checkout.join("images"));
    for file in ["Cargo.toml", "Cargo.lock", "matrix.toml"] {
        std::fs::copy(root.join(file), checkout.join(file)).unwrap();
    }
    // The checkout's smoke notebook says where it comes from.
    let smoke = checkout.join("notebooks/smoke.ipynb");
    let mut notebook: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&smoke).unwrap()).unwrap();
    notebook["cells"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "cell_type": "code", "id": "from-the-checkout", "metadata": {}, "execution_count": null,
            "outputs": [], "source": format!("print({MARKER:?})"),
        }));
    std::fs::write(&smoke, notebook.to_string()).unwrap();
    let extracted = scratch.path().join("extracted");
    std::fs::create_dir(&extracted).unwrap();
    let run_id = format!("archive-{}", std::process::id());
    let (code, stdout, stderr) = support::output(
        cargo()
            .env_remove("CARGO_TARGET_DIR")
            .current_dir(scratch.path())
            .args(["nextest", "run", "--no-fail-fast", "--archive-file"])
            .arg(&archive)
            .arg("--workspace-remap")
            .arg(&checkout)
            .arg("--extract-to")
            .arg(&extracted)
            // The smoke notebook everywhere the CPU machine has it: host runtimes, container
            // runtimes, and the broken runtime's expected failure.
            .args(["--run-ignored", "all", "-E", "test(/::cpu::nb::smoke$/)"])
            .env("RUNTIME_MATRIX_RUN_ID", &run_id)
            .env("RUNTIME_MATRIX_RUNNER_IDLE", "5s")
            .env("RUNTIME_MATRIX_CACHE", support::cache())
            .env("RUNTIME_MATRIX_NVML", "/nonexistent/libnvidia-ml.so.1"),
    );
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert_eq!(stderr.matches("        PASS [").count(), 5, "{stderr}");

    // The run folder is the checkout's, and every notebook that ran is the checkout's.
    let out = checkout.join("target/runtime-matrix");
    let records = support::records(&out, &run_id);
    let names: Vec<&str> = records.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "jupyter-base::cpu::nb::smoke",
            "jupyter-no-kernel::cpu::nb::smoke",
            "jupyter-numpy::cpu::nb::smoke",
            "python-minimal::cpu::nb::smoke",
            "python-numpy::cpu::nb::smoke",
        ]
    );
    for (name, record) in &records {
        if name.starts_with("jupyter-no-kernel") {
            assert_eq!(record["status"], "expected-failure", "{record}");
            continue;
        }
        assert_eq!(record["status"], "passed", "{record}");
        let artifact = record["artifact"].as_str().expect("an executed notebook");
        let executed = std::fs::read_to_string(out.join(&run_id).join(artifact)).unwrap();
        assert!(
            executed.contains(MARKER),
            "{name} ran another notebook than the checkout's: {executed}"
        );
    }
    // The archive carries the CLI too: the runner can write the reports itself.
    let cli = extracted.join("target/debug/runtime-matrix");
    let (code, stdout, stderr) = support::output(
        Command::new(&cli)
            .env("RUNTIME_MATRIX_NVML", "/nonexistent/libnvidia-ml.so.1")
            .arg("report")
            .arg(out.join(&run_id)),
    );
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let said = format!("{stdout}{stderr}");
    assert!(
        said.contains("merged 5 trial records from 1 run: 4 passed, 0 failed, 1 expected failure,"),
        "{said}"
    );
    assert!(
        support::wait_for(Duration::from_secs(60), || runners_of_run(&run_id)
            .is_empty()),
        "containers of the run are left: {:?}",
        runners_of_run(&run_id)
    );
    // The example's service, whose owner (the nextest process) is gone.
    let (code, _, stderr) =
        support::output(support::runtime_matrix().current_dir(root).arg("clean"));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(support::containers_of_run(&run_id), Vec::<String>::new());
}
