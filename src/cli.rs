//! The `runtime-matrix` command: what is not a test. `plan` shows what would run here,
//! `report` merges records into reports, `doctor` and `clean` look after the host, and `run`
//! is the harness itself, for running a matrix without a cargo project.
//!
//! It lives in the library, beside what it drives, so that the crate's public API stays the
//! small part embedders need; `src/main.rs` only calls [`main`].

use crate::engine::{ContainerSpec, GpuRequest};
use crate::error::{EXIT_OK, EXIT_SETUP, EXIT_TRIALS_FAILED, chain};
use crate::exec::trial_container;
use crate::harness::{self, Harness, Options, fail_setup};
use crate::plan::{MachineSelection, PlanDocument};
use crate::report::text::count;
use crate::report::{Baseline, Thresholds};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// `0.1.0 (commit 1a2b3c4d5e6f)`: the version, and the commit it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("RUNTIME_MATRIX_COMMIT"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "runtime-matrix",
    version = VERSION,
    about = "Prove that every runtime works on every machine."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Selection flags; each defaults to its RUNTIME_MATRIX_* variable.
#[derive(clap::Args)]
struct Select {
    /// The matrix file.
    #[arg(long, env = "RUNTIME_MATRIX_CONFIG", default_value = "matrix.toml")]
    config: PathBuf,
    /// The stage to plan for (default: the matrix's default stage).
    #[arg(long, env = "RUNTIME_MATRIX_STAGE")]
    stage: Option<String>,
    /// Tags to include, and `!tag` to exclude, comma-separated.
    #[arg(long, env = "RUNTIME_MATRIX_TAGS")]
    tags: Option<String>,
    /// A shard `K/N` of the trials.
    #[arg(long, env = "RUNTIME_MATRIX_SHARD")]
    shard: Option<String>,
    /// Machines this host serves, comma-separated, or `all`.
    #[arg(long, env = "RUNTIME_MATRIX_MACHINES")]
    machines: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the trials this host would run and those it would not, with the reason. Runs
    /// nothing.
    Plan {
        #[command(flatten)]
        select: Select,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Merge the records of one or more runs (or shards, or hosts) into report.json,
    /// report.md and junit.xml.
    Report {
        /// Run folders, or folders of run folders (default: the newest run, as `latest` in
        /// the output folder names it: after `cargo nextest run`, say).
        dirs: Vec<PathBuf>,
        /// Where to write the reports (default: the first folder).
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        compare: Compare,
        /// The matrix file, for where the output folder is when no folder is given.
        #[arg(long, env = "RUNTIME_MATRIX_CONFIG", default_value = "matrix.toml")]
        config: PathBuf,
    },
    /// Check that this host can run the matrix: config, Docker, the NVIDIA runtime, NVML, each
    /// runtime's image and the tools inside it, free disk. Exits 2 when something is missing.
    Doctor {
        /// The matrix file.
        #[arg(long, env = "RUNTIME_MATRIX_CONFIG", default_value = "matrix.toml")]
        config: PathBuf,
    },
    /// Remove the containers of runs on this host whose process is gone, including those kept
    /// with RUNTIME_MATRIX_KEEP. Containers of live runs and containers that are not
    /// runtime-matrix's are never touched. With `--runs N`, also remove all but the newest N
    /// run folders; with `--reuse`, also empty the result reuse store.
    Clean {
        /// The matrix file, for the machines' Docker engines and the run folders' place.
        #[arg(long, env = "RUNTIME_MATRIX_CONFIG", default_value = "matrix.toml")]
        config: PathBuf,
        /// Keep the newest N run folders (by their last change) under the output folder
        /// (RUNTIME_MATRIX_OUT, default target/runtime-matrix) and remove the others.
        #[arg(long, value_name = "N")]
        runs: Option<usize>,
        /// Empty the result reuse store (RUNTIME_MATRIX_REUSE_DIR, default `reuse` under the
        /// output folder), so that the next run with --reuse-results executes every trial.
        #[arg(long)]
        reuse: bool,
    },
    /// Print the JSON Schema of matrix.toml, a record, report.json or `plan --format json`
    /// (the files under `schemas/` in runtime-matrix's repository).
    Schema {
        /// Which document.
        #[arg(value_enum)]
        name: crate::schema::Document,
    },
    /// CI fan-out: the jobs the matrix needs on a CI system (one per machine, times its
    /// `shards`, on its runner labels), and the files that run them.
    Ci {
        #[command(subcommand)]
        system: CiSystem,
    },
    /// Run the matrix as a test harness; arguments after `--` are libtest's
    /// (`--list`, `--exact`, filters, `--test-threads`...).
    Run {
        #[command(flatten)]
        select: Select,
        /// Do not execute a trial whose inputs are unchanged since it last passed; its record
        /// says the run it is reused from (RUNTIME_MATRIX_REUSE_RESULTS=1 says the same).
        #[arg(long)]
        reuse_results: bool,
        /// libtest arguments.
        #[arg(last = true)]
        libtest: Vec<String>,
    },
}

/// The CI systems `runtime-matrix ci` writes for.
#[derive(Subcommand)]
enum CiSystem {
    /// GitHub Actions: print the job matrix as JSON for
    /// `strategy.matrix: ${{ fromJSON(needs.plan.outputs.matrix) }}`, or with `--workflow` a
    /// whole workflow (plan, a job per machine and shard, merge).
    Github {
        #[command(flatten)]
        ci: CiArgs,
        /// Write the workflow instead of the job matrix: to PATH, or to stdout without one.
        #[arg(long, value_name = "PATH", num_args = 0..=1)]
        workflow: Option<Option<PathBuf>>,
        /// The default branch: pushes to it run the workflow and keep its report as the
        /// baseline.
        #[arg(long, default_value = "main")]
        branch: String,
    },
    /// GitLab CI: write a `.gitlab-ci.yml` with a job per machine on its `ci-tags`, its shards
    /// as a `parallel: matrix`, and a merge job.
    Gitlab {
        #[command(flatten)]
        ci: CiArgs,
        /// Where to write it (default: stdout).
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
    },
}

/// What every `ci` command takes.
#[derive(clap::Args)]
struct CiArgs {
    /// The matrix file, relative to the repository root (the CI jobs name it so).
    #[arg(long, env = "RUNTIME_MATRIX_CONFIG", default_value = "matrix.toml")]
    config: PathBuf,
    /// The stage to plan jobs for (default: the matrix's default stage).
    #[arg(long, env = "RUNTIME_MATRIX_STAGE")]
    stage: Option<String>,
    /// Tags to include, and `!tag` to exclude, comma-separated.
    #[arg(long, env = "RUNTIME_MATRIX_TAGS")]
    tags: Option<String>,
    /// Where the CI jobs get the `runtime-matrix` command: `path:DIR` (`cargo install
    /// --path`), `git:URL` or `git:URL#REV`, or `version:X` (crates.io). Default: this
    /// repository when the matrix is runtime-matrix's own, else the `runtime-matrix`
    /// dependency in the Cargo.toml beside the matrix.
    #[arg(long, value_name = "SOURCE")]
    cli: Option<String>,
    /// The test target that runs the matrix (`harness = false`).
    #[arg(long, default_value = "matrix")]
    test: String,
}

/// Comparing the merged report with an earlier run's.
#[derive(clap::Args)]
struct Compare {
    /// An earlier run to compare with: a run folder, a folder of run folders, or a
    /// report.json. The comparison goes into the reports and is printed.
    #[arg(long, env = "RUNTIME_MATRIX_BASELINE", value_name = "OLD")]
    baseline: Option<PathBuf>,
    /// A trial is slower than in the baseline when it took at least this many times as long...
    #[arg(long, value_name = "RATIO", default_value_t = Thresholds::DEFAULT_RATIO, value_parser = at_least_one)]
    slower_ratio: f64,
    /// ... and at least this many seconds more.
    #[arg(long, value_name = "SECONDS", default_value_t = Thresholds::DEFAULT_SECONDS, value_parser = not_negative)]
    slower_seconds: f64,
    /// What fails the report (exit code 101): `any` failing trial, or only `new` failures,
    /// those the baseline does not have failing, and unexpected passes. An incomplete run
    /// fails either way.
    #[arg(
        long,
        value_enum,
        default_value = "any",
        requires_if("new", "baseline")
    )]
    fail_on: FailOn,
}

