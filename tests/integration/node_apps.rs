//! Node apps as PM2's process container runs them (pm-runtime's preload): unhandled rejections
//! are logged and not fatal, uncaught exceptions are logged and exit 1, in fork and cluster
//! mode; `pm_runtime_preload: false` gives Node's defaults back.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::scenario::*;

/// MODE=reject: an unhandled rejection 100 ms after start, then proof of life.
/// MODE=throw: an uncaught exception in the first run only (`restart_time` is PM2's counter).
const APP: &str = r#"
const mode = process.env.MODE;
console.log(`boot ${process.env.name} run=${process.env.restart_time} title=${process.title} execArgv=${process.execArgv.join(' ')}`);
if (mode === 'reject') {
  setTimeout(() => Promise.reject(new Error(`rejected-on-purpose by ${process.env.name}`)), 100);
  setTimeout(() => console.log(`${process.env.name} still up after the rejection`), 400);
}
if (mode === 'throw' && process.env.restart_time === '0') {
  setTimeout(() => { throw new Error(`thrown-on-purpose by ${process.env.name}`); }, 100);
}
if (mode === 'throw' && process.env.restart_time !== '0') console.log(`${process.env.name} second life`);
if (process.env.PORT) require('http').createServer((q, r) => r.end('ok')).listen(process.env.PORT, '127.0.0.1');
setInterval(() => {}, 1000);
"#;

fn scenario(mode: &str, extra: &str) -> Scenario {
    Scenario::new().file("app.js", APP).file(
        "e.yml",
        &format!(
            "apps:\n  - name: f\n    script: app.js\n    node_args: --max-old-space-size=77\n{extra}    env:\n      MODE: {mode}\n  \
             - name: c\n    script: app.js\n    exec_mode: cluster\n    instances: 2\n{extra}    env:\n      MODE: {mode}\n      PORT: {}\n",
            free_port()
        ),
    )
}

