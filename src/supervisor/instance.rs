//! One app instance: a task that carries out its [`Machine`]'s decisions.
//!
//! The task is the only owner of the instance's process and state. It turns what happens to
//! the process (exit, IPC messages, readiness, timers) and what the coordinator asks (its inbox
//! of [`Cmd`]s, the shutdown level) into [`Input`]s for the machine, in one `select!` loop, and
//! carries out the [`Effect`]s the machine answers with: spawning, signalling, arming timers,
//! reporting [`Update`]s. Every decision lives in `machine.rs`; nothing here decides.
//!
//! Must never: wait inside an effect for longer than a bounded IPC write (`IPC_WRITE_LIMIT`)
//! or a shared /proc scan (timeouts are the machine's timers), nor after an exit for longer than
//! [`STDERR_DRAIN`] (for the dead process's last stderr lines), so that the inbox is always
//! answered.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot, watch};

use super::cron::Schedule;
use super::env::{self, InstanceFacts};
use super::machine::{Cmd, Effect, Input, Level, Machine, ProbeKind, Ready, Shutdown, Timer};
use super::policy;
use super::probe::ProbeFailure;
use super::status::{DEATH_STDERR_LINES, Death, ExitReason};
use super::status::{Status, Update};
use crate::cluster::{Direct, WorkerChannel, WorkerEvent};
use crate::config::{App, ProbeCheck};
use crate::logs::LogHub;
use crate::process::{self, Exit, Reaper, SpawnSpec, tree, unix};

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
    /// The death certificate of the instance's last process (kept across a panicked task).
    pub death: Option<Arc<Death>>,
    /// `node_heap: auto`: each Node process's heap, MiB (the coordinator's share of the container).
    pub heap_share: watch::Receiver<Option<u64>>,
}

/// The sending side of the app-message channel: `(pm_id, message)`. Bounded; a message that
/// does not fit is dropped (a chatty app must not grow the runtime's memory).
pub type AppMessages = mpsc::Sender<(u32, serde_json::Value)>;

/// The handles of one running process.
#[derive(Default)]
struct Run {
    pid: Option<u32>,
    exit: Option<oneshot::Receiver<Exit>>,
    /// The Node IPC channel (fork and cluster alike; cluster messages only come from workers).
    chan: Option<WorkerChannel>,
    chan_open: bool,
    /// sd_notify: `READY=1`, `WATCHDOG=1`.
    notify: Option<mpsc::UnboundedReceiver<crate::cluster::notify::Notice>>,
    /// Descendants outside the process group that a stop signalled.
    strays: Vec<u32>,
    since: Option<SystemTime>,
    /// `version` of the app's package.json, read when this process started.
    version: Option<Arc<str>>,
    pid_file: Option<PidFile>,
    /// Resolves when the stderr pump has read the pipe to its end.
    err_done: Option<oneshot::Receiver<()>>,
    /// The last log line of the instance before this process (its own lines come after).
    first_seq: u64,
    /// The cgroup's OOM-kill count when the process started.
    oom_kills: Option<u64>,
}

impl Run {
    /// Members of the stopped process's group, or strays, still alive.
    fn leftovers(&self) -> bool {
        self.pid.is_some_and(unix::group_alive) || self.strays.iter().any(|&p| alive(p))
    }
}

/// The timers the machine armed, by kind.
type Timers = HashMap<Timer, tokio::time::Instant>;

/// Probe results coming back: which probe, of which process, and how it went.
type ProbeResults = mpsc::UnboundedSender<(ProbeKind, u32, Result<(), ProbeFailure>)>;

impl Instance {
    fn tag(&self) -> String {
        format!("{}:{}", self.app.name, self.pm_id)
    }

