//! One app instance: a task that owns its process, its status and its restart history.
//!
//! The task is the only owner of that state. The coordinator talks to it through its inbox
//! ([`Cmd`]) and the shared shutdown level; the task reports every status change back as an
//! [`Update`]. Every timeout (`kill_timeout`, `listen_timeout`, restart delays) is a `select!`
//! against the child's exit and the inbox.

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot, watch};

use super::cron::Schedule;
use super::env::{self, InstanceFacts};
use super::policy::{self, Decision, History, Policy};
use super::status::RestartReason;
use crate::config::{App, Principal};
use crate::logs::LogHub;
use crate::process::{self, Exit, Reaper, SpawnSpec, tree, unix};

/// How long an exit that looks requested waits for the runtime's own stop signal.
const STOP_GRACE: Duration = Duration::from_millis(100);

/// How often `max_memory_restart` samples the instance's tree.
const MEMORY_SAMPLE: Duration = Duration::from_millis(500);

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
#[derive(Debug)]
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
}

/// A status change, reported to the coordinator.
#[derive(Debug, Clone)]
pub struct Update {
    pub pm_id: u32,
    pub status: Status,
    pub pid: Option<u32>,
    pub last_exit: Option<Exit>,
    pub restart_time: u32,
    /// Stopped (or errored) but `cron_restart` will start it again: still counts as alive.
    pub scheduled: bool,
    /// Stopped on request (`stop`), not by its own doing.
    pub manual: bool,
    /// When the current process started (for uptime), if running.
    pub since: Option<SystemTime>,
    /// The task has ended (deleted, or done for good).
    pub gone: bool,
    /// This update starts the instance again, for this reason (the coordinator counts it).
    pub reason: Option<RestartReason>,
}

/// Everything an instance task needs, given once at start.
pub struct Instance {
    pub app: Arc<App>,
    pub pm_id: u32,
    pub instance: u32,
    pub reaper: Reaper,
    pub logs: LogHub,
    pub inherited_env: Arc<Vec<(OsString, OsString)>>,
    pub pm2_home: String,
    pub updates: mpsc::UnboundedSender<Update>,
    pub shutdown: watch::Receiver<Shutdown>,
    pub inbox: mpsc::UnboundedReceiver<Cmd>,
    /// PM2's `restart_time` (↺): starts counted since the first; `reset` sets it back to 0.
    pub restart_time: u32,
    /// Cluster mode: the app's shared listening sockets (None in fork mode).
    pub listeners: Option<crate::cluster::Listeners>,
    /// `listen_fds`: the app's listening socket, passed as fd 3 to every process of it.
    pub listen_socket: Option<Arc<std::net::TcpListener>>,
    /// PM2's `unique_id` of this instance (given by the coordinator, kept across restarts).
    pub unique_id: String,
    /// Where the app's own IPC messages go (the coordinator: status table and bus).
    pub messages: AppMessages,
    /// This task replaces one that panicked: start at once, whatever `autostart` says.
    pub resumed: bool,
}

/// The sending side of the app-message channel: `(pm_id, message)`. Bounded; a message that
/// does not fit is dropped (a chatty app must not grow the runtime's memory).
pub type AppMessages = mpsc::Sender<(u32, serde_json::Value)>;

/// Our end of an instance's IPC channel.
enum Ipc {
    None,
    /// A Node child in fork mode: a task reads its messages; we may write `"shutdown"`.
    Plain(OwnedWriteHalf),
    /// A cluster worker: the protocol task owns the socket.
    Cluster(crate::cluster::WorkerChannel),
}

/// A process being replaced by a rolling reload: retired once its successor is online.
pub struct Retiring {
    pid: u32,
    exit: oneshot::Receiver<Exit>,
    ipc: Ipc,
}

/// The restart policy of an app.
fn policy_of(app: &App) -> Policy {
    Policy {
        autorestart: app.autorestart,
        stop_exit_codes: app.stop_exit_codes.clone(),
        min_uptime: app.min_uptime,
        max_restarts: app.max_restarts,
        restart_delay: app.restart_delay,
        exp_backoff_restart_delay: app.exp_backoff_restart_delay,
        backoff_reset: policy::backoff_reset_from(std::env::var("EXP_BACKOFF_RESET_TIMER").ok().as_deref()),
    }
}

/// `cron_restart` of the instance, if any.
fn schedule_of(app: &App) -> Option<Schedule> {
    let pattern = app.cron_restart.as_deref()?;
    match Schedule::parse(pattern) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(app = %app.name, "{e}; cron_restart is ignored");
            None
        }
    }
}

