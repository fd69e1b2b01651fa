//! Load: 200 container trials on the local engine at high parallelism, against a baseline of
//! 20 trials measured in the same run. Prints wall time per trial and the harness's peak
//! memory for both, and checks that every trial left a whole record and no container is left.
//! Run with `cargo bench --bench load` (it builds the base image first if it is missing).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const THREADS: &str = "8";

struct Figures {
    trials: usize,
    seconds: f64,
    peak_rss_kib: u64,
    records: usize,
    containers_left: usize,
}

fn main() {
    // `cargo test --all-targets` runs benches without `--bench`: 200 container trials are not a
    // test.
    if !std::env::args().any(|a| a == "--bench") {
        println!("load: run it with `cargo bench --bench load`");
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary folder");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("images/jupyter-base/build.sh");
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/runtime-matrix/cache");
    let baseline = run(dir.path(), &script, &cache, "baseline", 1);
    let load = run(dir.path(), &script, &cache, "load", 10);
    println!("load benchmark: container trials on the local engine, --test-threads {THREADS}");
    for (label, f) in [("baseline", &baseline), ("load", &load)] {
        println!(
            "  {label:<8} {:>4} trials: {:>6.1} s ({:.3} s/trial), harness peak RSS {:.1} MiB, records {}/{}, containers left {}",
            f.trials,
            f.seconds,
            f.seconds / f.trials as f64,
            f.peak_rss_kib as f64 / 1024.0,
            f.records,
            f.trials,
            f.containers_left
        );
    }
    println!(
        "  ratio: time per trial {:.2}x baseline; peak memory {:.2}x baseline for {}x the trials",
        (load.seconds / load.trials as f64) / (baseline.seconds / baseline.trials as f64),
        load.peak_rss_kib as f64 / baseline.peak_rss_kib as f64,
        load.trials / baseline.trials
    );
    assert_eq!(load.records, load.trials, "a record was lost");
    assert_eq!(load.containers_left, 0, "a container was left");
}

/// Runs 20 command trials on each of `machines` CPU machines.
fn run(dir: &Path, script: &Path, cache: &Path, name: &str, machines: usize) -> Figures {
    let root = dir.join(name);
    std::fs::create_dir_all(&root).unwrap();
    let mut toml = String::new();
    for m in 0..machines {
        toml += &format!("[machines.cpu{m}]\ngpus = 0\n");
    }
    toml += &format!(
        "[runtimes.load]\nimage = \"runtime-matrix/jupyter-base:bookworm\"\nbuild = {{ script = \"{}\" }}\ngpu-checks = false\n[runtimes.load.commands]\n",
        script.display()
    );
    for c in 0..20 {
        toml += &format!("c{c:02} = \"echo $RUNTIME_MATRIX_TRIAL\"\n");
    }
    let config = root.join("matrix.toml");
    std::fs::write(&config, toml).unwrap();
    let out = root.join("out");
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_runtime-matrix"))
        .args(["run", "--config"])
        .arg(&config)
        .args(["--", "--include-ignored", "--test-threads", THREADS])
        .env("RUNTIME_MATRIX_OUT", &out)
        .env("RUNTIME_MATRIX_RUN_ID", name)
        .env("RUNTIME_MATRIX_CACHE", cache)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the harness starts");
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", child.id())) {
            let hwm = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
            peak = peak.max(hwm.unwrap_or(0));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let seconds = start.elapsed().as_secs_f64();
    let records = std::fs::read_dir(out.join(name).join("records"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .filter(|e| {
                    serde_json::from_slice::<serde_json::Value>(&std::fs::read(e.path()).unwrap())
                        .is_ok()
                })
                .count()
        })
        .unwrap_or(0);
    let left = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=runtime-matrix.run-id={name}"),
        ])
        .output()
        .unwrap();
    let containers_left = String::from_utf8_lossy(&left.stdout).lines().count();
    Figures {
        trials: machines * 20,
        seconds,
        peak_rss_kib: peak,
        records,
        containers_left,
    }
}
