//! Why a GPU check or the preflight fails. The main type is [`GpuCheckError`]: its message is
//! the trial's one-line summary, and [`GpuCheckError::cause`] is the known cause the check
//! detected itself. Errors that embed another error's words keep them in the message rather
//! than as a `#[source]`, because that one line is what the record and the user see.

use crate::verdict::GpuCause;

/// Why a script's `marker {json}` report line could not be read. The JSON error is part of
/// the message, which becomes the trial's one-line summary.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// No line starts with the marker: the script died before reporting.
    #[error("the script printed no `{marker}` line")]
    Missing {
        /// The marker, without its trailing space.
        marker: String,
    },
    /// The line is there but is not the report the harness expects.
    #[error("the script's report is not valid: {error}")]
    Invalid {
        /// What is wrong with it.
        error: serde_json::Error,
    },
}

/// Why a GPU check failed. The message is the trial's summary; [`GpuCheckError::cause`] is the
/// known cause the check itself detected, if any.
#[derive(Debug, thiserror::Error)]
pub enum GpuCheckError {
    /// The probe's report could not be read.
    #[error("the GPU probe failed: {0}")]
    Probe(ReportError),
    /// The framework script's report could not be read.
    #[error("the framework check failed: {0}")]
    FrameworkReport(ReportError),
    /// The container does not see exactly its GPUs.
    #[error(transparent)]
    Visible(#[from] VisibleMismatch),
    /// The framework cannot use the GPUs as it should.
    #[error(transparent)]
    Framework(#[from] FrameworkFailure),
    /// The check is not one of the GPU checks.
    #[error("not a GPU check")]
    NotAGpuCheck,
}

impl GpuCheckError {
    /// The known cause behind the failure, when the check detected one.
    pub fn cause(&self) -> Option<GpuCause> {
        match self {
            GpuCheckError::Framework(FrameworkFailure::NotCovered { .. }) => {
                Some(GpuCause::NoKernelImage)
            }
            _ => None,
        }
    }
}

/// How what a container sees differs from what it was given (`gpu::visible`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VisibleMismatch {
    /// A CPU-only trial sees GPUs.
    #[error(
        "a CPU-only trial sees {n} GPU(s) it was not given: {list} (the image or the engine exposes GPUs, e.g. NVIDIA_VISIBLE_DEVICES=all baked into the image)",
        n = visible.len(),
        list = visible.join(", ")
    )]
    CpuTrialSeesGpus {
        /// The GPUs it sees, by UUID.
        visible: Vec<String>,
    },
    /// NVML does not work inside a container that was given GPUs.
    #[error(
        "the container was given {count} GPU(s) but NVML is not usable inside it ({reason})",
        reason = reason.as_deref().unwrap_or("no reason given")
    )]
    NoNvml {
        /// GPUs given.
        count: u32,
        /// What the probe said, in NVML's words.
        reason: Option<String>,
    },
    /// The container sees GPUs it was not given.
    #[error(
        "the container sees GPU(s) it was not given: {leaked_list} (given: {given_list}; an image that sets NVIDIA_VISIBLE_DEVICES=all, or an engine default, leaks GPUs)",
        leaked_list = leaked.join(", "),
        given_list = given.join(", ")
    )]
    Leaked {
        /// The GPUs it should not see.
        leaked: Vec<String>,
        /// The GPUs it was given.
        given: Vec<String>,
    },
    /// The container does not see GPUs it was given.
    #[error("the container does not see GPU(s) it was given: {list}", list = missing.join(", "))]
    Missing {
        /// The GPUs it does not see.
        missing: Vec<String>,
    },
    /// The container sees a different number of GPUs than it was given.
    #[error("the container sees {seen} GPU(s), but was given {count}")]
    Count {
        /// GPUs seen.
        seen: usize,
        /// GPUs given.
        count: u32,
    },
    /// The driver inside is not the host's.
    #[error(
        "the driver inside the container ({inside}) is not the host's ({host}): the container carries its own driver libraries"
    )]
    Driver {
        /// The driver version inside.
        inside: String,
        /// The host's driver version.
        host: String,
    },
}