    /// The task's body: runs the machine until it ends the task.
    pub async fn run(mut self) {
        let backoff_reset = policy::backoff_reset_from(std::env::var("EXP_BACKOFF_RESET_TIMER").ok().as_deref());
        let mut m = Machine::new(self.app.clone(), self.pm_id, self.listeners.is_some(), self.restart_time, backoff_reset, Instant::now());
        m.resumed = self.resumed;
        // Deno has no node:cluster: its instances share the port with SO_REUSEPORT
        // (`Deno.serve({ reusePort: true })`), so a reload can still start the new one first.
        m.rolling = self.listeners.is_none()
            && self.app.exec_mode == crate::config::ExecMode::Cluster
            && self.app.command.js_runtime() == Some(crate::config::JsRuntime::Deno);
        let created_wall = now_ms();
        let mut run = Run::default();
        let mut handed: Option<Run> = None;
        let mut timers = Timers::new();
        let mut queue = VecDeque::new();
        let level = *self.shutdown.borrow_and_update();
        if level != Shutdown::Running {
            queue.push_back(Input::Shutdown(level));
        }
        queue.push_back(Input::Begin);
        let (mut inbox_open, mut shutdown_open) = (true, true);
        let (probe_tx, mut probe_rx) = mpsc::unbounded_channel();
        loop {
            while let Some(input) = queue.pop_front() {
                if unix::stop_signals_received() > 0 {
                    m.note_stop_signal();
                }
                for effect in m.step(input, Instant::now()) {
                    if self.carry_out(effect, &m, &mut run, &mut handed, &mut timers, &mut queue, created_wall, &probe_tx).await {
                        return;
                    }
                }
            }
            let next = timers.iter().min_by_key(|(_, at)| **at).map(|(t, at)| (*t, *at));
            let far = tokio::time::Instant::now() + std::time::Duration::from_secs(86400 * 365);
            tokio::select! {
                exit = exit_of(&mut run.exit) => {
                    run.exit = None;
                    // The pid file names a live process only.
                    run.pid_file = None;
                    // Its last stderr lines, for the death certificate: the pump reads the pipe
                    // to its end (bounded: a descendant may hold the pipe open).
                    if let Some(done) = run.err_done.take() {
                        let _ = tokio::time::timeout(STDERR_DRAIN, done).await;
                    }
                    let oom = oom_grew(run.oom_kills, exit);
                    queue.push_back(Input::Exited { exit, leftovers: run.leftovers(), oom });
                }
                exit = handed_exit(&mut handed) => {
                    let mut oom = Some(false);
                    let mut leftovers = false;
                    if let Some(h) = handed.as_mut() {
                        h.exit = None;
                        if let Some(done) = h.err_done.take() {
                            let _ = tokio::time::timeout(STDERR_DRAIN, done).await;
                        }
                        oom = oom_grew(h.oom_kills, exit);
                        leftovers = h.leftovers();
                    }
                    queue.push_back(Input::RetireExited { exit, leftovers, oom });
                }
                ev = next_event(&mut run.chan), if run.chan_open => match ev {
                    Some(WorkerEvent::Listening { port, address }) => queue.push_back(Input::Ready(Ready::Listening(port, address))),
                    Some(WorkerEvent::Ready) => queue.push_back(Input::Ready(Ready::Message)),
                    Some(WorkerEvent::ListenFailed { port, errno, .. }) => {
                        let port = port.map_or_else(|| "?".to_string(), |p| p.to_string());
                        tracing::error!(app = %m.app.name, id = self.pm_id, "App [{}] could not listen on port {port}: {}", self.tag(), std::io::Error::from_raw_os_error(errno));
                    }
                    Some(WorkerEvent::Message(msg)) if msg.get("type").and_then(|t| t.as_str()) == Some(crate::preload::HEARTBEAT) => {
                        queue.push_back(Input::Heartbeat);
                        // Its lag is a metric: the coordinator keeps it (never on the bus).
                        let _ = self.messages.try_send((self.pm_id, msg));
                    }
                    Some(WorkerEvent::Message(msg)) => {
                        if self.messages.try_send((self.pm_id, msg)).is_err() {
                            tracing::debug!("App [{}] IPC message dropped: the runtime is behind", self.tag());
                        }
                    }
                    Some(WorkerEvent::Disconnected) | None => run.chan_open = false,
                    Some(_) => {}
                },
                notice = notified(&mut run.notify) => match notice {
                    Some(crate::cluster::notify::Notice::Ready) => queue.push_back(Input::Ready(Ready::Notify)),
                    Some(crate::cluster::notify::Notice::Watchdog) => queue.push_back(Input::Heartbeat),
                    None => run.notify = None,
                },
                _ = tokio::time::sleep_until(next.map_or(far, |(_, at)| at)), if next.is_some() => {
                    if let Some((t, _)) = next {
                        timers.remove(&t);
                        queue.push_back(match t {
                            Timer::Leftovers => Input::Leftovers { alive: run.leftovers() },
                            t => Input::Timer(t),
                        });
                    }
                }
                changed = self.shutdown.changed(), if shutdown_open => {
                    let level = if changed.is_err() {
                        shutdown_open = false;
                        Shutdown::Graceful
                    } else {
                        *self.shutdown.borrow_and_update()
                    };
                    queue.push_back(Input::Shutdown(level));
                }
                Some((kind, pid, result)) = probe_rx.recv() => queue.push_back(Input::Probe { kind, pid, result }),
                cmd = self.inbox.recv(), if inbox_open => queue.push_back(Input::Cmd(cmd.unwrap_or_else(|| {
                    inbox_open = false;
                    Cmd::Delete
                }))),
            }
        }
    }

