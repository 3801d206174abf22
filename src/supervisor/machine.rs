//! The lifecycle of one app instance as data: a [`Machine`] in a [`State`] takes an [`Input`]
//! (an exit, a readiness signal, a timer, a command, a memory reading…) and answers with the
//! [`Effect`]s to carry out (spawn, signal, arm a timer, report a status…).
//!
//! Pure: no clock (the caller passes `now`), no process, no I/O. The instance task
//! (`instance.rs`) turns OS events into inputs and carries out the effects; PM2's restart
//! policy (`policy.rs`) is called from here. Every command has a meaning in every state,
//! including while stopping: the stop grace period is a timer ([`Timer::Kill`]) held in the
//! state, so a `delete` or a signal sent during a stop is answered at once.
//!
//! Must never: sleep, read the clock, touch a process or a file.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::cron::Schedule;
use super::policy::{self, Decision, History, Policy};
use super::status::{ExitReason, ProbeView, ProbeViews, Report, RestartReason, Status};
use crate::config::App;
use crate::process::Exit;

/// How long an exit that looks requested waits for the runtime's own stop signal.
pub const STOP_GRACE: Duration = Duration::from_millis(100);

/// How often the leftovers of a stopped process group are looked for, at most.
pub const LEFTOVER_POLL: Duration = Duration::from_millis(100);

/// How far the runtime's shutdown has gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Shutdown {
    Running,
    /// Stop gracefully: kill signal, then SIGKILL after `kill_timeout`.
    Graceful,
    /// A second TERM/INT: SIGKILL now.
    Force,
}

/// Requests to an instance.
#[derive(Debug, Clone)]
pub enum Cmd {
    /// Stop (if running) and start again, resetting the restart history (PM2's manual restart).
    /// Starts a stopped instance.
    Restart,
    /// Start if stopped; nothing if running.
    Start,
    /// Stop and stay stopped until `Start`/`Restart` (PM2's `stop`).
    Stop,
    /// Stop and end the task (PM2's `delete`, scale down).
    Delete,
    /// Send a signal to the instance's process group.
    Signal(Signal),
    /// New settings for the app (`startOrRestart` with a changed file): restart (or start) with them.
    Replace(Arc<App>),
    /// PM2's `reset`: the restart counter back to 0, nothing else changes.
    Reset,
    /// Zero-downtime reload: a cluster worker is replaced (the new one first, the old one
    /// retired once the new one is online); a fork-mode instance is restarted, as in PM2.
    Reload,
    /// A message for the app's Node IPC channel (`process.on('message')`); dropped when the
    /// instance has no channel or is not running.
    Send(Arc<serde_json::Value>),
    /// The sampler saw the tree of process `pid` over its `max_memory_restart` (bytes).
    /// Ignored unless `pid` is still the instance's process (the reading may be late).
    OverMemory { pid: u32, rss: u64, limit: u64 },
    /// The container's memory (`used` of its `limit`, bytes) nears the limit and this instance's
    /// tree is the largest: restart it gracefully (rolling in cluster mode). Ignored unless
    /// `pid` is still the instance's process.
    ContainerMemory { pid: u32, used: u64, limit: u64 },
}

/// How an instance said it is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ready {
    /// `process.send('ready')` on the Node IPC channel.
    Message,
    /// A cluster worker's server is listening on this port.
    /// The port, or for a Unix socket (port 0) its path.
    Listening(u16, Option<String>),
    /// sd_notify's `READY=1`.
    Notify,
}

/// Which probe (`liveness_probe`, `readiness_probe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProbeKind {
    Liveness,
    Readiness,
}

/// The probes' streaks for the current process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Probes {
    live_failures: u32,
    ready_successes: u32,
    ready_failures: u32,
    /// The readiness probe has passed (`success_threshold` times) and not failed since.
    ready: bool,
}

/// Timers a machine arms; at most one of each kind at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// A stop's deadline: SIGKILL to whatever is left (`kill_timeout` after the stop began).
    Kill,
    /// Cluster stop: the kill signal after the worker had half of `kill_timeout` to disconnect.
    Signal,
    /// Look again whether the stopped process group has left-over members.
    Leftovers,
    /// A restart delay is over.
    Restart,
    /// `listen_timeout`: considered online without a readiness signal.
    Listen,
    /// `cron_restart` fires.
    Cron,
    /// The pause after an exit that looks requested (see [`STOP_GRACE`]).
    Grace,
    /// The process has run for `EXP_BACKOFF_RESET_TIMER`: the backoff starts over, and
    /// `prev_restart_delay` shows 0 at once, as PM2's worker does.
    BackoffReset,
    /// Time for this probe's next check.
    Probe(ProbeKind),
    /// No heartbeat for `watchdog`.
    Watchdog,
    /// The system lacked resources for a start: try again.
    Respawn,
    /// Retirement of a replaced cluster worker: the kill signal after half of its `kill_timeout`.
    RetireSignal,
    /// Retirement: SIGKILL to whatever is left of the replaced process at its `kill_timeout`.
    RetireKill,
}

/// The hang watchdog's view of the current process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Watchdog {
    /// A heartbeat came from this process (its sender is in place).
    seen: bool,
    /// The heartbeat stopped: the restart is under way.
    fired: bool,
}

/// What happened, as the instance task saw it.
#[derive(Debug, Clone)]
pub enum Input {
    /// The task begins.
    Begin,
    Cmd(Cmd),
    /// The process started (after [`Effect::Spawn`]).
    Spawned {
        pid: u32,
    },
    /// The process could not be started (the task has logged why). `starved`: the system
    /// lacked resources (EMFILE, EAGAIN…), with the error: worth a retry, never a crash.
    SpawnFailed {
        starved: Option<String>,
    },
    /// The process exited; `leftovers`: members of its group (or strays) still run.
    Exited {
        exit: Exit,
        leftovers: bool,
        /// Whether the cgroup's OOM-kill count grew while the process ran (`None`: unknown).
        oom: Option<bool>,
    },
    /// The stopped process's leftovers are all gone (or still there), after [`Timer::Leftovers`].
    Leftovers {
        alive: bool,
    },
    Ready(Ready),
    Timer(Timer),
    Shutdown(Shutdown),
    /// A heartbeat of the running process (the preload's IPC message, sd_notify `WATCHDOG=1`).
    Heartbeat,
    /// A probe's check of process `pid` passed (or failed, saying why).
    Probe {
        kind: ProbeKind,
        pid: u32,
        result: Result<(), String>,
    },
    /// The process a rolling reload replaced exited; `leftovers`: members of its group remain;
    /// `oom`: the cgroup's OOM killer struck meanwhile (`None`: unknown).
    RetireExited {
        exit: Exit,
        leftovers: bool,
        oom: Option<bool>,
    },
}

