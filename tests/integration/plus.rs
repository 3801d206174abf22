//! PM2 Plus: the real binary against a mock backend on 127.0.0.1 (see plus_mock.rs).

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::plus_mock::{Hung, MockPlus, Mode, PUBLIC, Proxy};
use crate::scenario::{Running, Scenario, pm2_io_modules};

const LONG: Duration = Duration::from_secs(20);

/// A secret unique to this test run, easy to grep for.
fn marker() -> String {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("SECRET-{}-{n}", std::process::id())
}

fn ok() -> Mode {
    Mode::Ok { path: "/ws".into() }
}

/// `pm-runtime args…` with PM2 Plus keys pointing at `root`.
fn plus_cmd(sc: &Scenario, args: &[&str], root: &str, secret: &str) -> Command {
    let mut c = sc.command(args);
    for v in ["KEYMETRICS_PUBLIC", "KEYMETRICS_SECRET", "PM2_PROXY", "INSTANCE_NAME", "MACHINE_NAME"] {
        c.env_remove(v);
    }
    c.env("KEYMETRICS_NODE", root)
        .env("PM2_PUBLIC_KEY", PUBLIC)
        .env("PM2_SECRET_KEY", secret)
        .env("PM2_MACHINE_NAME", "test-box")
        .env("PM2_STATUS_INTERVAL", "200");
    c
}

/// Names of the threads of a process.
fn threads(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.flatten().filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok()).map(|c| c.trim().to_string()).collect())
        .unwrap_or_default()
}

/// Whether a process exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, r)| !r.trim_start().starts_with('Z')))
}

fn by_name<'a>(procs: &'a [Value], name: &str) -> Vec<&'a Value> {
    procs.iter().filter(|p| p["name"] == name).collect()
}

fn online(procs: &[Value], name: &str) -> usize {
    by_name(procs, name).iter().filter(|p| p["status"] == "online").count()
}

/// The `trigger:pm2:result` for `method`.
fn result_of(mock: &MockPlus, method: &str) -> Value {
    mock.wait(&format!("trigger:pm2:result for {method}"), LONG, |m| {
        m.frames_on("trigger:pm2:result").into_iter().find(|f| f.payload["meta"]["method_name"] == method).map(|f| f.payload)
    })
}

const TICKER: &str = "setInterval(() => console.log('tick ' + Date.now()), 100);\n";

#[test]
fn plus_is_off_without_keys_and_says_why_with_one() {
    let mock = MockPlus::start("unused", ok());
    let sc = Scenario::new().file("app.js", TICKER);
    let mut off = plus_cmd(&sc, &["app.js", "--name", "api"], &mock.root(), "x");
    off.env_remove("PM2_PUBLIC_KEY").env_remove("PM2_SECRET_KEY");
    let r = Running::start(off);
    r.wait_for("tick", LONG);
    assert!(!threads(r.pid()).iter().any(|t| t == "pm2-plus"), "no link thread without keys: {:?}", threads(r.pid()));
    drop(r);

    let sc = Scenario::new().file("app.js", TICKER);
    let mut half = plus_cmd(&sc, &["app.js", "--name", "api"], &mock.root(), "x");
    half.env_remove("PM2_SECRET_KEY");
    let r = Running::start(half);
    r.wait_for("no secret key (PM2_SECRET_KEY): the link stays off", LONG);
    assert!(!threads(r.pid()).iter().any(|t| t == "pm2-plus"));
    drop(r);
    assert!(mock.verifies().is_empty() && mock.upgrades().is_empty(), "nothing reached the backend");
}

