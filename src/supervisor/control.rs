//! Turns control requests (`ls`, `stop web`, `scale web +2`…) into answers: reads of the
//! table and the log hub are answered here, anything that changes the app set becomes an
//! [`Event`] for the decider (`coordinator.rs`).
//!
//! Runs inside the coordinator's task, so it reads the state without any sharing. Commands to
//! instances are sent and answered at once; the client follows up with `ls` if it wants to wait
//! for the result. Knows the decider's state and events, never the loop around them.

use super::coordinator::{Event, State};
use super::machine::Cmd;
use super::status::Status;
use crate::control::protocol::{LogLine, Reply, Request, error};
use crate::logs::{LogHub, Stream};

/// What a request needs.
pub enum Answer {
    Reply(Reply),
    /// PM2's `jlist` rows of the table (these pm_ids, or all), with fresh numbers.
    List {
        only: Option<Vec<u32>>,
    },
    /// A decision: the decider's reply is the answer.
    Decide(Event),
}

pub fn handle(st: &State, req: Request, logs: &LogHub, pm2_home: &str) -> Answer {
    match req {
        Request::Ping => Answer::Reply(ping(st)),
        Request::Ls => Answer::List { only: None },
        Request::Show { target } => match st.resolve(&target) {
            Ok(ids) => Answer::List { only: Some(ids) },
            Err(e) => Answer::Reply(error(e.to_string())),
        },
        Request::Start { target } => match ids(st, &target) {
            Ok(ids) => Answer::Decide(Event::Start { ids }),
            Err(e) => Answer::Reply(error(e)),
        },
        Request::Stop { target } => command(st, &target, Cmd::Stop),
        Request::Restart { target } => command(st, &target, Cmd::Restart),
        // Cluster mode: zero-downtime; fork mode: a restart, as in PM2.
        Request::Reload { target } => command(st, &target, Cmd::Reload),
        Request::Delete { target } => command(st, &target, Cmd::Delete),
        Request::Reset { target } => command(st, &target, Cmd::Reset),
        Request::Signal { signal, target } => match crate::config::parse_signal(&signal) {
            Ok(sig) => command(st, &target, Cmd::Signal(sig)),
            Err(_) => Answer::Reply(error(format!("unknown signal {signal:?} (try SIGUSR2, SIGHUP, SIGTERM, …)"))),
        },
        Request::Send { target, message } => command(st, &target, Cmd::Send(std::sync::Arc::new(message))),
        Request::Scale { name, count } => Answer::Decide(Event::Scale { name, count }),
        Request::Logs { target, lines, after } => Answer::Reply(recent_logs(st, logs, target.as_deref(), lines, after)),
        Request::Flush { target } => Answer::Reply(flush(st, logs, target.as_deref())),
        Request::Apply { action, mut ecosystem } => {
            crate::preload::apply(&mut ecosystem.apps, std::path::Path::new(pm2_home));
            Answer::Decide(Event::Apply { action, eco: ecosystem })
        }
        Request::ReloadLogs => {
            logs.reopen_files();
            Answer::Reply(Reply::ok())
        }
        // The runtime's own stop signal: the one shutdown path (kill_timeout, exit code).
        Request::Kill => {
            crate::process::unix::signal_pid(std::process::id(), nix::sys::signal::Signal::SIGTERM);
            Answer::Reply(Reply::ok())
        }
    }
}

/// The refusal of a verb on `all` when there is no app (PM2 exits 1 then).
const NOTHING: &str = "no process found (the runtime has no apps)";

/// The instances a verb names, or the refusal.
fn ids(st: &State, target: &str) -> Result<Vec<u32>, String> {
    match st.resolve(target) {
        Ok(ids) if ids.is_empty() => Err(NOTHING.to_string()),
        Ok(ids) => Ok(ids),
        Err(e) => Err(e.to_string()),
    }
}

fn command(st: &State, target: &str, cmd: Cmd) -> Answer {
    match ids(st, target) {
        Ok(ids) => Answer::Decide(Event::Command { ids, cmd }),
        Err(e) => Answer::Reply(error(e)),
    }
}

fn ping(st: &State) -> Reply {
    let mut problems = Vec::new();
    for (id, s) in &st.slots {
        let name = &st.apps[s.app_index].name;
        match &s.last {
            None => problems.push(format!("{name}:{id} has not started yet")),
            Some(u) if u.status == Status::Online => {}
            Some(u) if u.status == Status::Stopped && (u.manual || u.scheduled) => {}
            Some(u) => problems.push(format!("{name}:{id} is {}", u.status.as_str())),
        }
    }
    Reply { healthy: Some(problems.is_empty()), problems: Some(problems), ..Reply::ok() }
}

fn recent_logs(st: &State, hub: &LogHub, target: Option<&str>, lines: usize, after: Option<u64>) -> Reply {
    let ids = match st.resolve(target.unwrap_or("all")) {
        Ok(ids) => ids,
        Err(e) => return error(e.to_string()),
    };
    let mut out = Vec::new();
    for id in ids {
        let name = &st.apps[st.slots[&id].app_index].name;
        for (seq, stream, line) in hub.recent(id, lines, after) {
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

fn flush(st: &State, hub: &LogHub, target: Option<&str>) -> Reply {
    let ids = match st.resolve(target.unwrap_or("all")) {
        Ok(ids) => ids,
        Err(e) => return error(e.to_string()),
    };
    let mut paths = Vec::new();
    for id in ids {
        let app = &st.apps[st.slots[&id].app_index];
        for p in [&app.out_file, &app.error_file, &app.log_file].into_iter().flatten() {
            paths.push(app.instance_path(p, id));
        }
    }
    hub.truncate_files(Some(&paths));
    Reply { files: Some(paths), ..Reply::ok() }
}
