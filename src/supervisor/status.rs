//! The status table: the one view of the runtime that every reader shares.
//!
//! Owner: the coordinator (`supervisor/mod.rs`) builds the table from the instances' updates and
//! the sampler's numbers, and publishes it whole through a `watch` channel after every change.
//! Readers (`ls`/`jlist`/`show`, `monit`, the HTTP API and `/metrics`, the PM2 Plus link) hold a
//! [`StatusFeed`] and read the latest `Arc<StatusTable>`: they never block supervision, and a
//! slow reader only loses its own freshness.
//!
//! Must never: hold anything secret that readers could leak by accident beyond the `App`
//! settings themselves (readers that leave the machine — HTTP, PM2 Plus — must not serialise
//! `app.env`; see each reader).
//!
//! Events that must not be missed between two snapshots (status transitions, app IPC messages)
//! go on the [`Bus`] as well.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::sync::{broadcast, watch};

use crate::config::App;
use crate::process::Exit;

// ---- The vocabulary: statuses, restart and exit reasons, one instance's report. ----

/// Status names are PM2's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Launching,
    Online,
    Stopping,
    Stopped,
    Errored,
    WaitingRestart,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Launching => "launching",
            Status::Online => "online",
            Status::Stopping => "stopping",
            Status::Stopped => "stopped",
            Status::Errored => "errored",
            Status::WaitingRestart => "waiting restart",
        }
    }

    /// Whether the instance can still run without anyone asking: the runtime stays up for it.
    /// Unlike PM2, `waiting restart` counts as alive (spec §8 #3).
    pub fn is_alive(self) -> bool {
        matches!(self, Status::Launching | Status::Online | Status::Stopping | Status::WaitingRestart)
    }
}

/// Why an instance was started again (`pm_runtime_app_restarts_total{reason}`). New reasons
/// (a container-memory recycle, a failed probe, a watchdog) are added here and to [`Self::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RestartReason {
    /// The process exited by itself and the restart policy started it again.
    Crash,
    /// `max_memory_restart` was crossed.
    Memory,
    /// `cron_restart` fired.
    Cron,
    /// A watched file changed.
    Watch,
    /// `restart`, `startOrRestart`… of a running instance: someone asked (a start after a stop
    /// is not a restart, as in PM2).
    Manual,
    /// A reload (SIGHUP, `reload`, `startOrReload`).
    Reload,
    /// The liveness probe failed `failure_threshold` times in a row.
    Probe,
    /// The heartbeat stopped for `watchdog` ms (a blocked event loop).
    Watchdog,
}

impl RestartReason {
    pub const ALL: [RestartReason; 8] = [
        RestartReason::Crash,
        RestartReason::Memory,
        RestartReason::Cron,
        RestartReason::Watch,
        RestartReason::Manual,
        RestartReason::Reload,
        RestartReason::Probe,
        RestartReason::Watchdog,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RestartReason::Crash => "crash",
            RestartReason::Memory => "memory",
            RestartReason::Cron => "cron",
            RestartReason::Watch => "watch",
            RestartReason::Manual => "manual",
            RestartReason::Reload => "reload",
            RestartReason::Probe => "probe",
            RestartReason::Watchdog => "watchdog",
        }
    }
}

/// Why a process ended: the death certificate's `reason` (`jlist` `last_exit.reason`,
/// `pm_runtime_app_last_exit_reason{reason}`). New reasons (a probe) are added here and to
/// [`Self::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitReason {
    /// It exited by itself with a code.
    Exit,
    /// A signal the runtime did not send (and not the OOM killer's) ended it.
    Signal,
    /// The runtime stopped it on request (stop, restart, reload, delete, scale, its own stop).
    Stopped,
    /// The runtime restarted it for memory: `max_memory_restart`, or the container near its limit.
    MemoryLimit,
    /// The kernel's OOM killer: a SIGKILL the runtime did not send while the cgroup's
    /// `oom_kill` count grew (or, where the count cannot be read, any SIGKILL it did not send).
    OomKilled,
    /// The runtime restarted it because its liveness probe failed.
    Probe,
    /// The hang watchdog restarted it (its heartbeat stopped).
    Watchdog,
}

