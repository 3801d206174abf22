//! Configuration: turns a PM2 ecosystem file (YAML, JSON, JS) or a bare script, plus the
//! command-line [`Overrides`], into a validated, typed [`Ecosystem`].
//!
//! Pipeline: read and parse the file into a spanned tree (`tree`, or `js` for node-evaluated
//! configs) → find the apps and validate every key (`validate`, collecting all problems with
//! `file:line:col` positions) → `--only` / `--env` → resolve cwd, script and interpreter
//! (`resolve`) → apply overrides and PM2's defaults. Every problem is collected into one
//! [`ConfigError`]; non-fatal findings go to [`Ecosystem::warnings`].
//!
//! Environment variables read (through an injectable lookup): `PM2_KILL_TIMEOUT`,
//! `PM2_KILL_SIGNAL`, `PM2_GRACEFUL_LISTEN_TIMEOUT`, `PATH`, and `HOME` (for `~/` in log paths).

mod app_env;
pub mod deps;
mod dotenv;
mod js;
mod model;
mod resolve;
mod statics;
pub mod strict_json;
mod tree;
mod units;
mod validate;

pub use model::*;
pub use resolve::{SERVE_SUBCOMMAND, normalize};
pub use units::{js_parse_int, parse_signal};

use resolve::{Host, Target};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tree::Node;
pub use tree::Pos;
use validate::{RawApp, Reporter, join};

/// One thing wrong with a configuration, as data: where (file, line, column), which key, what.
/// Displays as `file:line:col: key: message` (the parts that are known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file as the user named it (`None` for flags and the script form).
    pub file: Option<String>,
    pub pos: Option<tree::Pos>,
    /// The key path (`apps[1].instances`), or the flag (`-i`).
    pub key: Option<String>,
    pub message: String,
    /// The rendered line (kept so that a problem reads as a `&str`).
    text: String,
}

impl Problem {
    pub fn new(file: Option<&str>, pos: Option<tree::Pos>, key: Option<&str>, message: impl Into<String>) -> Self {
        let file = file.filter(|f| !f.is_empty()).map(str::to_string);
        // A key path is the file's text: a control character in a key must not reach the
        // terminal as itself (it could forge lines of the error report).
        let key = key
            .filter(|k| !k.is_empty())
            .map(|k| if k.chars().any(char::is_control) { k.escape_debug().to_string() } else { k.to_string() });
        let message = message.into();
        let mut text = file.clone().unwrap_or_default();
        if let Some(p) = pos
            && !text.is_empty()
        {
            text.push_str(&format!(":{}:{}", p.line, p.col));
        }
        for part in [key.as_deref().unwrap_or(""), message.as_str()] {
            if part.is_empty() {
                continue;
            }
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(part);
        }
        // A position is only meaningful within a file.
        let pos = pos.filter(|_| file.is_some());
        Problem { file, pos, key, message, text }
    }

    /// A problem with no place (a flag, the environment, a whole file).
    pub fn plain(message: impl Into<String>) -> Self {
        Problem::new(None, None, None, message)
    }

