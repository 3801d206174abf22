//! The validated, typed ecosystem that every other module consumes.
//!
//! Nothing here touches the filesystem or the environment: `load`/`validate` build these values,
//! everything downstream only reads them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A whole ecosystem after loading, validation and CLI overrides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ecosystem {
    /// The file it came from (`None` for the script form: `pm-runtime app.js`).
    pub file: Option<PathBuf>,
    /// Apps in file order, after `--only` filtering.
    pub apps: Vec<App>,
    /// Non-fatal findings (unknown keys with "did you mean", undefined `--env`, …), already
    /// formatted as `file:line:col: path: message`.
    pub warnings: Vec<String>,
}

/// How many instances to run. Resolved to a number at start (`max`/`0` = usable CPUs, `-N` = CPUs − N).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Instances {
    Count(u32),
    /// `max` or `0`.
    Max,
    /// `-N` (CPUs minus N, at least 1).
    MinusCpus(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecMode {
    Fork,
    Cluster,
}

/// `filter_env`: true drops the whole inherited environment; a string drops that variable; a
/// list drops every variable whose name contains one of its entries (PM2's rules).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum FilterEnv {
    #[default]
    Inherit,
    DropAll,
    /// A list: drop inherited variables whose name contains any entry (PM2's list form).
    DropMatching(Vec<String>),
    /// A string: drop the inherited variable of exactly that name (PM2's string form).
    DropExact(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Watch {
    #[default]
    Off,
    /// `watch: true`: the app's cwd.
    Cwd,
    Paths(Vec<PathBuf>),
}

/// A user or group given by name or numeric id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Principal {
    Id(u32),
    Name(String),
}

/// What the child process will be: `program` + `argv` (argv excludes the program itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The interpreter (`node`, `python3`, `bash`, …) or the script itself for `interpreter: none`,
    /// or `sh` for a script containing a space. An absolute path when it could be found in PATH.
    pub program: PathBuf,
    /// `interpreter_args…, script, args…` (or `-c "<script>"` for the shell form).
    pub argv: Vec<String>,
    /// The interpreter's name as PM2 reports it (`node`, `python3`, `bash`, `none`).
    pub interpreter: String,
    /// True when `interpreter` is node or bun (gets `NODE_CHANNEL_FD`, can do cluster mode).
    pub is_node: bool,
}

/// The JavaScript runtime an interpreter is, by its file name (`node`, `/usr/bin/nodejs22`,
/// `bun`, `deno`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsRuntime {
    Node,
    Bun,
    Deno,
}

impl Command {
    pub fn js_runtime(&self) -> Option<JsRuntime> {
        let base = std::path::Path::new(&self.interpreter).file_name()?.to_string_lossy().into_owned();
        if base.ends_with("node") {
            Some(JsRuntime::Node)
        } else if base.ends_with("bun") {
            Some(JsRuntime::Bun)
        } else if base.ends_with("deno") {
            Some(JsRuntime::Deno)
        } else {
            None
        }
    }
}

