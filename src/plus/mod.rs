//! The PM2 Plus link: the runtime as seen from the PM2 Plus (Keymetrics) dashboard.
//!
//! On only when a public and a secret key are set (`PM2_PUBLIC_KEY`/`PM2_SECRET_KEY`, else
//! `KEYMETRICS_PUBLIC`/`KEYMETRICS_SECRET`, else `--public`/`--secret`); off, nothing of it
//! exists: no thread, no socket, no client, no subscription.
//!
//! When on, the link runs on its own thread with its own small tokio runtime ([`link`]), so a
//! slow, dead or hostile backend cannot take time from supervision, logs or the control
//! socket: it reads the status table through a `watch` feed and events through the bus, and
//! asks the coordinator for remote actions with the same typed requests the control socket
//! sends. Written from the protocol description in the project's research notes
//! (`pm2-plus-protocol.md`): verify call ([`verify`]), one websocket ([`transport`]), the
//! packets ([`packets`]) and the dashboard's orders ([`actions`]).
//!
//! Must never: print, log or send the secret anywhere but the verify body and the websocket's
//! `X-KM-SECRET` header (it lives in a [`Secret`], whose `Debug`/`Display` are `[redacted]`, and
//! every text that came from upstream is scrubbed before it is printed); send an app's
//! environment (only `NODE_ENV`); block or slow the coordinator.

// The link itself: only in builds with the `plus` feature (the default). The settings below
// are always there, so a build without it can still tell a user that set keys.
#[cfg(feature = "plus")]
pub mod actions;
#[cfg(feature = "plus")]
pub mod link;
#[cfg(feature = "plus")]
pub mod packets;
#[cfg(feature = "plus")]
pub mod transport;
#[cfg(feature = "plus")]
pub mod verify;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "plus")]
pub use link::{Handles, spawn};

/// PM2's root endpoint, used unless `KEYMETRICS_NODE` says otherwise.
pub const DEFAULT_ROOT: &str = "https://root.keymetrics.io";

/// The pm2 version we present (`X-PM2-VERSION`, `pm2_version`): the pm2 whose behaviour
/// pm-runtime follows. `PM2_VERSION` overrides it.
pub const PM2_COMPAT_VERSION: &str = "6.0.14";

/// Default `status` period (`PM2_STATUS_INTERVAL`, ms), as the official agent.
pub const STATUS_INTERVAL: Duration = Duration::from_millis(1000);

/// How often the keys are checked again while connected, as the official agent.
pub const REVERIFY_INTERVAL: Duration = Duration::from_secs(60);

/// A secret that never prints: `Debug` and `Display` show `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(s: &str) -> Secret {
        Secret(Arc::from(s))
    }

    /// The secret itself: only for the verify body and the `X-KM-SECRET` header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the secret replaced by `[redacted]` (for anything that
    /// came from upstream or from an error and is about to be printed).
    pub fn scrub(&self, text: &str) -> String {
        if self.0.is_empty() { text.to_string() } else { text.replace(&*self.0, "[redacted]") }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Everything the link needs to know before it starts.
#[derive(Debug, Clone)]
pub struct Config {
    pub public_key: String,
    pub secret: Secret,
    pub machine_name: String,
    /// Root URL, `http(s)://host[:port]`, no trailing slash.
    pub root: String,
    /// `PM2_PROXY`: `http://host:port` (verify call and websocket).
    pub proxy: Option<String>,
    pub status_interval: Duration,
    pub reverify_interval: Duration,
    pub pm2_version: String,
    /// `NODE_EXTRA_CA_CERTS`: more trusted roots (PEM), e.g. a self-hosted backend's own CA, as
    /// Node (and so pm2's agent) honours it.
    pub extra_ca: Option<std::path::PathBuf>,
}

/// The `--public/--secret/--machine-name` flags.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub public_key: Option<String>,
    pub secret: Option<String>,
    pub machine_name: Option<String>,
}

/// What the keys and settings say.
#[derive(Debug)]
pub enum Resolved {
    /// No key at all: the link is off, silently.
    Off,
    /// Off, and the user should know why (one key without the other, a bad setting).
    Misconfigured(String),
    On(Config),
}

