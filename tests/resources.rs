//! What each trial used: its record's `resources` carry the peak memory and the CPU time of
//! the trial's own processes, measured by the runner on the host and in a container (a
//! notebook that holds 200 MB, one that burns 1.5 CPU-seconds, a command that burns one in a
//! child), and the peak GPU memory of its leased GPU through the fake NVML; report.md lists the
//! heaviest trials.

mod support;

use support::{ensure_base_image, fake_nvml, fixtures, harness, output, records};

const MB: f64 = 1024.0 * 1024.0;

fn figures(record: &serde_json::Value) -> (f64, f64) {
    let resources = &record["resources"];
    let memory = resources["peak_memory_bytes"].as_f64();
    let cpu = resources["cpu_seconds"].as_f64();
    match (memory, cpu) {
        (Some(memory), Some(cpu)) => (memory, cpu),
        _ => panic!(
            "{} has no memory and CPU figures: {record}",
            record["trial"]
        ),
    }
}

/// Runs the runtime `runtime`'s trials of the fixture matrix; their records by trial name,
/// and report.md.
fn run(
    runtime: &str,
    extra: &[&str],
) -> (
    std::collections::BTreeMap<String, serde_json::Value>,
    String,
) {
    let out = tempfile::tempdir().unwrap();
    let run_id = format!("resources-{runtime}-{}", std::process::id());
    let filter = format!("{runtime}::");
    let mut args = vec!["--test-threads", "1", filter.as_str()];
    args.extend(extra);
    let mut command = harness(
        &fixtures().join("matrices/resources.toml"),
        out.path(),
        &run_id,
        &args,
    );
    let (code, stdout, stderr) = output(&mut command);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let markdown = std::fs::read_to_string(out.path().join(&run_id).join("report.md")).unwrap();
    (records(out.path(), &run_id), markdown)
}

fn check_notebooks(runtime: &str, records: &std::collections::BTreeMap<String, serde_json::Value>) {
    let (memory, cpu) = figures(&records[&format!("{runtime}::cpu::nb::allocates_200mb")]);
    assert!(memory > 200.0 * MB, "{runtime}: peak {:.0} MB", memory / MB);
    assert!(memory < 400.0 * MB, "{runtime}: peak {:.0} MB", memory / MB);
    // Allocating is quick: the warm kernel's own start is not the trial's CPU time.
    assert!(cpu < 0.8, "{runtime}: {cpu} CPU-seconds to allocate");
    let (memory, cpu) = figures(&records[&format!("{runtime}::cpu::nb::burns_cpu")]);
    assert!(
        (1.4..2.0).contains(&cpu),
        "{runtime}: {cpu} CPU-seconds for a 1.5 s burn"
    );
    assert!(memory < 200.0 * MB, "{runtime}: peak {:.0} MB", memory / MB);
}

#[test]
fn host_trials_record_their_peak_memory_and_cpu_time() {
    let (records, markdown) = run("host", &[]);
    check_notebooks("host", &records);
    // The burn runs in a child of the command's shell.
    let (_, cpu) = figures(&records["host::cpu::cmd::burns-cpu"]);
    assert!(
        (0.7..1.5).contains(&cpu),
        "{cpu} CPU-seconds for a 1 s burn"
    );
    let table = markdown
        .split("## Heaviest trials\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no heaviest trials in:\n{markdown}"));
    let rows: Vec<&str> = table
        .lines()
        .filter(|line| line.starts_with("| `host::"))
        .collect();
    assert!(
        rows[0].starts_with("| `host::cpu::nb::allocates_200mb` | 2"),
        "the 200 MB notebook heads the table:\n{table}"
    );
    assert_eq!(rows.len(), 3, "{table}");
}

#[test]
fn container_trials_record_their_own_processes_memory_and_cpu_time() {
    ensure_base_image();
    let (records, _) = run("container", &["--include-ignored"]);
    check_notebooks("container", &records);
}

#[test]
fn a_trial_on_a_leased_gpu_records_the_gpu_memory_its_processes_used() {
    const GPU: &str = "GPU-11111111-aaaa-0000-0000-000000000001";
    let dir = tempfile::tempdir().unwrap();
    let processes = dir.path().join("processes");
    std::fs::write(&processes, "").unwrap();
    let out = dir.path().join("out");
    let mut command = harness(
        &fixtures().join("matrices/resources.toml"),
        &out,
        "resources-gpu",
        &["gpu::"],
    );
    command
        .env("RUNTIME_MATRIX_NVML", fake_nvml())
        .env(
            "FAKE_NVML_DEVICES",
            format!("{GPU}|NVIDIA H100 80GB HBM3|81559|9.0"),
        )
        .env("FAKE_NVML_PROCESSES", &processes)
        .env("RUNTIME_MATRIX_LOCK_DIR", dir.path().join("locks"));
    let (code, stdout, stderr) = output(&mut command);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let records = records(&out, "resources-gpu");
    let record = &records["gpu::h100::cmd::uses-gpu"];
    assert_eq!(
        record["resources"]["gpu_memory_bytes"],
        serde_json::json!({GPU: 1234u64 * 1024 * 1024}),
        "{record}"
    );
    figures(record);
}
