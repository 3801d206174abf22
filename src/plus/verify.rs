//! The verify call: `POST {root}/api/node/verifyPM2` with the keys and a little system
//! metadata; the answer says whether this server may connect, and to which websocket.
//!
//! The request body and the reading of the answer are pure functions ([`body`], [`verdict`]);
//! [`call`] only does the HTTP with a timeout. The backend does not look at HTTP codes the way
//! a REST API would: like the official agent we read the JSON body whatever the code, and only
//! fall back on the code when the body says nothing.

use std::time::Duration;

use serde_json::{Value, json};

use super::Config;

/// The whole verify call, connect to answer.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Longest answer read (a hostile backend cannot fill our memory).
const MAX_BODY: usize = 64 * 1024;

/// What the backend said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Connect to this websocket URL (`ws://` or `wss://`).
    Connect {
        ws: String,
    },
    Refused(Refusal),
}

/// Why the link cannot connect (now). Every case is retried with backoff: a refused server
/// can be accepted later (a slot freed, the server re-enabled) without restarting the apps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `disabled: true`: the server was disabled in the dashboard.
    Disabled,
    /// `pending: true`: the bucket has no free server slot.
    Pending,
    /// `active: false`: the bucket is not active.
    Inactive(Option<String>),
    /// `error: true` or an HTTP error with a JSON body (bad keys look like this).
    Error { status: u16, msg: Option<String> },
    /// The answer is not a JSON object.
    NotJson { status: u16 },
    /// No usable `endpoints.ws`.
    NoEndpoint(Option<String>),
    /// The call itself failed: connection refused, DNS, TLS, timeout.
    Unreachable(String),
}

impl Refusal {
    /// A short stable name, so that the same problem is reported once.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::Disabled => "disabled",
            Refusal::Pending => "pending",
            Refusal::Inactive(_) => "inactive",
            Refusal::Error { .. } => "error",
            Refusal::NotJson { .. } => "not-json",
            Refusal::NoEndpoint(_) => "no-endpoint",
            Refusal::Unreachable(_) => "unreachable",
        }
    }

    /// Plain words for the user (may hold text from upstream: scrub it before printing).
    pub fn describe(&self, root: &str) -> String {
        let with = |m: &Option<String>| m.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
        match self {
            Refusal::Disabled => "PM2 Plus refused this server: it is disabled in the dashboard (enable it there); retrying quietly".into(),
            Refusal::Pending => {
                "PM2 Plus refused this server: the bucket has no free server slot (pending; delete a server or upgrade the plan); retrying quietly"
                    .into()
            }
            Refusal::Inactive(m) => format!("PM2 Plus refused this server: the bucket is not active{}; retrying quietly", with(m)),
            Refusal::Error { status, msg } => format!(
                "PM2 Plus refused the keys (HTTP {status}{}): check PM2_PUBLIC_KEY and PM2_SECRET_KEY; retrying quietly",
                msg.as_deref().map(|m| format!(", {m}")).unwrap_or_default()
            ),
            Refusal::NotJson { status } => {
                format!("PM2 Plus: {root} answered the verify call with HTTP {status} and a body that is not JSON; retrying quietly")
            }
            Refusal::NoEndpoint(m) => format!("PM2 Plus: {root} gave no usable websocket endpoint{}; retrying quietly", with(m)),
            Refusal::Unreachable(e) => format!("PM2 Plus: cannot reach {root} ({e}); retrying quietly"),
        }
    }
}

/// System facts sent with the keys.
#[derive(Debug, Clone)]
pub struct Meta {
    pub hostname: String,
    pub cpus: usize,
    /// Total RAM in bytes.
    pub memory: u64,
}

impl Meta {
    pub fn here() -> Meta {
        Meta {
            hostname: super::hostname(),
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            memory: super::packets::meminfo().0,
        }
    }
}

/// The verify request body (it holds the secret: never print it).
pub fn body(cfg: &Config, meta: &Meta) -> Value {
    json!({
        "public_id": cfg.public_key,
        "private_id": cfg.secret.expose(),
        "data": {
            "MACHINE_NAME": cfg.machine_name,
            "PUBLIC_KEY": cfg.public_key,
            "RECYCLE": false,
            "PM2_VERSION": cfg.pm2_version,
            // PM2 sends megabytes (bytes / 1e6).
            "MEMORY": meta.memory / 1_000_000,
            "HOSTNAME": meta.hostname,
            "CPUS": meta.cpus,
        }
    })
}

