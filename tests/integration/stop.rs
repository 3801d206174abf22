//! Stopping: signals to the runtime, kill_timeout, process trees, PID 1 in a fresh namespace.

use std::time::{Duration, Instant};

use crate::scenario::*;

#[test]
fn sigint_handler_of_800ms_completes() {
    let s = Scenario::new().file(
        "graceful.js",
        "process.on('SIGINT', () => { console.log('cleanup start'); setTimeout(() => { console.log('cleanup done'); process.exit(0); }, 800); });\nconsole.log('up'); setInterval(() => {}, 1000);\n",
    );
    let mut r = s.start(&["graceful.js"]);
    r.wait_for("up", Duration::from_secs(10));
    r.signal(libc::SIGTERM);
    let status = r.wait(Duration::from_secs(5)).unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(r.stdout().contains("cleanup done"), "{}", r.stdout());
    // The SIGKILL warning goes to stderr in raw mode: look at both streams.
    assert!(!r.stdout().contains("SIGKILL") && !r.stderr().contains("SIGKILL"), "{}\n{}", r.stdout(), r.stderr());
}

#[test]
fn app_ignoring_signals_is_killed_after_kill_timeout_with_its_children() {
    let s = Scenario::new()
        .file("stubborn.sh", "#!/bin/sh\ntrap '' INT TERM\nsleep 4141 &\nsetsid sleep 4142 &\necho stubborn\nwhile :; do sleep 1; done\n");
    let marker = s.path().to_string_lossy().to_string();
    let mut r = s.start(&["stubborn.sh", "--kill-timeout", "700"]);
    r.wait_for("stubborn", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    r.signal(libc::SIGTERM);
    let status = r.wait(Duration::from_secs(5)).expect("exits");
    let took = t.elapsed();
    assert_eq!(status.code(), Some(0));
    assert!(took >= Duration::from_millis(650) && took < Duration::from_millis(2500), "took {took:?}");
    assert!(r.stderr().contains("sending SIGKILL"), "warnings go to stderr in raw mode: {}", r.stderr());
    assert!(pids_with(&marker).is_empty(), "survivors: {:?}", pids_with(&marker));
    // The sleeps (including the one that left for its own session) are gone too.
    assert!(pids_with("sleep 414").is_empty(), "a sleep survived: {:?}", pids_with("sleep 414"));
}

#[test]
fn second_stop_signal_kills_at_once() {
    let s = Scenario::new().file("slow.sh", "#!/bin/sh\ntrap '' INT TERM\necho slow\nwhile :; do sleep 1; done\n");
    let mut r = s.start(&["slow.sh", "--kill-timeout", "10000"]);
    r.wait_for("slow", Duration::from_secs(10));
    r.signal(libc::SIGTERM);
    // A second signal counts once it is clearly a second request (signals::STOP_ECHO, 500 ms).
    std::thread::sleep(Duration::from_millis(700));
    let t = Instant::now();
    r.signal(libc::SIGTERM);
    r.wait(Duration::from_secs(3)).expect("second TERM ends it quickly");
    assert!(t.elapsed() < Duration::from_secs(2));
}

/// A platform that signals every process (Heroku's dyno manager) plus a launcher that relays its
/// copy (npm's launcher on Node < 22.15) deliver two TERMs a moment apart: still one graceful
/// stop, never the forced kill of a second request.
#[test]
fn an_echoed_stop_signal_is_the_same_graceful_stop() {
    let s = Scenario::new().file(
        "slow.js",
        "process.on('SIGINT', () => setTimeout(() => { console.log('cleaned up'); process.exit(0); }, 400));\nconsole.log('slow up');\nsetInterval(() => {}, 1000);\n",
    );
    let mut r = s.start(&["slow.js"]);
    r.wait_for("slow up", Duration::from_secs(10));
    r.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(30));
    r.signal(libc::SIGTERM);
    let status = r.wait(Duration::from_secs(10)).expect("stops");
    assert_eq!(status.code(), Some(0), "{}{}", r.stdout(), r.stderr());
    assert!(r.stdout().contains("cleaned up"), "the app was not allowed to finish: {}", r.stdout());
    assert!(!(r.stdout() + &r.stderr()).contains("Second stop signal"), "{}{}", r.stdout(), r.stderr());
}

