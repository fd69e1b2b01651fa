//! Remote engines, for real: a second Docker engine of the test's own on this machine, reached
//! over TCP with TLS (certificates made here with the openssl CLI), and the local engine reached
//! over ssh through an OpenSSH server of the test's own on a loopback port. One matrix whose
//! machines live on two engines runs in one process; wrong certificates and a refused ssh login
//! fail with messages that say what to check.
//!
//! The second engine and the ssh server start once per test process and are shared by its
//! tests; both are stopped, and their folders removed, when the process exits (pass or fail).
//! The user's own ~/.ssh is never read or written: the ssh client is pointed at the test's
//! config by an `ssh` wrapper first on PATH.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use support::{ensure_base_image, fixtures, harness, output, records, runtime_matrix};

const IMAGE: &str = "runtime-matrix/jupyter-base:bookworm";
/// A tag that only the second engine has: a trial that finds it ran there.
const FAR_ONLY: &str = "runtime-matrix/engines-test:far-only";

/// Processes and folders to remove when the test process exits.
static LEFT: Mutex<Vec<Leftover>> = Mutex::new(Vec::new());

enum Leftover {
    Process(Child),
    Folder(PathBuf),
    /// A network interface, by name.
    Link(String),
}

/// Stops what the tests started, whatever became of the tests: libtest ends the process with
/// `exit`, which runs this, and statics are never dropped.
extern "C" fn clean_up() {
    let Ok(mut left) = LEFT.lock() else { return };
    for leftover in left.drain(..).rev() {
        match leftover {
            Leftover::Process(mut child) => stop(&mut child),
            Leftover::Link(name) => {
                let _ = Command::new("ip").args(["link", "del", &name]).status();
            }
            Leftover::Folder(path) => {
                // What a stopped engine mounted under it is gone with it; anything else holds
                // the folder, and `rm` says so.
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    }
}

/// SIGTERM, up to 20 s for an engine to stop its containers and containerd, then SIGKILL.
fn stop(child: &mut Child) {
    // SAFETY: `kill` is called with the pid of a child of ours that has not been reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn remember(leftover: Leftover) {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        // SAFETY: registers a plain function with no arguments.
        unsafe { libc::atexit(clean_up) };
    });
    LEFT.lock().unwrap().push(leftover);
}

