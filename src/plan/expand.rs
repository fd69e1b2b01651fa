//! Expanding a matrix into trial specs, each one check of one runtime on one machine, and
//! deciding which of them run here.

use super::select::{Selection, shard_of};
use crate::config::{
    BUILTIN_PARAMETERS, Check, CheckKind, ExpectedFailure, Machine, Matrix, Parameters, Runtime,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Everything needed to run one trial: one check of one runtime on one machine.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct TrialSpec {
    /// `runtime::machine::check`.
    pub name: String,
    /// The runtime (serialised without its list of checks).
    #[serde(serialize_with = "runtime_view")]
    #[schemars(with = "RuntimeView<'static>")]
    pub runtime: Arc<Runtime>,
    /// The machine.
    #[serde(serialize_with = "machine_view")]
    #[schemars(with = "Machine")]
    pub machine: Arc<Machine>,
    /// The check.
    pub check: Check,
    /// Every tag: the check's, the machine's, and the automatic ones (executor, `cpu` or
    /// `gpu`, `notebook` or `command`).
    pub tags: Vec<String>,
    /// The expected-failure rule covering this trial, if any.
    pub expected_failure: Option<ExpectedFailure>,
    /// The parameters declared for a notebook trial: the runtime's, then the machine's, then
    /// the overrides' (see [`Check::parameters`]), a later one winning. Empty for other checks.
    #[serde(skip_serializing_if = "Parameters::is_empty")]
    pub parameters: Parameters,
    /// The project: the folder of the matrix file, labelled on containers.
    #[serde(skip)]
    pub project: Arc<str>,
}

/// A trial's runtime as plans show it: what the trial needs of it, not its other checks.
#[derive(Serialize, schemars::JsonSchema)]
struct RuntimeView<'a> {
    /// Its name.
    name: &'a str,
    /// Where and how its checks run.
    executor: &'a crate::config::Executor,
    /// Environment variables set for every check.
    env: &'a std::collections::BTreeMap<String, String>,
    /// The services its trials use, by name (the plan's `services` has each).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    services: Vec<&'a str>,
}

fn runtime_view<S: serde::Serializer>(
    runtime: &Arc<Runtime>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    RuntimeView {
        name: &runtime.name,
        executor: &runtime.executor,
        env: &runtime.env,
        services: runtime.services.iter().map(|s| s.name.as_str()).collect(),
    }
    .serialize(serializer)
}

fn machine_view<S: serde::Serializer>(
    machine: &Arc<Machine>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    Machine::serialize(machine, serializer)
}

impl TrialSpec {
    /// The libtest kind shown in brackets: the executor's name.
    pub fn kind(&self) -> &'static str {
        self.runtime.executor.name()
    }

    /// What the runner may inject into a notebook trial's notebook, in the order of the
    /// injected cell: the built-ins ([`BUILTIN_PARAMETERS`]: runtime, machine, GPU count),
    /// then the declared [`parameters`](TrialSpec::parameters) by name. `None` for other checks.
    pub fn notebook_parameters(&self) -> Option<Vec<(String, serde_json::Value)>> {
        if !matches!(self.check.kind, CheckKind::Notebook { .. }) {
            return None;
        }
        let builtins = [
            serde_json::Value::from(self.runtime.name.as_str()),
            serde_json::Value::from(self.machine.name.as_str()),
            serde_json::Value::from(self.machine.gpus),
        ];
        let builtins = BUILTIN_PARAMETERS
            .iter()
            .map(|name| name.to_string())
            .zip(builtins);
        let declared = self
            .parameters
            .iter()
            .map(|(name, value)| (name.clone(), value.clone()));
        Some(builtins.chain(declared).collect())
    }
}

/// A trial that is declared but not run here, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Excluded {
    /// `runtime::machine::check`.
    pub name: String,
    /// The runtime.
    pub runtime: String,
    /// The machine.
    pub machine: String,
    /// The check.
    pub check: String,
    /// Why it is not run.
    pub reason: String,
}

/// The result of planning: what runs here and what does not.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Plan {
    /// The stage planned for.
    pub stage: String,
    /// Trials to run, ordered by runtime, machine, then check.
    pub trials: Vec<TrialSpec>,
    /// Declared trials not run here, in the same order.
    pub excluded: Vec<Excluded>,
    /// Consistency checks, by notebook: run after the trials, one per declared notebook that
    /// a trial of [`trials`](Plan::trials) runs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub consistency: Vec<super::ConsistencySpec>,
}

