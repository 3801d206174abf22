//! The coordinator: starts one task per app instance, owns the table of their statuses, turns
//! the runtime's signals and control requests into commands, decides when the runtime exits and
//! with which code.
//!
//! State ownership: each instance task owns its process and restart history; this coordinator
//! owns only the latest [`Update`] of each instance. Nobody else holds either.

pub mod control;
pub mod cron;
pub mod env;
pub mod file_watch;
pub mod instance;
pub mod jlist;
pub mod policy;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::config::{App, Ecosystem, ExecMode};
use crate::control::server::ControlRequest;
use crate::exit::Outcome;
use crate::logs::LogHub;
use crate::process::{Exit, Reaper, tree, unix};
use crate::signals::{RuntimeSignal, Signals};
use instance::{Cmd, Instance, Shutdown, Status, Update};

/// Options of a run that do not come from the ecosystem.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub auto_exit: bool,
    /// `--delay`: wait before starting the apps.
    pub delay: Duration,
    pub pm2_home: String,
    /// How many CPUs `instances: max` means.
    pub cpus: usize,
}

/// One instance as the coordinator sees it.
pub struct Slot {
    pub app_index: usize,
    /// `NODE_APP_INSTANCE` of this instance.
    pub instance: u32,
    inbox: mpsc::UnboundedSender<Cmd>,
    pub last: Option<Update>,
}

/// The coordinator's state: the apps, the instance table, and what new instances need.
pub struct Coordinator {
    pub apps: Vec<Arc<App>>,
    pub slots: BTreeMap<u32, Slot>,
    next_id: u32,
    tasks: JoinSet<()>,
    reaper: Reaper,
    pub logs: LogHub,
    inherited: Arc<Vec<(OsString, OsString)>>,
    pm2_home: String,
    updates_tx: mpsc::UnboundedSender<Update>,
    shutdown_rx: watch::Receiver<Shutdown>,
    /// How many CPUs `instances: max` means.
    pub cpus: usize,
    /// Cluster mode: each cluster app's listening sockets, shared by its workers, kept for as
    /// long as the app exists so the port never closes while workers are replaced.
    listeners: std::collections::HashMap<usize, crate::cluster::Listeners>,
    /// `listen_fds` apps: their listening socket (any language, systemd's convention).
    sockets: std::collections::HashMap<usize, Arc<std::net::TcpListener>>,
    /// Last CPU sample per pm_id (ticks, when), for `ls`'s cpu %.
    cpu_prev: std::collections::HashMap<u32, (u64, std::time::Instant)>,
}

impl Coordinator {
    /// Starts one more instance of `app_index`, with the lowest free instance number (PM2 fills gaps).
    pub fn spawn_instance(&mut self, app_index: usize) -> u32 {
        let used: Vec<u32> = self.slots.values().filter(|s| s.app_index == app_index).map(|s| s.instance).collect();
        let instance = (0..).find(|n| !used.contains(n)).unwrap_or(0);
        let pm_id = self.next_id;
        self.next_id += 1;
        let (tx, rx) = mpsc::unbounded_channel();
        let inst = Instance {
            app: self.apps[app_index].clone(),
            pm_id,
            instance,
            reaper: self.reaper.clone(),
            logs: self.logs.clone(),
            inherited_env: self.inherited.clone(),
            pm2_home: self.pm2_home.clone(),
            updates: self.updates_tx.clone(),
            shutdown: self.shutdown_rx.clone(),
            inbox: rx,
            restart_time: 0,
            listeners: self.listeners_for(app_index),
            listen_socket: self.listen_socket_for(app_index),
        };
        self.slots.insert(pm_id, Slot { app_index, instance, inbox: tx, last: None });
        self.tasks.spawn(inst.run());
        pm_id
    }

    /// The listeners of a cluster app (made on first use); `None` in fork mode.
    fn listeners_for(&mut self, app_index: usize) -> Option<crate::cluster::Listeners> {
        let app = &self.apps[app_index];
        if app.exec_mode != ExecMode::Cluster || !app.command.is_node {
            return None;
        }
        let policy = crate::cluster::SchedPolicy::from_env_value(
            app.env.get("NODE_CLUSTER_SCHED_POLICY").map(String::as_str).or(std::env::var("NODE_CLUSTER_SCHED_POLICY").ok().as_deref()),
        );
        Some(self.listeners.entry(app_index).or_insert_with(|| crate::cluster::Listeners::new(policy)).clone())
    }