/// A folder of this test process under /tmp (short: the engine's exec-root holds sockets).
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(format!("/tmp/rm-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    remember(Leftover::Folder(dir.clone()));
    dir
}

fn run(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Installs a Debian package whose `binary` is missing, as images/jupyter-base/build.sh does.
fn ensure_package(binary: &str, package: &str) {
    if Path::new(binary).exists() {
        return;
    }
    run(Command::new("apt-get").args(["update", "-qq"]));
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends", package])
        .env("DEBIAN_FRONTEND", "noninteractive"));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A CA, and certificates it signs, made with the openssl CLI (already on any machine with
/// Docker and ssh; the `rcgen` crate would add a dev-dependency and its build for the same).
struct Ca {
    dir: PathBuf,
    name: String,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        run(Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .arg("-subj")
            .arg(format!("/CN={name}"))
            .arg("-keyout")
            .arg(dir.join(format!("{name}-key.pem")))
            .arg("-out")
            .arg(dir.join(format!("{name}.pem"))));
        Ca {
            dir: dir.to_owned(),
            name: name.to_owned(),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.join(format!("{}.pem", self.name))
    }

    /// `NAME-cert.pem` and `NAME-key.pem`, signed by this CA, with `extensions` (an
    /// `openssl x509 -extfile`).
    fn sign(&self, name: &str, extensions: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = (
            self.dir.join(format!("{name}-cert.pem")),
            self.dir.join(format!("{name}-key.pem")),
        );
        let (csr, ext) = (
            self.dir.join(format!("{name}.csr")),
            self.dir.join(format!("{name}.ext")),
        );
        std::fs::write(&ext, extensions).unwrap();
        run(Command::new("openssl")
            .args([
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-subj"])
            .arg(format!("/CN={name}"))
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr));
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-CAcreateserial", "-in"])
            .arg(&csr)
            .arg("-CA")
            .arg(self.path())
            .arg("-CAkey")
            .arg(self.dir.join(format!("{}-key.pem", self.name)))
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&cert));
        (cert, key)
    }
}

/// The second engine: `dockerd` with a config file of its own (its own data root, exec root,
/// pid file and bridge, no iptables rules), on a loopback TCP port with TLS
/// that verifies clients, with the base image loaded (and tagged [`FAR_ONLY`] there alone).
struct TlsEngine {
    endpoint: String,
    /// Where the client's files are: `ca.pem`, `cert.pem`, `key.pem` (the docker CLI's names),
    /// and the wrong ones: `other-ca.pem` and `rogue-cert.pem`/`rogue-key.pem`.
    certs: PathBuf,
}

impl TlsEngine {
    /// `docker` talking to this engine as its verified client.
    fn docker(&self) -> Command {
        let mut command = Command::new("docker");
        command
            .arg("-H")
            .arg(&self.endpoint)
            .arg("--tlsverify")
            .arg("--tlscacert")
            .arg(self.certs.join("ca.pem"))
            .arg("--tlscert")
            .arg(self.certs.join("cert.pem"))
            .arg("--tlskey")
            .arg(self.certs.join("key.pem"));
        command
    }
}

fn tls_engine() -> &'static TlsEngine {
    static ENGINE: OnceLock<TlsEngine> = OnceLock::new();
    ENGINE.get_or_init(start_tls_engine)
}

fn start_tls_engine() -> TlsEngine {
    ensure_base_image();
    ensure_package("/usr/bin/fuse-overlayfs", "fuse-overlayfs");
    let dir = scratch("engine");
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let ca = Ca::new(&certs, "ca");
    let (server_cert, server_key) = ca.sign(
        "server",
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    );
    let (cert, key) = ca.sign("client", "extendedKeyUsage=clientAuth\n");
    std::fs::rename(cert, certs.join("cert.pem")).unwrap();
    std::fs::rename(key, certs.join("key.pem")).unwrap();
    let other = Ca::new(&certs, "other-ca");
    other.sign("rogue", "extendedKeyUsage=clientAuth\n");

    let port = free_port();
    let endpoint = format!("tcp://127.0.0.1:{port}");
    // A bridge of its own: with `"bridge": "none"` dockerd deletes the host's `docker0` at
    // start (moby's removeDefaultBridgeInterface), which breaks the local engine's builds and
    // bridge containers. Addresses from the benchmarking range, 198.18.0.0/15, routed nowhere.
    let docker0 = Path::new("/sys/class/net/docker0");
    let had_docker0 = docker0.exists();
    let pid = std::process::id();
    let bridge = format!("rm-br-{}", pid % 1_000_000);
    let _ = Command::new("ip").args(["link", "del", &bridge]).status();
    run(Command::new("ip").args(["link", "add", &bridge, "type", "bridge"]));
    remember(Leftover::Link(bridge.clone()));
    let address = format!("198.18.{}.1/24", pid % 250 + 1);
    run(Command::new("ip").args(["addr", "add", &address, "dev", &bridge]));
    run(Command::new("ip").args(["link", "set", &bridge, "up"]));
    // Flags alone conflict with the host's /etc/docker/daemon.json: everything in a file.
    let config = serde_json::json!({
        "data-root": dir.join("data"),
        "exec-root": dir.join("x"),
        "pidfile": dir.join("docker.pid"),
        "storage-driver": "fuse-overlayfs",
        "bridge": bridge,
        "iptables": false,
        "ip-masq": false,
        "hosts": [endpoint],
        "tls": true,
        "tlsverify": true,
        "tlscacert": ca.path(),
        "tlscert": server_cert,
        "tlskey": server_key,
    });
    let config_file = dir.join("daemon.json");
    std::fs::write(&config_file, config.to_string()).unwrap();
    let log = dir.join("dockerd.log");
    let child = Command::new("dockerd")
        .arg("--config-file")
        .arg(&config_file)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("dockerd starts");
    remember(Leftover::Process(child));
    let engine = TlsEngine { endpoint, certs };
    let started = Instant::now();
    while !engine
        .docker()
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the second engine did not start:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        docker0.exists() || !had_docker0,
        "the second engine removed the local engine's docker0"
    );
    // No registry: the image travels as a saved archive.
    let mut save = Command::new("docker")
        .args(["save", IMAGE])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let loaded = engine
        .docker()
        .arg("load")
        .stdin(save.stdout.take().unwrap())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(
        save.wait().unwrap().success() && loaded.success(),
        "docker save | docker load"
    );
    run(engine.docker().args(["tag", IMAGE, FAR_ONLY]));
    engine
}

