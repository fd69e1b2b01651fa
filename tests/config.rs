//! Loading matrix.toml: every invalid-config fixture fails with its exact message and the
//! setup exit code; unknown keys warn (inside inline tables too, and before the error of an
//! invalid config); valid configs apply overrides.

mod support;

use std::path::Path;
use support::{fixtures, output, runtime_matrix};

#[test]
fn every_invalid_config_fails_with_its_exact_message() {
    let dir = fixtures().join("matrices");
    let mut cases: Vec<_> = std::fs::read_dir(dir.join("invalid"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 15, "the corpus lost cases: {}", cases.len());
    for case in cases {
        let relative = Path::new("invalid").join(case.file_name().unwrap());
        let expected = std::fs::read_to_string(case.with_extension("stderr"))
            .unwrap_or_else(|_| panic!("{} has no .stderr beside it", case.display()));
        let (code, stdout, stderr) = output(
            runtime_matrix()
                .current_dir(&dir)
                .arg("plan")
                .arg("--config")
                .arg(&relative),
        );
        assert_eq!(code, Some(2), "{}: exit code", relative.display());
        assert_eq!(stdout, "", "{}: nothing is planned", relative.display());
        assert_eq!(stderr, expected, "{}: message", relative.display());
    }
}

#[test]
fn a_missing_config_names_the_file_and_the_variable() {
    let (code, _, stderr) = output(
        runtime_matrix()
            .arg("plan")
            .arg("--config")
            .arg("/nonexistent/matrix.toml"),
    );
    assert_eq!(code, Some(2));
    assert_eq!(
        stderr,
        "error: failed to read matrix config at /nonexistent/matrix.toml (set RUNTIME_MATRIX_CONFIG to use another file)\n  caused by: No such file or directory (os error 2)\n"
    );
}

#[test]
fn unknown_keys_warn_and_overrides_apply() {
    let config = fixtures().join("matrices/valid_with_warnings.toml");
    let (code, stdout, stderr) = output(
        runtime_matrix()
            .arg("plan")
            .arg("--config")
            .arg(&config)
            .args(["--stage", "nightly"]),
    );
    assert_eq!(code, Some(0), "{stderr}");
    for warning in [
        "unknown key `machines.cpu.gpu_count` is ignored",
        "unknown key `notebook-dir` is ignored (did you mean `notebooks-dir`?)",
        "unknown key `runtimes.py.timout` is ignored (did you mean `timeout`?)",
        // Suggestions come from the keys of the table the unknown key sits in.
        "unknown key `machines.cpu.dockr` is ignored (did you mean `docker`?)",
        // No `?` step for an optional table (it was `stages.?.defualt`).
        "unknown key `stages.defualt` is ignored (did you mean `default`?)",
        "override `not-there/*.ipynb` matches no notebook of any runtime",
    ] {
        assert!(
            stderr.contains(warning),
            "missing warning `{warning}` in:\n{stderr}"
        );
    }
    assert!(
        stdout.contains("[host] py::cpu::nb::failing_cell  (deadline 30s, cell timeout 10s; tags: broken,cpu,host,notebook)"),
        "{stdout}"
    );
    // The override moved failing_cell to the nightly stage only.
    let (_, stdout, _) = output(runtime_matrix().arg("plan").arg("--config").arg(&config));
    assert!(
        stdout.contains("py::cpu::nb::failing_cell  (not in stage `pre-merge` (runs in: nightly))"),
        "{stdout}"
    );
}

#[test]
fn unknown_keys_inside_inline_tables_warn() {
    let dir = fixtures().join("matrices");
    let (code, _, stderr) = output(runtime_matrix().current_dir(&dir).args([
        "plan",
        "--config",
        "inline_table_typos.toml",
    ]));
    assert_eq!(
        (code, stderr.as_str()),
        (
            Some(0),
            "warning: inline_table_typos.toml: unknown key `runtimes.built.build.dockerfil` is ignored (did you mean `dockerfile`?)\n\
             warning: inline_table_typos.toml: unknown key `runtimes.shell.commands.x.timout` is ignored (did you mean `timeout`?)\n"
        )
    );
}

#[test]
fn reuse_container_from_before_runners_loads_and_says_it_has_no_effect() {
    let dir = fixtures().join("matrices");
    let (code, _, stderr) = output(runtime_matrix().current_dir(&dir).args([
        "plan",
        "--config",
        "reuse_container.toml",
    ]));
    assert_eq!(
        (code, stderr.as_str()),
        (
            Some(0),
            "warning: reuse_container.toml: runtimes.shared.reuse-container has no effect any more: a runtime's \
             trials on a machine share one runner container by default (remove it; `isolation = \"container\"` \
             gives each trial its own)\n"
        )
    );
}

/// Every command that loads the matrix prints an invalid matrix's unknown keys before its
/// error: a misspelt key is often the cause of the error.
#[rstest::rstest]
#[case::plan(&["plan"], &[])]
#[case::run(&["run"], &["--", "--list"])]
#[case::doctor(&["doctor"], &[])]
fn warnings_come_before_the_error_of_an_invalid_matrix(
    #[case] command: &[&str],
    #[case] after: &[&str],
) {
    let dir = fixtures().join("matrices");
    let (code, stdout, stderr) = output(
        runtime_matrix()
            .current_dir(&dir)
            .args(command)
            .args(["--config", "invalid/typo_in_command_table.toml"])
            .args(after),
    );
    assert_eq!(code, Some(2), "{stderr}");
    let warning = "warning: invalid/typo_in_command_table.toml: unknown key `runtimes.shell.commands.x.timout` is ignored (did you mean `timeout`?)\n";
    let problem = "runtimes.shell.machines: unknown machine `gpu` (did you mean `cpu`?)";
    assert!(stderr.starts_with(warning), "{stderr}");
    if command == ["doctor"] {
        // The doctor reports the error in its report.
        assert!(stdout.contains(problem), "{stdout}");
    } else {
        assert_eq!(
            &stderr[warning.len()..],
            format!(
                "error: invalid matrix config at invalid/typo_in_command_table.toml:\n  - {problem}\n"
            )
        );
    }
}

#[rstest::rstest]
#[case(&["--stage", "nigthly"], "error: unknown stage `nigthly` (did you mean `nightly`?) (declared: pre-merge, nightly)\n")]
#[case(&["--shard", "5/4"], "error: invalid shard `5/4` (expected K/N with 1 <= K <= N, e.g. 2/4)\n")]
#[case(&["--machines", "cpu,a10"], "error: unknown machine `a10` in RUNTIME_MATRIX_MACHINES (did you mean `a100`?) (declared: a100, cpu, cpu-large)\n")]
fn bad_selections_are_setup_errors(#[case] args: &[&str], #[case] expected: &str) {
    let config = fixtures().join("matrices/commands.toml");
    let (code, stdout, stderr) = output(
        runtime_matrix()
            .arg("plan")
            .arg("--config")
            .arg(&config)
            .args(args),
    );
    assert_eq!(
        (code, stdout.as_str(), stderr.as_str()),
        (Some(2), "", expected)
    );
}

#[test]
fn the_example_matrix_is_valid() {
    let matrix =
        runtime_matrix::Matrix::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("matrix.toml"))
            .unwrap();
    assert_eq!(matrix.warnings, Vec::<String>::new());
    let names: Vec<&str> = matrix.runtimes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "jupyter-base",
            "jupyter-no-kernel",
            "jupyter-numpy",
            "python-minimal",
            "python-numpy"
        ]
    );
}

