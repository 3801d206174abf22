//! Start order, init jobs and sidecars (`depends_on`, `role`): real processes, real signals.

use std::time::Duration;

use crate::scenario::*;

/// Where `needle` first appears in `text` (panics with the text when it does not).
fn at(text: &str, needle: &str) -> usize {
    text.find(needle).unwrap_or_else(|| panic!("{needle:?} not in:\n{text}"))
}

const SIDECAR: &str = "sh -c 'trap \"echo proxy-down; exit 0\" INT TERM; echo proxy-up; while :; do sleep 0.1; done'";

#[test]
fn an_init_job_migrates_before_the_app_starts_and_a_sidecar_is_up_first_and_down_last() {
    let yml = format!(
        "apps:\n  - name: web\n    script: sh -c 'trap \"sleep 0.3; echo web-down; exit 0\" INT; test -f migrated && echo web-sees-migration; while :; do sleep 0.1; done'\n  - name: migrate\n    role: init\n    script: sh -c 'sleep 0.5; echo v2 > migrated; echo migrate-done'\n  - name: proxy\n    role: sidecar\n    script: {SIDECAR}\n"
    );
    let s = Scenario::new().file("e.yml", &yml);
    let mut r = s.start(&["e.yml"]);
    r.wait_for("web-sees-migration", Duration::from_secs(20));
    let out = r.stdout();
    assert!(at(&out, "proxy-up") < at(&out, "migrate-done"), "the sidecar is up before the init job runs:\n{out}");
    assert!(out.contains("App [web] starting: migrate completed, proxy ready"), "{out}");
    r.signal(libc::SIGTERM);
    let status = r.wait(Duration::from_secs(15)).expect("stops");
    assert_eq!(status.code(), Some(0));
    let out = r.stdout();
    assert!(at(&out, "web-down") < at(&out, "proxy-down"), "the sidecar stops after the app:\n{out}");
}

#[test]
fn a_failed_init_job_stops_the_container_with_its_code_and_nothing_else_starts() {
    let yml = format!(
        "apps:\n  - name: web\n    script: sh -c 'echo web-started; sleep 30'\n  - name: migrate\n    role: init\n    script: sh -c 'echo migration failed >&2; exit 3'\n  - name: proxy\n    role: sidecar\n    script: {SIDECAR}\n"
    );
    let s = Scenario::new().file("e.yml", &yml);
    let (status, out, err) = s.run(&["e.yml"], Duration::from_secs(20));
    assert_eq!(status.code(), Some(3), "{out}\n{err}");
    let all = format!("{out}{err}");
    assert!(all.contains("Init job [migrate] failed (exit code 3): stopping the container"), "{all}");
    assert!(!all.contains("web-started"), "{all}");
    assert!(all.contains("proxy-down"), "the sidecar was stopped: {all}");
}

