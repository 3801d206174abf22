//! The coordinator: starts one task per app instance, owns the table of their statuses, turns
//! the runtime's signals into requests, decides when the runtime exits and with which code.
//!
//! State ownership: each instance task owns its process and restart history; this coordinator
//! owns only the latest [`Update`] of each instance. Nobody else holds either.

pub mod cron;
pub mod env;
pub mod file_watch;
pub mod instance;
pub mod policy;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::config::{App, Ecosystem, ExecMode};
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

struct Slot {
    app_index: usize,
    inbox: mpsc::UnboundedSender<Cmd>,
    last: Option<Update>,
}

/// Runs the ecosystem until it is stopped or nothing can run any more.
pub async fn run(eco: Ecosystem, opts: RunOptions, reaper: Reaper, logs: LogHub, mut signals: Signals) -> Outcome {
    if let Some(app) = eco.apps.iter().find(|a| a.exec_mode == ExecMode::Cluster) {
        tracing::error!(
            "App [{}] uses cluster mode (exec_mode: cluster, or instances on a Node app without exec_mode), which this version does not run yet. Set `exec_mode: fork` to run {} independent instances.",
            app.name,
            crate::config::resolve_instances(app.instances, opts.cpus)
        );
        return Outcome::ConfigError;
    }
    if !opts.delay.is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(opts.delay) => {}
            s = signals.recv() => if matches!(s, RuntimeSignal::Stop) { return Outcome::Requested; }
        }
    }

    let inherited: Arc<Vec<(OsString, OsString)>> = Arc::new(std::env::vars_os().collect());
    let (shutdown_tx, shutdown_rx) = watch::channel(Shutdown::Running);
    let (updates_tx, mut updates_rx) = mpsc::unbounded_channel::<Update>();
    let mut slots: BTreeMap<u32, Slot> = BTreeMap::new();
    let mut tasks = JoinSet::new();
    let mut next_id = 0u32;
    for (app_index, app) in eco.apps.iter().enumerate() {
        let app = Arc::new(app.clone());
        let n = crate::config::resolve_instances(app.instances, opts.cpus);
        for instance in 0..n {
            let (tx, rx) = mpsc::unbounded_channel();
            let inst = Instance {
                app: app.clone(),
                pm_id: next_id,
                instance,
                reaper: reaper.clone(),
                logs: logs.clone(),
                inherited_env: inherited.clone(),
                pm2_home: opts.pm2_home.clone(),
                updates: updates_tx.clone(),
                shutdown: shutdown_rx.clone(),
                inbox: rx,
            };
            slots.insert(next_id, Slot { app_index, inbox: tx, last: None });
            tasks.spawn(inst.run());
            next_id += 1;
        }
    }
    drop(updates_tx);

    // One watcher per app with `watch`; it names the app, the coordinator restarts its instances.
    let (restart_tx, mut restart_rx) = mpsc::unbounded_channel::<usize>();
    for (app_index, app) in eco.apps.iter().enumerate() {
        let own: Vec<_> = [&app.out_file, &app.error_file, &app.log_file, &app.pid_file]
            .into_iter()
            .flatten()
            .flat_map(|p| {
                slots
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
    let mut tasks_left = true;
    loop {
        tokio::select! {
            // Every task holds a sender: `None` means all of them have finished. With
            // --no-auto-exit the runtime then stays up for signals (and the control socket).
            update = updates_rx.recv(), if tasks_left => {
                let Some(update) = update else {
                    tasks_left = false;
                    if requested || opts.auto_exit { break }
                    continue;
                };
                if update.gone {
                    slots.remove(&update.pm_id);
                } else if let Some(slot) = slots.get_mut(&update.pm_id) {
                    slot.last = Some(update);
                }
                if !requested && opts.auto_exit && all_settled(&slots) {
                    break;
                }
            }
            Some(app_index) = restart_rx.recv(), if !requested => {
                for slot in slots.values().filter(|s| s.app_index == app_index) {
                    let _ = slot.inbox.send(Cmd::Restart);
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
                    if !tasks_left {
                        break;
                    }
                }
                RuntimeSignal::Reload => {
                    tracing::info!("SIGHUP received: restarting every app");
                    for slot in slots.values() { let _ = slot.inbox.send(Cmd::Restart); }
                }
                RuntimeSignal::ReopenLogs => {
                    tracing::info!("SIGUSR2 received: reopening log files");
                    logs.reopen_files();
                }
                RuntimeSignal::Forward(sig) => {
                    for slot in slots.values() { let _ = slot.inbox.send(Cmd::Signal(sig)); }
                }
            },
        }
    }
    // Stop whatever is still running (auto-exit path: nothing is; stop path: all are stopping).
    if !requested {
        let _ = shutdown_tx.send(Shutdown::Graceful);
    }
    while tasks.join_next().await.is_some() {}
    while let Ok(update) = updates_rx.try_recv() {
        if let Some(slot) = slots.get_mut(&update.pm_id).filter(|_| !update.gone) {
            slot.last = Some(update);
        }
    }
    sweep_strays().await;

    if requested {
        return Outcome::Requested;
    }
    outcome(&eco.apps, &slots)
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
