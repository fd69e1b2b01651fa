//! Container trials on the real local Docker engine, with runtime images built from Debian's
//! packages (the first test to need one builds it; later runs reuse it): failures read as on
//! the host, broken engines and images give errors naming the fix, secrets never show, and no
//! container of ours outlives a run, whether it passed, failed, was interrupted or killed,
//! while containers that are not ours are never touched.

mod support;

use std::path::PathBuf;
use std::time::Duration;
use support::{container_exists, containers_of_run, fixtures, harness, output, records, wait_for};

const SECRET: &str = "s3cr3t-value-for-the-tests";

fn docker_matrix() -> PathBuf {
    fixtures().join("matrices/docker.toml")
}

/// The harness on the Docker fixture matrix, with the secret its `base` runtime needs.
fn docker_harness(out: &std::path::Path, run_id: &str, args: &[&str]) -> std::process::Command {
    let mut command = harness(&docker_matrix(), out, run_id, args);
    command.env("RUNTIME_MATRIX_TEST_TOKEN", SECRET);
    command
}

/// Runs the trials matching `filter` (container trials included) as run `run_id`.
fn run(
    out: &std::path::Path,
    run_id: &str,
    filter: &str,
    extra: &[&str],
) -> (Option<i32>, String, String) {
    let mut args = vec!["--include-ignored", filter];
    if !extra.contains(&"--test-threads") {
        args.extend(["--test-threads", "2"]);
    }
    args.extend(extra);
    output(&mut docker_harness(out, run_id, &args))
}

#[test]
fn container_trials_are_ignored_by_default() {
    let out = tempfile::tempdir().unwrap();
    let (_, stdout, _) = output(&mut docker_harness(
        out.path(),
        "ignored",
        &["--list", "--format", "terse", "--ignored"],
    ));
    assert!(
        stdout.contains("[docker] base::cpu::nb::passing: test"),
        "{stdout}"
    );
    let (code, stdout, _) = output(&mut docker_harness(
        out.path(),
        "plain",
        &["base::cpu::cmd::ok"],
    ));
    assert_eq!(code, Some(0));
    assert!(stdout.contains("1 ignored"), "{stdout}");
    assert_eq!(containers_of_run("plain"), Vec::<String>::new());
}

#[test]
fn a_failing_notebook_in_a_container_reads_as_on_the_host() {
    let out = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = run(out.path(), "container-notebooks", "base::cpu::nb::", &[]);
    assert_eq!(code, Some(101), "{stdout}\n{stderr}");
    assert!(stdout.contains(
        "runtime `base` on machine `cpu`: notebook `failing_cell.ipynb` failed: a cell raised an exception\n  \
         category: notebook\n  cell 2 (0-based):\n    | def ratio(a, b):\n    |     return a / b\n    | \n    \
         | ratio(numerator, denominator)\n  ZeroDivisionError: division by zero\n  traceback:\n"
    ), "{stdout}");
    let records = records(out.path(), "container-notebooks");
    let failing = &records["base::cpu::nb::failing_cell"];
    let artifact = out
        .path()
        .join("container-notebooks")
        .join(failing["artifact"].as_str().unwrap());
    let executed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(artifact).unwrap()).unwrap();
    assert_eq!(
        executed["cells"][2]["outputs"][0]["ename"],
        "ZeroDivisionError"
    );
    assert!(
        failing["image"]["id"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );

    let passing = &records["base::cpu::nb::passing"];
    assert_eq!(passing["status"], "passed");
    let artifact = out
        .path()
        .join("container-notebooks")
        .join(passing["artifact"].as_str().unwrap());
    let executed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(artifact).unwrap()).unwrap();
    assert_eq!(
        executed["cells"][0]["outputs"][0]["text"],
        serde_json::json!(["ok\n"])
    );

    // The in-container limit stops one long cell at the 20s deadline.
    let long = &records["base::cpu::nb::long_cell"];
    assert_eq!(long["failure"]["kind"], "deadline");
    assert_eq!(long["failure"]["cell"]["index"], 1);
    assert!(long["seconds"].as_f64().unwrap() < 60.0);
    assert_eq!(records["base::cpu::nb::spawns_daemon"]["status"], "passed");
    assert_eq!(
        containers_of_run("container-notebooks"),
        Vec::<String>::new()
    );
}

