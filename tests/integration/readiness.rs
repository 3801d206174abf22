//! Readiness in cluster mode (a worker takes traffic only once ready) and who probes run as.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::scenario::*;

/// Answers `<generation> <pid>`; generation 2 starts once the file `gen2` exists, and its
/// `/ready` answers 503 until the file `heal` exists (generation 1 is always ready).
const GEN_APP: &str = r#"
const fs = require('fs');
const gen = fs.existsSync('gen2') ? 2 : 1;
require('http').createServer((q, r) => {
  if (q.url === '/ready') {
    const ok = gen === 1 || fs.existsSync('heal');
    r.statusCode = ok ? 200 : 503;
    return r.end(ok ? 'ready' : 'not ready');
  }
  r.end(`${gen} ${process.pid}`);
}).listen(Number(process.env.PORT));
"#;

/// Clients opening a connection per request (no retry) and recording every answer's body, or
/// what went wrong.
struct Hammer {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<Result<String, String>>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Hammer {
    fn start(port: u16, clients: usize) -> Hammer {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|_| {
                let (stop, answers) = (stop.clone(), answers.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let a = get(port);
                        answers.lock().unwrap().push(a);
                        std::thread::sleep(Duration::from_millis(5));
                    }
                })
            })
            .collect();
        Hammer { stop, answers, threads }
    }

    fn answers(&self) -> Vec<Result<String, String>> {
        self.answers.lock().unwrap().clone()
    }

    fn finish(self) -> Vec<Result<String, String>> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        self.answers.lock().unwrap().clone()
    }
}

/// One `GET /` on a fresh connection: the body of a 200, else what went wrong.
fn get(port: u16) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").map_err(|e| format!("write: {e}"))?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).map_err(|e| format!("read: {e}"))?;
    match resp.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
        _ => Err(format!("bad answer {resp:?}")),
    }
}

fn failures(answers: &[Result<String, String>]) -> Vec<String> {
    answers.iter().filter_map(|a| a.as_ref().err().cloned()).collect()
}

fn from_gen(answers: &[Result<String, String>], generation: &str) -> usize {
    answers.iter().filter(|a| a.as_ref().is_ok_and(|b| b.starts_with(generation))).count()
}

#[test]
fn a_reloaded_cluster_worker_takes_no_traffic_until_its_readiness_probe_passes() {
    let port = free_port();
    let s = Scenario::new().file("app.js", GEN_APP).file(
        "e.yml",
        &format!(
            "apps:\n  - name: c\n    script: app.js\n    exec_mode: cluster\n    instances: 2\n    readiness_probe: {{http: /ready, period: 200}}\n    env:\n      PORT: {port}\n"
        ),
    );
    let mut r = s.start(&["e.yml", "--no-auto-exit"]);
    poll("both workers ready", Duration::from_secs(30), || (r.stdout().matches("ready (readiness probe").count() >= 2).then_some(()));
    wait_http(port, Duration::from_secs(10));
    let load = Hammer::start(port, 3);
    std::fs::write(s.path().join("gen2"), "").unwrap();
    let mut reload = s.command(&["reload", "c"]).spawn().unwrap();
    // The new generation listens (its listen() completes) but is not ready: for all the
    // requests that follow, only the old workers answer, and none fails.
    poll("both new workers listen", Duration::from_secs(30), || (r.stdout().matches("online (listening on").count() >= 4).then_some(()));
    let seen = load.answers().len();
    poll("200 more answers", Duration::from_secs(60), || (load.answers().len() >= seen + 200).then_some(()));
    let during = load.answers();
    assert_eq!(from_gen(&during, "2 "), 0, "a worker that is not ready answered:\n{}", r.stdout());
    assert!(failures(&during).is_empty(), "requests failed: {:?}\n{}", failures(&during), r.stdout());
    assert!(from_gen(&during[seen..], "1 ") >= 200, "the old workers keep serving");
    let (_, ls, _) = s.cli(&["ls"]);
    assert!(ls.contains("not ready"), "{ls}");
    assert!(!r.stdout().contains("retiring its previous process"), "an old worker was retired early:\n{}", r.stdout());
    // Once ready, the new workers take the traffic and the old ones go, still without a failure.
    std::fs::write(s.path().join("heal"), "").unwrap();
    poll("the old workers retired", Duration::from_secs(60), || (r.stdout().matches("exited with code [0]").count() >= 2).then_some(()));
    let seen = load.answers().len();
    poll("100 more answers", Duration::from_secs(60), || (load.answers().len() >= seen + 100).then_some(()));
    let all = load.finish();
    assert!(failures(&all).is_empty(), "requests failed: {:?}\n{}", failures(&all), r.stdout());
    assert_eq!(from_gen(&all[seen..], "2 "), all.len() - seen, "only the new generation answers now");
    let _ = reload.wait();
    r.signal(libc::SIGTERM);
    r.wait(Duration::from_secs(15)).expect("stops");
}