#[test]
fn the_container_ends_when_the_main_app_ends_whatever_the_sidecar_does() {
    let yml = format!(
        "apps:\n  - name: job\n    autorestart: false\n    script: sh -c 'sleep 0.3; echo job-done; exit 0'\n  - name: proxy\n    role: sidecar\n    script: {SIDECAR}\n"
    );
    let s = Scenario::new().file("e.yml", &yml);
    let (status, out, err) = s.run(&["e.yml"], Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{out}\n{err}");
    assert!(at(&out, "proxy-up") < at(&out, "job-done") && at(&out, "job-done") < at(&out, "proxy-down"), "{out}");
}

#[test]
fn dependents_stop_first_and_ls_shows_what_an_app_waits_for() {
    let s = Scenario::new().file(
        "e.yml",
        "apps:\n  - name: api\n    script: sh -c 'trap \"echo api-down; exit 0\" INT; echo api-up; while :; do sleep 0.1; done'\n  - name: web\n    depends_on: [api]\n    script: sh -c 'trap \"sleep 0.4; echo web-down; exit 0\" INT; echo web-up; while :; do sleep 0.1; done'\n  - name: report\n    depends_on: {batch: completed}\n    script: sh -c 'echo report-ran'\n  - name: batch\n    script: sh -c 'sleep 30'\n",
    );
    let mut r = s.start(&["e.yml"]);
    r.wait_for("web-up", Duration::from_secs(20));
    // web may start once api is online (spawned, in fork mode): their own first lines may then
    // come in either order, the runtime's lines may not.
    r.wait_for("api-up", Duration::from_secs(20));
    let out = r.stdout();
    assert!(at(&out, "App [api:0] online") < at(&out, "App [web:1] starting in"), "{out}");
    let table = poll("ls shows report waiting", Duration::from_secs(10), || {
        let (code, out, _) = s.cli(&["ls"]);
        (code == 0 && out.contains("waiting: batch (completed)")).then_some(out)
    });
    assert!(!table.contains("report-ran"), "{table}");
    let (_, jlist, _) = s.cli(&["jlist"]);
    let ps: serde_json::Value = serde_json::from_str(&jlist).expect("jlist is JSON");
    let report = ps.as_array().unwrap().iter().find(|p| p["name"] == "report").expect("report listed");
    assert_eq!(
        (report["pm2_env"]["status"].as_str(), report["pm2_env"]["waiting_on"].as_str()),
        (Some("waiting"), Some("batch (completed)"))
    );
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(Duration::from_secs(15)).expect("stops").code(), Some(0));
    let out = r.stdout();
    assert!(at(&out, "web-down") < at(&out, "api-down"), "web depends on api: it stops first:\n{out}");
    assert!(!out.contains("report-ran"), "{out}");
}

#[test]
fn a_dependency_cycle_is_refused_with_its_place() {
    let s = Scenario::new()
        .file("e.yml", "apps:\n  - name: a\n    script: sh -c 'sleep 1'\n    depends_on: [b]\n  - name: b\n    script: sh -c 'sleep 1'\n    depends_on: [a]\n");
    let (status, out, err) = s.run(&["e.yml"], Duration::from_secs(10));
    assert_eq!(status.code(), Some(78), "{out}{err}");
    assert!(err.contains("e.yml:4:18: apps[0].depends_on: dependency cycle: a → b → a"), "{err}");
}

#[test]
fn a_failing_liveness_probe_restarts_the_app_with_reason_probe() {
    // The app "hangs" after a moment: its health file disappears, the process stays.
    let s = Scenario::new().file(
        "e.yml",
        "apps:\n  - name: hung\n    script: sh -c 'echo started; touch alive; sleep 0.5; rm -f alive; sleep 600'\n    liveness_probe: {exec: test -f alive, period: 200, failure_threshold: 2, timeout: 2000}\n",
    );
    let mut r = s.start(&["e.yml"]);
    r.wait_for("restarting (reason: probe)", Duration::from_secs(20));
    poll("started again", Duration::from_secs(10), || (r.stdout().matches("started").count() >= 2).then_some(()));
    let all = format!("{}{}", r.stdout(), r.stderr());
    assert!(all.contains("App [hung:0] liveness probe (exec) failed 2 time(s) in a row: the command exited with code 1"), "{all}");
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(Duration::from_secs(10)).expect("stops").code(), Some(0));
}

#[test]
fn depends_on_ready_waits_for_the_http_readiness_probe() {
    let port = free_port();
    // The server comes up a second after its process: online at once, ready only when it answers.
    let yml = format!(
        "apps:\n  - name: web\n    depends_on: {{api: ready}}\n    script: sh -c 'echo web-start; sleep 600'\n  - name: api\n    port: {port}\n    script: sh -c 'sleep 1; echo api-listening; exec python3 -m http.server {port} --bind 127.0.0.1'\n    readiness_probe: {{http: /, period: 200}}\n"
    );
    let s = Scenario::new().file("e.yml", &yml);
    let mut r = s.start(&["e.yml"]);
    r.wait_for("web-start", Duration::from_secs(30));
    let out = r.stdout();
    assert!(at(&out, "api-listening") < at(&out, "web-start"), "{out}");
    assert!(out.contains(&format!("App [api:1] ready (readiness probe http GET :{port}/ passed)")), "{out}");
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(Duration::from_secs(10)).expect("stops").code(), Some(0));
}

