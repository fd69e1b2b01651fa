//! `[[exclude]]` and `[[expected-failures]]`: rules over trials, checked against the runtimes,
//! machines and checks they name.

use super::compiler::Compiler;
use crate::config::matrix::{
    CONSISTENCY_PREFIX, Consistency, Exclusion, ExpectedFailure, Runtime, consistency_check_name,
};
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
        consistency: &Consistency,
    ) -> (Vec<Exclusion>, Vec<ExpectedFailure>) {
        let consistency_checks: Vec<String> = consistency
            .notebooks
            .iter()
            .map(|relative| consistency_check_name(relative))
            .collect();
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
            if raw_rule
                .check
                .as_deref()
                .is_some_and(|check| check.starts_with(CONSISTENCY_PREFIX))
            {
                self.problem(
                    format!("{key}.check"),
                    "a consistency check cannot be excluded (drop its notebook from consistency.notebooks, or declare the difference in [[expected-failures]])",
                );
                continue;
            }
            exclusions.push(self.rule(&key, raw_rule, &names));
        }
        let mut expected_failures = Vec::new();
        for (i, raw_rule) in raw.expected_failures.iter().enumerate() {
            let key = format!("expected-failures[{i}]");
            if let Some(check) = raw_rule
                .check
                .as_deref()
                .filter(|check| check.starts_with(CONSISTENCY_PREFIX))
            {
                expected_failures.push(self.expected_difference(
                    &key,
                    raw_rule,
                    check,
                    &consistency_checks,
                ));
                continue;
            }
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
        self.stale_expected_failures(runtimes, &expected_failures, &consistency_checks);
        (exclusions, expected_failures)
    }

    /// An expected difference: an `[[expected-failures]]` rule over a consistency check,
    /// which has no runtime or machine of its own.
    fn expected_difference(
        &mut self,
        key: &str,
        raw_rule: &RawRule,
        check: &str,
        consistency_checks: &[String],
    ) -> ExpectedFailure {
        for (field, value) in [
            ("runtime", &raw_rule.runtime),
            ("machine", &raw_rule.machine),
        ] {
            if value.is_some() {
                self.problem(
                    format!("{key}.{field}"),
                    format!(
                        "`{check}` compares every runtime and machine, so a rule over it takes no `{field}` (remove it; `matches` can name the runtimes in the difference)"
                    ),
                );
            }
        }
        let literal = !check.contains(['*', '?']);
        if literal && !consistency_checks.iter().any(|name| name == check) {
            let hint = did_you_mean(check, consistency_checks.iter().map(String::as_str));
            self.problem(
                format!("{key}.check"),
                format!(
                    "no consistency check `{check}`{hint}; consistency checks are named `consistency::nb::<path>` for the notebooks in consistency.notebooks"
                ),
            );
        }
        let reason = raw_rule.reason.clone().unwrap_or_default();
        if reason.trim().is_empty() {
            self.problem(
                format!("{key}.reason"),
                "a `reason` is required, so that reports can say why",
            );
        }
        ExpectedFailure {
            runtime: "*".into(),
            machine: "*".into(),
            check: check.to_owned(),
            reason,
            matches: raw_rule.matches.clone(),
        }
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
    fn stale_expected_failures(
        &mut self,
        runtimes: &[Runtime],
        rules: &[ExpectedFailure],
        consistency_checks: &[String],
    ) {
        for (i, rule) in rules.iter().enumerate() {
            if rule.check.starts_with(CONSISTENCY_PREFIX) {
                if !consistency_checks
                    .iter()
                    .any(|name| rule.covers_consistency(name))
                {
                    self.warn(format!(
                        "expected-failures[{i}] covers no consistency check; it is stale"
                    ));
                }
                continue;
            }
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