    /// Carries out one effect. True when the task must end.
    #[allow(clippy::too_many_arguments)]
    async fn carry_out(
        &mut self,
        effect: Effect,
        m: &Machine,
        run: &mut Run,
        handed: &mut Option<Run>,
        timers: &mut Timers,
        queue: &mut VecDeque<Input>,
        created_wall: u64,
        probes: &ProbeResults,
    ) -> bool {
        let app = m.app.clone();
        match effect {
            Effect::Report(r) => {
                if app.readiness_probe.is_some()
                    && let Some(c) = &run.chan
                {
                    // The readiness gate of a cluster worker follows its ready state.
                    c.admit(r.ready);
                }
                let since = r.pid.and(run.since);
                let _ = self.updates.send(Update {
                    pm_id: self.pm_id,
                    since,
                    version: run.version.clone(),
                    report: r.clone(),
                    death: self.death.clone(),
                });
                if r.status == Status::Online {
                    test_hooks::maybe_panic(self.pm_id, r.restart_time);
                }
            }
            Effect::Log(l) => match (l.level, l.status) {
                (Level::Info, Some(status)) => tracing::info!(app = %app.name, id = self.pm_id, status, "{}", l.text),
                (Level::Info, None) => tracing::info!(app = %app.name, id = self.pm_id, "{}", l.text),
                (Level::Warn, Some(status)) => tracing::warn!(app = %app.name, id = self.pm_id, status, "{}", l.text),
                (Level::Warn, None) => tracing::warn!(app = %app.name, id = self.pm_id, "{}", l.text),
                (Level::Error, Some(status)) => tracing::error!(app = %app.name, id = self.pm_id, status, "{}", l.text),
                (Level::Error, None) => tracing::error!(app = %app.name, id = self.pm_id, "{}", l.text),
            },
            Effect::Spawn => {
                self.app = app;
                match self.spawn(m, created_wall) {
                    Ok(r) => {
                        *run = r;
                        queue.push_back(Input::Spawned { pid: run.pid.unwrap_or_default() });
                    }
                    Err(starved) => queue.push_back(Input::SpawnFailed { starved }),
                }
            }
            Effect::Signal(sig) => {
                if let Some(pid) = run.pid {
                    unix::signal_group(pid, sig);
                }
            }
            Effect::Terminate { signal, message } => {
                if let Some(pid) = run.pid {
                    terminate(run, pid, signal, message, app.treekill).await;
                }
            }
            Effect::Kill => {
                if let Some(pid) = run.pid {
                    kill(run, pid, app.treekill).await;
                }
            }
            Effect::Disconnect => {
                if let Some(c) = &run.chan {
                    let _ = bounded(c.disconnect()).await;
                }
            }
            Effect::Send(msg) => {
                let sent = match &run.chan {
                    Some(c) if run.chan_open => bounded(c.send(&msg)).await.is_ok_and(|r| r.is_ok()),
                    _ => false,
                };
                if !sent {
                    tracing::debug!("App [{}] has no open IPC channel: message not delivered", self.tag());
                }
            }
            Effect::Arm(t, at) => {
                timers.insert(t, tokio::time::Instant::from_std(at));
            }
            Effect::ArmCron => {
                if let Some(next) = app.cron_restart.as_deref().and_then(|p| Schedule::parse(p).ok()).and_then(|s| s.until_next_local()) {
                    timers.insert(Timer::Cron, tokio::time::Instant::now() + next);
                }
            }
            Effect::Disarm(t) => {
                timers.remove(&t);
            }
            Effect::Died { exit, reason } => {
                let death = Arc::new(self.certificate(run, exit, reason));
                let line = death.line(&app.name, self.pm_id);
                let json = death.json().to_string();
                tracing::info!(app = %app.name, id = self.pm_id, status = "exit", exit = %json, "{line}");
                self.death = Some(death);
            }
            Effect::RetireDied { exit, reason } => {
                if let Some(h) = handed.as_ref() {
                    let death = self.certificate(h, exit, reason);
                    let json = death.json().to_string();
                    tracing::info!(app = %app.name, id = self.pm_id, status = "exit", exit = %json, "{}", death.line(&app.name, self.pm_id));
                }
            }
            Effect::Probe(kind) => {
                let probe = match kind {
                    ProbeKind::Liveness => app.liveness_probe.clone(),
                    ProbeKind::Readiness => app.readiness_probe.clone(),
                };
                if let (Some(probe), Some(pid)) = (probe, run.pid) {
                    // A cluster worker is probed on a connection of its own, not through the
                    // dispatcher (which would judge whichever worker is next).
                    let worker = run.chan.as_ref().filter(|_| self.listeners.is_some()).map(|c| c.handle());
                    // Off the loop: a slow check must not delay the inbox (bounded by its timeout).
                    let (tx, reaper) = (probes.clone(), self.reaper.clone());
                    tokio::spawn(async move {
                        let result = match worker_conn(worker, &probe.check).await {
                            Ok(conn) => super::probe::check(&app, &probe.check, probe.timeout, &reaper, conn).await,
                            Err(why) => Err(why),
                        };
                        let _ = tx.send((kind, pid, result));
                    });
                }
            }
            Effect::HandOver(_) => {
                // The pid file is the replacement's once it writes its own (see `PidFile`).
                *handed = Some(std::mem::take(run));
            }
            Effect::RetireDisconnect => {
                if let Some(c) = handed.as_ref().and_then(|h| h.chan.as_ref()) {
                    let _ = bounded(c.disconnect()).await;
                }
            }
            Effect::RetireTerminate { signal, message } => {
                if let Some(h) = handed.as_mut()
                    && let Some(pid) = h.pid
                {
                    terminate(h, pid, signal, message, app.treekill).await;
                }
            }
            Effect::RetireKill => {
                if let Some(h) = handed.as_mut()
                    && let Some(pid) = h.pid
                {
                    kill(h, pid, app.treekill).await;
                }
            }
            Effect::Retired => *handed = None,
            Effect::End => return true,
        }
        false
    }

