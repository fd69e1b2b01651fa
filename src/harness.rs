//! The libtest-mimic harness. The main type is [`Harness`]: it loads the matrix, plans it,
//! turns each trial spec into a libtest trial, records every trial, and writes the reports.
//!
//! Options libtest has no flag for come from `RUNTIME_MATRIX_*` environment variables
//! ([`Options::from_env`]), so that `cargo test`, `cargo nextest run` and IDE runners, which
//! pass only libtest's flags, all take them.

use crate::config::Matrix;
use crate::error::{EXIT_INTERRUPTED_BASE, EXIT_SETUP, chain};
use crate::exec::{Executor, Keep, default_cache, install_interrupt_handler, interrupted};
use crate::plan::{Plan, Selection, TrialSpec};
use crate::record::{Expectation, Failure, RunDir, Status, TrialRecord};
use libtest_mimic::{Arguments, Failed, Trial};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// Settings read from the environment. Every field has a documented variable.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `RUNTIME_MATRIX_CONFIG`: the matrix file (default `matrix.toml`).
    pub config: PathBuf,
    /// `RUNTIME_MATRIX_OUT`: where run folders go (default `target/runtime-matrix` beside the
    /// matrix, or under `CARGO_TARGET_DIR`).
    pub out: Option<PathBuf>,
    /// `RUNTIME_MATRIX_RUN_ID` (else `NEXTEST_RUN_ID`, else a timestamp and the process id).
    pub run_id: Option<String>,
    /// `RUNTIME_MATRIX_STAGE`.
    pub stage: Option<String>,
    /// `RUNTIME_MATRIX_TAGS`, e.g. `gpu,!slow`.
    pub tags: Option<String>,
    /// `RUNTIME_MATRIX_SHARD`, e.g. `2/4`.
    pub shard: Option<String>,
    /// `RUNTIME_MATRIX_MACHINES`: machine names, or `all`.
    pub machines: Option<String>,
    /// `RUNTIME_MATRIX_CACHE`: where provisioned virtualenvs live.
    pub cache: Option<PathBuf>,
    /// `RUNTIME_MATRIX_KEEP`: `failed` or `always` keeps containers for inspection.
    pub keep: Option<String>,
}

impl Options {
    /// Reads every `RUNTIME_MATRIX_*` variable.
    pub fn from_env() -> Options {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Options {
            config: var("RUNTIME_MATRIX_CONFIG")
                .unwrap_or_else(|| "matrix.toml".into())
                .into(),
            out: var("RUNTIME_MATRIX_OUT").map(PathBuf::from),
            run_id: var("RUNTIME_MATRIX_RUN_ID").or_else(|| var("NEXTEST_RUN_ID")),
            stage: var("RUNTIME_MATRIX_STAGE"),
            tags: var("RUNTIME_MATRIX_TAGS"),
            shard: var("RUNTIME_MATRIX_SHARD"),
            machines: var("RUNTIME_MATRIX_MACHINES"),
            cache: var("RUNTIME_MATRIX_CACHE").map(PathBuf::from),
            keep: var("RUNTIME_MATRIX_KEEP"),
        }
    }

    /// The folder run folders go under, for a matrix at `matrix`.
    pub fn out_root(&self, matrix: &Matrix) -> PathBuf {
        let root = match (&self.out, std::env::var_os("CARGO_TARGET_DIR")) {
            (Some(out), _) => out.clone(),
            (None, Some(target)) => PathBuf::from(target).join("runtime-matrix"),
            (None, None) => matrix.root.join("target").join("runtime-matrix"),
        };
        // Absolute, because checks run with a scratch folder as their working directory.
        std::path::absolute(&root).unwrap_or(root)
    }

    /// The selection these options ask for.
    pub fn selection(&self, matrix: &Matrix) -> Result<Selection, crate::error::SelectionError> {
        Selection::parse(
            matrix,
            self.stage.as_deref(),
            self.tags.as_deref(),
            self.shard.as_deref(),
            self.machines.as_deref(),
            || crate::gpu::detect().clone(),
        )
    }
}

/// Loads the matrix at `options.config`, printing its warnings; the error is printed after
/// its own warnings and turned into the setup exit code.
pub fn load(options: &Options) -> Result<Matrix, ExitCode> {
    let matrix = Matrix::load(&options.config).map_err(|error| {
        print_warnings(error.warnings());
        fail_setup(&error)
    })?;
    print_warnings(&matrix.warnings);
    Ok(matrix)
}

