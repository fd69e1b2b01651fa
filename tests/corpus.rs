//! The bad-input corpus beyond invalid matrix files (those are in `tests/config.rs`): bad
//! notebooks and a hostile environment. Each case checks the message names what is wrong, the
//! exit code, that nothing panicked (see `support::output`), that no container or process of
//! the run is left, and that other trials' records (and earlier runs') are intact.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::{
    containers_of_run, fixtures, harness, leftover_processes, output, records, runtime_matrix,
};

/// The invalid matrix files, plus the cases below: the corpus must not shrink unnoticed.
#[test]
fn the_corpus_has_at_least_thirty_cases() {
    let matrices = std::fs::read_dir(fixtures().join("matrices/invalid"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "toml")
        })
        .count();
    let run_time_cases = 6; // the trials of fixtures/matrices/corpus.toml that must fail or warn
    let environment_cases = 14; // the tests below that set up a hostile environment
    assert!(
        matrices + run_time_cases + environment_cases >= 30,
        "{matrices} + {run_time_cases} + {environment_cases}"
    );
}

#[test]
fn bad_trials_fail_clearly_and_the_others_keep_their_records() {
    let out = tempfile::tempdir().unwrap();
    let config = fixtures().join("matrices/corpus.toml");
    let (code, stdout, stderr) = output(&mut harness(
        &config,
        out.path(),
        "corpus",
        &["--include-ignored", "--test-threads", "2"],
    ));
    assert_eq!(code, Some(101), "{stdout}\n{stderr}");
    for expected in [
        // A kernel the runtime does not have.
        "runtime `py` on machine `cpu`: notebook `unknown_kernel.ipynb` failed: the notebook's kernel is not installed\n  category: runtime\n  \
         jupyter_client.kernelspec.NoSuchKernel: No such kernel named julia-1.9",
        // An image that is not there, with pull = never.
        "image `runtime-matrix/test-never-built:1` is not in the Docker engine and pull = \"never\"",
        // An image without Python.
        "image `runtime-matrix/test-no-python:bookworm` has no `python3`",
        // An engine that is not there.
        "cannot reach the Docker engine at unix:///nonexistent/docker.sock",
    ] {
        assert!(
            stdout.contains(expected),
            "missing:\n{expected}\nin:\n{stdout}"
        );
    }
    // Listing reads no notebook: whether one is valid, and its kernel, are its trial's business.
    assert!(!stderr.contains("declares no kernel"), "{stderr}");

    let records = records(out.path(), "corpus");
    assert_eq!(
        records.len(),
        7,
        "every trial has a record: {:?}",
        records.keys()
    );
    assert_eq!(records["py::cpu::nb::passing"]["status"], "passed");
    assert_eq!(records["py::cpu::nb::no_kernelspec"]["status"], "passed");
    // A flood of output passes, and what is kept of it is bounded.
    let huge = &records["py::cpu::nb::huge_output"];
    assert_eq!(huge["status"], "passed");
    let record_size = std::fs::metadata(
        out.path()
            .join("corpus/records")
            .read_dir()
            .unwrap()
            .find(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains("huge_output")
            })
            .unwrap()
            .unwrap()
            .path(),
    )
    .unwrap()
    .len();
    assert!(
        record_size < 64 * 1024,
        "the record stays small: {record_size} bytes"
    );
    assert!(
        out.path()
            .join("corpus")
            .join(huge["artifact"].as_str().unwrap())
            .is_file()
    );

    assert_eq!(containers_of_run("corpus"), Vec::<String>::new());
    assert_eq!(leftover_processes("corpus"), Vec::<String>::new());
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}