/// What ended one run of the process.
enum RunEnd {
    Exited(Exit, Instant),
    /// Stopped on request; carries the exit status and what comes next.
    Stopped(Exit, After),
    /// A rolling reload: the old process still runs and is handed to the next run to retire.
    Reload(Retiring),
    SpawnFailed,
}

/// What follows a stop on request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    Restart,
    Park,
    Delete,
    Shutdown,
}

impl Instance {
    fn tag(&self) -> String {
        format!("{}:{}", self.app.name, self.pm_id)
    }

    fn report(&self, status: Status, pid: Option<u32>, last_exit: Option<Exit>) {
        let since = pid.map(|_| SystemTime::now());
        let _ = self.updates.send(Update {
            pm_id: self.pm_id,
            status,
            pid,
            last_exit,
            restart_time: self.restart_time,
            scheduled: false,
            manual: false,
            since,
            gone: false,
            reason: None,
        });
    }

    /// The instance became online (`how`: ready, listening on …, READY=1): reported and logged.
    fn mark_online(&self, pid: u32, last_exit: Option<Exit>, how: &str) {
        self.report(Status::Online, Some(pid), last_exit);
        tracing::info!(app = %self.app.name, id = self.pm_id, status = "online", "App [{}] online ({how})", self.tag());
    }

    fn shutting_down(&self) -> bool {
        *self.shutdown.borrow() != Shutdown::Running || unix::stop_signals_received() > 0
    }

    /// Parks a stopped or errored instance: reports it, then waits for a reason to start again
    /// (`start`/`restart`, or the next `cron_restart` fire, which starts a stopped app as PM2
    /// does). Returns true to start, false when the task must end (delete, shutdown).
    async fn settle(&mut self, status: Status, exit: Option<Exit>, schedule: Option<&Schedule>, mut manual: bool) -> bool {
        loop {
            let next = if self.shutting_down() { None } else { schedule.and_then(Schedule::until_next_local) };
            let _ = self.updates.send(Update {
                pm_id: self.pm_id,
                status,
                pid: None,
                last_exit: exit,
                restart_time: self.restart_time,
                scheduled: next.is_some(),
                manual,
                since: None,
                gone: false,
                reason: None,
            });
            if self.shutting_down() {
                return false;
            }
            let cron = tokio::time::sleep(next.unwrap_or(Duration::from_secs(86400 * 365)));
            tokio::pin!(cron);
            loop {
                tokio::select! {
                    _ = &mut cron, if next.is_some() => {
                        tracing::info!(app = %self.app.name, id = self.pm_id, status = "restart", "App [{}] started by cron_restart", self.tag());
                        return true;
                    }
                    changed = self.shutdown.changed() => {
                        if changed.is_err() || self.shutting_down() { return false; }
                    }
                    cmd = self.inbox.recv() => match cmd {
                        Some(Cmd::Restart | Cmd::Start | Cmd::Reload) => return true,
                        Some(Cmd::Replace(app)) => { self.app = app; return true; }
                        Some(Cmd::Delete) | None => return false,
                        Some(Cmd::Stop) => { manual = true; break; }
                        Some(Cmd::Reset) => { self.restart_time = 0; break; }
                        Some(Cmd::Signal(_) | Cmd::Send(_)) => {}
                    }
                }
            }
        }
    }