/// A matrix beside its TLS files (copied in, to be named relative to it).
fn write_matrix(dir: &Path, machines: &str, runtimes: &str) -> PathBuf {
    let config = dir.join("matrix.toml");
    std::fs::write(
        &config,
        format!(
            "notebooks-dir = \"{}\"\n{machines}\n{runtimes}",
            fixtures().join("notebooks").display()
        ),
    )
    .unwrap();
    config
}

fn tls_machine(name: &str, engine: &TlsEngine, ca: &str, cert: &str, key: &str) -> String {
    format!(
        "[machines.{name}]\ngpus = 0\ndocker = \"{}\"\n\
         tls = {{ ca = \"{ca}\", cert = \"{cert}\", key = \"{key}\" }}\n",
        engine.endpoint
    )
}

fn copy_certs(engine: &TlsEngine, to: &Path) {
    for file in [
        "ca.pem",
        "cert.pem",
        "key.pem",
        "other-ca.pem",
        "rogue-cert.pem",
        "rogue-key.pem",
    ] {
        std::fs::copy(engine.certs.join(file), to.join(file)).unwrap();
    }
}

/// One run, machines on two engines: the local one and the TLS one. Each trial runs where its
/// machine says (a runtime whose image only the TLS engine has passes there), its record names
/// that engine, and the merged report shows both.
#[test]
fn one_matrix_runs_on_two_engines_and_the_report_names_both() {
    let engine = tls_engine();
    let dir = tempfile::tempdir().unwrap();
    copy_certs(engine, dir.path());
    // A build script reaches the machine's engine with the docker CLI, over TLS too.
    let scripted = format!(
        "runtime-matrix/engines-test:scripted-{}",
        std::process::id()
    );
    let script = dir.path().join("tag.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nset -e\ndocker tag {IMAGE} \"$RUNTIME_MATRIX_IMAGE\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = write_matrix(
        dir.path(),
        &format!(
            "[machines.near]\ngpus = 0\n{}",
            tls_machine("far", engine, "ca.pem", "cert.pem", "key.pem")
        ),
        &format!(
            "[runtimes.base]\nimage = \"{IMAGE}\"\npull = \"never\"\nnotebooks = [\"passing.ipynb\"]\n\
             machines = [\"near\", \"far\"]\n\
             [runtimes.far-only]\nimage = \"{FAR_ONLY}\"\npull = \"never\"\nmachines = [\"far\"]\n\
             commands.ok = \"true\"\n\
             [runtimes.scripted]\nimage = \"{scripted}\"\nbuild = {{ script = \"tag.sh\" }}\n\
             machines = [\"far\"]\ncommands.ok = \"true\"\n"
        ),
    );
    let out = tempfile::tempdir().unwrap();
    let run_id = format!("engines-two-{}", std::process::id());
    let (code, stdout, stderr) = output(&mut harness(
        &config,
        out.path(),
        &run_id,
        &["--include-ignored"],
    ));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let records = records(out.path(), &run_id);
    assert!(
        records.contains_key("far-only::far::cmd::ok"),
        "{records:?}"
    );
    for (name, record) in &records {
        assert_eq!(record["status"], "passed", "{name}: {record}");
        let endpoint = record["engine"]["endpoint"].as_str().unwrap_or_default();
        let expected = if name.contains("::far::") {
            engine.endpoint.as_str()
        } else {
            "unix:///var/run/docker.sock"
        };
        assert_eq!(endpoint, expected, "{name}: {record}");
        assert!(record["engine"]["name"].is_string(), "{name}: {record}");
    }
    let report = std::fs::read_to_string(out.path().join(&run_id).join("report.md")).unwrap();
    let engines = report
        .lines()
        .find(|line| line.contains("Engines: "))
        .unwrap_or_else(|| panic!("no engines in report.md:\n{report}"));
    assert!(
        engines.contains(&format!("({})`", engine.endpoint))
            && engines.contains("(unix:///var/run/docker.sock)`"),
        "{engines}"
    );
    let junit = std::fs::read_to_string(out.path().join(&run_id).join("junit.xml")).unwrap();
    let base_suite = junit
        .lines()
        .find(|line| line.contains("<testsuite name=\"base\""))
        .unwrap_or_else(|| panic!("no suite `base`:\n{junit}"));
    assert!(
        base_suite.contains(&engine.endpoint) && base_suite.contains("unix:///var/run/docker.sock"),
        "the suite's hostname names both engines: {base_suite}"
    );
    // Nothing of the run is left on either engine.
    let label = format!("label=runtime-matrix.run={run_id}");
    let left = run(engine.docker().args(["ps", "-aq", "--filter", &label]));
    assert_eq!(left.trim(), "", "containers left on the TLS engine");
}

