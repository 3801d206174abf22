//! The command line: pm2-runtime's flags, parsed with clap.
//!
//! `pm-runtime <file-or-script>` is the short form of `pm-runtime start <file-or-script>`.

use clap::{Args, Parser, Subcommand};

use crate::config::Overrides;
use crate::logs::OutputFormat;

#[derive(Debug, Parser)]
#[command(name = "pm-runtime", version, about = "A daemonless, PID-1-safe process runtime for containers: a drop-in for pm2-runtime.", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an ecosystem file (.yml, .yaml, .json, .config.js) or a script in the foreground.
    /// With a runtime already running and an app name instead of a file: start that app.
    Start(Box<StartArgs>),
    /// List the processes of the running runtime.
    #[command(visible_aliases = ["list", "l", "status"])]
    Ls {
        /// name|id|pid|memory|cpu|status|uptime, optionally :asc or :desc.
        #[arg(long)]
        sort: Option<String>,
    },
    /// The process list as JSON (PM2's jlist shape).
    Jlist,
    /// Details of one app or process.
    #[command(visible_alias = "describe")]
    Show { target: String },
    /// Print recent log lines of an app (all apps by default).
    Logs {
        target: Option<String>,
        #[arg(long, default_value_t = 15)]
        lines: usize,
        /// Print the recent lines and exit instead of following the stream.
        #[arg(long)]
        nostream: bool,
        #[arg(long, conflicts_with_all = ["raw", "format"])]
        json: bool,
        #[arg(long)]
        raw: bool,
        /// `timestamp=… app=… id=… type=out|error message=…` lines.
        #[arg(long, conflicts_with = "raw")]
        format: bool,
        #[arg(long)]
        err: bool,
        #[arg(long)]
        out: bool,
    },
    /// Stop an app, a process id, a namespace or all.
    Stop(Target),
    /// Restart (stop, then start) an app, a process id, a namespace or all.
    Restart(Target),
    /// Reload: a restart in fork mode (zero-downtime reload comes with cluster mode).
    Reload(Target),
    /// Stop and remove an app, a process id, a namespace or all.
    Delete(Target),
    /// Set the restart counters (↺) of an app, a process id, a namespace or all back to 0.
    Reset(Target),
    /// Scale an app to N instances, or by +N / -N.
    Scale {
        name: String,
        #[arg(allow_hyphen_values = true)]
        count: String,
    },
    /// Send a signal to every process of an app.
    #[command(name = "sendSignal", visible_alias = "send-signal")]
    SendSignal { signal: String, target: String },
    /// Empty the log files of an app (all by default).
    Flush { target: Option<String> },
    /// Reopen log files (after an external rotation).
    #[command(name = "reloadLogs", visible_alias = "reload-logs")]
    ReloadLogs,
    /// A terminal dashboard: processes, CPU, memory, live logs of the selected one.
    Monit,
    /// Exit 0 when a runtime answers and every app that should be online is (health checks).
    Ping,
    /// Against a running runtime: restart the file's apps with their new settings, start new ones.
    #[command(name = "startOrRestart", visible_alias = "start-or-restart")]
    StartOrRestart(ApplyArgs),
    /// Same as startOrRestart (fork mode: a reload is a restart).
    #[command(name = "startOrReload", visible_alias = "start-or-reload")]
    StartOrReload(ApplyArgs),
    /// Same as startOrRestart (fork mode: a reload is a restart).
    #[command(name = "startOrGracefulReload", visible_alias = "start-or-graceful-reload")]
    StartOrGracefulReload(ApplyArgs),
    /// Write PM2's sample ecosystem.config.js in the current directory (`simple`: the short one).
    Init { mode: Option<String> },
    /// Stop every app and the runtime (as a stop signal does), like `pm2 kill`.
    Kill,
    /// Write a commented sample ecosystem.config.yml (or .js) in the current directory.
    Ecosystem {
        /// Write ecosystem.config.js instead.
        #[arg(long)]
        js: bool,
    },
    /// Serve a directory over HTTP as a supervised app (PM2's `serve`): path defaults to the
    /// current directory, port to 8080.
    #[command(visible_alias = "expose")]
    Serve(ServeArgs),
    /// Check an ecosystem file and print what would run (env keys only, never values); start nothing.
    #[command(visible_alias = "dry-run")]
    Validate {
        file: String,
        #[arg(long, value_name = "NAME")]
        env: Option<String>,
        #[arg(long, value_name = "NAMES")]
        only: Option<String>,
        #[arg(short = 'i', long, allow_hyphen_values = true)]
        instances: Option<String>,
        /// Seconds a JS config may take to evaluate before it is killed (default 30).
        #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
        config_timeout: Option<f64>,
    },
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    pub file: String,
    #[arg(long, value_name = "NAME")]
    pub env: Option<String>,
    #[arg(long, value_name = "NAMES")]
    pub only: Option<String>,
    /// Accepted for PM2 compatibility (a file always brings its env).
    #[arg(long)]
    pub update_env: bool,
    /// Seconds a JS config (.config.js, non-JSON .json) may take to evaluate before it is killed (default 30).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub config_timeout: Option<f64>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    pub path: Option<String>,
    pub port: Option<String>,
    #[arg(long = "port", value_name = "PORT")]
    pub port_flag: Option<String>,
    /// Serve the homepage for paths that do not exist (single-page apps).
    #[arg(long)]
    pub spa: bool,
    #[arg(long, value_name = "USERNAME")]
    pub basic_auth_username: Option<String>,
    #[arg(long, value_name = "PASSWORD")]
    pub basic_auth_password: Option<String>,
    /// Keep running when the server has stopped.
    #[arg(long)]
    pub no_auto_exit: bool,
}

