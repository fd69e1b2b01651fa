//! The connection to one Docker engine. The main type is [`Engine`]; its operations on
//! containers and images live in `container.rs` and `image.rs`, and each turns the engine's raw
//! error into an [`EngineError`] with [`Engine::error`].

use crate::error::EngineError;
use bollard::Docker;
use std::time::Duration;

/// How long one engine request may take before the client gives up; exec streams and builds
/// are bounded by the trial's own deadlines.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3600);

/// What an engine says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineSystem {
    /// The engine's version.
    pub version: String,
    /// Its container runtimes: `runc`, and `nvidia` where the NVIDIA toolkit is installed.
    pub runtimes: Vec<String>,
    /// Where it keeps images and containers, on its own host.
    pub root_dir: Option<String>,
}

/// A connection to one Docker engine.
#[derive(Debug, Clone)]
pub struct Engine {
    pub(super) docker: Docker,
    pub(super) endpoint: String,
}

impl Engine {
    /// Connects to `endpoint` (`unix://...`, `tcp://...`), or to `DOCKER_HOST` or the local
    /// socket when `None`, negotiates the API version and checks that the engine answers.
    pub async fn connect(endpoint: Option<&str>) -> Result<Engine, EngineError> {
        let endpoint = endpoint
            .map(str::to_owned)
            .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned());
        let unreachable = |error| EngineError::Unreachable {
            endpoint: endpoint.clone(),
            error,
        };
        let docker = Docker::connect_with_host(&endpoint)
            .map_err(unreachable)?
            .with_timeout(REQUEST_TIMEOUT);
        let engine = Engine {
            docker,
            endpoint: endpoint.clone(),
        };
        // Version negotiation is the first request: it is where a dead or forbidden socket shows.
        let docker = engine
            .docker
            .clone()
            .negotiate_version()
            .await
            .map_err(|error| engine.connection_error(error))?;
        Ok(Engine { docker, endpoint })
    }

    /// Where this engine is.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// What the engine says about itself.
    pub async fn system(&self) -> Result<EngineSystem, EngineError> {
        let info = self
            .docker
            .info()
            .await
            .map_err(|error| self.error("query", "the engine", error))?;
        let mut runtimes: Vec<String> = info.runtimes.unwrap_or_default().into_keys().collect();
        runtimes.sort();
        Ok(EngineSystem {
            version: info.server_version.unwrap_or_default(),
            runtimes,
            root_dir: info.docker_root_dir,
        })
    }

    /// An unreachable or forbidden engine, told apart by the I/O error underneath.
    pub(super) fn connection_error(&self, error: bollard::errors::Error) -> EngineError {
        if io_kind(&error) == Some(std::io::ErrorKind::PermissionDenied) {
            EngineError::PermissionDenied {
                endpoint: self.endpoint.clone(),
                error,
            }
        } else {
            EngineError::Unreachable {
                endpoint: self.endpoint.clone(),
                error,
            }
        }
    }

    /// Wraps an operation's error, unless the engine simply went away.
    pub(super) fn error(
        &self,
        operation: &'static str,
        target: impl Into<String>,
        error: bollard::errors::Error,
    ) -> EngineError {
        if io_kind(&error).is_some() {
            return self.connection_error(error);
        }
        if connection_lost(&error) {
            return EngineError::ConnectionLost {
                endpoint: self.endpoint.clone(),
                operation,
                target: target.into(),
                error: Box::new(error),
            };
        }
        EngineError::Operation {
            operation,
            target: target.into(),
            error,
        }
    }
}

/// The kind of the I/O error at the bottom of `error`, if the engine could not be talked to.
pub(super) fn io_kind(error: &bollard::errors::Error) -> Option<std::io::ErrorKind> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = current.source();
    }
    // hyper's client hides some connection failures behind text only.
    let text = error.to_string();
    if text.contains("Connection refused") || text.contains("No such file or directory") {
        return Some(std::io::ErrorKind::ConnectionRefused);
    }
    None
}

/// Whether `error` is a connection that broke mid-request (hyper says so only in words).
fn connection_lost(error: &bollard::errors::Error) -> bool {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    [
        "connection closed",
        "connection reset",
        "Connection reset",
        "broken pipe",
        "Broken pipe",
        "SendRequest",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

/// The HTTP status of an engine error, if the engine answered.
pub(super) fn status(error: &bollard::errors::Error) -> Option<u16> {
    match error {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}
