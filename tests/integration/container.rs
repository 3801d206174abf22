//! Container truth: the death certificate of every exit, the kernel's OOM killer told apart
//! from other deaths, in a real memory cgroup the test creates (we are root), with the
//! container's limits read from it.

use std::path::PathBuf;
use std::time::Duration;

use crate::scenario::{Scenario, lines_with, poll};

const T: Duration = Duration::from_secs(30);

/// A memory cgroup of our own (v1 where the machine has the v1 memory controller, else v2),
/// removed when dropped. The runtime is moved into it by a shell that then execs it.
pub struct MemCgroup {
    pub dir: PathBuf,
}

impl MemCgroup {
    pub fn new(name: &str, limit: u64) -> MemCgroup {
        let v1 = PathBuf::from("/sys/fs/cgroup/memory");
        let unique = format!("pmrt-{name}-{}", std::process::id());
        let (dir, file) = if v1.join("memory.limit_in_bytes").exists() {
            (v1.join(unique), "memory.limit_in_bytes")
        } else {
            (PathBuf::from("/sys/fs/cgroup").join(unique), "memory.max")
        };
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("this test needs root and a memory cgroup: mkdir {}: {e}", dir.display()));
        std::fs::write(dir.join(file), limit.to_string()).expect("set the cgroup's memory limit");
        MemCgroup { dir }
    }

    /// `sh -c` arguments that move the shell into the cgroup and exec pm-runtime with `args`.
    pub fn wrap(&self, args: &[&str]) -> Vec<String> {
        let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
        vec!["-c".into(), format!("echo $$ > {}/cgroup.procs && exec {} {}", self.dir.display(), crate::scenario::BIN, quoted.join(" "))]
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        // The cgroup can go once its processes have.
        for _ in 0..200 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

#[test]
fn death_certificate_names_reason_pid_uptime_and_the_last_stderr_lines() {
    let s = Scenario::new().file(
        "eco.json",
        r#"{"apps":[{"name":"crash","script":"/bin/sh","args":["-c","for i in 1 2 3 4 5 6 7; do echo err$i >&2; done; echo fine; sleep 0.3; exit 3"],"autorestart":false}]}"#,
    );
    let (status, out, err) = s.run(&["start", "eco.json"], T);
    assert_eq!(status.code(), Some(3), "{out}\n{err}");
    let all = format!("{out}{err}");
    let line = lines_with(&all, "App [crash:0] exited with code [3]");
    assert_eq!(line.len(), 1, "one exit line: {all}");
    let line = line[0];
    assert!(line.contains("reason=exit"), "{line}");
    assert!(line.contains(r#"last_stderr=["err3","err4","err5","err6","err7"]"#), "the last five stderr lines, oldest first: {line}");
    assert!(!line.contains("fine"), "stdout is not stderr: {line}");
    let uptime: f64 = line.split("uptime=").nth(1).unwrap().split('s').next().unwrap().parse().unwrap();
    assert!(uptime >= 0.2, "{line}");
    assert!(line.split("pid=").nth(1).unwrap().split(' ').next().unwrap().parse::<u32>().unwrap() > 1, "{line}");

    // --json: the same certificate as an object of the process event.
    let (_, out, err) = s.run(&["start", "eco.json", "--json"], T);
    let ev = format!("{out}{err}")
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["status"] == "exit")
        .unwrap_or_else(|| panic!("no exit event in {out}{err}"));
    assert_eq!(ev["exit"]["reason"], "exit");
    assert_eq!(ev["exit"]["code"], 3);
    assert_eq!(ev["exit"]["stderr"], serde_json::json!(["err3", "err4", "err5", "err6", "err7"]));
    assert!(ev["exit"]["pid"].as_u64().unwrap() > 1 && ev["exit"]["uptime_ms"].as_u64().unwrap() >= 200, "{ev}");
}

#[test]
fn a_sigkill_we_did_not_send_is_a_signal_when_the_oom_killer_did_nothing_and_jlist_has_last_exit() {
    let s = Scenario::new().file(
        "eco.json",
        r#"{"apps":[{"name":"victim","script":"/bin/sh","args":["-c","echo about to go >&2; sleep 0.2; kill -9 $$"],"autorestart":false},
                    {"name":"keeper","script":"/bin/sleep","args":["60"]}]}"#,
    );
    let mut r = s.start(&["start", "eco.json"]);
    r.wait_for("App [victim:0] exited", T);
    let victim = poll("jlist with victim's last_exit", T, || {
        let (_, out, _) = s.cli(&["jlist"]);
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        v.as_array()?.iter().find(|p| p["name"] == "victim" && p["pm2_env"].get("last_exit").is_some()).cloned()
    });
    let last = &victim["pm2_env"]["last_exit"];
    // This machine's cgroup counts OOM kills: none happened, so a plain signal.
    assert_eq!(last["reason"], "signal", "{last}");
    assert_eq!(last["signal"], "SIGKILL");
    assert_eq!(last["stderr"], serde_json::json!(["about to go"]));
    let line = lines_with(&(r.stdout() + &r.stderr()), "App [victim:0] exited").concat();
    assert!(line.contains("via signal [SIGKILL]: reason=signal"), "{line}");
    // The ls header says what the container allows.
    let (_, ls, _) = s.cli(&["ls"]);
    assert!(ls.lines().last().is_some_and(|l| l.starts_with("container (cgroup")), "{ls}");
    r.signal(libc::SIGTERM);
    r.wait(T).expect("stops");
}