/// What fails a report.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum FailOn {
    /// Any failed trial or unexpected pass.
    Any,
    /// Only failures the baseline does not have failing, and unexpected passes.
    New,
}

fn number(text: &str) -> Result<f64, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite())
        .ok_or_else(|| format!("`{text}` is not a number"))
}

fn at_least_one(text: &str) -> Result<f64, String> {
    let n = number(text)?;
    match n >= 1.0 {
        true => Ok(n),
        false => Err(format!("`{text}` is below 1 (use a ratio such as 1.5)")),
    }
}

fn not_negative(text: &str) -> Result<f64, String> {
    let n = number(text)?;
    match n >= 0.0 {
        true => Ok(n),
        false => Err(format!(
            "`{text}` is negative (use seconds such as 5 or 0.5)"
        )),
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

/// Parses the command line and runs the command; returns the process's exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run { .. }) {
        // `runtime-matrix plan | head` ends quietly, as other Unix tools do. The harness keeps
        // Rust's default, so that a closed pipe never skips its clean-up.
        // SAFETY: called before any thread starts; restores the default disposition.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match cli.command {
        Command::Plan { select, format } => plan(select, format),
        Command::Report {
            dirs,
            out,
            compare,
            config,
        } => match dirs.is_empty() {
            true => match newest_run(&config) {
                Ok(run) => report(&[run], out, compare),
                Err(message) => {
                    eprintln!("error: {message}");
                    ExitCode::from(EXIT_SETUP)
                }
            },
            false => report(&dirs, out, compare),
        },
        Command::Clean {
            config,
            runs,
            reuse,
        } => clean(&config, runs, reuse),
        Command::Schema { name } => {
            print!("{}", name.schema_text());
            ExitCode::from(EXIT_OK)
        }
        Command::Doctor { config } => {
            let options = match Options::from_env() {
                Ok(options) => Options { config, ..options },
                Err(error) => return fail_setup(&error),
            };
            options.configure_detection();
            let report =
                crate::doctor::examine(&options.config, options.engine_timeout, |matrix| {
                    options.out_root(matrix)
                });
            let mut stdout = std::io::stdout().lock();
            let _ = report.write(&mut stdout);
            ExitCode::from(if report.failed() { EXIT_SETUP } else { EXIT_OK })
        }
        Command::Ci { system } => ci(system),
        Command::Run {
            select,
            reuse_results,
            libtest,
        } => {
            // As the matrix target takes it, among libtest's arguments too.
            let (libtest, reuse_flag) = crate::harness::take_flag(
                std::iter::once("runtime-matrix".to_owned()).chain(libtest),
                crate::harness::REUSE_FLAG,
            );
            let args = libtest_mimic::Arguments::from_iter(libtest);
            match options(select) {
                Ok(options) => Harness::new(
                    args,
                    Options {
                        reuse_results: options.reuse_results || reuse_results || reuse_flag,
                        ..options
                    },
                )
                .run(),
                Err(error) => fail_setup(&error),
            }
        }
    }
}