    /// The order problems are shown in: by line and column; those without a place last.
    pub fn order(&self) -> (u32, u32) {
        self.pos.map_or((u32::MAX, 0), |p| (p.line, p.col))
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::ops::Deref for Problem {
    type Target = str;
    fn deref(&self) -> &str {
        &self.text
    }
}

impl PartialEq<&str> for Problem {
    fn eq(&self, other: &&str) -> bool {
        self.text == *other
    }
}

impl PartialEq<String> for Problem {
    fn eq(&self, other: &String) -> bool {
        &self.text == other
    }
}

/// Everything that is wrong with a configuration (all of it, never only the first).
#[derive(Debug, thiserror::Error)]
#[error("{}", self.problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl ConfigError {
    fn one(msg: impl Into<String>) -> Self {
        ConfigError { problems: vec![Problem::plain(msg)] }
    }

    /// The problems in file order (line, column), those without a place last.
    pub fn sorted(&self) -> Vec<Problem> {
        let mut p = self.problems.clone();
        p.sort_by_key(Problem::order);
        p
    }
}

/// PM2's rule (`Common.isConfigFile`): the path *contains* one of these (so `ecosystem.js` is a
/// script, and `app.json5` is a config).
pub fn is_config_file(path: &str) -> bool {
    [".json", ".yml", ".yaml", ".config.js", ".config.cjs", ".config.mjs"].iter().any(|e| path.contains(e))
}

/// Loads an ecosystem file, relative paths taken against the process's cwd.
pub fn load(path: &Path, overrides: &Overrides) -> Result<Ecosystem, ConfigError> {
    let base_dir = std::env::current_dir().map_err(|e| ConfigError::one(format!("cannot determine the current directory: {e}")))?;
    let var = |k: &str| std::env::var(k).ok();
    load_with(path, overrides, &Host { base_dir, var: &var })
}

/// The script form: `pm-runtime app.js -- a b`.
pub fn from_script(script: &str, overrides: &Overrides) -> Result<Ecosystem, ConfigError> {
    let base_dir = std::env::current_dir().map_err(|e| ConfigError::one(format!("cannot determine the current directory: {e}")))?;
    let var = |k: &str| std::env::var(k).ok();
    from_script_with(script, overrides, &Host { base_dir, var: &var })
}

/// The most instances one app may have unless `PM_RUNTIME_MAX_INSTANCES` says otherwise: more
/// is almost surely a typo, and each instance is a process, pipes and a task.
pub const DEFAULT_MAX_INSTANCES: u32 = 4096;

/// The most instances one app may have (`instances`, `-i`, `scale`): `PM_RUNTIME_MAX_INSTANCES`
/// if it is a positive number, else [`DEFAULT_MAX_INSTANCES`].
pub fn max_instances() -> u32 {
    max_instances_from(std::env::var("PM_RUNTIME_MAX_INSTANCES").ok().as_deref())
}

fn max_instances_from(v: Option<&str>) -> u32 {
    v.and_then(|v| v.trim().parse::<u32>().ok()).filter(|n| *n > 0).unwrap_or(DEFAULT_MAX_INSTANCES)
}

/// An instance count above [`max_instances`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{n} instances is more than the limit of {max} (set PM_RUNTIME_MAX_INSTANCES to raise it)")]
pub struct TooManyInstances {
    pub n: u64,
    pub max: u32,
}

/// Why an instance count is refused, if it is (above [`max_instances`]).
pub fn check_instance_count(n: u64) -> Result<(), TooManyInstances> {
    let max = max_instances();
    if n > u64::from(max) {
        return Err(TooManyInstances { n, max });
    }
    Ok(())
}

/// `Count(0)`/`Max` → cpus, `MinusCpus(n)` → cpus − n, never below 1.
pub fn resolve_instances(i: Instances, cpus: usize) -> u32 {
    let cpus = i64::try_from(cpus).unwrap_or(i64::MAX).max(1);
    let n = match i {
        Instances::Count(0) | Instances::Max => cpus,
        Instances::Count(n) => i64::from(n),
        Instances::MinusCpus(n) => cpus - i64::from(n),
    };
    u32::try_from(n.max(1)).unwrap_or(u32::MAX)
}

/// How a config file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Yaml,
    Json,
    Js,
}

fn format_of(path: &str) -> Format {
    if path.contains(".json") {
        Format::Json
    } else if path.contains(".yml") || path.contains(".yaml") {
        Format::Yaml
    } else {
        Format::Js
    }
}

/// Reads and parses a config file into a tree (positions for YAML/JSON, none for JS).
fn read_tree(path: &Path, host: &Host, timeout: Duration) -> Result<Node, ConfigError> {
    let label = path.display().to_string();
    let abs = host.base_dir.join(path);
    let format = format_of(&label);
    let read = || {
        std::fs::read_to_string(&abs).map_err(|e| {
            ConfigError::one(match e.kind() {
                std::io::ErrorKind::NotFound => {
                    format!("{label}: file not found ({})", normalize(&abs).display())
                }
                _ => format!("{label}: cannot read the file: {e}"),
            })
        })
    };
    let syntax = |e: tree::SyntaxError| {
        let at = e.pos.map(|p| format!(":{}:{}", p.line, p.col)).unwrap_or_default();
        ConfigError::one(format!("{label}{at}: syntax error: {}", e.message))
    };
    match format {
        Format::Yaml => tree::parse_yaml(&read()?).map_err(syntax),
        Format::Json => {
            let text = read()?;
            // JSON (comments and trailing commas allowed) keeps its positions. Anything else
            // PM2 evaluates as a JavaScript expression (`{ script: "./a.js" }`); so do we, and
            // only if that cannot be done is it read as YAML (JSON's superset).
            if !tree::is_json(&text).map_err(syntax)?
                && let Ok(v) = js::eval_with_node(path, js::JsMode::JsonExpr, host, timeout)
            {
                return Ok(Node::from_json(&v));
            }
            tree::parse_lenient_json(&text).map_err(syntax)
        }
        Format::Js => {
            if !abs.is_file() {
                return Err(read().err().unwrap_or_else(|| ConfigError::one(format!("{label}: not a file"))));
            }
            js::eval_with_node(path, js::JsMode::Module, host, timeout)
                .map(|v| Node::from_json(&v))
                .map_err(|e| ConfigError::one(prefix_label(&label, &e.to_string())))
        }
    }
}

