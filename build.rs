//! Records the commit runtime-matrix is built from, for `runtime-matrix --version` and the
//! result reuse key: a bug report then says exactly which code ran. A packaged crate gives the
//! commit `cargo package` recorded; outside a git checkout it is `unknown`.

use std::process::Command;

fn main() {
    // A packaged crate (from crates.io, unpacked under CARGO_HOME, which may lie inside
    // another project's checkout) says its commit in .cargo_vcs_info.json; git would name the
    // surrounding project's, and each of its commits would change every result reuse key.
    if std::path::Path::new(".cargo_vcs_info.json").exists() {
        let commit = packaged_commit().unwrap_or_else(|| "unknown".to_owned());
        println!("cargo:rustc-env=RUNTIME_MATRIX_COMMIT={commit}");
        return;
    }
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=RUNTIME_MATRIX_COMMIT={commit}");
    // A new commit moves HEAD (detached) or the branch it names. git says where those files
    // are: in a worktree `.git` is a file, and HEAD lives apart from the shared refs.
    for name in ["HEAD", "refs/heads", "packed-refs"] {
        if let Some(path) = git(&["rev-parse", "--git-path", name])
            && std::path::Path::new(&path).exists()
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}

/// The commit `cargo package` recorded (`"sha1": "..."`), shortened as git would.
fn packaged_commit() -> Option<String> {
    let info = std::fs::read_to_string(".cargo_vcs_info.json").ok()?;
    let (_, rest) = info.split_once("\"sha1\"")?;
    let sha = rest.split('"').nth(1)?;
    (sha.len() >= 12 && sha.chars().all(|c| c.is_ascii_hexdigit())).then(|| sha[..12].to_owned())
}

/// What `git ARGS` prints, trimmed; `None` outside a git checkout or when it prints nothing.
fn git(args: &[&str]) -> Option<String> {
    Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .filter(|text| !text.is_empty())
}
