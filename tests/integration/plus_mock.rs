//! A mock PM2 Plus backend on 127.0.0.1, for the link's tests: the root's verify call and the
//! websocket on one port (std threads, tungstenite). It records every verify call, upgrade and
//! frame, answers verify as the test says, and lets the test push frames, stop and restart.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::Message;
use tungstenite::handshake::server::{ErrorResponse, Request, Response};

pub const PUBLIC: &str = "PUB-test-key";

/// How the mock answers the verify call.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// `endpoints.ws = http://127.0.0.1:<port><path>` (the scheme rewrite is exercised).
    Ok {
        path: String,
    },
    /// Accepted, with this websocket URL (e.g. a hung server's).
    Elsewhere(String),
    Pending,
    Disabled,
    Inactive,
    /// HTTP 403 with a JSON message (holding whatever text the test gives).
    BadKeys(String),
    /// HTTP 200, HTML.
    Garbage,
    /// HTTP 500, text.
    Http500,
    /// HTTP 307 to this URL.
    Redirect(String),
}

#[derive(Debug, Clone)]
pub struct Verify {
    pub at: Instant,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

#[derive(Debug, Clone)]
pub struct Upgrade {
    pub at: Instant,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Upgrade {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct Frame {
    pub at: Instant,
    pub channel: String,
    pub payload: Value,
    pub raw: String,
}

#[derive(Default)]
struct Shared {
    mode: Mutex<Option<Mode>>,
    secret: Mutex<String>,
    verifies: Mutex<Vec<Verify>>,
    upgrades: Mutex<Vec<Upgrade>>,
    frames: Mutex<Vec<Frame>>,
    outbox: Mutex<Vec<String>>,
    pings: AtomicUsize,
    stop: AtomicBool,
}

pub struct MockPlus {
    pub port: u16,
    shared: Arc<Shared>,
    accept: Option<thread::JoinHandle<()>>,
}

impl MockPlus {
    /// A mock on a free port.
    pub fn start(secret: &str, mode: Mode) -> MockPlus {
        Self::start_on(0, secret, mode)
    }

    /// A mock on `port` (0: any).
    pub fn start_on(port: u16, secret: &str, mode: Mode) -> MockPlus {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("mock PM2 Plus: bind");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared::default());
        *shared.mode.lock().unwrap() = Some(mode);
        *shared.secret.lock().unwrap() = secret.to_string();
        let sh = shared.clone();
        let accept = thread::spawn(move || {
            while !sh.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let sh = sh.clone();
                        thread::spawn(move || serve(s, sh, port));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        MockPlus { port, shared, accept: Some(accept) }
    }

    pub fn root(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = Some(mode);
    }

    /// Stops listening and drops every connection (abruptly, as a crashed backend).
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        // Let the websocket threads notice.
        thread::sleep(Duration::from_millis(100));
    }

    pub fn verifies(&self) -> Vec<Verify> {
        self.shared.verifies.lock().unwrap().clone()
    }

    pub fn upgrades(&self) -> Vec<Upgrade> {
        self.shared.upgrades.lock().unwrap().clone()
    }

    pub fn frames(&self) -> Vec<Frame> {
        self.shared.frames.lock().unwrap().clone()
    }

    pub fn frames_on(&self, channel: &str) -> Vec<Frame> {
        self.frames().into_iter().filter(|f| f.channel == channel).collect()
    }

    pub fn pings(&self) -> usize {
        self.shared.pings.load(Ordering::SeqCst)
    }

    /// Sends a frame to the connected runtime.
    pub fn push(&self, channel: &str, payload: Value) {
        self.shared.outbox.lock().unwrap().push(json!({ "channel": channel, "payload": payload }).to_string());
    }

    /// Polls until `f` returns Some, or panics with `what`.
    pub fn wait<T>(&self, what: &str, timeout: Duration, mut f: impl FnMut(&MockPlus) -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            assert!(Instant::now() < deadline, "mock PM2 Plus: timed out waiting for {what}; frames seen: {:?}", self.channels());
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn channels(&self) -> Vec<String> {
        let mut c: Vec<String> = self.frames().into_iter().map(|f| f.channel).collect();
        c.dedup();
        c
    }

    /// The latest `status` payload whose process list satisfies `f`.
    pub fn wait_status(&self, what: &str, timeout: Duration, f: impl Fn(&[Value]) -> bool) -> Value {
        self.wait(what, timeout, |m| {
            m.frames_on("status")
                .into_iter()
                .rev()
                .find(|fr| fr.payload["data"]["process"].as_array().is_some_and(|p| f(p)))
                .map(|fr| fr.payload)
        })
    }
}

impl Drop for MockPlus {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(s: TcpStream, sh: Arc<Shared>, port: u16) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut first = [0u8; 4];
    if s.peek(&mut first).is_err() {
        return;
    }
    if &first == b"POST" {
        verify(s, &sh, port);
    } else {
        websocket(s, &sh);
    }
}

fn verify(mut s: TcpStream, sh: &Shared, port: u16) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0u8; len];
    if s.read_exact(&mut body).is_err() {
        return;
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let path_ok = head.starts_with("POST /api/node/verifyPM2 ");
    sh.verifies.lock().unwrap().push(Verify { at: Instant::now(), headers, body });
    let mode = sh.mode.lock().unwrap().clone().unwrap();
    if let Mode::Redirect(to) = &mode {
        let _ = write!(s, "HTTP/1.1 307 X\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    }
    let (code, ctype, text) = if !path_ok {
        (404, "text/plain", "not found".to_string())
    } else {
        match mode {
            Mode::Ok { path } => (
                200,
                "application/json",
                json!({"active": true, "pending": false, "disabled": false, "new": true,
                       "endpoints": {"ws": format!("http://127.0.0.1:{port}{path}"), "web": "http://dashboard.invalid"}})
                .to_string(),
            ),
            Mode::Elsewhere(ws) => (200, "application/json", json!({"active": true, "endpoints": {"ws": ws}}).to_string()),
            Mode::Pending => {
                (200, "application/json", json!({"active": true, "pending": true, "endpoints": {"ws": "http://x"}}).to_string())
            }
            Mode::Disabled => {
                (200, "application/json", json!({"active": true, "disabled": true, "endpoints": {"ws": "http://x"}}).to_string())
            }
            Mode::Inactive => (200, "application/json", json!({"active": false, "error": true, "msg": "bucket not active"}).to_string()),
            Mode::BadKeys(msg) => (403, "application/json", json!({"error": true, "msg": msg}).to_string()),
            Mode::Garbage => (200, "text/html", "<html>maintenance</html>".to_string()),
            Mode::Http500 => (500, "text/plain", "Internal Server Error".to_string()),
            Mode::Redirect(_) => unreachable!("answered above"),
        }
    };
    let _ = write!(s, "HTTP/1.1 {code} X\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}", text.len());
}

// The handshake callback's type is tungstenite's.
#[allow(clippy::result_large_err)]
fn websocket(s: TcpStream, sh: &Shared) {
    let secret = sh.secret.lock().unwrap().clone();
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let headers: Vec<(String, String)> =
            req.headers().iter().map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).to_string())).collect();
        let get = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let ok = get("x-km-public") == PUBLIC && get("x-km-secret") == secret;
        sh.upgrades.lock().unwrap().push(Upgrade { at: Instant::now(), path: req.uri().path().to_string(), headers });
        if ok {
            Ok(resp)
        } else {
            let mut r = ErrorResponse::new(Some("bad keys".into()));
            *r.status_mut() = tungstenite::http::StatusCode::UNAUTHORIZED;
            Err(r)
        }
    };
    let Ok(mut ws) = tungstenite::accept_hdr(s, callback) else { return };
    let _ = ws.get_ref().set_read_timeout(Some(Duration::from_millis(20)));
    loop {
        if sh.stop.load(Ordering::SeqCst) {
            return;
        }
        let out: Vec<String> = std::mem::take(&mut *sh.outbox.lock().unwrap());
        for o in out {
            if ws.send(Message::text(o)).is_err() {
                return;
            }
        }
        match ws.read() {
            Ok(Message::Text(t)) => {
                let raw = t.as_str().to_string();
                let v: Value = serde_json::from_str(&raw).unwrap_or(Value::Null);
                let channel = v["channel"].as_str().unwrap_or("<no channel>").to_string();
                sh.frames.lock().unwrap().push(Frame { at: Instant::now(), channel, payload: v["payload"].clone(), raw });
            }
            Ok(Message::Ping(_)) => {
                sh.pings.fetch_add(1, Ordering::SeqCst);
            }
            Ok(Message::Close(_)) => return,
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

/// A backend that accepts TCP connections and never says anything (a hung upstream).
pub struct Hung {
    pub port: u16,
    stop: Arc<AtomicBool>,
    pub accepted: Arc<AtomicUsize>,
}

impl Hung {
    pub fn start() -> Hung {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (st, acc) = (stop.clone(), accepted.clone());
        thread::spawn(move || {
            let mut held = Vec::new();
            while !st.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        acc.fetch_add(1, Ordering::SeqCst);
                        held.push(s);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Hung { port, stop, accepted }
    }
}

impl Drop for Hung {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A tiny HTTP proxy: `CONNECT host:port` tunnels, absolute-form requests are forwarded. It
/// records the request line of every connection.
pub struct Proxy {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (st, sn) = (stop.clone(), seen.clone());
        thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let sn = sn.clone();
                        thread::spawn(move || proxy_conn(s, sn));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Proxy { port, seen, stop }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn proxy_conn(mut client: TcpStream, seen: Arc<Mutex<Vec<String>>>) {
    let _ = client.set_nonblocking(false);
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match client.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let first = head.lines().next().unwrap_or("").to_string();
    seen.lock().unwrap().push(first.clone());
    let mut parts = first.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (authority, rewritten) = if method == "CONNECT" {
        (target.to_string(), None)
    } else {
        // http://host:port/path → host:port, and the request in origin form.
        let rest = target.strip_prefix("http://").unwrap_or(target);
        let (auth, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
        (auth.to_string(), Some(head.replacen(target, &path, 1)))
    };
    let Ok(mut upstream) = TcpStream::connect(&authority) else { return };
    match rewritten {
        None => {
            let _ = client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
        }
        Some(h) => {
            let _ = upstream.write_all(h.as_bytes());
        }
    }
    let (mut c2, mut u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
    thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut u2);
        let _ = u2.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut upstream, &mut client);
    let _ = client.shutdown(std::net::Shutdown::Write);
}