fn prefix_label(label: &str, msg: &str) -> String {
    if msg.contains(label) { msg.to_string() } else { format!("{label}: {msg}") }
}

/// The overrides, parsed once (invalid values are errors naming the flag).
#[derive(Debug, Default)]
struct Flags {
    instances: Option<Instances>,
    node_args: Option<Vec<String>>,
    max_memory_restart: Option<u64>,
    cron: Option<Option<String>>,
}

fn parse_flags(o: &Overrides, errors: &mut Vec<Problem>) -> Flags {
    let mut f = Flags::default();
    if let Some(i) = &o.instances {
        f.instances = validate::parse_instances_text(i);
        match f.instances {
            None => errors.push(Problem::new(None, None, Some("-i"), format!("expected a number, \"max\" or -N, got {i:?}"))),
            Some(Instances::Count(n)) => {
                if let Err(e) = check_instance_count(n.into()) {
                    errors.push(Problem::new(None, None, Some("-i"), e.to_string()));
                    f.instances = None;
                }
            }
            Some(_) => {}
        }
    }
    if let Some(a) = &o.node_args {
        match units::split_args(a) {
            Ok(v) => f.node_args = Some(v),
            Err(e) => errors.push(Problem::new(None, None, Some("--node-args"), e)),
        }
    }
    if let Some(m) = &o.max_memory_restart {
        match units::parse_memory_limit(m, crate::process::cgroup::memory_total()) {
            Ok(v) => f.max_memory_restart = Some(v),
            Err(e) => errors.push(Problem::new(None, None, Some("--max-memory-restart"), e)),
        }
    }
    if let Some(c) = &o.cron {
        match validate::parse_cron(c) {
            Ok(v) => f.cron = Some(v),
            Err(e) => errors.push(Problem::new(None, None, Some("--cron"), e)),
        }
    }
    if let Some(i) = &o.interpreter
        && i.trim().is_empty()
    {
        errors.push(Problem::new(None, None, Some("--interpreter"), "must not be empty"));
    }
    f
}

/// Defaults that come from the environment (`PM2_KILL_TIMEOUT`, …).
struct Defaults {
    kill_timeout: Duration,
    kill_signal: KillSignal,
    listen_timeout: Duration,
}

fn env_defaults(host: &Host, warnings: &mut Vec<String>) -> Defaults {
    let mut d = Defaults {
        kill_timeout: Duration::from_millis(1600),
        kill_signal: KillSignal::default(),
        listen_timeout: Duration::from_millis(3000),
    };
    let ms = |name: &str, warnings: &mut Vec<String>| -> Option<Duration> {
        let v = (host.var)(name)?;
        match v.trim().parse::<f64>().ok().and_then(units::ms_to_duration) {
            Some(d) => Some(d),
            None => {
                warnings.push(format!("{name}={v:?} is not a number of milliseconds; ignored"));
                None
            }
        }
    };
    if let Some(t) = ms("PM2_KILL_TIMEOUT", warnings) {
        d.kill_timeout = t;
    }
    if let Some(t) = ms("PM2_GRACEFUL_LISTEN_TIMEOUT", warnings) {
        d.listen_timeout = t;
    }
    if let Some(s) = (host.var)("PM2_KILL_SIGNAL") {
        match units::parse_signal(&s) {
            Ok(sig) => d.kill_signal = KillSignal(sig),
            Err(e) => warnings.push(format!("PM2_KILL_SIGNAL: {e}; using SIGINT")),
        }
    }
    d
}

