//! The Docker engine, wrapped once. The main type is [`Engine`]: every engine operation the
//! project needs, each turning the engine's raw error into an
//! [`EngineError`](crate::error::EngineError) that says what was being done and what to do
//! about it. [`ContainerSpec`] describes a container without
//! contacting any engine, so that `plan` can show it. The engine knows containers, images and
//! archives, and the networks that join services to runners, only: nothing of matrices, plans or trials.

pub mod auth;
mod client;
mod container;
mod image;
mod network;
mod spec;

pub use client::{Address, DEFAULT_REQUEST_LIMIT, Engine, TlsFiles};
pub use container::{
    Condition, ExecChunk, ExecOutcome, LABEL_HOST, LABEL_KEEP, LABEL_PID, LABEL_PID_START,
    LABEL_RUN, LABEL_TRIAL,
};
pub use image::{ImageInfo, PullProgress};
pub use spec::{CONTAINER_ROOT, ContainerSpec, GpuRequest, Serves};
