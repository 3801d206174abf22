//! The runtime's outbound HTTP: PM2 Plus' verify call and the OTLP exports (`POST`, a body, a
//! status and a bounded answer back), and the byte stream PM2 Plus' websocket runs on.
//!
//! HTTP/1.1 on hyper's connection API (already built in for `--web`), TLS with rustls (ring, the
//! bundled web roots, plus `NODE_EXTRA_CA_CERTS` for PM2 Plus), an `http://` proxy when asked
//! (`PM2_PROXY`: a `CONNECT` tunnel for TLS and websockets, the absolute-form request for plain
//! http). No redirect is ever followed (the verify call carries the keys), no cookie, no
//! compression, no proxy from the environment. One idle keep-alive connection per target is
//! kept for the next request. Every call is bounded by the client's timeout.
//!
//! Only in builds with PM2 Plus or OpenTelemetry; even then nothing of it exists until one of
//! them starts.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue, USER_AGENT};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Any byte stream HTTP or the websocket can run on (TCP, or TLS over it).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub type Stream = Pin<Box<dyn Io>>;

/// Why a stream to a server could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot connect to {addr}: {source}")]
    Tcp { addr: String, source: std::io::Error },
    #[error("{0} is not a valid TLS server name")]
    ServerName(String),
    #[error("TLS with {host} failed: {source}")]
    Tls { host: String, source: std::io::Error },
    #[error("PM2_PROXY: {0}")]
    Proxy(#[from] ProxyError),
}

/// Why the proxy gave no tunnel.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot connect to the proxy {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("{0}")]
    Io(#[source] std::io::Error),
    #[error("the proxy closed the connection")]
    Closed,
    #[error("the proxy refused the tunnel (HTTP {0})")]
    Refused(String),
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the URL is not a valid http:// or https:// URL")]
    BadUrl,
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("a header holds characters not allowed in HTTP")]
    Header,
    #[error("the HTTP exchange failed: {0}")]
    Http(#[source] hyper::Error),
    #[error("no answer within {}", in_words(*.0))]
    Timeout(Duration),
}

/// `10 s`, or `300 ms` below a whole second.
fn in_words(d: Duration) -> String {
    if d.subsec_nanos() == 0 { format!("{} s", d.as_secs()) } else { format!("{} ms", d.as_millis()) }
}

impl Error {
    /// A few words for a log line (the server's own text clipped, no nested chain).
    pub fn brief(&self) -> String {
        match self {
            Error::Timeout(_) => "no answer in time".into(),
            Error::Open(OpenError::Tcp { .. } | OpenError::Proxy(ProxyError::Connect { .. })) => "cannot connect".into(),
            other => other.to_string(),
        }
    }
}

/// `PM2_PROXY` is not an `http://` proxy URL.
#[derive(Debug, thiserror::Error)]
#[error("PM2_PROXY is not a valid http:// proxy URL")]
pub struct BadProxy;

/// An `http://` proxy.
#[derive(Debug, Clone)]
pub struct Proxy {
    host: String,
    port: u16,
    /// `Proxy-Authorization` from the URL's `user:password@`.
    auth: Option<HeaderValue>,
}

