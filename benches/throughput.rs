//! Throughput: how long a batch of notebooks takes end to end, four ways side by side in one
//! run, on generated notebooks (issue 10, item 8). It is the baseline a warm runner must beat:
//!
//! - (a) `loop`: a fresh container per notebook, `docker run --rm` of the base image running
//!   `python3 -m nbconvert --to notebook --execute`, one after another (the shell loop users
//!   write by hand);
//! - (b) `docker`: runtime-matrix with a container runtime of the same image at default
//!   settings (but `gpu-checks = false`: only the notebooks are trials), through the harness
//!   binary (`run --config ... -- --include-ignored`);
//! - (c) `host`: runtime-matrix with a host runtime (`python = "python3"`) at default
//!   settings; its virtualenv is provisioned by an untimed first run (setup, not measured);
//! - (d) `nbmake`: `pytest --nbmake -n THREADS` in a virtualenv made once under
//!   `target/bench-nbmake` (pip installs nbmake, pytest-xdist and ipykernel from PyPI; the
//!   arm is skipped, saying so, when that fails).
//!
//! Arms are interleaved within each round, with the order rotated between rounds, and each
//! arm's min and median over the rounds are printed, with the overhead per notebook over the
//! cells' own time (`(wall x slots - cells) / notebooks`) and the ratios issue 10 sets targets
//! for: docker/loop (target 0.2x) and host/nbmake (target 0.8x).
//!
//! Run with `cargo bench --bench throughput`. Settings (environment variables):
//!
//! - `BENCH_NOTEBOOKS`: how many notebooks (default 12); one in six sleeps (12: 10 trivial
//!   and 2 that sleep);
//! - `BENCH_SLEEP`: seconds a sleeping notebook sleeps (default 2);
//! - `BENCH_ROUNDS`: rounds (default 3);
//! - `BENCH_THREADS`: runtime-matrix's `--test-threads` and nbmake's `-n` (default: the
//!   harness's own default for runtime-matrix, twice the cores, and `-n 2` for nbmake);
//! - `BENCH_ARMS`: which arms to run, e.g. `loop,docker` (default all four).
//!
//! It needs a Docker engine and the image `runtime-matrix/jupyter-base:bookworm`, which it
//! builds with `images/jupyter-base/build.sh` (as root, from Debian's mirror) when missing.
//! No container may be left: the bench counts its own at the end, removes any, and fails if
//! there were some. Under `cargo test --all-targets` (no `--bench` argument) it does nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const IMAGE: &str = "runtime-matrix/jupyter-base:bookworm";
/// The label on the loop arm's containers; runtime-matrix's own carry `runtime-matrix.run-id`.
const LABEL: &str = "runtime-matrix.bench";
/// No single command of an arm may run longer than this.
const LIMIT: Duration = Duration::from_secs(900);

#[derive(Clone, Copy, PartialEq)]
enum Arm {
    Loop,
    Docker,
    Host,
    Nbmake,
}

impl Arm {
    const ALL: [Arm; 4] = [Arm::Loop, Arm::Docker, Arm::Host, Arm::Nbmake];

    fn name(self) -> &'static str {
        match self {
            Arm::Loop => "loop",
            Arm::Docker => "docker",
            Arm::Host => "host",
            Arm::Nbmake => "nbmake",
        }
    }

    fn describe(self, s: &Settings) -> String {
        let threads = s.threads_of(self);
        match self {
            Arm::Loop => "(a) docker run --rm + nbconvert per notebook, sequential".to_owned(),
            Arm::Docker => format!("(b) runtime-matrix, container runtime, {threads} threads"),
            Arm::Host => format!("(c) runtime-matrix, host runtime, {threads} threads"),
            Arm::Nbmake => format!("(d) pytest --nbmake -n {threads}"),
        }
    }
}

struct Settings {
    notebooks: usize,
    sleepers: usize,
    sleep: u64,
    rounds: usize,
    /// `BENCH_THREADS`, when set.
    threads: Option<usize>,
    arms: Vec<Arm>,
}

impl Settings {
    /// How many trials `arm` runs at once: runtime-matrix's default is twice the cores.
    fn threads_of(&self, arm: Arm) -> usize {
        match (arm, self.threads) {
            (Arm::Loop, _) => 1,
            (_, Some(threads)) => threads,
            (Arm::Nbmake, None) => 2,
            (_, None) => {
                2 * std::thread::available_parallelism()
                    .map(usize::from)
                    .unwrap_or(1)
            }
        }
    }
}

fn number(key: &str, default: usize) -> usize {
    match std::env::var(key) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{key}={v:?} is not a whole number")),
        _ => default,
    }
}