fn jlist(s: &Scenario) -> Vec<serde_json::Value> {
    let out = Command::new(BIN).arg("jlist").current_dir(s.path()).env("PM2_HOME", s.path().join(".pm2")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap().as_array().unwrap().clone()
}

/// Waits until `needle` occurs `n` times in stdout + stderr.
fn wait_count(r: &Running, needle: &str, n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while (r.stdout() + &r.stderr()).matches(needle).count() < n {
        assert!(Instant::now() < deadline, "{needle:?} not seen {n} times\n--- stdout ---\n{}\n--- stderr ---\n{}", r.stdout(), r.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn unhandled_rejection_is_logged_and_not_fatal_in_fork_and_cluster_mode() {
    let s = scenario("reject", "");
    let mut r = s.start(&["e.yml"]);
    wait_count(&r, "still up after the rejection", 3, Duration::from_secs(15));
    // stderr travels on its own pipe: wait for its lines too before counting them.
    wait_count(&r, "rejected-on-purpose by", 3, Duration::from_secs(15));
    let (out, err) = (r.stdout(), r.stderr());
    // PM2's wording: the cluster container prefixes the stack; the fork container prints the error.
    assert_eq!(
        err.matches("You have triggered an unhandledRejection, you may have forgotten to catch a Promise rejection:").count(),
        2,
        "{err}"
    );
    assert_eq!(err.matches("Error: rejected-on-purpose by c").count(), 2, "{err}");
    assert_eq!(err.matches("Error: rejected-on-purpose by f").count(), 1, "{err}");
    assert!(!out.contains("exited with code"), "{out}");
    for p in jlist(&s) {
        assert_eq!(p["pm2_env"]["status"], "online", "{p}");
        assert_eq!(p["pm2_env"]["restart_time"], 0, "{p}");
    }
    // process.title as PM2 sets it; node_args kept, after the preload and before the script.
    let title = format!("title=node {}", s.path().join("app.js").display());
    assert_eq!(out.matches(&title).count(), 3, "{out}");
    // The app sees only its own node_args (children it forks must not inherit the preload,
    // which handled the rejection above).
    let f_boot = lines_with(&out, "boot f ")[0];
    assert!(f_boot.ends_with("execArgv=--max-old-space-size=77"), "{f_boot}");
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(Duration::from_secs(10)).unwrap().code(), Some(0));
}

#[test]
fn uncaught_exception_is_logged_then_exits_1_and_is_restarted() {
    let s = scenario("throw", "");
    let mut r = s.start(&["e.yml"]);
    wait_count(&r, "second life", 3, Duration::from_secs(15));
    wait_count(&r, "thrown-on-purpose by", 3, Duration::from_secs(15));
    let (out, err) = (r.stdout(), r.stderr());
    assert_eq!(err.matches("Error: thrown-on-purpose by c").count(), 2, "{err}");
    assert_eq!(err.matches("Error: thrown-on-purpose by f").count(), 1, "{err}");
    assert_eq!(out.matches("exited with code [1] via signal [none]").count(), 3, "{out}");
    // Logged as PM2 does (the stack only), not by Node's default handler (source line, version).
    assert!(!err.contains("Node.js v"), "{err}");
    for p in jlist(&s) {
        assert_eq!(p["pm2_env"]["restart_time"], 1, "{p}");
    }
    r.signal(libc::SIGTERM);
    r.wait(Duration::from_secs(10));
}

#[test]
fn pm_runtime_preload_false_gives_nodes_default_back() {
    let s = scenario("reject", "    pm_runtime_preload: false\n    autorestart: false\n");
    let mut r = s.start(&["e.yml"]);
    // Node's default for an unhandled rejection: the app dies with code 1; nothing is left to run.
    let status = r.wait(Duration::from_secs(15)).expect("every app died, so the runtime exits");
    let (out, err) = (r.stdout(), r.stderr());
    assert_eq!(out.matches("exited with code [1]").count(), 3, "{out}\n{err}");
    assert!(!out.contains("still up after the rejection"), "{out}");
    assert!(!err.contains("You have triggered an unhandledRejection"), "{err}");
    assert!(!out.contains("pm-runtime-preload"), "{out}");
    assert_ne!(status.code(), Some(0));
}

#[test]
fn an_app_running_as_another_user_gets_the_preload_too() {
    // PM2_HOME is 0700: the preload for a `uid` app is written where that user can read it.
    let s = Scenario::new()
        .file("app.js", APP)
        .file("e.yml", "apps:\n  - name: n\n    script: app.js\n    uid: nobody\n    env:\n      MODE: reject\n");
    std::fs::set_permissions(s.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut r = s.start(&["e.yml"]);
    r.wait_for("n still up after the rejection", Duration::from_secs(10));
    assert!(r.stderr().contains("Error: rejected-on-purpose by n"), "{}", r.stderr());
    assert!(!r.stdout().contains("exited with code"), "{}", r.stdout());
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(Duration::from_secs(10)).unwrap().code(), Some(0));
}

#[test]
fn apps_added_with_start_or_restart_get_the_preload_too() {
    let s = Scenario::new()
        .file("app.js", APP)
        .file("idle.sh", "#!/bin/sh\nwhile :; do sleep 1; done\n")
        .file("e.yml", "apps:\n  - name: i\n    script: idle.sh\n");
    let mut r = s.start(&["e.yml"]);
    r.wait_for("App [i:0] online", Duration::from_secs(10));
    let s = s.file("e.yml", "apps:\n  - name: i\n    script: idle.sh\n  - name: late\n    script: app.js\n    env:\n      MODE: reject\n");
    let out =
        Command::new(BIN).args(["startOrRestart", "e.yml"]).current_dir(s.path()).env("PM2_HOME", s.path().join(".pm2")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    r.wait_for("late still up after the rejection", Duration::from_secs(10));
    assert!(!r.stdout().contains("App [late:1] exited"), "{}", r.stdout());
    r.signal(libc::SIGTERM);
    r.wait(Duration::from_secs(10));
}

#[test]
fn children_the_app_forks_do_not_inherit_the_preload() {
    let s = Scenario::new()
        .file(
            "app.js",
            "if (process.env.CHILD) {\n  console.log(`child execArgv=[${process.execArgv}] rejection-listeners=${process.listenerCount('unhandledRejection')}`);\n  process.exit(0);\n}\nrequire('child_process').fork(__filename, [], { env: { ...process.env, CHILD: '1' } });\nsetInterval(() => {}, 1000);\n",
        )
        .file("e.yml", "apps:\n  - name: app\n    script: app.js\n");
    let mut r = s.start(&["e.yml"]);
    r.wait_for("child execArgv=", Duration::from_secs(10));
    assert!(r.stdout().contains("child execArgv=[] rejection-listeners=0"), "{}", r.stdout());
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(Duration::from_secs(10)).unwrap().code(), Some(0));
}

/// Each app notes when its script begins and when its main module is done (`a0`'s takes
/// `SPIN` ms, or for ever with `SPIN=forever`), in `times`.
const TIMED_APP: &str = r#"
const fs = require('fs');
const note = (what) => fs.appendFileSync('times', `${process.env.name} ${what} ${Date.now()}\n`);
note('begins');
if (process.env.SPIN === 'forever') for (;;);
const until = Date.now() + Number(process.env.SPIN || 0);
while (Date.now() < until);
note('main-done');
setInterval(() => {}, 1000);
"#;

/// The apps of `times` by what they noted: name -> (begins, main-done) in ms.
fn timed(s: &Scenario, n: usize) -> std::collections::HashMap<String, (u64, Option<u64>)> {
    poll("every app begins", Duration::from_secs(30), || {
        let text = std::fs::read_to_string(s.path().join("times")).unwrap_or_default();
        let mut apps = std::collections::HashMap::<String, (u64, Option<u64>)>::new();
        for line in text.lines() {
            let [name, what, at] = line.split(' ').collect::<Vec<_>>()[..] else { continue };
            let at: u64 = at.parse().unwrap();
            let e = apps.entry(name.to_string()).or_insert((0, None));
            if what == "begins" { e.0 = at } else { e.1 = Some(at) }
        }
        (apps.len() == n).then_some(apps)
    })
}

/// Four Node apps on one CPU (`taskset`: the runtime sees 1): the first starts alone, so it is
/// not slowed down by the others, which start once its main module has run.
fn four_apps_on_one_cpu(spin: &str) -> (Scenario, Running) {
    on_one_cpu(
        &format!(
            "apps:\n  - name: a0\n    script: app.js\n    env:\n      SPIN: '{spin}'\n  - name: a1\n    script: app.js\n  \
         - name: a2\n    script: app.js\n  - name: a3\n    script: app.js\n"
        ),
        TIMED_APP,
    )
}

/// pm-runtime with this ecosystem and `app` as app.js, on one CPU.
fn on_one_cpu(yaml: &str, app: &str) -> (Scenario, Running) {
    require_tool("taskset", &["-V"]);
    let s = Scenario::new().file("app.js", app).file("e.yml", yaml);
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "0", BIN, "e.yml"]).current_dir(s.path()).env("PM2_HOME", s.path().join(".pm2")).env_remove("PM_RUNTIME_LOG");
    let r = Running::start(cmd);
    (s, r)
}

#[test]
fn with_more_apps_than_cpus_the_first_starts_alone_and_the_others_once_its_main_module_ran() {
    let (s, mut r) = four_apps_on_one_cpu("600");
    let apps = timed(&s, 4);
    let first_done = apps["a0"].1.expect("a0's main module ran before the others began");
    for a in ["a1", "a2", "a3"] {
        assert!(apps[a].0 >= first_done, "{a} began at {} before a0's main module was done at {first_done}: {apps:?}", apps[a].0);
    }
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(Duration::from_secs(10)).unwrap().code(), Some(0));
}

