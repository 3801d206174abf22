//! The environment an app instance receives, built the way PM2 builds it (spec §3.5).
//!
//! Pure: the inherited environment and every per-instance fact are passed in. Precedence, low
//! to high: the runtime's environment (minus `filter_env`), PM2's per-process variables
//! (`name`, `pm_id`, `NODE_APP_INSTANCE`, …), then the app's `env` (which already holds
//! `env_<name>` for `--env`). `PORT` from `port` wins over all of them, as in PM2.

use std::ffi::{OsStr, OsString};

use crate::config::{App, ExecMode, FilterEnv};

/// Per-instance facts that end up in the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceFacts {
    pub pm_id: u32,
    /// Value of `instance_var` (`NODE_APP_INSTANCE`): 0…N-1 within the app, gap-filled.
    pub instance: u32,
    pub unique_id: String,
    pub restart_time: u32,
    pub unstable_restarts: u32,
    /// Milliseconds since the epoch.
    pub created_at: u64,
    pub pm_uptime: u64,
    pub pm2_home: String,
    /// `HOME` of the `uid` the app runs as, when it has one.
    pub home: Option<String>,
}

/// Variables of the runtime's own environment that must never leak into an app: they describe
/// *our* parent's IPC channel or cluster role, not the app's.
const NEVER_INHERIT: &[&str] = &[
    "NODE_CHANNEL_FD",
    "NODE_CHANNEL_SERIALIZATION_MODE",
    "NODE_UNIQUE_ID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    // The PM2 Plus secret is the runtime's, not the apps' (an app that prints its environment
    // would leak it); an app that needs it sets it in its own `env`.
    "PM2_SECRET_KEY",
    "KEYMETRICS_SECRET",
    // The HTTP API's write token: whoever holds it may stop, restart and scale every app, and
    // read every app's logs. An app dropped to another uid could not read its 0600 file either.
    "PM_RUNTIME_WEB_TOKEN",
];

/// The part of the runtime's environment an app inherits (`filter_env` applied, the runtime's
/// own channel and secrets left out).
pub fn inherited(inherited: &[(OsString, OsString)], app: &App) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = match &app.filter_env {
        FilterEnv::DropAll => Vec::new(),
        FilterEnv::Inherit => inherited.to_vec(),
        FilterEnv::DropMatching(parts) => {
            inherited.iter().filter(|(k, _)| !parts.iter().any(|p| k.to_string_lossy().contains(p.as_str()))).cloned().collect()
        }
        FilterEnv::DropExact(name) => inherited.iter().filter(|(k, _)| k != name.as_str()).cloned().collect(),
    };
    env.retain(|(k, _)| !NEVER_INHERIT.iter().any(|n| OsStr::new(n) == k));
    env
}

/// The value of `increment_var` for an instance: the configured value (or 0), +1 per instance.
pub fn increment_value(app: &App, instance: u32) -> Option<(&str, i64)> {
    let var = app.increment_var.as_deref()?;
    let base = app.env.get(var).and_then(|v| v.trim().parse::<i64>().ok()).unwrap_or(0);
    Some((var, base + i64::from(instance)))
}

pub fn build(inherited_env: &[(OsString, OsString)], app: &App, f: &InstanceFacts) -> Vec<(OsString, OsString)> {
    let mut env = inherited(inherited_env, app);
    let mode = match app.exec_mode {
        ExecMode::Fork => "fork_mode",
        ExecMode::Cluster => "cluster_mode",
    };
    let mut pm2: Vec<(&str, String)> = vec![
        ("name", app.name.clone()),
        ("namespace", app.namespace.clone()),
        ("pm_id", f.pm_id.to_string()),
        ("exec_mode", mode.to_string()),
        ("exec_interpreter", app.command.interpreter.clone()),
        ("instance_var", app.instance_var.clone()),
        ("status", "launching".to_string()),
        ("pm_uptime", f.pm_uptime.to_string()),
        ("created_at", f.created_at.to_string()),
        ("restart_time", f.restart_time.to_string()),
        ("unstable_restarts", f.unstable_restarts.to_string()),
        ("unique_id", f.unique_id.clone()),
        ("pm_cwd", app.cwd.to_string_lossy().into_owned()),
        ("pm_exec_path", app.exec_path.to_string_lossy().into_owned()),
        ("autorestart", app.autorestart.to_string()),
        ("autostart", app.autostart.to_string()),
        ("treekill", app.treekill.to_string()),
        ("kill_timeout", app.kill_timeout.as_millis().to_string()),
        ("kill_retry_time", app.kill_retry_time.as_millis().to_string()),
        ("PM2_HOME", f.pm2_home.clone()),
    ];
    pm2.push((app.instance_var.as_str(), f.instance.to_string()));
    if let Some(bytes) = app.max_memory_restart {
        pm2.push(("max_memory_restart", bytes.to_string()));
    }
    if let Some(cron) = &app.cron_restart {
        pm2.push(("cron_restart", cron.clone()));
    }
    if !app.restart_delay.is_zero() {
        pm2.push(("restart_delay", app.restart_delay.as_millis().to_string()));
    }
    for (key, path) in [("pm_out_log_path", &app.out_file), ("pm_err_log_path", &app.error_file), ("pm_log_path", &app.log_file)] {
        if let Some(p) = path {
            pm2.push((key, p.to_string_lossy().into_owned()));
        }
    }
    let pid_path = crate::config::pid_path(app.pid_file.as_deref(), &app.name, f.pm_id, std::path::Path::new(&f.pm2_home));
    pm2.push(("pm_pid_path", pid_path.to_string_lossy().into_owned()));
    if app.command.interpreter.contains("python") {
        pm2.push(("PYTHONUNBUFFERED", "1".to_string()));
    }
    if let Some(home) = &f.home {
        pm2.push(("HOME", home.clone()));
    }
    for (k, v) in pm2 {
        set(&mut env, k, &v);
    }
    for (k, v) in &app.env {
        set(&mut env, k, v);
    }
    // increment_var: the first instance gets the configured value (or 0), the next ones +1 each.
    if let Some((var, value)) = increment_value(app, f.instance) {
        set(&mut env, var, &value.to_string());
    }
    if let Some(port) = app.port {
        set(&mut env, "PORT", &port.to_string());
    }
    // An app with an OTel service name (ours, when OTLP export is on, or its own) tells its SDK
    // which instance it is, as the runtime's OTLP data names it.
    let get = |env: &[(OsString, OsString)], key: &str| env.iter().find(|(k, _)| k == key).map(|(_, v)| v.to_string_lossy().into_owned());
    let service = get(&env, "OTEL_SERVICE_NAME");
    if let Some(attrs) =
        crate::otel::instance_attributes(service.as_deref(), get(&env, "OTEL_RESOURCE_ATTRIBUTES").as_deref(), &app.name, f.instance)
    {
        set(&mut env, "OTEL_RESOURCE_ATTRIBUTES", &attrs);
    }
    if app.exec_mode == ExecMode::Cluster && app.command.is_node {
        // Makes `require('cluster')` a worker whose primary is pm-runtime; ids start at 1.
        set(&mut env, "NODE_UNIQUE_ID", &crate::cluster::worker_id(f.pm_id).to_string());
    }
    env
}

fn set(env: &mut Vec<(OsString, OsString)>, key: &str, value: &str) {
    match env.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value.into(),
        None => env.push((key.into(), value.into())),
    }
}