/// Loads an ecosystem file with an explicit base directory and environment.
fn load_with(path: &Path, o: &Overrides, host: &Host) -> Result<Ecosystem, ConfigError> {
    let label = path.display().to_string();
    let timeout = o.config_timeout.and_then(|s| Duration::try_from_secs_f64(s).ok()).unwrap_or(js::DEFAULT_TIMEOUT);
    let root = read_tree(path, host, timeout)?;
    let mut rep = Reporter::new(label.clone());
    let mut flag_errors = Vec::new();
    let flags = parse_flags(o, &mut flag_errors);
    let defaults = env_defaults(host, &mut rep.warnings);

    let doc = validate::locate_apps(&root, &mut rep);

    // PM2 adds the `static` servers after the apps; `--only` applies to them too.
    let mut statics = doc.statics.map(|n| statics::static_apps(n, &mut rep)).unwrap_or_default();
    statics.retain(|a| o.only.is_empty() || a.name.as_ref().is_some_and(|n| o.only.contains(n)));

    // --only: exact names, file order, with what they depend on.
    let mut notes = Vec::new();
    let entries: Vec<&(String, &Node)> = if o.only.is_empty() {
        doc.apps.iter().collect()
    } else {
        let wanted = only_with_dependencies(&doc.apps, &o.only, &mut notes);
        let kept: Vec<_> = doc.apps.iter().zip(wanted).filter(|(_, w)| *w).map(|(e, _)| e).collect();
        if kept.is_empty() && statics.is_empty() && !doc.apps.is_empty() {
            let names: Vec<String> = doc.apps.iter().filter_map(|(_, n)| validate::quick_name(n)).collect();
            let wanted: Vec<String> = o.only.iter().map(|n| format!("{n:?}")).collect();
            rep.errors.push(Problem::plain(format!(
                "--only {}: no app named {} in {label} (apps: {})",
                o.only.join(","),
                wanted.join(" or "),
                names.join(", ")
            )));
        }
        kept
    };

    let mut raws: Vec<RawApp> = entries.iter().map(|(p, n)| validate::validate_app(p, n, &mut rep)).collect();
    raws.extend(statics);

    // --env: deploy.<env>.env < env < env_<env>.
    let mut deploy_env = BTreeMap::new();
    let mut deploy_numbers = BTreeSet::new();
    if let Some(e) = &o.env {
        if let Some(env_node) = doc.deploy.and_then(|d| d.get(e)).and_then(|d| d.get("env")) {
            deploy_env = validate::env_map(env_node, &format!("deploy.{e}.env"), &mut rep);
            deploy_numbers = validate::number_keys(env_node);
        }
        if !raws.is_empty() && !raws.iter().any(|r| r.env_named.contains_key(e)) {
            rep.warnings.push(format!("Environment [{e}] is not defined in {label}"));
        }
    }

    let mut apps: Vec<Option<App>> =
        raws.iter().map(|raw| finish(raw, o, &flags, &defaults, (&deploy_env, &deploy_numbers), false, host, &mut rep)).collect();
    check_order(&raws, &mut apps, &mut rep);
    let apps: Vec<App> = apps.into_iter().flatten().collect();

    let mut problems = flag_errors;
    problems.append(&mut rep.errors);
    if !problems.is_empty() {
        return Err(ConfigError { problems });
    }
    Ok(Ecosystem { file: Some(path.to_path_buf()), apps, warnings: rep.warnings, notes })
}

/// `--only`: which app entries run — the named ones and, through `depends_on` and roles, what
/// they need (said in `notes`).
fn only_with_dependencies(apps: &[(String, &Node)], only: &[String], notes: &mut Vec<String>) -> Vec<bool> {
    let names: Vec<String> = apps.iter().map(|(_, n)| validate::quick_name(n).unwrap_or_default()).collect();
    let orders: Vec<(Role, Vec<Dependency>)> = apps.iter().map(|(_, n)| validate::quick_order(n)).collect();
    let entries: Vec<deps::Entry> =
        names.iter().zip(&orders).map(|(name, (role, d))| deps::Entry { name, role: *role, depends_on: d }).collect();
    let roots: Vec<usize> = (0..names.len()).filter(|&i| only.contains(&names[i])).collect();
    let kept = deps::graph(&entries).0.closure(&roots);
    let added: Vec<&str> = (0..names.len()).filter(|&i| kept[i] && !only.contains(&names[i])).map(|i| names[i].as_str()).collect();
    if !added.is_empty() {
        notes.push(format!("--only {}: also starting {} (depends_on / init / sidecar)", only.join(","), added.join(", ")));
    }
    kept
}

