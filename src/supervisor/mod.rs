//! The coordinator's loop: starts one task per app instance, owns the table of their statuses,
//! turns the runtime's signals, the instances' reports, file watches and control requests into
//! [`coordinator::Event`]s for the pure decider (`coordinator.rs`), and carries out the
//! [`coordinator::Effect`]s it answers with. It decides nothing itself.
//!
//! State ownership: each instance task owns its process and restart history (its
//! `machine::Machine`); the decider's `State` (owned by this loop) holds the latest [`Update`]
//! of each instance. Nobody else holds either. Modules: `coordinator` (the pure decisions over
//! the app set), `machine` (the pure lifecycle of one instance), `instance` (the task that runs
//! it), `policy` (PM2's restart rules), `numbering` (`NODE_APP_INSTANCE`), `sampler`, `status`
//! (the vocabulary and the table: public), `jlist` (PM2's listing: public), `control` (requests
//! into events), `env`, `cron`, `file_watch`.

// The front door: `run` with its `RunOptions` and `Board`, the status vocabulary and table
// (`status`) and PM2's `jlist` rendering of it (`jlist`). Everything else is the supervisor's own.
pub mod container;
mod control;
mod coordinator;
mod cron;
mod env;
mod file_watch;
mod instance;
pub mod jlist;
mod machine;
mod numbering;
mod order;
mod policy;
mod probe;
mod sampler;
mod schedule;
pub mod status;

pub use env::uuid_v4;

use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::config::{Ecosystem, ExecMode, Role};
use crate::control::protocol::Reply;
use crate::control::server::ControlRequest;
use crate::exit::Outcome;
use crate::logs::LogHub;
use crate::process::{Reaper, tree, unix};
use crate::signals::Signals;
use coordinator::{Effect, Event, Note, Slot, State};
use instance::Instance;
use machine::{Cmd, Level, Shutdown};
use order::Order;
use status::{AppStatus, Bus, BusEvent, InstanceStatus, Status, StatusFeed, StatusTable, Update};

/// Custom actions (`axm:action`) kept per instance; one of more than 256 bytes of name or
/// 16 KiB of description, or beyond this count, is not kept.
pub const MAX_AXM_ACTIONS: usize = 64;

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
    /// On a stop signal: readiness ends at once, the apps are signalled after this.
    pub shutdown_delay: Duration,
}

/// The loop's resources around the decider's state: what carries effects out.
struct Coordinator {
    state: State,
    /// Each running instance task's inbox.
    inboxes: HashMap<u32, mpsc::UnboundedSender<Cmd>>,
    tasks: JoinSet<()>,
    /// Which instance each task runs (a panicked task is known only by its id).
    task_ids: HashMap<tokio::task::Id, u32>,
    reaper: Reaper,
    logs: LogHub,
    inherited: Arc<Vec<(OsString, OsString)>>,
    pm2_home: String,
    updates_tx: mpsc::UnboundedSender<Update>,
    /// How far each app's stop has gone (one channel per app, so that dependents stop first).
    stops: Vec<watch::Sender<Shutdown>>,
    /// The runtime-wide shutdown level (what a new app's channel starts at).
    shutdown: Shutdown,
    /// The stop has begun (ordered by `depends_on`: see [`Coordinator::stop_next`]).
    stop_begun: bool,
    /// Start and stop order (`depends_on`, roles): see [`Order`]. A held instance keeps what its
    /// task starts with (its inbox, where commands wait meanwhile; `restart_time`, `resumed`).
    order: Order<(mpsc::UnboundedReceiver<Cmd>, u32, bool)>,
    /// The start schedule of the instances the run begins with (see [`schedule`]); those it
    /// holds wait in `order.held`, until `staged_until` at the latest.
    staging: schedule::Staging,
    staged_until: Option<tokio::time::Instant>,
    /// `shutdown_delay`: on a stop signal, when the apps get the stop (readiness ended at once).
    shutdown_delay: Duration,
    stop_at: Option<tokio::time::Instant>,
    /// The container's limits and usage (read with each sample).
    container: container::Watch,
    /// Recycling before the OOM killer (`None`: PM_RUNTIME_MEMORY_RECYCLE=off).
    recycler: Option<container::Recycler>,
    /// `node_heap: auto`: the heap of each such Node process, MiB, for the next starts.
    heap_share: watch::Sender<Option<u64>>,
    /// Cluster mode: the listening sockets of every cluster app, by scheduling policy (0 =
    /// shared, 1 = round-robin), shared by all workers and kept for the runtime's life, so a
    /// port never closes while workers are replaced.
    listeners: HashMap<usize, crate::cluster::Listeners>,
    /// `listen_fds` apps: their listening socket (any language, systemd's convention).
    sockets: HashMap<usize, Arc<std::net::TcpListener>>,
    board: Board,
    sampler: sampler::Sampler,
    /// Until when an `ls`/`monit` reader keeps the sampler going.
    reader_until: Option<Instant>,
    messages_tx: instance::AppMessages,
    /// The table changed since it was last published.
    dirty: bool,
    /// The decider said the run is over, with this outcome.
    exit: Option<Outcome>,
}

