//! Node.js majors for the compatibility tests, from npm: `target/node-versions/<major>/`.
//!
//! The npm package `node@N` only holds an installer that fetches `node-<os>-<arch>@N` in a
//! preinstall script (which recent npm versions no longer run by default); we install that
//! platform package directly, which is the same binary. Installed on first use (serialised
//! across the test processes with a lock file) and kept in `target/` between runs; `.ci/run`
//! installs them all up front. A version that cannot be installed fails the test.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target").join("node-versions")
}

fn package() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "x64",
        "aarch64" => "arm64",
        other => other,
    };
    format!("node-linux-{arch}")
}

/// Creates `dir` and holds its `.lock` until the returned file is dropped: test processes
/// (nextest runs each in its own) installing into the same folder take turns, and each looks
/// again whether the install is there once it holds the lock.
pub fn install_lock(dir: &Path) -> std::fs::File {
    std::fs::create_dir_all(dir).unwrap();
    let lock = std::fs::File::create(dir.join(".lock")).unwrap();
    // SAFETY: flock(2) on a file we own; released when `lock` is dropped.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0, "flock");
    lock
}

/// The `node` binary of `major`, installed from npm if it is not there yet.
pub fn node(major: u32) -> PathBuf {
    let dir = root().join(major.to_string());
    let bin = dir.join("node_modules").join(package()).join("bin").join("node");
    if bin.exists() {
        return bin;
    }
    let _lock = install_lock(&root());
    if !bin.exists() {
        let out = Command::new("npm")
            .args(["install", "--no-save", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .arg(format!("{}@{major}", package()))
            .output()
            .unwrap_or_else(|e| panic!("npm is needed to install Node {major}: {e}"));
        assert!(
            out.status.success() && bin.exists(),
            "cannot install Node {major} from npm ({}@{major}):\n{}",
            package(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    bin
}

/// `major` as `node --version` reports it (`v26.1.0`).
pub fn version(major: u32) -> String {
    let out = Command::new(node(major)).arg("--version").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Bun or Deno (`name` is the npm package: `bun`, `deno`), installed from npm into
/// `target/js-runtimes/<name>` on first use; the path of its `node_modules/.bin/<name>`.
pub fn js_runtime(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target").join("js-runtimes").join(name);
    let bin = dir.join("node_modules").join(".bin").join(name);
    let works = |b: &PathBuf| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success());
    if works(&bin) {
        return bin;
    }
    let _lock = install_lock(&dir);
    if !works(&bin) {
        let out = Command::new("npm")
            .args(["install", "--no-save", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .arg(format!("{name}@latest"))
            .output()
            .unwrap_or_else(|e| panic!("npm is needed to install {name}: {e}"));
        assert!(out.status.success() && works(&bin), "cannot install {name} from npm:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    bin
}