/// `depends_on` across apps: every name must be an app of the file, no cycle; the names are
/// then those the apps run under (after `append_env_to_name`). `apps[i]` is `raws[i]` finished.
fn check_order(raws: &[RawApp], apps: &mut [Option<App>], rep: &mut Reporter) {
    if raws.iter().all(|r| r.depends_on.is_empty() && r.role.is_none_or(|r| r == Role::App)) {
        return;
    }
    let file_names: Vec<String> = raws
        .iter()
        .map(|r| r.name.clone().or_else(|| r.script.as_ref().map(|(s, _)| validate::default_name(s))).unwrap_or_default())
        .collect();
    let dep_lists: Vec<Vec<Dependency>> = raws.iter().map(|r| r.depends_on.iter().map(|(d, _)| d.clone()).collect()).collect();
    let entries: Vec<deps::Entry> = (0..raws.len())
        .map(|i| deps::Entry { name: &file_names[i], role: raws[i].role.unwrap_or_default(), depends_on: &dep_lists[i] })
        .collect();
    let (graph, problems) = deps::graph(&entries);
    let at = |app: usize, entry: usize| raws[app].depends_on.get(entry).and_then(|(_, pos)| *pos);
    for p in problems {
        match p {
            deps::Problem::Unknown { app, entry } => {
                let name = &dep_lists[app][entry].name;
                let hint = units::suggest(name, file_names.iter().map(String::as_str))
                    .map(|s| format!(" (did you mean \"{s}\"?)"))
                    .unwrap_or_else(|| format!(" (apps: {})", file_names.join(", ")));
                rep.error(at(app, entry), &raws[app].depends_on_key, format!("no app named {name:?}{hint}"));
            }
            deps::Problem::Itself { app, entry } => {
                rep.error(at(app, entry), &raws[app].depends_on_key, format!("{:?} depends on itself", file_names[app]));
            }
            deps::Problem::Cycle(cycle) => {
                let mut path: Vec<String> = cycle.iter().map(|&i| file_names[i].clone()).collect();
                path.push(file_names[cycle[0]].clone());
                // Shown at the first edge the file wrote.
                let (from, to) = (0..cycle.len())
                    .map(|k| (cycle[k], cycle[(k + 1) % cycle.len()]))
                    .find(|&(a, b)| graph.edge(a, b).is_some_and(|e| !e.implicit))
                    .unwrap_or((cycle[0], cycle[0]));
                let entry = dep_lists[from].iter().position(|d| d.name == file_names[to]).unwrap_or(0);
                let roles = if cycle.iter().any(|&i| raws[i].role.is_some_and(|r| r != Role::App)) {
                    " (apps wait for init jobs and sidecars unless these name them)"
                } else {
                    ""
                };
                rep.error(at(from, entry), &raws[from].depends_on_key, format!("dependency cycle: {}{roles}", path.join(" → ")));
            }
        }
    }
    // Name dependencies as the apps will run (append_env_to_name may add `-<env>`).
    let run_names: Vec<Option<String>> = apps.iter().map(|a| a.as_ref().map(|a| a.name.clone())).collect();
    for (i, app) in apps.iter_mut().enumerate() {
        let Some(app) = app else { continue };
        app.depends_on = graph.needs[i]
            .iter()
            .filter(|e| !e.implicit)
            .filter_map(|e| Some(Dependency { name: run_names[e.to].clone()?, condition: Some(e.condition) }))
            .collect();
    }
}

/// The script form with an explicit base directory and environment.
fn from_script_with(script: &str, o: &Overrides, host: &Host) -> Result<Ecosystem, ConfigError> {
    let mut rep = Reporter::new("");
    let mut problems = Vec::new();
    let flags = parse_flags(o, &mut problems);
    let defaults = env_defaults(host, &mut rep.warnings);
    if script.trim().is_empty() {
        problems.push(Problem::new(None, None, Some("script"), "must not be empty"));
        return Err(ConfigError { problems });
    }
    let raw = RawApp { script: Some((script.to_string(), None)), ..Default::default() };
    let app = finish(&raw, o, &flags, &defaults, (&BTreeMap::new(), &BTreeSet::new()), true, host, &mut rep);
    problems.append(&mut rep.errors);
    match app {
        Some(app) if problems.is_empty() => Ok(Ecosystem { file: None, apps: vec![app], warnings: rep.warnings, notes: vec![] }),
        _ => Err(ConfigError { problems }),
    }
}