/// Reads the answer of the verify call.
pub fn verdict(status: u16, body: &[u8]) -> Verdict {
    let Ok(Value::Object(v)) = serde_json::from_slice::<Value>(body) else {
        return Verdict::Refused(Refusal::NotJson { status });
    };
    let flag = |k: &str| v.get(k).and_then(Value::as_bool);
    let msg = v.get("msg").and_then(|m| m.as_str().map(str::to_string).or_else(|| (!m.is_null()).then(|| m.to_string()))).map(|m| clip(&m));
    if flag("disabled") == Some(true) {
        return Verdict::Refused(Refusal::Disabled);
    }
    if flag("pending") == Some(true) {
        return Verdict::Refused(Refusal::Pending);
    }
    if flag("active") == Some(false) {
        return Verdict::Refused(Refusal::Inactive(msg));
    }
    if flag("error") == Some(true) || !(200..300).contains(&status) {
        return Verdict::Refused(Refusal::Error { status, msg });
    }
    let ws = v.get("endpoints").and_then(|e| e.get("ws")).and_then(Value::as_str);
    match ws.map(ws_url) {
        Some(Ok(ws)) => Verdict::Connect { ws },
        Some(Err(e)) => Verdict::Refused(Refusal::NoEndpoint(Some(e.to_string()))),
        None => Verdict::Refused(Refusal::NoEndpoint(msg)),
    }
}

/// Why a websocket endpoint handed out by the backend is not used. The URL is the backend's
/// text, kept whole; it is clipped when displayed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("endpoint {:?} has no scheme", clip(.0))]
    NoScheme(String),
    #[error("endpoint scheme {:?} is not http(s) or ws(s)", clip(.0))]
    Scheme(String),
    #[error("endpoint has no host")]
    NoHost,
    #[error("endpoint {} is not encrypted while KEYMETRICS_NODE is https://; the secret would travel in clear", clip(.0))]
    Unencrypted(String),
}

/// The backend hands out `http(s)://` websocket URLs (Node's ws library accepts them): rewrite
/// the scheme to `ws(s)://`.
pub fn ws_url(url: &str) -> Result<String, EndpointError> {
    let url = url.trim();
    let (scheme, rest) = url.split_once("://").ok_or_else(|| EndpointError::NoScheme(url.to_string()))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        other => return Err(EndpointError::Scheme(other.to_string())),
    };
    if rest.is_empty() {
        return Err(EndpointError::NoHost);
    }
    Ok(format!("{scheme}://{rest}"))
}

/// A websocket endpoint handed out by an `https://` root must be `wss://`: the secret goes in
/// its upgrade request's headers.
pub fn as_secure_as_the_root(root: &str, ws: &str) -> Result<(), EndpointError> {
    let https_root = root.trim().get(..8).is_some_and(|s| s.eq_ignore_ascii_case("https://"));
    if https_root && !ws.starts_with("wss://") {
        return Err(EndpointError::Unencrypted(ws.to_string()));
    }
    Ok(())
}

/// Upstream text made safe to print on one line: control characters out, at most 200 chars.
pub fn clip(s: &str) -> String {
    let clean: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if clean.chars().count() > 200 { format!("{}…", clean.chars().take(200).collect::<String>()) } else { clean }
}