/// Prints a matrix's warnings, one `warning: ` line each.
pub fn print_warnings(warnings: &[String]) {
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
}

/// Prints `error` with its causes and returns the setup exit code.
pub fn fail_setup(error: &(dyn std::error::Error + 'static)) -> ExitCode {
    eprintln!("error: {}", chain(error));
    ExitCode::from(EXIT_SETUP)
}

/// A test harness over one matrix.
#[derive(Debug)]
pub struct Harness {
    args: Arguments,
    options: Options,
}

impl Harness {
    /// libtest's arguments from the command line, options from the environment.
    pub fn from_env() -> Harness {
        Harness::new(Arguments::from_args(), Options::from_env())
    }

    /// A harness with explicit arguments and options.
    pub fn new(args: Arguments, options: Options) -> Harness {
        Harness { args, options }
    }

    /// Runs the trials libtest's arguments select and returns the process's exit code:
    /// 0 when every trial passed, 101 when one failed, 2 when the run could not start.
    pub fn run(self) -> ExitCode {
        let matrix = match load(&self.options) {
            Ok(matrix) => matrix,
            Err(code) => return code,
        };
        let selection = match self.options.selection(&matrix) {
            Ok(selection) => selection,
            Err(error) => return fail_setup(&error),
        };
        let plan = Plan::new(&matrix, &selection);
        let keep = match Keep::parse(self.options.keep.as_deref().unwrap_or("")) {
            Ok(keep) => keep,
            Err(message) => {
                eprintln!("error: {message}");
                return ExitCode::from(EXIT_SETUP);
            }
        };

        // Listing touches nothing but the matrix: cargo-nextest lists once per trial.
        if self.args.list {
            let trials = plan
                .trials
                .into_iter()
                .map(|spec| trial(spec, None))
                .collect();
            return libtest_mimic::run(&self.args, trials).exit_code();
        }

        if plan.trials.is_empty()
            && let Some(first) = plan.excluded.first()
        {
            eprintln!(
                "warning: this selection runs none of the {} declared trials (e.g. `{}`: {})",
                plan.excluded.len(),
                first.name,
                first.reason
            );
        }
        if let crate::plan::MachineSelection::NoDriver(reason) = &selection.machines {
            // Said once per run; a host without GPUs is no error.
            eprintln!(
                "runtime-matrix: no NVIDIA driver on this host ({reason}); trials on GPU machines are excluded \
                 (RUNTIME_MATRIX_MACHINES runs them anyway)"
            );
        }
        let out_root = self.options.out_root(&matrix);
        let run_id = self.options.run_id.clone().unwrap_or_else(new_run_id);
        let run = match RunDir::create(&out_root, &run_id) {
            Ok(run) => run,
            Err(error) => return fail_setup(&error),
        };
        if let Err(error) = run.write_excluded(&plan.excluded) {
            return fail_setup(&error);
        }
        crate::exec::reap_orphan_processes();
        let cache = match &self.options.cache {
            Some(cache) => std::path::absolute(cache).unwrap_or_else(|_| cache.clone()),
            None => default_cache(&out_root),
        };
        let executor = Executor::new(&matrix, cache, keep, &run_id);
        let under_nextest = std::env::var_os("NEXTEST_RUN_ID").is_some();
        install_interrupt_handler(executor.handle(), {
            let run = run.clone();
            move |signal| {
                if !under_nextest {
                    write_reports(&run);
                }
                EXIT_INTERRUPTED_BASE + signal
            }
        });
        let context = Arc::new(Context {
            run: run.clone(),
            executor,
            host: hostname(),
        });
        let trials = plan
            .trials
            .into_iter()
            .map(|spec| trial(spec, Some(context.clone())))
            .collect();
        let conclusion = libtest_mimic::run(&self.args, trials);
        if interrupted().is_some() {
            // The interrupt handler is cleaning up, writing the reports and exiting.
            loop {
                std::thread::park();
            }
        }
        context.executor.shutdown();

        // Under cargo-nextest every trial is its own process: reports are made afterwards by
        // `runtime-matrix report`, from all of the run's records.
        let ran = conclusion.num_passed + conclusion.num_failed > 0;
        if ran && !under_nextest && !write_reports(&run) {
            return ExitCode::from(EXIT_SETUP);
        }
        conclusion.exit_code()
    }
}

/// What every trial of one process shares.
struct Context {
    run: RunDir,
    executor: Executor,
    host: String,
}

/// Writes the run's reports and says where; false when they could not be written.
fn write_reports(run: &RunDir) -> bool {
    match crate::report::write_from_dirs(std::slice::from_ref(&run.path), &run.path) {
        Ok(written) => {
            eprintln!(
                "runtime-matrix: reports written to {} (report.md, report.json, junit.xml)",
                written.display()
            );
            true
        }
        Err(crate::error::OutputError::NoRecords(_)) => true,
        Err(error) => {
            eprintln!("error: {}", chain(&error));
            false
        }
    }
}

fn trial(spec: TrialSpec, context: Option<Arc<Context>>) -> Trial {
    let name = spec.name.clone();
    let kind = spec.kind();
    // Container trials are opt-in (`--include-ignored`), so that a plain `cargo test` stays fast.
    let ignored = matches!(spec.runtime.executor, crate::config::Executor::Docker(_));
    Trial::test(name, move || match context {
        Some(context) => context.run_trial(&spec),
        None => Err("trials do not run while listing".into()),
    })
    .with_kind(kind)
    .with_ignored_flag(ignored)
}

impl Context {
    fn run_trial(&self, spec: &TrialSpec) -> Result<(), Failed> {
        let started_at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let start = Instant::now();
        let outcome = self.executor.run(spec, &self.run);
        if let Some(signal) = interrupted() {
            return Err(format!("interrupted by signal {signal} before it finished").into());
        }
        let (status, verdict) = judge(spec, outcome.failure.as_ref());
        let record = TrialRecord {
            schema: crate::record::RECORD_SCHEMA,
            run_id: self.run.run_id.clone(),
            trial: spec.name.clone(),
            runtime: spec.runtime.name.clone(),
            machine: spec.machine.name.clone(),
            check: spec.check.name.clone(),
            executor: spec.kind().to_owned(),
            tags: spec.tags.clone(),
            status,
            failure: outcome.failure,
            expected: spec.expected_failure.as_ref().map(|rule| Expectation {
                reason: rule.reason.clone(),
                matches: rule.matches.clone(),
            }),
            started_at,
            seconds: start.elapsed().as_secs_f64(),
            cells: outcome.cells,
            artifact: outcome
                .artifact
                .as_deref()
                .and_then(|path| path.strip_prefix(&self.run.path).ok())
                .map(|path| path.to_string_lossy().into_owned()),
            host: self.host.clone(),
            image: outcome.image,
            gpus: outcome.gpus,
            note: outcome.note,
        };
        let written = self.run.write_record(&record);
        if !status.is_failure() {
            return written.map(|_| ()).map_err(|error| chain(&error).into());
        }
        let mut message = verdict;
        message.push_str(&crate::report::text::failure_details(
            &record,
            Some(&self.run.path),
        ));
        match written {
            Ok(path) => message.push_str(&format!("\nrecord: {}", path.display())),
            Err(error) => {
                message.push_str(&format!("\nthe record was not saved: {}", chain(&error)))
            }
        }
        Err(message.into())
    }
}

/// The status of a trial given its failure and any expected-failure declaration, with the
/// first line of the message shown when it counts as a failure.
fn judge(spec: &TrialSpec, failure: Option<&Failure>) -> (Status, String) {
    let what = format!(
        "runtime `{}` on machine `{}`: {}",
        spec.runtime.name,
        spec.machine.name,
        crate::report::text::describe_check(&spec.check.name)
    );
    match (&spec.expected_failure, failure) {
        (None, None) => (Status::Passed, String::new()),
        (None, Some(failure)) => (
            Status::Failed,
            format!("{what} failed: {}", failure.kind.describe()),
        ),
        (Some(rule), None) => (
            Status::UnexpectedPass,
            format!(
                "{what} passed, but it is declared as an expected failure ({}); it works now, so \
                 remove or narrow the [[expected-failures]] entry in matrix.toml",
                rule.reason
            ),
        ),
        (Some(rule), Some(failure)) => match &rule.matches {
            Some(text) if !crate::report::text::failure_text(failure).contains(text.as_str()) => (
                Status::Failed,
                format!(
                    "{what} failed, but not the expected way: the declared failure ({}) must \
                     contain `{text}`",
                    rule.reason
                ),
            ),
            _ => (Status::ExpectedFailure, String::new()),
        },
    }
}

fn new_run_id() -> String {
    let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    format!(
        "{}-{}",
        now.trim_end_matches('Z').replace(':', "-"),
        std::process::id()
    )
}

pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".into())
}
