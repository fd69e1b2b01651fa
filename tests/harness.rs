//! The harness binary, driven as cargo test and cargo-nextest drive it: listing, name filters,
//! `--exact`, selection by stage and shard, expected failures, and real notebooks that fail,
//! hang and die under real nbconvert, leaving records, artifacts and no process behind.

mod support;

use std::collections::BTreeSet;
use support::{fixtures, harness, leftover_processes, output, records};

fn listed(stdout: &str) -> BTreeSet<String> {
    stdout
        .lines()
        .filter_map(|line| line.strip_suffix(": test"))
        .map(str::to_owned)
        .collect()
}

fn commands() -> std::path::PathBuf {
    fixtures().join("matrices/commands.toml")
}

#[test]
fn list_prints_every_trial_with_its_kind() {
    let out = tempfile::tempdir().unwrap();
    let (code, stdout, _) = output(&mut harness(&commands(), out.path(), "list", &["--list"]));
    assert_eq!(code, Some(0));
    let expected: BTreeSet<String> = [
        "alpha::cpu::cmd::fails",
        "alpha::cpu::cmd::ok",
        "alpha::cpu::cmd::slow",
        "alpha::cpu-large::cmd::fails",
        "alpha::cpu-large::cmd::ok",
        "beta::cpu::cmd::declared-broken",
        "beta::cpu::cmd::ok",
        "beta::cpu::cmd::wrong-way",
    ]
    .iter()
    .map(|name| format!("[host] {name}"))
    .collect();
    assert_eq!(listed(&stdout), expected);
    // Listing creates no run folder.
    assert!(!out.path().join("list").exists());
}

#[rstest::rstest]
#[case("beta::", &["beta::cpu::cmd::declared-broken", "beta::cpu::cmd::ok", "beta::cpu::cmd::wrong-way"])]
#[case("::cpu-large::", &["alpha::cpu-large::cmd::fails", "alpha::cpu-large::cmd::ok"])]
#[case("cmd::ok", &["alpha::cpu::cmd::ok", "alpha::cpu-large::cmd::ok", "beta::cpu::cmd::ok"])]
fn name_filters_select_by_runtime_machine_or_check(
    #[case] filter: &str,
    #[case] expected: &[&str],
) {
    let out = tempfile::tempdir().unwrap();
    let (_, stdout, _) = output(&mut harness(
        &commands(),
        out.path(),
        "filter",
        &["--list", filter],
    ));
    let expected: BTreeSet<String> = expected
        .iter()
        .map(|name| format!("[host] {name}"))
        .collect();
    assert_eq!(listed(&stdout), expected);
}

#[test]
fn stage_and_shard_come_from_the_environment() {
    let out = tempfile::tempdir().unwrap();
    let (_, stdout, _) = output(
        harness(&commands(), out.path(), "stage", &["--list"])
            .env("RUNTIME_MATRIX_STAGE", "nightly"),
    );
    assert!(
        listed(&stdout).contains("[host] alpha::cpu::cmd::nightly-only"),
        "{stdout}"
    );

    let mut union = BTreeSet::new();
    for shard in ["1/3", "2/3", "3/3"] {
        let (_, stdout, _) = output(
            harness(&commands(), out.path(), "shard", &["--list"])
                .env("RUNTIME_MATRIX_SHARD", shard),
        );
        let names = listed(&stdout);
        assert!(union.is_disjoint(&names), "shard {shard} repeats a trial");
        union.extend(names);
    }
    let (_, stdout, _) = output(&mut harness(&commands(), out.path(), "all", &["--list"]));
    assert_eq!(union, listed(&stdout));
}

#[test]
fn nextest_protocol_lists_tersely_and_runs_one_exact_trial() {
    let out = tempfile::tempdir().unwrap();
    let (code, stdout, _) = output(&mut harness(
        &commands(),
        out.path(),
        "terse",
        &["--list", "--format", "terse"],
    ));
    assert_eq!(code, Some(0));
    assert_eq!(listed(&stdout).len(), 8);
    assert!(
        stdout
            .lines()
            .all(|line| line.starts_with("[host] ") && line.ends_with(": test")),
        "{stdout}"
    );
    let (_, stdout, _) = output(&mut harness(
        &commands(),
        out.path(),
        "terse",
        &["--list", "--format", "terse", "--ignored"],
    ));
    assert_eq!(stdout.trim(), "");

    let name = "[host] alpha::cpu::cmd::ok";
    let (code, stdout, _) = output(&mut harness(
        &commands(),
        out.path(),
        "exact",
        &[name, "--nocapture", "--exact"],
    ));
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("running 1 test"), "{stdout}");
    let records = records(out.path(), "exact");
    assert_eq!(records.keys().collect::<Vec<_>>(), ["alpha::cpu::cmd::ok"]);
    assert_eq!(records["alpha::cpu::cmd::ok"]["status"], "passed");
}

