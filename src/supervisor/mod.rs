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
pub mod container;
mod control;
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
pub mod status;

pub use env::uuid_v4;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::config::{App, Ecosystem, ExecMode, Role};
use crate::control::server::ControlRequest;
use crate::exit::Outcome;
use crate::logs::LogHub;
use crate::process::{Exit, Reaper, tree, unix};
use crate::signals::{RuntimeSignal, Signals};
use instance::Instance;
use machine::{Cmd, Shutdown};
use order::Order;
use status::{
    AppStatus, Bus, BusEvent, InstanceStatus, Report, RestartCounts, RestartReason, Sample, Status, StatusFeed, StatusTable, Update,
};

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
    /// The event-loop lag the last heartbeat reported (`watchdog`), seconds.
    event_loop_lag: Option<f64>,
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
    /// How far each app's stop has gone (one channel per app, so that dependents stop first).
    stops: Vec<watch::Sender<Shutdown>>,
    /// The runtime-wide shutdown level (what a new app's channel starts at).
    shutdown: Shutdown,
    /// Start and stop order (`depends_on`, roles): see [`Order`].
    order: Order<mpsc::UnboundedReceiver<Cmd>>,
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
    /// The container's limits and usage (read with each sample).
    container: container::Watch,
    /// Recycling before the OOM killer (`None`: PM_RUNTIME_MEMORY_RECYCLE=off).
    recycler: Option<container::Recycler>,
    /// `node_heap: auto`: the heap of each such Node process, MiB, for the next starts.
    heap_share: watch::Sender<Option<u64>>,
}

