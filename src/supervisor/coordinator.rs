//! The coordinator's decisions as data: a [`State`] of the app set takes an [`Event`] (an
//! instance's report, a task's end, a runtime signal, a watched file, a write request, a
//! sample, a memory reading, an app's message) and answers with the [`Effect`]s to carry out
//! (start or hold an instance's task, send it a command, kill what a panicked task left, stop
//! an app or every app, publish, exit with this outcome…).
//!
//! Pure, like the instance machine (Horust's `handle_event`): no task, no channel, no clock, no
//! I/O. The loop in `supervisor/mod.rs` turns OS and socket events into events and carries out
//! the effects. Decided here and nowhere else: auto-exit and the exit code, `scale` and
//! `startOrRestart`/`apply`, `start` of a running instance, restarts by a file watch, what
//! follows a panicked task; the start and stop order (`ordering.rs`: held and released apps, a
//! failed init job, `start` of what an app needs, dependents stopped first, `shutdown_delay`);
//! memory (`memory.rs`: `max_memory_restart` readings, recycling near the container's limit);
//! the apps' `@pm2/io` messages (`messages.rs`).
//!
//! Must never: read the clock (the loop passes `now`, and the `Instant` of a memory reading),
//! touch a process, a file or a channel.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::container::Recycler;
use super::machine::{Cmd, Level, Shutdown};
use super::numbering::Numbering;
use super::order::Order;
use super::schedule::{self, Staging};
use super::status::{Report, RestartCounts, RestartReason, Sample, Status, Update};
use crate::config::{App, Ecosystem, Role};
use crate::control::protocol::{Reply, error};
use crate::exit::Outcome;
use crate::process::Exit;
use crate::signals::RuntimeSignal;

/// One instance as the coordinator sees it.
#[derive(Debug, Clone)]
pub struct Slot {
    pub app_index: usize,
    /// `NODE_APP_INSTANCE` of this instance.
    pub instance: u32,
    pub last: Option<Update>,
    pub unique_id: String,
    pub created_at: SystemTime,
    pub restarts: RestartCounts,
    pub sample: Sample,
    pub axm_monitor: Arc<serde_json::Map<String, serde_json::Value>>,
    pub axm_actions: Arc<Vec<serde_json::Value>>,
    /// The event-loop lag the last heartbeat reported (`watchdog`), seconds.
    pub event_loop_lag: Option<f64>,
    /// How many times this instance's task panicked (a bug of ours).
    panics: u32,
}

/// Where the run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Apps run; requests are answered.
    Running,
    /// The run is over with this outcome: what still runs is stopped, the tasks are awaited.
    Draining(Outcome),
    /// Every task has ended.
    Done,
}

/// The app set: what every decision reads.
#[derive(Debug, Clone)]
pub struct State {
    pub apps: Vec<Arc<App>>,
    pub slots: BTreeMap<u32, Slot>,
    next_id: u32,
    numbers: HashMap<usize, Numbering>,
    /// Instances whose task runs (a gone instance's task may still be finishing).
    tasks: BTreeSet<u32>,
    /// `--no-auto-exit` not given: the runtime ends when nothing can run again.
    auto_exit: bool,
    /// How many CPUs `instances: max` means.
    pub cpus: usize,
    /// A stop signal arrived.
    pub stopping: bool,
    phase: Phase,
    /// Instances whose task waits for their app's dependencies (`depends_on`).
    held: BTreeMap<u32, Held>,
    /// The start and stop order of the apps (`depends_on`, roles): see `ordering.rs`.
    pub order: Order,
    /// On a stop signal: readiness ends at once, the apps are told to stop after this.
    pub shutdown_delay: Duration,
    /// Recycling before the OOM killer (`None`: PM_RUNTIME_MEMORY_RECYCLE=off).
    pub recycler: Option<Recycler>,
    /// A new instance's PM2 `unique_id` (a UUID; a counter in tests).
    new_unique_id: fn() -> String,
    /// The start schedule of the instances the run begins with (see `staging.rs`).
    staging: Staging,
}

/// A held instance: what its task will start with once its app is released.
#[derive(Debug, Clone, Copy)]
struct Held {
    /// What it waits for failed: it counts as settled for auto-exit.
    blocked: bool,
    restart_time: u32,
    resumed: bool,
}

