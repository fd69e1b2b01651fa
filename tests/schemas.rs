//! The JSON Schemas under `schemas/`: each is what the types generate now (and what
//! `runtime-matrix schema NAME` prints), each is a valid draft-07 schema, and real documents
//! validate against them with the `jsonschema` validator: the example matrix.toml and every
//! fixture matrix the loader takes without a warning, the records and report.json of a real
//! run, the report fixtures, and real plans. Invalid matrices (a misspelt key, a wrong type, a
//! rule without a reason) do not, with the validator here and with Taplo (the TOML toolkit
//! editors run, from PyPI once). After an intended change to a schema's types,
//! `UPDATE_SCHEMAS=1 cargo test --test schemas` rewrites `schemas/`; review the diff.

mod support;

use runtime_matrix::schema::Document;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::{fixtures, output, runtime_matrix};

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn shipped_path(document: Document) -> PathBuf {
    repository().join("schemas").join(document.file_name())
}

/// The shipped schema of `document`, compiled.
fn validator(document: Document) -> jsonschema::Validator {
    let path = shipped_path(document);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (UPDATE_SCHEMAS=1 cargo test --test schemas writes it)",
            path.display()
        )
    });
    let schema: Value = serde_json::from_str(&text).unwrap();
    jsonschema::validator_for(&schema)
        .unwrap_or_else(|e| panic!("{} is not a valid JSON Schema: {e}", path.display()))
}

/// Every error `validator` finds in `instance`, as `path: message` lines.
fn errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|error| format!("{}: {error}", error.instance_path()))
        .collect()
}

fn assert_valid(document: Document, instance: &Value, what: &str) {
    let errors = errors(&validator(document), instance);
    assert!(
        errors.is_empty(),
        "{what} does not validate against {}:\n{}",
        document.file_name(),
        errors.join("\n")
    );
}

/// A TOML file as the JSON a schema validator sees.
fn toml_as_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    let value: toml::Value =
        toml::from_str(&text).unwrap_or_else(|e| panic!("{} is not TOML: {e}", path.display()));
    serde_json::to_value(value).unwrap()
}

fn matrix_errors(text: &str) -> Vec<String> {
    let value: toml::Value = toml::from_str(text).unwrap();
    errors(
        &validator(Document::Matrix),
        &serde_json::to_value(value).unwrap(),
    )
}

#[test]
fn shipped_schemas_are_what_the_types_generate_and_what_the_command_prints() {
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
    let mut stale = Vec::new();
    for document in Document::ALL {
        let generated = document.schema_text();
        let path = shipped_path(document);
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &generated).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(generated.as_str()) {
            stale.push(path.display().to_string());
        }
        let name = document.file_name().replace(".schema.json", "");
        let (code, stdout, stderr) = output(runtime_matrix().args(["schema", &name]));
        assert_eq!(code, Some(0), "runtime-matrix schema {name}: {stderr}");
        assert_eq!(stdout, generated, "runtime-matrix schema {name}");
    }
    assert!(
        stale.is_empty(),
        "these schemas differ from what the types generate (after an intended change, \
         UPDATE_SCHEMAS=1 cargo test --test schemas rewrites them; review the diff):\n{}",
        stale.join("\n")
    );
}

#[test]
fn the_example_matrix_and_every_fixture_matrix_the_loader_takes_whole_validate() {
    assert_valid(
        Document::Matrix,
        &toml_as_json(&repository().join("matrix.toml")),
        "matrix.toml",
    );
    let mut checked = 0;
    for entry in std::fs::read_dir(fixtures().join("matrices")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        // Only those the loader takes without a warning: an unknown key, which it warns
        // about, is one the schema must refuse.
        let Ok(matrix) = runtime_matrix::Matrix::load(&path) else {
            continue;
        };
        if !matrix.warnings.is_empty() {
            continue;
        }
        assert_valid(
            Document::Matrix,
            &toml_as_json(&path),
            &path.display().to_string(),
        );
        checked += 1;
    }
    assert!(
        checked >= 10,
        "only {checked} fixture matrices were checked"
    );
}

#[test]
fn misspelt_keys_wrong_types_and_rules_without_a_reason_do_not_validate() {
    let valid = "[machines.cpu]\ngpus = 0\n[runtimes.py]\npython = \"python3\"\n";
    assert_eq!(matrix_errors(valid), Vec::<String>::new());
    let cases = [
        // A misspelt top-level key: the loader only warns, so notebooks-dir silently defaults.
        ("notebook-dir = \"nb\"\n", "", "notebook-dir"),
        // A misspelt key in a runtime.
        ("", "timout = \"5m\"\n", "/runtimes/py"),
        // Wrong types.
        ("", "machines = \"cpu\"\n", "/runtimes/py/machines"),
        ("[machines.gpu]\ngpus = \"two\"\n", "", "/machines/gpu/gpus"),
        // A value outside the accepted ones.
        ("", "pull = \"sometimes\"\n", "/runtimes/py/pull"),
        // A command table without `run`.
        (
            "",
            "commands.ok = { timeout = \"1m\" }\n",
            "/runtimes/py/commands/ok",
        ),
        // A rule without its reason.
        ("[[exclude]]\nruntime = \"py\"\n", "", "/exclude/0"),
    ];
    for (top, runtime_line, where_) in cases {
        // Top-level keys before any table; runtime keys inside `[runtimes.py]`.
        let text = format!("{top}\n{valid}{runtime_line}");
        let errors = matrix_errors(&text);
        assert!(
            errors.iter().any(|e| e.contains(where_)),
            "expected an error at {where_} for:\n{text}\ngot: {errors:?}"
        );
    }
}

