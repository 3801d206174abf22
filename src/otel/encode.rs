//! OTLP's two HTTP encodings of [`super::model`]: protobuf (`application/x-protobuf`, the
//! default) and JSON (`application/json`), for `ExportMetricsServiceRequest` and
//! `ExportLogsServiceRequest` (opentelemetry-proto v1).
//!
//! The protobuf writer is a few lines of the wire format (varints, fixed64, length-delimited
//! fields) instead of a code generator and its runtime: the messages are fixed and small, and
//! the test receiver decodes them with the official definitions.

use std::fmt::Write as _;

use super::model::{Attributes, Kind, LogRecord, Metric, Number, Point, ResourceLogs, ResourceMetrics, Value};

/// The scope every batch is sent under.
const SCOPE: &str = "pm-runtime";

// ---- protobuf ------------------------------------------------------------------------------

struct Pb(Vec<u8>);

impl Pb {
    fn new() -> Pb {
        Pb(Vec::with_capacity(256))
    }
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn key(&mut self, field: u32, wire: u8) {
        self.varint((u64::from(field) << 3) | u64::from(wire));
    }
    fn uint(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.key(field, 0);
            self.varint(v);
        }
    }
    fn fixed64(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.key(field, 1);
            self.0.extend_from_slice(&v.to_le_bytes());
        }
    }
    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    fn str(&mut self, field: u32, s: &str) {
        if !s.is_empty() {
            self.bytes(field, s.as_bytes());
        }
    }
    /// A nested message, written by `f`.
    fn msg(&mut self, field: u32, f: impl FnOnce(&mut Pb)) {
        let mut inner = Pb::new();
        f(&mut inner);
        self.bytes(field, &inner.0);
    }
}

fn pb_value(p: &mut Pb, v: &Value) {
    match v {
        Value::Str(s) => p.bytes(1, s.as_bytes()),
        Value::Int(i) => {
            p.key(3, 0);
            p.varint(*i as u64);
        }
    }
}

fn pb_attributes(p: &mut Pb, field: u32, attrs: &Attributes) {
    for (k, v) in attrs {
        p.msg(field, |kv| {
            kv.str(1, k);
            kv.msg(2, |any| pb_value(any, v));
        });
    }
}

fn pb_scope(p: &mut Pb) {
    p.msg(1, |s| {
        s.str(1, SCOPE);
        s.str(2, env!("CARGO_PKG_VERSION"));
    });
}

fn pb_point(p: &mut Pb, pt: &Point) {
    pb_attributes(p, 7, &pt.attributes);
    if let Some(start) = pt.start_nanos {
        p.fixed64(2, start);
    }
    p.fixed64(3, pt.nanos);
    match pt.value {
        Number::Double(d) => {
            p.key(4, 1);
            p.0.extend_from_slice(&d.to_le_bytes());
        }
        Number::Int(i) => {
            p.key(6, 1);
            p.0.extend_from_slice(&i.to_le_bytes());
        }
    }
}

fn pb_metric(p: &mut Pb, m: &Metric) {
    p.str(1, m.name);
    p.str(2, m.description);
    p.str(3, m.unit);
    match m.kind {
        Kind::Gauge => p.msg(5, |g| {
            for pt in &m.points {
                g.msg(1, |d| pb_point(d, pt));
            }
        }),
        Kind::Counter => p.msg(7, |s| {
            for pt in &m.points {
                s.msg(1, |d| pb_point(d, pt));
            }
            s.uint(2, 2); // AGGREGATION_TEMPORALITY_CUMULATIVE
            s.uint(3, 1); // is_monotonic
        }),
    }
}

/// An export request: per resource, its attributes and one scope holding its items (field 2
/// of the scope: `metrics` or `log_records`). Both signals' requests have this shape.
fn pb_export<'a, T: 'a>(groups: impl Iterator<Item = (&'a Attributes, &'a [T])>, item: impl Fn(&mut Pb, &T)) -> Vec<u8> {
    let mut p = Pb::new();
    for (resource, items) in groups {
        p.msg(1, |rg| {
            rg.msg(1, |res| pb_attributes(res, 1, resource));
            rg.msg(2, |scope| {
                pb_scope(scope);
                for it in items {
                    scope.msg(2, |m| item(m, it));
                }
            });
        });
    }
    p.0
}

/// `ExportMetricsServiceRequest` in protobuf.
pub fn metrics_protobuf(resources: &[ResourceMetrics]) -> Vec<u8> {
    pb_export(resources.iter().map(|r| (&r.resource, r.metrics.as_slice())), pb_metric)
}

