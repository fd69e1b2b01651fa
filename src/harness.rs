//! The libtest-mimic harness. The main type is [`Harness`]: it loads the matrix, plans it,
//! turns each trial spec into a libtest trial, records every trial, and writes the reports.
//!
//! Options libtest has no flag for come from `RUNTIME_MATRIX_*` environment variables,
//! parsed once into [`Options`] before anything is listed or run.
//!
//! Before any trial starts, the run folder gets the trials this process will run (`planned/`):
//! those the matrix selects and libtest's filters keep. On SIGINT or SIGTERM the run folder is
//! marked `interrupted.json` at once, the executor's handler removes what the run has running,
//! which ends the trials waiting on it; [`Harness::run`] then writes the reports, which say the
//! run was interrupted and list the planned trials that did not finish, and returns 130 or 143.
//! Nothing here calls `process::exit`.

use crate::config::{Matrix, print_warnings};
use crate::consistency::{Pending, Waited};
use crate::error::{
    BaselineError, EXIT_INTERRUPTED_BASE, EXIT_SETUP, EXIT_TRIALS_FAILED, SettingsError, chain,
};
use crate::exec::{
    Executor, default_cache, install_interrupt_handler, interrupt_cleaned_up, interrupted,
};
use crate::plan::{ConsistencySpec, Plan, Selection, TrialSpec};
use crate::progress::{Board, Heartbeat};
use crate::record::{
    Expectation, Failure, Interruption, Planned, RunDir, SetupStep, Status, TrialRecord,
};
use crate::report::{Baseline, Thresholds};
use crate::reuse::{Entry, Key, Lookup, Store};
use crate::settings::hostname;
use libtest_mimic::{Arguments, Conclusion, Failed, Trial};
use std::process::ExitCode;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime};

pub use crate::settings::Options;

/// How long trials get to return once an interrupt's clean-up is done. They normally return
/// at once, since what they waited on is gone; one blocked elsewhere (a pull, a GPU lease
/// wait) is left behind, and ends with the process when the caller's `main` returns.
const STRAGGLERS: Duration = Duration::from_secs(10);
/// The longest an interrupt's clean-up can take: each of its removals and waits is bounded.
const CLEAN_UP_LIMIT: Duration = Duration::from_secs(120);

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

/// Loads the matrix and plans what `options` select; a failure is printed and turned into the
/// setup exit code.
pub fn plan(options: &Options) -> Result<(Matrix, Selection, Plan), ExitCode> {
    let matrix = load(options)?;
    let selection = options
        .selection(&matrix)
        .map_err(|error| fail_setup(&error))?;
    let plan = Plan::new(&matrix, &selection);
    Ok((matrix, selection, plan))
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
    /// A bad setting is reported by [`Harness::run`], which has the exit code to return.
    options: Result<Options, SettingsError>,
}

impl Harness {
    /// libtest's arguments from the command line, options from the environment. The one
    /// flag of runtime-matrix's own, `--reuse-results` (what `RUNTIME_MATRIX_REUSE_RESULTS=1`
    /// says), is taken out before libtest's arguments are parsed, since libtest refuses flags
    /// it does not know.
    pub fn from_env() -> Harness {
        let (args, reuse) = take_flag(std::env::args(), REUSE_FLAG);
        Harness {
            args: Arguments::from_iter(args),
            options: Options::from_env().map(|options| Options {
                reuse_results: options.reuse_results || reuse,
                ..options
            }),
        }
    }

    /// A harness with explicit arguments and options.
    pub fn new(args: Arguments, options: Options) -> Harness {
        Harness {
            args,
            options: Ok(options),
        }
    }

