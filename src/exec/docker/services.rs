//! Services: a container of each service a trial's runtime uses, started at most once per run
//! and engine (lazily, by the first trial that needs it), and the network joining it to a
//! container runtime's runner. The main type is [`Services`], this process's view of them;
//! [`DockerExecutor::use_services`] gives a trial what it needs (its variables, its record
//! entries, its runner's network) or the infrastructure failure that ends it.
//!
//! Under cargo-nextest the processes of one run find a service, and a runtime's network, by
//! their labels under a file lock; the owner labels then name the nextest process, so they
//! live for the whole nextest run and the next run reaps them once it is gone. Otherwise the
//! process that started them removes them when it shuts down (after its runners), an
//! interrupt removes them through `live`, and a SIGKILLed run's are reaped by the next.

use super::containers::Keep;
use super::run::DockerExecutor;
use crate::config::{Readiness, Service};
use crate::engine::{
    ContainerSpec, Engine, ImageInfo, LABEL_HOST, LABEL_KEEP, LABEL_PID, LABEL_PID_START,
    LABEL_RUN, LABEL_TRIAL, Serves,
};
use crate::error::chain;
use crate::exec::live::{self, Owner, lock};
use crate::exec::runner::{key_name, scope};
use crate::plan::TrialSpec;
use crate::record::{SetupKind, SetupStep, TrialService};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Label: the service a container runs, by name.
pub(crate) const LABEL_SERVICE: &str = "runtime-matrix.service";
/// Label: the key of a service's container, or of a runtime's service network, in its run.
const LABEL_KEY: &str = "runtime-matrix.service-key";
/// Label: the runtime whose runner a service network joins to its services.
pub(crate) const LABEL_NETWORK_OF: &str = "runtime-matrix.network-of";
/// How many log lines a failure quotes.
const LOG_LINES: usize = 20;
/// How often readiness is checked.
const POLL: Duration = Duration::from_millis(250);
/// The longest one `ready = { command = ... }` check runs (less when the wait ends sooner).
const COMMAND_LIMIT: Duration = Duration::from_secs(10);

/// A service running for this run on one engine.
#[derive(Debug)]
pub(crate) struct Running {
    name: String,
    id: String,
    engine: Engine,
    image: ImageInfo,
    /// The host port of each container port, on 127.0.0.1 of the engine's host.
    published: BTreeMap<u16, u16>,
    /// Whether this process started it (and removes it).
    owned: bool,
    /// The values of its secrets, masked wherever its URL is shown.
    secrets: BTreeMap<String, String>,
}

/// A value found once per process and shared, or why it could not be.
type Once<T> = Arc<OnceLock<Result<T, String>>>;

/// A runtime's service network on one engine.
#[derive(Debug, Clone)]
struct Network {
    name: String,
    /// Whether this process made it (and removes it).
    owned: bool,
    engine: Engine,
}

/// The services and service networks this process started or found, by key.
#[derive(Default)]
pub(crate) struct Services {
    /// Each service started (or failed) once per process: a later trial gets the same answer
    /// at once, a failure included.
    started: Mutex<HashMap<String, Once<Arc<Running>>>>,
    /// Each runtime's network on an engine, by key: its name, and whether this process made
    /// it (and removes it).
    networks: Mutex<HashMap<String, Once<Network>>>,
    /// Services a failed trial used: `RUNTIME_MATRIX_KEEP=failed` keeps them.
    failed: Mutex<HashSet<String>>,
}

/// What a trial gets of its services.
#[derive(Debug, Default)]
pub(crate) struct ServicesUsed {
    /// `RUNTIME_MATRIX_SERVICE_<NAME>_*`.
    pub(crate) env: Vec<(String, String)>,
    /// For its record, secrets masked.
    pub(crate) records: Vec<TrialService>,
    /// The network its runner joins (container runtimes only).
    pub(crate) network: Option<String>,
    /// The values to mask in what the trial left: the services' secrets.
    pub(crate) secrets: Vec<String>,
}

/// Who owns the services and networks this process starts: the cargo-nextest process when
/// this is one of its test processes (they outlive each test process), else this process.
fn owner() -> &'static Owner {
    static OWNER: OnceLock<Owner> = OnceLock::new();
    OWNER.get_or_init(|| {
        let me = Owner::me();
        if !scope().is_empty() {
            return me.clone();
        }
        // SAFETY: getppid has no preconditions and cannot fail.
        let parent = unsafe { libc::getppid() } as u32;
        match live::start_of(parent) {
            Some(start) => Owner {
                pid: parent,
                start,
                host: me.host.clone(),
            },
            None => me.clone(),
        }
    })
}