fn pb_record(p: &mut Pb, r: &LogRecord) {
    p.fixed64(1, r.nanos);
    p.uint(2, r.severity as u64);
    p.str(3, r.severity.text());
    p.msg(5, |b| b.bytes(1, r.body.as_bytes()));
    pb_attributes(p, 6, &r.attributes);
    p.fixed64(11, r.nanos);
}

/// `ExportLogsServiceRequest` in protobuf.
pub fn logs_protobuf(resources: &[ResourceLogs]) -> Vec<u8> {
    pb_export(resources.iter().map(|r| (&r.resource, r.records.as_slice())), pb_record)
}

// ---- JSON (OTLP/HTTP JSON: lowerCamelCase, 64-bit integers as strings, enums as numbers) ------

fn js(out: &mut String, s: &str) {
    // serde_json's string escaping; writing a &str cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}

fn js_attributes(out: &mut String, attrs: &Attributes) {
    out.push('[');
    for (n, (k, v)) in attrs.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        out.push_str("{\"key\":");
        js(out, k);
        out.push_str(",\"value\":");
        match v {
            Value::Str(s) => {
                out.push_str("{\"stringValue\":");
                js(out, s);
                out.push('}');
            }
            Value::Int(i) => {
                let _ = write!(out, "{{\"intValue\":\"{i}\"}}");
            }
        }
        out.push('}');
    }
    out.push(']');
}

fn js_scope(out: &mut String) {
    let _ = write!(out, "\"scope\":{{\"name\":\"{SCOPE}\",\"version\":\"{}\"}}", env!("CARGO_PKG_VERSION"));
}

fn js_point(out: &mut String, pt: &Point) {
    out.push_str("{\"attributes\":");
    js_attributes(out, &pt.attributes);
    if let Some(start) = pt.start_nanos {
        let _ = write!(out, ",\"startTimeUnixNano\":\"{start}\"");
    }
    let _ = write!(out, ",\"timeUnixNano\":\"{}\"", pt.nanos);
    match pt.value {
        // JSON has no NaN or infinity: such a value is sent as 0.
        Number::Double(d) => {
            let _ = write!(out, ",\"asDouble\":{}", if d.is_finite() { d } else { 0.0 });
        }
        Number::Int(i) => {
            let _ = write!(out, ",\"asInt\":\"{i}\"");
        }
    }
    out.push('}');
}

fn js_metric(out: &mut String, m: &Metric) {
    out.push_str("{\"name\":");
    js(out, m.name);
    out.push_str(",\"description\":");
    js(out, m.description);
    out.push_str(",\"unit\":");
    js(out, m.unit);
    out.push_str(match m.kind {
        Kind::Gauge => ",\"gauge\":{\"dataPoints\":[",
        Kind::Counter => ",\"sum\":{\"aggregationTemporality\":2,\"isMonotonic\":true,\"dataPoints\":[",
    });
    for (n, pt) in m.points.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        js_point(out, pt);
    }
    out.push_str("]}}");
}

/// The JSON twin of [`pb_export`]: `keys` names the request's resource list, the scope list and
/// the scope's items (`resourceMetrics`, `scopeMetrics`, `metrics` for metrics).
fn js_export<'a, T: 'a>(
    keys: [&str; 3],
    groups: impl Iterator<Item = (&'a Attributes, &'a [T])>,
    item: impl Fn(&mut String, &T),
) -> Vec<u8> {
    let [resources, scopes, items_key] = keys;
    let mut out = format!("{{\"{resources}\":[");
    for (n, (resource, items)) in groups.enumerate() {
        if n > 0 {
            out.push(',');
        }
        out.push_str("{\"resource\":{\"attributes\":");
        js_attributes(&mut out, resource);
        let _ = write!(out, "}},\"{scopes}\":[{{");
        js_scope(&mut out);
        let _ = write!(out, ",\"{items_key}\":[");
        for (k, it) in items.iter().enumerate() {
            if k > 0 {
                out.push(',');
            }
            item(&mut out, it);
        }
        out.push_str("]}]}");
    }
    out.push_str("]}");
    out.into_bytes()
}

/// `ExportMetricsServiceRequest` in JSON.
pub fn metrics_json(resources: &[ResourceMetrics]) -> Vec<u8> {
    js_export(["resourceMetrics", "scopeMetrics", "metrics"], resources.iter().map(|r| (&r.resource, r.metrics.as_slice())), js_metric)
}

