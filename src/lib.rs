//! pm-runtime: a daemonless, PID-1-safe process runtime for containers, and a drop-in
//! replacement for PM2's `pm2-runtime`.
//!
//! How the pieces fit (data flows one way, every piece of state has one owning task):
//!
//! ```text
//! cli ──► config ──► supervisor (coordinator) ──► instance tasks ──► process (spawn, reaper)
//!                        ▲   signals                  │  exit statuses, IPC 'ready'
//!                        └── status updates ◄─────────┘
//!   app pipes ──► logs: pump tasks (framer + formatter) ──► one writer thread ──► stdout/stderr
//!   runtime events (tracing) ─────────────────────────────┘
//! ```
//!
//! - [`config`] turns an ecosystem file or a script into a validated [`config::Ecosystem`],
//!   reporting every problem with file, line and column.
//! - [`process`] starts processes in their own process groups and owns every `wait` (the
//!   [`process::Reaper`]), and after the last app terminates the strays (`process::strays`); it is the only place with `unsafe` (also where the runtime unmaps its
//!   start-up code once the apps run: `process::unix::trim_code`). It reads /proc
//!   (`process::tree`; the runtime's own figures: `process::own`) and the container's cgroup,
//!   v1 or v2 (`process::cgroup`: limits, usage, OOM kills). [`ids`] makes random identifiers
//!   (PM2's `unique_id`, the preload's file name). The import graph has no cycle
//!   (`tests/integration/layers.rs` fails on one).
//! - [`supervisor`] runs one task per app instance and a coordinator. Its front door is
//!   small: `run`, the status vocabulary and table ([`supervisor::status`]: `Status`,
//!   `RestartReason`, `ExitReason`, the one `Report` shape, the table and the bus) and PM2's
//!   `jlist` rendering ([`supervisor::jlist`]); the rest is private. Two pure deciders: an
//!   instance's lifecycle (`supervisor::machine`, `step(input, now) -> effects`, calling PM2's
//!   restart policy in `supervisor::policy`; every stop, a reload's retirement and a starved
//!   start included; probe results and watchdog heartbeats too: `supervisor::probe` only runs a
//!   bounded check, as the app's user: `supervisor::principal`) and the app set (`supervisor::coordinator`, `handle(event) -> effects`:
//!   auto-exit and the exit code, scale, apply, watch restarts, panicked tasks, the start and
//!   stop order, memory limits and recycling, `@pm2/io` messages). Each
//!   is driven by one loop that turns OS and socket events into inputs and carries out the
//!   effects: the instance task (`supervisor::instance`) and the coordinator's loop
//!   (`supervisor/mod.rs`), which owns the one status table, fed by the instances' reports,
//!   their IPC messages (`@pm2/io` metrics) and one sampler (one /proc sweep per period, while
//!   someone reads or an app has `max_memory_restart`). The start and stop order (`depends_on`,
//!   `role: init/sidecar`) is pure too: the graph in [`config::deps`], the rules in
//!   `supervisor::order`, applied by the coordinator's decider (held and released apps, a
//!   failed init job, who stops next); the loop keeps only the held inboxes and the per-app
//!   stop channels. So is the start schedule of the run's first instances
//!   (`supervisor::schedule`: one per CPU first, the rest once one of those is up), applied
//!   by the decider too. The container's memory ([`supervisor::container`]: the cgroup
//!   reading in the table, the `Recycler` the decider asks which instance to recycle near the limit,
//!   `node_heap: auto`, the start-up warnings, the termination log); every exit gets a death
//!   certificate (reason, pid, uptime, last stderr lines). Every reader (`ls`, `monit`, HTTP,
//!   PM2 Plus, OpenTelemetry) sees that table through a `watch` feed, and events through the
//!   bus, and imports nothing else of the supervisor.
//! - [`cluster`] is Node's cluster primary and the one Node IPC channel type (fork-mode Node
//!   children use it too: `ready`, app messages, `shutdown`). A worker's traffic gate is its
//!   channel's; the instance task opens it as its machine's ready state says.
//! - [`logs`] frames app output into whole lines and writes it, with the runtime's own events,
//!   through a single writer, holding at most 16 MiB of it (back-pressure); log files are
//!   opened without following another user's symlink (`logs::safe_open`).
//! - [`control`] serves the control socket in a `PM2_HOME` that must be ours (`control::home`)
//!   and is the client of the verbs; which processes a target names (`all`, `/regex/`, name,
//!   namespace, pm_id) is PM2's rule, in `control::target`.
//! - [`preload`] is the script Node apps are started with (`--require`): PM2's handling of
//!   unhandled rejections and uncaught exceptions, and the keep-alive drain of cluster workers.
//!   Bun and Deno apps get it too, where the runtime allows.
//! - [`redact`] decides which environment values may be shown (`jlist`, `show`): secret-file
//!   values and secret-looking keys as `[redacted]`, the runtime's credentials never; and masks
//!   them in app output with `mask_secrets`. Env files and secret files are read by [`config`].
//! - [`http`] (only with `--web`) serves the table over HTTP: PM2's `--web` JSON, a token-protected
//!   API whose writes are control requests, Prometheus `/metrics` (with prom-client cluster
//!   aggregation), health probes, live logs (token-protected too) and a dashboard
//!   (its app view reads `http::history`: 6 h of CPU/memory points and recent restarts per instance);
//!   who gets a connection slot (`http::admission`) and which host names are answered
//!   (`http::hosts`) are their own small modules.
//! - [`plus`] is the optional PM2 Plus link (on when both keys are set): its own thread reads
//!   the status feed and the bus, and asks the coordinator for remote actions through the same
//!   control requests as the socket; nothing of it exists when it is off.
//! - `outbound` (with PM2 Plus or OpenTelemetry built in) is their one HTTP client: `POST` on
//!   hyper's HTTP/1.1 connection API with rustls, `PM2_PROXY`, no redirects, typed errors; it
//!   also opens PM2 Plus' websocket stream. It exists only once one of them starts.
//! - [`exit`] is the table of exit codes; [`error`] the top-level errors (critical: the runtime
//!   cannot run, exit code by kind; runtime: reported, the runtime carries on). Config problems
//!   are values with file, line, column and key ([`config::Problem`]). Errors that cross a module
//!   boundary are typed (a `thiserror` enum of the module, carrying the facts: path, address,
//!   target, `io::Error`); a `String` error only where its text becomes a config problem or a
//!   clap usage message.
//! - [`git`] reads the branch, commit and remote of an app's directory as files, for the
//!   viewers' metadata (`monit`, the dashboard's app view), only when one asks.
//! - `monit` (cargo feature `monit`) is the terminal dashboard: PM2's four panes, read through
//!   the control socket, acting through the same requests as the verbs.
//! - `serve` is PM2's static file server (`script: serve`), run as an app by this binary.

