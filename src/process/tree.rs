//! Process trees from /proc: who descends from whom.
//!
//! Used to stop an app's whole tree (descendants that left the app's process group included)
//! and, on exit, to find stray processes. Reads only; never signals.

use std::collections::HashMap;
use std::fs;
use std::sync::Arc;
use std::time::Instant;

/// One `/proc/<pid>/stat` line's fields we care about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub pid: u32,
    pub ppid: u32,
    pub pgid: u32,
    /// `Z` for zombies.
    pub state: char,
    /// CPU time used (user + system), clock ticks.
    pub ticks: u64,
    /// Resident set size, pages.
    pub rss_pages: u64,
}

/// Parses `/proc/<pid>/stat`. The command name may contain spaces and parentheses, so fields are
/// taken after the *last* `)`.
pub fn parse_stat(line: &str) -> Option<Stat> {
    let pid = line.split_whitespace().next()?.parse().ok()?;
    let rest = &line[line.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    let pgid = f.next()?.parse().ok()?;
    // After pgrp(2): session tty tpgid flags minflt cminflt majflt cmajflt utime(11) stime(12)
    // cutime cstime priority nice num_threads itrealvalue starttime vsize rss(21).
    let rest: Vec<&str> = f.take(19).collect();
    let num = |i: usize| rest.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Some(Stat { pid, ppid, pgid, state, ticks: num(8) + num(9), rss_pages: num(18) })
}

/// Every process visible in /proc right now.
pub fn snapshot() -> Vec<Stat> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let name = e.file_name();
        let name = name.to_str()?;
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        parse_stat(&fs::read_to_string(format!("/proc/{name}/stat")).ok()?)
    })
    .collect()
}

/// A /proc snapshot with its parent → children map, built once and shared.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub procs: Vec<Stat>,
    children: HashMap<u32, Vec<u32>>,
    by_pid: HashMap<u32, usize>,
}

impl Snapshot {
    pub fn new(procs: Vec<Stat>) -> Self {
        let children = children_map(&procs);
        let by_pid = procs.iter().enumerate().map(|(i, p)| (p.pid, i)).collect();
        Snapshot { procs, children, by_pid }
    }

    pub fn get(&self, pid: u32) -> Option<&Stat> {
        self.by_pid.get(&pid).map(|&i| &self.procs[i])
    }

    /// All descendants of `root`, parents before children.
    pub fn descendants(&self, root: u32) -> Vec<u32> {
        descendants_in(&self.children, root)
    }
}

/// The last shared scan and when it began.
static LAST: tokio::sync::Mutex<Option<(Instant, Arc<Snapshot>)>> = tokio::sync::Mutex::const_new(None);

/// A snapshot of /proc taken after this call began, shared with every caller that was waiting
/// when it was taken: N instances stopping at once cost one scan per sweep, not one each
/// (1000 instances: one read of ~1000 files instead of a million).
pub async fn fresh_snapshot() -> Arc<Snapshot> {
    let asked = Instant::now();
    let mut last = LAST.lock().await;
    if let Some((taken, snap)) = &*last
        && *taken >= asked
    {
        return snap.clone();
    }
    let taken = Instant::now();
    // Off the runtime's thread, so that every other caller can arrive and queue meanwhile
    // (the runtime is single-threaded: a scan in place would serve one caller per scan).
    let snap = match tokio::task::spawn_blocking(|| Snapshot::new(snapshot())).await {
        Ok(s) => Arc::new(s),
        Err(_) => Arc::new(Snapshot::new(snapshot())),
    };
    *last = Some((taken, snap.clone()));
    snap
}

/// Children of every process in `procs`, by parent pid: build once, walk many trees.
pub fn children_map(procs: &[Stat]) -> HashMap<u32, Vec<u32>> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for p in procs {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    children
}

/// All descendants of `root` (not `root` itself) in `procs`, parents before children.
pub fn descendants(procs: &[Stat], root: u32) -> Vec<u32> {
    descendants_in(&children_map(procs), root)
}

/// [`descendants`] with a prebuilt [`children_map`].
pub fn descendants_in(children: &HashMap<u32, Vec<u32>>, root: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        if let Some(kids) = children.get(&pid) {
            for &k in kids {
                if k != root && !out.contains(&k) {
                    out.push(k);
                    stack.push(k);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_spaces_and_parens() {
        let s = parse_stat("42 (my (weird) app) S 7 42 42 0 -1 4194560").unwrap();
        assert_eq!(s, Stat { pid: 42, ppid: 7, pgid: 42, state: 'S', ticks: 0, rss_pages: 0 });
        let line = "42 (node) S 7 42 42 0 -1 4194560 100 0 0 0 150 25 0 0 20 0 11 0 1234 1000000 2048 18446744073709551615";
        let s = parse_stat(line).unwrap();
        assert_eq!((s.ticks, s.rss_pages), (175, 2048));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn walks_a_tree() {
        let st = |pid, ppid| Stat { pid, ppid, pgid: pid, state: 'S', ticks: 0, rss_pages: 0 };
        let procs = [st(1, 0), st(10, 1), st(11, 10), st(12, 11), st(20, 1), st(13, 10)];
        let mut d = descendants(&procs, 10);
        d.sort();
        assert_eq!(d, vec![11, 12, 13]);
        assert!(descendants(&procs, 99).is_empty());
    }

    #[tokio::test]
    async fn a_fresh_snapshot_is_taken_after_the_call() {
        let a = fresh_snapshot().await;
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let b = fresh_snapshot().await;
        assert!(!Arc::ptr_eq(&a, &b), "a later call never reuses an older scan");
        assert!(b.get(child.id()).is_some() && b.descendants(std::process::id()).contains(&child.id()));
        child.kill().unwrap();
        let _ = child.wait();
        // Callers that asked while a scan was under way share the next one.
        let busy = LAST.lock().await;
        let (c, d, ()) = tokio::join!(fresh_snapshot(), fresh_snapshot(), async move {
            tokio::task::yield_now().await;
            drop(busy);
        });
        assert!(Arc::ptr_eq(&c, &d));
    }

    #[test]
    fn sees_ourselves() {
        let me = std::process::id();
        assert!(snapshot().iter().any(|s| s.pid == me));
    }
}
