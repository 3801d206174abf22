//! What goes up the websocket: every frame is `{"channel": …, "payload": …}`.
//!
//! Pure functions from the status table and bus events to packets, so their shape is tested
//! without a network. Only whitelisted fields are sent: an app's environment never is (of it,
//! only `NODE_ENV`, as `node_env`).

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::config::ExecMode;
use crate::supervisor::status::Status;
use crate::supervisor::status::{InstanceStatus, StatusTable};

/// One frame, serialised.
pub fn frame(channel: &str, payload: &impl Serialize) -> String {
    json!({ "channel": channel, "payload": payload }).to_string()
}

pub fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// The `status` payload.
#[derive(Debug, Serialize)]
pub struct StatusPayload {
    pub server_name: String,
    pub internal_ip: String,
    pub data: StatusData,
}

#[derive(Debug, Serialize)]
pub struct StatusData {
    pub process: Vec<ProcessEntry>,
    pub server: ServerBlock,
}

/// One instance, with the fields (names and types) the official agent sends.
#[derive(Debug, Serialize)]
pub struct ProcessEntry {
    pub pid: u32,
    pub name: String,
    pub interpreter: String,
    pub args: Vec<String>,
    pub path: String,
    pub restart_time: u32,
    pub created_at: u64,
    pub exec_mode: &'static str,
    pub pm_uptime: u64,
    pub status: &'static str,
    pub pm_id: u32,
    pub unique_id: String,
    /// Percent of one core, floored.
    pub cpu: u64,
    /// Resident memory of the process tree, bytes.
    pub memory: u64,
    pub versioning: Option<Value>,
    pub node_env: Option<String>,
    pub axm_actions: Vec<Value>,
    pub axm_monitor: Map<String, Value>,
    pub axm_options: Map<String, Value>,
    pub axm_dynamic: Map<String, Value>,
}

/// The `data.server` block: the host.
#[derive(Debug, Clone, Serialize)]
pub struct ServerBlock {
    pub username: String,
    pub hostname: String,
    /// OS uptime, seconds.
    pub uptime: u64,
    pub platform: &'static str,
    #[serde(rename = "type")]
    pub os_type: &'static str,
    pub arch: &'static str,
    pub pm2_version: String,
    pub pm2_agent_version: String,
    pub node_version: String,
    /// Made once per runtime start.
    pub unique_id: String,
    pub loadavg: [f64; 3],
    /// Bytes.
    pub total_mem: u64,
    pub free_mem: u64,
    pub cpu: CpuInfo,
}

#[derive(Debug, Clone, Serialize)]
pub struct CpuInfo {
    pub number: usize,
    pub info: String,
}

/// One process entry from a table row. `runtime_node_env`: the runtime's own `NODE_ENV`, which
/// the apps inherit unless their `env` sets one.
pub fn process_entry(row: &InstanceStatus, runtime_node_env: Option<&str>) -> ProcessEntry {
    let app = &row.app;
    let running = row.pid().is_some();
    ProcessEntry {
        pid: row.pid().unwrap_or(0),
        name: app.name.clone(),
        interpreter: app.command.interpreter.clone(),
        args: app.interpreter_args.clone(),
        path: app.exec_path.to_string_lossy().into_owned(),
        restart_time: row.restart_time(),
        created_at: ms(row.created_at),
        exec_mode: if app.exec_mode == ExecMode::Cluster { "cluster_mode" } else { "fork_mode" },
        pm_uptime: ms(row.started_at().unwrap_or(row.created_at)),
        status: row.status_str(),
        pm_id: row.pm_id,
        unique_id: row.unique_id.clone(),
        cpu: if running { row.sample.cpu_percent.max(0.0).floor() as u64 } else { 0 },
        memory: if running { row.sample.memory_bytes } else { 0 },
        versioning: None,
        node_env: app.env.get("NODE_ENV").map(String::as_str).or(runtime_node_env).map(str::to_string),
        axm_actions: (*row.axm_actions).clone(),
        axm_monitor: (*row.axm_monitor).clone(),
        axm_options: Map::new(),
        axm_dynamic: Map::new(),
    }
}

/// The whole `status` payload. Instances named `*_old_*` are left out, as PM2 does.
pub fn status(
    table: &StatusTable,
    server_name: &str,
    internal_ip: &str,
    server: ServerBlock,
    runtime_node_env: Option<&str>,
) -> StatusPayload {
    StatusPayload {
        server_name: server_name.to_string(),
        internal_ip: internal_ip.to_string(),
        data: StatusData {
            process: table.instances.iter().filter(|r| !r.app.name.contains("_old_")).map(|r| process_entry(r, runtime_node_env)).collect(),
            server,
        },
    }
}