pub mod cli;
pub mod cluster;
pub mod config;
pub mod control;
pub mod error;
pub mod exit;
pub mod git;
pub mod http;
pub mod ids;
pub mod logs;
#[cfg(feature = "monit")]
mod monit;
pub mod otel;
#[cfg(any(feature = "plus", feature = "otel"))]
pub mod outbound;
pub mod plus;
pub mod preload;
pub mod process;
pub mod redact;
mod serve;
pub mod signals;
pub mod supervisor;
mod verbs;

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use clap::Parser;
use tracing_subscriber::layer::SubscriberExt;

use cli::{Cli, Command, StartArgs};
use error::Critical;
use exit::Outcome;

/// Runs the command line `args` (including the program name) and returns how the runtime ended.
pub fn run(args: Vec<String>) -> Outcome {
    // The process of a `script: serve` app: this binary, run by the runtime.
    if args.get(1).map(String::as_str) == Some(serve::SUBCOMMAND) {
        return serve::run(&args[2..]);
    }
    let cli = match Cli::try_parse_from(cli::normalize_args(args)) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { Outcome::Usage } else { Outcome::Requested };
        }
    };
    let home = std::path::PathBuf::from(pm2_home());
    match cli.command {
        Command::Start(start) => {
            // `pm-runtime start web` against a running runtime, when `web` is no file.
            if !Path::new(&start.target).exists() && !config::is_config_file(&start.target) && control::client::runtime_running(&home) {
                return verbs::act(&home, "start", &start.target);
            }
            run_start(&start, &[])
        }
        Command::Serve(a) => serve_command(&home, a),
        other => verbs::run(&home, other),
    }
}