impl DockerExecutor {
    /// Starts (or finds) every service `spec`'s runtime uses on `engine`, waits until each is
    /// ready, and, for a container runtime, joins them on the runtime's network. A service
    /// that cannot start or become ready is the trial's infrastructure failure, said in words
    /// naming the service. What starting them cost this trial goes to `setup`, whether they
    /// started or not.
    pub(crate) fn use_services(
        &self,
        engine: &Engine,
        spec: &TrialSpec,
        in_container: bool,
        setup: &mut Vec<SetupStep>,
    ) -> Result<ServicesUsed, String> {
        let mut used = ServicesUsed::default();
        let services = &spec.runtime.services;
        if services.is_empty() {
            return Ok(used);
        }
        if !in_container && !is_local(engine.endpoint()) {
            return Err(format!(
                "runtime `{}` runs on this host, so its services must run on an engine on this \
                 host, but machine `{}`'s engine is {} (use a container runtime on that engine, \
                 or give the machine a local engine)",
                spec.runtime.name,
                spec.machine.name,
                engine.endpoint()
            ));
        }
        let mut running = Vec::new();
        for service in services {
            let start = Instant::now();
            let (service_running, made, fresh) = self.service(engine, service);
            // Started, found or waited for by this call: setup, not trial time, even when it
            // never became ready; its image's build or pull is a step of its own.
            let image_seconds = made.as_ref().map_or(0.0, |step| step.seconds);
            setup.extend(made);
            if fresh {
                setup.push(SetupStep {
                    kind: SetupKind::Service,
                    subject: service.name.clone(),
                    seconds: (start.elapsed().as_secs_f64() - image_seconds).max(0.0),
                });
            }
            let service_running = service_running?;
            running.push((service, service_running));
        }
        if in_container {
            used.network = Some(self.network(engine, &spec.runtime.name, &running)?);
        }
        for (service, service_running) in &running {
            let prefix = service.env_prefix();
            let (host, ports): (String, BTreeMap<u16, u16>) = match in_container {
                true => (
                    service.name.clone(),
                    service.ports.iter().map(|port| (*port, *port)).collect(),
                ),
                false => ("127.0.0.1".into(), service_running.published.clone()),
            };
            let port = |container: u16| ports.get(&container).copied().unwrap_or(container);
            let first = port(service.ports[0]);
            used.env.push((format!("{prefix}_HOST"), host.clone()));
            used.env.push((format!("{prefix}_PORT"), first.to_string()));
            for container_port in &service.ports {
                used.env.push((
                    format!("{prefix}_PORT_{container_port}"),
                    port(*container_port).to_string(),
                ));
            }
            let url = service.url.as_ref().map(|template| {
                fill_url(template, &host, first, &port, &|name| {
                    service_running
                        .secrets
                        .get(name)
                        .or_else(|| service.env.get(name))
                        .cloned()
                        .unwrap_or_default()
                })
            });
            if let Some(url) = &url {
                used.env.push((format!("{prefix}_URL"), url.clone()));
            }
            let secrets: Vec<&String> = service_running
                .secrets
                .values()
                .filter(|value| !value.is_empty())
                .collect();
            used.secrets
                .extend(secrets.iter().map(|value| value.to_string()));
            used.records.push(TrialService {
                name: service.name.clone(),
                image: (&service_running.image).into(),
                host,
                port: first,
                url: url.map(|url| crate::exec::redact::mask(&url, secrets.iter().copied())),
                engine: engine.endpoint().to_owned(),
            });
        }
        Ok(used)
    }

    /// [`use_services`](Self::use_services) for a host runtime's trial: on its machine's
    /// engine, which must be on this host.
    pub(crate) fn host_services(
        &self,
        spec: &TrialSpec,
        setup: &mut Vec<SetupStep>,
    ) -> Result<ServicesUsed, String> {
        if spec.runtime.services.is_empty() {
            return Ok(ServicesUsed::default());
        }
        let limit = self.engine_limit.min(spec.check.timeout);
        let engine = self
            .runtime
            .block_on(self.engine(&super::engine_address(&spec.machine), limit))
            .map_err(|error| {
                format!(
                    "the services of runtime `{}` need a Docker engine: {}",
                    spec.runtime.name,
                    chain(&error)
                )
            })?;
        self.use_services(&engine, spec, false, setup)
    }