/// What the instance task must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Report this status to the coordinator.
    Report(Report),
    /// Say this in the runtime's log.
    Log(Log),
    /// Start the process with the current settings ([`Machine::app`]).
    Spawn,
    /// `sendSignal`: this signal to the process group.
    Signal(Signal),
    /// Ask the process to stop: the `shutdown` IPC message (`shutdown_with_message`, falling
    /// back to the signal when it cannot be sent) or the kill signal, to the whole tree.
    Terminate {
        signal: Signal,
        message: bool,
    },
    /// SIGKILL to the whole tree.
    Kill,
    /// Cluster worker: Node's graceful `disconnect`.
    Disconnect,
    /// A message on the Node IPC channel.
    Send(Arc<serde_json::Value>),
    /// Arm (or re-arm) a timer at this instant.
    Arm(Timer, Instant),
    /// Arm [`Timer::Cron`] at the next fire of `cron_restart` (the task reads the clock).
    ArmCron,
    Disarm(Timer),
    /// Rolling reload: the running process is handed over to retirement (kept running); the
    /// next [`Effect::Spawn`] starts its replacement. Its death certificate will give this reason.
    HandOver(ExitReason),
    /// The process ended, for this reason: the task writes its death certificate (the exit
    /// line, with pid, uptime and last stderr lines) and keeps it as the instance's `last_exit`.
    Died {
        exit: Exit,
        reason: ExitReason,
    },
    /// Run this probe's check once (bounded by its `timeout`); its result comes back as
    /// [`Input::Probe`].
    Probe(ProbeKind),
    /// The handed-over process ended, for this reason: the task logs its death certificate
    /// (the instance's `last_exit` stays its current process's).
    RetireDied {
        exit: Exit,
        reason: ExitReason,
    },
    /// Retirement of the handed-over process, step by step as for any stop: Node's graceful
    /// `disconnect`…
    RetireDisconnect,
    /// …the kill signal (or `shutdown` message) to its tree…
    RetireTerminate {
        signal: Signal,
        message: bool,
    },
    /// …SIGKILL to its tree.
    RetireKill,
    /// The handed-over process is gone: drop its handles.
    Retired,
    /// The task ends.
    End,
}

/// A line for the runtime's log: level, PM2's status word, text.
#[derive(Debug, Clone, PartialEq)]
pub struct Log {
    pub level: Level,
    pub status: Option<&'static str>,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// What follows a stop on request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    Restart(RestartReason),
    Park,
    Delete,
    Shutdown,
}

/// Where a stop stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopPhase {
    /// Cluster worker: `disconnect` sent, the kill signal comes at [`Timer::Signal`].
    Disconnecting,
    /// The kill signal (or `shutdown` message) was sent.
    Signalled,
    /// SIGKILL was sent.
    Killed,
    /// The leader exited with this status; members of its group remain.
    Draining(Exit),
}

/// The instance's state.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// Created; [`Input::Begin`] not seen yet.
    New,
    /// Not running; waits for a reason to start (a command, `cron_restart`).
    Parked {
        status: Status,
        manual: bool,
    },
    /// A restart delay runs.
    Waiting,
    /// Started, not yet ready (`wait_ready`, cluster listen).
    Launching {
        pid: u32,
        started: Instant,
    },
    Online {
        pid: u32,
        started: Instant,
    },
    /// Being stopped; `then` says what follows.
    Stopping {
        pid: u32,
        then: Then,
        phase: StopPhase,
    },
    /// An exit that looks requested: the runtime's own stop signal may follow (Heroku).
    Grace {
        delay: Duration,
    },
    /// Spawn asked for; [`Input::Spawned`] or [`Input::SpawnFailed`] comes next.
    Starting,
    /// The system lacked resources for a start: [`Timer::Respawn`] tries again (not a restart).
    Starved,
    Gone,
}

/// Where the retirement of a process replaced by a rolling reload stands: the same steps as
/// any stop ([`StopPhase`]), with the same `kill_timeout`, beside the running replacement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retire {
    /// Its replacement is starting; it keeps serving until the replacement is online.
    Waiting,
    Disconnecting,
    Signalled,
    Killed,
}

/// One instance's lifecycle.
#[derive(Debug, Clone)]
pub struct Machine {
    pub state: State,
    pub app: Arc<App>,
    /// Settings that apply from the next start (`startOrRestart` while running).
    pending_app: Option<Arc<App>>,
    pub pm_id: u32,
    /// Cluster mode: a Node worker whose readiness is its `listen`.
    pub cluster: bool,
    /// PM2's `restart_time` (↺): starts counted since the first; `reset` sets it back to 0.
    pub restart_time: u32,
    pub hist: History,
    backoff_reset: Duration,
    pub last_exit: Option<Exit>,
    /// Why the last process ended.
    pub exit_reason: Option<ExitReason>,
    /// Why the next start happens (reported with its `launching`).
    next_reason: Option<RestartReason>,
    shutdown: Shutdown,
    /// A stop signal reached the runtime (possibly before the coordinator said so).
    stop_seen: bool,
    /// A rolling reload handed the previous process (this pid) over; it retires once its
    /// replacement is online.
    pub retiring: Option<(u32, Retire)>,
    /// Why the retiring process is replaced (its death certificate's reason).
    retire_reason: Option<ExitReason>,
    /// A reload asked for while a previous process still retires: done once it is gone.
    pending_reload: Option<RestartReason>,
    /// Starts in a row that lacked resources (the back-off of the next try).
    starved: u32,
    /// The instant of the current step (the caller's clock).
    now: Instant,
    /// `start` after `autostart: false` begins the instance's life: not a restart.
    first_start: bool,
    /// This machine replaces one whose task panicked: start whatever `autostart` says.
    pub resumed: bool,
    probes: Probes,
    /// What the probes' results show (`jlist`, dashboard), for the current process.
    probe_views: ProbeViews,
    watchdog: Watchdog,
    /// Not a Node cluster worker, but its instances share their port by themselves
    /// (SO_REUSEPORT): reloads are rolling (the new process first), as in cluster mode.
    pub rolling: bool,
}

