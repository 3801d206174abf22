//! The one owner of `wait` in the runtime.
//!
//! As PID 1 (and as a child subreaper otherwise) the runtime must reap every zombie, including
//! orphans it never started. A `waitpid(-1)` loop would steal the exit status of any child that
//! something else waits for, so nothing else may wait: every child is started through
//! [`Reaper::spawn`], which records its pid while holding the same lock the reaping loop takes.
//! A child that exits at once can therefore never be reaped before it is known (the rule Horust
//! follows), and its status always reaches its owner.
//!
//! Statuses of pids nobody registered (re-parented orphans) are reaped and dropped.

use std::collections::HashMap;
use std::io;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    /// The shell convention: the code, or 128 + the signal number.
    pub fn as_code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

type Table = HashMap<i32, oneshot::Sender<Exit>>;

/// Handle to the reaper. Cheap to clone.
#[derive(Clone, Default)]
pub struct Reaper {
    table: Arc<Mutex<Table>>,
    /// Orphans reaped so far (`pm_runtime_reaped_orphans_total`).
    orphans: Arc<std::sync::atomic::AtomicU64>,
}

/// A started child: its pid and the receiver of its exit status. The std `Child` is returned
/// only for its pipes; never `wait` on it.
pub struct Spawned {
    pub pid: u32,
    pub child: Child,
    pub exit: oneshot::Receiver<Exit>,
}

impl Reaper {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // A poisoned lock only means another thread panicked while holding it; the map itself
        // is always consistent (single inserts/removes), so keep going rather than die as PID 1.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts `cmd` and registers its pid before the reaping loop can see it exit.
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<Spawned> {
        let mut table = self.lock();
        let child = cmd.spawn()?;
        let pid = child.id();
        let (tx, rx) = oneshot::channel();
        table.insert(pid as i32, tx);
        drop(table);
        Ok(Spawned { pid, child, exit: rx })
    }

    /// Reaps every child that has exited, routing known statuses to their owners. Returns how
    /// many unknown (orphan) processes were reaped.
    pub fn reap_now(&self) -> usize {
        let mut orphans = 0;
        loop {
            let mut table = self.lock();
            let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return orphans,
                Err(Errno::EINTR) => continue,
                Err(_) => return orphans,
                Ok(s) => s,
            };
            let (pid, exit) = match status {
                WaitStatus::Exited(pid, code) => (pid, Exit::Code(code)),
                WaitStatus::Signaled(pid, sig, _core) => (pid, Exit::Signal(sig as i32)),
                // Stops and continues are not exits (we never ask for them, but be safe).
                _ => continue,
            };
            match table.remove(&pid.as_raw()) {
                Some(tx) => {
                    drop(table);
                    // The owner may have gone away (runtime shutting down): nothing to do.
                    let _ = tx.send(exit);
                }
                None => {
                    orphans += 1;
                    self.orphans.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::debug!(pid = pid.as_raw(), "reaped orphan pid={} ({exit:?})", pid.as_raw());
                }
            }
        }
    }

    /// Runs the reaping loop forever: on every SIGCHLD, and once a second as a safety net
    /// (tini does the same) in case a notification was coalesced away before registration.
    pub async fn run(self) -> io::Result<()> {
        let mut sigchld = signal(SignalKind::child())?;
        let mut safety = tokio::time::interval(std::time::Duration::from_secs(1));
        safety.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = sigchld.recv() => {}
                _ = safety.tick() => {}
            }
            self.reap_now();
        }
    }

    /// How many orphans (processes nobody registered) were reaped since the start.
    pub fn orphans_reaped(&self) -> u64 {
        self.orphans.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Number of children whose exit has not been seen yet.
    pub fn pending(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn routes_status_of_fast_exiting_child() {
        let reaper = Reaper::new();
        let task = tokio::spawn(reaper.clone().run());
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exit 7"]);
        let s = reaper.spawn(&mut cmd).unwrap();
        assert_eq!(s.exit.await.unwrap(), Exit::Code(7));
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "kill -9 $$"]);
        let s = reaper.spawn(&mut cmd).unwrap();
        assert_eq!(s.exit.await.unwrap(), Exit::Signal(9));
        task.abort();
    }
}