impl ExitReason {
    pub const ALL: [ExitReason; 7] = [
        ExitReason::Exit,
        ExitReason::Signal,
        ExitReason::Stopped,
        ExitReason::MemoryLimit,
        ExitReason::OomKilled,
        ExitReason::Probe,
        ExitReason::Watchdog,
    ];

    /// The reason of an exit the runtime did not ask for: `oom` says whether the cgroup's
    /// OOM-kill count grew while the process ran (`None`: unknown).
    pub fn unasked(exit: Exit, oom: Option<bool>) -> Self {
        match exit {
            Exit::Signal(libc::SIGKILL) if oom != Some(false) => ExitReason::OomKilled,
            Exit::Signal(_) => ExitReason::Signal,
            Exit::Code(_) => ExitReason::Exit,
        }
    }

    /// The reason of an exit during a stop the runtime began, to restart for `restart` (`None`:
    /// a stop, delete or shutdown); `killed`: the runtime sent SIGKILL itself.
    pub fn asked(restart: Option<RestartReason>, killed: bool, exit: Exit, oom: Option<bool>) -> Self {
        if oom == Some(true) && exit == Exit::Signal(libc::SIGKILL) && !killed {
            ExitReason::OomKilled
        } else {
            restart.map_or(ExitReason::Stopped, ExitReason::retired)
        }
    }

    /// A process stopped (or handed over in a rolling reload) to restart for `reason`.
    pub fn retired(reason: RestartReason) -> Self {
        match reason {
            RestartReason::Memory => ExitReason::MemoryLimit,
            RestartReason::Probe => ExitReason::Probe,
            RestartReason::Watchdog => ExitReason::Watchdog,
            _ => ExitReason::Stopped,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExitReason::Exit => "exit",
            ExitReason::Signal => "signal",
            ExitReason::Stopped => "stopped",
            ExitReason::MemoryLimit => "memory_limit",
            ExitReason::OomKilled => "oom_killed",
            ExitReason::Probe => "probe",
            ExitReason::Watchdog => "watchdog",
        }
    }
}

/// How many of its last stderr lines a death certificate keeps.
pub const DEATH_STDERR_LINES: usize = 5;

/// A death certificate: how and why one process of an instance ended. One log line per exit
/// ([`Death::line`]), `jlist`'s `last_exit` ([`Death::json`]), `_last_exit_reason{reason}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Death {
    pub pid: u32,
    pub exit: Exit,
    pub reason: ExitReason,
    /// How long the process ran.
    pub uptime: Duration,
    pub at: SystemTime,
    /// The last lines (at most [`DEATH_STDERR_LINES`]) the process wrote to stderr, oldest first.
    pub stderr: Vec<String>,
}

impl Death {
    /// The exit line: PM2's `App [name:id] exited with code [c] via signal [s]`, then the
    /// certificate (reason, pid, uptime, last stderr lines, each quoted as JSON strings).
    pub fn line(&self, name: &str, pm_id: u32) -> String {
        let mut s = format!(
            "{}: reason={} pid={} uptime={:.1}s",
            exit_line(name, pm_id, self.exit),
            self.reason.as_str(),
            self.pid,
            self.uptime.as_secs_f64()
        );
        if !self.stderr.is_empty() {
            s.push_str(" last_stderr=");
            s.push_str(&Value::from(self.stderr.clone()).to_string());
        }
        s
    }

    /// `jlist`'s `last_exit` (and the `exit` field of the line in `--json` output).
    pub fn json(&self) -> Value {
        let (code, signal) = match self.exit {
            Exit::Code(c) => (Value::from(c), Value::Null),
            Exit::Signal(s) => (Value::Null, Value::from(signal_name(s))),
        };
        serde_json::json!({
            "reason": self.reason.as_str(),
            "code": code,
            "signal": signal,
            "pid": self.pid,
            "uptime_ms": self.uptime.as_millis() as u64,
            "at": self.at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u64,
            "stderr": self.stderr,
        })
    }
}

