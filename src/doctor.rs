//! `runtime-matrix doctor`: is this host ready to run the matrix? The main type is [`Report`]:
//! one [`Check`] per thing the matrix needs (config, engines, NVIDIA runtime, NVML, images, the
//! tools inside them, disk), each passed, warned or failed, with the fix for what failed.

use crate::config::{Build, DockerRuntime, Executor, Matrix, Runtime};
use crate::engine::{Address, Engine};
use crate::error::chain;
use crate::exec::engine_address;
use crate::gpu::{Detection, detect};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Ready.
    Pass,
    /// Not needed here, or will be taken care of, but worth knowing.
    Warn,
    /// Something the matrix needs is missing.
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Check {
    /// What was checked: `config`, `docker`, `image jupyter-base`...
    pub name: String,
    /// How it came out.
    pub verdict: Verdict,
    /// What was found.
    pub detail: String,
    /// What to do, for warnings and failures.
    pub fix: Option<String>,
}

/// The doctor's findings.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Every check, in the order run.
    pub checks: Vec<Check>,
}

impl Report {
    fn add(
        &mut self,
        name: impl Into<String>,
        verdict: Verdict,
        detail: impl Into<String>,
        fix: Option<String>,
    ) {
        self.checks.push(Check {
            name: name.into(),
            verdict,
            detail: detail.into(),
            fix,
        });
    }

    /// Whether anything the matrix needs is missing.
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.verdict == Verdict::Fail)
    }

    /// Writes the report as a table with ✓, ! and ✗.
    pub fn write(&self, out: &mut impl Write) -> std::io::Result<()> {
        let width = self
            .checks
            .iter()
            .map(|c| c.name.chars().count())
            .max()
            .unwrap_or(0);
        for check in &self.checks {
            let mark = match check.verdict {
                Verdict::Pass => "✓",
                Verdict::Warn => "!",
                Verdict::Fail => "✗",
            };
            let mut lines = check.detail.lines();
            writeln!(
                out,
                "{mark} {:width$}  {}",
                check.name,
                lines.next().unwrap_or("")
            )?;
            for line in lines {
                writeln!(out, "  {:width$}  {line}", "")?;
            }
            if let Some(fix) = &check.fix {
                writeln!(out, "  {:width$}  fix: {fix}", "")?;
            }
        }
        let failed = self
            .checks
            .iter()
            .filter(|c| c.verdict == Verdict::Fail)
            .count();
        let warned = self
            .checks
            .iter()
            .filter(|c| c.verdict == Verdict::Warn)
            .count();
        writeln!(
            out,
            "\n{} checks: {failed} failed, {warned} warnings",
            self.checks.len()
        )
    }
}

/// Examines the host for the matrix at `config`, with `out_root` as the output folder; each
/// engine call is given `engine_limit` to answer, so a silent engine fails its checks instead
/// of holding the doctor.
pub fn examine(
    config: &Path,
    engine_limit: Duration,
    out_root: impl Fn(&Matrix) -> std::path::PathBuf,
) -> Report {
    let mut report = Report::default();
    let Some(matrix) = report_config(&mut report, config) else {
        return report;
    };
    let host_has_gpus = report_nvml(&mut report, &matrix);
    for runtime in &matrix.runtimes {
        if let Executor::Host { python, packages } = &runtime.executor {
            report_host_python(&mut report, &runtime.name, python, packages);
        }
    }
    if !report_engines(&mut report, &matrix, host_has_gpus, engine_limit) {
        return report;
    }
    report_services(&mut report, &matrix, engine_limit);
    let out = out_root(&matrix);
    let existing = out
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"))
        .to_path_buf();
    report_disk(&mut report, "disk (output)", &existing);
    report
}

/// Loads the matrix; `None` when it is invalid (then nothing else is worth checking).
fn report_config(report: &mut Report, config: &Path) -> Option<Matrix> {
    match Matrix::load(config) {
        Ok(matrix) => {
            let detail = format!(
                "{}: {} runtimes, {} machines{}",
                config.display(),
                matrix.runtimes.len(),
                matrix.machines.len(),
                if matrix.warnings.is_empty() {
                    String::new()
                } else {
                    format!("; {} warnings", matrix.warnings.len())
                }
            );
            let fix = (!matrix.warnings.is_empty()).then(|| matrix.warnings.join("; "));
            let verdict = if matrix.warnings.is_empty() {
                Verdict::Pass
            } else {
                Verdict::Warn
            };
            report.add("config", verdict, detail, fix);
            Some(matrix)
        }
        Err(error) => {
            // The report carries the problems; the unknown keys that may explain them go
            // first, as `plan` prints them.
            crate::config::print_warnings(error.warnings());
            report.add(
                "config",
                Verdict::Fail,
                chain(&error),
                Some("fix the keys listed above".into()),
            );
            None
        }
    }
}

