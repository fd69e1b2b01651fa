//! From how a check's process ended to an [`Outcome`]: shared by every executor, so that a
//! notebook failing in a container reads exactly like one failing on the host.

use super::Outcome;
use super::provision::tail;
use crate::error::{EngineError, chain};
use crate::gpu::{GpuCheckError, PreflightError};
use crate::notebook::{ExecutionReport, ProcessEnd, Progress};
use crate::plan::TrialSpec;
use crate::record::RunDir;
use crate::sanitise::{for_terminal, plain};
use crate::verdict::{Category, Failure, FailureKind, GpuCause};
use serde_json::Value;

/// An outcome for a check that could not be started.
pub(super) fn setup_failure(category: Category, summary: String) -> Outcome {
    setup(category, summary, None)
}

/// The outcome of a notebook trial whose file is not a regular file (a FIFO, a device, a
/// socket, a link to nothing): it fails alone, before anything is staged, as a file nbformat
/// could not read would. `None` for any other trial.
pub(super) fn notebook_file_failure(spec: &TrialSpec) -> Option<Outcome> {
    let crate::config::CheckKind::Notebook { path, .. } = &spec.check.kind else {
        return None;
    };
    let error = crate::fsx::regular_file(path).err()?;
    Some(Outcome {
        failure: Some(Failure {
            kind: FailureKind::InvalidNotebook,
            category: Category::Notebook,
            summary: format!("it cannot be read: {error}"),
            cell: None,
            exit_code: None,
            output_tail: None,
            cause: None,
        }),
        ..Outcome::default()
    })
}

/// An outcome for an image the preflight refused; the cause is the preflight's own finding.
pub(super) fn preflight_failure(error: &PreflightError) -> Outcome {
    setup(Category::Runtime, error.to_string(), Some(error.cause()))
}

fn setup(category: Category, summary: String, cause: Option<GpuCause>) -> Outcome {
    Outcome {
        failure: Some(Failure {
            kind: FailureKind::Setup,
            category,
            summary: for_terminal(&summary),
            cell: None,
            exit_code: None,
            output_tail: None,
            cause,
        }),
        ..Outcome::default()
    }
}

/// An outcome for a check the Docker engine stopped. A missing NVIDIA runtime is a cause the
/// engine wrapper detected; any other is looked for in the engine's own words.
pub(super) fn engine_failure(category: Category, error: &EngineError) -> Outcome {
    let detected = match error {
        EngineError::NoNvidiaRuntime { .. } => Some(GpuCause::NoNvidiaRuntime),
        _ => None,
    };
    let outcome = setup_failure(category, chain(error));
    Outcome {
        failure: outcome.failure.map(|failure| with_cause(failure, detected)),
        ..outcome
    }
}

/// `failure` with the cause its check detected, or else the one its texts name. Those texts
/// hold what came from outside the harness (the process's output, the cell's exception, the
/// words of NVML, the framework or the engine), and this is the one place they are read for a
/// cause.
///
/// Those texts are made safe here, where they enter: every control sequence but colours is
/// removed (the harness removes colours too before it writes a record), and causes are looked
/// for in the plain text.
fn with_cause(failure: Failure, detected: Option<GpuCause>) -> Failure {
    let mut failure = crate::sanitise::failure(&failure, for_terminal);
    failure.cause = detected.or_else(|| GpuCause::recognise(&plain(&failure.text())));
    failure
}

/// Why a notebook that failed before its first cell has no executed notebook.
pub(super) const NEVER_STARTED: &str =
    "no executed notebook: the notebook never started (no cell ran)";

/// What one notebook run left behind.
pub(super) struct NotebookRun<'a> {
    /// The progress events file's text.
    pub progress: &'a str,
    /// nbconvert's output, stdout and stderr together.
    pub output: &'a str,
    /// How the process ended.
    pub end: ProcessEnd,
    /// The notebook as the runner read and ran it (upgraded and normalized by nbformat, with
    /// every cell that ran and its outputs), complete or not; `None` when it never started.
    pub executed: Option<Vec<u8>>,
}