/// The settings from the environment, with the selection flags over them.
fn options(select: Select) -> Result<Options, crate::error::SettingsError> {
    Ok(Options {
        config: select.config,
        stage: select.stage,
        tags: select.tags,
        shard: select.shard,
        machines: select.machines,
        ..Options::from_env()?
    })
}

fn plan(select: Select, format: Format) -> ExitCode {
    let options = match options(select) {
        Ok(options) => options,
        Err(error) => return fail_setup(&error),
    };
    let (matrix, selection, plan) = match harness::plan(&options) {
        Ok(planned) => planned,
        Err(code) => return code,
    };
    match format {
        Format::Json => {
            let document = PlanDocument::new(matrix.path.clone(), &selection.machines, &plan);
            println!(
                "{}",
                serde_json::to_string_pretty(&document).expect("plans always serialise")
            );
        }
        Format::Text => {
            println!(
                "{}: {}, {}, stage `{}`",
                matrix.path.display(),
                count(matrix.runtimes.len(), "runtime", "runtimes"),
                count(matrix.machines.len(), "machine", "machines"),
                plan.stage
            );
            match &selection.machines {
                MachineSelection::Detected(host) => {
                    let cuda = host
                        .cuda_version()
                        .map(|v| format!(" (CUDA {v})"))
                        .unwrap_or_default();
                    println!(
                        "host: NVIDIA driver {}{cuda}, {} GPU(s)",
                        host.driver,
                        host.gpus.len()
                    );
                    for gpu in &host.gpus {
                        println!(
                            "  [{}] {} {} ({} MiB, compute capability {})",
                            gpu.index, gpu.uuid, gpu.name, gpu.memory_mib, gpu.compute_capability
                        );
                    }
                }
                MachineSelection::NoDriver(reason) => {
                    println!("host: no NVIDIA driver ({reason}); only CPU-only machines run here")
                }
                MachineSelection::Named(names) => println!("machines named: {}", names.join(", ")),
                MachineSelection::CpuOnly => {}
            }
            print_services(&plan);
            println!(
                "\nwould run {}:",
                count(plan.trials.len(), "trial", "trials")
            );
            for t in &plan.trials {
                let timeouts = match t.check.kind {
                    crate::config::CheckKind::Notebook { .. } => format!(
                        "deadline {}, cell timeout {}",
                        humantime::format_duration(t.check.timeout),
                        humantime::format_duration(t.check.cell_timeout)
                    ),
                    _ => format!("timeout {}", humantime::format_duration(t.check.timeout)),
                };
                let expected = t
                    .expected_failure
                    .as_ref()
                    .map(|e| format!("; expected to fail: {}", e.reason))
                    .unwrap_or_default();
                let data = match t.check.data.as_slice() {
                    [] => String::new(),
                    globs => format!("; data: {}", globs.join(", ")),
                };
                println!(
                    "  [{}] {}  ({timeouts}; tags: {}{data}{expected})",
                    t.kind(),
                    t.name,
                    t.tags.join(",")
                );
                if !t.parameters.is_empty() {
                    let parameters: Vec<String> = t
                        .parameters
                        .iter()
                        .map(|(name, value)| format!("{name}={value}"))
                        .collect();
                    println!("      parameters {}", parameters.join(" "));
                }
                if let Some(container) = trial_container(t) {
                    print_container(&container);
                }
                if !t.runtime.services.is_empty() {
                    let names: Vec<&str> =
                        t.runtime.services.iter().map(|s| s.name.as_str()).collect();
                    let reached = match &t.runtime.executor {
                        crate::config::Executor::Host { .. } => {
                            "through ports published on 127.0.0.1".to_owned()
                        }
                        crate::config::Executor::Docker(docker) => match docker.network.as_str() {
                            "none" => "on an internal network of the runtime's own, instead of network none".to_owned(),
                            own => format!("on an internal network of the runtime's own, besides network {own}"),
                        },
                    };
                    println!("      services {} ({reached})", names.join(", "));
                }
            }
            if !plan.consistency.is_empty() {
                println!(
                    "\nwould compare, after them, {}:",
                    count(plan.consistency.len(), "notebook", "notebooks")
                );
            }
            for c in &plan.consistency {
                let expected = c
                    .expected_failure
                    .as_ref()
                    .map(|e| format!("; expected to differ: {}", e.reason))
                    .unwrap_or_default();
                println!(
                    "  [consistency] {}  (cells tagged `{}` across {}{expected})",
                    c.name,
                    c.tag,
                    count(c.trials.len(), "trial", "trials"),
                );
            }
            println!(
                "\nwould not run {}:",
                count(plan.excluded.len(), "trial", "trials")
            );
            for e in &plan.excluded {
                println!("  {}  ({})", e.name, e.reason);
            }
        }
    }
    ExitCode::from(EXIT_OK)
}

