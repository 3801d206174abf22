//! The control protocol: newline-delimited JSON over a Unix socket, one request per line, one
//! reply per request. Scriptable with socat:
//!
//! ```text
//! $ echo '{"v":1,"cmd":"ls"}' | socat - UNIX-CONNECT:$HOME/.pm2/pm-runtime.sock
//! {"ok":true,"processes":[…]}
//! ```
//!
//! Requests (`v` is the protocol version, 1; optional): `ping`, `ls`, `show {target}`,
//! `start|stop|restart|reload|delete|reset {target}`, `scale {name, count}` (`"4"`, `"+2"`, `"-1"`),
//! `signal {signal, target}`, `send {target, message}`, `logs {target?, lines, after?}`, `flush {target?}`, `reload_logs`,
//! `apply {action, ecosystem}` (sent by `startOrRestart`; the ecosystem is the resolved model).
//! `target` is an app name, a pm_id, a namespace or `all`. Replies: `{"ok":true,…}` or
//! `{"ok":false,"error":"…"}`. A malformed, oversized (over [`MAX_REQUEST`]) or unknown request
//! gets an error reply and never disturbs the runtime.
//!
//! Both sides use these types: the server decodes [`Request`] and encodes [`Reply`], the client
//! ([`super::client`]) encodes [`Request`] and decodes [`Reply`], so the two cannot drift apart.

use serde::{Deserialize, Serialize};

pub const VERSION: u32 = 1;
/// Longest request line accepted (an `apply` carries a whole ecosystem).
pub const MAX_REQUEST: usize = 1024 * 1024;
/// The socket's file name inside `$PM2_HOME`.
pub const SOCKET_NAME: &str = "pm-runtime.sock";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Ping,
    Ls,
    Show {
        target: String,
    },
    Start {
        target: String,
    },
    Stop {
        target: String,
    },
    Restart {
        target: String,
    },
    Reload {
        target: String,
    },
    Delete {
        target: String,
    },
    Reset {
        target: String,
    },
    Scale {
        name: String,
        count: String,
    },
    /// A message for the apps' Node IPC channel (`process.on('message')`), as PM2's
    /// `sendDataToProcessId`; `@pm2/io` actions and prom-client's cluster requests travel so.
    Send {
        target: String,
        message: serde_json::Value,
    },
    Signal {
        signal: String,
        target: String,
    },
    /// `after`: only lines with a higher `seq` (to follow the stream by polling).
    Logs {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<String>,
        lines: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<u64>,
    },
    Flush {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<String>,
    },
    ReloadLogs,
    /// `kill`: stop every app and exit, as a stop signal does (PM2's `kill` of its daemon).
    Kill,
    /// `startOrRestart|startOrReload|startOrGracefulReload <file>`: the client loads the file and
    /// sends the resolved apps; known names are restarted with the new settings, new ones started.
    Apply {
        action: String,
        ecosystem: crate::config::Ecosystem,
    },
}

#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(default)]
    v: Option<u32>,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

/// Why a request line was refused; its text is the reply's `error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("request is not UTF-8")]
    NotUtf8,
    /// Not a JSON object (or a duplicate key): the decoder's words.
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("unsupported protocol version {0} (this runtime speaks {VERSION})")]
    Version(u32),
    /// Unknown `cmd`, or a field missing or of the wrong type: serde's words.
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// Parses one request line.
pub fn parse(line: &str) -> Result<Request, RequestError> {
    let value = crate::config::strict_json::from_str(line).map_err(|e| RequestError::Malformed(e.to_string()))?;
    let env: Envelope = serde_json::from_value(value).map_err(|e| RequestError::Malformed(e.to_string()))?;
    if let Some(v) = env.v
        && v != VERSION
    {
        return Err(RequestError::Version(v));
    }
    serde_json::from_value(serde_json::Value::Object(env.rest)).map_err(|e| RequestError::Invalid(e.to_string()))
}

/// One request line as the client sends it (with the protocol version), without the newline.
pub fn encode(req: &Request) -> String {
    let mut v = serde_json::to_value(req).unwrap_or_default();
    if let serde_json::Value::Object(m) = &mut v {
        m.insert("v".into(), VERSION.into());
    }
    v.to_string()
}

