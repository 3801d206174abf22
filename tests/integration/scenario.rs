//! A fluent harness: a temp dir with files, the real `pm-runtime` binary started in it, and
//! assertions on what a user observes (stdout, stderr, exit code, /proc, the port).

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_pm-runtime");

pub struct Scenario {
    pub dir: tempfile::TempDir,
}

impl Scenario {
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("tempdir") }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(self, name: &str, body: &str) -> Self {
        let p = self.dir.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, body).unwrap();
        self
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args).current_dir(self.dir.path()).env("PM2_HOME", self.dir.path().join(".pm2")).env_remove("PM_RUNTIME_LOG");
        c
    }

    /// Runs to completion (bounded) and returns (status, stdout, stderr).
    pub fn run(&self, args: &[&str], timeout: Duration) -> (ExitStatus, String, String) {
        let mut r = Running::start(self.command(args));
        let status = r.wait(timeout).expect("pm-runtime did not exit in time");
        (status, r.stdout(), r.stderr())
    }

    /// Runs a client verb against the runtime of this scenario: (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.command(args).output().expect("run pm-runtime");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Starts in the background.
    pub fn start(&self, args: &[&str]) -> Running {
        Running::start(self.command(args))
    }
}

/// A running pm-runtime whose output is collected by threads.
pub struct Running {
    pub child: Child,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
}

fn collect(mut r: impl Read + Send + 'static, into: Arc<Mutex<String>>) {
    thread::spawn(move || {
        let mut buf = [0u8; 65536];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => into.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
    });
}

impl Running {
    pub fn start(mut cmd: Command) -> Self {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn pm-runtime");
        let out = Arc::new(Mutex::new(String::new()));
        let err = Arc::new(Mutex::new(String::new()));
        collect(child.stdout.take().unwrap(), out.clone());
        collect(child.stderr.take().unwrap(), err.clone());
        Self { child, out, err }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    /// Waits until stdout (or stderr) contains `needle`; panics with both outputs otherwise.
    pub fn wait_for(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.stdout().contains(needle) || self.stderr().contains(needle) {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!("timed out waiting for {needle:?}\n--- stdout ---\n{}\n--- stderr ---\n{}", self.stdout(), self.stderr());
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the pid of our own child, which we have not reaped yet.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                // Let the collector threads drain the pipes.
                thread::sleep(Duration::from_millis(50));
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One HTTP GET on 127.0.0.1:port; returns the body, or None if nothing answers.
pub fn http_get(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut resp = String::new();
    BufReader::new(s).read_to_string(&mut resp).ok()?;
    resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// Polls until the port answers.
pub fn wait_http(port: u16, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(body) = http_get(port) {
            return body;
        }
        assert!(Instant::now() < deadline, "nothing answered on 127.0.0.1:{port}");
        thread::sleep(Duration::from_millis(25));
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Pids of processes whose command line contains `marker` (zombies excluded).
pub fn pids_with(marker: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // Arguments are NUL-separated in /proc: compare with spaces, as a user reads `ps`.
        let cmdline: Vec<u8> =
            std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default().into_iter().map(|b| if b == 0 { b' ' } else { b }).collect();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
        if !zombie && String::from_utf8_lossy(&cmdline).contains(marker) && pid != std::process::id() {
            out.push(pid);
        }
    }
    out
}

/// Waits (bounded) until a process whose command line contains `marker` exists; panics if none
/// appears in time. Returns the matching pids.
pub fn wait_for_process(marker: &str, timeout: Duration) -> Vec<u32> {
    let deadline = Instant::now() + timeout;
    loop {
        let pids = pids_with(marker);
        if !pids.is_empty() {
            return pids;
        }
        assert!(Instant::now() < deadline, "no process with {marker:?} in its command line after {timeout:?}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `probe` until it returns `Some`, or panics after `timeout` saying `what`.
pub fn poll<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Requires an external tool that CI installs (`.ci/run`): a missing tool fails the test, it
/// is never counted as a pass.
pub fn require_tool(name: &str, probe: &[&str]) {
    let ok = Command::new(name).args(probe).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    assert!(ok, "this test needs `{name} {}` to work (CI installs it: see .ci/run)", probe.join(" "));
}

/// Lines of `text` that contain `needle`.
pub fn lines_with<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.contains(needle)).collect()
}

/// `@pm2/io`, installed from npm once into target/npm-cache (a failed install fails the test).
pub fn pm2_io_modules() -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/npm-cache/pm2-io");
    if !dir.join("node_modules/@pm2/io/package.json").exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
            .arg(&dir)
            .arg("@pm2/io@6")
            .output()
            .expect("npm must be installed (CI installs it)");
        assert!(out.status.success(), "npm install @pm2/io failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    dir.join("node_modules")
}

/// Makes `dir` a git repository on branch `trunk` with one commit and an `origin` remote;
/// returns the commit's hash.
pub fn git_repo(dir: &Path) -> String {
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.org"])
            .args(args)
            .current_dir(dir)
            .output()
            .expect("git must be installed");
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    git(&["init", "-q", "-b", "trunk"]);
    git(&["commit", "-q", "--allow-empty", "-m", "first"]);
    git(&["remote", "add", "origin", "https://example.org/shop.git"]);
    git(&["rev-parse", "HEAD"])
}