/// The services the planned trials use: image, ports, readiness, and their runtimes.
fn print_services(plan: &crate::plan::Plan) {
    let mut services: Vec<&crate::config::Service> = Vec::new();
    for service in plan.trials.iter().flat_map(|t| &t.runtime.services) {
        if !services.iter().any(|known| known.name == service.name) {
            services.push(service);
        }
    }
    if services.is_empty() {
        return;
    }
    services.sort_by(|a, b| a.name.cmp(&b.name));
    println!("\nservices (one per run and engine, started by the first trial that needs it):");
    for service in services {
        let made = match (&service.build, service.pull) {
            (Some(crate::config::Build::Context { context, .. }), _) => {
                format!(", built from {}", context.display())
            }
            (Some(crate::config::Build::Script { script }), _) => {
                format!(", built by {}", script.display())
            }
            (None, pull) => format!(
                ", pull {}",
                serde_json::to_value(pull)
                    .unwrap_or_default()
                    .as_str()
                    .unwrap_or_default()
            ),
        };
        let ports: Vec<String> = service.ports.iter().map(u16::to_string).collect();
        println!(
            "  {}  image {}{made}; ports {}; ready when {} (within {}); used by {}",
            service.name,
            service.image,
            ports.join(","),
            service.ready,
            humantime::format_duration(service.ready_timeout),
            service.runtimes.join(", ")
        );
        let prefix = service.env_prefix();
        let url = match &service.url {
            Some(url) => format!(", {prefix}_URL ({url})"),
            None => String::new(),
        };
        let each: String = service
            .ports
            .iter()
            .map(|port| format!(", {prefix}_PORT_{port}"))
            .collect();
        println!("      trials see {prefix}_HOST, {prefix}_PORT{each}{url}");
    }
}

