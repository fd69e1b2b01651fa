//! Warm runners under faults (issue 10): the real harness runs notebooks on real runner
//! containers (image `runtime-matrix/jupyter-base`) and host runners, while the tests kill a
//! runner from outside, SIGKILL the harness, fill a kernel's memory limit, ignore SIGINT at a
//! cell timeout, and leave a daemon and a temporary file behind. Each time the faulty trial
//! says what happened, the runner survives it (or the next trial gets a new one), and nothing
//! of the run is left: no container, no process. Also: the runner's start is recorded as setup,
//! apart from the trial's own seconds, and a long cell is said on stderr while it runs.
//!
//! The fixture matrix's runtimes each have an `a_` notebook (the fault) and a `b_` one (the
//! trial after it); `--test-threads 1` runs them in that order, one after the other.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use support::{containers_of_run, fixtures, harness, leftover_processes, records, wait_for};

fn matrix() -> PathBuf {
    fixtures().join("matrices/runner.toml")
}

/// Every run reaps the containers of harnesses that are gone, so the test that watches the
/// runners of a killed harness go by themselves runs alone; the others share the engine.
static ENGINE: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn engine_shared() -> std::sync::RwLockReadGuard<'static, ()> {
    ENGINE
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn engine_alone() -> std::sync::RwLockWriteGuard<'static, ()> {
    ENGINE
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A harness process whose stdout is collected and whose stderr lines are seen as they come.
struct Running {
    child: Child,
    stdout: JoinHandle<String>,
    lines: mpsc::Receiver<String>,
    stderr: Vec<String>,
}

/// Runs the trials matching `filter` of the fixture matrix, one at a time, as run `run_id`.
/// Runners idle out after 2 s unless `env` says otherwise.
fn spawn(out: &Path, run_id: &str, filter: &[&str], env: &[(&str, &str)]) -> Running {
    let mut args = vec!["--include-ignored", "--test-threads", "1"];
    args.extend(filter);
    spawn_command(
        harness(&matrix(), out, run_id, &args)
            .env("RUNTIME_MATRIX_RUNNER_IDLE", "2s")
            .envs(env.iter().copied()),
    )
}

fn spawn_command(command: &mut Command) -> Running {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let stderr = child.stderr.take().unwrap();
    let (sender, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = sender.send(line);
        }
    });
    Running {
        child,
        stdout,
        lines,
        stderr: Vec::new(),
    }
}