/// Runs two command trials of `fixtures/matrices/commands.toml` (one passes, one fails) and
/// merges them with `runtime-matrix report`; returns the run folder.
fn real_run(out: &Path) -> PathBuf {
    let run_id = format!("schemas-{}", std::process::id());
    let config = fixtures().join("matrices/commands.toml");
    let (code, stdout, stderr) = output(&mut support::harness(
        &config,
        out,
        &run_id,
        &["alpha::cpu::cmd::", "--skip", "slow"],
    ));
    assert_eq!(code, Some(101), "cmd::fails fails:\n{stdout}\n{stderr}");
    let run = out.join(&run_id);
    let (code, _, stderr) = output(runtime_matrix().arg("report").arg(&run));
    assert_eq!(code, Some(101), "the report of a failed run: {stderr}");
    run
}

#[test]
fn records_and_reports_of_a_real_run_and_the_report_fixtures_validate() {
    let out = tempfile::tempdir().unwrap();
    let run = real_run(out.path());
    let records = support::records(out.path(), run.file_name().unwrap().to_str().unwrap());
    let statuses: Vec<&str> = records
        .values()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["failed", "passed"], "{records:#?}");
    for (trial, record) in &records {
        assert_valid(Document::Record, record, &format!("the record of {trial}"));
    }
    let report: Value =
        serde_json::from_slice(&std::fs::read(run.join("report.json")).unwrap()).unwrap();
    assert_valid(Document::Report, &report, "report.json of a real run");

    // The fixtures hold what one real run does not: notebooks' cells, GPU causes, images,
    // expected failures, interruptions.
    let fixture_records: Vec<Value> =
        serde_json::from_slice(&std::fs::read(fixtures().join("reports/records.json")).unwrap())
            .unwrap();
    for record in &fixture_records {
        assert_valid(
            Document::Record,
            record,
            &format!("fixtures/reports/records.json: {}", record["trial"]),
        );
    }
    for report in ["reports/report.json", "reports/interrupted/report.json"] {
        let path = fixtures().join(report);
        let report: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_valid(Document::Report, &report, &path.display().to_string());
    }

    // And a record that breaks the format does not validate.
    let mut broken = records.values().next().unwrap().clone();
    broken["status"] = "fine".into();
    broken.as_object_mut().unwrap().remove("seconds");
    let found = errors(&validator(Document::Record), &broken);
    assert!(
        found.iter().any(|e| e.starts_with("/status"))
            && found.iter().any(|e| e.contains("seconds")),
        "{found:?}"
    );
}

#[rstest::rstest]
// Docker runtimes: each trial with its container.
#[case::containers("docker.toml", &[], "named_machines")]
// A CPU-only matrix: no GPU is looked for.
#[case::cpu_only("runner.toml", &[], "cpu_only_matrix")]
// GPU machines on a host without a driver.
#[case::no_driver("gpu.toml", &[], "no_driver")]
// GPU machines on a host with two H100s (the fake NVML).
#[case::nvidia("gpu.toml", &["nvidia"], "nvidia")]
fn plans_validate(#[case] matrix: &str, #[case] options: &[&str], #[case] host: &str) {
    let mut command = runtime_matrix();
    command
        .args(["plan", "--format", "json", "--config"])
        .arg(fixtures().join("matrices").join(matrix));
    if host == "named_machines" {
        command.env("RUNTIME_MATRIX_MACHINES", "all");
    }
    if options.contains(&"nvidia") {
        command
            .env("RUNTIME_MATRIX_NVML", support::fake_nvml())
            .env("FAKE_NVML_DEVICES", support::TWO_H100);
    }
    let (code, stdout, stderr) = output(&mut command);
    assert_eq!(code, Some(0), "{stderr}");
    let plan: Value = serde_json::from_str(&stdout).unwrap();
    assert!(plan["host"].get(host).is_some(), "{:#}", plan["host"]);
    assert!(
        !plan["plan"]["trials"].as_array().unwrap().is_empty(),
        "{stdout}"
    );
    if matrix == "docker.toml" {
        assert!(plan["plan"]["trials"][0]["container"]["image"].is_string());
    }
    assert_valid(Document::Plan, &plan, &format!("the plan of {matrix}"));
}

/// What an editor does with the schema: Taplo, which Even Better TOML and other editors' TOML
/// support run, reads the `#:schema` directive the README recommends, takes the example
/// matrix and flags a misspelt key and a wrong type at their lines.
#[test]
fn taplo_checks_a_matrix_against_the_schema_its_directive_names() {
    let taplo = support::taplo();
    let project = tempfile::tempdir().unwrap();
    std::fs::copy(
        shipped_path(Document::Matrix),
        project.path().join("matrix.schema.json"),
    )
    .unwrap();
    let example = std::fs::read_to_string(repository().join("matrix.toml")).unwrap();
    let check = |text: &str| {
        std::fs::write(
            project.path().join("matrix.toml"),
            format!("#:schema ./matrix.schema.json\n{text}"),
        )
        .unwrap();
        output(
            Command::new(&taplo)
                .args(["check", "--no-auto-config", "matrix.toml"])
                .current_dir(project.path())
                .env("RUST_LOG", "error"),
        )
    };
    let (code, stdout, stderr) = check(&example);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let typo = example.replace("notebooks-dir =", "notebook-dir =");
    let wrong_type = typo.replace("gpus = 1\n", "gpus = \"one\"\n");
    let (code, stdout, stderr) = check(&wrong_type);
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    let said = format!("{stdout}{stderr}");
    assert!(said.contains("'notebook-dir' was unexpected"), "{said}");
    assert!(
        said.contains("\"one\" is not of type \"integer\""),
        "{said}"
    );
}