fn print_container(c: &ContainerSpec) {
    let gpus = match &c.gpus {
        GpuRequest::None => "none".to_owned(),
        GpuRequest::Count(n) => format!("{n} (any)"),
        GpuRequest::Devices(ids) => ids.join(","),
    };
    let size = |bytes: Option<i64>| {
        bytes
            .map(|b| format!("{}m", b / (1024 * 1024)))
            .unwrap_or_else(|| "unlimited".into())
    };
    println!(
        "      image {}; gpus {gpus}; memory {}; pids {}; network {}; unprivileged, no added capabilities, {}",
        c.image,
        size(c.memory),
        c.pids
            .map(|p| p.to_string())
            .unwrap_or_else(|| "unlimited".into()),
        c.network,
        c.security_options.join(",")
    );
    let env: Vec<String> = c.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("      env {}", env.join(" "));
    // The runner runs a notebook with nbclient itself; this is the command that does the same.
    println!(
        "      on its runner's container, in {}, as: {}",
        c.workdir,
        c.command.join(" ")
    );
}

fn clean(config: &std::path::Path, runs: Option<usize>, reuse: bool) -> ExitCode {
    // The machines may name engines of their own; without a readable matrix, the default one.
    let mut engines = vec![crate::engine::Address::default()];
    let matrix = crate::Matrix::load(config);
    if let Ok(matrix) = &matrix {
        engines.extend(
            matrix
                .machines
                .iter()
                .filter(|m| m.docker.is_some())
                .map(crate::exec::engine_address),
        );
    }
    engines.sort();
    engines.dedup();
    let options = match Options::from_env() {
        Ok(options) => options,
        Err(error) => return fail_setup(&error),
    };
    // Run folders first: they need no engine.
    if let Some(keep) = runs {
        let root = match &matrix {
            Ok(matrix) => options.out_root(matrix),
            Err(error) if options.out.is_none() => {
                eprintln!(
                    "error: cannot tell where the run folders are: {}\n  (set RUNTIME_MATRIX_OUT, or --config a readable matrix)",
                    chain(error)
                );
                return ExitCode::from(EXIT_SETUP);
            }
            Err(_) => options.out.clone().unwrap_or_default(),
        };
        match crate::runs::prune_runs(&root, keep) {
            Ok(removed) => println!(
                "removed {} from {}, kept the newest {}",
                crate::report::text::count(removed.len(), "run folder", "run folders"),
                root.display(),
                keep
            ),
            Err(error) => return fail_setup(&error),
        }
    }
    if reuse {
        let dir = match (&matrix, &options.reuse_dir, &options.out) {
            (Ok(matrix), _, _) => options.reuse_dir(matrix),
            (Err(_), Some(dir), _) => dir.clone(),
            (Err(_), None, Some(out)) => out.join(crate::reuse::DIR_NAME),
            (Err(error), None, None) => {
                eprintln!(
                    "error: cannot tell where the result reuse store is: {}\n  (set RUNTIME_MATRIX_REUSE_DIR, or --config a readable matrix)",
                    chain(error)
                );
                return ExitCode::from(EXIT_SETUP);
            }
        };
        match crate::reuse::Store::new(dir.clone()).clear() {
            Ok(removed) => println!(
                "removed {} from {}",
                crate::report::text::count(removed, "result reuse entry", "result reuse entries"),
                dir.display()
            ),
            Err(error) => {
                eprintln!(
                    "error: cannot empty the result reuse store {}: {error}",
                    dir.display()
                );
                return ExitCode::from(EXIT_SETUP);
            }
        }
    }
    let cleaned = match crate::exec::clean_all(&engines, options.engine_timeout) {
        Ok(cleaned) => cleaned,
        Err(error) => return fail_setup(&error),
    };
    // An engine that fails or stays silent is reported; the others are still cleaned.
    let mut code = EXIT_OK;
    for result in cleaned {
        match result {
            Ok((endpoint, removed)) => println!("removed {removed} container(s) from {endpoint}"),
            Err(error) => {
                eprintln!("error: {}", chain(&error));
                code = EXIT_SETUP;
            }
        }
    }
    ExitCode::from(code)
}