#[test]
fn a_first_app_stuck_in_its_start_holds_the_others_one_second_at_most() {
    let (s, mut r) = four_apps_on_one_cpu("forever");
    let apps = timed(&s, 4);
    for a in ["a1", "a2", "a3"] {
        let after = apps[a].0.saturating_sub(apps["a0"].0);
        // Held until the bound (1 s after the runtime began, a little less after a0 began).
        assert!(after >= 700, "{a} began {after} ms after a0 (held for the bound?): {apps:?}");
    }
    r.signal(libc::SIGTERM);
    r.wait(Duration::from_secs(15)).expect("the runtime stops");
}

#[test]
fn cluster_workers_beyond_the_cpus_start_once_the_first_one_is_up() {
    // Each worker notes itself as `c-<instance>`; the first spins 600 ms in its main module.
    let app = TIMED_APP
        .replace("process.env.name}", "process.env.name}-${process.env.NODE_APP_INSTANCE}")
        .replace("Number(process.env.SPIN || 0)", "(process.env.NODE_APP_INSTANCE === '0' ? 600 : 0)");
    let port = free_port();
    let (s, mut r) = on_one_cpu(
        &format!("apps:\n  - name: c\n    script: app.js\n    exec_mode: cluster\n    instances: 3\n    env:\n      PORT: {port}\n"),
        &format!("{app}require('http').createServer((q, w) => w.end('ok')).listen(process.env.PORT);\n"),
    );
    let apps = timed(&s, 3);
    let first_done = apps["c-0"].1.expect("worker 0's main module ran before the others began");
    for w in ["c-1", "c-2"] {
        assert!(apps[w].0 >= first_done, "{w} began at {} before worker 0's main module was done at {first_done}: {apps:?}", apps[w].0);
    }
    wait_http(port, Duration::from_secs(15));
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(Duration::from_secs(15)).unwrap().code(), Some(0));
}