#[test]
fn setup_errors_exit_2_and_leave_earlier_records_alone() {
    let out = tempfile::tempdir().unwrap();
    let commands = fixtures().join("matrices/commands.toml");
    let (code, _, _) = output(&mut harness(
        &commands,
        out.path(),
        "earlier",
        &["alpha::cpu::cmd::ok", "--exact"],
    ));
    assert_eq!(code, Some(0));
    let before = snapshot(&out.path().join("earlier/records"));

    // An output folder that cannot be created.
    let mut unwritable = harness(&commands, out.path(), "x", &[]);
    let (code, _, stderr) = output(unwritable.env("RUNTIME_MATRIX_OUT", "/etc/hostname/out"));
    assert_eq!(code, Some(2));
    assert!(stderr.contains("error: cannot create output folder /etc/hostname/out/x/records (set RUNTIME_MATRIX_OUT to a writable folder)\n  caused by: Not a directory"), "{stderr}");

    // A config path that is a folder.
    let (code, _, stderr) = output(&mut harness(&fixtures(), out.path(), "x", &[]));
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("failed to read matrix config at")
            && stderr.contains("caused by: a directory, not a regular file"),
        "{stderr}"
    );

    // A keep mode that does not exist.
    let mut keep = harness(&commands, out.path(), "x", &[]);
    let (code, _, stderr) = output(keep.env("RUNTIME_MATRIX_KEEP", "sometimes"));
    assert_eq!(
        (code, stderr.as_str()),
        (
            Some(2),
            "error: invalid RUNTIME_MATRIX_KEEP `sometimes` (use `failed` or `always`)\n"
        )
    );

    assert_eq!(
        snapshot(&out.path().join("earlier/records")),
        before,
        "an earlier run's records changed"
    );
}

#[test]
fn a_notebook_name_that_is_not_utf8_is_named_not_skipped() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let notebooks = dir.path().join("notebooks");
    std::fs::create_dir(&notebooks).unwrap();
    let passing = std::fs::read(fixtures().join("corpus-notebooks/passing.ipynb")).unwrap();
    std::fs::write(
        notebooks.join(std::ffi::OsStr::from_bytes(b"caf\xe9.ipynb")),
        &passing,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("matrix.toml"),
        "[machines.cpu]\ngpus = 0\n[runtimes.py]\nnotebooks = [\"*.ipynb\"]\n",
    )
    .unwrap();
    let (code, _, stderr) = output(runtime_matrix().arg("plan").current_dir(dir.path()));
    assert_eq!(code, Some(2));
    assert!(stderr.contains("runtimes.py.notebooks: notebook file name `caf\u{fffd}.ipynb` is not valid UTF-8 (rename it: trial names are text)"), "{stderr}");
}

#[test]
fn a_selection_that_runs_nothing_says_so() {
    let out = tempfile::tempdir().unwrap();
    let mut run = harness(
        &fixtures().join("matrices/commands.toml"),
        out.path(),
        "nothing",
        &[],
    );
    let (code, _, stderr) = output(
        run.env("RUNTIME_MATRIX_TAGS", "gpu")
            .env("RUNTIME_MATRIX_MACHINES", "cpu"),
    );
    assert_eq!(code, Some(0));
    assert!(stderr.contains("warning: this selection runs none of the 15 declared trials (e.g. `alpha::a100::cmd::fails`: machine `a100` is not selected"), "{stderr}");
}

#[test]
fn permission_denied_on_the_docker_socket_says_how_to_get_access() {
    // The tests run as root; an unprivileged user is refused by the socket (root:docker 0660).
    let out = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        out.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let config = out.path().join("matrix.toml");
    std::fs::write(&config, "[machines.cpu]\ngpus = 0\n[runtimes.c]\nimage = \"runtime-matrix/jupyter-base:bookworm\"\ncommands.ok = \"true\"\n").unwrap();
    let mut command = std::process::Command::new("setpriv");
    command
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_runtime-matrix"))
        .args(["run", "--config"])
        .arg(&config)
        .args(["--", "--include-ignored"])
        .env("RUNTIME_MATRIX_OUT", out.path().join("out"))
        .env("RUNTIME_MATRIX_CACHE", out.path().join("cache"))
        .env("RUNTIME_MATRIX_NVML", "/nonexistent")
        .env_remove("DOCKER_HOST")
        .env_remove("NEXTEST_RUN_ID");
    let (code, stdout, _) = output(&mut command);
    assert_eq!(code, Some(101), "{stdout}");
    assert!(stdout.contains(
        "permission denied on the Docker socket at unix:///var/run/docker.sock (add your user to the `docker` group and log in again, or run as root)"
    ), "{stdout}");
}

/// Runs `command` under a 1 GiB address-space limit and a 20 s deadline: what a file that
/// never ends (or never opens) does to the binary is an exit, not memory or time.
fn bounded(command: &mut Command) -> (Option<i32>, String, String, Duration) {
    let mut shell = Command::new("sh");
    shell
        .arg("-c")
        .arg("ulimit -v 1048576; exec timeout -s KILL 20 \"$@\"")
        .arg("sh")
        .arg(command.get_program())
        .args(command.get_args())
        .current_dir(command.get_current_dir().unwrap_or(Path::new(".")));
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => shell.env(key, value),
            None => shell.env_remove(key),
        };
    }
    let start = Instant::now();
    let (code, stdout, stderr) = output(&mut shell);
    (code, stdout, stderr, start.elapsed())
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success());
}

