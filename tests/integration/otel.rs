//! OpenTelemetry out: a real OTLP/HTTP receiver on 127.0.0.1 that decodes with the official
//! protobuf definitions (tests/fixtures/otlp_receiver.py, PyPI `opentelemetry-proto`, which
//! `.ci/run` installs) gets the runtime's metrics and the apps' lines; a receiver that is down,
//! refusing or hanging costs the apps no line.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::scenario::*;

struct Receiver {
    child: Child,
    port: u16,
    out: PathBuf,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    fn start(dir: &Path, mode: &str) -> Receiver {
        let ok = Command::new("python3").args(["-c", "import opentelemetry.proto, google.protobuf"]).status().is_ok_and(|s| s.success());
        assert!(ok, "this test needs the PyPI package opentelemetry-proto (CI installs it: see .ci/run)");
        let out = dir.join(format!("otlp-{mode}.jsonl"));
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/otlp_receiver.py");
        let mut child =
            Command::new("python3").args([script, out.to_str().unwrap(), mode]).stdout(Stdio::piped()).spawn().expect("start the receiver");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().strip_prefix("port ").and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("receiver said {line:?}"));
        Receiver { child, port, out }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request received so far (whole lines only: the receiver may be writing the last).
    fn requests(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        whole.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
    }
}

