//! Restart triggers: exponential backoff, memory limit on the tree, cron, watch.

use std::time::{Duration, Instant};

use crate::scenario::*;

#[test]
fn exponential_backoff_gaps_follow_pm2s_sequence() {
    // Each run appends a monotonic timestamp (ms) to a file; the gaps must be 100, 150, 225, 337, 505.
    let s = Scenario::new()
        .file("crash.sh", "#!/bin/sh\ndate +%s%3N >> starts.txt\nexit 1\n")
        .file("eco.yml", "apps:\n  - name: b\n    script: crash.sh\n    exp_backoff_restart_delay: 100\n    max_restarts: 100\n");
    let mut r = s.start(&["eco.yml"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let starts = loop {
        let text = std::fs::read_to_string(s.path().join("starts.txt")).unwrap_or_default();
        let v: Vec<f64> = text.lines().filter_map(|l| l.parse().ok()).collect();
        if v.len() >= 6 || Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    r.signal(libc::SIGTERM);
    r.wait(Duration::from_secs(5)).unwrap();
    assert!(starts.len() >= 6, "{starts:?}");
    let want = [100.0, 150.0, 225.0, 337.0, 505.0];
    // Process start-up sits inside every gap: subtract the median overhead.
    let gaps: Vec<f64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    let mut over: Vec<f64> = gaps.iter().zip(want).map(|(g, w)| g - w).collect();
    over.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let overhead = over[over.len() / 2];
    for (g, w) in gaps.iter().zip(want) {
        assert!((g - overhead - w).abs() <= 50.0, "gaps {gaps:?} vs {want:?}");
    }
    assert!(r.stdout().contains("will restart in 100ms") && r.stdout().contains("will restart in 505ms"), "{}", r.stdout());
}

#[test]
fn memory_limit_restarts_a_tree_whose_child_grows() {
    // The parent stays small; its child grows 20 MB/s. The limit is on the whole tree.
    let s = Scenario::new()
        .file("grow.py", "import time\nb = []\nwhile True:\n    b.append(bytearray(20 * 1024 * 1024))\n    time.sleep(1)\n")
        .file("parent.sh", "#!/bin/sh\necho parent up\npython3 grow.py\n")
        .file("eco.yml", "apps:\n  - name: m\n    script: parent.sh\n    max_memory_restart: 60M\n");
    let mut r = s.start(&["eco.yml"]);
    r.wait_for("exceeds max_memory_restart", Duration::from_secs(15));
    poll("the app to start again", Duration::from_secs(5), || (r.stdout().matches("parent up").count() >= 2).then_some(()));
    let out = r.stdout() + &r.stderr();
    let line = out.lines().find(|l| l.contains("exceeds max_memory_restart")).unwrap().to_string();
    let current: u64 = line.split("current_memory=").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    // Detected within one sample of crossing: at most one 20 MB step above the limit.
    assert!(current > 60 << 20 && current < (60 << 20) + (45 << 20), "{line}");
    r.signal(libc::SIGTERM);
    r.wait(Duration::from_secs(5)).unwrap();
}

#[test]
fn cron_restarts_running_app_and_starts_stopped_one() {
    let s = Scenario::new()
        .file("run.sh", "#!/bin/sh\necho tick\nsleep 100\n")
        .file("once.sh", "#!/bin/sh\necho batch\n")
        .file(
            "eco.yml",
            "apps:\n  - name: r\n    script: run.sh\n    cron_restart: '*/2 * * * * *'\n  - name: batch\n    script: once.sh\n    autorestart: false\n    cron_restart: '*/2 * * * * *'\n",
        );
    let started = Instant::now();
    let mut r = s.start(&["eco.yml"]);
    let count = |out: &str, what: &str| out.lines().filter(|l| *l == what).count();
    // Three runs of each: the first, then two cron fires (every even second: 2 to 4 s in).
    let out = poll("three runs of each app", Duration::from_secs(8), || {
        let out = r.stdout();
        (count(&out, "tick") >= 3 && count(&out, "batch") >= 3).then_some(out)
    });
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1900), "restarted more often than every 2 s: {took:?}\n{out}");
    assert!(count(&out, "tick") <= 4 && count(&out, "batch") <= 4, "{out}");
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(Duration::from_secs(5)).unwrap().code(), Some(0));
}

