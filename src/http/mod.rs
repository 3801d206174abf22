//! The optional HTTP server (`--web [port]`): PM2's `--web` JSON, a small REST API with
//! token-protected write actions, Prometheus `/metrics` (with prom-client cluster aggregation),
//! health probes, live logs over Server-Sent Events, and a self-contained dashboard.
//!
//! Off by default, and then nothing of it exists: no task, no socket, no token file. When on, it
//! is one accept task plus one task per connection on the runtime's single thread.
//!
//! Owns nothing of the runtime's state. It reads the status table through a [`StatusFeed`]
//! (holding it keeps the sampler sweeping once a second), the event bus and the log hub; every
//! write action becomes the same [`ControlRequest`] the control socket sends, so one path
//! executes them.
//!
//! Must never: block or slow supervision (each connection is its own task; a reply that needs the
//! coordinator waits at most [`CONTROL_TIMEOUT`]); serve env values, secrets or app output
//! without the token (rows come from `control::process_rows`, which carries no env; `/logs`
//! and the writes need the token); let idle or hostile clients exhaust file descriptors or
//! starve the probes ([`admission`]: per-peer and total caps, a reserve for the probes, write
//! deadlines; request headers within [`HEADER_TIMEOUT`], heads up to [`MAX_HEADERS`], bodies up
//! to [`MAX_BODY`] within [`BODY_TIMEOUT`] and only read after the token is checked, at most
//! [`MAX_STREAMS`] log streams).

pub mod admission;
pub mod aggregate;
pub mod api;
pub mod health;
pub mod history;
pub mod hosts;
pub mod metrics;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};

use crate::control::server::ControlRequest;
use crate::logs::LogHub;
use crate::process::Reaper;
use crate::supervisor::status::{Bus, StatusFeed, StatusTable};

/// PM2's default `--web` port.
pub const DEFAULT_PORT: u16 = 9615;
/// The generated token's file inside `$PM2_HOME` (mode 0600).
pub const TOKEN_FILE: &str = "pm-runtime-web.token";
pub use admission::MAX_CONNECTIONS;
/// A client must send a request's headers within this time (idle keep-alive included).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head (request line and headers) accepted (`431` beyond).
pub const MAX_HEADERS: usize = 16 * 1024;
/// Largest request body accepted (`413` beyond).
pub const MAX_BODY: usize = 64 * 1024;
/// A request body must arrive whole within this time (`408` beyond).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Live log streams (`/logs?follow=1`) at once (`503` beyond).
pub const MAX_STREAMS: usize = 16;
/// Longest wait for the coordinator's answer.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// A `--web`/`--metrics-compat` setting or an environment value the server cannot use (a
/// usage error: nothing is started).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    #[error("--metrics-compat: unknown value {0:?} (expected: pm2)")]
    UnknownCompat(String),
    #[error("--metrics-compat needs --web (the metrics are served by the HTTP server)")]
    CompatWithoutWeb,
    #[error("{var}={value:?} is not a port number (0-65535)")]
    Port { var: &'static str, value: String },
    #[error("PM2_API_IPADDR={0:?} is not an IP address")]
    Address(String),
}

/// Why the server could not start (the runtime stops before any app starts).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The port is taken (`AddrInUse`), not ours to bind (`PermissionDenied`), or the address is not local.
    #[error("--web: cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("--web: {0}")]
    LocalAddr(std::io::Error),
    #[error("cannot read /dev/urandom for the web token: {0}")]
    Random(std::io::Error),
    #[error("cannot write the web token to {}: {source}", path.display())]
    TokenFile { path: PathBuf, source: std::io::Error },
}

/// Where and how to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebOptions {
    pub addr: SocketAddr,
    /// `--metrics-compat pm2`: also the PM2 exporter's metric names.
    pub compat_pm2: bool,
    /// `PM_RUNTIME_WEB_HOSTS`: host names clients may use besides addresses and localhost.
    pub hosts: Vec<String>,
}