#[test]
fn commands_record_exit_codes_deadlines_and_expected_failures() {
    let out = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = output(&mut harness(
        &commands(),
        out.path(),
        "commands",
        &["--test-threads", "4"],
    ));
    assert_eq!(code, Some(101), "{stdout}\n{stderr}");
    let records = records(out.path(), "commands");
    assert_eq!(records.len(), 8);
    let status = |name: &str| records[name]["status"].as_str().unwrap().to_owned();
    assert_eq!(status("alpha::cpu::cmd::ok"), "passed");
    assert_eq!(status("alpha::cpu::cmd::fails"), "failed");
    assert_eq!(records["alpha::cpu::cmd::fails"]["failure"]["exit_code"], 3);
    assert_eq!(status("alpha::cpu::cmd::slow"), "failed");
    assert_eq!(
        records["alpha::cpu::cmd::slow"]["failure"]["kind"],
        "deadline"
    );
    assert!(
        records["alpha::cpu::cmd::slow"]["seconds"]
            .as_f64()
            .unwrap()
            < 10.0
    );
    assert_eq!(status("beta::cpu::cmd::declared-broken"), "unexpected-pass");
    assert_eq!(status("beta::cpu::cmd::wrong-way"), "failed");

    assert!(stdout.contains(
        "runtime `alpha` on machine `cpu`: command `fails` failed: exited with a non-zero code\n  category: runtime\n  \
         `echo 'partial output'; echo 'something broke' >&2; exit 3` exited with code 3\n  output (last lines):\n    \
         partial output\n    something broke\n"
    ), "{stdout}");
    assert!(stdout.contains("command `declared-broken` passed, but it is declared as an expected failure (was broken, has since been fixed)"));
    assert!(stdout.contains("command `wrong-way` failed, but not the expected way: the declared failure (fails with a permission error) must contain `Permission denied`"));
    assert!(
        stderr.contains("runtime-matrix: reports written to"),
        "{stderr}"
    );
    for report in ["report.json", "report.md", "junit.xml"] {
        assert!(
            out.path().join("commands").join(report).is_file(),
            "{report} missing"
        );
    }
    assert_eq!(leftover_processes("commands"), Vec::<String>::new());
}

#[test]
fn listing_5000_trials_starts_no_process_but_running_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("python-was-started");
    let python = dir.path().join("fake-python");
    std::fs::write(
        &python,
        format!(
            "#!/bin/sh\ntouch '{}'\nexec python3 \"$@\"\n",
            marker.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&python, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut toml = String::new();
    for m in 0..10 {
        toml += &format!("[machines.m{m}]\ngpus = 0\n");
    }
    for r in 0..10 {
        toml += &format!(
            "[runtimes.r{r}]\npython = \"{}\"\n[runtimes.r{r}.commands]\n",
            python.display()
        );
        for c in 0..50 {
            toml += &format!("c{c} = \"true\"\n");
        }
    }
    let config = dir.path().join("matrix.toml");
    std::fs::write(&config, toml).unwrap();
    let out = dir.path().join("out");

    let (code, stdout, _) = output(&mut harness(&config, &out, "big", &["--list"]));
    assert_eq!(code, Some(0));
    assert_eq!(
        stdout.lines().filter(|l| l.ends_with(": test")).count(),
        5000
    );
    assert!(!marker.exists(), "listing started the runtime's python");
    assert!(!out.exists(), "listing wrote output");

    let (code, stdout, _) = output(&mut harness(
        &config,
        &out,
        "big",
        &["--exact", "r3::m7::cmd::c42"],
    ));
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        marker.exists(),
        "running a trial must start the runtime's python"
    );
}

