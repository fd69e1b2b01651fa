//! runtime-matrix: prove that every runtime works on every machine.
//!
//! A matrix of runtimes (environments notebooks run in) and machines (CPU-only, GPU models
//! and counts) is declared in `matrix.toml`. [`Matrix::load`] validates it, [`Plan::new`]
//! expands it into one trial per (runtime, machine, check), and [`Harness`] runs those trials
//! as libtest trials, so that `cargo test`, its filters and cargo-nextest all work. Every trial
//! leaves a [`record::TrialRecord`]; [`report`] merges records into JSON, Markdown and JUnit.
//!
//! A project's `tests/matrix.rs` is a few lines:
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     runtime_matrix::Harness::from_env().run()
//! }
//! ```

#![deny(missing_docs)]

mod ci;
#[doc(hidden)]
pub mod cli;
pub mod config;
mod consistency;
mod doctor;
mod engine;
pub mod error;
mod exec;
mod fsx;
mod gpu;
mod harness;
mod names;
mod notebook;
pub mod plan;
mod progress;
pub mod record;
pub mod report;
mod reuse;
mod runs;
mod sanitise;
pub mod schema;
mod settings;
#[doc(hidden)]
pub mod testing;
mod verdict;

pub use config::Matrix;
pub use exec::Keep;
pub use harness::Harness;
pub use plan::{Plan, Selection, TrialSpec};
pub use settings::Options;