/// Turns a validated app into the final [`App`]: resolution, overrides, env merging, defaults.
#[allow(clippy::too_many_arguments)]
fn finish(
    raw: &RawApp,
    o: &Overrides,
    flags: &Flags,
    defaults: &Defaults,
    (deploy_env, deploy_numbers): (&BTreeMap<String, String>, &BTreeSet<String>),
    script_form: bool,
    host: &Host,
    rep: &mut Reporter,
) -> Option<App> {
    let (script, script_pos) = raw.script.as_ref()?;
    let interpreter = match &o.interpreter {
        Some(i) if !i.trim().is_empty() => Some((i.as_str(), None, "--interpreter".to_string())),
        _ => raw.interpreter.as_ref().map(|(i, pos)| (i.as_str(), *pos, join(&raw.path, "interpreter"))),
    };
    let interpreter_args = flags.node_args.clone().or_else(|| raw.interpreter_args.clone()).unwrap_or_default();
    let args = if script_form { o.args.clone() } else { raw.args.clone().unwrap_or_default() };
    let target = Target {
        path: &raw.path,
        script,
        script_pos: *script_pos,
        script_key: if script_form { String::new() } else { join(&raw.path, "script") },
        cwd: raw.cwd.as_ref().map(|(c, p)| (c.as_str(), *p)),
        interpreter,
        interpreter_args: &interpreter_args,
        args: &args,
    };
    let resolved = resolve::resolve(&target, host, rep)?;

    let mut name = match (&o.name, script_form) {
        (Some(n), true) => n.clone(),
        _ => raw.name.clone().unwrap_or_else(|| validate::default_name(script)),
    };
    // Low to high: env files, deploy env, `env`, `env_<name>`, secret files (see `app_env`).
    let mut env = app_env::env_files(&raw.env_file, &resolved.cwd, host.var, rep);
    // Each layer decides for its own keys whether the value is a number (files: strings).
    let mut env_numbers = BTreeSet::new();
    let mut layer = |env: &mut BTreeMap<String, String>, values: &BTreeMap<String, String>, numbers: Option<&BTreeSet<String>>| {
        for (k, v) in values {
            env.insert(k.clone(), v.clone());
            if numbers.is_some_and(|n| n.contains(k)) {
                env_numbers.insert(k.clone());
            } else {
                env_numbers.remove(k);
            }
        }
    };
    layer(&mut env, deploy_env, Some(deploy_numbers));
    layer(&mut env, &raw.env, Some(&raw.env_numbers));
    if let Some(e) = &o.env {
        if let Some(extra) = raw.env_named.get(e) {
            layer(&mut env, extra, raw.env_named_numbers.get(e));
        }
        if raw.append_env_to_name {
            name = format!("{name}-{e}");
        }
    }
    let secret_keys = app_env::secret_files(&mut env, &raw.secrets, &raw.path, &resolved.cwd, rep);
    env_numbers.retain(|k| !secret_keys.contains(k));

    // A name derived from the script, given with -n, or suffixed by --env: same rule as `name`.
    if (raw.name.is_none() || script_form || raw.append_env_to_name)
        && let Some(e) = validate::control_char_problem(&name)
    {
        let key = match (script_form, &o.name) {
            (true, Some(_)) => "--name".to_string(),
            (true, None) => "script".to_string(),
            (false, _) => join(&raw.path, "name"),
        };
        rep.error(*script_pos, &key, format!("{name:?} {e}"));
        return None;
    }

    // PM2's rule: `instances` set and a Node interpreter means cluster. `-i` counts with a
    // script (PM2 copies it into the app); with a file it only sets the count (PM2 ignores it there).
    let instances_given = raw.instances.is_some() || (script_form && flags.instances.is_some());
    let exec_mode = raw.exec_mode.unwrap_or(if instances_given && resolved.command.is_node { ExecMode::Cluster } else { ExecMode::Fork });
    let cwd = resolved.cwd.clone();
    let home = (host.var)("HOME");
    let file_path = |p: &Option<String>| p.as_deref().map(|p| log_path(p, &cwd, home.as_deref()));
    // Paths as configured (PM2's `jlist` shows them so); the watcher resolves them against cwd.
    let watch = match &raw.watch {
        Some(w) => w.clone(),
        None if o.watch => Watch::Cwd,
        None => Watch::Off,
    };

    // Past ARG_MAX exec fails with E2BIG: say so now, not as a crash loop at start.
    let strings = |it: &mut dyn Iterator<Item = usize>| it.map(|n| n + 1 + std::mem::size_of::<usize>()).sum::<usize>();
    let argv_bytes =
        strings(&mut std::iter::once(resolved.command.program.as_os_str().len()).chain(resolved.command.argv.iter().map(String::len)));
    let env_bytes = strings(&mut env.iter().map(|(k, v)| k.len() + 1 + v.len()));
    let limit = crate::process::unix::arg_max();
    if argv_bytes + env_bytes > limit {
        let key = if env_bytes > argv_bytes { "env" } else { "args" };
        rep.error(
            *script_pos,
            &join(&raw.path, key),
            format!("arguments ({argv_bytes} bytes) and env ({env_bytes} bytes) exceed what exec accepts ({limit} bytes, ARG_MAX)"),
        );
        return None;
    }

    let liveness_probe = raw.liveness_probe.as_ref().and_then(|p| probe(p, raw.port, &env, rep));
    let readiness_probe = raw.readiness_probe.as_ref().and_then(|p| probe(p, raw.port, &env, rep));
    Some(App {
        name,
        namespace: raw.namespace.clone().unwrap_or_else(|| "default".into()),
        script: script.clone(),
        exec_path: resolved.exec_path,
        cwd: cwd.clone(),
        args,
        interpreter_args,
        command: resolved.command,
        env,
        env_numbers,
        filter_env: raw.filter_env.clone(),
        port: raw.port,
        instances: flags.instances.or(raw.instances).unwrap_or(Instances::Count(1)),
        exec_mode,
        instance_var: raw.instance_var.clone().unwrap_or_else(|| "NODE_APP_INSTANCE".into()),
        increment_var: raw.increment_var.clone(),
        uid: raw.uid.clone(),
        gid: raw.gid.clone(),
        autostart: raw.autostart.unwrap_or(true),
        // An init job runs once unless asked to restart; when it is, exit 0 still completes it.
        autorestart: !o.no_autorestart && raw.autorestart.unwrap_or(raw.role != Some(Role::Init)),
        stop_exit_codes: {
            let mut codes = o.stop_exit_codes.clone().or_else(|| raw.stop_exit_codes.clone()).unwrap_or_default();
            if raw.role == Some(Role::Init) && !codes.contains(&0) {
                codes.push(0);
            }
            codes
        },
        min_uptime: raw.min_uptime.unwrap_or(Duration::from_millis(1000)),
        max_restarts: raw.max_restarts.unwrap_or(16),
        restart_delay: raw.restart_delay.unwrap_or_default(),
        exp_backoff_restart_delay: raw.exp_backoff_restart_delay.filter(|d| !d.is_zero()),
        // 0 means off (PM2's meaning of every 0 below: see `zero_means` in the tests).
        max_memory_restart: flags.max_memory_restart.or(raw.max_memory_restart).filter(|&b| b > 0),
        cron_restart: flags.cron.clone().or(raw.cron_restart.clone()).flatten(),
        kill_timeout: o.kill_timeout.map(Duration::from_millis).or(raw.kill_timeout).filter(nonzero).unwrap_or(defaults.kill_timeout),
        kill_signal: raw.kill_signal.map(KillSignal).unwrap_or(defaults.kill_signal),
        kill_retry_time: raw.kill_retry_time.filter(nonzero).unwrap_or(Duration::from_millis(100)),
        shutdown_with_message: raw.shutdown_with_message.unwrap_or(false),
        treekill: raw.treekill.unwrap_or(true),
        wait_ready: raw.wait_ready.unwrap_or(false),
        listen_fds: raw.listen_fds.unwrap_or(false),
        node_heap: raw.node_heap.unwrap_or(false),
        pm_runtime_preload: raw.pm_runtime_preload.unwrap_or(true),
        listen_timeout: raw.listen_timeout.filter(nonzero).unwrap_or(defaults.listen_timeout),
        liveness_probe,
        readiness_probe,
        watchdog: raw.watchdog.filter(nonzero),
        role: raw.role.unwrap_or_default(),
        depends_on: raw.depends_on.iter().map(|(d, _)| d.clone()).collect(),
        secret_keys,
        redact: raw.redact.clone(),
        mask_secrets: raw.mask_secrets.unwrap_or(false),
        watch,
        ignore_watch: raw.ignore_watch.clone().unwrap_or_default(),
        watch_delay: raw.watch_delay.unwrap_or_default(),
        watch_options: raw.watch_options.clone(),
        out_file: file_path(&raw.out_file),
        error_file: file_path(&raw.error_file),
        log_file: file_path(&raw.log_file.clone().flatten()),
        pid_file: file_path(&raw.pid_file),
        merge_logs: raw.merge_logs,
        log_date_format: raw.log_date_format.clone(),
        time: raw.time.unwrap_or(false),
        log_type: raw.log_type.clone(),
        disable_logs: raw.disable_logs.unwrap_or(false),
        log_max_size: raw.log_max_size,
        log_retain: raw.log_retain,
        ignored: raw.ignored.clone(),
    })
}