/// The wrong CA, a client certificate the engine does not trust, and a key that is not the
/// certificate's each fail the engine's check in `doctor`, naming what to check; the docker
/// CLI's DOCKER_TLS_VERIFY and DOCKER_CERT_PATH reach the same engine without `tls`; a trial
/// on a machine with the wrong CA fails as infrastructure, saying why.
#[test]
fn wrong_certificates_fail_clearly_and_the_docker_cli_variables_work() {
    let engine = tls_engine();
    let dir = tempfile::tempdir().unwrap();
    copy_certs(engine, dir.path());
    let machines = [
        tls_machine("wrong-ca", engine, "other-ca.pem", "cert.pem", "key.pem"),
        tls_machine(
            "rogue-client",
            engine,
            "ca.pem",
            "rogue-cert.pem",
            "rogue-key.pem",
        ),
        tls_machine("wrong-key", engine, "ca.pem", "cert.pem", "rogue-key.pem"),
    ];
    for (machine, expected) in machines.iter().zip([
        format!(
            "failed: its certificate is not signed by the CA in {} (check machines.wrong-ca.tls)",
            dir.path().join("other-ca.pem").display()
        ),
        format!(
            "failed: it refused our certificate {} (is it signed by a CA the engine trusts, and \
             is the key its own?) (check machines.rogue-client.tls)",
            dir.path().join("rogue-cert.pem").display()
        ),
        format!(
            "failed: it refused our certificate {} (is it signed by a CA the engine trusts, and \
             is the key its own?) (check machines.wrong-key.tls)",
            dir.path().join("cert.pem").display()
        ),
    ]) {
        let config = write_matrix(
            dir.path(),
            machine,
            &format!(
                "[runtimes.base]\nimage = \"{IMAGE}\"\npull = \"never\"\ncommands.ok = \"true\"\n"
            ),
        );
        let (code, stdout, stderr) =
            output(runtime_matrix().arg("doctor").arg("--config").arg(&config));
        let said = format!("{stdout}{stderr}");
        assert_ne!(code, Some(0), "{said}");
        assert!(
            said.contains(&format!(
                "the TLS handshake with the Docker engine at {} {expected}",
                engine.endpoint
            )),
            "{said}"
        );
        assert!(
            said.contains("`ca` is the CA that signed"),
            "the fix line: {said}"
        );
    }

    // The docker CLI's variables, and no `tls`: the same engine, over TLS.
    let config = write_matrix(
        dir.path(),
        &format!(
            "[machines.far]\ngpus = 0\ndocker = \"{}\"\n",
            engine.endpoint
        ),
        &format!(
            "[runtimes.base]\nimage = \"{IMAGE}\"\npull = \"never\"\ncommands.ok = \"true\"\n"
        ),
    );
    let (code, stdout, stderr) = output(
        runtime_matrix()
            .arg("doctor")
            .arg("--config")
            .arg(&config)
            .env("DOCKER_TLS_VERIFY", "1")
            .env("DOCKER_CERT_PATH", &engine.certs),
    );
    let said = format!("{stdout}{stderr}");
    assert!(
        said.contains(&format!(
            "{} over TLS (DOCKER_TLS_VERIFY and DOCKER_CERT_PATH (ca.pem, cert.pem and key.pem in {}))",
            engine.endpoint,
            engine.certs.display()
        )),
        "{code:?}\n{said}"
    );
    assert!(
        said.contains("image base") && said.contains(IMAGE),
        "{said}"
    );

    // Without them, plain HTTP to a TLS port is told as such.
    let (_, stdout, stderr) = output(runtime_matrix().arg("doctor").arg("--config").arg(&config));
    let said = format!("{stdout}{stderr}");
    assert!(
        said.contains("it speaks TLS and we spoke plain HTTP"),
        "{said}"
    );

    // A trial on a machine with the wrong CA fails before any container, saying why.
    let config = write_matrix(
        dir.path(),
        &machines[0],
        &format!(
            "[runtimes.base]\nimage = \"{IMAGE}\"\npull = \"never\"\ncommands.ok = \"true\"\n"
        ),
    );
    let out = tempfile::tempdir().unwrap();
    let run_id = format!("engines-wrong-ca-{}", std::process::id());
    let (code, stdout, stderr) = output(&mut harness(
        &config,
        out.path(),
        &run_id,
        &[
            "--include-ignored",
            "--exact",
            "[docker] base::wrong-ca::cmd::ok",
        ],
    ));
    assert_eq!(code, Some(101), "{stdout}\n{stderr}");
    let record = &records(out.path(), &run_id)["base::wrong-ca::cmd::ok"];
    assert_eq!(record["failure"]["category"], "infrastructure", "{record}");
    assert!(
        record["failure"]["summary"]
            .as_str()
            .unwrap_or_default()
            .contains("its certificate is not signed by the CA in"),
        "{record}"
    );
}

