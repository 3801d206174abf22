//! PM2's `jlist` / `describe` shape of one process, from plain facts (no coordinator state).
//!
//! Keys come in PM2's order (`pid`, `name`, `pm2_env`, `pm_id`, `monit`; inside `pm2_env`, the
//! order PM2's own objects have), which scripts that read the text rely on; serde_json keeps
//! insertion order (its `preserve_order` feature).
//!
//! `pm2_env.env` holds the instance's environment as PM2 shows it: the inherited variables, the
//! app's `env` (numbers in the file stay numbers), the instance's `increment_var` value, `PORT`
//! and `unique_id`; its variables are also copied to the top level of `pm2_env` (where PM2's
//! own keys win), as PM2 does. Secrets are redacted or left out by [`crate::redact`]. Only the
//! control socket (private to the uid that runs the runtime, as PM2's own socket) may show
//! them: callers say so explicitly with [`Env::Include`]. Anything served over the network
//! (HTTP endpoints, PM2 Plus) must use [`Env::Omit`].

use std::ffi::OsString;

use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::status::{Status, StatusTable};
use crate::config::{App, ExecMode, Watch};

/// PM2's `username`: the runtime's `$USER`, read once.
static USERNAME: LazyLock<String> = LazyLock::new(|| std::env::var("USER").unwrap_or_else(|_| "root".into()));

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// The `jlist` rows of the table (`only`: these pm_ids), with or without the apps' env values:
/// the socket includes them, the HTTP API never does. Reads nothing from disk (the package
/// version was read when each process started).
pub fn rows(table: &StatusTable, only: Option<&[u32]>, env: Env) -> Vec<Value> {
    let mut out = Vec::new();
    let inherited: Vec<_> = if env == Env::Include { std::env::vars_os().collect() } else { Vec::new() };
    let pm2_home = crate::pm2_home();
    for row in table.instances.iter().filter(|r| only.is_none_or(|o| o.contains(&r.pm_id))) {
        let app = &row.app;
        let id = row.pm_id;
        let log = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| app.instance_path(p, id).to_string_lossy().into_owned());
        let facts = Facts {
            app,
            pm_id: id,
            instance: row.instance,
            status: row.status_str(),
            pid: row.pid().unwrap_or(0),
            restart_time: row.restart_time(),
            prev_restart_delay: row.prev_restart_delay(),
            pm_uptime: row.started_at().map(ms).unwrap_or(0),
            created_at: ms(row.created_at),
            unique_id: &row.unique_id,
            exit_code: row.last_exit().map(|e| e.as_code()),
            stopped_manually: row.manual() && row.status() == Some(Status::Stopped),
            out_log: log(&app.out_file),
            err_log: log(&app.error_file),
            combined_log: log(&app.log_file),
            pid_path: crate::config::pid_path(app.pid_file.as_deref(), &app.name, id, std::path::Path::new(&pm2_home))
                .to_string_lossy()
                .into_owned(),
            memory: row.sample.memory_bytes,
            cpu: row.sample.cpu_percent,
            version: row.version(),
            username: &USERNAME,
            axm_monitor: &row.axm_monitor,
            axm_actions: &row.axm_actions,
            inherited: &inherited,
        };
        let mut e = entry(&facts, env);
        if let Some(pm2_env) = e.get_mut("pm2_env").and_then(Value::as_object_mut) {
            // The death certificate of its last process (pm-runtime's own key).
            if let Some(d) = row.death() {
                let mut last = d.json();
                // Its stderr lines are app output: on the private socket only (over HTTP, the
                // history endpoint gives them with the token).
                if env == Env::Omit
                    && let Some(o) = last.as_object_mut()
                {
                    o.remove("stderr");
                }
                pm2_env.insert("last_exit".into(), last);
            }
            // With a readiness probe (our extension), whether it passes.
            if app.readiness_probe.is_some() {
                pm2_env.insert("ready".into(), row.ready().into());
            }
            // Its probes' states for the running process (our extension): state, failures in a
            // row, and why the last failed check failed.
            if let Some(probes) = row.last.as_ref().filter(|u| u.pid.is_some()).and_then(|u| u.probes.json()) {
                pm2_env.insert("probes".into(), probes);
            }
            // The event-loop lag the preload's heartbeat measured (our extension; apps with `watchdog`).
            if let Some(lag) = row.event_loop_lag {
                pm2_env.insert("event_loop_lag_ms".into(), ((lag * 1000.0 * 10.0).round() / 10.0).into());
            }
            // Held by depends_on / roles (our extension): `waiting`, and what for.
            if row.status().is_none()
                && let Some(w) = table.apps.iter().find(|a| a.app.name == app.name).and_then(|a| a.waiting_on.as_deref())
            {
                pm2_env.insert("status".into(), "waiting".into());
                pm2_env.insert("waiting_on".into(), w.into());
            }
        }
        out.push(e);
    }
    out
}