    /// The task's body: runs until the instance is stopped for good (or errored), or the runtime shuts down.
    pub async fn run(mut self) {
        let created_wall = now_ms();
        let mut hist = History::new(Instant::now());
        let unique_id = self.unique_id.clone();
        let tag = self.tag();
        let mut schedule = schedule_of(&self.app);

        let mut last_exit = None;
        let mut retiring: Option<Retiring> = None;
        if !self.app.autostart && !self.resumed {
            tracing::info!(app = %self.app.name, id = self.pm_id, status = "stop", "App [{tag}] registered but not started (autostart: false)");
            if !self.settle(Status::Stopped, None, schedule.as_ref(), true).await {
                return self.gone(last_exit);
            }
        }
        loop {
            if self.shutting_down() {
                break;
            }
            // Settings may have been replaced (startOrRestart): read them at every start.
            let policy = policy_of(&self.app);
            schedule = schedule_of(&self.app);
            if hist.created_at.is_none() {
                hist.created_at = Some(Instant::now());
            }
            let facts = InstanceFacts {
                pm_id: self.pm_id,
                instance: self.instance,
                unique_id: unique_id.clone(),
                restart_time: self.restart_time,
                unstable_restarts: hist.unstable_restarts,
                created_at: created_wall,
                pm_uptime: now_ms(),
                pm2_home: self.pm2_home.clone(),
                home: None,
            };
            let end = self.run_once(&facts, last_exit, schedule.as_ref(), retiring.take()).await;
            let (exit, started) = match end {
                RunEnd::Reload(old) => {
                    retiring = Some(old);
                    hist = History::new(Instant::now());
                    self.restart_time += 1;
                    continue;
                }
                RunEnd::Stopped(exit, after) => {
                    last_exit = Some(exit);
                    let again = match after {
                        After::Restart => !self.shutting_down(),
                        After::Park => self.settle(Status::Stopped, Some(exit), schedule.as_ref(), true).await,
                        After::Delete | After::Shutdown => false,
                    };
                    if again {
                        hist = History::new(Instant::now());
                        self.restart_time += 1;
                        continue;
                    }
                    return self.gone(last_exit);
                }
                RunEnd::Exited(exit, started) => (exit, started),
                RunEnd::SpawnFailed => (Exit::Code(127), Instant::now()),
            };
            last_exit = Some(exit);
            let shutting = self.shutting_down();
            let mut decision = policy::on_exit(&policy, &mut hist, exit, started, Instant::now(), shutting);
            // An exit that looks requested (code 0, SIGTERM, SIGINT) may be the first half of a
            // platform-wide stop (Heroku, `docker kill`: TERM to every process at once): give the
            // runtime's own stop signal a moment to arrive before restarting. Crashes restart at once.
            if let Decision::Restart(delay) = decision
                && delay < STOP_GRACE
                && matches!(exit, Exit::Code(0) | Exit::Signal(libc::SIGTERM) | Exit::Signal(libc::SIGINT))
            {
                let grace = tokio::time::sleep(STOP_GRACE - delay);
                tokio::pin!(grace);
                loop {
                    tokio::select! {
                        _ = &mut grace => break,
                        changed = self.shutdown.changed() => if changed.is_err() || self.shutting_down() { break },
                    }
                }
                if self.shutting_down() {
                    decision = Decision::Stop;
                }
            }
            match decision {
                Decision::Stop => {
                    if self.settle(Status::Stopped, Some(exit), schedule.as_ref(), false).await {
                        hist = History::new(Instant::now());
                        self.restart_time += 1;
                        continue;
                    }
                    return self.gone(last_exit);
                }
                Decision::Errored => {
                    tracing::error!(app = %self.app.name, id = self.pm_id, status = "errored",
                        "Script {} had too many unstable restarts ({}). Stopped. \"errored\"", self.app.exec_path.display(), self.app.max_restarts);
                    if self.settle(Status::Errored, Some(exit), schedule.as_ref(), false).await {
                        hist = History::new(Instant::now());
                        self.restart_time += 1;
                        continue;
                    }
                    return self.gone(last_exit);
                }
                Decision::Restart(delay) => {
                    if !delay.is_zero() {
                        tracing::info!(app = %self.app.name, id = self.pm_id, status = "waiting restart", "App [{tag}] will restart in {}ms", delay.as_millis());
                        self.report(Status::WaitingRestart, None, Some(exit));
                        match self.wait_or_interrupt(delay).await {
                            Some(After::Restart) => {}
                            Some(After::Park) => {
                                if !self.settle(Status::Stopped, Some(exit), schedule.as_ref(), true).await {
                                    return self.gone(last_exit);
                                }
                                hist = History::new(Instant::now());
                            }
                            _ => return self.gone(last_exit),
                        }
                    }
                    self.restart_time += 1;
                }
            }
        }
        self.gone(last_exit)
    }

    /// The task ends: a last update saying so.
    fn gone(&self, last_exit: Option<Exit>) {
        let _ = self.updates.send(Update {
            pm_id: self.pm_id,
            status: Status::Stopped,
            pid: None,
            last_exit,
            restart_time: self.restart_time,
            scheduled: false,
            manual: true,
            since: None,
            gone: true,
            reason: None,
        });
    }

