//! The websocket to PM2 Plus, and the policies around it: retry backoff and the queue of
//! packets kept while the link is down.
//!
//! The socket is opened by hand (TCP, `PM2_PROXY`'s CONNECT when set, TLS with rustls/ring and
//! the bundled web roots for `wss`), then the websocket handshake carries PM2's headers. No DNS
//! probe before reconnecting (the official agent looks up google.com first): a failed connect
//! is the only signal needed. Every step has a timeout.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Uri};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::Config;

/// Connecting, TLS and the websocket handshake together.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest frame accepted from upstream.
pub const MAX_MESSAGE: usize = 1024 * 1024;

/// Non-status packets kept while the link is down (PM2's `PACKET_QUEUE_SIZE`).
pub const QUEUE_SIZE: usize = 200;

/// The `User-Agent` of the verify call and the websocket: our own, as the other third-party
/// clients (Go, agent-node) send theirs.
pub fn user_agent() -> String {
    format!("pm-runtime PM2-Plus-compatible agent v{}", env!("CARGO_PKG_VERSION"))
}

/// Why the link could not be set up (reported once at start; the link stays off).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("PM2_PROXY is not a valid proxy URL")]
    Proxy,
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// Why the websocket could not be opened (the link retries).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("the websocket endpoint is not a valid ws:// or wss:// URL")]
    BadUrl,
    #[error("cannot connect to {addr}: {source}")]
    Tcp { addr: String, source: std::io::Error },
    #[error("{0} is not a valid TLS server name")]
    ServerName(String),
    #[error("TLS with {host} failed: {source}")]
    Tls { host: String, source: std::io::Error },
    #[error("a key or the machine name holds characters not allowed in an HTTP header")]
    Header,
    #[error("the websocket was refused with HTTP {0}")]
    Refused(u16),
    #[error("websocket handshake failed: {0}")]
    Handshake(String),
    #[error("no websocket within {} s", CONNECT_TIMEOUT.as_secs())]
    Timeout,
    #[error("PM2_PROXY: {0}")]
    Proxy(String),
}

/// Any byte stream the websocket can run on.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub type Socket = WebSocketStream<Pin<Box<dyn Io>>>;

/// rustls with the ring provider and the bundled web roots (no OpenSSL, no system CA store
/// needed: minimal images often have none), plus the PEM roots of `NODE_EXTRA_CA_CERTS`.
/// Returns a warning when that file gives nothing usable.
pub fn tls_config(extra_ca: Option<&std::path::Path>) -> Result<(Arc<rustls::ClientConfig>, Option<String>), SetupError> {
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let warning = extra_ca.and_then(|path| add_roots(&mut roots, path));
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok((Arc::new(cfg), warning))
}

/// Adds the certificates of a PEM file to `roots`; a warning if none could be added.
fn add_roots(roots: &mut rustls::RootCertStore, path: &std::path::Path) -> Option<String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    match std::fs::read(path) {
        Ok(pem) => {
            let (added, _) = roots.add_parsable_certificates(CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok));
            (added == 0).then(|| format!("PM2 Plus: NODE_EXTRA_CA_CERTS ({}) holds no usable certificate", path.display()))
        }
        Err(e) => Some(format!("PM2 Plus: cannot read NODE_EXTRA_CA_CERTS ({}): {e}", path.display())),
    }
}

/// The HTTP client of the verify call (proxy from `PM2_PROXY`; no proxy from the system
/// otherwise, as pm2).
pub fn http_client(cfg: &Config, tls: &Arc<rustls::ClientConfig>) -> Result<reqwest::Client, SetupError> {
    let mut b = reqwest::Client::builder()
        .tls_backend_preconfigured((**tls).clone())
        .user_agent(user_agent())
        .connect_timeout(super::verify::TIMEOUT)
        .timeout(super::verify::TIMEOUT)
        // The verify call carries the keys: no redirect may send them elsewhere (nor https→http).
        .redirect(reqwest::redirect::Policy::none())
        .https_only(cfg.root.trim().get(..8).is_some_and(|s| s.eq_ignore_ascii_case("https://")))
        .no_proxy();
    if let Some(p) = &cfg.proxy {
        b = b.proxy(reqwest::Proxy::all(p).map_err(|_| SetupError::Proxy)?);
    }
    b.build().map_err(SetupError::Client)
}

