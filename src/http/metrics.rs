//! `/metrics`: the status table and the runtime's counters in Prometheus' text format (0.0.4).
//!
//! Names follow Prometheus conventions: one prefix, base units in names, `_total` counters, labels
//! `app`, `instance` (`NODE_APP_INSTANCE`) and `pm_id`, never `pid` (a new pid per restart would
//! make new series). Pure: the caller passes the table, the counters and the clock.

use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::supervisor::status::{ExitReason, RestartReason, Status, StatusTable};

/// The runtime's own numbers, read when a scrape comes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimeStats {
    /// App lines read: (stdout, stderr).
    pub log_lines: (u64, u64),
    pub log_blocked_seconds: f64,
    pub reaped_orphans: u64,
    pub process: crate::process::own::SelfStats,
}

/// Every status an instance can have, for the `_status{status}` state set.
const STATUSES: [&str; 6] = ["launching", "online", "stopping", "stopped", "errored", "waiting restart"];

/// A label value, escaped as the text format wants.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Renders the whole exposition. `compat_pm2` adds the names of the PM2 Prometheus exporter.
pub fn render(table: &StatusTable, stats: &RuntimeStats, compat_pm2: bool, now: SystemTime) -> String {
    let mut out = String::with_capacity(512 + table.instances.len() * 1400);
    let labels: Vec<String> =
        table.instances.iter().map(|i| format!("app=\"{}\",instance=\"{}\",pm_id=\"{}\"", esc(&i.app.name), i.instance, i.pm_id)).collect();
    let each = |out: &mut String, name: &str, kind: &str, help: &str, value: &dyn Fn(usize) -> Option<String>| {
        head(out, name, kind, help);
        for (n, l) in labels.iter().enumerate() {
            if let Some(v) = value(n) {
                let _ = writeln!(out, "{name}{{{l}}} {v}");
            }
        }
    };
    let rows = &table.instances;
    // Resource series only once the sampler has seen the process (a live tree is never 0 bytes).
    let sampled = |n: usize| rows[n].pid().is_some() && rows[n].sample.memory_bytes > 0;
    each(&mut out, "pm_runtime_app_up", "gauge", "1 when the instance is online.", &|n| {
        Some(u8::from(rows[n].status() == Some(Status::Online)).to_string())
    });
    each(
        &mut out,
        "pm_runtime_app_event_loop_lag_seconds",
        "gauge",
        "How late the watchdog's heartbeat timer last fired in the app (Node apps with `watchdog`).",
        &|n| rows[n].event_loop_lag.map(|s| s.to_string()),
    );
    each(&mut out, "pm_runtime_app_ready", "gauge", "1 when the instance is online and ready (listening, 'ready' sent, READY=1).", &|n| {
        Some(u8::from(rows[n].ready()).to_string())
    });
    head(
        &mut out,
        "pm_runtime_app_probe_failures",
        "gauge",
        "Checks of the instance's liveness or readiness probe failed in a row (0 while it passes), for the running process.",
    );
    for (n, l) in labels.iter().enumerate() {
        let Some(probes) = rows[n].last.as_ref().filter(|u| u.pid.is_some()).map(|u| &u.probes) else { continue };
        for (kind, view) in [("liveness", &probes.liveness), ("readiness", &probes.readiness)] {
            if let Some(v) = view {
                let _ = writeln!(out, "pm_runtime_app_probe_failures{{{l},probe=\"{kind}\"}} {}", v.failures);
            }
        }
    }
    head(&mut out, "pm_runtime_app_status", "gauge", "The instance's status (a state set: 1 for the current one).");
    for (n, l) in labels.iter().enumerate() {
        let current = rows[n].status_str();
        for s in STATUSES {
            let _ = writeln!(out, "pm_runtime_app_status{{{l},status=\"{s}\"}} {}", u8::from(s == current));
        }
    }
    head(&mut out, "pm_runtime_app_restarts_total", "counter", "Restarts of the instance since it was created, by reason.");
    for (n, l) in labels.iter().enumerate() {
        for r in RestartReason::ALL {
            let _ = writeln!(out, "pm_runtime_app_restarts_total{{{l},reason=\"{}\"}} {}", r.as_str(), rows[n].restarts.get(r));
        }
    }
    each(&mut out, "pm_runtime_app_last_exit_code", "gauge", "Exit code of the instance's last process (128+N for signal N).", &|n| {
        rows[n].last_exit().map(|e| e.as_code().to_string())
    });
    head(&mut out, "pm_runtime_app_last_exit_reason", "gauge", "Why the instance's last process ended (a state set: 1 for the reason).");
    for (n, l) in labels.iter().enumerate() {
        if let Some(d) = rows[n].death() {
            for r in ExitReason::ALL {
                let _ = writeln!(out, "pm_runtime_app_last_exit_reason{{{l},reason=\"{}\"}} {}", r.as_str(), u8::from(r == d.reason));
            }
        }
    }
    each(
        &mut out,
        "pm_runtime_app_start_time_seconds",
        "gauge",
        "When the instance's current process started, seconds since the epoch.",
        &|n| rows[n].started_at().map(|t| format!("{:.3}", secs(t))),
    );
    each(&mut out, "pm_runtime_app_cpu_seconds_total", "counter", "CPU time (user+system) of the instance's process tree.", &|n| {
        sampled(n).then(|| rows[n].sample.cpu_seconds.to_string())
    });
    each(&mut out, "pm_runtime_app_resident_memory_bytes", "gauge", "Resident memory of the instance's whole process tree.", &|n| {
        sampled(n).then(|| rows[n].sample.memory_bytes.to_string())
    });
    each(&mut out, "pm_runtime_app_memory_limit_bytes", "gauge", "max_memory_restart of the instance's app.", &|n| {
        rows[n].app.max_memory_restart.map(|b| b.to_string())
    });
    head(&mut out, "pm_runtime_app_instances", "gauge", "Instances of the app: desired (after scale) and running (online).");
    for a in &table.apps {
        let running = rows.iter().filter(|i| i.app.name == a.app.name && i.status() == Some(Status::Online)).count();
        let app = esc(&a.app.name);
        let _ = writeln!(out, "pm_runtime_app_instances{{app=\"{app}\",state=\"desired\"}} {}", a.desired);
        let _ = writeln!(out, "pm_runtime_app_instances{{app=\"{app}\",state=\"running\"}} {running}");
    }

    if let Some(c) = &table.container {
        let mut gauge = |name: &str, kind: &str, help: &str, v: Option<String>| {
            if let Some(v) = v {
                head(&mut out, name, kind, help);
                let _ = writeln!(out, "{name} {v}");
            }
        };
        gauge(
            "pm_runtime_container_memory_limit_bytes",
            "gauge",
            "The container's memory limit (cgroup memory.max / memory.limit_in_bytes); absent when unlimited.",
            c.limits.memory.map(|b| b.to_string()),
        );
        gauge(
            "pm_runtime_container_memory_usage_bytes",
            "gauge",
            "The container's memory in use (cgroup memory.current / memory.usage_in_bytes).",
            c.usage.map(|u| u.bytes.to_string()),
        );
        gauge(
            "pm_runtime_container_memory_working_set_bytes",
            "gauge",
            "The container's memory in use minus inactive file cache (what the OOM killer counts).",
            c.usage.map(|u| u.working_set.to_string()),
        );
        gauge(
            "pm_runtime_container_cpu_limit",
            "gauge",
            "CPUs the container's quota allows; absent when unlimited.",
            c.limits.cpu.map(|c| c.to_string()),
        );
        gauge(
            "pm_runtime_container_oom_kills_total",
            "counter",
            "Processes the kernel's OOM killer killed in the container.",
            c.oom_kills.map(|k| k.to_string()),
        );
    }
    head(&mut out, "pm_runtime_log_lines_total", "counter", "App log lines read, by stream.");
    let _ = writeln!(out, "pm_runtime_log_lines_total{{stream=\"out\"}} {}", stats.log_lines.0);
    let _ = writeln!(out, "pm_runtime_log_lines_total{{stream=\"err\"}} {}", stats.log_lines.1);
    head(
        &mut out,
        "pm_runtime_log_blocked_seconds_total",
        "counter",
        "Time app output waited because the runtime's stdout/stderr was slow.",
    );
    let _ = writeln!(out, "pm_runtime_log_blocked_seconds_total {}", stats.log_blocked_seconds);
    head(&mut out, "pm_runtime_reaped_orphans_total", "counter", "Orphaned processes reaped by the runtime (PID 1 / subreaper).");
    let _ = writeln!(out, "pm_runtime_reaped_orphans_total {}", stats.reaped_orphans);
    head(&mut out, "pm_runtime_build_info", "gauge", "The runtime's version.");
    let _ = writeln!(out, "pm_runtime_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));

    let p = &stats.process;
    head(&mut out, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.");
    let _ = writeln!(out, "process_cpu_seconds_total {}", p.cpu_seconds);
    head(&mut out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    let _ = writeln!(out, "process_resident_memory_bytes {}", p.resident_memory_bytes);
    head(&mut out, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
    let _ = writeln!(out, "process_virtual_memory_bytes {}", p.virtual_memory_bytes);
    head(&mut out, "process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.");
    let _ = writeln!(out, "process_start_time_seconds {}", p.start_time_seconds);
    head(&mut out, "process_open_fds", "gauge", "Number of open file descriptors.");
    let _ = writeln!(out, "process_open_fds {}", p.open_fds);
    if let Some(max) = p.max_fds {
        head(&mut out, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
        let _ = writeln!(out, "process_max_fds {max}");
    }

    if compat_pm2 {
        // The names and labels of the most used PM2 exporter, so existing dashboards keep working.
        let compat: Vec<String> =
            rows.iter().map(|i| format!("id=\"{}\",name=\"{}\",instance=\"{}\"", i.pm_id, esc(&i.app.name), i.instance)).collect();
        let gauge = |out: &mut String, name: &str, help: &str, value: &dyn Fn(usize) -> String| {
            head(out, name, "gauge", help);
            for (n, l) in compat.iter().enumerate() {
                let _ = writeln!(out, "{name}{{{l}}} {}", value(n));
            }
        };
        gauge(&mut out, "pm2_up", "Is the process running", &|n| u8::from(rows[n].status() == Some(Status::Online)).to_string());
        gauge(&mut out, "pm2_cpu", "Process cpu usage", &|n| rows[n].sample.cpu_percent.to_string());
        gauge(&mut out, "pm2_memory", "Process memory", &|n| rows[n].sample.memory_bytes.to_string());
        gauge(&mut out, "pm2_uptime", "Process uptime", &|n| {
            rows[n].started_at().map_or(0, |t| now.duration_since(t).unwrap_or_default().as_secs()).to_string()
        });
        gauge(&mut out, "pm2_instances", "Process instances", &|n| {
            table.apps.iter().find(|a| a.app.name == rows[n].app.name).map_or(0, |a| a.desired).to_string()
        });
        gauge(&mut out, "pm2_restarts", "Process restarts", &|n| rows[n].restart_time().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    use crate::supervisor::status::{AppStatus, InstanceStatus, Report, RestartCounts, Sample, Update};

    fn app(name: &str, limit: Option<u64>) -> Arc<crate::config::App> {
        let mut a = crate::http::test_app(name);
        a.max_memory_restart = limit;
        a.env.insert("SECRET".into(), "hunter2".into());
        Arc::new(a)
    }

    fn table() -> StatusTable {
        let web = app("we\"b", Some(150 << 20));
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut restarts = RestartCounts::default();
        restarts.add(RestartReason::Crash);
        restarts.add(RestartReason::Crash);
        let row = |pm_id, instance, status: Option<Status>, pid: Option<u32>| InstanceStatus {
            pm_id,
            app: web.clone(),
            instance,
            unique_id: "u".into(),
            last: status.map(|s| Update {
                pm_id,
                since: pid.map(|_| t0),
                version: None,
                report: Report { pid, restart_time: 2, last_exit: Some(crate::process::Exit::Signal(9)), ..Report::of(s) },
                death: (pm_id == 0).then(|| {
                    Arc::new(crate::supervisor::status::Death {
                        pid: 7,
                        exit: crate::process::Exit::Signal(9),
                        reason: ExitReason::OomKilled,
                        uptime: Duration::from_secs(3),
                        at: t0,
                        stderr: vec!["out of memory".into()],
                    })
                }),
            }),
            restarts,
            created_at: t0,
            sample: Sample { memory_bytes: 1024, cpu_percent: 12.5, cpu_seconds: 3.25 },
            axm_monitor: Default::default(),
            axm_actions: Default::default(),
            event_loop_lag: None,
        };
        StatusTable {
            instances: vec![row(0, 0, Some(Status::Online), Some(100)), row(1, 1, Some(Status::WaitingRestart), None)],
            apps: vec![AppStatus { app: web.clone(), desired: 2, waiting_on: None }],
            stopping: false,
            sampled_at: None,
            container: Some(crate::supervisor::status::Container {
                version: crate::process::cgroup::Version::V2,
                limits: crate::process::cgroup::Limits { memory: Some(512 << 20), memory_high: None, oom_group: true, cpu: Some(1.5) },
                usage: Some(crate::process::cgroup::Usage { bytes: 300, working_set: 200 }),
                oom_kills: Some(2),
            }),
        }
    }

    #[test]
    fn renders_every_series_with_app_instance_pm_id_labels() {
        let stats = RuntimeStats {
            log_lines: (10, 2),
            log_blocked_seconds: 0.5,
            reaped_orphans: 3,
            process: crate::process::own::SelfStats::read(),
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_060);
        let text = render(&table(), &stats, false, now);
        let l0 = "app=\"we\\\"b\",instance=\"0\",pm_id=\"0\"";
        for want in [
            format!("pm_runtime_app_up{{{l0}}} 1"),
            "pm_runtime_app_up{app=\"we\\\"b\",instance=\"1\",pm_id=\"1\"} 0".to_string(),
            format!("pm_runtime_app_ready{{{l0}}} 1"),
            format!("pm_runtime_app_status{{{l0},status=\"online\"}} 1"),
            format!("pm_runtime_app_status{{{l0},status=\"errored\"}} 0"),
            "pm_runtime_app_status{app=\"we\\\"b\",instance=\"1\",pm_id=\"1\",status=\"waiting restart\"} 1".to_string(),
            format!("pm_runtime_app_restarts_total{{{l0},reason=\"crash\"}} 2"),
            format!("pm_runtime_app_restarts_total{{{l0},reason=\"reload\"}} 0"),
            format!("pm_runtime_app_last_exit_code{{{l0}}} 137"),
            format!("pm_runtime_app_last_exit_reason{{{l0},reason=\"oom_killed\"}} 1"),
            format!("pm_runtime_app_last_exit_reason{{{l0},reason=\"exit\"}} 0"),
            "pm_runtime_container_memory_limit_bytes 536870912".into(),
            "pm_runtime_container_memory_usage_bytes 300".into(),
            "pm_runtime_container_memory_working_set_bytes 200".into(),
            "pm_runtime_container_cpu_limit 1.5".into(),
            "pm_runtime_container_oom_kills_total 2".into(),
            format!("pm_runtime_app_start_time_seconds{{{l0}}} 1700000000.000"),
            format!("pm_runtime_app_cpu_seconds_total{{{l0}}} 3.25"),
            format!("pm_runtime_app_resident_memory_bytes{{{l0}}} 1024"),
            format!("pm_runtime_app_memory_limit_bytes{{{l0}}} 157286400"),
            "pm_runtime_app_instances{app=\"we\\\"b\",state=\"desired\"} 2".into(),
            "pm_runtime_app_instances{app=\"we\\\"b\",state=\"running\"} 1".into(),
            "pm_runtime_log_lines_total{stream=\"out\"} 10".into(),
            "pm_runtime_log_lines_total{stream=\"err\"} 2".into(),
            "pm_runtime_log_blocked_seconds_total 0.5".into(),
            "pm_runtime_reaped_orphans_total 3".into(),
            "# TYPE pm_runtime_app_restarts_total counter".into(),
            "# TYPE process_cpu_seconds_total counter".into(),
        ] {
            assert!(text.lines().any(|l| l == want), "missing {want:?} in\n{text}");
        }
        assert!(!text.contains("pid="), "never a pid label");
        assert!(!text.contains("last_exit_reason{app=\"we\\\"b\",instance=\"1\""), "no reason before a first exit");
        assert!(!text.contains("hunter2"));
        assert!(!text.contains("pm2_up"), "compat names only on request");
        // A stopped instance has no start time and no resource numbers.
        assert!(!text.contains("pm_runtime_app_start_time_seconds{app=\"we\\\"b\",instance=\"1\""));
        let compat = render(&table(), &stats, true, now);
        assert!(compat.lines().any(|l| l == "pm2_up{id=\"0\",name=\"we\\\"b\",instance=\"0\"} 1"), "{compat}");
        assert!(compat.lines().any(|l| l == "pm2_uptime{id=\"0\",name=\"we\\\"b\",instance=\"0\"} 60"));
        assert!(compat.lines().any(|l| l == "pm2_restarts{id=\"1\",name=\"we\\\"b\",instance=\"1\"} 2"));
        assert!(compat.lines().any(|l| l == "pm2_instances{id=\"1\",name=\"we\\\"b\",instance=\"1\"} 2"));
    }
}
