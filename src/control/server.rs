//! The runtime's side of the control socket: `$PM2_HOME/pm-runtime.sock`.
//!
//! `PM2_HOME` must belong to the runtime's uid ([`super::home`]); the directory is made 0700
//! (unless it is a symlink) and the socket 0600; a connecting process of another uid (root
//! excepted) is refused with a one-line JSON error. A socket left by a dead runtime is replaced; a live one means another
//! runtime uses this `PM2_HOME`, and this one refuses to start. Requests are handed to the
//! coordinator, which owns every answer; this module only frames lines and checks peers.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use super::protocol::{self, MAX_REQUEST, Request, SOCKET_NAME};

/// A request on its way to the coordinator, with where to send the reply.
pub struct ControlRequest {
    pub req: Request,
    pub reply: oneshot::Sender<protocol::Reply>,
}

pub fn socket_path(pm2_home: &Path) -> PathBuf {
    pm2_home.join(SOCKET_NAME)
}

/// The socket file this runtime created, and its `pm2.pid`, to be removed when it exits.
pub struct SocketFile {
    path: PathBuf,
    id: Option<(u64, u64)>,
    pid_file: Option<PathBuf>,
}

/// `$PM2_HOME/pm2.pid`: the runtime's own pid, where PM2 keeps its daemon's (init scripts and
/// tools read it). Written once this runtime owns the PM2_HOME (its socket is bound).
pub fn pid_file_path(pm2_home: &Path) -> PathBuf {
    pm2_home.join("pm2.pid")
}

fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

impl SocketFile {
    /// Removes the socket file only if it is still ours: a runtime that started after us on
    /// the same PM2_HOME (while we were shutting down) must keep its own.
    pub fn remove(self) {
        if self.id.is_some() && file_id(&self.path) == self.id {
            let _ = std::fs::remove_file(&self.path);
        }
        if let Some(p) = self.pid_file
            && std::fs::read_to_string(&p).is_ok_and(|s| s.trim() == std::process::id().to_string())
        {
            let _ = std::fs::remove_file(&p);
        }
    }
}

/// Why the control socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another runtime answers on this PM2_HOME: this one must not start.
    #[error("{0}")]
    AlreadyRunning(String),
    /// PM2_HOME belongs to another user: this one must not start (see [`super::home`]).
    #[error(transparent)]
    Unsafe(super::home::HomeError),
    /// Anything else: the runtime may run without the socket.
    #[error("{0}")]
    Other(String),
}

/// Binds the control socket. Must run inside the tokio runtime.
pub fn bind(pm2_home: &Path) -> Result<(UnixListener, SocketFile), BindError> {
    use BindError::Other;
    let path = socket_path(pm2_home);
    let me = nix::unistd::geteuid().as_raw();
    let kind = super::home::check(pm2_home, me).map_err(BindError::Unsafe)?;
    if kind == super::home::Home::Missing {
        std::fs::create_dir_all(pm2_home).map_err(|e| Other(format!("cannot create {}: {e}", pm2_home.display())))?;
    }
    // Never through a symlink: the mode of its target is not ours to change.
    if kind != super::home::Home::Link {
        let _ = std::fs::set_permissions(pm2_home, std::fs::Permissions::from_mode(0o700));
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(BindError::AlreadyRunning(format!(
                "another pm-runtime is already running with PM2_HOME={} (its socket {} answers); set a different PM2_HOME to run a second one",
                pm2_home.display(),
                path.display()
            )));
        }
        std::fs::remove_file(&path).map_err(|e| Other(format!("cannot remove stale socket {}: {e}", path.display())))?;
    }
    let listener = UnixListener::bind(&path).map_err(|e| Other(format!("cannot listen on {}: {e}", path.display())))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Other(format!("cannot restrict {}: {e}", path.display())))?;
    let id = file_id(&path);
    let pid_file = pid_file_path(pm2_home);
    let pid_file = match crate::logs::file::write_pid_file(&pid_file, std::process::id()) {
        Ok(()) => Some(pid_file),
        Err(e) => {
            tracing::warn!("cannot write {}: {e}", pid_file.display());
            None
        }
    };
    Ok((listener, SocketFile { path, id, pid_file }))
}

/// How long to wait after a failed accept: from 10 ms, doubling, at most 1 s.
pub fn accept_backoff(failures: u32) -> std::time::Duration {
    std::time::Duration::from_millis(10u64.saturating_mul(1 << failures.min(7)).min(1000))
}

/// Accepts connections forever.
///
/// An accept that fails (EMFILE/ENFILE when file descriptors run out, ENOMEM…) leaves the
/// connection queued and the socket readable: retrying at once would spin a core. It waits
/// instead ([`accept_backoff`]) and says so once per run of failures.
pub async fn serve(listener: UnixListener, to_coordinator: mpsc::Sender<ControlRequest>) {
    let me = nix::unistd::geteuid().as_raw();
    let mut failures = 0u32;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                failures = 0;
                stream
            }
            Err(e) => {
                if failures == 0 {
                    tracing::warn!("control socket: cannot accept a connection ({e}); retrying with a backoff");
                }
                tokio::time::sleep(accept_backoff(failures)).await;
                failures = failures.saturating_add(1);
                continue;
            }
        };
        let peer = stream.peer_cred().ok().map(|c| c.uid());
        if !peer.is_some_and(|uid| uid == me || uid == 0) {
            let who = peer.map_or("an unknown uid".to_string(), |uid| format!("uid {uid}"));
            tracing::warn!("control socket: refused a connection from {who}");
            // One line that says why, instead of a bare close ("Broken pipe" for the client).
            // Best effort and never blocking: a fresh socket's buffer has room for it.
            let msg = protocol::error(format!("refused: this runtime (uid {me}) accepts only its own user and root, not {who}"));
            let _ = stream.try_write(format!("{}\n", serde_json::to_string(&msg).unwrap_or_default()).as_bytes());
            continue;
        }
        tokio::spawn(connection(stream, to_coordinator.clone()));
    }
}

async fn connection(stream: UnixStream, to_coordinator: mpsc::Sender<ControlRequest>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        // Bounded read: an endless line cannot grow our memory.
        let n = match (&mut reader).take(MAX_REQUEST as u64 + 1).read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let reply = if n > MAX_REQUEST && !line.ends_with(b"\n") {
            let reply = protocol::error(format!("request longer than {MAX_REQUEST} bytes"));
            let _ = write.write_all(format!("{}\n", serde_json::to_string(&reply).unwrap_or_default()).as_bytes()).await;
            return;
        } else {
            match std::str::from_utf8(&line).map_err(|_| protocol::RequestError::NotUtf8).and_then(|l| protocol::parse(l.trim())) {
                Err(e) => protocol::error(e.to_string()),
                Ok(req) => {
                    let (tx, rx) = oneshot::channel();
                    if to_coordinator.send(ControlRequest { req, reply: tx }).await.is_err() {
                        protocol::error("the runtime is shutting down")
                    } else {
                        rx.await.unwrap_or_else(|_| protocol::error("the runtime is shutting down"))
                    }
                }
            }
        };
        let text = serde_json::to_string(&reply).unwrap_or_else(|_| r#"{"ok":false,"error":"cannot encode the reply"}"#.to_string());
        if write.write_all(format!("{text}\n").as_bytes()).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_grows_and_is_capped() {
        let ms: Vec<u128> = (0..10).map(|f| accept_backoff(f).as_millis()).collect();
        assert_eq!(ms, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        assert_eq!(accept_backoff(u32::MAX).as_millis(), 1000);
    }
}