/// `{"key": k, "value": {"stringValue": v}}` lists as a map of strings.
fn attrs(list: &Value) -> serde_json::Map<String, Value> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|kv| {
            let v = &kv["value"];
            let v = v.get("stringValue").or_else(|| v.get("intValue")).cloned().unwrap_or(Value::Null);
            (kv["key"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

const APP: &str = "#!/bin/sh\necho \"svc=$OTEL_SERVICE_NAME attrs=$OTEL_RESOURCE_ATTRIBUTES\"\necho '{\"level\":\"warn\",\"msg\":\"json warn\"}'\necho \"plain err $NODE_APP_INSTANCE\" >&2\nwhile :; do sleep 1; done\n";

fn scenario() -> Scenario {
    Scenario::new().file("app.sh", APP).file("eco.yml", "apps:\n  - name: web\n    script: app.sh\n    instances: 2\n")
}

/// Metrics and logs as the receiver decoded them; protocol is `http/protobuf` or `http/json`.
fn exports(protocol: &str) {
    let s = scenario();
    let rx = Receiver::start(s.path(), "ok");
    let mut cmd = s.command(&["eco.yml"]);
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint())
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        .env("OTEL_METRIC_EXPORT_INTERVAL", "300")
        .env("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=SEKRET-otlp-123")
        .env("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
        .env("POD_NAME", "web-pod-7")
        .env_remove("OTEL_SERVICE_NAME");
    let mut r = Running::start(cmd);
    r.wait_for("OpenTelemetry: exporting metrics to", Duration::from_secs(10));

    // The apps know who they are, as the runtime's data names them.
    poll("both instances printed their identity", Duration::from_secs(10), || {
        let out = r.stdout();
        (out.contains("svc=web attrs=deployment.environment=test,service.instance.id=web-0")
            && out.contains("svc=web attrs=deployment.environment=test,service.instance.id=web-1"))
        .then_some(())
    });

    // Metrics: OTel names and units, one resource per instance, sampled memory included.
    let (instance_resources, memory) = poll("memory of both instances exported", Duration::from_secs(20), || {
        let mut seen = Vec::new();
        let mut memory = Vec::new();
        for req in rx.requests().iter().filter(|q| q["path"] == "/v1/metrics") {
            assert!(req.get("error").is_none(), "the receiver could not decode: {req}");
            for rm in req["request"]["resourceMetrics"].as_array().unwrap() {
                let res = attrs(&rm["resource"]["attributes"]);
                for m in rm["scopeMetrics"][0]["metrics"].as_array().unwrap() {
                    if m["name"] == "process.memory.usage" && res["service.name"] == "web" {
                        assert_eq!(m["unit"], "By", "{m}");
                        memory.push(m["gauge"]["dataPoints"][0]["asInt"].as_str().unwrap().parse::<u64>().unwrap());
                        seen.push(res.clone());
                    }
                }
            }
        }
        let ids: std::collections::BTreeSet<_> = seen.iter().map(|r| r["service.instance.id"].to_string()).collect();
        (ids.len() == 2).then_some((seen, memory))
    });
    assert!(memory.iter().all(|m| *m > 100_000), "resident memory of a live tree: {memory:?}");
    for res in &instance_resources {
        assert!(res["process.pid"].as_str().unwrap().parse::<u32>().unwrap() > 1, "{res:?}");
        assert_eq!(res["deployment.environment"], "test", "OTEL_RESOURCE_ATTRIBUTES reach every resource");
        assert_eq!(res["k8s.pod.name"], "web-pod-7");
        assert!(res.contains_key("host.name"));
    }
    let all = rx.requests();
    let metrics = all.iter().find(|q| q["path"] == "/v1/metrics").unwrap();
    let names: Vec<String> = all
        .iter()
        .filter(|q| q["path"] == "/v1/metrics")
        .flat_map(|q| q["request"]["resourceMetrics"].as_array().unwrap().clone())
        .flat_map(|rm| rm["scopeMetrics"][0]["metrics"].as_array().unwrap().clone())
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect();
    for want in ["process.cpu.time", "process.uptime", "pm_runtime.app.up", "pm_runtime.app.restarts", "pm_runtime.log.lines"] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
    let restarts = all
        .iter()
        .filter(|q| q["path"] == "/v1/metrics")
        .flat_map(|q| q["request"]["resourceMetrics"].as_array().unwrap().clone())
        .flat_map(|rm| rm["scopeMetrics"][0]["metrics"].as_array().unwrap().clone())
        .find(|m| m["name"] == "pm_runtime.app.restarts")
        .unwrap();
    assert_eq!(restarts["sum"]["isMonotonic"], true, "{restarts}");
    assert_eq!(restarts["sum"]["aggregationTemporality"], "AGGREGATION_TEMPORALITY_CUMULATIVE", "{restarts}");
    assert_eq!(metrics["headers"]["x-api-key"], "SEKRET-otlp-123", "OTEL_EXPORTER_OTLP_HEADERS are sent");

    // Logs: app lines with severity from the stream and from a JSON line's level.
    let records = poll("the three kinds of line exported", Duration::from_secs(15), || {
        let mut recs = Vec::new();
        for req in rx.requests().iter().filter(|q| q["path"] == "/v1/logs") {
            assert!(req.get("error").is_none(), "the receiver could not decode: {req}");
            for rl in req["request"]["resourceLogs"].as_array().unwrap() {
                let res = attrs(&rl["resource"]["attributes"]);
                for rec in rl["scopeLogs"][0]["logRecords"].as_array().unwrap() {
                    recs.push((res.clone(), rec.clone()));
                }
            }
        }
        let has = |body: &str| recs.iter().any(|(_, r)| r["body"]["stringValue"].as_str().is_some_and(|b| b.starts_with(body)));
        (has("svc=web") && has("{\"level\":\"warn\"") && has("plain err")).then_some(recs)
    });
    let find = |body: &str| records.iter().find(|(_, r)| r["body"]["stringValue"].as_str().unwrap().starts_with(body)).unwrap();
    let (res, warn) = find("{\"level\":\"warn\"");
    assert_eq!((warn["severityNumber"].as_str(), warn["severityText"].as_str()), (Some("SEVERITY_NUMBER_WARN"), Some("WARN")), "{warn}");
    assert_eq!(res["service.name"], "web");
    let (_, err) = find("plain err");
    assert_eq!(err["severityNumber"], "SEVERITY_NUMBER_ERROR", "{err}");
    let (_, info) = find("svc=web");
    assert_eq!(info["severityNumber"], "SEVERITY_NUMBER_INFO", "{info}");
    assert!(!info["body"]["stringValue"].as_str().unwrap().ends_with('\n'), "no newline in the body");

    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(Duration::from_secs(10)).expect("exits").code(), Some(0));
    let printed = r.stdout() + &r.stderr();
    assert!(!printed.contains("SEKRET-otlp-123"), "the header's value is never printed:\n{printed}");
}

#[test]
fn otlp_protobuf_metrics_and_logs_reach_a_real_receiver() {
    exports("http/protobuf");
}

#[test]
fn otlp_json_metrics_and_logs_reach_a_real_receiver() {
    exports("http/json");
}

fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|c| c.trim().to_string())
        .collect()
}

