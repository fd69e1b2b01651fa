//! `[services.NAME]`: a service's image (built or pulled as runtime images are), container,
//! ports, readiness and URL, and the runtimes that use it, which learn of it here.

use super::compiler::{Compiler, key_part, shown};
use crate::config::matrix::{Executor, Readiness, Runtime, Service, env_prefix};
use crate::config::raw::RawService;
use crate::config::suggest::did_you_mean;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// How long a service may take to become ready when `ready-timeout` is not declared.
const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);

impl Compiler {
    /// The services, in name order; each runtime a service names gets it in its `services`.
    pub(super) fn services(
        &mut self,
        raw: &BTreeMap<String, RawService>,
        root: &Path,
        runtimes: &mut [Runtime],
    ) -> Vec<Service> {
        let mut services = Vec::new();
        let mut prefixes: BTreeMap<String, String> = BTreeMap::new();
        for (name, r) in raw {
            let key = format!("services.{}", key_part(name));
            self.name(&key, "service", name);
            let prefix = env_prefix(name);
            if let Some(other) = prefixes.insert(prefix.clone(), name.clone()) {
                self.problem(
                    &key,
                    format!(
                        "services `{other}` and `{name}` would both set {prefix}_* (rename one)"
                    ),
                );
            }
            let service = self.service(&key, name, r, root);
            for runtime_name in &service.runtimes {
                let Some(runtime) = runtimes.iter_mut().find(|rt| &rt.name == runtime_name) else {
                    continue;
                };
                if let Executor::Docker(docker) = &runtime.executor
                    && docker.network == "host"
                {
                    self.problem(
                        format!("{key}.runtimes"),
                        format!(
                            "runtime `{runtime_name}` has network = \"host\", which cannot join \
                             the service's network (use the default `none`, `bridge` or a \
                             network's name)"
                        ),
                    );
                }
                runtime.services.push(service.clone());
            }
            services.push(service);
        }
        let names: Vec<&str> = runtimes.iter().map(|rt| rt.name.as_str()).collect();
        for (name, r) in raw {
            for runtime in &r.runtimes {
                if !names.contains(&runtime.as_str()) {
                    let hint = did_you_mean(runtime, names.iter().copied());
                    self.problem(
                        format!("services.{}.runtimes", key_part(name)),
                        format!("unknown runtime `{}`{hint}", shown(runtime)),
                    );
                }
            }
        }
        services
    }

    /// One service.
    fn service(&mut self, key: &str, name: &str, r: &RawService, root: &Path) -> Service {
        let image = r.image.clone().unwrap_or_default();
        if image.trim().is_empty() {
            self.problem(
                format!("{key}.image"),
                "a service needs `image`, e.g. \"redis:7\" (with `build` to build it here)",
            );
        }
        self.no_nul(&format!("{key}.image"), "the value", &image);
        let pull = self.pull_policy(key, r.pull.as_deref());
        let build = r
            .build
            .as_ref()
            .and_then(|build| self.build(key, root, build));
        self.env(key, &r.env);
        self.secrets(key, &r.secrets, &r.env);
        if let Some(command) = &r.command {
            if command.is_empty() {
                self.problem(
                    format!("{key}.command"),
                    "an empty command would run nothing (remove it to run the image's own)",
                );
            }
            for word in command {
                self.no_nul(&format!("{key}.command"), "a word", word);
            }
        }
        let ports = self.ports(key, &r.ports);
        let ready = self.ready(key, r, &ports);
        let ready_timeout = self.duration(
            &format!("{key}.ready-timeout"),
            r.ready_timeout.as_deref(),
            DEFAULT_READY_TIMEOUT,
        );
        if let Some(url) = &r.url {
            self.url(key, url, &ports, r);
        }
        let mut runtimes = Vec::new();
        for runtime in &r.runtimes {
            if runtimes.contains(runtime) {
                self.problem(
                    format!("{key}.runtimes"),
                    format!("runtime `{}` is listed twice", shown(runtime)),
                );
            } else {
                runtimes.push(runtime.clone());
            }
        }
        runtimes.sort();
        Service {
            name: name.to_owned(),
            description: r.description.clone(),
            image,
            pull,
            build,
            env: r.env.clone(),
            secrets: r.secrets.clone(),
            command: r.command.clone(),
            ports,
            ready,
            ready_timeout,
            url: r.url.clone(),
            runtimes,
        }
    }

