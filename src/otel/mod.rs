//! OpenTelemetry out: the status table's series as OTLP metrics and the apps' lines as OTLP log
//! records, pushed over HTTP (`http/protobuf` or `http/json`) to any OTLP receiver (the
//! Collector, Prometheus 3, Grafana, Datadog, Elastic, Honeycomb…).
//!
//! Off unless the standard variables ask for it (`OTEL_EXPORTER_OTLP_ENDPOINT` or a
//! signal's own `…_METRICS_ENDPOINT` / `…_LOGS_ENDPOINT`); when off nothing of it exists: no
//! thread, no socket, no subscription. When on, it runs on its own thread with its own small
//! tokio runtime (like the PM2 Plus link), reads the status feed and follows the log hub as
//! any reader does, so a receiver that is down, slow or refusing costs the apps no line and the
//! supervisor no timing: lines it cannot send are counted
//! (`pm_runtime.otlp.dropped_log_records`) and dropped.
//!
//! - [`resolve`] reads the variables (pure, table-tested);
//! - [`model`] builds what is sent (resources, metrics, records) from the table (pure);
//! - [`encode`] writes OTLP protobuf and JSON (pure);
//! - `export` is the thread.
//!
//! Each app's process gets `OTEL_SERVICE_NAME` (its app name) unless its `env` sets one, and
//! [`instance_attributes`] adds `service.instance.id` (`app-N`) to its
//! `OTEL_RESOURCE_ATTRIBUTES`, so an app instrumented with an OTel SDK reports under the same
//! identity as the runtime's data about it.

pub mod encode;
#[cfg(feature = "otel")]
mod export;
pub mod model;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[cfg(feature = "otel")]
pub use export::{Exporter, Handles, spawn};

/// Built without the `otel` feature: there is never an exporter to finish.
#[cfg(not(feature = "otel"))]
pub enum Exporter {}

#[cfg(not(feature = "otel"))]
impl Exporter {
    pub fn finish(self) {
        match self {}
    }
}

/// App lines that were not exported (backend down, slow, refusing, or the follower fell behind).
static DROPPED_LOG_RECORDS: AtomicU64 = AtomicU64::new(0);

pub fn dropped_log_records() -> u64 {
    DROPPED_LOG_RECORDS.load(Ordering::Relaxed)
}

#[cfg_attr(not(feature = "otel"), allow(dead_code))]
fn count_dropped(n: u64) {
    DROPPED_LOG_RECORDS.fetch_add(n, Ordering::Relaxed);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Protobuf,
    Json,
}

impl Protocol {
    pub fn content_type(self) -> &'static str {
        match self {
            Protocol::Protobuf => "application/x-protobuf",
            Protocol::Json => "application/json",
        }
    }
}

/// Where one signal goes and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub url: String,
    pub protocol: Protocol,
    /// Sent with every request; may hold credentials: never printed.
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub metrics: Option<Target>,
    pub logs: Option<Target>,
    /// `OTEL_METRIC_EXPORT_INTERVAL` (default 60 s).
    pub interval: Duration,
    /// `OTEL_EXPORTER_OTLP_TIMEOUT` (default 10 s): one request's limit.
    pub timeout: Duration,
    /// `OTEL_SERVICE_NAME`: the runtime's own resource (default `pm-runtime`).
    pub service_name: String,
    /// `OTEL_RESOURCE_ATTRIBUTES`.
    pub resource_attributes: Vec<(String, String)>,
    /// Values that were ignored, with what was used instead.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    Off,
    On(Config),
    /// Asked for, but unusable: said once at start, the runtime runs without it.
    Misconfigured(String),
}

const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The URL as it may be printed: without user info or query (both may hold credentials).
pub fn printable(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if path.is_empty() { format!("{scheme}://{host}") } else { format!("{scheme}://{host}/{path}") }
}

fn millis(env: &dyn Fn(&str) -> Option<String>, key: &str, default: Duration, warnings: &mut Vec<String>) -> Duration {
    match env(key).filter(|v| !v.trim().is_empty()) {
        None => default,
        Some(v) => match v.trim().parse::<u64>() {
            Ok(ms) if ms > 0 => Duration::from_millis(ms),
            _ => {
                warnings.push(format!("{key}={v:?} is not a positive number of milliseconds; using {} ms", default.as_millis()));
                default
            }
        },
    }
}