/// Opens the websocket to `url` (`ws://` or `wss://`) with PM2's headers.
pub async fn connect(url: &str, cfg: &Config, tls: &Arc<rustls::ClientConfig>) -> Result<Socket, ConnectError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, connect_inner(url, cfg, tls)).await {
        Ok(r) => r,
        Err(_) => Err(ConnectError::Timeout),
    }
}

async fn connect_inner(url: &str, cfg: &Config, tls: &Arc<rustls::ClientConfig>) -> Result<Socket, ConnectError> {
    let uri: Uri = url.parse().map_err(|_| ConnectError::BadUrl)?;
    let secure = match uri.scheme_str() {
        Some("wss") => true,
        Some("ws") => false,
        _ => return Err(ConnectError::BadUrl),
    };
    let host = uri.host().ok_or(ConnectError::BadUrl)?.trim_start_matches('[').trim_end_matches(']').to_string();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let tcp = match &cfg.proxy {
        Some(proxy) => through_proxy(proxy, &host, port).await?,
        None => TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|source| ConnectError::Tcp { addr: format!("{host}:{port}"), source })?,
    };
    let _ = tcp.set_nodelay(true);
    let stream: Pin<Box<dyn Io>> = if secure {
        let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|_| ConnectError::ServerName(host.clone()))?;
        let tls = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|source| ConnectError::Tls { host: host.clone(), source })?;
        Box::pin(tls)
    } else {
        Box::pin(tcp)
    };
    let mut req = url.into_client_request().map_err(|_| ConnectError::BadUrl)?;
    let h = req.headers_mut();
    let value = |s: &str| HeaderValue::from_str(s).map_err(|_| ConnectError::Header);
    h.insert("X-KM-PUBLIC", value(&cfg.public_key)?);
    let mut secret = value(cfg.secret.expose())?;
    secret.set_sensitive(true);
    h.insert("X-KM-SECRET", secret);
    h.insert("X-KM-SERVER", value(&cfg.machine_name)?);
    h.insert("X-PM2-VERSION", value(&cfg.pm2_version)?);
    h.insert("X-PROTOCOL-VERSION", HeaderValue::from_static("1"));
    h.insert("User-Agent", value(&user_agent())?);
    // The dashboard's orders are small: a hostile backend cannot make us hold 64 MiB frames.
    let limits = WebSocketConfig::default().max_message_size(Some(MAX_MESSAGE)).max_frame_size(Some(MAX_MESSAGE));
    let (ws, _) = tokio_tungstenite::client_async_with_config(req, stream, Some(limits)).await.map_err(|e| match e {
        tokio_tungstenite::tungstenite::Error::Http(resp) => ConnectError::Refused(resp.status().as_u16()),
        other => ConnectError::Handshake(super::verify::clip(&other.to_string())),
    })?;
    Ok(ws)
}

/// A tunnel through an HTTP proxy (`CONNECT host:port`).
async fn through_proxy(proxy: &str, host: &str, port: u16) -> Result<TcpStream, ConnectError> {
    through_proxy_inner(proxy, host, port).await.map_err(ConnectError::Proxy)
}

async fn through_proxy_inner(proxy: &str, host: &str, port: u16) -> Result<TcpStream, String> {
    let uri: Uri = proxy.parse().map_err(|_| "PM2_PROXY is not a valid URL".to_string())?;
    if uri.scheme_str().is_some_and(|s| s != "http") {
        return Err("PM2_PROXY: only http:// proxies carry the websocket".into());
    }
    let (phost, pport) = (uri.host().ok_or("PM2_PROXY has no host")?, uri.port_u16().unwrap_or(3128));
    let mut s = TcpStream::connect((phost, pport)).await.map_err(|e| format!("cannot connect to the proxy {phost}:{pport}: {e}"))?;
    let target = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes()).await.map_err(|e| format!("proxy: {e}"))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 8192 || s.read(&mut byte).await.map_err(|e| format!("proxy: {e}"))? == 0 {
            return Err("the proxy closed the connection".into());
        }
        head.push(byte[0]);
    }
    let status = String::from_utf8_lossy(&head).split_whitespace().nth(1).unwrap_or("").to_string();
    if status != "200" {
        return Err(format!("the proxy refused the tunnel (HTTP {})", super::verify::clip(&status)));
    }
    Ok(s)
}