    /// `listen_fds`: the app's listening socket, bound on first use and kept while the app
    /// exists (connections queue in the kernel while an instance restarts). Binds `HOST` from
    /// the app's env when set, else every interface, on `port` or the env's `PORT`.
    fn listen_socket_for(&mut self, app_index: usize) -> Option<Arc<std::net::TcpListener>> {
        let app = &self.apps[app_index];
        if !app.listen_fds || app.command.is_node {
            return None;
        }
        if let Some(l) = self.sockets.get(&app_index) {
            return Some(l.clone());
        }
        let port = app.port.or_else(|| app.env.get("PORT").and_then(|p| p.trim().parse().ok()));
        let Some(port) = port else {
            tracing::error!(app = %app.name, "listen_fds needs `port` (or PORT in env); starting without a passed socket");
            return None;
        };
        let host = app.env.get("HOST").cloned().unwrap_or_else(|| "0.0.0.0".to_string());
        match std::net::TcpListener::bind((host.as_str(), port)) {
            Ok(l) => {
                let l = Arc::new(l);
                self.sockets.insert(app_index, l.clone());
                Some(l)
            }
            Err(e) => {
                tracing::error!(app = %app.name, "listen_fds: cannot listen on {host}:{port}: {e}");
                None
            }
        }
    }

    /// Sends a command to an instance.
    pub fn send(&self, pm_id: u32, cmd: Cmd) {
        if let Some(slot) = self.slots.get(&pm_id) {
            let _ = slot.inbox.send(cmd);
        }
    }

    fn record(&mut self, update: Update) {
        if update.gone {
            self.slots.remove(&update.pm_id);
        } else if let Some(slot) = self.slots.get_mut(&update.pm_id) {
            slot.last = Some(update);
        }
    }
}

/// Runs the ecosystem until it is stopped or nothing can run any more.
pub async fn run(
    eco: Ecosystem,
    opts: RunOptions,
    reaper: Reaper,
    logs: LogHub,
    mut signals: Signals,
    mut control: mpsc::Receiver<ControlRequest>,
) -> Outcome {
    if !opts.delay.is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(opts.delay) => {}
            s = signals.recv() => if matches!(s, RuntimeSignal::Stop) { return Outcome::Requested; }
        }
    }

    let (shutdown_tx, shutdown_rx) = watch::channel(Shutdown::Running);
    let (updates_tx, mut updates_rx) = mpsc::unbounded_channel::<Update>();
    let mut co = Coordinator {
        apps: eco.apps.iter().cloned().map(Arc::new).collect(),
        slots: BTreeMap::new(),
        next_id: 0,
        tasks: JoinSet::new(),
        reaper,
        logs: logs.clone(),
        inherited: Arc::new(std::env::vars_os().collect()),
        pm2_home: opts.pm2_home.clone(),
        updates_tx,
        shutdown_rx,
        cpu_prev: Default::default(),
        cpus: opts.cpus,
        listeners: Default::default(),
        sockets: Default::default(),
    };
    for app_index in 0..co.apps.len() {
        for _ in 0..crate::config::resolve_instances(co.apps[app_index].instances, opts.cpus) {
            co.spawn_instance(app_index);
        }
    }

    // One watcher per app with `watch`; it names the app, the coordinator restarts its instances.
    let (restart_tx, mut restart_rx) = mpsc::unbounded_channel::<usize>();
    for (app_index, app) in co.apps.iter().enumerate() {
        let own: Vec<_> = [&app.out_file, &app.error_file, &app.log_file, &app.pid_file]
            .into_iter()
            .flatten()
            .flat_map(|p| {
                co.slots
                    .iter()
                    .filter(|(_, s)| s.app_index == app_index)
                    .map(|(id, _)| crate::logs::hub::log_path(app, p, *id))
                    .collect::<Vec<_>>()
            })
            .collect();
        if let Err(e) = file_watch::spawn(app_index, app, own, restart_tx.clone()) {
            tracing::error!(app = %app.name, "cannot watch files: {e}");
        }
    }

    let mut requested = false;
    loop {
        tokio::select! {
            update = updates_rx.recv() => {
                let Some(update) = update else { break };
                co.record(update);
                if !requested && opts.auto_exit && all_settled(&co.slots) {
                    break;
                }
            }
            Some(_) = co.tasks.join_next() => {
                if co.tasks.is_empty() && (requested || opts.auto_exit) {
                    // Drain the last updates before deciding.
                    while let Ok(u) = updates_rx.try_recv() { co.record(u); }
                    break;
                }
            }
            Some(req) = control.recv(), if !requested => {
                let reply = control::handle(&mut co, req.req);
                let _ = req.reply.send(reply);
            }
            Some(app_index) = restart_rx.recv(), if !requested => {
                // A stop turns watching off for that instance, as in PM2; a start turns it on again.
                let stopped = |s: &Slot| s.last.as_ref().is_some_and(|u| u.manual && u.status == instance::Status::Stopped);
                for (id, _) in co.slots.iter().filter(|(_, s)| s.app_index == app_index && !stopped(s)) {
                    co.send(*id, Cmd::Restart);
                }
            }
            sig = signals.recv() => match sig {
                RuntimeSignal::Stop => {
                    if requested {
                        tracing::warn!("Second stop signal: killing every app now");
                        let _ = shutdown_tx.send(Shutdown::Force);
                    } else {
                        requested = true;
                        tracing::info!("Stop signal received: stopping every app (kill_timeout applies)");
                        let _ = shutdown_tx.send(Shutdown::Graceful);
                    }
                    if co.tasks.is_empty() {
                        break;
                    }
                }
                RuntimeSignal::Reload => {
                    tracing::info!("SIGHUP received: reloading every app (cluster: zero-downtime; fork: restart)");
                    for id in co.slots.keys() { co.send(*id, Cmd::Reload); }
                }
                RuntimeSignal::ReopenLogs => {
                    tracing::info!("SIGUSR2 received: reopening log files");
                    logs.reopen_files();
                }
                RuntimeSignal::Forward(sig) => {
                    for id in co.slots.keys() { co.send(*id, Cmd::Signal(sig)); }
                }
            },
        }
    }
    // Stop whatever is still running (auto-exit path: nothing is; stop path: all are stopping).
    if !requested {
        let _ = shutdown_tx.send(Shutdown::Graceful);
    }
    loop {
        tokio::select! {
            done = co.tasks.join_next() => if done.is_none() { break },
            s = signals.recv() => if s == RuntimeSignal::Stop {
                tracing::warn!("Second stop signal: killing every app now");
                let _ = shutdown_tx.send(Shutdown::Force);
            },
        }
    }
    while let Ok(update) = updates_rx.try_recv() {
        if !update.gone {
            co.record(update);
        }
    }
    sweep_strays().await;

    if requested {
        return Outcome::Requested;
    }
    let apps: Vec<App> = co.apps.iter().map(|a| (**a).clone()).collect();
    outcome(&apps, &co.slots)
}