fn settings() -> Settings {
    let notebooks = number("BENCH_NOTEBOOKS", 12).max(1);
    let arms = match std::env::var("BENCH_ARMS") {
        Ok(v) if !v.trim().is_empty() => v
            .split(',')
            .map(|name| {
                *Arm::ALL
                    .iter()
                    .find(|arm| arm.name() == name.trim())
                    .unwrap_or_else(|| {
                        panic!("BENCH_ARMS: unknown arm {name:?}; use loop, docker, host, nbmake")
                    })
            })
            .collect(),
        _ => Arm::ALL.to_vec(),
    };
    Settings {
        notebooks,
        sleepers: notebooks / 6,
        sleep: number("BENCH_SLEEP", 2) as u64,
        rounds: number("BENCH_ROUNDS", 3).max(1),
        threads: std::env::var("BENCH_THREADS")
            .ok()
            .map(|_| number("BENCH_THREADS", 2).max(1)),
        arms,
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("throughput: run it with `cargo bench --bench throughput`");
        return;
    }
    let s = settings();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("a temporary folder");
    let notebooks = dir.path().join("notebooks");
    write_notebooks(&notebooks, &s);
    let tag = format!("bench-{}", std::process::id());
    let cells = (s.sleepers as u64 * s.sleep) as f64;
    println!(
        "throughput benchmark: {} notebooks ({} trivial, {} sleeping {} s), {} rounds, threads: {}",
        s.notebooks,
        s.notebooks - s.sleepers,
        s.sleepers,
        s.sleep,
        s.rounds,
        s.threads
            .map(|t| t.to_string())
            .unwrap_or_else(|| "each tool's default".into())
    );

    // Setup, never timed: the image, the host runtime's virtualenv, nbmake's virtualenv.
    let needs_docker = s.arms.iter().any(|a| matches!(a, Arm::Loop | Arm::Docker));
    if needs_docker {
        ensure_image(root);
    }
    let mut arms = s.arms.clone();
    if arms.contains(&Arm::Host) {
        println!("setup: provisioning the host runtime's virtualenv (an untimed first run)");
        let started = Instant::now();
        let config = write_matrix(dir.path(), &notebooks, Arm::Host, root);
        harness(root, dir.path(), &config, &format!("{tag}-setup"), &s, true);
        println!("setup: host runtime ready in {:.1} s", secs(started));
    }
    let venv = root.join("target/bench-nbmake");
    if arms.contains(&Arm::Nbmake)
        && let Err(why) = ensure_nbmake(&venv, &notebooks)
    {
        println!("SKIPPED (d) pytest --nbmake: {why}");
        arms.retain(|a| *a != Arm::Nbmake);
    }

    let mut times: Vec<Vec<f64>> = vec![Vec::new(); arms.len()];
    for round in 0..s.rounds {
        for k in 0..arms.len() {
            let i = (round + k) % arms.len();
            let arm = arms[i];
            let run_id = format!("{tag}-{}-{round}", arm.name());
            let started = Instant::now();
            match arm {
                Arm::Loop => run_loop(&notebooks, dir.path(), &tag, &s),
                Arm::Docker | Arm::Host => {
                    let config = write_matrix(dir.path(), &notebooks, arm, root);
                    harness(root, dir.path(), &config, &run_id, &s, false);
                }
                Arm::Nbmake => run_nbmake(&venv, &notebooks, &s),
            }
            let t = secs(started);
            println!("  round {}: {:<7} {:>6.1} s", round + 1, arm.name(), t);
            times[i].push(t);
        }
    }

    println!(
        "results: wall time over {} rounds; overhead per notebook over the cells' own {cells:.0} s",
        s.rounds
    );
    let mut medians = Vec::new();
    for (arm, t) in arms.iter().zip(&mut times) {
        t.sort_by(f64::total_cmp);
        let (min, median) = (t[0], median(t));
        let slots = s.threads_of(*arm) as f64;
        let overhead = (median * slots - cells) / s.notebooks as f64;
        println!(
            "  {:<58} min {min:>6.1} s  median {median:>6.1} s  overhead {overhead:>5.2} s/notebook",
            arm.describe(&s)
        );
        medians.push((*arm, min, median));
    }
    let find = |arm: Arm| medians.iter().find(|m| m.0 == arm).map(|m| (m.1, m.2));
    ratio(
        "(b) docker / (a) loop",
        find(Arm::Docker),
        find(Arm::Loop),
        0.2,
    );
    ratio(
        "(c) host / (d) nbmake",
        find(Arm::Host),
        find(Arm::Nbmake),
        0.8,
    );
    let left = if needs_docker { leftovers(&tag) } else { 0 };
    println!("containers left behind: {left}");
    assert_eq!(
        left, 0,
        "the benchmark left containers behind (removed now)"
    );
}