/// Resolves the link's settings from the environment (`env(name)`; empty counts as unset) and
/// the flags, with pm2-runtime's precedence: `PM2_*`, then `KEYMETRICS_*`, then the flags.
pub fn resolve(env: &dyn Fn(&str) -> Option<String>, flags: &Flags) -> Resolved {
    let get = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let public = get("PM2_PUBLIC_KEY").or_else(|| get("KEYMETRICS_PUBLIC")).or_else(|| flags.public_key.clone().filter(|v| !v.is_empty()));
    let secret = get("PM2_SECRET_KEY").or_else(|| get("KEYMETRICS_SECRET")).or_else(|| flags.secret.clone().filter(|v| !v.is_empty()));
    let (public_key, secret) = match (public, secret) {
        (None, None) => return Resolved::Off,
        (Some(_), None) => {
            return Resolved::Misconfigured("PM2 Plus: a public key is set but no secret key (PM2_SECRET_KEY): the link stays off".into());
        }
        (None, Some(_)) => {
            return Resolved::Misconfigured("PM2 Plus: a secret key is set but no public key (PM2_PUBLIC_KEY): the link stays off".into());
        }
        (Some(p), Some(s)) => (p.trim().to_string(), Secret::new(s.trim())),
    };
    let root = match root_url(get("KEYMETRICS_NODE").as_deref()) {
        Ok(r) => r,
        Err(e) => return Resolved::Misconfigured(format!("PM2 Plus: {e}: the link stays off")),
    };
    let machine_name = get("PM2_MACHINE_NAME")
        .or_else(|| get("INSTANCE_NAME"))
        .or_else(|| get("MACHINE_NAME"))
        .or_else(|| flags.machine_name.clone().filter(|v| !v.is_empty()))
        .unwrap_or_else(default_machine_name);
    let ms = |name: &str, default: Duration| {
        get(name).and_then(|v| v.trim().parse::<u64>().ok()).filter(|n| *n > 0).map_or(default, |n| Duration::from_millis(n.max(50)))
    };
    Resolved::On(Config {
        public_key,
        secret,
        machine_name,
        root,
        proxy: get("PM2_PROXY"),
        status_interval: ms("PM2_STATUS_INTERVAL", STATUS_INTERVAL),
        reverify_interval: ms("PM_RUNTIME_PLUS_REVERIFY_MS", REVERIFY_INTERVAL),
        pm2_version: get("PM2_VERSION").unwrap_or_else(|| PM2_COMPAT_VERSION.to_string()),
        extra_ca: get("NODE_EXTRA_CA_CERTS").map(std::path::PathBuf::from),
    })
}

/// Why `KEYMETRICS_NODE` is refused; the setting's value as given (trimmed), which holds no key.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RootUrlError {
    #[error("KEYMETRICS_NODE must be an http:// or https:// URL, got {0:?}")]
    Scheme(String),
    #[error("KEYMETRICS_NODE has no host: {0:?}")]
    NoHost(String),
}

