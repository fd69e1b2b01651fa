//! The pull path against a real registry: Debian's `docker-registry` started on loopback (the
//! test installs it when missing), an image pushed to it, then pulled by a trial with progress;
//! a missing tag and refused credentials each give a message that says what to do.

mod support;

use bollard::query_parameters::{
    CreateImageOptionsBuilder, PushImageOptionsBuilder, RemoveImageOptionsBuilder,
};
use futures_util::StreamExt;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::{harness, output, records, wait_for};

/// A registry process on 127.0.0.1, stopped when dropped.
struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Installs Debian's registry, htpasswd and a static busybox once, under a lock shared by
/// parallel tests.
fn install_registry() {
    let lock =
        std::fs::File::create(std::env::temp_dir().join("runtime-matrix-registry-install.lock"))
            .unwrap();
    lock.lock().unwrap();
    let needed = [
        "/usr/bin/docker-registry",
        "/usr/bin/htpasswd",
        "/bin/busybox",
    ];
    if needed.iter().all(|path| Path::new(path).exists()) {
        return;
    }
    let install = "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-registry apache2-utils busybox-static";
    let status = Command::new("sh")
        .args(["-c", install])
        .status()
        .expect("sh runs");
    assert!(
        status.success(),
        "could not install Debian's docker-registry, apache2-utils and busybox-static (the tests need root and Debian's packages)"
    );
}

