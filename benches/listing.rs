//! Listing speed: cargo-nextest lists the harness once per trial, so `--list` on a large
//! matrix must stay close to the cost of starting the process at all.
//!
//! Prints the median wall time of `--list` on generated 5,000-trial matrices (commands only,
//! and 50 notebooks per runtime) against a baseline measured in the same run: the same binary
//! printing its version. Run with `cargo bench --bench listing`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const RUNS: usize = 15;

fn main() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let commands = write_matrix(dir.path(), "commands", false);
    let notebooks = write_matrix(dir.path(), "notebooks", true);
    let binary = env!("CARGO_BIN_EXE_runtime-matrix");

    let baseline = median(|| {
        run(Command::new(binary).arg("--version"));
    });
    let mut rows = vec![("baseline: runtime-matrix --version".to_owned(), baseline, 0)];
    for (label, config) in [
        ("commands", &commands),
        ("50 notebooks x 10 runtimes", &notebooks),
    ] {
        let mut listed = 0;
        let time = median(|| {
            let output = run(Command::new(binary)
                .arg("run")
                .arg("--config")
                .arg(config)
                .args(["--", "--list"]));
            listed = output
                .lines()
                .filter(|line| line.ends_with(": test"))
                .count();
        });
        rows.push((format!("--list, {listed} trials ({label})"), time, listed));
    }
    let load = median(|| {
        let matrix =
            runtime_matrix::Matrix::load(&notebooks).expect("the generated matrix is valid");
        let plan = runtime_matrix::Plan::new(&matrix, &runtime_matrix::Selection::default());
        assert_eq!(plan.trials.len(), 5000);
    });
    rows.push(("in-process load + plan (notebooks)".to_owned(), load, 5000));

    println!("listing benchmark: median of {RUNS} runs");
    for (label, time, _) in &rows {
        let ratio = time.as_secs_f64() / baseline.as_secs_f64();
        println!(
            "  {label:<48} {:>8.2} ms  {ratio:>6.1}x baseline",
            time.as_secs_f64() * 1e3
        );
    }
}

/// 10 machines x 10 runtimes x 50 checks.
fn write_matrix(dir: &Path, name: &str, notebooks: bool) -> std::path::PathBuf {
    let root = dir.join(name);
    let notebook_dir = root.join("notebooks");
    std::fs::create_dir_all(&notebook_dir).unwrap();
    let mut toml = String::new();
    for m in 0..10 {
        toml += &format!("[machines.m{m}]\ngpus = 0\n");
    }
    for r in 0..10 {
        toml += &format!("[runtimes.r{r}]\n");
        if notebooks {
            toml += "notebooks = [\"*.ipynb\"]\n";
        } else {
            toml += &format!("[runtimes.r{r}.commands]\n");
            for c in 0..50 {
                toml += &format!("c{c} = \"true\"\n");
            }
        }
    }
    for n in 0..50 {
        let cells: Vec<String> = (0..20)
            .map(|i| format!("{{\"cell_type\": \"code\", \"id\": \"c{i}\", \"metadata\": {{}}, \"execution_count\": null, \"outputs\": [], \"source\": \"x = {i}\\nprint(x)\"}}"))
            .collect();
        let notebook = format!(
            "{{\"nbformat\": 4, \"nbformat_minor\": 5, \"metadata\": {{\"kernelspec\": {{\"name\": \"python3\", \"display_name\": \"Python 3\"}}}}, \"cells\": [{}]}}",
            cells.join(", ")
        );
        std::fs::write(notebook_dir.join(format!("n{n:02}.ipynb")), notebook).unwrap();
    }
    let path = root.join("matrix.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

fn run(command: &mut Command) -> String {
    let output = command.output().expect("the binary runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn median(mut f: impl FnMut()) -> Duration {
    f(); // warm the page cache
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[RUNS / 2]
}
