//! Turning a [`Matrix`](crate::Matrix) into trials. The main type is [`Plan`]: the trial specs
//! this host runs, in a deterministic order, and those it does not, each with the reason.
//!
//! Planning reads nothing but the matrix: listing a large matrix must stay cheap, because
//! cargo-nextest lists once per trial.

mod consistency;
mod document;
mod expand;
mod select;

pub use consistency::{CONSISTENCY_TAG, ConsistencySpec};
pub use document::PLAN_SCHEMA;
pub(crate) use document::PlanDocument;
pub(crate) use expand::SHARD_REASON;
pub use expand::{Excluded, Plan, TrialSpec};
pub(crate) use select::shard_of;
pub use select::{MachineSelection, Selection, TagFilter};
