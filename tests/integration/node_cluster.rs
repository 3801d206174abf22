//! Cluster mode with the things real Node apps do: a Unix socket path, reloads with
//! connection-per-request and keep-alive clients.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::scenario::*;

/// Every worker listens on SOCKET_PATH (a Unix socket) and answers with its pid.
const SOCKET_APP: &str = r#"
const http = require('http');
const cluster = require('cluster');
const server = http.createServer((q, r) => r.end(`${process.pid} ${cluster.worker.id}`));
server.listen(process.env.SOCKET_PATH, () => console.log(`worker ${cluster.worker.id} listening on ${server.address()}`));
"#;

/// One HTTP/1.0 GET over a Unix socket; the body, or None.
pub fn unix_get(path: &Path) -> Option<String> {
    let mut s = UnixStream::connect(path).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

fn socket_workers_share_one_path(policy: &str) {
    let s = Scenario::new().file("app.js", SOCKET_APP).file(
        "e.yml",
        &format!(
            "apps:\n  - name: u\n    script: app.js\n    exec_mode: cluster\n    instances: 3\n    env:\n      SOCKET_PATH: run/app.sock\n      NODE_CLUSTER_SCHED_POLICY: {policy}\n"
        ),
    );
    std::fs::create_dir(s.path().join("run")).unwrap();
    let sock = s.path().join("run/app.sock");
    let mut r = s.start(&["e.yml"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while r.stdout().matches("online (listening").count() < 3 {
        assert!(Instant::now() < deadline, "three workers did not listen:\n{}\n{}", r.stdout(), r.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    // The relative path is the app's (its cwd), as the app expects.
    let mut pids = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.len() < 2 && Instant::now() < deadline {
        let body = unix_get(&sock).unwrap_or_else(|| panic!("no answer on {}:\n{}\n{}", sock.display(), r.stdout(), r.stderr()));
        pids.insert(body.split_whitespace().next().unwrap().to_string());
    }
    assert!(pids.len() >= 2, "requests on the socket were answered by more than one worker: {pids:?}");
    let online = format!("online (listening on {})", sock.display());
    assert_eq!(r.stdout().matches(&online).count(), 3, "{}", r.stdout());
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(Duration::from_secs(10)).unwrap().code(), Some(0), "{}", r.stdout());
    assert!(!sock.exists(), "the socket file is removed with the runtime, as Node removes it");
}

#[test]
fn unix_socket_path_is_shared_by_workers_round_robin() {
    socket_workers_share_one_path("rr");
}

#[test]
fn unix_socket_path_is_shared_by_workers_shared_handle() {
    socket_workers_share_one_path("none");
}

/// Answers with its pid; the reload tests' app.
const HTTP_APP: &str = r#"
require('http').createServer((q, r) => r.end(String(process.pid))).listen(Number(process.env.PORT));
"#;

/// Clients that do not retry: `fresh` threads open a connection per request (HTTP/1.0),
/// `keepalive` threads reuse one HTTP/1.1 connection until the server says `Connection: close`
/// (then open a new one, as every HTTP client does). Any request that fails counts.
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    pub fn start(port: u16, fresh: usize, keepalive: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for i in 0..fresh + keepalive {
            let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
            let keep = i >= fresh;
            threads.push(std::thread::spawn(move || {
                let mut conn: Option<BufReader<TcpStream>> = None;
                while !stop.load(Ordering::Relaxed) {
                    let r = if keep { keepalive_get(port, &mut conn) } else { http_get(port).ok_or_else(|| "no answer".to_string()) };
                    match r {
                        Ok(_) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            conn = None;
                            failures.lock().unwrap().push(e);
                        }
                    }
                }
            }));
        }
        Load { stop, ok, failures, threads }
    }

    /// Stops the clients; (requests answered, failures).
    pub fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        (self.ok.load(Ordering::Relaxed), self.failures.lock().unwrap().clone())
    }
}

/// One GET on a kept-alive connection (opened if needed); the connection is dropped after a
/// response with `Connection: close`.
fn keepalive_get(port: u16, conn: &mut Option<BufReader<TcpStream>>) -> Result<String, String> {
    if conn.is_none() {
        let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
        *conn = Some(BufReader::new(s));
    }
    let c = conn.as_mut().unwrap();
    c.get_mut().write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").map_err(|e| format!("write: {e}"))?;
    let (mut length, mut close) = (0usize, false);
    let mut first = true;
    loop {
        let mut line = String::new();
        let n = c.read_line(&mut line).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(if first { "closed before the response".into() } else { "closed in the headers".into() });
        }
        first = false;
        let l = line.trim_end().to_ascii_lowercase();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.strip_prefix("content-length:") {
            length = v.trim().parse().map_err(|_| format!("bad length {l}"))?;
        }
        if l == "connection: close" {
            close = true;
        }
    }
    let mut body = vec![0u8; length];
    c.read_exact(&mut body).map_err(|e| format!("body: {e}"))?;
    if close {
        *conn = None;
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Starts 4 workers of HTTP_APP with `extra` yml keys and `env` lines, runs `load` through a reload and returns
/// (requests answered, failures) and the runtime's stdout.
fn reload_under(load: impl FnOnce(u16) -> Load, extra: &str, env: &str) -> (u64, Vec<String>, String) {
    let port = free_port();
    let s = Scenario::new().file("app.js", HTTP_APP).file(
        "e.yml",
        &format!(
            "apps:\n  - name: c\n    script: app.js\n    exec_mode: cluster\n    instances: 4\n{extra}    env:\n      PORT: {port}\n{env}"
        ),
    );
    let mut r = s.start(&["e.yml"]);
    wait_count(&r, "online (listening", 4, Duration::from_secs(20));
    wait_http(port, Duration::from_secs(10));
    let l = load(port);
    std::thread::sleep(Duration::from_millis(700));
    let out = std::process::Command::new(BIN)
        .args(["reload", "c"])
        .current_dir(s.path())
        .env("PM2_HOME", s.path().join(".pm2"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Every old worker has left by itself (exit 0, not killed), then a little more load.
    wait_count(&r, "exited with code [0]", 4, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(300));
    let (ok, failures) = l.finish();
    let log = r.stdout();
    assert!(!log.contains("SIGKILL") && !log.contains("via signal [SIGINT]"), "an old worker had to be killed:\n{log}");
    r.signal(libc::SIGTERM);
    r.wait(Duration::from_secs(10));
    (ok, failures, log)
}

/// Waits until `needle` occurs `n` times in the runtime's stdout.
fn wait_count(r: &Running, needle: &str, n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while r.stdout().matches(needle).count() < n {
        assert!(Instant::now() < deadline, "{needle:?} not seen {n} times:\n{}\n{}", r.stdout(), r.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn reload_on_node_26_resets_no_connection_per_request_client() {
    // Node 26's server.close() also closes connections accepted whose request is not read yet
    // (nodejs/node#63470); a retiring worker used to reset 1-3 of them per reload.
    let node = crate::node_versions::node(26);
    let extra = format!("    interpreter: {}\n", node.display());
    let (ok, failures, _) = reload_under(|port| Load::start(port, 4, 0), &extra, "      NODE_CLUSTER_SCHED_POLICY: none\n");
    assert!(failures.is_empty(), "{} of {} requests failed: {failures:?}", failures.len(), ok + failures.len() as u64);
    assert!(ok > 200, "{ok}");
}

#[test]
fn reload_under_keepalive_load_fails_no_request_without_retries() {
    // 32 keep-alive clients that never retry, and one opening a connection per request.
    let (ok, failures, _) = reload_under(|port| Load::start(port, 1, 32), "", "");
    assert!(failures.is_empty(), "{} of {} requests failed: {failures:?}", failures.len(), ok + failures.len() as u64);
    assert!(ok > 1000, "{ok}");
}

/// The compatibility app: an HTTP server on PORT and one on SOCKET_PATH, `cluster.worker.id`
/// in every answer, `process.send('ready')` once both listen, and an unhandled rejection at
/// start (which must not be fatal).
const COMPAT_APP: &str = r#"
const http = require('http');
const cluster = require('cluster');
const handler = (q, r) => r.end(`${process.pid} ${cluster.worker.id} ${process.version}`);
let listening = 0;
const up = () => { if (++listening === 2) process.send('ready'); };
http.createServer(handler).listen(Number(process.env.PORT), '127.0.0.1', up);
http.createServer(handler).listen(process.env.SOCKET_PATH, up);
Promise.reject(new Error('compat rejection'));
"#;

/// A cluster app on every Node major CI installs (18, 20, 22, 24, 26): port and Unix socket,
/// worker ids, wait_ready, the preload's rejection handling, a reload under light load that
/// fails no request, and kill -9 of a worker (replaced, the others keep serving).
fn compat(major: u32) {
    let node = crate::node_versions::node(major);
    let version = crate::node_versions::version(major);
    assert!(version.starts_with(&format!("v{major}.")), "{version}");
    let port = free_port();
    let s = Scenario::new().file("app.js", COMPAT_APP).file(
        "e.yml",
        &format!(
            "apps:\n  - name: c\n    script: app.js\n    exec_mode: cluster\n    instances: 2\n    wait_ready: true\n    listen_timeout: 8000\n    \
             interpreter: {}\n    env:\n      PORT: {port}\n      SOCKET_PATH: app.sock\n",
            node.display()
        ),
    );
    let sock = s.path().join("app.sock");
    let mut r = s.start(&["e.yml"]);
    wait_count(&r, "online (ready)", 2, Duration::from_secs(20));
    // Both workers answer on the port and on the socket, with their own worker ids.
    let mut ids = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while ids.len() < 2 && Instant::now() < deadline {
        let tcp = http_get(port).unwrap_or_else(|| panic!("Node {version}: no answer on the port\n{}", r.stderr()));
        let unix = unix_get(&sock).unwrap_or_else(|| panic!("Node {version}: no answer on the socket\n{}", r.stderr()));
        assert!(tcp.ends_with(&version) && unix.ends_with(&version), "{tcp} / {unix}");
        ids.insert(tcp.split_whitespace().nth(1).unwrap().to_string());
        ids.insert(unix.split_whitespace().nth(1).unwrap().to_string());
    }
    assert_eq!(ids.into_iter().collect::<Vec<_>>(), ["1", "2"], "Node {version}: cluster.worker.id");
    // stderr travels on its own pipe: wait for both workers' lines before counting them.
    let deadline = Instant::now() + Duration::from_secs(10);
    while r.stderr().matches("You have triggered an unhandledRejection").count() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let err = r.stderr();
    assert_eq!(err.matches("You have triggered an unhandledRejection").count(), 2, "Node {version}: {err}");

    // Reload under light load (2 clients, a connection per request): nothing fails.
    let load = Load::start(port, 2, 0);
    std::thread::sleep(Duration::from_millis(300));
    let out = std::process::Command::new(BIN)
        .args(["reload", "c"])
        .current_dir(s.path())
        .env("PM2_HOME", s.path().join(".pm2"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_count(&r, "exited with code [0]", 2, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(200));
    let (ok, failures) = load.finish();
    assert!(failures.is_empty() && ok > 20, "Node {version}: reload: {ok} ok, failed {failures:?}\n{}", r.stdout());

    // kill -9 of one worker: replaced (ready again), and the port answers meanwhile.
    let victim: i32 = http_get(port).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    // SAFETY: kill(2) of one of the runtime's workers.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    assert!(http_get(port).is_some() || http_get(port).is_some(), "Node {version}: the other worker answers");
    wait_count(&r, "online (ready)", 5, Duration::from_secs(20));
    assert_eq!(r.stdout().matches("via signal [SIGKILL]").count(), 1, "{}", r.stdout());
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(Duration::from_secs(10)).unwrap().code(), Some(0), "Node {version}:\n{}", r.stdout());
}

#[test]
fn compat_node_18() {
    compat(18);
}

#[test]
fn compat_node_20() {
    compat(20);
}

#[test]
fn compat_node_22() {
    compat(22);
}

#[test]
fn compat_node_24() {
    compat(24);
}

#[test]
fn compat_node_26() {
    compat(26);
}

/// The first worker needs 1.5 s to finish after its kill signal and keeps running after Node's
/// disconnect (a timer holds it); the later ones leave as soon as they are disconnected.
const SLOW_LEAVER: &str = r#"
const fs = require('fs');
const http = require('http');
http.createServer((q, s) => s.end('ok')).listen(process.env.PORT, () => console.log(`up ${process.pid}`));
let first = true;
try { fs.writeFileSync('first', '', { flag: 'wx' }); } catch (e) { first = false; }
if (first) {
  process.on('SIGINT', () => setTimeout(() => { console.log(`done ${process.pid}`); process.exit(0); }, 1500));
  setInterval(() => {}, 1000);
}
"#;

/// A stop signal during a rolling reload: the worker being retired gets its whole
/// `kill_timeout` (disconnect, the kill signal at half, SIGKILL only at the end), like every
/// other stop, instead of the final sweep's half second.
#[test]
fn sigterm_during_a_reload_gives_the_retiring_worker_its_full_grace() {
    let port = free_port();
    let s = Scenario::new().file("app.js", SLOW_LEAVER).file(
        "e.yml",
        &format!("apps:\n  - name: c\n    script: app.js\n    exec_mode: cluster\n    instances: 1\n    kill_timeout: 5000\n    env:\n      PORT: {port}\n"),
    );
    let mut r = s.start(&["e.yml"]);
    wait_count(&r, "online (listening", 1, Duration::from_secs(20));
    let first = r.stdout().lines().find_map(|l| l.split("up ").nth(1).map(|p| p.trim().to_string())).expect("first worker's pid");
    let out = std::process::Command::new(BIN)
        .args(["reload", "c"])
        .current_dir(s.path())
        .env("PM2_HOME", s.path().join(".pm2"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    r.wait_for("retiring its previous process", Duration::from_secs(20));
    r.signal(libc::SIGTERM);
    let status = r.wait(Duration::from_secs(20)).expect("the runtime stops");
    let log = format!("{}{}", r.stdout(), r.stderr());
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains(&format!("done {first}")), "the retiring worker was cut short:\n{log}");
    assert!(!log.contains("SIGKILL"), "{log}");
}