/// A probe with its defaults (Kubernetes': every 10 s, 1 s timeout, 3 failures, 1 success) and
/// its port: the probe's own, else the app's `port`, else `PORT` in its env.
fn probe(p: &validate::RawProbe, port: Option<u16>, env: &BTreeMap<String, String>, rep: &mut Reporter) -> Option<Probe> {
    let port = |own: Option<u16>, rep: &mut Reporter| {
        let found = own.or(p.port).or(port).or_else(|| env.get("PORT").and_then(|p| p.trim().parse().ok()));
        if found.is_none() {
            rep.error(p.pos, &p.path, "needs a port: give the probe a port, or the app `port` or PORT in its env");
        }
        found
    };
    let check = match p.kind.clone()? {
        validate::RawCheck::Http { path, port: own, status } => ProbeCheck::Http { path, port: port(own, rep)?, status },
        validate::RawCheck::Tcp { port: own } => ProbeCheck::Tcp { port: port(own, rep)? },
        validate::RawCheck::Exec { command } => ProbeCheck::Exec { command },
    };
    Some(Probe {
        check,
        initial_delay: p.initial_delay.unwrap_or_default(),
        period: p.period.unwrap_or(Duration::from_secs(10)),
        timeout: p.timeout.unwrap_or(Duration::from_secs(1)),
        failure_threshold: p.failure_threshold.unwrap_or(3),
        success_threshold: p.success_threshold.unwrap_or(1),
    })
}

/// PM2 reads `kill_timeout`, `listen_timeout` (`x || default`) and `kill_retry_time` as "the
/// default" when they are 0.
fn nonzero(d: &Duration) -> bool {
    !d.is_zero()
}

/// True for the log paths PM2 treats as "no file".
pub fn is_null_path(path: &Path) -> bool {
    path == Path::new("/dev/null") || path == Path::new("NULL")
}