impl Machine {
    /// A machine for instance `pm_id`. `backoff_reset`: PM2's `EXP_BACKOFF_RESET_TIMER`.
    pub fn new(app: Arc<App>, pm_id: u32, cluster: bool, restart_time: u32, backoff_reset: Duration, now: Instant) -> Self {
        Machine {
            state: State::New,
            app,
            pending_app: None,
            pm_id,
            cluster,
            restart_time,
            hist: History::new(now),
            backoff_reset,
            last_exit: None,
            exit_reason: None,
            next_reason: None,
            shutdown: Shutdown::Running,
            stop_seen: false,
            retiring: None,
            retire_reason: None,
            pending_reload: None,
            starved: 0,
            now,
            first_start: true,
            resumed: false,
            probes: Probes::default(),
            probe_views: ProbeViews::default(),
            watchdog: Watchdog::default(),
            rolling: false,
        }
    }

    /// A stop signal reached the runtime (the global counter): restarts stop now, even before
    /// the coordinator's shutdown arrives.
    pub fn note_stop_signal(&mut self) {
        self.stop_seen = true;
    }

    fn shutting(&self) -> bool {
        self.shutdown != Shutdown::Running || self.stop_seen
    }

    fn tag(&self) -> String {
        format!("{}:{}", self.app.name, self.pm_id)
    }

    fn policy(&self) -> Policy {
        let app = &self.app;
        Policy {
            autorestart: app.autorestart,
            stop_exit_codes: app.stop_exit_codes.clone(),
            min_uptime: app.min_uptime,
            max_restarts: app.max_restarts,
            restart_delay: app.restart_delay,
            exp_backoff_restart_delay: app.exp_backoff_restart_delay,
            backoff_reset: self.backoff_reset,
        }
    }

    fn has_cron(&self) -> bool {
        self.app.cron_restart.as_deref().is_some_and(|p| Schedule::parse(p).is_ok())
    }

    fn report(&self, status: Status, pid: Option<u32>, fx: &mut Vec<Effect>) {
        fx.push(Effect::Report(self.status_report(status, pid)));
    }

    /// The instance's status as it is now (the one place a [`Report`] is built).
    pub fn status_report(&self, status: Status, pid: Option<u32>) -> Report {
        Report {
            status,
            pid,
            last_exit: self.last_exit,
            exit_reason: self.exit_reason,
            restart_time: self.restart_time,
            scheduled: false,
            manual: false,
            reason: None,
            gone: false,
            prev_restart_delay: self.prev_restart_delay(),
            ready: status == Status::Online && self.probe_ready(),
            probes: if pid.is_some() { self.probe_views.clone() } else { ProbeViews::default() },
        }
    }

    /// The heartbeat stopped for `watchdog`: restart (the Node preload has already written the
    /// blocked main thread's stack to stderr). A process that never sent one (no preload, no
    /// sd_notify) is left alone: there is nothing to miss.
    fn on_watchdog(&mut self, pid: u32, now: Instant, fx: &mut Vec<Effect>) {
        let Some(wd) = self.app.watchdog else { return };
        let tag = self.tag();
        if !self.watchdog.seen {
            Self::log(
                fx,
                Level::Warn,
                None,
                format!(
                    "App [{tag}] watchdog: no heartbeat received yet (Node apps send it through pm-runtime's preload; others send WATCHDOG=1 to NOTIFY_SOCKET); not watched"
                ),
            );
            return;
        }
        if std::mem::replace(&mut self.watchdog.fired, true) {
            return;
        }
        Self::log(
            fx,
            Level::Warn,
            Some("restart"),
            format!("App [{tag}] sent no heartbeat for {}ms (event loop blocked?): restarting (reason: watchdog)", wd.as_millis()),
        );
        if self.cluster && matches!(self.state, State::Online { .. }) {
            self.rolling_reload(RestartReason::Watchdog, now, fx);
        } else {
            self.begin_stop(pid, Then::Restart(RestartReason::Watchdog), now, fx);
        }
    }

    /// Without a readiness probe, online is ready; with one, it must have passed.
    fn probe_ready(&self) -> bool {
        self.app.readiness_probe.is_none() || self.probes.ready
    }

    /// A rolling reload's old process is retired once this one is ready.
    fn retire_when_ready(&mut self, fx: &mut Vec<Effect>) {
        if self.probe_ready() {
            self.retire_if_any(fx);
        }
    }

    /// A probe's result for the running process: liveness failing restarts it, readiness
    /// moves the ready state; the next check is armed.
    fn on_probe(&mut self, kind: ProbeKind, of: u32, result: Result<(), String>, now: Instant, fx: &mut Vec<Effect>) {
        let (State::Launching { pid, .. } | State::Online { pid, .. }) = self.state else { return };
        let probe = match kind {
            ProbeKind::Liveness => self.app.liveness_probe.clone(),
            ProbeKind::Readiness => self.app.readiness_probe.clone(),
        };
        let Some(probe) = probe else { return };
        if of != pid {
            return;
        }
        fx.push(Effect::Arm(Timer::Probe(kind), now + probe.period));
        let tag = self.tag();
        let online = matches!(self.state, State::Online { .. });
        let (viewed, reported) = (self.view_probe(kind, &result), fx.len());
        let p = &mut self.probes;
        match (kind, result) {
            (ProbeKind::Liveness, Ok(())) => p.live_failures = 0,
            (ProbeKind::Liveness, Err(why)) => {
                p.live_failures += 1;
                if p.live_failures >= probe.failure_threshold {
                    let n = p.live_failures;
                    Self::log(
                        fx,
                        Level::Warn,
                        Some("restart"),
                        format!(
                            "App [{tag}] liveness probe ({}) failed {n} time(s) in a row: {why}; restarting (reason: probe)",
                            probe.check
                        ),
                    );
                    fx.push(Effect::Disarm(Timer::Probe(ProbeKind::Liveness)));
                    if self.cluster && online {
                        self.rolling_reload(RestartReason::Probe, now, fx);
                    } else {
                        self.begin_stop(pid, Then::Restart(RestartReason::Probe), now, fx);
                    }
                }
            }
            (ProbeKind::Readiness, Ok(())) => {
                p.ready_failures = 0;
                p.ready_successes += 1;
                if !p.ready && p.ready_successes >= probe.success_threshold {
                    p.ready = true;
                    if online {
                        self.report(Status::Online, Some(pid), fx);
                        Self::log(fx, Level::Info, Some("online"), format!("App [{tag}] ready (readiness probe {} passed)", probe.check));
                        self.retire_if_any(fx);
                    }
                }
            }
            (ProbeKind::Readiness, Err(why)) => {
                p.ready_successes = 0;
                p.ready_failures += 1;
                if p.ready && p.ready_failures >= probe.failure_threshold {
                    p.ready = false;
                    let n = p.ready_failures;
                    if online {
                        self.report(Status::Online, Some(pid), fx);
                    }
                    Self::log(
                        fx,
                        Level::Warn,
                        None,
                        format!("App [{tag}] not ready: readiness probe ({}) failed {n} time(s) in a row: {why}", probe.check),
                    );
                }
            }
        }
        if viewed && online && !fx[reported..].iter().any(|e| matches!(e, Effect::Report(_))) {
            // A refresh, not a status event: the table shows the probe's new state.
            self.report(Status::Online, Some(pid), fx);
        }
    }