fn js_record(out: &mut String, rec: &LogRecord) {
    let _ = write!(
        out,
        "{{\"timeUnixNano\":\"{t}\",\"observedTimeUnixNano\":\"{t}\",\"severityNumber\":{},\"severityText\":\"{}\",\"body\":{{\"stringValue\":",
        rec.severity as u8,
        rec.severity.text(),
        t = rec.nanos
    );
    js(out, &rec.body);
    out.push_str("},\"attributes\":");
    js_attributes(out, &rec.attributes);
    out.push('}');
}

/// `ExportLogsServiceRequest` in JSON.
pub fn logs_json(resources: &[ResourceLogs]) -> Vec<u8> {
    js_export(["resourceLogs", "scopeLogs", "logRecords"], resources.iter().map(|r| (&r.resource, r.records.as_slice())), js_record)
}

#[cfg(test)]
mod tests {
    use super::super::model::Severity;
    use super::*;

    fn sample_metrics() -> Vec<ResourceMetrics> {
        vec![ResourceMetrics {
            resource: vec![("service.name".into(), Value::Str("web".into())), ("process.pid".into(), Value::Int(42))],
            metrics: vec![
                Metric {
                    name: "process.memory.usage",
                    description: "d",
                    unit: "By",
                    kind: Kind::Gauge,
                    points: vec![Point { attributes: vec![], start_nanos: None, nanos: 7, value: Number::Int(300) }],
                },
                Metric {
                    name: "process.cpu.time",
                    description: "",
                    unit: "s",
                    kind: Kind::Counter,
                    points: vec![Point { attributes: vec![], start_nanos: Some(5), nanos: 7, value: Number::Double(1.5) }],
                },
            ],
        }]
    }

    #[test]
    fn varints_as_the_wire_format_says() {
        for (v, want) in [(0u64, vec![0u8]), (1, vec![1]), (127, vec![127]), (128, vec![0x80, 1]), (300, vec![0xac, 2])] {
            let mut p = Pb::new();
            p.varint(v);
            assert_eq!(p.0, want, "{v}");
        }
        // A negative int64 takes ten bytes (two's complement), as protobuf's int64 does.
        let mut p = Pb::new();
        pb_value(&mut p, &Value::Int(-1));
        assert_eq!(p.0.len(), 1 + 10);
    }

    #[test]
    fn protobuf_metrics_start_with_resource_metrics_and_hold_every_name() {
        let b = metrics_protobuf(&sample_metrics());
        assert_eq!(b[0], (1 << 3) | 2, "field 1, length-delimited");
        let text = String::from_utf8_lossy(&b);
        for needle in ["service.name", "web", "process.memory.usage", "process.cpu.time", "By", SCOPE] {
            assert!(text.contains(needle), "{needle}");
        }
        assert!(metrics_protobuf(&[]).is_empty());
    }

    #[test]
    fn json_is_valid_and_camel_cased() {
        let v: serde_json::Value = serde_json::from_slice(&metrics_json(&sample_metrics())).unwrap();
        let m = &v["resourceMetrics"][0]["scopeMetrics"][0]["metrics"];
        assert_eq!(m[0]["gauge"]["dataPoints"][0]["asInt"], "300");
        assert_eq!(m[0]["gauge"]["dataPoints"][0]["timeUnixNano"], "7");
        assert_eq!(m[1]["sum"]["isMonotonic"], true);
        assert_eq!(m[1]["sum"]["aggregationTemporality"], 2);
        assert_eq!(m[1]["sum"]["dataPoints"][0]["asDouble"], 1.5);
        assert_eq!(v["resourceMetrics"][0]["resource"]["attributes"][1]["value"]["intValue"], "42");

        let logs = vec![ResourceLogs {
            resource: vec![("service.name".into(), Value::Str("w\"eb".into()))],
            records: vec![LogRecord { nanos: 9, severity: Severity::Warn, body: "a \"quoted\"\tline".into(), attributes: vec![] }],
        }];
        let v: serde_json::Value = serde_json::from_slice(&logs_json(&logs)).unwrap();
        let r = &v["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0];
        assert_eq!(r["body"]["stringValue"], "a \"quoted\"\tline");
        assert_eq!(r["severityNumber"], 13);
        assert_eq!(r["severityText"], "WARN");
        assert_eq!(v["resourceLogs"][0]["resource"]["attributes"][0]["value"]["stringValue"], "w\"eb");
    }
}
