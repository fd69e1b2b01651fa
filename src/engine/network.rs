//! Networks and what a service's readiness needs of its container: create, connect, find and
//! remove the networks this project made; a container's published ports and its logs. Each
//! call under the engine's deadline, as every other.

use super::Engine;
use super::client::status;
use super::container::{LABEL_PID, short};
use crate::error::EngineError;
use bollard::models::{EndpointSettings, NetworkConnectRequest, NetworkCreateRequest};
use bollard::query_parameters::{ListNetworksOptions, LogsOptionsBuilder};
use futures_util::StreamExt;
use std::collections::{BTreeMap, HashMap};

/// A network this project made, as the engine lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkInfo {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: HashMap<String, String>,
}

impl Engine {
    /// Creates an internal network (no route out of it) called `name` with `labels`; returns
    /// its id.
    pub async fn create_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<String, EngineError> {
        let request = NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("bridge".into()),
            internal: Some(true),
            labels: Some(labels.clone().into_iter().collect()),
            ..Default::default()
        };
        let create = async {
            self.docker
                .create_network(request)
                .await
                .map(|created| created.id)
                .map_err(|error| self.error("create network", name, error))
        };
        self.bounded("create network", name, self.limit, create)
            .await
    }

    /// Connects container `id` to `network`, reachable there as `alias` when given.
    pub async fn connect_network(
        &self,
        network: &str,
        id: &str,
        alias: Option<&str>,
    ) -> Result<(), EngineError> {
        let request = NetworkConnectRequest {
            container: id.to_owned(),
            endpoint_config: Some(EndpointSettings {
                aliases: alias.map(|alias| vec![alias.to_owned()]),
                ..Default::default()
            }),
        };
        let target = format!("container {} to network {network}", short(id));
        let connect = async {
            match self.docker.connect_network(network, request).await {
                Ok(()) => Ok(()),
                // Already connected (another process of the run did it).
                Err(error) if already_connected(&error) => Ok(()),
                Err(error) => Err(self.error("connect", target.clone(), error)),
            }
        };
        self.bounded("connect network", target.clone(), self.limit, connect)
            .await
    }

    /// Removes network `id`; one already gone counts as removed.
    pub async fn remove_network(&self, id: &str) -> Result<(), EngineError> {
        let remove = async { Ok(self.docker.remove_network(id).await) };
        match self
            .bounded(
                "remove network",
                format!("network {}", short(id)),
                self.cleanup_limit(),
                remove,
            )
            .await?
        {
            Ok(()) => Ok(()),
            Err(error) if status(&error) == Some(404) => Ok(()),
            Err(error) => Err(self.error("remove network", short(id), error)),
        }
    }

    /// Every network that carries this project's owner label.
    pub async fn our_networks(&self) -> Result<Vec<NetworkInfo>, EngineError> {
        let options = ListNetworksOptions {
            filters: Some(HashMap::from([(
                "label".to_owned(),
                vec![LABEL_PID.to_owned()],
            )])),
        };
        let list = async {
            self.docker
                .list_networks(Some(options))
                .await
                .map_err(|error| self.error("list networks of", "this project", error))
        };
        let networks = self
            .bounded("list networks", "this project", self.limit, list)
            .await?;
        Ok(networks
            .into_iter()
            .filter_map(|network| {
                Some(NetworkInfo {
                    id: network.id?,
                    name: network.name.unwrap_or_default(),
                    labels: network.labels.unwrap_or_default(),
                })
            })
            .collect())
    }

    /// The host ports container `id`'s TCP ports are published on, by container port.
    pub async fn published_ports(&self, id: &str) -> Result<BTreeMap<u16, u16>, EngineError> {
        let inspect = async {
            self.docker
                .inspect_container(
                    id,
                    None::<bollard::query_parameters::InspectContainerOptions>,
                )
                .await
                .map_err(|error| self.error("inspect container", short(id), error))
        };
        let container = self
            .bounded(
                "inspect container",
                format!("container {}", short(id)),
                self.limit,
                inspect,
            )
            .await?;
        let ports = container
            .network_settings
            .and_then(|settings| settings.ports)
            .unwrap_or_default();
        let mut published = BTreeMap::new();
        for (port, bindings) in ports {
            let Some(port) = port
                .strip_suffix("/tcp")
                .and_then(|port| port.parse::<u16>().ok())
            else {
                continue;
            };
            let host = bindings
                .unwrap_or_default()
                .into_iter()
                .filter_map(|binding| binding.host_port?.parse::<u16>().ok())
                .next();
            if let Some(host) = host {
                published.insert(port, host);
            }
        }
        Ok(published)
    }

    /// The last `lines` lines container `id` wrote, stdout and stderr together.
    pub async fn logs(&self, id: &str, lines: usize) -> Result<String, EngineError> {
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        let read = async {
            let mut stream = self.docker.logs(id, Some(options));
            let mut text = Vec::new();
            while let Some(chunk) = stream.next().await {
                let chunk =
                    chunk.map_err(|error| self.error("read the logs of", short(id), error))?;
                text.extend_from_slice(&chunk.into_bytes());
            }
            Ok(String::from_utf8_lossy(&text).into_owned())
        };
        self.bounded("logs", format!("container {}", short(id)), self.limit, read)
            .await
    }
}

/// The engine's answer when a container already is on the network.
fn already_connected(error: &bollard::errors::Error) -> bool {
    error.to_string().contains("already exists in network")
}