impl Coordinator {
    /// Hands `event` to the decider and carries out its effects; the reply, if it made one.
    fn step(&mut self, event: Event) -> Option<Reply> {
        let mut reply = None;
        for effect in self.state.handle(event, SystemTime::now()) {
            match effect {
                Effect::StartTask { pm_id, restart_time, resumed } => self.start_or_hold(pm_id, restart_time, resumed),
                Effect::Send(pm_id, cmd) => self.send(pm_id, cmd),
                Effect::KillTree(pid) => {
                    // SIGKILL to its group and to descendants that left it (one shared /proc scan).
                    unix::signal_group(pid, Signal::SIGKILL);
                    tokio::spawn(async move {
                        let procs = tree::fresh_snapshot().await;
                        for d in procs.descendants(pid) {
                            unix::signal_pid(d, Signal::SIGKILL);
                        }
                    });
                }
                Effect::Shutdown(Shutdown::Running) => {}
                Effect::Shutdown(Shutdown::Force) => {
                    self.stop_at = None;
                    self.drop_held();
                    self.shutdown_all(Shutdown::Force);
                }
                // While `shutdown_delay` runs, the stop comes when it is over.
                Effect::Shutdown(Shutdown::Graceful) if self.stop_at.is_some() => {}
                Effect::Shutdown(Shutdown::Graceful) => {
                    if self.state.stopping && !self.shutdown_delay.is_zero() && !self.stop_begun {
                        // The table already says stopping (readiness ends); the apps get the stop later.
                        tracing::info!(
                            "Not ready any more; stopping every app in {:.1}s (shutdown_delay)",
                            self.shutdown_delay.as_secs_f64()
                        );
                        self.stop_at = Some(tokio::time::Instant::now() + self.shutdown_delay);
                    } else if self.state.stopping {
                        self.begin_stop();
                    } else {
                        // The run is over by itself (auto-exit, a failed init job): what is left
                        // stops at once, in no order.
                        self.drop_held();
                        self.shutdown_all(Shutdown::Graceful);
                    }
                }
                Effect::ReopenLogs => self.logs.reopen_files(),
                Effect::Forget(pm_id) => {
                    self.inboxes.remove(&pm_id);
                    self.order.reached.remove(&pm_id);
                    self.logs.forget(pm_id);
                }
                Effect::TerminationLog(text) => container::write_termination_log(&text),
                Effect::Announce(update) => {
                    if let Some(slot) = self.state.slots.get(&update.pm_id) {
                        let name = self.state.apps[slot.app_index].name.clone();
                        self.board.bus.publish(BusEvent::Status { pm_id: update.pm_id, name, report: update.report });
                    }
                }
                Effect::Publish => self.dirty = true,
                Effect::Reply(r) => reply = Some(r),
                Effect::Log(note) => log(note),
                Effect::Exit(outcome) => self.exit = Some(outcome),
            }
        }
        reply
    }

    /// Sends a command to an instance.
    fn send(&self, pm_id: u32, cmd: Cmd) {
        if let Some(inbox) = self.inboxes.get(&pm_id) {
            let _ = inbox.send(cmd);
        }
    }

    /// An instance the decider started: its task starts now, or once its app's dependencies
    /// are met (`depends_on`: the app is held).
    fn start_or_hold(&mut self, pm_id: u32, restart_time: u32, resumed: bool) {
        self.order.sync(&self.state.apps);
        let Some(app_index) = self.state.slots.get(&pm_id).map(|s| s.app_index) else { return };
        let (tx, inbox) = mpsc::unbounded_channel();
        self.inboxes.insert(pm_id, tx);
        if self.order.released[app_index] && self.staging.admit(pm_id) {
            self.start_task(pm_id, inbox, restart_time, resumed);
        } else {
            self.order.held.insert(pm_id, (inbox, restart_time, resumed));
            self.state.held.insert(pm_id, self.order.blocked[app_index]);
        }
    }

