//! Expanding a matrix into trial specs, each one check of one runtime on one machine, and
//! deciding which of them run here.

use super::select::{Selection, shard_of};
use crate::config::{Check, ExpectedFailure, Machine, Matrix, Runtime};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Everything needed to run one trial: one check of one runtime on one machine.
#[derive(Debug, Clone, Serialize)]
pub struct TrialSpec {
    /// `runtime::machine::check`.
    pub name: String,
    /// The runtime (serialised without its list of checks).
    #[serde(serialize_with = "runtime_view")]
    pub runtime: Arc<Runtime>,
    /// The machine.
    #[serde(serialize_with = "machine_view")]
    pub machine: Arc<Machine>,
    /// The check.
    pub check: Check,
    /// Every tag: the check's, the machine's, and the automatic ones (executor, `cpu` or
    /// `gpu`, `notebook` or `command`).
    pub tags: Vec<String>,
    /// The expected-failure rule covering this trial, if any.
    pub expected_failure: Option<ExpectedFailure>,
    /// The project: the folder of the matrix file, labelled on containers.
    #[serde(skip)]
    pub project: Arc<str>,
}

fn runtime_view<S: serde::Serializer>(
    runtime: &Arc<Runtime>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct View<'a> {
        name: &'a str,
        executor: &'a crate::config::Executor,
        env: &'a std::collections::BTreeMap<String, String>,
    }
    View {
        name: &runtime.name,
        executor: &runtime.executor,
        env: &runtime.env,
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
}

/// A trial that is declared but not run here, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The stage planned for.
    pub stage: String,
    /// Trials to run, ordered by runtime, machine, then check.
    pub trials: Vec<TrialSpec>,
    /// Declared trials not run here, in the same order.
    pub excluded: Vec<Excluded>,
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
        Plan {
            stage,
            trials,
            excluded,
        }
    }
}

fn tags_of(runtime: &Runtime, machine: &Machine, check: &Check) -> Vec<String> {
    let automatic = [
        runtime.executor.name(),
        if machine.gpus > 0 { "gpu" } else { "cpu" },
        match check.kind {
            crate::config::CheckKind::Notebook { .. } => "notebook",
            crate::config::CheckKind::Command { .. } => "command",
            crate::config::CheckKind::GpuVisible
            | crate::config::CheckKind::GpuFramework { .. } => "gpu-check",
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
