//! Images: resolved once per process, and built or pulled at most once per run across
//! processes, under a file lock per image. The main function is [`DockerExecutor::image`].
//! Building and pulling are setup, not trial time: each call says how long it spent on them,
//! doing them or waiting for the trial or process that did.

use super::diagnosis::{category_of, io_error};
use super::run::DockerExecutor;
use crate::config::{Build, PullPolicy};
use crate::engine::{Engine, ImageInfo, PullProgress};
use crate::error::{EngineError, chain};
use crate::exec::live::lock;
use crate::record::{SetupKind, SetupStep};
use crate::verdict::Category;
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

/// An image as this process resolved it.
#[derive(Debug, Clone)]
pub(super) struct ResolvedImage {
    info: ImageInfo,
    /// Whether it was built or pulled, and when this process finished doing so (or waiting
    /// for another process that did); `None` when it was there already.
    made: Option<(SetupKind, Instant)>,
}

impl DockerExecutor {
    /// The image `reference` names on the engine at `address`, for a result reuse key, as
    /// cheaply as it can be known: inspected, never built or pulled when it is there. `None`
    /// when the engine does not have it (the trial runs, and builds or pulls it). Under
    /// `pull = "always"` the image is pulled first, once per run, as the trial would.
    pub(crate) fn image_for_reuse(
        &self,
        address: &crate::engine::Address,
        reference: &str,
        pull: PullPolicy,
        build: Option<&Build>,
    ) -> Result<Option<ImageInfo>, String> {
        self.runtime.block_on(async {
            let engine = self
                .engine(address, self.engine_limit)
                .await
                .map_err(|error| chain(&error))?;
            if pull == PullPolicy::Always {
                return self
                    .image(&engine, reference, pull, build)
                    .await
                    .map(|(image, _)| Some(image))
                    .map_err(|error| chain(&error));
            }
            engine.image(reference).await.map_err(|error| chain(&error))
        })
    }

    /// The image `reference`, resolved once per process (and built or pulled at most once per
    /// run, across processes, under a file lock). With it, the build or pull this call did or
    /// waited for (its own seconds on it): `None` when the image was resolved before the call,
    /// or was present and nothing was built or pulled.
    pub(super) async fn image(
        &self,
        engine: &Engine,
        reference: &str,
        pull: PullPolicy,
        build: Option<&Build>,
    ) -> Result<(ImageInfo, Option<SetupStep>), EngineError> {
        let start = Instant::now();
        let key = (engine.endpoint().to_owned(), reference.to_owned(), pull);
        let cell = lock(&self.images).entry(key).or_default().clone();
        let resolved = cell
            .get_or_init(|| async {
                self.resolve(engine, reference, pull, build)
                    .await
                    .map_err(|e| (chain(&e), category_of(&e) == Category::Runtime))
            })
            .await;
        match resolved {
            Ok(resolved) => {
                // A build or pull that ended after this call began is one it did or waited for.
                let step = resolved
                    .made
                    .filter(|(_, ended)| *ended >= start)
                    .map(|(kind, _)| SetupStep {
                        kind,
                        subject: reference.to_owned(),
                        seconds: start.elapsed().as_secs_f64(),
                    });
                Ok((resolved.info.clone(), step))
            }
            // A silent or unreachable engine is not the image's fault.
            Err((message, image)) => Err(EngineError::Earlier {
                message: message.clone(),
                image: *image,
            }),
        }
    }

    async fn resolve(
        &self,
        engine: &Engine,
        reference: &str,
        pull: PullPolicy,
        build: Option<&Build>,
    ) -> Result<ResolvedImage, EngineError> {
        let present = engine.image(reference).await?;
        match (pull, present) {
            (PullPolicy::Never, Some(info)) | (PullPolicy::IfMissing, Some(info)) => {
                return Ok(ResolvedImage { info, made: None });
            }
            (PullPolicy::Never, None) => {
                return Err(EngineError::ImageMissing {
                    image: reference.to_owned(),
                    hint: " and pull = \"never\" (build or load it first, or set pull = \"if-missing\")".into(),
                });
            }
            _ => {}
        }
        // Pull or build under a lock shared with other processes of this host.
        let lock_path = self
            .locks
            .join(format!("{:016x}.lock", crate::names::folder_key(reference)));
        let marker = lock_path.with_extension(format!("run-{}", self.run_id));
        let kind = match build {
            Some(_) => SetupKind::Build,
            None => SetupKind::Pull,
        };
        let (_lock, waited) = tokio::task::spawn_blocking({
            let lock_path = lock_path.clone();
            move || -> std::io::Result<(std::fs::File, bool)> {
                std::fs::create_dir_all(lock_path.parent().unwrap_or(Path::new(".")))?;
                let file = std::fs::File::create(&lock_path)?;
                // Busy: another process (cargo-nextest runs one per trial) is making it.
                let waited = match file.try_lock() {
                    Ok(()) => false,
                    Err(std::fs::TryLockError::WouldBlock) => {
                        file.lock()?;
                        true
                    }
                    Err(std::fs::TryLockError::Error(error)) => return Err(error),
                };
                Ok((file, waited))
            }
        })
        .await
        .map_err(|e| io_error("lock", reference, std::io::Error::other(e)))?
        .map_err(|e| io_error("lock", reference, e))?;
        if let Some(info) = engine.image(reference).await?
            && (pull == PullPolicy::IfMissing || marker.exists())
        {
            let made = waited.then(|| (kind, Instant::now()));
            return Ok(ResolvedImage { info, made });
        }
        let start = Instant::now();
        let made = match build {
            Some(build) => self.build(engine, reference, build).await,
            None => pull_with_progress(engine, reference).await,
        };
        // The start was said; so is the end, when it is a failure too.
        if made.is_err() {
            let what = if build.is_some() {
                "building"
            } else {
                "pulling"
            };
            eprintln!(
                "runtime-matrix: {what} image {reference} failed after {:.1?}",
                start.elapsed()
            );
        }
        made?;
        let _ = std::fs::write(&marker, b"");
        let made = Some((kind, Instant::now()));
        let info = engine
            .image(reference)
            .await?
            .ok_or_else(|| EngineError::ImageMissing {
                image: reference.to_owned(),
                hint: " after it was built or pulled (did the build tag another name?)".into(),
            })?;
        Ok(ResolvedImage { info, made })
    }