#[test]
fn plus_verifies_connects_with_pm2_headers_and_streams_status() {
    let secret = marker();
    let mock = MockPlus::start(&secret, ok());
    let sc = Scenario::new().file("app.js", "const keep = Buffer.alloc(40 * 1024 * 1024, 1);\nsetInterval(() => keep[0]++, 1000);\n");
    let r = Running::start(plus_cmd(&sc, &["app.js", "--name", "api"], &mock.root(), &secret));

    // One verify call, before the upgrade, with the keys and the machine name.
    let up = mock.wait("a websocket upgrade", LONG, |m| m.upgrades().first().cloned());
    let verifies = mock.verifies();
    assert_eq!(verifies.iter().filter(|v| v.at < up.at).count(), 1, "exactly one verify before connecting");
    let v = &verifies[0];
    assert_eq!(v.body["public_id"], PUBLIC);
    assert_eq!(v.body["private_id"], secret.as_str());
    assert_eq!(v.body["data"]["MACHINE_NAME"], "test-box");
    assert!(v.headers.iter().any(|(k, val)| k == "content-type" && val == "application/json"), "{:?}", v.headers);
    // The websocket: the endpoint's http:// became ws://, PM2's headers are there.
    assert_eq!(up.path, "/ws");
    assert_eq!(up.header("x-km-public"), Some(PUBLIC));
    assert_eq!(up.header("x-km-secret"), Some(secret.as_str()));
    assert_eq!(up.header("x-km-server"), Some("test-box"));
    assert!(up.header("x-pm2-version").is_some_and(|v| !v.is_empty()));
    assert_eq!(up.header("x-protocol-version"), Some("1"));
    assert!(threads(r.pid()).iter().any(|t| t == "pm2-plus"), "the link has its own thread: {:?}", threads(r.pid()));

    // Status: the agent's fields, memory in bytes as /proc sees it.
    let st = mock.wait_status("api online with its memory", LONG, |p| {
        by_name(p, "api").first().is_some_and(|a| a["status"] == "online" && a["memory"].as_u64().unwrap_or(0) > 30 * 1024 * 1024)
    });
    assert_eq!(st["server_name"], "test-box");
    assert!(st["internal_ip"].as_str().is_some_and(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok()));
    let procs = st["data"]["process"].as_array().unwrap();
    let api = by_name(procs, "api")[0];
    for key in [
        "pid",
        "name",
        "interpreter",
        "args",
        "path",
        "restart_time",
        "created_at",
        "exec_mode",
        "pm_uptime",
        "status",
        "pm_id",
        "unique_id",
        "cpu",
        "memory",
        "versioning",
        "node_env",
        "axm_actions",
        "axm_monitor",
        "axm_options",
        "axm_dynamic",
    ] {
        assert!(api.get(key).is_some(), "status process entry misses {key}: {api}");
    }
    assert!(api["cpu"].is_u64() && api["memory"].is_u64(), "{api}");
    assert_eq!(api["exec_mode"], "fork_mode");
    assert_eq!(api["restart_time"], 0);
    assert!(api.get("env").is_none() && api.get("pm2_env").is_none());
    let pid = api["pid"].as_u64().unwrap() as u32;
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap() * 1024))
        .unwrap();
    let sent = api["memory"].as_u64().unwrap();
    assert!(sent as f64 > rss as f64 * 0.7 && (sent as f64) < rss as f64 * 1.4, "memory sent {sent} vs /proc VmRSS {rss}");
    let server = &st["data"]["server"];
    for key in ["hostname", "uptime", "platform", "pm2_version", "node_version", "username", "unique_id"] {
        assert!(server.get(key).is_some(), "server block misses {key}: {server}");
    }

    // Cadence: PM2_STATUS_INTERVAL=200 → five a second, evenly.
    let first = mock.frames_on("status").len();
    let frames = mock.wait("15 more statuses", LONG, |m| {
        let f = m.frames_on("status");
        (f.len() >= first + 15).then_some(f)
    });
    let tail = &frames[first..];
    let mut gaps: Vec<u128> = tail.windows(2).map(|w| w[1].at.duration_since(w[0].at).as_millis()).collect();
    gaps.sort();
    let median = gaps[gaps.len() / 2];
    assert!((160..=240).contains(&median), "median gap between statuses {median} ms, want ~200: {gaps:?}");
    let t0 = tail[0].at;
    let in_two_s = tail.iter().filter(|f| f.at >= t0 && f.at < t0 + Duration::from_secs(2)).count();
    assert!((7..=13).contains(&in_two_s), "{in_two_s} statuses in 2 s at a 200 ms interval");

    // The app's start was an event.
    mock.wait("process:event online for api", LONG, |m| {
        m.frames_on("process:event").into_iter().find(|f| f.payload["event"] == "online" && f.payload["process"]["name"] == "api")
    });
    // And the link pings (every 5 s).
    mock.wait("a websocket ping", Duration::from_secs(8), |m| (m.pings() > 0).then_some(()));
    drop(r);
}

