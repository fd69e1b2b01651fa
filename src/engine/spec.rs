//! What a container is, decided without an engine: `plan` shows it, the executor creates it.
//! The main type is [`ContainerSpec`], a builder that knows images, limits, GPUs and labels,
//! but nothing of matrices or trials (`exec` builds a trial's).

use bollard::models::{ContainerCreateBody, DeviceRequest, HostConfig, PortBinding};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// The container's working folder; trials keep their files under it: `/runtime-matrix/<key>/`.
pub const CONTAINER_ROOT: &str = "/runtime-matrix";
/// What `plan` and records show instead of a secret's value.
pub const SECRET_PLACEHOLDER: &str = "<secret>";

/// The GPUs a container asks the engine for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum GpuRequest {
    /// None: a CPU-only machine.
    None,
    /// Any `n` GPUs.
    Count(u32),
    /// These GPUs, by UUID.
    Devices(Vec<String>),
}

/// A container: image, environment, labels, limits, GPUs, and the command that runs a check
/// inside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ContainerSpec {
    /// The image.
    pub image: String,
    /// Environment; secrets appear as [`SECRET_PLACEHOLDER`].
    pub env: BTreeMap<String, String>,
    /// Names of the environment variables that are secrets.
    pub secrets: Vec<String>,
    /// Labels; the run's own (run id, owner process) are added when it is created.
    pub labels: BTreeMap<String, String>,
    /// Memory limit in bytes.
    pub memory: Option<i64>,
    /// Process limit.
    pub pids: Option<i64>,
    /// Network mode.
    pub network: String,
    /// GPUs.
    pub gpus: GpuRequest,
    /// Always false: containers are never privileged.
    pub privileged: bool,
    /// Always empty: no capability is added to Docker's default set.
    pub capabilities_added: Vec<String>,
    /// Security options: `no-new-privileges`.
    pub security_options: Vec<String>,
    /// The check's command, run with an in-container time limit.
    pub command: Vec<String>,
    /// The command's working folder.
    pub workdir: String,
    /// The container's main process, when it is not an idle loop.
    #[serde(skip)]
    pub main: Option<Vec<String>>,
    /// Whether the container removes itself when its main process ends.
    #[serde(skip)]
    pub auto_remove: bool,
    /// A service's container: the image's own entrypoint with this command (or the image's
    /// CMD), its TCP ports published on the host's loopback, instead of an idle loop.
    #[serde(skip)]
    pub serves: Option<Serves>,
    /// Networks it joins before it starts, besides its network mode.
    #[serde(skip)]
    pub joins: Vec<String>,
}

/// What a service's container runs and publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serves {
    /// The command, instead of the image's CMD; `None` keeps it.
    pub command: Option<Vec<String>>,
    /// Container TCP ports, each published on a port of 127.0.0.1 the engine picks.
    pub ports: Vec<u16>,
}

impl ContainerSpec {
    /// A container of `image` with the project's defaults: no network, not privileged, no
    /// added capabilities, no new privileges.
    pub fn new(image: impl Into<String>) -> ContainerSpec {
        ContainerSpec {
            image: image.into(),
            env: BTreeMap::new(),
            secrets: Vec::new(),
            labels: BTreeMap::new(),
            memory: None,
            pids: None,
            network: "none".into(),
            gpus: GpuRequest::None,
            privileged: false,
            capabilities_added: Vec::new(),
            security_options: vec!["no-new-privileges".into()],
            command: Vec::new(),
            workdir: CONTAINER_ROOT.into(),
            main: None,
            auto_remove: false,
            serves: None,
            joins: Vec::new(),
        }
    }

    /// Adds an environment variable.
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Adds a secret: its value is shown as a placeholder until the container is created.
    pub fn with_secret(mut self, key: impl Into<String>) -> Self {
        let key = key.into();
        self.env.insert(key.clone(), SECRET_PLACEHOLDER.into());
        self.secrets.push(key);
        self
    }

    /// Adds a label.
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Sets the GPUs.
    pub fn with_gpus(mut self, gpus: GpuRequest) -> Self {
        self.gpus = gpus;
        self
    }

