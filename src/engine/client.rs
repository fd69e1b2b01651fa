//! The connection to one Docker engine. The main type is [`Engine`]; its operations on
//! containers and images live in `container.rs` and `image.rs`, and each turns the engine's raw
//! error into an [`EngineError`] with [`Engine::error`]. Every call has a deadline
//! ([`Engine::bounded`]): bollard's own timeout covers a request until its headers arrive, not a
//! body or a stream after that, so an engine that accepts connections and then says nothing
//! would otherwise hold a trial forever.

use crate::error::EngineError;
use bollard::{API_DEFAULT_VERSION, Docker};
use std::path::{Path, PathBuf};
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

/// Which engine to connect to, and how: the endpoint (`None`: `DOCKER_HOST`, else the local
/// socket) and, for TLS, the files to prove who we are and whom we trust.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    /// `unix://...`, `tcp://...`, `https://...`, `ssh://user@host[:port]`.
    pub endpoint: Option<String>,
    /// The TLS files declared for it; without them, `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH`
    /// apply to a TCP endpoint as the docker CLI reads them.
    pub tls: Option<TlsFiles>,
}

/// The three files of a TLS connection to an engine, and where they were named (for errors).
/// Two are the same when their files are: machines that name the same files for the same
/// endpoint share one engine connection (and one `doctor` check, and one clean-up).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA certificate that signed the engine's certificate.
    pub ca: PathBuf,
    /// Our client certificate, signed by a CA the engine trusts.
    pub cert: PathBuf,
    /// Our client certificate's private key.
    pub key: PathBuf,
    /// Where the user set them: `machines.NAME.tls`, or the docker CLI's variables.
    pub origin: String,
}

impl TlsFiles {
    /// What identifies the connection: the files, not where they were named.
    fn files(&self) -> (&PathBuf, &PathBuf, &PathBuf) {
        (&self.ca, &self.cert, &self.key)
    }
    /// The files the docker CLI uses when `DOCKER_TLS_VERIFY` is set (non-empty) or the
    /// endpoint is `https://`: `ca.pem`, `cert.pem` and `key.pem` in `DOCKER_CERT_PATH`, else in
    /// `~/.docker`. `None` for an endpoint that is not TCP, or for plain TCP.
    fn from_env(endpoint: &str) -> Option<TlsFiles> {
        let var = |name| std::env::var(name).ok().filter(|v| !v.is_empty());
        let https = endpoint.starts_with("https://");
        let tcp = endpoint.starts_with("tcp://");
        if !(https || (tcp && var("DOCKER_TLS_VERIFY").is_some())) {
            return None;
        }
        let dir = var("DOCKER_CERT_PATH")
            .map(PathBuf::from)
            .or_else(|| std::env::home_dir().map(|home| home.join(".docker")))
            .unwrap_or_else(|| PathBuf::from(".docker"));
        Some(TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            origin: format!(
                "DOCKER_TLS_VERIFY and DOCKER_CERT_PATH (ca.pem, cert.pem and key.pem in {})",
                dir.display()
            ),
        })
    }
}

impl PartialEq for TlsFiles {
    fn eq(&self, other: &Self) -> bool {
        self.files() == other.files()
    }
}

impl Eq for TlsFiles {}

impl std::hash::Hash for TlsFiles {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.files().hash(state);
    }
}

impl PartialOrd for TlsFiles {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TlsFiles {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.files().cmp(&other.files())
    }
}

/// What an engine says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineSystem {
    /// The engine's version.
    pub version: String,
    /// Its container runtimes: `runc`, and `nvidia` where the NVIDIA toolkit is installed.
    pub runtimes: Vec<String>,
    /// Where it keeps images and containers, on its own host.
    pub root_dir: Option<String>,
    /// The name of the engine's host, as it says it.
    pub name: Option<String>,
}

/// A connection to one Docker engine.
#[derive(Debug, Clone)]
pub struct Engine {
    pub(super) docker: Docker,
    pub(super) endpoint: String,
    /// The TLS files it was reached with, if any.
    pub(super) tls: Option<TlsFiles>,
    /// The name the engine gives its host, once asked ([`Engine::with_name`]).
    pub(super) name: Option<String>,
    /// How long one call may take.
    pub(super) limit: Duration,
    /// Set when a call went unanswered, cleared when one is answered: clean-up calls then
    /// wait [`AFTER_SILENCE`] only. Shared by the clones of one connection.
    pub(super) silent: Arc<AtomicBool>,
}

