//! The coordinator's loop: starts one task per app instance, publishes the table of their
//! statuses, turns the runtime's signals, the instances' reports and IPC messages, samples,
//! file watches and control requests into [`coordinator::Event`]s for the pure decider
//! (`coordinator.rs`), and carries out the [`coordinator::Effect`]s it answers with. It decides
//! nothing itself.
//!
//! State ownership: each instance task owns its process and restart history (its
//! `machine::Machine`); the decider's `State` (held by this loop, changed only through
//! `handle`) owns the latest [`Update`] of each instance, the start and stop order and the
//! recycler. The loop owns resources only: inboxes (a held instance's too), tasks, the per-app
//! stop channels, listening sockets, the sampler and the cgroup reader. Modules: `coordinator`
//! (the pure decisions over the app set), `order` (the pure start/stop order rules),
//! `container` (the container's memory: pure rules and the `Recycler`), `machine` (the pure
//! lifecycle of one instance), `instance` (the task that runs it), `policy` (PM2's restart
//! rules), `numbering` (`NODE_APP_INSTANCE`), `sampler`, `status` (the vocabulary and the
//! table: public), `jlist` (PM2's listing: public), `control` (requests into events), `env`,
//! `cron`, `file_watch`.

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
mod principal;
mod probe;
mod sampler;
mod schedule;
pub mod status;

