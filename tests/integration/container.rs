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

fn start_in(s: &Scenario, cg: &MemCgroup, args: &[&str]) -> crate::scenario::Running {
    let mut c = std::process::Command::new("sh");
    c.args(cg.wrap(args)).current_dir(s.path()).env("PM2_HOME", s.path().join(".pm2")).env_remove("PM_RUNTIME_LOG");
    crate::scenario::Running::start(c)
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
    let mut r = start_in(&s, &cg, &["start", "eco.json"]);
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