impl App {
    /// Whether instances write separate log/pid files (`-<pm_id>` before `.log`): PM2 merges
    /// in fork mode with a single instance unless `merge_logs` says otherwise.
    fn separate_files(&self) -> bool {
        match self.merge_logs {
            Some(merge) => !merge,
            None => self.exec_mode == ExecMode::Cluster || self.instances != Instances::Count(1),
        }
    }

    /// A configured log/pid path (as [`log_path`] resolved it) for one instance: relative to
    /// the app's cwd, `-<pm_id>` inserted before the extension when instances keep separate
    /// files; `NULL` and `/dev/null` as they are.
    pub fn instance_path(&self, path: &Path, pm_id: u32) -> PathBuf {
        let path = if is_null_path(path) || path.is_absolute() { path.to_path_buf() } else { self.cwd.join(path) };
        if is_null_path(&path) || !self.separate_files() {
            return path;
        }
        let Some(stem) = path.file_stem() else { return path };
        let mut name = stem.to_owned();
        name.push(format!("-{pm_id}"));
        if let Some(ext) = path.extension() {
            name.push(".");
            name.push(ext);
        }
        path.with_file_name(name)
    }
}

/// PM2's file-name form of an app name: every character outside `[a-zA-Z0-9.\-\\]` → `-`.
pub fn sanitize_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '\\') { c } else { '-' }).collect()
}

/// PM2's default pid file name: `<name>-<pm_id>.pid`.
pub fn default_pid_file_name(app_name: &str, pm_id: u32) -> String {
    format!("{}-{pm_id}.pid", sanitize_name(app_name))
}

/// One instance's pid file, named as PM2 names it: the configured `pid_file` with a trailing
/// `-<digits>.pid` or `.pid` replaced by `-<pm_id>.pid` (any other name as it is, so instances
/// share it), else `$PM2_HOME/pids/<name>-<pm_id>.pid`. `/dev/null` and `NULL` as they are.
pub fn pid_path(pid_file: Option<&Path>, app_name: &str, pm_id: u32, pm2_home: &Path) -> PathBuf {
    let Some(path) = pid_file else {
        return pm2_home.join("pids").join(default_pid_file_name(app_name, pm_id));
    };
    let Some(name) = path.file_name().and_then(|n| n.to_str()).filter(|_| !is_null_path(path)) else { return path.to_path_buf() };
    let Some(stem) = name.strip_suffix(".pid") else { return path.to_path_buf() };
    let stem = match stem.rsplit_once('-') {
        Some((head, digits)) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => head,
        _ => stem,
    };
    path.with_file_name(format!("{stem}-{pm_id}.pid"))
}

/// A log/pid path as PM2 resolves it: `~/` expanded, relative to the app's cwd; `/dev/null` and
/// `NULL` kept as they are.
fn log_path(p: &str, cwd: &Path, home: Option<&str>) -> PathBuf {
    if is_null_path(Path::new(p)) {
        return PathBuf::from(p);
    }
    let expanded = match (p.strip_prefix("~/"), home) {
        (Some(rest), Some(h)) => Path::new(h).join(rest),
        _ => PathBuf::from(p),
    };
    normalize(&cwd.join(expanded))
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;

#[cfg(test)]
mod problem_tests {
    use super::*;

    #[test]
    fn problems_are_data_and_sort_by_place() {
        let at = |line, col| Some(Pos { line, col });
        let e = ConfigError {
            problems: vec![
                Problem::new(None, None, Some("-i"), "expected a number"),
                Problem::new(Some("e.yml"), at(7, 16), Some("apps[1].instances"), "too many"),
                Problem::new(Some("e.yml"), at(4, 3), Some("apps[0].port"), "bad port"),
            ],
        };
        let sorted: Vec<String> = e.sorted().iter().map(ToString::to_string).collect();
        assert_eq!(sorted, ["e.yml:4:3: apps[0].port: bad port", "e.yml:7:16: apps[1].instances: too many", "-i: expected a number"]);
        let p = &e.problems[1];
        assert_eq!((p.file.as_deref(), p.key.as_deref(), p.message.as_str()), (Some("e.yml"), Some("apps[1].instances"), "too many"));
        // Without a file a position means nothing: it is dropped.
        assert_eq!(Problem::new(None, at(1, 1), Some("k"), "m").pos, None);
    }
}

#[cfg(test)]
mod limit_tests {
    #[test]
    fn max_instances_from_env_value() {
        assert_eq!(super::max_instances_from(None), 4096);
        assert_eq!(super::max_instances_from(Some("10")), 10);
        assert_eq!(super::max_instances_from(Some("0")), 4096);
        assert_eq!(super::max_instances_from(Some("lots")), 4096);
    }
}