/// Prints `a / b` for medians and mins, and whether the median meets `target`.
fn ratio(label: &str, a: Option<(f64, f64)>, b: Option<(f64, f64)>, target: f64) {
    let (Some((a_min, a_med)), Some((b_min, b_med))) = (a, b) else {
        println!("  {label}: not measured (an arm was not run)");
        return;
    };
    let r = a_med / b_med;
    let verdict = if r <= target {
        "meets the target"
    } else {
        "MISSES the target"
    };
    println!(
        "  {label}: {r:.2}x (medians; mins {:.2}x); issue 10's target is at most {target}x: {verdict}",
        a_min / b_min
    );
}

fn secs(started: Instant) -> f64 {
    started.elapsed().as_secs_f64()
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// `nb00.ipynb`...: one cell each; every sixth (from the end) sleeps.
fn write_notebooks(dir: &Path, s: &Settings) {
    std::fs::create_dir_all(dir).unwrap();
    for n in 0..s.notebooks {
        let source = if n >= s.notebooks - s.sleepers {
            format!("import time\\ntime.sleep({})\\nprint('slept')", s.sleep)
        } else {
            format!("print('notebook {n}')")
        };
        let notebook = format!(
            r#"{{"nbformat": 4, "nbformat_minor": 5,
 "metadata": {{"kernelspec": {{"name": "python3", "display_name": "Python 3", "language": "python"}},
              "language_info": {{"name": "python"}}}},
 "cells": [{{"cell_type": "code", "id": "cell-0", "metadata": {{}}, "source": "{source}",
            "execution_count": null, "outputs": []}}]}}
"#
        );
        std::fs::write(dir.join(format!("nb{n:02}.ipynb")), notebook).unwrap();
    }
}

/// The matrix of one runtime-matrix arm: one CPU machine, one runtime at default settings.
fn write_matrix(dir: &Path, notebooks: &Path, arm: Arm, root: &Path) -> PathBuf {
    let runtime = match arm {
        Arm::Docker => format!(
            "[runtimes.docker]\nimage = \"{IMAGE}\"\nbuild = {{ script = \"{}\" }}\nnotebooks = [\"*.ipynb\"]\ngpu-checks = false\n",
            root.join("images/jupyter-base/build.sh").display()
        ),
        _ => "[runtimes.host]\npython = \"python3\"\nnotebooks = [\"*.ipynb\"]\n".to_owned(),
    };
    let toml = format!(
        "notebooks-dir = \"{}\"\n\n[machines.cpu]\ngpus = 0\n\n{runtime}",
        notebooks.display()
    );
    let path = dir.join(format!("{}.toml", arm.name()));
    std::fs::write(&path, toml).unwrap();
    path
}

/// Runs the harness on `config` and checks that every trial passed (or, for `setup`, that
/// the first notebook did).
fn harness(root: &Path, dir: &Path, config: &Path, run_id: &str, s: &Settings, setup: bool) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_runtime-matrix"));
    for (key, _) in std::env::vars() {
        if key.starts_with("RUNTIME_MATRIX_") || key.starts_with("NEXTEST") {
            command.env_remove(key);
        }
    }
    command
        .args(["run", "--config"])
        .arg(config)
        .args(["--", "--include-ignored"])
        .args(
            s.threads
                .map(|threads| vec!["--test-threads".to_owned(), threads.to_string()])
                .unwrap_or_default(),
        )
        .env("RUNTIME_MATRIX_OUT", dir.join("out"))
        .env("RUNTIME_MATRIX_RUN_ID", run_id)
        .env(
            "RUNTIME_MATRIX_CACHE",
            root.join("target/runtime-matrix/cache"),
        );
    if setup {
        command.arg("nb00");
    }
    let (ok, output) = run(&mut command);
    let passed = if setup { 1 } else { s.notebooks };
    let notebooks_ok = output
        .lines()
        .filter(|l| l.starts_with("test ") && l.contains("::nb::") && l.ends_with(" ok"))
        .count();
    assert!(
        ok && notebooks_ok == passed,
        "runtime-matrix run {run_id} did not pass all {passed} trials:\n{output}"
    );
}

