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
use crate::control::target::TargetError;
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
            Err(e) => Answer::Reply(e.into()),
        },
        Request::Start { target } => match ids(st, &target) {
            Ok(ids) => Answer::Decide(Event::Start { ids }),
            Err(e) => Answer::Reply(e.into()),
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

/// The instances a verb names, or the refusal (a verb on `all` when there is no app is one:
/// PM2 exits 1 then).
fn ids(st: &State, target: &str) -> Result<Vec<u32>, TargetError> {
    match st.resolve(target) {
        Ok(ids) if ids.is_empty() => Err(TargetError::NoProcess),
        r => r,
    }
}

fn command(st: &State, target: &str, cmd: Cmd) -> Answer {
    match ids(st, target) {
        Ok(ids) => Answer::Decide(Event::Command { ids, cmd }),
        Err(e) => Answer::Reply(e.into()),
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
        Err(e) => return e.into(),
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
        Err(e) => return e.into(),
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::SystemTime;

    use super::*;
    use crate::control::protocol::Request as R;

    /// The runtime after start, with apps `web` (2 instances) and `worker`.
    fn started() -> State {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.yml");
        let yml = "apps:\n  - name: web\n    script: /bin/sh\n    instances: 2\n  - name: worker\n    script: /bin/sh\n";
        std::fs::write(&path, yml).unwrap();
        let eco = crate::config::load(&path, &Default::default()).unwrap_or_else(|e| panic!("{e:?}"));
        let mut st = State::new(eco.apps.into_iter().map(Arc::new).collect(), true, 2, || "u".into());
        st.handle(Event::Begin, SystemTime::UNIX_EPOCH);
        st
    }

    fn reply(st: &State, req: Request, hub: &LogHub) -> Reply {
        match handle(st, req, hub, "/nonexistent") {
            Answer::Reply(r) => r,
            _ => panic!("expected a refusal"),
        }
    }

    /// A target that names nothing is refused with what was tried, marked as such (the HTTP
    /// API's `404`); a target that cannot be read is a refusal of another kind (`409`).
    #[test]
    fn a_target_that_names_nothing_is_refused_as_not_found() {
        let st = started();
        let hub = LogHub::start(crate::logs::OutputFormat::Raw, &[]).unwrap();
        let nope = || "nope".to_string();
        let asks = [
            R::Stop { target: nope() },
            R::Start { target: nope() },
            R::Show { target: nope() },
            R::Logs { target: Some(nope()), lines: 5, after: None },
            R::Flush { target: Some(nope()) },
        ];
        for req in asks {
            let what = format!("{req:?}");
            let r = reply(&st, req, &hub);
            assert!(!r.ok && r.not_found, "{what}: {r:?}");
            assert_eq!(r.error.as_deref(), Some("no app or namespace named \"nope\" (known: web, worker)"), "{what}");
        }
        let r = reply(&st, R::Restart { target: "/(/".into() }, &hub);
        assert!(!r.ok && !r.not_found, "{r:?}");
        assert!(r.error.unwrap().starts_with("/(/: not a valid regular expression"));
        assert!(
            matches!(handle(&st, R::Stop { target: "web".into() }, &hub, "/x"), Answer::Decide(Event::Command { ref ids, .. }) if ids == &[0, 1])
        );
    }

    #[test]
    fn a_verb_on_all_without_apps_is_refused_as_not_found() {
        let st = State::new(vec![], true, 2, || "u".into());
        let hub = LogHub::start(crate::logs::OutputFormat::Raw, &[]).unwrap();
        let r = reply(&st, R::Stop { target: "all".into() }, &hub);
        assert!(r.not_found, "{r:?}");
        assert_eq!(r.error.as_deref(), Some("no process found (the runtime has no apps)"));
    }
}