/// Plain TCP to another host's engine is refused (see `invalid/plain_tcp_engine.toml`) unless
/// the machine accepts it with `insecure = true`, which then warns on every run.
#[test]
fn an_engine_accepted_as_insecure_warns_every_time() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("matrix.toml");
    std::fs::write(
        &config,
        "[machines.far]\ngpus = 0\ndocker = \"tcp://10.0.0.7:2375\"\ninsecure = true\n\
         [runtimes.sh]\ncommands.ok = \"true\"\n",
    )
    .unwrap();
    for _ in 0..2 {
        let (code, _, stderr) = output(runtime_matrix().arg("plan").arg("--config").arg(&config));
        assert_eq!(code, Some(0), "{stderr}");
        assert!(
            stderr.contains(
                "machines.far.docker: `tcp://10.0.0.7:2375` is plain TCP (insecure = true): \
                 anyone who can reach that port is root on 10.0.0.7"
            ),
            "{stderr}"
        );
    }
}

/// `DOCKER_TLS_VERIFY` turns TLS on for `tcp://` engines, as in the docker CLI; an `http://`
/// endpoint is still plain HTTP, so it is still refused.
#[test]
fn docker_tls_verify_does_not_excuse_a_plain_http_engine() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("matrix.toml");
    let plan = |endpoint: &str| {
        std::fs::write(
            &config,
            format!(
                "[machines.far]\ngpus = 0\ndocker = \"{endpoint}\"\n[runtimes.sh]\ncommands.ok = \"true\"\n"
            ),
        )
        .unwrap();
        output(
            runtime_matrix()
                .env("DOCKER_TLS_VERIFY", "1")
                .arg("plan")
                .arg("--config")
                .arg(&config),
        )
    };
    let (code, _, stderr) = plan("http://10.0.0.7:2375");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("`http://10.0.0.7:2375` is plain, unauthenticated TCP"),
        "{stderr}"
    );
    let (code, _, stderr) = plan("tcp://10.0.0.7:2376");
    assert_eq!(code, Some(0), "{stderr}");
}
