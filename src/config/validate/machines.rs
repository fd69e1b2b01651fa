//! `[machines.NAME]`: the kinds of machine trials run on.

use super::compiler::{Compiler, key_part};
use crate::config::matrix::{Machine, MachineTls};
use crate::config::raw::{RawLabels, RawMachine, RawTls};
use std::collections::BTreeMap;
use std::path::Path;

/// The most CI jobs one machine's trials may be split into: a GitHub Actions matrix holds at
/// most 256 jobs.
const MAX_SHARDS: i64 = 256;

impl Compiler {
    /// The machines, in name order.
    pub(super) fn machines(
        &mut self,
        raw: &BTreeMap<String, RawMachine>,
        root: &Path,
    ) -> Vec<Machine> {
        let mut machines = Vec::new();
        for (name, m) in raw {
            let key = format!("machines.{}", key_part(name));
            self.name(&key, "machine", name);
            if m.gpus == 0 && m.gpu.is_some() {
                self.problem(
                    &key,
                    "`gpu` names a GPU model but `gpus` is 0 (set gpus to the number of GPUs)",
                );
            }
            let tls = m
                .tls
                .as_ref()
                .and_then(|tls| self.tls(&key, m.docker.as_deref(), tls, root));
            if let Some(endpoint) = &m.docker
                && m.tls.is_none()
            {
                self.engine_endpoint(&key, endpoint, m.insecure == Some(true));
            }
            machines.push(Machine {
                name: name.clone(),
                gpus: m.gpus,
                gpu_model: m.gpu.clone(),
                docker: m.docker.clone(),
                tls,
                description: m.description.clone(),
                tags: m.tags.clone(),
                runs_on: self.labels(
                    &format!("{key}.runs-on"),
                    m.runs_on.as_ref().map(RawLabels::to_vec),
                    "runner label",
                    "`runs-on = [\"self-hosted\", \"h100\"]`, or remove the key for `ubuntu-latest`",
                ),
                ci_tags: self.labels(
                    &format!("{key}.ci-tags"),
                    m.ci_tags.clone(),
                    "runner tag",
                    "`ci-tags = [\"gpu\", \"h100\"]`, or remove the key for untagged runners",
                ),
                shards: self.shards(&key, m.shards),
                parameters: self.parameters(&key, &m.parameters),
            });
        }
        if machines.is_empty() {
            self.problem(
                "machines",
                "no machines declared (add e.g. `[machines.cpu]` with `gpus = 0`)",
            );
        }
        machines
    }

    /// `machines.NAME.tls`: only for a TCP engine; each file a readable regular file, its path
    /// relative to matrix.toml's folder.
    fn tls(
        &mut self,
        key: &str,
        endpoint: Option<&str>,
        tls: &RawTls,
        root: &Path,
    ) -> Option<MachineTls> {
        let tcp = endpoint.is_some_and(|e| e.starts_with("tcp://") || e.starts_with("https://"));
        if !tcp {
            let endpoint = endpoint.map_or_else(
                || "unset (DOCKER_HOST, else the local socket)".to_owned(),
                |e| format!("`{e}`"),
            );
            self.problem(
                format!("{key}.tls"),
                format!(
                    "TLS needs a `tcp://HOST:2376` or `https://` engine, but {key}.docker is \
                     {endpoint} (set `docker` to the engine's TLS address, or remove `tls`: a \
                     unix socket and ssh:// are secured otherwise)"
                ),
            );
        }
        let mut file = |name: &str, what: &str, value: &str| {
            let path = root.join(value);
            let readable = std::fs::metadata(&path).and_then(|meta| {
                if meta.is_file() {
                    std::fs::File::open(&path).map(drop)
                } else {
                    Err(std::io::Error::other("not a regular file"))
                }
            });
            match readable {
                Ok(()) => Some(path),
                Err(error) => {
                    self.problem(
                        format!("{key}.tls.{name}"),
                        format!(
                            "cannot read `{value}`: {error} (give the path of {what}, relative \
                             to the folder of matrix.toml)"
                        ),
                    );
                    None
                }
            }
        };
        let ca = file(
            "ca",
            "the CA certificate that signed the engine's certificate",
            &tls.ca,
        );
        let cert = file(
            "cert",
            "our client certificate, signed by a CA the engine trusts",
            &tls.cert,
        );
        let key_file = file("key", "the client certificate's private key", &tls.key);
        let tls = MachineTls {
            ca: ca?,
            cert: cert?,
            key: key_file?,
        };
        tcp.then_some(tls)
    }