#[test]
fn an_exec_probe_runs_as_the_apps_user_in_its_cwd() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scenario::new();
    // The app's user must reach its cwd and write where the probe reports.
    std::fs::set_permissions(s.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let shared = s.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let out = shared.join("probe-ids");
    let s = s.file(
        "e.yml",
        &format!(
            "apps:\n  - name: low\n    uid: 65534\n    gid: 65534\n    script: sh -c 'sleep 600'\n    readiness_probe: {{exec: 'id -u > {out}.tmp; id -g >> {out}.tmp; pwd >> {out}.tmp; mv {out}.tmp {out}', period: 200}}\n",
            out = out.display()
        ),
    );
    let r = s.start(&["e.yml"]);
    let written = poll("the probe wrote its ids", Duration::from_secs(20), || std::fs::read_to_string(&out).ok());
    let lines: Vec<&str> = written.lines().collect();
    assert_eq!(&lines[..2], &["65534", "65534"], "{written}");
    assert_eq!(std::fs::canonicalize(lines[2]).unwrap(), std::fs::canonicalize(s.path()).unwrap(), "in the app's cwd");
    r.wait_for("App [low:0] ready (readiness probe exec passed)", Duration::from_secs(20));
}

#[test]
fn with_the_shared_handle_each_workers_readiness_probe_reaches_that_worker() {
    let port = free_port();
    // Worker 1 is never ready, worker 2 always: each is judged by its own answers.
    let s = Scenario::new()
        .file(
            "app.js",
            "const id = require('cluster').worker.id;\nrequire('http').createServer((q, r) => {\n  if (q.url === '/ready') console.log(`probed-${id}`);\n  r.statusCode = q.url === '/ready' && id === 1 ? 503 : 200;\n  r.end(String(id));\n}).listen(Number(process.env.PORT));\n",
        )
        .file(
            "e.yml",
            &format!(
                "apps:\n  - name: c\n    script: app.js\n    exec_mode: cluster\n    instances: 2\n    readiness_probe: {{http: /ready, period: 200}}\n    env:\n      PORT: {port}\n      NODE_CLUSTER_SCHED_POLICY: none\n"
            ),
        );
    let r = s.start(&["e.yml", "--no-auto-exit"]);
    r.wait_for("App [c:1] ready (readiness probe", Duration::from_secs(30));
    poll("ls shows c:0 not ready", Duration::from_secs(10), || s.cli(&["ls"]).1.contains("not ready").then_some(()));
    // Each worker answered several probes; worker 1 is still not ready (none of its probes
    // went to worker 2).
    poll("5 probes answered by each worker", Duration::from_secs(30), || {
        let out = r.stdout();
        (out.matches("probed-1").count() >= 5 && out.matches("probed-2").count() >= 5).then_some(())
    });
    assert!(!r.stdout().contains("App [c:0] ready"), "{}", r.stdout());
}

#[test]
fn a_failing_probe_shows_in_jlist_and_metrics_with_its_count_and_reason() {
    let s = Scenario::new().file(
        "e.yml",
        "apps:\n  - name: api\n    script: sh -c 'sleep 600'\n    readiness_probe: {exec: test -f ok, period: 200}\n    liveness_probe: {exec: 'true', period: 200}\n",
    );
    let r = s.start(&["e.yml", "--web=0"]);
    r.wait_for("HTTP API, /metrics and dashboard on http://", Duration::from_secs(20));
    let out = r.stdout() + &r.stderr();
    let at = out.find("on http://").unwrap() + "on http://".len();
    let addr: String = out[at..].chars().take_while(|c| !c.is_whitespace()).collect();
    let metric = |probe: &str| -> Option<u64> {
        let mut c = TcpStream::connect(&addr).ok()?;
        c.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut text = String::new();
        c.read_to_string(&mut text).ok()?;
        let prefix = format!("pm_runtime_app_probe_failures{{app=\"api\",instance=\"0\",pm_id=\"0\",probe=\"{probe}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.parse().ok())
    };
    poll("3 readiness failures in a row in /metrics", Duration::from_secs(20), || metric("readiness").filter(|n| *n >= 3));
    assert_eq!(metric("liveness"), Some(0));
    let probes = poll("jlist shows the readiness probe failing", Duration::from_secs(10), || {
        let list: serde_json::Value = serde_json::from_str(&s.cli(&["jlist"]).1).ok()?;
        let p = list[0]["pm2_env"]["probes"].clone();
        (p["readiness"]["state"] == "failing").then_some(p)
    });
    assert_eq!(probes["readiness"]["last_failure"], "the command exited with code 1", "{probes}");
    assert!(probes["readiness"]["failures"].as_u64().is_some_and(|n| n >= 3), "{probes}");
    assert_eq!(probes["liveness"]["state"], "passing", "{probes}");
    std::fs::write(s.path().join("ok"), "").unwrap();
    poll("the count back to 0", Duration::from_secs(20), || metric("readiness").filter(|n| *n == 0));
}