#[test]
fn notebooks_that_fail_hang_and_die_are_reported_and_cleaned_up() {
    let out = tempfile::tempdir().unwrap();
    let config = fixtures().join("matrices/faults.toml");
    let (code, stdout, stderr) = output(&mut harness(
        &config,
        out.path(),
        "faults",
        &["--test-threads", "2"],
    ));
    assert_eq!(code, Some(101), "{stdout}\n{stderr}");
    let records = records(out.path(), "faults");
    let field =
        |trial: &str, pointer: &str| records[trial].pointer(pointer).cloned().unwrap_or_default();

    // A failing cell: its index, source excerpt and exception, in the output and the record.
    assert!(stdout.contains(
        "runtime `py` on machine `cpu`: notebook `failing_cell.ipynb` failed: a cell raised an exception\n  \
         category: notebook\n  cell 2 (0-based):\n    | def ratio(a, b):\n    |     return a / b\n    | \n    \
         | ratio(numerator, denominator)\n  ZeroDivisionError: division by zero\n  traceback:\n"
    ), "{stdout}");
    let failing = "py::cpu::nb::failing_cell";
    assert_eq!(field(failing, "/failure/kind"), "cell-error");
    assert_eq!(field(failing, "/failure/cell/ename"), "ZeroDivisionError");
    assert!(
        !field(failing, "/failure/cell/traceback")
            .as_str()
            .unwrap()
            .contains('\u{1b}')
    );
    // The executed notebook is kept, with the outputs of the cells that ran.
    let artifact = out
        .path()
        .join("faults")
        .join(field(failing, "/artifact").as_str().unwrap());
    let executed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(artifact).unwrap()).unwrap();
    assert_eq!(
        executed["cells"][2]["outputs"][0]["ename"],
        "ZeroDivisionError"
    );
    assert_eq!(executed["cells"][3]["outputs"], serde_json::json!([]));

    // A hanging cell is stopped by the cell timeout (2s), long before the 60s deadline.
    let hanging = "py::cpu::nb::hanging_cell";
    assert_eq!(field(hanging, "/failure/kind"), "cell-timeout");
    assert_eq!(field(hanging, "/failure/cell/index"), 1);
    assert!(field(hanging, "/seconds").as_f64().unwrap() < 30.0);

    // One long cell under a generous cell timeout is stopped by the 10s deadline.
    let long = "py::cpu::nb::long_cell";
    assert_eq!(field(long, "/failure/kind"), "deadline");
    assert_eq!(field(long, "/failure/cell/index"), 1);
    assert!(
        stdout.contains("the notebook ran past its deadline of 10s and was killed"),
        "{stdout}"
    );
    assert!(field(long, "/seconds").as_f64().unwrap() < 30.0);

    assert_eq!(
        field("py::cpu::nb::kernel_dies", "/failure/kind"),
        "kernel-died"
    );
    assert_eq!(field("py::cpu::nb::kernel_dies", "/failure/cell/index"), 1);
    assert_eq!(
        field("py::cpu::nb::missing_module", "/status"),
        "expected-failure"
    );
    assert_eq!(
        field("py::cpu::nb::missing_module", "/failure/category"),
        "runtime"
    );
    assert_eq!(field("py::cpu::nb::passing", "/status"), "passed");
    assert_eq!(field("py::cpu::nb::spawns_daemon", "/status"), "passed");
    assert!(
        !field("py::cpu::nb::passing", "/cells")
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Kernels, nbconvert, and the daemon one notebook started are all gone.
    assert_eq!(leftover_processes("faults"), Vec::<String>::new());
    let report = std::fs::read_to_string(out.path().join("faults/report.md")).unwrap();
    assert!(
        report.contains("### `py::cpu::nb::failing_cell`"),
        "{report}"
    );
}

