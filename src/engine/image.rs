//! Images: is it there, pull it with progress, or build it from a context or a script.

use super::Engine;
use super::client::status;
use crate::error::EngineError;
use bollard::query_parameters::{BuildImageOptionsBuilder, CreateImageOptionsBuilder};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// How long a pull or a build may go without a word from the engine: a build step may compute
/// quietly for minutes, but not for this long.
const STREAM_IDLE: Duration = Duration::from_secs(600);

/// An image as the engine has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// The reference it was asked for by.
    pub reference: String,
    /// The engine's image id (`sha256:...`).
    pub id: String,
    /// The registry digest (`name@sha256:...`), when it came from a registry.
    pub digest: Option<String>,
    /// Labels, e.g. a declared CUDA version.
    pub labels: BTreeMap<String, String>,
    /// The image's environment (for the CUDA version it declares); not kept in records.
    #[serde(skip)]
    pub env: Vec<String>,
}

/// Progress of one pull, for a live line or a summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullProgress {
    /// Layers seen.
    pub layers: usize,
    /// Layers finished (downloaded and extracted, or already there).
    pub done: usize,
    /// Bytes downloaded so far, over the layers that reported a size.
    pub current: i64,
    /// Bytes to download, over the layers that reported a size.
    pub total: i64,
}

impl Engine {
    /// The image `reference`, or `None` when the engine does not have it.
    pub async fn image(&self, reference: &str) -> Result<Option<ImageInfo>, EngineError> {
        let inspect = async { Ok(self.docker.inspect_image(reference).await) };
        let inspected = self
            .bounded(
                "inspect image",
                format!("`{reference}`"),
                self.limit,
                inspect,
            )
            .await?;
        match inspected {
            Ok(image) => {
                let config = image.config.unwrap_or_default();
                Ok(Some(ImageInfo {
                    reference: reference.to_owned(),
                    id: image.id.unwrap_or_default(),
                    digest: image
                        .repo_digests
                        .and_then(|digests| digests.into_iter().next()),
                    labels: config
                        .labels
                        .map(|labels| labels.into_iter().collect())
                        .unwrap_or_default(),
                    env: config.env.unwrap_or_default(),
                }))
            }
            Err(error) if status(&error) == Some(404) => Ok(None),
            Err(error) => Err(self.error("inspect image", format!("`{reference}`"), error)),
        }
    }

    /// Whether `reference` could be pulled: asks its registry, pulling nothing.
    pub async fn pullable(&self, reference: &str) -> Result<(), EngineError> {
        let ask = async {
            self.docker
                .inspect_registry_image(reference, super::auth::credentials_for(reference))
                .await
                .map(|_| ())
                .map_err(|error| self.pull_error(reference, error))
        };
        self.bounded(
            "inspect registry image",
            format!("`{reference}`"),
            self.limit,
            ask,
        )
        .await
    }

    /// Pulls `reference`, calling `progress` as layers advance.
    pub async fn pull(
        &self,
        reference: &str,
        mut progress: impl FnMut(&PullProgress),
    ) -> Result<(), EngineError> {
        let (name, tag) = split_tag(reference);
        let options = CreateImageOptionsBuilder::new()
            .from_image(name)
            .tag(tag)
            .build();
        let credentials = super::auth::credentials_for(reference);
        let mut stream = self.docker.create_image(Some(options), None, credentials);
        let mut layers: BTreeMap<String, (bool, i64, i64)> = BTreeMap::new();
        let target = format!("`{reference}`");
        let idle = self.limit.max(STREAM_IDLE);
        while let Some(item) = self
            .bounded("pull image", &target, idle, async {
                Ok(stream.next().await)
            })
            .await?
        {
            let info = item.map_err(|error| self.pull_error(reference, error))?;
            let (Some(id), Some(state)) = (info.id, info.status) else {
                continue;
            };
            if id == tag || state.starts_with("Pulling from") {
                continue;
            }
            let layer = layers.entry(id).or_default();
            if let Some(detail) = info.progress_detail
                && let (Some(current), Some(total)) = (detail.current, detail.total)
                && state == "Downloading"
            {
                layer.1 = current;
                layer.2 = total;
            }
            if matches!(state.as_str(), "Pull complete" | "Already exists") {
                layer.0 = true;
                layer.1 = layer.2;
            }
            progress(&PullProgress {
                layers: layers.len(),
                done: layers.values().filter(|l| l.0).count(),
                current: layers.values().map(|l| l.1).sum(),
                total: layers.values().map(|l| l.2).sum(),
            });
        }
        Ok(())
    }