impl Proxy {
    /// `http://[user:password@]host[:port]` (no scheme means http; port 3128 by default, as the
    /// websocket tunnel always had).
    pub fn parse(url: &str) -> Result<Proxy, BadProxy> {
        let url = url.trim();
        let with_scheme = if url.contains("://") { url.to_string() } else { format!("http://{url}") };
        let uri: Uri = with_scheme.parse().map_err(|_| BadProxy)?;
        if !uri.scheme_str().is_some_and(|s| s.eq_ignore_ascii_case("http")) {
            return Err(BadProxy);
        }
        let authority = uri.authority().ok_or(BadProxy)?;
        let host = unbracket(authority.host());
        if host.is_empty() {
            return Err(BadProxy);
        }
        let auth = match authority.as_str().rsplit_once('@') {
            Some((user, _)) => {
                let mut v = HeaderValue::from_str(&format!("Basic {}", base64(user.as_bytes()))).map_err(|_| BadProxy)?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        Ok(Proxy { host: host.to_string(), port: authority.port_u16().unwrap_or(3128), auth })
    }

    /// A tunnel to `host:port` (`CONNECT`).
    pub async fn tunnel(&self, host: &str, port: u16) -> Result<TcpStream, ProxyError> {
        let addr = format!("{}:{}", self.host, self.port);
        let mut s = TcpStream::connect((self.host.as_str(), self.port)).await.map_err(|source| ProxyError::Connect { addr, source })?;
        let target = authority(host, port);
        let mut head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n").into_bytes();
        if let Some(auth) = &self.auth {
            head.extend_from_slice(b"Proxy-Authorization: ");
            head.extend_from_slice(auth.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        s.write_all(&head).await.map_err(ProxyError::Io)?;
        // Byte by byte: nothing past the proxy's head may be consumed (it is the server's).
        let mut answer = Vec::new();
        let mut byte = [0u8; 1];
        while !answer.ends_with(b"\r\n\r\n") {
            if answer.len() > 8192 || s.read(&mut byte).await.map_err(ProxyError::Io)? == 0 {
                return Err(ProxyError::Closed);
            }
            answer.push(byte[0]);
        }
        let status = String::from_utf8_lossy(&answer).split_whitespace().nth(1).unwrap_or("").to_string();
        if status != "200" {
            return Err(ProxyError::Refused(status.chars().filter(char::is_ascii_alphanumeric).take(12).collect()));
        }
        Ok(s)
    }
}

/// `host:port`, an IPv6 host in brackets.
fn authority(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

fn unbracket(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Standard base64 with padding (only the proxy's credentials need it).
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() { char::from(ABC[(n >> (18 - 6 * i) & 63) as usize]) } else { '=' });
        }
    }
    out
}

/// rustls with the ring provider and the bundled web roots (no OpenSSL, no system CA store
/// needed: minimal images often have none), plus the PEM roots of `extra_ca`. Returns a
/// warning when that file gives nothing usable.
pub fn tls_config(extra_ca: Option<&std::path::Path>) -> Result<(Arc<rustls::ClientConfig>, Option<String>), rustls::Error> {
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

/// A stream to `host:port`, through `proxy` when given, with TLS when `secure`.
async fn open(host: &str, port: u16, secure: bool, proxy: Option<&Proxy>, tls: &Arc<rustls::ClientConfig>) -> Result<Stream, OpenError> {
    let tcp = match proxy {
        Some(p) => p.tunnel(host, port).await?,
        None => TcpStream::connect((host, port)).await.map_err(|source| OpenError::Tcp { addr: authority(host, port), source })?,
    };
    let _ = tcp.set_nodelay(true);
    if !secure {
        return Ok(Box::pin(tcp));
    }
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|_| OpenError::ServerName(host.to_string()))?;
    let tls = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|source| OpenError::Tls { host: host.to_string(), source })?;
    Ok(Box::pin(tls))
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    secure: bool,
    host: String,
    port: u16,
    /// `host[:port]` as the URL says it (the `Host` header).
    authority: String,
    /// `/path?query`.
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, Error> {
        let uri: Uri = url.trim().parse().map_err(|_| Error::BadUrl)?;
        let secure = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(Error::BadUrl),
        };
        let a = uri.authority().ok_or(Error::BadUrl)?;
        let host = unbracket(a.host()).to_string();
        if host.is_empty() {
            return Err(Error::BadUrl);
        }
        let port = a.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let authority = a.as_str().rsplit_once('@').map_or(a.as_str(), |(_, hp)| hp).to_string();
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        Ok(Target { secure, host, port, authority, path })
    }
}

/// The answer: its status and at most the first `max_body` bytes of its body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// A keep-alive connection waiting for its next request.
struct Idle {
    secure: bool,
    host: String,
    port: u16,
    send: SendRequest<Full<Bytes>>,
}

/// The client: shared by the callers of one feature (`&Client` across tasks).
pub struct Client {
    tls: Arc<rustls::ClientConfig>,
    proxy: Option<Proxy>,
    user_agent: HeaderValue,
    timeout: Duration,
    idle: Mutex<Vec<Idle>>,
}

impl Client {
    pub fn new(tls: Arc<rustls::ClientConfig>, proxy: Option<Proxy>, user_agent: &str, timeout: Duration) -> Client {
        let user_agent = HeaderValue::from_str(user_agent).unwrap_or(HeaderValue::from_static("pm-runtime"));
        Client { tls, proxy, user_agent, timeout, idle: Mutex::new(Vec::new()) }
    }