#[test]
fn under_nextest_the_run_id_is_shared_and_reports_are_left_to_the_report_command() {
    let out = tempfile::tempdir().unwrap();
    let mut command = harness(
        &commands(),
        out.path(),
        "unused",
        &["--exact", "[host] alpha::cpu::cmd::ok", "--nocapture"],
    );
    command
        .env_remove("RUNTIME_MATRIX_RUN_ID")
        .env("NEXTEST_RUN_ID", "nextest-run");
    let (code, _, stderr) = output(&mut command);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(records(out.path(), "nextest-run").len(), 1);
    assert!(!out.path().join("nextest-run/report.md").exists());
    assert!(out.path().join("nextest-run/excluded.json").exists());
    // Each nextest process plans the one trial it runs, so that the merged plan is what
    // nextest ran, whatever its filters were.
    let plans: Vec<_> = std::fs::read_dir(out.path().join("nextest-run/planned"))
        .unwrap()
        .flatten()
        .map(|entry| std::fs::read_to_string(entry.path()).unwrap())
        .collect();
    assert_eq!(plans.len(), 1, "{plans:?}");
    let planned: serde_json::Value = serde_json::from_str(&plans[0]).unwrap();
    assert_eq!(planned[0]["name"], "alpha::cpu::cmd::ok", "{planned}");
    assert_eq!(planned.as_array().unwrap().len(), 1, "{planned}");
    let (code, stdout, stderr) = report(
        &[out.path().join("nextest-run")],
        &out.path().join("merged"),
    );
    assert_eq!(code, Some(0), "{stdout}{stderr}");
}

#[test]
fn a_missing_interpreter_fails_its_trials_with_the_runtime_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("matrix.toml");
    std::fs::write(&config, "[machines.cpu]\ngpus = 0\n[runtimes.old]\npython = \"python2.4\"\ncommands.ok = \"true\"\n").unwrap();
    let (code, stdout, _) = output(&mut harness(
        &config,
        &dir.path().join("out"),
        "missing",
        &[],
    ));
    assert_eq!(code, Some(101));
    assert!(stdout.contains(
        "runtime `old` on machine `cpu`: command `ok` failed: could not be started\n  category: runtime\n  \
         python `python2.4` of runtime `old` cannot be run: No such file or directory (os error 2) \
         (install it, or set runtimes.old.python)"
    ), "{stdout}");
}

#[rstest::rstest]
#[case::lease_timeout(
    "RUNTIME_MATRIX_LEASE_TIMEOUT",
    "abc",
    "error: invalid RUNTIME_MATRIX_LEASE_TIMEOUT `abc` (use a duration, e.g. `30m` or `90s`)\n"
)]
#[case::keep(
    "RUNTIME_MATRIX_KEEP",
    "sometimes",
    "error: invalid RUNTIME_MATRIX_KEEP `sometimes` (use `failed` or `always`)\n"
)]
#[case::shard(
    "RUNTIME_MATRIX_SHARD",
    "5/4",
    "error: invalid shard `5/4` (expected K/N with 1 <= K <= N, e.g. 2/4)\n"
)]
fn a_bad_setting_stops_the_run_before_any_trial_and_the_listing_too(
    #[case] variable: &str,
    #[case] value: &str,
    #[case] message: &str,
) {
    let out = tempfile::tempdir().unwrap();
    for args in [&[][..], &["--list"][..]] {
        let (code, stdout, stderr) =
            output(harness(&commands(), out.path(), "bad", args).env(variable, value));
        assert_eq!(
            (code, stderr.as_str()),
            (Some(2), message),
            "{args:?}: {stdout}"
        );
        assert_eq!(stdout, "", "{args:?}: nothing is listed or run");
    }
    assert!(!out.path().join("bad").exists(), "no run folder");
    assert_eq!(leftover_processes("bad"), Vec::<String>::new());
}

#[test]
fn sigint_ends_a_host_trial_at_once_and_reports_what_finished() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("matrix.toml");
    std::fs::write(
        &config,
        "[machines.cpu]\ngpus = 0\n[runtimes.host]\npython = \"python3\"\n\
         commands.a-quick = \"true\"\ncommands.b-sleeps = \"sleep 600\"\ncommands.c-queued = \"true\"\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let child = harness(&config, &out, "interrupted", &["--test-threads", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // One trial at a time, in name order: once `b-sleeps`' sleep runs, `a-quick` has its
    // record, and `b-sleeps` is blocked in a process that only the signal ends.
    let sleeping = || {
        leftover_processes("interrupted")
            .iter()
            .any(|p| p.contains("sleep 600"))
    };
    assert!(
        support::wait_for(std::time::Duration::from_secs(60), sleeping),
        "the sleeping command never started"
    );
    let start = std::time::Instant::now();
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(
        start.elapsed() < std::time::Duration::from_secs(10),
        "took {:?} to stop",
        start.elapsed()
    );
    assert!(
        stderr.contains("SIGINT received; stopping trials"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Neither the cut-short trial nor the one that never started leaves a record.
    let records = records(&out, "interrupted");
    assert_eq!(
        records.keys().collect::<Vec<_>>(),
        ["host::cpu::cmd::a-quick"]
    );
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join("interrupted/report.json")).expect("a report of what finished"),
    )
    .unwrap();
    assert_eq!(report["summary"]["total"], 1);
    assert_eq!(leftover_processes("interrupted"), Vec::<String>::new());
}

