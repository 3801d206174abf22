//! Walks the spanned tree of an ecosystem file: finds the apps (`apps`, legacy `pm2`, or the
//! document itself), maps every key and alias of PM2's schema to its canonical name, and checks
//! and converts each value into a [`RawApp`]. Every problem is collected with its position
//! (`file:line:col: apps[1].instances: …`); nothing stops at the first error.
//!
//! Filesystem and PATH resolution (cwd, script, interpreter) happen later, in `resolve`.

use super::model::{Condition, Dependency, ExecMode, FilterEnv, Instances, Principal, Role, Watch};

/// A probe as written: its port may come from the app (`port`, `PORT`), known after `env`.
#[derive(Debug, Clone, Default)]
pub struct RawProbe {
    pub kind: Option<RawCheck>,
    pub initial_delay: Option<Duration>,
    pub period: Option<Duration>,
    pub timeout: Option<Duration>,
    pub failure_threshold: Option<u32>,
    pub success_threshold: Option<u32>,
    /// `port` beside `http`/`tcp` (as well as inside).
    pub port: Option<u16>,
    pub pos: Option<Pos>,
    pub path: String,
}

#[derive(Debug, Clone)]
pub enum RawCheck {
    Http { path: String, port: Option<u16>, status: Option<u16> },
    Tcp { port: Option<u16> },
    Exec { command: String },
}
use super::tree::{Key, Node, Pos, Value};
use super::units;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Collects problems (errors) and warnings, formatted `label:line:col: path: message`.
#[derive(Debug, Default)]
pub struct Reporter {
    /// The file as the user named it (empty for the script form).
    pub label: String,
    pub errors: Vec<super::Problem>,
    pub warnings: Vec<String>,
}

impl Reporter {
    pub fn new(label: impl Into<String>) -> Self {
        Reporter { label: label.into(), ..Default::default() }
    }

    /// One report line, `file:line:col: key: message`, as a [`super::Problem`] renders it.
    pub fn format(&self, pos: Option<Pos>, path: &str, msg: &str) -> String {
        super::Problem::new(Some(&self.label), pos, Some(path), msg).to_string()
    }

    pub fn error(&mut self, pos: Option<Pos>, path: &str, msg: impl AsRef<str>) {
        let label = self.label.clone();
        self.errors.push(super::Problem::new(Some(&label), pos, Some(path), msg.as_ref()));
    }

    pub fn warn(&mut self, pos: Option<Pos>, path: &str, msg: impl AsRef<str>) {
        let line = self.format(pos, path, msg.as_ref());
        self.warnings.push(line);
    }
}

/// Joins a key path: `apps[0]` + `instances` → `apps[0].instances`.
pub fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() { key.to_string() } else { format!("{prefix}.{key}") }
}

/// Canonical keys that configure something here.
pub(crate) const EFFECTIVE_KEYS: &[&str] = &[
    "script",
    "name",
    "namespace",
    "cwd",
    "args",
    "exec_interpreter",
    "node_args",
    "env",
    "filter_env",
    "port",
    "instances",
    "exec_mode",
    "increment_var",
    "instance_var",
    "uid",
    "gid",
    "append_env_to_name",
    "autostart",
    "autorestart",
    "stop_exit_codes",
    "min_uptime",
    "max_restarts",
    "restart_delay",
    "exp_backoff_restart_delay",
    "max_memory_restart",
    "cron_restart",
    "kill_timeout",
    "kill_signal",
    "kill_retry_time",
    "shutdown_with_message",
    "treekill",
    "wait_ready",
    "listen_timeout",
    "listen_fds",
    "node_heap",
    "pm_runtime_preload",
    "role",
    "depends_on",
    "liveness_probe",
    "readiness_probe",
    "watchdog",
    "watch",
    "ignore_watch",
    "watch_options",
    "watch_delay",
    "out_file",
    "error_file",
    "log_file",
    "pid_file",
    "merge_logs",
    "log_date_format",
    "time",
    "log_type",
    "disable_logs",
    "log_max_size",
    "log_retain",
    "env_file",
    "secrets",
    "mask_secrets",
    "redact",
];

/// Keys PM2 accepts that have no effect here: kept verbatim in `App::ignored`, no warning.
pub(crate) const IGNORED_KEYS: &[&str] = &[
    "name_prefix",
    "username",
    "force",
    "install_url",
    "post_update",
    "write",
    "execute_command",
    "io",
    "pmx",
    "automation",
    "vizion",
    "trace",
    "disable_trace",
    "v8",
    "event_loop_inspector",
    "deep_monitoring",
    "windowsHide",
    "source_map_support",
    "disable_source_map_support",
];

/// PM2's explicit aliases (schema.json `alias`, plus `cmd`/`command` from `verifyConfs`).
const ALIASES: &[(&str, &str)] = &[
    ("exec", "script"),
    ("cmd", "script"),
    ("command", "script"),
    ("interpreter", "exec_interpreter"),
    ("interpreter_args", "node_args"),
    ("out", "out_file"),
    ("output", "out_file"),
    ("out_log", "out_file"),
    ("error", "error_file"),
    ("err", "error_file"),
    ("err_file", "error_file"),
    ("err_log", "error_file"),
    ("log", "log_file"),
    ("pid", "pid_file"),
    ("combine_logs", "merge_logs"),
    ("cron", "cron_restart"),
    ("user", "uid"),
];

fn known(k: &str) -> Option<&'static str> {
    EFFECTIVE_KEYS.iter().chain(IGNORED_KEYS).find(|c| **c == k).copied().or_else(|| ALIASES.iter().find(|(a, _)| *a == k).map(|(_, c)| *c))
}

/// Maps a key as written to its canonical schema name (`maxMemoryRestart` → `max_memory_restart`,
/// `out` → `out_file`). `None` for unknown keys; `env_*` keys are handled by the caller.
pub fn canonical(key: &str) -> Option<&'static str> {
    known(key).or_else(|| {
        let snake = camel_to_snake(key);
        (snake != key).then(|| known(&snake)).flatten()
    })
}

fn camel_to_snake(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn all_key_names() -> impl Iterator<Item = &'static str> {
    EFFECTIVE_KEYS.iter().chain(IGNORED_KEYS).copied().chain(ALIASES.iter().map(|(a, _)| *a))
}