    /// Sleeps for a restart delay. `Restart` when it is over (or a restart was asked for),
    /// `Park` on a `stop`, `Delete`/`Shutdown` when the task must end.
    async fn wait_or_interrupt(&mut self, delay: Duration) -> Option<After> {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return Some(if self.shutting_down() { After::Shutdown } else { After::Restart }),
                changed = self.shutdown.changed() => {
                    if changed.is_err() || self.shutting_down() { return Some(After::Shutdown); }
                }
                cmd = self.inbox.recv() => match cmd {
                    Some(Cmd::Restart | Cmd::Start | Cmd::Reload) => return Some(After::Restart),
                    Some(Cmd::Replace(app)) => {
                        self.app = app;
                        return Some(After::Restart);
                    }
                    Some(Cmd::Stop) => return Some(After::Park),
                    Some(Cmd::Delete) | None => return Some(After::Delete),
                    Some(Cmd::Reset) => self.restart_time = 0,
                    Some(Cmd::Signal(_) | Cmd::Send(_)) => {}
                }
            }
        }
    }

    /// Starts the process once and follows it until it exits or is stopped.
    async fn run_once(
        &mut self,
        facts: &InstanceFacts,
        last_exit: Option<Exit>,
        schedule: Option<&Schedule>,
        mut retiring: Option<Retiring>,
    ) -> RunEnd {
        let app = self.app.clone();
        let tag = self.tag();
        let mut facts = facts.clone();
        let (uid, gid) = match resolve_ids(&app) {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!(app = %app.name, id = self.pm_id, "App [{tag}] cannot start: {e}");
                return RunEnd::SpawnFailed;
            }
        };
        facts.home = uid.and_then(|u| nix::unistd::User::from_uid(u.into()).ok().flatten()).map(|u| u.dir.to_string_lossy().into_owned());
        // wait_ready for any language: sd_notify's READY=1 on NOTIFY_SOCKET (an abstract socket,
        // so no file to clean up), besides Node's process.send('ready').
        let mut child_env = env::build(&self.inherited_env, &app, &facts);
        let (notify_tx, mut notify_rx) = oneshot::channel::<()>();
        let mut notify_open = false;
        if app.wait_ready {
            match notify_socket(self.pm_id, self.restart_time) {
                Ok((name, sock)) => {
                    child_env.push(("NOTIFY_SOCKET".into(), format!("@{name}").into()));
                    tokio::spawn(read_notify(sock, notify_tx));
                    notify_open = true;
                }
                Err(e) => tracing::warn!(app = %app.name, id = self.pm_id, "App [{tag}] no NOTIFY_SOCKET: {e}"),
            }
        }
        let spec = SpawnSpec {
            program: app.command.program.clone(),
            argv: app.command.argv.clone(),
            cwd: app.cwd.clone(),
            env: child_env,
            uid,
            gid,
            ipc: app.command.is_node,
            listen_fd: match &self.listen_socket {
                Some(l) => match l.as_fd().try_clone_to_owned() {
                    Ok(fd) => Some(fd),
                    Err(e) => {
                        tracing::error!(app = %app.name, id = self.pm_id, "App [{tag}] cannot pass its listening socket: {e}");
                        return RunEnd::SpawnFailed;
                    }
                },
                None => None,
            },
        };
        self.report(Status::Launching, None, last_exit);
        let cluster = self.listeners.is_some();
        let mode = if cluster { "cluster" } else { "fork" };
        tracing::info!(app = %app.name, id = self.pm_id, status = "start", "App [{tag}] starting in -{mode} mode-");
        let running = match process::spawn(&self.reaper, &spec) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(app = %app.name, id = self.pm_id, "App [{tag}] failed to start {}: {e}", spec.program.display());
                if let Some(old) = retiring.take() {
                    self.retire(old);
                }
                return RunEnd::SpawnFailed;
            }
        };
        let started = Instant::now();
        let pid = running.pid;
        let _pid_file = app.pid_file.as_ref().and_then(|p| PidFile::write(crate::logs::hub::log_path(&app, p, self.pm_id), pid));
        if let Some(out) = running.stdout {
            self.logs.pump(out, &app, self.pm_id, crate::logs::Stream::Out);
        }
        if let Some(err) = running.stderr {
            self.logs.pump(err, &app, self.pm_id, crate::logs::Stream::Err);
        }
        let (ready_tx, mut ready_rx) = oneshot::channel::<()>();
        let mut ipc = match (running.ipc, &self.listeners) {
            (None, _) => Ipc::None,
            // Worker ids start at 1 (they become cluster.worker.id); a replacement reuses its id.
            (Some(stream), Some(listeners)) => Ipc::Cluster(crate::cluster::WorkerChannel::new(stream, self.pm_id + 1, listeners.clone())),
            (Some(stream), None) => {
                let (read, write) = stream.into_split();
                tokio::spawn(read_ipc(read, ready_tx, tag.clone(), self.pm_id, self.messages.clone()));
                Ipc::Plain(write)
            }
        };
        let mut exit_rx = running.exit;

        // Fork mode: online at once unless wait_ready. Cluster mode: once the worker listens
        // (or sends 'ready' with wait_ready), as a Node primary would say.
        let mut online = !app.wait_ready && !cluster;
        if online {
            self.report(Status::Online, Some(pid), last_exit);
            tracing::info!(app = %app.name, id = self.pm_id, status = "online", "App [{tag}] online");
        }
        test_hooks::maybe_panic(self.pm_id, self.restart_time);
        let mut cluster_open = matches!(ipc, Ipc::Cluster(_));
        let listen_timeout = tokio::time::sleep(app.listen_timeout);
        tokio::pin!(listen_timeout);
        // max_memory_restart: the RSS of the whole process tree, sampled twice a second so a
        // crossing is acted on well within a second (pm2-runtime: every 30 s, main pid only).
        let cron_at = schedule.and_then(Schedule::until_next_local);
        let cron = tokio::time::sleep(cron_at.unwrap_or(Duration::from_secs(86400 * 365)));
        tokio::pin!(cron);
        let mut memory_check = tokio::time::interval(MEMORY_SAMPLE);
        memory_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ready_open = true;
        loop {
            if online && let Some(old) = retiring.take() {
                self.retire(old);
            }
            tokio::select! {
                exit = &mut exit_rx => {
                    let exit = exit.unwrap_or(Exit::Code(0));
                    log_exit(&app, self.pm_id, exit);
                    if let Some(old) = retiring.take() {
                        // The replacement died before it was ready: the old one is retired all the same.
                        self.retire(old);
                    }
                    return RunEnd::Exited(exit, started);
                }
                r = &mut notify_rx, if !online && notify_open => {
                    if r.is_ok() {
                        online = true;
                        self.mark_online(pid, last_exit, "READY=1");
                    } else {
                        notify_open = false;
                    }
                }
                r = &mut ready_rx, if !online && ready_open => {
                    if r.is_ok() {
                        online = true;
                        self.mark_online(pid, last_exit, "ready");
                    } else {
                        ready_open = false;
                    }
                }
                ev = next_cluster_event(&mut ipc), if cluster_open => match ev {
                    Some(crate::cluster::WorkerEvent::Listening { port, .. }) if !online && !app.wait_ready => {
                        online = true;
                        self.mark_online(pid, last_exit, &format!("listening on {port}"));
                    }
                    Some(crate::cluster::WorkerEvent::Ready) if !online && app.wait_ready => {
                        online = true;
                        self.mark_online(pid, last_exit, "ready");
                    }
                    Some(crate::cluster::WorkerEvent::ListenFailed { port, errno, .. }) => {
                        let port = port.map_or_else(|| "?".to_string(), |p| p.to_string());
                        tracing::error!(app = %app.name, id = self.pm_id, "App [{tag}] could not listen on port {port}: {}", std::io::Error::from_raw_os_error(errno));
                    }
                    Some(crate::cluster::WorkerEvent::Message(m)) => {
                        if self.messages.try_send((self.pm_id, m)).is_err() {
                            tracing::debug!("App [{tag}] IPC message dropped: the runtime is behind");
                        }
                    }
                    Some(crate::cluster::WorkerEvent::Disconnected) | None => cluster_open = false,
                    Some(_) => {}
                },
                _ = &mut listen_timeout, if !online => {
                    online = true;
                    self.report(Status::Online, Some(pid), last_exit);
                    let what = if app.wait_ready { "send 'ready'" } else { "listen" };
                    tracing::warn!(app = %app.name, id = self.pm_id, status = "online", "App [{tag}] did not {what} within listen_timeout ({}ms); considered online", app.listen_timeout.as_millis());
                }
                _ = &mut cron, if cron_at.is_some() => {
                    tracing::info!(app = %app.name, id = self.pm_id, status = "restart", "App [{tag}] restarted by cron_restart");
                    let exit = self.stop(pid, &mut exit_rx, &mut ipc).await;
                    return RunEnd::Stopped(exit, After::Restart);
                }
                _ = memory_check.tick(), if app.max_memory_restart.is_some() => {
                    let limit = app.max_memory_restart.unwrap_or(u64::MAX);
                    let rss = crate::metrics::proc::tree_rss(pid);
                    if rss > limit {
                        tracing::warn!(app = %app.name, id = self.pm_id, status = "restart",
                            "App [{tag}] restarted because it exceeds max_memory_restart (current_memory={rss} max_memory_limit={limit} [octets])");
                        if cluster && online {
                            // Cluster mode: a rolling reload, so the port keeps answering.
                            return RunEnd::Reload(Retiring { pid, exit: exit_rx, ipc });
                        }
                        let exit = self.stop(pid, &mut exit_rx, &mut ipc).await;
                        return RunEnd::Stopped(exit, After::Restart);
                    }
                }
                changed = self.shutdown.changed() => {
                    if changed.is_err() || *self.shutdown.borrow() != Shutdown::Running {
                        let exit = self.stop(pid, &mut exit_rx, &mut ipc).await;
                        return RunEnd::Stopped(exit, After::Shutdown);
                    }
                }
                cmd = self.inbox.recv() => match cmd {
                    Some(Cmd::Replace(new)) if cluster && online => {
                        tracing::info!(app = %app.name, id = self.pm_id, status = "reload", "App [{tag}] reloading with new settings");
                        self.app = new;
                        return RunEnd::Reload(Retiring { pid, exit: exit_rx, ipc });
                    }
                    Some(Cmd::Replace(new)) => {
                        tracing::info!(app = %app.name, id = self.pm_id, status = "restart", "App [{tag}] restarting with new settings");
                        let exit = self.stop(pid, &mut exit_rx, &mut ipc).await;
                        self.app = new;
                        return RunEnd::Stopped(exit, After::Restart);
                    }
                    Some(Cmd::Restart) => {
                        tracing::info!(app = %app.name, id = self.pm_id, status = "restart", "App [{tag}] restarting");
                        let exit = self.stop(pid, &mut exit_rx, &mut ipc).await;
                        return RunEnd::Stopped(exit, After::Restart);
                    }
                    Some(Cmd::Stop) => {
                        let exit = self.stop(pid, &mut exit_rx, &mut ipc).await;
                        return RunEnd::Stopped(exit, After::Park);
                    }
                    Some(Cmd::Delete) | None => {
                        let exit = self.stop(pid, &mut exit_rx, &mut ipc).await;
                        return RunEnd::Stopped(exit, After::Delete);
                    }
                    Some(Cmd::Start) => {}
                    Some(Cmd::Reload) if cluster && online => {
                        tracing::info!(app = %app.name, id = self.pm_id, status = "reload", "App [{tag}] reloading: starting its replacement");
                        return RunEnd::Reload(Retiring { pid, exit: exit_rx, ipc });
                    }
                    Some(Cmd::Reload) => {
                        tracing::info!(app = %app.name, id = self.pm_id, status = "restart", "App [{tag}] restarting (fork mode: reload = restart)");
                        let exit = self.stop(pid, &mut exit_rx, &mut ipc).await;
                        return RunEnd::Stopped(exit, After::Restart);
                    }
                    Some(Cmd::Reset) => {
                        self.restart_time = 0;
                        if online {
                            self.report(Status::Online, Some(pid), last_exit);
                        }
                    }
                    Some(Cmd::Signal(sig)) => unix::signal_group(pid, sig),
                    Some(Cmd::Send(msg)) => send_ipc(&mut ipc, &msg, &tag).await,
                }
            }
        }
    }

    /// Stops the running process (see [`terminate`]), reporting `stopping` first.
    async fn stop(&mut self, pid: u32, exit_rx: &mut oneshot::Receiver<Exit>, ipc: &mut Ipc) -> Exit {
        let app = self.app.clone();
        self.report(Status::Stopping, Some(pid), None);
        tracing::info!(app = %app.name, id = self.pm_id, status = "stopping", "Stopping app:{} id:{}", app.name, self.pm_id);
        let exit = terminate(&app, self.pm_id, pid, exit_rx, ipc, &mut self.shutdown).await;
        log_exit(&app, self.pm_id, exit);
        exit
    }

    /// Retires the process a rolling reload replaced, in a task of its own (the new one runs meanwhile).
    fn retire(&self, mut old: Retiring) {
        let app = self.app.clone();
        let pm_id = self.pm_id;
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            tracing::info!(app = %app.name, id = pm_id, "App [{}:{pm_id}] retiring its previous process (pid {})", app.name, old.pid);
            let exit = terminate(&app, pm_id, old.pid, &mut old.exit, &mut old.ipc, &mut shutdown).await;
            log_exit(&app, pm_id, exit);
        });
    }
}