/// `pm-runtime serve [path] [port]`: PM2's `static-page-server-<port>` app, added to the running
/// runtime if there is one, else run in the foreground.
fn serve_command(home: &Path, a: cli::ServeArgs) -> Outcome {
    let port = a.port.or(a.port_flag).unwrap_or_else(|| "8080".into());
    let path = a.path.unwrap_or_else(|| ".".into());
    let mut env = vec![("PM2_SERVE_PATH".to_string(), path.clone()), ("PM2_SERVE_PORT".to_string(), port.clone())];
    if a.spa {
        env.push(("PM2_SERVE_SPA".into(), "true".into()));
    }
    if a.basic_auth_username.is_some() || a.basic_auth_password.is_some() {
        env.push(("PM2_SERVE_BASIC_AUTH".into(), "true".into()));
        env.extend(a.basic_auth_username.map(|u| ("PM2_SERVE_BASIC_AUTH_USERNAME".to_string(), u)));
        env.extend(a.basic_auth_password.map(|p| ("PM2_SERVE_BASIC_AUTH_PASSWORD".to_string(), p)));
    }
    let name = format!("static-page-server-{port}");
    let mut argv = vec!["pm-runtime".to_string(), "start".into(), "serve".into(), "--name".into(), name];
    if a.no_auto_exit {
        argv.push("--no-auto-exit".into());
    }
    let start = match Cli::try_parse_from(argv) {
        Ok(Cli { command: Command::Start(s) }) => s,
        _ => return Outcome::Internal,
    };
    if control::client::runtime_running(home) {
        return verbs::apply_ecosystem(home, "startOrRestart", &start.target, &start.overrides(), &env);
    }
    run_start(&start, &env)
}