/// How a framework falls short of using its GPUs (`gpu::framework`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameworkFailure {
    /// The framework does not import.
    #[error(
        "{framework} cannot be imported in the runtime: {reason}",
        reason = error.as_deref().unwrap_or("no reason given")
    )]
    NotImported {
        /// `torch`, `tensorflow` or `jax`.
        framework: String,
        /// The import error, in Python's words.
        error: Option<String>,
    },
    /// The framework raised while using the GPU.
    #[error("{framework} failed on the GPU: {error}")]
    Failed {
        /// `torch`, `tensorflow` or `jax`.
        framework: String,
        /// The error, `Name: message`, in the framework's words.
        error: String,
    },
    /// The framework sees no usable GPU on a GPU machine.
    #[error(
        "{framework} {v} reports no usable GPU (built for CUDA {cuda}): the runtime cannot use the machine's GPUs",
        v = version.as_deref().unwrap_or("?"),
        cuda = cuda_version.as_deref().unwrap_or("none")
    )]
    NoGpu {
        /// `torch`, `tensorflow` or `jax`.
        framework: String,
        /// Its version.
        version: Option<String>,
        /// The CUDA version it was built with.
        cuda_version: Option<String>,
    },
    /// The framework sees a different number of GPUs than the trial was given.
    #[error("{framework} sees {seen} GPU(s), but the trial was given {count}")]
    DeviceCount {
        /// `torch`, `tensorflow` or `jax`.
        framework: String,
        /// GPUs seen.
        seen: usize,
        /// GPUs given.
        count: u32,
    },
    /// The framework's compiled architectures do not cover a GPU's compute capability.
    #[error(
        "{framework} was built for {archs} but the GPU has compute capability {capability}: no kernel image and no PTX it can compile (use a build that includes sm_{sm})",
        archs = arch_list.join(", "),
        sm = capability.replace('.', "")
    )]
    NotCovered {
        /// `torch`, `tensorflow` or `jax`.
        framework: String,
        /// The architectures it was compiled for.
        arch_list: Vec<String>,
        /// The GPU's compute capability, `9.0`.
        capability: String,
    },
    /// A tiny computation gave a wrong result.
    #[error("a tiny computation with {framework} on the GPU gave a wrong result")]
    WrongResult {
        /// `torch`, `tensorflow` or `jax`.
        framework: String,
    },
}

/// An image the host's driver cannot run, found before anything runs in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreflightError {
    /// The image declares a CUDA newer than the driver supports. The message keeps NVIDIA's
    /// own words, so that a user searching for them finds this failure too.
    #[error(
        "image `{image}` declares CUDA {}.{}, but the host driver {driver} supports CUDA up to {}.{}: \
         the CUDA driver version is insufficient for CUDA runtime version (update the driver, or use an image built for CUDA {}.{} or older)",
        declared.0, declared.1, supported.0, supported.1, supported.0, supported.1
    )]
    CudaTooNew {
        /// The image.
        image: String,
        /// The CUDA version it declares, `(major, minor)`.
        declared: (u32, u32),
        /// The host driver's version.
        driver: String,
        /// The newest CUDA the driver supports, `(major, minor)`.
        supported: (u32, u32),
    },
}