    /// Runs the trials libtest's arguments select and returns the process's exit code:
    /// 0 when every trial passed, 101 when one failed, 2 when the run could not start (a bad
    /// setting, even when only listing), 130 or 143 when SIGINT or SIGTERM interrupted it.
    pub fn run(mut self) -> ExitCode {
        // Trials mostly wait (on a kernel, a container, a GPU): unless told otherwise, run
        // twice as many as there are cores (measured: a container runtime's 12 notebooks in
        // 9.1-11.1 s with 4 threads against 12.5-13.1 s with 2, on 2 cores). Under
        // cargo-nextest each process runs one trial and nextest sets the concurrency.
        if self.args.test_threads.is_none() && std::env::var_os("NEXTEST_RUN_ID").is_none() {
            self.args.test_threads = std::thread::available_parallelism()
                .ok()
                .map(|cores| 2 * usize::from(cores));
        }
        let options = match self.options {
            Ok(options) => options,
            Err(error) => return fail_setup(&error),
        };
        let (matrix, selection, plan) = match plan(&options) {
            Ok(planned) => planned,
            Err(code) => return code,
        };

        // Listing touches nothing but the matrix: cargo-nextest lists once per trial.
        if self.args.list {
            let consistency = plan
                .consistency
                .into_iter()
                .map(|spec| consistency_trial(spec, None));
            let trials = plan
                .trials
                .into_iter()
                .map(|spec| trial(spec, None))
                .chain(consistency)
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
        // Read before any trial runs: a baseline that cannot be read fails the run now, not
        // after its trials. Under cargo-nextest no process writes reports, so none reads it.
        let to_compare = options
            .baseline
            .as_deref()
            .filter(|_| std::env::var_os("NEXTEST_RUN_ID").is_none());
        let baseline = match to_compare.map(read_baseline).transpose() {
            Ok(baseline) => baseline,
            Err(error) => return fail_setup(&error),
        };
        let out_root = options.out_root(&matrix);
        let run_id = options.run_id.clone().unwrap_or_else(new_run_id);
        let run = match RunDir::create(&out_root, &run_id) {
            Ok(run) => run,
            Err(error) => return fail_setup(&error),
        };
        let under_nextest = std::env::var_os("NEXTEST_RUN_ID").is_some();
        if let Err(error) = run.write_excluded(&plan.excluded) {
            return fail_setup(&error);
        }
        // Under cargo-nextest the processes of one run share its folder, and one that starts
        // after another was interrupted must not erase that mark.
        if !under_nextest && let Err(error) = run.clear_interrupted() {
            return fail_setup(&error);
        }
        crate::exec::reap_orphan_processes();
        let cache = match &options.cache {
            Some(cache) => std::path::absolute(cache).unwrap_or_else(|_| cache.clone()),
            None => default_cache(&out_root),
        };
        let board = Arc::new(Board::default());
        let executor = Executor::new(&matrix, cache, options.keep, &run_id)
            .with_gpu_leases(options.lock_dir.clone(), options.lease_timeout)
            .with_engine_timeout(options.engine_timeout)
            .with_runners(slots(&self.args), options.runner_idle)
            .with_progress(board.clone());
        install_interrupt_handler(executor.handle());
        let reuse = options
            .reuse_results
            .then(|| Reuse::new(Store::new(options.reuse_dir(&matrix))));
        let specs: Vec<TrialSpec> = match &reuse {
            Some(_) => plan.trials.clone(),
            None => Vec::new(),
        };
        let context = Arc::new(Context {
            reuse,
            run: run.clone(),
            executor,
            host: hostname(),
            board: board.clone(),
            heartbeat: options.heartbeat,
            pending: Pending::default(),
            under_nextest,
        });
        // Consistency checks last: they compare what the trials before them recorded.
        let deadlines: std::collections::HashMap<String, Duration> = plan
            .trials
            .iter()
            .filter(|spec| spec.check.consistent_tag.is_some())
            .map(|spec| (spec.name.clone(), spec.check.timeout))
            .collect();
        let consistency = plan.consistency.into_iter().map(|spec| {
            (
                Planned {
                    name: spec.name.clone(),
                    runtime: String::new(),
                    machine: String::new(),
                    check: spec.name.clone(),
                },
                consistency_trial(spec, Some(context.clone())),
            )
        });
        let (planned, trials): (Vec<Planned>, Vec<Trial>) = plan
            .trials
            .into_iter()
            .map(|spec| (planned_of(&spec), trial(spec, Some(context.clone()))))
            .chain(consistency)
            .unzip();
        let skipped = skipped(&self.args, &planned, &trials, under_nextest);
        if let Err(error) = run.write_skipped(&skipped) {
            return fail_setup(&error);
        }
        let to_run = to_run(&self.args, planned, &trials);
        for planned in &to_run {
            if let Some(deadline) = deadlines.get(&planned.name) {
                context.pending.expect(&planned.check, *deadline);
            }
        }
        if let Some(reuse) = &context.reuse {
            reuse.decide(&context.executor, &specs, &to_run);
        }
        // Runners keep warm only the kernels the trials that will execute need.
        context.executor.expect(
            to_run
                .iter()
                .filter(|planned| !planned.runtime.is_empty())
                .filter(|planned| context.reuse.as_ref().is_none_or(|r| !r.hit(&planned.name)))
                .map(|planned| (planned.runtime.as_str(), planned.machine.as_str())),
        );
        if let Err(error) = run.write_planned(&to_run) {
            return fail_setup(&error);
        }
        let mut marked = false;
        let one_at_a_time = self
            .args
            .test_threads
            .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
            == Some(1);
        let heartbeat = options
            .heartbeat
            .and_then(|period| Heartbeat::start(board, period, one_at_a_time));
        let conclusion = run_trials(self.args, trials, || mark_interrupted(&run, &mut marked));
        // Stopped before anything else is said: trials left behind after an interrupt are not
        // to be reported as running.
        drop(heartbeat);
        let conclusion = match conclusion {
            Ok(conclusion) => conclusion,
            Err(error) => return fail_setup(&error),
        };
        if let Some(signal) = interrupted() {
            mark_interrupted(&run, &mut marked);
            // The handler is removing what the trials had running; the reports follow it.
            let start = Instant::now();
            while interrupt_cleaned_up().is_none() && start.elapsed() < CLEAN_UP_LIMIT {
                std::thread::sleep(Duration::from_millis(50));
            }
            if !under_nextest {
                write_reports(&run, baseline.as_ref());
            }
            return ExitCode::from((EXIT_INTERRUPTED_BASE + signal) as u8);
        }
        let Some(conclusion) = conclusion else {
            // The runner panicked (its message is printed), as a panicking test harness does.
            return ExitCode::from(EXIT_TRIALS_FAILED);
        };
        context.executor.shutdown();

        // Under cargo-nextest every trial is its own process: reports are made afterwards by
        // `runtime-matrix report`, from all of the run's records.
        let ran = conclusion.num_passed + conclusion.num_failed > 0;
        if ran && !under_nextest && !write_reports(&run, baseline.as_ref()) {
            return ExitCode::from(EXIT_SETUP);
        }
        conclusion.exit_code()
    }
}

/// The matrix target's flag that switches result reuse on.
pub const REUSE_FLAG: &str = "--reuse-results";

/// `args` without `flag` (before a `--`, which ends flags), and whether it was there.
pub(crate) fn take_flag(args: impl Iterator<Item = String>, flag: &str) -> (Vec<String>, bool) {
    let mut found = false;
    let mut flags_end = false;
    let kept = args
        .filter(|arg| {
            flags_end |= arg == "--";
            let this = !flags_end && arg == flag;
            found |= this;
            !this
        })
        .collect();
    (kept, found)
}

/// How many trials may run at once on one runner: libtest's test threads (twice the cores
/// unless told), or under cargo-nextest (one trial per process) its default, one per core.
fn slots(args: &Arguments) -> usize {
    args.test_threads
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1)
}