#[test]
fn ls_and_jlist_show_an_instance_that_is_online_but_not_ready() {
    let s = Scenario::new()
        .file("e.yml", "apps:\n  - name: api\n    script: sh -c 'sleep 600'\n    readiness_probe: {exec: test -f ready, period: 200}\n");
    let r = s.start(&["e.yml"]);
    r.wait_for("App [api:0] online", Duration::from_secs(20));
    poll("ls says not ready", Duration::from_secs(10), || s.cli(&["ls"]).1.contains("online (not ready)").then_some(()));
    std::fs::write(s.path().join("ready"), "").unwrap();
    poll("jlist says ready", Duration::from_secs(10), || {
        let ps: serde_json::Value = serde_json::from_str(&s.cli(&["jlist"]).1).ok()?;
        (ps[0]["pm2_env"]["ready"] == serde_json::json!(true) && ps[0]["pm2_env"]["status"] == "online").then_some(())
    });
    assert!(!s.cli(&["ls"]).1.contains("not ready"));
}

#[test]
fn a_node_app_whose_event_loop_blocks_gets_a_report_and_a_restart_from_the_watchdog() {
    let s = Scenario::new()
        .file("hang.js", "console.log('up');\nsetTimeout(() => { console.log('blocking'); for (;;) {} }, 300);\n")
        .file("e.yml", "apps:\n  - name: hang\n    script: hang.js\n    watchdog: 1000\n");
    let mut r = s.start(&["e.yml"]);
    r.wait_for("blocking", Duration::from_secs(20));
    let blocked = std::time::Instant::now();
    r.wait_for("restarting (reason: watchdog)", Duration::from_secs(10));
    let took = blocked.elapsed();
    // The heartbeat stops when the loop blocks: noticed within the watchdog period (+ slack for a loaded machine).
    assert!(took < Duration::from_millis(1000 + 2000), "took {took:?}");
    // The blocked main thread's stack, written by the hung process itself, is in its log.
    poll("the stack in the log", Duration::from_secs(10), || {
        let err = r.stderr();
        (err.contains("pm-runtime watchdog: the event loop has been blocked for") && err.contains("hang.js:2:")).then_some(())
    });
    poll("started again", Duration::from_secs(10), || (r.stdout().matches("up\n").count() >= 2).then_some(()));
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(Duration::from_secs(10)).expect("stops").code(), Some(0));
}

#[test]
fn any_language_feeds_the_watchdog_with_sd_notify_and_is_restarted_when_it_stops() {
    // python3 as the "other language": WATCHDOG=1 every 0.2 s for a second, then silence.
    let s = Scenario::new()
        .file(
            "beat.py",
            "import os, socket, time\nprint('up', os.environ['WATCHDOG_USEC'], flush=True)\naddr = os.environ['NOTIFY_SOCKET']\nif addr.startswith('@'): addr = '\\0' + addr[1:]\ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\nfor _ in range(5):\n    s.sendto(b'WATCHDOG=1', addr); time.sleep(0.2)\nprint('silent', flush=True)\ntime.sleep(600)\n",
        )
        .file("e.yml", "apps:\n  - name: beat\n    script: beat.py\n    watchdog: 700\n");
    let mut r = s.start(&["e.yml"]);
    r.wait_for("up 700000", Duration::from_secs(20));
    r.wait_for("silent", Duration::from_secs(10));
    assert!(!r.stdout().contains("reason: watchdog"), "heartbeats kept it alive: {}", r.stdout());
    r.wait_for("App [beat:0] sent no heartbeat for 700ms (event loop blocked?): restarting (reason: watchdog)", Duration::from_secs(10));
    poll("started again", Duration::from_secs(10), || (r.stdout().matches("up 700000").count() >= 2).then_some(()));
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(Duration::from_secs(10)).expect("stops").code(), Some(0));
}