/// What happened, as the loop saw it.
#[derive(Debug)]
pub enum Event {
    /// The run begins: every app's instances start.
    Begin,
    /// An instance reported.
    Reported(Update),
    /// An instance's task ended; `panic`: what it panicked with (a bug of ours, never the app's).
    TaskEnded {
        pm_id: u32,
        panic: Option<String>,
    },
    Signal(RuntimeSignal),
    /// A watched file of this app changed.
    FileChanged {
        app_index: usize,
    },
    /// A command for these instances (`stop`, `restart`, `delete`, `reload`, `reset`, a signal…).
    Command {
        ids: Vec<u32>,
        cmd: Cmd,
    },
    /// `start`: PM2's `restartProcessId` (a running instance restarts, a stopped one starts).
    Start {
        ids: Vec<u32>,
    },
    /// `scale <name> <N|+N|-N>`.
    Scale {
        name: String,
        count: String,
    },
    /// `startOrRestart`/`startOrReload`/`startOrGracefulReload` with a freshly loaded file.
    Apply {
        action: String,
        eco: Ecosystem,
    },
    /// An app's own IPC message (`@pm2/io`, the watchdog's heartbeat, anything else).
    AppMessage {
        pm_id: u32,
        message: serde_json::Value,
    },
    /// `shutdown_delay` (asked for with [`Effect::StopIn`]) is over.
    DelayOver,
    /// The start schedule's bound (asked for with [`Effect::StartRestIn`]) is over: every
    /// instance it still holds starts.
    StartRest,
    /// A sweep of /proc: the resources of every running instance (`max_memory_restart`).
    Sampled(HashMap<u32, Sample>),
    /// The container's memory (working set) and its limit, read at `at` (recycling).
    ContainerMemory {
        used: u64,
        limit: u64,
        at: Instant,
    },
}

/// A line for the runtime's log.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    pub level: Level,
    /// The instance it is about (app name, pm_id) and PM2's status word.
    pub about: Option<(String, u32, Option<&'static str>)>,
    pub text: String,
}

/// What the loop must do.
#[derive(Debug, Clone)]
pub enum Effect {
    /// Start the task of the instance in slot `pm_id` (new, or `resumed` after a panic), with
    /// the inbox made when it was held, if it was.
    StartTask {
        pm_id: u32,
        restart_time: u32,
        resumed: bool,
    },
    /// The instance waits for its app's dependencies: its inbox is made (commands wait there),
    /// its task starts with a later [`Effect::StartTask`].
    Hold(u32),
    Send(u32, Cmd),
    /// SIGKILL to the process tree of `pid` (a panicked task owned it; nobody else will stop it).
    KillTree(u32),
    /// Tell every instance how far the shutdown has gone.
    Shutdown(Shutdown),
    /// Tell this app's instances to stop (the apps that need it have stopped).
    StopApp(usize),
    /// Send [`Event::DelayOver`] after this (`shutdown_delay`).
    StopIn(Duration),
    /// Send [`Event::StartRest`] after this (the start schedule holds instances).
    StartRestIn(Duration),
    /// Reopen the log files (SIGUSR2).
    ReopenLogs,
    /// The instance is gone (or, held, will never start): release everything held for it (its
    /// inbox, its log buffers and files).
    Forget(u32),
    /// This status report is news for the bus.
    Announce(Update),
    /// Put an app's message on the bus.
    AppMessage {
        pm_id: u32,
        name: String,
        message: Arc<serde_json::Value>,
    },
    /// Publish the table.
    Publish,
    /// The answer to the request of the event.
    Reply(Reply),
    Log(Note),
    /// Write this to the container's termination log (why the run ended).
    TerminationLog(String),
    /// Leave the main loop (every task has ended): the runtime ends with this outcome.
    Exit(Outcome),
}

impl State {
    pub fn new(apps: Vec<Arc<App>>, auto_exit: bool, cpus: usize, new_unique_id: fn() -> String) -> Self {
        State {
            apps,
            slots: BTreeMap::new(),
            next_id: 0,
            numbers: HashMap::new(),
            tasks: BTreeSet::new(),
            auto_exit,
            cpus,
            stopping: false,
            phase: Phase::Running,
            held: BTreeMap::new(),
            order: Order::default(),
            shutdown_delay: Duration::ZERO,
            recycler: None,
            new_unique_id,
            staging: Staging::begin(cpus),
        }
    }

    /// Whether requests and file watches are still answered.
    pub fn accepts_requests(&self) -> bool {
        self.phase == Phase::Running && !self.stopping
    }