#[test]
fn secrets_reach_the_container_but_never_the_output() {
    let out = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = run(
        out.path(),
        "secrets",
        "base::cpu::cmd::leaks-secret",
        &["--exact"],
    );
    assert_eq!(code, Some(101), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("the token is ***"),
        "the command saw the secret, and it was redacted:\n{stdout}"
    );
    assert!(!stdout.contains(SECRET) && !stderr.contains(SECRET));
    for entry in walk(&out.path().join("secrets")) {
        let text = String::from_utf8_lossy(&std::fs::read(&entry).unwrap()).into_owned();
        assert!(
            !text.contains(SECRET),
            "{} holds the secret",
            entry.display()
        );
    }
    let (_, plan, _) = output(
        support::runtime_matrix()
            .arg("plan")
            .arg("--config")
            .arg(docker_matrix())
            .env("RUNTIME_MATRIX_TEST_TOKEN", SECRET),
    );
    assert!(
        plan.contains("RUNTIME_MATRIX_TEST_TOKEN=<secret>") && !plan.contains(SECRET),
        "{plan}"
    );
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn broken_engines_images_and_gpus_fail_with_the_fix() {
    let out = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = run(out.path(), "broken", "::cmd::ok", &[]);
    let (_, stdout2, _) = run(out.path(), "broken-notebooks", "no-", &[]);
    let mut gpu = docker_harness(
        out.path(),
        "broken-gpu",
        &[
            "--include-ignored",
            "--exact",
            "[docker] base::gpu::cmd::ok",
        ],
    );
    let (_, stdout3, _) = output(gpu.env("RUNTIME_MATRIX_MACHINES", "gpu"));
    let mut down = docker_harness(
        out.path(),
        "broken-down",
        &[
            "--include-ignored",
            "--exact",
            "[docker] base::down::cmd::ok",
        ],
    );
    let (_, stdout4, _) = output(down.env("RUNTIME_MATRIX_MACHINES", "down"));
    assert_eq!(code, Some(101), "{stdout}\n{stderr}");
    let all = [stdout, stdout2, stdout3, stdout4].join("\n");
    for expected in [
        // An image no registry has.
        "runtime `unpulled` on machine `cpu`: command `ok` failed: could not be started\n  category: runtime\n  \
         failed to pull image `runtime-matrix/test-not-in-any-registry:1` (the registry cannot be reached from the \
         engine)",
        "image `runtime-matrix/test-not-in-any-registry:1` is not in the Docker engine and pull = \"never\" (build or load it first, or set pull = \"if-missing\")",
        // Images without Python or nbconvert.
        "runtime `no-python` on machine `cpu`: notebook `passing.ipynb` failed: the runtime lacks a tool the check needs\n  category: runtime\n  \
         image `runtime-matrix/test-no-python:bookworm` has no `python3` (install Python in the image, or set the runtime's `python` to its interpreter)",
        "runtime `no-nbclient` on machine `cpu`: notebook `passing.ipynb` failed: the runtime lacks a tool the check needs\n  category: runtime\n  \
         `python3` in image `runtime-matrix/test-no-nbclient:bookworm` has no nbclient",
        // A GPU machine on an engine without the NVIDIA runtime.
        "runtime `base` on machine `gpu`: command `ok` failed: could not be started\n  category: infrastructure\n  \
         cause: no-nvidia-runtime: the Docker engine has no NVIDIA runtime: install the NVIDIA Container Toolkit on its host\n  \
         the Docker engine at unix:///var/run/docker.sock has no NVIDIA runtime, so machine `gpu` cannot get its GPUs (install the NVIDIA Container Toolkit",
        // An engine that is not there.
        "runtime `base` on machine `down`: command `ok` failed: could not be started\n  category: infrastructure\n  \
         cannot reach the Docker engine at unix:///nonexistent/docker.sock (is it running? start it with `sudo systemctl start docker`, or set DOCKER_HOST",
    ] {
        assert!(all.contains(expected), "missing:\n{expected}\nin:\n{all}");
    }
    assert_eq!(
        records(out.path(), "broken-gpu")["base::gpu::cmd::ok"]["failure"]["cause"],
        "no-nvidia-runtime"
    );
    for run_id in ["broken", "broken-notebooks", "broken-gpu", "broken-down"] {
        assert_eq!(containers_of_run(run_id), Vec::<String>::new(), "{run_id}");
    }
}

#[test]
fn docker_host_is_honoured_over_tcp() {
    let port = support::tcp_proxy().port;
    let out = tempfile::tempdir().unwrap();
    let mut command = docker_harness(
        out.path(),
        "tcp",
        &[
            "--include-ignored",
            "--exact",
            "[docker] base::cpu::nb::passing",
        ],
    );
    let (code, stdout, stderr) =
        output(command.env("DOCKER_HOST", format!("tcp://127.0.0.1:{port}")));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert_eq!(
        records(out.path(), "tcp")["base::cpu::nb::passing"]["status"],
        "passed"
    );

    let mut command = docker_harness(
        out.path(),
        "tcp-down",
        &[
            "--include-ignored",
            "--exact",
            "[docker] base::cpu::cmd::ok",
        ],
    );
    let (code, stdout, _) = output(command.env("DOCKER_HOST", "tcp://127.0.0.1:1"));
    assert_eq!(code, Some(101));
    assert!(
        stdout.contains("cannot reach the Docker engine at tcp://127.0.0.1:1"),
        "{stdout}"
    );
}

#[test]
fn a_runner_container_serves_every_trial_of_its_runtime_unless_isolation_says_otherwise() {
    let out = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = run(
        out.path(),
        "shared",
        "shared::",
        &["--test-threads", "1", "--skip", "isolated"],
    );
    assert_eq!(
        code,
        Some(0),
        "the second command sees the first one's file, but not its temporary folder:\n{stdout}\n{stderr}"
    );
    let (code, stdout, stderr) = run(
        out.path(),
        "isolated",
        "isolated::",
        &["--test-threads", "1"],
    );
    assert_eq!(
        code,
        Some(0),
        "with isolation = \"container\", the second command does not see the first one's file:\n{stdout}\n{stderr}"
    );
    assert_eq!(containers_of_run("shared"), Vec::<String>::new());
    assert_eq!(containers_of_run("isolated"), Vec::<String>::new());
}

#[test]
fn kept_containers_print_how_to_enter_them_and_clean_removes_them() {
    let out = tempfile::tempdir().unwrap();
    let mut command = docker_harness(
        out.path(),
        "keep",
        &["--include-ignored", "base::cpu::cmd::"],
    );
    command
        .env("RUNTIME_MATRIX_KEEP", "failed")
        .env("RUNTIME_MATRIX_TEST_TOKEN", SECRET);
    let (code, _, stderr) = output(command.args(["--skip", "sleeps"]));
    assert_eq!(code, Some(101));
    let kept = containers_of_run("keep");
    assert_eq!(
        kept.len(),
        1,
        "only the failed trial's container is kept: {stderr}"
    );
    let short = &kept[0][..12];
    assert!(
        stderr.contains(&format!(
            "runtime-matrix: kept container {short} of base::cpu::cmd::leaks-secret"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("  docker exec -it {short} bash\n")),
        "{stderr}"
    );
    assert!(
        stderr.contains("docker exec -it -w /runtime-matrix/"),
        "{stderr}"
    );
    assert!(!stderr.contains(SECRET));

    // A later run leaves kept containers alone; `clean` removes them.
    let (_, _, _) = run(out.path(), "after-keep", "base::cpu::cmd::ok", &["--exact"]);
    assert!(container_exists(&kept[0]));
    // The example matrix's machines use the local engine only.
    let (code, stdout, _) = output(
        support::runtime_matrix()
            .arg("clean")
            .current_dir(env!("CARGO_MANIFEST_DIR")),
    );
    assert_eq!(code, Some(0));
    assert!(stdout.contains("removed"), "{stdout}");
    assert!(!container_exists(&kept[0]));
}

#[test]
fn clean_leaves_a_running_nextest_runner_alone() {
    // A cargo-nextest run's runner outlives the process that started it while the run's other
    // processes use it: `clean` must not stop it under them (it stops by itself once idle).
    // Beside it, a container of a gone process without that label, which `clean` removes.
    support::ensure_base_image();
    let gone = {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        child.id()
    };
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let start = |shared: bool| {
        let mut docker = std::process::Command::new("docker");
        docker.args(["run", "-d", "--rm", "--network", "none"]);
        for label in [
            "runtime-matrix.run-id=clean-shared".to_owned(),
            format!("runtime-matrix.pid={gone}"),
            "runtime-matrix.pid-start=1".to_owned(),
            format!("runtime-matrix.host={}", host.trim()),
        ] {
            docker.args(["--label", &label]);
        }
        if shared {
            docker.args(["--label", "runtime-matrix.shared=nextest"]);
        }
        let (code, stdout, stderr) =
            output(docker.args(["runtime-matrix/jupyter-base:bookworm", "sleep", "300"]));
        assert_eq!(code, Some(0), "{stderr}");
        stdout.trim().to_owned()
    };
    let (runner, orphan) = (start(true), start(false));
    let (code, stdout, stderr) = output(
        support::runtime_matrix()
            .arg("clean")
            .current_dir(env!("CARGO_MANIFEST_DIR")),
    );
    let survived = container_exists(&runner);
    let orphan_left = container_exists(&orphan);
    let _ = std::process::Command::new("docker")
        .args(["rm", "-f", &runner, &orphan])
        .output();
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        survived,
        "clean removed a running nextest runner:\n{stdout}"
    );
    assert!(
        !orphan_left,
        "clean left a gone process's container:\n{stdout}"
    );
}

#[rstest::rstest]
#[case(libc::SIGINT, 130)]
#[case(libc::SIGTERM, 143)]
fn an_interrupted_run_removes_its_containers_and_still_reports(
    #[case] signal: i32,
    #[case] code: i32,
) {
    let out = tempfile::tempdir().unwrap();
    let run_id = format!("signal-{signal}");
    // Build the image first, so that the run below starts its container promptly.
    run(out.path(), "warm-up", "base::cpu::cmd::ok", &["--exact"]);
    let mut command = docker_harness(
        out.path(),
        &run_id,
        &[
            "--include-ignored",
            "--test-threads",
            "2",
            "base::cpu::cmd::",
        ],
    );
    let mut child = command.stdout(std::process::Stdio::null()).spawn().unwrap();
    // Wait until the quick trials have records and the long one has its container.
    let started = wait_for(Duration::from_secs(120), || {
        out.path()
            .join(&run_id)
            .join("records")
            .read_dir()
            .map(|d| d.count() >= 2)
            .unwrap_or(false)
            && !containers_of_run(&run_id).is_empty()
    });
    assert!(started, "the long trial never started");
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(code));
    assert_eq!(containers_of_run(&run_id), Vec::<String>::new());
    // What finished before the signal is reported.
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.path().join(&run_id).join("report.json")).unwrap(),
    )
    .unwrap();
    assert!(
        report["summary"]["total"].as_u64().unwrap() >= 2,
        "{report}"
    );
}

