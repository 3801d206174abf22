//! `--web`: the HTTP API, /metrics, probes, live logs, the dashboard, and what bad clients get.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::scenario::*;

/// The port the runtime says it listens on (`--web=0` picks one).
fn web_port(r: &Running) -> u16 {
    r.wait_for("HTTP API, /metrics and dashboard on http://", Duration::from_secs(10));
    let out = r.stdout() + &r.stderr();
    let at = out.find("on http://").unwrap() + "on http://".len();
    let addr: String = out[at..].chars().take_while(|c| !c.is_whitespace()).collect();
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

/// One HTTP/1.1 request; returns (status, headers, body). Panics when nothing answers.
fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> (u16, String, String) {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

fn get(port: u16, path: &str) -> (u16, String) {
    let (s, _, b) = request(port, "GET", path, &[], "");
    (s, b)
}

fn json(port: u16, path: &str) -> serde_json::Value {
    let (s, b) = get(port, path);
    assert_eq!(s, 200, "{path}: {b}");
    serde_json::from_str(&b).unwrap_or_else(|e| panic!("{path}: {e}: {b}"))
}

/// A GET with the bearer token.
fn json_auth(port: u16, path: &str, token: &str) -> serde_json::Value {
    let bearer = format!("Bearer {token}");
    let (s, _, b) = request(port, "GET", path, &[("Authorization", &bearer)], "");
    assert_eq!(s, 200, "{path}: {b}");
    serde_json::from_str(&b).unwrap_or_else(|e| panic!("{path}: {e}: {b}"))
}

fn pids(port: u16, app: &str) -> Vec<u64> {
    let v = json(port, &format!("/api/v1/processes/{app}"));
    v["processes"].as_array().unwrap().iter().map(|p| p["pid"].as_u64().unwrap()).collect()
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `promtool check metrics` (Debian's prometheus package; CI installs it) on `text`.
fn promtool(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is required (apt-get install prometheus)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool rejects the exposition: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn cli(s: &Scenario, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).current_dir(s.path()).env("PM2_HOME", s.path().join(".pm2")).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

const ENV_MARKER: &str = "env-value-7f3a9c";
const SECRET_MARKER: &str = "pm2-secret-51b2e8";

fn two_apps() -> Scenario {
    Scenario::new()
        .file("web.sh", "#!/bin/sh\necho web up $$\nwhile :; do echo web line; sleep 0.2; done\n")
        .file("crashy.sh", "#!/bin/sh\necho crashy up\nwhile :; do sleep 1; done\n")
        .file(
            "eco.yml",
            &format!(
                "apps:\n  - name: web\n    script: web.sh\n    instances: 2\n    max_memory_restart: 200M\n    env:\n      API_KEY: {ENV_MARKER}\n  - name: crashy\n    script: crashy.sh\n    restart_delay: 0\n"
            ),
        )
}

#[test]
fn api_metrics_probes_and_write_actions_without_leaking_secrets() {
    let s = two_apps();
    let mut cmd = s.command(&["eco.yml", "--web=0", "--metrics-compat", "pm2"]);
    cmd.env("PM2_SECRET_KEY", SECRET_MARKER).env("PM2_PUBLIC_KEY", "pub").env_remove("PM_RUNTIME_WEB_TOKEN");
    let mut r = Running::start(cmd);
    let port = web_port(&r);
    r.wait_for("crashy up", Duration::from_secs(10));
    wait_until("every instance is ready", Duration::from_secs(10), || get(port, "/readyz").0 == 200);

    // The token was generated into PM2_HOME, private.
    let token_file = s.path().join(".pm2/pm-runtime-web.token");
    let token = std::fs::read_to_string(&token_file).unwrap().trim().to_string();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(!(r.stdout() + &r.stderr()).contains(&token), "the token is never printed");

    let mut bodies = Vec::new();
    // PM2's --web document.
    let root = json(port, "/");
    assert!(root["system_info"]["hostname"].is_string() && root["system_info"]["uptime"].as_f64().unwrap() > 0.0, "{root}");
    assert!(root["monit"]["total_mem"].as_u64().unwrap() > 0 && root["monit"]["loadavg"].as_array().unwrap().len() == 3, "{root}");
    let procs = root["processes"].as_array().unwrap();
    assert_eq!(procs.len(), 3);
    assert!(procs.iter().all(|p| p["pm2_env"]["status"] == "online" && p["pid"].as_u64().unwrap() > 0), "{root}");
    bodies.push(root.to_string());
    let (code, head, _) = request(port, "GET", "/", &[("Accept", "text/html")], "");
    assert_eq!(code, 303, "a browser is sent to the dashboard: {head}");
    let list = json(port, "/api/v1/processes");
    assert_eq!(list["processes"].as_array().unwrap().len(), 3);
    bodies.push(list.to_string());
    let one = json(port, "/api/v1/processes/web");
    assert_eq!(one["processes"].as_array().unwrap().len(), 2);
    assert_eq!(json(port, "/api/v1/processes/2")["processes"][0]["name"], "crashy", "a pm_id works too");
    assert_eq!(get(port, "/api/v1/processes/nope").0, 404);

    // Metrics: valid for Prometheus' own parser, with the expected series (once the sampler,
    // which sweeps once a second while the server runs, has seen every process).
    wait_until("every instance has been sampled", Duration::from_secs(5), || {
        get(port, "/metrics").1.matches("pm_runtime_app_resident_memory_bytes{").count() == 3
    });
    let (code, metrics) = get(port, "/metrics");
    assert_eq!(code, 200);
    promtool(&metrics);
    for want in [
        "pm_runtime_app_up{app=\"web\",instance=\"1\",pm_id=\"1\"} 1",
        "pm_runtime_app_ready{app=\"crashy\",instance=\"0\",pm_id=\"2\"} 1",
        "pm_runtime_app_status{app=\"web\",instance=\"0\",pm_id=\"0\",status=\"online\"} 1",
        "pm_runtime_app_memory_limit_bytes{app=\"web\",instance=\"0\",pm_id=\"0\"} 209715200",
        "pm_runtime_app_instances{app=\"web\",state=\"desired\"} 2",
        "pm_runtime_app_instances{app=\"web\",state=\"running\"} 2",
        "pm2_up{id=\"2\",name=\"crashy\",instance=\"0\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == want), "missing {want:?}:\n{metrics}");
    }
    for prefix in [
        "pm_runtime_app_restarts_total{app=\"web\",instance=\"0\",pm_id=\"0\",reason=\"crash\"} ",
        "pm_runtime_app_start_time_seconds{app=\"web\"",
        "pm_runtime_app_cpu_seconds_total{app=\"crashy\"",
        "pm_runtime_log_lines_total{stream=\"out\"} ",
        "pm_runtime_log_blocked_seconds_total ",
        "pm_runtime_reaped_orphans_total ",
        "pm_runtime_build_info{version=",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_max_fds ",
        "process_start_time_seconds ",
        "process_cpu_seconds_total ",
        "process_virtual_memory_bytes ",
    ] {
        assert!(metrics.lines().any(|l| l.starts_with(prefix)), "missing {prefix:?}:\n{metrics}");
    }
    let memory: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("pm_runtime_app_resident_memory_bytes{app=\"web\",instance=\"0\",pm_id=\"0\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(memory > 100_000, "the sampler's numbers reach /metrics: {memory}");
    let lines_out: u64 =
        metrics.lines().find_map(|l| l.strip_prefix("pm_runtime_log_lines_total{stream=\"out\"} ")).unwrap().parse().unwrap();
    assert!(lines_out >= 3, "{lines_out}");
    assert!(!metrics.contains("pid="));
    bodies.push(metrics);

    // Probes.
    assert_eq!(get(port, "/livez"), (200, "ok\n".into()));
    assert_eq!(get(port, "/healthz").0, 200);
    let (code, body) = get(port, "/readyz");
    assert_eq!(code, 200, "{body}");
    // Logs, as the socket numbers them.
    // Two instances print a line per 0.2 s: wait until five have been written, then ask for five.
    // They need the token: apps print secrets.
    let (code, head, body) = request(port, "GET", "/logs?app=web&lines=5", &[], "");
    assert_eq!(code, 401, "{head}{body}");
    assert!(body.contains("logs need 'Authorization: Bearer <token>'"), "{body}");
    let mut logs = json_auth(port, "/logs?app=web&lines=5", &token);
    wait_until("web has written five lines", Duration::from_secs(10), || {
        logs = json_auth(port, "/logs?app=web&lines=5", &token);
        logs["lines"].as_array().is_some_and(|l| l.len() >= 5)
    });
    let lines = logs["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 5, "lines=5 returns exactly five: {logs}");
    assert!(lines.iter().all(|l| l["app_name"] == "web" && l["seq"].as_u64().is_some()), "{logs}");
    bodies.push(logs.to_string());

    // Writes: no token / wrong token → 401, nothing happens; the right one restarts.
    let before = pids(port, "crashy");
    for auth in [None, Some("Bearer wrong"), Some(token.as_str())] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        let (code, _, body) = request(port, "POST", "/api/v1/processes/crashy/restart", &headers, "");
        assert_eq!(code, 401, "{auth:?}: {body}");
        bodies.push(body);
    }
    assert_eq!(pids(port, "crashy"), before, "a refused write changes nothing");
    let bearer = format!("Bearer {token}");
    let auth = [("Authorization", bearer.as_str())];
    let (code, _, body) = request(port, "POST", "/api/v1/processes/crashy/restart", &auth, "");
    assert_eq!(code, 200, "{body}");
    wait_until("crashy has a new pid", Duration::from_secs(5), || {
        let p = pids(port, "crashy");
        p != before && p[0] != 0
    });
    // The restart is counted by reason in /metrics; a crash too.
    let restarts = |reason: &str| -> u64 {
        let want = format!("pm_runtime_app_restarts_total{{app=\"crashy\",instance=\"0\",pm_id=\"2\",reason=\"{reason}\"}} ");
        get(port, "/metrics").1.lines().find_map(|l| l.strip_prefix(want.as_str()).map(|v| v.parse().unwrap())).unwrap()
    };
    wait_until("a manual restart is counted", Duration::from_secs(5), || restarts("manual") == 1);
    let pid = pids(port, "crashy")[0];
    // SAFETY: kill(2) of the app the runtime supervises.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    wait_until("a crash is counted", Duration::from_secs(5), || restarts("crash") == 1);
    assert!(get(port, "/metrics").1.contains("pm_runtime_app_last_exit_code{app=\"crashy\",instance=\"0\",pm_id=\"2\"} 137"));
    assert_eq!(restarts("memory") + restarts("cron") + restarts("watch") + restarts("reload"), 0);
    let (code, _, body) = request(port, "POST", "/api/v1/processes/web/scale", &auth, r#"{"count": 3}"#);
    assert_eq!(code, 200, "{body}");
    wait_until("web has 3 instances", Duration::from_secs(5), || pids(port, "web").len() == 3);
    let (code, _, body) = request(port, "POST", "/api/v1/processes/web/scale", &auth, r#"{"count": "-1"}"#);
    assert_eq!(code, 200, "{body}");
    wait_until("web has 2 instances", Duration::from_secs(5), || pids(port, "web").len() == 2);
    let (code, _, body) = request(port, "POST", "/api/v1/processes/web/scale", &auth, r#"{"count": "lots"}"#);
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("expected N, +N or -N"), "{body}");
    let (code, _, body) = request(port, "POST", "/api/v1/processes/web/scale", &auth, "{nope");
    assert_eq!(code, 400, "{body}");
    let (code, _, body) = request(port, "POST", "/api/v1/processes/ghost/stop", &auth, "");
    assert_eq!(code, 404, "{body}");
    let (code, _, body) = request(port, "POST", "/api/v1/processes/web/explode", &auth, "");
    assert_eq!(code, 404, "{body}");
    let (code, _, body) = request(port, "POST", "/api/v1/processes/crashy/stop", &auth, "");
    assert_eq!(code, 200, "{body}");
    wait_until("crashy is stopped", Duration::from_secs(5), || {
        json(port, "/api/v1/processes/crashy")["processes"][0]["pm2_env"]["status"] == "stopped"
    });
    assert_eq!(get(port, "/readyz").0, 200, "an app stopped on request is not expected ready");
    let (code, _, body) = request(port, "POST", "/api/v1/processes/crashy/start", &auth, "");
    assert_eq!(code, 200, "{body}");
    wait_until("crashy is back", Duration::from_secs(5), || get(port, "/readyz").0 == 200);

    // Secrets: no response carries an env value or the PM2 Plus secret.
    bodies.push(json(port, "/").to_string());
    bodies.push(get(port, "/metrics").1);
    bodies.push(get(port, "/dashboard").1);
    for b in &bodies {
        assert!(!b.contains(ENV_MARKER) && !b.contains(SECRET_MARKER) && !b.contains(&token), "a response leaks a secret:\n{b}");
    }
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(Duration::from_secs(10)).unwrap().code(), Some(0));
}

#[test]
fn token_from_env_and_read_only_when_empty() {
    let s = Scenario::new().file("a.sh", "#!/bin/sh\nwhile :; do sleep 1; done\n");
    let mut cmd = s.command(&["a.sh", "--web=0"]);
    cmd.env("PM_RUNTIME_WEB_TOKEN", "tok-123");
    let r = Running::start(cmd);
    let port = web_port(&r);
    assert!(!s.path().join(".pm2/pm-runtime-web.token").exists(), "no file when the env gives the token");
    assert_eq!(request(port, "POST", "/api/v1/processes/a/restart", &[("Authorization", "Bearer tok-12")], "").0, 401);
    assert_eq!(request(port, "POST", "/api/v1/processes/a/restart", &[("Authorization", "Bearer tok-123")], "").0, 200);
    drop(r);

    let s = Scenario::new().file("a.sh", "#!/bin/sh\nwhile :; do sleep 1; done\n");
    let mut cmd = s.command(&["a.sh", "--web=0"]);
    cmd.env("PM_RUNTIME_WEB_TOKEN", "");
    let r = Running::start(cmd);
    let port = web_port(&r);
    r.wait_for("write actions disabled", Duration::from_secs(2));
    let (code, _, body) = request(port, "POST", "/api/v1/processes/a/restart", &[("Authorization", "Bearer ")], "");
    assert_eq!(code, 403, "{body}");
    assert_eq!(get(port, "/api/v1/processes").0, 200, "reads still work");
}

/// Socket inodes of `pid` that are TCP sockets (listening or not).
fn tcp_sockets(pid: u32) -> Vec<String> {
    let mut inodes = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        if let Ok(t) = std::fs::read_link(e.path()) {
            let t = t.to_string_lossy().into_owned();
            if let Some(i) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                inodes.push(i.to_string());
            }
        }
    }
    let tables = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap()
        + &std::fs::read_to_string(format!("/proc/{pid}/net/tcp6")).unwrap_or_default();
    tables
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(9))
        .filter(|i| inodes.iter().any(|x| x == i))
        .map(str::to_string)
        .collect()
}

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().count()
}

#[test]
fn off_by_default_no_socket_no_thread_no_token() {
    let s = Scenario::new().file("a.sh", "#!/bin/sh\necho a up\nwhile :; do sleep 1; done\n");
    let r = s.start(&["a.sh"]);
    r.wait_for("a up", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(tcp_sockets(r.pid()), Vec::<String>::new(), "no TCP socket without --web");
    let off_threads = threads(r.pid());
    assert!(!s.path().join(".pm2/pm-runtime-web.token").exists());
    assert!(!r.stdout().contains("HTTP"), "{}", r.stdout());
    drop(r);

    let s = Scenario::new().file("a.sh", "#!/bin/sh\necho a up\nwhile :; do sleep 1; done\n");
    let r = s.start(&["a.sh", "--web=0"]);
    let port = web_port(&r);
    r.wait_for("a up", Duration::from_secs(5));
    assert_eq!(get(port, "/livez").0, 200);
    assert_eq!(tcp_sockets(r.pid()).len(), 1, "one listening socket with --web");
    assert_eq!(threads(r.pid()), off_threads, "the server is a task, not a thread");
}

#[test]
fn flag_and_env_choose_the_address_and_a_taken_port_fails_the_start() {
    let port = free_port();
    let s = Scenario::new().file("a.sh", "#!/bin/sh\nwhile :; do sleep 1; done\n");
    let mut cmd = s.command(&["a.sh", "--web"]);
    cmd.env("PM2_WEB_PORT", port.to_string()).env("PM2_API_IPADDR", "127.0.0.1");
    let r = Running::start(cmd);
    assert_eq!(web_port(&r), port);
    assert_eq!(get(port, "/livez").0, 200);
    // A second runtime (another PM2_HOME) on the same port: a clear error, nothing started.
    let s2 = Scenario::new().file("b.sh", "#!/bin/sh\necho b started\nwhile :; do sleep 1; done\n");
    let (status, out, err) = s2.run(&["b.sh", "--web", &port.to_string()], Duration::from_secs(10));
    assert_eq!(status.code(), Some(78), "{out}{err}");
    assert!((out.clone() + &err).contains(&format!("cannot listen on 127.0.0.1:{port}")), "{out}{err}");
    assert!(!out.contains("b started"));
    let mut bad = s2.command(&["b.sh", "--web"]);
    bad.env("PM2_WEB_PORT", "http");
    let mut b = Running::start(bad);
    assert_eq!(b.wait(Duration::from_secs(5)).unwrap().code(), Some(64));
    assert!(b.stderr().contains("PM2_WEB_PORT"), "{}", b.stderr());
}

#[test]
fn readyz_turns_503_as_soon_as_a_stop_signal_arrives() {
    let s = Scenario::new()
        .file("slow.sh", "#!/bin/sh\ntrap 'echo draining; sleep 3; exit 0' INT TERM\necho slow up\nwhile :; do sleep 0.1; done\n")
        .file("e.yml", "apps:\n  - name: slow\n    script: slow.sh\n    kill_timeout: 5000\n");
    let mut r = s.start(&["e.yml", "--web=0"]);
    let port = web_port(&r);
    wait_until("ready", Duration::from_secs(10), || get(port, "/readyz").0 == 200);
    r.signal(libc::SIGTERM);
    r.wait_for("draining", Duration::from_secs(5));
    let (code, body) = get(port, "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("stopping"), "{body}");
    assert_eq!(get(port, "/livez").0, 200, "alive while it drains");
    assert_eq!(get(port, "/healthz").0, 503);
    assert_eq!(r.wait(Duration::from_secs(10)).unwrap().code(), Some(0));
}

#[test]
fn readyz_lists_what_is_not_ready() {
    let s = Scenario::new()
        .file("ok.sh", "#!/bin/sh\nwhile :; do sleep 1; done\n")
        .file("bad.sh", "#!/bin/sh\nexit 3\n")
        .file("e.yml", "apps:\n  - name: ok\n    script: ok.sh\n  - name: bad\n    script: bad.sh\n    restart_delay: 60000\n");
    let r = s.start(&["e.yml", "--web=0"]);
    let port = web_port(&r);
    wait_until("bad is waiting to restart", Duration::from_secs(10), || get(port, "/readyz").1.contains("bad:1 is waiting restart"));
    let (code, body) = get(port, "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(!body.contains("ok:0"), "{body}");
    let (code, body) = get(port, "/healthz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("bad"), "{body}");
    assert_eq!(get(port, "/livez").0, 200, "liveness never depends on the apps");
}

/// The socket's `logs` request, answered by the runtime.
fn socket_logs(s: &Scenario) -> Vec<serde_json::Value> {
    let mut sock = std::os::unix::net::UnixStream::connect(s.path().join(".pm2/pm-runtime.sock")).unwrap();
    sock.write_all(b"{\"cmd\":\"logs\",\"target\":\"all\",\"lines\":1000}\n").unwrap();
    let mut line = String::new();
    BufReader::new(sock).read_line(&mut line).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    v["lines"].as_array().unwrap().clone()
}

#[test]
fn logs_follow_over_server_sent_events_with_the_sockets_seq() {
    let s = Scenario::new()
        .file("a.sh", "#!/bin/sh\ni=0\nwhile :; do i=$((i+1)); echo a-line $i; sleep 0.05; done\n")
        .file("b.sh", "#!/bin/sh\nwhile :; do echo b-line >&2; sleep 0.05; done\n")
        .file("e.yml", "apps:\n  - name: a\n    script: a.sh\n  - name: b\n    script: b.sh\n");
    let mut cmd = s.command(&["e.yml", "--web=0"]);
    cmd.env("PM_RUNTIME_WEB_TOKEN", "logs-tok");
    let r = Running::start(cmd);
    let port = web_port(&r);
    r.wait_for("a-line 3", Duration::from_secs(5));
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.write_all(b"GET /logs?app=a&follow=1&lines=2 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer logs-tok\r\n\r\n").unwrap();
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut l = String::new();
        reader.read_line(&mut l).unwrap();
        head.push_str(&l);
        if l == "\r\n" {
            break;
        }
    }
    assert!(head.starts_with("HTTP/1.1 200") && head.contains("text/event-stream"), "{head}");
    // Chunked encoding: collect `data:` lines until 30 events have come.
    let mut events: Vec<serde_json::Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while events.len() < 30 && Instant::now() < deadline {
        let mut l = String::new();
        reader.read_line(&mut l).unwrap();
        if let Some(d) = l.strip_prefix("data: ") {
            events.push(serde_json::from_str(d.trim()).unwrap());
        }
    }
    assert_eq!(events.len(), 30);
    assert!(events.iter().all(|e| e["app_name"] == "a" && e["type"] == "out"), "only app a");
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "increasing seq: {seqs:?}");
    let numbers: Vec<u64> = events.iter().map(|e| e["message"].as_str().unwrap().rsplit(' ').next().unwrap().parse().unwrap()).collect();
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "no line lost between backlog and live: {numbers:?}");
    // The same lines carry the same seq over the control socket.
    let by_socket = socket_logs(&s);
    for e in &events[..5] {
        assert!(by_socket.iter().any(|l| l["seq"] == e["seq"] && l["message"] == e["message"]), "{e} not in the socket's logs");
    }
    let auth = [("Authorization", "Bearer logs-tok")];
    assert_eq!(request(port, "GET", "/logs?app=ghost", &auth, "").0, 404);
    assert_eq!(request(port, "GET", "/logs?lines=many", &auth, "").0, 400);
    assert_eq!(get(port, "/logs?follow=1").0, 401, "no stream without the token");
}

#[test]
fn bad_clients_get_clear_errors_and_supervision_goes_on() {
    // Room for 1000 connections on the test's side (the runtime inherits the limit).
    // SAFETY: getrlimit/setrlimit on our own process with a valid struct.
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max.min(4096);
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    let s = Scenario::new().file("victim-http.sh", "#!/bin/sh\necho a up $$\nwhile :; do sleep 1; done\n");
    let r = s.start(&["victim-http.sh", "--web=0"]);
    let port = web_port(&r);
    r.wait_for("a up", Duration::from_secs(5));

    let raw = |bytes: &[u8]| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(bytes).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        parse_response(&out)
    };
    assert_eq!(raw(b"this is not http\r\n\r\n").0, 400, "malformed request");
    assert_eq!(raw(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: zebra\r\n\r\n").0, 400);
    let (code, _, body) = request(port, "GET", "/nope", &[], "");
    assert_eq!(code, 404);
    assert!(body.contains("/metrics"), "lists the routes: {body}");
    let (code, head, _) = request(port, "DELETE", "/metrics", &[], "");
    assert_eq!(code, 405, "{head}");
    let big = "x".repeat(200 * 1024);
    let (code, _, _) = request(port, "POST", "/api/v1/processes/victim-http/scale", &[("Authorization", "Bearer nope")], &big);
    assert!(code == 413 || code == 401, "oversized body: {code}");
    let token = std::fs::read_to_string(s.path().join(".pm2/pm-runtime-web.token")).unwrap();
    let bearer = format!("Bearer {}", token.trim());
    let (code, _, _) = request(port, "POST", "/api/v1/processes/victim-http/scale", &[("Authorization", &bearer)], &big);
    assert_eq!(code, 413, "oversized body with a good token");
    let huge_header = format!("GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "y".repeat(100 * 1024));
    let (code, _, _) = raw(huge_header.as_bytes());
    assert_eq!(code, 431, "oversized headers are refused");

    let before = pids(port, "victim-http");
    assert_eq!(before.len(), 1);
    // 1000 idle connections: beyond the first 128, each gets a 503 and is closed.
    let connect = || TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut idle: Vec<TcpStream> = (0..200).map(|_| connect()).collect();
    // (Idle connections are closed after 5 s without a request; this runs well within.)
    let (code, body) = get(port, "/livez");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("too many connections"), "{body}");
    idle.extend((0..800).map(|_| connect()));
    // Supervision is untouched: a crash is restarted at once, and the socket answers.
    // SAFETY: kill(2) of the app the runtime supervises.
    unsafe { libc::kill(before[0] as i32, libc::SIGKILL) };
    let t = Instant::now();
    wait_until("the app is restarted", Duration::from_secs(2), || {
        let now: Vec<u64> =
            crate::scenario::pids_with("victim-http.sh").into_iter().map(u64::from).filter(|p| *p != u64::from(r.pid())).collect();
        now.len() == 1 && now != before
    });
    assert!(t.elapsed() < Duration::from_secs(1), "restart took {:?}", t.elapsed());
    let (code, out, err) = cli(&s, &["ls"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("online"), "{out}");
    // The runtime holds a bounded number of them, and the idle ones time out.
    let fds = std::fs::read_dir(format!("/proc/{}/fd", r.pid())).unwrap().count();
    assert!(fds < 300, "the runtime holds {fds} fds");
    wait_until("the HTTP server answers again", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok() && get(port, "/livez").0 == 200
    });
    drop(idle);
}

/// Installs pinned npm packages once into a cache folder under target/ and returns its
/// node_modules (apps and scripts find them through NODE_PATH). npm must be reachable.
fn npm_cache(name: &str, packages: &[&str]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("npm-{name}"));
    let modules = dir.join("node_modules");
    let installed = |p: &&str| modules.join(p.rsplit_once('@').map_or(*p, |(n, _)| n)).join("package.json").exists();
    if packages.iter().all(installed) {
        return modules;
    }
    // Two tests may need the same folder at once (both dashboard tests use playwright-core):
    // one installs, the other then finds it installed.
    let _lock = crate::node_versions::install_lock(&dir);
    if packages.iter().all(installed) {
        return modules;
    }
    let out = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--no-save", "--prefix"])
        .arg(&dir)
        .args(packages)
        .output()
        .expect("npm");
    assert!(out.status.success(), "npm install {packages:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    modules
}

const PROM_APP: &str = r#"
const http = require('http');
const fs = require('fs');
const client = require('prom-client');
// What a cluster app does for prom-client's cluster metrics: one AggregatorRegistry, so that
// this worker answers the primary's (here: pm-runtime's) metrics requests.
new client.AggregatorRegistry();
const inst = Number(process.env.NODE_APP_INSTANCE);
const requests = new client.Counter({ name: 'app_requests_total', help: 'Requests served', labelNames: ['route'] });
const latency = new client.Histogram({ name: 'app_latency_seconds', help: 'Latency', labelNames: ['route'], buckets: [0.005, 0.02, 0.1] });
new client.Gauge({ name: 'app_instance_max', help: 'max', aggregator: 'max' }).set(inst);
new client.Gauge({ name: 'app_instance_min', help: 'min', aggregator: 'min' }).set(inst + 1);
new client.Gauge({ name: 'app_instance_avg', help: 'avg', aggregator: 'average' }).set(inst * 10);
new client.Gauge({ name: 'app_instance_first', help: 'first', aggregator: 'first' }).set(inst + 100);
new client.Gauge({ name: 'app_instance_omit', help: 'omit', aggregator: 'omit' }).set(inst);
process.on('SIGUSR2', async () => {
  fs.writeFileSync(`dump-${inst}.json`, JSON.stringify(await client.register.getMetricsAsJSON()));
  console.log(`dumped ${inst}`);
});
http.createServer((q, r) => {
  requests.inc({ route: '/hit' });
  latency.observe({ route: '/hit' }, 0.001 * (inst + 1) * 7);
  r.end(String(process.pid));
}).listen(process.env.PORT, '127.0.0.1', () => console.log(`worker ${inst} listening`));
"#;

/// What prom-client's own AggregatorRegistry makes of the workers' dumps, in a Node master.
const PROM_REFERENCE: &str = r#"
const fs = require('fs');
const { AggregatorRegistry } = require('prom-client');
const dumps = [0, 1, 2, 3].map(i => JSON.parse(fs.readFileSync(`dump-${i}.json`)));
AggregatorRegistry.aggregate(dumps).metrics().then(t => process.stdout.write(t));
"#;

/// Sample lines with their labels sorted, comments as they are: the same exposition whatever
/// the label order.
fn canonical(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| match (l.starts_with('#'), l.find('{'), l.rfind('}')) {
            (false, Some(a), Some(b)) => {
                let mut labels: Vec<&str> = l[a + 1..b].split(',').collect();
                labels.sort_unstable();
                format!("{}{{{}}}{}", &l[..a], labels.join(","), &l[b + 1..])
            }
            _ => l.to_string(),
        })
        .collect()
}

#[test]
fn cluster_apps_prom_client_metrics_are_merged_as_prom_client_does() {
    let modules = npm_cache("prom", &["prom-client@15.1.3"]);
    let app_port = free_port();
    let s = Scenario::new().file("app.js", PROM_APP).file("reference.js", PROM_REFERENCE).file(
        "e.yml",
        &format!(
            "apps:\n  - name: c\n    script: app.js\n    exec_mode: cluster\n    instances: 4\n    env:\n      PORT: {app_port}\n      NODE_PATH: {}\n  - name: plain\n    script: app.js\n    exec_mode: fork\n    env:\n      PORT: {}\n      NODE_PATH: {}\n",
            modules.display(),
            free_port(),
            modules.display()
        ),
    );
    let r = s.start(&["e.yml", "--web=0"]);
    let port = web_port(&r);
    wait_until("four workers listen", Duration::from_secs(15), || r.stdout().matches("listening").count() >= 5);
    // 400 requests, one connection each, spread over the workers by the runtime.
    let mut by_pid = std::collections::BTreeMap::new();
    for _ in 0..400 {
        let pid = http_get(app_port).expect("the app answers");
        *by_pid.entry(pid).or_insert(0) += 1;
    }
    assert!(by_pid.len() >= 2, "requests reached several workers: {by_pid:?}");

    let (code, text) = get(port, "/metrics/apps");
    assert_eq!(code, 200, "{text}");
    assert!(text.lines().any(|l| l == "app_requests_total{route=\"/hit\"} 400"), "the counter sums exactly across workers:\n{text}");
    assert!(text.lines().any(|l| l == "app_latency_seconds_count{route=\"/hit\"} 400"), "{text}");
    assert!(text.lines().any(|l| l == "app_instance_max 3") && text.lines().any(|l| l == "app_instance_min 1"), "{text}");
    assert!(text.lines().any(|l| l == "app_instance_avg 15") && text.lines().any(|l| l == "app_instance_first 100"), "{text}");
    assert!(!text.contains("app_instance_omit"), "{text}");
    promtool(&text);

    // The same result as prom-client's AggregatorRegistry in a Node master, on the same numbers.
    assert_eq!(cli(&s, &["sendSignal", "SIGUSR2", "c"]).0, 0);
    wait_until("every worker dumped its metrics", Duration::from_secs(5), || {
        (0..4).all(|i| s.path().join(format!("dump-{i}.json")).exists())
    });
    std::thread::sleep(Duration::from_millis(100));
    let reference = Command::new("node").arg("reference.js").current_dir(s.path()).env("NODE_PATH", &modules).output().unwrap();
    assert!(reference.status.success(), "{}", String::from_utf8_lossy(&reference.stderr));
    let reference = String::from_utf8(reference.stdout).unwrap();
    let (_, again) = get(port, "/metrics/apps");
    assert_eq!(canonical(&again), canonical(&reference), "pm-runtime:\n{again}\nprom-client:\n{reference}");
    assert_eq!(again, reference, "the same text, label order included");
}

/// Drives the dashboard in the system's Chromium (Debian's `chromium`; CI installs it) with
/// playwright-core: prints what it saw as JSON.
const DASHBOARD_DRIVER: &str = r#"
const { chromium } = require('playwright-core');
const [port, token, shot] = process.argv.slice(2);
const base = `http://127.0.0.1:${port}`;
const api = async p => (await fetch(base + p)).json();
const sleep = ms => new Promise(r => setTimeout(r, ms));
(async () => {
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = await browser.newPage({ viewport: { width: 1100, height: 640 } });
  const out = { requests: [] };
  page.on('request', r => out.requests.push(r.url()));
  await page.goto(base + '/');
  out.url = page.url();
  await page.waitForSelector('tr[data-app="crashy"] .st.online', { timeout: 10000 });
  await page.waitForSelector('tr[data-app="web"] .st.online', { timeout: 10000 });
  out.apps = await page.$$eval('#rows tr', trs => trs.map(t => t.dataset.app));
  // A crash shows up as a restart.
  const before = await page.textContent('tr[data-app="crashy"] .rs');
  const pid = (await api('/api/v1/processes/crashy')).processes[0].pid;
  const t0 = Date.now();
  process.kill(pid, 'SIGKILL');
  await page.waitForFunction(b => { const c = document.querySelector('tr[data-app="crashy"] .rs'); return c && c.textContent !== b; }, before, { timeout: 5000 });
  out.crash_seen_ms = Date.now() - t0;
  out.restarts = [before, await page.textContent('tr[data-app="crashy"] .rs')];
  await page.waitForFunction(() => { const c = document.querySelector('tr[data-app="crashy"] .why'); return c && c.textContent !== '-'; }, null, { timeout: 5000 });
  out.why = await page.textContent('tr[data-app="crashy"] .why');
  // The restart button asks for the token and restarts the app.
  page.on('dialog', d => { out.dialog = d.message(); d.accept(token); });
  const webPid = (await api('/api/v1/processes/web')).processes[0].pid;
  await page.click('tr[data-app="web"] button[data-a="restart"]');
  let newPid = webPid;
  for (const t1 = Date.now(); Date.now() - t1 < 5000 && (newPid === webPid || !newPid); await sleep(50)) {
    newPid = (await api('/api/v1/processes/web')).processes[0].pid;
  }
  out.web_pids = [webPid, newPid];
  // Selecting an app follows its logs live.
  await page.click('tr[data-app="web"] td');
  await page.waitForFunction(() => document.querySelector('#lt').textContent.includes('web'), null, { timeout: 5000 });
  const seen = await page.textContent('#logs');
  await page.waitForFunction(n => document.querySelectorAll('#logs div').length > n, (await page.$$('#logs div')).length, { timeout: 5000 });
  out.logs = (await page.textContent('#logs')).split('\n').slice(-3);
  await sleep(1500);
  out.sparklines = await page.$$eval('#rows svg polyline', p => p.length);
  if (shot) await page.screenshot({ path: shot });
  out.requests = [...new Set(out.requests.map(u => new URL(u).host))];
  console.log(JSON.stringify(out));
  await browser.close();
})().catch(e => { console.error(e); process.exit(1); });
"#;

#[test]
fn dashboard_in_a_real_browser() {
    let modules = npm_cache("playwright", &["playwright-core@1.65.1"]);
    let s = Scenario::new()
        .file("web.sh", "#!/bin/sh\nwhile :; do echo web line $(date +%s%N); sleep 0.2; done\n")
        .file("crashy.sh", "#!/bin/sh\necho crashy up\nwhile :; do sleep 1; done\n")
        .file(
            "e.yml",
            "apps:\n  - name: web\n    script: web.sh\n    instances: 2\n  - name: crashy\n    script: crashy.sh\n    restart_delay: 0\n",
        )
        .file("driver.js", DASHBOARD_DRIVER);
    let mut cmd = s.command(&["e.yml", "--web=0"]);
    cmd.env("PM_RUNTIME_WEB_TOKEN", "dash-token-1");
    let r = Running::start(cmd);
    let port = web_port(&r);
    let shot = s.path().join("dashboard.png");
    // DASHBOARD_SCREENSHOT=path keeps the screenshot (the README's is made so).
    let shot = std::env::var_os("DASHBOARD_SCREENSHOT").map(PathBuf::from).unwrap_or(shot);
    let out = Command::new("node")
        .arg("driver.js")
        .args([&port.to_string(), "dash-token-1"])
        .arg(&shot)
        .current_dir(s.path())
        .env("NODE_PATH", &modules)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the browser run failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(seen["url"].as_str().unwrap().ends_with("/dashboard"), "{seen}");
    assert_eq!(seen["apps"], serde_json::json!(["web", "web", "crashy"]), "{seen}");
    assert!(seen["crash_seen_ms"].as_u64().unwrap() <= 2000, "the crash shows up within 2 s: {seen}");
    assert_eq!(seen["restarts"][0], "0");
    assert_eq!(seen["restarts"][1], "1");
    assert_eq!(seen["why"], "signal", "the last exit's reason: a SIGKILL, and no OOM kill counted");
    assert!(seen["dialog"].as_str().unwrap().contains("Token"), "{seen}");
    assert_ne!(seen["web_pids"][0], seen["web_pids"][1], "the button restarted web: {seen}");
    assert!(seen["logs"].as_array().unwrap().iter().any(|l| l.as_str().unwrap().contains("web line")), "{seen}");
    assert_eq!(seen["sparklines"], 6, "CPU and memory sparklines per instance: {seen}");
    assert_eq!(seen["requests"], serde_json::json!([format!("127.0.0.1:{port}")]), "no external asset: {seen}");
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
}

/// Reads an instance's probes off the dashboard in Chromium: prints what it saw as JSON.
const PROBES_DRIVER: &str = r#"
const { chromium } = require('playwright-core');
const fs = require('fs');
const [port, ok] = process.argv.slice(2);
(async () => {
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = await browser.newPage({ viewport: { width: 1100, height: 640 } });
  await page.goto(`http://127.0.0.1:${port}/`);
  const cell = s => page.textContent(`tr[data-app="api"] .probe[data-probe="${s}"]`);
  const failing = 'tr[data-app="api"] .probe.failing[data-probe="readiness"]';
  await page.waitForSelector(failing, { timeout: 20000 });
  // Two failures in a row at least: the count follows.
  await page.waitForFunction(s => /\(([2-9]|\d\d+)×\)/.test(document.querySelector(s).textContent), failing, { timeout: 20000 });
  const out = { failing: await cell('readiness'), title: await page.getAttribute(failing, 'title'), liveness: await cell('liveness') };
  out.plain = await page.textContent('tr[data-app="plain"] .pr');
  fs.writeFileSync(ok, '');
  await page.waitForSelector('tr[data-app="api"] .probe.passing[data-probe="readiness"]', { timeout: 20000 });
  out.passing = await cell('readiness');
  out.status = await page.textContent('tr[data-app="api"] .st');
  console.log(JSON.stringify(out));
  await browser.close();
})().catch(e => { console.error(e); process.exit(1); });
"#;

#[test]
fn dashboard_shows_each_instances_probes() {
    let modules = npm_cache("playwright", &["playwright-core@1.65.1"]);
    let s = Scenario::new()
        .file(
            "e.yml",
            "apps:\n  - name: api\n    script: sh -c 'sleep 600'\n    readiness_probe: {exec: test -f ok, period: 200}\n    liveness_probe: {exec: 'true', initial_delay: 600000}\n  - name: plain\n    script: sh -c 'sleep 600'\n",
        )
        .file("driver.js", PROBES_DRIVER);
    let r = Running::start(s.command(&["e.yml", "--web=0"]));
    let port = web_port(&r);
    let out = Command::new("node")
        .arg("driver.js")
        .arg(port.to_string())
        .arg(s.path().join("ok"))
        .current_dir(s.path())
        .env("NODE_PATH", &modules)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the browser run failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let failing = seen["failing"].as_str().unwrap();
    assert!(failing.starts_with("readiness: failing ("), "{seen}");
    assert!(failing.ends_with("×): the command exited with code 1"), "{seen}");
    assert_eq!(seen["title"], "last failure: the command exited with code 1", "{seen}");
    assert_eq!(seen["liveness"], "liveness: pending", "before its first check: {seen}");
    assert_eq!(seen["plain"], "-", "an app without probes: {seen}");
    assert_eq!(seen["passing"], "readiness: passing", "{seen}");
    assert_eq!(seen["status"], "online");
    // The same in the API the dashboard reads.
    let (_, body) = get(port, "/api/v1/processes/api");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let probes = &v["processes"][0]["pm2_env"]["probes"];
    assert_eq!(probes["readiness"]["state"], "passing", "{probes}");
    assert_eq!(probes["readiness"]["last_failure"], "the command exited with code 1", "{probes}");
    assert_eq!(probes["liveness"]["state"], "pending", "{probes}");
}

/// Drives the dashboard's app view in Chromium: metadata, custom metrics, charts, log search,
/// an action, restart history, the dark theme. Prints what it saw as JSON; screenshots go to
/// the folder given.
const APP_VIEW_DRIVER: &str = r#"
const { chromium } = require('playwright-core');
const [port, token, shots] = process.argv.slice(2);
const base = `http://127.0.0.1:${port}`;
const T = { timeout: 20000 };
(async () => {
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const ctx = await browser.newContext({ viewport: { width: 1200, height: 1000 }, colorScheme: 'light' });
  const page = await ctx.newPage();
  const out = { requests: [] };
  page.on('request', r => out.requests.push(new URL(r.url()).host));
  page.on('dialog', d => { out.dialog = d.message(); d.accept(token); });
  await page.goto(base + '/');
  await page.waitForSelector('tr[data-app="web"] .st.online', T);
  await page.click('tr[data-app="web"] td');
  await page.waitForSelector('#app:not([hidden])', T);
  await page.waitForFunction(() => /git branch/.test(document.querySelector('#app').textContent) && /Queue depth/.test(document.querySelector('#app').textContent), null, T);
  const pairs = () => page.$$eval('#app dl', dls => dls.map(dl => Object.fromEntries([...dl.querySelectorAll('dt')].map(dt => [dt.textContent, dt.nextElementSibling.textContent]))));
  [out.meta, out.metrics] = await pairs();
  // A chart with points: the runtime's history then the live points.
  const points = sel => page.$eval(sel, p => p.getAttribute('points').trim().split(/\s+/).length);
  await page.waitForFunction(() => { const p = document.querySelector('#cpu polyline'); return p && p.getAttribute('points').trim().split(/\s+/).length >= 3; }, null, T);
  out.cpu_points = await points('#cpu polyline');
  out.mem_points = await points('#mem polyline');
  // Log search, and err apart from out. The logs need the token: the pane asks for it when clicked.
  await page.click('#logs');
  const shown = () => page.$$eval('#logs div', ds => ds.filter(d => !d.hidden).map(d => [d.className, d.textContent]));
  await page.waitForFunction(() => /err-mark/.test(document.querySelector('#logs').textContent), null, T);
  await page.fill('#q', 'ERR-MARK');
  out.searched = await shown();
  out.count = await page.textContent('#lc');
  await page.fill('#q', '');
  await page.selectOption('#sf', 'err');
  out.err_only = await shown();
  await page.selectOption('#sf', '');
  await page.waitForFunction(() => document.querySelector('#cpu polyline').getAttribute('points').trim().split(/\s+/).length >= 5, null, T);
  await page.screenshot({ path: shots + '/dashboard-app-light.png', fullPage: true });
  // An action from the app view: stop, then start again.
  await page.click('#app button[data-v="stop"]');
  await page.waitForSelector('tr[data-app="web"] .st.stopped', T);
  out.stopped = true;
  await page.click('#app button[data-v="start"]');
  await page.waitForSelector('tr[data-app="web"] .st.online', T);
  // The restart history of a crashing app: reason, exit code, its last stderr lines.
  await page.click('tr[data-app="crashy"] td');
  await page.waitForFunction(() => { const r = document.querySelector('#rst'); return r && /disk on fire/.test(r.textContent); }, null, T);
  out.restarts = await page.textContent('#rst');
  out.bg_light = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  await page.emulateMedia({ colorScheme: 'dark' });
  out.bg_dark = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  await page.screenshot({ path: shots + '/dashboard-app-dark.png', fullPage: true });
  out.requests = [...new Set(out.requests)];
  console.log(JSON.stringify(out));
  await browser.close();
})().catch(e => { console.error(e); process.exit(1); });
"#;

#[test]
fn dashboard_app_view_charts_search_actions_restarts_and_theme() {
    let modules = npm_cache("playwright", &["playwright-core@1.65.1"]);
    let io = pm2_io_modules();
    let s = Scenario::new()
        .file(
            "app.js",
            "const io = require('@pm2/io');\nio.metric({ name: 'Queue depth', unit: 'jobs' }).set(17);\n\
             setInterval(() => console.log('web line ' + Date.now()), 200);\n\
             setInterval(() => console.error('err-mark ' + Date.now()), 500);\n",
        )
        .file("crashy.sh", "#!/bin/sh\necho crashy up\necho \"fatal: disk on fire\" >&2\nsleep 1\nexit 3\n")
        .file(
            "e.yml",
            "apps:\n  - name: web\n    script: app.js\n    max_memory_restart: 500M\n  - name: crashy\n    script: crashy.sh\n    restart_delay: 300\n",
        )
        .file("driver.js", APP_VIEW_DRIVER);
    let commit = git_repo(s.path());
    let mut cmd = s.command(&["e.yml", "--web=0"]);
    cmd.env("PM_RUNTIME_WEB_TOKEN", "view-token-1").env("NODE_PATH", &io);
    let r = Running::start(cmd);
    let port = web_port(&r);
    let (_, page) = get(port, "/dashboard");
    assert!(page.len() < 30 * 1024, "the page is {} bytes", page.len());
    // DASHBOARD_SCREENSHOTS=docs keeps the screenshots (the README's are made so).
    let shots = std::env::var_os("DASHBOARD_SCREENSHOTS").map(PathBuf::from).unwrap_or_else(|| s.path().to_path_buf());
    let shots = std::fs::canonicalize(shots).unwrap();
    let out = Command::new("node")
        .arg("driver.js")
        .args([&port.to_string(), "view-token-1"])
        .arg(&shots)
        .current_dir(s.path())
        .env("NODE_PATH", &modules)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the browser run failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let meta = &seen["meta"];
    assert!(meta["script"].as_str().unwrap().ends_with("/app.js"), "{seen}");
    assert_eq!(meta["interpreter"], "node", "{seen}");
    assert_eq!(meta["git branch"], "trunk", "{seen}");
    assert_eq!(meta["git commit"].as_str(), Some(&commit[..12]), "{seen}");
    assert_eq!(meta["git remote"], "https://example.org/shop.git", "{seen}");
    assert!(meta["memory limit"].as_str().unwrap().starts_with("500"), "{seen}");
    assert_eq!(seen["metrics"]["Queue depth"], "17 jobs", "{seen}");
    assert!(seen["cpu_points"].as_u64().unwrap() >= 3 && seen["mem_points"].as_u64().unwrap() >= 3, "{seen}");
    let searched = seen["searched"].as_array().unwrap();
    assert!(!searched.is_empty() && searched.iter().all(|l| l[1].as_str().unwrap().contains("err-mark")), "{seen}");
    assert!(seen["count"].as_str().unwrap().contains(" of "), "{seen}");
    let err_only = seen["err_only"].as_array().unwrap();
    assert!(!err_only.is_empty() && err_only.iter().all(|l| l[0] == "err"), "{seen}");
    assert_eq!(seen["stopped"], true);
    assert!(seen["dialog"].as_str().unwrap().contains("Token"), "{seen}");
    let restarts = seen["restarts"].as_str().unwrap();
    assert!(restarts.contains("crash, exit code 3") && restarts.contains("fatal: disk on fire"), "{restarts}");
    assert_ne!(seen["bg_light"], seen["bg_dark"], "the theme follows the browser: {seen}");
    assert_eq!(seen["requests"], serde_json::json!([format!("127.0.0.1:{port}")]), "no external asset: {seen}");
    // The stderr lines of a death are app output: only with the token.
    let open = json(port, "/api/v1/processes/crashy/history");
    assert_eq!(open["stderr"], false);
    assert!(open["instances"][0]["restarts"].as_array().unwrap().iter().all(|r| r["stderr"].is_null()), "{open}");
    let (code, _, body) = request(port, "GET", "/api/v1/processes/crashy/history", &[("Authorization", "Bearer view-token-1")], "");
    assert_eq!(code, 200);
    let with: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(with["instances"][0]["restarts"][0]["stderr"], serde_json::json!(["fatal: disk on fire"]), "{with}");
    assert_eq!(with["instances"][0]["restarts"][0]["exit"], serde_json::json!({"code": 3, "reason": "exit"}), "{with}");
    for shot in ["dashboard-app-light.png", "dashboard-app-dark.png"] {
        assert!(std::fs::metadata(shots.join(shot)).unwrap().len() > 10_000, "{shot}");
    }
}
