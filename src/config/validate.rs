//! The second pass: compiling [`RawMatrix`] into a [`Matrix`], reporting every problem with
//! its key path.

use super::matrix::*;
use super::raw::*;
use super::suggest::did_you_mean;
use crate::error::{ConfigError, Problem, Problems};
use crate::notebook::check_notebook;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path};
use std::time::Duration;

const DEFAULT_STAGES: [&str; 3] = ["pre-merge", "nightly", "release"];
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
const DEFAULT_CELL_TIMEOUT: Duration = Duration::from_secs(300);
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
const EXECUTORS: [&str; 2] = ["host", "docker"];
const PULL_POLICIES: [&str; 3] = ["if-missing", "always", "never"];
const FRAMEWORKS: [&str; 3] = ["torch", "tensorflow", "jax"];
/// Time for the GPU checks, which start Python once (and import a framework).
const GPU_CHECK_TIMEOUT: Duration = Duration::from_secs(300);
/// Top-level keys, for suggestions when an unknown key is close to one.
const KNOWN_KEYS: [&str; 7] = [
    "notebooks-dir",
    "stages",
    "machines",
    "runtimes",
    "overrides",
    "exclude",
    "expected-failures",
];
const RUNTIME_KEYS: [&str; 22] = [
    "executor",
    "framework",
    "gpu-checks",
    "image",
    "pull",
    "build",
    "memory",
    "pids",
    "network",
    "reuse-container",
    "secrets",
    "python",
    "packages",
    "description",
    "notebooks",
    "commands",
    "env",
    "machines",
    "timeout",
    "cell-timeout",
    "tags",
    "stages",
];

struct Compiler {
    problems: Vec<Problem>,
    warnings: Vec<String>,
}

impl Compiler {
    fn problem(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    fn duration(&mut self, key: &str, text: Option<&str>, default: Duration) -> Duration {
        let Some(text) = text else { return default };
        match humantime::parse_duration(text) {
            Ok(duration) if duration.is_zero() => {
                self.problem(
                    key,
                    format!("timeout `{text}` is zero (use e.g. \"90s\" or \"10m\")"),
                );
                default
            }
            Ok(duration) if duration > MAX_TIMEOUT => {
                self.problem(key, format!("timeout `{text}` is longer than 24h"));
                default
            }
            Ok(duration) => duration,
            Err(_) => {
                self.problem(
                    key,
                    format!("invalid duration `{text}` (use e.g. \"90s\", \"10m\" or \"1h 30m\")"),
                );
                default
            }
        }
    }

    fn name(&mut self, key: &str, what: &str, name: &str) {
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            self.problem(
                key,
                format!("{what} name `{name}` may only use letters, digits, `-`, `_` and `.`"),
            );
        }
    }

