//! Security defaults, verified from inside real containers: not privileged, Docker's default
//! capabilities only, no new privileges, no network unless configured; notebooks cannot change
//! the project's files; and reaping never touches a container whose owner is alive.

mod support;

use support::{container_exists, fixtures, harness, output, records, runtime_matrix};

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