use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::config::{Ecosystem, ExecMode};
use crate::control::protocol::Reply;
use crate::control::server::ControlRequest;
use crate::exit::Outcome;
use crate::logs::LogHub;
use crate::process::{Reaper, tree, unix};
use crate::signals::Signals;
use coordinator::{Effect, Event, Note, Slot, State};
use instance::Instance;
use machine::{Cmd, Level, Shutdown};
use status::{AppStatus, Bus, BusEvent, InstanceStatus, StatusFeed, StatusTable, Update};

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
    /// The inbox of each held instance (`depends_on`: commands wait there until its task starts).
    held: HashMap<u32, mpsc::UnboundedReceiver<Cmd>>,
    /// When the decider asked to hear that `shutdown_delay` is over.
    stop_at: Option<tokio::time::Instant>,
    /// When the start schedule's bound is over (see [`schedule`]).
    start_rest_at: Option<tokio::time::Instant>,
    /// The container's limits and usage (read with each sample).
    container: container::Watch,
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
                Effect::StartTask { pm_id, restart_time, resumed } => {
                    let inbox = self.held.remove(&pm_id).unwrap_or_else(|| {
                        let (tx, inbox) = mpsc::unbounded_channel();
                        self.inboxes.insert(pm_id, tx);
                        inbox
                    });
                    self.start_task(pm_id, inbox, restart_time, resumed);
                }
                Effect::Hold(pm_id) => {
                    let (tx, inbox) = mpsc::unbounded_channel();
                    self.inboxes.insert(pm_id, tx);
                    self.held.insert(pm_id, inbox);
                }
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
                Effect::Shutdown(level) => self.shutdown_all(level),
                Effect::StopApp(app_index) => {
                    drop(self.stop_channel(app_index));
                    self.stops[app_index].send_replace(Shutdown::Graceful);
                }
                Effect::StopIn(delay) => self.stop_at = Some(tokio::time::Instant::now() + delay),
                Effect::StartRestIn(delay) => self.start_rest_at = Some(tokio::time::Instant::now() + delay),
                Effect::ReopenLogs => self.logs.reopen_files(),
                Effect::Forget(pm_id) => {
                    self.inboxes.remove(&pm_id);
                    self.held.remove(&pm_id);
                    self.logs.forget(pm_id);
                }
                Effect::TerminationLog(text) => container::write_termination_log(&text),
                Effect::Announce(update) => {
                    if let Some(slot) = self.state.slots.get(&update.pm_id) {
                        let name = self.state.apps[slot.app_index].name.clone();
                        self.board.bus.publish(BusEvent::Status { pm_id: update.pm_id, name, report: update.report });
                    }
                }
                Effect::AppMessage { pm_id, name, message } => self.board.bus.publish(BusEvent::AppMessage { pm_id, name, message }),
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
            self.step(Event::Reported(u));
        }
    }

    /// A control request: reads are answered here, decisions by the decider.
    fn request(&mut self, req: crate::control::protocol::Request) -> Reply {
        match control::handle(&self.state, req, &self.logs, &self.pm2_home) {
            control::Answer::Reply(r) => r,
            control::Answer::List { only } => {
                let rows = jlist::rows(&self.table_for_reader(), only.as_deref(), jlist::Env::Include);
                Reply { processes: Some(rows), ..Reply::ok() }
            }
            control::Answer::Decide(event) => self.step(event).unwrap_or_else(Reply::ok),
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

    /// Whether anyone needs resource numbers now: a reader holds a feed, or an `ls` was recent.
    fn needs_samples(&self) -> bool {
        self.board.status.receiver_count() > 0 || self.reader_until.is_some_and(|t| Instant::now() < t)
    }

    /// Whether an app has `max_memory_restart` (the sampler then sweeps for it).
    fn has_memory_limits(&self) -> bool {
        self.state.apps.iter().any(|a| a.max_memory_restart.is_some())
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
        self.state.recycler.is_some() && self.container.last.is_some_and(|c| c.limits.memory.is_some())
    }

    /// The container's memory, to the decider (recycling). Only a reading at the threshold
    /// costs a /proc sweep first.
    fn check_container(&mut self) {
        let Some(c) = self.container.read() else { return };
        let (Some(limit), Some(usage)) = (c.limits.memory, c.usage) else { return };
        if self.state.memory_pressed(usage.working_set, limit) {
            self.sample();
        }
        self.step(Event::ContainerMemory { used: usage.working_set, limit, at: Instant::now() });
    }

    /// One sweep of /proc for every running instance; the numbers go to the decider (the
    /// table, `max_memory_restart`), and the table is published now.
    fn sample(&mut self) {
        let roots: Vec<(u32, u32)> = self.state.slots.iter().filter_map(|(id, s)| Some((*id, s.last.as_ref()?.pid?))).collect();
        let samples = self.sampler.sweep(&roots);
        self.container.read();
        self.step(Event::Sampled(samples));
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
                waiting_on: self.state.order.waiting.get(i).cloned().flatten(),
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
        (Level::Info, Some((app, id, Some(status)))) => tracing::info!(app = %app, id, status, "{}", n.text),
        (Level::Warn, Some((app, id, Some(status)))) => tracing::warn!(app = %app, id, status, "{}", n.text),
        (Level::Error, Some((app, id, Some(status)))) => tracing::error!(app = %app, id, status, "{}", n.text),
        (Level::Info, Some((app, id, None))) => tracing::info!(app = %app, id, "{}", n.text),
        (Level::Warn, Some((app, id, None))) => tracing::warn!(app = %app, id, "{}", n.text),
        (Level::Error, Some((app, id, None))) => tracing::error!(app = %app, id, "{}", n.text),
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
        state: State::new(eco.apps.into_iter().map(Arc::new).collect(), opts.auto_exit, opts.cpus, crate::ids::uuid_v4),
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
        held: HashMap::new(),
        stop_at: None,
        start_rest_at: None,
        container: container::Watch::start(),
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
        Ok(t) => co.state.recycler = t.map(container::Recycler::new),
        Err(e) => tracing::error!("{e}; recycling stays at {}%", container::RECYCLE_AT * 100.0),
    }
    co.state.shutdown_delay = opts.shutdown_delay;
    co.step(Event::Begin);
    let planned: Vec<u32> = (0..co.state.apps.len()).map(|i| co.state.slots.values().filter(|s| s.app_index == i).count() as u32).collect();
    container::warn_at_start(&co.state.apps, &planned, co.container.last, opts.shutdown_delay);

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
            Some((pm_id, message)) = messages_rx.recv() => {
                co.step(Event::AppMessage { pm_id, message });
            }
            _ = tokio::time::sleep_until(next_sample), if co.needs_samples() || co.has_memory_limits() || co.governs_memory() => {
                if co.needs_samples() || co.has_memory_limits() {
                    co.sample();
                }
                if co.governs_memory() {
                    co.check_container();
                }
                let period = if co.has_memory_limits() || co.governs_memory() { MEMORY_PERIOD } else { sampler::PERIOD };
                next_sample = tokio::time::Instant::now() + period;
            }
            Some(update) = updates_rx.recv() => {
                co.step(Event::Reported(update));
                // Whatever else has arrived meanwhile, then one table for all of it: N
                // instances changing at once cost O(N) updates and a few publishes, not N².
                co.take_updates(&mut updates_rx);
            }
            Some(ended) = co.tasks.join_next_with_id() => {
                // What the task reported before it ended (its pid above all) comes first.
                co.take_updates(&mut updates_rx);
                co.task_ended(ended);
            }
            _ = tokio::time::sleep_until(co.start_rest_at.unwrap_or_else(tokio::time::Instant::now)), if co.start_rest_at.is_some() => {
                co.start_rest_at = None;
                co.step(Event::StartRest);
            }
            _ = tokio::time::sleep_until(co.stop_at.unwrap_or_else(tokio::time::Instant::now)), if co.stop_at.is_some() => {
                co.stop_at = None;
                co.step(Event::DelayOver);
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
    crate::process::strays::sweep().await;
    outcome
}
