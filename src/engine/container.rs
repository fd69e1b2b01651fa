//! Containers: create, start, exec with a deadline, move files through the archive API, and
//! remove; and find the ones this project made.

use super::Engine;
use super::client::status;
use crate::error::EngineError;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::{ContainerSummary, ExecConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, DownloadFromContainerOptionsBuilder,
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::io::Read;
use std::time::{Duration, Instant};

/// Label: the trial a container was made for.
pub const LABEL_TRIAL: &str = "runtime-matrix.trial";
/// Label: the run a container belongs to.
pub const LABEL_RUN: &str = "runtime-matrix.run-id";
/// Label: the harness process that owns a container; reaping looks for it.
pub const LABEL_PID: &str = "runtime-matrix.pid";
/// Label: that process's start time, so that a reused pid is not taken for the owner.
pub const LABEL_PID_START: &str = "runtime-matrix.pid-start";
/// Label: the host the owning process runs on.
pub const LABEL_HOST: &str = "runtime-matrix.host";
/// Label: set when the user asked to keep containers (`RUNTIME_MATRIX_KEEP`); reaping leaves
/// such containers to `runtime-matrix clean`.
pub const LABEL_KEEP: &str = "runtime-matrix.keep";
/// How much of an exec's output is kept.
const OUTPUT_LIMIT: usize = 256 * 1024;

/// A piece of what a command started with [`Engine::open_exec`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecChunk {
    /// On its stdout.
    Out(Vec<u8>),
    /// On its stderr.
    Err(Vec<u8>),
}

/// A command running in a container with its stdin open.
pub struct OpenExec {
    /// What it writes, as it comes; the stream ends when the command does.
    pub output:
        std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<ExecChunk, EngineError>> + Send>>,
    /// Its stdin.
    pub input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
}

impl std::fmt::Debug for OpenExec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenExec").finish_non_exhaustive()
    }
}

/// How an exec ended.
#[derive(Debug, Clone)]
pub struct ExecOutcome {
    /// The exit code; `None` when the harness stopped waiting at `wait`.
    pub exit_code: Option<i64>,
    /// stdout and stderr, interleaved, at most the last 256 KiB.
    pub output: String,
}

impl Engine {
    /// Creates a container named `name` from `body`.
    pub async fn create_container(
        &self,
        name: &str,
        body: bollard::models::ContainerCreateBody,
        machine: &str,
    ) -> Result<String, EngineError> {
        let image = body.image.clone().unwrap_or_default();
        let wants_gpus = body
            .host_config
            .as_ref()
            .is_some_and(|h| h.device_requests.is_some());
        let options = CreateContainerOptionsBuilder::new().name(name).build();
        let create = async { Ok(self.docker.create_container(Some(options), body).await) };
        let created = self
            .bounded(
                "create container",
                format!("image `{image}`"),
                self.limit,
                create,
            )
            .await?;
        match created {
            Ok(created) => Ok(created.id),
            Err(error) if status(&error) == Some(404) => Err(EngineError::ImageMissing {
                image,
                hint: " (it was there a moment ago: was it removed during the run?)".into(),
            }),
            Err(error) if wants_gpus && is_missing_gpu_runtime(&error) => {
                Err(EngineError::NoNvidiaRuntime {
                    endpoint: self.endpoint.clone(),
                    machine: machine.to_owned(),
                    error,
                })
            }
            Err(error) => {
                Err(self.error("create a container from", format!("image `{image}`"), error))
            }
        }
    }

    /// Starts a created container.
    pub async fn start_container(&self, id: &str, machine: &str) -> Result<(), EngineError> {
        let start = async {
            Ok(self
                .docker
                .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
                .await)
        };
        self.bounded(
            "start container",
            format!("container {}", short(id)),
            self.limit,
            start,
        )
        .await?
        .map_err(|error| {
            if is_missing_gpu_runtime(&error) {
                EngineError::NoNvidiaRuntime {
                    endpoint: self.endpoint.clone(),
                    machine: machine.to_owned(),
                    error,
                }
            } else {
                self.error("start container", short(id), error)
            }
        })
    }

