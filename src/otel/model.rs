//! What the OTLP exporter sends, as plain data: resources with their metrics, and log records.
//! Built from the status table and app lines by pure functions; [`super::encode`] turns it into
//! OTLP's protobuf or JSON.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::supervisor::status::Status;
use crate::supervisor::status::{InstanceStatus, RestartReason, StatusTable};

/// An attribute value (the subset of OTLP's `AnyValue` we send).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
}

pub type Attributes = Vec<(String, Value)>;

/// One number at one time.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub attributes: Attributes,
    /// For cumulative sums: since when the count runs.
    pub start_nanos: Option<u64>,
    pub nanos: u64,
    pub value: Number,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    Int(i64),
    Double(f64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    /// A cumulative, monotonic sum (a counter).
    Counter,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub name: &'static str,
    pub description: &'static str,
    pub unit: &'static str,
    pub kind: Kind,
    pub points: Vec<Point>,
}

/// Metrics of one resource (an app instance, or the runtime itself).
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceMetrics {
    pub resource: Attributes,
    pub metrics: Vec<Metric>,
}

/// OTLP severity numbers (logs data model): the first of each range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Trace = 1,
    Debug = 5,
    Info = 9,
    Warn = 13,
    Error = 17,
    Fatal = 21,
}

impl Severity {
    pub fn text(self) -> &'static str {
        match self {
            Severity::Trace => "TRACE",
            Severity::Debug => "DEBUG",
            Severity::Info => "INFO",
            Severity::Warn => "WARN",
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

/// One app line.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    pub nanos: u64,
    pub severity: Severity,
    pub body: String,
    pub attributes: Attributes,
}

/// Log records of one resource.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceLogs {
    pub resource: Attributes,
    pub records: Vec<LogRecord>,
}

pub fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64
}

fn s(k: &str, v: impl Into<String>) -> (String, Value) {
    (k.to_string(), Value::Str(v.into()))
}

/// Facts about where the runtime runs, the same for every resource.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Host {
    pub host_name: String,
    pub container_id: Option<String>,
    pub pod_name: Option<String>,
    pub namespace: Option<String>,
    /// `OTEL_RESOURCE_ATTRIBUTES`, parsed (they apply to every resource; ours win on a clash).
    pub extra: Attributes,
    /// `OTEL_SERVICE_NAME` (the runtime's own resource), else `pm-runtime`.
    pub service_name: String,
}

impl Host {
    fn common(&self, attrs: &mut Attributes) {
        attrs.push(s("host.name", self.host_name.clone()));
        if let Some(id) = &self.container_id {
            attrs.push(s("container.id", id.clone()));
        }
        if let Some(p) = &self.pod_name {
            attrs.push(s("k8s.pod.name", p.clone()));
        }
        if let Some(n) = &self.namespace {
            attrs.push(s("k8s.namespace.name", n.clone()));
        }
        for (k, v) in &self.extra {
            if !attrs.iter().any(|(have, _)| have == k) {
                attrs.push((k.clone(), v.clone()));
            }
        }
    }
}

/// The resource of one app instance: `service.name` is the app, `service.instance.id` is `app-N`.
pub fn instance_resource(host: &Host, i: &InstanceStatus) -> Attributes {
    let mut attrs = vec![
        s("service.name", i.app.name.clone()),
        s("service.instance.id", format!("{}-{}", i.app.name, i.instance)),
        s("service.namespace", i.app.namespace.clone()),
    ];
    if let Some(pid) = i.pid() {
        attrs.push(("process.pid".into(), Value::Int(i64::from(pid))));
    }
    host.common(&mut attrs);
    attrs
}

/// The runtime's own resource.
pub fn runtime_resource(host: &Host) -> Attributes {
    let mut attrs = vec![
        s("service.name", host.service_name.clone()),
        s("service.version", env!("CARGO_PKG_VERSION")),
        ("process.pid".into(), Value::Int(i64::from(std::process::id()))),
    ];
    host.common(&mut attrs);
    attrs
}

const STATUSES: [Status; 6] =
    [Status::Launching, Status::Online, Status::Stopping, Status::Stopped, Status::Errored, Status::WaitingRestart];

/// The runtime's own counters, read when an export is due.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimeCounters {
    pub log_lines: (u64, u64),
    pub reaped_orphans: u64,
    pub dropped_log_records: u64,
    pub resident_memory_bytes: u64,
    pub cpu_seconds: f64,
    pub started_at: Option<SystemTime>,
}

