//! The attacks issue #19 closes, each played against the real binary: a connection flood
//! against the probes, logs read without the token, an app that asks root to bind for it, the
//! write token in an app's env, a planted symlink in PM2_HOME. The tests run as root and play
//! the other user with uid 65534 (nobody).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

use crate::scenario::*;

const NOBODY: u32 = 65534;

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An app that prints its environment cannot print the web token: apps never inherit it.
#[test]
fn apps_never_inherit_the_web_token() {
    let s = Scenario::new().file("dump.sh", "#!/bin/sh\necho \"token=[$PM_RUNTIME_WEB_TOKEN]\"\nwhile :; do sleep 1; done\n");
    let mut cmd = s.command(&["dump.sh", "--web=0"]);
    cmd.env("PM_RUNTIME_WEB_TOKEN", "webtok-4c1d9e");
    let r = Running::start(cmd);
    r.wait_for("token=[", Duration::from_secs(10));
    let out = r.stdout();
    assert!(out.contains("token=[]"), "{out}");
    assert!(!out.contains("webtok-4c1d9e"), "{out}");
}

/// Another user owns PM2_HOME and planted, under the preload's old temporary names (the
/// runtime is PID 1, so the name was predictable), symlinks to a root-only file. The runtime
/// must refuse the PM2_HOME before writing anything into it: the file keeps its content and mode.
#[test]
fn a_planted_preload_symlink_in_another_users_pm2_home_writes_nothing() {
    require_tool("unshare", &["--pid", "--fork", "--mount-proc", "true"]);
    let s = Scenario::new().file("app.js", "console.log('app ran'); setInterval(() => {}, 1000);\n").file("victim", "root only\n");
    let victim = s.path().join("victim");
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let home = s.path().join("theirs");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    for name in ["pm-runtime-preload.js", "pm-runtime-preload.cjs"] {
        let link = home.join(format!(".{name}.1"));
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    std::os::unix::fs::chown(&home, Some(NOBODY), Some(NOBODY)).unwrap();
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", BIN, "app.js"]).current_dir(s.path()).env("PM2_HOME", &home);
    let mut r = Running::start(cmd);
    let status = r.wait(Duration::from_secs(20)).expect("the runtime must refuse, not run");
    assert_eq!(status.code(), Some(78), "{}{}", r.stdout(), r.stderr());
    assert!(r.stderr().contains("belongs to uid 65534"), "{}", r.stderr());
    assert!(!r.stdout().contains("app ran"));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root only\n", "the victim was overwritten");
    assert_eq!(std::fs::metadata(&victim).unwrap().mode() & 0o777, 0o600, "the victim was chmodded");
    assert_eq!(std::fs::read_dir(&home).unwrap().count(), 2, "something was written into their PM2_HOME");
}
