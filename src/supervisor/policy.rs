//! What happens after an instance exits: PM2's restart policy as pure functions.
//!
//! No clocks, no processes: the caller passes the instants, so every rule is table-tested.
//! The rules follow pm2's `God.handleExit` (spec §3.6):
//! - an exit is final when `autorestart` is off, the code is in `stop_exit_codes`, or the
//!   runtime is shutting down;
//! - an exit within `min_uptime` of the start, while the app is younger than
//!   `min_uptime × max_restarts`, is *unstable*; `max_restarts` unstable exits make it `errored`;
//! - otherwise it restarts after `restart_delay`, or after the exponential backoff
//!   (`exp_backoff_restart_delay`, ×1.5 floored, capped at 15 s, reset after 30 s of uptime).

use std::time::{Duration, Instant};

use crate::process::Exit;

/// PM2's cap of the exponential backoff.
pub const BACKOFF_CAP: Duration = Duration::from_millis(15_000);
/// Default uptime after which the exponential backoff starts again from its first value
/// (PM2's `EXP_BACKOFF_RESET_TIMER`, which overrides it). Unlike PM2, checked at the moment of
/// the exit, not on a 30 s poll.
pub const BACKOFF_RESET: Duration = Duration::from_millis(30_000);

/// The app settings the policy reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub autorestart: bool,
    pub stop_exit_codes: Vec<i32>,
    pub min_uptime: Duration,
    pub max_restarts: u32,
    pub restart_delay: Duration,
    pub exp_backoff_restart_delay: Option<Duration>,
    /// Uptime that resets the backoff ([`BACKOFF_RESET`] unless `EXP_BACKOFF_RESET_TIMER`).
    pub backoff_reset: Duration,
}

/// `EXP_BACKOFF_RESET_TIMER` (ms) as PM2 reads it, else [`BACKOFF_RESET`].
pub fn backoff_reset_from(value: Option<&str>) -> Duration {
    value.and_then(|v| v.trim().parse::<u64>().ok()).map_or(BACKOFF_RESET, Duration::from_millis)
}

/// Restart bookkeeping of one instance (PM2's `created_at`, `unstable_restarts`, `prev_restart_delay`).
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    /// Start of the counting window: first start, or the last manual restart. `None` after the
    /// instance became errored (PM2 clears `created_at`); the next start sets it again.
    pub created_at: Option<Instant>,
    pub unstable_restarts: u32,
    pub prev_backoff: Option<Duration>,
}

impl History {
    pub fn new(now: Instant) -> Self {
        Self { created_at: Some(now), unstable_restarts: 0, prev_backoff: None }
    }
}

/// The decision after an exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Final exit: the instance is `stopped`.
    Stop,
    /// Too many unstable restarts: the instance is `errored`.
    Errored,
    /// Start again after this delay (`waiting restart` while it runs, when non-zero).
    Restart(Duration),
}

/// Decides what follows an exit. `started_at` is when this run began, `shutting_down` whether
/// the runtime is stopping everything.
pub fn on_exit(policy: &Policy, hist: &mut History, exit: Exit, started_at: Instant, now: Instant, shutting_down: bool) -> Decision {
    let code = match exit {
        Exit::Code(c) => Some(c),
        Exit::Signal(_) => None,
    };
    let stop_code = code.is_some_and(|c| policy.stop_exit_codes.contains(&c));
    if shutting_down || !policy.autorestart || stop_code {
        return Decision::Stop;
    }
    let uptime = now.saturating_duration_since(started_at);
    let window = policy.min_uptime.saturating_mul(policy.max_restarts);
    let in_window = hist.created_at.is_some_and(|c| now.saturating_duration_since(c) < window);
    if in_window && uptime < policy.min_uptime {
        hist.unstable_restarts += 1;
    }
    if hist.unstable_restarts >= policy.max_restarts {
        hist.unstable_restarts = 0;
        hist.created_at = None;
        return Decision::Errored;
    }
    Decision::Restart(next_delay(policy, hist, uptime))
}

/// The delay before the next start, updating the backoff state.
fn next_delay(policy: &Policy, hist: &mut History, uptime: Duration) -> Duration {
    let Some(base) = policy.exp_backoff_restart_delay else {
        return policy.restart_delay;
    };
    if uptime >= policy.backoff_reset {
        hist.prev_backoff = None;
    }
    let delay = match hist.prev_backoff {
        None => base,
        Some(prev) => backoff_step(prev),
    };
    hist.prev_backoff = Some(delay);
    delay
}