/// Every series of `/metrics`, named by OTel's process conventions where one exists.
pub fn metrics(table: &StatusTable, host: &Host, runtime: &RuntimeCounters, now: SystemTime) -> Vec<ResourceMetrics> {
    let t = nanos(now);
    let point = |value: Number| Point { attributes: Vec::new(), start_nanos: None, nanos: t, value };
    let mut out = Vec::with_capacity(table.instances.len() + 1);
    for i in &table.instances {
        let since = i.started_at().map(nanos);
        let mut m = Vec::new();
        let sampled = i.pid().is_some() && i.sample.memory_bytes > 0;
        if sampled {
            m.push(Metric {
                name: "process.cpu.time",
                description: "CPU time (user+system) of the instance's process tree.",
                unit: "s",
                kind: Kind::Counter,
                points: vec![Point { start_nanos: since, ..point(Number::Double(i.sample.cpu_seconds)) }],
            });
            m.push(Metric {
                name: "process.cpu.utilization",
                description: "CPU use of the instance's process tree over the last sampling period, as a fraction of one core.",
                unit: "1",
                kind: Kind::Gauge,
                points: vec![point(Number::Double(i.sample.cpu_percent / 100.0))],
            });
            m.push(Metric {
                name: "process.memory.usage",
                description: "Resident memory of the instance's whole process tree.",
                unit: "By",
                kind: Kind::Gauge,
                points: vec![point(Number::Int(i.sample.memory_bytes as i64))],
            });
        }
        if let Some(start) = i.started_at() {
            m.push(Metric {
                name: "process.uptime",
                description: "Time since the instance's current process started.",
                unit: "s",
                kind: Kind::Gauge,
                points: vec![point(Number::Double(now.duration_since(start).unwrap_or(Duration::ZERO).as_secs_f64()))],
            });
        }
        m.push(Metric {
            name: "pm_runtime.app.up",
            description: "1 when the instance is online.",
            unit: "1",
            kind: Kind::Gauge,
            points: vec![point(Number::Int(i64::from(i.status() == Some(Status::Online))))],
        });
        m.push(Metric {
            name: "pm_runtime.app.ready",
            description: "1 when the instance is online and ready.",
            unit: "1",
            kind: Kind::Gauge,
            points: vec![point(Number::Int(i64::from(i.ready())))],
        });
        let current = i.status_str();
        m.push(Metric {
            name: "pm_runtime.app.status",
            description: "The instance's status (a state set: 1 for the current one).",
            unit: "1",
            kind: Kind::Gauge,
            points: STATUSES
                .iter()
                .map(|st| Point { attributes: vec![s("status", st.as_str())], ..point(Number::Int(i64::from(st.as_str() == current))) })
                .collect(),
        });
        m.push(Metric {
            name: "pm_runtime.app.restarts",
            description: "Restarts of the instance since it was created, by reason.",
            unit: "{restart}",
            kind: Kind::Counter,
            points: RestartReason::ALL
                .iter()
                .map(|r| Point {
                    attributes: vec![s("reason", r.as_str())],
                    start_nanos: Some(nanos(i.created_at)),
                    ..point(Number::Int(i.restarts.get(*r) as i64))
                })
                .collect(),
        });
        if let Some(e) = i.last_exit() {
            m.push(Metric {
                name: "pm_runtime.app.last_exit_code",
                description: "Exit code of the instance's last process (128+N for signal N).",
                unit: "1",
                kind: Kind::Gauge,
                points: vec![point(Number::Int(i64::from(e.as_code())))],
            });
        }
        if let Some(limit) = i.app.max_memory_restart {
            m.push(Metric {
                name: "pm_runtime.app.memory.limit",
                description: "max_memory_restart of the instance's app.",
                unit: "By",
                kind: Kind::Gauge,
                points: vec![point(Number::Int(limit as i64))],
            });
        }
        out.push(ResourceMetrics { resource: instance_resource(host, i), metrics: m });
    }
    let since = runtime.started_at.map(nanos);
    let counter = |name, description, unit, points: Vec<Point>| Metric { name, description, unit, kind: Kind::Counter, points };
    let lines = |stream: &str, n: u64| Point { attributes: vec![s("stream", stream)], start_nanos: since, ..point(Number::Int(n as i64)) };
    let mut own = vec![
        counter(
            "pm_runtime.log.lines",
            "App log lines read, by stream.",
            "{line}",
            vec![lines("out", runtime.log_lines.0), lines("err", runtime.log_lines.1)],
        ),
        counter(
            "pm_runtime.reaped_orphans",
            "Orphaned processes reaped by the runtime (PID 1 / subreaper).",
            "{process}",
            vec![Point { start_nanos: since, ..point(Number::Int(runtime.reaped_orphans as i64)) }],
        ),
        counter(
            "pm_runtime.otlp.dropped_log_records",
            "App log lines not exported over OTLP (the backend was down, slow or refused them).",
            "{record}",
            vec![Point { start_nanos: since, ..point(Number::Int(runtime.dropped_log_records as i64)) }],
        ),
        counter(
            "process.cpu.time",
            "CPU time (user+system) of the runtime itself.",
            "s",
            vec![Point { start_nanos: since, ..point(Number::Double(runtime.cpu_seconds)) }],
        ),
    ];
    own.push(Metric {
        name: "process.memory.usage",
        description: "Resident memory of the runtime itself.",
        unit: "By",
        kind: Kind::Gauge,
        points: vec![point(Number::Int(runtime.resident_memory_bytes as i64))],
    });
    for a in &table.apps {
        let running = table.instances.iter().filter(|i| i.app.name == a.app.name && i.status() == Some(Status::Online)).count();
        let app = |state: &str, n: usize| Point {
            attributes: vec![s("app", a.app.name.clone()), s("state", state)],
            ..point(Number::Int(n as i64))
        };
        own.push(Metric {
            name: "pm_runtime.app.instances",
            description: "Instances of the app: desired (after scale) and running (online).",
            unit: "{instance}",
            kind: Kind::Gauge,
            points: vec![app("desired", a.desired), app("running", running)],
        });
    }
    out.push(ResourceMetrics { resource: runtime_resource(host), metrics: own });
    out
}

