//! Cluster mode with the things real Node apps do: a Unix socket path, reloads with
//! connection-per-request and keep-alive clients.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
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
