//! GPU truth. The main type is [`HostGpus`]: what NVML says this host has, read once per
//! process through nvml-wrapper and never through Docker. Machines are matched against it,
//! trials lease specific GPUs from it ([`lease`]), and the checks `gpu::visible` and
//! `gpu::framework` compare what a runtime sees and can use with what it was given ([`checks`]);
//! their failures are typed ([`GpuCheckError`]).

pub mod checks;
mod detect;
mod failures;
pub mod lease;

pub use checks::{FrameworkReport, ProbeReport, framework_verdict, visible_verdict};
pub use detect::{Detection, Gpu, HostGpus, detect, detect_with, use_library};
pub use failures::{FrameworkFailure, GpuCheckError, PreflightError, ReportError, VisibleMismatch};

/// The in-container probe: Python and ctypes only.
pub const PROBE_SCRIPT: &str = include_str!("probe.py");
/// The framework check: imports torch, TensorFlow or JAX and uses the GPUs it was given.
pub const FRAMEWORK_SCRIPT: &str = include_str!("framework.py");