    /// Creates and starts an exec of `config` in container `id`, attached; each call is given
    /// the engine's limit. Returns the exec's id and its streams.
    async fn start_exec(
        &self,
        id: &str,
        config: ExecConfig,
    ) -> Result<(String, StartExecResults), EngineError> {
        let failed = |error| self.error("start a command in container", short(id), error);
        let create = async { self.docker.create_exec(id, config).await.map_err(failed) };
        let exec = self
            .bounded(
                "create exec",
                format!("container {}", short(id)),
                self.limit,
                create,
            )
            .await?;
        let options = StartExecOptions {
            detach: false,
            tty: false,
            output_capacity: None,
        };
        let attach = async {
            self.docker
                .start_exec(&exec.id, Some(options))
                .await
                .map_err(failed)
        };
        let started = self
            .bounded(
                "start exec",
                format!("container {}", short(id)),
                self.limit,
                attach,
            )
            .await?;
        Ok((exec.id, started))
    }

    /// Runs `command` in container `id`, collecting its output, and stops waiting after `wait`
    /// (the process inside carries its own time limit; see [`super::ContainerSpec`]). The
    /// calls around the command (create, start, inspect) each have the engine's limit.
    pub async fn exec(
        &self,
        id: &str,
        command: Vec<String>,
        workdir: &str,
        env: Vec<String>,
        wait: Duration,
    ) -> Result<ExecOutcome, EngineError> {
        let start = Instant::now();
        let config = ExecConfig {
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            cmd: Some(command),
            env: Some(env),
            working_dir: Some(workdir.to_owned()),
            ..Default::default()
        };
        let (exec, started) = self.start_exec(id, config).await?;
        let mut output = Vec::new();
        let finished = match started {
            StartExecResults::Attached {
                output: mut stream, ..
            } => {
                let read = async {
                    while let Some(chunk) = stream.next().await {
                        output.extend_from_slice(&chunk?.into_bytes());
                        if output.len() > 2 * OUTPUT_LIMIT {
                            output.drain(..output.len() - OUTPUT_LIMIT);
                        }
                    }
                    Ok(())
                };
                // The stream ends when the command does: the whole wait is the trial's.
                let left = wait.saturating_sub(start.elapsed());
                match tokio::time::timeout(left, read).await {
                    Ok(result) => {
                        result.map_err(|error| {
                            self.error(
                                "read the output of a command in container",
                                short(id),
                                error,
                            )
                        })?;
                        true
                    }
                    Err(_) => false,
                }
            }
            StartExecResults::Detached => true,
        };
        if output.len() > OUTPUT_LIMIT {
            output.drain(..output.len() - OUTPUT_LIMIT);
        }
        let exit_code = if finished {
            let inspect = async {
                self.docker
                    .inspect_exec(&exec)
                    .await
                    .map_err(|error| self.error("inspect a command in container", short(id), error))
            };
            self.bounded(
                "inspect exec",
                format!("container {}", short(id)),
                self.limit,
                inspect,
            )
            .await?
            .exit_code
        } else {
            None
        };
        Ok(ExecOutcome {
            exit_code,
            output: String::from_utf8_lossy(&output).into_owned(),
        })
    }

    /// Starts `command` in container `id` with its stdin open, for a conversation: what it
    /// writes comes as [`ExecChunk`]s, what is written to `input` reaches its stdin. Each of the
    /// two calls that start it is given the engine's limit; the conversation itself has none.
    pub async fn open_exec(&self, id: &str, command: Vec<String>) -> Result<OpenExec, EngineError> {
        let config = ExecConfig {
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            cmd: Some(command),
            ..Default::default()
        };
        let (_, started) = self.start_exec(id, config).await?;
        let StartExecResults::Attached { output, input } = started else {
            return Err(EngineError::Operation {
                operation: "attach to a command in container",
                target: short(id),
                error: bollard::errors::Error::IOError {
                    err: std::io::Error::other("the engine started it detached"),
                },
            });
        };
        let target = short(id);
        let engine = self.clone();
        let output = output.map(move |chunk| match chunk {
            Ok(bollard::container::LogOutput::StdErr { message }) => {
                Ok(ExecChunk::Err(message.to_vec()))
            }
            Ok(other) => Ok(ExecChunk::Out(other.into_bytes().to_vec())),
            Err(error) => Err(engine.error(
                "read the output of a command in container",
                target.clone(),
                error,
            )),
        });
        Ok(OpenExec {
            output: Box::pin(output),
            input,
        })
    }