    /// Notes that a trial using `spec`'s services failed: `RUNTIME_MATRIX_KEEP=failed` keeps
    /// them.
    pub(crate) fn services_failed(&self, spec: &TrialSpec) {
        let mut failed = lock(&self.services.failed);
        for service in &spec.runtime.services {
            failed.insert(service.name.clone());
        }
    }

    /// Service `service` on `engine`, started or found once per process, the image build or
    /// pull this call did or waited for, and whether it was not known to be ready before.
    fn service(
        &self,
        engine: &Engine,
        service: &Service,
    ) -> (Result<Arc<Running>, String>, Option<SetupStep>, bool) {
        let key = format!(
            "{}|{}|{}|{}",
            self.run_id,
            engine.endpoint(),
            service.name,
            scope()
        );
        let cell = lock(&self.services.started)
            .entry(key.clone())
            .or_default()
            .clone();
        let fresh = cell.get().is_none();
        let mut made = None;
        let result = cell.get_or_init(|| {
            self.start_service(engine, service, &key_name(&key), &mut made)
                .map(Arc::new)
        });
        (result.clone(), made, fresh)
    }

    /// Finds service `service`'s running container in this run, or starts it and waits until
    /// it is ready, under a file lock so that the processes of a nextest run start it once.
    /// A failure is written beside the lock, so that the run's other processes fail at once
    /// with the same words.
    fn start_service(
        &self,
        engine: &Engine,
        service: &Service,
        name: &str,
        made: &mut Option<SetupStep>,
    ) -> Result<Running, String> {
        let io = |error: std::io::Error| {
            format!(
                "service `{}` could not start: {error} (in {})",
                service.name,
                self.locks.display()
            )
        };
        std::fs::create_dir_all(&self.locks).map_err(io)?;
        let lock_file = std::fs::File::create(self.locks.join(format!("service-{name}.lock")))
            .and_then(|file| file.lock().map(|()| file))
            .map_err(io)?;
        // Said by another process of this run (its owner's), not by an earlier run that had
        // the same id.
        let failed = self.locks.join(format!("service-{name}.failed"));
        let owner = owner();
        let run = format!("{} {}\n", owner.pid, owner.start);
        if let Ok(said) = std::fs::read_to_string(&failed)
            && let Some(reason) = said.strip_prefix(&run)
        {
            return Err(reason.to_owned());
        }
        let secrets = service_secrets(service)?;
        let result = self.runtime.block_on(async {
            let (image, step) = self
                .image(engine, &service.image, service.pull, service.build.as_ref())
                .await
                .map_err(|error| {
                    format!(
                        "service `{}` could not start: its image: {}",
                        service.name,
                        chain(&error)
                    )
                })?;
            *made = step;
            if let Some(found) = self.running_service(engine, service, name, &image).await? {
                return Ok(Running {
                    secrets: secrets.clone(),
                    ..found
                });
            }
            self.create_service(engine, service, name, image, secrets.clone())
                .await
        });
        if let Err(reason) = &result {
            let _ = std::fs::write(&failed, format!("{run}{reason}"));
        }
        drop(lock_file);
        result
    }

    /// The running container of service `name` in this run, if another process started it.
    async fn running_service(
        &self,
        engine: &Engine,
        service: &Service,
        name: &str,
        image: &ImageInfo,
    ) -> Result<Option<Running>, String> {
        let words = |error: &crate::error::EngineError| {
            format!(
                "service `{}` could not be found: {}",
                service.name,
                chain(error)
            )
        };
        let containers = engine.our_containers().await.map_err(|e| words(&e))?;
        let found = containers.into_iter().find_map(|container| {
            let labels = container.labels.unwrap_or_default();
            let running = container.state.map(|s| s.to_string()) == Some("running".into());
            (running
                && labels.get(LABEL_KEY).map(String::as_str) == Some(name)
                && labels.get(LABEL_RUN) == Some(&self.run_id))
            .then_some(container.id)
            .flatten()
        });
        let Some(id) = found else { return Ok(None) };
        let published = engine.published_ports(&id).await.map_err(|e| words(&e))?;
        Ok(Some(Running {
            name: service.name.clone(),
            id,
            engine: engine.clone(),
            image: image.clone(),
            published,
            owned: false,
            secrets: BTreeMap::new(),
        }))
    }

