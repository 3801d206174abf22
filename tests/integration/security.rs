//! The attacks issue #19 closes, each played against the real binary: a connection flood
//! against the probes, logs read without the token, an app that asks root to bind for it, the
//! write token in an app's env, a planted symlink in PM2_HOME. The tests run as root and play
//! the other user with uid 65534 (nobody).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

use crate::scenario::*;

const NOBODY: u32 = 65534;

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An app that prints its environment cannot print the web token: apps never inherit it.
#[test]
fn apps_never_inherit_the_web_token() {
    let s = Scenario::new().file("dump.sh", "#!/bin/sh\necho \"token=[$PM_RUNTIME_WEB_TOKEN]\"\nwhile :; do sleep 1; done\n");
    let mut cmd = s.command(&["dump.sh", "--web=0"]);
    cmd.env("PM_RUNTIME_WEB_TOKEN", "webtok-4c1d9e");
    let r = Running::start(cmd);
    r.wait_for("token=[", Duration::from_secs(10));
    let out = r.stdout();
    assert!(out.contains("token=[]"), "{out}");
    assert!(!out.contains("webtok-4c1d9e"), "{out}");
}

/// Another user owns PM2_HOME and planted, under the preload's old temporary names (the
/// runtime is PID 1, so the name was predictable), symlinks to a root-only file. The runtime
/// must refuse the PM2_HOME before writing anything into it: the file keeps its content and mode.
#[test]
fn a_planted_preload_symlink_in_another_users_pm2_home_writes_nothing() {
    require_tool("unshare", &["--pid", "--fork", "--mount-proc", "true"]);
    let s = Scenario::new().file("app.js", "console.log('app ran'); setInterval(() => {}, 1000);\n").file("victim", "root only\n");
    let victim = s.path().join("victim");
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let home = s.path().join("theirs");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    for name in ["pm-runtime-preload.js", "pm-runtime-preload.cjs"] {
        let link = home.join(format!(".{name}.1"));
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    std::os::unix::fs::chown(&home, Some(NOBODY), Some(NOBODY)).unwrap();
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", BIN, "app.js"]).current_dir(s.path()).env("PM2_HOME", &home);
    let mut r = Running::start(cmd);
    let status = r.wait(Duration::from_secs(20)).expect("the runtime must refuse, not run");
    assert_eq!(status.code(), Some(78), "{}{}", r.stdout(), r.stderr());
    assert!(r.stderr().contains("belongs to uid 65534"), "{}", r.stderr());
    assert!(!r.stdout().contains("app ran"));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root only\n", "the victim was overwritten");
    assert_eq!(std::fs::metadata(&victim).unwrap().mode() & 0o777, 0o600, "the victim was chmodded");
    assert_eq!(std::fs::read_dir(&home).unwrap().count(), 2, "something was written into their PM2_HOME");
}

/// The port the runtime says its HTTP server listens on (`--web=0` picks one).
fn web_port(r: &Running) -> u16 {
    r.wait_for("HTTP API, /metrics and dashboard on http://", Duration::from_secs(10));
    let out = r.stdout() + &r.stderr();
    let at = out.find("on http://").unwrap() + "on http://".len();
    let addr: String = out[at..].chars().take_while(|c| !c.is_whitespace()).collect();
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

/// A TCP connection to 127.0.0.1:`port` from the local address `from` (any of 127.0.0.0/8):
/// another client, as another pod would be.
fn connect_from(from: [u8; 4], port: u16) -> TcpStream {
    use std::os::fd::FromRawFd;
    let sockaddr = |ip: [u8; 4], port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(ip) },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: socket/bind/connect with valid, correctly sized sockaddr_in values; the fd is
    // handed to TcpStream, which owns it from then on.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let stream = TcpStream::from_raw_fd(fd);
        let local = sockaddr(from, 0);
        assert_eq!(libc::bind(fd, (&raw const local).cast(), len), 0, "bind: {}", std::io::Error::last_os_error());
        let remote = sockaddr([127, 0, 0, 1], port);
        assert_eq!(libc::connect(fd, (&raw const remote).cast(), len), 0, "connect: {}", std::io::Error::last_os_error());
        stream
    }
}

/// One request on a fresh connection from 127.0.0.1; (status, body). 0 when nothing answers.
fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return (0, String::new()) };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    let _ = s.write_all(req.as_bytes());
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0), body.to_string())
}

