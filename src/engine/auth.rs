//! Registry credentials, as the docker CLI keeps them: the engine's API takes them with each
//! pull, so the client must send them (`docker login` on the engine's host is not enough).

use base64::Engine as _;
use bollard::auth::DockerCredentials;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

#[derive(Deserialize)]
struct Entry {
    auth: Option<String>,
    #[serde(rename = "identitytoken")]
    identity_token: Option<String>,
}

/// The docker CLI's config file: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn config_path() -> Option<PathBuf> {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => Some(PathBuf::from(dir).join("config.json")),
        None => {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker/config.json"))
        }
    }
}

/// The registry an image reference pulls from: its first component when that names a host
/// (has a `.` or `:`, or is `localhost`), else Docker Hub.
pub fn registry_of(reference: &str) -> &str {
    match reference.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "https://index.docker.io/v1/",
    }
}

/// The stored credentials for `reference`'s registry, if `docker login` saved any in the config
/// file (credential helpers are not consulted).
pub fn credentials_for(reference: &str) -> Option<DockerCredentials> {
    let text = std::fs::read_to_string(config_path()?).ok()?;
    let config: Config = serde_json::from_str(&text).ok()?;
    let registry = registry_of(reference);
    let entry = config.auths.iter().find_map(|(key, entry)| {
        let key = key
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/');
        let wanted = registry
            .trim_start_matches("https://")
            .trim_end_matches('/');
        (key == wanted || key.split('/').next() == Some(wanted)).then_some(entry)
    })?;
    if let Some(token) = &entry.identity_token {
        return Some(DockerCredentials {
            identitytoken: Some(token.clone()),
            serveraddress: Some(registry.to_owned()),
            ..Default::default()
        });
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(entry.auth.as_ref()?.trim())
        .ok()?;
    let (username, password) = String::from_utf8(decoded)
        .ok()?
        .split_once(':')
        .map(|(u, p)| (u.to_owned(), p.to_owned()))?;
    Some(DockerCredentials {
        username: Some(username),
        password: Some(password),
        serveraddress: Some(registry.to_owned()),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::registry_of;
    use rstest::rstest;

    #[rstest]
    #[case("127.0.0.1:5000/team/torch:1", "127.0.0.1:5000")]
    #[case("registry.example.com/torch", "registry.example.com")]
    #[case("localhost/torch", "localhost")]
    #[case("team/torch:1", "https://index.docker.io/v1/")]
    #[case("torch", "https://index.docker.io/v1/")]
    fn finds_the_registry_of_a_reference(#[case] reference: &str, #[case] registry: &str) {
        assert_eq!(registry_of(reference), registry);
    }
}
