//! Answers control requests against the coordinator's table: `ls`, `stop web`, `scale web +2`…
//!
//! Runs inside the coordinator's task, so it reads and changes the instance table without any
//! sharing. Commands to instances are sent and answered at once; the client follows up with
//! `ls` if it wants to wait for the result.

use std::sync::Arc;

use serde_json::Value;

use super::Coordinator;
use super::machine::Cmd;
use super::status::Status;
use crate::control::protocol::{LogLine, Reply, Request, error};
use crate::logs::Stream;

pub fn handle(co: &mut Coordinator, req: Request) -> Reply {
    match req {
        Request::Ping => ping(co),
        Request::Ls => Reply { processes: Some(processes(co, None)), ..Reply::ok() },
        Request::Show { target } => match resolve(co, &target) {
            Ok(ids) => Reply { processes: Some(processes(co, Some(&ids))), ..Reply::ok() },
            Err(e) => error(e),
        },
        Request::Start { target } => start(co, &target),
        Request::Stop { target } => command(co, &target, || Cmd::Stop),
        Request::Restart { target } => command(co, &target, || Cmd::Restart),
        // Cluster mode: zero-downtime; fork mode: a restart, as in PM2.
        Request::Reload { target } => command(co, &target, || Cmd::Reload),
        Request::Delete { target } => command(co, &target, || Cmd::Delete),
        Request::Reset { target } => command(co, &target, || Cmd::Reset),
        Request::Signal { signal, target } => match crate::config::parse_signal(&signal) {
            Ok(sig) => command(co, &target, || Cmd::Signal(sig)),
            Err(_) => error(format!("unknown signal {signal:?} (try SIGUSR2, SIGHUP, SIGTERM, …)")),
        },
        Request::Send { target, message } => {
            let message = Arc::new(message);
            command(co, &target, || Cmd::Send(message.clone()))
        }
        Request::Scale { name, count } => scale(co, &name, &count),
        Request::Logs { target, lines, after } => logs(co, target.as_deref(), lines, after),
        Request::Flush { target } => flush(co, target.as_deref()),
        Request::Apply { action, ecosystem } => apply(co, &action, ecosystem),
        Request::ReloadLogs => {
            co.logs.reopen_files();
            Reply::ok()
        }
        // The runtime's own stop signal: the one shutdown path (kill_timeout, exit code).
        Request::Kill => {
            crate::process::unix::signal_pid(std::process::id(), nix::sys::signal::Signal::SIGTERM);
            Reply::ok()
        }
    }
}

/// pm_ids a target names (`all`, `/regex/`, a name, a namespace, a pm_id: PM2's order).
pub fn resolve(co: &Coordinator, target: &str) -> Result<Vec<u32>, String> {
    use crate::control::target::{Row, select};
    let rows: Vec<Row> = co
        .slots
        .iter()
        .map(|(id, s)| Row { pm_id: *id, name: &co.apps[s.app_index].name, namespace: &co.apps[s.app_index].namespace })
        .collect();
    select(target, &rows)
}

/// `start <name>` is PM2's `restartProcessId`: an instance that is running restarts, one that
/// is stopped or errored starts.
fn start(co: &Coordinator, target: &str) -> Reply {
    let running =
        |id: u32| co.slots.get(&id).and_then(|s| s.last.as_ref()).is_some_and(|u| matches!(u.status, Status::Online | Status::Launching));
    match resolve(co, target) {
        Ok(ids) if ids.is_empty() => error(NOTHING),
        Ok(ids) => {
            for id in &ids {
                co.send(*id, if running(*id) { Cmd::Restart } else { Cmd::Start });
            }
            Reply { ids: Some(ids), ..Reply::ok() }
        }
        Err(e) => error(e),
    }
}

/// The refusal of a verb on `all` when there is no app (PM2 exits 1 then).
const NOTHING: &str = "no process found (the runtime has no apps)";

fn command(co: &Coordinator, target: &str, cmd: impl Fn() -> Cmd) -> Reply {
    match resolve(co, target) {
        Ok(ids) if ids.is_empty() => error(NOTHING),
        Ok(ids) => {
            for id in &ids {
                co.send(*id, cmd());
            }
            Reply { ids: Some(ids), ..Reply::ok() }
        }
        Err(e) => error(e),
    }
}