#[test]
fn configs_that_never_end_or_never_open_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.toml");
    mkfifo(&fifo);
    let zero_link = dir.path().join("zero.toml");
    std::os::unix::fs::symlink("/dev/zero", &zero_link).unwrap();
    let huge = dir.path().join("huge.toml");
    let mut text = "# padding\n".repeat(500_000);
    text.push_str("[machines.cpu]\ngpus = 0\n");
    std::fs::write(&huge, text).unwrap();
    for (config, cause) in [
        (
            Path::new("/dev/zero"),
            "a character device, not a regular file (give a regular file)",
        ),
        (
            Path::new("/dev/urandom"),
            "a character device, not a regular file (give a regular file)",
        ),
        (
            zero_link.as_path(),
            "a character device, not a regular file (give a regular file)",
        ),
        (
            fifo.as_path(),
            "a named pipe (FIFO), not a regular file (give a regular file)",
        ),
        (
            huge.as_path(),
            "larger than 4 MiB, the most a matrix config may be",
        ),
    ] {
        // Listing, as cargo-nextest does before anything runs.
        let mut list = runtime_matrix();
        list.args(["run", "--", "--list"])
            .env("RUNTIME_MATRIX_CONFIG", config);
        let (code, stdout, stderr, took) = bounded(&mut list);
        assert_eq!(
            (code, stdout.as_str(), stderr),
            (
                Some(2),
                "",
                format!(
                    "error: failed to read matrix config at {} (set RUNTIME_MATRIX_CONFIG to use another file)\n  caused by: {cause}\n",
                    config.display()
                )
            )
        );
        assert!(
            took < Duration::from_secs(10),
            "{}: {took:?}",
            config.display()
        );
    }
}

#[test]
fn a_notebook_that_never_ends_or_never_opens_does_not_stop_the_listing() {
    let dir = tempfile::tempdir().unwrap();
    let notebooks = dir.path().join("notebooks");
    std::fs::create_dir(&notebooks).unwrap();
    std::fs::copy(
        fixtures().join("corpus-notebooks/passing.ipynb"),
        notebooks.join("passing.ipynb"),
    )
    .unwrap();
    mkfifo(&notebooks.join("fifo.ipynb"));
    std::fs::write(
        dir.path().join("matrix.toml"),
        "[machines.cpu]\ngpus = 0\n[runtimes.py]\nnotebooks = [\"*.ipynb\"]\n",
    )
    .unwrap();
    let mut list = runtime_matrix();
    list.args(["run", "--", "--list"]).current_dir(dir.path());
    let (code, stdout, stderr, took) = bounded(&mut list);
    assert_eq!(
        (code, stdout.as_str(), stderr.as_str()),
        (
            Some(0),
            "[host] py::cpu::nb::fifo: test\n[host] py::cpu::nb::passing: test\n",
            ""
        )
    );
    assert!(took < Duration::from_secs(10), "{took:?}");

    // Run, the pipe fails its own trial, and its neighbour passes.
    let out = dir.path().join("out");
    let mut run = runtime_matrix();
    run.args(["run"])
        .current_dir(dir.path())
        .env("RUNTIME_MATRIX_OUT", &out)
        .env("RUNTIME_MATRIX_RUN_ID", "fifo");
    let (code, stdout, stderr) = output(&mut run);
    assert_eq!(code, Some(101), "{stdout}\n{stderr}");
    let records = records(&out, "fifo");
    assert_eq!(records["py::cpu::nb::passing"]["status"], "passed");
    let failure = &records["py::cpu::nb::fifo"]["failure"];
    assert_eq!(
        (&failure["kind"], &failure["category"]),
        (&"invalid-notebook".into(), &"notebook".into())
    );
    assert_eq!(
        failure["summary"],
        "it cannot be read: a named pipe (FIFO), not a regular file (give a regular file)"
    );
}

