//! The coordinator: starts one task per app instance, owns the table of their statuses, turns
//! the runtime's signals and control requests into commands, decides when the runtime exits and
//! with which code.
//!
//! State ownership: each instance task owns its process and restart history (its
//! `machine::Machine`); this coordinator owns only the latest [`Update`] of each instance.
//! Nobody else holds either. Modules: `machine` (the pure lifecycle), `instance` (the task that
//! runs it), `policy` (PM2's restart rules), `numbering` (`NODE_APP_INSTANCE`), `sampler`,
//! `status` (the vocabulary and the table: public), `jlist` (PM2's listing: public), `control`
//! (requests), `env`, `cron`, `file_watch`.

// The front door: `run` with its `RunOptions` and `Board`, the status vocabulary and table
// (`status`) and PM2's `jlist` rendering of it (`jlist`). Everything else is the supervisor's own.
mod control;
mod cron;
mod env;
mod file_watch;
mod instance;
pub mod jlist;
mod machine;
mod numbering;
mod policy;
mod sampler;
pub mod status;

pub use env::uuid_v4;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::config::{App, Ecosystem, ExecMode};
use crate::control::server::ControlRequest;
use crate::exit::Outcome;
use crate::logs::LogHub;
use crate::process::{Exit, Reaper, tree, unix};
use crate::signals::{RuntimeSignal, Signals};
use instance::Instance;
use machine::{Cmd, Shutdown};
use status::{
    AppStatus, Bus, BusEvent, InstanceStatus, Report, RestartCounts, RestartReason, Sample, Status, StatusFeed, StatusTable, Update,
};

/// Where the coordinator publishes what readers see: the status table and the event bus.
/// Made before the run so that optional readers (HTTP, PM2 Plus) can be given their handles.
pub struct Board {
    pub status: watch::Sender<Arc<StatusTable>>,
    pub bus: Bus,
}

impl Board {
    /// The board and a first feed (drop it when no reader needs one: the sampler then sleeps).
    pub fn new() -> (Board, StatusFeed) {
        let (status, feed) = status::channel();
        (Board { status, bus: Bus::default() }, feed)
    }
}

/// App IPC messages the coordinator may have waiting (beyond: dropped, the app is told nothing).
const MESSAGE_QUEUE: usize = 1024;

/// How often the sampler sweeps while an app has `max_memory_restart`: a crossing is acted on
/// within half a second (pm2-runtime: every 30 s, main pid only).
const MEMORY_PERIOD: Duration = Duration::from_millis(500);

/// How long an `ls` keeps the sampler sweeping (monit asks every second).
const READER_LINGER: Duration = Duration::from_secs(5);

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
struct Slot {
    pub app_index: usize,
    /// `NODE_APP_INSTANCE` of this instance.
    pub instance: u32,
    inbox: mpsc::UnboundedSender<Cmd>,
    pub last: Option<Update>,
    pub unique_id: String,
    pub created_at: SystemTime,
    pub restarts: RestartCounts,
    pub sample: Sample,
    pub axm_monitor: Arc<serde_json::Map<String, serde_json::Value>>,
    pub axm_actions: Arc<Vec<serde_json::Value>>,
    /// How many times this instance's task panicked (a bug of ours; see `task_ended`).
    panics: u32,
}

/// The coordinator's state: the apps, the instance table, and what new instances need.
struct Coordinator {
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
    /// Cluster mode: the listening sockets of every cluster app, by scheduling policy (0 =
    /// shared, 1 = round-robin), shared by all workers and kept for the runtime's life, so a
    /// port never closes while workers are replaced.
    listeners: std::collections::HashMap<usize, crate::cluster::Listeners>,
    /// `listen_fds` apps: their listening socket (any language, systemd's convention).
    sockets: std::collections::HashMap<usize, Arc<std::net::TcpListener>>,
    board: Board,
    /// A stop signal arrived.
    stopping: bool,
    sampler: sampler::Sampler,
    /// Until when an `ls`/`monit` reader keeps the sampler going.
    reader_until: Option<Instant>,
    messages_tx: instance::AppMessages,
    /// Each app's `NODE_APP_INSTANCE` numbers in use.
    numbers: std::collections::HashMap<usize, numbering::Numbering>,
    /// Which instance each task runs (a panicked task is known only by its id).
    task_ids: std::collections::HashMap<tokio::task::Id, u32>,
}