#[test]
fn plus_status_defaults_to_one_per_second() {
    let secret = marker();
    let mock = MockPlus::start(&secret, ok());
    let sc = Scenario::new().file("app.js", TICKER);
    let mut cmd = plus_cmd(&sc, &["app.js", "--name", "api"], &mock.root(), &secret);
    cmd.env_remove("PM2_STATUS_INTERVAL");
    let r = Running::start(cmd);
    let frames = mock.wait("5 statuses", LONG, |m| {
        let f = m.frames_on("status");
        (f.len() >= 5).then_some(f)
    });
    let mut gaps: Vec<u128> = frames.windows(2).map(|w| w[1].at.duration_since(w[0].at).as_millis()).collect();
    gaps.sort();
    let median = gaps[gaps.len() / 2];
    assert!((850..=1150).contains(&median), "median gap {median} ms, want ~1000: {gaps:?}");
    drop(r);
}

#[test]
fn plus_goes_through_pm2_proxy() {
    let secret = marker();
    let mock = MockPlus::start(&secret, ok());
    let proxy = Proxy::start();
    let sc = Scenario::new().file("app.js", TICKER);
    let mut cmd = plus_cmd(&sc, &["app.js", "--name", "api"], &mock.root(), &secret);
    cmd.env("PM2_PROXY", format!("http://127.0.0.1:{}", proxy.port));
    let r = Running::start(cmd);
    mock.wait_status("api online, through the proxy", LONG, |p| online(p, "api") == 1);
    let seen = proxy.seen.lock().unwrap().clone();
    let root = format!("127.0.0.1:{}", mock.port);
    assert!(
        seen.iter().any(|l| l.starts_with(&format!("POST http://{root}/api/node/verifyPM2 "))),
        "verify call through the proxy: {seen:?}"
    );
    assert!(seen.iter().any(|l| l.starts_with(&format!("CONNECT {root} "))), "websocket tunnelled through the proxy: {seen:?}");
    drop(r);
}

#[test]
fn plus_with_a_proxy_it_cannot_use_says_so_and_the_apps_run() {
    let secret = marker();
    let mock = MockPlus::start(&secret, ok());
    let sc = Scenario::new().file("app.js", TICKER);
    let mut cmd = plus_cmd(&sc, &["app.js", "--name", "api"], &mock.root(), &secret);
    cmd.env("PM2_PROXY", "socks5://127.0.0.1:1080");
    let r = Running::start(cmd);
    r.wait_for("PM2 Plus: PM2_PROXY is not a valid http:// proxy URL; running without it", LONG);
    r.wait_for("tick", LONG);
    assert!(!threads(r.pid()).iter().any(|t| t == "pm2-plus"), "no link thread: {:?}", threads(r.pid()));
    drop(r);
    assert!(mock.verifies().is_empty(), "nothing reached the backend");
}