fn ping(co: &Coordinator) -> Reply {
    let mut problems = Vec::new();
    for (id, s) in &co.slots {
        let name = &co.apps[s.app_index].name;
        match &s.last {
            None => problems.push(format!("{name}:{id} has not started yet")),
            Some(u) if u.status == Status::Online => {}
            Some(u) if u.status == Status::Stopped && (u.manual || u.scheduled) => {}
            Some(u) => problems.push(format!("{name}:{id} is {}", u.status.as_str())),
        }
    }
    Reply { healthy: Some(problems.is_empty()), problems: Some(problems), ..Reply::ok() }
}

fn scale(co: &mut Coordinator, name: &str, count: &str) -> Reply {
    let Some(app_index) = co.apps.iter().position(|a| a.name == name) else {
        return error(format!("no app named {name:?}"));
    };
    let current: Vec<u32> = co.slots.iter().filter(|(_, s)| s.app_index == app_index).map(|(k, _)| *k).collect();
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
        let added: Vec<u32> = (n..target).map(|_| co.spawn_instance(app_index)).collect();
        Reply { added: Some(added), instances: Some(target), ..Reply::ok() }
    } else {
        // PM2 removes the first (lowest) ids.
        let removed: Vec<u32> = current.iter().copied().take((n - target) as usize).collect();
        for id in &removed {
            co.send(*id, Cmd::Delete);
        }
        Reply { removed: Some(removed), instances: Some(target), ..Reply::ok() }
    }
}

fn logs(co: &Coordinator, target: Option<&str>, lines: usize, after: Option<u64>) -> Reply {
    let ids = match resolve(co, target.unwrap_or("all")) {
        Ok(ids) => ids,
        Err(e) => return error(e),
    };
    let mut out = Vec::new();
    for id in ids {
        let name = &co.apps[co.slots[&id].app_index].name;
        for (seq, stream, line) in co.logs.recent(id, lines, after) {
            out.push(LogLine {
                seq,
                pm_id: id,
                app_name: name.clone(),
                kind: if stream == Stream::Out { "out" } else { "err" }.to_string(),
                message: String::from_utf8_lossy(&line).into_owned(),
            });
        }
    }
    out.sort_by_key(|l| l.seq);
    Reply { lines: Some(out), ..Reply::ok() }
}

fn flush(co: &Coordinator, target: Option<&str>) -> Reply {
    let ids = match resolve(co, target.unwrap_or("all")) {
        Ok(ids) => ids,
        Err(e) => return error(e),
    };
    let mut paths = Vec::new();
    for id in ids {
        let app = &co.apps[co.slots[&id].app_index];
        for p in [&app.out_file, &app.error_file, &app.log_file].into_iter().flatten() {
            paths.push(app.instance_path(p, id));
        }
    }
    co.logs.truncate_files(Some(&paths));
    Reply { files: Some(paths), ..Reply::ok() }
}

/// PM2's `jlist` shape (see [`super::jlist`]) from the status table; this socket is private to
/// our uid, so the apps' env is included, as PM2 does.
fn processes(co: &mut Coordinator, only: Option<&[u32]>) -> Vec<Value> {
    super::jlist::rows(&co.table_for_reader(), only, super::jlist::Env::Include)
}

/// `startOrRestart` and friends: apps already known are restarted with their new settings
/// (fork mode: reload = restart), new ones are started. Apps not in the file are left alone.
fn apply(co: &mut Coordinator, action: &str, mut eco: crate::config::Ecosystem) -> Reply {
    crate::preload::apply(&mut eco.apps, std::path::Path::new(&co.pm2_home));
    let (mut restarted, mut started) = (Vec::new(), Vec::new());
    for app in eco.apps {
        let name = app.name.clone();
        let new = std::sync::Arc::new(app);
        if let Some(idx) = co.apps.iter().position(|a| a.name == name) {
            co.apps[idx] = new.clone();
            let ids: Vec<u32> = co.slots.iter().filter(|(_, s)| s.app_index == idx).map(|(k, _)| *k).collect();
            if ids.is_empty() {
                for _ in 0..crate::config::resolve_instances(new.instances, co.cpus) {
                    co.spawn_instance(idx);
                }
            }
            for id in ids {
                co.send(id, Cmd::Replace(new.clone()));
            }
            if action != "startOrRestart" {
                tracing::debug!("{action}: {name} restarts with its new settings");
            }
            restarted.push(name);
        } else {
            co.apps.push(new.clone());
            let idx = co.apps.len() - 1;
            for _ in 0..crate::config::resolve_instances(new.instances, co.cpus) {
                co.spawn_instance(idx);
            }
            started.push(name);
        }
    }
    tracing::info!("{action}: restarted [{}], started [{}]", restarted.join(", "), started.join(", "));
    Reply { restarted: Some(restarted), started: Some(started), ..Reply::ok() }
}