/// The example folder as its README runs it: order, probes, the sidecar in front, reverse stop.
#[test]
fn the_order_and_health_example_runs_as_its_readme_says() {
    let s = Scenario::new();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/08-order-and-health");
    for f in ["ecosystem.config.yml", "migrate.js", "web.js", "worker.js", "proxy.js"] {
        std::fs::copy(src.join(f), s.path().join(f)).unwrap();
    }
    let mut r = s.start(&["start", "ecosystem.config.yml"]);
    let body = poll("the sidecar answers with web's page", Duration::from_secs(30), || http_get(3301).filter(|b| b.contains("schema 2")));
    assert_eq!(body, "hello from web (schema 2)\n");
    let out = r.stdout();
    assert!(at(&out, "proxy: listening") < at(&out, "migrate: schema 2 written"), "{out}");
    assert!(at(&out, "migrate: schema 2 written") < at(&out, "App [worker] starting"), "{out}");
    assert!(at(&out, "App [worker:3] online") < at(&out, "App [web] starting: worker started, migrate completed, proxy ready"), "{out}");
    // Its SIGINT handler is in place once it has said so (a slow machine may still be loading it).
    r.wait_for("worker: started", Duration::from_secs(20));
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(Duration::from_secs(15)).expect("stops").code(), Some(0));
    let out = r.stdout();
    assert!(at(&out, "web: stopping") < at(&out, "proxy: stopping (last)"), "{out}");
    assert!(at(&out, "worker: stopping") < at(&out, "proxy: stopping (last)"), "{out}");
}

#[test]
fn start_of_a_held_app_starts_what_it_needs_and_releases_it() {
    let s = Scenario::new().file(
        "e.yml",
        "apps:\n  - name: db\n    autorestart: false\n    script: sh -c 'test -f ok || exit 3; echo db-up'\n  - name: web\n    depends_on: {db: completed}\n    script: sh -c 'echo web-up; sleep 600'\n",
    );
    let r = s.start(&["e.yml", "--no-auto-exit"]);
    r.wait_for("App [web] cannot start: it needs db (completed): it ended with code 3", Duration::from_secs(20));
    std::fs::write(s.path().join("ok"), "").unwrap();
    let (code, _, err) = s.cli(&["start", "web"]);
    assert_eq!(code, 0, "{err}");
    r.wait_for("web-up", Duration::from_secs(20));
    let out = r.stdout();
    assert!(at(&out, "db-up") < at(&out, "web-up"), "{out}");
}

#[test]
fn the_event_loop_lag_of_a_watched_node_app_is_a_metric() {
    use std::io::{Read, Write};
    let s = Scenario::new()
        .file("busy.js", "console.log('up');\nsetInterval(() => { const t = Date.now(); while (Date.now() - t < 120) {} }, 200);\n")
        .file("e.yml", "apps:\n  - name: lag\n    script: busy.js\n    watchdog: 2000\n");
    let r = s.start(&["e.yml", "--web=0"]);
    r.wait_for("HTTP API, /metrics and dashboard on http://", Duration::from_secs(20));
    let out = r.stdout() + &r.stderr();
    let at = out.find("on http://").unwrap() + "on http://".len();
    let addr: String = out[at..].chars().take_while(|c| !c.is_whitespace()).collect();
    let metrics = || {
        let mut c = std::net::TcpStream::connect(&addr).ok()?;
        c.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut text = String::new();
        c.read_to_string(&mut text).ok()?;
        Some(text)
    };
    // The app blocks its loop for 120 ms every 200 ms: the heartbeat timer fires late.
    let line = poll("a lag above 10 ms in /metrics", Duration::from_secs(20), || {
        let text = metrics()?;
        let line = text.lines().find(|l| l.starts_with("pm_runtime_app_event_loop_lag_seconds{app=\"lag\""))?.to_string();
        let v: f64 = line.rsplit(' ').next()?.parse().ok()?;
        (v > 0.01).then_some(line)
    });
    assert!(line.contains("pm_id=\"0\""), "{line}");
    // The same number in jlist, which monit's metrics pane shows.
    poll("a lag above 10 ms in jlist", Duration::from_secs(20), || {
        let (code, out, _) = s.cli(&["jlist"]);
        let list: serde_json::Value = serde_json::from_str(&out).ok()?;
        (code == 0 && list[0]["pm2_env"]["event_loop_lag_ms"].as_f64().is_some_and(|ms| ms > 10.0)).then_some(())
    });
}