#[test]
fn plus_remote_restart_scale_ping_and_logs() {
    let secret = marker();
    let mock = MockPlus::start(&secret, ok());
    let sc = Scenario::new().file("app.js", TICKER);
    let r = Running::start(plus_cmd(&sc, &["app.js", "--name", "api"], &mock.root(), &secret));
    let st = mock.wait_status("api online", LONG, |p| online(p, "api") == 1);
    let pid0 = by_name(st["data"]["process"].as_array().unwrap(), "api")[0]["pid"].clone();

    mock.push("trigger:pm2:action", json!({"method_name": "restart", "parameters": {"name": "api"}}));
    let res = result_of(&mock, "restart");
    assert_eq!(res["ret"]["err"], Value::Null, "{res}");
    assert_eq!(res["meta"]["machine_name"], "test-box");
    assert_eq!(res["meta"]["public_key"], PUBLIC);
    assert_eq!(res["meta"]["app_name"], "api");
    mock.wait_status("api restarted", LONG, |p| {
        by_name(p, "api").iter().any(|a| a["status"] == "online" && a["restart_time"] == 1 && a["pid"] != pid0)
    });

    mock.push("trigger:pm2:action", json!({"method_name": "scale", "parameters": {"name": "api", "number": 3}}));
    assert_eq!(result_of(&mock, "scale")["ret"]["err"], Value::Null);
    mock.wait_status("three api instances online", LONG, |p| online(p, "api") == 3);

    mock.push("trigger:pm2:action", json!({"method_name": "eval", "parameters": {"code": "process.exit()"}}));
    assert_eq!(result_of(&mock, "eval")["ret"]["err"], "Method not allowed");
    mock.push("trigger:pm2:action", json!({"method_name": "ping", "parameters": {}}));
    assert_eq!(result_of(&mock, "ping")["ret"]["data"]["msg"], "pong");

    // Log lines go up only after startLogging.
    assert!(mock.frames_on("logs").is_empty(), "no log streaming before startLogging");
    mock.push("trigger:pm2:action", json!({"method_name": "startLogging", "parameters": {}}));
    assert_eq!(result_of(&mock, "startLogging")["ret"]["err"], Value::Null);
    let line = mock.wait("an app line on the logs channel", LONG, |m| {
        m.frames_on("logs").into_iter().find(|f| f.payload["data"].as_str().is_some_and(|d| d.starts_with("tick ")))
    });
    assert_eq!(line.payload["log_type"], "out");
    assert_eq!(line.payload["process"]["name"], "api");
    mock.push("trigger:pm2:action", json!({"method_name": "stopLogging", "parameters": {}}));
    result_of(&mock, "stopLogging");
    // Lines sent after stopLogging was answered: none while three more statuses arrive (the
    // app prints every 100 ms).
    let stopped_at = Instant::now();
    let n = mock.frames_on("status").len();
    mock.wait("three more statuses", LONG, |m| (m.frames_on("status").len() >= n + 3).then_some(()));
    let late = mock.frames_on("logs").into_iter().filter(|f| f.at > stopped_at + Duration::from_millis(100)).count();
    assert_eq!(late, 0, "log lines kept coming after stopLogging");

    // A connected link does not hold the runtime back at shutdown, nor change its exit code.
    let mut r = r;
    let t = Instant::now();
    r.signal(libc::SIGTERM);
    let status = r.wait(Duration::from_secs(10)).expect("the runtime exits on SIGTERM with the link connected");
    assert_eq!(status.code(), Some(0), "{}", r.stderr());
    assert!(t.elapsed() < Duration::from_secs(5), "shutdown took {:?}", t.elapsed());
}

