//! The sampler: resource use of every instance's process tree, from one /proc sweep.
//!
//! Owns: the previous CPU reading of each instance (to turn ticks into a percentage).
//! One sweep reads `/proc/<pid>/stat` once per process of the system (ppid, CPU ticks, RSS all
//! come from that one file), builds the parent → children map once, and walks each instance's
//! tree in it: the cost does not grow with the number of instances times the number of
//! processes. The coordinator decides when to sweep (only while someone needs the numbers).
//!
//! Must never: signal or change anything; block for long (it reads small files only).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::status::Sample;
use crate::process::tree::{self, Stat};

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ, 100 on Linux).
const TICKS_PER_S: f64 = 100.0;

/// How often the coordinator sweeps while someone reads the numbers.
pub const PERIOD: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct Sampler {
    /// pm_id → (root pid, ticks of its tree, when).
    prev: HashMap<u32, (u32, u64, Instant)>,
    pub last_sweep: Option<Instant>,
}

impl Sampler {
    /// Samples the trees rooted at `roots` (`(pm_id, pid)`); instances not running get no entry.
    pub fn sweep(&mut self, roots: &[(u32, u32)]) -> HashMap<u32, Sample> {
        let procs = tree::snapshot();
        let now = Instant::now();
        self.last_sweep = Some(now);
        self.measure(&procs, roots, now)
    }

    /// The pure part of a sweep, over a given process list.
    pub fn measure(&mut self, procs: &[Stat], roots: &[(u32, u32)], now: Instant) -> HashMap<u32, Sample> {
        let children = tree::children_map(procs);
        let by_pid: HashMap<u32, &Stat> = procs.iter().map(|p| (p.pid, p)).collect();
        let page = crate::process::unix::page_size();
        let mut out = HashMap::with_capacity(roots.len());
        let mut prev = HashMap::with_capacity(roots.len());
        for &(pm_id, root) in roots {
            let Some(top) = by_pid.get(&root) else { continue };
            let mut ticks = top.ticks;
            let mut pages = top.rss_pages;
            for pid in tree::descendants_in(&children, root) {
                if let Some(p) = by_pid.get(&pid) {
                    ticks += p.ticks;
                    pages += p.rss_pages;
                }
            }
            let cpu_percent = match self.prev.get(&pm_id) {
                // Same process as last time, and time went by: the tree's rate over the period.
                Some(&(pid, t0, at)) if pid == root && ticks >= t0 && now > at => {
                    let pct = (ticks - t0) as f64 / TICKS_PER_S / now.duration_since(at).as_secs_f64() * 100.0;
                    (pct * 10.0).round() / 10.0
                }
                _ => 0.0,
            };
            prev.insert(pm_id, (root, ticks, now));
            out.insert(pm_id, Sample { memory_bytes: pages * page, cpu_percent, cpu_seconds: ticks as f64 / TICKS_PER_S });
        }
        self.prev = prev;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(pid: u32, ppid: u32, ticks: u64, rss_pages: u64) -> Stat {
        Stat { pid, ppid, pgid: pid, state: 'S', ticks, rss_pages }
    }

    #[test]
    fn sums_trees_and_rates_cpu_between_sweeps() {
        let page = crate::process::unix::page_size();
        let mut s = Sampler::default();
        let t0 = Instant::now();
        let procs = [st(1, 0, 5, 1), st(10, 1, 100, 10), st(11, 10, 50, 5), st(20, 1, 7, 3)];
        let a = s.measure(&procs, &[(0, 10), (1, 20), (2, 99)], t0);
        assert_eq!(a[&0].memory_bytes, 15 * page);
        assert_eq!(a[&0].cpu_seconds, 1.5);
        assert_eq!(a[&0].cpu_percent, 0.0, "no rate on the first look");
        assert_eq!(a[&1].memory_bytes, 3 * page);
        assert!(!a.contains_key(&2), "a pid that is gone has no sample");
        // One second later the tree of pm_id 0 used 50 more ticks: 50 %.
        let procs = [st(1, 0, 5, 1), st(10, 1, 130, 10), st(11, 10, 70, 5), st(20, 1, 7, 3)];
        let b = s.measure(&procs, &[(0, 10), (1, 20)], t0 + Duration::from_secs(1));
        assert_eq!(b[&0].cpu_percent, 50.0);
        assert_eq!(b[&1].cpu_percent, 0.0);
        // A new process for pm_id 0 (restart): no rate against the old one's ticks.
        let procs = [st(30, 1, 1, 1)];
        let c = s.measure(&procs, &[(0, 30)], t0 + Duration::from_secs(2));
        assert_eq!(c[&0].cpu_percent, 0.0);
    }

    #[test]
    fn sweeps_the_real_proc() {
        let mut s = Sampler::default();
        let me = std::process::id();
        let got = s.sweep(&[(7, me)]);
        assert!(got[&7].memory_bytes > 0);
        assert!(s.last_sweep.is_some());
    }
}