/// A reply: `ok`, and the fields of the request that was answered (absent ones are not sent).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `ls`, `show`: PM2's `jlist` objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<Vec<serde_json::Value>>,
    /// The pm_ids a command was sent to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<u32>>,
    /// `ping`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problems: Option<Vec<String>>,
    /// `scale`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added: Option<Vec<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<Vec<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<i64>,
    /// `logs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<Vec<LogLine>>,
    /// `flush`: the files truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<std::path::PathBuf>>,
    /// `apply`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<Vec<String>>,
    /// The refusal is that the target names nothing (the HTTP API answers `404`). Inside the
    /// runtime only: the socket's client shows the text.
    #[serde(skip)]
    pub not_found: bool,
}

/// A target that names nothing: the refusal says what was tried.
impl From<super::target::TargetError> for Reply {
    fn from(e: super::target::TargetError) -> Reply {
        Reply { not_found: e.is_not_found(), ..Reply::error(e.to_string()) }
    }
}

impl Reply {
    pub fn ok() -> Reply {
        Reply { ok: true, ..Default::default() }
    }

    pub fn error(msg: impl Into<String>) -> Reply {
        Reply { ok: false, error: Some(msg.into()), ..Default::default() }
    }
}

/// One recent log line of an app (`logs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub seq: u64,
    pub pm_id: u32,
    pub app_name: String,
    /// `out` or `err`.
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
}