/// Whether NVML answers; returns whether this host has GPUs.
fn report_nvml(report: &mut Report, matrix: &Matrix) -> bool {
    let gpu_machines: Vec<&str> = matrix
        .machines
        .iter()
        .filter(|m| m.gpus > 0)
        .map(|m| m.name.as_str())
        .collect();
    let detection = detect();
    match detection {
        Detection::Found(host) => report.add(
            "nvml",
            Verdict::Pass,
            format!(
                "NVIDIA driver {} (CUDA {}), {} GPU(s): {}",
                host.driver,
                host.cuda_version().unwrap_or_else(|| "?".into()),
                host.gpus.len(),
                host.gpus
                    .iter()
                    .map(|g| format!("{} {}", g.name, g.uuid))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None,
        ),
        Detection::NoDriver(reason) if gpu_machines.is_empty() => report.add(
            "nvml",
            Verdict::Pass,
            format!("no NVIDIA driver ({reason}); the matrix has no GPU machine"),
            None,
        ),
        Detection::NoDriver(reason) => report.add(
            "nvml",
            Verdict::Warn,
            format!(
                "no NVIDIA driver ({reason}); GPU machines ({}) are excluded on this host",
                gpu_machines.join(", ")
            ),
            Some(
                "install the NVIDIA driver to run GPU machines here, or run them on a GPU host"
                    .into(),
            ),
        ),
    }
    matches!(detection, Detection::Found(host) if !host.gpus.is_empty())
}

/// The Docker runtimes of a matrix, each with its Docker settings.
type DockerRuntimes<'a> = [(&'a Runtime, &'a DockerRuntime)];

/// Every engine the matrix's Docker runtimes use; `false` when none could be examined at all.
fn report_engines(
    report: &mut Report,
    matrix: &Matrix,
    host_has_gpus: bool,
    engine_limit: Duration,
) -> bool {
    let docker_runtimes: Vec<_> = matrix
        .runtimes
        .iter()
        .filter_map(|r| match &r.executor {
            Executor::Docker(docker) => Some((r, &**docker)),
            Executor::Host { .. } => None,
        })
        .collect();
    if docker_runtimes.is_empty() {
        return true;
    }
    let tokio = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(tokio) => tokio,
        Err(error) => {
            report.add(
                "docker",
                Verdict::Fail,
                format!("cannot start an async runtime: {error}"),
                None,
            );
            return false;
        }
    };
    let engines: BTreeSet<Address> = docker_runtimes
        .iter()
        .flat_map(|(runtime, _)| {
            runtime
                .machines
                .iter()
                .filter_map(|m| matrix.machine(m))
                .map(engine_address)
        })
        .collect();
    for address in engines {
        report_engine(
            report,
            &tokio,
            matrix,
            &docker_runtimes,
            address,
            host_has_gpus,
            engine_limit,
        );
    }
    true
}

