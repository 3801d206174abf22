//! prom-client's cluster aggregation, done by the runtime (which *is* the cluster primary).
//!
//! A cluster app's workers that hold prom-client's `AggregatorRegistry` answer the primary's
//! `{type: 'prom-client:getMetricsReq', requestId}` with `{type: 'prom-client:getMetricsRes',
//! requestId, metrics}` (`metrics`: one `getMetricsAsJSON()` array per registry) or `{…, error}`.
//! This module merges those replies the way prom-client's `AggregatorRegistry.aggregate` does,
//! and renders the result in its text format:
//! - metrics are grouped by `name` (first seen first), and each group is merged by the
//!   `aggregator` of its first entry (`sum` when absent): `sum`, `first`, `min`, `max`,
//!   `average`, or `omit` (the metric is left out);
//! - inside a metric, values are grouped by `metricName` plus their labels (label order does
//!   not matter), the group keeps the labels and `metricName` of its first value; timestamps
//!   are dropped;
//! - numbers print as JavaScript prints them (`1e-7`, `1e+21`, `NaN` → `Nan`, `±Inf`).
//!
//! Pure functions: no I/O, no clocks. Differences, on purpose: a metric with an unknown
//! aggregator is left out with a comment line, where prom-client fails the whole scrape; and
//! what an app sends is checked against Prometheus' grammar before it is rendered ([`sanitize`]):
//! a metric name, `metricName` (which must be the metric's own name or its `_bucket`, `_sum`,
//! `_count`), a label name or a type that does not fit is left out with a comment line, so one
//! app cannot inject lines that forge another app's series.

use serde_json::{Map, Value};

pub const REQUEST: &str = "prom-client:getMetricsReq";
pub const RESPONSE: &str = "prom-client:getMetricsRes";

/// One merged metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub help: String,
    pub kind: String,
    pub values: Vec<Series>,
}

/// One value of a merged metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// `metricName` (histograms: `x_bucket`, `x_sum`, `x_count`); else the family's name.
    pub metric_name: Option<String>,
    pub labels: Map<String, Value>,
    pub value: f64,
}

/// What one worker's reply means.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// The worker's metrics, every registry's list concatenated.
    Metrics(Vec<Value>),
    /// prom-client's `error` field.
    Error(String),
}

/// Reads a worker's `getMetricsRes` message for `request_id`; `None` when it is another message.
pub fn parse_reply(message: &Value, request_id: u64) -> Option<Reply> {
    if message.get("type").and_then(Value::as_str) != Some(RESPONSE) || message.get("requestId").and_then(Value::as_u64) != Some(request_id)
    {
        return None;
    }
    if let Some(e) = message.get("error") {
        return Some(Reply::Error(e.as_str().map_or_else(|| e.to_string(), str::to_string)));
    }
    let mut out = Vec::new();
    match message.get("metrics") {
        Some(Value::Array(registries)) => {
            for reg in registries {
                match reg {
                    Value::Array(metrics) => out.extend(metrics.iter().cloned()),
                    _ => return Some(Reply::Error("a registry in the reply is not an array".into())),
                }
            }
        }
        _ => return Some(Reply::Error("the reply has no metrics array".into())),
    }
    Some(Reply::Metrics(out))
}

/// The request message for `request_id`.
pub fn request(request_id: u64) -> Value {
    serde_json::json!({ "type": REQUEST, "requestId": request_id })
}

/// JavaScript's `String(v)` for a JSON value (how prom-client builds keys and label text).
fn js_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.as_f64().map_or_else(|| n.to_string(), js_number),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        // Objects and arrays are not valid label values; String() would give "[object Object]".
        Value::Array(_) | Value::Object(_) => "[object Object]".into(),
    }
}