    /// One step: what `event` changes, and what must be done about it.
    pub fn handle(&mut self, event: Event, now: SystemTime) -> Vec<Effect> {
        let mut fx = Vec::new();
        self.order.sync(&self.apps);
        match event {
            Event::Begin => {
                for app_index in 0..self.apps.len() {
                    for _ in 0..crate::config::resolve_instances(self.apps[app_index].instances, self.cpus) {
                        self.spawn_instance(app_index, now, &mut fx);
                    }
                }
                if self.staging.close() {
                    fx.push(Effect::StartRestIn(schedule::HOLD_AT_MOST));
                }
                fx.push(Effect::Publish);
            }
            Event::Reported(update) => self.record(update, &mut fx),
            Event::TaskEnded { pm_id, panic } => self.task_ended(pm_id, panic, &mut fx),
            Event::Signal(sig) => self.on_signal(sig, &mut fx),
            Event::FileChanged { app_index } => {
                if self.accepts_requests() {
                    // A stop turns watching off for that instance, as in PM2; a start turns it on again.
                    let stopped = |s: &Slot| s.last.as_ref().is_some_and(|u| u.manual && u.status == Status::Stopped);
                    for (id, _) in self.slots.iter().filter(|(_, s)| s.app_index == app_index && !stopped(s)) {
                        fx.push(Effect::Send(*id, Cmd::Restart));
                    }
                }
            }
            Event::Command { .. } | Event::Start { .. } | Event::Scale { .. } | Event::Apply { .. } if !self.accepts_requests() => {
                fx.push(Effect::Reply(error("the runtime is stopping")));
            }
            Event::Command { ids, cmd } => {
                for id in &ids {
                    fx.push(Effect::Send(*id, cmd.clone()));
                }
                fx.push(Effect::Reply(Reply { ids: Some(ids), ..Reply::ok() }));
            }
            Event::Start { ids } => {
                for id in &ids {
                    let running = self
                        .slots
                        .get(id)
                        .and_then(|s| s.last.as_ref())
                        .is_some_and(|u| matches!(u.status, Status::Online | Status::Launching));
                    fx.push(Effect::Send(*id, if running { Cmd::Restart } else { Cmd::Start }));
                }
                self.start_dependencies(&ids, &mut fx);
                fx.push(Effect::Reply(Reply { ids: Some(ids), ..Reply::ok() }));
            }
            Event::Scale { name, count } => {
                let reply = self.scale(&name, &count, now, &mut fx);
                fx.push(Effect::Publish);
                fx.push(Effect::Reply(reply));
            }
            Event::Apply { action, eco } => {
                let reply = self.apply(&action, eco, now, &mut fx);
                fx.push(Effect::Publish);
                fx.push(Effect::Reply(reply));
            }
            Event::DelayOver => {
                if std::mem::take(&mut self.order.delay_pending) {
                    fx.push(note(Level::Info, "shutdown_delay is over: stopping every app (kill_timeout applies)".into()));
                    self.begin_stop(&mut fx);
                }
            }
            Event::StartRest => {
                let ids = self.staging.release();
                self.start_staged(ids, &mut fx);
            }
            Event::Sampled(samples) => self.sampled(samples, &mut fx),
            Event::AppMessage { pm_id, message } => self.app_message(pm_id, message, &mut fx),
            Event::ContainerMemory { used, limit, at } => self.recycle(used, limit, at, &mut fx),
        }
        // The start and stop order follows whatever changed.
        self.advance_order(&mut fx);
        fx
    }

    /// Starts one more instance of `app_index`, with the lowest free instance number (PM2 fills gaps).
    fn spawn_instance(&mut self, app_index: usize, now: SystemTime, fx: &mut Vec<Effect>) -> u32 {
        let instance = self.numbers.entry(app_index).or_default().take();
        let pm_id = self.next_id;
        self.next_id += 1;
        self.slots.insert(
            pm_id,
            Slot {
                app_index,
                instance,
                last: None,
                unique_id: (self.new_unique_id)(),
                created_at: now,
                restarts: RestartCounts::default(),
                sample: Sample::default(),
                axm_monitor: Default::default(),
                axm_actions: Default::default(),
                event_loop_lag: None,
                panics: 0,
            },
        );
        self.tasks.insert(pm_id);
        self.start_task(pm_id, 0, false, fx);
        pm_id
    }