    /// Records a probe's result in its view; true when the view changed.
    fn view_probe(&mut self, kind: ProbeKind, result: &Result<(), String>) -> bool {
        let slot = match kind {
            ProbeKind::Liveness => &mut self.probe_views.liveness,
            ProbeKind::Readiness => &mut self.probe_views.readiness,
        };
        let old = slot.take().unwrap_or_default();
        let new = match result {
            Ok(()) => ProbeView { passing: Some(true), failures: 0, ..old.clone() },
            Err(why) => ProbeView { passing: Some(false), failures: old.failures + 1, last_failure: Some(why.as_str().into()) },
        };
        let changed = new != old;
        *slot = Some(new);
        changed
    }

    /// PM2's `prev_restart_delay`: the backoff delay of the last restart, zero without one.
    fn prev_restart_delay(&self) -> Duration {
        self.hist.prev_backoff.unwrap_or_default()
    }

    fn log(fx: &mut Vec<Effect>, level: Level, status: Option<&'static str>, text: String) {
        fx.push(Effect::Log(Log { level, status, text }));
    }

    /// One step: what `input` changes, and what must be done about it.
    pub fn step(&mut self, input: Input, now: Instant) -> Vec<Effect> {
        let mut fx = Vec::new();
        self.now = now;
        match input {
            Input::Begin => self.begin(now, &mut fx),
            Input::Shutdown(level) => self.on_shutdown(level, now, &mut fx),
            Input::Cmd(cmd) => self.on_cmd(cmd, now, &mut fx),
            Input::Spawned { pid } => self.on_spawned(pid, now, &mut fx),
            Input::SpawnFailed { starved } => {
                if self.state != State::Starting {
                    return fx;
                }
                match starved {
                    Some(why) if !self.shutting() => {
                        let wait = crate::process::resource_backoff(self.starved);
                        self.starved += 1;
                        Self::log(
                            &mut fx,
                            Level::Warn,
                            None,
                            format!(
                                "App [{}] cannot start yet: {why}; the system is out of resources, retrying in {} ms (not counted as a restart)",
                                self.tag(),
                                wait.as_millis()
                            ),
                        );
                        self.state = State::Starved;
                        fx.push(Effect::Arm(Timer::Respawn, now + wait));
                    }
                    _ => {
                        self.starved = 0;
                        self.retire_if_any(&mut fx);
                        self.exit_reason = Some(ExitReason::Exit);
                        self.after_exit(Exit::Code(127), now, now, &mut fx);
                    }
                }
            }
            Input::RetireExited { exit, leftovers, oom } => self.on_retire_exit(exit, leftovers, oom, &mut fx),
            Input::Exited { exit, leftovers, oom } => self.on_exit(exit, leftovers, oom, now, &mut fx),
            Input::Leftovers { alive } => {
                if let State::Stopping { phase: StopPhase::Draining(exit), then, .. } = self.state {
                    if alive {
                        fx.push(Effect::Arm(Timer::Leftovers, now + self.app.kill_retry_time.min(LEFTOVER_POLL)));
                    } else {
                        fx.push(Effect::Disarm(Timer::Kill));
                        self.finish_stop(then, exit, now, &mut fx);
                    }
                }
            }
            Input::Ready(how) => self.on_ready(how, &mut fx),
            Input::Timer(t) => self.on_timer(t, now, &mut fx),
            Input::Probe { kind, pid, result } => self.on_probe(kind, pid, result, now, &mut fx),
            Input::Heartbeat => {
                if let (Some(wd), State::Launching { .. } | State::Online { .. }) = (self.app.watchdog, &self.state)
                    && !self.watchdog.fired
                {
                    self.watchdog.seen = true;
                    fx.push(Effect::Arm(Timer::Watchdog, now + wd));
                }
            }
        }
        fx
    }

    fn begin(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        if self.state != State::New {
            return;
        }
        if self.shutting() {
            return self.end(fx);
        }
        if self.app.autostart || self.resumed {
            self.start(now, fx);
        } else {
            Self::log(fx, Level::Info, Some("stop"), format!("App [{}] registered but not started (autostart: false)", self.tag()));
            self.park(Status::Stopped, true, fx);
        }
    }

    /// Starts the process (the start of the instance's life, or a restart with `next_reason`).
    fn start(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        if self.shutting() {
            return self.end(fx);
        }
        if let Some(app) = self.pending_app.take() {
            self.app = app;
        }
        if self.hist.created_at.is_none() {
            self.hist.created_at = Some(now);
        }
        fx.push(Effect::Disarm(Timer::Cron));
        let reason = self.next_reason.take().filter(|_| !self.first_start);
        let report = Report { reason, ..self.status_report(Status::Launching, None) };
        self.first_start = false;
        fx.push(Effect::Report(report));
        let mode = if self.cluster || self.rolling { "cluster" } else { "fork" };
        Self::log(fx, Level::Info, Some("start"), format!("App [{}] starting in -{mode} mode-", self.tag()));
        self.state = State::Starting;
        fx.push(Effect::Spawn);
    }

    /// Counts a restart (`restart_time`, and its reason for the coordinator) and starts.
    fn restart(&mut self, reason: RestartReason, fresh_history: bool, now: Instant, fx: &mut Vec<Effect>) {
        if self.shutting() {
            return self.end(fx);
        }
        if fresh_history {
            self.hist = History::new(now);
        }
        self.restart_time += 1;
        self.next_reason = Some(reason);
        self.first_start = false;
        self.start(now, fx);
    }