/// `--web [port]` (`Some(None)`: the flag without a port) and the environment: `PM2_WEB_PORT`
/// or `PM2_API_PORT` for the port when the flag has none (PM2's variables; default 9615),
/// `PM2_API_IPADDR` for the address (default 127.0.0.1), `PM_RUNTIME_WEB_HOSTS` for the host
/// names allowed in requests ([`hosts`]). `Ok(None)`: the server is off.
pub fn options(
    web: Option<Option<u16>>,
    compat: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<WebOptions>, OptionError> {
    let compat_pm2 = match compat {
        None => false,
        Some("pm2") => true,
        Some(other) => return Err(OptionError::UnknownCompat(other.to_string())),
    };
    let Some(port) = web else {
        if compat_pm2 {
            return Err(OptionError::CompatWithoutWeb);
        }
        return Ok(None);
    };
    let port = match port {
        Some(p) => p,
        None => {
            let from_env =
                ["PM2_WEB_PORT", "PM2_API_PORT"].into_iter().find_map(|k| env(k).filter(|v| !v.trim().is_empty()).map(|v| (k, v)));
            match from_env {
                None => DEFAULT_PORT,
                Some((var, v)) => v.trim().parse().map_err(|_| OptionError::Port { var, value: v.clone() })?,
            }
        }
    };
    let ip = match env("PM2_API_IPADDR").filter(|v| !v.trim().is_empty()) {
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some(v) => v.trim().parse().map_err(|_| OptionError::Address(v.clone()))?,
    };
    let hosts = hosts::parse_allow_list(env("PM_RUNTIME_WEB_HOSTS").as_deref());
    Ok(Some(WebOptions { addr: SocketAddr::new(ip, port), compat_pm2, hosts }))
}

/// Who may use the write actions.
#[derive(Clone, PartialEq, Eq)]
pub enum Token {
    /// `Authorization: Bearer <token>` required.
    Required(String),
    /// `PM_RUNTIME_WEB_TOKEN` set but empty: the API is read-only.
    Disabled,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret, not even in a debug dump.
        f.write_str(match self {
            Token::Required(_) => "Token::Required(…)",
            Token::Disabled => "Token::Disabled",
        })
    }
}

impl Token {
    /// Whether an `Authorization` header value carries the token (compared in constant time).
    pub fn accepts(&self, header: Option<&str>) -> bool {
        let Token::Required(want) = self else { return false };
        let Some(given) = header.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim) else { return false };
        let (a, b) = (want.as_bytes(), given.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// The token: `PM_RUNTIME_WEB_TOKEN` when set (empty: writes disabled), else a new random one
/// written to `$PM2_HOME/pm-runtime-web.token` (0600) for whoever may read that directory.
pub fn token(env_value: Option<String>, pm2_home: &Path) -> Result<(Token, Option<PathBuf>), StartError> {
    match env_value {
        Some(v) if v.trim().is_empty() => Ok((Token::Disabled, None)),
        Some(v) => Ok((Token::Required(v.trim().to_string()), None)),
        None => {
            use std::io::{Read, Write};
            use std::os::unix::fs::OpenOptionsExt;
            let mut raw = [0u8; 24];
            std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut raw)).map_err(StartError::Random)?;
            let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            let path = pm2_home.join(TOKEN_FILE);
            let _ = std::fs::remove_file(&path);
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .and_then(|mut f| f.write_all(format!("{token}\n").as_bytes()))
                .map_err(|source| StartError::TokenFile { path: path.clone(), source })?;
            Ok((Token::Required(token), Some(path)))
        }
    }
}

/// What the handlers share.
pub struct Web {
    pub feed: StatusFeed,
    pub bus: Bus,
    pub control: mpsc::Sender<ControlRequest>,
    pub logs: LogHub,
    pub reaper: Reaper,
    pub token: Token,
    pub compat_pm2: bool,
    /// prom-client request ids.
    pub next_request: AtomicU64,
    /// Live log streams: one permit each.
    pub streams: Arc<Semaphore>,
    /// Host names allowed besides addresses and localhost ([`hosts`]).
    pub hosts: Vec<String>,
    /// Held while `/metrics/apps` gathers from the workers.
    pub gather: tokio::sync::Mutex<()>,
    /// CPU/memory of the last hours and recent restarts (fed by [`serve`]'s history task).
    pub history: Arc<std::sync::Mutex<history::History>>,
}

impl Web {
    /// The latest status table.
    pub fn table(&self) -> Arc<StatusTable> {
        self.feed.borrow().clone()
    }
}

/// Binds the listener (before the apps start, so a taken port fails the start at once).
pub async fn bind(opts: &WebOptions) -> Result<TcpListener, StartError> {
    TcpListener::bind(opts.addr).await.map_err(|source| StartError::Listen { addr: opts.addr, source })
}

/// Accepts connections until the runtime ends.
pub async fn serve(listener: TcpListener, web: Arc<Web>) {
    tokio::spawn(history::run(web.feed.clone(), web.logs.clone(), web.history.clone()));
    let router = api::router(web.clone());
    let probes = api::probe_router(web);
    let mut admission = admission::Admission::new(MAX_CONNECTIONS, admission::PROBE_RESERVE, admission::MAX_PER_PEER);
    let mut last_warning: Option<std::time::Instant> = None;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of fds (EMFILE) or a transient network error: back off, never spin.
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    tracing::warn!("HTTP: cannot accept a connection: {e}");
                    last_warning = Some(std::time::Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (permits, router) = match admission.admit(peer.ip()) {
            admission::Admit::Full(p) => (p, router.clone()),
            admission::Admit::ProbesOnly(p) => (p, probes.clone()),
            admission::Admit::Refused(why) => {
                tokio::spawn(refuse(stream, why));
                continue;
            }
        };
        let service = TowerToHyperService::new(router);
        tokio::spawn(async move {
            let io = admission::Deadline::new(stream, admission::WRITE_TIMEOUT);
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_BODY)
                .max_header_size(MAX_HEADERS)
                .serve_connection(TokioIo::new(io), service)
                .await;
            drop(permits);
        });
    }
}