    /// Unpacks the tar archive `tar` at `path` (a folder that exists) in container `id`.
    pub async fn upload(&self, id: &str, path: &str, tar: Vec<u8>) -> Result<(), EngineError> {
        let options = UploadToContainerOptionsBuilder::new().path(path).build();
        let upload = async {
            self.docker
                .upload_to_container(id, Some(options), bollard::body_full(tar.into()))
                .await
                .map_err(|error| self.error("copy files into container", short(id), error))
        };
        self.bounded(
            "upload archive",
            format!("container {}", short(id)),
            self.limit,
            upload,
        )
        .await
    }

    /// Uploads the tar archive `chunks` gives, as they come, into container `id` at `path`,
    /// waiting at most `limit` in all: an archive too large to hold in memory.
    pub async fn upload_stream(
        &self,
        id: &str,
        path: &str,
        chunks: impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static,
        limit: Duration,
    ) -> Result<(), EngineError> {
        let options = UploadToContainerOptionsBuilder::new().path(path).build();
        let body = bollard::body_try_stream(chunks.map(|chunk| chunk.map(Into::into)));
        let upload = async {
            self.docker
                .upload_to_container(id, Some(options), body)
                .await
                .map_err(|error| self.error("copy files into container", short(id), error))
        };
        self.bounded(
            "upload archive",
            format!("container {}", short(id)),
            limit,
            upload,
        )
        .await
    }

    /// The file at `path` in container `id`, or `None` when it does not exist.
    pub async fn download_file(
        &self,
        id: &str,
        path: &str,
    ) -> Result<Option<Vec<u8>>, EngineError> {
        self.download_file_within(id, path, u64::MAX).await
    }