#[test]
fn heroku_style_term_to_everyone_does_not_restart_apps() {
    let s = Scenario::new()
        .file("a.js", "process.on('SIGTERM', () => process.exit(0)); console.log('a up'); setInterval(() => {}, 1000);\n")
        .file("b.sh", "#!/bin/sh\ntrap 'exit 0' TERM\necho b up\nwhile :; do sleep 0.1; done\n")
        .file("eco.yml", "apps:\n  - name: a\n    script: a.js\n  - name: b\n    script: b.sh\n");
    let marker = s.path().to_string_lossy().to_string();
    let mut r = s.start(&["eco.yml"]);
    r.wait_for("a up", Duration::from_secs(10));
    r.wait_for("b up", Duration::from_secs(10));
    let mut all = pids_with(&marker);
    all.push(r.pid());
    for p in all {
        // SAFETY: plain kill(2), like Heroku's dyno manager.
        unsafe { libc::kill(p as i32, libc::SIGTERM) };
    }
    let status = r.wait(Duration::from_secs(5)).expect("exits");
    assert_eq!(status.code(), Some(0));
    let out = r.stdout();
    assert_eq!(lines_with(&out, "starting in").len(), 2, "no app may be restarted:\n{out}");
}

fn ns_children(host_pid: u32) -> Vec<(u32, char)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let state = f.next().unwrap_or("?").chars().next().unwrap_or('?');
        let ppid: u32 = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid == host_pid {
            out.push((pid, state));
        }
    }
    out
}

#[test]
fn as_pid1_orphans_are_reaped_and_stop_is_complete() {
    // Runs the runtime as PID 1 of a fresh PID namespace (CI runs as root with util-linux).
    require_tool("unshare", &["--pid", "--fork", "--mount-proc", "true"]);
    let s = Scenario::new().file(
        "orphans.sh",
        "#!/bin/sh\ni=0\nwhile [ $i -lt 500 ]; do ( sleep 0.3 & ) ; i=$((i+1)); done\necho spawned 500 orphans\nsetsid sleep 2002 &\nwhile :; do sleep 1; done\n",
    );
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", BIN, "start", "orphans.sh"]).current_dir(s.path());
    let mut r = Running::start(cmd);
    r.wait_for("spawned 500 orphans", Duration::from_secs(20));
    // unshare's child is pm-runtime, PID 1 inside.
    let deadline = Instant::now() + Duration::from_secs(2);
    let runtime = loop {
        if let Some((pid, _)) = ns_children(r.pid()).first() {
            break *pid;
        }
        assert!(Instant::now() < deadline, "no runtime under unshare");
    };
    let nspid = std::fs::read_to_string(format!("/proc/{runtime}/status")).unwrap();
    assert!(nspid.lines().any(|l| l.starts_with("NSpid:") && l.trim_end().ends_with("\t1")), "not PID 1: {nspid}");
    std::thread::sleep(Duration::from_secs(2));
    let zombies: Vec<_> = ns_children(runtime).into_iter().filter(|(_, st)| *st == 'Z').collect();
    assert!(zombies.is_empty(), "zombies left: {}", zombies.len());

    let t = Instant::now();
    // SAFETY: kill(2) on the runtime's host pid.
    unsafe { libc::kill(runtime as i32, libc::SIGTERM) };
    let status = r.wait(Duration::from_secs(5)).expect("exits");
    assert!(t.elapsed() < Duration::from_millis(1600 + 1500), "took {:?}", t.elapsed());
    assert_eq!(status.code(), Some(0), "{}\n{}", r.stdout(), r.stderr());
    assert!(ns_children(runtime).is_empty());
    assert!(pids_with("sleep 2002").is_empty(), "a process of the namespace survived");
}

#[test]
fn apps_do_not_outlive_a_killed_runtime() {
    let s = Scenario::new().file("long.sh", "#!/bin/sh\necho long up\nexec sleep 3003\n");
    let mut r = s.start(&["long.sh"]);
    r.wait_for("long up", Duration::from_secs(5));
    wait_for_process("sleep 3003", Duration::from_secs(2));
    assert_eq!(pids_with("sleep 3003").len(), 1);
    r.child.kill().unwrap(); // SIGKILL: no chance to stop anything
    r.wait(Duration::from_secs(2));
    let deadline = Instant::now() + Duration::from_secs(2);
    while !pids_with("sleep 3003").is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(pids_with("sleep 3003").is_empty(), "the app outlived its runtime");
}

#[test]
fn an_app_stopped_just_before_the_runtime_is_not_restarted() {
    // The platform's TERM reaches the app 30 ms before it reaches the runtime.
    let s = Scenario::new().file("t.sh", "#!/bin/sh\necho t up\nexec sleep 5151\n");
    let mut r = s.start(&["t.sh"]);
    r.wait_for("t up", Duration::from_secs(5));
    wait_for_process("sleep 5151", Duration::from_secs(2));
    for p in pids_with("sleep 5151") {
        // SAFETY: plain kill(2) on the app's processes.
        unsafe { libc::kill(p as i32, libc::SIGTERM) };
    }
    std::thread::sleep(Duration::from_millis(30));
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(Duration::from_secs(5)).unwrap().code(), Some(0));
    assert_eq!(r.stdout().matches("starting in").count(), 1, "restarted during shutdown:\n{}", r.stdout());
}

