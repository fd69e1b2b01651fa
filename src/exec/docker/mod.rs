//! The Docker executor: each trial runs in a container of its runtime's image on its
//! machine's engine. The main type is `DockerExecutor` (in `run`). Files go in and executed
//! notebooks come out through the engine's archive API, so a remote engine works as well as the
//! local one; every command runs under an in-container time limit, because stopping a
//! `docker exec` client does not stop the process.
//!
//! - `run`: one trial, step by step;
//! - `images`: image resolution, the cross-process build lock, build and pull with progress;
//! - `containers`: the container guard (`Lease`), shared containers, reaping and `clean`;
//! - `services`: services started once per run and engine, and their networks;
//! - `staging`: the trial's files as a tar archive;
//! - `diagnosis`: missing tools, error categories, what the container went through.

mod containers;
mod diagnosis;
mod images;
mod run;
mod runners;
mod services;
mod staging;

pub(crate) use containers::run_once;
pub use containers::{Keep, clean_all};
pub(crate) use diagnosis::missing_tool;
pub(crate) use run::{DockerExecutor, engine_address};
pub(crate) use services::is_local as is_local_engine;
