//! Loading and validating `matrix.toml`. The main type is [`Matrix`].
//!
//! Loading takes two passes: `raw` parses the TOML into plain serde types and collects the
//! keys it did not recognise (they warn, with the nearest key of their table from `keys`);
//! `validate` compiles those types into a [`Matrix`],
//! checking every reference, glob, notebook and duration, and reports each problem with the
//! key path and the entry it concerns.

mod keys;
mod load;
mod matrix;
mod raw;
mod suggest;
mod validate;

pub(crate) use load::print_warnings;
pub use matrix::{
    BUILTIN_PARAMETERS, BUILTIN_PREFIX, Build, CONSISTENCY_PREFIX, CONSISTENT_TAG, Check,
    CheckKind, Consistency, DockerRuntime, Exclusion, Executor, ExpectedFailure, Isolation,
    Machine, MachineTls, Matrix, Parameters, PullPolicy, Readiness, Runtime, Service,
    consistency_check_name,
};
pub(crate) use suggest::{nearest, wildcard_match};

/// The JSON Schema of `matrix.toml`: the raw types' derives, so that it cannot drift from the
/// parser.
pub(crate) fn schema(settings: schemars::generate::SchemaSettings) -> schemars::Schema {
    settings
        .into_generator()
        .into_root_schema_for::<raw::RawMatrix>()
}
