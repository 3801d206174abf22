//! The runtime's last duty: no process outlives it. After the last app, every process still
//! around that is not ours to keep is terminated (SIGTERM, then SIGKILL after 500 ms).

use std::time::Duration;

use nix::sys::signal::Signal;

use super::{tree, unix};

/// After the last app: terminate every process still around that is not ours to keep.
/// As PID 1 that is everyone in the namespace; as a subreaper, our remaining children
/// (re-parented orphans of the apps) and their descendants.
pub async fn sweep() {
    let me = std::process::id();
    let strays = || -> Vec<u32> {
        let procs = tree::snapshot();
        if unix::is_pid1() {
            procs.iter().filter(|p| p.pid != me && p.state != 'Z').map(|p| p.pid).collect()
        } else {
            tree::descendants(&procs, me).into_iter().filter(|pid| procs.iter().any(|p| p.pid == *pid && p.state != 'Z')).collect()
        }
    };
    let first = strays();
    if first.is_empty() {
        return;
    }
    tracing::warn!("Terminating {} stray process(es) left by the apps", first.len());
    let signal_all = |sig: Signal, pids: &[u32]| {
        if !unix::signal_everyone_as_pid1(sig) {
            for &p in pids {
                unix::signal_pid(p, sig);
            }
        }
    };
    signal_all(Signal::SIGTERM, &first);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let left = strays();
        if left.is_empty() {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            signal_all(Signal::SIGKILL, &left);
            break;
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    while !strays().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