/// The fresh-container loop: one `docker run --rm` per notebook, one after another.
fn run_loop(notebooks: &Path, dir: &Path, tag: &str, s: &Settings) {
    let out = dir.join("loop-out");
    std::fs::create_dir_all(&out).unwrap();
    // The image runs as root; the output folder must be writable whoever runs the bench.
    let _ = Command::new("chmod").arg("777").arg(&out).status();
    for n in 0..s.notebooks {
        let name = format!("nb{n:02}.ipynb");
        let (ok, output) = run(Command::new("docker")
            .args(["run", "--rm", "--network", "none", "--label"])
            .arg(format!("{LABEL}={tag}-loop"))
            .arg("-v")
            .arg(format!("{}:/nb:ro", notebooks.display()))
            .arg("-v")
            .arg(format!("{}:/out", out.display()))
            .args([IMAGE, "python3", "-m", "nbconvert", "--to", "notebook"])
            .args(["--execute", "--output-dir", "/out"])
            .arg(format!("/nb/{name}")));
        assert!(ok, "the loop's docker run of {name} failed:\n{output}");
    }
}

fn run_nbmake(venv: &Path, notebooks: &Path, s: &Settings) {
    let (ok, output) = run(Command::new(venv.join("bin/pytest"))
        .args(["--nbmake", "-q", "-p", "no:cacheprovider", "-n"])
        .arg(s.threads_of(Arm::Nbmake).to_string())
        .arg(notebooks));
    assert!(
        ok && output.contains(&format!("{} passed", s.notebooks)),
        "pytest --nbmake did not pass all {} notebooks:\n{output}",
        s.notebooks
    );
}

/// Makes nbmake's virtualenv once, and warms it with one untimed run.
fn ensure_nbmake(venv: &Path, notebooks: &Path) -> Result<(), String> {
    let pytest = venv.join("bin/pytest");
    if !pytest.exists() {
        println!("setup: making {} (pip install from PyPI)", venv.display());
        let (ok, output) = run(Command::new("python3").arg("-m").arg("venv").arg(venv));
        if !ok {
            return Err(format!("python3 -m venv failed:\n{output}"));
        }
        let (ok, output) = run(Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "--disable-pip-version-check"])
            .args(["nbmake", "pytest-xdist", "ipykernel"]));
        if !ok {
            let _ = std::fs::remove_dir_all(venv);
            return Err(format!(
                "pip install nbmake pytest-xdist ipykernel failed:\n{output}"
            ));
        }
    }
    let (ok, output) = run(Command::new(&pytest)
        .args(["--nbmake", "-q", "-p", "no:cacheprovider"])
        .arg(notebooks.join("nb00.ipynb")));
    if !ok {
        return Err(format!("a first nbmake run failed:\n{output}"));
    }
    Ok(())
}

/// Builds the base image when it is missing, or stops saying how to build it.
fn ensure_image(root: &Path) {
    let (ok, output) =
        run(Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]));
    assert!(
        ok,
        "the loop and docker arms need a Docker engine (or set BENCH_ARMS=host,nbmake):\n{output}"
    );
    if run(Command::new("docker").args(["image", "inspect", IMAGE])).0 {
        return;
    }
    let script = root.join("images/jupyter-base/build.sh");
    println!(
        "setup: building {IMAGE} with {} (untimed)",
        script.display()
    );
    let (ok, output) = run(&mut Command::new(&script));
    assert!(
        ok,
        "{IMAGE} is missing and could not be built; build it as root with `sudo {}` \
         (or run `cargo test --test docker`, which builds it), then rerun:\n{output}",
        script.display()
    );
}

/// Runs `command` with its output captured, killed after [`LIMIT`]; says whether it
/// succeeded and returns its stdout and stderr together.
fn run(command: &mut Command) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let file = std::fs::File::create(&log).unwrap();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut output = std::fs::read_to_string(&log).unwrap_or_default();
    if status.is_none() {
        output += &format!("\n(killed after {} s)", LIMIT.as_secs());
    }
    (status.is_some_and(|s| s.success()), output)
}

/// Counts the containers of this benchmark (the loop's, and runtime-matrix's runs), and
/// removes them.
fn leftovers(tag: &str) -> usize {
    let list = |filter: &str| -> Vec<String> {
        let out = Command::new("docker")
            .args([
                "ps",
                "-a",
                "--format",
                "{{.ID}} {{.Labels}}",
                "--filter",
                filter,
            ])
            .output()
            .expect("docker ps runs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(&format!("={tag}-")))
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect()
    };
    let mut ids = list(&format!("label={LABEL}"));
    ids.extend(list("label=runtime-matrix.run-id"));
    ids.sort();
    ids.dedup();
    if !ids.is_empty() {
        let _ = Command::new("docker")
            .args(["rm", "-f"])
            .args(&ids)
            .stdout(Stdio::null())
            .status();
    }
    ids.len()
}
