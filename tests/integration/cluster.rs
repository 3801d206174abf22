//! Cluster mode: unmodified Node workers share one port with pm-runtime as their primary.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::scenario::*;

const APP: &str = r#"
const cluster = require('cluster');
const http = require('http');
const delay = Number(process.env.READY_DELAY || 0);
const server = http.createServer((q, r) => r.end(JSON.stringify({ pid: process.pid, inst: process.env.NODE_APP_INSTANCE, isWorker: cluster.isWorker, id: cluster.worker && cluster.worker.id })));
server.listen(process.env.PORT, '127.0.0.1', () => {
  console.log(`worker ${process.pid} listening`);
  setTimeout(() => { console.log(`worker ${process.pid} ready`); process.send('ready'); }, delay);
});
"#;

fn get(port: u16) -> Option<serde_json::Value> {
    http_get(port).and_then(|b| serde_json::from_str(&b).ok())
}

fn cluster_scenario(port: u16, extra: &str) -> Scenario {
    Scenario::new().file("app.js", APP).file(
        "e.yml",
        &format!("apps:\n  - name: c\n    script: app.js\n    exec_mode: cluster\n    instances: 4\n{extra}    env:\n      PORT: {port}\n"),
    )
}

/// Starts the runtime and waits until all four workers are online and the port answers.
fn start_cluster(s: &Scenario, port: u16) -> Running {
    let r = s.start(&["e.yml"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while r.stdout().matches("online (listening").count() < 4 {
        assert!(Instant::now() < deadline, "four workers did not come online:\n{}\n{}", r.stdout(), r.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_http(port, Duration::from_secs(10));
    r
}

#[test]
fn four_workers_share_one_port_and_a_killed_worker_is_replaced() {
    let port = free_port();
    let s = cluster_scenario(port, "");
    let mut r = start_cluster(&s, port);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen: BTreeMap<u64, serde_json::Value> = BTreeMap::new();
    while seen.len() < 4 && Instant::now() < deadline {
        if let Some(v) = get(port) {
            seen.insert(v["pid"].as_u64().unwrap(), v);
        }
    }
    assert_eq!(seen.len(), 4, "four distinct pids answer: {seen:?}");
    let mut insts: Vec<String> = seen.values().map(|v| v["inst"].as_str().unwrap().to_string()).collect();
    insts.sort();
    assert_eq!(insts, vec!["0", "1", "2", "3"]);
    assert!(seen.values().all(|v| v["isWorker"] == true && v["id"].as_u64().is_some_and(|id| id >= 1)), "{seen:?}");
    // No Node master: every worker is a direct child of the runtime.
    for pid in seen.keys() {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        assert!(status.contains(&format!("PPid:\t{}\n", r.pid())), "worker {pid} is not our direct child");
    }

    // kill -9 one worker: it is replaced and the port answers throughout.
    let victim = *seen.keys().next().unwrap();
    // SAFETY: kill(2) of one of the runtime's workers.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    let (mut ok, mut failed) = (0, 0);
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        if get(port).is_some() { ok += 1 } else { failed += 1 }
    }
    assert!(ok > 50 && failed <= 1, "ok {ok} failed {failed} (at most the connection the dead worker held)");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut pids = std::collections::BTreeSet::new();
    while pids.len() < 4 && Instant::now() < deadline {
        if let Some(v) = get(port) {
            pids.insert(v["pid"].as_u64().unwrap());
        }
    }
    assert!(pids.len() == 4 && !pids.contains(&victim), "replaced: {pids:?}");
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(Duration::from_secs(10)).unwrap().code(), Some(0));
}

#[test]
fn rolling_reload_under_load_fails_no_request() {
    let port = free_port();
    let s = cluster_scenario(port, "");
    let mut r = start_cluster(&s, port);
    let load = env!("CARGO_MANIFEST_DIR").to_string() + "/tests/fixtures/load.py";
    let client =
        std::process::Command::new("python3").args([&load, &port.to_string(), "5"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let out = Command::new(BIN).args(["reload", "c"]).current_dir(s.path()).env("PM2_HOME", s.path().join(".pm2")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let result = client.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&result.stdout).replace('\'', "\"");
    let stats: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_else(|_| panic!("{text}"));
    assert_eq!(stats["fail"], 0, "{stats}");
    assert!(stats["ok"].as_u64().unwrap() > 1000, "{stats}");
    // Every old worker was retired and left by itself (exit 0), after its replacement was online.
    let log = r.stdout();
    assert_eq!(log.matches("retiring its previous process").count(), 4, "{log}");
    r.signal(libc::SIGTERM);
    r.wait(Duration::from_secs(10));
}

#[test]
fn with_wait_ready_the_old_worker_stays_until_its_replacement_is_ready() {
    let port = free_port();
    let s = cluster_scenario(port, "    wait_ready: true\n    listen_timeout: 5000\n");
    let mut cmd = s.command(&["e.yml"]);
    cmd.env("READY_DELAY", "700");
    let mut r = Running::start(cmd);
    poll("four workers online (ready)", Duration::from_secs(15), || (r.stdout().matches("online (ready)").count() >= 4).then_some(()));
    wait_http(port, Duration::from_secs(5));
    let before: std::collections::BTreeSet<u64> = (0..40).filter_map(|_| get(port)).map(|v| v["pid"].as_u64().unwrap()).collect();
    let t = Instant::now();
    let out = Command::new(BIN).args(["reload", "c"]).current_dir(s.path()).env("PM2_HOME", s.path().join(".pm2")).output().unwrap();
    assert!(out.status.success());
    // For 600 ms (the replacements are not ready before 700 ms) only old workers may answer.
    while t.elapsed() < Duration::from_millis(600) {
        let v = get(port).expect("the port answers during the reload");
        assert!(before.contains(&v["pid"].as_u64().unwrap()), "a new worker answered before sending 'ready'");
    }
    poll("four workers retired", Duration::from_secs(10), || {
        (r.stdout().matches("retiring its previous process").count() >= 4).then_some(())
    });
    let log = r.stdout();
    assert_eq!(log.matches("retiring its previous process").count(), 4, "{log}");
    for line in log.lines().filter(|l| l.contains("retiring its previous process")) {
        let id = line.split("App [c:").nth(1).unwrap().split(']').next().unwrap();
        let ready_at = log.rfind(&format!("App [c:{id}] online (ready)")).unwrap();
        assert!(ready_at < log.find(line).unwrap(), "retired before its replacement was ready:\n{log}");
    }
    r.signal(libc::SIGTERM);
    r.wait(Duration::from_secs(10));
}

#[test]
fn python_instances_share_one_port_through_listen_fds() {
    let port = free_port();
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python-listen-fds/app.py")).unwrap();
    let s = Scenario::new().file("app.py", &example).file(
        "e.yml",
        &format!("apps:\n  - name: py\n    script: app.py\n    instances: 2\n    listen_fds: true\n    env:\n      PORT: {port}\n      HOST: 127.0.0.1\n"),
    );
    let mut r = s.start(&["e.yml"]);
    r.wait_for("instance 0 serving on fd 3", Duration::from_secs(10));
    r.wait_for("instance 1 serving on fd 3", Duration::from_secs(10));
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < 2 && Instant::now() < deadline {
        if let Some(body) = http_get(port) {
            seen.insert(body.split_whitespace().nth(2).unwrap_or("").to_string());
        }
    }
    assert_eq!(seen.len(), 2, "both instances answer on one port: {seen:?}");
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(Duration::from_secs(10)).unwrap().code(), Some(0));
}

#[test]
fn sd_notify_ready_marks_any_language_online() {
    let s = Scenario::new()
        .file(
            "n.py",
            "import os, socket, time\nprint('booting', flush=True)\ntime.sleep(0.5)\naddr = os.environ['NOTIFY_SOCKET']\nif addr.startswith('@'):\n    addr = '\\0' + addr[1:]\ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\ns.sendto(b'STATUS=warm\\nREADY=1', addr)\nprint('notified', flush=True)\ntime.sleep(30)\n",
        )
        .file("e.yml", "apps:\n  - name: n\n    script: n.py\n    wait_ready: true\n    listen_timeout: 5000\n");
    let mut r = s.start(&["e.yml"]);
    r.wait_for("App [n:0] online (READY=1)", Duration::from_secs(10));
    let out = r.stdout();
    assert!(!out.contains("did not send 'ready'"), "{out}");
    r.signal(libc::SIGTERM);
    r.wait(Duration::from_secs(5));
}