#[test]
fn plus_pm2_io_metric_and_custom_action() {
    let modules = pm2_io_modules();
    let secret = marker();
    let mock = MockPlus::start(&secret, ok());
    let sc = Scenario::new().file(
        "app.js",
        "const io = require('@pm2/io');\n\
         const queue = io.metric({ name: 'Queue depth', unit: 'jobs' });\n\
         queue.set(17);\n\
         io.action('flush-cache', (reply) => reply({ flushed: true }));\n\
         setInterval(() => {}, 1000);\n",
    );
    let mut cmd = plus_cmd(&sc, &["app.js", "--name", "api"], &mock.root(), &secret);
    cmd.env("NODE_PATH", &modules);
    let r = Running::start(cmd);
    let st = mock.wait_status("the custom metric and action", LONG, |p| {
        by_name(p, "api").first().is_some_and(|a| {
            a["axm_monitor"]["Queue depth"]["value"] == 17
                && a["axm_actions"].as_array().is_some_and(|l| l.iter().any(|x| x["action_name"] == "flush-cache"))
        })
    });
    let api = by_name(st["data"]["process"].as_array().unwrap(), "api")[0];
    assert_eq!(api["axm_monitor"]["Queue depth"]["unit"], "jobs");
    let pm_id = api["pm_id"].clone();

    mock.push("trigger:action", json!({"action_name": "flush-cache", "process_id": pm_id}));
    let ok = mock.wait("trigger:action:success", LONG, |m| m.frames_on("trigger:action:success").pop());
    assert_eq!(ok.payload["action_name"], "flush-cache");
    let reply = mock.wait("the app's axm:reply", LONG, |m| m.frames_on("axm:reply").pop());
    assert_eq!(reply.payload["data"]["return"]["flushed"], true, "{}", reply.raw);
    assert_eq!(reply.payload["process"]["name"], "api");

    mock.push("trigger:action", json!({"action_name": "drop-tables", "process_id": pm_id}));
    let failed = mock.wait("trigger:action:failure", LONG, |m| m.frames_on("trigger:action:failure").pop());
    assert!(failed.payload["err"].as_str().is_some_and(|e| e.contains("drop-tables")), "{}", failed.raw);
    drop(r);
}

#[test]
fn plus_reconnects_after_the_backend_restarts_and_delivers_what_happened_meanwhile() {
    let secret = marker();
    let mut mock = MockPlus::start(&secret, ok());
    let port = mock.port;
    let sc = Scenario::new().file("app.js", TICKER);
    let r = Running::start(plus_cmd(&sc, &["app.js", "--name", "api"], &mock.root(), &secret));
    mock.wait_status("api online", LONG, |p| online(p, "api") == 1);
    mock.stop();
    r.wait_for("PM2 Plus: connection lost", LONG);

    // While the backend is away: a restart (its events must arrive later), and the runtime
    // answers as usual.
    let t = Instant::now();
    let (status, out, err) = sc.run(&["restart", "api"], Duration::from_secs(5));
    assert!(status.success(), "{out}{err}");
    assert!(t.elapsed() < Duration::from_secs(2), "restart took {:?} with the backend down", t.elapsed());
    thread::sleep(Duration::from_millis(300));

    let mock2 = MockPlus::start_on(port, &secret, ok());
    let up = mock2.wait("a new websocket upgrade", LONG, |m| m.upgrades().first().cloned());
    mock2.wait_status("api online again", LONG, |p| by_name(p, "api").iter().any(|a| a["status"] == "online" && a["restart_time"] == 1));
    // The restart's events came through the queue, right after connecting.
    let events = mock2.wait("the queued process events", Duration::from_secs(5), |m| {
        let e = m.frames_on("process:event");
        (e.iter().any(|f| f.payload["event"] == "stop") && e.iter().any(|f| f.payload["event"] == "online")).then_some(e)
    });
    assert!(events.iter().all(|f| f.payload["process"]["name"] == "api"));
    assert!(events[0].at < up.at + Duration::from_secs(1));
    // Statuses were not queued: no burst after reconnecting.
    let burst = mock2.frames_on("status").iter().filter(|f| f.at < up.at + Duration::from_millis(300)).count();
    assert!(burst <= 3, "{burst} statuses within 300 ms of reconnecting");
    drop(r);
}