fn planned_of(spec: &TrialSpec) -> Planned {
    Planned {
        name: spec.name.clone(),
        runtime: spec.runtime.name.clone(),
        machine: spec.machine.name.clone(),
        check: spec.check.name.clone(),
    }
}

/// Of `planned`, the trials libtest will run: those its filters keep and it does not ignore.
/// Under cargo-nextest that is the one trial of this process.
fn to_run(args: &Arguments, planned: Vec<Planned>, trials: &[Trial]) -> Vec<Planned> {
    planned
        .into_iter()
        .zip(trials)
        .filter(|(_, t)| !args.is_filtered_out(t) && !args.is_ignored(t))
        .map(|(p, _)| p)
        .collect()
}

/// Why a trial libtest ignores is not run: container trials are opt-in.
pub(crate) const OPT_IN: &str =
    "container trials are opt-in: run with --include-ignored (cargo-nextest: --run-ignored all)";

/// Of `planned`, the trials libtest ignores although its filters keep them, each with
/// [`OPT_IN`]: reported as skipped unless another process of the run ran them. Under
/// cargo-nextest, which runs each trial in a process of its own by its exact name, every trial
/// ignored by default, unless this process was asked to run ignored trials too.
fn skipped(
    args: &Arguments,
    planned: &[Planned],
    trials: &[Trial],
    under_nextest: bool,
) -> Vec<crate::plan::Excluded> {
    planned
        .iter()
        .zip(trials)
        .filter(|(_, t)| match under_nextest {
            true => t.has_ignored_flag() && !args.ignored && !args.include_ignored,
            false => !args.is_filtered_out(t) && args.is_ignored(t),
        })
        .map(|(p, _)| crate::plan::Excluded {
            name: p.name.clone(),
            runtime: p.runtime.clone(),
            machine: p.machine.clone(),
            check: p.check.clone(),
            reason: OPT_IN.to_owned(),
        })
        .collect()
}