/// Runs in the foreground; `extra_env` is added to every app's env (`pm-runtime serve`).
fn run_start(start: &StartArgs, extra_env: &[(String, String)]) -> Outcome {
    // Before anything can spawn: count stop signals synchronously, and reap orphans.
    if let Err(source) = process::unix::install_stop_counter() {
        return critical(Critical::Setup { what: "install signal handlers", source });
    }
    if !process::unix::is_pid1()
        && let Err(e) = process::unix::become_subreaper()
    {
        eprintln!("pm-runtime: warning: cannot become a child subreaper ({e}); orphans of the apps will not be reaped by pm-runtime");
    }
    let overrides = start.overrides();
    let loaded = if config::is_config_file(&start.target) {
        config::load(Path::new(&start.target), &overrides)
    } else {
        config::from_script(&start.target, &overrides)
    };
    let mut eco = match loaded {
        Ok(eco) => eco,
        // A stop signal cancelled the evaluation of a JS config: we were asked to stop.
        Err(e) if process::unix::stop_signals_received() > 0 => {
            for p in &e.problems {
                eprintln!("pm-runtime: {p}");
            }
            return Outcome::Requested;
        }
        Err(e) => return critical(Critical::Config(e)),
    };
    if eco.apps.is_empty() {
        return critical(Critical::NoApp(start.target.clone()));
    }
    for app in &mut eco.apps {
        app.env.extend(extra_env.iter().cloned());
    }
    let web = match http::options(start.web, start.metrics_compat.as_deref(), &|k| std::env::var(k).ok()) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("pm-runtime: {e}");
            return Outcome::Usage;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(source) => return critical(Critical::Setup { what: "start the async runtime", source }),
    };
    let plus = plus::resolve(&|name| std::env::var(name).ok(), &start.plus_flags());
    let otel = otel::resolve(&|name| std::env::var(name).ok());
    if matches!(otel, otel::Resolved::On(_)) {
        otel::name_services(&mut eco.apps);
    }
    let format = start.output_format(std::io::stdout().is_terminal());
    let delay = Duration::from_secs_f64(start.delay.unwrap_or(0.0).max(0.0));
    let shutdown_delay = match shutdown_delay(start.shutdown_delay, std::env::var("PM_RUNTIME_SHUTDOWN_DELAY").ok().as_deref()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("pm-runtime: {e}");
            return Outcome::Usage;
        }
    };
    rt.block_on(async move {
        // One tag per instance (pm_ids in start order), so `--formatted` columns are PM2's width.
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let mut tags = Vec::new();
        for a in &eco.apps {
            for _ in 0..config::resolve_instances(a.instances, cpus) {
                tags.push(logs::AppTag { name: &a.name, pm_id: tags.len() as u32 });
            }
        }
        let hub = match logs::LogHub::start(format, &tags) {
            Ok(x) => x,
            Err(source) => return critical(Critical::Setup { what: "set up output", source }),
        };
        let level = match std::env::var("PM_RUNTIME_LOG").as_deref() {
            Ok("debug") => tracing::Level::DEBUG,
            Ok("warn") => tracing::Level::WARN,
            Ok("error") => tracing::Level::ERROR,
            _ => tracing::Level::INFO,
        };
        let subscriber = tracing_subscriber::registry().with(logs::layer::HubLayer::new(hub.clone(), level));
        let _ = tracing::subscriber::set_global_default(subscriber);
        for w in &eco.warnings {
            tracing::warn!("{w}");
        }
        for n in &eco.notes {
            tracing::info!("{n}");
        }
        let signals = match signals::Signals::install() {
            Ok(s) => s,
            Err(source) => {
                let e = Critical::Setup { what: "install signal handlers", source };
                tracing::error!("{e}");
                return e.outcome();
            }
        };
        // The control socket: refuse to run twice on one PM2_HOME; run without it if it cannot be made.
        let (control_tx, control_rx) = tokio::sync::mpsc::channel(64);
        let plus_control = control_tx.clone();
        let http_control = web.as_ref().map(|_| control_tx.clone());
        let socket = match control::server::bind(Path::new(&pm2_home())) {
            Ok((listener, path)) => {
                tokio::spawn(control::server::serve(listener, control_tx));
                Some(path)
            }
            // The error goes through the log writer: wait for it to be written before exiting.
            Err(e @ (control::server::BindError::AlreadyRunning(_) | control::server::BindError::Unsafe(_))) => {
                let e = Critical::Bind(e);
                tracing::error!("{e}");
                hub.flush().await;
                return e.outcome();
            }
            Err(e) => {
                tracing::warn!("{}", error::Runtime::NoControlSocket(e));
                None
            }
        };
        // Only now that PM2_HOME is known to be ours (the socket's bind checks it) may files be
        // written into it.
        let mut eco = eco;
        preload::apply(&mut eco.apps, Path::new(&pm2_home()));
        let reaper = process::Reaper::new();
        let reaper_task = tokio::spawn(reaper.clone().run());
        let opts = supervisor::RunOptions { auto_exit: !start.no_auto_exit, delay, pm2_home: pm2_home(), cpus, shutdown_delay };
        // What readers see: the status table and the event bus. Optional readers (an HTTP
        // server, an upstream link) take a feed and the control sender here; with none, the feed
        // is dropped and the sampler only runs while `ls`/`monit` ask.
        let (board, feed) = supervisor::Board::new();
        if let (Some(opts), Some(control)) = (web, http_control)
            && let Err(e) = start_http(&opts, feed.clone(), &board, control, &hub, &reaper).await
        {
            let e = Critical::Web(e);
            tracing::error!("{e}");
            if let Some(file) = socket {
                file.remove();
            }
            hub.flush().await;
            return e.outcome();
        }
        let exporter = start_otel(otel, &feed, &hub, &reaper);
        match plus {
            #[cfg(feature = "plus")]
            plus::Resolved::On(cfg) => {
                let handles = plus::Handles { feed, bus: board.bus.clone(), control: plus_control, logs: hub.clone() };
                if let Err(e) = plus::spawn(cfg, handles) {
                    tracing::error!("PM2 Plus: {e}; running without it");
                }
            }
            #[cfg(not(feature = "plus"))]
            plus::Resolved::On(_) => {
                tracing::warn!(
                    "PM2 Plus keys are set, but this pm-runtime was built without PM2 Plus (cargo feature `plus`): the link stays off"
                );
                drop((feed, plus_control));
            }
            plus::Resolved::Misconfigured(why) => {
                tracing::warn!("{why}");
                drop((feed, plus_control));
            }
            plus::Resolved::Off => drop((feed, plus_control)),
        }
        // Start-up maps most of the binary (large page-cache folios, fault-around); once the
        // apps run, only what the runtime keeps running needs to be resident.
        if std::env::var("PM_RUNTIME_KEEP_CODE").as_deref() != Ok("1") {
            tokio::spawn(async {
                tokio::time::sleep(CODE_TRIM_AFTER).await;
                match process::unix::trim_code() {
                    Ok(bytes) => tracing::debug!("unmapped {} KiB of start-up code and data", bytes / 1024),
                    Err(e) => tracing::debug!("cannot unmap start-up code: {e}"),
                }
            });
        }
        let outcome = supervisor::run(eco, opts, reaper.clone(), hub.clone(), signals, control_rx, board).await;
        if let Some(file) = socket {
            file.remove();
        }
        hub.drain_pumps(Duration::from_secs(1)).await;
        if let Some(e) = exporter {
            // The last lines (a crash's, often the ones that matter) go out before we exit.
            e.finish();
        }
        reaper.reap_now();
        reaper_task.abort();
        hub.flush().await;
        outcome
    })
}

