//! `[consistency]`: the notebooks compared across runtimes and machines, the tag of their
//! compared cells, and the normalisation (sanitizers, float tolerance) of what they print.
//!
//! Declared in config rather than found by looking for tagged cells, because listing never
//! reads a notebook (cargo-nextest lists once per trial): the checks a run plans must follow
//! from matrix.toml alone.

use super::compiler::{Compiler, shown};
use crate::config::matrix::{CONSISTENT_TAG, CheckKind, Consistency, Runtime};
use crate::config::raw::RawConsistency;
use crate::record::Sanitizer;
use std::collections::BTreeSet;

impl Compiler {
    /// The `[consistency]` section; the runtimes' checks of each declared notebook get its tag.
    pub(super) fn consistency(
        &mut self,
        raw: Option<&RawConsistency>,
        runtimes: &mut [Runtime],
    ) -> Consistency {
        let Some(raw) = raw else {
            return Consistency {
                tag: CONSISTENT_TAG.to_owned(),
                ..Consistency::default()
            };
        };
        let tag = raw.tag.clone().unwrap_or_else(|| CONSISTENT_TAG.to_owned());
        if tag.trim().is_empty() || tag.chars().any(char::is_control) {
            self.problem(
                "consistency.tag",
                format!(
                    "`{}` is not a tag: use a non-empty word without control characters (default `{CONSISTENT_TAG}`)",
                    shown(&tag)
                ),
            );
        }
        let float_tolerance = raw.float_tolerance.unwrap_or(0.0);
        if !float_tolerance.is_finite() || float_tolerance < 0.0 {
            self.problem(
                "consistency.float-tolerance",
                format!(
                    "`{float_tolerance:e}` is not a tolerance: use 0 (exact) or a small positive relative tolerance such as 1e-9"
                ),
            );
        }
        let mut sanitizers = Vec::new();
        for (i, sanitizer) in raw.sanitizers.iter().enumerate() {
            let key = format!("consistency.sanitizers[{i}].regex");
            if sanitizer.regex.is_empty() {
                self.problem(
                    key,
                    "an empty regex matches everywhere (use e.g. '\\d{4}-\\d{2}-\\d{2}T[0-9:.]+')",
                );
                continue;
            }
            if let Err(error) = regex::Regex::new(&sanitizer.regex) {
                let error = error.to_string();
                let why = error.lines().last().unwrap_or_default().trim();
                self.problem(
                    key,
                    format!("`{}` is not a valid regex ({why})", shown(&sanitizer.regex)),
                );
                continue;
            }
            sanitizers.push(Sanitizer {
                regex: sanitizer.regex.clone(),
                replace: sanitizer.replace.clone().unwrap_or_default(),
            });
        }

        // Declared notebooks are those the globs match among the runtimes' notebooks: a
        // notebook no runtime runs has nothing to compare.
        let notebooks_of_runtimes: BTreeSet<String> = runtimes
            .iter()
            .flat_map(|runtime| &runtime.checks)
            .filter_map(|check| match &check.kind {
                CheckKind::Notebook { relative, .. } => Some(relative.clone()),
                _ => None,
            })
            .collect();
        let mut notebooks = BTreeSet::new();
        let options = glob::MatchOptions {
            require_literal_separator: true,
            ..Default::default()
        };
        for glob in &raw.notebooks {
            let Some(pattern) = self.glob_pattern("consistency.notebooks", glob) else {
                continue;
            };
            let matched: Vec<&String> = notebooks_of_runtimes
                .iter()
                .filter(|relative| pattern.matches_with(relative, options))
                .collect();
            if matched.is_empty() {
                self.problem(
                    "consistency.notebooks",
                    format!(
                        "`{}` matches no notebook of any runtime (the runtimes' `notebooks` globs select the notebooks that run)",
                        shown(glob)
                    ),
                );
            }
            notebooks.extend(matched.into_iter().cloned());
        }
        if raw.notebooks.is_empty() {
            self.warn("consistency.notebooks is empty: no notebook is compared");
        }
        for check in runtimes.iter_mut().flat_map(|runtime| &mut runtime.checks) {
            if let CheckKind::Notebook { relative, .. } = &check.kind
                && notebooks.contains(relative)
            {
                check.consistent_tag = Some(tag.clone());
            }
        }
        Consistency {
            notebooks: notebooks.into_iter().collect(),
            tag,
            float_tolerance,
            sanitizers,
        }
    }
}