#[derive(Debug, Args)]
pub struct Target {
    /// App name, process id, namespace, `/regex/`, `all`, or an ecosystem file.
    pub target: String,
    /// Accepted for PM2 compatibility (the env given at start is kept).
    #[arg(long)]
    pub update_env: bool,
    /// With an ecosystem file: act on these apps of it only (comma- or space-separated names).
    #[arg(long, value_name = "NAMES")]
    pub only: Option<String>,
    /// With an ecosystem file: merge its env_<NAME> (restart/reload bring the new env).
    #[arg(long, value_name = "NAME")]
    pub env: Option<String>,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Ecosystem file or script to run.
    pub target: String,
    /// Arguments for the script (script form only), after `--`.
    #[arg(last = true)]
    pub args: Vec<String>,
    /// App name (script form).
    #[arg(short = 'n', long)]
    pub name: Option<String>,
    /// Number of instances: N, max, or -N (CPUs minus N). Honoured with ecosystem files too.
    #[arg(short = 'i', long, allow_hyphen_values = true)]
    pub instances: Option<String>,
    /// Merge env_<NAME> of the ecosystem file into env.
    #[arg(long, value_name = "NAME")]
    pub env: Option<String>,
    /// Start only these apps (comma- or space-separated names).
    #[arg(long, value_name = "NAMES")]
    pub only: Option<String>,
    /// Interpreter for the script (node, python3, bash, none, …).
    #[arg(long)]
    pub interpreter: Option<String>,
    /// Arguments for the interpreter (e.g. "--max-old-space-size=512").
    #[arg(long, allow_hyphen_values = true)]
    pub node_args: Option<String>,
    /// Do not restart apps when they exit.
    #[arg(long)]
    pub no_autorestart: bool,
    /// Exit codes that do not trigger a restart.
    #[arg(long, num_args = 1.., value_name = "CODES")]
    pub stop_exit_codes: Option<Vec<i32>>,
    /// Keep running when every app has stopped.
    #[arg(long)]
    pub no_auto_exit: bool,
    /// Seconds to wait before starting the apps.
    #[arg(long, value_name = "SECONDS", value_parser = parse_delay)]
    pub delay: Option<f64>,
    /// On SIGTERM/SIGINT, turn /readyz to 503 at once but signal the apps only after this many
    /// seconds (load balancers stop sending first). Also PM_RUNTIME_SHUTDOWN_DELAY.
    #[arg(long, value_name = "SECONDS")]
    pub shutdown_delay: Option<f64>,
    /// Milliseconds between the kill signal and SIGKILL when stopping an app (default 1600).
    #[arg(long, value_name = "MS")]
    pub kill_timeout: Option<u64>,
    /// Restart an app whose memory exceeds this (e.g. 150M).
    #[arg(long, value_name = "SIZE")]
    pub max_memory_restart: Option<String>,
    /// Restart on a cron schedule.
    #[arg(short = 'c', long = "cron", value_name = "PATTERN")]
    pub cron: Option<String>,
    /// Restart apps when files change.
    #[arg(long)]
    pub watch: bool,
    /// Log lines as `<id>|<name> | line`.
    #[arg(long, conflicts_with_all = ["json", "format"])]
    pub formatted: bool,
    /// Log lines as JSON objects, one per line.
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// Log lines as `timestamp=… app=… id=… type=… message=…`.
    #[arg(long)]
    pub format: bool,
    /// Raw app output (the default).
    #[arg(long)]
    pub raw: bool,
    /// Serve the HTTP API, /metrics, health probes and the dashboard (default port 9615, or
    /// PM2_WEB_PORT / PM2_API_PORT; address PM2_API_IPADDR, default 127.0.0.1). Port 0 picks one.
    #[arg(long, num_args = 0..=1, require_equals = true, value_name = "PORT")]
    pub web: Option<Option<u16>>,
    /// Also serve the PM2 Prometheus exporter's metric names on /metrics (`pm2`).
    #[arg(long, value_name = "pm2")]
    pub metrics_compat: Option<String>,
    /// PM2 Plus secret key (PM2_SECRET_KEY wins; prefer it: a flag shows in `ps`).
    #[arg(long, value_name = "KEY")]
    pub secret: Option<String>,
    /// PM2 Plus public key (PM2_PUBLIC_KEY wins).
    #[arg(long = "public", value_name = "KEY")]
    pub public_key: Option<String>,
    /// Server name on the PM2 Plus dashboard (PM2_MACHINE_NAME wins; default <hostname>-<4 hex>).
    #[arg(long, value_name = "NAME")]
    pub machine_name: Option<String>,
    /// Seconds a JS config (.config.js, non-JSON .json) may take to evaluate before it is killed (default 30).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub config_timeout: Option<f64>,
}