/// The newest run's folder: the one `latest` names under the output folder of the matrix at
/// `config` (or `RUNTIME_MATRIX_OUT`).
fn newest_run(config: &std::path::Path) -> Result<PathBuf, String> {
    let options = Options::from_env().map_err(|error| chain(&error))?;
    let root = match (crate::Matrix::load(config), &options.out) {
        (Ok(matrix), _) => options.out_root(&matrix),
        (Err(_), Some(out)) => out.clone(),
        (Err(error), None) => {
            return Err(format!(
                "cannot tell where the runs are: {}\n  (give a run folder, set RUNTIME_MATRIX_OUT, or --config a readable matrix)",
                chain(&error)
            ));
        }
    };
    let latest = root.join("latest");
    let run_id = crate::fsx::read_bounded(&latest, crate::fsx::CONFIG)
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .map_err(|error| {
            format!(
                "no run to report on: cannot read {} ({error}); run the matrix first, or give a run folder",
                latest.display()
            )
        })?;
    if !crate::settings::is_plain_run_id(&run_id) {
        return Err(format!(
            "{} names `{run_id}`, which is not a run id; give a run folder",
            latest.display()
        ));
    }
    Ok(root.join(run_id))
}

fn report(dirs: &[PathBuf], out: Option<PathBuf>, compare: Compare) -> ExitCode {
    let out = out.unwrap_or_else(|| dirs[0].clone());
    // Read before the runs: a bad baseline says so before anything is written.
    let baseline = match compare.baseline.as_deref().map(Baseline::read).transpose() {
        Ok(baseline) => baseline,
        Err(error) => return fail_setup(&error),
    };
    let mut report = match crate::report::read_report(dirs) {
        Ok(report) => report,
        Err(error) => return fail_setup(&error),
    };
    if let Some(baseline) = &baseline {
        let thresholds = Thresholds {
            slower_ratio: compare.slower_ratio,
            slower_seconds: compare.slower_seconds,
        };
        report.compare(baseline, thresholds);
    }
    if let Err(error) = crate::report::write_all(&report, &out) {
        eprintln!("error: {}", chain(&error));
        return fail_setup(&error);
    }
    let s = &report.summary;
    println!(
        "merged {} from {}: {}, {} excluded, {} not run",
        count(s.total, "trial record", "trial records"),
        count(report.runs.len(), "run", "runs"),
        crate::report::text::outcomes(s),
        s.excluded,
        s.not_run
    );
    if let Some(comparison) = &report.baseline {
        let _ = crate::report::baseline::write_text(comparison, &mut std::io::stdout().lock());
    }
    println!(
        "reports written to {} (report.md, report.json, junit.xml)",
        out.display()
    );
    let incomplete = report.incomplete();
    if let Some(problem) = &incomplete {
        eprintln!("error: {problem}");
    }
    let failed = match (compare.fail_on, &report.baseline) {
        (FailOn::New, Some(comparison)) => {
            let blocking = comparison.blocking();
            if !blocking.is_empty() {
                let names: Vec<String> = blocking.iter().map(|c| format!("`{}`", c.name)).collect();
                eprintln!(
                    "error: {} the baseline does not have: {}",
                    count(blocking.len(), "failure", "failures"),
                    names.join(", ")
                );
            }
            let known = comparison.known().len();
            if known > 0 {
                println!(
                    "{} the baseline has too (not failing the report: --fail-on new)",
                    count(known, "failure", "failures")
                );
            }
            !blocking.is_empty()
        }
        _ => report.has_failures(),
    };
    ExitCode::from(if failed || incomplete.is_some() {
        EXIT_TRIALS_FAILED
    } else {
        EXIT_OK
    })
}