    fn on_spawned(&mut self, pid: u32, now: Instant, fx: &mut Vec<Effect>) {
        if self.state != State::Starting {
            return;
        }
        self.probes = Probes::default();
        self.probe_views = ProbeViews::pending(&self.app);
        self.watchdog = Watchdog::default();
        if let Some(wd) = self.app.watchdog {
            fx.push(Effect::Arm(Timer::Watchdog, now + wd));
        }
        for (kind, probe) in [(ProbeKind::Liveness, &self.app.liveness_probe), (ProbeKind::Readiness, &self.app.readiness_probe)] {
            if let Some(p) = probe {
                fx.push(Effect::Arm(Timer::Probe(kind), now + p.initial_delay));
            }
        }
        self.starved = 0;
        // Fork mode: online at once unless wait_ready. Cluster mode: once the worker listens
        // (or sends 'ready' with wait_ready), as a Node primary would say.
        if !self.app.wait_ready && !self.cluster {
            self.state = State::Online { pid, started: now };
            self.report(Status::Online, Some(pid), fx);
            Self::log(fx, Level::Info, Some("online"), format!("App [{}] online", self.tag()));
            self.retire_when_ready(fx);
        } else {
            self.state = State::Launching { pid, started: now };
            fx.push(Effect::Arm(Timer::Listen, now + self.app.listen_timeout));
        }
        if self.has_cron() {
            fx.push(Effect::ArmCron);
        }
        if self.hist.prev_backoff.is_some() {
            fx.push(Effect::Arm(Timer::BackoffReset, now + self.backoff_reset));
        }
    }

    /// The replacement is online (or failed, or the instance stops): the handed-over process
    /// is stopped now, with its own `kill_timeout`, as any stop.
    fn retire_if_any(&mut self, fx: &mut Vec<Effect>) {
        let Some((pid, Retire::Waiting)) = self.retiring else { return };
        let now = self.now;
        Self::log(fx, Level::Info, None, format!("App [{}] retiring its previous process (pid {pid})", self.tag()));
        let kill_timeout = self.app.kill_timeout;
        let phase = if self.shutdown == Shutdown::Force {
            fx.push(Effect::RetireKill);
            Retire::Killed
        } else if self.cluster {
            fx.push(Effect::RetireDisconnect);
            fx.push(Effect::Arm(Timer::RetireSignal, now + kill_timeout / 2));
            Retire::Disconnecting
        } else {
            fx.push(Effect::RetireTerminate { signal: self.app.kill_signal.get(), message: self.app.shutdown_with_message });
            Retire::Signalled
        };
        fx.push(Effect::Arm(Timer::RetireKill, now + kill_timeout));
        self.retiring = Some((pid, phase));
    }

    /// The handed-over process exited: retirement is over (and a queued reload may begin, or
    /// an instance that was only waiting for it ends).
    fn on_retire_exit(&mut self, exit: Exit, leftovers: bool, oom: Option<bool>, fx: &mut Vec<Effect>) {
        let Some((_, phase)) = self.retiring.take() else { return };
        let asked = self.retire_reason.take().unwrap_or(ExitReason::Exit);
        let reason = if oom == Some(true) && phase != Retire::Killed { ExitReason::OomKilled } else { asked };
        fx.push(Effect::RetireDied { exit, reason });
        if leftovers {
            fx.push(Effect::RetireKill);
        }
        fx.push(Effect::Disarm(Timer::RetireSignal));
        fx.push(Effect::Disarm(Timer::RetireKill));
        fx.push(Effect::Retired);
        if self.state == State::Gone {
            fx.push(Effect::End);
        } else if let Some(reason) = self.pending_reload.take()
            && matches!(self.state, State::Online { .. })
            && !self.shutting()
        {
            Self::log(fx, Level::Info, Some("reload"), format!("App [{}] reloading: starting its replacement", self.tag()));
            self.rolling_reload(reason, self.now, fx);
        }
    }

    fn on_ready(&mut self, how: Ready, fx: &mut Vec<Effect>) {
        let State::Launching { pid, started } = self.state else { return };
        let wait_ready = self.app.wait_ready;
        let accepted = match &how {
            Ready::Listening(..) => self.cluster && !wait_ready,
            Ready::Message => !self.cluster || wait_ready,
            Ready::Notify => true,
        };
        if !accepted {
            return;
        }
        let said = match how {
            Ready::Message => "ready".to_string(),
            // A Unix socket has no port: its path is the address.
            Ready::Listening(0, Some(path)) => format!("listening on {path}"),
            Ready::Listening(port, _) => format!("listening on {port}"),
            Ready::Notify => "READY=1".to_string(),
        };
        self.state = State::Online { pid, started };
        fx.push(Effect::Disarm(Timer::Listen));
        self.report(Status::Online, Some(pid), fx);
        Self::log(fx, Level::Info, Some("online"), format!("App [{}] online ({said})", self.tag()));
        // It says it listens: a readiness probe not yet passed runs now (once initial_delay is
        // over) instead of a period after its last try, which was most likely refused, so that a
        // gated worker takes traffic as soon as it can.
        if let Some(p) = &self.app.readiness_probe
            && !self.probes.ready
        {
            fx.push(Effect::Arm(Timer::Probe(ProbeKind::Readiness), (started + p.initial_delay).max(self.now)));
        }
        self.retire_when_ready(fx);
    }

    fn on_timer(&mut self, t: Timer, now: Instant, fx: &mut Vec<Effect>) {
        match (t, self.retiring) {
            (Timer::RetireSignal, Some((pid, Retire::Disconnecting))) => {
                self.retiring = Some((pid, Retire::Signalled));
                fx.push(Effect::RetireTerminate { signal: self.app.kill_signal.get(), message: self.app.shutdown_with_message });
                return;
            }
            (Timer::RetireKill, Some((pid, Retire::Disconnecting | Retire::Signalled))) => {
                Self::log(
                    fx,
                    Level::Warn,
                    None,
                    format!("Process with pid {pid} still alive after {}ms, sending SIGKILL", self.app.kill_timeout.as_millis()),
                );
                fx.push(Effect::RetireKill);
                self.retiring = Some((pid, Retire::Killed));
                return;
            }
            _ => {}
        }
        match (t, self.state.clone()) {
            (Timer::Respawn, State::Starved) => {
                self.state = State::Starting;
                fx.push(Effect::Spawn);
            }
            (Timer::Listen, State::Launching { pid, started }) => {
                self.state = State::Online { pid, started };
                self.report(Status::Online, Some(pid), fx);
                let what = if self.app.wait_ready { "send 'ready'" } else { "listen" };
                Self::log(
                    fx,
                    Level::Warn,
                    Some("online"),
                    format!(
                        "App [{}] did not {what} within listen_timeout ({}ms); considered online",
                        self.tag(),
                        self.app.listen_timeout.as_millis()
                    ),
                );
                self.retire_when_ready(fx);
            }
            (Timer::Cron, State::Launching { pid, .. } | State::Online { pid, .. }) => {
                Self::log(fx, Level::Info, Some("restart"), format!("App [{}] restarted by cron_restart", self.tag()));
                self.begin_stop(pid, Then::Restart(RestartReason::Cron), now, fx);
            }
            (Timer::Cron, State::Parked { .. }) => {
                Self::log(fx, Level::Info, Some("restart"), format!("App [{}] started by cron_restart", self.tag()));
                self.restart(RestartReason::Cron, true, now, fx);
            }
            (Timer::Restart, State::Waiting) => self.restart(RestartReason::Crash, false, now, fx),
            (Timer::Probe(kind), State::Launching { .. } | State::Online { .. }) => fx.push(Effect::Probe(kind)),
            (Timer::Watchdog, State::Launching { pid, .. } | State::Online { pid, .. }) => self.on_watchdog(pid, now, fx),
            (Timer::Grace, State::Grace { delay }) => self.decide_restart(delay, now, fx),
            (Timer::BackoffReset, State::Launching { pid, .. } | State::Online { pid, .. }) if self.hist.prev_backoff.is_some() => {
                self.hist.prev_backoff = None;
                let status = if matches!(self.state, State::Online { .. }) { Status::Online } else { Status::Launching };
                self.report(status, Some(pid), fx);
            }
            (Timer::Signal, State::Stopping { pid, then, phase: StopPhase::Disconnecting }) => {
                self.state = State::Stopping { pid, then, phase: StopPhase::Signalled };
                fx.push(self.terminate_effect());
            }
            (Timer::Kill, State::Stopping { pid, then, phase }) => match phase {
                StopPhase::Draining(exit) => {
                    fx.push(Effect::Kill);
                    fx.push(Effect::Disarm(Timer::Leftovers));
                    self.finish_stop(then, exit, now, fx);
                }
                _ => {
                    Self::log(
                        fx,
                        Level::Warn,
                        None,
                        format!("Process with pid {pid} still alive after {}ms, sending SIGKILL", self.app.kill_timeout.as_millis()),
                    );
                    fx.push(Effect::Kill);
                    self.state = State::Stopping { pid, then, phase: StopPhase::Killed };
                }
            },
            // A timer of another state (disarmed too late): nothing to do.
            _ => {}
        }
    }