    /// The app's stop channel (made at the runtime's current level for an app added later).
    fn stop_channel(&mut self, app_index: usize) -> watch::Receiver<Shutdown> {
        while self.stops.len() <= app_index {
            self.stops.push(watch::channel(self.shutdown).0);
        }
        self.stops[app_index].subscribe()
    }

    /// Every app to this shutdown level at once.
    fn shutdown_all(&mut self, level: Shutdown) {
        self.stop_begun = true;
        self.shutdown = self.shutdown.max(level);
        for s in &self.stops {
            s.send_if_modified(|l| {
                let raise = *l < level;
                if raise {
                    *l = level;
                }
                raise
            });
        }
    }

    /// The stop (a signal, or the run is over): with an order, the apps no running app depends
    /// on (then, as they end, the next ones: [`Coordinator::stop_next`]); without, every app at once.
    fn begin_stop(&mut self) {
        self.order.sync(&self.state.apps);
        self.drop_held();
        self.stop_begun = true;
        if self.order.graph.is_flat() {
            self.shutdown_all(Shutdown::Graceful);
        } else {
            self.stop_next();
        }
    }

    /// What an instance of the first wave did (see [`schedule`]): the held ones start if it is up.
    fn staged(&mut self, pm_id: u32, sign: schedule::Sign) {
        if self.staging.holds() {
            let ids = self.staging.observe(pm_id, sign);
            self.start_staged(ids);
        }
    }

    /// Starts these instances, held by the start schedule (those still held: not gone meanwhile).
    fn start_staged(&mut self, ids: Vec<u32>) {
        if self.staging.holds() {
            return;
        }
        self.staged_until = None;
        for pm_id in ids {
            if let Some((inbox, restart_time, resumed)) = self.order.held.remove(&pm_id) {
                self.state.held.remove(&pm_id);
                self.start_task(pm_id, inbox, restart_time, resumed);
            }
        }
    }

    /// The runtime is going down: held instances will never start.
    fn drop_held(&mut self) {
        self.staging.release();
        self.staged_until = None;
        let ids: Vec<u32> = std::mem::take(&mut self.order.held).into_keys().collect();
        for id in &ids {
            self.inboxes.remove(id);
        }
        if !ids.is_empty() {
            self.step(Event::HeldDropped { ids });
        }
    }

    /// Tells the apps whose dependents have all ended to stop (dependents first, sidecars last).
    fn stop_next(&mut self) {
        if !self.stop_begun || self.order.graph.is_flat() || self.shutdown != Shutdown::Running {
            return;
        }
        // An app runs while a task of its instances does (the decider keeps a stopped
        // instance's slot until the end, for the outcome).
        let mut running = vec![false; self.state.apps.len()];
        for pm_id in self.task_ids.values() {
            if let Some(s) = self.state.slots.get(pm_id) {
                running[s.app_index] = true;
            }
        }
        let next = order::may_stop(&self.order.graph, &running, &self.order.told_stop);
        let names: Vec<&str> = next.iter().filter(|&&i| running[i]).map(|&i| self.state.apps[i].name.as_str()).collect();
        if !names.is_empty() && self.order.told_stop.iter().any(|t| *t) {
            tracing::info!("Stopping {} (the apps that depend on it have stopped)", names.join(", "));
        }
        for i in next {
            self.order.told_stop[i] = true;
            drop(self.stop_channel(i));
            self.stops[i].send_replace(Shutdown::Graceful);
        }
        if self.order.told_stop.iter().all(|t| *t) {
            self.shutdown = Shutdown::Graceful;
        }
    }