/// Whether the app's environment values are part of the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Env {
    /// The local control socket only (`jlist`, `show`, `ls`).
    Include,
    /// Everything else.
    Omit,
}

/// What is known of one process at the time of the listing.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub app: &'a App,
    pub pm_id: u32,
    /// The instance number (`NODE_APP_INSTANCE` or the configured `instance_var`).
    pub instance: u32,
    pub status: &'a str,
    /// 0 when not running.
    pub pid: u32,
    pub restart_time: u32,
    /// PM2's `prev_restart_delay`: the delay of the last restart with
    /// `exp_backoff_restart_delay`, zero when none.
    pub prev_restart_delay: std::time::Duration,
    /// Start of the current process, ms since the epoch (0 when not running).
    pub pm_uptime: u64,
    /// When the instance was created, ms since the epoch.
    pub created_at: u64,
    /// PM2's `unique_id` (a UUID per instance, kept across restarts).
    pub unique_id: &'a str,
    pub exit_code: Option<i32>,
    /// Stopped on request: PM2 turns `watch` off then.
    pub stopped_manually: bool,
    /// The log paths of this instance (after `-<pm_id>` naming), when configured.
    pub out_log: Option<String>,
    pub err_log: Option<String>,
    pub combined_log: Option<String>,
    /// PM2's `pm_pid_path` of this instance (see [`crate::config::pid_path`]).
    pub pid_path: String,
    pub memory: u64,
    pub cpu: f64,
    /// `version` from the app's package.json, else "N/A".
    pub version: &'a str,
    pub username: &'a str,
    /// `@pm2/io` custom metrics and actions, as the app declared them.
    pub axm_monitor: &'a Map<String, Value>,
    pub axm_actions: &'a [Value],
    /// The runtime's own environment (what the app inherits, before `filter_env`).
    pub inherited: &'a [(OsString, OsString)],
}

/// The instance's environment as PM2's `pm2_env.env` shows it, secrets redacted or left out.
fn instance_env(f: &Facts) -> Map<String, Value> {
    use crate::redact::{REDACTED, Shown, shown};
    let app = f.app;
    let mut env = Map::new();
    for (k, v) in super::env::inherited(f.inherited, app) {
        env.insert(k.to_string_lossy().into_owned(), json!(v.to_string_lossy()));
    }
    for (k, v) in &app.env {
        env.insert(k.clone(), if app.env_numbers.contains(k) { number(v) } else { json!(v) });
    }
    if let Some((var, value)) = super::env::increment_value(app, f.instance) {
        env.insert(var.to_string(), json!(value));
    }
    if let Some(port) = app.port {
        env.insert("PORT".into(), json!(port));
    }
    env.insert("unique_id".into(), json!(f.unique_id));
    env.into_iter()
        .filter_map(|(k, v)| match shown(&k, &app.secret_keys, &app.redact) {
            Shown::Never => None,
            Shown::Redacted => Some((k, json!(REDACTED))),
            Shown::Plain => Some((k, v)),
        })
        .collect()
}

/// A number from the file, as JSON shows it (integers stay integers).
fn number(v: &str) -> Value {
    if let Ok(i) = v.parse::<i64>() {
        return json!(i);
    }
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() => json!(x),
        _ => json!(v),
    }
}