#[test]
fn sigint_while_a_trial_waits_for_its_gpu_still_ends_the_run() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let locks = dir.path().join("locks");
    std::fs::create_dir_all(&locks).unwrap();
    // Both fake H100s are held here, so the trial waits for a lease: a wait no clean-up ends.
    let held: Vec<std::fs::File> = support::TWO_H100
        .split(';')
        .map(|gpu| {
            let uuid = gpu.split('|').next().unwrap();
            let file = std::fs::File::create(locks.join(format!("{uuid}.lock"))).unwrap();
            file.lock().unwrap();
            file
        })
        .collect();
    let mut child = harness(
        &fixtures().join("matrices/gpu.toml"),
        &dir.path().join("out"),
        "lease-wait",
        &["--exact", "leases::h100-x1::cmd::c0"],
    )
    .env("RUNTIME_MATRIX_NVML", support::fake_nvml())
    .env("FAKE_NVML_DEVICES", support::TWO_H100)
    .env("RUNTIME_MATRIX_LOCK_DIR", &locks)
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let (sender, waiting) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("waits for 1 GPU(s)") {
                let _ = sender.send(());
            }
            all += &line;
            all.push('\n');
        }
        all
    });
    waiting
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the trial never waited for its GPU");
    let start = std::time::Instant::now();
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let status = child.wait().unwrap();
    let stderr = reader.join().unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(
        start.elapsed() < std::time::Duration::from_secs(30),
        "took {:?}",
        start.elapsed()
    );
    assert!(stderr.contains("are left behind"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !dir.path().join("out/lease-wait/records").exists()
            || records(&dir.path().join("out"), "lease-wait").is_empty(),
        "the interrupted trial left a record"
    );
    drop(held);
}