impl PreflightError {
    /// The known cause: the preflight detects it itself.
    pub fn cause(&self) -> GpuCause {
        match self {
            PreflightError::CudaTooNew { .. } => GpuCause::DriverTooOld,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uuids(list: &[&str]) -> Vec<String> {
        list.iter().map(|u| u.to_string()).collect()
    }

    /// Each failure reads word for word as the trial summaries always have.
    #[test]
    fn every_failure_reads_as_its_trial_summary() {
        let torch = || "torch".to_owned();
        let cases: Vec<(String, &str)> = vec![
            (
                GpuCheckError::Probe(ReportError::Missing {
                    marker: "RUNTIME_MATRIX_PROBE".into(),
                })
                .to_string(),
                "the GPU probe failed: the script printed no `RUNTIME_MATRIX_PROBE` line",
            ),
            (
                GpuCheckError::FrameworkReport(ReportError::Invalid {
                    error: serde_json::from_str::<u8>("x").unwrap_err(),
                })
                .to_string(),
                "the framework check failed: the script's report is not valid: expected value at line 1 column 1",
            ),
            (
                VisibleMismatch::CpuTrialSeesGpus {
                    visible: uuids(&["GPU-a", "GPU-b"]),
                }
                .to_string(),
                "a CPU-only trial sees 2 GPU(s) it was not given: GPU-a, GPU-b (the image or the engine exposes GPUs, e.g. NVIDIA_VISIBLE_DEVICES=all baked into the image)",
            ),
            (
                VisibleMismatch::NoNvml {
                    count: 2,
                    reason: None,
                }
                .to_string(),
                "the container was given 2 GPU(s) but NVML is not usable inside it (no reason given)",
            ),
            (
                VisibleMismatch::Leaked {
                    leaked: uuids(&["GPU-b"]),
                    given: uuids(&["GPU-a", "GPU-c"]),
                }
                .to_string(),
                "the container sees GPU(s) it was not given: GPU-b (given: GPU-a, GPU-c; an image that sets NVIDIA_VISIBLE_DEVICES=all, or an engine default, leaks GPUs)",
            ),
            (
                VisibleMismatch::Missing {
                    missing: uuids(&["GPU-a", "GPU-c"]),
                }
                .to_string(),
                "the container does not see GPU(s) it was given: GPU-a, GPU-c",
            ),
            (
                VisibleMismatch::Count { seen: 1, count: 2 }.to_string(),
                "the container sees 1 GPU(s), but was given 2",
            ),
            (
                VisibleMismatch::Driver {
                    inside: "535.104.05".into(),
                    host: "550.54.15".into(),
                }
                .to_string(),
                "the driver inside the container (535.104.05) is not the host's (550.54.15): the container carries its own driver libraries",
            ),
            (
                FrameworkFailure::NotImported {
                    framework: torch(),
                    error: None,
                }
                .to_string(),
                "torch cannot be imported in the runtime: no reason given",
            ),
            (
                FrameworkFailure::Failed {
                    framework: torch(),
                    error: "RuntimeError: CUDA error".into(),
                }
                .to_string(),
                "torch failed on the GPU: RuntimeError: CUDA error",
            ),
            (
                FrameworkFailure::NoGpu {
                    framework: torch(),
                    version: None,
                    cuda_version: None,
                }
                .to_string(),
                "torch ? reports no usable GPU (built for CUDA none): the runtime cannot use the machine's GPUs",
            ),
            (
                FrameworkFailure::NoGpu {
                    framework: torch(),
                    version: Some("2.4.0".into()),
                    cuda_version: Some("12.4".into()),
                }
                .to_string(),
                "torch 2.4.0 reports no usable GPU (built for CUDA 12.4): the runtime cannot use the machine's GPUs",
            ),
            (
                FrameworkFailure::DeviceCount {
                    framework: torch(),
                    seen: 1,
                    count: 2,
                }
                .to_string(),
                "torch sees 1 GPU(s), but the trial was given 2",
            ),
            (
                FrameworkFailure::WrongResult { framework: torch() }.to_string(),
                "a tiny computation with torch on the GPU gave a wrong result",
            ),
            (
                PreflightError::CudaTooNew {
                    image: "torch:cu126".into(),
                    declared: (12, 6),
                    driver: "550.54.15".into(),
                    supported: (12, 4),
                }
                .to_string(),
                "image `torch:cu126` declares CUDA 12.6, but the host driver 550.54.15 supports CUDA up to 12.4: the CUDA \
                 driver version is insufficient for CUDA runtime version (update the driver, or use an image built for \
                 CUDA 12.4 or older)",
            ),
        ];
        for (actual, expected) in cases {
            assert_eq!(actual, expected);
        }
    }

    #[test]
    fn only_the_causes_a_check_detects_are_carried() {
        let not_covered = FrameworkFailure::NotCovered {
            framework: "torch".into(),
            arch_list: vec!["sm_80".into()],
            capability: "9.0".into(),
        };
        assert_eq!(
            GpuCheckError::from(not_covered).cause(),
            Some(GpuCause::NoKernelImage)
        );
        // A framework's own words name no cause here; exec reads them as outside text.
        let failed = FrameworkFailure::Failed {
            framework: "torch".into(),
            error: "no kernel image is available for execution on the device".into(),
        };
        assert_eq!(GpuCheckError::from(failed).cause(), None);
    }
}
