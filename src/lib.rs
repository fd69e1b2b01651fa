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

pub mod config;
pub mod doctor;
pub mod engine;
pub mod error;
pub mod exec;
mod fsx;
pub mod gpu;
pub mod harness;
mod names;
pub mod notebook;
pub mod plan;
pub mod record;
pub mod report;
pub mod settings;
pub mod verdict;

pub use config::Matrix;
pub use harness::Harness;
pub use plan::{Plan, Selection, TrialSpec};
