//! The runtime's signals, as typed events (DESIGN.md §3.3).
//!
//! | signal        | effect                                                        |
//! |---------------|---------------------------------------------------------------|
//! | TERM, INT     | graceful stop of every app; a second one SIGKILLs them now    |
//! | HUP           | restart every app (the rolling reload of cluster mode later)  |
//! | USR2          | reopen log files                                               |
//! | QUIT, USR1, WINCH | forwarded to every app's process group                     |
//! | PIPE          | ignored (Rust's default): a closed stdout never kills us      |
//!
//! Handlers are installed before any app starts: as PID 1 a signal without a handler is dropped.

use std::io;

use nix::sys::signal::Signal;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeSignal {
    Stop,
    Reload,
    ReopenLogs,
    Forward(Signal),
}

pub struct Signals {
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