/// Starts run `run_id` of `config` with `args`, waits until its `sleep 600` runs, and sends it
/// `signal`: the caller's matrix orders its trials so that those before the sleep are done.
fn interrupt_while_sleeping(
    config: &std::path::Path,
    out: &std::path::Path,
    run_id: &str,
    args: &[&str],
    signal: i32,
) -> (Option<i32>, String) {
    let child = harness(config, out, run_id, args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let sleeping = || {
        leftover_processes(run_id)
            .iter()
            .any(|p| p.contains("sleep 600"))
    };
    assert!(
        support::wait_for(std::time::Duration::from_secs(60), sleeping),
        "the sleeping command never started"
    );
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(leftover_processes(run_id), Vec::<String>::new());
    (output.status.code(), stderr)
}

/// `runtime-matrix report DIRS --out OUT`.
fn report(dirs: &[std::path::PathBuf], out: &std::path::Path) -> (Option<i32>, String, String) {
    output(
        support::runtime_matrix()
            .arg("report")
            .args(dirs)
            .arg("--out")
            .arg(out),
    )
}

#[test]
fn sigterm_after_some_trials_reports_the_run_as_interrupted_and_the_report_command_fails() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("matrix.toml");
    std::fs::write(
        &config,
        "[machines.cpu]\ngpus = 0\n[runtimes.host]\npython = \"python3\"\n\
         commands.a-quick = \"true\"\ncommands.b-quick = \"true\"\ncommands.c-sleeps = \"sleep 600\"\n\
         commands.d-queued = \"true\"\ncommands.e-queued = \"true\"\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    // One trial at a time, in name order: once the sleep runs, both quick trials are recorded.
    let (code, stderr) = interrupt_while_sleeping(
        &config,
        &out,
        "cancelled",
        &["--test-threads", "1"],
        libc::SIGTERM,
    );
    assert_eq!(
        code,
        Some(143),
        "the harness's own code stays 128 + signal: {stderr}"
    );
    assert_eq!(records(&out, "cancelled").len(), 2);
    let not_run = [
        "host::cpu::cmd::c-sleeps",
        "host::cpu::cmd::d-queued",
        "host::cpu::cmd::e-queued",
    ];

    let run = out.join("cancelled");
    let markdown = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(
        markdown.contains("**⛔ interrupted**: 2 trials ran: 2 passed, 0 failed, 0 expected failures, 0 unexpected passes; 3 not run; 0 excluded."),
        "{markdown}"
    );
    assert!(
        markdown.contains("Run `cancelled` was interrupted by SIGTERM"),
        "{markdown}"
    );
    assert!(!markdown.contains("passing"), "{markdown}");
    for name in not_run {
        assert!(
            markdown.contains(&format!(
                "| `{name}` | `cancelled` | the run was interrupted |"
            )),
            "{name} is not listed as not run:\n{markdown}"
        );
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["interrupted"], true);
    assert_eq!(json["interruptions"][0]["signal_name"], "SIGTERM");
    assert_eq!(json["summary"]["not_run"], 3);
    let junit = std::fs::read_to_string(run.join("junit.xml")).unwrap();
    assert!(
        junit.contains("tests=\"5\" failures=\"0\" errors=\"3\""),
        "{junit}"
    );
    assert_eq!(
        junit
            .matches("<error message=\"not run: the run was interrupted\" type=\"not-run\"/>")
            .count(),
        3,
        "{junit}"
    );

    // The report command agrees, on the folder alone and merged with a good shard.
    let (code, stdout, stderr) = report(std::slice::from_ref(&run), &dir.path().join("again"));
    assert_eq!(code, Some(101), "{stdout}{stderr}");
    assert!(
        stderr.contains(
            "error: run `cancelled` was interrupted by SIGTERM; 3 planned trial(s) did not run: \
             `host::cpu::cmd::c-sleeps`, `host::cpu::cmd::d-queued`, `host::cpu::cmd::e-queued`"
        ),
        "{stderr}"
    );
    let (code, _, stderr) = output(&mut harness(&config, &out, "good", &["--skip", "sleeps"]));
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stdout, stderr) = report(&[out.join("good")], &dir.path().join("good-only"));
    assert_eq!(
        code,
        Some(0),
        "a filtered run plans only what it runs: {stdout}{stderr}"
    );
    let merged = dir.path().join("merged");
    let (code, stdout, stderr) = report(&[run, out.join("good")], &merged);
    assert_eq!(code, Some(101), "{stdout}{stderr}");
    assert!(
        stdout.contains(
            "4 passed, 0 failed, 0 expected failures, 0 unexpected passes, 0 excluded, 1 not run"
        ),
        "{stdout}"
    );
    assert!(
        stderr.contains("1 planned trial(s) did not run: `host::cpu::cmd::c-sleeps`"),
        "{stderr}"
    );
    let markdown = std::fs::read_to_string(merged.join("report.md")).unwrap();
    assert!(
        markdown.starts_with("# runtime-matrix report\n\n**⛔ interrupted**"),
        "{markdown}"
    );
}

#[test]
fn an_interrupt_before_any_trial_finished_still_writes_reports_that_fail_a_merge() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("matrix.toml");
    std::fs::write(
        &config,
        "[machines.cpu]\ngpus = 0\n[runtimes.host]\npython = \"python3\"\n\
         commands.a-sleeps = \"sleep 600\"\ncommands.b-queued = \"true\"\ncommands.c-elsewhere = \"true\"\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    // This "shard" runs the first two trials and is cancelled at once; another runs the third.
    let (code, stderr) = interrupt_while_sleeping(
        &config,
        &out,
        "empty",
        &["--test-threads", "1", "--skip", "elsewhere"],
        libc::SIGINT,
    );
    assert_eq!(code, Some(130), "{stderr}");
    assert!(records(&out, "empty").is_empty());
    let run = out.join("empty");
    for report in ["report.md", "report.json", "junit.xml"] {
        assert!(run.join(report).exists(), "no {report}: {stderr}");
    }
    let markdown = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(
        markdown.contains("**⛔ interrupted**: 0 trials ran: 0 passed, 0 failed, 0 expected failures, 0 unexpected passes; 2 not run; 0 excluded."),
        "{markdown}"
    );
    assert!(
        markdown.contains("| `host::cpu::cmd::a-sleeps` | `empty` | the run was interrupted |"),
        "{markdown}"
    );

    let (code, _, stderr) = output(&mut harness(&config, &out, "good", &["elsewhere"]));
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stdout, stderr) = report(&[run, out.join("good")], &dir.path().join("merged"));
    assert_eq!(code, Some(101), "{stdout}{stderr}");
    assert!(
        stderr.contains("error: run `empty` was interrupted by SIGINT; 2 planned trial(s) did not run: `host::cpu::cmd::a-sleeps`, `host::cpu::cmd::b-queued`"),
        "{stderr}"
    );
}