impl Coordinator {
    /// Starts one more instance of `app_index`, with the lowest free instance number (PM2 fills
    /// gaps). An app waiting for its dependencies gets the slot now and its task once released.
    pub fn spawn_instance(&mut self, app_index: usize) -> u32 {
        self.order.sync(&self.apps);
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
                event_loop_lag: None,
                panics: 0,
            },
        );
        if self.order.released[app_index] {
            self.start_task(pm_id, rx, 0, false);
        } else {
            self.order.held.insert(pm_id, rx);
        }
        pm_id
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

    /// A stop signal: with an order, the apps no running app depends on (then, as they end,
    /// the next ones: [`Coordinator::stop_next`]); without, every app at once.
    fn begin_stop(&mut self) {
        self.order.sync(&self.apps);
        self.drop_held();
        if self.order.graph.is_flat() {
            self.shutdown_all(Shutdown::Graceful);
        } else {
            self.stop_next();
        }
    }

    /// The runtime is going down: held instances will never start.
    fn drop_held(&mut self) {
        for pm_id in std::mem::take(&mut self.order.held).into_keys() {
            self.slots.remove(&pm_id);
        }
    }

    /// True when no instance that counts (sidecars do not) can run again by itself, and no
    /// held one can still be released.
    fn all_settled(&self) -> bool {
        let roles: Vec<Role> = self.apps.iter().map(|a| a.role).collect();
        let counted = order::counted(&roles);
        self.slots.iter().filter(|(_, s)| counted[s.app_index]).all(|(id, s)| {
            if self.order.held.contains_key(id) {
                return self.order.blocked[s.app_index];
            }
            s.last.as_ref().is_some_and(|u| !u.status.is_alive() && !u.scheduled)
        })
    }

    /// Tells the apps whose dependents have all ended to stop (dependents first, sidecars last).
    fn stop_next(&mut self) {
        if self.order.graph.is_flat() || self.shutdown != Shutdown::Running {
            return;
        }
        let mut running = vec![false; self.apps.len()];
        for s in self.slots.values() {
            running[s.app_index] = true;
        }
        let next = order::may_stop(&self.order.graph, &running, &self.order.told_stop);
        let names: Vec<&str> = next.iter().filter(|&&i| running[i]).map(|&i| self.apps[i].name.as_str()).collect();
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
    fn advance_order(&mut self) -> Option<(usize, Exit)> {
        self.order.sync(&self.apps);
        if self.order.graph.is_flat() || self.stopping {
            return None;
        }
        let mut per_app: Vec<Vec<&order::Reached>> = vec![Vec::new(); self.apps.len()];
        for (id, s) in &self.slots {
            per_app[s.app_index].push(self.order.reached.get(id).unwrap_or(&order::NOTHING));
        }
        let reached: Vec<order::Reached> = per_app.into_iter().map(order::Reached::of_app).collect();
        let roles: Vec<Role> = self.apps.iter().map(|a| a.role).collect();
        if let Some(failed) = order::failed_init(&roles, &reached) {
            return Some(failed);
        }
        let apps = self.apps.clone();
        let names: Vec<&str> = apps.iter().map(|a| a.name.as_str()).collect();
        let mut release = Vec::new();
        for app in 0..self.apps.len() {
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
        for app in release {
            let met = self.order.graph.needs[app].iter().map(|e| format!("{} {}", names[e.to], e.condition.as_str())).collect::<Vec<_>>();
            tracing::info!(app = %names[app], "App [{}] starting: {}", names[app], met.join(", "));
            self.order.released[app] = true;
            self.order.waiting[app] = None;
            let held: Vec<u32> =
                self.slots.iter().filter(|(id, s)| s.app_index == app && self.order.held.contains_key(id)).map(|(id, _)| *id).collect();
            for pm_id in held {
                if let Some(rx) = self.order.held.remove(&pm_id) {
                    self.start_task(pm_id, rx, 0, false);
                }
            }
        }
        None
    }

    /// Starts the task of the instance in slot `pm_id`, with its inbox. `resumed`: the task
    /// replaces one that panicked, so the instance starts whatever `autostart` says.
    fn start_task(&mut self, pm_id: u32, inbox: mpsc::UnboundedReceiver<Cmd>, restart_time: u32, resumed: bool) {
        let Some(slot) = self.slots.get(&pm_id) else { return };
        let (app_index, instance, unique_id) = (slot.app_index, slot.instance, slot.unique_id.clone());
        let death = slot.last.as_ref().and_then(|u| u.death.clone());
        let inst = Instance {
            app: self.apps[app_index].clone(),
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
                death: last.as_ref().and_then(|u| u.death.clone()),
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
        if !self.order.graph.is_flat() {
            self.order.reached.entry(update.pm_id).or_default().observe(&update.report);
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
        // The watchdog's heartbeat: only its lag is kept (shown at the next publish), not an event.
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

    /// `node_heap: auto`: the container's memory, shared by every Node instance of such apps
    /// (recomputed as instances come and go: each new process gets the share of its start).
    fn size_heaps(&self) {
        let sized = |s: &Slot| self.apps[s.app_index].node_heap && self.apps[s.app_index].command.is_node;
        let n = self.slots.values().filter(|s| sized(s)).count() as u32;
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
            .slots
            .iter()
            .filter(|(_, s)| !self.stopping && s.last.as_ref().is_some_and(|u| u.pid.is_some() || u.status == Status::Launching))
            .map(|(id, s)| container::Candidate { pm_id: *id, bytes: s.sample.memory_bytes, online: online(s) })
            .collect();
        let Some(r) = self.recycler.as_mut() else { return };
        if let Some(id) = r.decide(Instant::now(), usage.working_set, limit, &candidates)
            && let Some(slot) = self.slots.get(&id)
            && let Some(pid) = slot.last.as_ref().and_then(|u| u.pid)
        {
            let pct = (r.threshold * 100.0).round();
            let name = self.apps[slot.app_index].name.clone();
            tracing::warn!(app = %name, id,
                "The container uses {} of its {} memory limit (recycling at {pct}%): restarting [{name}:{id}], the largest ({}), before the OOM killer strikes",
                crate::process::cgroup::human(usage.working_set), crate::process::cgroup::human(limit), crate::process::cgroup::human(slot.sample.memory_bytes));
            self.send(id, Cmd::ContainerMemory { pid, used: usage.working_set, limit });
        }
    }

    /// One sweep of /proc for every running instance; the numbers go into the table.
    fn sample(&mut self) {
        let roots: Vec<(u32, u32)> = self.slots.iter().filter_map(|(id, s)| Some((*id, s.last.as_ref()?.pid?))).collect();
        let mut samples = self.sampler.sweep(&roots);
        self.container.read();
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
                event_loop_lag: s.event_loop_lag,
            })
            .collect();
        let apps = self
            .apps
            .iter()
            .enumerate()
            .map(|(i, app)| AppStatus {
                app: app.clone(),
                desired: self.slots.values().filter(|s| s.app_index == i).count(),
                waiting_on: self.order.waiting.get(i).cloned().flatten(),
            })
            .collect();
        let sampled_at = self.sampler.last_sweep.map(|t| SystemTime::now() - t.elapsed());
        let container = self.container.last;
        self.size_heaps();
        self.board.status.send_replace(Arc::new(StatusTable { instances, apps, stopping: self.stopping, sampled_at, container }));
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
        stops: Vec::new(),
        shutdown: Shutdown::Running,
        order: Order::default(),
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
        container: container::Watch::start(),
        recycler: None,
        heap_share: watch::Sender::new(None),
    };
    match container::recycle_threshold(std::env::var("PM_RUNTIME_MEMORY_RECYCLE").ok().as_deref()) {
        Ok(t) => co.recycler = t.map(container::Recycler::new),
        Err(e) => tracing::error!("{e}; recycling stays at {}%", container::RECYCLE_AT * 100.0),
    }
    for app_index in 0..co.apps.len() {
        for _ in 0..crate::config::resolve_instances(co.apps[app_index].instances, opts.cpus) {
            co.spawn_instance(app_index);
        }
    }
    co.warn_about_container(&opts);
    co.advance_order();

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
    let mut init_failed: Option<i32> = None;
    let mut next_sample = tokio::time::Instant::now();
    // `shutdown_delay`: when the apps get the stop (readiness ended at the signal).
    let mut stop_at: Option<tokio::time::Instant> = None;
    loop {
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
            update = updates_rx.recv() => {
                let Some(update) = update else { break };
                co.record(update);
                // Whatever else has arrived meanwhile, then one table for all of it: N
                // instances changing at once cost O(N) updates and a few publishes, not N².
                while let Ok(u) = updates_rx.try_recv() {
                    co.record(u);
                }
                if requested {
                    co.stop_next();
                } else if let Some((app, exit)) = co.advance_order() {
                    let name = co.apps[app].name.clone();
                    tracing::error!(app = %name, "Init job [{name}] failed (exit code {}): stopping the container; the apps waiting for it were not started", exit.as_code());
                    init_failed = Some(exit.as_code().max(1));
                    break;
                }
                co.publish();
                if !requested && opts.auto_exit && co.all_settled() {
                    break;
                }
            }
            Some(ended) = co.tasks.join_next_with_id() => {
                // What the task reported before it ended (its pid above all) comes first.
                while let Ok(u) = updates_rx.try_recv() { co.record(u); }
                co.task_ended(ended, !requested);
                if requested {
                    co.stop_next();
                }
                if co.tasks.is_empty() && (requested || opts.auto_exit) {
                    // Drain the last updates before deciding.
                    while let Ok(u) = updates_rx.try_recv() { co.record(u); }
                    co.publish();
                    break;
                }
            }
            Some(req) = control.recv(), if !requested => {
                let reply = control::handle(&mut co, req.req);
                // An app added by `apply` may need apps that are already there (a failed init
                // job is acted on at the next report).
                let _ = co.advance_order();
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
            _ = tokio::time::sleep_until(stop_at.unwrap_or_else(tokio::time::Instant::now)), if stop_at.is_some() => {
                stop_at = None;
                tracing::info!("shutdown_delay is over: stopping every app (kill_timeout applies)");
                co.begin_stop();
            }
            sig = signals.recv() => match sig {
                RuntimeSignal::Stop => {
                    if requested {
                        tracing::warn!("Second stop signal: killing every app now");
                        stop_at = None;
                        co.shutdown_all(Shutdown::Force);
                    } else if opts.shutdown_delay.is_zero() {
                        requested = true;
                        co.stopping = true;
                        co.publish();
                        tracing::info!("Stop signal received: stopping every app (kill_timeout applies)");
                        co.begin_stop();
                    } else {
                        requested = true;
                        co.stopping = true;
                        co.publish();
                        tracing::info!("Stop signal received: not ready any more; stopping every app in {:.1}s (shutdown_delay)", opts.shutdown_delay.as_secs_f64());
                        stop_at = Some(tokio::time::Instant::now() + opts.shutdown_delay);
                    }
                    if co.tasks.is_empty() {
                        break;
                    }
                }
                RuntimeSignal::Reload => {
                    tracing::info!("SIGHUP received: reloading every app (cluster: zero-downtime; fork: restart)");
                    // Not init jobs (a reload must not run a migration again), not held instances.
                    let reload: Vec<u32> = co.slots.iter()
                        .filter(|(id, s)| co.apps[s.app_index].role != Role::Init && !co.order.held.contains_key(id))
                        .map(|(id, _)| *id).collect();
                    for id in reload { co.send(id, Cmd::Reload); }
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
        co.drop_held();
        co.shutdown_all(Shutdown::Graceful);
    } else if stop_at.is_some() {
        co.begin_stop();
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
                co.shutdown_all(Shutdown::Force);
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
    if let Some(code) = init_failed {
        return Outcome::AppsFinished(code);
    }
    let apps: Vec<App> = co.apps.iter().map(|a| (**a).clone()).collect();
    let counted = order::counted(&apps.iter().map(|a| a.role).collect::<Vec<_>>());
    let slots: Vec<&Slot> = co.slots.values().filter(|s| counted[s.app_index]).collect();
    outcome(&apps, &slots)
}

impl Coordinator {
    /// At start: warnings when the apps can outgrow the container's memory, or stopping can
    /// outlast the platform's grace period.
    fn warn_about_container(&self, opts: &RunOptions) {
        if let Some(c) = self.container.last
            && let Some(limit) = c.limits.memory
        {
            let planned: Vec<container::Planned> = self
                .apps
                .iter()
                .enumerate()
                .map(|(i, a)| container::Planned {
                    name: &a.name,
                    instances: self.slots.values().filter(|s| s.app_index == i).count() as u32,
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
        let longest = self.apps.iter().map(|a| a.kill_timeout).max().unwrap_or_default();
        let platform = container::platform_grace(&|k| std::env::var(k).ok(), std::path::Path::new("/.dockerenv").exists());
        if let Some(w) = container::grace_warning(longest, opts.shutdown_delay, platform) {
            tracing::warn!("{w}");
        }
    }
}

/// The exit code when the apps ended by themselves (see `exit.rs`).
fn outcome(apps: &[App], slots: &[&Slot]) -> Outcome {
    if slots.iter().any(|s| s.last.as_ref().is_some_and(|u| u.status == Status::Errored)) {
        let names: Vec<&str> = slots
            .iter()
            .filter(|s| s.last.as_ref().is_some_and(|u| u.status == Status::Errored))
            .map(|s| apps[s.app_index].name.as_str())
            .collect();
        tracing::error!("Exiting: app(s) errored: {}", names.join(", "));
        let errored: Vec<_> = slots
            .iter()
            .filter(|s| s.last.as_ref().is_some_and(|u| u.status == Status::Errored))
            .map(|s| {
                (apps[s.app_index].name.clone(), s.last.as_ref().map_or(0, |u| u.pm_id), s.last.as_ref().and_then(|u| u.death.as_deref()))
            })
            .collect();
        container::write_termination_log(&container::termination_message(
            &format!("pm-runtime: app(s) errored: {}", names.join(", ")),
            &errored,
        ));
        return Outcome::AppErrored;
    }
    for s in slots {
        if let Some(exit) = s.last.as_ref().and_then(|u| u.last_exit)
            && exit != Exit::Code(0)
        {
            tracing::info!("Exiting: every app has finished; {} exited with {}", apps[s.app_index].name, exit.as_code());
            let id = s.last.as_ref().map_or(0, |u| u.pm_id);
            let what = [(apps[s.app_index].name.clone(), id, s.last.as_ref().and_then(|u| u.death.as_deref()))];
            let summary = format!("pm-runtime: every app has finished; {} exited with {}", apps[s.app_index].name, exit.as_code());
            container::write_termination_log(&container::termination_message(&summary, &what));
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