    /// The container ports at `key.ports`: at least one, each once, each a TCP port.
    fn ports(&mut self, key: &str, raw: &[i64]) -> Vec<u16> {
        let mut ports = Vec::new();
        for &port in raw {
            match u16::try_from(port) {
                Ok(port) if port > 0 && !ports.contains(&port) => ports.push(port),
                Ok(port) if port > 0 => self.problem(
                    format!("{key}.ports"),
                    format!("port {port} is listed twice"),
                ),
                _ => self.problem(
                    format!("{key}.ports"),
                    format!("{port} is not a port (use 1 to 65535)"),
                ),
            }
        }
        if raw.is_empty() {
            self.problem(
                format!("{key}.ports"),
                "a service needs the container ports it serves, e.g. `ports = [6379]`: trials \
                 connect to them",
            );
        }
        ports
    }

    /// The readiness check: `ready` with exactly one key, or the first port.
    fn ready(&mut self, key: &str, r: &RawService, ports: &[u16]) -> Readiness {
        let first = ports.first().copied().unwrap_or_default();
        let Some(ready) = &r.ready else {
            return Readiness::Port { port: first };
        };
        let given = [
            ready.port.is_some(),
            ready.log.is_some(),
            ready.command.is_some(),
        ];
        if given.iter().filter(|set| **set).count() != 1 {
            self.problem(
                format!("{key}.ready"),
                "give exactly one of `port`, `log` or `command`, e.g. `ready = { port = 6379 }`",
            );
        }
        if let Some(port) = ready.port {
            match u16::try_from(port) {
                Ok(port) if ports.contains(&port) => return Readiness::Port { port },
                _ => self.problem(
                    format!("{key}.ready.port"),
                    format!("port {port} is not one of the service's `ports` (add it there)"),
                ),
            }
            return Readiness::Port { port: first };
        }
        if let Some(text) = &ready.log {
            if text.trim().is_empty() {
                self.problem(format!("{key}.ready.log"), "an empty line matches any log");
            }
            self.no_nul(&format!("{key}.ready.log"), "the text", text);
            return Readiness::Log { text: text.clone() };
        }
        if let Some(run) = &ready.command {
            if run.trim().is_empty() {
                self.problem(
                    format!("{key}.ready.command"),
                    "an empty command proves nothing (e.g. \"redis-cli ping\")",
                );
            }
            self.no_nul(&format!("{key}.ready.command"), "the command", run);
            return Readiness::Command { run: run.clone() };
        }
        Readiness::Port { port: first }
    }

    /// The URL template: every `{...}` one trials can be given.
    fn url(&mut self, key: &str, url: &str, ports: &[u16], r: &RawService) {
        self.no_nul(&format!("{key}.url"), "the value", url);
        let mut rest = url;
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}') else {
                self.problem(format!("{key}.url"), "a `{` is never closed");
                return;
            };
            let field = &rest[open + 1..open + close];
            let known = match field.split_once(':') {
                None => matches!(field, "host" | "port"),
                Some(("port", port)) => port.parse::<u16>().is_ok_and(|p| ports.contains(&p)),
                Some(("env", name)) => {
                    r.env.contains_key(name) || r.secrets.iter().any(|secret| secret == name)
                }
                Some(_) => false,
            };
            if !known {
                self.problem(
                    format!("{key}.url"),
                    format!(
                        "`{{{}}}` is not known (use {{host}}, {{port}}, {{port:N}} for one of \
                         its ports, or {{env:NAME}} for one of its env or secrets)",
                        shown(field)
                    ),
                );
            }
            rest = &rest[open + close + 1..];
        }
    }
}