    async fn build(
        &self,
        engine: &Engine,
        reference: &str,
        build: &Build,
    ) -> Result<(), EngineError> {
        let start = Instant::now();
        match build {
            Build::Context {
                context,
                dockerfile,
            } => {
                // Images this one is built FROM, when the matrix knows how to build them; the
                // time they take counts in this build's.
                let text =
                    crate::fsx::read_bounded(&context.join(dockerfile), crate::fsx::DOCKERFILE)
                        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                        .unwrap_or_default();
                for base in from_images(&text) {
                    if let Some(base_build) = self.builds.get(&base).filter(|_| base != reference) {
                        Box::pin(self.image(
                            engine,
                            &base,
                            PullPolicy::IfMissing,
                            Some(base_build),
                        ))
                        .await?;
                    }
                }
                eprintln!(
                    "runtime-matrix: building image {reference} from {}",
                    context.display()
                );
                engine
                    .build(reference, context, dockerfile, |line| {
                        if line.starts_with("Step ") {
                            eprintln!("runtime-matrix:   {line}");
                        }
                    })
                    .await?;
            }
            Build::Script { script } => {
                eprintln!(
                    "runtime-matrix: building image {reference} with {} (once; later runs reuse it)",
                    script.display()
                );
                let mut command = std::process::Command::new(script);
                command
                    .current_dir(script.parent().unwrap_or(Path::new(".")))
                    .env("RUNTIME_MATRIX_IMAGE", reference)
                    .env("DOCKER_HOST", engine.endpoint());
                // The docker CLI takes TLS files from one folder, by fixed names: links to the
                // machine's own, for as long as the script runs.
                let certs = match engine.tls_files() {
                    Some(tls) => Some(
                        cli_cert_dir(tls)
                            .map_err(|e| io_error("run the build script of", reference, e))?,
                    ),
                    None => None,
                };
                if let Some(certs) = &certs {
                    command
                        .env("DOCKER_TLS_VERIFY", "1")
                        .env("DOCKER_CERT_PATH", certs.path());
                }
                let token = format!(
                    "build-{}-{}",
                    std::process::id(),
                    crate::names::folder_key(reference)
                );
                let finished = tokio::task::spawn_blocking(move || {
                    crate::exec::process::run(command, Duration::from_secs(3600), &token)
                })
                .await
                .map_err(|e| {
                    io_error(
                        "run the build script of",
                        reference,
                        std::io::Error::other(e),
                    )
                })?
                .map_err(|e| io_error("run the build script of", reference, e))?;
                drop(certs);
                if finished.ended != crate::exec::process::Ended::Exited(0) {
                    return Err(EngineError::Build {
                        image: reference.to_owned(),
                        from: script.display().to_string(),
                        output: crate::exec::provision::tail(&finished.output, 30),
                    });
                }
            }
        }
        eprintln!(
            "runtime-matrix: built image {reference} in {:.1?}",
            start.elapsed()
        );
        Ok(())
    }
}

/// A folder with `ca.pem`, `cert.pem` and `key.pem` linked to `tls`'s files, as the docker CLI
/// reads them from `DOCKER_CERT_PATH`.
fn cli_cert_dir(tls: &crate::engine::TlsFiles) -> std::io::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix("runtime-matrix-certs-")
        .tempdir()?;
    for (name, file) in [
        ("ca.pem", &tls.ca),
        ("cert.pem", &tls.cert),
        ("key.pem", &tls.key),
    ] {
        std::os::unix::fs::symlink(std::path::absolute(file)?, dir.path().join(name))?;
    }
    Ok(dir)
}

async fn pull_with_progress(engine: &Engine, reference: &str) -> Result<(), EngineError> {
    let start = Instant::now();
    let live = std::io::stderr().is_terminal();
    let mut last = PullProgress::default();
    eprintln!("runtime-matrix: pulling image {reference}");
    engine
        .pull(reference, |progress| {
            if live {
                eprint!(
                    "\rruntime-matrix:   {}/{} layers, {:.1}/{:.1} MB   ",
                    progress.done,
                    progress.layers,
                    progress.current as f64 / 1e6,
                    progress.total as f64 / 1e6
                );
            }
            last = progress.clone();
        })
        .await?;
    if live {
        eprintln!();
    }
    eprintln!(
        "runtime-matrix: pulled image {reference}: {} layers, {:.1} MB in {:.1?}",
        last.layers,
        last.total as f64 / 1e6,
        start.elapsed()
    );
    Ok(())
}

/// The images a Dockerfile builds `FROM`.
fn from_images(dockerfile: &str) -> Vec<String> {
    dockerfile
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if !words.next()?.eq_ignore_ascii_case("FROM") {
                return None;
            }
            words.find(|w| !w.starts_with("--")).map(str::to_owned)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_images_a_dockerfile_builds_from() {
        let dockerfile = "# base\nFROM --platform=linux/amd64 runtime-matrix/base:1 AS build\nRUN true\nfrom debian:bookworm\n";
        assert_eq!(
            from_images(dockerfile),
            ["runtime-matrix/base:1", "debian:bookworm"]
        );
    }
}
