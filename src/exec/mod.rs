//! Running one trial's check. The main type is [`Executor`], which dispatches each trial to
//! its runtime's executor (host or Docker) and returns an [`Outcome`]. It never panics on bad
//! input and never leaves a process or a container behind.
//!
//! The public API is synchronous: the executor owns one tokio runtime for the Docker engine and
//! blocks on it, so nothing outside knows about tokio or bollard.

mod data;
mod docker;
mod executor;
mod host;
mod html;
mod inputs;
mod invocation;
mod live;
pub mod process;
mod provision;
mod redact;
pub(crate) mod runner;
mod verdict;

pub use docker::{Keep, clean_all};
pub(crate) use docker::{engine_address, is_local_engine, missing_tool, run_once};
pub use executor::{Executor, Outcome, reap_orphan_processes};
pub use invocation::trial_container;
pub use live::{install_interrupt_handler, interrupt_cleaned_up, interrupted};
pub use provision::default_cache;
pub(crate) use provision::tail;