    /// Starts the process with the machine's settings. When it could not: `Some(why)` if the
    /// system lacked resources (the machine retries), else `None` (logged here).
    fn spawn(&mut self, m: &Machine, created_wall: u64) -> Result<Run, Option<Arc<std::io::Error>>> {
        let app = m.app.clone();
        let tag = self.tag();
        let (uid, gid) = match super::principal::resolve_ids(&app) {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!(app = %app.name, id = self.pm_id, "App [{tag}] cannot start: {e}");
                return Err(None);
            }
        };
        let facts = InstanceFacts {
            pm_id: self.pm_id,
            instance: self.instance,
            unique_id: self.unique_id.clone(),
            restart_time: m.restart_time,
            unstable_restarts: m.hist.unstable_restarts,
            created_at: created_wall,
            pm_uptime: now_ms(),
            pm2_home: self.pm2_home.clone(),
            home: uid.and_then(|u| nix::unistd::User::from_uid(u.into()).ok().flatten()).map(|u| u.dir.to_string_lossy().into_owned()),
        };
        // wait_ready for any language: sd_notify's READY=1 on NOTIFY_SOCKET (an abstract socket,
        // so no file to clean up), besides Node's process.send('ready').
        let mut child_env = env::build(&self.inherited_env, &app, &facts);
        if app.node_heap
            && app.command.is_node
            && let Some(mib) = *self.heap_share.borrow()
        {
            size_heap(&mut child_env, mib);
        }
        if let Some(wd) = app.watchdog {
            // For the preload's heartbeat (Node); sd_notify's variable for every language.
            child_env.push((crate::preload::WATCHDOG_ENV.into(), wd.as_millis().to_string().into()));
            child_env.push(("WATCHDOG_USEC".into(), wd.as_micros().to_string().into()));
        }
        let mut notify = None;
        if app.wait_ready || app.watchdog.is_some() {
            match crate::cluster::notify::listen(self.pm_id) {
                Ok((value, ready)) => {
                    child_env.push(("NOTIFY_SOCKET".into(), value.into()));
                    notify = Some(ready);
                }
                Err(e) => tracing::warn!(app = %app.name, id = self.pm_id, "App [{tag}] no NOTIFY_SOCKET: {e}"),
            }
        }
        let listen_fd = match &self.listen_socket {
            Some(l) => match l.as_fd().try_clone_to_owned() {
                Ok(fd) => Some(fd),
                Err(e) => {
                    tracing::error!(app = %app.name, id = self.pm_id, "App [{tag}] cannot pass its listening socket: {e}");
                    return Err(None);
                }
            },
            None => None,
        };
        let spec = SpawnSpec {
            program: app.command.program.clone(),
            argv: app.command.argv.clone(),
            cwd: app.cwd.clone(),
            env: child_env,
            uid,
            gid,
            // Node, Bun and Deno all speak Node's IPC channel (`process.send('ready')`).
            ipc: app.command.js_runtime().is_some(),
            listen_fd,
        };
        // Out of resources (EMFILE, EAGAIN…) is no crash of the app: the machine waits and
        // retries, uncounted, and answers its inbox meanwhile.
        let running = match process::spawn(&self.reaper, &spec).map_err(process::SpawnError::classify) {
            Ok(r) => r,
            Err(process::SpawnError::Resources(e)) => return Err(Some(Arc::new(e))),
            Err(e) => {
                tracing::error!(app = %app.name, id = self.pm_id, "App [{tag}] failed to start {}: {e}", spec.program.display());
                return Err(None);
            }
        };
        let pid = running.pid;
        let first_seq = self.logs.last_seq(self.pm_id);
        if let Some(out) = running.stdout {
            self.logs.pump(out, &app, self.pm_id, crate::logs::Stream::Out);
        }
        let err_done = running.stderr.map(|err| self.logs.pump(err, &app, self.pm_id, crate::logs::Stream::Err));
        // One channel type for every Node child; only cluster workers may ask for servers, and
        // an app of another user only for what that user could bind itself.
        let me = nix::unistd::geteuid().as_raw();
        let chan = running.ipc.map(|stream| {
            let listeners = self.listeners.as_ref().map(|l| match uid {
                Some(u) if u != me => l.as_user(u, gid.unwrap_or_else(|| nix::unistd::getegid().as_raw())),
                _ => l.clone(),
            });
            // With a readiness probe, a worker takes connections only once it is ready.
            let held = listeners.is_some() && app.readiness_probe.is_some();
            WorkerChannel::with_gate(stream, crate::cluster::worker_id(self.pm_id), listeners, held)
        });
        Ok(Run {
            pid: Some(pid),
            exit: Some(running.exit),
            chan_open: chan.is_some(),
            chan,
            notify,
            strays: Vec::new(),
            since: Some(SystemTime::now()),
            version: package_version(&app.cwd),
            pid_file: PidFile::write(
                crate::config::pid_path(app.pid_file.as_deref(), &app.name, self.pm_id, std::path::Path::new(&self.pm2_home)),
                pid,
                app.pid_file.is_some(),
            ),
            err_done,
            first_seq,
            oom_kills: crate::process::cgroup::current().and_then(|c| c.oom_kills()),
        })
    }

    /// The death certificate of the process of `run`, which ended with `exit` for `reason`.
    fn certificate(&self, run: &Run, exit: Exit, reason: ExitReason) -> Death {
        Death {
            pid: run.pid.unwrap_or(0),
            exit,
            reason,
            uptime: run.since.and_then(|t| t.elapsed().ok()).unwrap_or_default(),
            at: SystemTime::now(),
            stderr: self.logs.last_err(self.pm_id, DEATH_STDERR_LINES, run.first_seq),
        }
    }
}