#[test]
fn sighup_reloads_the_apps_but_does_not_run_an_init_job_again() {
    let s = Scenario::new().file(
        "e.yml",
        "apps:\n  - name: migrate\n    role: init\n    script: sh -c 'echo migration-ran'\n  - name: web\n    script: sh -c 'echo web-up; sleep 600'\n",
    );
    let mut r = s.start(&["e.yml"]);
    r.wait_for("web-up", Duration::from_secs(20));
    r.signal(libc::SIGHUP);
    poll("web restarted by the reload", Duration::from_secs(10), || (r.stdout().matches("web-up").count() >= 2).then_some(()));
    assert_eq!(r.stdout().matches("migration-ran").count(), 1, "{}", r.stdout());
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(Duration::from_secs(10)).expect("stops").code(), Some(0));
}

#[test]
fn as_pid1_a_failed_init_job_ends_the_container_with_its_code_and_a_finished_app_ends_it_despite_the_sidecar() {
    require_tool("unshare", &["--pid", "--fork", "--mount-proc", "true"]);
    let run = |yml: &str| {
        let s = Scenario::new().file("e.yml", yml);
        let mut cmd = std::process::Command::new("unshare");
        cmd.args(["--pid", "--fork", "--mount-proc", BIN, "e.yml"]).current_dir(s.path()).env("PM2_HOME", s.path().join(".pm2"));
        let mut r = Running::start(cmd);
        let status = r.wait(Duration::from_secs(30)).expect("the container ends by itself");
        (status.code(), r.stdout() + &r.stderr())
    };
    let (code, out) = run(&format!(
        "apps:\n  - name: web\n    script: sh -c 'echo web-started; sleep 30'\n  - name: migrate\n    role: init\n    script: sh -c 'exit 4'\n  - name: proxy\n    role: sidecar\n    script: {SIDECAR}\n"
    ));
    assert_eq!(code, Some(4), "{out}");
    assert!(out.contains("proxy-down") && !out.contains("web-started"), "{out}");
    let (code, out) = run(&format!(
        "apps:\n  - name: job\n    autorestart: false\n    script: sh -c 'echo job-done'\n  - name: proxy\n    role: sidecar\n    script: {SIDECAR}\n"
    ));
    assert_eq!(code, Some(0), "{out}");
    assert!(at(&out, "job-done") < at(&out, "proxy-down"), "{out}");
}

#[test]
fn an_app_added_to_a_running_runtime_waits_for_what_it_needs_there() {
    let s = Scenario::new()
        .file("one.yml", "apps:\n  - name: db\n    script: sh -c 'echo db-up; sleep 600'\n")
        .file("two.yml", "apps:\n  - name: db\n    script: sh -c 'echo db-up; sleep 600'\n  - name: web\n    depends_on: {db: online}\n    script: sh -c 'echo web-up; sleep 600'\n");
    let r = s.start(&["one.yml"]);
    r.wait_for("db-up", Duration::from_secs(20));
    let (code, out, err) = s.cli(&["startOrRestart", "two.yml"]);
    assert_eq!(code, 0, "{out}{err}");
    r.wait_for("web-up", Duration::from_secs(20));
    assert!(r.stdout().contains("App [web] starting: db online"), "{}", r.stdout());
}
