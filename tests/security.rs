//! Security defaults, verified from inside real containers: not privileged, Docker's default
//! capabilities only, no new privileges, no network unless configured; notebooks cannot change
//! the project's files; reaping never touches a container whose owner is alive; output cannot
//! drive the user's terminal or reach a report raw; and secrets are never masked inside the
//! harness's own words nor stored where `docker inspect` shows them.

mod support;

use std::path::Path;
use support::{
    container_exists, containers_of_run, fixtures, harness, output, records, runtime_matrix,
};

#[test]
fn containers_run_with_careful_defaults_and_cannot_change_the_project() {
    let folder = fixtures().join("security-notebooks");
    let before: Vec<Vec<u8>> = ["self_modifying.ipynb", "data.txt"]
        .iter()
        .map(|f| std::fs::read(folder.join(f)).unwrap())
        .collect();
    let out = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = output(&mut harness(
        &fixtures().join("matrices/security.toml"),
        out.path(),
        "security",
        &["--include-ignored"],
    ));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let records = records(out.path(), "security");
    for trial in [
        "container::cpu::cmd::no-new-privileges",
        "container::cpu::cmd::default-capabilities-only",
        "container::cpu::cmd::cannot-mount",
        "container::cpu::cmd::no-network",
        "bridged::cpu::cmd::has-network",
        "container::cpu::nb::self_modifying",
        "host::cpu::nb::self_modifying",
    ] {
        assert_eq!(records[trial]["status"], "passed", "{trial}");
    }
    // The notebooks wrote to their copies; the project's files are as they were.
    let after: Vec<Vec<u8>> = ["self_modifying.ipynb", "data.txt"]
        .iter()
        .map(|f| std::fs::read(folder.join(f)).unwrap())
        .collect();
    assert_eq!(before, after);
    let executed = std::fs::read_to_string(
        out.path().join("security").join(
            records["container::cpu::nb::self_modifying"]["artifact"]
                .as_str()
                .unwrap(),
        ),
    )
    .unwrap();
    assert!(
        executed.contains("changed by the notebook"),
        "the notebook did write, in its copy"
    );
}

#[test]
fn plan_shows_the_defaults_it_will_apply() {
    let (_, stdout, _) = output(
        runtime_matrix()
            .args(["plan", "--format", "json", "--config"])
            .arg(fixtures().join("matrices/security.toml")),
    );
    let plan: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let trials = plan["plan"]["trials"].as_array().unwrap();
    let containers: Vec<_> = trials
        .iter()
        .filter(|t| t["runtime"]["executor"]["kind"] == "docker")
        .collect();
    assert_eq!(containers.len(), 6, "every container trial is checked");
    for trial in containers {
        let container = &trial["container"];
        assert_eq!(container["privileged"], false);
        assert_eq!(container["capabilities_added"], serde_json::json!([]));
        assert_eq!(
            container["security_options"],
            serde_json::json!(["no-new-privileges"])
        );
        let expected = if trial["runtime"]["name"] == "bridged" {
            "bridge"
        } else {
            "none"
        };
        assert_eq!(container["network"], expected);
    }
}

#[test]
fn reaping_leaves_containers_whose_owner_is_alive() {
    // A container labelled as owned by this test process, which is alive.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let start = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(19)
        .unwrap()
        .to_owned();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned();
    let out = tempfile::tempdir().unwrap();
    support::ensure_base_image();
    let created = std::process::Command::new("docker")
        .args([
            "create",
            "--label",
            &format!("runtime-matrix.pid={}", std::process::id()),
        ])
        .args([
            "--label",
            &format!("runtime-matrix.pid-start={start}"),
            "--label",
            &format!("runtime-matrix.host={host}"),
        ])
        .args([
            "--label",
            "runtime-matrix.run-id=live-owner",
            "runtime-matrix/jupyter-base:bookworm",
            "sleep",
            "60",
        ])
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let id = String::from_utf8_lossy(&created.stdout).trim().to_owned();

    // A run connects to the engine, which reaps what dead runs left, and `clean` too.
    let (code, _, _) = output(&mut harness(
        &fixtures().join("matrices/security.toml"),
        out.path(),
        "reaper",
        &[
            "--include-ignored",
            "--exact",
            "[docker] container::cpu::cmd::no-network",
        ],
    ));
    assert_eq!(code, Some(0));
    output(
        runtime_matrix()
            .arg("clean")
            .current_dir(env!("CARGO_MANIFEST_DIR")),
    );
    let survived = container_exists(&id);
    let _ = std::process::Command::new("docker")
        .args(["rm", "-f", &id])
        .output();
    assert!(survived, "a container of a live owner was removed");
}