/// An app after key/value validation, before filesystem resolution. `None` = not set in the file.
#[derive(Debug, Default, Clone)]
pub struct RawApp {
    /// `apps[0]` etc. (empty when the document itself is the app).
    pub path: String,
    pub script: Option<(String, Option<Pos>)>,
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub cwd: Option<(String, Option<Pos>)>,
    pub args: Option<Vec<String>>,
    pub interpreter: Option<(String, Option<Pos>)>,
    pub interpreter_args: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    /// `env_<name>` blocks by `<name>`.
    pub env_named: BTreeMap<String, BTreeMap<String, String>>,
    /// Keys of `env` / `env_<name>` whose value was a number (PM2's `jlist` shows it as one).
    pub env_numbers: BTreeSet<String>,
    pub env_named_numbers: BTreeMap<String, BTreeSet<String>>,
    pub filter_env: FilterEnv,
    pub port: Option<u16>,
    pub instances: Option<Instances>,
    pub exec_mode: Option<ExecMode>,
    pub increment_var: Option<String>,
    pub instance_var: Option<String>,
    pub uid: Option<Principal>,
    pub gid: Option<Principal>,
    pub append_env_to_name: bool,
    pub autostart: Option<bool>,
    pub autorestart: Option<bool>,
    pub stop_exit_codes: Option<Vec<i32>>,
    pub min_uptime: Option<Duration>,
    pub max_restarts: Option<u32>,
    pub restart_delay: Option<Duration>,
    pub exp_backoff_restart_delay: Option<Duration>,
    pub max_memory_restart: Option<u64>,
    /// `Some(None)`: explicitly disabled with `0`.
    pub cron_restart: Option<Option<String>>,
    pub kill_timeout: Option<Duration>,
    pub kill_signal: Option<nix::sys::signal::Signal>,
    pub kill_retry_time: Option<Duration>,
    pub shutdown_with_message: Option<bool>,
    pub treekill: Option<bool>,
    pub wait_ready: Option<bool>,
    pub listen_fds: Option<bool>,
    /// `node_heap: auto`.
    pub node_heap: Option<bool>,
    pub pm_runtime_preload: Option<bool>,
    pub listen_timeout: Option<Duration>,
    pub role: Option<Role>,
    /// Each entry with its position, and the key path (`apps[1].depends_on`).
    pub depends_on: Vec<(Dependency, Option<Pos>)>,
    pub depends_on_key: String,
    pub liveness_probe: Option<RawProbe>,
    pub readiness_probe: Option<RawProbe>,
    pub watchdog: Option<Duration>,
    pub watch: Option<Watch>,
    pub ignore_watch: Option<Vec<String>>,
    pub watch_options: Option<serde_json::Value>,
    pub watch_delay: Option<Duration>,
    pub out_file: Option<String>,
    pub error_file: Option<String>,
    /// `Some(None)`: `log_file: false` (or `true`, which has no effect here).
    pub log_file: Option<Option<String>>,
    pub pid_file: Option<String>,
    pub merge_logs: Option<bool>,
    pub log_date_format: Option<String>,
    pub time: Option<bool>,
    pub log_type: Option<String>,
    pub disable_logs: Option<bool>,
    pub log_max_size: Option<u64>,
    pub log_retain: Option<u32>,
    /// `env_file`: paths (relative to the app's cwd), each required unless marked optional.
    pub env_file: Vec<EnvFile>,
    /// `secrets`: variable name → file whose content is its value.
    pub secrets: BTreeMap<String, (String, Option<Pos>)>,
    pub mask_secrets: Option<bool>,
    /// `redact`: more key patterns whose values are never shown.
    pub redact: Vec<String>,
    pub ignored: BTreeMap<String, serde_json::Value>,
}

/// One `env_file` entry: `path`, or `{ path, required: false }` (Docker Compose's form).
#[derive(Debug, Clone, PartialEq)]
pub struct EnvFile {
    pub path: String,
    pub required: bool,
    pub pos: Option<Pos>,
    /// The key path to blame (`apps[0].env_file[1]`).
    pub key: String,
}

/// Where the apps of a document are, and the `deploy` section.
pub struct Document<'a> {
    /// (path, node) of each app entry in file order.
    pub apps: Vec<(String, &'a Node)>,
    pub deploy: Option<&'a Node>,
    /// The top-level `static` section (PM2's static servers).
    pub statics: Option<&'a Node>,
}

/// Finds the apps: `apps` (list or one object), else legacy `pm2`, else the document itself.
pub fn locate_apps<'a>(root: &'a Node, rep: &mut Reporter) -> Document<'a> {
    let mut doc = Document { apps: Vec::new(), deploy: None, statics: None };
    let entries = match &root.value {
        Value::Map(entries) => entries,
        Value::Seq(items) if items.is_empty() => {
            rep.error(root.pos, "", "the list of apps is empty: no app to run");
            return doc;
        }
        Value::Seq(items) => {
            doc.apps = items.iter().enumerate().map(|(i, n)| (format!("[{i}]"), n)).collect();
            return doc;
        }
        Value::Null => {
            rep.error(root.pos, "", "the file is empty (expected an \"apps\" list)");
            return doc;
        }
        _ => {
            rep.error(root.pos, "", format!("expected a mapping with an \"apps\" list, got {}", root.describe()));
            return doc;
        }
    };
    let container = ["apps", "pm2"].into_iter().find_map(|k| entries.iter().find(|(key, _)| key.name == k));
    let Some((key, apps)) = container else {
        // The document itself is one app.
        doc.apps.push((String::new(), root));
        return doc;
    };
    doc.deploy = root.get("deploy");
    for (k, v) in entries {
        match k.name.as_str() {
            "apps" | "pm2" | "deploy" => {}
            "static" => doc.statics = Some(v),
            other => {
                if let Some(s) = units::suggest(other, ["apps", "deploy", "static"]) {
                    rep.warn(k.pos, other, format!("unknown key (did you mean \"{s}\"?)"));
                }
                let _ = v;
            }
        }
    }
    match &apps.value {
        // Empty with a `static` section: the static servers are the apps.
        Value::Seq(items) if items.is_empty() && doc.statics.is_none() => {
            rep.error(apps.pos, &key.name, "the list is empty: no app to run")
        }
        Value::Seq(items) if items.is_empty() => {}
        Value::Seq(items) => {
            doc.apps = items.iter().enumerate().map(|(i, n)| (format!("{}[{i}]", key.name), n)).collect();
        }
        Value::Map(_) => doc.apps.push((key.name.clone(), apps)),
        _ => rep.error(apps.pos, &key.name, format!("expected a list of apps or one app, got {}", apps.describe())),
    }
    doc
}

/// The name an app will have (explicit `name`, else derived from `script`), for `--only`.
pub fn quick_name(app: &Node) -> Option<String> {
    if let Some(Node { value: Value::Str(n), .. }) = app.get("name") {
        return Some(n.clone());
    }
    ["script", "exec", "cmd", "command"].into_iter().find_map(|k| match app.get(k) {
        Some(Node { value: Value::Str(s), .. }) => Some(default_name(s)),
        _ => None,
    })
}

/// PM2's `renderApplicationName`: the whole command when it has a space, else the basename
/// without its last extension (a leading dot is kept: `.hidden` stays `.hidden`).
pub fn default_name(script: &str) -> String {
    if script.contains(' ') {
        return script.to_string();
    }
    // `script: dist/` (a directory) is named `dist`, as PM2's `path.basename` does.
    let base = script.trim_end_matches('/').rsplit('/').next().unwrap_or(script);
    match base.rfind('.') {
        Some(i) if i > 0 => base[..i].to_string(),
        _ => base.to_string(),
    }
}