/// A matrix with one host notebook whose cell 1 waits until the file `release` exists, and, in
/// a runtime of its own that needs no nbconvert, a command that sleeps 3s.
fn waiting_matrix(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let release = dir.join("release");
    let cell = |id: &str, source: &str| {
        serde_json::json!({"cell_type": "code", "id": id, "metadata": {}, "source": source,
                           "execution_count": null, "outputs": []})
    };
    let notebook = serde_json::json!({
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "cells": [
            cell("c0", "import os, time"),
            // Bounded, so that a failing test does not leave it waiting past the deadline.
            cell("c1", &format!(
                "for _ in range(1200):\n    if os.path.exists({:?}):\n        break\n    time.sleep(0.1)",
                release.to_str().unwrap()
            )),
        ],
    });
    std::fs::write(dir.join("waits.ipynb"), notebook.to_string()).unwrap();
    let config = dir.join("matrix.toml");
    std::fs::write(
        &config,
        "notebooks-dir = \".\"\n[machines.cpu]\ngpus = 0\n[runtimes.py]\npython = \"python3\"\nnotebooks = [\"waits.ipynb\"]\n\
         timeout = \"150s\"\n[runtimes.sh]\npython = \"python3\"\ncommands.sleeps = \"sleep 3\"\n",
    )
    .unwrap();
    (config, release)
}

#[test]
fn a_running_notebook_is_said_on_stderr_with_its_cell_before_it_ends() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let (config, release) = waiting_matrix(dir.path());
    let out = dir.path().join("out");
    let mut child = harness(&config, &out, "heartbeat", &["nb::waits"])
        .env("RUNTIME_MATRIX_HEARTBEAT", "1s")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines.send(line);
        }
    });
    // The first run provisions a virtualenv with nbconvert: minutes at worst.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let mut seen = Vec::new();
    let slow = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match received.recv_timeout(left) {
            Ok(line) if line.contains("(cell 1 running for") => break line,
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("no heartbeat naming the cell:\n{}", seen.join("\n"));
            }
        }
    };
    // The trial cannot end before this: the line was said while it ran.
    assert!(
        slow.starts_with("runtime-matrix: SLOW [>")
            && slow.contains("] py::cpu::nb::waits (cell 1"),
        "{slow}"
    );
    std::fs::write(&release, "").unwrap();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    assert_eq!(status.code(), Some(0));
    let records = records(&out, "heartbeat");
    assert_eq!(records["py::cpu::nb::waits"]["status"], "passed");
    // Cell 0 ran before; only cell 1 is ever said to be running.
    let later: Vec<String> = received.try_iter().collect();
    assert!(
        later.iter().all(|line| !line.contains("(cell 0")),
        "{later:?}"
    );
}

#[rstest::rstest]
#[case::every_second("heartbeat-1s", &[("RUNTIME_MATRIX_HEARTBEAT", "1s")], true)]
#[case::off("heartbeat-off", &[("RUNTIME_MATRIX_HEARTBEAT", "off")], false)]
#[case::under_nextest("heartbeat-nextest", &[("NEXTEST_RUN_ID", "n")], false)]
#[case::under_nextest_when_asked(
    "heartbeat-nextest-1s",
    &[("NEXTEST_RUN_ID", "n"), ("RUNTIME_MATRIX_HEARTBEAT", "1s")],
    true
)]
fn the_heartbeat_says_a_slow_command_unless_off_or_under_nextest(
    #[case] run_id: &str,
    #[case] vars: &[(&str, &str)],
    #[case] said: bool,
) {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = waiting_matrix(dir.path());
    let out = dir.path().join("out");
    let mut command = harness(
        &config,
        &out,
        run_id,
        &["[host] sh::cpu::cmd::sleeps", "--exact"],
    );
    command.envs(vars.iter().copied());
    let (code, stdout, stderr) = output(&mut command);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let slow: Vec<&str> = stderr.lines().filter(|l| l.contains("SLOW")).collect();
    if said {
        // 3s at a 1s period, plus the runner's start (a second or two on a busy machine):
        // said every second while it runs, not after the trial ended.
        assert!(
            (1..=6).contains(&slow.len())
                && slow
                    .iter()
                    .all(|line| line.starts_with("runtime-matrix: SLOW [>")
                        && line.ends_with("] sh::cpu::cmd::sleeps")),
            "{stderr}"
        );
    } else {
        assert_eq!(slow, Vec::<&str>::new());
    }
}