/// A failed trial's container kept on the TLS engine: the line to enter it names the engine and
/// the machine's TLS files, and works; `clean` reaches the TLS engine and removes it.
#[test]
fn a_container_kept_on_the_tls_engine_can_be_entered_and_cleaned() {
    let engine = tls_engine();
    let dir = tempfile::tempdir().unwrap();
    copy_certs(engine, dir.path());
    let config = write_matrix(
        dir.path(),
        &tls_machine("far", engine, "ca.pem", "cert.pem", "key.pem"),
        &format!(
            "[runtimes.base]\nimage = \"{IMAGE}\"\npull = \"never\"\ncommands.fails = \"exit 3\"\n"
        ),
    );
    let out = tempfile::tempdir().unwrap();
    let run_id = format!("engines-keep-{}", std::process::id());
    let (code, stdout, stderr) = output(
        harness(
            &config,
            out.path(),
            &run_id,
            &[
                "--include-ignored",
                "--exact",
                "[docker] base::far::cmd::fails",
            ],
        )
        .env("RUNTIME_MATRIX_KEEP", "failed"),
    );
    assert_eq!(code, Some(101), "{stdout}\n{stderr}");
    let docker = format!(
        "docker -H {} --tlsverify --tlscacert {} --tlscert {} --tlskey {}",
        engine.endpoint,
        dir.path().join("ca.pem").display(),
        dir.path().join("cert.pem").display(),
        dir.path().join("key.pem").display()
    );
    let enter = stderr
        .lines()
        .find(|line| {
            line.trim_start()
                .starts_with(&format!("{docker} exec -it "))
        })
        .unwrap_or_else(|| panic!("no line to enter the container:\n{stderr}"));
    let short = enter.split_whitespace().rev().nth(1).unwrap();
    // The printed line works: the same command, with `true` instead of a shell.
    let entered = Command::new("sh")
        .arg("-c")
        .arg(format!("{docker} exec {short} true"))
        .status()
        .unwrap();
    assert!(entered.success(), "{enter}");

    let (code, stdout, stderr) = output(runtime_matrix().arg("clean").arg("--config").arg(&config));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("removed 1 container(s) from {}", engine.endpoint)),
        "{stdout}"
    );
    let label = format!("label=runtime-matrix.run={run_id}");
    let left = run(engine.docker().args(["ps", "-aq", "--filter", &label]));
    assert_eq!(
        left.trim(),
        "",
        "the kept container is still on the TLS engine"
    );
}