#[test]
fn the_next_run_reaps_what_a_killed_run_left_and_nothing_else() {
    use testcontainers::runners::SyncRunner;
    use testcontainers::{GenericImage, ImageExt};
    let out = tempfile::tempdir().unwrap();
    run(
        out.path(),
        "warm-up-reap",
        "base::cpu::cmd::ok",
        &["--exact"],
    );
    // A container that is not ours, on the same engine.
    let not_ours = GenericImage::new("runtime-matrix/jupyter-base", "bookworm")
        .with_entrypoint("sleep")
        .with_cmd(["600"])
        .start()
        .expect("a container that is not ours starts");

    let mut command = docker_harness(
        out.path(),
        "killed",
        &[
            "--include-ignored",
            "--exact",
            "[docker] base::cpu::cmd::sleeps",
        ],
    );
    let mut child = command.stdout(std::process::Stdio::null()).spawn().unwrap();
    assert!(
        wait_for(Duration::from_secs(120), || !containers_of_run("killed")
            .is_empty()),
        "the trial never started"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let left = containers_of_run("killed");
    assert_eq!(left.len(), 1, "SIGKILL leaves the container behind");

    let (code, _, stderr) = run(out.path(), "reaper", "base::cpu::cmd::ok", &["--exact"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("container(s) left by runs that are gone"),
        "{stderr}"
    );
    assert_eq!(containers_of_run("killed"), Vec::<String>::new());
    assert!(
        container_exists(not_ours.id()),
        "a container that is not ours was removed"
    );
}

#[test]
fn a_panicking_check_leaves_its_runner_container_to_the_executor_which_removes_it() {
    let matrix = runtime_matrix::Matrix::load(&docker_matrix()).unwrap();
    let plan = runtime_matrix::Plan::new(&matrix, &runtime_matrix::Selection::default());
    let spec = plan
        .trials
        .iter()
        .find(|t| t.name == "base::cpu::cmd::ok")
        .unwrap();
    let executor = runtime_matrix::testing::Executor::new(
        &matrix,
        support::cache(),
        runtime_matrix::Keep::Never,
        "panic-test",
    );
    let mut id = String::new();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        executor.with_trial_container(spec, |container| {
            id = container.to_owned();
            assert!(container_exists(container), "the container runs");
            panic!("a check panicked while its container ran");
        })
    }));
    if let Ok(result) = panicked {
        panic!("the check never ran: {result:?}");
    }
    assert!(!id.is_empty(), "a container was created");
    // Other trials may still run on it; it goes when the executor does.
    assert!(
        container_exists(&id),
        "the runner container went with one check"
    );
    drop(executor);
    assert!(
        !container_exists(&id),
        "the container outlived its executor"
    );
    assert_eq!(containers_of_run("panic-test"), Vec::<String>::new());
}