/// JavaScript's `Number.prototype.toString()` (shortest round-trip digits, JS's exponent rules).
pub fn js_number(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    if v == 0.0 {
        return "0".into();
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "-1.2345e-7".
    let sci = format!("{:e}", v.abs());
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    let exp: i32 = exp.parse().unwrap_or(0);
    let k = digits.len() as i32;
    let n = exp + 1;
    let body = if k <= n && n <= 21 {
        format!("{digits}{}", "0".repeat((n - k) as usize))
    } else if 0 < n && n <= 21 {
        format!("{}.{}", &digits[..n as usize], &digits[n as usize..])
    } else if -6 < n && n <= 0 {
        format!("0.{}{digits}", "0".repeat((-n) as usize))
    } else {
        let e = n - 1;
        let sign = if e < 0 { '-' } else { '+' };
        if k == 1 { format!("{digits}e{sign}{}", e.abs()) } else { format!("{}.{}e{sign}{}", &digits[..1], &digits[1..], e.abs()) }
    };
    if v < 0.0 { format!("-{body}") } else { body }
}

/// prom-client's `getValueAsString`.
fn value_string(v: f64) -> String {
    if v.is_nan() {
        "Nan".into()
    } else if v.is_infinite() {
        if v < 0.0 { "-Inf".into() } else { "+Inf".into() }
    } else {
        js_number(v)
    }
}

/// prom-client's `hashObject`: `key:value,` over the sorted label names.
fn label_key(labels: &Map<String, Value>) -> String {
    let mut keys: Vec<&String> = labels.keys().collect();
    keys.sort_unstable();
    keys.into_iter().map(|k| format!("{k}:{},", js_string(&labels[k]))).collect()
}

/// A number as JavaScript arithmetic sees a JSON value (`null` counts as 0).
fn num(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        Value::Null => 0.0,
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::String(s) => s.trim().parse().unwrap_or(f64::NAN),
        _ => f64::NAN,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Aggregator {
    Sum,
    First,
    Min,
    Max,
    Average,
    Omit,
}

fn aggregator(name: Option<&str>) -> Option<Aggregator> {
    Some(match name {
        None | Some("sum") => Aggregator::Sum,
        Some("first") => Aggregator::First,
        Some("min") => Aggregator::Min,
        Some("max") => Aggregator::Max,
        Some("average") => Aggregator::Average,
        Some("omit") => Aggregator::Omit,
        Some(_) => return None,
    })
}

fn apply(agg: Aggregator, values: &[f64]) -> f64 {
    match agg {
        Aggregator::Sum | Aggregator::Omit => values.iter().fold(0.0, |p, c| p + c),
        Aggregator::First => values[0],
        // JS's Math.min/max: NaN wins.
        Aggregator::Min => values.iter().fold(f64::INFINITY, |p, &c| if p.is_nan() || c.is_nan() { f64::NAN } else { p.min(c) }),
        Aggregator::Max => values.iter().fold(f64::NEG_INFINITY, |p, &c| if p.is_nan() || c.is_nan() { f64::NAN } else { p.max(c) }),
        Aggregator::Average => values.iter().fold(0.0, |p, c| p + c) / values.len() as f64,
    }
}

/// The outcome of merging: the metrics, and one note per metric that could not be merged.
#[derive(Debug, Default, PartialEq)]
pub struct Aggregated {
    pub families: Vec<Family>,
    pub notes: Vec<String>,
}

/// Merges the workers' metrics (`per_worker[i]`: worker i's metrics) like `AggregatorRegistry.aggregate`.
pub fn aggregate(per_worker: &[Vec<Value>]) -> Aggregated {
    // Group by name, in order of first appearance.
    let mut order: Vec<&str> = Vec::new();
    let mut by_name: std::collections::HashMap<&str, Vec<&Value>> = std::collections::HashMap::new();
    for metrics in per_worker {
        for m in metrics {
            let Some(name) = m.get("name").and_then(Value::as_str) else { continue };
            by_name
                .entry(name)
                .or_insert_with(|| {
                    order.push(name);
                    Vec::new()
                })
                .push(m);
        }
    }
    let mut out = Aggregated::default();
    for name in order {
        let metrics = &by_name[name];
        let first = metrics[0];
        let agg_name = first.get("aggregator").and_then(Value::as_str);
        let Some(agg) = aggregator(agg_name) else {
            out.notes.push(format!("{name}: unknown aggregator {:?}, left out", agg_name.unwrap_or("")));
            continue;
        };
        if agg == Aggregator::Omit {
            continue;
        }
        // Group the values by metricName + labels, in order of first appearance.
        let mut keys: Vec<String> = Vec::new();
        let mut groups: std::collections::HashMap<String, Vec<&Value>> = std::collections::HashMap::new();
        for m in metrics {
            for v in m.get("values").and_then(Value::as_array).into_iter().flatten() {
                let labels = v.get("labels").and_then(Value::as_object);
                let metric_name = v.get("metricName").map_or_else(|| "undefined".to_string(), js_string);
                let key = format!("{metric_name}_{}", labels.map(label_key).unwrap_or_default());
                groups
                    .entry(key)
                    .or_insert_with_key(|k| {
                        keys.push(k.clone());
                        Vec::new()
                    })
                    .push(v);
            }
        }
        let mut family = Family {
            name: name.to_string(),
            help: first.get("help").map(js_string).unwrap_or_default(),
            kind: first.get("type").map(js_string).unwrap_or_default(),
            values: Vec::with_capacity(keys.len()),
        };
        for key in keys {
            let group = &groups[&key];
            let nums: Vec<f64> = group.iter().map(|v| v.get("value").map_or(f64::NAN, num)).collect();
            let head = group[0];
            family.values.push(Series {
                // JS keeps metricName only when truthy.
                metric_name: head
                    .get("metricName")
                    .filter(|m| !matches!(m, Value::Null | Value::Bool(false)) && m.as_str() != Some(""))
                    .map(js_string),
                labels: head.get("labels").and_then(Value::as_object).cloned().unwrap_or_default(),
                value: apply(agg, &nums),
            });
        }
        out.families.push(family);
    }
    sanitize(&mut out);
    out
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
pub fn valid_metric_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__` (reserved).
pub fn valid_label_name(s: &str) -> bool {
    let mut b = s.bytes();
    !s.starts_with("__")
        && b.next().is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// An app-supplied text fit for a comment line: no line break or control character, clipped.
fn comment_text(s: &str) -> String {
    let mut out: String =
        s.chars().take(200).flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] }).collect();
    if s.chars().count() > 200 {
        out.push('…');
    }
    out
}

/// Leaves out what does not fit Prometheus' text format, with a note for each.
pub fn sanitize(agg: &mut Aggregated) {
    let mut notes = Vec::new();
    agg.families.retain_mut(|f| {
        if !valid_metric_name(&f.name) {
            notes.push(format!("a metric named {:?} left out: not a valid metric name", comment_text(&f.name)));
            return false;
        }
        if !matches!(f.kind.as_str(), "counter" | "gauge" | "histogram" | "summary" | "untyped") {
            notes.push(format!(
                "{}: type {:?} is not one of counter, gauge, histogram, summary, untyped; left out",
                f.name,
                comment_text(&f.kind)
            ));
            return false;
        }
        let name = f.name.clone();
        let before = f.values.len();
        f.values.retain(|s| {
            let own = s
                .metric_name
                .as_deref()
                .is_none_or(|m| m == name || m.strip_prefix(name.as_str()).is_some_and(|sfx| matches!(sfx, "_bucket" | "_sum" | "_count")));
            own && s.labels.keys().all(|k| valid_label_name(k))
        });
        if f.values.len() < before {
            notes.push(format!(
                "{name}: {} value(s) left out: a metricName not of this metric, or a label name that is not valid",
                before - f.values.len()
            ));
        }
        true
    });
    agg.notes.extend(notes);
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

/// prom-client's text format of merged metrics (`registry.metrics()`).
pub fn render(out: &mut String, agg: &Aggregated) {
    render_apps(out, &[("", agg)]);
}

/// Several apps' merged metrics in one exposition. With one app, exactly prom-client's text;
/// with more, each metric appears once (HELP and TYPE from the first app that has it) and every
/// value gets the label `app` first, so two apps' metrics of the same name stay apart.
pub fn render_apps(out: &mut String, apps: &[(&str, &Aggregated)]) {
    let label = apps.len() > 1;
    let mut names: Vec<&str> = Vec::new();
    for (_, agg) in apps {
        for f in &agg.families {
            if !names.contains(&f.name.as_str()) {
                names.push(&f.name);
            }
        }
    }
    let mut blocks = Vec::with_capacity(names.len());
    for name in names {
        let mut lines = Vec::new();
        for (app, agg) in apps {
            let Some(f) = agg.families.iter().find(|f| f.name == name) else { continue };
            let escaped = escape(&f.name);
            if lines.is_empty() {
                lines.push(format!("# HELP {escaped} {}", escape(&f.help)));
                lines.push(format!("# TYPE {escaped} {}", f.kind));
            }
            for s in &f.values {
                let mut parts: Vec<String> = Vec::with_capacity(s.labels.len() + 1);
                if label {
                    parts.push(format!("app=\"{}\"", escape(app).replace('"', "\\\"")));
                }
                for (k, v) in &s.labels {
                    let text = match v {
                        Value::String(t) => escape(t).replace('"', "\\\""),
                        other => js_string(other),
                    };
                    parts.push(format!("{k}=\"{text}\""));
                }
                let labels = if parts.is_empty() { String::new() } else { format!("{{{}}}", parts.join(",")) };
                lines.push(format!("{}{labels} {}", s.metric_name.as_deref().unwrap_or(&escaped), value_string(s.value)));
            }
        }
        blocks.push(lines.join("\n"));
    }
    for (app, agg) in apps {
        for n in &agg.notes {
            // Notes quote what workers sent (error texts, names): one line each, whatever they hold.
            let n = comment_text(n);
            blocks.push(if label { format!("# pm-runtime: {app}: {n}") } else { format!("# pm-runtime: {n}") });
        }
    }
    if !blocks.is_empty() {
        out.push_str(&blocks.join("\n\n"));
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_that_would_inject_lines_are_left_out() {
        for (name, metric, label) in [
            ("http_requests_total", true, true),
            ("a:b_c", true, false),
            ("_x", true, true),
            ("__x", true, false),
            ("9x", false, false),
            ("", false, false),
            ("x y", false, false),
            ("x\nforged 1", false, false),
            ("x-y", false, false),
            ("é", false, false),
        ] {
            assert_eq!(valid_metric_name(name), metric, "{name:?}");
            assert_eq!(valid_label_name(name), label, "{name:?}");
        }
        let forged = "\nhttp_requests_total{app=\"billing\"} 0";
        let worker = vec![
            json!({"name": "ok_total", "help": "h", "type": "counter", "values": [
                {"value": 1, "labels": {"route": "/a"}},
                {"value": 2, "labels": {"bad\nlabel": "x"}},
                {"value": 3, "metricName": format!("ok_total{forged}"), "labels": {}},
                {"value": 4, "metricName": "other_total", "labels": {}},
            ]}),
            json!({"name": format!("evil{forged}"), "help": "h", "type": "counter", "values": [{"value": 1, "labels": {}}]}),
            json!({"name": "typed", "help": "h", "type": "gauge\nforged 1", "values": [{"value": 1, "labels": {}}]}),
            json!({"name": "h", "help": "h", "type": "histogram", "values": [
                {"value": 1, "metricName": "h_bucket", "labels": {"le": 1}},
                {"value": 1, "metricName": "h_sum", "labels": {}},
                {"value": 1, "metricName": "h_count", "labels": {}},
            ]}),
        ];
        let mut agg = aggregate(&[worker]);
        agg.notes.push("w:1 answered with an error: boom\nforged_total 1".into());
        let mut text = String::new();
        render(&mut text, &agg);
        assert!(text.lines().all(|l| l.starts_with('#') || l.is_empty() || l.starts_with("ok_total") || l.starts_with("h_")), "{text}");
        assert!(text.contains("ok_total{route=\"/a\"} 1\n"), "{text}");
        assert!(!text.lines().any(|l| l.starts_with("http_requests_total") || l.starts_with("forged")), "{text}");
        assert!(text.contains("# pm-runtime: ok_total: 3 value(s) left out"), "{text}");
        assert!(text.contains("# pm-runtime: a metric named \"evil\\\\nhttp_requests_total"), "{text}");
        assert!(text.contains("# pm-runtime: typed: type"), "{text}");
        assert!(text.contains("h_bucket{le=\"1\"} 1"), "{text}");
    }

    fn counter(name: &str, agg: Option<&str>, values: Value) -> Value {
        let mut m = json!({ "help": format!("{name} help"), "name": name, "type": "counter", "values": values });
        if let Some(a) = agg {
            m["aggregator"] = json!(a);
        }
        m
    }

    #[test]
    fn js_numbers_print_as_javascript_does() {
        for (v, want) in [
            (0.0, "0"),
            (-0.0, "0"),
            (1.0, "1"),
            (-42.0, "-42"),
            (0.1, "0.1"),
            (0.1 + 0.2, "0.30000000000000004"),
            (123.456, "123.456"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (123456789012345680000.0, "123456789012345680000"),
            (1.5e-7, "1.5e-7"),
            (1e-6, "0.000001"),
            (0.000123, "0.000123"),
            (2.5e300, "2.5e+300"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
        ] {
            assert_eq!(js_number(v), want, "{v}");
        }
        assert_eq!(value_string(f64::NAN), "Nan");
        assert_eq!(value_string(f64::NEG_INFINITY), "-Inf");
    }

    #[test]
    fn every_aggregator_as_prom_client_applies_it() {
        // (aggregator, worker values, merged)
        let cases: [(Option<&str>, [f64; 3], f64); 7] = [
            (None, [1.0, 2.0, 3.5], 6.5),
            (Some("sum"), [1.0, 2.0, 3.5], 6.5),
            (Some("first"), [7.0, 2.0, 3.0], 7.0),
            (Some("min"), [4.0, -2.0, 3.0], -2.0),
            (Some("max"), [4.0, -2.0, 9.0], 9.0),
            (Some("average"), [1.0, 2.0, 6.0], 3.0),
            // JSON has no NaN: JSON.stringify(NaN) is null, which JS arithmetic reads as 0.
            (Some("max"), [1.0, f64::NAN, 2.0], 2.0),
        ];
        for (agg, vals, want) in cases {
            let workers: Vec<Vec<Value>> = vals.iter().map(|v| vec![counter("c", agg, json!([{ "value": v, "labels": {} }]))]).collect();
            let got = aggregate(&workers);
            let v = got.families[0].values[0].value;
            assert!(v == want || (v.is_nan() && want.is_nan()), "{agg:?}: {v} != {want}");
        }
        let workers = vec![vec![counter("gone", Some("omit"), json!([{ "value": 1, "labels": {} }]))]];
        assert!(aggregate(&workers).families.is_empty(), "omit leaves the metric out");
        let workers = vec![vec![counter("odd", Some("median"), json!([{ "value": 1, "labels": {} }]))]];
        let got = aggregate(&workers);
        assert!(got.families.is_empty());
        assert_eq!(got.notes, ["odd: unknown aggregator \"median\", left out"]);
    }

    #[test]
    fn groups_by_labels_whatever_their_order_and_renders_prom_client_text() {
        let w1 = vec![
            counter(
                "http_requests_total",
                Some("sum"),
                json!([
                    { "value": 3, "labels": { "method": "GET", "code": 200 } },
                    { "value": 1, "labels": { "method": "POST", "code": 500 } }
                ]),
            ),
            json!({ "help": "Latency", "name": "lat", "type": "histogram", "aggregator": "sum", "values": [
                { "value": 1, "labels": { "le": 0.005 }, "metricName": "lat_bucket" },
                { "value": 2, "labels": { "le": "+Inf" }, "metricName": "lat_bucket" },
                { "value": 0.25, "labels": {}, "metricName": "lat_sum" },
                { "value": 2, "labels": {}, "metricName": "lat_count" }
            ]}),
        ];
        let w2 = vec![
            counter("http_requests_total", Some("sum"), json!([{ "value": 4, "labels": { "code": 200, "method": "GET" } }])),
            json!({ "help": "Latency", "name": "lat", "type": "histogram", "aggregator": "sum", "values": [
                { "value": 0, "labels": { "le": 0.005 }, "metricName": "lat_bucket" },
                { "value": 1, "labels": { "le": "+Inf" }, "metricName": "lat_bucket" },
                { "value": 0.5, "labels": {}, "metricName": "lat_sum" },
                { "value": 1, "labels": {}, "metricName": "lat_count" }
            ]}),
            json!({ "help": "Line\nbreak \\ and \"quotes\"", "name": "g", "type": "gauge", "aggregator": "first",
                    "values": [{ "value": 1.5e-7, "labels": { "path": "a\"b\\c\nd" } }] }),
        ];
        let got = aggregate(&[w1, w2]);
        let mut text = String::new();
        render(&mut text, &got);
        // Labels print in the order of the group's first value (serde_json keeps insertion
        // order), as prom-client prints them; grouping ignores the order.
        let want = "# HELP http_requests_total http_requests_total help\n\
                    # TYPE http_requests_total counter\n\
                    http_requests_total{method=\"GET\",code=\"200\"} 7\n\
                    http_requests_total{method=\"POST\",code=\"500\"} 1\n\
                    \n\
                    # HELP lat Latency\n\
                    # TYPE lat histogram\n\
                    lat_bucket{le=\"0.005\"} 1\n\
                    lat_bucket{le=\"+Inf\"} 3\n\
                    lat_sum 0.75\n\
                    lat_count 3\n\
                    \n\
                    # HELP g Line\\nbreak \\\\ and \"quotes\"\n\
                    # TYPE g gauge\n\
                    g{path=\"a\\\"b\\\\c\\nd\"} 1.5e-7\n";
        assert_eq!(text, want);
        // Two apps: one family per name, every value labelled with its app.
        let other =
            aggregate(&[vec![counter("http_requests_total", None, json!([{ "value": 2, "labels": { "code": 200, "method": "GET" } }]))]]);
        let mut two = String::new();
        render_apps(&mut two, &[("web", &got), ("api", &other)]);
        assert_eq!(two.matches("# TYPE http_requests_total counter").count(), 1, "{two}");
        assert!(two.contains("http_requests_total{app=\"web\",method=\"GET\",code=\"200\"} 7\n"), "{two}");
        assert!(two.contains("http_requests_total{app=\"api\",code=\"200\",method=\"GET\"} 2\n"), "{two}");
        assert!(two.contains("lat_sum{app=\"web\"} 0.75\n"), "{two}");
    }

    #[test]
    fn replies_are_matched_by_request_id() {
        let ok = json!({ "type": RESPONSE, "requestId": 7, "metrics": [[counter("a", None, json!([]))], []] });
        assert!(matches!(parse_reply(&ok, 7), Some(Reply::Metrics(m)) if m.len() == 1));
        assert_eq!(parse_reply(&ok, 8), None);
        assert_eq!(parse_reply(&json!({ "type": "axm:monitor" }), 7), None);
        assert_eq!(parse_reply(&json!({ "type": RESPONSE, "requestId": 7, "error": "boom" }), 7), Some(Reply::Error("boom".into())));
        assert!(matches!(parse_reply(&json!({ "type": RESPONSE, "requestId": 7, "metrics": 3 }), 7), Some(Reply::Error(_))));
        assert_eq!(request(3), json!({ "type": "prom-client:getMetricsReq", "requestId": 3 }));
    }
}