    fn terminate_effect(&self) -> Effect {
        Effect::Terminate { signal: self.app.kill_signal.get(), message: self.app.shutdown_with_message }
    }

    /// PM2's kill algorithm with one budget: cluster workers first get Node's graceful
    /// `disconnect` and half of `kill_timeout`, then the kill signal (or `shutdown` message);
    /// SIGKILL to whatever is left `kill_timeout` after the stop began.
    fn begin_stop(&mut self, pid: u32, then: Then, now: Instant, fx: &mut Vec<Effect>) {
        self.report(Status::Stopping, Some(pid), fx);
        Self::log(fx, Level::Info, Some("stopping"), format!("Stopping app:{} id:{}", self.app.name, self.pm_id));
        fx.push(Effect::Disarm(Timer::Listen));
        fx.push(Effect::Disarm(Timer::Cron));
        fx.push(Effect::Disarm(Timer::Probe(ProbeKind::Liveness)));
        fx.push(Effect::Disarm(Timer::Probe(ProbeKind::Readiness)));
        fx.push(Effect::Disarm(Timer::Watchdog));
        let kill_timeout = self.app.kill_timeout;
        let phase = if self.shutdown == Shutdown::Force {
            fx.push(Effect::Kill);
            StopPhase::Killed
        } else if self.cluster {
            fx.push(Effect::Disconnect);
            fx.push(Effect::Arm(Timer::Signal, now + kill_timeout / 2));
            StopPhase::Disconnecting
        } else {
            fx.push(self.terminate_effect());
            StopPhase::Signalled
        };
        fx.push(Effect::Arm(Timer::Kill, now + kill_timeout));
        self.state = State::Stopping { pid, then, phase };
    }

    /// A restart for memory, saying `why`: in cluster mode a rolling reload, so the port keeps
    /// answering.
    fn restart_for_memory(&mut self, pid: u32, online: bool, why: String, now: Instant, fx: &mut Vec<Effect>) {
        Self::log(fx, Level::Warn, Some("restart"), why);
        if (self.cluster || self.rolling) && online {
            self.rolling_reload(RestartReason::Memory, now, fx);
        } else {
            self.begin_stop(pid, Then::Restart(RestartReason::Memory), now, fx);
        }
    }

    /// A rolling reload: the running worker is kept until its replacement is online.
    fn rolling_reload(&mut self, reason: RestartReason, now: Instant, fx: &mut Vec<Effect>) {
        let (State::Launching { pid, .. } | State::Online { pid, .. }) = self.state else { return };
        if self.retiring.is_some() {
            // One retirement at a time: this reload follows once the previous process is gone.
            Self::log(fx, Level::Info, None, format!("App [{}] reload queued: its previous process is still retiring", self.tag()));
            self.pending_reload = Some(reason);
            return;
        }
        fx.push(Effect::Disarm(Timer::Listen));
        fx.push(Effect::Disarm(Timer::Cron));
        let why = ExitReason::retired(reason);
        fx.push(Effect::HandOver(why));
        self.retiring = Some((pid, Retire::Waiting));
        self.retire_reason = Some(why);
        self.restart(reason, true, now, fx);
    }

    fn on_exit(&mut self, exit: Exit, leftovers: bool, oom: Option<bool>, now: Instant, fx: &mut Vec<Effect>) {
        match self.state.clone() {
            State::Launching { started, .. } | State::Online { started, .. } => {
                let reason = ExitReason::unasked(exit, oom);
                self.exit_reason = Some(reason);
                fx.push(Effect::Died { exit, reason });
                fx.push(Effect::Disarm(Timer::Listen));
                fx.push(Effect::Disarm(Timer::Cron));
                // The replacement died before it was ready: the old one is retired all the same.
                self.retire_if_any(fx);
                self.after_exit(exit, started, now, fx);
            }
            State::Stopping { pid, then, phase } => {
                if matches!(phase, StopPhase::Draining(_)) {
                    return;
                }
                let reason = ExitReason::asked(
                    match then {
                        Then::Restart(r) => Some(r),
                        _ => None,
                    },
                    phase == StopPhase::Killed,
                    exit,
                    oom,
                );
                self.exit_reason = Some(reason);
                fx.push(Effect::Died { exit, reason });
                fx.push(Effect::Disarm(Timer::Signal));
                if leftovers && phase != StopPhase::Killed {
                    self.state = State::Stopping { pid, then, phase: StopPhase::Draining(exit) };
                    fx.push(Effect::Arm(Timer::Leftovers, now + self.app.kill_retry_time.min(LEFTOVER_POLL)));
                } else {
                    if leftovers {
                        fx.push(Effect::Kill);
                    }
                    fx.push(Effect::Disarm(Timer::Kill));
                    self.finish_stop(then, exit, now, fx);
                }
            }
            _ => {}
        }
    }