/// `KEYMETRICS_NODE` → root URL: `https://` added when there is no scheme, `http://` allowed
/// (self-hosted backends), anything else refused.
pub fn root_url(value: Option<&str>) -> Result<String, RootUrlError> {
    let v = value.map(str::trim).unwrap_or(DEFAULT_ROOT);
    let url = if v.contains("://") { v.to_string() } else { format!("https://{v}") };
    let (scheme, rest) = url.split_once("://").unwrap_or(("", ""));
    if !matches!(scheme, "http" | "https") {
        return Err(RootUrlError::Scheme(v.to_string()));
    }
    if rest.trim_matches('/').is_empty() {
        return Err(RootUrlError::NoHost(v.to_string()));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// `<hostname>-<4 hex>`, as PM2 names a server when no name is given.
pub fn default_machine_name() -> String {
    format!("{}-{}", hostname(), &crate::ids::uuid_v4()[..4])
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    fn on(r: Resolved) -> Config {
        match r {
            Resolved::On(c) => c,
            other => panic!("expected On, got {other:?}"),
        }
    }

    #[test]
    fn keys_precedence_env_then_keymetrics_then_flags() {
        let flags = Flags { public_key: Some("fp".into()), secret: Some("fs".into()), machine_name: Some("fm".into()) };
        let c = on(resolve(
            &env_of(&[
                ("PM2_PUBLIC_KEY", "p"),
                ("KEYMETRICS_PUBLIC", "kp"),
                ("PM2_SECRET_KEY", "s"),
                ("KEYMETRICS_SECRET", "ks"),
                ("PM2_MACHINE_NAME", "m"),
            ]),
            &flags,
        ));
        assert_eq!((c.public_key.as_str(), c.secret.expose(), c.machine_name.as_str()), ("p", "s", "m"));
        let c = on(resolve(&env_of(&[("KEYMETRICS_PUBLIC", "kp"), ("KEYMETRICS_SECRET", "ks"), ("PM2_SECRET_KEY", "")]), &flags));
        assert_eq!((c.public_key.as_str(), c.secret.expose(), c.machine_name.as_str()), ("kp", "ks", "fm"));
        let c = on(resolve(&env_of(&[]), &flags));
        assert_eq!((c.public_key.as_str(), c.secret.expose()), ("fp", "fs"));
        assert_eq!(c.root, DEFAULT_ROOT);
        assert_eq!(c.status_interval, STATUS_INTERVAL);
        assert_eq!(c.reverify_interval, REVERIFY_INTERVAL);
        assert_eq!(c.pm2_version, PM2_COMPAT_VERSION);
    }

    #[test]
    fn off_without_keys_and_explained_with_one() {
        assert!(matches!(resolve(&env_of(&[]), &Flags::default()), Resolved::Off));
        let Resolved::Misconfigured(m) = resolve(&env_of(&[("PM2_PUBLIC_KEY", "p")]), &Flags::default()) else { panic!() };
        assert!(m.contains("no secret key"), "{m}");
        let Resolved::Misconfigured(m) = resolve(&env_of(&[("PM2_SECRET_KEY", "TOPSECRET")]), &Flags::default()) else { panic!() };
        assert!(m.contains("no public key") && !m.contains("TOPSECRET"), "{m}");
        let Resolved::Misconfigured(m) =
            resolve(&env_of(&[("PM2_PUBLIC_KEY", "p"), ("PM2_SECRET_KEY", "s"), ("KEYMETRICS_NODE", "ftp://x")]), &Flags::default())
        else {
            panic!()
        };
        assert!(m.contains("KEYMETRICS_NODE"), "{m}");
    }

    #[test]
    fn root_urls() {
        assert_eq!(root_url(None).unwrap(), "https://root.keymetrics.io");
        assert_eq!(root_url(Some("api.cloud.pm2.io")).unwrap(), "https://api.cloud.pm2.io");
        assert_eq!(root_url(Some("http://127.0.0.1:3000/")).unwrap(), "http://127.0.0.1:3000");
        assert_eq!(root_url(Some("https://pm2.example.com")).unwrap(), "https://pm2.example.com");
        assert_eq!(
            root_url(Some("ws://x")).unwrap_err().to_string(),
            r#"KEYMETRICS_NODE must be an http:// or https:// URL, got "ws://x""#
        );
        assert_eq!(root_url(Some(" https:// ")).unwrap_err(), RootUrlError::NoHost("https://".into()));
    }

    #[test]
    fn settings_from_env() {
        let c = on(resolve(
            &env_of(&[
                ("PM2_PUBLIC_KEY", "p"),
                ("PM2_SECRET_KEY", "s"),
                ("PM2_STATUS_INTERVAL", "200"),
                ("PM2_PROXY", "http://proxy:3128"),
            ]),
            &Flags::default(),
        ));
        assert_eq!(c.status_interval, Duration::from_millis(200));
        assert_eq!(c.proxy.as_deref(), Some("http://proxy:3128"));
        let c =
            on(resolve(&env_of(&[("PM2_PUBLIC_KEY", "p"), ("PM2_SECRET_KEY", "s"), ("PM2_STATUS_INTERVAL", "nope")]), &Flags::default()));
        assert_eq!(c.status_interval, STATUS_INTERVAL);
        // Default machine name: <hostname>-<4 hex>.
        let (host, suffix) = c.machine_name.rsplit_once('-').unwrap();
        assert_eq!(host, hostname());
        assert!(suffix.len() == 4 && suffix.chars().all(|c| c.is_ascii_hexdigit()), "{}", c.machine_name);
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("SECRET-123");
        assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
        let c = Config {
            public_key: "p".into(),
            secret: s.clone(),
            machine_name: "m".into(),
            root: DEFAULT_ROOT.into(),
            proxy: None,
            status_interval: STATUS_INTERVAL,
            reverify_interval: REVERIFY_INTERVAL,
            pm2_version: "x".into(),
            extra_ca: None,
        };
        assert!(!format!("{c:?}").contains("SECRET-123"));
        assert_eq!(s.scrub("bad key SECRET-123!"), "bad key [redacted]!");
    }
}