    /// A stream to `host:port` (through the client's proxy, TLS when `secure`): the websocket's.
    pub async fn open(&self, host: &str, port: u16, secure: bool) -> Result<Stream, OpenError> {
        open(host, port, secure, self.proxy.as_ref(), &self.tls).await
    }

    /// `POST url` with `body` and `headers` (name, value); the whole exchange, connecting
    /// included, within the client's timeout.
    pub async fn post(&self, url: &str, headers: &[(&str, &str)], body: Vec<u8>, max_body: usize) -> Result<Response, Error> {
        let target = Target::parse(url)?;
        let body = Bytes::from(body);
        self.request(&target, headers, body.clone())?;
        match tokio::time::timeout(self.timeout, self.exchange(&target, headers, body, max_body)).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout(self.timeout)),
        }
    }

    fn request(&self, t: &Target, headers: &[(&str, &str)], body: Bytes) -> Result<Request<Full<Bytes>>, Error> {
        // Through a proxy, plain http asks the proxy for the absolute URL; otherwise the path.
        let uri = match (&self.proxy, t.secure) {
            (Some(_), false) => format!("http://{}{}", t.authority, t.path),
            _ => t.path.clone(),
        };
        let mut req = Request::builder().method(Method::POST).uri(uri).body(Full::new(body)).map_err(|_| Error::BadUrl)?;
        let h = req.headers_mut();
        h.insert(HOST, HeaderValue::from_str(&t.authority).map_err(|_| Error::BadUrl)?);
        h.insert(USER_AGENT, self.user_agent.clone());
        for (k, v) in headers {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| Error::Header)?;
            let mut value = HeaderValue::from_str(v).map_err(|_| Error::Header)?;
            value.set_sensitive(name != CONTENT_TYPE);
            h.insert(name, value);
        }
        if let (Some(auth), false) = (self.proxy.as_ref().and_then(|p| p.auth.clone()), t.secure) {
            h.insert(hyper::header::PROXY_AUTHORIZATION, auth);
        }
        Ok(req)
    }

    async fn exchange(&self, t: &Target, headers: &[(&str, &str)], body: Bytes, max_body: usize) -> Result<Response, Error> {
        let (mut send, mut reused) = match self.take_idle(t) {
            Some(s) => (s, true),
            None => (self.connect(t).await?, false),
        };
        if reused && send.ready().await.is_err() {
            // Closed while it waited: a new one.
            (send, reused) = (self.connect(t).await?, false);
        }
        let resp = match send.send_request(self.request(t, headers, body.clone())?).await {
            Ok(r) => r,
            // The server closed the idle connection before taking the request: once more, new.
            Err(e) if reused && e.is_canceled() => {
                send = self.connect(t).await?;
                send.send_request(self.request(t, headers, body)?).await.map_err(Error::Http)?
            }
            Err(e) => return Err(Error::Http(e)),
        };
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut buf = Vec::new();
        let mut whole = true;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.map_err(Error::Http)?.into_data() {
                buf.extend_from_slice(&data);
            }
            if buf.len() > max_body {
                buf.truncate(max_body);
                whole = false;
                break;
            }
        }
        if whole {
            self.put_idle(t, send);
        }
        Ok(Response { status, body: buf })
    }

    fn take_idle(&self, t: &Target) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|i| !i.send.is_closed());
        let at = idle.iter().position(|i| i.secure == t.secure && i.host == t.host && i.port == t.port)?;
        Some(idle.swap_remove(at).send)
    }

    fn put_idle(&self, t: &Target, send: SendRequest<Full<Bytes>>) {
        if send.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        // One per target is enough: the callers send one request at a time each.
        if idle.len() < 4 {
            idle.push(Idle { secure: t.secure, host: t.host.clone(), port: t.port, send });
        }
    }

    async fn connect(&self, t: &Target) -> Result<SendRequest<Full<Bytes>>, Error> {
        let stream = match (&self.proxy, t.secure) {
            // Plain http through a proxy: the requests go to the proxy itself.
            (Some(p), false) => {
                let addr = format!("{}:{}", p.host, p.port);
                let tcp = TcpStream::connect((p.host.as_str(), p.port))
                    .await
                    .map_err(|source| OpenError::Proxy(ProxyError::Connect { addr, source }))?;
                let _ = tcp.set_nodelay(true);
                Box::pin(tcp) as Stream
            }
            (proxy, secure) => open(&t.host, t.port, secure, proxy.as_ref(), &self.tls).await?,
        };
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(Error::Http)?;
        // The connection is driven on the caller's runtime; it ends when `send` is dropped.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(send)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = Target::parse("https://Root.example/api/node/verifyPM2").unwrap();
        assert_eq!(
            (t.secure, t.host.as_str(), t.port, t.authority.as_str(), t.path.as_str()),
            (true, "Root.example", 443, "Root.example", "/api/node/verifyPM2")
        );
        let t = Target::parse("http://u:p@[::1]:4318/v1/logs?x=1").unwrap();
        assert_eq!(
            (t.secure, t.host.as_str(), t.port, t.authority.as_str(), t.path.as_str()),
            (false, "::1", 4318, "[::1]:4318", "/v1/logs?x=1")
        );
        assert_eq!(Target::parse("http://c:4318").unwrap().path, "/");
        for bad in ["ftp://x/", "c:4318/v1", "http://", "not a url"] {
            assert!(matches!(Target::parse(bad), Err(Error::BadUrl)), "{bad}");
        }
    }

    #[test]
    fn proxies() {
        let p = Proxy::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!((p.host.as_str(), p.port, p.auth.is_none()), ("127.0.0.1", 8080, true));
        let p = Proxy::parse("proxy.corp").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("proxy.corp", 3128));
        let p = Proxy::parse("http://Aladdin:open%20sesame@[::1]:3128").unwrap();
        assert_eq!((p.host.as_str(), p.auth.unwrap().to_str().unwrap()), ("::1", "Basic QWxhZGRpbjpvcGVuJTIwc2VzYW1l"));
        for bad in ["https://p:3128", "socks5://p:1080", "http://", "::"] {
            assert!(Proxy::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"Aladdin:open sesame"), "QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
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

    /// A one-connection HTTP server on 127.0.0.1 that answers each request with `answers[i]`
    /// and records the request heads.
    fn server(answers: Vec<&'static str>) -> (u16, std::sync::mpsc::Receiver<String>) {
        use std::io::{BufRead, BufReader, Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut w = s;
            for a in answers {
                let mut head = String::new();
                let mut len = 0;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap() == 0 {
                        return;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    head.push_str(&line);
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                tx.send(format!("{head}{}", String::from_utf8_lossy(&body))).unwrap();
                w.write_all(a.as_bytes()).unwrap();
            }
        });
        (port, rx)
    }

    fn client(timeout: Duration) -> Client {
        Client::new(tls_config(None).unwrap().0, None, "ua/1", timeout)
    }

    #[tokio::test]
    async fn posts_reuse_the_connection_and_bound_the_answer() {
        let (port, heads) = server(vec![
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            "HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n",
        ]);
        let c = client(Duration::from_secs(10));
        let url = format!("http://127.0.0.1:{port}/v1/logs");
        let r = c.post(&url, &[("Content-Type", "application/json"), ("api-key", "k1")], b"{}".to_vec(), 100).await.unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
        let head = heads.recv().unwrap().to_ascii_lowercase();
        for want in [
            "post /v1/logs http/1.1\r\n",
            &format!("host: 127.0.0.1:{port}\r\n"),
            "user-agent: ua/1\r\n",
            "api-key: k1\r\n",
            "content-type: application/json\r\n",
            "\r\n\r\n{}",
        ] {
            assert!(head.contains(want), "{want:?} in {head}");
        }
        // The second request can only be answered on the same connection (the server accepts one).
        let r = c.post(&url, &[], b"x".to_vec(), 4).await.unwrap();
        assert_eq!((r.status, r.body.as_slice()), (403, &b"abcd"[..]));
    }

    /// An HTTPS server on 127.0.0.1 with a certificate for `localhost` from the test CA
    /// (tests/fixtures/tls), answering every request `200 ok`.
    async fn tls_server() -> u16 {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls/");
        let certs = CertificateDer::pem_file_iter(format!("{dir}localhost.pem")).unwrap().collect::<Result<Vec<_>, _>>().unwrap();
        let key = PrivateKeyDer::from_pem_file(format!("{dir}localhost.key")).unwrap();
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(s).await else { return };
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
                    let _ = tls.flush().await;
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn https_trusts_the_bundled_roots_and_extra_ones_only() {
        let port = tls_server().await;
        let url = format!("https://localhost:{port}/v1/metrics");
        let ca = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls/ca.pem"));
        let (tls, warning) = tls_config(Some(&ca)).unwrap();
        assert!(warning.is_none(), "{warning:?}");
        let c = Client::new(tls, None, "ua/1", Duration::from_secs(10));
        let r = c.post(&url, &[], b"{}".to_vec(), 100).await.unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
        // The test CA is not among the bundled roots: refused.
        let e = client(Duration::from_secs(10)).post(&url, &[], b"{}".to_vec(), 100).await.unwrap_err();
        assert!(matches!(e, Error::Open(OpenError::Tls { .. })) && e.to_string().contains("TLS with localhost failed"), "{e}");
    }

    #[tokio::test]
    async fn an_idle_connection_the_server_closed_is_replaced() {
        use std::io::{BufRead, BufReader, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        // Each connection answers one request, keep-alive as far as the client can tell, then closes.
        std::thread::spawn(move || {
            for _ in 0..2 {
                let (s, _) = l.accept().unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                while r.read_line(&mut line).unwrap() > 0 && !line.ends_with("\r\n\r\n") {}
                (&s).write_all(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let c = client(Duration::from_secs(10));
        let url = format!("http://127.0.0.1:{port}/");
        assert_eq!(c.post(&url, &[], vec![], 10).await.unwrap().status, 204);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(c.post(&url, &[], vec![], 10).await.unwrap().status, 204);
    }

    #[tokio::test]
    async fn errors_say_what_failed() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let c = client(Duration::from_secs(10));
        let e = c.post(&format!("http://127.0.0.1:{free}/"), &[], vec![], 10).await.unwrap_err();
        assert!(matches!(e, Error::Open(OpenError::Tcp { .. })) && e.brief() == "cannot connect", "{e}");
        let e = c.post("http://127.0.0.1:1/", &[("bad header", "x")], vec![], 10).await.unwrap_err();
        assert!(matches!(e, Error::Header), "{e}");
        // A server that never answers: the timeout.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://127.0.0.1:{}/", silent.local_addr().unwrap().port());
        let e = client(Duration::from_millis(300)).post(&url, &[], vec![], 10).await.unwrap_err();
        assert!(matches!(e, Error::Timeout(_)) && e.to_string() == "no answer within 300 ms", "{e}");
    }
}