/// Runs `command` on a pseudo-terminal (util-linux `script`), with its environment, and
/// returns its exit code and every byte it wrote there.
fn on_a_terminal(command: &std::process::Command) -> (Option<i32>, Vec<u8>) {
    let quote =
        |word: &std::ffi::OsStr| format!("'{}'", word.to_string_lossy().replace('\'', "'\\''"));
    let line: Vec<String> = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(quote)
        .collect();
    let mut script = std::process::Command::new("script");
    script.args(["-qefc", &line.join(" "), "/dev/null"]);
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => script.env(key, value),
            None => script.env_remove(key),
        };
    }
    let done = script
        .stdin(std::process::Stdio::null())
        .output()
        .expect("util-linux `script` runs");
    (done.status.code(), done.stdout)
}

/// The control sequences hostile output tries, as they would reach a terminal or a file.
const HOSTILE: [(&str, &str); 7] = [
    ("an OSC sequence (window title, clipboard)", "\u{1b}]"),
    ("a cleared screen", "\u{1b}[2J"),
    ("a terminal reset", "\u{1b}c"),
    ("a bell, which ends an OSC sequence", "\u{7}"),
    ("a C1 CSI", "\u{9b}"),
    ("the window title's text", "pwned-command"),
    ("the title set in the notebook's source", "pwned-source"),
];

#[test]
fn hostile_output_reaches_no_terminal_report_or_record() {
    let out = tempfile::tempdir().unwrap();
    let command = harness(
        &fixtures().join("matrices/hostile.toml"),
        out.path(),
        "hostile",
        &["--test-threads", "1"],
    );
    let (code, printed) = on_a_terminal(&command);
    let printed = String::from_utf8_lossy(&printed).into_owned();
    assert_eq!(code, Some(101), "{printed}");
    // Both trials failed with their texts shown, on the terminal that ran them.
    for shown in [
        "runtime `host` on machine `cpu`: notebook `hostile_output.ipynb` failed: a cell raised an exception",
        "runtime `host` on machine `cpu`: command `hostile` failed: exited with a non-zero code",
        "RuntimeError: hostile ",
        "out ",
    ] {
        assert!(printed.contains(shown), "`{shown}` is missing:\n{printed}");
    }
    for (what, sequence) in HOSTILE {
        assert!(
            !printed.contains(sequence),
            "{what} reached the terminal:\n{printed:?}"
        );
    }
    // Colours are the one thing a terminal may show: the exception's and the output's.
    assert!(
        printed.contains("RuntimeError: hostile \u{1b}[38;5;199mcoloured\u{1b}[0m end"),
        "{printed:?}"
    );
    assert!(
        printed.contains("out \u{1b}[38;5;199mcoloured\u{1b}[0m end"),
        "{printed:?}"
    );

    // Reports and records hold the words, and no control sequence at all, colours included.
    let run = out.path().join("hostile");
    let mut files: Vec<_> = ["report.md", "report.json", "junit.xml"]
        .iter()
        .map(|name| run.join(name))
        .collect();
    files.extend(
        std::fs::read_dir(run.join("records"))
            .unwrap()
            .map(|entry| entry.unwrap().path()),
    );
    assert_eq!(files.len(), 5, "{files:?}");
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(text.contains("coloured end"), "{}: {text}", file.display());
        let control = text
            .chars()
            .find(|c| c.is_control() && !matches!(c, '\n' | '\t'));
        assert_eq!(
            control,
            None,
            "{} holds a control character",
            file.display()
        );
        for (what, sequence) in HOSTILE {
            assert!(!text.contains(sequence), "{} holds {what}", file.display());
        }
    }
    let records = records(out.path(), "hostile");
    let failure = &records["host::cpu::nb::hostile_output"]["failure"];
    // The C1 CSI took its parameters (`2J`) with it, as a terminal would have.
    assert_eq!(failure["summary"], "RuntimeError: hostile coloured end");
    assert_eq!(failure["cell"]["evalue"], "hostile coloured end");
}