/// How long after start the runtime unmaps the code it ran to start (see
/// [`process::unix::trim_code`]): by then the first round of apps is up.
const CODE_TRIM_AFTER: Duration = Duration::from_secs(3);

/// Starts the OTLP exporter when the OpenTelemetry variables ask for it.
#[cfg(feature = "otel")]
fn start_otel(
    otel: otel::Resolved,
    feed: &supervisor::status::StatusFeed,
    hub: &logs::LogHub,
    reaper: &process::Reaper,
) -> Option<otel::Exporter> {
    match otel {
        otel::Resolved::Off => None,
        otel::Resolved::Misconfigured(why) => {
            tracing::warn!("{why}");
            None
        }
        otel::Resolved::On(cfg) => {
            for w in &cfg.warnings {
                tracing::warn!("OpenTelemetry: {w}");
            }
            let signals: Vec<String> = [("metrics", &cfg.metrics), ("logs", &cfg.logs)]
                .iter()
                .filter_map(|(what, t)| t.as_ref().map(|t| format!("{what} to {}", otel::printable(&t.url))))
                .collect();
            let every = cfg.interval;
            let handles = otel::Handles { feed: feed.clone(), logs: hub.clone(), reaper: reaper.clone() };
            match otel::spawn(cfg, handles) {
                Ok(e) => {
                    tracing::info!("OpenTelemetry: exporting {} (metrics every {} ms)", signals.join(", "), every.as_millis());
                    Some(e)
                }
                Err(e) => {
                    tracing::error!("OpenTelemetry: cannot start the exporter thread: {e}; running without it");
                    None
                }
            }
        }
    }
}