/// Validates one app entry.
pub fn validate_app(path: &str, node: &Node, rep: &mut Reporter) -> RawApp {
    let mut app = RawApp { path: path.to_string(), ..Default::default() };
    let Value::Map(entries) = &node.value else {
        rep.error(node.pos, path, format!("expected an app (a mapping with \"script\"), got {}", node.describe()));
        return app;
    };

    // Group entries by canonical key; the canonical spelling wins over aliases (PM2 does
    // `conf[key] || (conf[key] = json[alias])`).
    let mut chosen: BTreeMap<&'static str, (&Key, &Node)> = BTreeMap::new();
    for (k, v) in entries {
        // `env_file` is a dotenv file (ours); as a mapping it stays PM2's environment "file".
        let env_file = k.name == "env_file" && (!matches!(v.value, Value::Map(_)) || v.get("path").is_some());
        if let Some(env_name) = k.name.strip_prefix("env_")
            && !env_file
        {
            let p = join(path, &k.name);
            match &v.value {
                Value::Map(_) => {
                    let map = env_map(v, &p, rep);
                    app.env_named.insert(env_name.to_string(), map);
                    app.env_named_numbers.insert(env_name.to_string(), number_keys(v));
                }
                // PM2's schema accepts any `env_*` key, object or string; only an object is an
                // environment (used with `--env <name>`).
                Value::Null => {}
                _ => rep.warn(k.pos, &p, not_an_environment(env_name, v)),
            }
            continue;
        }
        let Some(canon) = canonical(&k.name) else {
            let p = join(path, &k.name);
            match units::suggest(&k.name, all_key_names()) {
                Some(s) => rep.warn(k.pos, &p, format!("unknown key (did you mean \"{s}\"?)")),
                None => rep.warn(k.pos, &p, "unknown key (ignored)"),
            }
            continue;
        };
        match chosen.get(canon) {
            None => {
                chosen.insert(canon, (k, v));
            }
            Some((prev, _)) => {
                let (keep, drop) = if k.name == canon && prev.name != canon { (k, *prev) } else { (*prev, k) };
                rep.warn(drop.pos, &join(path, &drop.name), format!("duplicate of \"{}\" (ignored)", keep.name));
                if keep.name == k.name {
                    chosen.insert(canon, (k, v));
                }
            }
        }
    }

    let script_given = chosen.get("script").is_some_and(|(_, v)| v.value != Value::Null);
    for (canon, (k, v)) in chosen {
        let p = join(path, &k.name);
        let mut c = Check { rep, path: &p, node: v };
        if IGNORED_KEYS.contains(&canon) {
            app.ignored.insert(k.name.clone(), v.to_json());
            continue;
        }
        if v.value == Value::Null {
            // PM2 treats null like an absent key.
            continue;
        }
        if canon != "env" && !exec_safe(v, &p, c.rep) {
            continue;
        }
        match canon {
            "script" => app.script = c.nonempty_string().map(|s| (s, v.pos)),
            "name" => app.name = c.label(),
            "namespace" => app.namespace = c.label(),
            "cwd" => app.cwd = c.nonempty_string().map(|s| (s, v.pos)),
            "args" => app.args = c.arg_list(),
            "exec_interpreter" => app.interpreter = c.nonempty_string().map(|s| (s, v.pos)),
            "node_args" => app.interpreter_args = c.arg_list(),
            "env" => {
                app.env = env_map(v, &p, c.rep);
                app.env_numbers = number_keys(v);
            }
            "filter_env" => app.filter_env = c.filter_env().unwrap_or_default(),
            "port" => app.port = c.port(),
            "instances" => app.instances = c.instances(),
            "exec_mode" => app.exec_mode = c.exec_mode(),
            "increment_var" => app.increment_var = c.string(),
            "instance_var" => app.instance_var = c.nonempty_string(),
            "uid" => app.uid = c.principal(false),
            "gid" => app.gid = c.principal(true),
            "append_env_to_name" => app.append_env_to_name = c.bool().unwrap_or(false),
            "autostart" => app.autostart = c.bool(),
            "autorestart" => app.autorestart = c.bool(),
            "stop_exit_codes" => app.stop_exit_codes = c.exit_codes(),
            "min_uptime" => {
                // PM2's schema: `min: 100`.
                app.min_uptime = c.duration().filter(|d| {
                    let ok = *d >= Duration::from_millis(100);
                    if !ok {
                        c.rep.error(v.pos, &p, format!("must be at least 100 ms, got {}", v.describe()));
                    }
                    ok
                });
            }
            "max_restarts" => app.max_restarts = c.count(),
            "restart_delay" => app.restart_delay = c.duration(),
            "exp_backoff_restart_delay" => app.exp_backoff_restart_delay = c.duration(),
            "max_memory_restart" => app.max_memory_restart = c.memory_limit(),
            "cron_restart" => app.cron_restart = c.cron(),
            "kill_timeout" => app.kill_timeout = c.duration(),
            "kill_signal" => app.kill_signal = c.signal(),
            "kill_retry_time" => app.kill_retry_time = c.duration(),
            "shutdown_with_message" => app.shutdown_with_message = c.bool(),
            "treekill" => app.treekill = c.bool(),
            "wait_ready" => app.wait_ready = c.bool(),
            "listen_fds" => app.listen_fds = c.bool(),
            "node_heap" => app.node_heap = c.node_heap(),
            "pm_runtime_preload" => app.pm_runtime_preload = c.bool(),
            "listen_timeout" => app.listen_timeout = c.duration(),
            "role" => app.role = c.role(),
            "liveness_probe" => app.liveness_probe = c.probe(),
            "readiness_probe" => app.readiness_probe = c.probe(),
            "watchdog" => app.watchdog = c.duration(),
            "depends_on" => {
                app.depends_on = c.depends_on().unwrap_or_default();
                app.depends_on_key = p.clone();
            }
            "watch" => app.watch = c.watch(),
            "ignore_watch" => app.ignore_watch = c.arg_list(),
            "watch_options" => app.watch_options = c.object(),
            "watch_delay" => app.watch_delay = c.duration(),
            "out_file" => app.out_file = c.nonempty_string(),
            "error_file" => app.error_file = c.nonempty_string(),
            "log_file" => app.log_file = c.log_file(),
            "pid_file" => app.pid_file = c.nonempty_string(),
            "merge_logs" => app.merge_logs = c.bool(),
            "log_date_format" => app.log_date_format = c.string(),
            "time" => app.time = c.bool(),
            "log_type" => app.log_type = c.string(),
            "disable_logs" => app.disable_logs = c.bool(),
            "log_max_size" => app.log_max_size = c.size(),
            "log_retain" => app.log_retain = c.count(),
            "env_file" => app.env_file = env_files(v, &p, c.rep),
            "secrets" => app.secrets = secret_files(v, &p, c.rep),
            "mask_secrets" => app.mask_secrets = c.bool(),
            "redact" => app.redact = c.arg_list().unwrap_or_default(),
            other => {
                // Unreachable by construction (every canonical key is handled above); keep it
                // rather than panic.
                c.rep.warn(k.pos, &p, format!("key \"{other}\" is not handled (ignored)"));
            }
        }
    }

    if !script_given {
        rep.error(node.pos, path, "missing required key \"script\"");
    }
    app
}

fn http_path(p: &str) -> String {
    if p.starts_with('/') { p.to_string() } else { format!("/{p}") }
}

/// A `depends_on` condition: ours (`started`, `online`, `ready`, `completed`), compose's
/// (`service_started`, `service_healthy`, `service_completed_successfully`), or compose's
/// `{condition: …}` mapping; `null` means the default for the target's role.
///
/// Errs with `String` on purpose: the text becomes a config `Problem` (file, line, field).
fn condition_of(node: &Node) -> Result<Option<Condition>, String> {
    let text = match &node.value {
        Value::Null => return Ok(None),
        Value::Str(s) => s.as_str(),
        Value::Map(_) => return node.get("condition").map_or(Ok(None), condition_of),
        _ => return Err(format!("expected a condition (started, online, ready, completed), got {}", node.describe())),
    };
    let c = match text.strip_prefix("service_").unwrap_or(text) {
        "started" => Condition::Started,
        "online" => Condition::Online,
        "ready" | "healthy" => Condition::Ready,
        "completed" | "completed_successfully" => Condition::Completed,
        other => {
            let hint = units::suggest(other, ["started", "online", "ready", "completed"])
                .map(|s| format!(" (did you mean \"{s}\"?)"))
                .unwrap_or_default();
            return Err(format!("unknown condition {text:?}{hint}: expected started, online, ready or completed"));
        }
    };
    Ok(Some(c))
}

/// An app's `role` and `depends_on` read without reporting anything (for `--only`, before the
/// apps are validated).
pub fn quick_order(app: &Node) -> (Role, Vec<Dependency>) {
    let mut rep = Reporter::default();
    let role = app.get("role").and_then(|node| Check { rep: &mut rep, path: "", node }.role()).unwrap_or_default();
    let deps = app.get("depends_on").and_then(|node| Check { rep: &mut rep, path: "", node }.depends_on()).unwrap_or_default();
    (role, deps.into_iter().map(|(d, _)| d).collect())
}

