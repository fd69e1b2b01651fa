//! `runtime-matrix doctor` on real engines and images: a ready host passes, and each missing
//! piece is a ✗ with its fix and a non-zero exit, leaving no container behind.

mod support;

use support::{fixtures, output, runtime_matrix};

fn doctor(config: &std::path::Path) -> std::process::Command {
    let mut command = runtime_matrix();
    command.arg("doctor").arg("--config").arg(config);
    command
}

#[test]
fn a_host_only_matrix_on_this_host_is_ready() {
    let (code, stdout, _) = output(&mut doctor(&fixtures().join("matrices/commands.toml")));
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("✓ config"), "{stdout}");
    assert!(stdout.contains("✓ python alpha"), "{stdout}");
    assert!(
        stdout.contains("! nvml"),
        "no driver here, and the matrix has a GPU machine: {stdout}"
    );
    assert!(stdout.contains("✓ disk (output)"), "{stdout}");
}

#[test]
fn images_engines_and_tools_are_each_checked_with_a_fix() {
    // Build the base image if this is the first test to need it.
    let out = tempfile::tempdir().unwrap();
    let mut warm = support::harness(
        &fixtures().join("matrices/docker.toml"),
        out.path(),
        "doctor-warm",
        &[
            "--include-ignored",
            "--exact",
            "[docker] no-python::cpu::nb::passing",
        ],
    );
    output(warm.env("RUNTIME_MATRIX_TEST_TOKEN", "unused-here"));

    let (code, stdout, _) = output(&mut doctor(&fixtures().join("matrices/docker.toml")));
    assert_eq!(code, Some(2), "{stdout}");
    for expected in [
        "✓ docker ",
        "✓ image base ",
        "nbclient 0.7.2, ipykernel",
        "✗ image no-python ",
        "has no `python3`",
        "fix: install Python, nbconvert (which brings nbclient) and ipykernel in the image",
        "✗ image unpulled ",
        "failed to pull image `runtime-matrix/test-not-in-any-registry:1` (the registry cannot be reached from the engine)",
        "✗ unix:///nonexistent/docker.sock ",
        "cannot reach the Docker engine at unix:///nonexistent/docker.sock",
    ] {
        assert!(
            stdout.contains(expected),
            "missing `{expected}` in:\n{stdout}"
        );
    }
    // The short containers that looked inside the images are gone.
    let left = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", "label=runtime-matrix.trial=doctor"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&left.stdout).trim(), "");
}

#[test]
fn a_broken_config_is_the_first_and_only_failure() {
    let (code, stdout, _) = output(&mut doctor(
        &fixtures().join("matrices/invalid/unknown_machine.toml"),
    ));
    assert_eq!(code, Some(2));
    assert!(stdout.starts_with("✗ config"), "{stdout}");
    assert!(
        stdout.contains("unknown machine `h10` (did you mean `h100`?)"),
        "{stdout}"
    );
    assert!(stdout.contains("1 checks: 1 failed"), "{stdout}");
}