/// Removes a test image when dropped, whatever the test did.
struct RemoveImage(String);

impl Drop for RemoveImage {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rmi", "-f", &self.0])
            .output();
    }
}

#[test]
fn an_image_build_is_recorded_as_setup_and_not_as_the_trials_time() {
    support::ensure_base_image();
    let dir = tempfile::tempdir().unwrap();
    // A tag and a layer of their own, so that neither the engine nor its build cache has it.
    let unique = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let image = format!("runtime-matrix/test-slow-build:{unique}");
    let _remove = RemoveImage(image.clone());
    std::fs::create_dir(dir.path().join("image")).unwrap();
    std::fs::write(
        dir.path().join("image/Dockerfile"),
        format!(
            "FROM runtime-matrix/jupyter-base:bookworm\nRUN echo {unique} > /built && sleep 5\n"
        ),
    )
    .unwrap();
    let config = dir.path().join("matrix.toml");
    std::fs::write(
        &config,
        format!(
            "[machines.cpu]\ngpus = 0\n[runtimes.slow]\nimage = \"{image}\"\nbuild = \"image\"\n\
             commands.first = \"true\"\ncommands.second = \"true\"\n"
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    let (code, stdout, stderr) = output(&mut harness(
        &config,
        &out,
        "slow-build",
        &["--include-ignored", "--test-threads", "2"],
    ));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    // Said when it starts and when it ends.
    assert!(
        stderr.contains(&format!("runtime-matrix: building image {image} from"))
            && stderr.contains(&format!("runtime-matrix: built image {image} in")),
        "{stderr}"
    );
    // One trial built it, the other ran at the same time and waited for it: both say so, and
    // neither's seconds count it.
    let records = records(&out, "slow-build");
    for trial in ["slow::cpu::cmd::first", "slow::cpu::cmd::second"] {
        let record = &records[trial];
        let setup: Vec<&serde_json::Value> = record["setup"]
            .as_array()
            .unwrap_or_else(|| panic!("{record}"))
            .iter()
            .filter(|step| step["kind"] != "runner")
            .collect();
        assert_eq!(setup.len(), 1, "{record}");
        assert_eq!(
            (&setup[0]["kind"], &setup[0]["subject"]),
            (&"build".into(), &image.as_str().into()),
            "{record}"
        );
        let (setup_seconds, seconds) = (
            setup[0]["seconds"].as_f64().unwrap(),
            record["seconds"].as_f64().unwrap(),
        );
        assert!(setup_seconds >= 5.0 && seconds < setup_seconds, "{record}");
    }
    assert_eq!(containers_of_run("slow-build"), Vec::<String>::new());
}
