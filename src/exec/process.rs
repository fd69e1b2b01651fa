//! Running a child process tree under a deadline, and making sure none of it outlives the
//! trial.
//!
//! Jupyter starts each kernel in a new session, so killing nbconvert's process group does not
//! reach the kernel. Every process a trial starts therefore inherits a per-trial token in its
//! environment, and clean-up kills the process group and then every process carrying the
//! token, wherever it was reparented.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The environment variable that marks every process of one trial.
pub const TOKEN_VAR: &str = "RUNTIME_MATRIX_TRIAL_TOKEN";
/// The environment variable that names the harness process (`pid:start`) a process belongs
/// to, so that a later run can reap what a killed harness left.
pub const OWNER_VAR: &str = "RUNTIME_MATRIX_OWNER";
/// How much of a process's output is kept: the tail, since that is where errors are.
const OUTPUT_LIMIT: usize = 256 * 1024;

/// How a process tree ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// It exited by itself with this code (128 + signal when killed by a signal).
    Exited(i32),
    /// The harness killed it at the deadline.
    Deadline,
}

/// A finished process tree.
#[derive(Debug, Clone)]
pub struct Finished {
    /// How it ended.
    pub ended: Ended,
    /// Its stdout and stderr, interleaved, at most the last 256 KiB.
    pub output: String,
}

/// Runs `command` with stdin closed and stdout and stderr captured together, kills its whole
/// tree when `deadline` passes, and always leaves no process carrying `token` behind.
pub fn run(mut command: Command, deadline: Duration, token: &str) -> std::io::Result<Finished> {
    let (reader, writer) = std::io::pipe()?;
    let owner = super::live::Owner::me();
    command
        .env(TOKEN_VAR, token)
        .env(OWNER_VAR, format!("{}:{}", owner.pid, owner.start))
        .stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer)
        .process_group(0);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent. It makes the
    // child die with the thread that started it, should the harness die first.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let start = Instant::now();
    if let Some(signal) = super::live::interrupted() {
        return Err(std::io::Error::other(format!(
            "interrupted by signal {signal}"
        )));
    }
    super::live::track_token(token);
    let mut child = command.spawn()?;
    // The command holds the pipe's write end; drop it so that the reader sees the end.
    drop(command);
    let (sender, output) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(read_tail(reader));
    });

    let ended = wait(&mut child, start + deadline, token);
    sweep(token);
    super::live::forget_token(token);
    // A process that escaped the token (it cleared its environment) may still hold the pipe:
    // give up on the output after a moment rather than hang.
    let output = output
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_default();
    Ok(Finished {
        ended,
        output: String::from_utf8_lossy(&output).into_owned(),
    })
}

fn wait(child: &mut Child, deadline: Instant, token: &str) -> Ended {
    let mut pause = Duration::from_millis(5);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ended::Exited(exit_code(status)),
            Ok(None) => {}
            Err(_) => return Ended::Exited(-1),
        }
        if Instant::now() >= deadline {
            kill_tree(child.id(), token);
            let _ = child.wait();
            return Ended::Deadline;
        }
        std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

fn read_tail(mut reader: std::io::PipeReader) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    while let Ok(n) = reader.read(&mut buffer) {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buffer[..n]);
        if kept.len() > 2 * OUTPUT_LIMIT {
            kept.drain(..kept.len() - OUTPUT_LIMIT);
        }
    }
    if kept.len() > OUTPUT_LIMIT {
        kept.drain(..kept.len() - OUTPUT_LIMIT);
    }
    kept
}

/// Kills the process group led by `pid`, then every process carrying `token`.
pub fn kill_tree(pid: u32, token: &str) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: plain syscall; a stale group id fails with ESRCH.
        unsafe {
            libc::killpg(pid, libc::SIGKILL);
        }
    }
    sweep(token);
}

/// Kills every process whose environment carries `token`, until none is left (a process may
/// fork while it is being killed). Returns how many were killed.
pub fn sweep(token: &str) -> usize {
    let mut killed = 0;
    for _ in 0..10 {
        let found = processes_with_env(TOKEN_VAR, token);
        if found.is_empty() {
            break;
        }
        for pid in found {
            // SAFETY: plain syscall on a pid read from /proc.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            killed += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    killed
}

/// Kills the processes that trials of harness runs now gone left behind (the harness was
/// killed with SIGKILL, so it could not). Returns how many.
pub fn reap_orphans() -> usize {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let prefix = format!("{OWNER_VAR}=");
    let mut killed = 0;
    for pid in entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
    {
        if pid == me {
            continue;
        }
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let owner = environ
            .split(|b| *b == 0)
            .find_map(|entry| entry.strip_prefix(prefix.as_bytes()))
            .and_then(|value| std::str::from_utf8(value).ok())
            .and_then(|value| value.split_once(':'))
            .and_then(|(pid, start)| Some((pid.parse::<u32>().ok()?, start.to_owned())));
        if let Some((owner, start)) = owner
            && !super::live::is_alive(owner, &start)
        {
            // SAFETY: plain syscall on a pid read from /proc.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            killed += 1;
        }
    }
    killed
}

/// Live processes (zombies excluded) whose environment has `key=value`.
pub fn processes_with_env(key: &str, value: &str) -> Vec<i32> {
    let needle = format!("{key}={value}");
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
                return false;
            };
            environ
                .split(|b| *b == 0)
                .any(|entry| entry == needle.as_bytes())
                && !is_zombie(*pid)
        })
        .collect()
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(name: &str) -> String {
        format!("test-{name}-{}", std::process::id())
    }

    #[test]
    fn captures_output_and_exit_code() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo out; echo err >&2; exit 3"]);
        let finished = run(command, Duration::from_secs(10), &token("exit")).unwrap();
        assert_eq!(finished.ended, Ended::Exited(3));
        assert!(finished.output.contains("out\n") && finished.output.contains("err\n"));
    }

    #[test]
    fn deadline_kills_the_tree_including_escaped_sessions() {
        let token = token("deadline");
        let mut command = Command::new("sh");
        // A grandchild in its own session, as Jupyter starts kernels.
        command.args(["-c", "setsid sleep 300 & sleep 300"]);
        let start = std::time::Instant::now();
        let finished = run(command, Duration::from_millis(300), &token).unwrap();
        assert_eq!(finished.ended, Ended::Deadline);
        assert!(start.elapsed() < Duration::from_secs(10));
        assert_eq!(processes_with_env(TOKEN_VAR, &token), Vec::<i32>::new());
    }

    #[test]
    fn leftovers_of_a_finished_command_are_swept() {
        let token = token("leftover");
        let mut command = Command::new("sh");
        command.args(["-c", "setsid sleep 300 > /dev/null 2>&1 & exit 0"]);
        let finished = run(command, Duration::from_secs(10), &token).unwrap();
        assert_eq!(finished.ended, Ended::Exited(0));
        assert_eq!(processes_with_env(TOKEN_VAR, &token), Vec::<i32>::new());
    }
}
