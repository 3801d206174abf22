//! Hostile surroundings: symlinks planted by another user, a PM2_HOME that is not ours, a peer
//! of another uid. The tests run as root and play the other user with uid 65534 (nobody):
//! `chown`/`lchown` for their files, `setpriv` (util-linux) for their processes.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::scenario::*;

const NOBODY: u32 = 65534;

fn cli(s: &Scenario, home: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).current_dir(s.path()).env("PM2_HOME", home).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o7777
}

/// `out_file` in a world-writable directory where another user planted `out.log -> secret`:
/// the runtime must not append to (or, on `flush`, truncate) the secret, and must say why.
/// A link of its own in the same place is still followed.
#[test]
fn log_and_pid_files_do_not_follow_another_users_symlink() {
    let s = Scenario::new()
        .file("secret", "root's secret\n")
        .file("mine-target", "")
        .file("app.sh", "#!/bin/sh\necho leak\necho oops >&2\nwhile :; do sleep 1; done\n")
        .file(
            "eco.yml",
            "apps:\n  - name: app\n    script: app.sh\n    merge_logs: true\n    out_file: shared/out.log\n    error_file: shared/err.log\n    pid_file: shared/app.pid\n",
        );
    let shared = s.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    // World-writable without the sticky bit: the kernel's protected_symlinks does not apply.
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    for planted in ["out.log", "app-0.pid"] {
        std::os::unix::fs::symlink(s.path().join("secret"), shared.join(planted)).unwrap();
        std::os::unix::fs::lchown(shared.join(planted), Some(NOBODY), Some(NOBODY)).unwrap();
    }
    std::os::unix::fs::symlink(s.path().join("mine-target"), shared.join("err.log")).unwrap();

    let home = s.path().join(".pm2");
    let mut r = s.start(&["eco.yml", "--no-auto-exit"]);
    r.wait_for("App [app:0] online", Duration::from_secs(10));
    r.wait_for("leak", Duration::from_secs(10));
    r.wait_for("cannot write pid file", Duration::from_secs(10));
    let err = r.stderr();
    let out_path = shared.join("out.log");
    assert!(
        err.contains(&format!("cannot open log file {}: refusing to follow the symlink {} -> ", out_path.display(), out_path.display()))
            && err.contains("it belongs to uid 65534, not to this runtime (uid 0), in a directory others may write to (mode 777)"),
        "{err}"
    );
    // Our own link is followed.
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(s.path().join("mine-target")).unwrap() != "oops\n" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(std::fs::read_to_string(s.path().join("mine-target")).unwrap(), "oops\n");
    let (code, _, ferr) = cli(&s, &home, &["flush"]);
    assert_eq!(code, 0, "{ferr}");
    assert_eq!(std::fs::read_to_string(s.path().join("secret")).unwrap(), "root's secret\n", "the secret was written or truncated");
    assert_eq!(std::fs::read_to_string(s.path().join("mine-target")).unwrap(), "", "flush empties our own file");
    r.signal(libc::SIGTERM);
    r.wait(Duration::from_secs(10)).expect("stopped");
    assert_eq!(std::fs::read_to_string(s.path().join("secret")).unwrap(), "root's secret\n");
}

/// A PM2_HOME of another user: the runtime refuses it (and does not chmod it), clients refuse
/// to talk through it. A PM2_HOME that is a symlink works, and its target keeps its mode.
#[test]
fn pm2_home_must_be_ours_and_a_symlinked_one_keeps_its_mode() {
    let s = Scenario::new().file("a.sh", "#!/bin/sh\necho ran\nwhile :; do sleep 1; done\n");
    let theirs = s.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();
    let mut c = s.command(&["a.sh"]);
    c.env("PM2_HOME", &theirs);
    let mut r = Running::start(c);
    let status = r.wait(Duration::from_secs(10)).expect("the runtime must refuse, not run");
    assert_eq!(status.code(), Some(78), "{}{}", r.stdout(), r.stderr());
    let want = format!("PM2_HOME {} belongs to uid 65534, not to this user (uid 0)", theirs.display());
    assert!(r.stderr().contains(&want), "{}", r.stderr());
    assert!(!r.stdout().contains("ran"), "an app started");
    assert_eq!(mode(&theirs), 0o755, "another user's directory was chmodded");
    let (code, _, err) = cli(&s, &theirs, &["ls"]);
    assert_eq!(code, 1);
    assert!(err.contains(&want), "{err}");

    // A symlinked PM2_HOME (to a directory of ours, mode 0755) is used; the mode stays.
    let real = s.path().join("real-home");
    std::fs::create_dir(&real).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o755)).unwrap();
    let link = s.path().join("home-link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let mut c = s.command(&["a.sh"]);
    c.env("PM2_HOME", &link);
    let mut r = Running::start(c);
    r.wait_for("ran", Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut ls = cli(&s, &link, &["ls"]);
    while ls.0 != 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        ls = cli(&s, &link, &["ls"]);
    }
    assert_eq!(ls.0, 0, "{}", ls.2);
    assert_eq!(mode(&real), 0o755, "the symlink's target was chmodded");
    r.signal(libc::SIGTERM);
    r.wait(Duration::from_secs(10)).expect("stopped");
}