impl Coordinator {
    /// Starts one more instance of `app_index`, with the lowest free instance number (PM2 fills gaps).
    pub fn spawn_instance(&mut self, app_index: usize) -> u32 {
        let instance = self.numbers.entry(app_index).or_default().take();
        let pm_id = self.next_id;
        self.next_id += 1;
        let (tx, rx) = mpsc::unbounded_channel();
        let unique_id = env::uuid_v4();
        self.slots.insert(
            pm_id,
            Slot {
                app_index,
                instance,
                inbox: tx,
                last: None,
                unique_id,
                created_at: SystemTime::now(),
                restarts: RestartCounts::default(),
                sample: Sample::default(),
                axm_monitor: Default::default(),
                axm_actions: Default::default(),
                panics: 0,
            },
        );
        self.start_task(pm_id, rx, 0, false);
        pm_id
    }

    /// Starts the task of the instance in slot `pm_id`, with its inbox. `resumed`: the task
    /// replaces one that panicked, so the instance starts whatever `autostart` says.
    fn start_task(&mut self, pm_id: u32, inbox: mpsc::UnboundedReceiver<Cmd>, restart_time: u32, resumed: bool) {
        let Some(slot) = self.slots.get(&pm_id) else { return };
        let (app_index, instance, unique_id) = (slot.app_index, slot.instance, slot.unique_id.clone());
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
            inbox,
            restart_time,
            listeners: self.listeners_for(app_index),
            listen_socket: self.listen_socket_for(app_index),
            unique_id,
            messages: self.messages_tx.clone(),
            resumed,
        };
        let task = self.tasks.spawn(inst.run());
        self.task_ids.insert(task.id(), pm_id);
    }

    /// An instance task has ended. A panic (a bug of ours, never the app's) must not leave a
    /// ghost: the instance's processes are killed, and it starts again as after a crash
    /// (unless the runtime is stopping, or it keeps panicking: then it is errored).
    fn task_ended(&mut self, ended: Result<(tokio::task::Id, ()), tokio::task::JoinError>, restart: bool) {
        let (id, panic) = match ended {
            Ok((id, ())) => (id, None),
            Err(e) => (e.id(), Some(e)),
        };
        let Some(pm_id) = self.task_ids.remove(&id) else { return };
        let Some(panic) = panic else { return };
        let what = match panic.try_into_panic() {
            Ok(p) => p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_default(),
            Err(_) => "cancelled".to_string(),
        };
        let Some(slot) = self.slots.get_mut(&pm_id) else { return };
        let app = self.apps[slot.app_index].clone();
        let last = slot.last.take();
        if let Some(pid) = last.as_ref().and_then(|u| u.pid) {
            // The task owned the process: nobody else will stop it. SIGKILL to its group and
            // to descendants that left it (one shared /proc scan).
            unix::signal_group(pid, Signal::SIGKILL);
            tokio::spawn(async move {
                let procs = tree::fresh_snapshot().await;
                for d in procs.descendants(pid) {
                    unix::signal_pid(d, Signal::SIGKILL);
                }
            });
        }
        slot.panics += 1;
        let restart_time = last.as_ref().map_or(0, |u| u.restart_time) + 1;
        let again = restart && !self.stopping && slot.panics <= app.max_restarts.max(1);
        tracing::error!(app = %app.name, id = pm_id, status = "errored",
            "App [{}:{pm_id}] supervision task panicked ({what}); its processes were killed{}", app.name,
            if again { "; it is restarted as after a crash" } else { "" });
        if again {
            slot.restarts.add(RestartReason::Crash);
            let (tx, rx) = mpsc::unbounded_channel();
            slot.inbox = tx;
            self.start_task(pm_id, rx, restart_time, true);
        } else {
            let status = if self.stopping { Status::Stopped } else { Status::Errored };
            let report = match &last {
                Some(u) => Report { pid: None, scheduled: false, manual: false, reason: None, ..u.report.clone() },
                None => Report::of(status),
            };
            slot.last = Some(Update {
                pm_id,
                since: None,
                version: last.as_ref().and_then(|u| u.version.clone()),
                report: Report { status, restart_time, gone: self.stopping, ..report },
            });
        }
        self.publish();
    }

    /// The listeners of a cluster app (made on first use); `None` in fork mode. One registry
    /// serves every cluster app (per scheduling policy), as PM2 has one Node cluster primary for
    /// all apps: two apps listening on one port share its socket and its connections, instead of
    /// the second failing with EADDRINUSE.
    fn listeners_for(&mut self, app_index: usize) -> Option<crate::cluster::Listeners> {
        let app = &self.apps[app_index];
        if app.exec_mode != ExecMode::Cluster || !app.command.is_node {
            return None;
        }
        let policy = crate::cluster::SchedPolicy::from_env_value(
            app.env.get("NODE_CLUSTER_SCHED_POLICY").map(String::as_str).or(std::env::var("NODE_CLUSTER_SCHED_POLICY").ok().as_deref()),
        );
        let key = usize::from(policy == crate::cluster::SchedPolicy::RoundRobin);
        Some(self.listeners.entry(key).or_insert_with(|| crate::cluster::Listeners::new(policy)).with_cwd(app.cwd.clone()))
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
        // A report that only refreshes facts (the backoff reset of `prev_restart_delay`) is
        // no status event: PM2 Plus would count a second `online`.
        let refresh = |last: &Update| {
            (last.status, last.pid, last.last_exit, last.manual, last.scheduled)
                == (update.status, update.pid, update.last_exit, update.manual, update.scheduled)
                && update.reason.is_none()
                && !update.gone
        };
        if let Some(slot) = self.slots.get(&update.pm_id)
            && !slot.last.as_ref().is_some_and(refresh)
        {
            self.board.bus.publish(BusEvent::Status {
                pm_id: update.pm_id,
                name: self.apps[slot.app_index].name.clone(),
                report: update.report.clone(),
            });
        }
        if let Some(reason) = update.reason
            && let Some(slot) = self.slots.get_mut(&update.pm_id)
        {
            slot.restarts.add(reason);
        }
        if update.gone {
            if let Some(slot) = self.slots.remove(&update.pm_id) {
                self.numbers.entry(slot.app_index).or_default().give_back(slot.instance);
            }
            // PM2 numbers from 0 again once its table is empty (ids and `-<id>` log files match).
            if self.slots.is_empty() {
                self.next_id = 0;
            }
        } else if let Some(slot) = self.slots.get_mut(&update.pm_id) {
            if update.pid.is_none() {
                slot.sample = Sample::default();
            }
            slot.last = Some(update);
        }
    }

    /// An app's own IPC message: `@pm2/io`'s metrics and actions land in the table; every
    /// message goes on the bus.
    fn on_message(&mut self, pm_id: u32, message: serde_json::Value) {
        let Some(slot) = self.slots.get_mut(&pm_id) else { return };
        let kind = message.get("type").and_then(|t| t.as_str());
        let mut changed = false;
        match (kind, message.get("data")) {
            (Some("axm:monitor"), Some(serde_json::Value::Object(data))) => {
                slot.axm_monitor = Arc::new(data.clone());
                changed = true;
            }
            (Some("axm:action"), Some(data)) => {
                let name = data.get("action_name");
                if !slot.axm_actions.iter().any(|a| a.get("action_name") == name) {
                    Arc::make_mut(&mut slot.axm_actions).push(data.clone());
                    changed = true;
                }
            }
            _ => {}
        }
        let name = self.apps[slot.app_index].name.clone();
        self.board.bus.publish(BusEvent::AppMessage { pm_id, name, message: Arc::new(message) });
        if changed {
            self.publish();
        }
    }

    /// Whether anyone needs resource numbers now: a reader holds a feed, or an `ls` was recent.
    fn needs_samples(&self) -> bool {
        self.board.status.receiver_count() > 0 || self.reader_until.is_some_and(|t| Instant::now() < t)
    }

    /// Whether an app has `max_memory_restart` (the sampler then sweeps for it).
    fn has_memory_limits(&self) -> bool {
        self.apps.iter().any(|a| a.max_memory_restart.is_some())
    }

    /// `max_memory_restart`: every running instance whose tree is over its app's limit is told
    /// so (its machine decides what that means in its state).
    fn check_memory(&self) {
        for (id, s) in &self.slots {
            let Some(limit) = self.apps[s.app_index].max_memory_restart else { continue };
            let running = s.last.as_ref().filter(|u| matches!(u.status, Status::Online | Status::Launching)).and_then(|u| u.pid);
            if let Some(pid) = running
                && s.sample.memory_bytes > limit
            {
                self.send(*id, Cmd::OverMemory { pid, rss: s.sample.memory_bytes, limit });
            }
        }
    }

    /// One sweep of /proc for every running instance; the numbers go into the table.
    fn sample(&mut self) {
        let roots: Vec<(u32, u32)> = self.slots.iter().filter_map(|(id, s)| Some((*id, s.last.as_ref()?.pid?))).collect();
        let mut samples = self.sampler.sweep(&roots);
        for (id, slot) in self.slots.iter_mut() {
            slot.sample = samples.remove(id).unwrap_or_default();
        }
        self.publish();
    }

    /// A reader (`ls`, `monit`) wants the table now: fresh numbers if the last sweep is old,
    /// and the sampler keeps going for a while (monit asks again every second).
    pub fn table_for_reader(&mut self) -> Arc<StatusTable> {
        let now = Instant::now();
        self.reader_until = Some(now + READER_LINGER);
        if self.sampler.last_sweep.is_none_or(|t| now.duration_since(t) >= sampler::PERIOD.mul_f32(0.9)) {
            self.sample();
        }
        self.board.status.borrow().clone()
    }

    /// Publishes the table as it is now.
    fn publish(&self) {
        let instances = self
            .slots
            .iter()
            .map(|(id, s)| InstanceStatus {
                pm_id: *id,
                app: self.apps[s.app_index].clone(),
                instance: s.instance,
                unique_id: s.unique_id.clone(),
                last: s.last.clone(),
                restarts: s.restarts,
                created_at: s.created_at,
                sample: s.sample,
                axm_monitor: s.axm_monitor.clone(),
                axm_actions: s.axm_actions.clone(),
            })
            .collect();
        let apps = self
            .apps
            .iter()
            .enumerate()
            .map(|(i, app)| AppStatus { app: app.clone(), desired: self.slots.values().filter(|s| s.app_index == i).count() })
            .collect();
        let sampled_at = self.sampler.last_sweep.map(|t| SystemTime::now() - t.elapsed());
        self.board.status.send_replace(Arc::new(StatusTable { instances, apps, stopping: self.stopping, sampled_at }));
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
    board: Board,
) -> Outcome {
    if !opts.delay.is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(opts.delay) => {}
            s = signals.recv() => if matches!(s, RuntimeSignal::Stop) { return Outcome::Requested; }
        }
    }

    let (shutdown_tx, shutdown_rx) = watch::channel(Shutdown::Running);
    let (updates_tx, mut updates_rx) = mpsc::unbounded_channel::<Update>();
    let (messages_tx, mut messages_rx) = mpsc::channel(MESSAGE_QUEUE);
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
        board,
        stopping: false,
        sampler: Default::default(),
        reader_until: None,
        messages_tx,
        numbers: Default::default(),
        task_ids: Default::default(),
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
        let ids: Vec<u32> = co.slots.iter().filter(|(_, s)| s.app_index == app_index).map(|(id, _)| *id).collect();
        let own: Vec<_> = [&app.out_file, &app.error_file, &app.log_file]
            .into_iter()
            .flatten()
            .flat_map(|p| ids.iter().map(|id| app.instance_path(p, *id)).collect::<Vec<_>>())
            .chain(
                ids.iter().map(|id| crate::config::pid_path(app.pid_file.as_deref(), &app.name, *id, std::path::Path::new(&co.pm2_home))),
            )
            .collect();
        if let Err(e) = file_watch::spawn(app_index, app, own, restart_tx.clone()) {
            tracing::error!(app = %app.name, "cannot watch files: {e}");
        }
    }

    co.publish();
    let mut requested = false;
    let mut next_sample = tokio::time::Instant::now();
    loop {
        tokio::select! {
            Some((pm_id, message)) = messages_rx.recv() => co.on_message(pm_id, message),
            _ = tokio::time::sleep_until(next_sample), if co.needs_samples() || co.has_memory_limits() => {
                co.sample();
                co.check_memory();
                let period = if co.has_memory_limits() { MEMORY_PERIOD } else { sampler::PERIOD };
                next_sample = tokio::time::Instant::now() + period;
            }
            update = updates_rx.recv() => {
                let Some(update) = update else { break };
                co.record(update);
                // Whatever else has arrived meanwhile, then one table for all of it: N
                // instances changing at once cost O(N) updates and a few publishes, not N².
                while let Ok(u) = updates_rx.try_recv() {
                    co.record(u);
                }
                co.publish();
                if !requested && opts.auto_exit && all_settled(&co.slots) {
                    break;
                }
            }
            Some(ended) = co.tasks.join_next_with_id() => {
                // What the task reported before it ended (its pid above all) comes first.
                while let Ok(u) = updates_rx.try_recv() { co.record(u); }
                co.task_ended(ended, !requested);
                if co.tasks.is_empty() && (requested || opts.auto_exit) {
                    // Drain the last updates before deciding.
                    while let Ok(u) = updates_rx.try_recv() { co.record(u); }
                    co.publish();
                    break;
                }
            }
            Some(req) = control.recv(), if !requested => {
                let reply = control::handle(&mut co, req.req);
                co.publish();
                let _ = req.reply.send(reply);
            }
            Some(app_index) = restart_rx.recv(), if !requested => {
                // A stop turns watching off for that instance, as in PM2; a start turns it on again.
                let stopped = |s: &Slot| s.last.as_ref().is_some_and(|u| u.manual && u.status == Status::Stopped);
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
                        co.stopping = true;
                        co.publish();
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
            done = co.tasks.join_next_with_id() => match done {
                None => break,
                Some(ended) => {
                    // The outcome is decided on the statuses before the stop: tasks ending now
                    // must not take their slots with them.
                    while let Ok(u) = updates_rx.try_recv() { if !u.gone { co.record(u); } }
                    co.task_ended(ended, false)
                }
            },
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
    co.publish();
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
        if let Some(exit) = s.last.as_ref().and_then(|u| u.last_exit)
            && exit != Exit::Code(0)
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