    fn record(&mut self, update: Update, fx: &mut Vec<Effect>) {
        // Draining: the outcome is decided on the statuses before the stop, so instances
        // ending now keep their slots.
        if update.gone && self.phase != Phase::Running {
            return;
        }
        if !self.slots.contains_key(&update.pm_id) {
            return;
        }
        // What it reached, for the start order.
        if !self.order.graph.is_flat() {
            self.order.reached.entry(update.pm_id).or_default().observe(&update.report);
        }
        self.staging_report(&update, fx);
        let Some(slot) = self.slots.get_mut(&update.pm_id) else { return };
        // A report that only refreshes facts (the backoff reset of `prev_restart_delay`) is
        // no status event: PM2 Plus would count a second `online`.
        let refresh = |last: &Update| {
            (last.status, last.pid, last.last_exit, last.manual, last.scheduled)
                == (update.status, update.pid, update.last_exit, update.manual, update.scheduled)
                && update.reason.is_none()
                && !update.gone
        };
        if !slot.last.as_ref().is_some_and(refresh) {
            fx.push(Effect::Announce(update.clone()));
        }
        if let Some(reason) = update.reason {
            slot.restarts.add(reason);
        }
        if update.gone {
            let pm_id = update.pm_id;
            if let Some(slot) = self.slots.remove(&pm_id) {
                self.numbers.entry(slot.app_index).or_default().give_back(slot.instance);
            }
            self.order.reached.remove(&pm_id);
            fx.push(Effect::Forget(pm_id));
        } else {
            if update.pid.is_none() {
                slot.sample = Sample::default();
            }
            slot.last = Some(update);
        }
        fx.push(Effect::Publish);
        self.check_settled(fx);
    }

    /// With auto-exit, the run is over once nothing can run again by itself.
    fn check_settled(&mut self, fx: &mut Vec<Effect>) {
        if self.phase == Phase::Running && !self.stopping && self.auto_exit && self.all_settled() {
            let outcome = self.outcome(fx);
            self.drain(outcome, fx);
        }
    }

    /// An instance task has ended. A panic must not leave a ghost: the instance's processes
    /// are killed, and it starts again as after a crash (unless the runtime is stopping, or it
    /// keeps panicking: then it is errored).
    fn task_ended(&mut self, pm_id: u32, panic: Option<String>, fx: &mut Vec<Effect>) {
        self.tasks.remove(&pm_id);
        // PM2 numbers from 0 again once its table is empty (ids and `-<id>` log files match);
        // an id is free for reuse only once its task has ended.
        if self.slots.is_empty() && self.tasks.is_empty() {
            self.next_id = 0;
        }
        if let Some(what) = panic {
            self.after_panic(pm_id, what, fx);
        }
        self.check_end(fx);
    }