/// The status of one instance: what its machine last said, the one shape every reader sees
/// (in the table, on the bus).
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub status: Status,
    pub pid: Option<u32>,
    pub last_exit: Option<Exit>,
    /// Why the last process ended (with `last_exit`).
    pub exit_reason: Option<ExitReason>,
    pub restart_time: u32,
    /// Stopped (or errored) but `cron_restart` will start it again.
    pub scheduled: bool,
    /// Stopped on request.
    pub manual: bool,
    /// This report starts the instance again, for this reason.
    pub reason: Option<RestartReason>,
    pub gone: bool,
    /// The delay of the last restart with `exp_backoff_restart_delay` (PM2's
    /// `prev_restart_delay`); zero when none.
    pub prev_restart_delay: Duration,
    /// Online and, with a readiness probe, passing it.
    pub ready: bool,
    /// The state of its probes (those the app has) for the running process.
    pub probes: ProbeViews,
}

/// What `jlist`, the API and the dashboard show of one probe of the running process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeView {
    /// Whether its last check passed; `None` before the first one finished (pending).
    pub passing: Option<bool>,
    /// Checks failed in a row.
    pub failures: u32,
    /// Why its last failed check failed (never an env value).
    pub last_failure: Option<Arc<str>>,
}

impl ProbeView {
    pub fn state(&self) -> &'static str {
        match self.passing {
            None => "pending",
            Some(true) => "passing",
            Some(false) => "failing",
        }
    }

    /// `{state, failures, last_failure}` (pm-runtime's own key in `pm2_env.probes`).
    pub fn json(&self) -> Value {
        serde_json::json!({"state": self.state(), "failures": self.failures, "last_failure": self.last_failure.as_deref()})
    }
}

/// The probes an app has, each with its [`ProbeView`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeViews {
    pub liveness: Option<ProbeView>,
    pub readiness: Option<ProbeView>,
}

impl ProbeViews {
    /// Every probe the app has, pending.
    pub fn pending(app: &App) -> ProbeViews {
        ProbeViews {
            liveness: app.liveness_probe.as_ref().map(|_| ProbeView::default()),
            readiness: app.readiness_probe.as_ref().map(|_| ProbeView::default()),
        }
    }

    /// `{liveness: …, readiness: …}` with the probes the app has; `None` without any.
    pub fn json(&self) -> Option<Value> {
        let mut o = serde_json::Map::new();
        for (k, v) in [("liveness", &self.liveness), ("readiness", &self.readiness)] {
            if let Some(v) = v {
                o.insert(k.into(), v.json());
            }
        }
        (!o.is_empty()).then_some(Value::Object(o))
    }
}

impl Report {
    /// A report of `status` with nothing else known.
    pub fn of(status: Status) -> Report {
        Report {
            status,
            pid: None,
            last_exit: None,
            exit_reason: None,
            restart_time: 0,
            scheduled: false,
            manual: false,
            reason: None,
            gone: false,
            prev_restart_delay: Duration::ZERO,
            // Online without a readiness probe is ready.
            ready: status == Status::Online,
            probes: ProbeViews::default(),
        }
    }
}

/// A report as it reaches the coordinator: whose it is, since when its process runs, and what
/// was read once when that process started.
#[derive(Debug, Clone)]
pub struct Update {
    pub pm_id: u32,
    /// When the current process started (for uptime), if running.
    pub since: Option<SystemTime>,
    /// `version` of the app's package.json when this process started.
    pub version: Option<Arc<str>>,
    pub report: Report,
    /// The death certificate of the instance's last process.
    pub death: Option<Arc<Death>>,
}

impl std::ops::Deref for Update {
    type Target = Report;
    fn deref(&self) -> &Report {
        &self.report
    }
}

/// Restarts of one instance since it was created, by reason. Unlike PM2's `restart_time`
/// (which `reset` sets back to 0), these only ever grow: they are Prometheus counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestartCounts([u64; RestartReason::ALL.len()]);

impl RestartCounts {
    pub fn add(&mut self, reason: RestartReason) {
        self.0[reason as usize] += 1;
    }