#[test]
fn watch_restarts_once_per_burst_and_ignores_node_modules() {
    let s = Scenario::new()
        .file("app.sh", "#!/bin/sh\necho started\nsleep 100\n")
        .file("src/a.txt", "a")
        .file("node_modules/dep/index.js", "x")
        .file("eco.yml", "apps:\n  - name: w\n    script: app.sh\n    watch: true\n");
    let mut r = s.start(&["eco.yml"]);
    r.wait_for("started", Duration::from_secs(5));
    r.wait_for("online", Duration::from_secs(5));
    let count = |r: &Running| r.stdout().lines().filter(|l| *l == "started").count();
    let changes =
        |r: &Running| lines_with(&(r.stdout() + &r.stderr()), "Change detected").into_iter().map(str::to_string).collect::<Vec<_>>();
    let restarts_to = |r: &Running, n: usize| poll(&format!("{n} runs"), Duration::from_secs(5), || (count(r) >= n).then_some(()));
    // Writing into node_modules restarts nothing; a touched file after it is the barrier: the
    // one restart that follows must name it.
    for i in 0..20 {
        std::fs::write(s.path().join(format!("node_modules/dep/f{i}.js")), "x").unwrap();
    }
    std::fs::write(s.path().join("src/a.txt"), "b").unwrap();
    restarts_to(&r, 2);
    let seen = changes(&r);
    assert!(seen.len() == 1 && seen[0].contains("a.txt"), "{seen:?}");
    // 100 files at once: one restart; then one more file (the barrier): one more restart.
    for i in 0..100 {
        std::fs::write(s.path().join(format!("src/f{i}.txt")), "x").unwrap();
    }
    restarts_to(&r, 3);
    std::fs::write(s.path().join("src/z.txt"), "z").unwrap();
    restarts_to(&r, 4);
    let seen = changes(&r);
    assert!(seen.len() == 3 && seen[2].contains("z.txt"), "one restart per burst: {seen:?}");
    assert_eq!(count(&r), 4, "{}", r.stdout());
    r.signal(libc::SIGTERM);
    r.wait(Duration::from_secs(5)).unwrap();
}

#[test]
fn backoff_resets_after_stable_uptime() {
    // EXP_BACKOFF_RESET_TIMER (PM2's knob) shortens the 30 s reset so the test stays quick.
    let s = Scenario::new()
        .file("flaky.sh", "#!/bin/sh\nn=$(cat n 2>/dev/null || echo 0); n=$((n+1)); echo $n > n\necho run $n\nif [ $n -eq 4 ]; then sleep 2; fi\nexit 1\n")
        .file("eco.yml", "apps:\n  - name: f\n    script: flaky.sh\n    exp_backoff_restart_delay: 100\n    max_restarts: 100\n");
    let mut cmd = s.command(&["eco.yml"]);
    cmd.env("EXP_BACKOFF_RESET_TIMER", "1500");
    let mut r = Running::start(cmd);
    r.wait_for("run 6", Duration::from_secs(15));
    r.signal(libc::SIGTERM);
    r.wait(Duration::from_secs(5)).unwrap();
    let delays: Vec<String> = r.stdout().lines().filter_map(|l| l.split("will restart in ").nth(1)).map(str::to_string).collect();
    // 100, 150, 225, then run 4 stays up 2 s (> 1.5 s): the next delay is 100 again.
    assert_eq!(&delays[..5], &["100ms", "150ms", "225ms", "100ms", "150ms"], "{}", r.stdout());
}