#[test]
fn plus_refusals_are_reported_once_in_plain_words_and_apps_keep_running() {
    let secret = marker();
    let cases: Vec<(Mode, &str)> = vec![
        (Mode::Pending, "no free server slot"),
        (Mode::Disabled, "it is disabled in the dashboard"),
        (Mode::Inactive, "the bucket is not active: bucket not active"),
        (Mode::BadKeys(format!("unknown secret {secret}")), "refused the keys (HTTP 403, unknown secret [redacted])"),
        (Mode::Garbage, "HTTP 200 and a body that is not JSON"),
        (Mode::Http500, "HTTP 500 and a body that is not JSON"),
    ];
    let runs: Vec<_> = cases
        .into_iter()
        .map(|(mode, words)| {
            let mock = MockPlus::start(&secret, mode.clone());
            let sc = Scenario::new().file("app.js", TICKER);
            let r = Running::start(plus_cmd(&sc, &["app.js", "--name", "api"], &mock.root(), &secret));
            (mode, words, mock, sc, r)
        })
        .collect();
    for (mode, words, mock, _sc, r) in &runs {
        // Retried (with backoff), reported once.
        mock.wait(&format!("{mode:?}: a second verify call"), LONG, |m| (m.verifies().len() >= 2).then_some(()));
        r.wait_for(words, LONG);
        let all = r.stdout() + &r.stderr();
        assert_eq!(all.matches(words).count(), 1, "{mode:?}: reported once\n{all}");
        assert!(!all.contains(&secret), "{mode:?}: the secret was printed\n{all}");
        assert!(mock.upgrades().is_empty(), "{mode:?}: no websocket after a refusal");
        r.wait_for("tick", LONG);
        assert!(alive(r.pid()), "{mode:?}: the runtime keeps running");
    }
}

#[test]
fn plus_follows_a_new_endpoint_and_a_refusal_on_reverify() {
    let secret = marker();
    let mock = MockPlus::start(&secret, ok());
    let sc = Scenario::new().file("app.js", TICKER);
    let mut cmd = plus_cmd(&sc, &["app.js", "--name", "api"], &mock.root(), &secret);
    cmd.env("PM_RUNTIME_PLUS_REVERIFY_MS", "300");
    let r = Running::start(cmd);
    mock.wait_status("connected", LONG, |p| online(p, "api") == 1);
    mock.set_mode(Mode::Ok { path: "/ws2".into() });
    mock.wait("an upgrade on the new endpoint", LONG, |m| m.upgrades().into_iter().find(|u| u.path == "/ws2"));
    mock.set_mode(Mode::Disabled);
    r.wait_for("it is disabled in the dashboard", LONG);
    let n = mock.upgrades().len();
    // The next verify call (after the backoff) is refused too, and nothing connects.
    let v = mock.verifies().len();
    let again = mock.wait("another verify call", LONG, |m| m.verifies().get(v + 1).cloned());
    assert_eq!(mock.upgrades().len(), n, "no reconnection while disabled");
    assert!(mock.frames_on("status").iter().all(|f| f.at < again.at), "statuses stopped once refused");
    drop(r);
}