impl Plan {
    /// Expands `matrix` into trials and applies `selection`.
    pub fn new(matrix: &Matrix, selection: &Selection) -> Plan {
        let stage = selection
            .stage
            .clone()
            .unwrap_or_else(|| matrix.default_stage.clone());
        let machines: Vec<Arc<Machine>> = matrix.machines.iter().cloned().map(Arc::new).collect();
        let project: Arc<str> = matrix.root.display().to_string().into();
        let mut trials = Vec::new();
        let mut excluded = Vec::new();
        for runtime in &matrix.runtimes {
            let runtime = Arc::new(runtime.clone());
            for machine in machines
                .iter()
                .filter(|m| runtime.machines.contains(&m.name))
            {
                for check in &runtime.checks {
                    let name = format!("{}::{}::{}", runtime.name, machine.name, check.name);
                    let spec = TrialSpec {
                        tags: tags_of(&runtime, machine, check),
                        expected_failure: matrix
                            .expected_failures
                            .iter()
                            .find(|rule| rule.covers(&runtime.name, &machine.name, &check.name))
                            .cloned(),
                        parameters: parameters_of(&runtime, machine, check),
                        name,
                        project: project.clone(),
                        runtime: runtime.clone(),
                        machine: machine.clone(),
                        check: check.clone(),
                    };
                    match exclusion_reason(matrix, selection, &stage, &spec) {
                        None => trials.push(spec),
                        Some(reason) => excluded.push(Excluded {
                            runtime: runtime.name.clone(),
                            machine: machine.name.clone(),
                            check: check.name.clone(),
                            name: spec.name,
                            reason,
                        }),
                    }
                }
            }
        }
        let consistency = super::consistency::consistency_checks(matrix, selection, &trials);
        Plan {
            stage,
            trials,
            excluded,
            consistency,
        }
    }
}

/// A notebook check's parameters: the runtime's, over them the machine's, over those the
/// overrides'.
fn parameters_of(runtime: &Runtime, machine: &Machine, check: &Check) -> Parameters {
    if !matches!(check.kind, CheckKind::Notebook { .. }) {
        return Parameters::new();
    }
    let mut parameters = runtime.parameters.clone();
    parameters.extend(machine.parameters.clone());
    parameters.extend(check.parameters.clone());
    parameters
}

fn tags_of(runtime: &Runtime, machine: &Machine, check: &Check) -> Vec<String> {
    let automatic = [
        runtime.executor.name(),
        if machine.gpus > 0 { "gpu" } else { "cpu" },
        match check.kind {
            CheckKind::Notebook { .. } => "notebook",
            CheckKind::Command { .. } => "command",
            CheckKind::GpuVisible | CheckKind::GpuFramework { .. } => "gpu-check",
        },
    ];
    let mut tags: Vec<String> = check
        .tags
        .iter()
        .chain(&machine.tags)
        .cloned()
        .chain(automatic.map(String::from))
        .collect();
    tags.sort();
    tags.dedup();
    tags
}

/// How the reason for leaving a trial to another shard begins.
pub(crate) const SHARD_REASON: &str = "in shard ";

/// The first reason, in a fixed order, why `spec` is not run here.
fn exclusion_reason(
    matrix: &Matrix,
    selection: &Selection,
    stage: &str,
    spec: &TrialSpec,
) -> Option<String> {
    if let Some(rule) = matrix
        .exclusions
        .iter()
        .find(|rule| rule.covers(&spec.runtime.name, &spec.machine.name, &spec.check.name))
    {
        return Some(format!("excluded by matrix.toml: {}", rule.reason));
    }
    if let Some(reason) = selection.machines.refuses(&spec.machine) {
        return Some(reason);
    }
    if !spec.check.stages.iter().any(|s| s == stage) {
        return Some(format!(
            "not in stage `{stage}` (runs in: {})",
            spec.check.stages.join(", ")
        ));
    }
    if let Some(reason) = selection.tags.refuses(&spec.tags) {
        return Some(reason);
    }
    if let Some((k, n)) = selection.shard {
        let shard = shard_of(&spec.name, n);
        if shard != k {
            return Some(format!("{SHARD_REASON}{shard}/{n}, not {k}/{n}"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plan() -> Plan {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let matrix = Matrix::load(&root.join("fixtures/matrices/parameters.toml")).unwrap();
        Plan::new(&matrix, &crate::Selection::default())
    }

    fn trial<'a>(plan: &'a Plan, name: &str) -> &'a TrialSpec {
        plan.trials.iter().find(|t| t.name == name).unwrap()
    }

    #[test]
    fn parameters_merge_runtime_then_machine_then_overrides_in_file_order() {
        let plan = plan();
        let merged = |name: &str| json!(trial(&plan, name).parameters);
        // The runtime's device, over it the large machine's; the runtime's label, over it the
        // first override's, over that the last one's.
        assert_eq!(
            merged("host::small::nb::report"),
            json!({"batch": 8, "device": "host-cpu", "epochs": 1,
                   "label": "from the last override", "nested": {"layers": [64, 32], "lr": 0.5}})
        );
        assert_eq!(
            merged("host::large::nb::untagged"),
            json!({"batch": 64, "device": "large-cpu", "epochs": 1, "label": "from the runtime"})
        );
        assert_eq!(merged("plain::bare::nb::untagged"), json!({}));
    }

    #[test]
    fn the_injected_cell_sets_the_builtins_first_then_the_declared_by_name() {
        let plan = plan();
        let names: Vec<String> = trial(&plan, "docker::large::nb::fits")
            .notebook_parameters()
            .unwrap()
            .into_iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        assert_eq!(
            names,
            [
                "runtime_matrix_runtime=\"docker\"",
                "runtime_matrix_machine=\"large\"",
                "runtime_matrix_gpus=0",
                "batch=64",
                "device=\"large-cpu\"",
                "epochs=2",
            ]
        );
        // Built-ins alone, for the runner to inject only into a notebook with a `parameters` cell.
        assert_eq!(
            trial(&plan, "plain::bare::nb::fits")
                .notebook_parameters()
                .unwrap()
                .len(),
            3
        );
    }
}