#[test]
fn otlp_is_off_without_the_variables_no_thread_and_no_injected_service_name() {
    let s = scenario();
    let mut cmd = s.command(&["eco.yml"]);
    cmd.env_remove("OTEL_EXPORTER_OTLP_ENDPOINT").env_remove("OTEL_SERVICE_NAME").env_remove("OTEL_RESOURCE_ATTRIBUTES");
    let mut r = Running::start(cmd);
    r.wait_for("svc=", Duration::from_secs(10));
    assert!(!thread_names(r.pid()).iter().any(|t| t == "otlp"), "{:?}", thread_names(r.pid()));
    assert!(r.stdout().contains("svc= attrs=\n"), "{}", r.stdout());
    assert!(!r.stdout().contains("OpenTelemetry"));
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(Duration::from_secs(10)).expect("exits").code(), Some(0));
}

/// A receiver that refuses (503), hangs, or is not there: every app line still reaches stdout
/// in order, the runtime says so once, and stops as fast as without it.
#[test]
fn otlp_backend_refusing_hanging_or_down_costs_no_app_line() {
    let n = 3000;
    for mode in ["503", "slow", "down"] {
        let s = Scenario::new()
            .file("burst.sh", &format!("#!/bin/sh\ni=0\nwhile [ $i -lt {n} ]; do echo \"line $i\"; i=$((i+1)); done\necho burst-done\nwhile :; do sleep 1; done\n"))
            .file("eco.yml", "apps:\n  - name: burst\n    script: burst.sh\n");
        let rx = (mode != "down").then(|| Receiver::start(s.path(), mode));
        let endpoint = rx.as_ref().map_or_else(|| format!("http://127.0.0.1:{}", free_port()), Receiver::endpoint);
        let mut cmd = s.command(&["eco.yml"]);
        cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
            .env("OTEL_METRIC_EXPORT_INTERVAL", "200")
            .env("OTEL_EXPORTER_OTLP_TIMEOUT", "500");
        let mut r = Running::start(cmd);
        r.wait_for("burst-done", Duration::from_secs(20));
        r.wait_for("OpenTelemetry: logs export to", Duration::from_secs(10));
        let out = r.stdout();
        let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("line ")).collect();
        assert_eq!(lines.len(), n, "{mode}: every app line reached stdout");
        assert!(lines.iter().enumerate().all(|(i, l)| *l == format!("line {i}")), "{mode}: in order");
        if let Some(rx) = &rx
            && mode == "503"
        {
            // Said once per signal, not once per attempt.
            poll("four refused requests", Duration::from_secs(10), || {
                (rx.requests().iter().filter(|q| q["refused"] == true).count() >= 4).then_some(())
            });
            let printed = r.stdout() + &r.stderr();
            assert_eq!(lines_with(&printed, "OpenTelemetry: logs export to").len(), 1, "{mode}:\n{printed}");
            assert_eq!(lines_with(&printed, "OpenTelemetry: metrics export to").len(), 1, "{mode}:\n{printed}");
        }
        let t = Instant::now();
        r.signal(libc::SIGTERM);
        assert_eq!(r.wait(Duration::from_secs(10)).expect("exits").code(), Some(0), "{mode}");
        assert!(t.elapsed() < Duration::from_secs(5), "{mode}: stopping took {:?}", t.elapsed());
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