impl StartArgs {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            env: self.env.clone(),
            only: self.only.as_deref().map(split_names).unwrap_or_default(),
            name: self.name.clone(),
            instances: self.instances.clone(),
            interpreter: self.interpreter.clone(),
            node_args: self.node_args.clone(),
            no_autorestart: self.no_autorestart,
            stop_exit_codes: self.stop_exit_codes.clone(),
            kill_timeout: self.kill_timeout,
            max_memory_restart: self.max_memory_restart.clone(),
            cron: self.cron.clone(),
            watch: self.watch,
            args: self.args.clone(),
            config_timeout: self.config_timeout,
        }
    }

    pub fn plus_flags(&self) -> crate::plus::Flags {
        crate::plus::Flags { public_key: self.public_key.clone(), secret: self.secret.clone(), machine_name: self.machine_name.clone() }
    }

    pub fn output_format(&self, stdout_is_tty: bool) -> OutputFormat {
        if self.json {
            OutputFormat::Json
        } else if self.format {
            OutputFormat::Logfmt
        } else if self.formatted {
            OutputFormat::Formatted { color: stdout_is_tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) }
        } else {
            OutputFormat::Raw
        }
    }
}

/// A positive, finite number of seconds.
///
/// Errs with `String` on purpose: a clap value parser, whose text clap prints as the usage error.
fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && std::time::Duration::try_from_secs_f64(v).is_ok() => Ok(v),
        _ => Err(format!("expected a positive number of seconds, got {s:?}")),
    }
}