/// Capped exponential backoff with jitter: 1 s, 2 s, 4 s … 60 s, each step 75–100 % of its
/// nominal value so many servers restarted together do not retry together.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: BACKOFF_MIN }
    }
}

impl Backoff {
    /// The next delay; `unit` is a random number in [0, 1).
    pub fn delay(&mut self, unit: f64) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(BACKOFF_MAX);
        d.mul_f64(0.75 + 0.25 * unit.clamp(0.0, 1.0))
    }

    pub fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

/// A random number in [0, 1) (jitter only: no need for more than the clock's noise).
pub fn jitter_unit() -> f64 {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    f64::from(n % 1000) / 1000.0
}

/// Packets waiting for the link: at most [`QUEUE_SIZE`], the oldest dropped first.
#[derive(Debug, Default)]
pub struct Outbox {
    q: VecDeque<String>,
    pub dropped: u64,
}

impl Outbox {
    pub fn push(&mut self, frame: String) {
        if self.q.len() == QUEUE_SIZE {
            self.q.pop_front();
            self.dropped += 1;
        }
        self.q.push_back(frame);
    }

    /// Puts back a packet whose send failed, first in line.
    pub fn requeue(&mut self, frame: String) {
        if self.q.len() == QUEUE_SIZE {
            self.dropped += 1;
            return;
        }
        self.q.push_front(frame);
    }

    pub fn pop(&mut self) -> Option<String> {
        self.q.pop_front()
    }

    pub fn len(&self) -> usize {
        self.q.len()
    }

    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_with_jitter() {
        let mut b = Backoff::default();
        let full: Vec<u64> = (0..9).map(|_| b.delay(1.0).as_secs()).collect();
        assert_eq!(full, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        b.reset();
        assert_eq!(b.delay(0.0), Duration::from_millis(750));
        assert_eq!(b.delay(0.5), Duration::from_millis(1750));
        let u = jitter_unit();
        assert!((0.0..1.0).contains(&u));
    }

    #[test]
    fn outbox_keeps_the_newest_200() {
        let mut o = Outbox::default();
        for i in 0..250 {
            o.push(i.to_string());
        }
        assert_eq!((o.len(), o.dropped), (200, 50));
        assert_eq!(o.pop().as_deref(), Some("50"));
        o.requeue("50".into());
        assert_eq!(o.pop().as_deref(), Some("50"));
        let rest: Vec<String> = std::iter::from_fn(|| o.pop()).collect();
        assert_eq!(rest.last().map(String::as_str), Some("249"));
        assert!(o.is_empty());
    }

    #[test]
    fn extra_roots_from_a_pem_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let (_, w) = tls_config(Some(&missing)).unwrap();
        assert!(w.is_some_and(|w| w.contains("cannot read NODE_EXTRA_CA_CERTS")));
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n").unwrap();
        let (_, w) = tls_config(Some(&junk)).unwrap();
        assert!(w.is_some_and(|w| w.contains("no usable certificate")));
        let (_, w) = tls_config(None).unwrap();
        assert!(w.is_none());
    }

    #[test]
    fn tls_and_client_build_without_a_global_provider() {
        let (tls, _) = tls_config(None).expect("tls");
        let cfg = match super::super::resolve(
            &|k| match k {
                "PM2_PUBLIC_KEY" | "PM2_SECRET_KEY" => Some("k".into()),
                "PM2_PROXY" => Some("http://127.0.0.1:3128".into()),
                _ => None,
            },
            &Default::default(),
        ) {
            super::super::Resolved::On(c) => c,
            other => panic!("{other:?}"),
        };
        http_client(&cfg, &tls).expect("client");
    }
}
