//! CI fan-out (`runtime-matrix ci`): the job matrix follows the machines' runner labels and
//! shards, and each entry selects exactly the trials the plan gives its machine and shard; the
//! generated GitHub workflow passes GitHub's workflow schema (check-jsonschema, offline) and
//! zizmor's audit, the GitLab pipeline passes GitLab's schema; the repository's own
//! `.github/workflows/matrix.yml` is what the example matrix generates
//! (`UPDATE_WORKFLOWS=1 cargo test --test ci` rewrites it); and the workflow runs end to end
//! under act on this machine, without network, for a small project that depends on
//! runtime-matrix by path: the plan job's matrix fans out to a job per machine and shard, and
//! the merge job merges their run folders and writes the job summary.
//!
//! Under act, the actions the workflow `uses:` are local stand-ins (`fixtures/ci/actions`,
//! mapped with `--local-repository`): act cannot download actions here, and the real ones are
//! JavaScript programs bundled in their GitHub repositories. Each is a composite action doing
//! the same job on this machine: upload-artifact and download-artifact speak the real actions'
//! protocol (artifacts v4) to the artifact server act runs (`--artifact-server-path`), checkout
//! copies the project, and cache/restore and cache/save keep folders by key in a folder (the
//! `actions/cache` stand-in only restores: a composite action has no post step). Everything
//! else in the workflow (the toolchain step, `cargo install` of the command,
//! `cargo test --test matrix` with the matrix's environment, `runtime-matrix report`, the gate,
//! the summary, the baseline logic) runs as written.

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{cache, ci_tools, fixtures, output, runtime_matrix};

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `runtime-matrix ci ARGS` in `dir`.
fn ci(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    output(runtime_matrix().current_dir(dir).arg("ci").args(args))
}

