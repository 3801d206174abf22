//! Exit codes are API: scripts, orchestrators and CI jobs read them.
//!
//! | code | meaning |
//! |------|---------|
//! | 0    | stopped on request (SIGTERM/SIGINT), or every app finished with code 0 |
//! | N    | every app finished by itself; N is the first non-zero exit (file order) of an app, 128+signal if it was killed |
//! | 2    | an app became `errored` (too many unstable restarts) — pm2-runtime's auto-exit code |
//! | 64   | bad command line |
//! | 70   | internal error of the runtime |
//! | 75   | another runtime already serves this `PM2_HOME` |
//! | 78   | configuration error: unreadable or invalid ecosystem file, missing script, unsupported mode, a JS config past its deadline, a `PM2_HOME` owned by another user |

use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Requested,
    AppsFinished(i32),
    AppErrored,
    Usage,
    Internal,
    ConfigError,
    AlreadyRunning,
}

impl Outcome {
    pub fn code(self) -> u8 {
        match self {
            Outcome::Requested => 0,
            Outcome::AppsFinished(c) => c.clamp(0, 255) as u8,
            Outcome::AppErrored => 2,
            Outcome::Usage => 64,
            Outcome::Internal => 70,
            Outcome::ConfigError => 78,
            Outcome::AlreadyRunning => 75,
        }
    }
}

impl From<Outcome> for ExitCode {
    fn from(o: Outcome) -> ExitCode {
        ExitCode::from(o.code())
    }
}