/// A client of another uid (one that got past the file modes, here with CAP_DAC_OVERRIDE) is
/// told why it is refused, in one JSON line, instead of seeing "Broken pipe".
#[test]
fn a_refused_peer_gets_one_line_saying_why() {
    let s = Scenario::new().file("a.sh", "#!/bin/sh\necho up\nwhile :; do sleep 1; done\n");
    let mut r = s.start(&["a.sh"]);
    r.wait_for("up", Duration::from_secs(10));
    let sock = s.path().join(".pm2/pm-runtime.sock");
    let client = "import socket, sys\ns = socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\ns.settimeout(5)\nprint(s.makefile().readline(), end='')\n";
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=+dac_override",
            "--ambient-caps=+dac_override",
            "python3",
            "-c",
            client,
        ])
        .arg(&sock)
        .output()
        .expect("setpriv (util-linux) is required");
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{line}{}", String::from_utf8_lossy(&out.stderr));
    let reply: serde_json::Value = serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    assert_eq!(reply["ok"], false);
    assert_eq!(reply["error"], "refused: this runtime (uid 0) accepts only its own user and root, not uid 65534");
    r.wait_for("control socket: refused a connection from uid 65534", Duration::from_secs(5));
    r.signal(libc::SIGTERM);
    r.wait(Duration::from_secs(10)).expect("stopped");
}

/// CPU seconds (user + system) a process has used, from /proc/<pid>/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    // After the command: state is field 3; utime and stime are fields 14 and 15.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Out of file descriptors (`prlimit --nofile=256`, 300 idle control connections): the accept
/// loop backs off instead of spinning, and says why.
#[test]
fn accept_loop_backs_off_when_file_descriptors_run_out() {
    let s = Scenario::new().file("a.sh", "#!/bin/sh\necho up\nexec sleep 60\n");
    let mut c = Command::new("prlimit");
    c.args(["--nofile=256:256", "--", BIN, "a.sh"])
        .current_dir(s.path())
        .env("PM2_HOME", s.path().join(".pm2"))
        .env_remove("PM_RUNTIME_LOG");
    let mut r = Running::start(c);
    r.wait_for("up", Duration::from_secs(10));
    let sock = s.path().join(".pm2/pm-runtime.sock");
    let conns: Vec<_> =
        (0..300).map(|_| std::os::unix::net::UnixStream::connect(&sock).expect("connect (the backlog takes them)")).collect();
    r.wait_for("control socket: cannot accept a connection (Too many open files", Duration::from_secs(10));
    let before = cpu_seconds(r.pid());
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_seconds(r.pid()) - before;
    assert!(used < 0.3, "the runtime used {used:.2} s of CPU in 3 s while out of file descriptors");
    drop(conns);
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(Duration::from_secs(10)).expect("stopped").code(), Some(0));
}

/// A start that fails for lack of file descriptors waits and says why; it does not burn the
/// app's restarts (here max_restarts: 3 would make it errored within a second).
#[test]
fn spawn_out_of_file_descriptors_waits_instead_of_burning_restarts() {
    let s = Scenario::new()
        .file("c.sh", "#!/bin/sh\necho started\nsleep 1.2\nexit 1\n")
        .file("eco.yml", "apps:\n  - name: c\n    script: c.sh\n    max_restarts: 3\n    min_uptime: 1000\n");
    let mut c = Command::new("prlimit");
    c.args(["--nofile=256:256", "--", BIN, "eco.yml"])
        .current_dir(s.path())
        .env("PM2_HOME", s.path().join(".pm2"))
        .env_remove("PM_RUNTIME_LOG");
    let mut r = Running::start(c);
    r.wait_for("started", Duration::from_secs(10));
    let sock = s.path().join(".pm2/pm-runtime.sock");
    let conns: Vec<_> = (0..300).map(|_| std::os::unix::net::UnixStream::connect(&sock).expect("connect")).collect();
    r.wait_for("App [c:0] cannot start yet: Too many open files", Duration::from_secs(10));
    let starts_while_starved = r.stdout().matches("started").count();
    std::thread::sleep(Duration::from_secs(2));
    drop(conns);
    // Once descriptors are back, the app runs again, and was never given up on.
    let deadline = Instant::now() + Duration::from_secs(15);
    while r.stdout().matches("started").count() <= starts_while_starved && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = format!("{}{}", r.stdout(), r.stderr());
    assert!(r.stdout().matches("started").count() > starts_while_starved, "never started again:\n{text}");
    assert!(!text.contains("errored") && !text.contains("Too many unstable restarts"), "{text}");
    assert!(text.contains("not counted as a restart"), "{text}");
    r.signal(libc::SIGTERM);
    r.wait(Duration::from_secs(10)).expect("stopped");
}
