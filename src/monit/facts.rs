//! What `monit` shows about an app beyond the status table, found on this machine by the viewer
//! (never by the runtime): the interpreter's version, the machine's memory (the git facts are
//! [`crate::git`]'s). Read only while monit runs, cached.
//!
//! Must never: hang the screen (a `--version` that does not answer is killed after
//! [`VERSION_TIMEOUT`]).

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const VERSION_TIMEOUT: Duration = Duration::from_secs(2);
/// How long git facts are kept before being read again (a checkout shows within this).
const GIT_FOR: Duration = Duration::from_secs(5);

/// Per-viewer caches (interpreter versions never change while monit runs; git is re-read).
#[derive(Debug, Default)]
pub struct Facts {
    versions: HashMap<String, Option<String>>,
    mem_total: Option<u64>,
    /// cwd → (when read, what was read): the screen is drawn 4 times a second.
    git: HashMap<String, (Instant, Option<crate::git::Git>)>,
}

impl Facts {
    /// `node --version` and the like, first line; `None` for `interpreter: none` or no answer.
    pub fn interpreter_version(&mut self, interpreter: &str) -> Option<String> {
        if interpreter.is_empty() || interpreter == "none" {
            return None;
        }
        self.versions.entry(interpreter.to_string()).or_insert_with(|| version_of(interpreter)).clone()
    }

    /// The git facts of `cwd`, read again every [`GIT_FOR`].
    pub fn git(&mut self, cwd: &str) -> Option<crate::git::Git> {
        let e = self.git.entry(cwd.to_string()).or_insert_with(|| (Instant::now(), crate::git::git(Path::new(cwd))));
        if e.0.elapsed() > GIT_FOR {
            *e = (Instant::now(), crate::git::git(Path::new(cwd)));
        }
        e.1.clone()
    }

    /// Total memory of the machine (bytes), the scale of memory gauges without a limit.
    pub fn mem_total(&mut self) -> u64 {
        *self
            .mem_total
            .get_or_insert_with(|| std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| parse_meminfo(&t)).unwrap_or(1 << 30))
    }
}

fn version_of(interpreter: &str) -> Option<String> {
    let mut child =
        Command::new(interpreter).arg("--version").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().ok()?;
    let deadline = Instant::now() + VERSION_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let out = child.wait_with_output().ok()?;
    if !out.status.success() {
        return None;
    }
    let line = String::from_utf8_lossy(&out.stdout).lines().next()?.trim().to_string();
    // `GNU bash, version 5.2.15(1)-release (x86_64-pc-linux-gnu)`: the platform is noise here.
    let line = line.split(" (").next().unwrap_or(&line).to_string();
    (!line.is_empty()).then(|| line.chars().take(60).collect())
}

/// `MemTotal:  16318512 kB` → bytes.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_total() {
        assert_eq!(parse_meminfo("MemTotal:       2048 kB\nMemFree: 1 kB\n"), Some(2048 * 1024));
        assert_eq!(parse_meminfo("nothing"), None);
    }

    #[test]
    fn interpreter_version_is_asked_once_and_none_has_none() {
        let mut f = Facts::default();
        assert_eq!(f.interpreter_version("none"), None);
        let v = f.interpreter_version("bash");
        assert!(v.as_deref().is_some_and(|v| v.contains("bash")), "{v:?}");
        assert_eq!(f.versions.len(), 1);
        assert_eq!(f.interpreter_version("bash"), v);
        assert_eq!(f.interpreter_version("sh"), None, "dash has no --version");
        assert_eq!(f.interpreter_version("/nonexistent/interp"), None);
        assert!(f.mem_total() > 0);
    }
}