impl Running {
    /// Waits up to `limit` for a stderr line that contains `needle`, and returns it.
    fn said(&mut self, needle: &str, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.stderr.push(line.clone());
                    if line.contains(needle) {
                        return Some(line);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// Waits for the harness to end, at most `limit`: a harness that hangs fails the test.
    /// Its exit code, stdout and stderr.
    fn finish(mut self, limit: Duration) -> (Option<i32>, String, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "the harness hung for {limit:?}:\n{}",
                    self.stderr_text(Duration::from_secs(1))
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let stderr = self.stderr_text(Duration::from_secs(5));
        let stdout = self.stdout.join().unwrap();
        assert!(
            !stderr.contains("panicked"),
            "the binary panicked:\n{stderr}"
        );
        (status.code(), stdout, stderr)
    }

    /// SIGKILLs the harness, as the OOM killer or a CI timeout would.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn stderr_text(&mut self, limit: Duration) -> String {
        while let Ok(line) = self.lines.recv_timeout(limit) {
            self.stderr.push(line);
        }
        self.stderr.join("\n")
    }
}

/// Every container run `run_id` had while the watch ran, seen every 200 ms.
struct Watch {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<BTreeSet<String>>,
}

fn watch(run_id: &str) -> Watch {
    let stop = Arc::new(AtomicBool::new(false));
    let (flag, run_id) = (stop.clone(), run_id.to_owned());
    let thread = std::thread::spawn(move || {
        let mut seen = BTreeSet::new();
        while !flag.load(Ordering::SeqCst) {
            seen.extend(containers_of_run(&run_id));
            std::thread::sleep(Duration::from_millis(200));
        }
        seen
    });
    Watch { stop, thread }
}

impl Watch {
    fn seen(self) -> BTreeSet<String> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

/// Whether `command` succeeds in container `id` (`docker exec`).
fn in_container(id: &str, command: &str) -> bool {
    Command::new("docker")
        .args(["exec", id, "sh", "-c", command])
        .output()
        .is_ok_and(|output| output.status.success())
}

/// The first container of `run_id` whose notebook has reached its long sleep: the fixture's
/// `a_sleeps` notebook touches `/runtime-matrix/sleeping` just before it.
fn sleeping_container(run_id: &str) -> Option<String> {
    containers_of_run(run_id)
        .into_iter()
        .find(|id| in_container(id, "test -e /runtime-matrix/sleeping"))
}

/// Nothing of run `run_id` is left: no container now, no process within a few seconds.
fn nothing_left(run_id: &str) {
    assert_eq!(containers_of_run(run_id), Vec::<String>::new(), "{run_id}");
    assert!(
        wait_for(Duration::from_secs(5), || leftover_processes(run_id)
            .is_empty()),
        "{run_id}: {:?}",
        leftover_processes(run_id)
    );
}

/// A record's setup steps of kind `runner`.
fn runner_steps(record: &serde_json::Value) -> Vec<&serde_json::Value> {
    record["setup"]
        .as_array()
        .map(|steps| steps.iter().filter(|s| s["kind"] == "runner").collect())
        .unwrap_or_default()
}

#[test]
fn a_runner_killed_mid_trial_fails_that_trial_as_infrastructure_and_the_next_passes_on_a_new_runner()
 {
    let _engine = engine_shared();
    support::ensure_base_image();
    let out = tempfile::tempdir().unwrap();
    let run_id = "runner-killed";
    let containers = watch(run_id);
    let run = spawn(out.path(), run_id, &["[docker] killed::"], &[]);
    let mut first = None;
    assert!(
        wait_for(Duration::from_secs(60), || {
            first = sleeping_container(run_id);
            first.is_some()
        }),
        "the notebook never reached its long cell"
    );
    let first = first.unwrap();
    let killed = Command::new("docker")
        .args(["kill", &first])
        .output()
        .unwrap();
    assert!(killed.status.success(), "{killed:?}");
    let (code, stdout, stderr) = run.finish(Duration::from_secs(90));
    let seen = containers.seen();
    assert_eq!(code, Some(101), "{stdout}\n{stderr}");

    let records = records(out.path(), run_id);
    let failed = &records["killed::cpu::nb::a_sleeps"];
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["failure"]["category"], "infrastructure", "{failed}");
    let says = format!(
        "the runner for runtime `killed` on machine `cpu` stopped: its container {} stopped \
         (killed from outside, or by the engine)",
        &first[..12]
    );
    assert_eq!(failed["failure"]["summary"], says.as_str(), "{failed}");
    assert!(stdout.contains(&says), "{stdout}");
    // Well before its 60 s deadline: the trial ended when its runner did.
    assert!(failed["seconds"].as_f64().unwrap() < 30.0, "{failed}");