#[cfg(not(feature = "otel"))]
fn start_otel(otel: otel::Resolved, _: &supervisor::status::StatusFeed, _: &logs::LogHub, _: &process::Reaper) -> Option<otel::Exporter> {
    if !matches!(otel, otel::Resolved::Off) {
        tracing::warn!(
            "OpenTelemetry variables are set, but this pm-runtime was built without OpenTelemetry (cargo feature `otel`): export stays off"
        );
    }
    None
}

/// Says what stops the runtime from running (on stderr: no log writer exists yet) and gives
/// its exit code; the orchestrator's termination log says it too.
fn critical(e: Critical) -> Outcome {
    eprintln!("pm-runtime: {e}");
    supervisor::container::write_termination_log(&format!("pm-runtime: {e}"));
    e.outcome()
}

/// A shutdown delay out of range or not a number; `from` names the flag, or the variable and
/// its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{from}: expected seconds between 0 and 3600")]
struct BadShutdownDelay {
    from: String,
}

/// `--shutdown-delay` (seconds), else `PM_RUNTIME_SHUTDOWN_DELAY`.
fn shutdown_delay(flag: Option<f64>, env: Option<&str>) -> Result<Duration, BadShutdownDelay> {
    let (value, from) = match (flag, env.map(str::trim).filter(|v| !v.is_empty())) {
        (Some(f), _) => (f, "--shutdown-delay".to_string()),
        (None, Some(e)) => (e.parse::<f64>().unwrap_or(f64::NAN), format!("PM_RUNTIME_SHUTDOWN_DELAY={e:?}")),
        (None, None) => return Ok(Duration::ZERO),
    };
    if value.is_finite() && (0.0..=3600.0).contains(&value) { Ok(Duration::from_secs_f64(value)) } else { Err(BadShutdownDelay { from }) }
}

/// Binds the HTTP server and spawns it (with `--web`); says where it listens and where the token is.
async fn start_http(
    opts: &http::WebOptions,
    feed: supervisor::status::StatusFeed,
    board: &supervisor::Board,
    control: tokio::sync::mpsc::Sender<control::server::ControlRequest>,
    hub: &logs::LogHub,
    reaper: &process::Reaper,
) -> Result<(), http::StartError> {
    let listener = http::bind(opts).await?;
    let addr = listener.local_addr().map_err(http::StartError::LocalAddr)?;
    let (token, file) = http::token(std::env::var("PM_RUNTIME_WEB_TOKEN").ok(), Path::new(&pm2_home()))?;
    let writes = match (&token, file) {
        (http::Token::Disabled, _) => "write actions disabled (PM_RUNTIME_WEB_TOKEN is empty)".to_string(),
        (_, Some(path)) => format!("write actions and /logs need the token in {}", path.display()),
        (_, None) => "write actions and /logs need PM_RUNTIME_WEB_TOKEN".to_string(),
    };
    if let http::Token::Required(t) = &token
        && t.len() < 16
    {
        tracing::warn!("PM_RUNTIME_WEB_TOKEN is shorter than 16 characters: easy to guess (use e.g. `openssl rand -hex 24`)");
    }
    tracing::info!("HTTP API, /metrics and dashboard on http://{addr} ({writes})");
    let web = http::Web {
        feed,
        bus: board.bus.clone(),
        control,
        logs: hub.clone(),
        reaper: reaper.clone(),
        token,
        compat_pm2: opts.compat_pm2,
        next_request: Default::default(),
        streams: std::sync::Arc::new(tokio::sync::Semaphore::new(http::MAX_STREAMS)),
        hosts: opts.hosts.clone(),
        gather: Default::default(),
        history: Default::default(),
    };
    tokio::spawn(http::serve(listener, std::sync::Arc::new(web)));
    Ok(())
}

/// `$PM2_HOME`, else `~/.pm2`, as PM2 does.
pub fn pm2_home() -> String {
    if let Some(h) = std::env::var_os("PM2_HOME").filter(|h| !h.is_empty()) {
        return h.to_string_lossy().into_owned();
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".to_string());
    format!("{home}/.pm2")
}