    /// After status reports: releases the apps whose dependencies are met, notes what the others
    /// wait for. Returns the init job that failed (the container stops), if one did.
    fn advance_order(&mut self) -> Option<(usize, crate::process::Exit)> {
        self.order.sync(&self.state.apps);
        if self.order.graph.is_flat() || self.state.stopping || self.stop_begun {
            return None;
        }
        let apps = self.state.apps.clone();
        let mut per_app: Vec<Vec<&order::Reached>> = vec![Vec::new(); apps.len()];
        for (id, s) in &self.state.slots {
            per_app[s.app_index].push(self.order.reached.get(id).unwrap_or(&order::NOTHING));
        }
        let reached: Vec<order::Reached> = per_app.into_iter().map(order::Reached::of_app).collect();
        let roles: Vec<Role> = apps.iter().map(|a| a.role).collect();
        if let Some(failed) = order::failed_init(&roles, &reached) {
            return Some(failed);
        }
        let names: Vec<&str> = apps.iter().map(|a| a.name.as_str()).collect();
        let mut release = Vec::new();
        for app in 0..apps.len() {
            if self.order.released[app] {
                continue;
            }
            let waiting = match order::gate(&self.order.graph, app, &reached) {
                order::Gate::Go => {
                    release.push(app);
                    None
                }
                order::Gate::Wait(waits) => {
                    self.order.blocked[app] = false;
                    Some(order::describe(&waits, &names))
                }
                order::Gate::Blocked(dep, c, exit) => {
                    self.order.blocked[app] = true;
                    let text = format!("{} ({}): it ended with code {}; start it to try again", names[dep], c.as_str(), exit.as_code());
                    if self.order.waiting[app].as_deref() != Some(text.as_str()) {
                        tracing::error!(app = %names[app], "App [{}] cannot start: it needs {text}", names[app]);
                    }
                    Some(text)
                }
            };
            self.order.waiting[app] = waiting.map(Arc::from);
        }
        // The decider's view of the held instances (a blocked one counts as settled).
        let changed: Vec<(u32, bool)> = self
            .state
            .held
            .iter()
            .filter_map(|(id, was)| {
                let now = self.order.blocked[self.state.slots.get(id)?.app_index];
                (now != *was).then_some((*id, now))
            })
            .collect();
        for (pm_id, blocked) in changed {
            self.step(Event::HeldBlocked { pm_id, blocked });
        }
        for app in release {
            let met = self.order.graph.needs[app].iter().map(|e| format!("{} {}", names[e.to], e.condition.as_str())).collect::<Vec<_>>();
            tracing::info!(app = %names[app], "App [{}] starting: {}", names[app], met.join(", "));
            self.order.released[app] = true;
            self.order.waiting[app] = None;
            let held: Vec<u32> = self
                .state
                .slots
                .iter()
                .filter(|(id, s)| s.app_index == app && self.order.held.contains_key(id))
                .map(|(id, _)| *id)
                .collect();
            for pm_id in held {
                self.state.held.remove(&pm_id);
                if let Some((inbox, restart_time, resumed)) = self.order.held.remove(&pm_id) {
                    self.start_task(pm_id, inbox, restart_time, resumed);
                }
            }
        }
        None
    }

    /// The order after reports and requests: held apps released, an init job's failure stops
    /// the container, and during a stop the next apps are told.
    fn after_reports(&mut self) {
        if self.stop_begun {
            self.stop_next();
        } else if let Some((app, exit)) = self.advance_order() {
            let name = self.state.apps[app].name.clone();
            tracing::error!(app = %name, "Init job [{name}] failed (exit code {}): stopping the container; the apps waiting for it were not started", exit.as_code());
            self.drop_held();
            self.step(Event::InitFailed { code: exit.as_code().max(1) });
        }
    }

    /// `start web` also starts what web needs (`depends_on`, init jobs, sidecars) that is stopped
    /// or errored, so that a held app can be released; running dependencies are left alone.
    fn start_dependencies(&self, ids: &[u32]) {
        let targets: Vec<usize> = ids.iter().filter_map(|id| self.state.slots.get(id)).map(|s| s.app_index).collect();
        if targets.is_empty() {
            return;
        }
        let needed = self.order.graph.closure(&targets);
        for (id, s) in &self.state.slots {
            // A completed init job (or any job that exited 0) is done, not stopped.
            let done = self.order.reached.get(id).is_some_and(|r| r.completed);
            let parked = !done && s.last.as_ref().is_some_and(|u| matches!(u.status, Status::Stopped | Status::Errored));
            if needed.get(s.app_index).copied().unwrap_or(false) && !targets.contains(&s.app_index) && parked {
                tracing::info!("Starting {}:{id}: {} depends on it", self.state.apps[s.app_index].name, self.state.apps[targets[0]].name);
                self.send(*id, Cmd::Start);
            }
        }
    }