/// Reads what has come on `s` within `timeout` (the connection stays open).
fn read_some(s: &mut TcpStream, timeout: Duration) -> String {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// An app prints a secret; a client on the network asks `/logs` for it, as a JSON backlog and
/// as a live stream: without the token it gets 401 and no line.
#[test]
fn logs_are_not_readable_without_the_token() {
    let s = Scenario::new().file("leaky.sh", "#!/bin/sh\necho DB_PASSWORD=hunter2-5d1\nwhile :; do sleep 1; done\n");
    let mut cmd = s.command(&["leaky.sh", "--web=0"]);
    cmd.env("PM_RUNTIME_WEB_TOKEN", "good-token-1234567");
    let r = Running::start(cmd);
    let port = web_port(&r);
    r.wait_for("hunter2-5d1", Duration::from_secs(10));
    for path in ["/logs?lines=10", "/logs?follow=1", "/logs?app=leaky&follow=1&lines=100"] {
        for auth in [None, Some("Bearer wrong"), Some("good-token-1234567")] {
            let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
            let (code, body) = request(port, "GET", path, &headers, "");
            assert_eq!(code, 401, "{path} {auth:?}: {body}");
            assert!(!body.contains("hunter2"), "{path}: {body}");
        }
    }
    let (code, body) = request(port, "GET", "/logs?lines=10", &[("Authorization", "Bearer good-token-1234567")], "");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("hunter2-5d1"), "the token holder reads them: {body}");
    // An empty PM_RUNTIME_WEB_TOKEN (a read-only API) has no logs to give.
    drop(r);
    let mut cmd = s.command(&["leaky.sh", "--web=0"]);
    cmd.env("PM_RUNTIME_WEB_TOKEN", "");
    let r = Running::start(cmd);
    let port = web_port(&r);
    r.wait_for("hunter2-5d1", Duration::from_secs(10));
    let (code, body) = request(port, "GET", "/logs?lines=10", &[("Authorization", "Bearer ")], "");
    assert_eq!(code, 403, "{body}");
    assert!(!body.contains("hunter2"), "{body}");
}