/// One engine: reachable, its NVIDIA runtime, its disk, and the images of its runtimes.
fn report_engine(
    report: &mut Report,
    tokio: &tokio::runtime::Runtime,
    matrix: &Matrix,
    docker_runtimes: &DockerRuntimes<'_>,
    address: Address,
    host_has_gpus: bool,
    engine_limit: Duration,
) {
    let label = address.endpoint.clone().unwrap_or_else(|| "docker".into());
    let engine = match tokio.block_on(Engine::connect_within(&address, engine_limit)) {
        Ok(engine) => engine,
        Err(error) => {
            let machines = machines_on(matrix, &address);
            let fix = engine_fix(&error, &machines);
            report.add(label, Verdict::Fail, chain(&error), Some(fix));
            return;
        }
    };
    let system = tokio.block_on(engine.system());
    let (version, runtimes, root, name) = match system {
        Ok(system) => (
            system.version,
            system.runtimes,
            system.root_dir,
            system.name,
        ),
        Err(error) => {
            report.add(label, Verdict::Fail, chain(&error), None);
            return;
        }
    };
    let how = match (&engine.tls_origin(), engine.endpoint()) {
        (Some(origin), _) => format!(" over TLS ({origin})"),
        (None, endpoint) if endpoint.starts_with("ssh://") => " over ssh".to_owned(),
        _ => String::new(),
    };
    let host = name.map(|name| format!(" on {name}")).unwrap_or_default();
    report.add(
        &label,
        Verdict::Pass,
        format!("{}{how}: Docker {version}{host}", engine.endpoint()),
        None,
    );
    let uses_gpus = docker_runtimes.iter().any(|(runtime, _)| {
        runtime
            .machines
            .iter()
            .filter_map(|m| matrix.machine(m))
            .any(|m| m.gpus > 0 && engine_address(m) == address)
    });
    let nvidia = runtimes.iter().any(|r| r == "nvidia");
    let (verdict, detail) = match (nvidia, uses_gpus, host_has_gpus) {
        (true, _, _) => (Verdict::Pass, format!("runtimes: {}", runtimes.join(", "))),
        (false, false, _) => (
            Verdict::Pass,
            "not installed; no container trial on this engine needs GPUs".into(),
        ),
        (false, true, false) => (
            Verdict::Warn,
            "not installed; GPU machines are excluded on this host anyway".to_owned(),
        ),
        (false, true, true) => (
            Verdict::Fail,
            format!(
                "not installed (runtimes: {}), but GPU machines need it",
                runtimes.join(", ")
            ),
        ),
    };
    let fix = (verdict != Verdict::Pass).then(|| {
        "install the NVIDIA Container Toolkit on the engine's host and restart the engine"
            .to_owned()
    });
    report.add(format!("{label} nvidia runtime"), verdict, detail, fix);
    if address.endpoint.is_none()
        && let Some(root) = root
    {
        report_disk(report, "disk (engine)", Path::new(&root));
    }
    for (runtime, docker) in docker_runtimes.iter().filter(|(r, _)| {
        r.machines
            .iter()
            .filter_map(|m| matrix.machine(m))
            .any(|m| engine_address(m) == address)
    }) {
        report_image(report, tokio, &engine, runtime, docker);
    }
}

/// The machines whose engine is at `address`, as `machines.NAME` keys.
fn machines_on(matrix: &Matrix, address: &Address) -> Vec<String> {
    matrix
        .machines
        .iter()
        .filter(|m| engine_address(m) == *address)
        .map(|m| format!("machines.{}", m.name))
        .collect()
}