fn cli(s: &Scenario, args: &[&str]) -> std::process::Output {
    std::process::Command::new(BIN).args(args).current_dir(s.path()).env("PM2_HOME", s.path().join(".pm2")).output().unwrap()
}

#[test]
fn commands_are_answered_while_an_app_is_stopping() {
    // The app ignores the kill signal: its stop lasts kill_timeout (3 s). A signal sent meanwhile
    // reaches it at once, and a delete sent meanwhile ends the instance with that same stop.
    let s = Scenario::new()
        .file("t.sh", "#!/bin/sh\ntrap '' INT TERM\ntrap 'echo got USR2' USR2\necho t up\nwhile :; do sleep 0.1; done\n")
        .file("e.yml", "apps:\n  - name: t\n    script: t.sh\n    kill_timeout: 3000\n");
    let mut r = s.start(&["e.yml", "--no-auto-exit"]);
    r.wait_for("t up", Duration::from_secs(10));
    r.wait_for("online", Duration::from_secs(5));
    let t = Instant::now();
    // The `stop` verb waits until the app has stopped: run it in the background.
    let mut stop = std::process::Command::new(BIN)
        .args(["stop", "t"])
        .current_dir(s.path())
        .env("PM2_HOME", s.path().join(".pm2"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    r.wait_for("Stopping app:t", Duration::from_secs(2));
    assert!(cli(&s, &["sendSignal", "SIGUSR2", "t"]).status.success());
    r.wait_for("got USR2", Duration::from_secs(2));
    assert!(t.elapsed() < Duration::from_secs(2), "the signal waited for the stop: {:?}", t.elapsed());
    assert!(cli(&s, &["delete", "t"]).status.success());
    let gone = poll("t deleted", Duration::from_secs(6), || {
        let out = cli(&s, &["jlist"]);
        (String::from_utf8_lossy(&out.stdout).trim() == "[]").then(|| t.elapsed())
    });
    assert!(gone < Duration::from_millis(4500), "one kill_timeout, then gone: {gone:?}");
    assert!(r.stderr().contains("sending SIGKILL"), "{}", r.stderr());
    let _ = stop.wait();
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(Duration::from_secs(5)).unwrap().code(), Some(0));
}

#[test]
fn a_cluster_worker_that_ignores_everything_is_killed_after_one_kill_timeout() {
    // Survives `disconnect` (an interval keeps it alive) and ignores SIGINT: SIGKILL comes
    // kill_timeout after the stop began, not after disconnect + kill_timeout.
    let port = free_port();
    let s = Scenario::new()
        .file(
            "w.js",
            "process.on('SIGINT', () => console.log('ignoring SIGINT'));\nrequire('http').createServer((q, r) => r.end('x')).listen(process.env.PORT, '127.0.0.1', () => console.log('w up'));\nsetInterval(() => {}, 1000);\n",
        )
        .file("e.yml", &format!("apps:\n  - name: w\n    script: w.js\n    exec_mode: cluster\n    instances: 1\n    kill_timeout: 1500\n    env:\n      PORT: {port}\n"));
    let mut r = s.start(&["e.yml"]);
    r.wait_for("online (listening", Duration::from_secs(10));
    let t = Instant::now();
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(Duration::from_secs(10)).unwrap().code(), Some(0));
    let took = t.elapsed();
    assert!(r.stdout().contains("ignoring SIGINT"), "the kill signal came after the disconnect: {}", r.stdout());
    assert!(r.stderr().contains("sending SIGKILL"), "{}", r.stderr());
    assert!(took >= Duration::from_millis(1400) && took < Duration::from_millis(2700), "one budget of 1.5 s: {took:?}");
}

#[test]
fn shutdown_with_message_sends_shutdown_on_the_ipc_channel_instead_of_the_signal() {
    let s = Scenario::new()
        .file(
            "m.js",
            "process.on('SIGINT', () => console.log('got SIGINT'));\nprocess.on('message', (m) => { if (m === 'shutdown') { console.log('got shutdown message'); process.exit(0); } });\nconsole.log('m up');\nsetInterval(() => {}, 1000);\n",
        )
        .file("e.yml", "apps:\n  - name: m\n    script: m.js\n    shutdown_with_message: true\n    kill_timeout: 5000\n");
    let mut r = s.start(&["e.yml"]);
    r.wait_for("m up", Duration::from_secs(10));
    let t = Instant::now();
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(Duration::from_secs(8)).unwrap().code(), Some(0));
    let out = r.stdout();
    assert!(out.contains("got shutdown message") && !out.contains("got SIGINT"), "{out}");
    assert!(t.elapsed() < Duration::from_secs(3), "no kill_timeout wait: {:?}", t.elapsed());
}
