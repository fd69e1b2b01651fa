//! The verdict vocabulary: how a trial ended and why. The main type is [`Failure`], which a
//! trial's record keeps and every report renders; [`Status`], [`Category`], [`FailureKind`],
//! [`CellFailure`] and [`GpuCause`] are what it is made of.
//!
//! This module depends on nothing else in the crate, so that executors, GPU checks, records
//! and reports all speak it without depending on each other. Serde names and field order are
//! the record format: changing them changes every record and `report.json`.

use serde::{Deserialize, Serialize};

/// How a trial ended.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// The check passed.
    Passed,
    /// The check failed (or failed other than the declared way).
    Failed,
    /// Declared as an expected failure, and it failed the declared way.
    ExpectedFailure,
    /// Declared as an expected failure, but it passed: the declaration is stale.
    UnexpectedPass,
}

impl Status {
    /// Whether this status fails the run.
    pub fn is_failure(self) -> bool {
        matches!(self, Status::Failed | Status::UnexpectedPass)
    }
}

/// Where to look first when a trial fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    /// The harness or the host: provisioning, I/O, the engine.
    Infrastructure,
    /// The runtime: its Python, packages, kernel.
    Runtime,
    /// The notebook's own code.
    Notebook,
}

/// How a trial failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// A cell raised an exception.
    CellError,
    /// One cell ran longer than the per-cell timeout.
    CellTimeout,
    /// The whole check ran past its deadline and was killed.
    Deadline,
    /// The kernel process died while a cell ran.
    KernelDied,
    /// The notebook's kernel is not installed in the runtime.
    NoSuchKernel,
    /// nbformat refused the file (not a notebook, or one its schema rejects): nothing ran.
    InvalidNotebook,
    /// A command (or nbconvert itself) exited non-zero.
    ExitCode,
    /// A GPU check found the runtime cannot use its GPUs as it should.
    GpuCheck,
    /// The runtime lacks a tool every check needs: Python, nbconvert, `timeout`.
    MissingTool,
    /// The check could not be started: no Python, provisioning failed, the engine, I/O.
    Setup,
    /// A consistency check found a tagged cell that printed different text in different
    /// runtimes or machines.
    Inconsistent,
    /// A notebook declared in `[consistency]` has no cell carrying the tag: nothing can be
    /// compared.
    NothingTagged,
}

impl FailureKind {
    /// Words for messages and reports.
    pub fn describe(self) -> &'static str {
        match self {
            FailureKind::CellError => "a cell raised an exception",
            FailureKind::CellTimeout => "a cell ran past the cell timeout",
            FailureKind::Deadline => "the check ran past its deadline and was killed",
            FailureKind::KernelDied => {
                "the kernel died (a crash in native code, the OOM killer, or os._exit)"
            }
            FailureKind::NoSuchKernel => "the notebook's kernel is not installed",
            FailureKind::InvalidNotebook => "the file is not a notebook nbformat accepts",
            FailureKind::ExitCode => "exited with a non-zero code",
            FailureKind::MissingTool => "the runtime lacks a tool the check needs",
            FailureKind::GpuCheck => "the GPU check failed",
            FailureKind::Setup => "could not be started",
            FailureKind::Inconsistent => {
                "a tagged cell printed different outputs across runtimes and machines"
            }
            FailureKind::NothingTagged => "no cell of the notebook carries the consistency tag",
        }
    }
}

/// The cell a notebook failed in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CellFailure {
    /// 0-based index among all cells, as Jupyter's cell list shows it.
    pub index: usize,
    /// The first lines of its source.
    pub source_excerpt: String,
    /// Exception class, e.g. `ZeroDivisionError`.
    pub ename: Option<String>,
    /// Exception value, e.g. `division by zero`.
    pub evalue: Option<String>,
    /// The traceback, without ANSI colours.
    pub traceback: Option<String>,
}

/// Why a trial failed, with what a user needs to act on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Failure {
    /// How it failed.
    pub kind: FailureKind,
    /// Where to look.
    pub category: Category,
    /// One line: the exception, the exit code, the timeout.
    pub summary: String,
    /// The failing (or running) cell of a notebook.
    pub cell: Option<CellFailure>,
    /// The exit code of a command.
    pub exit_code: Option<i32>,
    /// The last lines of the process's output.
    pub output_tail: Option<String>,
    /// A known GPU cause behind the failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<GpuCause>,
}

impl Failure {
    /// Everything the failure says, one part a line: the summary, the cell's exception and
    /// traceback, the output's last lines. Expected-failure declarations are matched against it.
    pub fn text(&self) -> String {
        let mut text = self.summary.clone();
        if let Some(cell) = &self.cell {
            for part in [&cell.ename, &cell.evalue, &cell.traceback]
                .into_iter()
                .flatten()
            {
                text.push('\n');
                text.push_str(part);
            }
        }
        if let Some(tail) = &self.output_tail {
            text.push('\n');
            text.push_str(tail);
        }
        text
    }
}