/// What to do about an engine that cannot be used, naming the settings that reach it.
fn engine_fix(error: &crate::error::EngineError, machines: &[String]) -> String {
    use crate::error::EngineError;
    let keys = |suffix: &str| {
        if machines.is_empty() {
            format!("machines.NAME{suffix}")
        } else {
            machines
                .iter()
                .map(|m| format!("{m}{suffix}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    match error {
        EngineError::PermissionDenied { .. } => {
            "add your user to the `docker` group, or run as root".into()
        }
        EngineError::Silent { .. } => format!(
            "restart the Docker engine, or point DOCKER_HOST or {} at one that answers",
            keys(".docker")
        ),
        EngineError::Tls { check, .. } | EngineError::TlsFile { origin: check, .. } => format!(
            "check {check}: `ca` is the CA that signed the engine's certificate, `cert` and `key` \
             our client certificate (signed by a CA the engine trusts, its `tlscacert`) and its key"
        ),
        EngineError::Ssh { destination, .. } => format!(
            "make `ssh {destination} docker version` work from this shell without a prompt (the \
             host's key in known_hosts, your key in ssh-agent or ~/.ssh/config), or change {}",
            keys(".docker")
        ),
        _ => format!(
            "start the Docker engine (`sudo systemctl start docker`), or set DOCKER_HOST or {} \
             (`tcp://HOST:2376` with `tls = {{ ca, cert, key }}`, or `ssh://USER@HOST`)",
            keys(".docker")
        ),
    }
}

/// One image of a runtime: present with the tools every check needs, or to be built or pulled.
fn report_image(
    report: &mut Report,
    tokio: &tokio::runtime::Runtime,
    engine: &Engine,
    runtime: &Runtime,
    docker: &DockerRuntime,
) {
    let name = format!("image {}", runtime.name);
    match tokio.block_on(engine.image(&docker.image)) {
        Ok(Some(info)) => {
            let id: String = info.id.chars().take(19).collect();
            match tokio.block_on(image_tools(engine, &docker.image, &docker.python)) {
                Ok(tools) => report.add(
                    name,
                    Verdict::Pass,
                    format!("{} ({id}): {tools}", docker.image),
                    None,
                ),
                Err(missing) => report.add(
                    name,
                    Verdict::Fail,
                    format!("{} ({id}): {missing}", docker.image),
                    Some("install Python, nbconvert (which brings nbclient) and ipykernel in the image".into()),
                ),
            }
        }
        Ok(None) => report_absent_image(
            report,
            name,
            (&docker.image, docker.build.as_ref(), "the engine"),
            || tokio.block_on(engine.pullable(&docker.image)),
            "fix its name in matrix.toml",
        ),
        Err(error) => report.add(name, Verdict::Fail, chain(&error), None),
    }
}

/// The line for an image the engine does not have: built or pulled by the first trial that
/// needs it (a warning), or nowhere to be had (a failure, with `fix_name` among the fixes).
/// `pullable` asks its registry, only when there is no `build`.
fn report_absent_image(
    report: &mut Report,
    name: String,
    (image, build, place): (&str, Option<&Build>, &str),
    pullable: impl FnOnce() -> Result<(), crate::error::EngineError>,
    fix_name: &str,
) {
    if let Some(build) = build {
        let from = match build {
            Build::Context { context, .. } => context.display().to_string(),
            Build::Script { script } => script.display().to_string(),
        };
        let said = format!(
            "{image} is not built in {place} yet; the first trial that needs it builds it from {from}"
        );
        return report.add(name, Verdict::Warn, said, None);
    }
    match pullable() {
        Ok(()) => report.add(
            name,
            Verdict::Warn,
            format!("{image} is not in {place}; its registry has it, and the first trial pulls it"),
            None,
        ),
        Err(error) => report.add(
            name,
            Verdict::Fail,
            chain(&error),
            Some(format!("push the image, {fix_name}, or declare a `build`")),
        ),
    }
}

/// Each service its runtimes use, on each engine that needs it: its image present, or how it
/// will be built or pulled; and, for a host runtime, that its machine's engine is on this host
/// (its ports are published on this host's loopback).
fn report_services(report: &mut Report, matrix: &Matrix, engine_limit: Duration) {
    let Ok(tokio) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    for service in &matrix.services {
        let mut engines: BTreeSet<Address> = BTreeSet::new();
        for runtime in service.runtimes.iter().filter_map(|r| matrix.runtime(r)) {
            for machine in runtime.machines.iter().filter_map(|m| matrix.machine(m)) {
                let address = engine_address(machine);
                if matches!(runtime.executor, Executor::Host { .. }) {
                    let endpoint = address.endpoint.clone().unwrap_or_else(|| {
                        std::env::var("DOCKER_HOST")
                            .unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
                    });
                    if !crate::exec::is_local_engine(&endpoint) {
                        report.add(
                            format!("service {} for {}", service.name, runtime.name),
                            Verdict::Fail,
                            format!(
                                "host runtime `{}` reaches its services on this host, but machine \
                                 `{}`'s engine is {endpoint}",
                                runtime.name, machine.name
                            ),
                            Some("give the machine an engine on this host, or use the service from a container runtime".into()),
                        );
                    }
                }
                engines.insert(address);
            }
        }
        for address in engines {
            let name = format!("service {}", service.name);
            // A port's readiness is checked through its port published on the engine's host,
            // which only an engine on this host publishes here: every trial would fail.
            let endpoint = address.endpoint.clone().unwrap_or_else(|| {
                std::env::var("DOCKER_HOST")
                    .unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
            });
            if let crate::config::Readiness::Port { port } = &service.ready
                && !crate::exec::is_local_engine(&endpoint)
            {
                report.add(
                    format!("{name} readiness on {endpoint}"),
                    Verdict::Fail,
                    format!(
                        "its readiness connects to port {port}, which this host cannot do on the \
                         engine at {endpoint}, so every trial using it would fail"
                    ),
                    Some(format!(
                        "declare services.{}.ready as {{ log = \"...\" }} or {{ command = \"...\" }}",
                        service.name
                    )),
                );
            }
            let engine = match tokio.block_on(Engine::connect_within(&address, engine_limit)) {
                Ok(engine) => engine,
                Err(error) => {
                    report.add(name, Verdict::Fail, chain(&error), None);
                    continue;
                }
            };
            let on = engine.endpoint().to_owned();
            match tokio.block_on(engine.image(&service.image)) {
                Ok(Some(info)) => {
                    let id: String = info.id.chars().take(19).collect();
                    report.add(
                        name,
                        Verdict::Pass,
                        format!(
                            "{} ({id}) on {on}; ready when {}",
                            service.image, service.ready
                        ),
                        None,
                    );
                }
                Ok(None) => report_absent_image(
                    report,
                    name,
                    (&service.image, service.build.as_ref(), &on),
                    || tokio.block_on(engine.pullable(&service.image)),
                    &format!("fix services.{}.image", service.name),
                ),
                Err(error) => report.add(name, Verdict::Fail, chain(&error), None),
            }
        }
    }
}

fn report_host_python(report: &mut Report, runtime: &str, python: &str, packages: &[String]) {
    let probe = std::process::Command::new(python)
        .args(["-c", "import sys, importlib.util as u; print('%d.%d.%d' % sys.version_info[:3], all(u.find_spec(m) for m in ('nbclient', 'ipykernel')))"])
        .output();
    let name = format!("python {runtime}");
    match probe {
        Ok(output) if output.status.success() => {
            let text = String::from_utf8_lossy(&output.stdout);
            let (version, ready) = text
                .trim()
                .split_once(' ')
                .unwrap_or((text.trim(), "False"));
            let detail = if ready == "True" && packages.is_empty() {
                format!("`{python}` is Python {version} with nbclient and ipykernel")
            } else {
                format!(
                    "`{python}` is Python {version}; a virtualenv with what the runtime needs is provisioned on first use"
                )
            };
            report.add(name, Verdict::Pass, detail, None);
        }
        Ok(output) => report.add(
            name,
            Verdict::Fail,
            format!(
                "`{python}` fails: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            Some(format!("install it, or set runtimes.{runtime}.python")),
        ),
        Err(error) => report.add(
            name,
            Verdict::Fail,
            format!("`{python}` cannot be run: {error}"),
            Some(format!("install it, or set runtimes.{runtime}.python")),
        ),
    }
}

/// Free space at `path`: under 2 GiB fails, under 10 GiB warns.
fn report_disk(report: &mut Report, name: &str, path: &Path) {
    let Some(free) = free_bytes(path) else {
        report.add(
            name,
            Verdict::Warn,
            format!("cannot tell the free space at {}", path.display()),
            None,
        );
        return;
    };
    let gib = free as f64 / (1u64 << 30) as f64;
    let detail = format!("{gib:.1} GiB free at {}", path.display());
    let (verdict, fix) = if gib < 2.0 {
        (
            Verdict::Fail,
            Some("free some space: images, virtualenvs and executed notebooks need it".into()),
        )
    } else if gib < 10.0 {
        (Verdict::Warn, Some("images and runs may fill it; `docker image prune` and old run folders are the usual space".into()))
    } else {
        (Verdict::Pass, None)
    };
    report.add(name, verdict, detail, fix);
}

fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid C string and `stat` a writable statvfs.
    let result = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
    (result == 0).then(|| stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// What `python` in `image` has: runs one short, labelled container that imports nbclient (what
/// runners execute notebooks with) and ipykernel, and removes it. `Ok` holds the versions; `Err` what is missing.
async fn image_tools(engine: &Engine, image: &str, python: &str) -> Result<String, String> {
    let script = "import sys, nbclient, ipykernel; print('python %d.%d.%d, nbclient %s, ipykernel %s' % (sys.version_info[:3] + (nbclient.__version__, ipykernel.__version__)))";
    let command = ["timeout", "-s", "KILL", "60", python, "-c", script]
        .map(String::from)
        .to_vec();
    let exec = crate::exec::run_once(engine, image, "doctor", command, Duration::from_secs(90))
        .await
        .map_err(|e| chain(&e))?;
    match exec.exit_code {
        Some(0) => Ok(exec.output.trim().to_owned()),
        code => Err(crate::exec::missing_tool(&exec.output, code, python, image)
            .unwrap_or_else(|| crate::exec::tail(&exec.output, 1))),
    }
}