/// True when no instance can run again by itself.
fn all_settled(slots: &BTreeMap<u32, Slot>) -> bool {
    slots.values().all(|s| s.last.as_ref().is_some_and(|u| !u.status.is_alive() && !u.scheduled))
}

/// The exit code when the apps ended by themselves (see `exit.rs`).
fn outcome(apps: &[App], slots: &BTreeMap<u32, Slot>) -> Outcome {
    if slots.values().any(|s| s.last.as_ref().is_some_and(|u| u.status == Status::Errored)) {
        let names: Vec<&str> = slots
            .values()
            .filter(|s| s.last.as_ref().is_some_and(|u| u.status == Status::Errored))
            .map(|s| apps[s.app_index].name.as_str())
            .collect();
        tracing::error!("Exiting: app(s) errored: {}", names.join(", "));
        return Outcome::AppErrored;
    }
    for s in slots.values() {
        if let Some(Update { last_exit: Some(exit), .. }) = &s.last
            && *exit != Exit::Code(0)
        {
            tracing::info!("Exiting: every app has finished; {} exited with {}", apps[s.app_index].name, exit.as_code());
            return Outcome::AppsFinished(exit.as_code());
        }
    }
    tracing::info!("Exiting: every app has finished");
    Outcome::AppsFinished(0)
}

/// After the last app: terminate every process still around that is not ours to keep.
/// As PID 1 that is everyone in the namespace; as a subreaper, our remaining children
/// (re-parented orphans of the apps) and their descendants.
async fn sweep_strays() {
    let me = std::process::id();
    let strays = || -> Vec<u32> {
        let procs = tree::snapshot();
        if unix::is_pid1() {
            procs.iter().filter(|p| p.pid != me && p.state != 'Z').map(|p| p.pid).collect()
        } else {
            tree::descendants(&procs, me).into_iter().filter(|pid| procs.iter().any(|p| p.pid == *pid && p.state != 'Z')).collect()
        }
    };
    let first = strays();
    if first.is_empty() {
        return;
    }
    tracing::warn!("Terminating {} stray process(es) left by the apps", first.len());
    let signal_all = |sig: Signal, pids: &[u32]| {
        if !unix::signal_everyone_as_pid1(sig) {
            for &p in pids {
                unix::signal_pid(p, sig);
            }
        }
    };
    signal_all(Signal::SIGTERM, &first);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let left = strays();
        if left.is_empty() {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            signal_all(Signal::SIGKILL, &left);
            break;
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    while !strays().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