/// The harness on the Docker fixture matrix as run `run_id`, with `token` as the secret of its
/// `base` runtime.
fn with_secret(out: &Path, run_id: &str, token: &str, args: &[&str]) -> std::process::Command {
    let mut command = harness(&fixtures().join("matrices/docker.toml"), out, run_id, args);
    command.env("RUNTIME_MATRIX_TEST_TOKEN", token);
    command
}

#[test]
fn a_secret_too_short_to_mask_is_refused_and_never_masks_the_harness_words() {
    let out = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = output(&mut with_secret(
        out.path(),
        "short-secret",
        "e",
        &[
            "--include-ignored",
            "--exact",
            "[docker] base::cpu::cmd::leaks-secret",
        ],
    ));
    assert_eq!(code, Some(101), "{stdout}\n{stderr}");
    let refusal = "secret `RUNTIME_MATRIX_TEST_TOKEN` of runtime `base` is shorter than 6 bytes: \
                   masking so short a value in the output would reveal it";
    assert!(
        stdout.contains(
            "runtime `base` on machine `cpu`: command `leaks-secret` failed: could not be started"
        ) && stdout.contains(refusal),
        "{stdout}"
    );
    let records = records(out.path(), "short-secret");
    let summary = records["base::cpu::cmd::leaks-secret"]["failure"]["summary"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(summary.starts_with(refusal), "{summary}");
    // Nothing was masked: the words are whole, everywhere.
    for (name, text) in [
        ("stdout", &stdout),
        ("stderr", &stderr),
        ("record", &summary),
    ] {
        assert!(!text.contains("***"), "{name} masks a word: {text}");
    }
    for name in ["report.md", "report.json", "junit.xml"] {
        let text = std::fs::read_to_string(out.path().join("short-secret").join(name)).unwrap();
        assert!(
            text.contains(refusal) && !text.contains("***"),
            "{name}: {text}"
        );
    }
    assert_eq!(containers_of_run("short-secret"), Vec::<String>::new());
}

#[test]
fn a_kept_container_does_not_show_its_secrets_to_docker_inspect() {
    const SECRET: &str = "kept-s3cr3t-for-the-inspect-test";
    let out = tempfile::tempdir().unwrap();
    let mut command = with_secret(
        out.path(),
        "keep-secret",
        SECRET,
        &[
            "--include-ignored",
            "--exact",
            "[docker] base::cpu::cmd::leaks-secret",
        ],
    );
    let (code, stdout, stderr) = output(command.env("RUNTIME_MATRIX_KEEP", "failed"));
    let kept = containers_of_run("keep-secret");
    let inspected = kept.first().map(|id| {
        std::process::Command::new("docker")
            .args(["inspect", id])
            .output()
            .unwrap()
    });
    for id in &kept {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", id])
            .output();
    }
    assert_eq!(code, Some(101), "{stdout}\n{stderr}");
    // The check had the secret (and the output masks it)...
    assert!(stdout.contains("the token is ***"), "{stdout}");
    // ...but the kept container's configuration does not hold it.
    assert_eq!(kept.len(), 1, "{stderr}");
    let inspected = inspected.unwrap();
    assert!(inspected.status.success());
    let inspected = String::from_utf8_lossy(&inspected.stdout);
    assert!(
        inspected.contains("RUNTIME_MATRIX_TEST_TOKEN=<secret>") && !inspected.contains(SECRET),
        "{inspected}"
    );
    // The hint says how to pass the secret again.
    let short = &kept[0][..12];
    assert!(
        stderr.contains(&format!(
            "-e RUNTIME_MATRIX_TEST_TOKEN {short} timeout -s KILL"
        )) && stderr.contains(
            "its secrets (RUNTIME_MATRIX_TEST_TOKEN) are not stored in the container, so `docker inspect` does not show them"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains(SECRET) && !stdout.contains(SECRET));
}
