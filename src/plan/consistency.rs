//! Planning consistency checks: one per notebook declared in `[consistency]` that a planned
//! trial runs, from the matrix alone (listing never reads a notebook).

use super::TrialSpec;
use super::select::Selection;
use crate::config::{CheckKind, ExpectedFailure, Matrix, consistency_check_name};
use crate::record::Sanitizer;
use serde::Serialize;

/// The tag every consistency check carries; `RUNTIME_MATRIX_TAGS=!consistency` plans none.
pub const CONSISTENCY_TAG: &str = "consistency";

/// A consistency check: the tagged cells of one notebook compared across the runtimes and
/// machines that ran it. It has no runtime or machine, runs in every stage, and runs after
/// the trials it compares.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ConsistencySpec {
    /// `consistency::nb::<path>`.
    pub name: String,
    /// The notebook, relative to notebooks-dir.
    pub notebook: String,
    /// The check of its trials: `nb::<path>`.
    pub notebook_check: String,
    /// The tag of the compared cells.
    pub tag: String,
    /// Relative tolerance for numbers, with the same absolute floor near 0; 0 is exact.
    pub float_tolerance: f64,
    /// Replacements applied to every compared text, in order.
    pub sanitizers: Vec<Sanitizer>,
    /// The trials of this plan that run the notebook.
    pub trials: Vec<String>,
    /// Its tags: `consistency`.
    pub tags: Vec<String>,
    /// The expected difference declared for it, if any.
    pub expected_failure: Option<ExpectedFailure>,
}

/// The consistency checks of `trials` (the planned trials): one per declared notebook that
/// one of them runs, unless the tag filter excludes `consistency`.
pub(super) fn consistency_checks(
    matrix: &Matrix,
    selection: &Selection,
    trials: &[TrialSpec],
) -> Vec<ConsistencySpec> {
    let declared = &matrix.consistency;
    if selection.tags.exclude.iter().any(|t| t == CONSISTENCY_TAG) {
        return Vec::new();
    }
    declared
        .notebooks
        .iter()
        .filter_map(|notebook| {
            let of_notebook: Vec<&TrialSpec> = trials
                .iter()
                .filter(|spec| {
                    spec.check.consistent_tag.is_some()
                        && matches!(&spec.check.kind, CheckKind::Notebook { relative, .. } if relative == notebook)
                })
                .collect();
            let first = of_notebook.first()?;
            let name = consistency_check_name(notebook);
            Some(ConsistencySpec {
                expected_failure: matrix
                    .expected_failures
                    .iter()
                    .find(|rule| rule.covers_consistency(&name))
                    .cloned(),
                name,
                notebook: notebook.clone(),
                notebook_check: first.check.name.clone(),
                tag: declared.tag.clone(),
                float_tolerance: declared.float_tolerance,
                sanitizers: declared.sanitizers.clone(),
                trials: of_notebook.iter().map(|spec| spec.name.clone()).collect(),
                tags: vec![CONSISTENCY_TAG.to_owned()],
            })
        })
        .collect()
}