/// The connection a network probe of a cluster worker uses: its own (see
/// [`crate::cluster::Direct`]); `None` to connect to the port as usual.
async fn worker_conn(
    worker: Option<crate::cluster::WorkerHandle>,
    check: &ProbeCheck,
) -> Result<Option<tokio::net::TcpStream>, ProbeFailure> {
    let (Some(worker), ProbeCheck::Http { port, .. } | ProbeCheck::Tcp { port }) = (worker, check) else { return Ok(None) };
    match bounded(worker.direct(*port)).await {
        Ok(Ok(Direct::Conn(c))) => tokio::net::TcpStream::from_std(c).map(Some).map_err(|e| ProbeFailure::Worker(Arc::new(e))),
        Ok(Ok(Direct::NotListening)) => Err(ProbeFailure::WorkerNotListening(*port)),
        Ok(Ok(Direct::NotClustered)) => Ok(None),
        Ok(Err(_)) | Err(_) => Err(ProbeFailure::WorkerGone),
    }
}

/// `node_heap: auto`: `--max-old-space-size` in `NODE_OPTIONS`, unless the app sets its own
/// (`node_args` on the command line win over `NODE_OPTIONS` anyway).
fn size_heap(env: &mut Vec<(OsString, OsString)>, mib: u64) {
    let flag = format!("--max-old-space-size={mib}");
    match env.iter_mut().find(|(k, _)| k == "NODE_OPTIONS") {
        Some((_, v)) if v.to_string_lossy().contains("max-old-space-size") => {}
        Some((_, v)) => {
            let joined = format!("{} {flag}", v.to_string_lossy());
            *v = joined.trim().into();
        }
        None => env.push(("NODE_OPTIONS".into(), flag.into())),
    }
}