/// The severity of an app line: from the `level` of a JSON line (names as most loggers write
/// them, pino/bunyan numbers), else from the stream (stderr: error; stdout: info).
pub fn severity(line: &str, is_err: bool) -> Severity {
    let fallback = if is_err { Severity::Error } else { Severity::Info };
    let t = line.trim_start();
    if !t.starts_with('{') {
        return fallback;
    }
    let Ok(serde_json::Value::Object(obj)) = serde_json::from_str::<serde_json::Value>(t) else {
        return fallback;
    };
    let Some(level) = obj.get("level").or_else(|| obj.get("severity")).or_else(|| obj.get("lvl")) else {
        return fallback;
    };
    match level {
        serde_json::Value::Number(n) => match n.as_u64().unwrap_or(0) {
            0..=10 => Severity::Trace,
            11..=20 => Severity::Debug,
            21..=30 => Severity::Info,
            31..=40 => Severity::Warn,
            41..=50 => Severity::Error,
            _ => Severity::Fatal,
        },
        serde_json::Value::String(name) => match name.to_ascii_lowercase().as_str() {
            "trace" | "verbose" | "silly" => Severity::Trace,
            "debug" => Severity::Debug,
            "info" | "information" | "notice" | "http" | "log" => Severity::Info,
            "warn" | "warning" => Severity::Warn,
            "error" | "err" => Severity::Error,
            "fatal" | "critical" | "crit" | "alert" | "emerg" | "emergency" | "panic" => Severity::Fatal,
            _ => fallback,
        },
        _ => fallback,
    }
}

/// `k1=v1,k2=v2` with percent-encoded values, as `OTEL_RESOURCE_ATTRIBUTES` and
/// `OTEL_EXPORTER_OTLP_HEADERS` are written. Malformed pairs are skipped.
pub fn parse_pairs(text: &str) -> Vec<(String, String)> {
    text.split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let k = k.trim();
            (!k.is_empty()).then(|| (percent_decode(k), percent_decode(v.trim())))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The one attribute every record of an instance carries beside its resource.
pub fn record_attributes(stream_is_err: bool) -> Attributes {
    vec![s("log.iostream", if stream_is_err { "stderr" } else { "stdout" })]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_from_json_level_or_stream() {
        let cases: &[(&str, bool, Severity)] = &[
            ("plain line", false, Severity::Info),
            ("plain line", true, Severity::Error),
            (r#"{"level":"warn","msg":"x"}"#, false, Severity::Warn),
            (r#"{"level":"DEBUG"}"#, true, Severity::Debug),
            (r#"{"level":50,"msg":"pino error"}"#, false, Severity::Error),
            (r#"{"level":30}"#, true, Severity::Info),
            (r#"{"level":60}"#, false, Severity::Fatal),
            (r#"{"severity":"critical"}"#, false, Severity::Fatal),
            (r#"{"level":"odd"}"#, true, Severity::Error),
            (r#"{"msg":"no level"}"#, false, Severity::Info),
            ("{not json", false, Severity::Info),
        ];
        for (line, err, want) in cases {
            assert_eq!(severity(line, *err), *want, "{line} err={err}");
        }
    }

    #[test]
    fn pairs_are_percent_decoded_and_bad_ones_skipped() {
        assert_eq!(
            parse_pairs("a=1, b = x%20y ,junk,=v,c=%2C%3D,d=%zz"),
            vec![("a".into(), "1".into()), ("b".into(), "x y".into()), ("c".into(), ",=".into()), ("d".into(), "%zz".into())]
        );
        assert!(parse_pairs("").is_empty());
    }
}