    fn pull_error(&self, reference: &str, error: bollard::errors::Error) -> EngineError {
        if super::client::io_kind(&error).is_some() {
            return self.connection_error(error);
        }
        let text = error.to_string().to_lowercase();
        let hint = if text.contains("unauthorized")
            || text.contains("authentication required")
            || text.contains("no basic auth")
        {
            " (the registry refused the credentials: run `docker login` for it on this host, which saves them in ~/.docker/config.json or $DOCKER_CONFIG/config.json, where runtime-matrix reads them)"
        } else if text.contains("manifest unknown") || text.contains("not found") {
            " (the registry has no such image or tag: check the name and tag in matrix.toml)"
        } else if text.contains("connection refused")
            || text.contains("no such host")
            || text.contains("timeout")
        {
            " (the registry cannot be reached from the engine)"
        } else {
            ""
        };
        EngineError::Pull {
            image: reference.to_owned(),
            hint: hint.to_owned(),
            error,
        }
    }

    /// Builds `reference` from the Dockerfile `dockerfile` in folder `context`, calling `log`
    /// with each line of build output.
    pub async fn build(
        &self,
        reference: &str,
        context: &Path,
        dockerfile: &str,
        mut log: impl FnMut(&str),
    ) -> Result<(), EngineError> {
        let from = format!("{} ({dockerfile})", context.display());
        let failed = |output: String| EngineError::Build {
            image: reference.to_owned(),
            from: from.clone(),
            output,
        };
        let archive = context_archive(context)
            .map_err(|error| failed(format!("cannot read the build context: {error}")))?;
        let options = BuildImageOptionsBuilder::new()
            .dockerfile(dockerfile)
            .t(reference)
            .rm(true)
            .forcerm(true)
            .build();
        let mut stream =
            self.docker
                .build_image(options, None, Some(bollard::body_full(archive.into())));
        let mut tail: Vec<String> = Vec::new();
        let target = format!("`{reference}`");
        let idle = self.limit.max(STREAM_IDLE);
        while let Some(item) = self
            .bounded("build image", &target, idle, async {
                Ok(stream.next().await)
            })
            .await?
        {
            let info = match item {
                Ok(info) => info,
                Err(error) if super::client::io_kind(&error).is_some() => {
                    return Err(self.connection_error(error));
                }
                Err(error) => {
                    tail.push(error.to_string());
                    return Err(failed(tail.join("\n")));
                }
            };
            if let Some(line) = info
                .stream
                .as_deref()
                .map(str::trim_end)
                .filter(|l| !l.is_empty())
            {
                log(line);
                tail.push(line.to_owned());
                if tail.len() > 30 {
                    tail.remove(0);
                }
            }
            if let Some(error) = info.error_detail.and_then(|d| d.message) {
                tail.push(error);
                return Err(failed(tail.join("\n")));
            }
        }
        Ok(())
    }
}

/// `name:tag` split for the pull API; `latest` when no tag is given. A digest reference
/// (`name@sha256:...`) is passed whole.
fn split_tag(reference: &str) -> (&str, &str) {
    if reference.contains('@') {
        return (reference, "");
    }
    match reference.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (reference, "latest"),
    }
}

/// The build context as a tar archive, skipping what `.dockerignore` would typically skip:
/// hidden entries.
fn context_archive(context: &Path) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    let mut stack = vec![context.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let relative = path.strip_prefix(context).unwrap_or(&path);
            if entry.file_type()?.is_dir() {
                builder.append_dir(relative, &path)?;
                stack.push(path);
            } else {
                builder.append_path_with_name(&path, relative)?;
            }
        }
    }
    builder.into_inner()
}

#[cfg(test)]
mod tests {
    use super::split_tag;
    use rstest::rstest;

    #[rstest]
    #[case("debian:bookworm", ("debian", "bookworm"))]
    #[case("debian", ("debian", "latest"))]
    #[case("127.0.0.1:5000/team/torch:2.4", ("127.0.0.1:5000/team/torch", "2.4"))]
    #[case("127.0.0.1:5000/torch", ("127.0.0.1:5000/torch", "latest"))]
    #[case("torch@sha256:abc", ("torch@sha256:abc", ""))]
    fn splits_references(#[case] reference: &str, #[case] expected: (&str, &str)) {
        assert_eq!(split_tag(reference), expected);
    }
}