#[test]
fn plus_hung_upstream_does_not_slow_supervision() {
    // Runtime A: the root accepts connections and never answers. Runtime B: verify is fine, the
    // websocket endpoint is the hung server.
    let hung = Hung::start();
    let secret = marker();
    let mock = MockPlus::start(&secret, Mode::Elsewhere(format!("http://127.0.0.1:{}/ws", hung.port)));
    // The app lives 1.2 s (a stable run) and exits 1: restarted at once each time.
    let app = "echo $(date +%s%N) >> starts\nsleep 1.2\nexit 1\n";
    let a = Scenario::new().file("crash.sh", app);
    let b = Scenario::new().file("crash.sh", app);
    let ra = Running::start(plus_cmd(&a, &["crash.sh", "--name", "crash"], &format!("http://127.0.0.1:{}", hung.port), &secret));
    let rb = Running::start(plus_cmd(&b, &["crash.sh", "--name", "crash"], &mock.root(), &secret));
    let starts = |sc: &Scenario| -> Vec<u128> {
        std::fs::read_to_string(sc.path().join("starts")).unwrap_or_default().lines().filter_map(|l| l.trim().parse().ok()).collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while (starts(&a).is_empty() || starts(&b).is_empty()) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    while (starts(&a).len() < 5 || starts(&b).len() < 5) && Instant::now() < deadline {
        // The control socket answers fast all along.
        for sc in [&a, &b] {
            let t = Instant::now();
            let (status, out, err) = sc.run(&["jlist"], Duration::from_secs(5));
            assert!(status.success(), "{out}{err}");
            assert!(t.elapsed() < Duration::from_millis(1500), "jlist took {:?} with a hung upstream", t.elapsed());
        }
        thread::sleep(Duration::from_millis(200));
    }
    assert!(hung.accepted.load(std::sync::atomic::Ordering::SeqCst) >= 2, "both runtimes reached the hung server");
    for (name, sc) in [("hung root", &a), ("hung websocket", &b)] {
        let s = starts(sc);
        assert!(s.len() >= 5, "{name}: only {} starts in 30 s", s.len());
        for w in s.windows(2) {
            let gap_ms = (w[1] - w[0]) / 1_000_000;
            // Blocked behind the link, a restart would wait for its 10 s timeouts.
            assert!(gap_ms < 1200 + 1000, "{name}: a crash took {gap_ms} ms to be restarted (the app lives 1200 ms): {s:?}");
        }
    }
    drop((ra, rb));
}

#[test]
fn plus_secret_appears_nowhere() {
    let secret = marker();
    let mock = MockPlus::start(&secret, Mode::Garbage);
    let sc = Scenario::new().file("app.js", "console.log('env:', JSON.stringify(process.env));\nsetInterval(() => {}, 1000);\n").file(
        "ecosystem.config.json",
        r#"{"apps": [{"name": "api", "script": "app.js", "out_file": "logs/api-out.log", "error_file": "logs/api-err.log"}]}"#,
    );
    let mut cmd = plus_cmd(&sc, &["ecosystem.config.json"], &mock.root(), &secret);
    cmd.env("PM_RUNTIME_LOG", "debug");
    let r = Running::start(cmd);
    r.wait_for("not JSON", LONG);
    mock.wait("a second verify", LONG, |m| (m.verifies().len() >= 2).then_some(()));
    mock.set_mode(ok());
    mock.wait_status("api online", LONG, |p| online(p, "api") == 1);
    mock.push("trigger:pm2:action", json!({"method_name": "startLogging", "parameters": {}}));
    result_of(&mock, "startLogging");
    mock.push("trigger:pm2:action", json!({"method_name": "restart", "parameters": {"name": "api"}}));
    result_of(&mock, "restart");
    mock.wait_status("api restarted", LONG, |p| by_name(p, "api").iter().any(|a| a["status"] == "online" && a["restart_time"] == 1));

    let mut printed = Vec::new();
    for args in [
        &["ls"][..],
        &["jlist"],
        &["show", "api"],
        &["describe", "0"],
        &["logs", "--nostream", "--lines", "100"],
        &["validate", "ecosystem.config.json"],
    ] {
        let mut c = plus_cmd(&sc, args, &mock.root(), &secret);
        c.env("PM_RUNTIME_LOG", "debug");
        let mut run = Running::start(c);
        run.wait(Duration::from_secs(10)).expect("verb ends");
        printed.push((format!("pm-runtime {}", args.join(" ")), run.stdout() + &run.stderr()));
    }
    printed.push(("runtime output".into(), r.stdout() + &r.stderr()));
    printed.push((
        "runtime cmdline".into(),
        String::from_utf8_lossy(&std::fs::read(format!("/proc/{}/cmdline", r.pid())).unwrap()).into_owned(),
    ));
    // Every file the runtime wrote (log files, PM2_HOME).
    let mut stack = vec![sc.path().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                printed.push((p.display().to_string(), String::from_utf8_lossy(&bytes).into_owned()));
            }
        }
    }
    // The app's environment does not hold it either.
    let st = mock.frames_on("status").pop().unwrap();
    let pid = by_name(st.payload["data"]["process"].as_array().unwrap(), "api")[0]["pid"].as_u64().unwrap();
    printed.push(("app environ".into(), String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).unwrap()).into_owned()));
    // Everything sent upstream but the two places that must carry it.
    for f in mock.frames() {
        printed.push((format!("frame {}", f.channel), f.raw));
    }
    for u in mock.upgrades() {
        printed.push(("upgrade headers".into(), format!("{:?}", u.headers.iter().filter(|(k, _)| k != "x-km-secret").collect::<Vec<_>>())));
        assert_eq!(u.header("x-km-secret"), Some(secret.as_str()), "the marker is the secret in use");
    }
    for v in mock.verifies() {
        let mut body = v.body.clone();
        assert_eq!(body["private_id"], secret.as_str());
        body["private_id"] = Value::Null;
        printed.push(("verify body".into(), body.to_string()));
    }
    // At debug level, the repeated refusal is logged again (quietly): debug logging was on.
    assert!(printed.iter().any(|(what, text)| what == "runtime output" && text.matches("not JSON").count() >= 2), "debug logging was on");
    assert!(mock.frames_on("logs").iter().any(|f| f.raw.contains("env:")), "the app's env line was streamed (and checked)");
    for (what, text) in &printed {
        assert!(!text.contains(&secret), "the secret appears in {what}:\n{text}");
    }
    drop(r);
}