/// `env_file: .env`, `env_file: [a.env, b.env]`, items also as `{ path: x, required: false }`.
fn env_files(node: &Node, path: &str, rep: &mut Reporter) -> Vec<EnvFile> {
    let one = |n: &Node, key: String, rep: &mut Reporter| -> Option<EnvFile> {
        match &n.value {
            Value::Str(s) if !s.is_empty() => Some(EnvFile { path: s.clone(), required: true, pos: n.pos, key }),
            Value::Map(_) => {
                let file = n.get("path").and_then(|p| if let Value::Str(s) = &p.value { Some(s.clone()) } else { None });
                let required = match n.get("required").map(|r| &r.value) {
                    None => Some(true),
                    Some(Value::Bool(b)) => Some(*b),
                    Some(_) => None,
                };
                match (file.filter(|f| !f.is_empty()), required) {
                    (Some(file), Some(required)) => Some(EnvFile { path: file, required, pos: n.pos, key }),
                    _ => {
                        rep.error(n.pos, &key, "expected { path: <file>, required: true|false }");
                        None
                    }
                }
            }
            _ => {
                rep.error(n.pos, &key, format!("expected a file path, got {}", n.describe()));
                None
            }
        }
    };
    match &node.value {
        Value::Seq(items) => items.iter().enumerate().filter_map(|(i, n)| one(n, format!("{path}[{i}]"), rep)).collect(),
        _ => one(node, path.to_string(), rep).into_iter().collect(),
    }
}

/// `secrets: { DB_PASSWORD: /run/secrets/db_password }`.
fn secret_files(node: &Node, path: &str, rep: &mut Reporter) -> BTreeMap<String, (String, Option<Pos>)> {
    let mut out = BTreeMap::new();
    let Value::Map(entries) = &node.value else {
        rep.error(node.pos, path, format!("expected a mapping of variable name to file, got {}", node.describe()));
        return out;
    };
    for (k, v) in entries {
        let key = join(path, &k.name);
        match &v.value {
            _ if k.name.is_empty() || k.name.contains(['=', '\0']) => rep.error(k.pos, &key, "invalid environment variable name"),
            Value::Str(s) if !s.is_empty() => {
                out.insert(k.name.clone(), (s.clone(), v.pos));
            }
            _ => rep.error(v.pos, &key, format!("expected a file path, got {}", v.describe())),
        }
    }
    out
}

/// The warning for an `env_<name>` key whose value is not a mapping (PM2 accepts it and it
/// has no effect).
fn not_an_environment(name: &str, v: &Node) -> String {
    // The value is not shown: it may hold a secret.
    let kind = match &v.value {
        Value::Str(_) => "a string",
        Value::Seq(_) => "a list",
        Value::Bool(_) => "a boolean",
        _ => "a number",
    };
    format!("{kind} is not an environment (a mapping of variables, used with --env {name}); ignored")
}

/// Converts an `env`/`env_<name>` mapping: numbers/bools stringified, objects JSON-stringified,
/// nulls dropped (PM2's fork mode never passes null values).
/// The keys of an `env` mapping whose values are numbers.
pub fn number_keys(node: &Node) -> BTreeSet<String> {
    match &node.value {
        Value::Map(entries) => {
            entries.iter().filter(|(_, v)| matches!(v.value, Value::Int(_) | Value::Float(_))).map(|(k, _)| k.name.clone()).collect()
        }
        _ => BTreeSet::new(),
    }
}

pub fn env_map(node: &Node, path: &str, rep: &mut Reporter) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    match &node.value {
        Value::Map(entries) => {
            for (k, v) in entries {
                if k.name.is_empty() || k.name.contains('=') || k.name.contains('\0') {
                    rep.error(k.pos, &join(path, &k.name), "invalid environment variable name");
                    continue;
                }
                let s = match &v.value {
                    Value::Null => continue,
                    Value::Str(s) => s.clone(),
                    Value::Bool(b) => b.to_string(),
                    Value::Int(i) => i.to_string(),
                    Value::Float(f) => js_number(*f),
                    Value::Seq(_) | Value::Map(_) => v.to_json().to_string(),
                };
                if s.contains('\0') {
                    rep.error(v.pos, &join(path, &k.name), "value contains a NUL byte");
                    continue;
                }
                // The kernel takes `NAME=value` as one string.
                let entry = k.name.len() + 1 + s.len();
                if entry >= MAX_ARG_STRLEN {
                    rep.error(v.pos, &join(path, &k.name), too_long(entry));
                    continue;
                }
                out.insert(k.name.clone(), s);
            }
        }
        Value::Null => {}
        _ => rep.error(node.pos, path, format!("expected a mapping of variable names to values, got {}", node.describe())),
    }
    out
}

/// Why `s` cannot be an app name or namespace: it holds a control character (shown escaped).
pub fn control_char_problem(s: &str) -> Option<String> {
    let c = s.chars().find(|c| c.is_control())?;
    Some(format!("must not contain control characters (found {:?})", c))
}

/// The kernel's limit on one argument or environment string, its terminating NUL included
/// (`MAX_ARG_STRLEN`, 32 pages): a longer one makes exec fail with E2BIG.
pub const MAX_ARG_STRLEN: usize = 32 * 4096;

pub fn too_long(len: usize) -> String {
    format!("is {len} bytes long; exec accepts at most {} bytes per argument or environment entry (MAX_ARG_STRLEN)", MAX_ARG_STRLEN - 1)
}

/// Every string of an app setting (recursively) must be passable to exec or open: no NUL byte,
/// shorter than [`MAX_ARG_STRLEN`]. Reports each offender at its position; false if any.
fn exec_safe(node: &Node, path: &str, rep: &mut Reporter) -> bool {
    match &node.value {
        Value::Str(s) if s.contains('\0') => {
            rep.error(node.pos, path, "contains a NUL byte, which no argument, path or environment entry can hold");
            false
        }
        Value::Str(s) if s.len() >= MAX_ARG_STRLEN => {
            rep.error(node.pos, path, too_long(s.len()));
            false
        }
        Value::Seq(items) => items.iter().enumerate().fold(true, |ok, (i, n)| exec_safe(n, &format!("{path}[{i}]"), rep) && ok),
        Value::Map(entries) => entries.iter().fold(true, |ok, (k, n)| exec_safe(n, &join(path, &k.name), rep) && ok),
        _ => true,
    }
}

/// Formats a number as JavaScript's `String(n)` does for common values.
fn js_number(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e21 { format!("{}", f as i128) } else { f.to_string() }
}

/// Parses `instances` text (`4`, `max`, `0`, `-1`) the way both the file and `-i` accept it.
pub fn parse_instances_text(s: &str) -> Option<Instances> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("max") {
        return Some(Instances::Max);
    }
    let n: i64 = t.parse().ok()?;
    Some(instances_from_int(n))
}

fn instances_from_int(n: i64) -> Instances {
    match n {
        0 => Instances::Max,
        n if n < 0 => Instances::MinusCpus(u32::try_from(n.unsigned_abs()).unwrap_or(u32::MAX)),
        n => Instances::Count(u32::try_from(n).unwrap_or(u32::MAX)),
    }
}

/// A cron pattern in croner's dialect (what PM2 7 uses, and what the supervisor's scheduler
/// parses: 5 fields, or 6 with seconds first, `@daily`-style nicknames); `"0"` disables.
///
/// Errs with `String` on purpose: the text becomes a config `Problem` (file, line, field).
pub fn parse_cron(s: &str) -> Result<Option<String>, String> {
    use croner::parser::{CronParser, Seconds, Year};
    let t = s.trim();
    if t == "0" || t.is_empty() {
        return Ok(None);
    }
    let parser = CronParser::builder().seconds(Seconds::Optional).year(Year::Disallowed).build();
    match parser.parse(t) {
        Ok(_) => Ok(Some(t.to_string())),
        Err(e) => Err(format!("invalid cron pattern {s:?}: {e}")),
    }
}

/// Checks one value against the shape a key expects, reporting at the value's position.
struct Check<'r, 'n> {
    rep: &'r mut Reporter,
    path: &'n str,
    node: &'n Node,
}