/// An OpenSSH server of the test's own on a loopback port: a host key and an authorized key
/// made here, and a client config (identity, known_hosts with the host key, the port) given to
/// the ssh client by a wrapper first on PATH.
struct SshServer {
    /// Holds the `ssh` wrapper.
    bin: PathBuf,
    /// Where bollard's ssh client keeps its control sockets (`XDG_STATE_HOME`).
    state: PathBuf,
}

/// The ssh config's name for the server: the port goes in the config, as it must (see
/// `invalid/engine_tls_and_ssh.toml`).
const SSH_HOST: &str = "rm-engines-test";

fn ssh_server() -> &'static SshServer {
    static SERVER: OnceLock<SshServer> = OnceLock::new();
    SERVER.get_or_init(start_ssh_server)
}

fn start_ssh_server() -> SshServer {
    ensure_package("/usr/sbin/sshd", "openssh-server");
    let dir = scratch("sshd");
    let keygen = |name: &str| {
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(dir.join(name)));
        std::fs::read_to_string(dir.join(format!("{name}.pub"))).unwrap()
    };
    let host_key = keygen("host_key");
    let client_key = keygen("id");
    std::fs::write(dir.join("authorized_keys"), client_key).unwrap();
    let port = free_port();
    let host_key: Vec<&str> = host_key.split_whitespace().take(2).collect();
    std::fs::write(
        dir.join("known_hosts"),
        format!("[127.0.0.1]:{port} {}\n", host_key.join(" ")),
    )
    .unwrap();
    let d = dir.display();
    std::fs::write(
        dir.join("sshd_config"),
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\n\
             AuthorizedKeysFile {d}/authorized_keys\nPidFile {d}/sshd.pid\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("ssh_config"),
        format!(
            "Host {SSH_HOST}\n  HostName 127.0.0.1\n  Port {port}\n  IdentityFile {d}/id\n\
             \x20 IdentitiesOnly yes\n  UserKnownHostsFile {d}/known_hosts\n\
             \x20 GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n"
        ),
    )
    .unwrap();
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let ssh = bin.join("ssh");
    std::fs::write(
        &ssh,
        format!("#!/bin/sh\nexec /usr/bin/ssh -F {d}/ssh_config \"$@\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&ssh, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // sshd refuses to start without its privilege separation folder.
    std::fs::create_dir_all("/run/sshd").unwrap();
    let child = Command::new("/usr/sbin/sshd")
        .arg("-D")
        .arg("-f")
        .arg(dir.join("sshd_config"))
        .arg("-E")
        .arg(dir.join("sshd.log"))
        .stdin(Stdio::null())
        .spawn()
        .expect("sshd starts");
    remember(Leftover::Process(child));
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "sshd did not start:\n{}",
            std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    SshServer { bin, state }
}

impl SshServer {
    /// `command` with the test's ssh client first on PATH and its control sockets here.
    fn client<'a>(&self, command: &'a mut Command) -> &'a mut Command {
        let path = std::env::var("PATH").unwrap_or_default();
        command
            .env("PATH", format!("{}:{path}", self.bin.display()))
            .env("XDG_STATE_HOME", &self.state)
    }

    /// The ssh processes the client left running (its control masters).
    fn leftover_clients(&self) -> Vec<String> {
        let needle = self.state.display().to_string();
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
            .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
            .filter(|cmdline| cmdline.starts_with("/usr/bin/ssh ") && cmdline.contains(&needle))
            .collect()
    }
}