/// `{pm_id, name, rev, server}`: how a process is named in event packets (never its env).
pub fn process_ref(pm_id: u32, name: &str, server_name: &str) -> Value {
    json!({ "pm_id": pm_id, "name": name, "rev": null, "server": server_name })
}

/// The `process:event` name for a status change, given the previous status of the same
/// instance (`None`: first report). `None` when the change is not an event PM2 would emit.
pub fn lifecycle_event(prev: Option<Status>, new: Status) -> Option<&'static str> {
    let was_running = matches!(prev, Some(Status::Online | Status::Stopping | Status::Launching));
    match new {
        Status::Online => Some("online"),
        Status::Stopping => Some("stop"),
        Status::Stopped | Status::Errored | Status::WaitingRestart if was_running => Some("exit"),
        Status::Launching if matches!(prev, Some(Status::Online | Status::Stopping)) => Some("exit"),
        Status::Launching if prev.is_none() => Some("start"),
        Status::Launching => Some("restart"),
        _ => None,
    }
}

/// A `process:event` payload. An `exit` says why the process ended (`exit_reason`, the death
/// certificate's reason: pm-runtime's own field).
pub fn process_event(event: &str, manually: bool, pm_id: u32, name: &str, server_name: &str, at: SystemTime, why: Option<&str>) -> Value {
    let mut v = json!({ "at": ms(at), "event": event, "manually": manually, "process": process_ref(pm_id, name, server_name) });
    if event == "exit"
        && let Some(why) = why
    {
        v["exit_reason"] = why.into();
    }
    v
}

/// An app's own IPC message (`{type, data}`) → `(channel, payload)`, for the channels the
/// official agent forwards. Metrics and action lists travel in `status` instead; any other
/// message stays on the machine. `last_logs`: the app's latest lines, for exceptions.
pub fn app_message(
    message: &Value,
    pm_id: u32,
    name: &str,
    server_name: &str,
    at: SystemTime,
    last_logs: impl FnOnce() -> Vec<String>,
) -> Option<(String, Value)> {
    let kind = message.get("type")?.as_str()?;
    let data = message.get("data").cloned().unwrap_or(Value::Null);
    let process = process_ref(pm_id, name, server_name);
    let at = ms(at);
    match kind {
        "axm:reply" | "axm:scoped_action:stream" | "axm:scoped_action:end" | "axm:scoped_action:error" => {
            Some((kind.to_string(), json!({ "at": at, "data": data, "process": process })))
        }
        "human:event" => {
            let mut data = data;
            let event_name = data.as_object_mut().and_then(|d| d.remove("__name")).unwrap_or(Value::Null);
            Some((kind.to_string(), json!({ "at": at, "name": event_name, "data": data, "process": process })))
        }
        "process:exception" => {
            let mut data = if data.is_object() { data } else { json!({ "message": data }) };
            data["last_logs"] = json!(last_logs());
            Some((kind.to_string(), json!({ "at": at, "data": data, "process": process })))
        }
        _ => None,
    }
}

/// A `logs` payload: one app line.
pub fn log_line(line: &str, err: bool, pm_id: u32, name: &str, server_name: &str, at: SystemTime) -> Value {
    json!({ "at": ms(at), "data": line, "log_type": if err { "err" } else { "out" }, "process": process_ref(pm_id, name, server_name) })
}

/// Total and available memory, bytes (`/proc/meminfo`).
pub fn meminfo() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

/// Facts about the host that do not change while we run.
#[derive(Debug, Clone)]
pub struct HostFacts {
    pub username: String,
    pub hostname: String,
    pub pm2_version: String,
    pub unique_id: String,
    pub cpus: usize,
    pub cpu_model: String,
}

impl HostFacts {
    pub fn here(pm2_version: &str) -> HostFacts {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(String::new, |(_, m)| m.trim().to_string());
        HostFacts {
            username: username(),
            hostname: super::hostname(),
            pm2_version: pm2_version.to_string(),
            unique_id: crate::ids::uuid_v4(),
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            cpu_model,
        }
    }

