//! The start schedule of the run's first instances: when many start at once, a first wave
//! of one instance per CPU starts at once, the others as soon as one of that wave is up.
//!
//! Why: N Node processes started together on C CPUs share them, so each is about N/C times
//! slower to start and the first one answers only when nearly all do (16 HTTP apps on 2 CPUs:
//! the first answered at 0.7–0.9× of the time all did). A wave of C keeps every CPU busy while it
//! starts, and its first instance answers at about the time one alone would; the rest then
//! start together, so the time until all answer stays that of starting all at once.
//!
//! "Up" is the first of: the preload's `pm-runtime:started` message (sent once the app's main
//! module has run: its servers listen, or in a cluster worker have asked to), the process of
//! an instance without the preload exists (nothing to wait for: not a Node app, or the
//! preload is off), or the instance ended. Whatever happens, the rest start after
//! [`HOLD_AT_MOST`] (a first wave blocked in its start-up must not keep the others waiting).
//!
//! Only the instances started when the run begins are scheduled; a restart, a `scale`, an
//! app added later, an app released by its `depends_on` start at once, as before.
//!
//! Must never: touch a process, a clock or a channel (the coordinator's decider applies it).

use std::time::Duration;

/// The longest the rest waits for the first wave.
pub const HOLD_AT_MOST: Duration = Duration::from_secs(1);

/// What an instance of the first wave did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sign {
    /// Its process exists; `preload`: it was started with the preload (it will say when it is up).
    Spawned { preload: bool },
    /// The preload said the app's main module has run.
    Started,
    /// It ended (exited, errored, or is gone).
    Ended,
}

/// The schedule of the instances started when the run begins.
#[derive(Debug, Clone, Default)]
pub struct Staging {
    /// Instances per wave (the CPUs); 0 once the beginning is over (nothing more is held).
    wave: usize,
    /// The first wave so far.
    first: Vec<u32>,
    /// Held instances, in start order.
    held: Vec<u32>,
}

impl Staging {
    /// The run begins on `cpus` CPUs.
    pub fn begin(cpus: usize) -> Staging {
        Staging { wave: cpus.max(1), first: Vec::new(), held: Vec::new() }
    }

    /// An instance starts as the run begins: true if it may start now, false if it is held
    /// (see [`Staging::observe`]).
    pub fn admit(&mut self, pm_id: u32) -> bool {
        if self.wave == 0 {
            return true;
        }
        if self.first.len() < self.wave {
            self.first.push(pm_id);
            return true;
        }
        self.held.push(pm_id);
        false
    }

    /// The beginning is over: later instances start at once. True when some are held.
    pub fn close(&mut self) -> bool {
        self.wave = 0;
        if self.held.is_empty() {
            self.first.clear();
        }
        !self.held.is_empty()
    }

    /// An instance did `sign`: the held instances that may start now (all or none), in order.
    pub fn observe(&mut self, pm_id: u32, sign: Sign) -> Vec<u32> {
        let up = match sign {
            Sign::Spawned { preload } => !preload,
            Sign::Started | Sign::Ended => true,
        };
        if up && self.first.contains(&pm_id) { self.release() } else { Vec::new() }
    }

    /// Every held instance, now ([`HOLD_AT_MOST`] is over, or the runtime goes down).
    pub fn release(&mut self) -> Vec<u32> {
        std::mem::take(self).held
    }

    /// Whether any instance is held.
    pub fn holds(&self) -> bool {
        !self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` instances (pm_id 0..n) begin on `cpus` CPUs: which start at once, which are held.
    fn begin(cpus: usize, n: u32) -> (Staging, Vec<u32>, Vec<u32>) {
        let mut s = Staging::begin(cpus);
        let (now, held): (Vec<u32>, Vec<u32>) = (0..n).partition(|id| s.admit(*id));
        s.close();
        (s, now, held)
    }

    #[test]
    fn a_wave_per_cpu_starts_first() {
        for (cpus, n, now, held) in [
            (2, 16, vec![0, 1], (2..16).collect::<Vec<_>>()),
            (2, 2, vec![0, 1], vec![]),
            (2, 3, vec![0, 1], vec![2]),
            (4, 3, vec![0, 1, 2], vec![]),
            (0, 3, vec![0], vec![1, 2]),
            (1, 1, vec![0], vec![]),
        ] {
            let (s, got_now, got_held) = begin(cpus, n);
            assert_eq!((got_now, got_held.clone()), (now, held), "{cpus} cpus, {n} instances");
            assert_eq!(s.holds(), !got_held.is_empty());
        }
    }

    #[test]
    fn the_rest_start_once_one_of_the_first_wave_is_up() {
        use Sign::*;
        let held: Vec<u32> = (2..16).collect();
        for (signs, released) in [
            // Node with the preload: its process existing is not enough, its message is.
            (vec![(0, Spawned { preload: true })], false),
            (vec![(0, Spawned { preload: true }), (1, Started)], true),
            // Without the preload there is nothing to wait for.
            (vec![(1, Spawned { preload: false })], true),
            // An instance that ended will not say more.
            (vec![(0, Ended)], true),
            // Only the first wave counts.
            (vec![(5, Started), (9, Ended)], false),
        ] {
            let (mut s, _, _) = begin(2, 16);
            let mut got = Vec::new();
            for (id, sign) in &signs {
                got.extend(s.observe(*id, *sign));
            }
            assert_eq!(got, if released { held.clone() } else { vec![] }, "{signs:?}");
            assert_eq!(s.holds(), !released);
            // Released once: nothing more, and what starts later is not held.
            if released {
                assert_eq!(s.observe(0, Started), Vec::<u32>::new());
                assert!(s.admit(99));
            }
        }
    }

    #[test]
    fn at_most_hold_at_most_then_all_start() {
        let (mut s, _, held) = begin(2, 5);
        assert_eq!(s.release(), held);
        assert!(!s.holds());
        assert!(s.admit(7), "the beginning is over");
    }

    #[test]
    fn nothing_held_ends_the_beginning_at_once() {
        let (mut s, _, _) = begin(4, 4);
        assert!(!s.holds());
        assert!(s.admit(9), "a later start is never held");
    }
}
