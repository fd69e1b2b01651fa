//! `[[exclude]]` and `[[expected-failures]]`: rules over trials, checked against the runtimes,
//! machines and checks they name.

use super::compiler::Compiler;
use crate::config::matrix::{Exclusion, ExpectedFailure, Runtime};
use crate::config::raw::{RawMatrix, RawRule};
use crate::config::suggest::did_you_mean;
use std::collections::BTreeSet;

/// The names rules may refer to.
struct Names<'a> {
    runtimes: Vec<&'a str>,
    machines: &'a [&'a str],
    checks: BTreeSet<&'a str>,
}

impl Compiler {
    /// The exclusions and expected failures; a runtime excluded entirely is a problem, and an
    /// expected failure that covers nothing warns.
    pub(super) fn rules(
        &mut self,
        raw: &RawMatrix,
        runtimes: &[Runtime],
        machine_names: &[&str],
    ) -> (Vec<Exclusion>, Vec<ExpectedFailure>) {
        let names = Names {
            runtimes: raw.runtimes.keys().map(String::as_str).collect(),
            machines: machine_names,
            checks: runtimes
                .iter()
                .flat_map(|r| r.checks.iter().map(|k| k.name.as_str()))
                .collect(),
        };
        let mut exclusions = Vec::new();
        for (i, raw_rule) in raw.exclude.iter().enumerate() {
            let key = format!("exclude[{i}]");
            if raw_rule.matches.is_some() {
                self.problem(
                    format!("{key}.matches"),
                    "`matches` only applies to expected-failures",
                );
            }
            exclusions.push(self.rule(&key, raw_rule, &names));
        }
        let mut expected_failures = Vec::new();
        for (i, raw_rule) in raw.expected_failures.iter().enumerate() {
            let key = format!("expected-failures[{i}]");
            let Exclusion {
                runtime,
                machine,
                check,
                reason,
            } = self.rule(&key, raw_rule, &names);
            expected_failures.push(ExpectedFailure {
                runtime,
                machine,
                check,
                reason,
                matches: raw_rule.matches.clone(),
            });
        }
        self.fully_excluded(runtimes, &exclusions);
        self.stale_expected_failures(runtimes, &expected_failures);
        (exclusions, expected_failures)
    }

    /// A rule's runtime, machine and check patterns (`*` when unset) and its reason, the fields
    /// both kinds of rule share. Literal names must exist; wildcards are taken as written.
    fn rule(&mut self, key: &str, raw_rule: &RawRule, names: &Names) -> Exclusion {
        let runtime = raw_rule.runtime.clone().unwrap_or_else(|| "*".into());
        let machine = raw_rule.machine.clone().unwrap_or_else(|| "*".into());
        let check = raw_rule.check.clone().unwrap_or_else(|| "*".into());
        let literal = |p: &str| !p.contains(['*', '?']);
        if literal(&runtime) && !names.runtimes.contains(&runtime.as_str()) {
            let hint = did_you_mean(&runtime, names.runtimes.iter().copied());
            self.problem(
                format!("{key}.runtime"),
                format!("unknown runtime `{runtime}`{hint}"),
            );
        }
        if literal(&machine) && !names.machines.contains(&machine.as_str()) {
            let hint = did_you_mean(&machine, names.machines.iter().copied());
            self.problem(
                format!("{key}.machine"),
                format!("unknown machine `{machine}`{hint}"),
            );
        }
        if literal(&check) && !names.checks.contains(check.as_str()) {
            let hint = did_you_mean(&check, names.checks.iter().copied());
            self.problem(format!("{key}.check"), format!("no runtime has a check `{check}`{hint}; checks are named `nb::<path>` or `cmd::<name>`"));
        }
        let reason = raw_rule.reason.clone().unwrap_or_default();
        if reason.trim().is_empty() {
            self.problem(
                format!("{key}.reason"),
                "a `reason` is required, so that reports can say why",
            );
        }
        Exclusion {
            runtime,
            machine,
            check,
            reason,
        }
    }

    /// A runtime whose every trial is excluded is a contradiction, not a way to disable it.
    fn fully_excluded(&mut self, runtimes: &[Runtime], exclusions: &[Exclusion]) {
        for runtime in runtimes {
            let trials = runtime
                .machines
                .iter()
                .flat_map(|m| runtime.checks.iter().map(move |k| (m, k)));
            let mut trials = trials.peekable();
            let declared = trials.peek().is_some();
            let all_excluded = trials.all(|(machine, check)| {
                exclusions
                    .iter()
                    .any(|e| e.covers(&runtime.name, machine, &check.name))
            });
            if declared && all_excluded {
                self.problem(
                    format!("runtimes.{}", runtime.name),
                    "every trial of this runtime is excluded by [[exclude]] rules (remove the runtime, or narrow the rules)",
                );
            }
        }
    }

    /// An expected failure that covers no trial is left over from a fix; it warns.
    fn stale_expected_failures(&mut self, runtimes: &[Runtime], rules: &[ExpectedFailure]) {
        for (i, rule) in rules.iter().enumerate() {
            let covers_any = runtimes.iter().any(|runtime| {
                runtime.machines.iter().any(|m| {
                    runtime
                        .checks
                        .iter()
                        .any(|k| rule.covers(&runtime.name, m, &k.name))
                })
            });
            if !covers_any {
                self.warn(format!(
                    "expected-failures[{i}] covers no trial; it is stale"
                ));
            }
        }
    }
}