/// The outcome of a notebook run; keeps the executed (or partly executed) notebook under `run`.
pub(super) fn notebook(
    spec: &TrialSpec,
    run: &RunDir,
    relative: &str,
    result: NotebookRun,
) -> Outcome {
    let progress = Progress::parse(result.progress);
    // Cell indexes and sources are those of the notebook the runner ran: nbformat may have
    // upgraded an older file, which changes its cells.
    let notebook = result
        .executed
        .as_deref()
        .and_then(|bytes| serde_json::from_slice::<Value>(bytes).ok())
        .unwrap_or_default();
    let report = ExecutionReport::read(&notebook, &progress, result.output, result.end);

    // A notebook that failed before any cell started keeps no executed notebook: it would be
    // an unexecuted copy posing as executed. Otherwise it is kept whether or not every cell
    // ran, unlike nbconvert, which writes it only then.
    let never_started = report.failure.is_some() && !progress.any_started();
    let artifact = match (never_started, result.executed) {
        (false, Some(executed)) => {
            let artifact = run.artifact_path(&spec.runtime.name, &spec.machine.name, relative);
            crate::record::write_atomic(&artifact, &executed)
                .ok()
                .map(|()| artifact)
        }
        _ => None,
    };

    let failure = report.failure.map(|(kind, cell, summary)| {
        let category = match kind {
            FailureKind::CellError => match cell.as_ref().and_then(|c| c.ename.as_deref()) {
                Some("ModuleNotFoundError" | "ImportError") => Category::Runtime,
                _ => Category::Notebook,
            },
            FailureKind::CellTimeout | FailureKind::Deadline | FailureKind::InvalidNotebook => {
                Category::Notebook
            }
            _ => Category::Runtime,
        };
        let summary = match kind {
            FailureKind::Deadline => format!(
                "the notebook ran past its deadline of {} and was killed",
                humantime::format_duration(spec.check.timeout)
            ),
            _ if summary.is_empty() => kind.describe().to_owned(),
            _ => summary,
        };
        Failure {
            kind,
            category,
            summary,
            cell,
            exit_code: match result.end {
                ProcessEnd::Failed(code) => Some(code),
                _ => None,
            },
            output_tail: Some(tail(&for_terminal(result.output), 30)),
            cause: None,
        }
    });
    // Only a notebook that ran to its end is compared across runtimes and machines.
    let consistent = match (&spec.check.consistent_tag, &failure) {
        (Some(tag), None) => Some(crate::notebook::consistent_cells(&notebook, tag)),
        _ => None,
    };
    Outcome {
        failure: failure.map(|failure| with_cause(failure, None)),
        cells: report.cells,
        consistent,
        artifact,
        artifact_note: never_started.then(|| NEVER_STARTED.to_owned()),
        ..Outcome::default()
    }
}

/// The outcome of a command check.
pub(super) fn command(spec: &TrialSpec, line: &str, end: ProcessEnd, output: &str) -> Outcome {
    let output_tail = Some(tail(&for_terminal(output), 30));
    let failure = match end {
        ProcessEnd::Success => None,
        ProcessEnd::Failed(code) => Some(Failure {
            kind: FailureKind::ExitCode,
            category: Category::Runtime,
            summary: format!("`{line}` exited with code {code}"),
            cell: None,
            exit_code: Some(code),
            output_tail,
            cause: None,
        }),
        ProcessEnd::Deadline => Some(Failure {
            kind: FailureKind::Deadline,
            category: Category::Runtime,
            summary: format!(
                "`{line}` ran past its timeout of {} and was killed",
                humantime::format_duration(spec.check.timeout)
            ),
            cell: None,
            exit_code: None,
            output_tail,
            cause: None,
        }),
    };
    Outcome {
        failure: failure.map(|failure| with_cause(failure, None)),
        ..Outcome::default()
    }
}

/// The outcome of a GPU check: `verdict` is the check's judgement of its script's report.
pub(super) fn gpu_check(
    spec: &TrialSpec,
    verdict: Result<String, GpuCheckError>,
    end: ProcessEnd,
    output: &str,
) -> Outcome {
    let output_tail = Some(tail(&for_terminal(output), 30));
    let (failure, detected) = match (end, verdict) {
        (ProcessEnd::Deadline, _) => (
            Failure {
                kind: FailureKind::Deadline,
                category: Category::Runtime,
                summary: format!(
                    "`{}` ran past its timeout of {} and was killed",
                    spec.check.name,
                    humantime::format_duration(spec.check.timeout)
                ),
                cell: None,
                exit_code: None,
                output_tail,
                cause: None,
            },
            None,
        ),
        (_, Ok(note)) => {
            return Outcome {
                note: Some(note),
                ..Outcome::default()
            };
        }
        (end, Err(error)) => (
            Failure {
                kind: FailureKind::GpuCheck,
                category: Category::Runtime,
                summary: error.to_string(),
                cell: None,
                exit_code: match end {
                    ProcessEnd::Failed(code) => Some(code),
                    _ => Some(0),
                },
                output_tail,
                cause: None,
            },
            error.cause(),
        ),
    };
    Outcome {
        failure: Some(with_cause(failure, detected)),
        ..Outcome::default()
    }
}