/// One process, as PM2's `jlist` shows it.
pub fn entry(f: &Facts, env: Env) -> Value {
    let app = f.app;
    let watch = match (&app.watch, f.stopped_manually) {
        (Watch::Off, _) | (_, true) => json!(false),
        (Watch::Cwd, _) => json!(true),
        (Watch::Paths(ps), _) => json!(ps),
    };
    let mut e = Map::new();
    let mut put = |k: &str, v: Value| {
        e.insert(k.to_string(), v);
    };
    put("kill_retry_time", json!(app.kill_retry_time.as_millis() as u64));
    put("username", json!(f.username));
    put("treekill", json!(app.treekill));
    put("instance_var", json!(app.instance_var));
    put("watch", watch);
    if !app.ignore_watch.is_empty() {
        put("ignore_watch", json!(app.ignore_watch));
    }
    put("autorestart", json!(app.autorestart));
    put("autostart", json!(app.autostart));
    if let Some(m) = app.merge_logs {
        put("merge_logs", json!(m));
    }
    let shown = (env == Env::Include).then(|| instance_env(f));
    if let Some(vars) = &shown {
        put("env", Value::Object(vars.clone()));
    }
    put("namespace", json!(app.namespace));
    put("name", json!(app.name));
    put("node_args", json!(app.interpreter_args));
    put("pm_exec_path", json!(app.exec_path));
    put("pm_cwd", json!(app.cwd));
    put("exec_interpreter", json!(app.command.interpreter));
    put("exec_mode", json!(if app.exec_mode == ExecMode::Cluster { "cluster_mode" } else { "fork_mode" }));
    put("pm_out_log_path", json!(f.out_log));
    put("pm_err_log_path", json!(f.err_log));
    put("pm_pid_path", json!(f.pid_path));
    if let Some(p) = &f.combined_log {
        put("pm_log_path", json!(p));
    }
    put("kill_timeout", json!(app.kill_timeout.as_millis() as u64));
    put("restart_delay", json!(app.restart_delay.as_millis() as u64));
    if let Some(m) = app.max_memory_restart {
        put("max_memory_restart", json!(m));
    }
    if let Some(d) = app.exp_backoff_restart_delay {
        put("exp_backoff_restart_delay", json!(d.as_millis() as u64));
    }
    put(&app.instance_var, json!(f.instance));
    put("status", json!(f.status));
    put("pm_uptime", json!(f.pm_uptime));
    put("created_at", json!(f.created_at));
    put("unique_id", json!(f.unique_id));
    put("axm_monitor", Value::Object(f.axm_monitor.clone()));
    put("axm_actions", json!(f.axm_actions));
    put("pm_id", json!(f.pm_id));
    put("restart_time", json!(f.restart_time));
    put("prev_restart_delay", json!(f.prev_restart_delay.as_millis() as u64));
    put("version", json!(f.version));
    put("exit_code", json!(f.exit_code));
    // PM2's keys that have no effect here are in pm2_env as configured, `vizion` with PM2's default.
    put("vizion", app.ignored.get("vizion").cloned().unwrap_or(json!(true)));
    put("vizion_running", json!(false));
    for (k, v) in &app.ignored {
        e.entry(k.clone()).or_insert_with(|| v.clone());
    }
    // PM2 copies the env to the top level of pm2_env (tools read `pm2_env.PORT`); its own keys win.
    for (k, v) in shown.into_iter().flatten() {
        e.entry(k).or_insert(v);
    }
    json!({
        "pid": f.pid,
        "name": app.name,
        "pm2_env": Value::Object(e),
        "pm_id": f.pm_id,
        "monit": { "memory": f.memory, "cpu": f.cpu },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> App {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.js"), "").unwrap();
        let yml = format!(
            "apps:\n  - name: web\n    cwd: {}\n    script: a.js\n    instance_var: INSTANCE_ID\n    watch: [src]\n    ignore_watch: [tmp]\n    node_args: --inspect\n    exp_backoff_restart_delay: 100\n    out_file: out.log\n    log_file: all.log\n    env:\n      SECRET: hunter2\n      API_TOKEN: t0k3n\n",
            dir.path().display()
        );
        std::fs::write(dir.path().join("e.yml"), yml).unwrap();
        crate::config::load(&dir.path().join("e.yml"), &Default::default()).unwrap().apps.remove(0)
    }

    static NO_METRICS: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);

    fn facts(app: &App) -> Facts<'_> {
        Facts {
            app,
            pm_id: 3,
            instance: 1,
            status: "online",
            pid: 42,
            restart_time: 2,
            prev_restart_delay: std::time::Duration::from_millis(150),
            pm_uptime: 1000,
            created_at: 900,
            unique_id: "0e9b8c1a-0000-4000-8000-000000000000",
            exit_code: None,
            stopped_manually: false,
            out_log: Some("/x/out.log".into()),
            err_log: None,
            combined_log: Some("/x/all.log".into()),
            pid_path: "/h/.pm2/pids/web-0.pid".into(),
            memory: 1,
            cpu: 0.5,
            version: "N/A",
            username: "root",
            axm_monitor: &NO_METRICS,
            axm_actions: &[],
            inherited: &[],
        }
    }

    #[test]
    fn pm2_order_and_fields() {
        let app = app();
        let v = entry(&facts(&app), Env::Include);
        let top: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(top, ["pid", "name", "pm2_env", "pm_id", "monit"]);
        let text = v.to_string();
        assert!(text.starts_with(r#"{"pid":42,"name":"web","pm2_env":{"#), "{text}");
        let e = &v["pm2_env"];
        assert_eq!(e["INSTANCE_ID"], 1);
        assert!(e.get("NODE_APP_INSTANCE").is_none());
        assert_eq!(e["instance_var"], "INSTANCE_ID");
        assert_eq!(e["watch"].as_array().unwrap().len(), 1);
        assert_eq!(e["watch"], json!(["src"]), "as configured, as PM2 shows it");
        assert_eq!(e["ignore_watch"], json!(["tmp"]));
        assert_eq!(e["node_args"], json!(["--inspect"]));
        assert_eq!(e["exp_backoff_restart_delay"], 100);
        assert_eq!(e["prev_restart_delay"], 150);
        assert_eq!(e["pm_out_log_path"], "/x/out.log");
        assert_eq!(e["pm_err_log_path"], Value::Null);
        assert_eq!(e["pm_log_path"], "/x/all.log");
        assert_eq!(e["env"]["SECRET"], "hunter2");
        assert_eq!(e["env"]["API_TOKEN"], "[redacted]");
    }

    #[test]
    fn env_only_when_asked_and_watch_off_after_a_stop() {
        let app = app();
        let mut f = facts(&app);
        f.stopped_manually = true;
        f.status = "stopped";
        let v = entry(&f, Env::Omit);
        assert!(v["pm2_env"].get("env").is_none());
        assert!(!v.to_string().contains("hunter2"));
        assert_eq!(v["pm2_env"]["watch"], false);
    }

    #[test]
    fn last_exit_is_the_death_certificate_with_stderr_on_the_socket_only() {
        use crate::supervisor::status::{Death, ExitReason, InstanceStatus, Report, Status, Update};
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let death = Death {
            pid: 42,
            exit: crate::process::Exit::Signal(9),
            reason: ExitReason::OomKilled,
            uptime: std::time::Duration::from_millis(2500),
            at,
            stderr: vec!["FATAL ERROR: heap out of memory".into()],
        };
        let row = InstanceStatus {
            pm_id: 0,
            app: std::sync::Arc::new(app()),
            instance: 0,
            unique_id: "u".into(),
            last: Some(Update {
                pm_id: 0,
                since: None,
                version: None,
                report: Report::of(Status::Online),
                death: Some(std::sync::Arc::new(death)),
            }),
            restarts: Default::default(),
            created_at: at,
            sample: Default::default(),
            event_loop_lag: None,
            axm_monitor: Default::default(),
            axm_actions: Default::default(),
        };
        let table = StatusTable { instances: vec![row], ..Default::default() };
        let local = &rows(&table, None, Env::Include)[0]["pm2_env"]["last_exit"];
        assert_eq!(local["reason"], "oom_killed");
        assert_eq!(local["signal"], "SIGKILL");
        assert_eq!(local["code"], Value::Null);
        assert_eq!(local["pid"], 42);
        assert_eq!(local["uptime_ms"], 2500);
        assert_eq!(local["at"], 1_700_000_000_000u64);
        assert_eq!(local["stderr"], json!(["FATAL ERROR: heap out of memory"]));
        let remote = &rows(&table, None, Env::Omit)[0]["pm2_env"]["last_exit"];
        assert_eq!(remote["reason"], "oom_killed");
        assert!(remote.get("stderr").is_none(), "app output only with the token: {remote}");
    }
}