    /// A stop on request is over.
    fn finish_stop(&mut self, then: Then, exit: Exit, now: Instant, fx: &mut Vec<Effect>) {
        // Its reason was given when it exited (`on_exit`).
        self.last_exit = Some(exit);
        match then {
            Then::Restart(reason) => self.restart(reason, true, now, fx),
            Then::Park => self.park(Status::Stopped, true, fx),
            Then::Delete | Then::Shutdown => self.end(fx),
        }
    }

    /// The process exited by itself (or could not start): PM2's restart policy decides.
    fn after_exit(&mut self, exit: Exit, started: Instant, now: Instant, fx: &mut Vec<Effect>) {
        // Its reason was given when it exited (`on_exit`), or when it could not start.
        self.last_exit = Some(exit);
        let shutting = self.shutting();
        let decision = policy::on_exit(&self.policy(), &mut self.hist, exit, started, now, shutting);
        // An exit that looks requested (code 0, SIGTERM, SIGINT) may be the first half of a
        // platform-wide stop (Heroku, `docker kill`: TERM to every process at once): give the
        // runtime's own stop signal a moment to arrive before restarting. Crashes restart at once.
        if let Decision::Restart(delay) = decision
            && delay < STOP_GRACE
            && matches!(exit, Exit::Code(0) | Exit::Signal(libc::SIGTERM) | Exit::Signal(libc::SIGINT))
        {
            self.state = State::Grace { delay };
            fx.push(Effect::Arm(Timer::Grace, now + (STOP_GRACE - delay)));
            return;
        }
        self.apply(decision, now, fx);
    }

    fn decide_restart(&mut self, delay: Duration, now: Instant, fx: &mut Vec<Effect>) {
        if self.shutting() {
            self.apply(Decision::Stop, now, fx);
        } else {
            self.apply(Decision::Restart(delay), now, fx);
        }
    }

    fn apply(&mut self, decision: Decision, now: Instant, fx: &mut Vec<Effect>) {
        match decision {
            Decision::Stop => self.park(Status::Stopped, false, fx),
            Decision::Errored => {
                Self::log(
                    fx,
                    Level::Error,
                    Some("errored"),
                    format!(
                        "Script {} had too many unstable restarts ({}). Stopped. \"errored\"",
                        self.app.exec_path.display(),
                        self.app.max_restarts
                    ),
                );
                self.park(Status::Errored, false, fx);
            }
            Decision::Restart(delay) if delay.is_zero() => self.restart(RestartReason::Crash, false, now, fx),
            Decision::Restart(delay) => {
                Self::log(
                    fx,
                    Level::Info,
                    Some("waiting restart"),
                    format!("App [{}] will restart in {}ms", self.tag(), delay.as_millis()),
                );
                self.report(Status::WaitingRestart, None, fx);
                self.state = State::Waiting;
                fx.push(Effect::Arm(Timer::Restart, now + delay));
            }
        }
    }

    /// Stopped or errored: reported, then waits for `start`/`restart` or the next cron fire.
    fn park(&mut self, status: Status, manual: bool, fx: &mut Vec<Effect>) {
        let scheduled = !self.shutting() && self.has_cron();
        fx.push(Effect::Report(Report { scheduled, manual, ..self.status_report(status, None) }));
        if self.shutting() {
            return self.end(fx);
        }
        self.state = State::Parked { status, manual };
        if scheduled {
            fx.push(Effect::ArmCron);
        }
    }

    fn end(&mut self, fx: &mut Vec<Effect>) {
        for t in [
            Timer::Kill,
            Timer::Signal,
            Timer::Leftovers,
            Timer::Restart,
            Timer::Listen,
            Timer::Cron,
            Timer::Grace,
            Timer::BackoffReset,
            Timer::Probe(ProbeKind::Liveness),
            Timer::Probe(ProbeKind::Readiness),
            Timer::Watchdog,
            Timer::Respawn,
        ] {
            fx.push(Effect::Disarm(t));
        }
        self.retire_if_any(fx);
        self.pending_reload = None;
        fx.push(Effect::Report(Report { manual: true, gone: true, ..self.status_report(Status::Stopped, None) }));
        // The task ends once the process it retires is gone too (see `on_retire_exit`).
        if self.retiring.is_none() {
            fx.push(Effect::End);
        }
        self.state = State::Gone;
    }

    fn on_shutdown(&mut self, level: Shutdown, now: Instant, fx: &mut Vec<Effect>) {
        if level <= self.shutdown {
            return;
        }
        self.shutdown = level;
        // A process on its way out after a reload stops now, with its own grace (or is killed).
        match self.retiring {
            Some((_, Retire::Waiting)) => self.retire_if_any(fx),
            Some((pid, Retire::Disconnecting | Retire::Signalled)) if level == Shutdown::Force => {
                fx.push(Effect::RetireKill);
                self.retiring = Some((pid, Retire::Killed));
            }
            _ => {}
        }
        match self.state.clone() {
            State::Launching { pid, .. } | State::Online { pid, .. } => self.begin_stop(pid, Then::Shutdown, now, fx),
            State::Stopping { pid, then, phase } => {
                let then = if then == Then::Delete { Then::Delete } else { Then::Shutdown };
                let phase = if level == Shutdown::Force && phase != StopPhase::Killed && !matches!(phase, StopPhase::Draining(_)) {
                    fx.push(Effect::Kill);
                    StopPhase::Killed
                } else {
                    if level == Shutdown::Force {
                        fx.push(Effect::Kill);
                    }
                    phase
                };
                self.state = State::Stopping { pid, then, phase };
            }
            State::Parked { .. } | State::Waiting | State::Grace { .. } | State::New | State::Starved => {
                if let State::Grace { .. } = self.state {
                    fx.push(Effect::Disarm(Timer::Grace));
                    // The exit was the first half of a platform-wide stop: stopped, not restarted.
                    self.park(Status::Stopped, false, fx);
                    return;
                }
                self.end(fx)
            }
            State::Starting | State::Gone => {}
        }
    }

