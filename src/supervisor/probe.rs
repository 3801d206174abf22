//! Carries out one check of a health probe (`liveness_probe`, `readiness_probe`): an HTTP GET
//! or a TCP connect on 127.0.0.1, or a command in the app's cwd with its env. Bounded by the
//! probe's timeout; what the result means is the instance machine's business.

use std::os::unix::process::CommandExt;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{App, ProbeCheck};
use crate::process::{Exit, Reaper, unix};

/// One check: `Ok` when it passed, else why not (never the app's env values). `conn`: a
/// connection already made to the one process being judged (a cluster worker's own, past the
/// dispatcher), used instead of connecting to the port.
pub async fn check(app: &App, check: &ProbeCheck, timeout: Duration, reaper: &Reaper, conn: Option<TcpStream>) -> Result<(), String> {
    match check {
        ProbeCheck::Exec { command } => exec(app, command, timeout, reaper).await,
        net => match tokio::time::timeout(timeout, network(net, conn)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
        },
    }
}

async fn network(check: &ProbeCheck, conn: Option<TcpStream>) -> Result<(), String> {
    let port = match check {
        ProbeCheck::Http { port, .. } | ProbeCheck::Tcp { port } => *port,
        ProbeCheck::Exec { .. } => return Ok(()),
    };
    let mut conn = match conn {
        Some(c) => c,
        None => TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| format!("connect to 127.0.0.1:{port}: {e}"))?,
    };
    let ProbeCheck::Http { path, status, .. } = check else { return Ok(()) };
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: pm-runtime-probe\r\nConnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
    // The status line is all we need.
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 1024 {
        match conn.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let code: Option<u16> = line.split_whitespace().nth(1).and_then(|c| c.parse().ok());
    match (code, status) {
        (Some(c), Some(want)) if c == *want => Ok(()),
        (Some(c), None) if (200..400).contains(&c) => Ok(()),
        (Some(c), Some(want)) => Err(format!("GET {path} answered {c}, expected {want}")),
        (Some(c), None) => Err(format!("GET {path} answered {c}")),
        (None, _) => Err(format!("GET {path}: no HTTP status line in the answer")),
    }
}

/// `sh -c command` in its own process group, in the app's cwd with its env, as the app's
/// user and group (`uid`/`gid`, as the app runs); killed (the whole group) past the timeout.
/// Its output is discarded.
async fn exec(app: &App, command: &str, timeout: Duration, reaper: &Reaper) -> Result<(), String> {
    let (uid, gid) = super::instance::resolve_ids(app).map_err(|e| format!("cannot run the command: {e}"))?;
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
    let spawned = reaper.spawn(&mut cmd).map_err(|e| format!("cannot run the command: {e}"))?;
    let pid = spawned.pid;
    drop(spawned.child);
    match tokio::time::timeout(timeout, spawned.exit).await {
        Ok(Ok(Exit::Code(0))) => Ok(()),
        Ok(Ok(exit)) => Err(format!("the command exited with code {}", exit.as_code())),
        Ok(Err(_)) => Err("the command's exit status was lost".into()),
        Err(_) => {
            unix::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
            Err(format!("the command did not finish within {} ms", timeout.as_millis()))
        }
    }
}