#[rstest::rstest]
#[case::parent("../../x")]
#[case::absolute("/abs")]
#[case::nested("a/b")]
fn a_run_id_that_would_leave_the_output_folder_exits_2(#[case] run_id: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("a/b/out");
    let (code, stdout, stderr) = output(&mut harness(
        &fixtures().join("matrices/commands.toml"),
        &out,
        run_id,
        &["alpha::cpu::cmd::ok", "--exact"],
    ));
    assert_eq!(
        (code, stdout.as_str(), stderr),
        (
            Some(2),
            "",
            format!(
                "error: invalid RUNTIME_MATRIX_RUN_ID `{run_id}` (use 1 to 128 letters, digits, `.`, `_` or `-`, not `.` or `..`: run ids name a folder)\n"
            )
        )
    );
    let written: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(written.is_empty(), "nothing is written: {written:?}");
    assert!(!Path::new("/abs").exists());
}

#[test]
fn a_nextest_run_id_names_the_run_folder_and_latest() {
    let out = tempfile::tempdir().unwrap();
    let id = "f2bc7c69-1dbb-4ab1-9b1c-ac8c0d3b6a0e";
    let mut run = harness(
        &fixtures().join("matrices/commands.toml"),
        out.path(),
        id,
        &["alpha::cpu::cmd::ok", "--exact"],
    );
    let (code, _, stderr) = output(
        run.env_remove("RUNTIME_MATRIX_RUN_ID")
            .env("NEXTEST_RUN_ID", id),
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(out.path().join(id).join("records").is_dir());
    assert_eq!(
        std::fs::read_to_string(out.path().join("latest")).unwrap(),
        format!("{id}\n")
    );
}

#[test]
fn notebooks_that_resolve_outside_the_notebooks_folder_or_split_lines_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let notebooks = dir.path().join("notebooks");
    std::fs::create_dir(&notebooks).unwrap();
    let passing = fixtures().join("corpus-notebooks/passing.ipynb");
    std::fs::copy(&passing, notebooks.join("passing.ipynb")).unwrap();
    std::fs::copy(&passing, dir.path().join("outside.ipynb")).unwrap();
    std::os::unix::fs::symlink(
        dir.path().join("outside.ipynb"),
        notebooks.join("escape.ipynb"),
    )
    .unwrap();
    std::os::unix::fs::symlink("/dev/zero", notebooks.join("zero.ipynb")).unwrap();
    // Inside the folder, a symlink is fine.
    std::os::unix::fs::symlink("passing.ipynb", notebooks.join("alias.ipynb")).unwrap();
    std::fs::copy(&passing, notebooks.join("two\nlines.ipynb")).unwrap();
    std::fs::write(
        dir.path().join("matrix.toml"),
        "[machines.cpu]\ngpus = 0\n[runtimes.py]\nnotebooks = [\"*.ipynb\"]\n",
    )
    .unwrap();
    let outside = dir.path().canonicalize().unwrap().join("outside.ipynb");
    let mut list = runtime_matrix();
    list.args(["run", "--", "--list"]).current_dir(dir.path());
    let (code, stdout, stderr, _) = bounded(&mut list);
    assert_eq!(
        (code, stdout.as_str(), stderr),
        (
            Some(2),
            "",
            format!(
                "error: invalid matrix config at matrix.toml:\n\
                 \x20 - runtimes.py.notebooks: notebook `escape.ipynb` links to {}, outside the notebooks folder `notebooks` (copy it into the folder instead)\n\
                 \x20 - runtimes.py.notebooks: notebook file name `two\\nlines.ipynb` has a control character (rename it: trial names are single lines)\n\
                 \x20 - runtimes.py.notebooks: notebook `zero.ipynb` links to /dev/zero, outside the notebooks folder `notebooks` (copy it into the folder instead)\n",
                outside.display()
            )
        )
    );
}

#[test]
fn records_that_never_end_or_never_open_fail_the_report_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let records = dir.path().join("run/records");
    std::fs::create_dir_all(&records).unwrap();
    let fifo = records.join("a.json");
    mkfifo(&fifo);
    let mut report = runtime_matrix();
    report.arg("report").arg(dir.path().join("run"));
    let (code, _, stderr, took) = bounded(&mut report);
    assert_eq!(
        (code, stderr),
        (
            Some(2),
            format!(
                "error: cannot read {}\n  caused by: a named pipe (FIFO), not a regular file (give a regular file)\n",
                fifo.display()
            )
        )
    );
    assert!(took < Duration::from_secs(10), "{took:?}");

    std::fs::remove_file(&fifo).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("run/excluded.json")).unwrap();
    let (code, _, stderr, _) = bounded(&mut report);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("excluded.json\n  caused by: a character device, not a regular file"),
        "{stderr}"
    );
}