/// `--delay`: zero or a positive, finite number of seconds (`inf` or `1e300` panicked).
///
/// Errs with `String` on purpose: a clap value parser, whose text clap prints as the usage error.
fn parse_delay(s: &str) -> Result<f64, String> {
    if s.trim().parse::<f64>() == Ok(0.0) { Ok(0.0) } else { parse_seconds(s) }
}

/// `--only a,b` / `--only "a b"`: app names separated by commas or spaces, as pm2-runtime splits them.
pub fn split_names(list: &str) -> Vec<String> {
    list.split([',', ' ']).filter(|n| !n.is_empty()).map(str::to_string).collect()
}

/// Whether `word` names a subcommand (or one of its aliases), as clap knows them.
fn is_subcommand(word: &str) -> bool {
    use clap::CommandFactory;
    word == "help" || Cli::command().get_subcommands().any(|c| c.get_name() == word || c.get_all_aliases().any(|a| a == word))
}

/// Inserts `start` for the short form `pm-runtime <file> …`, and joins `--web PORT` into
/// `--web=PORT` (so `--web app.yml` leaves the file alone, as in PM2).
pub fn normalize_args(mut args: Vec<String>) -> Vec<String> {
    if let Some(i) = args.iter().position(|a| a == "--web")
        && args.get(i + 1).is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        let port = args.remove(i + 1);
        args[i] = format!("--web={port}");
    }
    // `pm-runtime --web app.yml`: the flag may come first.
    let at = if args.get(1).is_some_and(|a| a == "--web" || a.starts_with("--web=")) { 2 } else { 1 };
    if let Some(first) = args.get(at)
        && !first.starts_with('-')
        && !is_subcommand(first)
    {
        args.insert(1, "start".to_string());
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn short_form_becomes_start() {
        assert_eq!(normalize_args(v(&["pm-runtime", "app.yml"])), v(&["pm-runtime", "start", "app.yml"]));
        assert_eq!(normalize_args(v(&["pm-runtime", "start", "app.yml"])), v(&["pm-runtime", "start", "app.yml"]));
        assert_eq!(normalize_args(v(&["pm-runtime", "--version"])), v(&["pm-runtime", "--version"]));
        for verb in ["ls", "list", "status", "jlist", "describe", "sendSignal", "reloadLogs", "validate", "dry-run", "ping", "scale"] {
            assert_eq!(normalize_args(v(&["pm-runtime", verb])), v(&["pm-runtime", verb]), "{verb}");
        }
    }

    #[test]
    fn flags_parse() {
        let cli = Cli::try_parse_from(normalize_args(v(&["pm-runtime", "app.js", "-i", "-1", "--only", "a,b", "--", "x", "--y"]))).unwrap();
        let Command::Start(s) = cli.command else { panic!("not start") };
        assert_eq!(s.instances.as_deref(), Some("-1"));
        let o = s.overrides();
        assert_eq!(o.only, v(&["a", "b"]));
        assert_eq!(o.args, v(&["x", "--y"]));
    }

    #[test]
    fn web_takes_an_optional_port_but_never_the_file() {
        let web = |a: &[&str]| {
            let cli = Cli::try_parse_from(normalize_args(v(a))).unwrap();
            let Command::Start(s) = cli.command else { panic!("not start") };
            (s.web, s.target)
        };
        assert_eq!(web(&["pm-runtime", "app.yml"]), (None, "app.yml".into()));
        assert_eq!(web(&["pm-runtime", "app.yml", "--web"]), (Some(None), "app.yml".into()));
        assert_eq!(web(&["pm-runtime", "--web", "app.yml"]), (Some(None), "app.yml".into()));
        assert_eq!(web(&["pm-runtime", "start", "app.yml", "--web", "8080"]), (Some(Some(8080)), "app.yml".into()));
        assert_eq!(web(&["pm-runtime", "app.yml", "--web=0"]), (Some(Some(0)), "app.yml".into()));
        assert!(Cli::try_parse_from(normalize_args(v(&["pm-runtime", "app.yml", "--web", "99999"]))).is_err());
    }
}