fn start_registry(auth: bool) -> Registry {
    install_registry();
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = format!(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
        dir.path().join("storage").display()
    );
    if auth {
        let htpasswd = Command::new("htpasswd")
            .args(["-Bbn", "tester", "correct-password"])
            .output()
            .unwrap();
        std::fs::write(dir.path().join("htpasswd"), htpasswd.stdout).unwrap();
        config += &format!(
            "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
            dir.path().join("htpasswd").display()
        );
    }
    std::fs::write(dir.path().join("config.yml"), config).unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(dir.path().join("config.yml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker-registry starts");
    assert!(
        wait_for(Duration::from_secs(30), || std::net::TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "the registry never listened"
    );
    Registry {
        child,
        port,
        _dir: dir,
    }
}

/// Pushes a small image of unique content to `registry` as `runtime-matrix/pushed:1`, then
/// removes it from the engine entirely, so that only a pull, layer by layer, can bring it back.
/// Its root filesystem is a static busybox: enough for a shell, `timeout` and `sleep`.
fn push_unique_image(
    registry: &Registry,
    credentials: Option<bollard::auth::DockerCredentials>,
) -> String {
    let mut rootfs = tar::Builder::new(Vec::new());
    let busybox = std::fs::read("/bin/busybox").unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_size(busybox.len() as u64);
    header.set_mode(0o755);
    header.set_cksum();
    rootfs
        .append_data(&mut header, "bin/busybox", busybox.as_slice())
        .unwrap();
    for tool in ["sh", "timeout", "sleep", "echo", "true", "cat"] {
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        link.set_mode(0o777);
        rootfs
            .append_link(&mut link, format!("bin/{tool}"), "busybox")
            .unwrap();
    }
    let unique = format!("{:?}", std::time::SystemTime::now());
    let mut header = tar::Header::new_gnu();
    header.set_size(unique.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    rootfs
        .append_data(&mut header, "etc/unique", unique.as_bytes())
        .unwrap();
    let rootfs = rootfs.into_inner().unwrap();

    let repository = format!("127.0.0.1:{}/runtime-matrix/pushed", registry.port);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let docker = bollard::Docker::connect_with_defaults().unwrap();
        let import = CreateImageOptionsBuilder::new()
            .from_src("-")
            .repo(&repository)
            .tag("1")
            .build();
        let mut stream =
            docker.create_image(Some(import), Some(bollard::body_full(rootfs.into())), None);
        while let Some(item) = stream.next().await {
            item.expect("the import succeeds");
        }
        let push = PushImageOptionsBuilder::new().tag("1").build();
        let mut stream = docker.push_image(&repository, Some(push), credentials);
        while let Some(item) = stream.next().await {
            item.expect("the push succeeds");
        }
        let remove = RemoveImageOptionsBuilder::new().force(true).build();
        docker
            .remove_image(&format!("{repository}:1"), Some(remove), None)
            .await
            .unwrap();
    });
    repository
}

fn matrix_for(dir: &Path, images: &[(&str, &str)]) -> std::path::PathBuf {
    let mut toml = String::from("[machines.cpu]\ngpus = 0\n");
    for (name, image) in images {
        toml += &format!(
            "[runtimes.{name}]\nimage = \"{image}\"\ncommands.ok = \"echo pulled\"\ngpu-checks = false\n"
        );
    }
    let path = dir.join("matrix.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

#[test]
fn pulls_from_a_registry_with_progress_and_explains_missing_tags() {
    let registry = start_registry(false);
    let repository = push_unique_image(&registry, None);
    let dir = tempfile::tempdir().unwrap();
    let image = format!("{repository}:1");
    let missing = format!("{repository}:no-such-tag");
    let config = matrix_for(dir.path(), &[("pulled", &image), ("missing-tag", &missing)]);
    let out = dir.path().join("out");
    let (code, stdout, stderr) = output(&mut harness(
        &config,
        &out,
        "pull",
        &["--include-ignored", "--test-threads", "1"],
    ));
    assert_eq!(code, Some(101), "{stdout}\n{stderr}");

    assert!(
        stderr.contains(&format!("runtime-matrix: pulling image {image}\n")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("runtime-matrix: pulled image {image}: 1 layers,")),
        "a summary, stderr being no terminal: {stderr}"
    );
    let records = records(&out, "pull");
    let pulled = &records["pulled::cpu::cmd::ok"];
    assert_eq!(pulled["status"], "passed", "{stdout}");
    assert!(
        pulled["image"]["digest"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{repository}@sha256:")),
        "{pulled}"
    );

    assert!(stdout.contains(&format!(
        "runtime `missing-tag` on machine `cpu`: command `ok` failed: could not be started\n  category: runtime\n  \
         failed to pull image `{missing}` (the registry has no such image or tag: check the name and tag in matrix.toml)"
    )), "{stdout}");
}

#[test]
fn pulls_with_saved_credentials_and_explains_refused_ones() {
    let registry = start_registry(true);
    let server = format!("127.0.0.1:{}", registry.port);
    let credentials = bollard::auth::DockerCredentials {
        username: Some("tester".into()),
        password: Some("correct-password".into()),
        serveraddress: Some(server.clone()),
        ..Default::default()
    };
    let repository = push_unique_image(&registry, Some(credentials));
    let image = format!("{repository}:1");
    let dir = tempfile::tempdir().unwrap();
    let config = matrix_for(dir.path(), &[("private", &image)]);

    // No saved credentials: refused, and the message says how to save them.
    let empty = dir.path().join("no-login");
    std::fs::create_dir(&empty).unwrap();
    let mut run = harness(
        &config,
        &dir.path().join("out"),
        "refused",
        &["--include-ignored"],
    );
    let (code, stdout, _) = output(run.env("DOCKER_CONFIG", &empty));
    assert_eq!(code, Some(101));
    assert!(stdout.contains(&format!(
        "failed to pull image `{image}` (the registry refused the credentials: run `docker login` for it on this host, \
         which saves them in ~/.docker/config.json or $DOCKER_CONFIG/config.json, where runtime-matrix reads them)"
    )), "{stdout}");

    // What `docker login` would have saved: the pull goes through.
    let login = dir.path().join("login");
    std::fs::create_dir(&login).unwrap();
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode("tester:correct-password");
    std::fs::write(
        login.join("config.json"),
        format!("{{\"auths\": {{\"{server}\": {{\"auth\": \"{auth}\"}}}}}}"),
    )
    .unwrap();
    let mut run = harness(
        &config,
        &dir.path().join("out"),
        "logged-in",
        &["--include-ignored"],
    );
    let (code, stdout, stderr) = output(run.env("DOCKER_CONFIG", &login));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!("runtime-matrix: pulled image {image}: 1 layers")),
        "{stderr}"
    );
}
