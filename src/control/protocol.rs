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

use serde::Deserialize;

pub const VERSION: u32 = 1;
/// Longest request line accepted (an `apply` carries a whole ecosystem).
pub const MAX_REQUEST: usize = 1024 * 1024;
/// The socket's file name inside `$PM2_HOME`.
pub const SOCKET_NAME: &str = "pm-runtime.sock";

#[derive(Debug, Clone, PartialEq, Deserialize)]
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
        target: Option<String>,
        lines: usize,
        after: Option<u64>,
    },
    Flush {
        target: Option<String>,
    },
    ReloadLogs,
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

/// Parses one request line; the error text is what the client gets back.
pub fn parse(line: &str) -> Result<Request, String> {
    let value = crate::config::strict_json::from_str(line).map_err(|e| format!("malformed request: {e}"))?;
    let env: Envelope = serde_json::from_value(value).map_err(|e| format!("malformed request: {e}"))?;
    if let Some(v) = env.v
        && v != VERSION
    {
        return Err(format!("unsupported protocol version {v} (this runtime speaks {VERSION})"));
    }
    serde_json::from_value(serde_json::Value::Object(env.rest)).map_err(|e| format!("invalid request: {e}"))
}

pub fn error(msg: impl Into<String>) -> serde_json::Value {
    serde_json::json!({ "ok": false, "error": msg.into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests_and_rejects_garbage() {
        assert_eq!(parse(r#"{"v":1,"cmd":"ls"}"#), Ok(Request::Ls));
        assert_eq!(parse(r#"{"cmd":"stop","target":"web"}"#), Ok(Request::Stop { target: "web".into() }));
        assert_eq!(parse(r#"{"cmd":"scale","name":"web","count":"+2"}"#), Ok(Request::Scale { name: "web".into(), count: "+2".into() }));
        let e = parse(r#"{"cmd":"stop","target":"web","target":"all"}"#).unwrap_err();
        assert_eq!(e, "malformed request: duplicate key \"target\" at line 1 column 44");
        for bad in ["", "garbage", "{}", r#"{"cmd":"explode"}"#, r#"{"cmd":"stop"}"#, r#"{"v":9,"cmd":"ls"}"#, "[1,2]"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
