//! `runtime-matrix plan --format json`. The main type is [`PlanDocument`]: the plan, the host
//! it was made for, and the container each trial would run in, as one typed value, so that
//! its JSON Schema is derived from what is printed.

use super::{Excluded, MachineSelection, Plan, TrialSpec};
use crate::engine::ContainerSpec;
use crate::gpu::HostGpus;
use serde::Serialize;
use std::path::PathBuf;

/// The plan format's version; bumped on incompatible changes.
pub const PLAN_SCHEMA: u32 = 1;

/// What `plan --format json` prints.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[schemars(title = "runtime-matrix plan")]
pub(crate) struct PlanDocument {
    /// The plan format's version, [`PLAN_SCHEMA`].
    #[schemars(extend("const" = PLAN_SCHEMA))]
    schema: u32,
    /// The matrix file.
    matrix: PathBuf,
    /// How this host's machines were chosen.
    host: PlanHost,
    /// The trials.
    plan: PlanBody,
}

/// How the machines this host serves were chosen; one key says which way.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
enum PlanHost {
    /// The NVIDIA driver and GPUs found here.
    Nvidia(HostGpus),
    /// No NVIDIA driver answered: NVML's reason. CPU-only machines run.
    NoDriver(String),
    /// The machines named in RUNTIME_MATRIX_MACHINES.
    NamedMachines(Vec<String>),
    /// The matrix has CPU-only machines and no GPU was looked for: always `true`.
    CpuOnlyMatrix(bool),
}

/// [`Plan`], each trial with its container.
#[derive(Debug, Serialize, schemars::JsonSchema)]
struct PlanBody {
    /// The stage planned for.
    stage: String,
    /// Trials to run, ordered by runtime, machine, then check.
    trials: Vec<PlannedTrial>,
    /// Declared trials not run here, with the reason.
    excluded: Vec<Excluded>,
    /// Consistency checks: each compares a notebook's tagged cells across the trials that
    /// ran it, after them. Omitted when none is planned.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    consistency: Vec<super::ConsistencySpec>,
    /// The services the trials to run use, by name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    services: Vec<crate::config::Service>,
}

/// A trial to run, and the container it would run in.
#[derive(Debug, Serialize, schemars::JsonSchema)]
struct PlannedTrial {
    #[serde(flatten)]
    spec: TrialSpec,
    /// The container of a Docker runtime's trial; null for a host trial.
    container: Option<ContainerSpec>,
}

impl PlanDocument {
    /// The document for `plan` of the matrix at `matrix`, made for `machines`.
    pub(crate) fn new(matrix: PathBuf, machines: &MachineSelection, plan: &Plan) -> PlanDocument {
        let host = match machines {
            MachineSelection::Detected(host) => PlanHost::Nvidia(host.clone()),
            MachineSelection::NoDriver(reason) => PlanHost::NoDriver(reason.clone()),
            MachineSelection::Named(names) => PlanHost::NamedMachines(names.clone()),
            MachineSelection::CpuOnly => PlanHost::CpuOnlyMatrix(true),
        };
        // Destructured whole, so that a field added to `Plan` fails to compile here until the
        // document (and its schema) carries it too.
        let Plan {
            stage,
            trials,
            excluded,
            consistency,
        } = plan;
        let mut services: Vec<crate::config::Service> = Vec::new();
        for service in trials.iter().flat_map(|spec| &spec.runtime.services) {
            if !services.iter().any(|known| known.name == service.name) {
                services.push(service.clone());
            }
        }
        services.sort_by(|a, b| a.name.cmp(&b.name));
        let trials = trials
            .iter()
            .map(|spec| PlannedTrial {
                spec: spec.clone(),
                container: crate::exec::trial_container(spec),
            })
            .collect();
        PlanDocument {
            schema: PLAN_SCHEMA,
            matrix,
            host,
            plan: PlanBody {
                stage: stage.clone(),
                trials,
                excluded: excluded.clone(),
                consistency: consistency.clone(),
                services,
            },
        }
    }
}