    /// The server block, with the numbers read now.
    pub fn server_block(&self) -> ServerBlock {
        let uptime = std::fs::read_to_string("/proc/uptime")
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|u| u.parse::<f64>().ok()))
            .unwrap_or(0.0) as u64;
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let mut l = load.split_whitespace().map(|x| x.parse::<f64>().unwrap_or(0.0));
        let (total_mem, free_mem) = meminfo();
        ServerBlock {
            username: self.username.clone(),
            hostname: self.hostname.clone(),
            uptime,
            platform: "linux",
            os_type: "Linux",
            arch: node_arch(),
            pm2_version: self.pm2_version.clone(),
            pm2_agent_version: format!("pm-runtime {}", env!("CARGO_PKG_VERSION")),
            node_version: "none".to_string(),
            unique_id: self.unique_id.clone(),
            loadavg: [l.next().unwrap_or(0.0), l.next().unwrap_or(0.0), l.next().unwrap_or(0.0)],
            total_mem,
            free_mem,
            cpu: CpuInfo { number: self.cpus, info: self.cpu_model.clone() },
        }
    }
}

/// The architecture as Node's `os.arch()` names it.
fn node_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x64",
        "aarch64" => "arm64",
        "x86" => "ia32",
        "arm" => "arm",
        other => other,
    }
}

fn username() -> String {
    let uid = nix::unistd::getuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| uid.to_string())
}

/// The last non-loopback IPv4 address of the host, else `127.0.0.1` (as the official agent).
pub fn internal_ip() -> String {
    let mut ip = None;
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            if let Some(v4) = a.address.as_ref().and_then(|s| s.as_sockaddr_in()) {
                let addr = v4.ip();
                if !addr.is_loopback() {
                    ip = Some(addr.to_string());
                }
            }
        }
    }
    ip.unwrap_or_else(|| "127.0.0.1".to_string())
}

/// Per-instance last status, to turn status reports into lifecycle events.
#[derive(Debug, Default)]
pub struct Lifecycle(HashMap<u32, Status>);

impl Lifecycle {
    pub fn next(&mut self, pm_id: u32, status: Status) -> Option<&'static str> {
        let prev = self.0.insert(pm_id, status);
        lifecycle_event(prev, status)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::supervisor::status::{Report, Sample, Update};

    fn row(pm_id: u32, name: &str, pid: Option<u32>, env: &[(&str, &str)]) -> InstanceStatus {
        let mut app = crate::config::from_script("/bin/sleep", &Default::default()).expect("app").apps.remove(0);
        app.name = name.to_string();
        app.exec_path = PathBuf::from("/srv/app.js");
        app.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut monitor = Map::new();
        monitor.insert("Queue".into(), json!({"value": 3, "unit": "jobs"}));
        InstanceStatus {
            pm_id,
            app: Arc::new(app),
            instance: 0,
            unique_id: "u-1".into(),
            last: Some(Update {
                pm_id,
                since: pid.map(|_| t0 + Duration::from_secs(5)),
                version: None,
                death: None,
                report: Report { pid, restart_time: 2, ..Report::of(if pid.is_some() { Status::Online } else { Status::Stopped }) },
            }),
            restarts: Default::default(),
            created_at: t0,
            sample: Sample { memory_bytes: 73_400_320, cpu_percent: 12.7, cpu_seconds: 1.0 },
            axm_monitor: Arc::new(monitor),
            axm_actions: Arc::new(vec![json!({"action_name": "flush"})]),
            event_loop_lag: None,
        }
    }

    fn server() -> ServerBlock {
        HostFacts::here("6.0.14").server_block()
    }

    #[test]
    fn status_has_the_agents_fields_and_never_the_env() {
        let table = StatusTable {
            instances: vec![
                row(0, "api", Some(41), &[("NODE_ENV", "production"), ("DB_PASSWORD", "hunter2")]),
                row(1, "api_old_1", Some(42), &[]),
                row(2, "worker", None, &[]),
            ],
            ..Default::default()
        };
        let v = serde_json::to_value(status(&table, "box", "10.0.0.2", server(), Some("staging"))).unwrap();
        assert_eq!(v["server_name"], "box");
        assert_eq!(v["internal_ip"], "10.0.0.2");
        let procs = v["data"]["process"].as_array().unwrap();
        assert_eq!(procs.len(), 2, "_old_ entries are left out");
        let p = &procs[0];
        for key in [
            "pid",
            "name",
            "interpreter",
            "args",
            "path",
            "restart_time",
            "created_at",
            "exec_mode",
            "pm_uptime",
            "status",
            "pm_id",
            "unique_id",
            "cpu",
            "memory",
            "versioning",
            "node_env",
            "axm_actions",
            "axm_monitor",
            "axm_options",
            "axm_dynamic",
        ] {
            assert!(p.get(key).is_some(), "missing {key}");
        }
        assert_eq!(p["pid"], 41);
        assert_eq!(p["cpu"], 12);
        assert_eq!(p["memory"], 73_400_320u64);
        assert_eq!(p["status"], "online");
        assert_eq!(p["exec_mode"], "fork_mode");
        assert_eq!(p["created_at"], 1_700_000_000_000u64);
        assert_eq!(p["pm_uptime"], 1_700_000_005_000u64);
        assert_eq!(p["node_env"], "production");
        assert_eq!(p["axm_monitor"]["Queue"]["value"], 3);
        assert_eq!(p["axm_actions"][0]["action_name"], "flush");
        let stopped = &procs[1];
        assert_eq!((stopped["pid"].as_u64(), stopped["cpu"].as_u64(), stopped["memory"].as_u64()), (Some(0), Some(0), Some(0)));
        assert_eq!(stopped["node_env"], "staging", "the runtime's NODE_ENV is inherited");
        let text = v.to_string();
        assert!(!text.contains("hunter2") && !text.contains("DB_PASSWORD") && !text.contains("\"env\""), "{text}");
        let s = &v["data"]["server"];
        for key in ["username", "hostname", "uptime", "platform", "pm2_version", "pm2_agent_version", "node_version", "unique_id"] {
            assert!(s.get(key).is_some(), "server block misses {key}");
        }
        assert_eq!(s["platform"], "linux");
        assert!(s["total_mem"].as_u64().unwrap() > 0);
    }