#[test]
fn the_oom_killer_is_named_and_other_apps_and_the_runtime_survive_it() {
    let cg = MemCgroup::new("oom", 96 << 20);
    let s = Scenario::new().file(
        "eco.json",
        r#"{"apps":[
            {"name":"hog","script":"/usr/bin/tail","args":["/dev/zero"],"autorestart":false},
            {"name":"parent","script":"/bin/sh","args":["-c","sleep 0.5; tail /dev/zero; echo my child died >&2; exec sleep 60"]},
            {"name":"bystander","script":"/bin/sleep","args":["60"]}]}"#,
    );
    // Recycling off: this is about the kernel's kill (tail grows faster than any sampler anyway).
    let mut r = run_in(&s, &cg, &["start", "eco.json"], &[("PM_RUNTIME_MEMORY_RECYCLE", "off")]);
    r.wait_for("App [hog:0] exited", T);
    let line = lines_with(&r.stdout(), "App [hog:0] exited").concat() + &lines_with(&r.stderr(), "App [hog:0] exited").concat();
    assert!(line.contains("via signal [SIGKILL]: reason=oom_killed"), "{line}\n{}", r.stderr());
    // A child of an app OOM-killed: the app carries on (it logs and execs sleep), nothing else is touched.
    r.wait_for("my child died", T);
    let (_, out, _) = s.cli(&["jlist"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    for name in ["parent", "bystander"] {
        let p = v.as_array().unwrap().iter().find(|p| p["name"] == name).unwrap();
        assert_eq!(p["pm2_env"]["status"], "online", "{name}: {p}");
        assert_eq!(p["pm2_env"]["restart_time"], 0, "{name} was not restarted: {p}");
    }
    let hog = v.as_array().unwrap().iter().find(|p| p["name"] == "hog").unwrap();
    assert_eq!(hog["pm2_env"]["last_exit"]["reason"], "oom_killed");
    // The runtime read the cgroup it runs in.
    let (_, ls, _) = s.cli(&["ls"]);
    assert!(ls.lines().last().unwrap_or("").contains("memory limit 96 MiB"), "{ls}");
    r.signal(libc::SIGTERM);
    assert!(r.wait(T).is_some_and(|st| st.success()), "the runtime survived and stops cleanly: {}", r.stderr());
}

/// A Node app that grows by 8 MiB (touched) every 200 ms.
const GROW: &str = "const a = []; console.log('growing'); setInterval(() => a.push(Buffer.alloc(8 << 20, 1)), 200);\n";

fn run_in(s: &Scenario, cg: &MemCgroup, args: &[&str], env: &[(&str, &str)]) -> crate::scenario::Running {
    let mut c = std::process::Command::new("sh");
    c.args(cg.wrap(args)).current_dir(s.path()).env("PM2_HOME", s.path().join(".pm2")).env_remove("PM_RUNTIME_LOG");
    for (k, v) in env {
        c.env(k, v);
    }
    crate::scenario::Running::start(c)
}

#[test]
fn max_memory_restart_as_a_share_of_the_container_and_the_fit_warning() {
    crate::scenario::require_tool("node", &["--version"]);
    let cg = MemCgroup::new("share", 256 << 20);
    let s = Scenario::new().file("grow.js", GROW).file(
        "eco.json",
        r#"{"apps":[{"name":"grow","script":"grow.js","max_memory_restart":"40%"},
                    {"name":"idle","script":"/bin/sleep","args":["60"],"instances":2,"max_memory_restart":"40%"}]}"#,
    );
    let mut r = run_in(&s, &cg, &["start", "eco.json"], &[("PM_RUNTIME_MEMORY_RECYCLE", "off")]);
    // 3 × 102 MiB may outgrow 256 MiB: said at start, with what fits.
    r.wait_for("over the container's limit of 256 MiB", T);
    let all = r.stdout() + &r.stderr();
    assert!(all.contains("3 instance(s)") && all.contains("at most 85 MiB each"), "{all}");
    // 40 % of 256 MiB = 102.4 MiB: restarted there, long before the kernel's limit.
    r.wait_for("App [grow:0] restarted because it exceeds max_memory_restart", T);
    r.wait_for("App [grow:0] exited", T);
    let line = lines_with(&(r.stdout() + &r.stderr()), "App [grow:0] exited").concat();
    assert!(line.contains("reason=memory_limit"), "{line}");
    let limit = lines_with(&(r.stdout() + &r.stderr()), "max_memory_limit=").concat();
    assert!(limit.contains(&format!("max_memory_limit={} ", (256u64 << 20) * 40 / 100)), "{limit}");
    r.signal(libc::SIGTERM);
    r.wait(T).expect("stops");
}

