//! `[stages]`, and the `stages = [...]` lists of runtimes, commands and overrides.

use super::compiler::Compiler;
use crate::config::raw::RawStages;
use crate::config::suggest::did_you_mean;
use std::collections::BTreeSet;

const DEFAULT_STAGES: [&str; 3] = ["pre-merge", "nightly", "release"];

impl Compiler {
    /// The declared stages, in order, and the default one.
    pub(super) fn declared_stages(&mut self, raw: Option<&RawStages>) -> (Vec<String>, String) {
        let Some(RawStages { names, default }) = raw else {
            return (
                DEFAULT_STAGES.map(String::from).to_vec(),
                DEFAULT_STAGES[0].to_owned(),
            );
        };
        let mut seen = BTreeSet::new();
        for name in names {
            self.name("stages.names", "stage", name);
            if !seen.insert(name) {
                self.problem("stages.names", format!("stage `{name}` is declared twice"));
            }
        }
        if names.is_empty() {
            self.problem("stages.names", "declare at least one stage");
        }
        let default = default
            .clone()
            .or_else(|| names.first().cloned())
            .unwrap_or_default();
        if !names.is_empty() && !names.contains(&default) {
            let hint = did_you_mean(&default, names.iter().map(String::as_str));
            self.problem(
                "stages.default",
                format!("default stage `{default}` is not declared in stages.names{hint}"),
            );
        }
        (names.clone(), default)
    }

    /// A stage list at `key`, each stage checked against `declared`; `None` when unset.
    pub(super) fn stage_list(
        &mut self,
        key: &str,
        stages: Option<&Vec<String>>,
        declared: &[String],
    ) -> Option<Vec<String>> {
        let stages = stages?;
        for stage in stages {
            if !declared.contains(stage) {
                let hint = did_you_mean(stage, declared.iter().map(String::as_str));
                self.problem(
                    key,
                    format!(
                        "unknown stage `{stage}`{hint} (declared: {})",
                        declared.join(", ")
                    ),
                );
            }
        }
        if stages.is_empty() {
            self.problem(
                key,
                "an empty stage list would never run (remove the key to run in every stage)",
            );
        }
        Some(stages.clone())
    }
}
