//! The runtime's signals, as typed events (DESIGN.md §3.3).
//!
//! | signal        | effect                                                        |
//! |---------------|---------------------------------------------------------------|
//! | TERM, INT     | graceful stop of every app; a second one SIGKILLs them now    |
//! |               | (one within [`STOP_ECHO`] of the first is the same stop)       |
//! | HUP           | restart every app (the rolling reload of cluster mode later)  |
//! | USR2          | reopen log files                                               |
//! | QUIT, USR1, WINCH | forwarded to every app's process group                     |
//! | PIPE          | ignored (Rust's default): a closed stdout never kills us      |
//!
//! Handlers are installed before any app starts: as PID 1 a signal without a handler is dropped.

use std::io;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeSignal {
    Stop,
    Reload,
    ReopenLogs,
    Forward(Signal),
}

/// A stop signal this soon after the previous one is an echo of the same stop, not a second
/// request: a platform that signals every process (Heroku's dyno manager, `kill -TERM -1`)
/// reaches both a launcher (npm's `node_modules/.bin/pm-runtime` on Node < 22.15) and the
/// runtime, and the launcher relays its copy a moment later; Ctrl-C does the same to a
/// terminal's foreground group. Only a deliberate second signal forces the kill.
pub const STOP_ECHO: Duration = Duration::from_millis(500);

/// Whether a stop signal at `now` is the echo of one at `previous`.
pub fn is_echo(previous: Option<Instant>, now: Instant) -> bool {
    previous.is_some_and(|p| now.saturating_duration_since(p) < STOP_ECHO)
}

pub struct Signals {
    /// When the last stop signal that counted arrived.
    last_stop: Option<Instant>,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
    winch: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs every handler. Must run inside the tokio runtime.
    pub fn install() -> io::Result<Self> {
        Ok(Self {
            last_stop: None,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
            quit: signal(SignalKind::quit())?,
            winch: signal(SignalKind::window_change())?,
        })
    }

    pub async fn recv(&mut self) -> RuntimeSignal {
        loop {
            let sig = self.next().await;
            if sig == RuntimeSignal::Stop {
                let now = Instant::now();
                if is_echo(self.last_stop, now) {
                    tracing::debug!("stop signal within {} ms of the previous one: the same stop", STOP_ECHO.as_millis());
                    continue;
                }
                self.last_stop = Some(now);
            }
            return sig;
        }
    }

    async fn next(&mut self) -> RuntimeSignal {
        tokio::select! {
            _ = self.term.recv() => RuntimeSignal::Stop,
            _ = self.int.recv() => RuntimeSignal::Stop,
            _ = self.hup.recv() => RuntimeSignal::Reload,
            _ = self.usr2.recv() => RuntimeSignal::ReopenLogs,
            _ = self.usr1.recv() => RuntimeSignal::Forward(Signal::SIGUSR1),
            _ = self.quit.recv() => RuntimeSignal::Forward(Signal::SIGQUIT),
            _ = self.winch.recv() => RuntimeSignal::Forward(Signal::SIGWINCH),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_soon_after_another_is_its_echo() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        for (previous, at, echo) in [
            (None, t, false),
            (Some(t), t, true),
            (Some(t), t + ms(20), true),
            (Some(t), t + ms(499), true),
            (Some(t), t + ms(500), false),
            (Some(t), t + ms(2000), false),
        ] {
            assert_eq!(is_echo(previous, at), echo, "{:?} after {:?}", at.saturating_duration_since(t), previous.map(|_| "a stop"));
        }
    }
}