#[test]
fn near_the_container_limit_the_largest_instance_is_recycled_before_the_oom_killer() {
    crate::scenario::require_tool("node", &["--version"]);
    let cg = MemCgroup::new("recycle", 200 << 20);
    let s = Scenario::new()
        .file("grow.js", GROW)
        .file("eco.json", r#"{"apps":[{"name":"fat","script":"grow.js"},{"name":"small","script":"/bin/sleep","args":["60"]}]}"#);
    let mut r = run_in(&s, &cg, &["start", "eco.json"], &[("PM_RUNTIME_MEMORY_RECYCLE", "60")]);
    r.wait_for("restarting [fat:0], the largest", T);
    r.wait_for("App [fat:0] exited", T);
    let all = r.stdout() + &r.stderr();
    let why = lines_with(&all, "restarting [fat:0], the largest").concat();
    assert!(why.contains("of its 200 MiB memory limit (recycling at 60%)"), "{why}");
    let line = lines_with(&all, "App [fat:0] exited").concat();
    assert!(line.contains("reason=memory_limit"), "{line}");
    assert!(!all.contains("oom_killed"), "the kernel never had to kill: {all}");
    // Not in a loop: fat grows again, but the next recycle waits for the backoff (5 s, then 10 s…).
    r.wait_for("App [fat:0] online", T);
    let (_, out, _) = s.cli(&["jlist"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let small = v.as_array().unwrap().iter().find(|p| p["name"] == "small").unwrap();
    assert_eq!(small["pm2_env"]["restart_time"], 0, "only the largest is recycled: {small}");
    r.signal(libc::SIGTERM);
    r.wait(T).expect("stops");
}

#[test]
fn node_heap_auto_sizes_each_worker_to_its_share_of_the_container() {
    crate::scenario::require_tool("node", &["--version"]);
    let cg = MemCgroup::new("heap", 512 << 20);
    let s = Scenario::new()
        .file(
            "heap.js",
            "const v8 = require('v8'); console.log('opts=' + process.env.NODE_OPTIONS + ' limit_mib=' + Math.round(v8.getHeapStatistics().heap_size_limit / 1048576)); setInterval(() => {}, 1000);\n",
        )
        .file("eco.json", r#"{"apps":[{"name":"api","script":"heap.js","instances":2,"node_heap":"auto"}]}"#);
    let mut r = run_in(&s, &cg, &["start", "eco.json"], &[]);
    // (512 MiB × 85 % ÷ 2) − 48 MiB = 169 MiB.
    r.wait_for("opts=--max-old-space-size=169", T);
    let line = lines_with(&r.stdout(), "opts=").concat();
    let limit: u64 = line.split("limit_mib=").nth(1).unwrap().split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap();
    assert!((169..260).contains(&limit), "V8 took the size: {line}");
    assert!(r.stdout().contains("node_heap: auto: 2 Node instance(s) share the container's 512 MiB"), "{}", r.stdout());
    r.signal(libc::SIGTERM);
    r.wait(T).expect("stops");
}

#[test]
fn the_termination_log_says_which_app_and_why_and_is_never_created() {
    let s = Scenario::new()
        .file(
            "eco.json",
            r#"{"apps":[{"name":"job","script":"/bin/sh","args":["-c","echo cannot connect to db >&2; exit 4"],"autorestart":false}]}"#,
        )
        .file("termination-log", "");
    let log = s.path().join("termination-log");
    let mut c = s.command(&["start", "eco.json"]);
    c.env("PM_RUNTIME_TERMINATION_LOG", &log);
    let mut r = crate::scenario::Running::start(c);
    assert_eq!(r.wait(T).and_then(|st| st.code()), Some(4));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.starts_with("pm-runtime: every app has finished; job exited with 4"), "{text}");
    assert!(
        text.contains("App [job:0] exited with code [4]") && text.contains("reason=exit") && text.contains("cannot connect to db"),
        "{text}"
    );
    // Where there is no termination log (outside Kubernetes), none is made.
    let absent = s.path().join("no-such-log");
    let mut c = s.command(&["start", "eco.json"]);
    c.env("PM_RUNTIME_TERMINATION_LOG", &absent);
    let mut r = crate::scenario::Running::start(c);
    assert_eq!(r.wait(T).and_then(|st| st.code()), Some(4));
    assert!(!absent.exists());
    // A config error says so too.
    std::fs::write(&log, "").unwrap();
    let s2 = Scenario::new().file("bad.json", r#"{"apps":[{"name":"x","script":"a.js","max_memory_restart":"lots"}]}"#);
    let mut c = s2.command(&["start", "bad.json"]);
    c.env("PM_RUNTIME_TERMINATION_LOG", &log);
    let out = c.output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(std::fs::read_to_string(&log).unwrap().contains("max_memory_restart"), "{}", std::fs::read_to_string(&log).unwrap());
}

fn readyz(port: u16) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /readyz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    resp.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn shutdown_delay_ends_readiness_at_once_and_signals_the_apps_after_the_delay() {
    let s = Scenario::new()
        .file("app.sh", "#!/bin/sh\ntrap 'echo got the stop; exit 0' INT TERM\necho up\nwhile :; do sleep 0.1; done\n")
        .file("e.yml", "apps:\n  - name: app\n    script: app.sh\n");
    let mut c = s.command(&["e.yml", "--web=0"]);
    c.env("PM_RUNTIME_SHUTDOWN_DELAY", "2");
    let mut r = crate::scenario::Running::start(c);
    r.wait_for("HTTP API, /metrics and dashboard on http://", T);
    let out = r.stdout() + &r.stderr();
    let at = out.find("on http://").unwrap() + "on http://".len();
    let port: u16 = out[at..].chars().take_while(|c| !c.is_whitespace()).collect::<String>().rsplit(':').next().unwrap().parse().unwrap();
    poll("ready", T, || (readyz(port) == Some(200)).then_some(()));
    let t0 = std::time::Instant::now();
    r.signal(libc::SIGTERM);
    poll("503 at once", Duration::from_secs(1), || (readyz(port) == Some(503)).then_some(()));
    assert!(!r.stdout().contains("got the stop"), "the app is not signalled yet");
    r.wait_for("got the stop", T);
    assert!(t0.elapsed() >= Duration::from_millis(1900), "signalled after the delay, not before: {:?}", t0.elapsed());
    assert_eq!(r.wait(T).and_then(|st| st.code()), Some(0));
    assert!(r.stdout().contains("stopping every app in 2.0s (shutdown_delay)"), "{}", r.stdout());
    // A bad value is refused, naming where it came from.
    let mut c = s.command(&["e.yml"]);
    c.env("PM_RUNTIME_SHUTDOWN_DELAY", "soon");
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PM_RUNTIME_SHUTDOWN_DELAY=\"soon\": expected seconds"));
}