/// How long an exit waits for the process's last stderr lines to be read (longer only when a
/// descendant still holds the pipe open).
const STDERR_DRAIN: std::time::Duration = std::time::Duration::from_millis(100);

/// Whether the cgroup's OOM killer struck while a process ran (from its count at the start):
/// asked only for a SIGKILL; `None` when the count cannot be read.
fn oom_grew(at_start: Option<u64>, exit: Exit) -> Option<bool> {
    if exit != Exit::Signal(libc::SIGKILL) {
        return Some(false);
    }
    let now = crate::process::cgroup::current().and_then(|c| c.oom_kills())?;
    Some(now > at_start?)
}

/// How long a write on the IPC channel may hold up the loop (a worker that does not read, or a
/// handle hand-off waiting for its ACK): the write is then given up, never waited for.
const IPC_WRITE_LIMIT: std::time::Duration = std::time::Duration::from_secs(1);

async fn bounded<T>(write: impl std::future::Future<Output = T>) -> Result<T, tokio::time::error::Elapsed> {
    tokio::time::timeout(IPC_WRITE_LIMIT, write).await
}

/// The exit of the process a rolling reload handed over; never resolves when there is none.
async fn handed_exit(handed: &mut Option<Run>) -> Exit {
    match handed {
        Some(h) => exit_of(&mut h.exit).await,
        None => std::future::pending().await,
    }
}