/// A GPU failure with a known cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum GpuCause {
    /// The framework has no kernels for the GPU's compute capability.
    NoKernelImage,
    /// The image's CUDA runtime is newer than the host driver supports.
    DriverTooOld,
    /// The driver libraries in the container do not match the kernel module.
    DriverLibraryMismatch,
    /// The engine cannot hand out GPUs.
    NoNvidiaRuntime,
}

impl GpuCause {
    /// The cause that text from outside the harness names, in the words NVIDIA's libraries,
    /// the frameworks and the engine use: a notebook's or a command's output, an engine's
    /// error. Causes the harness detects itself are carried as values, never recognised here.
    pub fn recognise(text: &str) -> Option<GpuCause> {
        const KNOWN: [(&str, GpuCause); 5] = [
            (
                "no kernel image is available for execution on the device",
                GpuCause::NoKernelImage,
            ),
            (
                "CUDA driver version is insufficient for CUDA runtime version",
                GpuCause::DriverTooOld,
            ),
            (
                "requirement error: unsatisfied condition: cuda>=",
                GpuCause::DriverTooOld,
            ),
            (
                "Driver/library version mismatch",
                GpuCause::DriverLibraryMismatch,
            ),
            ("could not select device driver", GpuCause::NoNvidiaRuntime),
        ];
        KNOWN
            .iter()
            .find(|(needle, _)| text.contains(needle))
            .map(|(_, cause)| *cause)
    }

    /// What the cause means and what to do.
    pub fn explain(self) -> &'static str {
        match self {
            GpuCause::NoKernelImage => {
                "the framework was built without kernels for this GPU's compute capability: use a build whose \
                 architectures include it (or PTX the driver can compile)"
            }
            GpuCause::DriverTooOld => {
                "the runtime's CUDA is newer than the host driver supports: update the driver, or use an image built \
                 for an older CUDA"
            }
            GpuCause::DriverLibraryMismatch => {
                "the NVIDIA libraries do not match the loaded driver: reboot (or reload the kernel module) after a \
                 driver update, and do not bake driver libraries into images"
            }
            GpuCause::NoNvidiaRuntime => {
                "the Docker engine has no NVIDIA runtime: install the NVIDIA Container Toolkit on its host"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(
        "RuntimeError: CUDA error: no kernel image is available for execution on the device",
        GpuCause::NoKernelImage
    )]
    #[case(
        "RuntimeError: The NVIDIA driver on your system is too old ... CUDA driver version is insufficient for CUDA runtime version",
        GpuCause::DriverTooOld
    )]
    #[case(
        "nvidia-container-cli: requirement error: unsatisfied condition: cuda>=12.4, please update your driver",
        GpuCause::DriverTooOld
    )]
    #[case(
        "Failed to initialize NVML: Driver/library version mismatch",
        GpuCause::DriverLibraryMismatch
    )]
    #[case(
        "could not select device driver \"nvidia\" with capabilities: [[gpu]]",
        GpuCause::NoNvidiaRuntime
    )]
    fn outside_texts_name_their_causes(#[case] text: &str, #[case] cause: GpuCause) {
        assert_eq!(GpuCause::recognise(text), Some(cause));
    }

    #[test]
    fn ordinary_failures_name_no_cause() {
        assert_eq!(
            GpuCause::recognise("ZeroDivisionError: division by zero"),
            None
        );
    }

    #[test]
    fn the_serialised_names_are_the_record_format() {
        let failure = Failure {
            kind: FailureKind::GpuCheck,
            category: Category::Runtime,
            summary: "s".into(),
            cell: None,
            exit_code: Some(0),
            output_tail: None,
            cause: Some(GpuCause::NoKernelImage),
        };
        assert_eq!(
            serde_json::to_string(&failure).unwrap(),
            r#"{"kind":"gpu-check","category":"runtime","summary":"s","cell":null,"exit_code":0,"output_tail":null,"cause":"no-kernel-image"}"#
        );
        let without = Failure {
            cause: None,
            ..failure
        };
        assert!(!serde_json::to_string(&without).unwrap().contains("cause"));
        assert_eq!(
            serde_json::to_string(&Status::ExpectedFailure).unwrap(),
            "\"expected-failure\""
        );
    }

    #[test]
    fn a_failure_text_holds_the_exception_and_the_output() {
        let failure = Failure {
            kind: FailureKind::CellError,
            category: Category::Notebook,
            summary: "ZeroDivisionError: division by zero".into(),
            cell: Some(CellFailure {
                index: 1,
                source_excerpt: "x / 0".into(),
                ename: Some("ZeroDivisionError".into()),
                evalue: None,
                traceback: Some("Traceback".into()),
            }),
            exit_code: Some(1),
            output_tail: Some("last line".into()),
            cause: None,
        };
        assert_eq!(
            failure.text(),
            "ZeroDivisionError: division by zero\nZeroDivisionError\nTraceback\nlast line"
        );
    }
}