/// Trials run on an engine reached over ssh (the local engine, through the test's sshd: the
/// remote side is `docker system dial-stdio`, as for the docker CLI), the record names it, no
/// ssh client is left running, and the user's ~/.ssh is not touched. A refused login fails
/// `doctor` with the ssh client's own words and what to check.
#[test]
fn an_engine_over_ssh_runs_trials_and_a_refused_login_is_clear() {
    ensure_base_image();
    let server = ssh_server();
    let known_hosts = std::env::home_dir().map(|home| home.join(".ssh/known_hosts"));
    let before = known_hosts.as_ref().and_then(|f| std::fs::read(f).ok());
    let dir = tempfile::tempdir().unwrap();
    let config = write_matrix(
        dir.path(),
        &format!("[machines.viassh]\ngpus = 0\ndocker = \"ssh://root@{SSH_HOST}\"\n"),
        &format!(
            "[runtimes.base]\nimage = \"{IMAGE}\"\npull = \"never\"\nnotebooks = [\"passing.ipynb\"]\n\
             commands.ok = \"true\"\n"
        ),
    );
    let out = tempfile::tempdir().unwrap();
    let run_id = format!("engines-ssh-{}", std::process::id());
    let (code, stdout, stderr) = output(server.client(&mut harness(
        &config,
        out.path(),
        &run_id,
        &["--include-ignored"],
    )));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let records = records(out.path(), &run_id);
    assert!(
        records.contains_key("base::viassh::nb::passing"),
        "{records:?}"
    );
    for (name, record) in &records {
        assert_eq!(record["status"], "passed", "{name}: {record}");
        assert_eq!(
            record["engine"]["endpoint"],
            format!("ssh://root@{SSH_HOST}"),
            "{name}: {record}"
        );
    }
    assert_eq!(
        server.leftover_clients(),
        Vec::<String>::new(),
        "ssh clients left running"
    );
    assert_eq!(
        known_hosts.as_ref().and_then(|f| std::fs::read(f).ok()),
        before,
        "~/.ssh/known_hosts changed"
    );

    // A user the server does not know: refused, in ssh's words.
    let config = write_matrix(
        dir.path(),
        &format!("[machines.refused]\ngpus = 0\ndocker = \"ssh://nobody-here@{SSH_HOST}\"\n"),
        &format!(
            "[runtimes.base]\nimage = \"{IMAGE}\"\npull = \"never\"\ncommands.ok = \"true\"\n"
        ),
    );
    let (code, stdout, stderr) =
        output(server.client(runtime_matrix().arg("doctor").arg("--config").arg(&config)));
    let said = format!("{stdout}{stderr}");
    assert_ne!(code, Some(0), "{said}");
    assert!(
        said.contains(&format!(
            "cannot reach the Docker engine at ssh://nobody-here@{SSH_HOST} over ssh"
        )) && said.contains("Permission denied"),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "make `ssh nobody-here@{SSH_HOST} docker version` work"
        )),
        "the fix line: {said}"
    );
}