    /// The file at `path` in container `id`, or `None` when it does not exist; a file larger
    /// than `max_bytes` is an error, and no more than that (and a tar header) is held.
    pub async fn download_file_within(
        &self,
        id: &str,
        path: &str,
        max_bytes: u64,
    ) -> Result<Option<Vec<u8>>, EngineError> {
        // One tar header block and the end-of-archive blocks around the file's bytes.
        let most = max_bytes.saturating_add(64 * 1024);
        let options = DownloadFromContainerOptionsBuilder::new()
            .path(path)
            .build();
        let download = async {
            let mut stream = self.docker.download_from_container(id, Some(options));
            let mut archive = Vec::new();
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(bytes) => {
                        archive.extend_from_slice(&bytes);
                        if archive.len() as u64 > most {
                            let too_large = std::io::Error::new(
                                std::io::ErrorKind::FileTooLarge,
                                format!("{path} is larger than {max_bytes} bytes"),
                            );
                            return Err(self.error(
                                "copy files out of container",
                                short(id),
                                bollard::errors::Error::IOError { err: too_large },
                            ));
                        }
                    }
                    Err(error) if status(&error) == Some(404) => return Ok(None),
                    Err(error) => {
                        return Err(self.error("copy files out of container", short(id), error));
                    }
                }
            }
            Ok(Some(archive))
        };
        let Some(archive) = self
            .bounded(
                "download archive",
                format!("container {}", short(id)),
                self.limit,
                download,
            )
            .await?
        else {
            return Ok(None);
        };
        let mut entries = tar::Archive::new(archive.as_slice());
        let read = |error: std::io::Error| EngineError::Operation {
            operation: "read the archive from container",
            target: short(id),
            error: bollard::errors::Error::IOError { err: error },
        };
        for entry in entries.entries().map_err(read)? {
            let mut entry = entry.map_err(read)?;
            if entry.header().entry_type().is_file() {
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes).map_err(read)?;
                return Ok(Some(bytes));
            }
        }
        Ok(None)
    }

    /// Removes container `id` and its anonymous volumes, running or not. A container that is
    /// already gone counts as removed.
    pub async fn remove_container(&self, id: &str) -> Result<(), EngineError> {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        let remove = async { Ok(self.docker.remove_container(id, Some(options)).await) };
        let removed = self
            .bounded(
                "remove container",
                format!("container {}", short(id)),
                self.cleanup_limit(),
                remove,
            )
            .await?;
        match removed {
            Ok(()) => Ok(()),
            Err(error) if status(&error) == Some(404) => Ok(()),
            // Already being removed (by the engine, as a container that removes itself exits,
            // or by a reaper or a signal handler): done once it is gone, so that a run never
            // ends with its container still listed.
            Err(error) if status(&error) == Some(409) => {
                self.wait_gone(id).await;
                Ok(())
            }
            Err(error) => Err(self.error("remove container", short(id), error)),
        }
    }

    /// Waits, within the clean-up limit, until the engine no longer knows container `id`.
    async fn wait_gone(&self, id: &str) {
        let start = std::time::Instant::now();
        while start.elapsed() < self.cleanup_limit() {
            let inspect = self.docker.inspect_container(
                id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            );
            match tokio::time::timeout(Duration::from_secs(2), inspect).await {
                // Still there, being removed.
                Ok(Ok(_)) => {}
                // Gone; or the engine failed or went silent, and the reaper sees to it later.
                Ok(Err(_)) | Err(_) => return,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every container, running or not, that carries this project's owner label.
    pub async fn our_containers(&self) -> Result<Vec<ContainerSummary>, EngineError> {
        let filters: HashMap<&str, Vec<&str>> = HashMap::from([("label", vec![LABEL_PID])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let list = async {
            self.docker
                .list_containers(Some(options))
                .await
                .map_err(|error| self.error("list containers of", "this project", error))
        };
        self.bounded("list containers", "this project", self.limit, list)
            .await
    }

    /// How container `id` stands after a check failed in it: whether it still runs, and how
    /// many processes its memory limit killed (its cgroup's `oom_kill` counter, read from
    /// inside, so that remote engines and cgroup v1 and v2 all answer).
    /// `killed` (the check died of SIGKILL) allows the engine a moment to catch up.
    pub async fn after_failure(&self, id: &str, killed: bool) -> (bool, u64) {
        // A container killed from outside takes the engine a moment to mark as stopped, and its
        // processes die before that.
        let mut running = false;
        for _ in 0..if killed { 5 } else { 1 } {
            running = matches!(
                self.condition(id, self.limit).await,
                Ok(Condition::Running | Condition::Paused)
            );
            if !running {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if !running {
            return (false, 0);
        }
        let read = [
            "sh",
            "-c",
            "cat /sys/fs/cgroup/memory/memory.oom_control /sys/fs/cgroup/memory.events 2>/dev/null",
        ]
        .map(String::from)
        .to_vec();
        let kills = match self
            .exec(id, read, "/", Vec::new(), Duration::from_secs(10))
            .await
        {
            Ok(exec) => exec
                .output
                .lines()
                .filter_map(|line| line.strip_prefix("oom_kill "))
                .filter_map(|n| n.trim().parse::<u64>().ok())
                .max()
                .unwrap_or(0),
            Err(_) => 0,
        };
        (true, kills)
    }
}

impl Engine {
    /// How container `id` stands, asked with `limit` to answer: for a command that did not
    /// end at its deadline, whether the container was paused, or the engine stopped answering.
    pub async fn condition(&self, id: &str, limit: Duration) -> Result<Condition, EngineError> {
        let inspect = async {
            Ok(self
                .docker
                .inspect_container(
                    id,
                    None::<bollard::query_parameters::InspectContainerOptions>,
                )
                .await)
        };
        match self
            .bounded(
                "inspect container",
                format!("container {}", short(id)),
                limit,
                inspect,
            )
            .await?
        {
            Ok(container) => {
                let state = container.state.unwrap_or_default();
                Ok(if state.paused == Some(true) {
                    Condition::Paused
                } else if state.running == Some(true) {
                    Condition::Running
                } else {
                    Condition::Stopped
                })
            }
            Err(error) if status(&error) == Some(404) => Ok(Condition::Gone),
            Err(error) => Err(self.error("inspect container", short(id), error)),
        }
    }
}

/// How a container stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Its processes run.
    Running,
    /// Frozen by `docker pause`: its processes, deadlines included, do not run.
    Paused,
    /// It exited or was killed.
    Stopped,
    /// It no longer exists.
    Gone,
}

/// The engine's answer when it has no runtime for `--gpus`.
fn is_missing_gpu_runtime(error: &bollard::errors::Error) -> bool {
    let text = error.to_string();
    text.contains("could not select device driver")
        || text.contains("unknown or invalid runtime name: nvidia")
}

/// The first 12 characters of a container id, as `docker ps` shows it.
pub(crate) fn short(id: &str) -> String {
    id.chars().take(12).collect()
}