    /// Starts the task of the instance in slot `pm_id`, with its inbox. `resumed`: the task
    /// replaces one that panicked, so the instance starts whatever `autostart` says.
    fn start_task(&mut self, pm_id: u32, inbox: mpsc::UnboundedReceiver<Cmd>, restart_time: u32, resumed: bool) {
        let Some(slot) = self.state.slots.get(&pm_id) else { return };
        let (app_index, instance, unique_id) = (slot.app_index, slot.instance, slot.unique_id.clone());
        let death = slot.last.as_ref().and_then(|u| u.death.clone());
        let inst = Instance {
            app: self.state.apps[app_index].clone(),
            pm_id,
            instance,
            reaper: self.reaper.clone(),
            logs: self.logs.clone(),
            inherited_env: self.inherited.clone(),
            pm2_home: self.pm2_home.clone(),
            updates: self.updates_tx.clone(),
            shutdown: self.stop_channel(app_index),
            inbox,
            restart_time,
            listeners: self.listeners_for(app_index),
            listen_socket: self.listen_socket_for(app_index),
            unique_id,
            messages: self.messages_tx.clone(),
            resumed,
            death,
            heap_share: self.heap_share.subscribe(),
        };
        let task = self.tasks.spawn(inst.run());
        self.task_ids.insert(task.id(), pm_id);
    }

    /// An instance task has ended: which one, and what it panicked with, for the decider.
    fn task_ended(&mut self, ended: Result<(tokio::task::Id, ()), tokio::task::JoinError>) {
        let (id, panic) = match ended {
            Ok((id, ())) => (id, None),
            Err(e) => (e.id(), Some(e)),
        };
        let Some(pm_id) = self.task_ids.remove(&id) else { return };
        let panic = panic.map(|e| match e.try_into_panic() {
            Ok(p) => p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_default(),
            Err(_) => "cancelled".to_string(),
        });
        self.step(Event::TaskEnded { pm_id, panic });
    }

    /// Every report that has arrived, to the decider.
    fn take_updates(&mut self, updates: &mut mpsc::UnboundedReceiver<Update>) {
        while let Ok(u) = updates.try_recv() {
            self.report(u);
        }
    }

    /// One instance's report: what it reached (for the start order), then the decider.
    fn report(&mut self, update: Update) {
        if !self.order.graph.is_flat() && self.state.slots.contains_key(&update.pm_id) {
            self.order.reached.entry(update.pm_id).or_default().observe(&update.report);
        }
        if self.staging.holds() {
            let r = &update.report;
            if r.gone || matches!(r.status, Status::Stopped | Status::Errored | Status::WaitingRestart) {
                self.staged(update.pm_id, schedule::Sign::Ended);
            } else if r.pid.is_some() {
                let preload = self.state.slots.get(&update.pm_id).is_some_and(|s| crate::preload::given(&self.state.apps[s.app_index]));
                self.staged(update.pm_id, schedule::Sign::Spawned { preload });
            }
        }
        self.step(Event::Reported(update));
    }

    /// A control request: reads are answered here, decisions by the decider.
    fn request(&mut self, req: crate::control::protocol::Request) -> Reply {
        match control::handle(&self.state, req, &self.logs, &self.pm2_home) {
            control::Answer::Reply(r) => r,
            control::Answer::List { only } => {
                let rows = jlist::rows(&self.table_for_reader(), only.as_deref(), jlist::Env::Include);
                Reply { processes: Some(rows), ..Reply::ok() }
            }
            control::Answer::Decide(event) => {
                let started = match &event {
                    Event::Start { ids } => ids.clone(),
                    _ => Vec::new(),
                };
                let reply = self.step(event).unwrap_or_else(Reply::ok);
                self.start_dependencies(&started);
                // An app added by `apply` may need apps that are already there (a failed init
                // job is acted on at the next report).
                let _ = self.advance_order();
                reply
            }
        }
    }

