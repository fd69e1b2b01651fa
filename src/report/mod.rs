//! Merging records into reports. The main type is [`Report`]; [`json`], [`markdown`] and
//! [`junit`] render it to any `impl Write`; [`baseline`] compares it with an earlier run's.

pub mod baseline;
pub(crate) mod console;
pub mod json;
pub mod junit;
pub mod markdown;
mod merge;
pub(crate) mod text;

pub use baseline::{Baseline, Comparison, Thresholds};
pub use merge::{
    NotRun, REPORT_SCHEMA, Report, RunSetup, Summary, read_report, write_all, write_from_dirs,
};