/// Reads the standard OpenTelemetry exporter variables. `env` is the runtime's environment.
pub fn resolve(env: &dyn Fn(&str) -> Option<String>) -> Resolved {
    let get = |k: &str| env(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    if get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Resolved::Off;
    }
    let base = get("OTEL_EXPORTER_OTLP_ENDPOINT");
    let mut warnings = Vec::new();
    let mut target = |signal: &str, path: &str, exporter_var: &str| -> Result<Option<Target>, String> {
        if get(exporter_var).is_some_and(|v| v.eq_ignore_ascii_case("none")) {
            return Ok(None);
        }
        let own = format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT");
        let url = match (get(&own), &base) {
            (Some(u), _) => u,
            (None, Some(b)) => format!("{}/{path}", b.trim_end_matches('/')),
            (None, None) => return Ok(None),
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("OpenTelemetry: the OTLP endpoint {} is not an http:// or https:// URL; export is off", printable(&url)));
        }
        let protocol = match get(&format!("OTEL_EXPORTER_OTLP_{signal}_PROTOCOL")).or_else(|| get("OTEL_EXPORTER_OTLP_PROTOCOL")).as_deref()
        {
            None | Some("http/protobuf") => Protocol::Protobuf,
            Some("http/json") => Protocol::Json,
            Some("grpc") => {
                return Err("OpenTelemetry: OTEL_EXPORTER_OTLP_PROTOCOL=grpc is not supported; use http/protobuf (port 4318 of a Collector); export is off".into());
            }
            Some(other) => {
                warnings.push(format!("OTEL_EXPORTER_OTLP_PROTOCOL={other:?} is unknown; using http/protobuf"));
                Protocol::Protobuf
            }
        };
        let mut headers = model::parse_pairs(&get("OTEL_EXPORTER_OTLP_HEADERS").unwrap_or_default());
        for (k, v) in model::parse_pairs(&get(&format!("OTEL_EXPORTER_OTLP_{signal}_HEADERS")).unwrap_or_default()) {
            headers.retain(|(have, _)| !have.eq_ignore_ascii_case(&k));
            headers.push((k, v));
        }
        Ok(Some(Target { url, protocol, headers }))
    };
    let metrics = match target("METRICS", "v1/metrics", "OTEL_METRICS_EXPORTER") {
        Ok(t) => t,
        Err(e) => return Resolved::Misconfigured(e),
    };
    let logs = match target("LOGS", "v1/logs", "OTEL_LOGS_EXPORTER") {
        Ok(t) => t,
        Err(e) => return Resolved::Misconfigured(e),
    };
    if metrics.is_none() && logs.is_none() {
        return Resolved::Off;
    }
    let interval = millis(env, "OTEL_METRIC_EXPORT_INTERVAL", DEFAULT_INTERVAL, &mut warnings);
    let timeout = millis(env, "OTEL_EXPORTER_OTLP_TIMEOUT", DEFAULT_TIMEOUT, &mut warnings);
    Resolved::On(Config {
        metrics,
        logs,
        interval,
        timeout,
        service_name: get("OTEL_SERVICE_NAME").unwrap_or_else(|| "pm-runtime".into()),
        resource_attributes: model::parse_pairs(&get("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default()),
        warnings,
    })
}

/// Gives every app `OTEL_SERVICE_NAME` = its name, unless its `env` has one (export is on).
pub fn name_services(apps: &mut [crate::config::App]) {
    for app in apps {
        if !app.env.contains_key("OTEL_SERVICE_NAME") {
            let name = app.name.clone();
            app.env.insert("OTEL_SERVICE_NAME".into(), name);
        }
    }
}

/// An instance's `OTEL_RESOURCE_ATTRIBUTES`: what it had, plus `service.instance.id=<app>-<N>`
/// unless it names one. `None` when the instance has no OTel service name (nothing to add to).
pub fn instance_attributes(service_name: Option<&str>, existing: Option<&str>, app: &str, instance: u32) -> Option<String> {
    service_name?;
    let existing = existing.unwrap_or("").trim();
    if model::parse_pairs(existing).iter().any(|(k, _)| k == "service.instance.id") {
        return None;
    }
    let id = format!("service.instance.id={}-{instance}", encode_value(app));
    Some(if existing.is_empty() { id } else { format!("{existing},{id}") })
}

/// Percent-encodes what `OTEL_RESOURCE_ATTRIBUTES` cannot hold literally.
fn encode_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The container's id, as cgroup paths show it (Docker, containerd, CRI-O): 64 hex digits.
pub fn container_id() -> Option<String> {
    for file in ["/proc/self/cgroup", "/proc/self/mountinfo"] {
        if let Ok(text) = std::fs::read_to_string(file)
            && let Some(id) = find_container_id(&text)
        {
            return Some(id);
        }
    }
    None
}

fn find_container_id(text: &str) -> Option<String> {
    for line in text.lines() {
        for part in line.split(['/', ' ', '-', '.', ':']) {
            if part.len() == 64 && part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Some(part.to_string());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    fn on(r: Resolved) -> Config {
        match r {
            Resolved::On(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn off_unless_an_endpoint_is_set() {
        assert_eq!(resolve(&env(&[])), Resolved::Off);
        assert_eq!(resolve(&env(&[("OTEL_SERVICE_NAME", "x"), ("OTEL_EXPORTER_OTLP_HEADERS", "a=b")])), Resolved::Off);
        assert_eq!(resolve(&env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), ("OTEL_SDK_DISABLED", "true")])), Resolved::Off);
        assert_eq!(
            resolve(&env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_METRICS_EXPORTER", "none"),
                ("OTEL_LOGS_EXPORTER", "none")
            ])),
            Resolved::Off
        );
    }

    #[test]
    fn endpoints_protocols_headers_and_intervals() {
        let c = on(resolve(&env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")])));
        assert_eq!(c.metrics.as_ref().unwrap().url, "http://c:4318/v1/metrics");
        assert_eq!(c.logs.as_ref().unwrap().url, "http://c:4318/v1/logs");
        assert_eq!(c.metrics.unwrap().protocol, Protocol::Protobuf);
        assert_eq!((c.interval, c.timeout, c.service_name.as_str()), (DEFAULT_INTERVAL, DEFAULT_TIMEOUT, "pm-runtime"));

        let c = on(resolve(&env(&[
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "https://m.example/custom"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s%3Dcret,x=1"),
            ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "X=2"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "1500"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "nope"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod"),
        ])));
        assert!(c.logs.is_none(), "only metrics have an endpoint");
        let m = c.metrics.unwrap();
        assert_eq!((m.url.as_str(), m.protocol), ("https://m.example/custom", Protocol::Json));
        assert_eq!(m.headers, vec![("api-key".to_string(), "s=cret".to_string()), ("X".to_string(), "2".to_string())]);
        assert_eq!(c.interval, Duration::from_millis(1500));
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert_eq!(c.resource_attributes, vec![("deployment.environment".to_string(), "prod".to_string())]);

        for (url, proto) in [("grpc://c:4317", None), ("http://c:4317", Some("grpc"))] {
            let mut e = vec![("OTEL_EXPORTER_OTLP_ENDPOINT", url)];
            e.extend(proto.map(|p| ("OTEL_EXPORTER_OTLP_PROTOCOL", p)));
            assert!(matches!(resolve(&env(&e)), Resolved::Misconfigured(_)), "{url} {proto:?}");
        }
    }

    #[test]
    fn printable_urls_hide_credentials() {
        assert_eq!(printable("https://user:pw@otlp.example:443/v1/logs?key=secret"), "https://otlp.example:443/v1/logs");
        assert_eq!(printable("http://c:4318"), "http://c:4318");
    }

    #[test]
    fn instance_ids_join_existing_attributes() {
        assert_eq!(instance_attributes(None, Some("a=b"), "web", 1), None, "no service name: nothing added");
        assert_eq!(instance_attributes(Some("web"), None, "web", 0).as_deref(), Some("service.instance.id=web-0"));
        assert_eq!(instance_attributes(Some("web"), Some("team=x"), "my app", 3).as_deref(), Some("team=x,service.instance.id=my%20app-3"));
        assert_eq!(instance_attributes(Some("web"), Some("service.instance.id=mine"), "web", 1), None);
    }

    #[test]
    fn container_ids_from_cgroup_paths() {
        let id = "a".repeat(64);
        assert_eq!(find_container_id(&format!("0::/system.slice/docker-{id}.scope\n")), Some(id.clone()));
        assert_eq!(find_container_id(&format!("12:memory:/docker/{id}\n")), Some(id.clone()));
        assert_eq!(find_container_id(&format!("0::/kubepods/burstable/pod1/cri-containerd-{id}.scope")), Some(id));
        assert_eq!(find_container_id("0::/user.slice/user-0.slice/session-1.scope\n"), None);
    }
}
