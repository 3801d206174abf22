//! The websocket to PM2 Plus, and the policies around it: retry backoff and the queue of
//! packets kept while the link is down.
//!
//! The socket is opened by the verify call's client ([`crate::outbound::Client::open`]: TCP,
//! `PM2_PROXY`'s CONNECT when set, TLS with rustls/ring and the bundled web roots for `wss`),
//! then the websocket handshake carries PM2's headers. No DNS probe before reconnecting (the
//! official agent looks up google.com first): a failed connect is the only signal needed. Every
//! step has a timeout.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Uri};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::Config;
use crate::outbound::{self, OpenError, Proxy};

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
    #[error(transparent)]
    Proxy(#[from] outbound::BadProxy),
}

/// Why the websocket could not be opened (the link retries).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("the websocket endpoint is not a valid ws:// or wss:// URL")]
    BadUrl,
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("a key or the machine name holds characters not allowed in an HTTP header")]
    Header,
    #[error("the websocket was refused with HTTP {0}")]
    Refused(u16),
    #[error("websocket handshake failed: {0}")]
    Handshake(String),
    #[error("no websocket within {} s", CONNECT_TIMEOUT.as_secs())]
    Timeout,
}

pub type Socket = WebSocketStream<outbound::Stream>;

/// The TLS settings of the verify call and the websocket (see [`outbound::tls_config`]), with
/// the PEM roots of `NODE_EXTRA_CA_CERTS`. Returns a warning when that file gives nothing usable.
pub fn tls_config(extra_ca: Option<&std::path::Path>) -> Result<(Arc<rustls::ClientConfig>, Option<String>), SetupError> {
    Ok(outbound::tls_config(extra_ca)?)
}

/// The client of the verify call and the websocket's stream (proxy from `PM2_PROXY`; no proxy
/// from the system otherwise, as pm2; no redirect followed: the call carries the keys).
pub fn http_client(cfg: &Config, tls: &Arc<rustls::ClientConfig>) -> Result<outbound::Client, SetupError> {
    let proxy = cfg.proxy.as_deref().map(Proxy::parse).transpose()?;
    Ok(outbound::Client::new(tls.clone(), proxy, &user_agent(), super::verify::TIMEOUT))
}

/// Opens the websocket to `url` (`ws://` or `wss://`) with PM2's headers.
pub async fn connect(url: &str, cfg: &Config, client: &outbound::Client) -> Result<Socket, ConnectError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, connect_inner(url, cfg, client)).await {
        Ok(r) => r,
        Err(_) => Err(ConnectError::Timeout),
    }
}

async fn connect_inner(url: &str, cfg: &Config, client: &outbound::Client) -> Result<Socket, ConnectError> {
    let uri: Uri = url.parse().map_err(|_| ConnectError::BadUrl)?;
    let secure = match uri.scheme_str() {
        Some("wss") => true,
        Some("ws") => false,
        _ => return Err(ConnectError::BadUrl),
    };
    let host = uri.host().ok_or(ConnectError::BadUrl)?.trim_start_matches('[').trim_end_matches(']').to_string();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let stream = client.open(&host, port, secure).await?;
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
