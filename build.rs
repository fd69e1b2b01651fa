//! Records the commit runtime-matrix is built from, for `runtime-matrix --version`: a bug
//! report then says exactly which code ran. Outside a git checkout (a packaged crate) it is
//! `unknown`.

use std::process::Command;

fn main() {
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