    fn stages(
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

pub(super) fn compile(
    path: &Path,
    raw: RawMatrix,
    unknown_keys: Vec<String>,
) -> Result<Matrix, ConfigError> {
    let file = path.display().to_string();
    // Absolute, because checks run with a scratch folder as their working directory.
    let root = std::path::absolute(path)
        .ok()
        .and_then(|file| file.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| ".".into());
    let mut c = Compiler {
        problems: Vec::new(),
        warnings: Vec::new(),
    };

    for key in unknown_keys {
        let last = key.rsplit('.').next().unwrap_or(&key);
        let hint = if key.contains('.') {
            did_you_mean(
                last,
                RUNTIME_KEYS
                    .iter()
                    .chain(&[
                        "gpus", "gpu", "run", "reason", "matches", "check", "runtime", "machine",
                    ])
                    .copied(),
            )
        } else {
            did_you_mean(last, KNOWN_KEYS)
        };
        c.warnings
            .push(format!("{file}: unknown key `{key}` is ignored{hint}"));
    }

    // Stages.
    let (stages, default_stage) = match &raw.stages {
        Some(RawStages { names, default }) => {
            let mut seen = BTreeSet::new();
            for name in names {
                c.name("stages.names", "stage", name);
                if !seen.insert(name) {
                    c.problem("stages.names", format!("stage `{name}` is declared twice"));
                }
            }
            if names.is_empty() {
                c.problem("stages.names", "declare at least one stage");
            }
            let default = default
                .clone()
                .or_else(|| names.first().cloned())
                .unwrap_or_default();
            if !names.is_empty() && !names.contains(&default) {
                let hint = did_you_mean(&default, names.iter().map(String::as_str));
                c.problem(
                    "stages.default",
                    format!("default stage `{default}` is not declared in stages.names{hint}"),
                );
            }
            (names.clone(), default)
        }
        None => (
            DEFAULT_STAGES.map(String::from).to_vec(),
            DEFAULT_STAGES[0].to_owned(),
        ),
    };

    // Machines.
    let mut machines = Vec::new();
    for (name, m) in &raw.machines {
        let key = format!("machines.{name}");
        c.name(&key, "machine", name);
        if m.gpus == 0 && m.gpu.is_some() {
            c.problem(
                &key,
                "`gpu` names a GPU model but `gpus` is 0 (set gpus to the number of GPUs)",
            );
        }
        machines.push(Machine {
            name: name.clone(),
            gpus: m.gpus,
            gpu_model: m.gpu.clone(),
            docker: m.docker.clone(),
            description: m.description.clone(),
            tags: m.tags.clone(),
        });
    }
    if machines.is_empty() {
        c.problem(
            "machines",
            "no machines declared (add e.g. `[machines.cpu]` with `gpus = 0`)",
        );
    }
    let machine_names: Vec<&str> = raw.machines.keys().map(String::as_str).collect();

    // Notebooks folder.
    let notebooks_rel = raw
        .notebooks_dir
        .clone()
        .unwrap_or_else(|| "notebooks".into());
    let notebooks_dir = root.join(&notebooks_rel);
    let any_notebooks = raw.runtimes.values().any(|r| !r.notebooks.is_empty());
    if any_notebooks && !notebooks_dir.is_dir() {
        c.problem(
            "notebooks-dir",
            format!("notebooks folder `{}` does not exist", notebooks_rel),
        );
    }

    // Overrides are compiled to glob patterns once.
    let mut overrides = Vec::new();
    for (i, o) in raw.overrides.iter().enumerate() {
        let key = format!("overrides[{i}]");
        let pattern = glob_pattern(&mut c, &format!("{key}.notebooks"), &o.notebooks);
        let timeout = o
            .timeout
            .as_deref()
            .map(|t| c.duration(&format!("{key}.timeout"), Some(t), DEFAULT_TIMEOUT));
        let cell_timeout = o.cell_timeout.as_deref().map(|t| {
            c.duration(
                &format!("{key}.cell-timeout"),
                Some(t),
                DEFAULT_CELL_TIMEOUT,
            )
        });
        let stages = c.stages(&format!("{key}.stages"), o.stages.as_ref(), &stages);
        overrides.push((pattern, timeout, cell_timeout, o, stages, false));
    }

    // Runtimes and their checks.
    let mut runtimes = Vec::new();
    let mut notebook_cache: BTreeMap<std::path::PathBuf, Result<Option<String>, String>> =
        BTreeMap::new();
    for (name, r) in &raw.runtimes {
        let key = format!("runtimes.{name}");
        c.name(&key, "runtime", name);
        let default_executor = if r.image.is_some() { "docker" } else { "host" };
        let executor_name = r.executor.as_deref().unwrap_or(default_executor);
        let executor = match executor_name {
            "host" => {
                for (set, name) in [
                    (r.image.is_some(), "image"),
                    (r.pull.is_some(), "pull"),
                    (r.build.is_some(), "build"),
                    (r.memory.is_some(), "memory"),
                    (r.pids.is_some(), "pids"),
                    (r.network.is_some(), "network"),
                    (r.reuse_container, "reuse-container"),
                    (!r.secrets.is_empty(), "secrets"),
                ] {
                    if set {
                        c.problem(
                            format!("{key}.{name}"),
                            "only applies to docker runtimes (set `image`, or executor = \"docker\")",
                        );
                    }
                }
                Executor::Host {
                    python: r.python.clone().unwrap_or_else(|| "python3".into()),
                    packages: r.packages.clone(),
                }
            }
            "docker" => Executor::Docker(Box::new(docker_runtime(&mut c, &key, &root, r))),
            other => {
                let hint = did_you_mean(other, EXECUTORS);
                c.problem(
                    format!("{key}.executor"),
                    format!("unknown executor `{other}`{hint} (known: host, docker)"),
                );
                continue;
            }
        };
        for env_name in r.env.keys() {
            if env_name.is_empty() || env_name.contains('=') {
                c.problem(
                    format!("{key}.env"),
                    format!("`{env_name}` is not a valid environment variable name"),
                );
            }
        }
        let targets = match &r.machines {
            None => machine_names.iter().map(|m| m.to_string()).collect(),
            Some(list) => {
                let mut seen = BTreeSet::new();
                for machine in list {
                    if !machine_names.contains(&machine.as_str()) {
                        let hint = did_you_mean(machine, machine_names.iter().copied());
                        c.problem(
                            format!("{key}.machines"),
                            format!("unknown machine `{machine}`{hint}"),
                        );
                    } else if !seen.insert(machine) {
                        c.problem(
                            format!("{key}.machines"),
                            format!("machine `{machine}` is listed twice"),
                        );
                    }
                }
                if list.is_empty() {
                    c.problem(format!("{key}.machines"), "an empty machine list would never run (remove the key to target every machine)");
                }
                let mut list = list.clone();
                list.sort();
                list.dedup();
                list
            }
        };
        let timeout = c.duration(
            &format!("{key}.timeout"),
            r.timeout.as_deref(),
            DEFAULT_TIMEOUT,
        );
        let cell_timeout = c.duration(
            &format!("{key}.cell-timeout"),
            r.cell_timeout.as_deref(),
            DEFAULT_CELL_TIMEOUT,
        );
        let runtime_stages = c
            .stages(&format!("{key}.stages"), r.stages.as_ref(), &stages)
            .unwrap_or_else(|| stages.clone());

        let mut checks = Vec::new();
        let mut notebooks = BTreeSet::new();
        for pattern_text in &r.notebooks {
            let glob_key = format!("{key}.notebooks");
            let Some(pattern) = glob_pattern(&mut c, &glob_key, pattern_text) else {
                continue;
            };
            let (found, unnamable) = notebook_files(&notebooks_dir, &pattern);
            for name in &unnamable {
                c.problem(
                    &glob_key,
                    format!("notebook file name `{name}` is not valid UTF-8 (rename it: trial names are text)"),
                );
            }
            if found.is_empty() && unnamable.is_empty() {
                c.problem(
                    &glob_key,
                    format!(
                        "`{pattern_text}` matches no notebook under `{}`",
                        notebooks_rel
                    ),
                );
            }
            notebooks.extend(found);
        }
        for relative in notebooks {
            let path = notebooks_dir.join(&relative);
            let verdict = notebook_cache
                .entry(path.clone())
                .or_insert_with(|| {
                    let summary = check_notebook(&path).map_err(|e| e.to_string())?;
                    if summary.kernel.is_none() {
                        c.warnings.push(format!(
                            "{file}: notebook `{relative}` declares no kernel (metadata.kernelspec); nbconvert runs it with its default kernel"
                        ));
                    }
                    Ok(summary.kernel)
                });
            if let Err(error) = verdict {
                let message = format!("notebook `{relative}` {error}");
                c.problem(format!("{key}.notebooks"), message);
                continue;
            }
            let mut check = Check {
                name: format!(
                    "nb::{}",
                    relative.strip_suffix(".ipynb").unwrap_or(&relative)
                ),
                kind: CheckKind::Notebook {
                    relative: relative.clone(),
                    path,
                },
                timeout,
                cell_timeout,
                tags: r.tags.clone(),
                stages: runtime_stages.clone(),
            };
            for (pattern, o_timeout, o_cell, o, o_stages, used) in overrides.iter_mut() {
                if pattern.as_ref().is_some_and(|p| p.matches(&relative)) {
                    *used = true;
                    check.timeout = o_timeout.unwrap_or(check.timeout);
                    check.cell_timeout = o_cell.unwrap_or(check.cell_timeout);
                    check.tags.extend(o.tags.iter().cloned());
                    if let Some(s) = o_stages {
                        check.stages = s.clone();
                    }
                }
            }
            checks.push(check);
        }
        for (command, raw_command) in &r.commands {
            let command_key = format!("{key}.commands.{command}");
            c.name(&command_key, "command", command);
            let (run, command_timeout, tags, command_stages) = match raw_command {
                RawCommand::Line(run) => (run.clone(), timeout, Vec::new(), None),
                RawCommand::Table(t) => (
                    t.run.clone(),
                    c.duration(
                        &format!("{command_key}.timeout"),
                        t.timeout.as_deref(),
                        timeout,
                    ),
                    t.tags.clone(),
                    c.stages(&format!("{command_key}.stages"), t.stages.as_ref(), &stages),
                ),
            };
            if run.trim().is_empty() {
                c.problem(&command_key, "the command is empty");
            }
            checks.push(Check {
                name: format!("cmd::{command}"),
                kind: CheckKind::Command { run },
                timeout: command_timeout,
                cell_timeout: command_timeout,
                tags: r.tags.iter().cloned().chain(tags).collect(),
                stages: command_stages.unwrap_or_else(|| runtime_stages.clone()),
            });
        }
        // The GPU checks: what a container sees, and whether the framework can use it.
        let is_docker = matches!(executor, Executor::Docker(_));
        if r.gpu_checks.unwrap_or(is_docker) {
            if !is_docker {
                c.problem(
                    format!("{key}.gpu-checks"),
                    "gpu::visible needs a container: it only applies to docker runtimes",
                );
            } else {
                checks.push(gpu_check(
                    "gpu::visible",
                    CheckKind::GpuVisible,
                    &r.tags,
                    &runtime_stages,
                ));
            }
        }
        if let Some(framework) = &r.framework {
            if FRAMEWORKS.contains(&framework.as_str()) {
                let kind = CheckKind::GpuFramework {
                    framework: framework.clone(),
                };
                checks.push(gpu_check("gpu::framework", kind, &r.tags, &runtime_stages));
            } else {
                let hint = did_you_mean(framework, FRAMEWORKS);
                c.problem(
                    format!("{key}.framework"),
                    format!(
                        "unknown framework `{framework}`{hint} (known: torch, tensorflow, jax)"
                    ),
                );
            }
        }
        if r.notebooks.is_empty() && r.commands.is_empty() && r.framework.is_none() {
            c.problem(
                &key,
                "declares no notebooks and no commands, so it has nothing to check",
            );
        }
        for check in &mut checks {
            check.tags.sort();
            check.tags.dedup();
        }
        runtimes.push(Runtime {
            name: name.clone(),
            description: r.description.clone(),
            executor,
            env: r.env.clone(),
            machines: targets,
            checks,
        });
    }
    if raw.runtimes.is_empty() {
        c.problem(
            "runtimes",
            "no runtimes declared (add e.g. `[runtimes.NAME]` with `notebooks = [\"*.ipynb\"]`)",
        );
    }
    for (pattern, _, _, o, _, used) in &overrides {
        if pattern.is_some() && !used {
            c.warnings.push(format!(
                "{file}: override `{}` matches no notebook of any runtime",
                o.notebooks
            ));
        }
    }

    let runtime_names: Vec<&str> = raw.runtimes.keys().map(String::as_str).collect();
    let check_names: BTreeSet<&str> = runtimes
        .iter()
        .flat_map(|r| r.checks.iter().map(|k| k.name.as_str()))
        .collect();
    let rule = |c: &mut Compiler, key: &str, raw_rule: &RawRule| {
        let runtime = raw_rule.runtime.clone().unwrap_or_else(|| "*".into());
        let machine = raw_rule.machine.clone().unwrap_or_else(|| "*".into());
        let check = raw_rule.check.clone().unwrap_or_else(|| "*".into());
        let literal = |p: &str| !p.contains(['*', '?']);
        if literal(&runtime) && !runtime_names.contains(&runtime.as_str()) {
            let hint = did_you_mean(&runtime, runtime_names.iter().copied());
            c.problem(
                format!("{key}.runtime"),
                format!("unknown runtime `{runtime}`{hint}"),
            );
        }
        if literal(&machine) && !machine_names.contains(&machine.as_str()) {
            let hint = did_you_mean(&machine, machine_names.iter().copied());
            c.problem(
                format!("{key}.machine"),
                format!("unknown machine `{machine}`{hint}"),
            );
        }
        if literal(&check) && !check_names.contains(check.as_str()) {
            let hint = did_you_mean(&check, check_names.iter().copied());
            c.problem(format!("{key}.check"), format!("no runtime has a check `{check}`{hint}; checks are named `nb::<path>` or `cmd::<name>`"));
        }
        let reason = raw_rule.reason.clone().unwrap_or_default();
        if reason.trim().is_empty() {
            c.problem(
                format!("{key}.reason"),
                "a `reason` is required, so that reports can say why",
            );
        }
        (runtime, machine, check, reason)
    };
    let mut exclusions = Vec::new();
    for (i, raw_rule) in raw.exclude.iter().enumerate() {
        let key = format!("exclude[{i}]");
        if raw_rule.matches.is_some() {
            c.problem(
                format!("{key}.matches"),
                "`matches` only applies to expected-failures",
            );
        }
        let (runtime, machine, check, reason) = rule(&mut c, &key, raw_rule);
        exclusions.push(Exclusion {
            runtime,
            machine,
            check,
            reason,
        });
    }
    let mut expected_failures = Vec::new();
    for (i, raw_rule) in raw.expected_failures.iter().enumerate() {
        let key = format!("expected-failures[{i}]");
        let (runtime, machine, check, reason) = rule(&mut c, &key, raw_rule);
        expected_failures.push(ExpectedFailure {
            runtime,
            machine,
            check,
            reason,
            matches: raw_rule.matches.clone(),
        });
    }

    // Rules that contradict the runtimes they name.
    for runtime in &runtimes {
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
            c.problem(
                format!("runtimes.{}", runtime.name),
                "every trial of this runtime is excluded by [[exclude]] rules (remove the runtime, or narrow the rules)",
            );
        }
    }
    for (i, rule) in expected_failures.iter().enumerate() {
        let covers_any = runtimes.iter().any(|runtime| {
            runtime.machines.iter().any(|m| {
                runtime
                    .checks
                    .iter()
                    .any(|k| rule.covers(&runtime.name, m, &k.name))
            })
        });
        if !covers_any {
            c.warnings.push(format!(
                "{file}: expected-failures[{i}] covers no trial; it is stale"
            ));
        }
    }

    if !c.problems.is_empty() {
        return Err(ConfigError::Invalid {
            path: path.to_owned(),
            problems: Problems(c.problems),
        });
    }
    Ok(Matrix {
        path: path.to_owned(),
        root,
        notebooks_dir,
        stages,
        default_stage,
        machines,
        runtimes,
        exclusions,
        expected_failures,
        warnings: c.warnings,
    })
}

fn docker_runtime(c: &mut Compiler, key: &str, root: &Path, r: &RawRuntime) -> DockerRuntime {
    if !r.packages.is_empty() {
        c.problem(
            format!("{key}.packages"),
            "only applies to host runtimes (install packages in the image)",
        );
    }
    let image = r.image.clone().unwrap_or_default();
    if image.trim().is_empty() {
        c.problem(
            format!("{key}.image"),
            "a docker runtime needs `image`, e.g. \"jupyter/base-notebook:latest\"",
        );
    }
    let pull = match r.pull.as_deref().unwrap_or("if-missing") {
        "if-missing" => PullPolicy::IfMissing,
        "always" => PullPolicy::Always,
        "never" => PullPolicy::Never,
        other => {
            let hint = did_you_mean(other, PULL_POLICIES);
            c.problem(
                format!("{key}.pull"),
                format!("unknown pull policy `{other}`{hint} (known: if-missing, always, never)"),
            );
            PullPolicy::IfMissing
        }
    };
    let build = r.build.as_ref().and_then(|build| {
        let (context, dockerfile, script) = match build {
            RawBuild::Context(context) => (Some(context.clone()), None, None),
            RawBuild::Table(t) => (t.context.clone(), t.dockerfile.clone(), t.script.clone()),
        };
        match (context, script) {
            (Some(context), None) => {
                let dockerfile = dockerfile.unwrap_or_else(|| "Dockerfile".into());
                let folder = root.join(&context);
                if !folder.join(&dockerfile).is_file() {
                    c.problem(
                        format!("{key}.build"),
                        format!("no `{dockerfile}` in build context `{context}`"),
                    );
                }
                Some(Build::Context { context: folder, dockerfile })
            }
            (None, Some(script)) => {
                let path = root.join(&script);
                if !path.is_file() {
                    c.problem(format!("{key}.build.script"), format!("build script `{script}` does not exist"));
                }
                Some(Build::Script { script: path })
            }
            _ => {
                c.problem(
                    format!("{key}.build"),
                    "give either a context folder (`build = \"images/x\"` or `{ context, dockerfile }`) or `{ script }`",
                );
                None
            }
        }
    });
    let memory = r
        .memory
        .as_deref()
        .and_then(|text| match parse_bytes(text) {
            Some(bytes) if bytes >= 6 * 1024 * 1024 => Some(bytes),
            Some(_) => {
                c.problem(
                    format!("{key}.memory"),
                    format!("memory limit `{text}` is below Docker's minimum of 6m"),
                );
                None
            }
            None => {
                c.problem(
                    format!("{key}.memory"),
                    format!("invalid memory size `{text}` (use e.g. \"512m\" or \"4g\")"),
                );
                None
            }
        });
    if r.pids.is_some_and(|pids| pids < 16) {
        c.problem(
            format!("{key}.pids"),
            "a process limit below 16 cannot start a kernel",
        );
    }
    for secret in &r.secrets {
        if secret.is_empty() || secret.contains('=') {
            c.problem(
                format!("{key}.secrets"),
                format!("`{secret}` is not a valid environment variable name"),
            );
        }
        if r.env.contains_key(secret) {
            c.problem(
                format!("{key}.secrets"),
                format!("`{secret}` is also set in env; secrets take their value from the host's environment"),
            );
        }
    }
    DockerRuntime {
        image,
        pull,
        build,
        python: r.python.clone().unwrap_or_else(|| "python3".into()),
        memory,
        pids: r.pids,
        network: r.network.clone().unwrap_or_else(|| "none".into()),
        reuse_container: r.reuse_container,
        secrets: r.secrets.clone(),
    }
}

fn gpu_check(name: &str, kind: CheckKind, tags: &[String], stages: &[String]) -> Check {
    Check {
        name: name.to_owned(),
        kind,
        timeout: GPU_CHECK_TIMEOUT,
        cell_timeout: GPU_CHECK_TIMEOUT,
        tags: tags
            .iter()
            .cloned()
            .chain(["gpu-check".to_owned()])
            .collect(),
        stages: stages.to_vec(),
    }
}

/// `512m`, `4g`, `1.5GiB`, `1048576`: Docker's binary multiples.
fn parse_bytes(text: &str) -> Option<i64> {
    let text = text.trim().to_ascii_lowercase();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let multiplier: f64 = match unit.trim().trim_end_matches("ib").trim_end_matches('b') {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((number * multiplier) as i64)
}

/// Compiles a notebook glob, refusing patterns that would leave the notebooks folder.
fn glob_pattern(c: &mut Compiler, key: &str, text: &str) -> Option<glob::Pattern> {
    let escapes = Path::new(text).components().any(|part| {
        matches!(
            part,
            Component::ParentDir | Component::RootDir | Component::Prefix(_)
        )
    });
    if escapes {
        c.problem(key, format!("`{text}` points outside the notebooks folder (globs are relative to it, without `..`)"));
        return None;
    }
    match glob::Pattern::new(text) {
        Ok(pattern) => Some(pattern),
        Err(error) => {
            c.problem(key, format!("`{text}` is not a valid glob ({error})"));
            None
        }
    }
}

/// The `.ipynb` files under `dir` whose relative path matches `pattern`, skipping checkpoints.
/// Also returns, lossily, the names of notebooks that are not UTF-8: they cannot be named in
/// trial names, and are reported rather than skipped.
fn notebook_files(dir: &Path, pattern: &glob::Pattern) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut found = BTreeSet::new();
    let mut unnamable = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            if file_type.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "ipynb") {
                let Ok(relative) = path.strip_prefix(dir) else {
                    continue;
                };
                let Some(relative) = relative.to_str() else {
                    unnamable.insert(relative.to_string_lossy().into_owned());
                    continue;
                };
                let relative = relative.replace(std::path::MAIN_SEPARATOR, "/");
                let options = glob::MatchOptions {
                    require_literal_separator: true,
                    ..Default::default()
                };
                if pattern.matches_with(&relative, options) {
                    found.insert(relative);
                }
            }
        }
    }
    (found, unnamable)
}
