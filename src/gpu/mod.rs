//! GPU truth. The main type is [`HostGpus`]: what NVML says this host has, read once per
//! process through nvml-wrapper and never through Docker. Machines are matched against it,
//! trials lease specific GPUs from it ([`lease`]), and the checks `gpu::visible` and
//! `gpu::framework` compare what a runtime sees and can use with what it was given ([`checks`]);
//! their failures are typed ([`GpuCheckError`]).

pub mod checks;
mod detect;
mod failures;
pub mod lease;
pub(crate) mod usage;

pub use checks::{FRAMEWORK_SCRIPT, PROBE_SCRIPT, ProbeReport, framework_verdict, visible_verdict};
pub use detect::{Detection, Gpu, HostGpus, detect, use_library};
#[cfg(test)]
pub(crate) use failures::{FrameworkFailure, VisibleMismatch};
pub use failures::{GpuCheckError, PreflightError};