/// Marks `run` as interrupted, once, as soon as the signal is seen: a process killed during
/// the clean-up still leaves the mark.
fn mark_interrupted(run: &RunDir, marked: &mut bool) {
    let Some(signal) = interrupted() else { return };
    if std::mem::replace(marked, true) {
        return;
    }
    if let Err(error) = run.write_interrupted(&Interruption::now(&run.run_id, &hostname(), signal))
    {
        eprintln!("error: {}", chain(&error));
    }
}

/// Runs `trials` on a thread of their own, and waits for them, or, after an interrupt, for
/// no more than [`STRAGGLERS`] past its clean-up: `None` then, or when the runner panicked.
/// `on_interrupt` is called on each wait after an interrupt.
fn run_trials(
    args: Arguments,
    trials: Vec<Trial>,
    mut on_interrupt: impl FnMut(),
) -> std::io::Result<Option<Conclusion>> {
    let (sender, receiver) = mpsc::channel();
    // With one test thread, libtest-mimic runs trials on this thread: give it main's stack.
    std::thread::Builder::new()
        .name("trials".into())
        .stack_size(8 << 20)
        .spawn(move || {
            let _ = sender.send(libtest_mimic::run(&args, trials));
        })?;
    loop {
        match receiver.recv_timeout(Duration::from_millis(100)) {
            Ok(conclusion) => return Ok(Some(conclusion)),
            Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(None),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if interrupted().is_some() {
                    on_interrupt();
                }
                if interrupt_cleaned_up().is_some_and(|done| done.elapsed() >= STRAGGLERS) {
                    eprintln!(
                        "runtime-matrix: trials still running {}s after the clean-up are left behind",
                        STRAGGLERS.as_secs()
                    );
                    return Ok(None);
                }
            }
        }
    }
}

/// What every trial of one process shares.
struct Context {
    /// Result reuse, when it is on: the store and what it said of each trial.
    reuse: Option<Reuse>,
    run: RunDir,
    executor: Executor,
    host: String,
    /// The trials running now, for the heartbeat.
    board: Arc<Board>,
    /// `None` when the heartbeat is off: trials are not put on the board.
    heartbeat: Option<Duration>,
    /// The notebook trials consistency checks wait for.
    pending: Pending,
    /// Whether cargo-nextest runs this process (one trial per process).
    under_nextest: bool,
}

/// `RUNTIME_MATRIX_BASELINE`'s baseline, read; an error names the variable.
fn read_baseline(path: &std::path::Path) -> Result<Baseline, BaselineError> {
    Baseline::read(path).map_err(|error| BaselineError::Setting {
        path: path.to_owned(),
        error: Box::new(error),
    })
}