    /// Creates and starts service `service`'s container and waits until it is ready; one
    /// that does not become ready is removed (unless kept) and its failure said.
    async fn create_service(
        &self,
        engine: &Engine,
        service: &Service,
        name: &str,
        image: ImageInfo,
        secrets: BTreeMap<String, String>,
    ) -> Result<Running, String> {
        let owner = owner();
        let mut container = ContainerSpec::new(&service.image)
            .with_limits(None, None, "bridge")
            .serving(Serves {
                command: service.command.clone(),
                ports: service.ports.clone(),
            })
            .with_label(LABEL_SERVICE, &service.name)
            .with_label(LABEL_KEY, name)
            .with_label(LABEL_RUN, &self.run_id)
            .with_label(LABEL_PID, owner.pid.to_string())
            .with_label(LABEL_PID_START, &owner.start)
            .with_label(LABEL_HOST, &owner.host)
            .with_label(LABEL_TRIAL, format!("service {}", service.name));
        for (key, value) in &service.env {
            container = container.with_env(key, value);
        }
        // A service reads its secrets when it starts: they are in its container's environment
        // (unlike a runtime's, which go to each check only).
        for (key, value) in &secrets {
            container = container.with_env(key, value);
        }
        if let Some(keep) = self.keep_label() {
            container = container.with_label(LABEL_KEEP, keep);
        }
        let readable = format!("service-{}", service.name);
        let id = self
            .create(engine, &container, &readable, &service.name, None)
            .await
            .map_err(|error| {
                format!(
                    "service `{}` could not start: {}",
                    service.name,
                    chain(&error)
                )
            })?;
        let running = Running {
            name: service.name.clone(),
            id: id.clone(),
            engine: engine.clone(),
            image,
            published: BTreeMap::new(),
            owned: true,
            secrets,
        };
        match self.wait_ready(engine, service, &id).await {
            Ok(published) => Ok(Running {
                published,
                ..running
            }),
            Err(reason) => {
                let reason = crate::exec::redact::mask(&reason, running.secrets.values());
                // An interrupt removes everything, kept or not: nothing is said to be kept.
                if self.keep == Keep::Never || live::interrupted().is_some() {
                    let _ = engine.remove_container(&id).await;
                    live::forget_container(&id);
                } else {
                    live::forget_container(&id);
                    eprintln!(
                        "runtime-matrix: kept service container {} of service `{}` (remove it \
                         with `runtime-matrix clean`):\n  docker exec -it {} sh",
                        short(&id),
                        service.name,
                        short(&id)
                    );
                }
                Err(reason)
            }
        }
    }

