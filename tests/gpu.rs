//! GPU truth without a GPU: a fake `libnvidia-ml.so.1` (built from `fixtures/fake-nvml`) stands
//! in for the driver. Host detection and machine matching through nvml-wrapper, leases under
//! parallel trials in several processes, the in-container probe (with the fake mounted into a
//! real container), the leak failure, and a CPU trial that must see no GPU.

mod support;

use runtime_matrix::testing::{ProbeReport, parse_marked, visible_verdict};
use std::collections::BTreeMap;
use std::process::Command;
use support::{TWO_H100, fake_nvml, fixtures, harness, output, records, runtime_matrix};

const FIRST: &str = "GPU-11111111-aaaa-0000-0000-000000000001";
const SECOND: &str = "GPU-11111111-aaaa-0000-0000-000000000002";

fn with_fake<'a>(command: &'a mut Command, devices: &str) -> &'a mut Command {
    command
        .env("RUNTIME_MATRIX_NVML", fake_nvml())
        .env("FAKE_NVML_DEVICES", devices)
}

#[test]
fn detection_reads_the_driver_and_every_gpu_and_selects_matching_machines() {
    let config = fixtures().join("matrices/gpu.toml");
    let mut plan = runtime_matrix();
    plan.args(["plan", "--format", "json", "--config"])
        .arg(&config);
    let (code, stdout, stderr) = output(with_fake(&mut plan, TWO_H100));
    assert_eq!(code, Some(0), "{stderr}");
    let plan: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let host = &plan["host"]["nvidia"];
    assert_eq!(host["driver"], "550.54.15");
    assert_eq!(host["cuda_driver"], 12040);
    assert_eq!(host["gpus"][1]["uuid"], SECOND);
    assert_eq!(host["gpus"][1]["index"], 1);
    assert_eq!(host["gpus"][1]["name"], "NVIDIA H100 80GB HBM3");
    assert_eq!(host["gpus"][1]["memory_mib"], 81559);
    assert_eq!(host["gpus"][1]["compute_capability"], "9.0");

    let machines = |key: &str| -> std::collections::BTreeSet<String> {
        plan["plan"][key]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                t["name"]
                    .as_str()
                    .unwrap()
                    .split("::")
                    .nth(1)
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(
        machines("trials"),
        ["cpu", "h100-x1", "h100-x2"].map(String::from).into()
    );
    assert_eq!(machines("excluded"), ["a100"].map(String::from).into());
    let reason = plan["plan"]["excluded"][0]["reason"].as_str().unwrap();
    assert_eq!(
        reason,
        "machine `a100` needs 1 GPU(s) matching `*A100*`; this host has 0 matching, of 2 (NVIDIA H100 80GB HBM3, NVIDIA H100 80GB HBM3) (set RUNTIME_MATRIX_MACHINES to override)"
    );
}

#[test]
fn without_a_driver_only_cpu_machines_run_and_the_run_says_so_once() {
    let config = fixtures().join("matrices/gpu.toml");
    let (_, stdout, _) = output(
        runtime_matrix()
            .args(["plan", "--config"])
            .arg(&config)
            .env("RUNTIME_MATRIX_NVML", "/nonexistent/libnvidia-ml.so.1"),
    );
    assert!(stdout.contains("host: no NVIDIA driver ("), "{stdout}");
    assert!(stdout.contains("leases::h100-x2::cmd::c0  (machine `h100-x2` needs 2 GPU(s) matching `*H100*`; this host has no NVIDIA driver"), "{stdout}");
    assert!(!stdout.contains("[host] leases::h100-x1"), "{stdout}");

    let out = tempfile::tempdir().unwrap();
    let mut run = harness(&config, out.path(), "no-driver", &["cmd::cuda-visible"]);
    let (code, stdout, stderr) =
        output(run.env("RUNTIME_MATRIX_NVML", "/nonexistent/libnvidia-ml.so.1"));
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(
        stderr.matches("no NVIDIA driver on this host").count(),
        1,
        "{stderr}"
    );
    assert!(stdout.contains("running 1 test"), "{stdout}");
}

#[test]
fn leases_never_give_a_gpu_to_two_trials_at_once_across_processes() {
    let config = fixtures().join("matrices/gpu.toml");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("leases.log");
    let locks = dir.path().join("locks");
    let runs: Vec<_> = (0..3)
        .map(|i| {
            let mut command = harness(
                &config,
                &dir.path().join("out"),
                &format!("hammer-{i}"),
                &["--test-threads", "4", "leases::h100"],
            );
            with_fake(&mut command, TWO_H100)
                .env("LEASE_LOG", &log)
                .env("RUNTIME_MATRIX_LOCK_DIR", &locks)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            command.spawn().unwrap()
        })
        .collect();
    for child in runs {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stdout)
        );
    }

    // Every GPU's holding intervals, from the commands' own log.
    let text = std::fs::read_to_string(&log).unwrap();
    let mut open: BTreeMap<String, Vec<u128>> = BTreeMap::new();
    let mut intervals: BTreeMap<String, Vec<(u128, u128)>> = BTreeMap::new();
    let mut two_gpu_trials = 0;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let [event, gpus, time] = words.as_slice() else {
            panic!("malformed log line `{line}`")
        };
        let time: u128 = time.parse().unwrap();
        let gpus: Vec<&str> = gpus.split(',').collect();
        if *event == "start" && gpus.len() == 2 {
            two_gpu_trials += 1;
        }
        for gpu in gpus {
            match *event {
                "start" => open.entry(gpu.to_owned()).or_default().push(time),
                _ => {
                    let start = open
                        .get_mut(gpu)
                        .and_then(Vec::pop)
                        .expect("an end follows a start");
                    intervals
                        .entry(gpu.to_owned())
                        .or_default()
                        .push((start, time));
                }
            }
        }
    }
    assert_eq!(
        intervals.keys().collect::<Vec<_>>(),
        [FIRST, SECOND],
        "both GPUs were used"
    );
    assert_eq!(two_gpu_trials, 3 * 6, "every h100-x2 trial held both GPUs");
    for (gpu, mut spans) in intervals {
        spans.sort();
        for pair in spans.windows(2) {
            assert!(
                pair[0].1 <= pair[1].0,
                "{gpu} had two holders at once: {pair:?}"
            );
        }
    }
    // Records say which GPUs each trial held; CUDA saw exactly those.
    let records = records(&dir.path().join("out"), "hammer-0");
    assert_eq!(
        records["leases::h100-x2::cmd::c0"]["gpus"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        records["leases::h100-x1::cmd::c0"]["gpus"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        records["leases::h100-x1::cmd::cuda-visible"]["status"],
        "passed"
    );
}

/// Runs the probe inside a real container of the base image with the fake NVML mounted where
/// the NVIDIA runtime would put the driver's, describing `devices`.
fn probe_in_container(devices: &str, driver: &str) -> ProbeReport {
    use testcontainers::core::{ExecCommand, Mount};
    use testcontainers::runners::SyncRunner;
    use testcontainers::{GenericImage, ImageExt};
    support::ensure_base_image();

    let container = GenericImage::new("runtime-matrix/jupyter-base", "bookworm")
        .with_entrypoint("sleep")
        .with_cmd(["300"])
        .with_mount(Mount::bind_mount(
            fake_nvml().display().to_string(),
            "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1",
        ))
        .with_env_var("FAKE_NVML_DEVICES", devices)
        .with_env_var("FAKE_NVML_DRIVER", driver)
        .start()
        .expect("the base image starts");
    let mut exec = container
        .exec(ExecCommand::new([
            "python3",
            "-c",
            runtime_matrix::testing::PROBE_SCRIPT,
        ]))
        .unwrap();
    let stdout = String::from_utf8(exec.stdout_to_vec().unwrap()).unwrap();
    parse_marked(&stdout, "RUNTIME_MATRIX_PROBE ").unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn host() -> runtime_matrix::testing::HostGpus {
    let mut command = runtime_matrix();
    command
        .args(["plan", "--format", "json", "--config"])
        .arg(fixtures().join("matrices/gpu.toml"));
    let (_, stdout, _) = output(with_fake(&mut command, TWO_H100));
    let plan: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    serde_json::from_value(plan["host"]["nvidia"].clone()).unwrap()
}

#[test]
fn the_probe_in_a_container_catches_leaked_gpus_and_gpus_on_a_cpu_trial() {
    let probe = probe_in_container(TWO_H100, "550.54.15");
    assert!(probe.nvml, "{probe:?}");
    assert_eq!(probe.driver.as_deref(), Some("550.54.15"));
    assert_eq!(probe.cuda_driver, Some(12040));
    let seen: Vec<&str> = probe.gpus.iter().map(|g| g.uuid.as_str()).collect();
    assert_eq!(seen, [FIRST, SECOND]);
    assert_eq!(probe.gpus[0].compute_capability, "9.0");
    let host = host();

    // Given both: exactly right.
    assert!(visible_verdict(&probe, &[FIRST.into(), SECOND.into()], 2, Some(&host)).is_ok());
    // Given one, sees two: the leak names the GPU it was not given.
    let leak = visible_verdict(&probe, &[FIRST.into()], 1, Some(&host))
        .unwrap_err()
        .to_string();
    assert!(
        leak.starts_with(&format!(
            "the container sees GPU(s) it was not given: {SECOND} (given: {FIRST};"
        )),
        "{leak}"
    );
    // A CPU trial that sees any GPU fails, naming them.
    let cpu = visible_verdict(&probe, &[], 0, Some(&host))
        .unwrap_err()
        .to_string();
    assert!(
        cpu.starts_with(&format!(
            "a CPU-only trial sees 2 GPU(s) it was not given: {FIRST}, {SECOND}"
        )),
        "{cpu}"
    );

    // Driver libraries that are not the host's.
    let other = probe_in_container(TWO_H100, "535.104.05");
    let mismatch = visible_verdict(&other, &[FIRST.into(), SECOND.into()], 2, Some(&host))
        .unwrap_err()
        .to_string();
    assert!(
        mismatch.contains("(535.104.05) is not the host's (550.54.15)"),
        "{mismatch}"
    );
}

#[test]
fn the_probe_says_clearly_when_nvml_is_absent() {
    let output = Command::new("python3")
        .args(["-c", runtime_matrix::testing::PROBE_SCRIPT])
        .env("LD_LIBRARY_PATH", "/nonexistent")
        .output()
        .unwrap();
    let probe: ProbeReport = parse_marked(
        &String::from_utf8_lossy(&output.stdout),
        "RUNTIME_MATRIX_PROBE ",
    )
    .unwrap();
    assert!(!probe.nvml);
    assert!(
        probe
            .error
            .as_deref()
            .unwrap()
            .starts_with("libnvidia-ml.so.1 cannot be loaded")
    );
    assert!(probe.gpus.is_empty());
    assert!(
        visible_verdict(&probe, &[], 0, None).is_ok(),
        "a CPU trial without NVML sees no GPU"
    );
    assert!(
        visible_verdict(&probe, &[FIRST.into()], 1, None)
            .unwrap_err()
            .to_string()
            .contains("NVML is not usable inside it")
    );
}

#[test]
fn a_cpu_container_trial_sees_no_gpu_end_to_end() {
    let out = tempfile::tempdir().unwrap();
    let mut run = harness(
        &fixtures().join("matrices/docker.toml"),
        out.path(),
        "visible",
        &[
            "--include-ignored",
            "--exact",
            "[docker] base::cpu::gpu::visible",
        ],
    );
    let (code, stdout, _) = output(run.env("RUNTIME_MATRIX_TEST_TOKEN", "unused-here"));
    assert_eq!(code, Some(0), "{stdout}");
    let record = &records(out.path(), "visible")["base::cpu::gpu::visible"];
    assert_eq!(record["note"], "sees no GPU, as a CPU-only machine should");
}