/// Too many connections: say so and close, without reading the request.
async fn refuse(mut stream: TcpStream, why: String) {
    let body = format!("{why}; try again\n");
    let reply = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nRetry-After: 1\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(reply.as_bytes())).await;
}

/// An app as the script form makes it (for the tests of the readers).
#[cfg(test)]
pub(crate) fn test_app(name: &str) -> crate::config::App {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("x.js");
    std::fs::write(&script, "").expect("script");
    let eco = crate::config::from_script(&script.to_string_lossy(), &Default::default()).expect("script form");
    let mut app = eco.apps[0].clone();
    app.name = name.to_string();
    app
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_from_flag_and_env() {
        let none = |_: &str| None;
        assert_eq!(options(None, None, &none), Ok(None));
        let on = options(Some(None), None, &none).unwrap().unwrap();
        assert_eq!(on.addr, "127.0.0.1:9615".parse().unwrap());
        assert!(!on.compat_pm2);
        assert_eq!(options(Some(Some(0)), Some("pm2"), &none).unwrap().unwrap().addr.port(), 0);
        let env = |k: &str| match k {
            "PM2_API_PORT" => Some("8000".to_string()),
            "PM2_API_IPADDR" => Some("0.0.0.0".to_string()),
            _ => None,
        };
        assert_eq!(options(Some(None), None, &env).unwrap().unwrap().addr, "0.0.0.0:8000".parse().unwrap());
        assert_eq!(options(Some(Some(9000)), None, &env).unwrap().unwrap().addr.port(), 9000, "the flag's port wins");
        let web_first = |k: &str| match k {
            "PM2_WEB_PORT" => Some("7000".to_string()),
            "PM2_API_PORT" => Some("8000".to_string()),
            _ => None,
        };
        assert_eq!(options(Some(None), None, &web_first).unwrap().unwrap().addr.port(), 7000);
        let bad = |k: &str| (k == "PM2_WEB_PORT").then(|| "http".to_string());
        let e = options(Some(None), None, &bad).unwrap_err();
        assert_eq!(e, OptionError::Port { var: "PM2_WEB_PORT", value: "http".into() });
        assert_eq!(e.to_string(), "PM2_WEB_PORT=\"http\" is not a port number (0-65535)");
        let bad_ip = |k: &str| (k == "PM2_API_IPADDR").then(|| "localhost:1".to_string());
        assert_eq!(options(Some(None), None, &bad_ip), Err(OptionError::Address("localhost:1".into())));
        assert_eq!(options(Some(None), Some("prom"), &none), Err(OptionError::UnknownCompat("prom".into())));
        assert_eq!(options(None, Some("pm2"), &none), Err(OptionError::CompatWithoutWeb));
        assert!(OptionError::CompatWithoutWeb.to_string().starts_with("--metrics-compat needs --web"));
        let listed = |k: &str| (k == "PM_RUNTIME_WEB_HOSTS").then(|| "a.example, B.example".to_string());
        assert_eq!(options(Some(None), None, &listed).unwrap().unwrap().hosts, ["a.example", "b.example"]);
    }

    /// A taken port is told apart by kind (not by reading the message), and the message names
    /// the flag and the address as before.
    #[tokio::test]
    async fn a_taken_port_is_a_listen_error_naming_the_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let opts = WebOptions { addr, compat_pm2: false, hosts: vec![] };
        let e = bind(&opts).await.unwrap_err();
        assert!(
            matches!(&e, StartError::Listen { addr: a, source } if *a == addr && source.kind() == std::io::ErrorKind::AddrInUse),
            "{e:?}"
        );
        assert!(e.to_string().starts_with(&format!("--web: cannot listen on {addr}: ")), "{e}");
    }

    #[test]
    fn tokens_from_env_or_a_private_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (t, file) = token(Some("s3cret".into()), dir.path()).unwrap();
        assert_eq!(t, Token::Required("s3cret".into()));
        assert!(file.is_none());
        assert!(t.accepts(Some("Bearer s3cret")));
        for wrong in [None, Some("Bearer s3cre"), Some("Bearer s3cret2"), Some("s3cret"), Some("Basic s3cret"), Some("Bearer ")] {
            assert!(!t.accepts(wrong), "{wrong:?}");
        }
        assert!(!format!("{t:?}").contains("s3cret"), "Debug never shows the token");
        assert_eq!(token(Some(" ".into()), dir.path()).unwrap().0, Token::Disabled);
        assert!(!Token::Disabled.accepts(Some("Bearer ")));
        let (t, file) = token(None, dir.path()).unwrap();
        let file = file.unwrap();
        let Token::Required(secret) = t else { panic!("a generated token") };
        assert_eq!(secret.len(), 48);
        assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), secret);
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        let (t2, _) = token(None, dir.path()).unwrap();
        assert_ne!(t2, Token::Required(secret), "a new token per start");
    }
}
