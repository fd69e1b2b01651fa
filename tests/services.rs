//! Services beside the trials, on the local engine: a notebook writes to one and reads back in
//! a host and a container runtime; a service that never becomes ready fails its trials as
//! infrastructure, naming it; no service container or network outlives a passing run, an
//! interrupted one, or (after the next run) a killed one; only the runtimes that use a
//! service join its network, and nothing else; records and plans name the services, secrets
//! masked. Config errors are in the corpus (`fixtures/matrices/invalid/bad_services.toml`).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::{containers_of_run, harness, output, records, runtime_matrix, wait_for};

/// The password the `kv` service is started with: a secret of the service.
const PASSWORD: &str = "kv-password-that-stays-secret";

fn matrix() -> PathBuf {
    support::fixtures().join("services/matrix.toml")
}

/// The services matrix's trials matching `args`, as run `run_id`.
fn services_harness(out: &Path, run_id: &str, args: &[&str]) -> Command {
    let mut command = harness(&matrix(), out, run_id, args);
    command.env("RUNTIME_MATRIX_TEST_KV_PASSWORD", PASSWORD);
    command
}

/// Names of the networks, of any owner, that run `run_id` left on the local engine.
fn networks_of_run(run_id: &str) -> Vec<String> {
    let output = Command::new("docker")
        .args(["network", "ls", "-q", "--no-trunc", "--filter"])
        .arg(format!("label=runtime-matrix.run-id={run_id}"))
        .output()
        .expect("the docker CLI runs");
    assert!(output.status.success(), "docker network ls failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `docker inspect` of container or network `what`.
fn inspect(kind: &str, what: &str) -> serde_json::Value {
    let output = Command::new("docker")
        .args([kind, "inspect", what])
        .output()
        .expect("the docker CLI runs");
    assert!(
        output.status.success(),
        "docker {kind} inspect {what} failed"
    );
    let mut all: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    all.remove(0)
}

/// The container of run `run_id` whose label `label` is `value`.
fn container_labelled(run_id: &str, label: &str, value: &str) -> serde_json::Value {
    containers_of_run(run_id)
        .iter()
        .map(|id| inspect("container", id))
        .find(|container| container["Config"]["Labels"][label] == value)
        .unwrap_or_else(|| panic!("run {run_id} has no container with {label}={value}"))
}

#[test]
fn a_notebook_writes_to_the_service_and_reads_back_on_the_host_and_in_a_container() {
    let out = tempfile::tempdir().unwrap();
    let run_id = "services-pass";
    let (code, stdout, stderr) = output(&mut services_harness(
        out.path(),
        run_id,
        &["--include-ignored", "nb::kv"],
    ));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let records = records(out.path(), run_id);
    for (trial, host, port) in [
        ("in-container::cpu::nb::kv", "kv", Some(6379)),
        ("on-host::cpu::nb::kv", "127.0.0.1", None),
    ] {
        let record = &records[trial];
        assert_eq!(record["status"], "passed", "{record}");
        let service = &record["services"][0];
        assert_eq!(service["name"], "kv");
        assert_eq!(service["host"], host);
        assert_eq!(
            service["image"]["reference"],
            "runtime-matrix/redis:bookworm"
        );
        let port = port.unwrap_or_else(|| service["port"].as_u64().unwrap());
        // The password reached the notebook (it authenticated) but not the record.
        assert_eq!(
            service["url"],
            format!("redis://:***@{host}:{port}/0"),
            "{record}"
        );
    }
    let leaked = std::fs::read_dir(out.path().join(run_id).join("records"))
        .unwrap()
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
        .any(|text| text.contains(PASSWORD));
    assert!(!leaked, "a record holds the service's secret");
    assert_eq!(containers_of_run(run_id), Vec::<String>::new());
    assert_eq!(networks_of_run(run_id), Vec::<String>::new());
}

#[test]
fn a_service_that_never_becomes_ready_fails_its_trials_as_infrastructure_naming_it() {
    let out = tempfile::tempdir().unwrap();
    let run_id = "services-not-ready";
    let config = support::fixtures().join("services/not-ready.toml");
    let (code, stdout, stderr) = output(&mut harness(
        &config,
        out.path(),
        run_id,
        &["--include-ignored", "--test-threads", "1", "::cpu::"],
    ));
    assert_eq!(code, Some(101), "{stdout}\n{stderr}");
    let records = records(out.path(), run_id);
    assert!(records.len() >= 4, "{records:?}");
    let mut waited = 0;
    for (trial, record) in &records {
        let failure = &record["failure"];
        assert_eq!(failure["category"], "infrastructure", "{trial}: {record}");
        assert_eq!(failure["kind"], "setup", "{trial}: not a notebook error");
        let summary = failure["summary"].as_str().unwrap();
        assert!(
            summary.starts_with(
                "service `kv` was not ready within 3s: its logs never said `never printed`; \
                 its last log lines:"
            ),
            "{trial}: {summary}"
        );
        assert!(summary.contains("Ready to accept connections"), "{summary}");
        // The wait is setup, not the trial's time; later trials fail at once.
        assert!(
            record["seconds"].as_f64().unwrap() < 2.5,
            "{trial}: {record}"
        );
        let steps = record["setup"].as_array().cloned().unwrap_or_default();
        for step in steps.iter().filter(|step| step["kind"] == "service") {
            assert_eq!(step["subject"], "kv");
            assert!(step["seconds"].as_f64().unwrap() >= 3.0, "{trial}: {step}");
            waited += 1;
        }
    }
    assert_eq!(waited, 1, "only the first trial waits for it: {records:?}");
    assert_eq!(containers_of_run(run_id), Vec::<String>::new());
    assert_eq!(networks_of_run(run_id), Vec::<String>::new());
}

#[test]
fn a_readiness_command_that_hangs_ends_the_wait_on_time() {
    let out = tempfile::tempdir().unwrap();
    let run_id = "services-hung-ready";
    let config = support::fixtures().join("services/hung-ready-2s.toml");
    let (code, stdout, stderr) = output(&mut harness(
        &config,
        out.path(),
        run_id,
        &[
            "--include-ignored",
            "--exact",
            "[docker] in-container::cpu::cmd::env",
        ],
    ));
    assert_eq!(code, Some(101), "{stdout}\n{stderr}");
    let records = records(out.path(), run_id);
    assert_eq!(records.len(), 1, "{records:?}");
    let record = records.values().next().unwrap();
    assert_eq!(record["failure"]["category"], "infrastructure", "{record}");
    let summary = record["failure"]["summary"].as_str().unwrap();
    assert!(
        summary.starts_with(
            "service `kv` was not ready within 2s: `sleep 600` did not end within 2s; its last \
             log lines:"
        ),
        "{summary}"
    );
    // Within the service's 2s, not the 10s one check may take at most.
    let steps = record["setup"].as_array().cloned().unwrap_or_default();
    let waited: f64 = steps
        .iter()
        .filter(|step| step["kind"] == "service")
        .map(|step| step["seconds"].as_f64().unwrap())
        .sum();
    assert!((2.0..6.0).contains(&waited), "{record}");
    assert_eq!(containers_of_run(run_id), Vec::<String>::new());
}

#[test]
fn an_interrupt_during_the_readiness_wait_keeps_nothing_even_with_keep_failed() {
    let out = tempfile::tempdir().unwrap();
    let run_id = "services-interrupted-wait";
    let config = support::fixtures().join("services/hung-ready-120s.toml");
    let child = harness(
        &config,
        out.path(),
        run_id,
        &[
            "--include-ignored",
            "--exact",
            "[docker] in-container::cpu::cmd::env",
        ],
    )
    .env("RUNTIME_MATRIX_KEEP", "failed")
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let waiting = wait_for(Duration::from_secs(240), || {
        containers_of_run(run_id).len() == 1
    });
    std::thread::sleep(Duration::from_secs(1));
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(waiting, "the service never started: {stderr}");
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    // The interrupt removed it: nothing may say it was kept.
    assert!(!stderr.contains("kept"), "{stderr}");
    assert_eq!(containers_of_run(run_id), Vec::<String>::new());
    assert_eq!(networks_of_run(run_id), Vec::<String>::new());
}

/// Starts the container trial that sleeps, as run `run_id`, and waits until it sleeps beside
/// its service.
fn sleeping(out: &Path, run_id: &str) -> std::process::Child {
    let mut child = services_harness(
        out,
        run_id,
        &[
            "--include-ignored",
            "--exact",
            "[docker] in-container::cpu::cmd::sleeps",
        ],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let started = wait_for(Duration::from_secs(240), || {
        let containers = containers_of_run(run_id);
        containers.len() == 2
            && containers
                .iter()
                .any(|id| support::runs_in_container(id, "sleep 120"))
    });
    if !started {
        let _ = child.kill();
        panic!("the trial never started beside its service");
    }
    assert_eq!(networks_of_run(run_id).len(), 1, "the runtime's network");
    child
}

#[test]
fn an_interrupted_run_removes_its_services_and_their_networks() {
    let out = tempfile::tempdir().unwrap();
    let run_id = "services-interrupted";
    let mut child = sleeping(out.path(), run_id);
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert_eq!(containers_of_run(run_id), Vec::<String>::new());
    assert_eq!(networks_of_run(run_id), Vec::<String>::new());
}

#[test]
fn the_next_run_reaps_the_services_and_networks_of_a_killed_run() {
    let out = tempfile::tempdir().unwrap();
    let run_id = "services-killed";
    let mut child = sleeping(out.path(), run_id);
    child.kill().unwrap();
    child.wait().unwrap();
    let left = containers_of_run(run_id);
    assert_eq!(left.len(), 2, "SIGKILL leaves the service and the runner");
    assert_eq!(networks_of_run(run_id).len(), 1);

    let (code, stdout, stderr) = output(&mut services_harness(
        out.path(),
        "services-reaper",
        &[
            "--include-ignored",
            "--exact",
            "[docker] bystander::cpu::cmd::ok",
        ],
    ));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("network(s) left by runs that are gone"),
        "{stderr}"
    );
    assert_eq!(containers_of_run(run_id), Vec::<String>::new());
    assert_eq!(networks_of_run(run_id), Vec::<String>::new());
}

#[test]
fn only_runtimes_that_use_a_service_join_its_network_and_nothing_else() {
    let out = tempfile::tempdir().unwrap();
    let run_id = "services-networks";
    // Kept, so that the runners can be inspected after the run; `clean` removes them.
    let (code, stdout, stderr) = output(
        services_harness(
            out.path(),
            run_id,
            &[
                "--include-ignored",
                "::cpu::",
                "--skip",
                "on-host",
                "--skip",
                "sleeps",
                "--skip",
                "gpu::",
            ],
        )
        .env("RUNTIME_MATRIX_KEEP", "always"),
    );
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("kept container") && stderr.contains("of service `kv`"),
        "{stderr}"
    );

    let bystander = container_labelled(run_id, "runtime-matrix.trial", "bystander::cpu (runner)");
    assert_eq!(bystander["HostConfig"]["NetworkMode"], "none");
    let networks = bystander["NetworkSettings"]["Networks"]
        .as_object()
        .unwrap();
    assert_eq!(networks.keys().collect::<Vec<_>>(), ["none"]);

    let user = container_labelled(run_id, "runtime-matrix.trial", "in-container::cpu (runner)");
    let networks = user["NetworkSettings"]["Networks"].as_object().unwrap();
    assert_eq!(networks.len(), 1, "{networks:?}");
    let own = networks.keys().next().unwrap().clone();
    assert_eq!(user["HostConfig"]["NetworkMode"], own.as_str());
    let network = inspect("network", &own);
    assert_eq!(network["Internal"], true, "no route out of it");
    assert_eq!(
        network["Labels"]["runtime-matrix.network-of"],
        "in-container"
    );

    let service = container_labelled(run_id, "runtime-matrix.service", "kv");
    let networks = service["NetworkSettings"]["Networks"].as_object().unwrap();
    assert!(networks.contains_key(&own), "{networks:?}");
    let aliases = networks[&own]["Aliases"].as_array().unwrap();
    assert!(aliases.contains(&"kv".into()), "{aliases:?}");
    let published = &service["HostConfig"]["PortBindings"]["6379/tcp"][0];
    assert_eq!(published["HostIp"], "127.0.0.1", "loopback only");

    let (code, stdout, stderr) =
        output(runtime_matrix().arg("clean").arg("--config").arg(matrix()));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert_eq!(containers_of_run(run_id), Vec::<String>::new());
    assert_eq!(networks_of_run(run_id), Vec::<String>::new());
}

#[test]
fn plan_shows_the_services_and_which_trials_use_them() {
    let (code, stdout, stderr) = output(runtime_matrix().arg("plan").arg("--config").arg(matrix()));
    assert_eq!(code, Some(0), "{stderr}");
    let image = format!(
        "  kv  image runtime-matrix/redis:bookworm, built from {}; ports 6379; ready when port \
         6379 accepts connections (within 30s); used by in-container, on-host\n",
        support::fixtures()
            .join("services/../../images/redis")
            .display()
    );
    assert!(stdout.contains(&image), "{stdout}");
    assert!(
        stdout.contains(
            "      trials see RUNTIME_MATRIX_SERVICE_KV_HOST, RUNTIME_MATRIX_SERVICE_KV_PORT, \
             RUNTIME_MATRIX_SERVICE_KV_PORT_6379, RUNTIME_MATRIX_SERVICE_KV_URL (redis://:{env:RUNTIME_MATRIX_TEST_KV_PASSWORD}@{host}:{port}/0)\n"
        ),
        "{stdout}"
    );
    let trial = |name: &str| {
        let start = stdout
            .find(name)
            .unwrap_or_else(|| panic!("{name}: {stdout}"));
        let rest = &stdout[start..];
        rest[..rest[1..].find("  [").map_or(rest.len(), |end| end + 1)].to_owned()
    };
    assert!(
        trial("in-container::cpu::nb::kv").contains(
            "services kv (on an internal network of the runtime's own, instead of network none)"
        ),
        "{stdout}"
    );
    assert!(
        trial("on-host::cpu::nb::kv")
            .contains("services kv (through ports published on 127.0.0.1)"),
        "{stdout}"
    );
    assert!(
        !trial("bystander::cpu::cmd::ok").contains("services"),
        "{stdout}"
    );

    let (code, stdout, _) = output(
        runtime_matrix()
            .args(["plan", "--format", "json", "--config"])
            .arg(matrix()),
    );
    assert_eq!(code, Some(0));
    let plan: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let services = plan["plan"]["services"].as_array().unwrap();
    assert_eq!(services.len(), 1);
    assert_eq!(services[0]["name"], "kv");
    assert_eq!(services[0]["ports"], serde_json::json!([6379]));
    assert_eq!(
        services[0]["ready"],
        serde_json::json!({"kind": "port", "port": 6379})
    );
    assert_eq!(
        services[0]["secrets"],
        serde_json::json!(["RUNTIME_MATRIX_TEST_KV_PASSWORD"])
    );
    for trial in plan["plan"]["trials"].as_array().unwrap() {
        let uses = match trial["runtime"]["name"].as_str().unwrap() {
            "bystander" => serde_json::Value::Null,
            _ => serde_json::json!(["kv"]),
        };
        assert_eq!(trial["runtime"]["services"], uses, "{trial}");
    }
}

#[test]
fn doctor_checks_each_services_image_and_that_a_host_runtimes_engine_is_here() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("matrix.toml");
    std::fs::create_dir(dir.path().join("notebooks")).unwrap();
    std::fs::write(dir.path().join("notebooks/x.ipynb"), "{}").unwrap();
    std::fs::write(
        &config,
        r#"
[machines.cpu]
gpus = 0
[machines.far]
gpus = 0
docker = "tcp://192.0.2.1:2375"
insecure = true

[services.missing]
image = "runtime-matrix/test-service-in-no-registry:1"
ports = [80]
runtimes = ["here"]

[services.far-kv]
image = "runtime-matrix/redis:bookworm"
ports = [6379]
runtimes = ["there"]

[runtimes.here]
python = "python3"
notebooks = ["x.ipynb"]
machines = ["cpu"]

[runtimes.there]
python = "python3"
notebooks = ["x.ipynb"]
machines = ["far"]
"#,
    )
    .unwrap();
    let (_, stdout, stderr) = output(
        runtime_matrix()
            .env("RUNTIME_MATRIX_ENGINE_TIMEOUT", "2s")
            .arg("doctor")
            .arg("--config")
            .arg(&config),
    );
    let line = |start: &str| {
        stdout
            .lines()
            .find(|line| line.starts_with(start))
            .unwrap_or_else(|| panic!("no `{start}` line:\n{stdout}\n{stderr}"))
            .to_owned()
    };
    assert!(
        line("✗ service far-kv for there").contains(
            "host runtime `there` reaches its services on this host, but machine `far`'s \
             engine is tcp://192.0.2.1:2375"
        ),
        "{stdout}"
    );
    // Its readiness connects to its port, which a far engine does not publish here.
    assert!(
        line("✗ service far-kv readiness on tcp://192.0.2.1:2375").contains(
            "its readiness connects to port 6379, which this host cannot do on the engine at \
             tcp://192.0.2.1:2375"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "fix: declare services.far-kv.ready as { log = \"...\" } or { command = \"...\" }"
        ),
        "{stdout}"
    );
    assert!(
        line("✗ service missing").contains("test-service-in-no-registry"),
        "{stdout}"
    );
    assert!(
        stdout.contains("fix: push the image, fix services.missing.image, or declare a `build`"),
        "{stdout}"
    );
}