impl Engine {
    /// Connects to the engine at `address` (`unix://...`, `tcp://...` with or without TLS,
    /// `ssh://...`), or to `DOCKER_HOST` or the local socket when it names none, negotiates the
    /// API version and checks that the engine answers; each call, this first one included
    /// (the TLS handshake, the ssh login), is given `limit` to answer.
    pub async fn connect_within(address: &Address, limit: Duration) -> Result<Engine, EngineError> {
        let endpoint = address
            .endpoint
            .clone()
            .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned());
        let tls = address
            .tls
            .clone()
            .or_else(|| TlsFiles::from_env(&endpoint));
        let docker = client(&endpoint, tls.as_ref())?.with_timeout(CLIENT_TIMEOUT);
        let engine = Engine {
            docker,
            endpoint: endpoint.clone(),
            tls,
            name: None,
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

    /// This connection, knowing the name the engine gives its host.
    pub fn with_name(self, name: Option<String>) -> Engine {
        Engine { name, ..self }
    }

    /// The name the engine gives its host, when known.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The TLS files it was reached with, if any.
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// Where the TLS files it was reached with were set; `None` without TLS.
    pub fn tls_origin(&self) -> Option<&str> {
        self.tls.as_ref().map(|tls| tls.origin.as_str())
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
            name: info.name.filter(|name| !name.is_empty()),
        })
    }

    /// An unreachable or forbidden engine, told apart by the I/O error underneath; a TLS
    /// handshake that failed, or an ssh login, said in their own words.
    pub(super) fn connection_error(&self, error: bollard::errors::Error) -> EngineError {
        let text = chain_text(&error);
        if let Some(problem) = tls_problem(&text, self.tls.as_ref()) {
            return EngineError::Tls {
                endpoint: self.endpoint.clone(),
                problem,
                check: self.tls.as_ref().map_or_else(
                    || "machines.NAME.tls, or DOCKER_TLS_VERIFY and DOCKER_CERT_PATH".to_owned(),
                    |tls| tls.origin.clone(),
                ),
                error: Box::new(error),
            };
        }
        if let Some(destination) = self.endpoint.strip_prefix("ssh://") {
            return EngineError::Ssh {
                endpoint: self.endpoint.clone(),
                destination: destination.to_owned(),
                error: Box::new(error),
            };
        }
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

/// A bollard client for `endpoint`, over TLS with `tls`'s files when given. The files are
/// read here first: bollard drops a client key it cannot read without a word, and the engine
/// then refuses a handshake without a client certificate, which would hide the real cause.
fn client(endpoint: &str, tls: Option<&TlsFiles>) -> Result<Docker, EngineError> {
    let unreachable = |error| EngineError::Unreachable {
        endpoint: endpoint.to_owned(),
        error,
    };
    let seconds = CLIENT_TIMEOUT.as_secs();
    if let Some(tls) = tls {
        for (what, path) in [
            ("CA certificate", &tls.ca),
            ("client certificate", &tls.cert),
            ("client key", &tls.key),
        ] {
            readable(path).map_err(|error| EngineError::TlsFile {
                endpoint: endpoint.to_owned(),
                what,
                path: path.clone(),
                origin: tls.origin.clone(),
                error,
            })?;
        }
        // rustls needs one crypto provider for the process; bollard's `ssl` feature brings ring.
        // Another part of the program may have installed one already: that one is used.
        let _ = rustls::crypto::ring::default_provider().install_default();
        return Docker::connect_with_ssl(
            endpoint,
            &tls.key,
            &tls.cert,
            &tls.ca,
            seconds,
            API_DEFAULT_VERSION,
        )
        .map_err(unreachable);
    }
    if endpoint.starts_with("tcp://") || endpoint.starts_with("http://") {
        // Not `connect_with_host`: it turns TLS on for a DOCKER_TLS_VERIFY that is set but
        // empty, which the docker CLI does not.
        return Docker::connect_with_http(endpoint, seconds, API_DEFAULT_VERSION)
            .map_err(unreachable);
    }
    Docker::connect_with_host(endpoint).map_err(unreachable)
}

/// Whether `path` is a regular file this process can open.
fn readable(path: &Path) -> std::io::Result<()> {
    if !std::fs::metadata(path)?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    std::fs::File::open(path).map(drop)
}

/// `error` and its causes, one after the other.
fn chain_text(error: &bollard::errors::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// What went wrong in a TLS handshake, in words a user can act on, from rustls's and the
/// engine's words in `text`; `None` when it was not the handshake.
fn tls_problem(text: &str, tls: Option<&TlsFiles>) -> Option<String> {
    let ca = tls.map_or_else(|| "the CA file".to_owned(), |t| t.ca.display().to_string());
    let cert = tls.map_or_else(
        || "our client certificate".to_owned(),
        |t| t.cert.display().to_string(),
    );
    let has = |needle: &str| text.contains(needle);
    Some(if has("UnknownIssuer") || has("BadSignature") {
        format!("its certificate is not signed by the CA in {ca}")
    } else if has("NotValidForName") {
        "its certificate does not name the host in the endpoint (give the endpoint by a name or \
         address the engine's certificate lists)"
            .to_owned()
    } else if has("Expired") && has("invalid peer certificate") {
        "its certificate has expired".to_owned()
    } else if has("invalid peer certificate") {
        "its certificate is not trusted".to_owned()
    } else if has("CertificateRequired") {
        "it asks for a client certificate and we sent none".to_owned()
    } else if has("received fatal alert") {
        format!(
            "it refused our certificate {cert} (is it signed by a CA the engine trusts, and is \
             the key its own?)"
        )
    } else if has("Client sent an HTTP request to an HTTPS server") {
        "it speaks TLS and we spoke plain HTTP (set `tls = { ca, cert, key }` on the machine, \
         or DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH)"
            .to_owned()
    } else if tls.is_some() && (has("InvalidContentType") || has("corrupt message")) {
        "it does not speak TLS on that port".to_owned()
    } else {
        return None;
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn files() -> TlsFiles {
        TlsFiles {
            ca: "/c/ca.pem".into(),
            cert: "/c/cert.pem".into(),
            key: "/c/key.pem".into(),
            origin: "machines.far.tls".into(),
        }
    }

    #[test]
    fn machines_naming_the_same_tls_files_share_one_engine() {
        let address = |origin: &str| Address {
            endpoint: Some("tcp://far:2376".into()),
            tls: Some(TlsFiles {
                origin: origin.into(),
                ..files()
            }),
        };
        assert_eq!(address("machines.a.tls"), address("machines.b.tls"));
        let other = Address {
            tls: Some(TlsFiles {
                key: "/c/other.pem".into(),
                ..files()
            }),
            ..address("machines.a.tls")
        };
        assert_ne!(address("machines.a.tls"), other);
    }

    #[rstest]
    #[case(
        "client error (Connect): invalid peer certificate: UnknownIssuer",
        Some("its certificate is not signed by the CA in /c/ca.pem")
    )]
    #[case(
        "invalid peer certificate: NotValidForNameContext { expected: .. }",
        Some("its certificate does not name the host in the endpoint")
    )]
    #[case(
        "received fatal alert: BadCertificate",
        Some("it refused our certificate /c/cert.pem")
    )]
    #[case(
        "Docker responded with status code 400: Client sent an HTTP request to an HTTPS server.",
        Some("it speaks TLS and we spoke plain HTTP")
    )]
    #[case(
        "received corrupt message of type InvalidContentType",
        Some("it does not speak TLS")
    )]
    #[case("Connection refused (os error 111)", None)]
    fn handshake_failures_are_told_in_words_to_act_on(
        #[case] text: &str,
        #[case] start: Option<&str>,
    ) {
        let problem = tls_problem(text, Some(&files()));
        match start {
            Some(start) => assert!(
                problem.as_deref().is_some_and(|p| p.starts_with(start)),
                "{problem:?}"
            ),
            None => assert_eq!(problem, None),
        }
    }

    #[test]
    fn a_tls_file_that_is_missing_is_named_before_any_connection() {
        let error = client("tcp://127.0.0.1:1", Some(&files())).unwrap_err();
        assert_eq!(
            error.to_string(),
            "cannot read the CA certificate /c/ca.pem for the Docker engine at tcp://127.0.0.1:1 \
             (check machines.far.tls)"
        );
    }
}