/// One verify call.
pub async fn call(client: &crate::outbound::Client, cfg: &Config, meta: &Meta) -> Verdict {
    let url = format!("{}/api/node/verifyPM2", cfg.root);
    let sent = client.post(&url, &[("Content-Type", "application/json")], body(cfg, meta).to_string().into_bytes(), MAX_BODY).await;
    match sent {
        // The client follows no redirect: the request carries the keys, and a redirect could
        // send them elsewhere, or over plain http.
        Ok(r) if (300..400).contains(&r.status) => Verdict::Refused(Refusal::Unreachable(format!(
            "it answers with a redirect (HTTP {}), which is not followed since the call carries the keys; set KEYMETRICS_NODE to the final address",
            r.status
        ))),
        Ok(r) => match verdict(r.status, &r.body) {
            Verdict::Connect { ws } => match as_secure_as_the_root(&cfg.root, &ws) {
                Ok(()) => Verdict::Connect { ws },
                Err(e) => Verdict::Refused(Refusal::NoEndpoint(Some(e.to_string()))),
            },
            other => other,
        },
        Err(e) => Verdict::Refused(Refusal::Unreachable(clip(&e.to_string()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: u16, body: &str) -> Refusal {
        match verdict(status, body.as_bytes()) {
            Verdict::Refused(r) => r,
            v => panic!("{body}: {v:?}"),
        }
    }

    #[test]
    fn verdicts() {
        assert_eq!(
            verdict(
                200,
                br#"{"active":true,"pending":false,"disabled":false,"new":true,"endpoints":{"ws":"http://127.0.0.1:9/ws","web":"x"}}"#
            ),
            Verdict::Connect { ws: "ws://127.0.0.1:9/ws".into() }
        );
        assert_eq!(
            verdict(200, br#"{"endpoints":{"ws":"https://h/interaction/public"}}"#),
            Verdict::Connect { ws: "wss://h/interaction/public".into() }
        );
        assert_eq!(refused(200, r#"{"disabled":true,"active":true,"endpoints":{"ws":"http://x"}}"#), Refusal::Disabled);
        assert_eq!(refused(200, r#"{"pending":true,"active":true,"endpoints":{"ws":"http://x"}}"#), Refusal::Pending);
        assert_eq!(
            refused(200, r#"{"active":false,"error":true,"msg":"bucket expired"}"#),
            Refusal::Inactive(Some("bucket expired".into()))
        );
        assert_eq!(refused(403, r#"{"msg":"invalid keys"}"#), Refusal::Error { status: 403, msg: Some("invalid keys".into()) });
        assert_eq!(refused(200, r#"{"error":true,"msg":{"code":1}}"#), Refusal::Error { status: 200, msg: Some(r#"{"code":1}"#.into()) });
        assert_eq!(refused(500, "<html>oops</html>"), Refusal::NotJson { status: 500 });
        assert_eq!(refused(200, "[1,2]"), Refusal::NotJson { status: 200 });
        assert_eq!(refused(200, r#"{"active":true}"#), Refusal::NoEndpoint(None));
        assert!(matches!(refused(200, r#"{"endpoints":{"ws":"ftp://x"}}"#), Refusal::NoEndpoint(Some(_))));
    }

    #[test]
    fn refusals_read_plainly() {
        let root = "https://root.example";
        assert!(Refusal::Pending.describe(root).contains("no free server slot"));
        assert!(Refusal::Disabled.describe(root).contains("disabled"));
        assert!(Refusal::Error { status: 403, msg: Some("bad".into()) }.describe(root).contains("check PM2_PUBLIC_KEY and PM2_SECRET_KEY"));
        assert!(Refusal::NotJson { status: 502 }.describe(root).contains("HTTP 502"));
        assert!(Refusal::Unreachable("connection failed".into()).describe(root).contains("cannot reach https://root.example"));
    }

    #[test]
    fn an_https_root_hands_out_only_wss() {
        assert!(as_secure_as_the_root("https://root.keymetrics.io", "wss://a/ws").is_ok());
        assert!(as_secure_as_the_root("HTTPS://root", "wss://a/ws").is_ok());
        assert!(as_secure_as_the_root("http://127.0.0.1:9", "ws://127.0.0.1:9/ws").is_ok());
        let e = as_secure_as_the_root("https://root.keymetrics.io", "ws://evil.example/ws").unwrap_err();
        assert_eq!(e, EndpointError::Unencrypted("ws://evil.example/ws".into()));
        let e = e.to_string();
        assert!(e.contains("ws://evil.example/ws") && e.contains("in clear"), "{e}");
    }

    #[test]
    fn ws_urls_and_clipping() {
        assert_eq!(ws_url("http://a:1/ws").unwrap(), "ws://a:1/ws");
        assert_eq!(ws_url("HTTPS://a/").unwrap(), "wss://a/");
        assert_eq!(ws_url("wss://a").unwrap(), "wss://a");
        assert_eq!(ws_url("a/b").unwrap_err().to_string(), r#"endpoint "a/b" has no scheme"#);
        assert_eq!(ws_url("FTP://x").unwrap_err().to_string(), r#"endpoint scheme "ftp" is not http(s) or ws(s)"#);
        assert_eq!(ws_url("wss://").unwrap_err(), EndpointError::NoHost);
        assert_eq!(clip("a\nb"), "a b");
        assert_eq!(clip(&"x".repeat(300)).chars().count(), 201);
    }

    #[test]
    fn body_carries_keys_and_metadata() {
        let super::super::Resolved::On(cfg) = super::super::resolve(
            &|k| match k {
                "PM2_PUBLIC_KEY" => Some("pub".into()),
                "PM2_SECRET_KEY" => Some("sec".into()),
                "PM2_MACHINE_NAME" => Some("box".into()),
                _ => None,
            },
            &Default::default(),
        ) else {
            panic!("keys are set")
        };
        let b = body(&cfg, &Meta { hostname: "h".into(), cpus: 2, memory: 4_000_000_000 });
        assert_eq!(b["public_id"], "pub");
        assert_eq!(b["private_id"], "sec");
        assert_eq!(b["data"]["MACHINE_NAME"], "box");
        assert_eq!(b["data"]["MEMORY"], 4000);
        assert_eq!(b["data"]["CPUS"], 2);
        assert_eq!(b["data"]["RECYCLE"], false);
    }
}
