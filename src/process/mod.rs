//! Everything about one OS process: starting it, signalling it, reaping it, and the PID-1
//! duties of the runtime itself.
//!
//! Owns no app policy. The supervisor decides *what* to run and *when*; this module only knows
//! *how*: a process group per instance, stdout/stderr pipes, the Node IPC channel on fd 3, and
//! the single [`Reaper`] that owns every `wait`.

pub mod cgroup;
pub mod own;
pub mod reaper;
pub mod strays;
pub mod tree;
pub mod unix;

use std::ffi::OsString;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

pub use reaper::{Exit, Reaper};

/// What to start: fully resolved, no defaults left to apply.
#[derive(Debug)]
pub struct SpawnSpec {
    pub program: PathBuf,
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    /// The complete environment of the child (nothing else is inherited).
    pub env: Vec<(OsString, OsString)>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Give the child Node's IPC channel on fd 3.
    pub ipc: bool,
    /// Give the child this listening socket as fd 3 with `LISTEN_FDS=1` and `LISTEN_PID` set to
    /// its own pid (systemd's socket-passing convention). Not combined with `ipc`.
    pub listen_fd: Option<OwnedFd>,
}

/// A started instance: its pid (= its process group id), exit status, and our ends of its pipes.
pub struct Running {
    pub pid: u32,
    pub exit: oneshot::Receiver<Exit>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
    pub ipc: Option<tokio::net::UnixStream>,
}

/// Why an instance could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The system lacks a resource (EMFILE, ENFILE, ENOMEM, EAGAIN): not the app's fault, and
    /// likely to pass. Worth waiting for, never worth counting as a crash.
    #[error("{0} (the system is out of resources)")]
    Resources(io::Error),
    /// Anything else (missing program, permission, bad cwd…).
    #[error("{0}")]
    Other(io::Error),
}

impl SpawnError {
    pub fn classify(e: io::Error) -> SpawnError {
        match e.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EAGAIN) => SpawnError::Resources(e),
            _ => SpawnError::Other(e),
        }
    }
}

/// The wait before retry `attempt` (0-based) of a start that lacked resources: 100 ms,
/// doubling, at most 5 s.
pub fn resource_backoff(attempt: u32) -> std::time::Duration {
    std::time::Duration::from_millis(100u64.saturating_mul(1 << attempt.min(6)).min(5000))
}

/// Starts one instance through the reaper.
pub fn spawn(reaper: &Reaper, spec: &SpawnSpec) -> io::Result<Running> {
    let mut cmd = if spec.listen_fd.is_some() && !spec.ipc {
        // LISTEN_PID must be the app's own pid, known only in the child: a shell sets it and
        // execs the app, which keeps the pid.
        let mut c = Command::new("/bin/sh");
        c.arg("-c").arg("LISTEN_PID=$$; export LISTEN_PID; exec \"$0\" \"$@\"").arg(&spec.program);
        c
    } else {
        Command::new(&spec.program)
    };
    cmd.args(&spec.argv)
        .current_dir(&spec.cwd)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(gid) = spec.gid {
        cmd.gid(gid);
    }
    if let Some(uid) = spec.uid {
        cmd.uid(uid);
    }
    if spec.listen_fd.is_some() && !spec.ipc {
        cmd.env("LISTEN_FDS", "1");
    }
    if spec.ipc {
        // Node finds its IPC channel through these (what `child_process.fork` sets).
        cmd.env("NODE_CHANNEL_FD", unix::IPC_FD.to_string()).env("NODE_CHANNEL_SERIALIZATION_MODE", "json");
    }
    let (ipc_parent, ipc_child) = if spec.ipc {
        let (a, b) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC).map_err(io::Error::from)?;
        (Some(a), Some(b))
    } else {
        (None, None)
    };
    let fd3 = match (ipc_child, &spec.listen_fd) {
        (Some(ipc), _) => Some(ipc),
        (None, Some(listener)) => Some(listener.try_clone()?),
        (None, None) => None,
    };
    unix::prepare_child(&mut cmd, fd3);
    let mut spawned = reaper.spawn(&mut cmd)?;
    // Close our copy of the child's end of the IPC channel now, so EOF is seen when it exits.
    drop(cmd);
    // From here the process exists: a failure must not look like a start worth retrying.
    let pid = spawned.pid;
    let started = |e: io::Error| io::Error::other(format!("pid {pid} started but cannot be watched: {e}"));
    let stdout = spawned.child.stdout.take().map(|p| pipe::Receiver::from_owned_fd(OwnedFd::from(p))).transpose().map_err(started)?;
    let stderr = spawned.child.stderr.take().map(|p| pipe::Receiver::from_owned_fd(OwnedFd::from(p))).transpose().map_err(started)?;
    let ipc = ipc_parent
        .map(|fd| {
            let std = std::os::unix::net::UnixStream::from(fd);
            std.set_nonblocking(true)?;
            tokio::net::UnixStream::from_std(std)
        })
        .transpose()
        .map_err(started)?;
    Ok(Running { pid: spawned.pid, exit: spawned.exit, stdout, stderr, ipc })
}

#[cfg(test)]
mod spawn_error_tests {
    use super::*;

    #[test]
    fn resource_errors_are_told_apart() {
        for (errno, resources) in [
            (libc::EMFILE, true),
            (libc::ENFILE, true),
            (libc::ENOMEM, true),
            (libc::EAGAIN, true),
            (libc::ENOENT, false),
            (libc::EACCES, false),
        ] {
            let got = matches!(SpawnError::classify(io::Error::from_raw_os_error(errno)), SpawnError::Resources(_));
            assert_eq!(got, resources, "errno {errno}");
        }
        let ms: Vec<u128> = (0..9).map(|a| resource_backoff(a).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
    }
}
