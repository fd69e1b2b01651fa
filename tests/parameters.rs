//! Notebook parameters (issue 11, item 5), through the real binary: the matrix
//! `fixtures/matrices/parameters.toml` gives the notebooks of `fixtures/param-notebooks/`
//! parameters per runtime, per machine and per override, which `plan` shows and the runner
//! injects as papermill does, on the host and in a container: a cell tagged
//! `injected-parameters` right after the `parameters` cell (at the top when there is none,
//! in place of a cell papermill injected before), with papermill's text. What the notebooks
//! print and assert changes with them; a notebook with neither parameters nor a `parameters`
//! cell runs as it is, and an R notebook given parameters fails saying why.

mod support;

use serde_json::{Value, json};
use std::path::Path;
use support::{ensure_base_image, fixtures, harness, output, records, runtime_matrix};

fn matrix() -> std::path::PathBuf {
    fixtures().join("matrices/parameters.toml")
}

/// Runs the trials matching `filter` as run `run_id`; all of them pass (or fail as expected).
fn run(out: &Path, run_id: &str, filter: &str) -> std::collections::BTreeMap<String, Value> {
    let (code, stdout, stderr) = output(&mut harness(
        &matrix(),
        out,
        run_id,
        &["--include-ignored", filter],
    ));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    records(out, run_id)
}

/// The executed notebook a trial left.
fn executed(out: &Path, run_id: &str, record: &Value) -> Value {
    let artifact = out
        .join(run_id)
        .join(record["artifact"].as_str().expect("an artifact"));
    serde_json::from_slice(&std::fs::read(artifact).unwrap()).unwrap()
}

fn text(value: &Value) -> String {
    match value {
        Value::Array(lines) => lines.iter().filter_map(Value::as_str).collect(),
        other => other.as_str().unwrap_or_default().to_owned(),
    }
}