/// The exit of the running process; never resolves when there is none.
async fn exit_of(rx: &mut Option<oneshot::Receiver<Exit>>) -> Exit {
    match rx {
        Some(r) => r.await.unwrap_or(Exit::Code(0)),
        None => std::future::pending().await,
    }
}

/// The next event of the IPC channel; never resolves when there is none.
async fn next_event(chan: &mut Option<WorkerChannel>) -> Option<WorkerEvent> {
    match chan {
        Some(c) => c.next_event().await,
        None => std::future::pending().await,
    }
}

/// The next sd_notify notice; `None` when the reader gave up; never resolves when there is no
/// notify socket.
async fn notified(rx: &mut Option<mpsc::UnboundedReceiver<crate::cluster::notify::Notice>>) -> Option<crate::cluster::notify::Notice> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// The kill signal (or the `shutdown` message, with `shutdown_with_message`, when it can be
/// sent) to the process's tree.
async fn terminate(run: &mut Run, pid: u32, signal: Signal, message: bool, treekill: bool) {
    let sent = message
        && match &run.chan {
            Some(c) if run.chan_open => bounded(c.send(&serde_json::json!("shutdown"))).await.is_ok_and(|r| r.is_ok()),
            _ => false,
        };
    if !sent {
        let strays = kill_tree(pid, signal, treekill).await;
        run.strays.extend(strays);
    }
}

/// SIGKILL to the process's tree and to every stray signalled before.
async fn kill(run: &mut Run, pid: u32, treekill: bool) {
    let strays = kill_tree(pid, Signal::SIGKILL, treekill).await;
    for &p in &run.strays {
        unix::signal_pid(p, Signal::SIGKILL);
    }
    run.strays.extend(strays);
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

/// `version` of the package.json in `cwd` (PM2 shows it in `jlist`), read once per start.
fn package_version(cwd: &std::path::Path) -> Option<Arc<str>> {
    let text = std::fs::read_to_string(cwd.join("package.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("version")?.as_str().map(Arc::from)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// A process's pid file (PM2's `pm_pid_path`), removed when the process has exited (the guard
/// is dropped) unless a newer process of the instance (a rolling reload) has written its own.
struct PidFile(std::path::PathBuf, u32);

impl PidFile {
    /// `configured`: the app's `pid_file` (a failure is an error); else the default one in
    /// `$PM2_HOME/pids`, which a read-only PM2_HOME may refuse (said once per start, at debug).
    fn write(path: std::path::PathBuf, pid: u32, configured: bool) -> Option<Self> {
        if crate::config::is_null_path(&path) {
            return None;
        }
        match crate::logs::file::write_pid_file(&path, pid) {
            Ok(()) => Some(Self(path, pid)),
            Err(e) if configured => {
                tracing::error!("cannot write pid file {}: {e}", path.display());
                None
            }
            Err(e) => {
                tracing::debug!("cannot write pid file {}: {e}", path.display());
                None
            }
        }
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if std::fs::read_to_string(&self.0).is_ok_and(|s| s.trim() == self.1.to_string()) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// Fault injection for the integration tests, compiled into debug builds only.
mod test_hooks {
    /// `PM_RUNTIME_TEST_PANIC=<pm_id>`: that instance's task panics once its first process is
    /// reported online (to test that the coordinator notices). Release builds ignore the variable.
    #[cfg(debug_assertions)]
    pub fn maybe_panic(pm_id: u32, restart_time: u32) {
        if restart_time == 0 && std::env::var("PM_RUNTIME_TEST_PANIC").is_ok_and(|v| v.trim() == pm_id.to_string()) {
            panic!("injected by PM_RUNTIME_TEST_PANIC");
        }
    }

    #[cfg(not(debug_assertions))]
    pub fn maybe_panic(_pm_id: u32, _restart_time: u32) {}
}