/// Next cluster event of a worker channel; never resolves for other channels.
async fn next_cluster_event(ipc: &mut Ipc) -> Option<crate::cluster::WorkerEvent> {
    match ipc {
        Ipc::Cluster(w) => w.next_event().await,
        _ => std::future::pending().await,
    }
}

/// Waits up to `limit` for the exit; a forced shutdown meanwhile SIGKILLs the tree. `None` on timeout.
async fn wait_exit(
    exit_rx: &mut oneshot::Receiver<Exit>,
    limit: Duration,
    shutdown: &mut watch::Receiver<Shutdown>,
    pid: u32,
    treekill: bool,
) -> Option<Exit> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        tokio::select! {
            e = &mut *exit_rx => return Some(e.unwrap_or(Exit::Code(0))),
            _ = tokio::time::sleep_until(deadline) => return None,
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() == Shutdown::Force {
                    kill_tree(pid, Signal::SIGKILL, treekill).await;
                }
                if changed.is_err() {
                    return Some((&mut *exit_rx).await.unwrap_or(Exit::Signal(9)));
                }
            }
        }
    }
}

/// PM2's kill algorithm, with a process group instead of a `ps` walk.
/// - Cluster worker: first Node's graceful retirement (`disconnect`: it stops accepting, the
///   port stays open in pm-runtime, in-flight requests finish, it exits) for up to `kill_timeout`.
/// - Then the app's kill signal (or the `shutdown` IPC message with `shutdown_with_message`) to
///   the whole tree, and SIGKILL to whatever is left of it after `kill_timeout`.
///
/// Returns the leader's exit status.
async fn terminate(
    app: &App,
    pm_id: u32,
    pid: u32,
    exit_rx: &mut oneshot::Receiver<Exit>,
    ipc: &mut Ipc,
    shutdown: &mut watch::Receiver<Shutdown>,
) -> Exit {
    let sig = unix::parse_signal(&app.kill_signal).unwrap_or(Signal::SIGINT);
    let mut exit = None;
    let mut strays = Vec::new();
    if *shutdown.borrow() == Shutdown::Force {
        strays = kill_tree(pid, Signal::SIGKILL, app.treekill).await;
    } else {
        if let Ipc::Cluster(w) = ipc
            && w.disconnect().await.is_ok()
        {
            exit = wait_exit(exit_rx, app.kill_timeout, shutdown, pid, app.treekill).await;
        }
        if exit.is_none() {
            let sent = app.shutdown_with_message
                && match ipc {
                    Ipc::Plain(w) => w.write_all(b"\"shutdown\"\n").await.is_ok(),
                    Ipc::Cluster(w) => w.send(&serde_json::json!("shutdown")).await.is_ok(),
                    Ipc::None => false,
                };
            if !sent {
                strays = kill_tree(pid, sig, app.treekill).await;
            }
        }
    }
    let deadline = tokio::time::Instant::now() + app.kill_timeout;
    let exit = match exit {
        Some(e) => e,
        None => match wait_exit(exit_rx, app.kill_timeout, shutdown, pid, app.treekill).await {
            Some(e) => e,
            None => {
                tracing::warn!(app = %app.name, id = pm_id, "Process with pid {pid} still alive after {}ms, sending SIGKILL", app.kill_timeout.as_millis());
                kill_tree(pid, Signal::SIGKILL, app.treekill).await;
                (&mut *exit_rx).await.unwrap_or(Exit::Signal(9))
            }
        },
    };
    // The leader is gone; members of its group (or descendants that left it) may remain.
    while unix::group_alive(pid) || strays.iter().any(|&p| alive(p)) {
        if tokio::time::Instant::now() >= deadline {
            unix::signal_group(pid, Signal::SIGKILL);
            for &p in &strays {
                unix::signal_pid(p, Signal::SIGKILL);
            }
            break;
        }
        tokio::time::sleep(app.kill_retry_time.min(Duration::from_millis(100))).await;
    }
    exit
}