/// The error reply, as one value.
pub fn error(msg: impl Into<String>) -> Reply {
    Reply::error(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CMDS: &[&str] = &[
        "ping",
        "ls",
        "show",
        "start",
        "stop",
        "restart",
        "reload",
        "delete",
        "reset",
        "scale",
        "signal",
        "logs",
        "flush",
        "reload_logs",
        "apply",
        "explode",
        "",
    ];
    const FIELDS: &[&str] = &["v", "cmd", "target", "name", "count", "signal", "lines", "after", "action", "ecosystem", "extra"];

    fn field_value() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value as J;
        prop_oneof![
            Just(J::Null),
            any::<bool>().prop_map(J::Bool),
            any::<i64>().prop_map(J::from),
            any::<u64>().prop_map(J::from),
            any::<String>().prop_map(J::String),
            prop::sample::select(CMDS).prop_map(|c| J::String(c.into())),
            Just(serde_json::json!({"file": null, "apps": [{"name": "x"}], "warnings": []})),
            Just(serde_json::json!([1, {"a": []}])),
        ]
    }

    /// Request lines: objects with known fields and random values (a duplicate now and then),
    /// cut short or with junk, and plain random text. The decoder answers every one, never
    /// panics, and what it accepts has the command it was sent.
    fn request_line() -> impl Strategy<Value = String> {
        let obj = (prop::sample::select(CMDS), prop::collection::vec((prop::sample::select(FIELDS), field_value()), 0..6), any::<bool>());
        prop_oneof![
            4 => obj.prop_map(|(cmd, fields, dup)| {
                let mut parts = vec![format!("\"cmd\":{}", serde_json::Value::String(cmd.into()))];
                parts.extend(fields.iter().map(|(k, v)| format!("{k:?}:{v}")));
                if dup {
                    parts.push(format!("\"cmd\":{:?}", cmd));
                }
                format!("{{{}}}", parts.join(","))
            }),
            1 => any::<String>(),
            1 => (any::<String>(), any::<prop::sample::Index>()).prop_map(|(s, i)| {
                let line = format!("{{\"v\":1,\"cmd\":\"show\",\"target\":{}}}", serde_json::Value::String(s));
                let cut = i.index(line.len() + 1);
                line[..(0..=cut).rev().find(|&c| line.is_char_boundary(c)).unwrap_or(0)].to_string()
            }),
        ]
    }

    proptest! {
        #[test]
        fn fuzz_control_request_decoder(line in request_line()) {
            match parse(&line) {
                Ok(req) => {
                    let v: serde_json::Value = serde_json::from_str(&line).expect("accepted lines are JSON");
                    let cmd = v["cmd"].as_str().unwrap_or_default();
                    let name = format!("{req:?}").to_lowercase().replace('_', "");
                    prop_assert!(name.starts_with(&cmd.replace('_', "")), "{cmd} decoded as {req:?}");
                }
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }
    }

    #[test]
    fn parses_requests_and_rejects_garbage() {
        assert_eq!(parse(r#"{"v":1,"cmd":"ls"}"#), Ok(Request::Ls));
        assert_eq!(parse(r#"{"cmd":"stop","target":"web"}"#), Ok(Request::Stop { target: "web".into() }));
        assert_eq!(parse(r#"{"cmd":"scale","name":"web","count":"+2"}"#), Ok(Request::Scale { name: "web".into(), count: "+2".into() }));
        let e = parse(r#"{"cmd":"stop","target":"web","target":"all"}"#).unwrap_err();
        assert_eq!(e.to_string(), "malformed request: duplicate key \"target\" at line 1 column 44");
        assert_eq!(parse(r#"{"v":9,"cmd":"ls"}"#), Err(RequestError::Version(9)));
        assert_eq!(
            parse(r#"{"v":9,"cmd":"ls"}"#).unwrap_err().to_string(),
            format!("unsupported protocol version 9 (this runtime speaks {VERSION})")
        );
        assert!(matches!(parse(r#"{"cmd":"explode"}"#), Err(RequestError::Invalid(_))));
        assert!(matches!(parse("[1,2]"), Err(RequestError::Malformed(_) | RequestError::Invalid(_))));
        for bad in ["", "garbage", "{}", r#"{"cmd":"explode"}"#, r#"{"cmd":"stop"}"#, r#"{"v":9,"cmd":"ls"}"#, "[1,2]"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_request_round_trips_and_keeps_its_wire_form() {
        let t = || "web".to_string();
        let all = vec![
            Request::Ping,
            Request::Ls,
            Request::Show { target: t() },
            Request::Start { target: t() },
            Request::Stop { target: t() },
            Request::Restart { target: t() },
            Request::Reload { target: t() },
            Request::Delete { target: t() },
            Request::Reset { target: t() },
            Request::Scale { name: t(), count: "+2".into() },
            Request::Send { target: t(), message: serde_json::json!({"topic": "x"}) },
            Request::Signal { signal: "SIGUSR2".into(), target: t() },
            Request::Logs { target: Some(t()), lines: 20, after: Some(7) },
            Request::Logs { target: None, lines: 0, after: None },
            Request::Flush { target: None },
            Request::ReloadLogs,
            Request::Kill,
            Request::Apply {
                action: "startOrRestart".into(),
                ecosystem: crate::config::Ecosystem { file: None, apps: vec![], warnings: vec![], notes: vec![] },
            },
        ];
        for req in all {
            let line = encode(&req);
            assert_eq!(parse(&line), Ok(req.clone()), "{line}");
        }
        // The documented forms (README, socat examples) are what the client sends.
        assert_eq!(encode(&Request::Ls), r#"{"cmd":"ls","v":1}"#);
        assert_eq!(encode(&Request::Stop { target: t() }), r#"{"cmd":"stop","target":"web","v":1}"#);
        assert_eq!(encode(&Request::Logs { target: None, lines: 5, after: None }), r#"{"cmd":"logs","lines":5,"v":1}"#);
    }

    #[test]
    fn replies_round_trip_and_keep_their_wire_form() {
        let replies = vec![
            Reply::ok(),
            Reply::error("no app named \"x\""),
            Reply { ids: Some(vec![0, 1]), ..Reply::ok() },
            Reply { healthy: Some(false), problems: Some(vec!["a:0 is errored".into()]), ..Reply::ok() },
            Reply { added: Some(vec![4]), instances: Some(5), ..Reply::ok() },
            Reply {
                lines: Some(vec![LogLine { seq: 3, pm_id: 0, app_name: "a".into(), kind: "out".into(), message: "hi".into() }]),
                ..Reply::ok()
            },
            Reply { processes: Some(vec![serde_json::json!({"pm_id": 0})]), ..Reply::ok() },
        ];
        for r in replies {
            let line = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<Reply>(&line).unwrap(), r, "{line}");
        }
        assert_eq!(serde_json::to_string(&Reply::error("x")).unwrap(), r#"{"ok":false,"error":"x"}"#);
        assert_eq!(serde_json::to_string(&Reply { ids: Some(vec![2]), ..Reply::ok() }).unwrap(), r#"{"ok":true,"ids":[2]}"#);
        let l = LogLine { seq: 1, pm_id: 2, app_name: "a".into(), kind: "err".into(), message: "m".into() };
        assert_eq!(serde_json::to_string(&l).unwrap(), r#"{"seq":1,"pm_id":2,"app_name":"a","type":"err","message":"m"}"#);
    }
}