    pub fn get(&self, reason: RestartReason) -> u64 {
        self.0[reason as usize]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

// ---- The table. ----

/// Resource use of an instance's whole process tree, as the sampler last saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// Resident memory of the tree, bytes.
    pub memory_bytes: u64,
    /// CPU use over the last sampling period, percent of one core (can exceed 100).
    pub cpu_percent: f64,
    /// CPU time (user + system) of the processes of the tree now alive, seconds.
    pub cpu_seconds: f64,
}

/// One app instance (one pm_id).
#[derive(Debug, Clone)]
pub struct InstanceStatus {
    pub pm_id: u32,
    /// The instance's settings (shared with the app; replaced by `startOrRestart`).
    pub app: Arc<App>,
    /// `NODE_APP_INSTANCE` (or the app's `instance_var`).
    pub instance: u32,
    /// PM2's `unique_id`: a UUID per instance, kept across restarts.
    pub unique_id: String,
    /// The instance's last report; `None` until its task has reported (PM2 shows `launching`).
    pub last: Option<Update>,
    pub restarts: RestartCounts,
    pub created_at: SystemTime,
    pub sample: Sample,
    /// `@pm2/io` custom metrics (`axm:monitor`): display name → `{value, unit, type, historic}`.
    pub axm_monitor: Arc<serde_json::Map<String, Value>>,
    /// `@pm2/io` actions (`axm:action`), as the app declared them.
    pub axm_actions: Arc<Vec<Value>>,
    /// With `watchdog`: how late the last heartbeat timer fired in the app (event-loop lag), seconds.
    pub event_loop_lag: Option<f64>,
}

impl InstanceStatus {
    /// `None` until the instance task has reported (PM2 shows `launching`).
    pub fn status(&self) -> Option<Status> {
        self.last.as_ref().map(|u| u.status)
    }

    /// PM2's status name (`launching` before the first report).
    pub fn status_str(&self) -> &'static str {
        self.status().map_or("launching", Status::as_str)
    }

    pub fn pid(&self) -> Option<u32> {
        self.last.as_ref().and_then(|u| u.pid)
    }

    /// Online and ready: where the app signals readiness (listen, `ready`, READY=1), it did,
    /// and its readiness probe (if any) passes.
    pub fn ready(&self) -> bool {
        self.last.as_ref().is_some_and(|u| u.status == Status::Online && u.ready)
    }

    /// PM2's `restart_time` (↺), which `reset` sets back to 0.
    pub fn restart_time(&self) -> u32 {
        self.last.as_ref().map_or(0, |u| u.restart_time)
    }

    /// The delay of the last restart with `exp_backoff_restart_delay` (zero when none).
    pub fn prev_restart_delay(&self) -> Duration {
        self.last.as_ref().map_or(Duration::ZERO, |u| u.prev_restart_delay)
    }

    pub fn last_exit(&self) -> Option<Exit> {
        self.last.as_ref().and_then(|u| u.last_exit)
    }

    /// The death certificate of its last process.
    pub fn death(&self) -> Option<&Death> {
        self.last.as_ref().and_then(|u| u.death.as_deref())
    }

    /// Stopped on request (`stop`), not by its own doing.
    pub fn manual(&self) -> bool {
        self.last.as_ref().is_some_and(|u| u.manual)
    }

    /// Stopped but `cron_restart` will start it again.
    pub fn scheduled(&self) -> bool {
        self.last.as_ref().is_some_and(|u| u.scheduled)
    }

    /// When the current process started (`pm_uptime`), if running.
    pub fn started_at(&self) -> Option<SystemTime> {
        self.last.as_ref().and_then(|u| u.since)
    }

    /// `version` of the app's package.json when the current process started, else "N/A".
    pub fn version(&self) -> &str {
        self.last.as_ref().and_then(|u| u.version.as_deref()).unwrap_or("N/A")
    }
}

/// One app (one ecosystem entry).
#[derive(Debug, Clone)]
pub struct AppStatus {
    pub app: Arc<App>,
    /// How many instances the runtime keeps (after `scale`).
    pub desired: usize,
    /// Held by `depends_on` / roles: what the app waits for (`migrate (completed)`), or why it
    /// cannot start.
    pub waiting_on: Option<Arc<str>>,
}

/// Everything readers see, as of one moment.
#[derive(Debug, Clone, Default)]
pub struct StatusTable {
    /// Ordered by pm_id.
    pub instances: Vec<InstanceStatus>,
    pub apps: Vec<AppStatus>,
    /// A stop signal arrived: the runtime is going down (readiness is over).
    pub stopping: bool,
    /// When the sampler last read /proc (`None`: never yet).
    pub sampled_at: Option<SystemTime>,
    /// The container's cgroup limits and usage, as of the last sample (`None`: no cgroup found).
    pub container: Option<Container>,
}