/// One app of the ecosystem: every PM2 key, typed, with PM2's defaults applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct App {
    pub name: String,
    pub namespace: String,
    /// `script` as written in the file.
    pub script: String,
    /// Absolute path of the script (`pm_exec_path`); for a command with spaces, the command itself.
    pub exec_path: PathBuf,
    /// Absolute working directory (`pm_cwd`).
    pub cwd: PathBuf,
    pub args: Vec<String>,
    pub interpreter_args: Vec<String>,
    pub command: Command,
    /// `env_file` ⊕ `env` ⊕ `env_<name>` for the selected `--env` ⊕ secret files, values
    /// stringified. Does not include the inherited environment or PM2's own variables (the
    /// spawner adds those).
    pub env: BTreeMap<String, String>,
    /// Keys of `env` whose value was a number in the file (PM2's `jlist` shows it as one).
    #[serde(default)]
    pub env_numbers: BTreeSet<String>,
    pub filter_env: FilterEnv,
    pub port: Option<u16>,
    pub instances: Instances,
    pub exec_mode: ExecMode,
    pub instance_var: String,
    pub increment_var: Option<String>,
    pub uid: Option<Principal>,
    pub gid: Option<Principal>,
    pub autostart: bool,
    pub autorestart: bool,
    pub stop_exit_codes: Vec<i32>,
    pub min_uptime: Duration,
    pub max_restarts: u32,
    pub restart_delay: Duration,
    pub exp_backoff_restart_delay: Option<Duration>,
    /// Bytes (K/M/G are powers of 1024).
    pub max_memory_restart: Option<u64>,
    pub cron_restart: Option<String>,
    pub kill_timeout: Duration,
    /// `SIGINT` by default, or `PM2_KILL_SIGNAL`, or per-app `kill_signal`.
    pub kill_signal: KillSignal,
    pub kill_retry_time: Duration,
    pub shutdown_with_message: bool,
    pub treekill: bool,
    pub wait_ready: bool,
    /// Our extension: pass the app's listening socket (on `port`, or `PORT` in `env`) as fd 3
    /// with `LISTEN_FDS=1` / `LISTEN_PID` (systemd's convention), so instances of any language
    /// share one port. The runtime binds it once and keeps it open across restarts.
    #[serde(default)]
    pub listen_fds: bool,
    /// Our extension: start Node apps with pm-runtime's preload (`--require`), which handles
    /// unhandled rejections and uncaught exceptions as PM2's process container does and drains
    /// keep-alive connections of a retiring cluster worker (see `preload`). `false` turns it off.
    #[serde(default = "yes")]
    pub pm_runtime_preload: bool,
    pub listen_timeout: Duration,
    /// Keys of `env` whose values came from secret files (`secrets:`, `NAME_FILE`): never
    /// shown (see `crate::redact`).
    #[serde(default)]
    pub secret_keys: Vec<String>,
    /// `redact`: more key patterns (`*_DSN`, `DATABASE_URL`) whose values are never shown.
    #[serde(default)]
    pub redact: Vec<String>,
    /// `mask_secrets: true`: secret values the app prints are replaced in its log lines.
    #[serde(default)]
    pub mask_secrets: bool,
    pub watch: Watch,
    pub ignore_watch: Vec<String>,
    pub watch_delay: Duration,
    /// Raw `watch_options` object (chokidar options in PM2), kept for the watch issue.
    pub watch_options: Option<serde_json::Value>,
    pub out_file: Option<PathBuf>,
    pub error_file: Option<PathBuf>,
    pub log_file: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub merge_logs: Option<bool>,
    pub log_date_format: Option<String>,
    pub time: bool,
    pub log_type: Option<String>,
    pub disable_logs: bool,
    /// Log rotation for file logs (our extension): bytes, and how many rotated files to keep.
    pub log_max_size: Option<u64>,
    pub log_retain: Option<u32>,
    /// Keys PM2 accepts that have no effect here (pmx, vizion, automation, trace, …), kept verbatim.
    pub ignored: BTreeMap<String, serde_json::Value>,
}

fn yes() -> bool {
    true
}

/// What the command line adds to or overrides in a file (pm2-runtime's flags).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Overrides {
    /// `--env NAME`: merge `env_NAME` over `env`.
    pub env: Option<String>,
    /// `--only a,b`: keep only these app names (already split on `,` and spaces).
    pub only: Vec<String>,
    /// `-n/--name` (script form only; with a file it is ignored, as PM2 does).
    pub name: Option<String>,
    /// `-i/--instances`: honoured with ecosystem files too (unlike PM2). Raw text: N, max, -N.
    pub instances: Option<String>,
    pub interpreter: Option<String>,
    /// `--node-args "…"` (split like a shell).
    pub node_args: Option<String>,
    /// `--no-autorestart`.
    pub no_autorestart: bool,
    pub stop_exit_codes: Option<Vec<i32>>,
    /// `--kill-timeout MS`.
    pub kill_timeout: Option<u64>,
    /// `--max-memory-restart 100M`.
    pub max_memory_restart: Option<String>,
    /// `-c/--cron`.
    pub cron: Option<String>,
    /// `--watch`: apps without a `watch` key get `watch: true`.
    pub watch: bool,
    /// Script form: everything after `--`.
    pub args: Vec<String>,
    /// `--config-timeout SECONDS`: how long a JS config may take to evaluate (default 30).
    pub config_timeout: Option<f64>,
}

/// The signal that stops an app, parsed once (by `units::parse_signal`) when the config is
/// loaded. On the wire (`apply` requests, `jlist`) it is its `SIGXXX` name, as in PM2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KillSignal(pub nix::sys::signal::Signal);

impl KillSignal {
    pub fn get(self) -> nix::sys::signal::Signal {
        self.0
    }
}

impl Default for KillSignal {
    fn default() -> Self {
        KillSignal(nix::sys::signal::Signal::SIGINT)
    }
}

impl std::fmt::Display for KillSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl Serialize for KillSignal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for KillSignal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        super::units::parse_signal(&name).map(KillSignal).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;

    #[test]
    fn kill_signal_is_its_name_on_the_wire_and_parsed_on_the_way_in() {
        assert_eq!(serde_json::to_value(KillSignal(Signal::SIGTERM)).unwrap(), serde_json::json!("SIGTERM"));
        assert_eq!(KillSignal::default().to_string(), "SIGINT");
        for (text, want) in [("\"SIGUSR2\"", Signal::SIGUSR2), ("\"term\"", Signal::SIGTERM), ("\"9\"", Signal::SIGKILL)] {
            assert_eq!(serde_json::from_str::<KillSignal>(text).unwrap(), KillSignal(want), "{text}");
        }
        let e = serde_json::from_str::<KillSignal>("\"SIGFOO\"").unwrap_err().to_string();
        assert!(e.contains("unknown signal \"SIGFOO\""), "{e}");
    }
}