    fn after_panic(&mut self, pm_id: u32, what: String, fx: &mut Vec<Effect>) {
        let running = self.phase == Phase::Running && !self.stopping;
        let Some(slot) = self.slots.get_mut(&pm_id) else { return };
        let app = self.apps[slot.app_index].clone();
        let last = slot.last.take();
        if let Some(pid) = last.as_ref().and_then(|u| u.pid) {
            fx.push(Effect::KillTree(pid));
        }
        slot.panics += 1;
        let restart_time = last.as_ref().map_or(0, |u| u.restart_time) + 1;
        let again = running && slot.panics <= app.max_restarts.max(1);
        fx.push(Effect::Log(Note {
            level: Level::Error,
            about: Some((app.name.clone(), pm_id, Some("errored"))),
            text: format!(
                "App [{}:{pm_id}] supervision task panicked ({what}); its processes were killed{}",
                app.name,
                if again { "; it is restarted as after a crash" } else { "" }
            ),
        }));
        if again {
            slot.restarts.add(RestartReason::Crash);
            self.tasks.insert(pm_id);
            self.start_task(pm_id, restart_time, true, fx);
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
        fx.push(Effect::Publish);
    }

    fn on_signal(&mut self, sig: RuntimeSignal, fx: &mut Vec<Effect>) {
        match sig {
            RuntimeSignal::Stop => {
                if self.stopping || self.phase != Phase::Running {
                    fx.push(Effect::Log(Note {
                        level: Level::Warn,
                        about: None,
                        text: "Second stop signal: killing every app now".into(),
                    }));
                    self.order.delay_pending = false;
                    self.drop_held(fx);
                    self.shutdown_all(Shutdown::Force, fx);
                } else {
                    self.stopping = true;
                    self.phase = Phase::Draining(Outcome::Requested);
                    fx.push(Effect::Publish);
                    fx.push(Effect::Log(Note {
                        level: Level::Info,
                        about: None,
                        text: "Stop signal received: stopping every app (kill_timeout applies)".into(),
                    }));
                    self.stop_requested(fx);
                    self.check_end(fx);
                }
            }
            RuntimeSignal::Reload if self.accepts_requests() => {
                fx.push(Effect::Log(Note {
                    level: Level::Info,
                    about: None,
                    text: "SIGHUP received: reloading every app (cluster: zero-downtime; fork: restart)".into(),
                }));
                // Not init jobs (a reload must not run a migration again), not held instances.
                let reload = self
                    .slots
                    .iter()
                    .filter(|(id, s)| self.apps[s.app_index].role != Role::Init && !self.held.contains_key(id))
                    .map(|(id, _)| Effect::Send(*id, Cmd::Reload));
                fx.extend(reload);
            }
            RuntimeSignal::Reload => {}
            RuntimeSignal::ReopenLogs => {
                fx.push(Effect::Log(Note { level: Level::Info, about: None, text: "SIGUSR2 received: reopening log files".into() }));
                fx.push(Effect::ReopenLogs);
            }
            RuntimeSignal::Forward(sig) => fx.extend(self.slots.keys().map(|id| Effect::Send(*id, Cmd::Signal(sig)))),
        }
    }

    /// The run is over by itself (auto-exit, a failed init job) with `outcome`: what still runs
    /// is stopped at once, in no order, held instances never start, then the tasks are awaited.
    fn drain(&mut self, outcome: Outcome, fx: &mut Vec<Effect>) {
        self.phase = Phase::Draining(outcome);
        self.drop_held(fx);
        self.shutdown_all(Shutdown::Graceful, fx);
    }

    /// Once no task runs (after a task ended, or a stop with none left): a draining run is done,
    /// and with auto-exit so is a running one.
    fn check_end(&mut self, fx: &mut Vec<Effect>) {
        if !self.tasks.is_empty() {
            return;
        }
        match self.phase {
            Phase::Running if self.auto_exit => {
                let outcome = self.outcome(fx);
                self.phase = Phase::Done;
                fx.push(Effect::Exit(outcome));
            }
            Phase::Draining(outcome) => {
                self.phase = Phase::Done;
                fx.push(Effect::Exit(outcome));
            }
            _ => {}
        }
    }

    /// Which apps count for auto-exit and the exit code (sidecars do not, unless all are).
    fn counted(&self) -> Vec<bool> {
        super::order::counted(&self.apps.iter().map(|a| a.role).collect::<Vec<Role>>())
    }

    /// True when no instance that counts can run again by itself, and no held one can still
    /// be released.
    fn all_settled(&self) -> bool {
        let counted = self.counted();
        self.slots.iter().filter(|(_, s)| counted[s.app_index]).all(|(id, s)| match self.held.get(id) {
            Some(h) => h.blocked,
            None => s.last.as_ref().is_some_and(|u| !u.status.is_alive() && !u.scheduled),
        })
    }

    /// The exit code when the apps ended by themselves (see `exit.rs`), said in the log and,
    /// when not 0, in the container's termination log (with the death certificates).
    fn outcome(&self, fx: &mut Vec<Effect>) -> Outcome {
        let counted = self.counted();
        let slots: Vec<&Slot> = self.slots.values().filter(|s| counted[s.app_index]).collect();
        let mut say = |text: String, level| fx.push(Effect::Log(Note { level, about: None, text }));
        let is_errored = |s: &&&Slot| s.last.as_ref().is_some_and(|u| u.status == Status::Errored);
        let errored: Vec<&str> = slots.iter().filter(is_errored).map(|s| self.apps[s.app_index].name.as_str()).collect();
        if !errored.is_empty() {
            say(format!("Exiting: app(s) errored: {}", errored.join(", ")), Level::Error);
            let deaths: Vec<_> = slots
                .iter()
                .filter(is_errored)
                .map(|s| {
                    let last = s.last.as_ref();
                    (self.apps[s.app_index].name.clone(), last.map_or(0, |u| u.pm_id), last.and_then(|u| u.death.as_deref()))
                })
                .collect();
            let text = super::container::termination_message(&format!("pm-runtime: app(s) errored: {}", errored.join(", ")), &deaths);
            fx.push(Effect::TerminationLog(text));
            return Outcome::AppErrored;
        }
        for s in &slots {
            if let Some(exit) = s.last.as_ref().and_then(|u| u.last_exit)
                && exit != Exit::Code(0)
            {
                let name = &self.apps[s.app_index].name;
                say(format!("Exiting: every app has finished; {name} exited with {}", exit.as_code()), Level::Info);
                let last = s.last.as_ref();
                let what = [(name.clone(), last.map_or(0, |u| u.pm_id), last.and_then(|u| u.death.as_deref()))];
                let summary = format!("pm-runtime: every app has finished; {name} exited with {}", exit.as_code());
                fx.push(Effect::TerminationLog(super::container::termination_message(&summary, &what)));
                return Outcome::AppsFinished(exit.as_code());
            }
        }
        say("Exiting: every app has finished".into(), Level::Info);
        Outcome::AppsFinished(0)
    }

    /// pm_ids a target names (`all`, `/regex/`, a name, a namespace, a pm_id: PM2's order).
    pub fn resolve(&self, target: &str) -> Result<Vec<u32>, String> {
        use crate::control::target::{Row, select};
        let rows: Vec<Row> = self
            .slots
            .iter()
            .map(|(id, s)| Row { pm_id: *id, name: &self.apps[s.app_index].name, namespace: &self.apps[s.app_index].namespace })
            .collect();
        select(target, &rows)
    }

    fn scale(&mut self, name: &str, count: &str, now: SystemTime, fx: &mut Vec<Effect>) -> Reply {
        let Some(app_index) = self.apps.iter().position(|a| a.name == name) else {
            return error(format!("no app named {name:?}"));
        };
        let current: Vec<u32> = self.slots.iter().filter(|(_, s)| s.app_index == app_index).map(|(k, _)| *k).collect();
        let n = current.len() as i64;
        let target = match count.trim() {
            c if c.starts_with('+') => c[1..].parse::<i64>().map(|k| n + k),
            c if c.starts_with('-') => c[1..].parse::<i64>().map(|k| n - k),
            c => c.parse::<i64>(),
        };
        let Ok(target) = target else { return error(format!("scale: expected N, +N or -N, got {count:?}")) };
        let target = target.max(0);
        if let Err(e) = crate::config::check_instance_count(target.unsigned_abs()) {
            return error(format!("scale {name}: {e}"));
        }
        if target == n {
            return error(format!("{name} already has {n} instance(s): nothing to do"));
        }
        if target > n {
            let added: Vec<u32> = (n..target).map(|_| self.spawn_instance(app_index, now, fx)).collect();
            Reply { added: Some(added), instances: Some(target), ..Reply::ok() }
        } else {
            // PM2 removes the first (lowest) ids.
            let removed: Vec<u32> = current.iter().copied().take((n - target) as usize).collect();
            fx.extend(removed.iter().map(|id| Effect::Send(*id, Cmd::Delete)));
            Reply { removed: Some(removed), instances: Some(target), ..Reply::ok() }
        }
    }

    /// `startOrRestart` and friends: apps already known are restarted with their new settings
    /// (fork mode: reload = restart), new ones are started. Apps not in the file are left alone.
    fn apply(&mut self, action: &str, eco: Ecosystem, now: SystemTime, fx: &mut Vec<Effect>) -> Reply {
        let (mut restarted, mut started) = (Vec::new(), Vec::new());
        for app in eco.apps {
            let name = app.name.clone();
            let new = Arc::new(app);
            if let Some(idx) = self.apps.iter().position(|a| a.name == name) {
                self.apps[idx] = new.clone();
                let ids: Vec<u32> = self.slots.iter().filter(|(_, s)| s.app_index == idx).map(|(k, _)| *k).collect();
                if ids.is_empty() {
                    for _ in 0..crate::config::resolve_instances(new.instances, self.cpus) {
                        self.spawn_instance(idx, now, fx);
                    }
                }
                fx.extend(ids.into_iter().map(|id| Effect::Send(id, Cmd::Replace(new.clone()))));
                restarted.push(name);
            } else {
                self.apps.push(new.clone());
                let idx = self.apps.len() - 1;
                for _ in 0..crate::config::resolve_instances(new.instances, self.cpus) {
                    self.spawn_instance(idx, now, fx);
                }
                started.push(name);
            }
        }
        fx.push(Effect::Log(Note {
            level: Level::Info,
            about: None,
            text: format!("{action}: restarted [{}], started [{}]", restarted.join(", "), started.join(", ")),
        }));
        Reply { restarted: Some(restarted), started: Some(started), ..Reply::ok() }
    }
}

/// A line for the runtime's log about no instance in particular.
fn note(level: Level, text: String) -> Effect {
    Effect::Log(Note { level, about: None, text })
}

mod memory;
mod messages;
mod ordering;
mod staging;
#[cfg(test)]
mod tests;