/// One client (another pod, 127.0.0.2 here) holds hundreds of connections: partial POST bodies,
/// log streams, half-sent headers. The probes, asked from another address as kubelet does,
/// answer 200 all along; a POST without the token is refused before its body is read; a body
/// that never ends times out; streams are capped.
#[test]
fn a_connection_flood_never_fails_the_probes() {
    // Room for the connections on the test's side (the runtime inherits the limit).
    // SAFETY: getrlimit/setrlimit on our own process with a valid struct.
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max.min(4096);
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    let s = Scenario::new().file("a.sh", "#!/bin/sh\nwhile :; do echo a line; sleep 0.5; done\n");
    let mut cmd = s.command(&["a.sh", "--web=0"]);
    cmd.env("PM_RUNTIME_WEB_TOKEN", "flood-token-0123456");
    let r = Running::start(cmd);
    let port = web_port(&r);
    wait_until("ready", Duration::from_secs(10), || request(port, "GET", "/readyz", &[], "").0 == 200);

    let attacks: [&[u8]; 3] = [
        b"POST /api/v1/processes/a/restart HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 60000\r\n\r\nabc",
        b"GET /logs?follow=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ",
    ];
    let mut held: Vec<TcpStream> = Vec::new();
    for i in 0..300 {
        let mut c = connect_from([127, 0, 0, 2], port);
        let _ = c.write_all(attacks[i % 3]);
        held.push(c);
    }
    // A POST without the token is answered at once, its body unread.
    let mut c = connect_from([127, 0, 0, 3], port);
    c.write_all(attacks[0]).unwrap();
    let t = Instant::now();
    let answer = read_some(&mut c, Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer:?}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    // Beyond its share, an address is turned away.
    let mut slow: Vec<TcpStream> = (0..20).map(|_| connect_from([127, 0, 0, 5], port)).collect();
    let refused = slow
        .iter_mut()
        .map(|c| {
            let _ = c.write_all(attacks[2]);
            read_some(c, Duration::from_millis(300))
        })
        .filter(|a| a.starts_with("HTTP/1.1 503") && a.contains("too many connections from 127.0.0.5 (at most 16)"))
        .count();
    assert_eq!(refused, 4, "16 of 20 are served");
    // Past the header timeout (5 s) too, the probes answer.
    let until = Instant::now() + Duration::from_secs(7);
    while Instant::now() < until {
        for probe in ["/livez", "/readyz"] {
            let (code, body) = request(port, "GET", probe, &[], "");
            assert_eq!(code, 200, "{probe}: {body}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(held);
    drop(slow);

    // Busy clients on nine addresses fill the pool (each holds its slot for the 10 s a body may
    // take; those beyond the pool are answered at once from the reserve): the probes still
    // answer, from the reserve, and nothing else does.
    let busy = b"POST /api/v1/processes/a/scale HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer flood-token-0123456\r\nContent-Length: 100\r\n\r\n{";
    let mut held: Vec<TcpStream> = Vec::new();
    for peer in 10..19u8 {
        for _ in 0..16 {
            let mut c = connect_from([127, 0, 0, peer], port);
            let _ = c.write_all(busy);
            held.push(c);
        }
    }
    wait_until("the probes answer from the reserve", Duration::from_secs(3), || request(port, "GET", "/livez", &[], "").0 == 200);
    let (code, body) = request(port, "GET", "/readyz", &[], "");
    assert_eq!(code, 200, "{body}");
    let (code, body) = request(port, "GET", "/api/v1/processes", &[], "");
    assert_eq!(code, 503, "only probes on the reserve: {body}");
    assert!(body.contains("only /livez, /readyz and /healthz"), "{body}");
    drop(held);
    wait_until("the pool has room again", Duration::from_secs(10), || request(port, "GET", "/api/v1/processes", &[], "").0 == 200);

    // With the token, a body that never ends is given up after 10 s.
    let mut c = connect_from([127, 0, 0, 4], port);
    c.write_all(b"POST /api/v1/processes/a/scale HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer flood-token-0123456\r\nContent-Length: 100\r\n\r\n{\"co").unwrap();
    let t = Instant::now();
    let answer = read_some(&mut c, Duration::from_secs(30));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(t.elapsed() >= Duration::from_secs(9), "{:?}", t.elapsed());

    // Log streams are capped, even for the token holder.
    let follow = b"GET /logs?follow=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer flood-token-0123456\r\n\r\n";
    let mut streams = Vec::new();
    for i in 0..16u8 {
        let mut c = connect_from([127, 0, 0, 20 + i / 8], port);
        c.write_all(follow).unwrap();
        let answer = read_some(&mut c, Duration::from_secs(10));
        assert!(answer.starts_with("HTTP/1.1 200"), "stream {i}: {answer:?}");
        streams.push(c);
    }
    let mut c = connect_from([127, 0, 0, 30], port);
    c.write_all(follow).unwrap();
    let answer = read_some(&mut c, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 503") && answer.contains("too many log streams"), "{answer:?}");
    assert_eq!(request(port, "GET", "/livez", &[], "").0, 200);
}

/// Tries to listen on each of `TRIES` (JSON: ports and paths) and says how it went.
const LISTENER_APP: &str = r#"
const net = require('net');
for (const t of JSON.parse(process.env.TRIES)) {
  const srv = net.createServer(c => c.end('hi'));
  srv.on('error', e => console.log(`listen ${t}: ${e.code}`));
  srv.listen(t, () => console.log(`listen ${t}: ok`));
}
setInterval(() => {}, 1000);
"#;

/// Writes `queryServer` lines straight onto its IPC channel (fd 3), as a hostile app would.
const RAW_QUERY_APP: &str = r#"
const fs = require('fs');
const q = (seq, o) => fs.writeSync(3, JSON.stringify(Object.assign(
  { cmd: 'NODE_CLUSTER', act: 'queryServer', seq, index: 0, data: null, backlog: 511, flags: 0 }, o)) + '\n');
q(1, { address: null, port: Number(process.env.TCP_PORT), addressType: 4 });
q(2, { address: process.env.SOCK, port: -1, addressType: -1 });
console.log('queries sent');
setInterval(() => {}, 1000);
"#;

fn listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// An app dropped to `nobody` asks the root runtime to bind for it: a fork-mode app by writing
/// `queryServer` on fd 3 gets nothing at all; a cluster app gets only what nobody could bind
/// itself (no port below 1024, no socket in a root directory, no replacing root's socket file),
/// and its socket files are its own.
#[test]
fn an_app_of_another_user_cannot_make_the_runtime_bind_for_it() {
    assert_eq!(std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap().trim(), "1024");
    let s = Scenario::new().file("listen.js", LISTENER_APP).file("raw.js", RAW_QUERY_APP);
    std::fs::set_permissions(s.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root_dir = s.path().join("root-only");
    std::fs::create_dir(&root_dir).unwrap();
    std::fs::set_permissions(&root_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let theirs = s.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();
    // A socket file of root's in nobody's directory, whose listener is gone.
    let roots_socket = theirs.join("roots.sock");
    drop(std::os::unix::net::UnixListener::bind(&roots_socket).unwrap());
    let (fork_port, free) = (free_port(), free_port());
    let tries = serde_json::json!([
        1023,
        free,
        root_dir.join("c.sock").to_str().unwrap(),
        theirs.join("ok.sock").to_str().unwrap(),
        roots_socket.to_str().unwrap()
    ]);
    let s = s.file(
        "e.yml",
        &format!(
            "apps:\n  - name: raw\n    script: raw.js\n    uid: nobody\n    env:\n      TCP_PORT: '{fork_port}'\n      SOCK: {}\n  - name: c\n    script: listen.js\n    exec_mode: cluster\n    instances: 1\n    uid: nobody\n    env:\n      TRIES: '{tries}'\n",
            root_dir.join("fork.sock").display()
        ),
    );
    let r = s.start(&["e.yml"]);
    r.wait_for("queries sent", Duration::from_secs(15));
    for t in tries.as_array().unwrap() {
        let t = t.to_string().trim_matches('"').to_string();
        r.wait_for(&format!("listen {t}: "), Duration::from_secs(15));
    }
    r.wait_for("a queryServer from a Node app not in cluster mode is refused", Duration::from_secs(10));
    let out = r.stdout();
    for (t, want) in [
        ("1023".to_string(), "EACCES"),
        (free.to_string(), "ok"),
        (root_dir.join("c.sock").display().to_string(), "EACCES"),
        (theirs.join("ok.sock").display().to_string(), "ok"),
        (roots_socket.display().to_string(), "EADDRINUSE"),
    ] {
        assert!(out.contains(&format!("listen {t}: {want}")), "{t}: want {want}:\n{out}");
    }
    assert!(!listening(1023) && !listening(fork_port), "nothing listens for the app on those ports");
    assert!(listening(free));
    assert!(!root_dir.join("c.sock").exists() && !root_dir.join("fork.sock").exists(), "no file in root's directory");
    let ok = std::fs::symlink_metadata(theirs.join("ok.sock")).unwrap();
    assert_eq!(ok.uid(), NOBODY, "the socket made for nobody is nobody's");
    assert_eq!(std::fs::symlink_metadata(&roots_socket).unwrap().uid(), 0, "root's socket file was replaced");
}

/// `serve` with its default root, the app's cwd, where users keep `.env` and `.git`: a client
/// asks for them and gets 404; the site itself is served; `PM2_SERVE_DOTFILES=true` opts in.
#[test]
fn serve_keeps_dotfiles_of_the_apps_cwd_private() {
    let (port, open_port) = (free_port(), free_port());
    let s = Scenario::new()
        .file("index.html", "<h1>site</h1>")
        .file(".env", "DB_PASSWORD=dotenv-91c2")
        .file(".git/config", "[remote] url=https://token-7a1@example.com/x.git")
        .file(".well-known/security.txt", "Contact: x")
        .file(
            "e.yml",
            &format!(
                "apps:\n  - name: web\n    script: serve\n    env:\n      PM2_SERVE_PORT: {port}\n      PM2_SERVE_SPA: 'true'\n  - name: open\n    script: serve\n    env:\n      PM2_SERVE_PORT: {open_port}\n      PM2_SERVE_DOTFILES: 'true'\n"
            ),
        );
    let r = s.start(&["e.yml"]);
    let get = |port: u16, path: &str| -> (u16, String) {
        let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) else { return (0, String::new()) };
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(c, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        let mut raw = String::new();
        let _ = c.read_to_string(&mut raw);
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        (head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0), body.to_string())
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(get(port, "/").0 == 200 && get(open_port, "/").0 == 200) {
        assert!(Instant::now() < deadline, "both sites serve:\n{}\n{}", r.stdout(), r.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    for path in ["/.env", "/.git/config", "/%2eenv", "/x/../.git/config", "/deep/route/.env"] {
        let (code, body) = get(port, path);
        assert_eq!(code, 404, "{path}: {body}");
        assert!(!body.contains("dotenv-91c2") && !body.contains("token-7a1"), "{path}: {body}");
    }
    assert_eq!(get(port, "/.well-known/security.txt"), (200, "Contact: x".to_string()));
    assert_eq!(get(open_port, "/.env"), (200, "DB_PASSWORD=dotenv-91c2".to_string()), "opted in");
}

/// PM2_HOME is a symlink to a directory of ours that others may write to (where they could
/// swap the preload every Node app loads): the runtime refuses it, naming the mode.
#[test]
fn a_symlinked_pm2_home_that_others_may_write_is_refused() {
    let s = Scenario::new().file("a.sh", "#!/bin/sh\necho ran\nwhile :; do sleep 1; done\n");
    let real = s.path().join("shared-home");
    std::fs::create_dir(&real).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o777)).unwrap();
    let link = s.path().join("home-link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let mut c = s.command(&["a.sh"]);
    c.env("PM2_HOME", &link);
    let mut r = Running::start(c);
    let status = r.wait(Duration::from_secs(10)).expect("the runtime must refuse, not run");
    assert_eq!(status.code(), Some(78), "{}{}", r.stdout(), r.stderr());
    assert!(
        r.stderr().contains(&format!("PM2_HOME {} is a symlink to a directory others may write to (mode 777)", link.display())),
        "{}",
        r.stderr()
    );
    assert!(!r.stdout().contains("ran"));
    assert_eq!(std::fs::read_dir(&real).unwrap().count(), 0, "nothing written there");
}

/// (status, head) of a GET naming `host`.
fn get_as(port: u16, path: &str, host: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    (raw.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0), raw)
}

/// DNS rebinding: a page on evil.example re-points its name at 127.0.0.1 and reads the API from
/// the visitor's browser. The request names evil.example, and is refused; by address,
/// localhost or a listed name it is served. Other origins may not read the API's rows (no
/// CORS header there); PM2's `/` keeps it.
#[test]
fn a_rebound_host_name_reads_nothing_and_other_origins_get_no_cors() {
    let s = Scenario::new().file("a.sh", "#!/bin/sh\nwhile :; do sleep 1; done\n");
    let r = s.start(&["a.sh", "--web=0"]);
    let port = web_port(&r);
    for path in ["/", "/api/v1/processes", "/metrics", "/metrics/apps", "/dashboard", "/logs"] {
        for host in [format!("evil.example:{port}"), "evil.example".to_string(), format!("127.0.0.1.evil.example:{port}")] {
            let (code, raw) = get_as(port, path, &host);
            assert_eq!(code, 421, "{path} as {host}: {raw}");
            assert!(!raw.contains("\"processes\"") && !raw.contains("pm_runtime_"), "{raw}");
        }
    }
    assert_eq!(get_as(port, "/livez", "evil.example").0, 200, "probes never depend on the name");
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}"), format!("[::1]:{port}")] {
        assert_eq!(get_as(port, "/metrics", &host).0, 200, "{host}");
    }
    let (code, head) = get_as(port, "/api/v1/processes", "127.0.0.1");
    assert_eq!(code, 200);
    assert!(!head.to_ascii_lowercase().contains("access-control-allow-origin"), "{head}");
    let (code, head) = get_as(port, "/", "127.0.0.1");
    assert_eq!(code, 200);
    assert!(head.contains("access-control-allow-origin: *"), "PM2's --web document keeps it: {head}");
    drop(r);
    let mut cmd = s.command(&["a.sh", "--web=0"]);
    cmd.env("PM_RUNTIME_WEB_HOSTS", "metrics.example.com");
    let r = Running::start(cmd);
    let port = web_port(&r);
    assert_eq!(get_as(port, "/metrics", "metrics.example.com:9615").0, 200, "a listed name");
    assert_eq!(get_as(port, "/metrics", "evil.example").0, 421);
}

/// A cluster worker that answers the runtime's prom-client request with what `METRICS` holds,
/// or (`SILENT`) never answers.
const METRICS_APP: &str = r#"
process.on('message', m => {
  if (!m || m.type !== 'prom-client:getMetricsReq' || process.env.SILENT) return;
  process.send({ type: 'prom-client:getMetricsRes', requestId: m.requestId, metrics: [JSON.parse(process.env.METRICS)] });
});
console.log('worker up');
setInterval(() => {}, 1000);
"#;

/// One cluster app forges another's series through the names it reports (a metric name, a
/// `metricName`, a label name and a type carrying a newline and a whole exposition line); the
/// forged lines never appear, the honest app's do. A second gather while one is in flight is
/// turned away at once.
#[test]
fn an_app_cannot_forge_another_apps_metrics() {
    let forged = "\nbilling_requests_total{app=\"billing\"} 0";
    let honest = serde_json::json!([{"name": "billing_requests_total", "help": "Requests", "type": "counter", "aggregator": "sum",
        "values": [{"value": 42, "labels": {}}]}]);
    let evil = serde_json::json!([
        {"name": format!("evil_total{forged}"), "help": "h", "type": "counter", "aggregator": "sum", "values": [{"value": 1, "labels": {}}]},
        {"name": "evil2_total", "help": "h", "type": "counter", "aggregator": "sum", "values": [
            {"value": 1, "metricName": format!("evil2_total{forged}"), "labels": {}},
            {"value": 1, "labels": {format!("x=\"1\"}} 1{forged}"): "v"}},
            {"value": 7, "labels": {"ok": "yes"}}]},
        {"name": "evil3", "help": "h", "type": format!("gauge{forged}"), "aggregator": "sum", "values": [{"value": 1, "labels": {}}]},
    ]);
    let yaml = |name: &str, metrics: &serde_json::Value, silent: bool| {
        format!(
            "  - name: {name}\n    script: m.js\n    exec_mode: cluster\n    instances: 1\n    env:\n      METRICS: '{}'\n{}",
            metrics.to_string().replace('\'', "''"),
            if silent { "      SILENT: '1'\n" } else { "" }
        )
    };
    let s = Scenario::new()
        .file("m.js", METRICS_APP)
        .file("e.yml", &format!("apps:\n{}{}", yaml("billing", &honest, false), yaml("evil", &evil, false)));
    let r = s.start(&["e.yml", "--web=0"]);
    let port = web_port(&r);
    wait_until("both workers are up", Duration::from_secs(15), || r.stdout().matches("worker up").count() >= 2);
    let mut text = String::new();
    wait_until("both apps answered", Duration::from_secs(10), || {
        text = request(port, "GET", "/metrics/apps", &[], "").1;
        text.contains("billing_requests_total{app=\"billing\"} 42") && text.contains("evil2_total")
    });
    let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
    assert_eq!(samples, ["billing_requests_total{app=\"billing\"} 42", "evil2_total{app=\"evil\",ok=\"yes\"} 7"], "{text}");
    assert!(text.contains("# pm-runtime: evil: a metric named"), "{text}");
    drop(r);

    // A worker that never answers holds a gather for 2 s; another one meanwhile is refused.
    let s = Scenario::new().file("m.js", METRICS_APP).file("e.yml", &format!("apps:\n{}", yaml("quiet", &honest, true)));
    let r = s.start(&["e.yml", "--web=0"]);
    let port = web_port(&r);
    r.wait_for("worker up", Duration::from_secs(15));
    wait_until("the worker is online", Duration::from_secs(10), || {
        request(port, "GET", "/api/v1/processes", &[], "").1.contains("\"status\":\"online\"")
    });
    let first = std::thread::spawn(move || request(port, "GET", "/metrics/apps", &[], ""));
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    let (code, body) = request(port, "GET", "/metrics/apps", &[], "");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("in progress"), "{body}");
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(first.join().unwrap().0, 200);
}

/// Traps for log and pid files: `nobody` created the log directory first with
/// `out.log -> root's file` in it (their own link, in their own directory), and hard links to
/// root files sit in a world-writable directory under the error log's and pid file's names.
/// Nothing is appended to or truncated in root's files, and the runtime says why.
#[test]
fn planted_symlinks_and_hard_links_never_reach_roots_files() {
    let s = Scenario::new()
        .file("victim-out", "root's out\n")
        .file("victim-err", "root's err\n")
        .file("victim-pid", "root's pid\n")
        .file("app.sh", "#!/bin/sh\necho leak-out\necho leak-err >&2\nwhile :; do sleep 1; done\n")
        .file(
            "eco.yml",
            "apps:\n  - name: app\n    script: app.sh\n    out_file: theirs/out.log\n    error_file: shared/err.log\n    pid_file: shared/app.pid\n",
        );
    let theirs = s.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::symlink(s.path().join("victim-out"), theirs.join("out.log")).unwrap();
    std::os::unix::fs::lchown(theirs.join("out.log"), Some(NOBODY), Some(NOBODY)).unwrap();
    std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();
    let shared = s.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::hard_link(s.path().join("victim-err"), shared.join("err.log")).unwrap();
    // PM2 names an instance's pid file `app-<pm_id>.pid`.
    std::fs::hard_link(s.path().join("victim-pid"), shared.join("app-0.pid")).unwrap();

    let mut r = s.start(&["eco.yml"]);
    r.wait_for("App [app:0] online", Duration::from_secs(10));
    r.wait_for("cannot write pid file", Duration::from_secs(10));
    wait_until("both log files are refused", Duration::from_secs(10), || r.stderr().matches("cannot open log file").count() >= 2);
    let err = r.stderr();
    assert!(err.contains(&format!("refusing to follow the symlink {}", theirs.join("out.log").display())), "{err}");
    assert!(err.contains("it belongs to uid 65534, neither this runtime (uid 0) nor the directory's owner"), "{err}");
    assert!(err.contains(&format!("refusing to write to {}: it has 2 hard links", shared.join("err.log").display())), "{err}");
    std::thread::sleep(Duration::from_millis(500));
    for (victim, content) in [("victim-out", "root's out\n"), ("victim-err", "root's err\n"), ("victim-pid", "root's pid\n")] {
        assert_eq!(std::fs::read_to_string(s.path().join(victim)).unwrap(), content, "{victim} was written");
    }
    r.signal(libc::SIGTERM);
    r.wait(Duration::from_secs(10)).expect("stopped");
}

/// An app declares custom actions without end (each kept for the instance's life in PID 1's
/// memory): the runtime keeps 64, and none with an oversized name.
#[test]
fn an_app_cannot_grow_the_runtime_with_custom_actions() {
    let s = Scenario::new().file(
        "app.js",
        "process.send({ type: 'axm:action', data: { action_name: 'x'.repeat(100000), arity: 1 } });\nfor (let i = 0; i < 5000; i++) process.send({ type: 'axm:action', data: { action_name: 'act' + i, arity: 1 } });\nprocess.send('done', () => console.log('all sent'));\nsetInterval(() => {}, 1000);\n",
    );
    let r = s.start(&["app.js"]);
    r.wait_for("all sent", Duration::from_secs(20));
    let mut actions = Vec::new();
    wait_until("the actions are in jlist", Duration::from_secs(10), || {
        let (_, out, _) = s.cli(&["jlist"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        actions = v[0]["pm2_env"]["axm_actions"].as_array().cloned().unwrap_or_default();
        actions.len() >= 64
    });
    std::thread::sleep(Duration::from_millis(300));
    let (_, out, _) = s.cli(&["jlist"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let actions = v[0]["pm2_env"]["axm_actions"].as_array().unwrap();
    assert_eq!(actions.len(), 64);
    assert_eq!(actions[0]["action_name"], "act0", "the oversized name was not kept");
}

/// PID 1 must not panic on a flag value: `--delay` with an infinite or huge number of seconds
/// is a usage error that names the flag.
#[test]
fn an_impossible_delay_is_a_usage_error_not_a_panic() {
    let s = Scenario::new().file("a.sh", "#!/bin/sh\necho ran\n");
    for bad in ["inf", "1e300", "NaN", "soon"] {
        let (status, out, err) = s.run(&["start", "--delay", bad, "a.sh"], Duration::from_secs(10));
        assert_eq!(status.code(), Some(64), "--delay {bad}: {out}{err}");
        assert!(err.contains("--delay") && err.contains("expected a positive number of seconds"), "{err}");
        assert!(!out.contains("ran"));
    }
    let (status, out, err) = s.run(&["start", "--delay", "0", "a.sh"], Duration::from_secs(10));
    assert!(out.contains("ran"), "--delay 0 still works: {status:?} {out}{err}");
}