/// Each cell's tags and source.
fn cells(notebook: &Value) -> Vec<(Value, String)> {
    notebook["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|cell| (cell["metadata"]["tags"].clone(), text(&cell["source"])))
        .collect()
}

/// What cell `index` printed.
fn printed(notebook: &Value, index: usize) -> String {
    text(&notebook["cells"][index]["outputs"][0]["text"])
}

/// papermill's injected cell for `runtime` on `machine` (no GPUs), then `declared`.
fn injected(runtime: &str, machine: &str, declared: &str) -> String {
    format!(
        "# Parameters\nruntime_matrix_runtime = \"{runtime}\"\nruntime_matrix_machine = \"{machine}\"\n\
         runtime_matrix_gpus = 0\n{declared}"
    )
}

/// The trials of `runtime` (`host` or `docker`: the same declarations but `epochs`, `device`
/// and the runtime's `label`) each got their runtime's, machine's and overrides' parameters.
fn check_runtime(out: &Path, run_id: &str, runtime: &str) {
    let records = run(out, run_id, &format!("{runtime}::"));
    assert_eq!(records.len(), 10, "{records:#?}");
    let (epochs, own_device, own_label) = match runtime {
        "host" => (1, "host-cpu", "label = \"from the runtime\"\n"),
        _ => (2, "docker-cpu", ""),
    };
    let tag = |tag: &str| json!([tag]);
    for (machine, batch, device) in [("small", 8, own_device), ("large", 64, "large-cpu")] {
        let record = |check: &str| &records[&format!("{runtime}::{machine}::nb::{check}")];
        let declared = format!("batch = {batch}\ndevice = \"{device}\"\nepochs = {epochs}\n");

        // After the `parameters` cell, the overrides' label and table over the runtime's.
        let report = record("report");
        assert_eq!(report["status"], "passed", "{report:#}");
        let notebook = executed(out, run_id, report);
        let report_cell = injected(
            runtime,
            machine,
            &format!(
                "{declared}label = \"from the last override\"\nnested = {{\"layers\": [64, 32], \"lr\": 0.5}}\n"
            ),
        );
        assert_eq!(
            cells(&notebook)[1..3],
            [
                (tag("parameters"), "epochs = 10\nbatch = 1\ndevice = \"default\"\nlabel = \"default\"\nnested = None".to_owned()),
                (tag("injected-parameters"), report_cell),
            ]
        );
        assert_eq!(
            printed(&notebook, 3),
            format!(
                "{runtime}/{machine} gpus=0 epochs={epochs} batch={batch} device='{device}' \
                 label='from the last override' nested={{'layers': [64, 32], 'lr': 0.5}}\n"
            )
        );
        assert_eq!(
            notebook["metadata"]["papermill"]["parameters"]["batch"],
            batch
        );
        assert_eq!(report["parameters"]["label"], "from the last override");
        assert_eq!(report["parameters"]["batch"], batch);

        // No `parameters` cell: at the top.
        let notebook = executed(out, run_id, record("untagged"));
        let cell = injected(runtime, machine, &format!("{declared}{own_label}"));
        assert_eq!(
            cells(&notebook)[0],
            (tag("injected-parameters"), cell.clone())
        );
        assert_eq!(cells(&notebook).len(), 3);
        assert_eq!(printed(&notebook, 1), format!("epochs: {epochs}\n"));

        // papermill's own injected cell is replaced, and the 4.4 notebook upgraded as
        // papermill does.
        let notebook = executed(out, run_id, record("papermilled"));
        assert_eq!(cells(&notebook)[1], (tag("injected-parameters"), cell));
        assert_eq!(cells(&notebook).len(), 3);
        assert_eq!(printed(&notebook, 2), format!("epochs: {epochs}\n"));
        assert_eq!(notebook["nbformat_minor"], 5);
        assert_eq!(
            notebook["metadata"]["papermill"]["parameters"]["epochs"],
            epochs
        );
    }
    // The assertion on the batch holds on the small machine only.
    let fits = &records[&format!("{runtime}::small::nb::fits")];
    assert_eq!(fits["status"], "passed", "{fits:#}");
    let fits = &records[&format!("{runtime}::large::nb::fits")];
    assert_eq!(fits["status"], "expected-failure", "{fits:#}");
    assert_eq!(
        fits["failure"]["summary"],
        "AssertionError: batch 64 does not fit"
    );
    // The failing cell is counted and quoted as the executed notebook has it, after the
    // injected cell.
    assert_eq!(fits["failure"]["cell"]["index"], 2);
    assert!(
        fits["failure"]["cell"]["source_excerpt"]
            .as_str()
            .unwrap()
            .starts_with("assert batch <= 32"),
        "{fits:#}"
    );
    let notebook = executed(out, run_id, fits);
    assert_eq!(cells(&notebook)[1].0, tag("injected-parameters"));
    assert_eq!(
        notebook["cells"][2]["outputs"][0]["evalue"],
        "batch 64 does not fit"
    );
    // papermill writes Python only: declared parameters fail an R notebook, saying why.
    let in_r = &records[&format!("{runtime}::small::nb::in_r")];
    assert_eq!(in_r["status"], "expected-failure", "{in_r:#}");
    assert!(
        in_r["failure"]["output_tail"]
            .as_str()
            .unwrap()
            .contains("ValueError: parameters (batch, device, epochs"),
        "{in_r:#}"
    );
}

#[test]
fn parameters_reach_host_notebooks_per_runtime_machine_and_override() {
    let out = tempfile::tempdir().unwrap();
    check_runtime(out.path(), "host-parameters", "host");
}

#[test]
fn parameters_reach_container_notebooks_per_runtime_machine_and_override() {
    ensure_base_image();
    let out = tempfile::tempdir().unwrap();
    check_runtime(out.path(), "docker-parameters", "docker");
}

#[test]
fn without_declared_parameters_only_a_parameters_cell_gets_the_builtins() {
    let out = tempfile::tempdir().unwrap();
    let records = run(out.path(), "plain-parameters", "plain::");

    let fits = &records["plain::bare::nb::fits"];
    assert!(fits.get("parameters").is_none(), "{fits:#}");
    let notebook = executed(out.path(), "plain-parameters", fits);
    assert_eq!(
        cells(&notebook)[..2],
        [
            (json!(["parameters"]), "batch = 1".to_owned()),
            (
                json!(["injected-parameters"]),
                injected("plain", "bare", "")
            ),
        ]
    );
    assert_eq!(printed(&notebook, 2), "fits 1\n");

    // Neither: the notebook runs as it is, its cells where they were.
    let untagged = &records["plain::bare::nb::untagged"];
    let notebook = executed(out.path(), "plain-parameters", untagged);
    let source: Value = serde_json::from_slice(
        &std::fs::read(fixtures().join("param-notebooks/untagged.ipynb")).unwrap(),
    )
    .unwrap();
    assert_eq!(cells(&notebook), cells(&source));
    assert!(notebook["metadata"].get("papermill").is_none());
    assert_eq!(printed(&notebook, 0), "epochs: unset\n");
}

#[test]
fn plan_shows_each_notebook_trials_merged_parameters() {
    let (code, stdout, stderr) = output(runtime_matrix().args([
        "plan",
        "--format",
        "json",
        "--config",
        matrix().to_str().unwrap(),
    ]));
    assert_eq!(code, Some(0), "{stderr}");
    let plan: Value = serde_json::from_str(&stdout).unwrap();
    let trial = |name: &str| {
        plan["plan"]["trials"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("no trial {name}"))
            .clone()
    };
    assert_eq!(
        trial("host::large::nb::report")["parameters"],
        json!({"batch": 64, "device": "large-cpu", "epochs": 1,
               "label": "from the last override", "nested": {"layers": [64, 32], "lr": 0.5}})
    );
    assert!(trial("plain::bare::nb::fits").get("parameters").is_none());

    let (code, stdout, stderr) =
        output(runtime_matrix().args(["plan", "--config", matrix().to_str().unwrap()]));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains(
            "  [host] host::small::nb::fits  (deadline 2m, cell timeout 5m; tags: cpu,host,notebook)\n      \
             parameters batch=8 device=\"host-cpu\" epochs=1 label=\"from the runtime\"\n"
        ),
        "{stdout}"
    );
}
