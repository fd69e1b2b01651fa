//! Faults injected while trials run: a kernel killed mid-cell, a container killed from
//! outside or paused, a container's memory limit, the engine connection dropped, an engine
//! that never answers or freezes mid-trial, and the harness sent SIGINT, SIGTERM or SIGKILL at
//! random points of a parallel run. Each time: no container or
//! process of ours is left (after SIGKILL, once the next run has reaped), every record is whole
//! JSON, the report is made from what finished and says the run was interrupted, every planned
//! trial is either recorded or listed as not run, and the exit codes say what happened.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use support::{
    containers_of_run, fixtures, harness, leftover_processes, output, records, wait_for,
};

fn matrix() -> PathBuf {
    fixtures().join("matrices/faults_docker.toml")
}

fn spawn(out: &Path, run_id: &str, args: &[&str]) -> Child {
    harness(&matrix(), out, run_id, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child` at most `limit`: a harness that hangs fails the test instead of the run.
fn finish(child: Child, limit: Duration) -> (Option<i32>, String) {
    let output = finish_output(child, limit);
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// [`finish`], with the whole output.
fn finish_output(mut child: Child, limit: Duration) -> std::process::Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().unwrap();
            panic!("the harness hung for {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

/// Every record of a run parses: none was left torn.
fn records_are_whole(out: &Path, run_id: &str) -> usize {
    let dir = out.join(run_id).join("records");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut count = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue; // a temporary file a killed process never renamed into place
        }
        let bytes = std::fs::read(entry.path()).unwrap();
        serde_json::from_slice::<serde_json::Value>(&bytes)
            .unwrap_or_else(|e| panic!("{name} is torn: {e}"));
        count += 1;
    }
    count
}

/// How many trials run `run_id` planned, from its `planned/` lists.
fn planned(out: &Path, run_id: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(out.join(run_id).join("planned")) else {
        return 0;
    };
    let mut names = std::collections::BTreeSet::new();
    for entry in entries.flatten() {
        let list: Vec<serde_json::Value> =
            serde_json::from_slice(&std::fs::read(entry.path()).unwrap()).unwrap();
        names.extend(list.into_iter().map(|p| p["name"].to_string()));
    }
    names.len()
}

#[test]
fn a_kernel_killed_mid_cell_fails_its_trial_naming_the_cell() {
    let out = tempfile::tempdir().unwrap();
    let child = spawn(
        out.path(),
        "kernel",
        &["--exact", "[host] host::cpu::nb::long_cell"],
    );
    let kernel = || support::running_kernel("kernel").map(|(pid, _)| pid);
    // Killed once the long cell (index 1) has started, as its progress event says: a fixed
    // sleep could land in cell 0 on a loaded machine.
    let mut pid = None;
    assert!(
        wait_for(Duration::from_secs(60), || {
            pid = kernel();
            pid.is_some() && support::cell_started("kernel", 1)
        }),
        "the long cell never started"
    );
    unsafe {
        libc::kill(pid.unwrap(), libc::SIGKILL);
    }
    let (code, stdout) = finish(child, Duration::from_secs(60));
    assert_eq!(code, Some(101), "{stdout}");
    let record = &records(out.path(), "kernel")["host::cpu::nb::long_cell"];
    assert_eq!(record["failure"]["kind"], "kernel-died", "{record}");
    assert_eq!(record["failure"]["cell"]["index"], 1);
    assert_eq!(leftover_processes("kernel"), Vec::<String>::new());
}

#[test]
fn a_container_killed_from_outside_or_by_its_memory_limit_is_explained() {
    let out = tempfile::tempdir().unwrap();
    support::ensure_base_image();
    let child = spawn(
        out.path(),
        "outside",
        &[
            "--include-ignored",
            "--exact",
            "[docker] small::cpu::cmd::sleeps",
        ],
    );
    assert!(
        wait_for(Duration::from_secs(60), || containers_of_run("outside")
            .first()
            .is_some_and(|id| support::runs_in_container(id, "sleep 120"))),
        "the check never started"
    );
    let id = containers_of_run("outside").remove(0);
    let status = std::process::Command::new("docker")
        .args(["kill", &id])
        .output()
        .unwrap()
        .status;
    assert!(status.success());
    let (code, stdout) = finish(child, Duration::from_secs(60));
    assert_eq!(code, Some(101));
    assert!(stdout.contains("category: infrastructure"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "the runner for runtime `small` on machine `cpu` stopped: its container {} stopped (killed from outside, or by the engine)",
            &id[..12]
        )),
        "{stdout}"
    );
    assert_eq!(containers_of_run("outside"), Vec::<String>::new());

    let (code, stdout, _) = output(&mut harness(
        &matrix(),
        out.path(),
        "oom",
        &[
            "--include-ignored",
            "--exact",
            "[docker] small::cpu::nb::oom",
        ],
    ));
    assert_eq!(code, Some(101));
    assert!(stdout.contains("nbclient.exceptions.DeadKernelError: Kernel died (the container hit its memory limit of 200 MiB: the OOM killer ended"), "{stdout}");
    assert_eq!(
        records(out.path(), "oom")["small::cpu::nb::oom"]["failure"]["cell"]["index"],
        1
    );
    assert_eq!(containers_of_run("oom"), Vec::<String>::new());
}

#[test]
fn a_dropped_engine_connection_fails_fast_and_the_next_run_reaps() {
    let out = tempfile::tempdir().unwrap();
    support::ensure_base_image();
    let proxy = support::tcp_proxy();
    let child = harness(
        &matrix(),
        out.path(),
        "dropped",
        &[
            "--include-ignored",
            "--exact",
            "[docker] small::cpu::cmd::sleeps",
        ],
    )
    .env("DOCKER_HOST", format!("tcp://127.0.0.1:{}", proxy.port))
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    assert!(
        wait_for(Duration::from_secs(60), || containers_of_run("dropped")
            .first()
            .is_some_and(|id| support::runs_in_container(id, "sleep 120"))),
        "the check never started"
    );
    proxy.cut();
    let (code, stdout) = finish(child, Duration::from_secs(60));
    assert_eq!(code, Some(101));
    assert!(stdout.contains("category: infrastructure"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "lost the connection to the Docker engine at tcp://127.0.0.1:{}",
            proxy.port
        )),
        "the message names the engine: {stdout}"
    );
    assert_eq!(records_are_whole(out.path(), "dropped"), 1);

    // The harness could not remove its container through the cut connection (nothing else
    // removes it), and it is gone now, so the next run on this host reaps it.
    assert_eq!(
        containers_of_run("dropped").len(),
        1,
        "the cut connection leaves the container behind"
    );
    let (_, _, stderr) = output(&mut harness(
        &matrix(),
        out.path(),
        "after-drop",
        &[
            "--include-ignored",
            "--exact",
            "[docker] mixed::cpu::cmd::quick-1",
        ],
    ));
    assert!(stderr.contains("left by runs that are gone"), "{stderr}");
    assert_eq!(containers_of_run("dropped"), Vec::<String>::new());
}

#[test]
fn signals_at_random_points_of_a_parallel_run_lose_nothing_and_leak_nothing() {
    let out = tempfile::tempdir().unwrap();
    support::ensure_base_image();
    // Random but reproducible from the test's output: the delays are printed.
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let mut random = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % 1000
    };
    for (round, signal) in [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGKILL,
        libc::SIGINT,
        libc::SIGKILL,
    ]
    .into_iter()
    .enumerate()
    {
        let run_id = format!("signal-{round}");
        let delay = Duration::from_millis(1500 + random() * 4);
        eprintln!("round {round}: signal {signal} after {delay:?}");
        let child = spawn(
            out.path(),
            &run_id,
            &["--include-ignored", "--test-threads", "4", "cpu::cmd::"],
        );
        std::thread::sleep(delay);
        unsafe {
            libc::kill(child.id() as i32, signal);
        }
        let (code, _) = finish(child, Duration::from_secs(60));
        let whole = records_are_whole(out.path(), &run_id);
        if signal == libc::SIGKILL {
            assert_eq!(code, None, "killed by the signal");
            // What SIGKILL left is reaped by the next run on this host.
            output(&mut harness(
                &matrix(),
                out.path(),
                &format!("{run_id}-after"),
                &[
                    "--include-ignored",
                    "--exact",
                    "[docker] mixed::cpu::cmd::quick-1",
                ],
            ));
        } else {
            assert_eq!(code, Some(128 + signal), "round {round}");
            // Reports are written even when nothing finished, and never read as passing.
            let report: serde_json::Value = serde_json::from_slice(
                &std::fs::read(out.path().join(&run_id).join("report.json"))
                    .expect("a report of the interrupted run"),
            )
            .unwrap();
            assert_eq!(report["summary"]["total"].as_u64().unwrap() as usize, whole);
            assert_eq!(report["interrupted"], true, "round {round}");
            let not_run = report["summary"]["not_run"].as_u64().unwrap() as usize;
            assert_eq!(
                whole + not_run,
                planned(out.path(), &run_id),
                "round {round}"
            );
        }
        // An interrupted run, or a killed one that left planned trials unrecorded, fails the
        // report command, which CI gates on.
        let (code, stdout, stderr) = output(
            support::runtime_matrix()
                .arg("report")
                .arg(out.path().join(&run_id)),
        );
        if signal != libc::SIGKILL || whole < planned(out.path(), &run_id) {
            assert_eq!(code, Some(101), "round {round}: {stdout}{stderr}");
        }
        assert_eq!(
            containers_of_run(&run_id),
            Vec::<String>::new(),
            "round {round}"
        );
        assert!(
            wait_for(Duration::from_secs(5), || leftover_processes(&run_id)
                .is_empty()),
            "round {round}: {:?}",
            leftover_processes(&run_id)
        );
    }
}

/// The matrix whose one trial (`sleep 120` under a 5 s deadline) outlives its deadline.
fn engine_faults() -> PathBuf {
    fixtures().join("matrices/engine_faults.toml")
}

const STALLING: &str = "[docker] stall::cpu::cmd::sleeps";
const DEADLINE: Duration = Duration::from_secs(5);

#[test]
fn a_silent_engine_fails_the_trial_and_doctor_and_clean_give_up_with_a_message() {
    let out = tempfile::tempdir().unwrap();
    let endpoint = support::silent_engine(&out.path().join("silent.sock"));
    let says =
        format!("the Docker engine at {endpoint} did not answer `negotiate the API version`");

    // With the default engine limit (30s): the trial's own deadline bounds its calls.
    let run = harness(
        &engine_faults(),
        out.path(),
        "silent",
        &["--include-ignored", "--exact", STALLING],
    )
    .env("DOCKER_HOST", &endpoint)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let (code, stdout) = finish(run, DEADLINE + Duration::from_secs(10));
    assert_eq!(code, Some(101), "{stdout}");
    assert!(stdout.contains(&says), "{stdout}");
    assert!(stdout.contains("category: infrastructure"), "{stdout}");
    let record = &records(out.path(), "silent")["stall::cpu::cmd::sleeps"];
    assert_eq!(record["failure"]["kind"], "setup", "{record}");

    // No trial deadline here: `RUNTIME_MATRIX_ENGINE_TIMEOUT` bounds each engine's calls.
    for (command, stream) in [("doctor", "stdout"), ("clean", "stderr")] {
        let child = support::runtime_matrix()
            .arg(command)
            .arg("--config")
            .arg(engine_faults())
            .env("DOCKER_HOST", &endpoint)
            .env("RUNTIME_MATRIX_ENGINE_TIMEOUT", "3s")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = finish_output(child, Duration::from_secs(3 + 10));
        let text = String::from_utf8_lossy(match stream {
            "stdout" => &output.stdout,
            _ => &output.stderr,
        });
        assert!(
            text.contains(&format!("{says} for the engine within 3s")),
            "{command}: {text}"
        );
        assert_eq!(output.status.code(), Some(2), "{command} fails: {text}");
    }
}

#[test]
fn an_engine_frozen_mid_trial_fails_it_soon_after_its_deadline_and_clean_reaps() {
    let out = tempfile::tempdir().unwrap();
    support::ensure_base_image();
    let proxy = support::tcp_proxy();
    let endpoint = format!("tcp://127.0.0.1:{}", proxy.port);
    let child = harness(
        &engine_faults(),
        out.path(),
        "frozen",
        &["--include-ignored", "--exact", STALLING],
    )
    .env("DOCKER_HOST", &endpoint)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    assert!(
        wait_for(Duration::from_secs(60), || containers_of_run("frozen")
            .first()
            .is_some_and(|id| support::runs_in_container(id, "sleep 120"))),
        "the check never started"
    );
    let started = Instant::now();
    proxy.freeze();
    let (code, stdout) = finish(child, DEADLINE + Duration::from_secs(10));
    eprintln!(
        "ended {:?} after the check started:\n{stdout}",
        started.elapsed()
    );
    assert_eq!(code, Some(101), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "the Docker engine at {endpoint} did not answer `exec` for container"
        )),
        "{stdout}"
    );
    assert!(stdout.contains("category: infrastructure"), "{stdout}");
    assert_eq!(records_are_whole(out.path(), "frozen"), 1);

    // The frozen engine could not remove the container; `clean` through the real one does.
    let (code, stdout, _) = output(
        support::runtime_matrix()
            .arg("clean")
            .arg("--config")
            .arg(engine_faults()),
    );
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(containers_of_run("frozen"), Vec::<String>::new());
}

#[test]
fn a_container_paused_mid_check_is_reported_as_paused_and_removed() {
    let out = tempfile::tempdir().unwrap();
    support::ensure_base_image();
    let child = spawn_on(&engine_faults(), out.path(), "paused", STALLING);
    assert!(
        wait_for(Duration::from_secs(60), || containers_of_run("paused")
            .first()
            .is_some_and(|id| support::runs_in_container(id, "sleep 120"))),
        "the check never started"
    );
    let started = Instant::now();
    let id = containers_of_run("paused").remove(0);
    let paused = std::process::Command::new("docker")
        .args(["pause", &id])
        .output()
        .unwrap();
    assert!(paused.status.success(), "{paused:?}");
    let (code, stdout) = finish(child, DEADLINE + Duration::from_secs(10));
    eprintln!(
        "ended {:?} after the check started:\n{stdout}",
        started.elapsed()
    );
    assert_eq!(code, Some(101), "{stdout}");
    assert!(stdout.contains(&format!("container {} was paused (`docker pause`) while the check ran, so its deadline of 5s could not act", &id[..12])), "{stdout}");
    let record = &records(out.path(), "paused")["stall::cpu::cmd::sleeps"];
    assert_eq!(record["failure"]["category"], "infrastructure", "{record}");
    assert_eq!(containers_of_run("paused"), Vec::<String>::new());
}

fn spawn_on(config: &Path, out: &Path, run_id: &str, trial: &str) -> Child {
    harness(
        config,
        out,
        run_id,
        &["--include-ignored", "--exact", trial],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap()
}