/// One step of PM2's backoff: `floor(min(15000, prev × 1.5))` milliseconds.
pub fn backoff_step(prev: Duration) -> Duration {
    let ms = (prev.as_millis() as u64).saturating_mul(3) / 2;
    Duration::from_millis(ms.min(BACKOFF_CAP.as_millis() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            autorestart: true,
            stop_exit_codes: vec![],
            min_uptime: Duration::from_millis(1000),
            max_restarts: 16,
            restart_delay: Duration::ZERO,
            exp_backoff_restart_delay: None,
            backoff_reset: BACKOFF_RESET,
        }
    }
    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn final_exits() {
        let t0 = Instant::now();
        let table: [(Policy, Exit, bool, Decision); 5] = [
            (Policy { autorestart: false, ..policy() }, Exit::Code(0), false, Decision::Stop),
            (Policy { autorestart: false, ..policy() }, Exit::Code(3), false, Decision::Stop),
            (Policy { stop_exit_codes: vec![42], ..policy() }, Exit::Code(42), false, Decision::Stop),
            (Policy { stop_exit_codes: vec![42], ..policy() }, Exit::Signal(9), false, Decision::Restart(Duration::ZERO)),
            (policy(), Exit::Code(1), true, Decision::Stop),
        ];
        for (p, exit, shutting, want) in table {
            let mut h = History::new(t0);
            assert_eq!(on_exit(&p, &mut h, exit, t0, t0 + MS(5000), shutting), want, "{p:?} {exit:?}");
        }
    }

    #[test]
    fn crash_loop_becomes_errored_after_max_restarts() {
        let p = policy();
        let t0 = Instant::now();
        let mut h = History::new(t0);
        let mut now = t0;
        for i in 1..=16 {
            let started = now;
            now += MS(100);
            let d = on_exit(&p, &mut h, Exit::Code(1), started, now, false);
            if i < 16 {
                assert_eq!(d, Decision::Restart(Duration::ZERO), "exit {i}");
            } else {
                assert_eq!(d, Decision::Errored);
                assert_eq!(h.created_at, None);
            }
        }
    }

    #[test]
    fn slow_crashes_restart_forever() {
        let p = policy();
        let t0 = Instant::now();
        let mut h = History::new(t0);
        let mut now = t0;
        for _ in 0..100 {
            let started = now;
            now += MS(1500);
            assert_eq!(on_exit(&p, &mut h, Exit::Code(1), started, now, false), Decision::Restart(Duration::ZERO));
        }
        assert_eq!(h.unstable_restarts, 0);
    }

    #[test]
    fn unstable_only_counted_inside_the_window() {
        let p = policy();
        let t0 = Instant::now();
        let mut h = History::new(t0);
        // Beyond min_uptime × max_restarts after created_at, quick exits no longer count.
        let started = t0 + MS(20_000);
        on_exit(&p, &mut h, Exit::Code(1), started, started + MS(10), false);
        assert_eq!(h.unstable_restarts, 0);
    }

    #[test]
    fn backoff_reset_timer_from_env() {
        assert_eq!(backoff_reset_from(None), BACKOFF_RESET);
        assert_eq!(backoff_reset_from(Some("1500")), MS(1500));
        assert_eq!(backoff_reset_from(Some("soon")), BACKOFF_RESET);
    }

    #[test]
    fn restart_delay_applies() {
        let p = Policy { restart_delay: MS(250), ..policy() };
        let t0 = Instant::now();
        let mut h = History::new(t0);
        assert_eq!(on_exit(&p, &mut h, Exit::Code(1), t0, t0 + MS(5000), false), Decision::Restart(MS(250)));
    }

    #[test]
    fn exponential_backoff_sequence_and_reset() {
        let p = Policy { exp_backoff_restart_delay: Some(MS(100)), max_restarts: 1000, ..policy() };
        let t0 = Instant::now();
        let mut h = History::new(t0);
        let want = [100, 150, 225, 337, 505, 757, 1135, 1702, 2553, 3829, 5743, 8614, 12921, 15000, 15000];
        let mut now = t0;
        for w in want {
            let started = now;
            now += MS(50);
            assert_eq!(on_exit(&p, &mut h, Exit::Code(1), started, now, false), Decision::Restart(MS(w)));
        }
        // After 30 s of uptime the next crash starts from the base again.
        let started = now;
        now += MS(30_000);
        assert_eq!(on_exit(&p, &mut h, Exit::Code(1), started, now, false), Decision::Restart(MS(100)));
    }
}