/// Signals the instance's process group and, with `treekill`, every descendant that left it.
/// Returns the descendants outside the group that were signalled. The /proc scan is shared with
/// every instance stopping at the same time.
async fn kill_tree(pid: u32, sig: Signal, treekill: bool) -> Vec<u32> {
    let mut strays = Vec::new();
    if treekill {
        let procs = tree::fresh_snapshot().await;
        for d in procs.descendants(pid) {
            if procs.get(d).is_some_and(|p| p.pgid != pid && p.state != 'Z') {
                unix::signal_pid(d, sig);
                strays.push(d);
            }
        }
    }
    unix::signal_group(pid, sig);
    strays
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| tree::parse_stat(&s)).is_some_and(|s| s.state != 'Z')
}

fn log_exit(app: &App, pm_id: u32, exit: Exit) {
    let (code, signal) = match exit {
        Exit::Code(c) => (c.to_string(), "none".to_string()),
        Exit::Signal(s) => ("null".to_string(), Signal::try_from(s).map(|s| s.as_str().to_string()).unwrap_or_else(|_| s.to_string())),
    };
    tracing::info!(app = %app.name, id = pm_id, status = "exit", "App [{}:{pm_id}] exited with code [{code}] via signal [{signal}]", app.name);
}

/// Reads Node's IPC channel: newline-delimited JSON. `"ready"` resolves readiness; other
/// messages are logged at debug level (later issues route them).
async fn read_ipc(read: tokio::net::unix::OwnedReadHalf, ready: oneshot::Sender<()>, tag: String, pm_id: u32, messages: AppMessages) {
    let mut ready = Some(ready);
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        match serde_json::from_str::<serde_json::Value>(&line) {
            Ok(serde_json::Value::String(s)) if s == "ready" => {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(());
                }
            }
            Ok(m) => {
                if messages.try_send((pm_id, m)).is_err() {
                    tracing::debug!("App [{tag}] IPC message dropped: the runtime is behind");
                }
            }
            Err(_) => tracing::debug!("App [{tag}] sent malformed IPC data"),
        }
    }
}

