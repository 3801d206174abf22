//! Restart basics and the exit code of the runtime.

use std::time::Duration;

use crate::scenario::*;

#[test]
fn app_exit_code_is_the_runtime_exit_code_without_autorestart() {
    let s = Scenario::new()
        .file("exit3.sh", "#!/bin/sh\necho bye\nexit 3\n")
        .file("eco.yml", "apps:\n  - name: e\n    script: exit3.sh\n    autorestart: false\n");
    let started = std::time::Instant::now();
    let (status, out, _) = s.run(&["eco.yml"], Duration::from_secs(10));
    assert_eq!(status.code(), Some(3), "{out}");
    assert!(started.elapsed() < Duration::from_secs(3), "auto-exit must not wait like pm2-runtime's 12 s");
    assert_eq!(lines_with(&out, "bye").len(), 1);
}

#[test]
fn crash_loop_becomes_errored_and_runtime_exits_2() {
    let s = Scenario::new()
        .file("crash.sh", "#!/bin/sh\necho crash\nexit 1\n")
        .file("eco.yml", "apps:\n  - name: c\n    script: crash.sh\n    max_restarts: 5\n");
    let (status, out, err) = s.run(&["eco.yml"], Duration::from_secs(20));
    assert_eq!(status.code(), Some(2), "{out}\n{err}");
    assert_eq!(lines_with(&out, "crash").iter().filter(|l| **l == "crash").count(), 5, "{out}");
    assert!(format!("{out}{err}").contains("too many unstable restarts"));
}

#[test]
fn stop_exit_codes_end_without_restart() {
    let s = Scenario::new()
        .file("x.sh", "#!/bin/sh\necho once\nexit 42\n")
        .file("eco.yml", "apps:\n  - name: x\n    script: x.sh\n    stop_exit_codes: [42]\n");
    let (status, out, _) = s.run(&["eco.yml"], Duration::from_secs(10));
    assert_eq!(status.code(), Some(42));
    assert_eq!(out.lines().filter(|l| *l == "once").count(), 1, "{out}");
}

#[test]
fn slow_crash_is_restarted_with_restart_delay() {
    let s = Scenario::new()
        .file("c.sh", "#!/bin/sh\necho run\nexit 1\n")
        .file("eco.yml", "apps:\n  - name: d\n    script: c.sh\n    restart_delay: 300\n    max_restarts: 3\n    min_uptime: 100\n");
    let mut r = s.start(&["eco.yml"]);
    r.wait_for("will restart in 300ms", Duration::from_secs(5));
    let t = std::time::Instant::now();
    let runs = || r.stdout().lines().filter(|l| *l == "run").count();
    poll("three runs", Duration::from_secs(5), || (runs() >= 3).then_some(()));
    // Two more runs, each after a 300 ms delay.
    assert!(t.elapsed() >= Duration::from_millis(500), "restarted without the delay: {:?}", t.elapsed());
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(Duration::from_secs(5)).unwrap().code(), Some(0), "a waiting restart is cancelled by a stop");
}

#[test]
fn no_auto_exit_keeps_running() {
    let s = Scenario::new().file("q.sh", "#!/bin/sh\nexit 0\n");
    let mut r = s.start(&["q.sh", "--no-autorestart", "--no-auto-exit"]);
    r.wait_for("exited with code [0]", Duration::from_secs(5));
    assert!(r.wait(Duration::from_millis(800)).is_none(), "still running");
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(Duration::from_secs(5)).unwrap().code(), Some(0));
}

#[test]
fn a_panicked_instance_task_is_noticed_its_process_killed_and_restarted() {
    // PM_RUNTIME_TEST_PANIC (debug builds only) makes pm_id 0's task panic once its process runs.
    let s = Scenario::new().file("p.sh", "#!/bin/sh\necho \"up $$\"\nexec sleep 6161\n");
    let mut cmd = s.command(&["p.sh"]);
    cmd.env("PM_RUNTIME_TEST_PANIC", "0");
    let mut r = Running::start(cmd);
    r.wait_for("supervision task panicked", Duration::from_secs(10));
    let all = poll("a second process", Duration::from_secs(5), || {
        let out = r.stdout();
        let pids: Vec<u32> = out.lines().filter_map(|l| l.strip_prefix("up ")?.trim().parse().ok()).collect();
        (pids.len() >= 2).then_some(pids)
    });
    assert_eq!(all.len(), 2, "restarted once: {}", r.stdout());
    // The first process was killed with its task: only the new one runs.
    poll("the first process gone", Duration::from_secs(5), || {
        (!std::path::Path::new(&format!("/proc/{}", all[0])).exists()
            || std::fs::read_to_string(format!("/proc/{}/stat", all[0])).is_ok_and(|s| s.contains(") Z")))
        .then_some(())
    });
    assert_eq!(pids_with("sleep 6161").len(), 1);
    let err = r.stdout() + &r.stderr();
    assert!(
        err.contains("App [p:0] supervision task panicked (injected by PM_RUNTIME_TEST_PANIC); its processes were killed; it is restarted"),
        "{err}"
    );
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(Duration::from_secs(5)).unwrap().code(), Some(0));
    assert!(pids_with("sleep 6161").is_empty());
}
