//! The dashboard's orders: what an incoming frame asks, as a plan (pure, table-tested), and
//! the replies the dashboard expects.
//!
//! `trigger:pm2:action` follows PM2's allow-list (restart, reload, reset, scale, ping,
//! startLogging, stopLogging; two deprecated names answer so; anything else is "not allowed").
//! `trigger:action` / `trigger:scoped_action` are custom actions of an `@pm2/io` app: the
//! order goes to the app over its Node IPC channel as `{msg, action_name, opts, uuid?}` (what
//! `@pm2/io` listens for), and the app's own answer comes back later as `axm:reply`.

use serde_json::{Value, json};

use crate::control::protocol::Request;

/// A frame from the dashboard, understood.
#[derive(Debug, Clone, PartialEq)]
pub enum Order {
    Pm2 {
        method: String,
        app_name: Option<String>,
        plan: Pm2Plan,
    },
    Custom(CustomAction),
    /// Not for us (unknown channel, malformed frame): dropped.
    Ignore,
}

/// What a `trigger:pm2:action` does.
#[derive(Debug, Clone, PartialEq)]
pub enum Pm2Plan {
    /// A control request, answered by the coordinator.
    Control(Request),
    Ping,
    StartLogging,
    StopLogging,
    /// Answered at once with this error.
    Refuse(String),
}

/// A custom action for one process.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomAction {
    pub action_name: String,
    pub pm_id: u32,
    pub opts: Value,
    /// Scoped actions carry a uuid the app's stream packets refer to.
    pub uuid: Option<String>,
}

impl CustomAction {
    /// The IPC message `@pm2/io` listens for.
    pub fn ipc_message(&self) -> Value {
        let mut m = json!({ "msg": self.action_name, "action_name": self.action_name, "opts": self.opts });
        if let Some(u) = &self.uuid {
            m["uuid"] = json!(u);
        }
        m
    }
}

/// Reads one incoming frame.
pub fn parse(text: &str) -> Order {
    let Ok(Value::Object(frame)) = serde_json::from_str::<Value>(text) else { return Order::Ignore };
    let (Some(Value::String(channel)), Some(payload)) = (frame.get("channel"), frame.get("payload")) else { return Order::Ignore };
    match channel.as_str() {
        "trigger:pm2:action" => {
            let method = payload.get("method_name").and_then(Value::as_str).unwrap_or("").to_string();
            let params = payload.get("parameters").cloned().unwrap_or(Value::Null);
            let app_name = text_of(params.get("name"));
            let plan = pm2_plan(&method, &params);
            Order::Pm2 { method, app_name, plan }
        }
        "trigger:action" | "trigger:scoped_action" => {
            let Some(action_name) = payload.get("action_name").and_then(Value::as_str).map(str::to_string) else { return Order::Ignore };
            let id = payload.get("process_id").or_else(|| payload.get("process").and_then(|p| p.get("pm_id")));
            let Some(pm_id) = id.and_then(|v| v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))) else { return Order::Ignore };
            Order::Custom(CustomAction {
                action_name,
                pm_id: pm_id as u32,
                opts: payload.get("opts").filter(|o| !o.is_null()).cloned().unwrap_or_else(|| json!({})),
                uuid: payload.get("uuid").and_then(Value::as_str).map(str::to_string),
            })
        }
        _ => Order::Ignore,
    }
}

/// A string or a number as text (`name` / `id` / `number` come either way).
fn text_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// PM2's allow-list for `trigger:pm2:action`.
pub fn pm2_plan(method: &str, params: &Value) -> Pm2Plan {
    let target = || text_of(params.get("name")).or_else(|| text_of(params.get("id")));
    let need_target = |make: fn(String) -> Request| match target() {
        Some(t) => Pm2Plan::Control(make(t)),
        None => Pm2Plan::Refuse(format!("{method} needs a process name or id")),
    };
    match method {
        "restart" => need_target(|target| Request::Restart { target }),
        "reload" => need_target(|target| Request::Reload { target }),
        "reset" => need_target(|target| Request::Reset { target }),
        "scale" => match (text_of(params.get("name")), text_of(params.get("number"))) {
            (Some(name), Some(count)) => Pm2Plan::Control(Request::Scale { name, count }),
            _ => Pm2Plan::Refuse("scale needs a process name and a number".into()),
        },
        "ping" => Pm2Plan::Ping,
        "startLogging" => Pm2Plan::StartLogging,
        "stopLogging" => Pm2Plan::StopLogging,
        "launchSysMonitoring" | "deepUpdate" => Pm2Plan::Refuse("Deprecated or invalid method".into()),
        _ => Pm2Plan::Refuse("Method not allowed".into()),
    }
}

/// The `trigger:pm2:result` payload. The error's text is the message PM2 Plus shows for the
/// action: it becomes that string here.
pub fn pm2_result(
    method: &str,
    app_name: Option<&str>,
    result: Result<Value, impl std::fmt::Display>,
    machine_name: &str,
    public_key: &str,
) -> Value {
    let (err, data) = match result {
        Ok(d) => (Value::Null, d),
        Err(e) => (json!(e.to_string()), Value::Null),
    };
    json!({
        "ret": { "err": err, "data": data },
        "meta": { "method_name": method, "app_name": app_name, "machine_name": machine_name, "public_key": public_key }
    })
}

/// Why the runtime did not do what a control request asked.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// `{"ok":false}`, with the runtime's own `error` text when it gave one.
    #[error("{}", .0.as_deref().unwrap_or("failed"))]
    Failed(Option<String>),
    /// The reply was not a JSON object.
    #[error("no answer")]
    NoAnswer,
}