    /// Waits until service `service`'s container `id` is ready, within its `ready-timeout`;
    /// returns its published ports.
    async fn wait_ready(
        &self,
        engine: &Engine,
        service: &Service,
        id: &str,
    ) -> Result<BTreeMap<u16, u16>, String> {
        let name = &service.name;
        let start = Instant::now();
        let words = |error: &crate::error::EngineError| {
            format!("service `{name}` could not start: {}", chain(error))
        };
        let published = engine.published_ports(id).await.map_err(|e| words(&e))?;
        let mut last;
        loop {
            if let Some(signal) = live::interrupted() {
                return Err(format!("service `{name}`: interrupted by signal {signal}"));
            }
            match engine.condition(id, engine.request_limit()).await {
                Ok(crate::engine::Condition::Running) => {}
                Ok(_) => {
                    let logs = last_logs(engine, id).await;
                    return Err(format!("service `{name}` exited before it was ready{logs}"));
                }
                Err(error) => return Err(words(&error)),
            }
            // A check never runs past the wait's end: one that hangs ends it on time.
            let left = service.ready_timeout.saturating_sub(start.elapsed());
            match self.ready_once(engine, service, id, &published, left).await {
                Ok(()) => return Ok(published),
                Err(Probe::Fatal(reason)) => return Err(format!("service `{name}`: {reason}")),
                Err(Probe::NotYet(reason)) => last = reason,
            }
            if start.elapsed() >= service.ready_timeout {
                let logs = last_logs(engine, id).await;
                return Err(format!(
                    "service `{name}` was not ready within {}: {last}{logs}",
                    humantime::format_duration(service.ready_timeout)
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// One readiness check of service `service` in container `id`.
    async fn ready_once(
        &self,
        engine: &Engine,
        service: &Service,
        id: &str,
        published: &BTreeMap<u16, u16>,
        left: Duration,
    ) -> Result<(), Probe> {
        match &service.ready {
            Readiness::Port { port } => {
                if !is_local(engine.endpoint()) {
                    return Err(Probe::Fatal(format!(
                        "its readiness is checked by connecting to port {port}, which this host \
                         cannot do on the engine at {} (use `ready = {{ log = \"...\" }}` or \
                         `ready = {{ command = \"...\" }}`)",
                        engine.endpoint()
                    )));
                }
                let Some(host_port) = published.get(port) else {
                    return Err(Probe::Fatal(format!(
                        "the engine published no host port for its port {port}"
                    )));
                };
                accepts(*host_port)
                    .await
                    .map_err(|why| Probe::NotYet(format!("port {port} {why}")))
            }
            Readiness::Log { text } => {
                let logs = engine
                    .logs(id, 10_000)
                    .await
                    .map_err(|error| Probe::NotYet(chain(&error)))?;
                match logs.lines().any(|line| line.contains(text.as_str())) {
                    true => Ok(()),
                    false => Err(Probe::NotYet(format!("its logs never said `{text}`"))),
                }
            }
            Readiness::Command { run } => {
                let command = ["sh", "-c", run].map(String::from).to_vec();
                // In whole seconds, as said in its failure.
                let left = Duration::from_secs(left.as_secs_f64().ceil() as u64);
                let limit = COMMAND_LIMIT.min(left).max(Duration::from_secs(1));
                let exec = engine
                    .exec(id, command, "/", Vec::new(), limit)
                    .await
                    .map_err(|error| Probe::NotYet(chain(&error)))?;
                match exec.exit_code {
                    Some(0) => Ok(()),
                    code => {
                        let said = crate::exec::provision::tail(exec.output.trim(), 3);
                        let code = code.map_or_else(
                            || format!("did not end within {}", humantime::format_duration(limit)),
                            |c| format!("exited {c}"),
                        );
                        match said.is_empty() {
                            true => Err(Probe::NotYet(format!("`{run}` {code}"))),
                            false => Err(Probe::NotYet(format!("`{run}` {code}: {said}"))),
                        }
                    }
                }
            }
        }
    }

    /// The network joining runtime `runtime`'s runner to its services on `engine`: found or
    /// made once per run (under a file lock), with every service connected to it by name.
    fn network(
        &self,
        engine: &Engine,
        runtime: &str,
        services: &[(&Service, Arc<Running>)],
    ) -> Result<String, String> {
        let key = format!(
            "{}|{}|{runtime}|{}",
            self.run_id,
            engine.endpoint(),
            scope()
        );
        let name = key_name(&key);
        let cell = lock(&self.services.networks)
            .entry(key)
            .or_default()
            .clone();
        // Its services join it once per process (again in each of nextest's: the engine says
        // they are on it already).
        let network = cell.get_or_init(|| {
            let network = self.make_network(engine, runtime, &name)?;
            for (service, running) in services {
                let joined = self.runtime.block_on(engine.connect_network(
                    &network.name,
                    &running.id,
                    Some(&service.name),
                ));
                if let Err(error) = joined {
                    if network.owned
                        && self
                            .runtime
                            .block_on(engine.remove_network(&network.name))
                            .is_ok()
                    {
                        live::forget_network(&network.name);
                    }
                    return Err(format!(
                        "service `{}` could not join runtime `{runtime}`'s network: {}",
                        service.name,
                        chain(&error)
                    ));
                }
            }
            Ok(network)
        });
        network.clone().map(|network| network.name)
    }

    /// Finds or creates runtime `runtime`'s service network, `name` its key.
    fn make_network(&self, engine: &Engine, runtime: &str, name: &str) -> Result<Network, String> {
        let failed = |reason: String| {
            format!(
                "the network joining runtime `{runtime}` to its services could not be made: {reason}"
            )
        };
        std::fs::create_dir_all(&self.locks).map_err(|e| failed(e.to_string()))?;
        let _lock = std::fs::File::create(self.locks.join(format!("network-{name}.lock")))
            .and_then(|file| file.lock().map(|()| file))
            .map_err(|e| failed(e.to_string()))?;
        self.runtime.block_on(async {
            let networks = engine.our_networks().await.map_err(|e| failed(chain(&e)))?;
            if let Some(found) = networks.into_iter().find(|network| {
                network.labels.get(LABEL_KEY).map(String::as_str) == Some(name)
                    && network.labels.get(LABEL_RUN) == Some(&self.run_id)
            }) {
                return Ok(Network {
                    name: found.name,
                    owned: false,
                    engine: engine.clone(),
                });
            }
            let owner = owner();
            let mut labels = BTreeMap::from([
                (LABEL_KEY.to_owned(), name.to_owned()),
                (LABEL_RUN.to_owned(), self.run_id.clone()),
                (LABEL_PID.to_owned(), owner.pid.to_string()),
                (LABEL_PID_START.to_owned(), owner.start.clone()),
                (LABEL_HOST.to_owned(), owner.host.clone()),
                (LABEL_NETWORK_OF.to_owned(), runtime.to_owned()),
            ]);
            if let Some(keep) = self.keep_label() {
                labels.insert(LABEL_KEEP.to_owned(), keep.to_owned());
            }
            let readable: String = runtime
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .take(40)
                .collect();
            let network_name = format!("runtime-matrix-{readable}-{}", &name[..8]);
            // In flight until tracked, as a container's creation is: the interrupt handler
            // waits for it, so that a network made as the signal lands is removed too.
            let creating = live::creating();
            if live::interrupted().is_some() {
                return Err(failed("the run was interrupted".into()));
            }
            engine
                .create_network(&network_name, &labels)
                .await
                .map_err(|e| failed(chain(&e)))?;
            live::track_network(&network_name, engine);
            drop(creating);
            Ok(Network {
                name: network_name,
                owned: true,
                engine: engine.clone(),
            })
        })
    }

    /// The keep label of what this run starts, when the user asked to keep containers.
    fn keep_label(&self) -> Option<&'static str> {
        match self.keep {
            Keep::Never => None,
            Keep::Failed => Some("failed"),
            Keep::Always => Some("always"),
        }
    }

    /// Removes the services and networks this process started, after its runners: those a
    /// failed trial used stay under `RUNTIME_MATRIX_KEEP=failed`, all under `always`, each
    /// with the line that reaches it.
    pub(crate) fn shutdown_services(&self) {
        let started: Vec<_> = lock(&self.services.started).drain().collect();
        let failed = lock(&self.services.failed).clone();
        let mut kept_any = false;
        for (_, cell) in started {
            let Some(Ok(running)) = cell.get() else {
                continue;
            };
            if !running.owned {
                continue;
            }
            let keep = match self.keep {
                Keep::Never => false,
                Keep::Failed => failed.contains(&running.name),
                Keep::Always => true,
            };
            if keep {
                kept_any = true;
                live::forget_container(&running.id);
                eprintln!(
                    "runtime-matrix: kept container {} of service `{}` (remove it with \
                     `runtime-matrix clean`):\n  docker exec -it {} sh",
                    short(&running.id),
                    running.name,
                    short(&running.id)
                );
                continue;
            }
            if self
                .runtime
                .block_on(running.engine.remove_container(&running.id))
                .is_ok()
            {
                live::forget_container(&running.id);
            }
        }
        let networks: Vec<_> = lock(&self.services.networks).drain().collect();
        for (_, cell) in networks {
            let Some(Ok(network)) = cell.get() else {
                continue;
            };
            // A kept service stays on its networks, so that a kept runner still reaches it.
            if !network.owned || kept_any {
                continue;
            }
            if self
                .runtime
                .block_on(network.engine.remove_network(&network.name))
                .is_ok()
            {
                live::forget_network(&network.name);
            }
        }
    }
}

/// Why a readiness check did not pass.
enum Probe {
    /// Not yet: checked again until the timeout.
    NotYet(String),
    /// Never will: said at once.
    Fatal(String),
}

/// The values of `service`'s secrets, from this process's environment.
fn service_secrets(service: &Service) -> Result<BTreeMap<String, String>, String> {
    let mut secrets = BTreeMap::new();
    for name in &service.secrets {
        let Ok(value) = std::env::var(name) else {
            return Err(format!(
                "secret `{name}` of service `{}` is not set in the environment (export it \
                 before the run)",
                service.name
            ));
        };
        if !value.is_empty() && value.len() < crate::exec::redact::MIN_SECRET_BYTES {
            return Err(format!(
                "secret `{name}` of service `{}` is shorter than {} bytes: masking so short a \
                 value would reveal it (use a longer secret)",
                service.name,
                crate::exec::redact::MIN_SECRET_BYTES
            ));
        }
        secrets.insert(name.clone(), value);
    }
    Ok(secrets)
}

/// `template` with `{host}`, `{port}`, `{port:N}` and `{env:NAME}` filled in.
fn fill_url(
    template: &str,
    host: &str,
    first: u16,
    port: &dyn Fn(u16) -> u16,
    env: &dyn Fn(&str) -> String,
) -> String {
    let mut url = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        url.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let field = &rest[open + 1..open + close];
        match field.split_once(':') {
            None if field == "host" => url.push_str(host),
            None if field == "port" => url.push_str(&first.to_string()),
            Some(("port", n)) => url.push_str(&n.parse().map(port).unwrap_or_default().to_string()),
            Some(("env", name)) => url.push_str(&env(name)),
            _ => url.push_str(&rest[open..=open + close]),
        }
        rest = &rest[open + close + 1..];
    }
    url.push_str(rest);
    url
}

/// Whether the engine at `endpoint` runs on this host: its published loopback ports are this
/// host's.
pub(crate) fn is_local(endpoint: &str) -> bool {
    if endpoint.starts_with("unix://") || endpoint.starts_with('/') {
        return true;
    }
    let Some(rest) = endpoint
        .strip_prefix("tcp://")
        .or_else(|| endpoint.strip_prefix("http://"))
        .or_else(|| endpoint.strip_prefix("https://"))
    else {
        return false;
    };
    let host = rest.rsplit_once(':').map_or(rest, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether 127.0.0.1:`port` takes a connection that the service itself accepted. Docker's
/// port proxy accepts every connection and closes it at once when nothing listens in the
/// container, so a connection that ends within a moment does not count.
async fn accepts(port: u16) -> Result<(), String> {
    use tokio::io::AsyncReadExt;
    let connect = tokio::net::TcpStream::connect(("127.0.0.1", port));
    let mut stream = match tokio::time::timeout(Duration::from_secs(2), connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return Err(format!("refused connections ({error})")),
        Err(_) => return Err("did not answer a connection within 2s".into()),
    };
    let mut byte = [0u8; 1];
    match tokio::time::timeout(Duration::from_millis(300), stream.read(&mut byte)).await {
        // Still open and silent, or it greeted us: something listens.
        Err(_) | Ok(Ok(1..)) => Ok(()),
        Ok(Ok(0)) | Ok(Err(_)) => Err("refused connections (closed at once)".into()),
    }
}

/// `: its last log lines:` and them, indented, or nothing when it wrote none.
async fn last_logs(engine: &Engine, id: &str) -> String {
    match engine.logs(id, LOG_LINES).await {
        Ok(logs) if !logs.trim().is_empty() => {
            let logs = crate::sanitise::plain(logs.trim());
            let lines: Vec<String> = logs.lines().map(|line| format!("  {line}")).collect();
            format!("; its last log lines:\n{}", lines.join("\n"))
        }
        Ok(_) => "; it wrote no log lines".into(),
        Err(error) => format!("; its logs could not be read: {}", chain(&error)),
    }
}

/// The first 12 characters of a container id.
fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_filled_from_the_connection() {
        let port = |container: u16| container + 1000;
        let env = |name: &str| format!("<{name}>");
        assert_eq!(
            fill_url(
                "redis://:{env:PASS}@{host}:{port}/0?other={port:80}",
                "redis",
                7379,
                &port,
                &env
            ),
            "redis://:<PASS>@redis:7379/0?other=1080"
        );
    }

    #[test]
    fn only_engines_on_this_host_publish_ports_here() {
        assert!(is_local("unix:///var/run/docker.sock"));
        assert!(is_local("tcp://127.0.0.1:2375"));
        assert!(is_local("tcp://localhost:2376"));
        assert!(is_local("tcp://[::1]:2375"));
        assert!(is_local("tcp://127.0.0.2:2375"));
        assert!(!is_local("tcp://10.0.0.5:2376"));
        assert!(!is_local("ssh://ci@builder"));
    }
}