/// The job matrix `ci github` prints for the matrix in `dir`, and its stderr.
fn job_matrix(dir: &Path) -> (Vec<Value>, String) {
    let (code, stdout, stderr) = ci(dir, &["github"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout.lines().count(), 1, "one line, for a step output");
    let matrix: Value = serde_json::from_str(&stdout).unwrap();
    (matrix["include"].as_array().unwrap().clone(), stderr)
}

/// How many trials `plan` gives a host that serves `machine`, shard `shard`.
fn planned(dir: &Path, machine: &str, shard: &str) -> usize {
    let (code, stdout, stderr) = output(
        runtime_matrix()
            .current_dir(dir)
            .env("RUNTIME_MATRIX_MACHINES", machine)
            .env("RUNTIME_MATRIX_SHARD", shard)
            .args(["plan", "--format", "json"]),
    );
    assert_eq!(code, Some(0), "{stderr}");
    let plan: Value = serde_json::from_str(&stdout).unwrap();
    plan["plan"]["trials"].as_array().unwrap().len()
}

#[test]
fn the_job_matrix_has_a_job_per_machine_and_shard_on_its_runner_labels() {
    let dir = fixtures().join("ci/project");
    let (jobs, stderr) = job_matrix(&dir);
    let summary: Vec<(String, Value, String, String)> = jobs
        .iter()
        .map(|j| {
            (
                j["machine"].as_str().unwrap().to_owned(),
                j["runs_on"].clone(),
                j["shard"].as_str().unwrap().to_owned(),
                j["run_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let labels = |l: &str| serde_json::json!(["self-hosted", l]);
    assert_eq!(
        summary,
        vec![
            (
                "box-a".into(),
                labels("box-a"),
                "1/1".into(),
                "box-a-1of1".into()
            ),
            (
                "box-b".into(),
                labels("box-b"),
                "1/2".into(),
                "box-b-1of2".into()
            ),
            (
                "box-b".into(),
                labels("box-b"),
                "2/2".into(),
                "box-b-2of2".into()
            ),
        ]
    );
    // Every trial of `spare` is excluded: it gets no job, and the plan job's log says why.
    assert!(
        stderr.contains("machine `spare` gets no CI job")
            && stderr.contains("excluded by matrix.toml: kept for later"),
        "{stderr}"
    );
    // Each job runs what the harness selects with its machine and shard: together, every
    // trial once.
    for job in &jobs {
        let (machine, shard) = (
            job["machine"].as_str().unwrap(),
            job["shard"].as_str().unwrap(),
        );
        assert_eq!(
            Some(planned(&dir, machine, shard) as u64),
            job["trials"].as_u64(),
            "{machine} {shard}"
        );
        assert_eq!(
            job["artifact"].as_str().unwrap(),
            format!("runtime-matrix-run-{}", job["run_id"].as_str().unwrap())
        );
    }
    let total: u64 = jobs.iter().map(|j| j["trials"].as_u64().unwrap()).sum();
    assert_eq!(total, 6, "3 checks on box-a and box-b");

    // The example matrix: a machine without runs-on gets ubuntu-latest... and the GPU machines
    // their self-hosted labels, h100-x2 in two shards.
    let (jobs, _) = job_matrix(repository());
    let shape: Vec<(String, Value, String)> = jobs
        .iter()
        .map(|j| {
            (
                j["machine"].as_str().unwrap().to_owned(),
                j["runs_on"].clone(),
                j["shard"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let gpu = |l: &str| serde_json::json!(["self-hosted", "linux", l]);
    assert_eq!(
        shape,
        vec![
            ("a100".into(), gpu("a100"), "1/1".into()),
            (
                "cpu".into(),
                serde_json::json!(["ubuntu-latest"]),
                "1/1".into()
            ),
            ("h100-x2".into(), gpu("h100"), "1/2".into()),
            ("h100-x2".into(), gpu("h100"), "2/2".into()),
        ]
    );
}

#[test]
fn the_repository_workflow_is_what_the_example_matrix_generates() {
    let path = repository().join(".github/workflows/matrix.yml");
    let (code, generated, stderr) = ci(repository(), &["github", "--workflow"]);
    assert_eq!(code, Some(0), "{stderr}");
    if std::env::var_os("UPDATE_WORKFLOWS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let shipped = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        shipped == generated,
        "{} is not what `runtime-matrix ci github --workflow` generates from matrix.toml \
         (UPDATE_WORKFLOWS=1 cargo test --test ci rewrites it; review the diff)",
        path.display()
    );
    // This repository installs its own command; a project that depends on it would not.
    assert!(generated.contains("--path .\n"), "{generated}");
}

/// A stage or tags given to `ci` reach every job, through the file's top-level environment: the
/// plan job's matrix and each job's trials are then chosen alike. Without them, neither is set.
#[test]
fn a_stage_and_tags_given_to_ci_reach_every_job() {
    for system in [&["github", "--workflow"][..], &["gitlab"][..]] {
        let args = [system, &["--stage", "nightly", "--tags", "data"][..]].concat();
        let (code, generated, stderr) = ci(repository(), &args);
        assert_eq!(code, Some(0), "{stderr}");
        assert!(
            generated.contains("  RUNTIME_MATRIX_STAGE: \"nightly\"\n")
                && generated.contains("  RUNTIME_MATRIX_TAGS: \"data\"\n"),
            "{system:?}: {generated}"
        );
        let (code, generated, stderr) = ci(repository(), system);
        assert_eq!(code, Some(0), "{stderr}");
        assert!(!generated.contains("RUNTIME_MATRIX_STAGE"), "{generated}");
    }
}

/// A temporary copy of `fixtures/ci/project`: a project that depends on this runtime-matrix by
/// path, with its lock file, its generated workflow, in a git repository (act reads the
/// commit).
fn project() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("runtime-matrix-ci-")
        .tempdir()
        .unwrap();
    copy_dir(&fixtures().join("ci/project"), dir.path());
    std::fs::write(
        dir.path().join("Cargo.toml"),
        format!(
            "[package]\nname = \"matrix-fixture\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
             [dev-dependencies]\nruntime-matrix = {{ path = {:?} }}\n\n\
             [[test]]\nname = \"matrix\"\nharness = false\n",
            repository().display().to_string()
        ),
    )
    .unwrap();
    for file in ["Cargo.lock", "rust-toolchain.toml"] {
        std::fs::copy(repository().join(file), dir.path().join(file)).unwrap();
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let run = |command: &mut Command| {
        let (code, stdout, stderr) = output(command.current_dir(dir.path()));
        assert_eq!(code, Some(0), "{command:?}\n{stdout}\n{stderr}");
    };
    // The copied lock file, trimmed to what the project needs: the same versions as ours. Not
    // offline: metadata reads the manifests of every platform's crates, and a fresh machine's
    // build fetched only this platform's (`anstyle-wincon`, say, is missing there).
    run(Command::new(&cargo).args(["metadata", "--format-version", "1"]));
    run(runtime_matrix().args(["ci", "github", "--workflow", ".github/workflows/matrix.yml"]));
    run(Command::new("git").args(["init", "--quiet", "--initial-branch", "main"]));
    run(Command::new("git").args(["add", "--all"]));
    run(Command::new("git").args([
        "-c",
        "user.name=runtime-matrix tests",
        "-c",
        "user.email=tests@runtime-matrix.invalid",
        "commit",
        "--quiet",
        "--message",
        "fixture",
    ]));
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        match entry.file_type().unwrap().is_dir() {
            true => copy_dir(&entry.path(), &target),
            false => {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }
}

#[test]
fn generated_files_pass_their_ci_systems_schemas_and_zizmor() {
    let tools = ci_tools();
    let project = project();
    let gitlab = project.path().join("gitlab-ci.yml");
    let example_gitlab = project.path().join("example-gitlab-ci.yml");
    for (dir, out) in [(project.path(), &gitlab), (repository(), &example_gitlab)] {
        let (code, _, stderr) = ci(dir, &["gitlab", "--out", out.to_str().unwrap()]);
        assert_eq!(code, Some(0), "{stderr}");
    }
    let workflows = [
        repository().join(".github/workflows/matrix.yml"),
        project.path().join(".github/workflows/matrix.yml"),
    ];
    for workflow in &workflows {
        let (code, stdout, stderr) = output(
            Command::new(&tools.python)
                .args([
                    "-m",
                    "check_jsonschema",
                    "--builtin-schema",
                    "vendor.github-workflows",
                ])
                .arg(workflow),
        );
        assert_eq!(code, Some(0), "{}:\n{stdout}\n{stderr}", workflow.display());
        // The pedantic persona: every audit, none of them silenced.
        let (code, stdout, stderr) = output(
            Command::new(&tools.zizmor)
                .args(["--offline", "--persona", "pedantic", "--no-progress"])
                .arg(workflow),
        );
        assert!(
            code == Some(0) && stdout.contains("No findings"),
            "zizmor on {}:\n{stdout}\n{stderr}",
            workflow.display()
        );
    }
    for pipeline in [&gitlab, &example_gitlab] {
        let (code, stdout, stderr) = output(
            Command::new(&tools.python)
                .args([
                    "-m",
                    "check_jsonschema",
                    "--builtin-schema",
                    "vendor.gitlab-ci",
                ])
                .arg(pipeline),
        );
        assert_eq!(code, Some(0), "{}:\n{stdout}\n{stderr}", pipeline.display());
    }
    let text = std::fs::read_to_string(&gitlab).unwrap();
    for expected in [
        "\"matrix box-b\":",
        "      - RUNTIME_MATRIX_SHARD: \"2/2\"\n        RUNTIME_MATRIX_RUN_ID: \"box-b-2of2\"",
        "      junit: runtime-matrix-merged/junit.xml",
    ] {
        assert!(text.contains(expected), "{expected}\n{text}");
    }
    assert!(
        !text.contains("spare"),
        "no job for a machine without trials:\n{text}"
    );
    // A project that depends on runtime-matrix installs the command from where it gets it.
    let workflow = std::fs::read_to_string(&workflows[1]).unwrap();
    let dependency = format!("--path {}\n", repository().display());
    assert!(workflow.contains(&dependency), "{workflow}");
}

#[test]
fn ci_says_what_to_do_when_it_cannot_tell_how_to_install_the_command() {
    // fixtures/ci/project has no Cargo.toml: nothing says where runtime-matrix comes from.
    let dir = fixtures().join("ci/project");
    let (code, stdout, stderr) = ci(&dir, &["github", "--workflow"]);
    assert_eq!((code, stdout.as_str()), (Some(2), ""));
    assert!(
        stderr.contains("Cargo.toml")
            && stderr.contains("--cli path:DIR, git:URL[#REV] or version:X"),
        "{stderr}"
    );
    let (code, _, stderr) = ci(&dir, &["gitlab", "--cli", "cargo install runtime-matrix"]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("is not a source of the runtime-matrix command"),
        "{stderr}"
    );
    let (code, stdout, stderr) = ci(
        &dir,
        &[
            "github",
            "--workflow",
            "--cli",
            "git:https://git.example/rm.git#1a2b3c",
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("--git https://git.example/rm.git --rev 1a2b3c runtime-matrix\n"),
        "{stdout}"
    );
}

/// A process group killed when dropped: act and every job step it started.
struct Act(std::process::Child);

impl Drop for Act {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: kill(2) on the process group this test started.
            unsafe {
                libc::kill(-(self.0.id() as i32), libc::SIGKILL);
            }
            let _ = self.0.wait();
        }
    }
}

#[test]
fn the_workflow_runs_end_to_end_under_act() {
    let tools = ci_tools();
    let project = project();
    let scratch = tempfile::Builder::new()
        .prefix("runtime-matrix-act-")
        .tempdir()
        .unwrap();
    let store = scratch.path().join("store");
    let log_path = scratch.path().join("act.log");
    let actions = fixtures().join("ci/actions");
    let workflow =
        std::fs::read_to_string(project.path().join(".github/workflows/matrix.yml")).unwrap();
    // Every action the workflow uses, mapped to its stand-in.
    let mut local = Vec::new();
    for line in workflow.lines() {
        let Some(reference) = line.trim().strip_prefix("uses: ") else {
            continue;
        };
        let reference = reference.split(' ').next().unwrap();
        let (path, version) = reference.split_once('@').unwrap();
        let repo: Vec<&str> = path.splitn(3, '/').collect();
        let mapping = format!(
            "{}/{}@{version}={}",
            repo[0],
            repo[1],
            actions.join(repo[1]).display()
        );
        if !local.contains(&mapping) {
            local.push(mapping);
        }
    }
    assert_eq!(
        local.len(),
        4,
        "checkout, cache, upload, download: {local:?}"
    );

    let store_dir = store.clone();
    let xdg_cache = scratch.path().join("cache");
    let checkout = project.path().to_owned();
    let act = || {
        let mut act = Command::new(&tools.act);
        // act keeps each job's host workspace under its cache folder, and leaves a failed
        // job's there: in the scratch folder, they go with it.
        act.env("XDG_CACHE_HOME", &xdg_cache);
        act.current_dir(&checkout)
            .args(["push", "-W", ".github/workflows/matrix.yml"])
            .args(["--action-offline-mode", "--no-cache-server"])
            .args(["--defaultbranch", "main"]);
        // Each runner label runs on this machine.
        for label in ["ubuntu-latest", "self-hosted", "box-a", "box-b"] {
            act.arg("-P").arg(format!("{label}=-self-hosted"));
        }
        for mapping in &local {
            act.arg("--local-repository").arg(mapping);
        }
        // The jobs' cargo builds share one target folder across runs, and the host runtime's
        // virtualenv is the tests' shared one.
        for (name, value) in [
            ("RUNTIME_MATRIX_TEST_ACTIONS_STORE", store_dir.clone()),
            ("RUNTIME_MATRIX_TEST_CHECKOUT", checkout.clone()),
            ("CARGO_TARGET_DIR", cache().join("ci-act/target")),
            // No debug info: a third of the build time and a fraction of the disk.
            ("CARGO_PROFILE_DEV_DEBUG", PathBuf::from("0")),
            ("RUNTIME_MATRIX_CACHE", cache()),
            (
                "RUNTIME_MATRIX_NVML",
                PathBuf::from("/nonexistent/libnvidia-ml.so.1"),
            ),
        ] {
            act.arg("--env").arg(format!("{name}={}", value.display()));
        }
        for (key, _) in std::env::vars() {
            if key.starts_with("RUNTIME_MATRIX_")
                || key.starts_with("NEXTEST")
                || key.starts_with("CARGO")
            {
                act.env_remove(key);
            }
        }
        act
    };
    let (log, tail) = run_act(act(), &log_path, &scratch.path().join("artifacts-1"), true);

    // The plan job's matrix fanned out to one job per machine and shard, and none for `spare`.
    for job in ["plan", "box-a 1/1-1", "box-b 1/2-2", "box-b 2/2-3", "merge"] {
        assert!(
            log.lines()
                .any(|l| l.starts_with(&format!("[runtime-matrix/{job}"))
                    && l.ends_with("Job succeeded")),
            "job `{job}` did not succeed:\n{tail}"
        );
    }
    assert!(!log.contains("spare 1/1"), "a job for `spare`:\n{tail}");
    for (job, trials) in [("box-a 1/1-1", 3), ("box-b 1/2-2", 1), ("box-b 2/2-3", 2)] {
        let ran = format!("[runtime-matrix/{job}]   | runtime-matrix: {trials} trial");
        assert!(log.contains(&ran), "`{ran}` missing:\n{tail}");
    }

    // Each job uploaded its run folder to act's artifact server; the merge job downloaded and
    // merged them, and uploaded the reports.
    let artifacts = scratch.path().join("artifacts-1");
    for run in ["box-a-1of1", "box-b-1of2", "box-b-2of2"] {
        let files = unzip_list(&artifacts, &format!("runtime-matrix-run-{run}"));
        assert!(files.iter().any(|f| f == "report.json"), "{run}: {files:?}");
        assert!(
            files.iter().any(|f| f.starts_with("records/")),
            "{run}: {files:?}"
        );
    }
    let merged = scratch.path().join("merged-1");
    unzip(&artifacts, "runtime-matrix-report", &merged);
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(merged.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["summary"]["total"], 6, "{}", report["summary"]);
    assert_eq!(report["summary"]["passed"], 6, "{}", report["summary"]);
    assert_eq!(report["summary"]["excluded"], 3, "{}", report["summary"]);
    assert!(merged.join("junit.xml").is_file());

    // act prints the file it gave the step as GITHUB_STEP_SUMMARY: the merged report.md.
    let summary = log
        .split_once("⚙  Summary - ")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("no job summary:\n{tail}"));
    assert!(summary.starts_with("# runtime-matrix report"), "{summary}");
    assert!(
        summary.contains("| **python** | ✅ 3 passed | ✅ 3 passed | ⏭️ 3 excluded |"),
        "{summary}"
    );
    assert!(
        summary.contains("Runs: `box-a-1of1`, `box-b-1of2`, `box-b-2of2`."),
        "{summary}"
    );

    // The result-reuse store was kept per machine and shard, and the default branch's report
    // as the baseline for the next run.
    let caches: Vec<String> = std::fs::read_dir(store.join("cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for prefix in [
        "runtime-matrix-reuse-box-a-1of1-",
        "runtime-matrix-reuse-box-b-1of2-",
        "runtime-matrix-reuse-box-b-2of2-",
        "runtime-matrix-baseline-",
    ] {
        assert!(
            caches.iter().any(|c| c.starts_with(prefix)),
            "{prefix} not in {caches:?}"
        );
    }
    assert!(
        report.get("baseline").is_none_or(Value::is_null),
        "the first run has no baseline to compare with: {}",
        report["baseline"]
    );

    // The second run finds the first's report as its baseline and gates on new failures.
    let artifacts = scratch.path().join("artifacts-2");
    let (_, tail) = run_act(act(), &log_path, &artifacts, true);
    let merged = scratch.path().join("merged-2");
    unzip(&artifacts, "runtime-matrix-report", &merged);
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(merged.join("report.json")).unwrap())
            .unwrap();
    assert!(
        report["baseline"].is_object(),
        "the second run is compared with the first: {}\n{tail}",
        report["baseline"]
    );
    assert_eq!(report["summary"]["passed"], 6, "{}", report["summary"]);

    // A change that breaks a check: the jobs still upload their run folders, the merge job
    // still merges them and writes the summary, and its gate fails the workflow on the
    // failures the baseline does not have.
    let matrix = std::fs::read_to_string(checkout.join("matrix.toml")).unwrap();
    let broken = matrix.replace(
        "commands.greet = \"echo hello\"",
        "commands.greet = \"echo hello\"\ncommands.broken = \"exit 3\"",
    );
    assert_ne!(matrix, broken);
    std::fs::write(checkout.join("matrix.toml"), broken).unwrap();
    let artifacts = scratch.path().join("artifacts-3");
    let (log, tail) = run_act(act(), &log_path, &artifacts, false);
    let merged = scratch.path().join("merged-3");
    unzip(&artifacts, "runtime-matrix-report", &merged);
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(merged.join("report.json")).unwrap())
            .unwrap();
    // Each job's own words on what it ran and uploaded, for a merged report that lacks some.
    let jobs: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("| runtime-matrix:")
                || l.contains("upload-artifact (stand-in)")
                || l.contains("test result:")
                || l.ends_with("Job failed")
                || l.ends_with("Job succeeded")
        })
        .collect();
    let jobs = jobs.join("\n");
    assert_eq!(
        report["summary"]["failed"], 2,
        "{}\n{jobs}\n{tail}",
        report["summary"]
    );
    assert_eq!(
        report["summary"]["passed"], 6,
        "{}\n{jobs}",
        report["summary"]
    );
    assert!(
        log.lines()
            .any(|l| l.starts_with("[runtime-matrix/merge") && l.ends_with("Job failed")),
        "the merge job's gate did not fail:\n{tail}"
    );
    assert!(
        log.contains("2 failures the baseline does not have"),
        "the gate names the new failures:\n{tail}"
    );
    let summary = log.split_once("⚙  Summary - ").map(|(_, rest)| rest);
    assert!(
        summary.is_some_and(|s| s.contains("python::box-a::cmd::broken")),
        "the summary shows the failures:\n{tail}"
    );
}

/// Runs `act` to its end (its log in `log_path`), with its artifact server on a free
/// loopback port keeping artifacts in `artifacts`; its log, and the log's end for messages.
fn run_act(
    mut act: Command,
    log_path: &Path,
    artifacts: &Path,
    succeeds: bool,
) -> (String, String) {
    use std::os::unix::process::CommandExt;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    act.arg("--artifact-server-path")
        .arg(artifacts)
        .args(["--artifact-server-addr", "127.0.0.1"])
        .args(["--artifact-server-port", &port.to_string()]);
    let log = std::fs::File::create(log_path).unwrap();
    let started = Instant::now();
    let mut running = Act(act
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("act runs"));
    // A cold cargo cache builds runtime-matrix and its dependencies first.
    let limit = Duration::from_secs(20 * 60);
    let status = loop {
        if let Some(status) = running.0.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < limit, "act ran past {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let log = std::fs::read_to_string(log_path).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    let tail = lines[lines.len().saturating_sub(80)..].join("\n");
    eprintln!("act took {:.1}s", started.elapsed().as_secs_f64());
    assert_eq!(status.success(), succeeds, "act's exit status:\n{tail}");
    (log, tail)
}

/// The zip of artifact `name` that act's artifact server keeps under `artifacts`.
fn artifact_zip(artifacts: &Path, name: &str) -> PathBuf {
    let file = format!("{name}.zip");
    let mut found = None;
    let mut folders = vec![artifacts.to_owned()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            match path.is_dir() {
                true => folders.push(path),
                false if path.file_name().is_some_and(|n| *n == *file) => found = Some(path),
                false => {}
            }
        }
    }
    found.unwrap_or_else(|| panic!("no artifact {name} under {}", artifacts.display()))
}

/// The files in artifact `name`.
fn unzip_list(artifacts: &Path, name: &str) -> Vec<String> {
    let (code, stdout, stderr) = output(
        Command::new("python3")
            .arg("-c")
            .arg("import sys, zipfile; print('\\n'.join(zipfile.ZipFile(sys.argv[1]).namelist()))")
            .arg(artifact_zip(artifacts, name)),
    );
    assert_eq!(code, Some(0), "{stderr}");
    stdout.lines().map(str::to_owned).collect()
}

/// Unpacks artifact `name` into `into`.
fn unzip(artifacts: &Path, name: &str, into: &Path) {
    let (code, _, stderr) = output(
        Command::new("python3")
            .args(["-m", "zipfile", "-e"])
            .arg(artifact_zip(artifacts, name))
            .arg(into),
    );
    assert_eq!(code, Some(0), "{stderr}");
}