#[test]
fn provisioning_is_recorded_as_setup_and_not_as_the_trials_time() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("matrix.toml");
    // Packages force a virtualenv, and a fresh cache forces provisioning it (from PyPI).
    std::fs::write(
        &config,
        "[machines.cpu]\ngpus = 0\n[runtimes.py]\npython = \"python3\"\npackages = [\"nbformat\"]\n\
         commands.first = \"true\"\ncommands.second = \"true\"\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let cache = dir.path().join("cache");
    let run = |run_id: &str| {
        let mut command = harness(&config, &out, run_id, &["--test-threads", "2"]);
        command.env("RUNTIME_MATRIX_CACHE", &cache);
        let (code, stdout, stderr) = output(&mut command);
        assert_eq!(code, Some(0), "{stdout}\n{stderr}");
        (records(&out, run_id), stderr)
    };
    let started = std::time::Instant::now();
    let (first, stderr) = run("provisions");
    let wall = started.elapsed().as_secs_f64();
    // Said when it starts and when it ends.
    assert!(
        stderr.contains("runtime-matrix: provisioning a virtualenv for runtime `py`")
            && stderr
                .contains("runtime-matrix: virtualenv for runtime `py` is ready, provisioned in"),
        "{stderr}"
    );
    let venvs = cache.join("venvs");
    // One trial provisioned, the other ran at the same time and waited for it: both say so,
    // and neither's seconds count it.
    let mut most = 0.0f64;
    for trial in ["py::cpu::cmd::first", "py::cpu::cmd::second"] {
        let record = &first[trial];
        let setup: Vec<&serde_json::Value> = record["setup"]
            .as_array()
            .unwrap_or_else(|| panic!("{record}"))
            .iter()
            .filter(|step| step["kind"] != "runner")
            .collect();
        assert_eq!(setup.len(), 1, "{record}");
        assert_eq!(setup[0]["kind"], "provision", "{record}");
        let subject = setup[0]["subject"].as_str().unwrap();
        assert!(
            std::path::Path::new(subject).starts_with(&venvs),
            "{subject} is not under {}",
            venvs.display()
        );
        let (setup_seconds, seconds) = (
            setup[0]["seconds"].as_f64().unwrap(),
            record["seconds"].as_f64().unwrap(),
        );
        // Creating a virtualenv and installing nbconvert takes seconds; running `true`, not.
        assert!(
            setup_seconds > 1.0 && setup_seconds < wall && seconds < 1.0,
            "{record}"
        );
        most = most.max(setup_seconds);
    }
    // The report says it once, with the longest any trial spent on it.
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("provisions/report.json")).unwrap())
            .unwrap();
    // Starting the runtime's runner is setup of its own.
    let summary: Vec<&serde_json::Value> = report["summary"]["setup"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|step| step["kind"] != "runner")
        .collect();
    assert_eq!(summary.len(), 1, "{summary:?}");
    assert_eq!(
        (
            &summary[0]["runtime"],
            &summary[0]["machine"],
            &summary[0]["kind"]
        ),
        (&"py".into(), &"cpu".into(), &"provision".into())
    );
    assert_eq!(summary[0]["seconds"].as_f64(), Some(most));
    let markdown = std::fs::read_to_string(out.join("provisions/report.md")).unwrap();
    assert!(
        markdown.contains("## Setup\n") && markdown.contains("| **py** | cpu | provision | `"),
        "{markdown}"
    );

    // The next run finds the virtualenv ready: its only setup is its runner's start.
    let (second, stderr) = run("provisioned");
    assert!(!stderr.contains("provisioning a virtualenv"), "{stderr}");
    for record in second.values() {
        let kinds: Vec<&serde_json::Value> = record["setup"]
            .as_array()
            .map(|steps| steps.iter().map(|step| &step["kind"]).collect())
            .unwrap_or_default();
        assert!(kinds.iter().all(|kind| *kind == "runner"), "{record}");
    }
    let markdown = std::fs::read_to_string(out.join("provisioned/report.md")).unwrap();
    assert!(!markdown.contains("| provision |"), "{markdown}");
}