    /// CI runner labels (or tags) at `key`: none declared is fine, but an empty list or an
    /// empty label would give a job no runner, or any runner.
    fn labels(
        &mut self,
        key: &str,
        labels: Option<Vec<String>>,
        what: &str,
        example: &str,
    ) -> Vec<String> {
        let Some(labels) = labels else {
            return Vec::new();
        };
        if labels.is_empty() {
            self.problem(
                key,
                format!("the list is empty (name at least one {what}: {example})"),
            );
        }
        for label in &labels {
            if label.trim().is_empty() {
                self.problem(key, format!("a {what} is empty (name it, e.g. {example})"));
            } else if label.trim() != label {
                self.problem(
                    key,
                    format!("{what} `{label}` has spaces around it (remove them)"),
                );
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for label in &labels {
            if !label.trim().is_empty() && !seen.insert(label) {
                self.problem(key, format!("{what} `{label}` is listed twice"));
            }
        }
        labels
    }

    /// `shards = N`: at least one CI job, and no more than a GitHub matrix holds.
    fn shards(&mut self, key: &str, shards: Option<i64>) -> u32 {
        match shards {
            None => 1,
            Some(n @ 1..=MAX_SHARDS) => n as u32,
            Some(n) => {
                self.problem(
                    format!("{key}.shards"),
                    format!(
                        "{n} is not a number of CI jobs (use 1 to {MAX_SHARDS}; 1, the default, \
                         runs the machine's trials in one job)"
                    ),
                );
                1
            }
        }
    }

    /// Plain TCP to another host's engine gives root on that host to anyone who can reach the
    /// port (Docker's own documentation warns against it): refused, unless the machine says
    /// `insecure = true`, and then warned about on every run. Loopback is this host's own.
    fn engine_endpoint(&mut self, key: &str, endpoint: &str, insecure: bool) {
        if let Some(destination) = endpoint.strip_prefix("ssh://") {
            self.ssh_endpoint(key, endpoint, destination);
            return;
        }
        let Some(host) = plain_tcp_host(endpoint) else {
            return;
        };
        if is_loopback(host) {
            return;
        }
        // As the docker CLI reads it: TLS for every `tcp://` engine without files of its own
        // (an `http://` endpoint stays plain HTTP whatever the variable says).
        if endpoint.starts_with("tcp://")
            && std::env::var("DOCKER_TLS_VERIFY").is_ok_and(|v| !v.is_empty())
        {
            return;
        }
        if insecure {
            self.warn(format!(
                "{key}.docker: `{endpoint}` is plain TCP (insecure = true): anyone who can reach \
                 that port is root on {host}"
            ));
        } else {
            self.problem(
                format!("{key}.docker"),
                format!(
                    "`{endpoint}` is plain, unauthenticated TCP: anyone who can reach that port is \
                     root on {host}. Use TLS (`tls = {{ ca = \"ca.pem\", cert = \"cert.pem\", \
                     key = \"key.pem\" }}` on the machine with the engine's TLS port, usually \
                     2376, or DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH), or ssh \
                     (`docker = \"ssh://USER@{host}\"`), or an ssh tunnel to a loopback port \
                     (`ssh -NL 2375:/var/run/docker.sock USER@{host}`, then \
                     `tcp://127.0.0.1:2375`), or set `insecure = true` on the machine to accept it"
                ),
            );
        }
    }
}

impl Compiler {
    /// `ssh://[USER@]HOST`: bollard 0.21 hands `USER@HOST:PORT` to the ssh client as a host
    /// name (its ssh transport drops the port), so a port must come from the ssh config.
    fn ssh_endpoint(&mut self, key: &str, endpoint: &str, destination: &str) {
        let host = destination
            .rsplit_once('@')
            .map_or(destination, |(_, host)| host);
        let port = host
            .rsplit_once(':')
            .filter(|(_, port)| port.parse::<u16>().is_ok());
        if let Some((name, port)) = port {
            let user = destination
                .rsplit_once('@')
                .map_or(String::new(), |(user, _)| format!("{user}@"));
            self.problem(
                format!("{key}.docker"),
                format!(
                    "`{endpoint}` names a port, which the ssh transport cannot pass on: give the \
                     port in your ssh config (`Host {name}-docker`, `HostName {name}`, \
                     `Port {port}` in ~/.ssh/config) and use `ssh://{user}{name}-docker`"
                ),
            );
        } else if host.is_empty() || destination.contains('/') {
            self.problem(
                format!("{key}.docker"),
                format!("`{endpoint}` names no host (write `ssh://USER@HOST`)"),
            );
        }
    }
}

/// The host of a plain TCP endpoint (`tcp://HOST:PORT`, `http://HOST:PORT`), IPv6 brackets
/// removed; `None` for any other endpoint.
fn plain_tcp_host(endpoint: &str) -> Option<&str> {
    let rest = endpoint
        .strip_prefix("tcp://")
        .or_else(|| endpoint.strip_prefix("http://"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    Some(match authority.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or(bracketed),
        None => authority.split(':').next().unwrap_or(authority),
    })
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("tcp://gpu-box:2375", Some("gpu-box"))]
    #[case("http://10.0.0.7:2375/", Some("10.0.0.7"))]
    #[case("tcp://[::1]:2375", Some("::1"))]
    #[case("tcp://127.0.0.1:2375", Some("127.0.0.1"))]
    #[case("unix:///var/run/docker.sock", None)]
    #[case("https://gpu-box:2376", None)]
    fn finds_the_host_of_plain_tcp(#[case] endpoint: &str, #[case] host: Option<&str>) {
        assert_eq!(plain_tcp_host(endpoint), host);
    }

    #[rstest]
    #[case("localhost", true)]
    #[case("127.0.0.5", true)]
    #[case("::1", true)]
    #[case("gpu-box", false)]
    #[case("10.0.0.7", false)]
    fn loopback_is_this_host(#[case] host: &str, #[case] loopback: bool) {
        assert_eq!(is_loopback(host), loopback);
    }
}