/// Judges a GPU check from its script's output.
pub(super) fn judge_gpu_check(
    kind: &crate::config::CheckKind,
    output: &str,
    assigned: &[String],
    count: u32,
    host: Option<&crate::gpu::HostGpus>,
) -> Result<String, GpuCheckError> {
    use crate::config::CheckKind;
    use crate::gpu::checks::parse_marked;
    match kind {
        CheckKind::GpuVisible => {
            let probe =
                parse_marked(output, "RUNTIME_MATRIX_PROBE ").map_err(GpuCheckError::Probe)?;
            Ok(crate::gpu::visible_verdict(&probe, assigned, count, host)?)
        }
        CheckKind::GpuFramework { .. } => {
            let report = parse_marked(output, "RUNTIME_MATRIX_FRAMEWORK ")
                .map_err(GpuCheckError::FrameworkReport)?;
            Ok(crate::gpu::framework_verdict(&report, count)?)
        }
        _ => Err(GpuCheckError::NotAGpuCheck),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{FrameworkFailure, VisibleMismatch};

    fn gpu_visible_trial() -> TrialSpec {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let matrix = crate::Matrix::load(&root.join("fixtures/matrices/docker.toml")).unwrap();
        let plan = crate::Plan::new(&matrix, &crate::Selection::default());
        plan.trials
            .into_iter()
            .find(|t| t.name == "base::cpu::gpu::visible")
            .expect("the docker fixture has a gpu::visible trial on cpu")
    }

    #[test]
    fn a_gpu_check_keeps_the_cause_it_detected_and_recognises_outside_words() {
        let spec = gpu_visible_trial();
        let cause = |error: GpuCheckError| {
            gpu_check(&spec, Err(error), ProcessEnd::Success, "")
                .failure
                .unwrap()
                .cause
        };
        let not_covered = FrameworkFailure::NotCovered {
            framework: "torch".into(),
            arch_list: vec!["sm_80".into()],
            capability: "9.0".into(),
        };
        assert_eq!(cause(not_covered.into()), Some(GpuCause::NoKernelImage));
        let nvml = VisibleMismatch::NoNvml {
            count: 1,
            reason: Some("Failed to initialize NVML: Driver/library version mismatch".into()),
        };
        assert_eq!(cause(nvml.into()), Some(GpuCause::DriverLibraryMismatch));
        let count = VisibleMismatch::Count { seen: 0, count: 1 };
        assert_eq!(cause(count.into()), None);
    }

    #[test]
    fn engine_failures_name_their_gpu_cause() {
        let refused = |message: &str| bollard::errors::Error::DockerResponseServerError {
            status_code: 500,
            message: message.to_owned(),
        };
        let cause = |error: &EngineError| {
            engine_failure(Category::Infrastructure, error)
                .failure
                .unwrap()
                .cause
        };
        let no_runtime = |message: &str| EngineError::NoNvidiaRuntime {
            endpoint: "unix:///var/run/docker.sock".into(),
            machine: "gpu".into(),
            error: refused(message),
        };
        // The engine wrapper's finding is the cause, whatever words the engine used.
        assert_eq!(
            cause(&no_runtime("unknown or invalid runtime name: nvidia")),
            Some(GpuCause::NoNvidiaRuntime)
        );
        let no_runtime =
            no_runtime("could not select device driver \"\" with capabilities: [[gpu]]");
        // Later trials of the process get the first failure as text only.
        let earlier = EngineError::Earlier {
            message: chain(&no_runtime),
            image: false,
        };
        assert_eq!(cause(&earlier), Some(GpuCause::NoNvidiaRuntime));
        let start = EngineError::Operation {
            operation: "start container",
            target: "0123456789ab".into(),
            error: refused(
                "nvidia-container-cli: requirement error: unsatisfied condition: cuda>=12.6, please update your driver",
            ),
        };
        assert_eq!(cause(&start), Some(GpuCause::DriverTooOld));
        let missing = EngineError::ImageMissing {
            image: "img".into(),
            hint: String::new(),
        };
        assert_eq!(cause(&missing), None);
    }
}
