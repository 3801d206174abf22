//! The runtime's top-level errors, in two kinds (watchexec's split):
//! - [`Critical`]: the runtime cannot run (nothing is started); each variant has its exit code
//!   ([`Critical::outcome`]), chosen by kind, never by reading the message.
//! - [`Runtime`]: reported, and the runtime carries on without the piece that failed.

use crate::config::ConfigError;
use crate::control::server::BindError;
use crate::exit::Outcome;

#[derive(Debug, thiserror::Error)]
pub enum Critical {
    /// Every problem of the configuration, in file order.
    #[error("invalid configuration, nothing was started:{}", .0.sorted().iter().map(|p| format!("\n  {p}")).collect::<String>())]
    Config(ConfigError),
    #[error("no app to run in {0}")]
    NoApp(String),
    /// Another runtime serves this PM2_HOME, or PM2_HOME is not safe to use.
    #[error(transparent)]
    Bind(BindError),
    /// `--web`: the HTTP server cannot listen or write its token.
    #[error(transparent)]
    Web(crate::http::StartError),
    /// The process itself cannot be set up (signal handlers, the async runtime, output).
    #[error("cannot {what}: {source}")]
    Setup { what: &'static str, source: std::io::Error },
}

impl Critical {
    /// The exit code of this error (see `exit.rs`).
    pub fn outcome(&self) -> Outcome {
        match self {
            Critical::Config(_) | Critical::NoApp(_) => Outcome::ConfigError,
            Critical::Bind(BindError::AlreadyRunning(_)) => Outcome::AlreadyRunning,
            Critical::Bind(_) | Critical::Web(_) => Outcome::ConfigError,
            Critical::Setup { .. } => Outcome::Internal,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Runtime {
    #[error("{0}; running without the control socket (pm-runtime ls etc. will not reach this runtime)")]
    NoControlSocket(BindError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_kind() {
        let bind = || BindError::AlreadyRunning("another pm-runtime is already running with PM2_HOME=/h".into());
        assert_eq!(Critical::Bind(bind()).outcome(), Outcome::AlreadyRunning);
        let not_ours = crate::control::home::HomeError::NotOurs { path: "/h".into(), owner: 7, me: 0 };
        assert_eq!(Critical::Bind(BindError::Unsafe(not_ours)).outcome(), Outcome::ConfigError);
        assert_eq!(Critical::NoApp("e.yml".into()).outcome(), Outcome::ConfigError);
        let io = std::io::Error::other("x");
        assert_eq!(Critical::Setup { what: "install signal handlers", source: io }.outcome(), Outcome::Internal);
        let taken = crate::http::StartError::Listen { addr: ([127, 0, 0, 1], 9615).into(), source: std::io::ErrorKind::AddrInUse.into() };
        assert_eq!(Critical::Web(taken).outcome(), Outcome::ConfigError);
        assert!(Critical::Bind(bind()).to_string().starts_with("another pm-runtime is already running with PM2_HOME=/h"));
    }
}