    fn on_cmd(&mut self, cmd: Cmd, now: Instant, fx: &mut Vec<Effect>) {
        let tag = self.tag();
        match self.state.clone() {
            State::Launching { pid, .. } | State::Online { pid, .. } => {
                let online = matches!(self.state, State::Online { .. });
                match cmd {
                    Cmd::Replace(new) if (self.cluster || self.rolling) && online => {
                        Self::log(fx, Level::Info, Some("reload"), format!("App [{tag}] reloading with new settings"));
                        self.pending_app = Some(new);
                        self.rolling_reload(RestartReason::Manual, now, fx);
                    }
                    Cmd::Replace(new) => {
                        Self::log(fx, Level::Info, Some("restart"), format!("App [{tag}] restarting with new settings"));
                        self.pending_app = Some(new);
                        self.begin_stop(pid, Then::Restart(RestartReason::Manual), now, fx);
                    }
                    Cmd::Restart => {
                        Self::log(fx, Level::Info, Some("restart"), format!("App [{tag}] restarting"));
                        self.begin_stop(pid, Then::Restart(RestartReason::Manual), now, fx);
                    }
                    Cmd::Stop => self.begin_stop(pid, Then::Park, now, fx),
                    Cmd::Delete => self.begin_stop(pid, Then::Delete, now, fx),
                    Cmd::Start => {}
                    Cmd::Reload if (self.cluster || self.rolling) && online => {
                        Self::log(fx, Level::Info, Some("reload"), format!("App [{tag}] reloading: starting its replacement"));
                        self.rolling_reload(RestartReason::Reload, now, fx);
                    }
                    Cmd::Reload => {
                        Self::log(fx, Level::Info, Some("restart"), format!("App [{tag}] restarting (fork mode: reload = restart)"));
                        self.begin_stop(pid, Then::Restart(RestartReason::Reload), now, fx);
                    }
                    Cmd::Reset => {
                        self.restart_time = 0;
                        if online {
                            self.report(Status::Online, Some(pid), fx);
                        }
                    }
                    Cmd::Signal(sig) => fx.push(Effect::Signal(sig)),
                    Cmd::Send(msg) => fx.push(Effect::Send(msg)),
                    Cmd::OverMemory { pid: sampled, .. } | Cmd::ContainerMemory { pid: sampled, .. } if sampled != pid => {}
                    Cmd::ContainerMemory { used, limit, .. } => {
                        let why = format!(
                            "App [{tag}] restarted to keep the container under its memory limit (container_memory={used} limit={limit} [octets])"
                        );
                        self.restart_for_memory(pid, online, why, now, fx);
                    }
                    Cmd::OverMemory { rss, limit, .. } => {
                        let why = format!(
                            "App [{tag}] restarted because it exceeds max_memory_restart (current_memory={rss} max_memory_limit={limit} [octets])"
                        );
                        self.restart_for_memory(pid, online, why, now, fx);
                    }
                }
            }
            State::Stopping { pid, then, phase } => {
                // Answered at once: the stop goes on, only what follows it changes.
                let ends = matches!(then, Then::Delete | Then::Shutdown);
                let then = match cmd {
                    Cmd::Delete => Then::Delete,
                    Cmd::Stop if !ends => Then::Park,
                    Cmd::Restart | Cmd::Start if !ends => Then::Restart(RestartReason::Manual),
                    Cmd::Reload if !ends => Then::Restart(RestartReason::Reload),
                    Cmd::Replace(new) => {
                        self.pending_app = Some(new);
                        if ends { then } else { Then::Restart(RestartReason::Manual) }
                    }
                    Cmd::Reset => {
                        self.restart_time = 0;
                        then
                    }
                    Cmd::Signal(sig) => {
                        fx.push(Effect::Signal(sig));
                        then
                    }
                    Cmd::Send(msg) => {
                        fx.push(Effect::Send(msg));
                        then
                    }
                    _ => then,
                };
                self.state = State::Stopping { pid, then, phase };
            }
            State::Parked { status, manual } => match cmd {
                Cmd::Restart | Cmd::Start | Cmd::Reload => self.start_again(now, fx),
                Cmd::Replace(new) => {
                    self.pending_app = Some(new);
                    self.start_again(now, fx);
                }
                Cmd::Delete => self.end(fx),
                Cmd::Stop => {
                    if !manual {
                        self.park(status, true, fx);
                    }
                }
                Cmd::Reset => {
                    self.restart_time = 0;
                    self.park(status, manual, fx);
                }
                Cmd::Signal(_) | Cmd::Send(_) | Cmd::OverMemory { .. } | Cmd::ContainerMemory { .. } => {}
            },
            State::Waiting | State::Grace { .. } => match cmd {
                Cmd::Restart | Cmd::Start | Cmd::Reload | Cmd::Replace(_) => {
                    if let Cmd::Replace(new) = cmd {
                        self.pending_app = Some(new);
                    }
                    fx.push(Effect::Disarm(Timer::Restart));
                    fx.push(Effect::Disarm(Timer::Grace));
                    self.restart(RestartReason::Manual, false, now, fx);
                }
                Cmd::Stop => {
                    fx.push(Effect::Disarm(Timer::Restart));
                    fx.push(Effect::Disarm(Timer::Grace));
                    self.hist = History::new(now);
                    self.park(Status::Stopped, true, fx);
                }
                Cmd::Delete => self.end(fx),
                Cmd::Reset => self.restart_time = 0,
                Cmd::Signal(_) | Cmd::Send(_) | Cmd::OverMemory { .. } | Cmd::ContainerMemory { .. } => {}
            },
            // Out of resources between two tries: answered like a restart delay.
            State::Starved => match cmd {
                Cmd::Restart | Cmd::Start | Cmd::Reload | Cmd::Replace(_) => {
                    if let Cmd::Replace(new) = cmd {
                        self.app = new;
                    }
                    fx.push(Effect::Disarm(Timer::Respawn));
                    self.state = State::Starting;
                    fx.push(Effect::Spawn);
                }
                Cmd::Stop => {
                    fx.push(Effect::Disarm(Timer::Respawn));
                    self.starved = 0;
                    self.retire_if_any(fx);
                    self.park(Status::Stopped, true, fx);
                }
                Cmd::Delete => self.end(fx),
                Cmd::Reset => self.restart_time = 0,
                Cmd::Signal(_) | Cmd::Send(_) | Cmd::OverMemory { .. } | Cmd::ContainerMemory { .. } => {}
            },
            State::New | State::Starting => match cmd {
                // Before the process exists: only what changes no process.
                Cmd::Reset => self.restart_time = 0,
                Cmd::Replace(new) => self.pending_app = Some(new),
                Cmd::Delete if self.state == State::New => self.end(fx),
                _ => {}
            },
            State::Gone => {}
        }
    }

    /// `start`/`restart` of a parked instance (stopped on request, finished, or errored). PM2
    /// counts restarts of a running process, not a start after a stop: neither `restart_time`
    /// nor a restart reason moves.
    fn start_again(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        fx.push(Effect::Disarm(Timer::Cron));
        self.hist = History::new(now);
        self.next_reason = None;
        self.start(now, fx);
    }
}

#[cfg(test)]
mod tests;
