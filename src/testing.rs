//! Hooks for runtime-matrix's own integration tests, which drive parts that have no public
//! API: not for users, and may change in any release.

pub use crate::exec::Executor;
pub use crate::gpu::checks::parse_marked;
pub use crate::gpu::{HostGpus, PROBE_SCRIPT, ProbeReport, visible_verdict};
