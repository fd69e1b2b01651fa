//! Faults injected while trials run: a kernel killed mid-cell, a container killed from
//! outside, a container's memory limit, the engine connection dropped, and the harness sent
//! SIGINT, SIGTERM or SIGKILL at random points of a parallel run. Each time: no container or
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
fn finish(mut child: Child, limit: Duration) -> (Option<i32>, String) {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().unwrap();
            panic!("the harness hung for {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
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
    let kernel = || -> Option<i32> {
        leftover_processes("kernel")
            .iter()
            .find(|p| p.contains("ipykernel_launcher"))
            .and_then(|p| p.split(':').next()?.parse().ok())
    };
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
        wait_for(Duration::from_secs(60), || !containers_of_run("outside")
            .is_empty()),
        "the container never started"
    );
    std::thread::sleep(Duration::from_secs(1));
    let id = containers_of_run("outside").remove(0);
    let status = std::process::Command::new("docker")
        .args(["kill", &id])
        .output()
        .unwrap()
        .status;
    assert!(status.success());
    let (code, stdout) = finish(child, Duration::from_secs(60));
    assert_eq!(code, Some(101));
    assert!(stdout.contains("`sleep 120` exited with code 137 (the container stopped while the check ran: it was killed from outside, or by the engine)"), "{stdout}");
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
        wait_for(Duration::from_secs(60), || !containers_of_run("dropped")
            .is_empty()),
        "the container never started"
    );
    std::thread::sleep(Duration::from_secs(1));
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