fn ci(system: CiSystem) -> ExitCode {
    let ci = match &system {
        CiSystem::Github { ci, .. } | CiSystem::Gitlab { ci, .. } => ci,
    };
    // Every machine: each job then selects its own with RUNTIME_MATRIX_MACHINES.
    let options = match Options::from_env() {
        Ok(options) => Options {
            config: ci.config.clone(),
            stage: ci.stage.clone(),
            tags: ci.tags.clone(),
            shard: None,
            machines: Some("all".into()),
            ..options
        },
        Err(error) => return fail_setup(&error),
    };
    let (matrix, _, plan) = match harness::plan(&options) {
        Ok(planned) => planned,
        Err(code) => return code,
    };
    let (jobs, skipped) = crate::ci::jobs(&matrix, &plan);
    for s in &skipped {
        eprintln!(
            "runtime-matrix: machine `{}` gets no CI job: {}",
            s.machine, s.reason
        );
    }
    let cli = || match &ci.cli {
        Some(text) => crate::ci::CliSource::parse(text),
        None => crate::ci::CliSource::detect(&ci.config),
    };
    let config = ci.config.display().to_string();
    let test = ci.test.clone();
    let (text, out) = match &system {
        CiSystem::Github { workflow: None, .. } => {
            (crate::ci::github::matrix_json(&jobs) + "\n", None)
        }
        CiSystem::Github {
            workflow: Some(out),
            branch,
            ..
        } => match cli() {
            Ok(cli) => {
                let workflow = crate::ci::github::Workflow {
                    config,
                    cli,
                    branch: branch.clone(),
                    test,
                    stage: ci.stage.clone(),
                    tags: ci.tags.clone(),
                };
                (workflow.render(), out.clone())
            }
            Err(message) => return fail_ci(&message),
        },
        CiSystem::Gitlab { out, .. } => match cli() {
            Ok(cli) => {
                let pipeline = crate::ci::gitlab::Pipeline {
                    config,
                    cli,
                    test,
                    stage: ci.stage.clone(),
                    tags: ci.tags.clone(),
                };
                (pipeline.render(&jobs), out.clone())
            }
            Err(message) => return fail_ci(&message),
        },
    };
    match out {
        None => {
            use std::io::Write;
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
        }
        Some(path) => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
                && let Err(error) = std::fs::create_dir_all(parent)
            {
                return fail_ci(&format!("cannot create {} ({error})", parent.display()));
            }
            if let Err(error) = std::fs::write(&path, &text) {
                return fail_ci(&format!("cannot write {} ({error})", path.display()));
            }
            eprintln!("runtime-matrix: wrote {}", path.display());
        }
    }
    ExitCode::from(EXIT_OK)
}

fn fail_ci(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_SETUP)
}