#[test]
fn a_trial_is_reused_with_its_services_and_runs_again_when_a_service_changes() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("matrix.toml");
    let store = dir.path().join("reuse");
    let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("images/redis");
    let notebooks = support::fixtures().join("services/notebooks");
    let write = |command: &str| {
        let matrix = format!(
            r#"notebooks-dir = "{notebooks}"
[machines.cpu]
gpus = 0
[services.kv]
image = "runtime-matrix/redis:bookworm"
build = "{images}"
command = {command}
ports = [6379]
url = "redis://:pass-for-reuse@{{host}}:{{port}}/0"
runtimes = ["on-host"]
[runtimes.on-host]
python = "python3"
notebooks = ["kv.ipynb"]
"#,
            notebooks = notebooks.display(),
            images = images.display(),
        );
        std::fs::write(&config, matrix).unwrap();
    };
    let run = |run_id: &str| {
        let (code, stdout, stderr) = output(
            harness(
                &config,
                &dir.path().join("out"),
                run_id,
                &["--reuse-results", "--exact", "[host] on-host::cpu::nb::kv"],
            )
            .env("RUNTIME_MATRIX_REUSE_DIR", &store),
        );
        assert_eq!(code, Some(0), "{stdout}\n{stderr}");
        let record = records(&dir.path().join("out"), run_id)["on-host::cpu::nb::kv"].clone();
        (format!("{stdout}{stderr}"), record)
    };
    let served = r#"["redis-server", "--protected-mode", "no", "--requirepass", "pass-for-reuse"]"#;
    write(served);
    let (_, first) = run("reuse-1");
    assert!(first["reused"].is_null(), "{first}");

    let (said, second) = run("reuse-2");
    assert!(
        said.contains("on-host::cpu::nb::kv: reused from run reuse-1"),
        "{said}"
    );
    assert_eq!(
        second["services"], first["services"],
        "a reused record names its services"
    );

    let changed = r#"["redis-server", "--protected-mode", "no", "--requirepass", "pass-for-reuse", "--maxmemory", "64mb"]"#;
    write(changed);
    let (said, third) = run("reuse-3");
    assert!(third["reused"].is_null(), "{third}");
    assert!(
        said.contains("on-host::cpu::nb::kv: changed since run reuse-1: services\n"),
        "{said}"
    );
}