/// Writes the run's reports, compared with `baseline` when there is one, and says where;
/// false when they could not be written.
fn write_reports(run: &RunDir, baseline: Option<&Baseline>) -> bool {
    let written =
        crate::report::read_report(std::slice::from_ref(&run.path)).and_then(|mut report| {
            if let Some(baseline) = baseline {
                report.compare(baseline, Thresholds::default());
            }
            crate::report::write_all(&report, &run.path).map(|()| report)
        });
    match written {
        Ok(report) => {
            // After libtest's own summary: what it does not say.
            eprint!("{}", crate::report::console::summary(&report));
            if let Some(comparison) = &report.baseline {
                let _ =
                    crate::report::baseline::write_text(comparison, &mut std::io::stderr().lock());
            }
            eprintln!(
                "runtime-matrix: reports written to {} (report.md, report.json, junit.xml)",
                run.path.display()
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
        Some(context) => {
            // Said however the trial ends, once its record is written (or it never will be).
            let _ended = spec
                .check
                .consistent_tag
                .is_some()
                .then(|| context.pending.ended(&spec.check.name));
            context.run_trial(&spec)
        }
        None => Err("trials do not run while listing".into()),
    })
    .with_kind(kind)
    .with_ignored_flag(ignored)
}

/// The libtest kind of consistency checks.
const CONSISTENCY_KIND: &str = "consistency";

fn consistency_trial(spec: ConsistencySpec, context: Option<Arc<Context>>) -> Trial {
    let name = spec.name.clone();
    Trial::test(name, move || match context {
        Some(context) => context.run_consistency(&spec),
        None => Err("trials do not run while listing".into()),
    })
    .with_kind(CONSISTENCY_KIND)
}

impl Context {
    fn run_trial(&self, spec: &TrialSpec) -> Result<(), Failed> {
        // libtest goes on starting queued trials after an interrupt: start nothing.
        if let Some(signal) = interrupted() {
            return Err(format!("interrupted by signal {signal} before it started").into());
        }
        let started_at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        if let Some(entry) = self
            .reuse
            .as_ref()
            .and_then(|reuse| reuse.entry(&spec.name))
        {
            return self.reuse_trial(spec, &entry, started_at);
        }
        let start = Instant::now();
        let begun = self
            .heartbeat
            .map(|period| self.board.begin(&spec.name, period));
        let outcome = self.executor.run(spec, &self.run);
        drop(begun);
        if let Some(signal) = interrupted() {
            return Err(format!("interrupted by signal {signal} before it finished").into());
        }
        // The terminal may show the outcome's colours; records and reports keep plain text.
        let shown = outcome.failure;
        let failure = shown
            .as_ref()
            .map(|failure| crate::sanitise::failure(failure, crate::sanitise::plain));
        let (status, verdict) = judge(spec, failure.as_ref());
        let in_run = |path: &Option<std::path::PathBuf>| {
            path.as_deref()
                .and_then(|path| path.strip_prefix(&self.run.path).ok())
                .map(|path| path.to_string_lossy().into_owned())
        };
        let mut record = TrialRecord {
            status,
            failure,
            started_at,
            seconds: trial_seconds(
                start.elapsed().saturating_sub(outcome.after_check),
                &outcome.setup,
            ),
            setup: outcome.setup,
            cells: outcome.cells,
            consistent: outcome.consistent,
            artifact: in_run(&outcome.artifact),
            html: in_run(&outcome.html),
            artifact_note: outcome.artifact_note,
            image: outcome.image,
            engine: outcome.engine,
            services: outcome.services,
            resources: outcome.resources,
            gpus: outcome.gpus,
            note: outcome.note,
            ..self.base_record(spec)
        };
        crate::sanitise::record(&mut record);
        let written = self.run.write_record(&record);
        if let Some(reuse) = &self.reuse
            && written.is_ok()
        {
            reuse.keep(&self.executor, spec, &record);
        }
        if !status.is_failure() {
            return written.map(|_| ()).map_err(|error| chain(&error).into());
        }
        let mut message = verdict;
        let shown = TrialRecord {
            failure: shown,
            ..record
        };
        message.push_str(&crate::report::text::failure_details(
            &shown,
            Some(&self.run.path),
        ));
        match written {
            Ok(path) => message.push_str(&format!("\nrecord: {}", path.display())),
            Err(error) => {
                message.push_str(&format!("\nthe record was not saved: {}", chain(&error)))
            }
        }
        // Once more as it is printed: names and reasons from the config are outside text too.
        Err(crate::sanitise::for_terminal(&message).into())
    }
}

impl Context {
    /// `spec`'s record in this run as far as the spec and the run tell it: passed, with
    /// nothing measured yet. A run's outcome or a reused entry fills in the rest.
    fn base_record(&self, spec: &TrialSpec) -> TrialRecord {
        TrialRecord {
            trial: spec.name.clone(),
            runtime: spec.runtime.name.clone(),
            machine: spec.machine.name.clone(),
            check: spec.check.name.clone(),
            executor: spec.kind().to_owned(),
            tags: spec.tags.clone(),
            parameters: spec.parameters.clone(),
            expected: spec.expected_failure.as_ref().map(|rule| Expectation {
                reason: rule.reason.clone(),
                matches: rule.matches.clone(),
            }),
            ..self.base_record_without_spec()
        }
    }

    /// Runs the consistency check `spec`: waits until every trial of this process that runs
    /// its notebook has ended, then judges it from the run folder's records. Under
    /// cargo-nextest, where no process sees the others' trials end, it passes saying that
    /// `runtime-matrix report` compares when it merges the run's records.
    fn run_consistency(&self, spec: &ConsistencySpec) -> Result<(), Failed> {
        if let Some(signal) = interrupted() {
            return Err(format!("interrupted by signal {signal} before it started").into());
        }
        let started_at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let mut result = crate::consistency::result_of(spec);
        let mut record = TrialRecord {
            trial: spec.name.clone(),
            check: spec.name.clone(),
            executor: CONSISTENCY_KIND.to_owned(),
            tags: spec.tags.clone(),
            expected: spec.expected_failure.as_ref().map(|rule| Expectation {
                reason: rule.reason.clone(),
                matches: rule.matches.clone(),
            }),
            started_at,
            ..self.base_record_without_spec()
        };
        if self.under_nextest {
            result.deferred = true;
            record.note = Some(DEFERRED.to_owned());
            record.consistency = Some(result);
            return self
                .run
                .write_record(&record)
                .map(|_| ())
                .map_err(|error| chain(&error).into());
        }
        record.consistency = Some(result);
        match self.pending.wait(&spec.notebook_check, interrupted) {
            Waited::Ended => {}
            Waited::Interrupted(signal) => {
                return Err(format!("interrupted by signal {signal} before it compared").into());
            }
            Waited::TimedOut(left) => eprintln!(
                "warning: {}: {left} trial(s) of its notebook had not ended within their deadlines and {} min more: compared without them",
                spec.name,
                crate::consistency::SETUP_ALLOWANCE.as_secs() / 60
            ),
        }
        let start = Instant::now();
        match crate::record::read_dir(&self.run.path) {
            Ok(contents) => {
                let merged = crate::report::Report::merge(contents);
                let seen = crate::consistency::seen(
                    &spec.notebook_check,
                    &merged.trials,
                    &merged.not_run,
                    &merged.skipped,
                    &merged.excluded,
                );
                crate::consistency::rejudge(&mut record, seen);
            }
            Err(error) => {
                record.status = Status::Failed;
                record.failure = Some(Failure {
                    kind: crate::record::FailureKind::Setup,
                    category: crate::record::Category::Infrastructure,
                    summary: format!("the run's records could not be read: {}", chain(&error)),
                    cell: None,
                    exit_code: None,
                    output_tail: None,
                    cause: None,
                });
            }
        }
        record.seconds = start.elapsed().as_secs_f64();
        crate::sanitise::record(&mut record);
        let written = self.run.write_record(&record);
        if !record.status.is_failure() {
            return written.map(|_| ()).map_err(|error| chain(&error).into());
        }
        let mut message = consistency_verdict(spec, &record);
        message.push_str(&crate::report::text::failure_details(&record, None));
        match written {
            Ok(path) => message.push_str(&format!("\nrecord: {}", path.display())),
            Err(error) => {
                message.push_str(&format!("\nthe record was not saved: {}", chain(&error)))
            }
        }
        Err(crate::sanitise::for_terminal(&message).into())
    }

    /// A record of this run with nothing of a trial in it, passed: what a trial's or a
    /// consistency check's record starts from.
    fn base_record_without_spec(&self) -> TrialRecord {
        TrialRecord {
            schema: crate::record::RECORD_SCHEMA,
            run_id: self.run.run_id.clone(),
            trial: String::new(),
            runtime: String::new(),
            machine: String::new(),
            check: String::new(),
            executor: String::new(),
            tags: Vec::new(),
            parameters: Default::default(),
            status: Status::Passed,
            failure: None,
            expected: None,
            started_at: String::new(),
            seconds: 0.0,
            setup: Vec::new(),
            cells: Vec::new(),
            artifact: None,
            html: None,
            artifact_note: None,
            host: self.host.clone(),
            image: None,
            resources: None,
            gpus: Vec::new(),
            note: None,
            reused: None,
            engine: None,
            consistent: None,
            consistency: None,
            services: Vec::new(),
        }
    }

    /// Records `spec`'s trial as reused from `entry`, without running it.
    fn reuse_trial(
        &self,
        spec: &TrialSpec,
        entry: &Entry,
        started_at: String,
    ) -> Result<(), Failed> {
        let mut record = crate::reuse::record_of(entry, self.base_record(spec), started_at);
        crate::sanitise::record(&mut record);
        eprintln!(
            "runtime-matrix: {}: reused from run {}",
            crate::sanitise::for_terminal(&spec.name),
            entry.run_id()
        );
        self.run
            .write_record(&record)
            .map(|_| ())
            .map_err(|error| chain(&error).into())
    }
}

/// A trial's own seconds: its wall time less the setup it did or waited for, never below 0.
fn trial_seconds(wall: Duration, setup: &[SetupStep]) -> f64 {
    let setup: f64 = setup.iter().map(|step| step.seconds).sum();
    (wall.as_secs_f64() - setup).max(0.0)
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
            Some(text) if !failure.text().contains(text.as_str()) => (
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

/// What a consistency check under cargo-nextest says: its verdict is the merge's.
const DEFERRED: &str = "compared when the run's records are merged (`runtime-matrix report`)";

/// The first line of a consistency check's failure message.
fn consistency_verdict(spec: &ConsistencySpec, record: &TrialRecord) -> String {
    let what = format!(
        "consistency of notebook `{}` across runtimes and machines",
        spec.notebook
    );
    let rule = spec.expected_failure.as_ref();
    match (record.status, rule) {
        (Status::UnexpectedPass, Some(rule)) => format!(
            "{what}: the outputs agree, but a difference is declared ({}); they agree now, so \
             remove or narrow the [[expected-failures]] entry in matrix.toml",
            rule.reason
        ),
        (_, Some(rule)) => format!(
            "{what} failed, but not the expected way: the declared difference ({}) must contain `{}`",
            rule.reason,
            rule.matches.as_deref().unwrap_or_default()
        ),
        (_, None) => format!(
            "{what} failed: {}",
            record
                .failure
                .as_ref()
                .map_or("", |failure| failure.kind.describe())
        ),
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

/// By trial: the key of its inputs, and the entry it is reused from on a hit.
type Decided = std::collections::HashMap<String, (Key, Option<Arc<Entry>>)>;

/// Result reuse in one process: the store, and the keys and entries found for its trials
/// before they started.
struct Reuse {
    store: Store,
    /// By trial: the key of its inputs when they could be known before it ran, and the entry
    /// it is reused from on a hit.
    decided: std::sync::Mutex<Decided>,
}

impl Reuse {
    fn new(store: Store) -> Reuse {
        Reuse {
            store,
            decided: Default::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Decided> {
        self.decided
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Looks each trial of `to_run` up in the store, before any starts, and says how many
    /// are reused and why the others that had an entry run again.
    fn decide(&self, executor: &Executor, specs: &[TrialSpec], to_run: &[Planned]) {
        let wanted: std::collections::HashSet<&str> =
            to_run.iter().map(|p| p.name.as_str()).collect();
        let specs: Vec<&TrialSpec> = specs
            .iter()
            .filter(|spec| wanted.contains(spec.name.as_str()))
            .collect();
        // Gathered in parallel: most of the time is waiting (an interpreter's start, the
        // engine's answer), and trials of one runtime share what is found once per process.
        const THREADS: usize = 8;
        let gathered: Vec<Vec<(&TrialSpec, Result<serde_json::Value, String>)>> =
            std::thread::scope(|scope| {
                let workers: Vec<_> = (0..THREADS.min(specs.len()))
                    .map(|first| {
                        let specs = &specs;
                        scope.spawn(move || {
                            specs
                                .iter()
                                .skip(first)
                                .step_by(THREADS)
                                .map(|spec| (*spec, executor.reuse_inputs(spec, None)))
                                .collect()
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .map(|worker| worker.join().unwrap_or_default())
                    .collect()
            });
        let mut gathered: Vec<_> = gathered.into_iter().flatten().collect();
        gathered.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        let mut again = Vec::new();
        let mut hits = 0;
        for (spec, inputs) in gathered {
            let inputs = match inputs {
                Ok(inputs) => inputs,
                Err(why) => {
                    again.push(format!("{}: {why}", spec.name));
                    continue;
                }
            };
            let key = Key::new(inputs);
            let entry = match self.store.lookup(&spec.name, &key) {
                Lookup::Hit(entry) => {
                    hits += 1;
                    Some(Arc::from(entry))
                }
                Lookup::Miss(Some((run_id, changed))) => {
                    again.push(format!(
                        "{}: changed since run {run_id}: {}",
                        spec.name,
                        changed.join(", ")
                    ));
                    None
                }
                Lookup::Miss(None) => None,
            };
            self.lock().insert(spec.name.clone(), (key, entry));
        }
        if specs.is_empty() {
            return;
        }
        eprintln!(
            "runtime-matrix: result reuse: {hits} of {} reused (unchanged since they passed), {} to run; store {}",
            crate::report::text::count(specs.len(), "trial", "trials"),
            specs.len() - hits,
            self.store.dir().display()
        );
        const SAID: usize = 10;
        for line in again.iter().take(SAID) {
            eprintln!("  runs again: {}", crate::sanitise::for_terminal(line));
        }
        if again.len() > SAID {
            eprintln!("  and {} more run again", again.len() - SAID);
        }
    }

    /// Whether trial `name` is reused.
    fn hit(&self, name: &str) -> bool {
        self.lock()
            .get(name)
            .is_some_and(|(_, entry)| entry.is_some())
    }

    /// The entry trial `name` is reused from, on a hit.
    fn entry(&self, name: &str) -> Option<Arc<Entry>> {
        self.lock().get(name).and_then(|(_, entry)| entry.clone())
    }

    /// Keeps `record`'s outcome for later runs when it may be reused: under the key of the
    /// inputs it ran with, found again now (the image it ran in, the files as they are), and
    /// only when they are still those found before it ran.
    fn keep(&self, executor: &Executor, spec: &TrialSpec, record: &TrialRecord) {
        if !crate::reuse::reusable(record.status) {
            return;
        }
        let before = self.lock().get(&spec.name).map(|(key, _)| key.hash.clone());
        let key = match executor.reuse_inputs(spec, record.image.as_ref()) {
            Ok(inputs) => Key::new(inputs),
            Err(why) => {
                eprintln!("warning: {} is not kept for result reuse: {why}", spec.name);
                return;
            }
        };
        if before.is_some_and(|before| before != key.hash) {
            eprintln!(
                "warning: {} is not kept for result reuse: its inputs changed while it ran",
                spec.name
            );
            return;
        }
        if let Err(error) = self.store.save(record, &key) {
            eprintln!(
                "warning: {} is not kept for result reuse: cannot write to {}: {error}",
                spec.name,
                self.store.dir().display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::SetupKind;

    fn step(kind: SetupKind, seconds: f64) -> SetupStep {
        SetupStep {
            kind,
            subject: "runtime-matrix/jupyter-base".into(),
            seconds,
        }
    }

    #[test]
    fn a_trials_seconds_leave_out_the_setup_it_did_or_waited_for() {
        let wall = Duration::from_secs_f64(41.5);
        assert_eq!(trial_seconds(wall, &[]), 41.5);
        assert_eq!(trial_seconds(wall, &[step(SetupKind::Build, 35.25)]), 6.25);
        assert_eq!(
            trial_seconds(
                wall,
                &[step(SetupKind::Pull, 3.0), step(SetupKind::Provision, 20.5)]
            ),
            18.0
        );
    }

    #[test]
    fn a_trials_seconds_are_never_negative() {
        let wall = Duration::from_millis(1500);
        assert_eq!(trial_seconds(wall, &[step(SetupKind::Build, 1.75)]), 0.0);
    }
}