impl StatusTable {
    pub fn instance(&self, pm_id: u32) -> Option<&InstanceStatus> {
        self.instances.binary_search_by_key(&pm_id, |i| i.pm_id).ok().map(|i| &self.instances[i])
    }
}

/// A reader's handle on the table.
pub type StatusFeed = watch::Receiver<Arc<StatusTable>>;

/// The table's channel: the sender for the coordinator, a first receiver for the readers.
pub fn channel() -> (watch::Sender<Arc<StatusTable>>, StatusFeed) {
    watch::channel(Arc::new(StatusTable::default()))
}

/// Something that happened, for readers that must see every occurrence (a snapshot can skip
/// an `online → stopping → online` that happens between two looks).
#[derive(Debug, Clone)]
pub enum BusEvent {
    /// An instance reported a status.
    Status { pm_id: u32, name: String, report: Report },
    /// An app sent a message on its Node IPC channel (`process.send(msg)`), other than Node's
    /// own cluster messages and `'ready'`: `@pm2/io`'s `axm:*`, prom-client's replies…
    AppMessage { pm_id: u32, name: String, message: Arc<Value> },
}

/// Events fan out to any number of readers; none are kept when nobody listens. A reader that
/// falls more than [`BUS_CAPACITY`] events behind loses the oldest (it sees `Lagged`).
#[derive(Debug, Clone)]
pub struct Bus {
    tx: broadcast::Sender<BusEvent>,
}

pub const BUS_CAPACITY: usize = 1024;

impl Default for Bus {
    fn default() -> Self {
        Bus { tx: broadcast::channel(BUS_CAPACITY).0 }
    }
}

impl Bus {
    pub fn subscribe(&self) -> broadcast::Receiver<BusEvent> {
        self.tx.subscribe()
    }

    /// Whether anyone listens (so senders can skip building events nobody reads).
    pub fn has_readers(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    pub fn publish(&self, ev: BusEvent) {
        if self.has_readers() {
            let _ = self.tx.send(ev);
        }
    }
}

/// PM2's exit line: `App [name:id] exited with code [c] via signal [s]`.
pub fn exit_line(name: &str, pm_id: u32, exit: Exit) -> String {
    let (code, signal) = match exit {
        Exit::Code(c) => (c.to_string(), "none".to_string()),
        Exit::Signal(s) => ("null".to_string(), signal_name(s)),
    };
    format!("App [{name}:{pm_id}] exited with code [{code}] via signal [{signal}]")
}

/// A signal's name (`SIGKILL`), or its number when it has none.
pub fn signal_name(s: i32) -> String {
    nix::sys::signal::Signal::try_from(s).map(|s| s.as_str().to_string()).unwrap_or_else(|_| s.to_string())
}

/// The container as of the last reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Container {
    pub version: crate::process::cgroup::Version,
    pub limits: crate::process::cgroup::Limits,
    pub usage: Option<crate::process::cgroup::Usage>,
    /// Processes the OOM killer has killed in the cgroup so far.
    pub oom_kills: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_counts_by_reason() {
        let mut c = RestartCounts::default();
        c.add(RestartReason::Crash);
        c.add(RestartReason::Crash);
        c.add(RestartReason::Memory);
        assert_eq!(c.get(RestartReason::Crash), 2);
        assert_eq!(c.get(RestartReason::Memory), 1);
        assert_eq!(c.get(RestartReason::Reload), 0);
        assert_eq!(c.total(), 3);
        let names: Vec<_> = RestartReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names, ["crash", "memory", "cron", "watch", "manual", "reload", "probe", "watchdog"]);
    }

    #[test]
    fn bus_keeps_nothing_without_readers() {
        let bus = Bus::default();
        assert!(!bus.has_readers());
        bus.publish(BusEvent::AppMessage { pm_id: 0, name: "a".into(), message: Arc::new(Value::Null) });
        let mut rx = bus.subscribe();
        assert!(rx.try_recv().is_err());
        bus.publish(BusEvent::AppMessage { pm_id: 1, name: "b".into(), message: Arc::new(Value::Null) });
        assert!(matches!(rx.try_recv(), Ok(BusEvent::AppMessage { pm_id: 1, .. })));
    }
}