    let next = &records["killed::cpu::nb::b_passes"];
    assert_eq!(next["status"], "passed", "{next}");
    assert_eq!(
        runner_steps(next).len(),
        1,
        "it waited for a new runner: {next}"
    );
    assert_eq!(seen.len(), 2, "a second runner container: {seen:?}");
    assert!(seen.contains(&first), "{seen:?}");
    nothing_left(run_id);
}

/// The actions the engine reported for the containers of `run_id` so far, with their exit
/// codes where they have one: `die:0` for a main process that exited by itself, `kill` for a
/// container someone killed (a reaper, `docker rm -f`).
fn container_events(run_id: &str, since: u64) -> Vec<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1;
    let output = Command::new("docker")
        .args(["events", "--since", &since.to_string(), "--until"])
        .arg(now.to_string())
        .args(["--filter", "type=container", "--filter"])
        .arg(format!("label=runtime-matrix.run-id={run_id}"))
        .args([
            "--format",
            "{{.Action}}:{{index .Actor.Attributes \"exitCode\"}}",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| line.trim_end_matches(':').to_owned())
        .collect()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

const SLEEPING_IN_A_CONTAINER: [&str; 2] = ["--exact", "[docker] killed::cpu::nb::a_sleeps"];
const SLEEPING_ON_THE_HOST: [&str; 2] = ["--exact", "[host] host-killed::cpu::nb::a_sleeps"];

/// SIGKILLs harnesses whose container runner and host runner idle out after 3 s, and says
/// how long they took to go by themselves; `Err` when another run on this engine reaped the
/// container first (a run of someone else's, which this test cannot hold off).
fn killed_harnesses_runners_idle_out(out: &Path, round: usize) -> Result<Duration, String> {
    let since = unix_now();
    let container = format!("runner-sigkill-idle-{round}");
    let host = format!("runner-sigkill-host-{round}");
    let idle = [("RUNTIME_MATRIX_RUNNER_IDLE", "3s")];
    let runs = [
        spawn(out, &container, &SLEEPING_IN_A_CONTAINER, &idle),
        spawn(out, &host, &SLEEPING_ON_THE_HOST, &idle),
    ];
    assert!(
        wait_for(Duration::from_secs(90), || {
            sleeping_container(&container).is_some() && support::cell_started(&host, 1)
        }),
        "the notebooks never reached their long cells"
    );
    for run in runs {
        run.kill();
    }
    let killed = Instant::now();
    let gone = wait_for(Duration::from_secs(15), || {
        containers_of_run(&container).is_empty() && leftover_processes(&host).is_empty()
    });
    let took = killed.elapsed();
    let events = container_events(&container, since);
    if events.iter().any(|e| e == "kill") {
        return Err(format!(
            "another run reaped the container first: {events:?}"
        ));
    }
    assert!(
        gone,
        "left 15 s after SIGKILL: {:?} {:?}",
        containers_of_run(&container),
        leftover_processes(&host)
    );
    // By itself: the runner, its main process, exited with 0, and the container went with it.
    assert!(
        events.iter().any(|e| e == "die:0") && events.iter().any(|e| e == "destroy"),
        "{events:?}"
    );
    nothing_left(&container);
    nothing_left(&host);
    Ok(took)
}

#[test]
fn runners_of_a_killed_harness_go_by_themselves_when_idle_or_the_next_run_reaps_them() {
    let _engine = engine_alone();
    support::ensure_base_image();
    let out = tempfile::tempdir().unwrap();

    // Runners with a 3 s idle period end by themselves once their harness is gone: the
    // container removes itself, the host runner's processes exit. Other runs on this host
    // reap what a killed harness left, so a round they spoil is tried again (seen for the
    // container in its events; a host runner reaped by someone else's run cannot be told
    // from one that idled out).
    let mut spoiled = Vec::new();
    let took = loop {
        match killed_harnesses_runners_idle_out(out.path(), spoiled.len()) {
            Ok(took) => break took,
            Err(why) if spoiled.len() < 2 => spoiled.push(why),
            Err(why) => panic!("every round was spoiled: {spoiled:?} {why}"),
        }
    };
    eprintln!("the idle runners went {took:?} after SIGKILL (spoiled rounds: {spoiled:?})");

    // Runners that wait 10 minutes for their next trial are removed by the next run on this
    // host, which sees that their harness is gone: the container, and the host runner with
    // its kernel.
    let since = unix_now();
    let kept = "runner-sigkill-kept-docker";
    let kept_host = "runner-sigkill-kept-host";
    let slow = [("RUNTIME_MATRIX_RUNNER_IDLE", "10m")];
    let runs = [
        spawn(out.path(), kept, &SLEEPING_IN_A_CONTAINER, &slow),
        spawn(out.path(), kept_host, &SLEEPING_ON_THE_HOST, &slow),
    ];
    assert!(
        wait_for(Duration::from_secs(90), || {
            sleeping_container(kept).is_some() && support::cell_started(kept_host, 1)
        }),
        "the notebooks never reached their long cells"
    );
    for run in runs {
        run.kill();
    }
    std::thread::sleep(Duration::from_secs(1));
    let (left, left_host) = (containers_of_run(kept), leftover_processes(kept_host));
    let reaper = spawn(
        out.path(),
        "runner-sigkill-reaper",
        &["--exact", "[docker] killed::cpu::nb::b_passes"],
        &[],
    );
    let (code, stdout, stderr) = reaper.finish(Duration::from_secs(90));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert_eq!(containers_of_run(kept), Vec::<String>::new());
    assert_eq!(leftover_processes(kept_host), Vec::<String>::new());
    let events = container_events(kept, since);
    assert!(
        events.iter().any(|e| e == "kill"),
        "removed by a reaper, not by itself: {events:?}"
    );
    // This run reaped them, unless another run on this host was quicker.
    assert!(
        left.is_empty() || stderr.contains("container(s) left by runs that are gone"),
        "{left:?}\n{stderr}"
    );
    assert!(
        left_host.is_empty() || stderr.contains("process(es) left by runs that are gone"),
        "{left_host:?}\n{stderr}"
    );
    nothing_left(kept);
    nothing_left(kept_host);
    nothing_left("runner-sigkill-reaper");
}

#[test]
fn a_notebook_that_fills_its_memory_limit_fails_and_its_runner_serves_the_next() {
    let _engine = engine_shared();
    support::ensure_base_image();
    let out = tempfile::tempdir().unwrap();
    let run_id = "runner-oom";
    let containers = watch(run_id);
    let run = spawn(out.path(), run_id, &["[docker] oom::"], &[]);
    let (code, stdout, stderr) = run.finish(Duration::from_secs(120));
    let seen = containers.seen();
    assert_eq!(code, Some(101), "{stdout}\n{stderr}");
    let records = records(out.path(), run_id);
    let failed = &records["oom::cpu::nb::a_fills_memory"];
    assert_eq!(failed["failure"]["kind"], "kernel-died", "{failed}");
    assert_eq!(failed["failure"]["cell"]["index"], 1, "{failed}");
    assert!(
        failed["failure"]["summary"]
            .as_str()
            .unwrap_or_default()
            .contains("memory limit of 256 MiB"),
        "{failed}"
    );
    let next = &records["oom::cpu::nb::b_passes"];
    assert_eq!(next["status"], "passed", "{next}");
    assert_eq!(
        runner_steps(next),
        Vec::<&serde_json::Value>::new(),
        "{next}"
    );
    assert_eq!(seen.len(), 1, "one runner container served both: {seen:?}");
    nothing_left(run_id);
}

#[test]
fn a_kernel_that_ignores_sigint_fails_at_the_cell_timeout_and_the_next_passes() {
    let _engine = engine_shared();
    support::ensure_base_image();
    let out = tempfile::tempdir().unwrap();
    let run_id = "runner-sigint";
    let containers = watch(run_id);
    let run = spawn(out.path(), run_id, &["[docker] sigint::"], &[]);
    assert!(
        wait_for(Duration::from_secs(60), || sleeping_container(run_id)
            .is_some()),
        "the notebook never reached its long cell"
    );
    let sleeping = Instant::now();
    let records_dir = out.path().join(run_id).join("records");
    let recorded = wait_for(Duration::from_secs(30), || {
        std::fs::read_dir(&records_dir).is_ok_and(|entries| {
            entries.flatten().any(|entry| {
                entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with("sigint.cpu.nb.a_ignores_sigint.")
            })
        })
    });
    let took = sleeping.elapsed();
    let (code, stdout, stderr) = run.finish(Duration::from_secs(90));
    let seen = containers.seen();
    assert!(
        recorded,
        "no record 30 s after the cell started:\n{stdout}\n{stderr}"
    );
    eprintln!("the cell that ignores SIGINT ended its trial {took:?} after it started");
    // The cell timeout is 2 s; the cell would sleep 60 s, as long as the trial's deadline. The
    // record follows the trial's end by the failed notebook's HTML rendering, which is not the
    // trial's time: the trial's own seconds say when it ended.
    assert!(took < Duration::from_secs(40), "{took:?}");
    assert_eq!(code, Some(101), "{stdout}\n{stderr}");
    let records = records(out.path(), run_id);
    let failed = &records["sigint::cpu::nb::a_ignores_sigint"];
    let seconds = failed["seconds"].as_f64().unwrap();
    assert!(seconds < 8.0, "{seconds} s: {failed}");
    assert_eq!(failed["failure"]["kind"], "cell-timeout", "{failed}");
    assert_eq!(failed["failure"]["cell"]["index"], 1, "{failed}");
    let next = &records["sigint::cpu::nb::b_passes"];
    assert_eq!(next["status"], "passed", "{next}");
    assert_eq!(seen.len(), 1, "one runner container served both: {seen:?}");
    nothing_left(run_id);
}

#[test]
fn a_daemon_and_a_temporary_file_of_one_notebook_are_gone_for_the_next_on_the_same_runner() {
    let _engine = engine_shared();
    support::ensure_base_image();
    let out = tempfile::tempdir().unwrap();
    let run_id = "runner-daemon";
    let containers = watch(run_id);
    // A container runtime's two notebooks, then a host runtime's.
    let run = spawn(out.path(), run_id, &["daemon::"], &[]);
    let (code, stdout, stderr) = run.finish(Duration::from_secs(120));
    let seen = containers.seen();
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let records = records(out.path(), run_id);
    for runtime in ["daemon", "host-daemon"] {
        let first = &records[&format!("{runtime}::cpu::nb::a_daemonises")];
        let next = &records[&format!("{runtime}::cpu::nb::b_sees_no_daemon")];
        assert_eq!(first["status"], "passed", "{first}");
        assert_eq!(next["status"], "passed", "{next}");
        // The same runner: the first trial waited for it to start, the next did not.
        assert_eq!(runner_steps(first).len(), 1, "{first}");
        assert_eq!(
            runner_steps(next),
            Vec::<&serde_json::Value>::new(),
            "{next}"
        );
    }
    assert_eq!(seen.len(), 1, "one runner container: {seen:?}");
    nothing_left(run_id);
}

#[test]
fn the_first_trial_on_a_runner_records_its_start_as_setup_and_not_as_its_time() {
    let _engine = engine_shared();
    let dir = tempfile::tempdir().unwrap();
    // A runner that takes at least 6 s to start: its interpreter sleeps in `sitecustomize`
    // when it runs `runner.py serve` (the kernels and checks it starts do not).
    let site = dir.path().join("site");
    std::fs::create_dir(&site).unwrap();
    std::fs::write(
        site.join("sitecustomize.py"),
        "import sys, time\n\
         if len(sys.argv) > 1 and sys.argv[0].endswith('.py') and sys.argv[1] == 'serve':\n    \
         time.sleep(6)\n",
    )
    .unwrap();
    let config = dir.path().join("matrix.toml");
    std::fs::write(
        &config,
        format!(
            "notebooks-dir = {:?}\n[machines.cpu]\ngpus = 0\n[runtimes.slow-start]\n\
             python = \"python3\"\nnotebooks = [\"b_passes.ipynb\"]\ncommands.later = \"true\"\n\
             env = {{ PYTHONPATH = {:?} }}\n",
            fixtures().join("notebooks/runner").to_str().unwrap(),
            site.to_str().unwrap(),
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    let run_id = "runner-setup";
    let run = spawn_command(
        harness(&config, &out, run_id, &["--test-threads", "1"])
            .env("RUNTIME_MATRIX_RUNNER_IDLE", "2s"),
    );
    let (code, stdout, stderr) = run.finish(Duration::from_secs(120));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let records = records(&out, run_id);
    assert_eq!(records.len(), 2, "{records:?}");
    let (first, later): (Vec<_>, Vec<_>) = records
        .values()
        .partition(|record| !runner_steps(record).is_empty());
    assert_eq!(
        (first.len(), later.len()),
        (1, 1),
        "exactly one trial started the runner: {records:?}"
    );
    let first = first[0];
    let step = runner_steps(first)[0];
    let (setup, seconds) = (
        step["seconds"].as_f64().unwrap(),
        first["seconds"].as_f64().unwrap(),
    );
    eprintln!("runner start {setup} s, the trial's own {seconds} s");
    assert!(setup >= 6.0, "{first}");
    assert!(
        seconds < setup,
        "the trial's seconds leave out the runner's start: {first}"
    );
    nothing_left(run_id);
}

#[test]
fn a_long_notebook_in_a_container_is_said_on_stderr_while_its_cell_runs() {
    let _engine = engine_shared();
    support::ensure_base_image();
    let out = tempfile::tempdir().unwrap();
    let run_id = "runner-heartbeat";
    let mut run = spawn(
        out.path(),
        run_id,
        &["[docker] beat::"],
        &[("RUNTIME_MATRIX_HEARTBEAT", "1s")],
    );
    let line = run.said("(cell 1 running for", Duration::from_secs(60));
    // Said while the trial ran: it has no record yet.
    let recorded = out
        .path()
        .join(run_id)
        .join("records")
        .read_dir()
        .map(|entries| entries.count())
        .unwrap_or(0);
    let (code, stdout, stderr) = run.finish(Duration::from_secs(60));
    let line = line.unwrap_or_else(|| panic!("no line names the running cell:\n{stderr}"));
    assert!(
        line.starts_with("runtime-matrix: SLOW [>")
            && line.contains("] beat::cpu::nb::a_sleeps_4s ")
            && line.contains(" (cell 1 running for "),
        "{line}"
    );
    assert_eq!(recorded, 0, "the line came after the trial ended");
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let records = records(out.path(), run_id);
    assert_eq!(records["beat::cpu::nb::a_sleeps_4s"]["status"], "passed");
    nothing_left(run_id);
}

/// Two processes of one run, each running a notebook that sleeps 4 s, the second started
/// while the first's notebook sleeps and ending after the first: as cargo-nextest runs them
/// (`NEXTEST_RUN_ID`: the second attaches to the first's runner), or side by side with a run id
/// set by hand (each has its own runner). Either way the first's end does not cut off the
/// second's trial, and the shared runner idles out after the run.
#[rstest::rstest]
#[case::container("runner-shared-docker", "[docker] shared::cpu::nb::", false)]
#[case::host("runner-shared-host", "[host] host-shared::cpu::nb::", false)]
#[case::container_under_nextest("runner-nextest-docker", "[docker] shared::cpu::nb::", true)]
#[case::host_under_nextest("runner-nextest-host", "[host] host-shared::cpu::nb::", true)]
fn two_processes_of_one_run_do_not_cut_off_each_others_trials(
    #[case] run_id: &str,
    #[case] trials: &str,
    #[case] nextest: bool,
) {
    let _engine = engine_shared();
    support::ensure_base_image();
    let out = tempfile::tempdir().unwrap();
    let first_trial = format!("{trials}a_sleeps_4s");
    let second_trial = format!("{trials}b_sleeps_4s");
    let mut env = vec![("RUNTIME_MATRIX_HEARTBEAT", "1s")];
    if nextest {
        env.push(("NEXTEST_RUN_ID", run_id));
    }
    let mut first = spawn(out.path(), run_id, &["--exact", &first_trial], &env);
    let said = first.said("(cell 1 running for", Duration::from_secs(60));
    assert!(said.is_some(), "the first process's notebook never ran");
    let second = spawn(out.path(), run_id, &["--exact", &second_trial], &env);
    let (code, stdout, stderr) = first.finish(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let (code, stdout, stderr) = second.finish(Duration::from_secs(60));
    assert_eq!(
        code,
        Some(0),
        "the second process's trial failed when the first process ended:\n{stdout}\n{stderr}"
    );
    assert_eq!(
        stderr.contains("(another process of the run started it)"),
        nextest,
        "the second attaches to the first's runner only under cargo-nextest:\n{stderr}"
    );
    // Under cargo-nextest no process stops the shared runner: it idles out (2 s here).
    assert!(
        wait_for(Duration::from_secs(15), || containers_of_run(run_id)
            .is_empty()),
        "{:?}",
        containers_of_run(run_id)
    );
    nothing_left(run_id);
}

#[test]
fn a_host_runner_killed_mid_trial_fails_that_trial_which_still_records_its_setup_and_the_next_passes()
 {
    let _engine = engine_shared();
    let out = tempfile::tempdir().unwrap();
    let run_id = "runner-host-killed";
    let run = spawn(out.path(), run_id, &["[host] host-killed::"], &[]);
    assert!(
        wait_for(Duration::from_secs(90), || support::cell_started(run_id, 1)),
        "the notebook never reached its long cell"
    );
    let runner: Vec<i32> = leftover_processes(run_id)
        .iter()
        .filter(|process| process.contains(" serve --socket "))
        .filter_map(|process| process.split_once(':')?.0.parse().ok())
        .collect();
    assert_eq!(runner.len(), 1, "{:?}", leftover_processes(run_id));
    unsafe {
        libc::kill(runner[0], libc::SIGKILL);
    }
    let (code, stdout, stderr) = run.finish(Duration::from_secs(90));
    assert_eq!(code, Some(101), "{stdout}\n{stderr}");
    let records = records(out.path(), run_id);
    let failed = &records["host-killed::cpu::nb::a_sleeps"];
    assert_eq!(failed["failure"]["category"], "infrastructure", "{failed}");
    assert!(
        failed["failure"]["summary"]
            .as_str()
            .unwrap_or_default()
            .starts_with("the runner for runtime `host-killed` on machine `cpu` stopped: "),
        "{failed}"
    );
    let next = &records["host-killed::cpu::nb::b_passes"];
    assert_eq!(next["status"], "passed", "{next}");
    assert_eq!(
        runner_steps(next).len(),
        1,
        "it waited for a new runner: {next}"
    );
    nothing_left(run_id);
    // Setup is not trial time, also for a trial whose runner then died: it waited for the
    // runner to start, as the next one did.
    assert_eq!(
        runner_steps(failed).len(),
        1,
        "the trial that started the runner lost its setup step when the runner died, so its \
         seconds count the runner's start: {failed}"
    );
}