/// The verify call carries the secret. A backend that redirects it (307 keeps the method and
/// body) to another host gets nothing re-sent: the second host never sees the keys, and the
/// runtime says why it does not connect.
#[test]
fn plus_a_redirecting_backend_never_gets_the_keys_forwarded() {
    let secret = marker();
    let elsewhere = MockPlus::start(&secret, ok());
    let redirecting = MockPlus::start(&secret, Mode::Redirect(format!("{}/api/node/verifyPM2", elsewhere.root())));
    let sc = Scenario::new().file("app.js", TICKER);
    let r = Running::start(plus_cmd(&sc, &["app.js", "--name", "api"], &redirecting.root(), &secret));
    r.wait_for("answers with a redirect (HTTP 307), which is not followed", LONG);
    assert!(!redirecting.verifies().is_empty());
    thread::sleep(Duration::from_millis(500));
    assert!(elsewhere.verifies().is_empty() && elsewhere.upgrades().is_empty(), "the keys were forwarded");
}

/// A hostile backend floods remote orders: at most a few run at once, the rest are answered
/// "busy" at once (no restart storm, no pile of waiting tasks), and names it sends with line
/// breaks and terminal escapes reach the runtime's log as one clipped line.
#[test]
fn plus_a_flood_of_remote_orders_is_bounded() {
    let secret = marker();
    let mock = MockPlus::start(&secret, ok());
    let sc = Scenario::new().file("app.js", TICKER);
    let r = Running::start(plus_cmd(&sc, &["app.js", "--name", "api"], &mock.root(), &secret));
    mock.wait_status("api online", LONG, |p| online(p, "api") == 1);
    mock.push("trigger:pm2:action", json!({"method_name": "evil\n\u{1b}[31mFORGED LOG LINE", "parameters": {}}));
    for _ in 0..100 {
        mock.push("trigger:pm2:action", json!({"method_name": "restart", "parameters": {"name": "api"}}));
    }
    let results = mock.wait("an answer to every order", LONG, |m| {
        let r = m.frames_on("trigger:pm2:result");
        (r.iter().filter(|f| f.payload["meta"]["method_name"] == "restart").count() == 100).then_some(r)
    });
    let restarts: Vec<&Value> = results.iter().filter(|f| f.payload["meta"]["method_name"] == "restart").map(|f| &f.payload).collect();
    let busy = restarts.iter().filter(|p| p["ret"]["err"].as_str().is_some_and(|e| e.starts_with("busy"))).count();
    assert!(busy >= 10, "a burst is turned away beyond what runs at once: {busy} busy of 100");
    let st = mock.wait_status("api online again", LONG, |p| online(p, "api") == 1);
    let restart_time = by_name(st["data"]["process"].as_array().unwrap(), "api")[0]["restart_time"].as_u64().unwrap();
    assert!(restart_time as usize <= 100 - busy, "{restart_time} restarts for {} accepted orders", 100 - busy);
    let out = r.stdout() + &r.stderr();
    assert!(!out.contains('\u{1b}') && !out.lines().any(|l| l.starts_with("FORGED")), "{out}");
    assert!(out.contains("PM2 Plus: remote evil  [31mFORGED LOG LINE"), "{out}");
}