    /// The listeners of a cluster app (made on first use); `None` in fork mode. One registry
    /// serves every cluster app (per scheduling policy), as PM2 has one Node cluster primary for
    /// all apps: two apps listening on one port share its socket and its connections, instead of
    /// the second failing with EADDRINUSE.
    fn listeners_for(&mut self, app_index: usize) -> Option<crate::cluster::Listeners> {
        let app = &self.state.apps[app_index];
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
        let app = &self.state.apps[app_index];
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

    /// An app's own IPC message: `@pm2/io`'s metrics and actions land in the table; every
    /// message goes on the bus.
    fn on_message(&mut self, pm_id: u32, message: serde_json::Value) {
        let Some(slot) = self.state.slots.get_mut(&pm_id) else { return };
        let kind = message.get("type").and_then(|t| t.as_str());
        // The watchdog's heartbeat: only its lag is kept (shown at the next publish), not an event.
        if kind == Some(crate::preload::STARTED) {
            self.staged(pm_id, schedule::Sign::Started);
            return;
        }
        if kind == Some(crate::preload::HEARTBEAT) {
            slot.event_loop_lag = message.get("lag").and_then(|l| l.as_f64()).map(|ms| ms / 1000.0);
            return;
        }
        let mut changed = false;
        match (kind, message.get("data")) {
            (Some("axm:monitor"), Some(serde_json::Value::Object(data))) => {
                slot.axm_monitor = Arc::new(data.clone());
                changed = true;
            }
            (Some("axm:action"), Some(data)) => {
                let name = data.get("action_name");
                // Kept for the instance's life: bounded, or an app could grow PID 1 for ever.
                let fits = slot.axm_actions.len() < MAX_AXM_ACTIONS
                    && name.and_then(|n| n.as_str()).is_some_and(|n| !n.is_empty() && n.len() <= 256)
                    && data.to_string().len() <= 16 * 1024;
                if fits && !slot.axm_actions.iter().any(|a| a.get("action_name") == name) {
                    Arc::make_mut(&mut slot.axm_actions).push(data.clone());
                    changed = true;
                }
            }
            _ => {}
        }
        let name = self.state.apps[slot.app_index].name.clone();
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
        self.state.apps.iter().any(|a| a.max_memory_restart.is_some())
    }

    /// `max_memory_restart`: every running instance whose tree is over its app's limit is told
    /// so (its machine decides what that means in its state).
    fn check_memory(&self) {
        for (id, s) in &self.state.slots {
            let Some(limit) = self.state.apps[s.app_index].max_memory_restart else { continue };
            // Whether the reading matters in its state is the machine's decision.
            let running = s.last.as_ref().and_then(|u| u.pid);
            if let Some(pid) = running
                && s.sample.memory_bytes > limit
                && let Some(inbox) = self.inboxes.get(id)
            {
                let _ = inbox.send(Cmd::OverMemory { pid, rss: s.sample.memory_bytes, limit });
            }
        }
    }

    /// `node_heap: auto`: the container's memory, shared by every Node instance of such apps
    /// (recomputed as instances come and go: each new process gets the share of its start).
    fn size_heaps(&self) {
        let sized = |s: &Slot| self.state.apps[s.app_index].node_heap && self.state.apps[s.app_index].command.is_node;
        let n = self.state.slots.values().filter(|s| sized(s)).count() as u32;
        let limit = self.container.last.and_then(|c| c.limits.memory);
        let share = limit.filter(|_| n > 0).map(|l| container::heap_size_mib(l, n));
        if self.heap_share.send_if_modified(|v| std::mem::replace(v, share) != share)
            && let (Some(mib), Some(limit)) = (share, limit)
        {
            tracing::info!(
                "node_heap: auto: {n} Node instance(s) share the container's {}: --max-old-space-size={mib} each (from their next start)",
                crate::process::cgroup::human(limit)
            );
        }
    }

    /// Whether the container has a memory limit to recycle under.
    fn governs_memory(&self) -> bool {
        self.recycler.is_some() && self.container.last.is_some_and(|c| c.limits.memory.is_some())
    }

    /// Near the container's memory limit: the instance with the largest tree is restarted
    /// gracefully (one at a time, with a backoff), before the kernel's OOM killer strikes.
    /// Only a reading over the threshold costs a /proc sweep.
    fn check_container(&mut self) {
        let Some(c) = self.container.read() else { return };
        let (Some(limit), Some(usage), Some(r)) = (c.limits.memory, c.usage, self.recycler.as_ref()) else { return };
        if r.pressed(usage.working_set, limit) {
            self.sample();
        }
        let online = |s: &Slot| s.last.as_ref().is_some_and(|u| u.status == Status::Online && u.pid.is_some());
        let candidates: Vec<container::Candidate> = self
            .state
            .slots
            .iter()
            .filter(|(_, s)| !self.state.stopping && s.last.as_ref().is_some_and(|u| u.pid.is_some() || u.status == Status::Launching))
            .map(|(id, s)| container::Candidate { pm_id: *id, bytes: s.sample.memory_bytes, online: online(s) })
            .collect();
        let Some(r) = self.recycler.as_mut() else { return };
        if let Some(id) = r.decide(Instant::now(), usage.working_set, limit, &candidates)
            && let Some(slot) = self.state.slots.get(&id)
            && let Some(pid) = slot.last.as_ref().and_then(|u| u.pid)
        {
            let pct = (r.threshold * 100.0).round();
            let name = self.state.apps[slot.app_index].name.clone();
            tracing::warn!(app = %name, id,
                "The container uses {} of its {} memory limit (recycling at {pct}%): restarting [{name}:{id}], the largest ({}), before the OOM killer strikes",
                crate::process::cgroup::human(usage.working_set), crate::process::cgroup::human(limit), crate::process::cgroup::human(slot.sample.memory_bytes));
            self.send(id, Cmd::ContainerMemory { pid, used: usage.working_set, limit });
        }
    }

    /// One sweep of /proc for every running instance; the numbers go into the table.
    fn sample(&mut self) {
        let roots: Vec<(u32, u32)> = self.state.slots.iter().filter_map(|(id, s)| Some((*id, s.last.as_ref()?.pid?))).collect();
        let mut samples = self.sampler.sweep(&roots);
        self.container.read();
        for (id, slot) in self.state.slots.iter_mut() {
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
            .state
            .slots
            .iter()
            .map(|(id, s)| InstanceStatus {
                pm_id: *id,
                app: self.state.apps[s.app_index].clone(),
                instance: s.instance,
                unique_id: s.unique_id.clone(),
                last: s.last.clone(),
                restarts: s.restarts,
                created_at: s.created_at,
                sample: s.sample,
                axm_monitor: s.axm_monitor.clone(),
                axm_actions: s.axm_actions.clone(),
                event_loop_lag: s.event_loop_lag,
            })
            .collect();
        let apps = self
            .state
            .apps
            .iter()
            .enumerate()
            .map(|(i, app)| AppStatus {
                app: app.clone(),
                desired: self.state.slots.values().filter(|s| s.app_index == i).count(),
                waiting_on: self.order.waiting.get(i).cloned().flatten(),
            })
            .collect();
        let sampled_at = self.sampler.last_sweep.map(|t| SystemTime::now() - t.elapsed());
        let container = self.container.last;
        self.size_heaps();
        self.board.status.send_replace(Arc::new(StatusTable { instances, apps, stopping: self.state.stopping, sampled_at, container }));
    }
}

/// A decider's note in the runtime's log.
fn log(n: Note) {
    match (n.level, n.about) {
        (Level::Info, Some((app, id, status))) => tracing::info!(app = %app, id, status, "{}", n.text),
        (Level::Warn, Some((app, id, status))) => tracing::warn!(app = %app, id, status, "{}", n.text),
        (Level::Error, Some((app, id, status))) => tracing::error!(app = %app, id, status, "{}", n.text),
        (Level::Info, None) => tracing::info!("{}", n.text),
        (Level::Warn, None) => tracing::warn!("{}", n.text),
        (Level::Error, None) => tracing::error!("{}", n.text),
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
            s = signals.recv() => if matches!(s, crate::signals::RuntimeSignal::Stop) { return Outcome::Requested; }
        }
    }

    let (updates_tx, mut updates_rx) = mpsc::unbounded_channel::<Update>();
    let (messages_tx, mut messages_rx) = mpsc::channel(MESSAGE_QUEUE);
    let mut co = Coordinator {
        state: State::new(eco.apps.into_iter().map(Arc::new).collect(), opts.auto_exit, opts.cpus, env::uuid_v4),
        inboxes: HashMap::new(),
        tasks: JoinSet::new(),
        task_ids: HashMap::new(),
        reaper,
        logs,
        inherited: Arc::new(std::env::vars_os().collect()),
        pm2_home: opts.pm2_home.clone(),
        updates_tx,
        stops: Vec::new(),
        shutdown: Shutdown::Running,
        stop_begun: false,
        order: Order::default(),
        staging: schedule::Staging::begin(opts.cpus),
        staged_until: None,
        shutdown_delay: opts.shutdown_delay,
        stop_at: None,
        container: container::Watch::start(),
        recycler: None,
        heap_share: watch::Sender::new(None),
        listeners: HashMap::new(),
        sockets: HashMap::new(),
        board,
        sampler: Default::default(),
        reader_until: None,
        messages_tx,
        dirty: false,
        exit: None,
    };
    match container::recycle_threshold(std::env::var("PM_RUNTIME_MEMORY_RECYCLE").ok().as_deref()) {
        Ok(t) => co.recycler = t.map(container::Recycler::new),
        Err(e) => tracing::error!("{e}; recycling stays at {}%", container::RECYCLE_AT * 100.0),
    }
    co.order.sync(&co.state.apps);
    co.step(Event::Begin);
    if co.staging.close() {
        co.staged_until = Some(tokio::time::Instant::now() + schedule::HOLD_AT_MOST);
    }
    co.warn_about_container(&opts);
    co.after_reports();

    // One watcher per app with `watch`; it names the app, the decider restarts its instances.
    let (restart_tx, mut restart_rx) = mpsc::unbounded_channel::<usize>();
    for (app_index, app) in co.state.apps.iter().enumerate() {
        let ids: Vec<u32> = co.state.slots.iter().filter(|(_, s)| s.app_index == app_index).map(|(id, _)| *id).collect();
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
    let mut next_sample = tokio::time::Instant::now();
    let outcome = loop {
        tokio::select! {
            Some((pm_id, message)) = messages_rx.recv() => co.on_message(pm_id, message),
            _ = tokio::time::sleep_until(next_sample), if co.needs_samples() || co.has_memory_limits() || co.governs_memory() => {
                if co.needs_samples() || co.has_memory_limits() {
                    co.sample();
                    co.check_memory();
                }
                if co.governs_memory() {
                    co.check_container();
                }
                let period = if co.has_memory_limits() || co.governs_memory() { MEMORY_PERIOD } else { sampler::PERIOD };
                next_sample = tokio::time::Instant::now() + period;
            }
            Some(update) = updates_rx.recv() => {
                co.report(update);
                // Whatever else has arrived meanwhile, then one table for all of it: N
                // instances changing at once cost O(N) updates and a few publishes, not N².
                co.take_updates(&mut updates_rx);
                co.after_reports();
            }
            Some(ended) = co.tasks.join_next_with_id() => {
                // What the task reported before it ended (its pid above all) comes first.
                co.take_updates(&mut updates_rx);
                co.task_ended(ended);
                co.after_reports();
            }
            _ = tokio::time::sleep_until(co.staged_until.unwrap_or_else(tokio::time::Instant::now)), if co.staged_until.is_some() => {
                let ids = co.staging.release();
                co.start_staged(ids);
            }
            _ = tokio::time::sleep_until(co.stop_at.unwrap_or_else(tokio::time::Instant::now)), if co.stop_at.is_some() => {
                co.stop_at = None;
                tracing::info!("shutdown_delay is over: stopping every app (kill_timeout applies)");
                co.begin_stop();
            }
            Some(req) = control.recv(), if co.state.accepts_requests() => {
                let reply = co.request(req.req);
                co.publish();
                let _ = req.reply.send(reply);
            }
            Some(app_index) = restart_rx.recv(), if co.state.accepts_requests() => {
                co.step(Event::FileChanged { app_index });
            }
            sig = signals.recv() => {
                co.step(Event::Signal(sig));
            }
        }
        if co.dirty {
            co.dirty = false;
            co.publish();
        }
        if let Some(outcome) = co.exit {
            break outcome;
        }
    };
    co.take_updates(&mut updates_rx);
    co.publish();
    sweep_strays().await;
    outcome
}

impl Coordinator {
    /// At start: warnings when the apps can outgrow the container's memory, or stopping can
    /// outlast the platform's grace period.
    fn warn_about_container(&self, opts: &RunOptions) {
        if let Some(c) = self.container.last
            && let Some(limit) = c.limits.memory
        {
            let planned: Vec<container::Planned> = self
                .state
                .apps
                .iter()
                .enumerate()
                .map(|(i, a)| container::Planned {
                    name: &a.name,
                    instances: self.state.slots.values().filter(|s| s.app_index == i).count() as u32,
                    max_memory: a.max_memory_restart,
                    node: a.command.is_node,
                    node_heap: a.node_heap,
                })
                .collect();
            let machine = crate::process::cgroup::machine_memory().unwrap_or(limit);
            if let Some(w) = container::fit_warning(&planned, limit, c.limits.oom_group, container::v8_default_heap(machine)) {
                tracing::warn!("{w}");
            }
        }
        let longest = self.state.apps.iter().map(|a| a.kill_timeout).max().unwrap_or_default();
        let platform = container::platform_grace(&|k| std::env::var(k).ok(), std::path::Path::new("/.dockerenv").exists());
        if let Some(w) = container::grace_warning(longest, opts.shutdown_delay, platform) {
            tracing::warn!("{w}");
        }
    }
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