/// A control reply (`{"ok":true,…}` / `{"ok":false,"error":…}`) as a result.
pub fn control_result(reply: Value) -> Result<Value, ControlError> {
    match reply {
        Value::Object(mut m) => {
            if m.remove("ok") == Some(Value::Bool(true)) {
                Ok(Value::Object(m))
            } else {
                Err(ControlError::Failed(m.get("error").and_then(Value::as_str).map(str::to_string)))
            }
        }
        _ => Err(ControlError::NoAnswer),
    }
}

/// The `trigger:action:success` / `:failure` `(channel, payload)`; the error becomes the
/// payload's `err` text here.
pub fn custom_result(action: &CustomAction, result: Result<(), impl std::fmt::Display>) -> (&'static str, Value) {
    match result {
        Ok(()) => ("trigger:action:success", json!({ "success": true, "id": action.pm_id, "action_name": action.action_name })),
        Err(e) => (
            "trigger:action:failure",
            json!({ "success": false, "err": e.to_string(), "id": action.pm_id, "action_name": action.action_name }),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pm2(method: &str, params: Value) -> Pm2Plan {
        match parse(&json!({"channel":"trigger:pm2:action","payload":{"method_name":method,"parameters":params}}).to_string()) {
            Order::Pm2 { plan, .. } => plan,
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn pm2_allow_list() {
        assert_eq!(pm2("restart", json!({"name":"api"})), Pm2Plan::Control(Request::Restart { target: "api".into() }));
        assert_eq!(pm2("reload", json!({"id":3})), Pm2Plan::Control(Request::Reload { target: "3".into() }));
        assert_eq!(pm2("reset", json!({"name":"api"})), Pm2Plan::Control(Request::Reset { target: "api".into() }));
        assert_eq!(
            pm2("scale", json!({"name":"api","number":4})),
            Pm2Plan::Control(Request::Scale { name: "api".into(), count: "4".into() })
        );
        assert_eq!(
            pm2("scale", json!({"name":"api","number":"+1"})),
            Pm2Plan::Control(Request::Scale { name: "api".into(), count: "+1".into() })
        );
        assert_eq!(pm2("ping", json!({})), Pm2Plan::Ping);
        assert_eq!(pm2("startLogging", json!({})), Pm2Plan::StartLogging);
        assert_eq!(pm2("stopLogging", json!({})), Pm2Plan::StopLogging);
        assert_eq!(pm2("deepUpdate", json!({})), Pm2Plan::Refuse("Deprecated or invalid method".into()));
        for bad in ["eval", "delete", "stop", "kill", "install", ""] {
            assert_eq!(pm2(bad, json!({"name":"api"})), Pm2Plan::Refuse("Method not allowed".into()), "{bad}");
        }
        assert!(matches!(pm2("restart", json!({})), Pm2Plan::Refuse(_)));
        assert!(matches!(pm2("scale", json!({"name":"api"})), Pm2Plan::Refuse(_)));
    }

    #[test]
    fn custom_actions_and_garbage() {
        let o = parse(r#"{"channel":"trigger:action","payload":{"action_name":"flush","process_id":2,"opts":{"n":1}}}"#);
        let Order::Custom(a) = o else { panic!("{o:?}") };
        assert_eq!((a.pm_id, a.action_name.as_str()), (2, "flush"));
        assert_eq!(a.ipc_message(), json!({"msg":"flush","action_name":"flush","opts":{"n":1}}));
        let o = parse(r#"{"channel":"trigger:scoped_action","payload":{"action_name":"s","process":{"pm_id":"5"},"uuid":"u1"}}"#);
        let Order::Custom(a) = o else { panic!("{o:?}") };
        assert_eq!(a.ipc_message(), json!({"msg":"s","action_name":"s","opts":{},"uuid":"u1"}));
        for junk in [
            "",
            "nope",
            "[]",
            r#"{"channel":"x","payload":{}}"#,
            r#"{"channel":"trigger:action","payload":{"action_name":"a"}}"#,
            r#"{"payload":{}}"#,
        ] {
            assert_eq!(parse(junk), Order::Ignore, "{junk}");
        }
    }

    #[test]
    fn replies() {
        let ok = pm2_result("restart", Some("api"), control_result(json!({"ok":true,"ids":[0]})), "box", "pub");
        assert_eq!(
            ok,
            json!({"ret":{"err":null,"data":{"ids":[0]}},"meta":{"method_name":"restart","app_name":"api","machine_name":"box","public_key":"pub"}})
        );
        let err = pm2_result("restart", Some("x"), control_result(json!({"ok":false,"error":"no process"})), "box", "pub");
        assert_eq!(err["ret"]["err"], "no process");
        assert_eq!(control_result(json!({"ok":false})).unwrap_err().to_string(), "failed");
        assert_eq!(control_result(json!("ok")), Err(ControlError::NoAnswer));
        assert_eq!(ControlError::NoAnswer.to_string(), "no answer");
        let a = CustomAction { action_name: "f".into(), pm_id: 1, opts: json!({}), uuid: None };
        assert_eq!(custom_result(&a, Ok::<(), ControlError>(())).0, "trigger:action:success");
        let (ch, p) = custom_result(&a, Err("gone"));
        assert_eq!((ch, &p["err"], &p["success"]), ("trigger:action:failure", &json!("gone"), &json!(false)));
    }
}