/// Writes one message on the instance's Node IPC channel (JSON, one line: Node's format).
async fn send_ipc(ipc: &mut Ipc, msg: &serde_json::Value, tag: &str) {
    let sent = match ipc {
        Ipc::Plain(w) => {
            let mut line = msg.to_string().into_bytes();
            line.push(b'\n');
            w.write_all(&line).await.is_ok()
        }
        Ipc::Cluster(w) => w.send(msg).await.is_ok(),
        Ipc::None => false,
    };
    if !sent {
        tracing::debug!("App [{tag}] has no open IPC channel: message not delivered");
    }
}

/// A datagram socket in the abstract namespace for one run of one instance.
fn notify_socket(pm_id: u32, run: u32) -> std::io::Result<(String, tokio::net::UnixDatagram)> {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("pm-runtime/{}/{pm_id}/{run}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    let sock = std::os::unix::net::UnixDatagram::bind_addr(&addr)?;
    sock.set_nonblocking(true)?;
    Ok((name, tokio::net::UnixDatagram::from_std(sock)?))
}

/// Reads sd_notify datagrams (`KEY=value` lines) until `READY=1`, or until the run it belongs
/// to is over (the receiver is gone).
async fn read_notify(sock: tokio::net::UnixDatagram, mut ready: oneshot::Sender<()>) {
    let mut buf = vec![0u8; 4096];
    loop {
        tokio::select! {
            _ = ready.closed() => return,
            got = sock.recv(&mut buf) => match got {
                Ok(n) if buf[..n].split(|&b| b == b'\n').any(|l| l == b"READY=1") => {
                    let _ = ready.send(());
                    return;
                }
                Ok(_) => {}
                Err(_) => return,
            },
        }
    }
}

fn resolve_ids(app: &App) -> Result<(Option<u32>, Option<u32>), String> {
    let uid = match &app.uid {
        None => None,
        Some(Principal::Id(u)) => Some(*u),
        Some(Principal::Name(n)) => {
            Some(nix::unistd::User::from_name(n).ok().flatten().ok_or_else(|| format!("unknown user {n:?}"))?.uid.as_raw())
        }
    };
    let gid = match &app.gid {
        None => None,
        Some(Principal::Id(g)) => Some(*g),
        Some(Principal::Name(n)) => {
            Some(nix::unistd::Group::from_name(n).ok().flatten().ok_or_else(|| format!("unknown group {n:?}"))?.gid.as_raw())
        }
    };
    Ok((uid, gid))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// A `pid_file`, removed when the process has exited (the guard is dropped).
struct PidFile(std::path::PathBuf);

impl PidFile {
    fn write(path: std::path::PathBuf, pid: u32) -> Option<Self> {
        match crate::logs::file::write_pid_file(&path, pid) {
            Ok(()) => Some(Self(path)),
            Err(e) => {
                tracing::error!("cannot write pid file {}: {e}", path.display());
                None
            }
        }
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Fault injection for the integration tests, compiled into debug builds only.
mod test_hooks {
    /// `PM_RUNTIME_TEST_PANIC=<pm_id>`: that instance's task panics once its first process is
    /// running (to test that the coordinator notices). Release builds ignore the variable.
    #[cfg(debug_assertions)]
    pub fn maybe_panic(pm_id: u32, restart_time: u32) {
        if restart_time == 0 && std::env::var("PM_RUNTIME_TEST_PANIC").is_ok_and(|v| v.trim() == pm_id.to_string()) {
            panic!("injected by PM_RUNTIME_TEST_PANIC");
        }
    }

    #[cfg(not(debug_assertions))]
    pub fn maybe_panic(_pm_id: u32, _restart_time: u32) {}
}
