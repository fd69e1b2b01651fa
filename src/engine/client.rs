//! The connection to one Docker engine. The main type is [`Engine`]; its operations on
//! containers and images live in `container.rs` and `image.rs`, and each turns the engine's raw
//! error into an [`EngineError`] with [`Engine::error`]. Every call has a deadline
//! ([`Engine::bounded`]): bollard's own timeout covers a request until its headers arrive, not a
//! body or a stream after that, so an engine that accepts connections and then says nothing
//! would otherwise hold a trial forever.

use crate::error::EngineError;
use bollard::Docker;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long one engine call may take unless told otherwise (`RUNTIME_MATRIX_ENGINE_TIMEOUT`).
pub const DEFAULT_REQUEST_LIMIT: Duration = Duration::from_secs(30);

/// bollard's own per-request timeout: a safety net under [`Engine::bounded`], which sets the
/// real limits; long enough for a build context to upload before the engine answers.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(3600);

/// How long clean-up calls wait once the engine has been silent: enough for a live engine to
/// remove a container, short enough that a dead one does not hold the trial.
pub(super) const AFTER_SILENCE: Duration = Duration::from_secs(2);

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
    /// How long one call may take.
    pub(super) limit: Duration,
    /// Set when a call went unanswered, cleared when one is answered: clean-up calls then
    /// wait [`AFTER_SILENCE`] only. Shared by the clones of one connection.
    pub(super) silent: Arc<AtomicBool>,
}

impl Engine {
    /// Connects to `endpoint` (`unix://...`, `tcp://...`), or to `DOCKER_HOST` or the local
    /// socket when `None`, negotiates the API version and checks that the engine answers; each
    /// call, this first one included, is given `limit` to answer.
    pub async fn connect_within(
        endpoint: Option<&str>,
        limit: Duration,
    ) -> Result<Engine, EngineError> {
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
            .with_timeout(CLIENT_TIMEOUT);
        let engine = Engine {
            docker,
            endpoint: endpoint.clone(),
            limit,
            silent: Arc::default(),
        };
        // Version negotiation is the first request: it is where a dead or forbidden socket shows.
        let negotiate = async {
            engine
                .docker
                .clone()
                .negotiate_version()
                .await
                .map_err(|error| engine.connection_error(error))
        };
        let docker = engine
            .bounded("negotiate the API version", "the engine", limit, negotiate)
            .await?;
        Ok(Engine { docker, ..engine })
    }

    /// This connection, each call given `limit` to answer; silence is still shared.
    pub fn with_limit(&self, limit: Duration) -> Engine {
        Engine {
            limit,
            ..self.clone()
        }
    }

    /// How long one call may take.
    pub fn request_limit(&self) -> Duration {
        self.limit
    }

    /// Whether the last call that ended went unanswered.
    pub fn is_silent(&self) -> bool {
        self.silent.load(Ordering::SeqCst)
    }

    /// Runs `call` (the engine's `name` for it, on `target`) for at most `limit`; an engine
    /// that does not answer in time is [`EngineError::Silent`].
    pub(super) async fn bounded<T>(
        &self,
        call: &'static str,
        target: impl Into<String>,
        limit: Duration,
        future: impl Future<Output = Result<T, EngineError>>,
    ) -> Result<T, EngineError> {
        match tokio::time::timeout(limit, future).await {
            Ok(result) => {
                self.silent.store(false, Ordering::SeqCst);
                result
            }
            Err(_) => {
                self.silent.store(true, Ordering::SeqCst);
                Err(EngineError::Silent {
                    endpoint: self.endpoint.clone(),
                    call,
                    target: target.into(),
                    limit,
                })
            }
        }
    }

    /// The limit for a clean-up call: the usual one, or [`AFTER_SILENCE`] once the engine has
    /// been silent.
    pub(super) fn cleanup_limit(&self) -> Duration {
        if self.is_silent() {
            self.limit.min(AFTER_SILENCE)
        } else {
            self.limit
        }
    }

    /// Where this engine is.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// What the engine says about itself.
    pub async fn system(&self) -> Result<EngineSystem, EngineError> {
        let info = self
            .bounded("info", "the engine", self.limit, async {
                self.docker
                    .info()
                    .await
                    .map_err(|error| self.error("query", "the engine", error))
            })
            .await?;
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
