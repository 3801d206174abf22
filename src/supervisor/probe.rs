//! Carries out one check of a health probe (`liveness_probe`, `readiness_probe`): an HTTP GET
//! or a TCP connect on 127.0.0.1, or a command in the app's cwd with its env. Bounded by the
//! probe's timeout; what the result means is the instance machine's business.

use std::os::unix::process::CommandExt;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{App, ProbeCheck};
use crate::process::{Exit, Reaper, unix};

/// Why a check failed (never the app's env values). Cheap to clone: it travels in the
/// machine's `Input::Probe`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProbeFailure {
    #[error("no answer within {} ms", .0.as_millis())]
    NoAnswer(Duration),
    #[error("connect to 127.0.0.1:{port}: {source}")]
    Connect { port: u16, source: Arc<std::io::Error> },
    #[error("send: {0}")]
    Send(Arc<std::io::Error>),
    #[error("read: {0}")]
    Read(Arc<std::io::Error>),
    /// A cluster worker's own connection could not be had.
    #[error("connect to the worker: {0}")]
    Worker(Arc<std::io::Error>),
    #[error("the worker does not listen on port {0} (yet)")]
    WorkerNotListening(u16),
    #[error("the worker's IPC channel is closed")]
    WorkerGone,
    /// The answer's status was not the one expected (`want`, else any 2xx/3xx).
    #[error("GET {path} answered {got}{}", .want.map(|w| format!(", expected {w}")).unwrap_or_default())]
    Status { path: String, got: u16, want: Option<u16> },
    #[error("GET {path}: no HTTP status line in the answer")]
    NoStatusLine { path: String },
    /// The app's `uid`/`gid` names nobody here.
    #[error("cannot run the command: {0}")]
    Principal(Arc<super::principal::UnknownId>),
    #[error("cannot run the command: {0}")]
    Spawn(Arc<std::io::Error>),
    #[error("the command exited with code {0}")]
    Exited(i32),
    #[error("the command's exit status was lost")]
    Lost,
    #[error("the command did not finish within {} ms", .0.as_millis())]
    TimedOut(Duration),
}

/// One check: `Ok` when it passed, else why not. `conn`: a connection already made to the one
/// process being judged (a cluster worker's own, past the dispatcher), used instead of
/// connecting to the port.
pub async fn check(app: &App, check: &ProbeCheck, timeout: Duration, reaper: &Reaper, conn: Option<TcpStream>) -> Result<(), ProbeFailure> {
    match check {
        ProbeCheck::Exec { command } => exec(app, command, timeout, reaper).await,
        net => match tokio::time::timeout(timeout, network(net, conn)).await {
            Ok(r) => r,
            Err(_) => Err(ProbeFailure::NoAnswer(timeout)),
        },
    }
}

async fn network(check: &ProbeCheck, conn: Option<TcpStream>) -> Result<(), ProbeFailure> {
    let port = match check {
        ProbeCheck::Http { port, .. } | ProbeCheck::Tcp { port } => *port,
        ProbeCheck::Exec { .. } => return Ok(()),
    };
    let mut conn = match conn {
        Some(c) => c,
        None => TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| ProbeFailure::Connect { port, source: Arc::new(e) })?,
    };
    let ProbeCheck::Http { path, status, .. } = check else { return Ok(()) };
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: pm-runtime-probe\r\nConnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.map_err(|e| ProbeFailure::Send(Arc::new(e)))?;
    // The status line is all we need.
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 1024 {
        match conn.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) => return Err(ProbeFailure::Read(Arc::new(e))),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let code: Option<u16> = line.split_whitespace().nth(1).and_then(|c| c.parse().ok());
    match (code, *status) {
        (Some(c), Some(want)) if c == want => Ok(()),
        (Some(c), None) if (200..400).contains(&c) => Ok(()),
        (Some(got), want) => Err(ProbeFailure::Status { path: path.clone(), got, want }),
        (None, _) => Err(ProbeFailure::NoStatusLine { path: path.clone() }),
    }
}

/// `sh -c command` in its own process group, in the app's cwd with its env, as the app's
/// user and group (`uid`/`gid`, as the app runs); killed (the whole group) past the timeout.
/// Its output is discarded.
async fn exec(app: &App, command: &str, timeout: Duration, reaper: &Reaper) -> Result<(), ProbeFailure> {
    let (uid, gid) = super::principal::resolve_ids(app).map_err(|e| ProbeFailure::Principal(Arc::new(e)))?;
    let mut cmd = std::process::Command::new("sh");
    if let Some(gid) = gid {
        cmd.gid(gid);
    }
    if let Some(uid) = uid {
        // std drops the runtime's supplementary groups too, as for the app.
        cmd.uid(uid);
        if let Some(home) = nix::unistd::User::from_uid(uid.into()).ok().flatten() {
            cmd.env("HOME", home.dir);
        }
    }
    cmd.arg("-c")
        .arg(command)
        .current_dir(&app.cwd)
        .envs(&app.env)
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let spawned = reaper.spawn(&mut cmd).map_err(|e| ProbeFailure::Spawn(Arc::new(e)))?;
    let pid = spawned.pid;
    drop(spawned.child);
    match tokio::time::timeout(timeout, spawned.exit).await {
        Ok(Ok(Exit::Code(0))) => Ok(()),
        Ok(Ok(exit)) => Err(ProbeFailure::Exited(exit.as_code())),
        Ok(Err(_)) => Err(ProbeFailure::Lost),
        Err(_) => {
            unix::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
            Err(ProbeFailure::TimedOut(timeout))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The words a user reads in the restart and not-ready lines.
    #[test]
    fn failures_read_as_before() {
        let refused = Arc::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let table: &[(ProbeFailure, &str)] = &[
            (ProbeFailure::NoAnswer(Duration::from_millis(1500)), "no answer within 1500 ms"),
            (ProbeFailure::Connect { port: 8080, source: refused }, "connect to 127.0.0.1:8080: connection refused"),
            (ProbeFailure::Status { path: "/h".into(), got: 503, want: None }, "GET /h answered 503"),
            (ProbeFailure::Status { path: "/h".into(), got: 200, want: Some(204) }, "GET /h answered 200, expected 204"),
            (ProbeFailure::NoStatusLine { path: "/h".into() }, "GET /h: no HTTP status line in the answer"),
            (ProbeFailure::Exited(3), "the command exited with code 3"),
            (ProbeFailure::TimedOut(Duration::from_secs(2)), "the command did not finish within 2000 ms"),
        ];
        for (failure, words) in table {
            assert_eq!(failure.to_string(), *words);
        }
    }
}