    #[test]
    fn lifecycle_events() {
        use Status::*;
        let cases = [
            (None, Launching, Some("start")),
            (Some(Launching), Online, Some("online")),
            (Some(Online), Stopping, Some("stop")),
            (Some(Stopping), Stopped, Some("exit")),
            (Some(Online), WaitingRestart, Some("exit")),
            (Some(WaitingRestart), Launching, Some("restart")),
            (Some(Online), Launching, Some("exit")),
            (Some(Online), Errored, Some("exit")),
            (Some(WaitingRestart), Errored, None),
            (Some(Stopped), Stopped, None),
            (Some(Stopped), Launching, Some("restart")),
        ];
        for (prev, new, want) in cases {
            assert_eq!(lifecycle_event(prev, new), want, "{prev:?} → {new:?}");
        }
    }

    #[test]
    fn an_exit_event_says_why() {
        let at = UNIX_EPOCH + Duration::from_secs(1);
        let e = process_event("exit", false, 3, "api", "host", at, Some("oom_killed"));
        assert_eq!(e["exit_reason"], "oom_killed");
        assert_eq!(e["process"]["name"], "api");
        assert!(process_event("online", false, 3, "api", "host", at, Some("oom_killed")).get("exit_reason").is_none());
        assert!(process_event("exit", true, 3, "api", "host", at, None).get("exit_reason").is_none());
    }

    #[test]
    fn app_messages_forwarded_as_the_agent_does() {
        let at = UNIX_EPOCH + Duration::from_secs(1);
        let no_logs = || -> Vec<String> { panic!("only exceptions read logs") };
        let (ch, p) =
            app_message(&json!({"type":"axm:reply","data":{"action_name":"flush","return":{"ok":1}}}), 3, "api", "box", at, no_logs)
                .unwrap();
        assert_eq!(ch, "axm:reply");
        assert_eq!(p["data"]["return"]["ok"], 1);
        assert_eq!(p["process"], json!({"pm_id":3,"name":"api","rev":null,"server":"box"}));
        let (ch, p) = app_message(&json!({"type":"human:event","data":{"__name":"deploy","v":2}}), 3, "api", "box", at, no_logs).unwrap();
        assert_eq!((ch.as_str(), &p["name"], &p["data"]), ("human:event", &json!("deploy"), &json!({"v":2})));
        let (ch, p) =
            app_message(&json!({"type":"process:exception","data":{"message":"boom"}}), 3, "api", "box", at, || vec!["l1".into()]).unwrap();
        assert_eq!((ch.as_str(), &p["data"]["message"], &p["data"]["last_logs"]), ("process:exception", &json!("boom"), &json!(["l1"])));
        assert!(app_message(&json!({"type":"axm:monitor","data":{}}), 3, "api", "box", at, no_logs).is_none());
        assert!(app_message(&json!({"type":"my-own","data":{"secret":1}}), 3, "api", "box", at, no_logs).is_none());
        assert!(app_message(&json!("ready"), 3, "api", "box", at, no_logs).is_none());
        let f = frame("logs", &log_line("hello", true, 1, "api", "box", at));
        let v: Value = serde_json::from_str(&f).unwrap();
        assert_eq!((&v["channel"], &v["payload"]["data"], &v["payload"]["log_type"]), (&json!("logs"), &json!("hello"), &json!("err")));
    }
}