    /// Sets the memory and process limits and the network mode.
    pub fn with_limits(
        mut self,
        memory: Option<i64>,
        pids: Option<i64>,
        network: impl Into<String>,
    ) -> Self {
        self.memory = memory;
        self.pids = pids;
        self.network = network.into();
        self
    }

    /// Runs `main` as the container's main process; with `auto_remove`, the container removes
    /// itself when it ends.
    pub fn with_main(mut self, main: Vec<String>, auto_remove: bool) -> Self {
        self.main = Some(main);
        self.auto_remove = auto_remove;
        self
    }

    /// Makes it a service's container: see [`Serves`].
    pub fn serving(mut self, serves: Serves) -> Self {
        self.serves = Some(serves);
        self
    }

    /// Joins `network` before it starts, besides its network mode.
    pub fn joining(mut self, network: impl Into<String>) -> Self {
        self.joins.push(network.into());
        self
    }

    /// Sets the check's command and working folder.
    pub fn with_command(mut self, command: Vec<String>, workdir: impl Into<String>) -> Self {
        self.command = command;
        self.workdir = workdir.into();
        self
    }

    /// The engine's create body. Secrets keep their placeholder here: their values go to each
    /// exec only, so that the container's configuration (`docker inspect`) never holds them.
    pub fn create_body(&self) -> ContainerCreateBody {
        let env = self
            .env
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        let device_requests = match &self.gpus {
            GpuRequest::None => None,
            GpuRequest::Count(n) => Some(vec![gpu_request(Some(i64::from(*n)), None)]),
            GpuRequest::Devices(ids) => Some(vec![gpu_request(None, Some(ids.clone()))]),
        };
        if let Some(serves) = &self.serves {
            return self.service_body(serves, env);
        }
        ContainerCreateBody {
            image: Some(self.image.clone()),
            // A container that idles until it is removed; checks run in it with exec.
            entrypoint: Some(self.main.clone().unwrap_or_else(|| {
                vec![
                    "sh".into(),
                    "-c".into(),
                    "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done".into(),
                ]
            })),
            cmd: Some(Vec::new()),
            env: Some(env),
            labels: Some(
                self.labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<HashMap<_, _>>(),
            ),
            working_dir: Some(CONTAINER_ROOT.into()),
            host_config: Some(HostConfig {
                memory: self.memory,
                memory_swap: self.memory,
                pids_limit: self.pids,
                network_mode: Some(self.network.clone()),
                privileged: Some(self.privileged),
                cap_add: None,
                security_opt: Some(self.security_options.clone()),
                device_requests,
                auto_remove: Some(self.auto_remove),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

impl ContainerSpec {
    /// The create body of a service's container: the image's entrypoint, its ports on
    /// 127.0.0.1 only (never on every interface of the engine's host).
    fn service_body(&self, serves: &Serves, env: Vec<String>) -> ContainerCreateBody {
        let tcp = |port: &u16| format!("{port}/tcp");
        let bindings = serves
            .ports
            .iter()
            .map(|port| {
                let binding = PortBinding {
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(String::new()),
                };
                (tcp(port), Some(vec![binding]))
            })
            .collect();
        ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: serves.command.clone(),
            env: Some(env),
            exposed_ports: Some(serves.ports.iter().map(tcp).collect()),
            labels: Some(
                self.labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<HashMap<_, _>>(),
            ),
            host_config: Some(HostConfig {
                memory: self.memory,
                memory_swap: self.memory,
                pids_limit: self.pids,
                network_mode: Some(self.network.clone()),
                port_bindings: Some(bindings),
                privileged: Some(self.privileged),
                cap_add: None,
                security_opt: Some(self.security_options.clone()),
                auto_remove: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

fn gpu_request(count: Option<i64>, device_ids: Option<Vec<String>>) -> DeviceRequest {
    DeviceRequest {
        driver: Some("nvidia".into()),
        count,
        device_ids,
        capabilities: Some(vec![vec!["gpu".into()]]),
        options: None,
    }
}