impl Check<'_, '_> {
    fn fail<T>(&mut self, msg: impl AsRef<str>) -> Option<T> {
        self.rep.error(self.node.pos, self.path, msg);
        None
    }

    fn got(&self) -> String {
        self.node.describe()
    }

    fn string(&mut self) -> Option<String> {
        match &self.node.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(js_number(*f)),
            _ => {
                let g = self.got();
                self.fail(format!("expected a string, got {g}"))
            }
        }
    }

    /// A name that appears inside the runtime's own lines: no control character (a newline
    /// in a name would let it forge runtime lines).
    fn label(&mut self) -> Option<String> {
        let s = self.string()?;
        match control_char_problem(&s) {
            Some(e) => self.fail(e),
            None => Some(s),
        }
    }

    fn nonempty_string(&mut self) -> Option<String> {
        let s = self.string()?;
        if s.trim().is_empty() {
            return self.fail("must not be empty");
        }
        Some(s)
    }

    fn bool(&mut self) -> Option<bool> {
        match &self.node.value {
            Value::Bool(b) => Some(*b),
            Value::Str(s) if s == "true" => Some(true),
            Value::Str(s) if s == "false" => Some(false),
            _ => {
                let g = self.got();
                self.fail(format!("expected true or false, got {g}"))
            }
        }
    }

    /// A number or numeric string as f64 (PM2 auto-parses numeric strings).
    fn number(&self) -> Option<f64> {
        match &self.node.value {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            Value::Str(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
            _ => None,
        }
    }

    fn count(&mut self) -> Option<u32> {
        match self.number() {
            Some(n) if n >= 0.0 && n.fract() == 0.0 && n <= u32::MAX as f64 => Some(n as u32),
            _ => {
                let g = self.got();
                self.fail(format!("expected a whole number ≥ 0, got {g}"))
            }
        }
    }

    fn duration(&mut self) -> Option<Duration> {
        let r = match &self.node.value {
            Value::Int(_) | Value::Float(_) => {
                self.number().and_then(units::ms_to_duration).ok_or_else(|| format!("expected milliseconds ≥ 0, got {}", self.got()))
            }
            Value::Str(s) => units::parse_duration(s),
            _ => Err(format!("expected milliseconds or a duration like \"5s\", got {}", self.got())),
        };
        r.map_err(|e| self.fail::<()>(e)).ok()
    }

    fn size(&mut self) -> Option<u64> {
        let r = match &self.node.value {
            Value::Int(i) if *i >= 0 => Ok(*i as u64),
            Value::Float(f) if *f >= 0.0 && f.is_finite() => Ok(*f as u64),
            Value::Str(s) => units::parse_size(s),
            _ => Err(format!("expected a size in bytes or a number with K, M or G (e.g. \"200M\"), got {}", self.got())),
        };
        r.map_err(|e| self.fail::<()>(e)).ok()
    }

    /// `node_heap`: `auto` (or true) sizes Node's heap to the container; `false`/`off`: V8's default.
    fn node_heap(&mut self) -> Option<bool> {
        match &self.node.value {
            Value::Str(s) if s.trim().eq_ignore_ascii_case("auto") => Some(true),
            Value::Str(s) if s.trim().eq_ignore_ascii_case("off") => Some(false),
            Value::Bool(_) => self.bool(),
            _ => self.fail(format!("expected \"auto\" or false, got {}", self.got())),
        }
    }

    /// `max_memory_restart`: a size, or a percentage of the container's memory (`85%`).
    fn memory_limit(&mut self) -> Option<u64> {
        match &self.node.value {
            Value::Str(s) if s.trim().ends_with('%') => {
                units::parse_memory_limit(s, crate::process::cgroup::memory_total()).map_err(|e| self.fail::<()>(e)).ok()
            }
            _ => self.size(),
        }
    }

    fn arg_list(&mut self) -> Option<Vec<String>> {
        match &self.node.value {
            Value::Str(s) => match units::split_args(s) {
                Ok(v) => Some(v),
                Err(e) => self.fail(e),
            },
            Value::Seq(items) => {
                let mut out = Vec::new();
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    let s = match &item.value {
                        Value::Str(s) => s.clone(),
                        Value::Int(n) => n.to_string(),
                        Value::Float(f) => js_number(*f),
                        Value::Bool(b) => b.to_string(),
                        _ => {
                            self.rep.error(item.pos, &format!("{}[{i}]", self.path), format!("expected a string, got {}", item.describe()));
                            ok = false;
                            continue;
                        }
                    };
                    out.push(s);
                }
                ok.then_some(out)
            }
            Value::Int(_) | Value::Float(_) => self.string().map(|s| vec![s]),
            _ => {
                let g = self.got();
                self.fail(format!("expected a list of strings or a string, got {g}"))
            }
        }
    }

    /// PM2 is lenient here: a string goes through `parseInt(s) || 0` (`"4,"` is 4, `"four"` is
    /// 0 = all CPUs) and a fractional number is truncated. Accepted with a warning saying what
    /// was understood whenever the value is not a plain integer.
    fn instances(&mut self) -> Option<Instances> {
        let (n, exact) = match &self.node.value {
            Value::Int(n) => (*n, true),
            Value::Float(f) if f.is_finite() && f.abs() < 1e15 => (f.trunc() as i64, f.fract() == 0.0),
            Value::Str(s) if s.trim().eq_ignore_ascii_case("max") => return Some(Instances::Max),
            Value::Str(s) => match units::js_parse_int(s) {
                Some(n) => (n, s.trim().parse::<i64>().is_ok()),
                None => (0, false),
            },
            _ => {
                let g = self.got();
                return self.fail(format!("expected a number, \"max\" or -N, got {g}"));
            }
        };
        if !exact {
            let meaning = match n {
                0 => "0 (all CPUs)".to_string(),
                n if n < 0 => format!("{n} (all CPUs but {})", n.unsigned_abs()),
                n => n.to_string(),
            };
            let g = self.got();
            self.rep.warn(
                self.node.pos,
                self.path,
                format!("{g} is not a whole number; understood as {meaning}, as PM2's parseInt reads it"),
            );
        }
        match instances_from_int(n) {
            Instances::Count(c) => match super::check_instance_count(c.into()) {
                Ok(()) => Some(Instances::Count(c)),
                Err(e) => self.fail(e.to_string()),
            },
            other => Some(other),
        }
    }

    fn exec_mode(&mut self) -> Option<ExecMode> {
        match &self.node.value {
            Value::Str(s) => match s.as_str() {
                "fork" | "fork_mode" => Some(ExecMode::Fork),
                "cluster" | "cluster_mode" => Some(ExecMode::Cluster),
                _ => self.fail(format!("expected \"fork\" or \"cluster\" (or fork_mode/cluster_mode), got {s:?}")),
            },
            _ => {
                let g = self.got();
                self.fail(format!("expected \"fork\" or \"cluster\", got {g}"))
            }
        }
    }

    fn port(&mut self) -> Option<u16> {
        match self.number() {
            // PM2 sets PORT only when `port` is truthy.
            Some(0.0) => None,
            Some(n) if n.fract() == 0.0 && (1.0..=65535.0).contains(&n) => Some(n as u16),
            _ => {
                let g = self.got();
                self.fail(format!("expected a port number 1-65535, got {g}"))
            }
        }
    }

    fn exit_codes(&mut self) -> Option<Vec<i32>> {
        let one = |n: &Node| -> Option<i32> {
            match &n.value {
                Value::Int(i) => i32::try_from(*i).ok(),
                Value::Str(s) => s.trim().parse().ok(),
                Value::Float(f) if f.fract() == 0.0 => i32::try_from(*f as i64).ok(),
                _ => None,
            }
        };
        match &self.node.value {
            Value::Seq(items) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    // PM2 reads string entries with parseInt(s, 10): "1 (crash)" is 1.
                    let lenient = match &item.value {
                        Value::Str(s) if one(item).is_none() => units::js_parse_int(s).filter(|_| !s.trim_start().starts_with("0x")),
                        _ => None,
                    };
                    if let Some(c) = lenient.and_then(|c| i32::try_from(c).ok()) {
                        let p = format!("{}[{i}]", self.path);
                        self.rep.warn(
                            item.pos,
                            &p,
                            format!("{} is not a whole number; understood as {c}, as PM2's parseInt reads it", item.describe()),
                        );
                        out.push(c);
                        continue;
                    }
                    match one(item) {
                        Some(c) => out.push(c),
                        None => self.rep.error(
                            item.pos,
                            &format!("{}[{i}]", self.path),
                            format!("expected an exit code, got {}", item.describe()),
                        ),
                    }
                }
                (out.len() == items.len()).then_some(out)
            }
            Value::Str(s) => {
                let parts: Vec<Option<i32>> =
                    s.split(|c: char| c == ',' || c.is_whitespace()).filter(|p| !p.is_empty()).map(|p| p.parse().ok()).collect();
                match parts.into_iter().collect::<Option<Vec<i32>>>() {
                    Some(v) => Some(v),
                    None => self.fail(format!("expected exit codes, got {s:?}")),
                }
            }
            _ => match one(self.node) {
                Some(c) => Some(vec![c]),
                None => {
                    let g = self.got();
                    self.fail(format!("expected an exit code or a list of them, got {g}"))
                }
            },
        }
    }

    fn cron(&mut self) -> Option<Option<String>> {
        let text = match &self.node.value {
            Value::Int(0) => return Some(None),
            Value::Str(s) => s.clone(),
            _ => {
                let g = self.got();
                return self.fail(format!("expected a cron pattern string, got {g}"));
            }
        };
        match parse_cron(&text) {
            Ok(v) => Some(v),
            Err(e) => self.fail(e),
        }
    }

    fn signal(&mut self) -> Option<nix::sys::signal::Signal> {
        let text = match &self.node.value {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            _ => {
                let g = self.got();
                return self.fail(format!("expected a signal name, got {g}"));
            }
        };
        match units::parse_signal(&text) {
            Ok(s) => Some(s),
            Err(e) => self.fail(e),
        }
    }

    fn watch(&mut self) -> Option<Watch> {
        match &self.node.value {
            Value::Bool(true) => Some(Watch::Cwd),
            Value::Bool(false) => Some(Watch::Off),
            Value::Str(_) | Value::Seq(_) => {
                let paths = match &self.node.value {
                    Value::Str(s) => vec![s.clone()],
                    _ => self.arg_list()?,
                };
                if paths.is_empty() { Some(Watch::Cwd) } else { Some(Watch::Paths(paths.into_iter().map(Into::into).collect())) }
            }
            _ => {
                let g = self.got();
                self.fail(format!("expected true/false, a path or a list of paths, got {g}"))
            }
        }
    }

    /// `{http: /healthz | {path, port, status}, tcp: PORT | {port}, exec: "cmd", initial_delay,
    /// period, timeout, failure_threshold, success_threshold}`.
    fn probe(&mut self) -> Option<RawProbe> {
        let Value::Map(entries) = &self.node.value else {
            let g = self.got();
            return self.fail(format!("expected a mapping with one of http, tcp or exec, got {g}"));
        };
        let mut p = RawProbe { pos: self.node.pos, path: self.path.to_string(), ..Default::default() };
        let mut kinds = 0;
        for (k, v) in entries {
            let path = join(self.path, &k.name);
            let mut c = Check { rep: self.rep, path: &path, node: v };
            match k.name.as_str() {
                "http" | "tcp" | "exec" => {
                    kinds += 1;
                    p.kind = c.probe_check(&k.name);
                }
                "initial_delay" | "initialDelay" => p.initial_delay = c.duration(),
                "port" => p.port = c.port(),
                "period" => p.period = c.duration().filter(|d| !d.is_zero()),
                "timeout" => p.timeout = c.duration().filter(|d| !d.is_zero()),
                "failure_threshold" | "failureThreshold" => p.failure_threshold = c.count().map(|n| n.max(1)),
                "success_threshold" | "successThreshold" => p.success_threshold = c.count().map(|n| n.max(1)),
                other => {
                    let keys =
                        ["http", "tcp", "exec", "port", "initial_delay", "period", "timeout", "failure_threshold", "success_threshold"];
                    let hint = units::suggest(other, keys).map(|s| format!(" (did you mean \"{s}\"?)")).unwrap_or_default();
                    self.rep.error(k.pos, &path, format!("unknown probe setting{hint}"));
                }
            }
        }
        if kinds != 1 {
            return self.fail("a probe needs exactly one of http, tcp or exec");
        }
        p.kind.as_ref()?;
        Some(p)
    }

    fn probe_check(&mut self, kind: &str) -> Option<RawCheck> {
        let port_of = |rep: &mut Reporter, path: &str, node: Option<&Node>| -> Option<Option<u16>> {
            match node {
                None => Some(None),
                Some(n) => Check { rep, path: &join(path, "port"), node: n }.port().map(Some),
            }
        };
        match (kind, &self.node.value) {
            ("http", Value::Str(path)) => Some(RawCheck::Http { path: http_path(path), port: None, status: None }),
            ("http", Value::Map(_)) => {
                let path = match self.node.get("path") {
                    Some(Node { value: Value::Str(s), .. }) => http_path(s),
                    None => "/".into(),
                    Some(n) => return Check { rep: self.rep, path: &join(self.path, "path"), node: n }.fail("expected a path"),
                };
                let port = port_of(self.rep, self.path, self.node.get("port"))?;
                let status = match self.node.get("status") {
                    None => None,
                    Some(n) => Some(Check { rep: self.rep, path: &join(self.path, "status"), node: n }.port()?),
                };
                Some(RawCheck::Http { path, port, status })
            }
            ("tcp", Value::Map(_)) => Some(RawCheck::Tcp { port: port_of(self.rep, self.path, self.node.get("port"))? }),
            ("tcp", Value::Bool(true)) => Some(RawCheck::Tcp { port: None }),
            ("tcp", _) => Some(RawCheck::Tcp { port: Some(self.port()?) }),
            ("exec", _) => Some(RawCheck::Exec { command: self.nonempty_string()? }),
            _ => {
                let g = self.got();
                self.fail(format!("expected a path or a mapping with path, port, status; got {g}"))
            }
        }
    }

    fn role(&mut self) -> Option<Role> {
        match &self.node.value {
            Value::Str(s) => match s.as_str() {
                "app" => Some(Role::App),
                "init" => Some(Role::Init),
                "sidecar" => Some(Role::Sidecar),
                other => self.fail(format!("expected \"init\", \"sidecar\" or \"app\", got {other:?}")),
            },
            _ => {
                let g = self.got();
                self.fail(format!("expected \"init\", \"sidecar\" or \"app\", got {g}"))
            }
        }
    }

    /// `depends_on`: a name, a list of names (or of `{name: condition}`), or a mapping of
    /// names to conditions (`db: ready`, or compose's `db: {condition: service_healthy}`).
    fn depends_on(&mut self) -> Option<Vec<(Dependency, Option<Pos>)>> {
        let mut out = Vec::new();
        let mut entry = |rep: &mut Reporter, path: String, name: &Node, cond: Option<&Node>| {
            let Value::Str(n) = &name.value else {
                rep.error(name.pos, &path, format!("expected an app name, got {}", name.describe()));
                return;
            };
            if n.trim().is_empty() {
                rep.error(name.pos, &path, "must not be empty");
                return;
            }
            let condition = match cond.map(|c| (c, condition_of(c))) {
                None => None,
                Some((_, Ok(c))) => c,
                Some((c, Err(e))) => {
                    rep.error(c.pos, &path, e);
                    return;
                }
            };
            out.push((Dependency { name: n.clone(), condition }, name.pos));
        };
        match &self.node.value {
            Value::Str(_) => entry(self.rep, self.path.to_string(), self.node, None),
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    let path = format!("{}[{i}]", self.path);
                    match &item.value {
                        Value::Map(kv) if kv.len() == 1 => {
                            let (k, v) = &kv[0];
                            let name = Node { pos: k.pos, value: Value::Str(k.name.clone()) };
                            entry(self.rep, join(&path, &k.name), &name, Some(v));
                        }
                        _ => entry(self.rep, path, item, None),
                    }
                }
            }
            Value::Map(kv) => {
                for (k, v) in kv {
                    let name = Node { pos: k.pos, value: Value::Str(k.name.clone()) };
                    entry(self.rep, join(self.path, &k.name), &name, Some(v));
                }
            }
            _ => {
                let g = self.got();
                return self.fail(format!("expected an app name, a list of names or a mapping of names to conditions, got {g}"));
            }
        }
        Some(out)
    }

    fn filter_env(&mut self) -> Option<FilterEnv> {
        match &self.node.value {
            Value::Bool(true) => Some(FilterEnv::DropAll),
            Value::Bool(false) => Some(FilterEnv::Inherit),
            Value::Str(s) if s.is_empty() => Some(FilterEnv::Inherit),
            Value::Str(s) => Some(FilterEnv::DropExact(s.clone())),
            Value::Seq(_) => {
                let v = self.arg_list()?;
                Some(if v.is_empty() { FilterEnv::Inherit } else { FilterEnv::DropMatching(v) })
            }
            _ => {
                let g = self.got();
                self.fail(format!("expected true/false, a name or a list of names, got {g}"))
            }
        }
    }

    fn object(&mut self) -> Option<serde_json::Value> {
        match &self.node.value {
            Value::Map(_) => Some(self.node.to_json()),
            _ => {
                let g = self.got();
                self.fail(format!("expected a mapping, got {g}"))
            }
        }
    }

    fn log_file(&mut self) -> Option<Option<String>> {
        match &self.node.value {
            Value::Bool(false) => Some(None),
            Value::Bool(true) => {
                self.rep.warn(self.node.pos, self.path, "true has no effect here (there is no $PM2_HOME/logs); give a path");
                Some(None)
            }
            _ => self.nonempty_string().map(Some),
        }
    }

    fn principal(&mut self, group: bool) -> Option<Principal> {
        let text = match &self.node.value {
            Value::Int(i) => {
                return match u32::try_from(*i) {
                    Ok(id) => Some(Principal::Id(id)),
                    Err(_) => self.fail(format!("expected an id ≥ 0 or a name, got {i}")),
                };
            }
            Value::Str(s) => s.trim().to_string(),
            _ => {
                let g = self.got();
                return self.fail(format!("expected a numeric id or a name, got {g}"));
            }
        };
        if let Ok(id) = text.parse::<u32>() {
            return Some(Principal::Id(id));
        }
        let exists = if group {
            nix::unistd::Group::from_name(&text).ok().flatten().is_some()
        } else {
            nix::unistd::User::from_name(&text).ok().flatten().is_some()
        };
        if exists {
            Some(Principal::Name(text))
        } else {
            let what = if group { "group" } else { "user" };
            self.fail(format!("unknown {what} {text:?} (not in the system's {what} database)"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tree::parse_yaml;
    use super::*;

    fn check(yaml: &str) -> (Vec<RawApp>, Reporter) {
        let root = parse_yaml(yaml).unwrap();
        let mut rep = Reporter::new("f.yml");
        let doc = locate_apps(&root, &mut rep);
        let apps = doc.apps.iter().map(|(p, n)| validate_app(p, n, &mut rep)).collect();
        (apps, rep)
    }

    #[test]
    fn numbers_in_strings_are_read_as_pm2_reads_them() {
        let (apps, rep) = check(
            "apps:\n  - script: a.js\n    instances: '4,'\n  - script: a.js\n    instances: four\n  - script: a.js\n    instances: 2.7\n  - script: a.js\n    instances: ' -1'\n  - script: a.js\n    instances: '3'\n    stop_exit_codes: ['2 (usage)', 3]\n",
        );
        assert!(rep.errors.is_empty(), "{:?}", rep.errors);
        let got: Vec<_> = apps.iter().map(|a| a.instances).collect();
        assert_eq!(
            got,
            [
                Some(Instances::Count(4)),
                Some(Instances::Max),
                Some(Instances::Count(2)),
                Some(Instances::MinusCpus(1)),
                Some(Instances::Count(3))
            ]
        );
        assert_eq!(apps[4].stop_exit_codes, Some(vec![2, 3]));
        assert_eq!(
            rep.warnings,
            [
                "f.yml:3:16: apps[0].instances: \"4,\" is not a whole number; understood as 4, as PM2's parseInt reads it",
                "f.yml:5:16: apps[1].instances: \"four\" is not a whole number; understood as 0 (all CPUs), as PM2's parseInt reads it",
                "f.yml:7:16: apps[2].instances: 2.7 is not a whole number; understood as 2, as PM2's parseInt reads it",
                "f.yml:12:23: apps[4].stop_exit_codes[0]: \"2 (usage)\" is not a whole number; understood as 2, as PM2's parseInt reads it",
            ]
        );
        let (_, rep) = check("apps:\n  - script: a.js\n    instances: true\n");
        assert_eq!(rep.errors.len(), 1, "a boolean is still an error, as in PM2");
    }

    #[test]
    fn any_env_key_is_accepted_and_only_mappings_are_environments() {
        let (apps, rep) = check(
            "apps:\n  - script: a.js\n    env_file: .env\n    env_staging: {A: '1'}\n    env_flag: true\n    env_list: [a]\n    env_x: SECRET=hunter2\n    env_nothing: null\n",
        );
        assert!(rep.errors.is_empty(), "{:?}", rep.errors);
        assert_eq!(apps[0].env_named.keys().collect::<Vec<_>>(), ["staging"]);
        // `env_file` as a path is a dotenv file (ours), not an environment.
        assert_eq!(apps[0].env_file.iter().map(|f| (f.path.as_str(), f.required)).collect::<Vec<_>>(), [(".env", true)]);
        assert_eq!(rep.warnings.len(), 3, "{:?}", rep.warnings);
        assert!(rep.warnings[0].contains("apps[0].env_flag: a boolean is not an environment"), "{:?}", rep.warnings);
        assert!(rep.warnings[2].contains("apps[0].env_x: a string is not an environment (a mapping of variables, used with --env x)"));
        assert!(
            !rep.warnings.iter().any(|w| w.contains("hunter2") || w.contains("\".env\"")),
            "values are never shown: {:?}",
            rep.warnings
        );
    }

    #[test]
    fn canonical_names() {
        assert_eq!(canonical("maxMemoryRestart"), Some("max_memory_restart"));
        assert_eq!(canonical("exec"), Some("script"));
        assert_eq!(canonical("interpreterArgs"), Some("node_args"));
        assert_eq!(canonical("errFile"), Some("error_file"));
        assert_eq!(canonical("windowsHide"), Some("windowsHide"));
        assert_eq!(canonical("out"), Some("out_file"));
        assert_eq!(canonical("instancez"), None);
    }

    #[test]
    fn values_and_aliases() {
        let (apps, rep) = check(
            "apps:\n  - exec: a.js\n    maxMemoryRestart: 100M\n    instances: max\n    \
             min_uptime: 5s\n    env: {PORT: 3000, DEBUG: true, OBJ: {a: 1}, NIL: null}\n    \
             node_args: \"--inspect --title='a b'\"\n    stop_exit_codes: 0\n    cron: 0\n    \
             watch: [src, lib]\n    pmx: false\n    exec_mode: cluster_mode\n    port: \"8080\"\n",
        );
        assert!(rep.errors.is_empty(), "{:?}", rep.errors);
        assert!(rep.warnings.is_empty(), "{:?}", rep.warnings);
        let a = &apps[0];
        assert_eq!(a.script.as_ref().unwrap().0, "a.js");
        assert_eq!(a.max_memory_restart, Some(100 * 1024 * 1024));
        assert_eq!(a.instances, Some(Instances::Max));
        assert_eq!(a.min_uptime, Some(Duration::from_secs(5)));
        assert_eq!(a.env["PORT"], "3000");
        assert_eq!(a.env["DEBUG"], "true");
        assert_eq!(a.env["OBJ"], r#"{"a":1}"#);
        assert!(!a.env.contains_key("NIL"));
        assert_eq!(a.interpreter_args.as_deref().unwrap(), ["--inspect", "--title=a b"]);
        assert_eq!(a.stop_exit_codes, Some(vec![0]));
        assert_eq!(a.cron_restart, Some(None));
        assert_eq!(a.watch, Some(Watch::Paths(vec!["src".into(), "lib".into()])));
        assert_eq!(a.ignored["pmx"], serde_json::Value::Bool(false));
        assert_eq!(a.exec_mode, Some(ExecMode::Cluster));
        assert_eq!(a.port, Some(8080));
    }

    #[test]
    fn all_errors_with_positions() {
        let yaml = "\
apps:
  - script: a.js
    instances: 2
  - script: b.js
    port: 70000
    max_memory_restart: lots
    instances: {n: 4}
    kill_signal: SIGNOPE
    min_uptime: 5 days
    autorestart: maybe
  - name: c
    script: c.js
    min_uptime: 50
";
        let (_, rep) = check(yaml);
        let want = [
            "f.yml:5:11: apps[1].port: expected a port number 1-65535, got 70000",
            "f.yml:6:25: apps[1].max_memory_restart: expected a size",
            "f.yml:7:16: apps[1].instances: expected a number, \"max\" or -N, got a mapping",
            "f.yml:8:18: apps[1].kill_signal: unknown signal \"SIGNOPE\"",
            "f.yml:9:17: apps[1].min_uptime: expected milliseconds",
            "f.yml:10:18: apps[1].autorestart: expected true or false, got \"maybe\"",
            "f.yml:13:17: apps[2].min_uptime: must be at least 100 ms, got 50",
        ];
        for w in want {
            assert!(rep.errors.iter().any(|e| e.starts_with(w)), "missing {w:?} in {:#?}", rep.errors);
        }
        assert_eq!(rep.errors.len(), want.len(), "{:#?}", rep.errors);
    }

    #[test]
    fn unknown_key_did_you_mean() {
        let (_, rep) = check("apps:\n  - script: a.js\n    instancez: 2\n    zzzqqq: 1\n");
        assert_eq!(rep.warnings[0], "f.yml:3:5: apps[0].instancez: unknown key (did you mean \"instances\"?)");
        assert_eq!(rep.warnings[1], "f.yml:4:5: apps[0].zzzqqq: unknown key (ignored)");
        assert!(rep.errors.is_empty());
    }

    #[test]
    fn shapes() {
        let (apps, rep) = check("apps:\n  script: a.js\n");
        assert!(rep.errors.is_empty(), "{:?}", rep.errors);
        assert_eq!(apps.len(), 1);
        assert_eq!(apps[0].path, "apps");
        let (apps, _) = check("pm2:\n  - script: a.js\n  - script: b.js\n");
        assert_eq!(apps.len(), 2);
        assert_eq!(apps[1].path, "pm2[1]");
        let (apps, _) = check("script: a.js\nname: x\n");
        assert_eq!(apps[0].name.as_deref(), Some("x"));
        let (apps, _) = check("- script: a.js\n- script: b.js\n");
        assert_eq!(apps.len(), 2);
        let (_, rep) = check("apps: 3\n");
        assert!(rep.errors[0].contains("expected a list of apps"), "{:?}", rep.errors);
        let (_, rep) = check("apps: []\nstatic: []\n");
        assert!(rep.warnings.is_empty() && rep.errors.is_empty(), "{rep:?}");
    }

    #[test]
    fn control_characters_in_keys_are_escaped_in_reports() {
        let (_, rep) = check("apps:\n  - script: a.js\n    env: {\"A=\\nB\": 1}\n    \"x\\u001by\": 2\n");
        let all = format!("{:?}{:?}", rep.errors, rep.warnings);
        let lines = rep.errors.iter().map(|p| &**p).chain(rep.warnings.iter().map(String::as_str));
        assert!(lines.into_iter().all(|l| !l.contains('\n') && !l.contains('\u{1b}')), "{all}");
        assert!(all.contains("apps[0].env.A=\\\\nB: invalid environment variable name"), "{all}");
    }

    #[test]
    fn duplicate_alias_prefers_canonical() {
        let (apps, rep) = check("apps:\n  - exec: b.js\n    script: a.js\n");
        assert_eq!(apps[0].script.as_ref().unwrap().0, "a.js");
        assert!(rep.warnings[0].contains("apps[0].exec: duplicate of \"script\""), "{:?}", rep.warnings);
    }

    #[test]
    fn names() {
        assert_eq!(default_name("app.js"), "app");
        assert_eq!(default_name("./dist/server.min.js"), "server.min");
        assert_eq!(default_name("bin/worker"), "worker");
        assert_eq!(default_name(".hidden"), ".hidden");
        assert_eq!(default_name("npm start"), "npm start");
        assert_eq!(default_name("dist/"), "dist");
        assert_eq!(default_name("./src"), "src");
    }

    #[test]
    fn cron_patterns() {
        assert_eq!(parse_cron("0"), Ok(None));
        assert_eq!(parse_cron("0 3 * * *"), Ok(Some("0 3 * * *".into())));
        assert_eq!(parse_cron("*/10 * * * * *"), Ok(Some("*/10 * * * * *".into())));
        assert_eq!(parse_cron("@daily"), Ok(Some("@daily".into())));
        assert!(parse_cron("61 * * * *").is_err());
        assert!(parse_cron("every day").is_err());
    }

    #[test]
    fn instances_text() {
        assert_eq!(parse_instances_text("4"), Some(Instances::Count(4)));
        assert_eq!(parse_instances_text("max"), Some(Instances::Max));
        assert_eq!(parse_instances_text("0"), Some(Instances::Max));
        assert_eq!(parse_instances_text("-1"), Some(Instances::MinusCpus(1)));
        assert_eq!(parse_instances_text("x"), None);
    }

    #[test]
    fn too_many_instances_is_an_error_with_its_place() {
        let (_, rep) = check("apps:\n  - script: a.js\n    instances: 100000\n");
        assert_eq!(rep.errors.len(), 1, "{:?}", rep.errors);
        assert!(rep.errors[0].contains("apps[0].instances: 100000 instances is more than the limit of 4096"), "{:?}", rep.errors);
        let (apps, rep) = check("apps:\n  - script: a.js\n    instances: 4096\n");
        assert!(rep.errors.is_empty(), "{:?}", rep.errors);
        assert_eq!(apps[0].instances, Some(Instances::Count(4096)));
    }

    #[test]
    fn principals() {
        let (apps, rep) = check("apps:\n  - script: a.js\n    uid: root\n    gid: 0\n");
        assert!(rep.errors.is_empty(), "{:?}", rep.errors);
        assert_eq!(apps[0].uid, Some(Principal::Name("root".into())));
        assert_eq!(apps[0].gid, Some(Principal::Id(0)));
        let (_, rep) = check("apps:\n  - script: a.js\n    user: no-such-user-xyz\n");
        assert!(rep.errors[0].contains("unknown user \"no-such-user-xyz\""), "{:?}", rep.errors);
    }
}
