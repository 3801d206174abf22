//! Decision tables of the coordinator: every app-set state that matters × every event that
//! matters, then the paths (auto-exit, stop, panics, scale, apply). No task, no process.

use std::time::SystemTime;

use nix::sys::signal::Signal;

use super::*;
use crate::signals::RuntimeSignal;

/// Apps `a` and `b` (script /bin/sh), with these extra YAML lines for `a`.
fn eco(a_extra: &str) -> Ecosystem {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.yml");
    std::fs::write(&path, format!("apps:\n  - name: a\n    script: /bin/sh\n{a_extra}  - name: b\n    script: /bin/sh\n")).unwrap();
    crate::config::load(&path, &Default::default()).unwrap_or_else(|e| panic!("{e:?}"))
}

fn uid() -> String {
    "u".into()
}

fn begin(auto_exit: bool) -> State {
    let mut st = State::new(eco("").apps.into_iter().map(Arc::new).collect(), auto_exit, 2, uid);
    let fx = st.handle(Event::Begin, SystemTime::UNIX_EPOCH);
    assert_eq!(summary(&fx), ["start 0", "start 1"]);
    st
}

fn report(pm_id: u32, status: Status, pid: Option<u32>, exit: Option<i32>, manual: bool) -> Event {
    Event::Reported(Update {
        pm_id,
        since: None,
        version: None,
        death: None,
        report: Report { pid, last_exit: exit.map(Exit::Code), manual, ..Report::of(status) },
    })
}

fn gone(pm_id: u32) -> Event {
    Event::Reported(Update {
        pm_id,
        since: None,
        version: None,
        death: None,
        report: Report { gone: true, manual: true, ..Report::of(Status::Stopped) },
    })
}

fn step(st: &mut State, ev: Event) -> Vec<String> {
    summary(&st.handle(ev, SystemTime::UNIX_EPOCH))
}

/// The decisions among the effects (publishing, log lines and bus news left out).
fn summary(fx: &[Effect]) -> Vec<String> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::StartTask { pm_id, resumed: false, .. } => Some(format!("start {pm_id}")),
            Effect::StartTask { pm_id, resumed: true, restart_time } => Some(format!("resume {pm_id} ↺{restart_time}")),
            Effect::Hold(pm_id) => Some(format!("hold {pm_id}")),
            Effect::StopApp(app) => Some(format!("stop app {app}")),
            Effect::StopIn(d) => Some(format!("stop in {}s", d.as_secs_f64())),
            Effect::StartRestIn(d) => Some(format!("start the rest in {}s", d.as_secs_f64())),
            Effect::Send(id, cmd) => Some(format!("{} {id}", cmd_name(cmd))),
            Effect::KillTree(pid) => Some(format!("kill {pid}")),
            Effect::Shutdown(l) => Some(format!("shutdown {l:?}")),
            Effect::ReopenLogs => Some("reopen logs".into()),
            Effect::Forget(id) => Some(format!("forget {id}")),
            Effect::Reply(r) if !r.ok => Some(format!("refuse: {}", r.error.clone().unwrap_or_default())),
            Effect::Exit(o) => Some(format!("exit {o:?}")),
            Effect::TerminationLog(_) => None,
            Effect::Publish | Effect::Log(_) | Effect::Announce(_) | Effect::AppMessage { .. } | Effect::Reply(_) => None,
        })
        .collect()
}

fn cmd_name(c: &Cmd) -> &'static str {
    match c {
        Cmd::Restart => "restart",
        Cmd::Start => "start-cmd",
        Cmd::Stop => "stop",
        Cmd::Delete => "delete",
        Cmd::Signal(_) => "signal",
        Cmd::Replace(_) => "replace",
        Cmd::Reset => "reset",
        Cmd::Reload => "reload",
        Cmd::Send(_) => "send",
        Cmd::OverMemory { .. } => "over-memory",
        Cmd::ContainerMemory { .. } => "container-memory",
    }
}

/// The app-set states that matter, by name: a (pm 0) and b (pm 1), both tasks running.
fn states() -> Vec<(&'static str, State)> {
    use Status::*;
    let with = |auto_exit: bool, events: Vec<Event>| {
        let mut st = begin(auto_exit);
        for e in events {
            st.handle(e, SystemTime::UNIX_EPOCH);
        }
        st
    };
    vec![
        ("both online", with(true, vec![report(0, Online, Some(100), None, false), report(1, Online, Some(101), None, false)])),
        ("a finished 0, b online", with(true, vec![report(0, Stopped, None, Some(0), false), report(1, Online, Some(101), None, false)])),
        (
            "a waiting restart, b online",
            with(true, vec![report(0, WaitingRestart, None, Some(1), false), report(1, Online, Some(101), None, false)]),
        ),
        (
            "a stopped by hand, b online",
            with(true, vec![report(0, Stopped, None, Some(0), true), report(1, Online, Some(101), None, false)]),
        ),
        ("a errored, b online", with(true, vec![report(0, Errored, None, Some(1), false), report(1, Online, Some(101), None, false)])),
        (
            "no auto-exit, a finished 0, b online",
            with(false, vec![report(0, Stopped, None, Some(0), false), report(1, Online, Some(101), None, false)]),
        ),
        ("not reported yet", with(true, vec![])),
        (
            "stopping",
            with(
                true,
                vec![
                    report(0, Online, Some(100), None, false),
                    report(1, Online, Some(101), None, false),
                    Event::Signal(RuntimeSignal::Stop),
                ],
            ),
        ),
    ]
}

type MakeEvent = Box<dyn Fn() -> Event>;

/// Runs every event in every state (each from a fresh copy) and compares the table of effects
/// with `want`, printing the differing rows and the whole table when they differ.
fn check_table(states: Vec<(&'static str, State)>, events: Vec<(&'static str, MakeEvent)>, want: &str) {
    let mut got = String::new();
    for (sname, st) in &states {
        for (ename, ev) in &events {
            let mut st = st.clone();
            let fx = step(&mut st, ev());
            let cell = if fx.is_empty() { "-".to_string() } else { fx.join(", ") };
            got.push_str(&format!("{sname} | {ename} | {cell}\n"));
        }
    }
    if got != want {
        let diff: Vec<String> = got.lines().zip(want.lines()).filter(|(g, w)| g != w).map(|(g, w)| format!("got  {g}\nwant {w}")).collect();
        panic!("{}\n\nwhole table:\n{got}", diff.join("\n"));
    }
}

fn events() -> Vec<(&'static str, MakeEvent)> {
    use Status::*;
    vec![
        ("b finishes 0", Box::new(|| report(1, Stopped, None, Some(0), false))),
        ("b finishes 7", Box::new(|| report(1, Stopped, None, Some(7), false))),
        ("b errored", Box::new(|| report(1, Errored, None, Some(1), false))),
        ("stop signal", Box::new(|| Event::Signal(RuntimeSignal::Stop))),
        ("SIGHUP", Box::new(|| Event::Signal(RuntimeSignal::Reload))),
        ("SIGUSR2", Box::new(|| Event::Signal(RuntimeSignal::ReopenLogs))),
        ("forwarded SIGWINCH", Box::new(|| Event::Signal(RuntimeSignal::Forward(Signal::SIGWINCH)))),
        ("a's file changed", Box::new(|| Event::FileChanged { app_index: 0 })),
        ("a's task panicked", Box::new(|| Event::TaskEnded { pm_id: 0, panic: Some("bug".into()) })),
        ("b's task ended", Box::new(|| Event::TaskEnded { pm_id: 1, panic: None })),
        ("scale b +1", Box::new(|| Event::Scale { name: "b".into(), count: "+1".into() })),
        ("start all", Box::new(|| Event::Start { ids: vec![0, 1] })),
    ]
}

/// Every event in every state: the decision, as one line per cell.
#[test]
fn every_event_in_every_state() {
    let want = "\
both online | b finishes 0 | -
both online | b finishes 7 | -
both online | b errored | -
both online | stop signal | shutdown Graceful
both online | SIGHUP | reload 0, reload 1
both online | SIGUSR2 | reopen logs
both online | forwarded SIGWINCH | signal 0, signal 1
both online | a's file changed | restart 0
both online | a's task panicked | kill 100, resume 0 ↺1
both online | b's task ended | -
both online | scale b +1 | start 2
both online | start all | restart 0, restart 1
a finished 0, b online | b finishes 0 | shutdown Graceful
a finished 0, b online | b finishes 7 | shutdown Graceful
a finished 0, b online | b errored | shutdown Graceful
a finished 0, b online | stop signal | shutdown Graceful
a finished 0, b online | SIGHUP | reload 0, reload 1
a finished 0, b online | SIGUSR2 | reopen logs
a finished 0, b online | forwarded SIGWINCH | signal 0, signal 1
a finished 0, b online | a's file changed | restart 0
a finished 0, b online | a's task panicked | resume 0 ↺1
a finished 0, b online | b's task ended | -
a finished 0, b online | scale b +1 | start 2
a finished 0, b online | start all | start-cmd 0, restart 1
a waiting restart, b online | b finishes 0 | -
a waiting restart, b online | b finishes 7 | -
a waiting restart, b online | b errored | -
a waiting restart, b online | stop signal | shutdown Graceful
a waiting restart, b online | SIGHUP | reload 0, reload 1
a waiting restart, b online | SIGUSR2 | reopen logs
a waiting restart, b online | forwarded SIGWINCH | signal 0, signal 1
a waiting restart, b online | a's file changed | restart 0
a waiting restart, b online | a's task panicked | resume 0 ↺1
a waiting restart, b online | b's task ended | -
a waiting restart, b online | scale b +1 | start 2
a waiting restart, b online | start all | start-cmd 0, restart 1
a stopped by hand, b online | b finishes 0 | shutdown Graceful
a stopped by hand, b online | b finishes 7 | shutdown Graceful
a stopped by hand, b online | b errored | shutdown Graceful
a stopped by hand, b online | stop signal | shutdown Graceful
a stopped by hand, b online | SIGHUP | reload 0, reload 1
a stopped by hand, b online | SIGUSR2 | reopen logs
a stopped by hand, b online | forwarded SIGWINCH | signal 0, signal 1
a stopped by hand, b online | a's file changed | -
a stopped by hand, b online | a's task panicked | resume 0 ↺1
a stopped by hand, b online | b's task ended | -
a stopped by hand, b online | scale b +1 | start 2
a stopped by hand, b online | start all | start-cmd 0, restart 1
a errored, b online | b finishes 0 | shutdown Graceful
a errored, b online | b finishes 7 | shutdown Graceful
a errored, b online | b errored | shutdown Graceful
a errored, b online | stop signal | shutdown Graceful
a errored, b online | SIGHUP | reload 0, reload 1
a errored, b online | SIGUSR2 | reopen logs
a errored, b online | forwarded SIGWINCH | signal 0, signal 1
a errored, b online | a's file changed | restart 0
a errored, b online | a's task panicked | resume 0 ↺1
a errored, b online | b's task ended | -
a errored, b online | scale b +1 | start 2
a errored, b online | start all | start-cmd 0, restart 1
no auto-exit, a finished 0, b online | b finishes 0 | -
no auto-exit, a finished 0, b online | b finishes 7 | -
no auto-exit, a finished 0, b online | b errored | -
no auto-exit, a finished 0, b online | stop signal | shutdown Graceful
no auto-exit, a finished 0, b online | SIGHUP | reload 0, reload 1
no auto-exit, a finished 0, b online | SIGUSR2 | reopen logs
no auto-exit, a finished 0, b online | forwarded SIGWINCH | signal 0, signal 1
no auto-exit, a finished 0, b online | a's file changed | restart 0
no auto-exit, a finished 0, b online | a's task panicked | resume 0 ↺1
no auto-exit, a finished 0, b online | b's task ended | -
no auto-exit, a finished 0, b online | scale b +1 | start 2
no auto-exit, a finished 0, b online | start all | start-cmd 0, restart 1
not reported yet | b finishes 0 | -
not reported yet | b finishes 7 | -
not reported yet | b errored | -
not reported yet | stop signal | shutdown Graceful
not reported yet | SIGHUP | reload 0, reload 1
not reported yet | SIGUSR2 | reopen logs
not reported yet | forwarded SIGWINCH | signal 0, signal 1
not reported yet | a's file changed | restart 0
not reported yet | a's task panicked | resume 0 ↺1
not reported yet | b's task ended | -
not reported yet | scale b +1 | start 2
not reported yet | start all | start-cmd 0, start-cmd 1
stopping | b finishes 0 | -
stopping | b finishes 7 | -
stopping | b errored | -
stopping | stop signal | shutdown Force
stopping | SIGHUP | -
stopping | SIGUSR2 | reopen logs
stopping | forwarded SIGWINCH | signal 0, signal 1
stopping | a's file changed | -
stopping | a's task panicked | kill 100
stopping | b's task ended | -
stopping | scale b +1 | refuse: the runtime is stopping
stopping | start all | refuse: the runtime is stopping
";
    check_table(states(), events(), want);
}

#[test]
fn auto_exit_waits_for_every_task_then_says_the_code() {
    use Status::*;
    for (last, code) in [(Some(0), Outcome::AppsFinished(0)), (Some(7), Outcome::AppsFinished(7))] {
        let mut st = begin(true);
        assert_eq!(step(&mut st, report(0, Stopped, None, Some(0), false)), Vec::<String>::new());
        assert_eq!(step(&mut st, report(1, Stopped, None, last, false)), ["shutdown Graceful"]);
        // The instances end (their gone reports keep the slots: the outcome is already decided).
        assert_eq!(step(&mut st, gone(0)), Vec::<String>::new());
        assert_eq!(step(&mut st, Event::TaskEnded { pm_id: 0, panic: None }), Vec::<String>::new());
        assert_eq!(step(&mut st, Event::TaskEnded { pm_id: 1, panic: None }), [format!("exit {code:?}")]);
    }
    // The last app errored: exit 2, whatever the others did.
    let mut st = begin(true);
    step(&mut st, report(0, Stopped, None, Some(5), false));
    step(&mut st, report(1, Errored, None, Some(1), false));
    step(&mut st, Event::TaskEnded { pm_id: 0, panic: None });
    assert_eq!(step(&mut st, Event::TaskEnded { pm_id: 1, panic: None }), ["exit AppErrored"]);
}

#[test]
fn stop_signal_drains_then_exits_requested_and_a_second_one_kills() {
    let mut st = begin(true);
    assert_eq!(step(&mut st, Event::Signal(RuntimeSignal::Stop)), ["shutdown Graceful"]);
    assert!(!st.accepts_requests());
    assert_eq!(step(&mut st, Event::Signal(RuntimeSignal::Stop)), ["shutdown Force"]);
    step(&mut st, gone(0));
    step(&mut st, Event::TaskEnded { pm_id: 0, panic: None });
    assert_eq!(step(&mut st, Event::TaskEnded { pm_id: 1, panic: None }), ["exit Requested"]);
    // No task at all: the stop ends the run at once.
    let mut st = begin(false);
    step(&mut st, Event::TaskEnded { pm_id: 0, panic: None });
    step(&mut st, Event::TaskEnded { pm_id: 1, panic: None });
    assert_eq!(step(&mut st, Event::Signal(RuntimeSignal::Stop)), ["shutdown Graceful", "exit Requested"]);
}

#[test]
fn a_task_that_keeps_panicking_is_errored_and_ends_the_run() {
    let mut st = State::new(eco("    max_restarts: 2\n").apps.into_iter().map(Arc::new).collect(), true, 2, uid);
    st.handle(Event::Begin, SystemTime::UNIX_EPOCH);
    step(&mut st, report(1, Status::Stopped, None, Some(0), false));
    step(&mut st, Event::TaskEnded { pm_id: 1, panic: None });
    assert_eq!(step(&mut st, Event::TaskEnded { pm_id: 0, panic: Some("bug".into()) }), ["resume 0 ↺1"]);
    assert_eq!(st.slots[&0].restarts.get(RestartReason::Crash), 1);
    assert_eq!(step(&mut st, Event::TaskEnded { pm_id: 0, panic: Some("bug".into()) }), ["resume 0 ↺1"]);
    // The third panic is over max_restarts: errored, and nothing else runs: exit 2.
    assert_eq!(step(&mut st, Event::TaskEnded { pm_id: 0, panic: Some("bug".into()) }), ["exit AppErrored"]);
    assert_eq!(st.slots[&0].last.as_ref().map(|u| u.status), Some(Status::Errored));
}

#[test]
fn scale_fills_number_gaps_removes_the_lowest_ids_and_forgets_the_gone() {
    let mut st = begin(true);
    assert_eq!(step(&mut st, Event::Scale { name: "b".into(), count: "3".into() }), ["start 2", "start 3"]);
    let numbers: Vec<u32> = st.slots.values().filter(|s| s.app_index == 1).map(|s| s.instance).collect();
    assert_eq!(numbers, [0, 1, 2]);
    assert_eq!(step(&mut st, Event::Scale { name: "b".into(), count: "-2".into() }), ["delete 1", "delete 2"]);
    assert_eq!(step(&mut st, gone(1)), ["forget 1"]);
    assert_eq!(step(&mut st, Event::TaskEnded { pm_id: 1, panic: None }), Vec::<String>::new());
    // The freed number 0 is taken again.
    assert_eq!(step(&mut st, Event::Scale { name: "b".into(), count: "+1".into() }), ["start 4"]);
    assert_eq!(st.slots[&4].instance, 0);
    for (count, why) in [("3", "already has 3"), ("x", "expected N"), ("+99999", "scale b")] {
        let fx = step(&mut st, Event::Scale { name: "b".into(), count: count.into() });
        assert!(fx.len() == 1 && fx[0].contains(why), "{count}: {fx:?}");
    }
    assert_eq!(step(&mut st, Event::Scale { name: "zz".into(), count: "1".into() }), ["refuse: no app named \"zz\""]);
}

#[test]
fn apply_replaces_known_apps_and_starts_new_ones() {
    let mut st = begin(true);
    let mut new = eco("");
    new.apps[1].name = "c".into();
    let fx = st.handle(Event::Apply { action: "startOrRestart".into(), eco: new }, SystemTime::UNIX_EPOCH);
    assert_eq!(summary(&fx), ["replace 0", "start 2"]);
    let reply = fx.iter().find_map(|e| if let Effect::Reply(r) = e { Some(r.clone()) } else { None }).unwrap();
    assert_eq!(reply.restarted, Some(vec!["a".to_string()]));
    assert_eq!(reply.started, Some(vec!["c".to_string()]));
    assert_eq!(st.apps.len(), 3);
}

#[test]
fn a_refresh_is_no_news_but_a_restart_is_counted() {
    use Status::*;
    let mut st = begin(true);
    let news = |fx: &[Effect]| fx.iter().filter(|e| matches!(e, Effect::Announce(_))).count();
    assert_eq!(news(&st.handle(report(0, Online, Some(100), None, false), SystemTime::UNIX_EPOCH)), 1);
    assert_eq!(news(&st.handle(report(0, Online, Some(100), None, false), SystemTime::UNIX_EPOCH)), 0);
    let restart = Event::Reported(Update {
        pm_id: 0,
        since: None,
        version: None,
        death: None,
        report: Report { reason: Some(RestartReason::Watch), ..Report::of(Launching) },
    });
    assert_eq!(news(&st.handle(restart, SystemTime::UNIX_EPOCH)), 1);
    assert_eq!(st.slots[&0].restarts.get(RestartReason::Watch), 1);
}

/// An app set from YAML (`script: /bin/sh` for every app).
fn apps_of(yaml: &str) -> Vec<Arc<App>> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.yml");
    std::fs::write(&path, yaml).unwrap();
    crate::config::load(&path, &Default::default()).unwrap_or_else(|e| panic!("{e:?}")).apps.into_iter().map(Arc::new).collect()
}

/// migrate (init job, pm 0), proxy (sidecar, pm 1), web (pm 2): web waits for migrate to
/// complete and proxy to be ready; migrate waits for proxy.
const ORDERED: &str = "apps:\n  - name: migrate\n    role: init\n    script: /bin/sh\n  - name: proxy\n    role: sidecar\n    script: /bin/sh\n  - name: web\n    script: /bin/sh\n";

fn ordered(auto_exit: bool) -> State {
    let mut st = State::new(apps_of(ORDERED), auto_exit, 2, uid);
    assert_eq!(step(&mut st, Event::Begin), ["hold 0", "start 1", "hold 2"]);
    st
}

/// The ordered app-set's states that matter, by name.
fn ordered_states() -> Vec<(&'static str, State)> {
    use Status::*;
    let with = |auto_exit: bool, events: Vec<Event>| {
        let mut st = ordered(auto_exit);
        for e in events {
            st.handle(e, SystemTime::UNIX_EPOCH);
        }
        st
    };
    let migrating = || vec![report(1, Online, Some(101), None, false), report(0, Online, Some(100), None, false)];
    let web_online = || {
        let mut v = migrating();
        v.extend([report(0, Stopped, None, Some(0), false), report(2, Online, Some(102), None, false)]);
        v
    };
    vec![
        ("proxy starting", with(true, vec![report(1, Launching, Some(101), None, false)])),
        ("migrating", with(true, migrating())),
        ("web online", with(true, web_online())),
        ("no auto-exit, web online", with(false, web_online())),
        ("stopping, web online", with(true, web_online().into_iter().chain([Event::Signal(RuntimeSignal::Stop)]).collect())),
    ]
}

fn ordered_events() -> Vec<(&'static str, MakeEvent)> {
    use Status::*;
    vec![
        ("proxy ready", Box::new(|| report(1, Online, Some(101), None, false))),
        ("migrate exits 0", Box::new(|| report(0, Stopped, None, Some(0), false))),
        ("migrate exits 3", Box::new(|| report(0, Stopped, None, Some(3), false))),
        ("web errored", Box::new(|| report(2, Errored, None, Some(1), false))),
        ("web finishes 0", Box::new(|| report(2, Stopped, None, Some(0), false))),
        ("proxy errored", Box::new(|| report(1, Errored, None, Some(1), false))),
        ("stop signal", Box::new(|| Event::Signal(RuntimeSignal::Stop))),
        ("SIGHUP", Box::new(|| Event::Signal(RuntimeSignal::Reload))),
        ("start web", Box::new(|| Event::Start { ids: vec![2] })),
        ("web's task ended", Box::new(|| Event::TaskEnded { pm_id: 2, panic: None })),
        ("proxy's task ended", Box::new(|| Event::TaskEnded { pm_id: 1, panic: None })),
    ]
}

/// Every order event in every state of an app set with an init job and a sidecar.
#[test]
fn every_order_event_in_every_ordered_state() {
    let want = "\
proxy starting | proxy ready | start 0
proxy starting | migrate exits 0 | -
proxy starting | migrate exits 3 | forget 0, forget 2, shutdown Graceful
proxy starting | web errored | -
proxy starting | web finishes 0 | -
proxy starting | proxy errored | forget 0, forget 2, shutdown Graceful
proxy starting | stop signal | forget 0, forget 2, stop app 0, stop app 1, stop app 2
proxy starting | SIGHUP | reload 1
proxy starting | start web | start-cmd 2
proxy starting | web's task ended | -
proxy starting | proxy's task ended | -
migrating | proxy ready | -
migrating | migrate exits 0 | start 2
migrating | migrate exits 3 | forget 2, shutdown Graceful
migrating | web errored | -
migrating | web finishes 0 | -
migrating | proxy errored | -
migrating | stop signal | forget 2, stop app 0, stop app 2
migrating | SIGHUP | reload 1
migrating | start web | start-cmd 2
migrating | web's task ended | -
migrating | proxy's task ended | -
web online | proxy ready | -
web online | migrate exits 0 | -
web online | migrate exits 3 | -
web online | web errored | shutdown Graceful
web online | web finishes 0 | shutdown Graceful
web online | proxy errored | -
web online | stop signal | stop app 2
web online | SIGHUP | reload 1, reload 2
web online | start web | restart 2
web online | web's task ended | -
web online | proxy's task ended | -
no auto-exit, web online | proxy ready | -
no auto-exit, web online | migrate exits 0 | -
no auto-exit, web online | migrate exits 3 | -
no auto-exit, web online | web errored | -
no auto-exit, web online | web finishes 0 | -
no auto-exit, web online | proxy errored | -
no auto-exit, web online | stop signal | stop app 2
no auto-exit, web online | SIGHUP | reload 1, reload 2
no auto-exit, web online | start web | restart 2
no auto-exit, web online | web's task ended | -
no auto-exit, web online | proxy's task ended | -
stopping, web online | proxy ready | -
stopping, web online | migrate exits 0 | -
stopping, web online | migrate exits 3 | -
stopping, web online | web errored | -
stopping, web online | web finishes 0 | -
stopping, web online | proxy errored | -
stopping, web online | stop signal | shutdown Force
stopping, web online | SIGHUP | -
stopping, web online | start web | refuse: the runtime is stopping
stopping, web online | web's task ended | stop app 0
stopping, web online | proxy's task ended | -
";
    check_table(ordered_states(), ordered_events(), want);
}

#[test]
fn a_failed_init_job_ends_the_run_with_its_code_and_nothing_else_starts() {
    use Status::*;
    let mut st = ordered(false);
    assert_eq!(step(&mut st, report(1, Online, Some(101), None, false)), ["start 0"]);
    assert_eq!(st.order.waiting[2].as_deref(), Some("migrate (completed)"), "ls says what web waits for");
    // Even without auto-exit: the held web is gone, what runs stops, the code is the job's.
    assert_eq!(step(&mut st, report(0, Stopped, None, Some(3), false)), ["forget 2", "shutdown Graceful"]);
    assert!(!st.slots.contains_key(&2));
    assert_eq!(step(&mut st, Event::TaskEnded { pm_id: 0, panic: None }), Vec::<String>::new());
    assert_eq!(step(&mut st, Event::TaskEnded { pm_id: 1, panic: None }), ["exit AppsFinished(3)"]);
}

#[test]
fn a_completed_init_job_releases_its_dependents_and_the_main_app_ends_the_run_despite_the_sidecar() {
    use Status::*;
    let mut st = ordered(true);
    step(&mut st, report(1, Online, Some(101), None, false));
    assert_eq!(step(&mut st, report(0, Stopped, None, Some(0), false)), ["start 2"]);
    assert_eq!(st.order.waiting[2], None);
    step(&mut st, report(2, Online, Some(102), None, false));
    // The sidecar leaving neither ends the run nor counts.
    assert_eq!(step(&mut st, report(1, Errored, None, Some(1), false)), Vec::<String>::new());
    step(&mut st, report(1, Online, Some(103), None, false));
    // The last main app errors while the sidecar runs: the run ends (exit 2), the sidecar is
    // stopped with what is left.
    assert_eq!(step(&mut st, report(2, Errored, None, Some(1), false)), ["shutdown Graceful"]);
    step(&mut st, Event::TaskEnded { pm_id: 0, panic: None });
    step(&mut st, Event::TaskEnded { pm_id: 2, panic: None });
    assert_eq!(step(&mut st, Event::TaskEnded { pm_id: 1, panic: None }), ["exit AppErrored"]);
}

#[test]
fn the_stop_runs_dependents_first_and_the_sidecar_last() {
    use Status::*;
    let mut st = ordered(true);
    for e in
        [report(1, Online, Some(101), None, false), report(0, Stopped, None, Some(0), false), report(2, Online, Some(102), None, false)]
    {
        step(&mut st, e);
    }
    assert_eq!(step(&mut st, Event::Signal(RuntimeSignal::Stop)), ["stop app 2"]);
    // web ends: migrate (its task still runs, done) is next; proxy waits for both.
    step(&mut st, gone(2));
    assert_eq!(step(&mut st, Event::TaskEnded { pm_id: 2, panic: None }), ["stop app 0"]);
    assert_eq!(step(&mut st, Event::TaskEnded { pm_id: 0, panic: None }), ["stop app 1"]);
    assert_eq!(step(&mut st, Event::TaskEnded { pm_id: 1, panic: None }), ["exit Requested"]);
}

#[test]
fn a_stop_signal_during_a_held_start_drops_the_held_instances() {
    use Status::*;
    let mut st = ordered(true);
    step(&mut st, report(1, Online, Some(101), None, false));
    let fx = step(&mut st, Event::Signal(RuntimeSignal::Stop));
    assert_eq!(fx, ["forget 2", "stop app 0", "stop app 2"]);
    assert!(!st.held.contains_key(&2) && !st.slots.contains_key(&2));
    // Nothing is released any more, whatever the apps reach.
    assert_eq!(step(&mut st, report(0, Stopped, None, Some(0), false)), Vec::<String>::new());
    assert_eq!(step(&mut st, Event::TaskEnded { pm_id: 0, panic: None }), ["stop app 1"]);
    assert_eq!(step(&mut st, Event::TaskEnded { pm_id: 1, panic: None }), ["exit Requested"]);
}

#[test]
fn start_of_a_blocked_app_starts_its_stopped_dependencies_then_it_is_released() {
    use Status::*;
    let yaml = "apps:\n  - name: db\n    autorestart: false\n    script: /bin/sh\n  - name: web\n    depends_on: {db: completed}\n    script: /bin/sh\n";
    let mut st = State::new(apps_of(yaml), false, 2, uid);
    assert_eq!(step(&mut st, Event::Begin), ["start 0", "hold 1"]);
    step(&mut st, report(0, Stopped, None, Some(3), false));
    assert_eq!(st.order.waiting[1].as_deref(), Some("db (completed): it ended with code 3; start it to try again"));
    // `start web`: web's inbox keeps the start, db (stopped, needed) is started.
    assert_eq!(step(&mut st, Event::Start { ids: vec![1] }), ["start-cmd 1", "start-cmd 0"]);
    step(&mut st, report(0, Launching, Some(100), None, false));
    assert_eq!(step(&mut st, report(0, Stopped, None, Some(0), false)), ["start 1"]);
    // A completed dependency is done, not stopped: it is not started again.
    step(&mut st, report(1, Stopped, None, Some(0), true));
    assert_eq!(step(&mut st, Event::Start { ids: vec![1] }), ["start-cmd 1"]);
}

#[test]
fn a_blocked_held_app_counts_as_settled_for_auto_exit() {
    use Status::*;
    let yaml = "apps:\n  - name: db\n    autorestart: false\n    script: /bin/sh\n  - name: web\n    depends_on: {db: completed}\n    script: /bin/sh\n";
    let mut st = State::new(apps_of(yaml), true, 2, uid);
    step(&mut st, Event::Begin);
    assert_eq!(step(&mut st, report(0, Stopped, None, Some(3), false)), ["forget 1", "shutdown Graceful"]);
    assert_eq!(step(&mut st, Event::TaskEnded { pm_id: 0, panic: None }), ["exit AppsFinished(3)"]);
}

#[test]
fn shutdown_delay_stops_the_apps_when_it_is_over_and_a_second_signal_at_once() {
    let mut st = begin(true);
    st.shutdown_delay = std::time::Duration::from_millis(1500);
    assert_eq!(step(&mut st, Event::Signal(RuntimeSignal::Stop)), ["stop in 1.5s"]);
    assert!(!st.accepts_requests(), "readiness ends at once");
    assert_eq!(step(&mut st, Event::DelayOver), ["shutdown Graceful"]);
    assert_eq!(step(&mut st, Event::DelayOver), Vec::<String>::new());
    let mut st = begin(true);
    st.shutdown_delay = std::time::Duration::from_secs(2);
    step(&mut st, Event::Signal(RuntimeSignal::Stop));
    assert_eq!(step(&mut st, Event::Signal(RuntimeSignal::Stop)), ["shutdown Force"]);
    assert_eq!(step(&mut st, Event::DelayOver), Vec::<String>::new(), "the delay is over for nothing");
}

fn sampled(pairs: &[(u32, u64)]) -> Event {
    Event::Sampled(pairs.iter().map(|&(id, bytes)| (id, Sample { memory_bytes: bytes, ..Default::default() })).collect())
}

#[test]
fn a_sample_over_max_memory_restart_is_told_to_its_running_instance() {
    use Status::*;
    let mut st = State::new(eco("    max_memory_restart: 100M\n").apps.into_iter().map(Arc::new).collect(), true, 2, uid);
    step(&mut st, Event::Begin);
    step(&mut st, report(0, Online, Some(100), None, false));
    step(&mut st, report(1, Online, Some(101), None, false));
    // b has no limit; a under its limit: nothing.
    assert_eq!(step(&mut st, sampled(&[(0, 50 << 20), (1, 500 << 20)])), Vec::<String>::new());
    assert_eq!(st.slots[&1].sample.memory_bytes, 500 << 20, "the numbers go into the table");
    assert_eq!(step(&mut st, sampled(&[(0, 101 << 20)])), ["over-memory 0"]);
    assert_eq!(st.slots[&1].sample.memory_bytes, 0, "not in the sweep: nothing");
}

#[test]
fn recycling_picks_the_largest_online_instance_and_respects_its_backoff() {
    use Status::*;
    use std::time::{Duration, Instant};
    let mut st = begin(true);
    st.recycler = Some(Recycler::new(0.95));
    step(&mut st, report(0, Online, Some(100), None, false));
    step(&mut st, report(1, Online, Some(101), None, false));
    step(&mut st, sampled(&[(0, 300), (1, 500)]));
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let mem = |used, s| Event::ContainerMemory { used, limit: 1000, at: at(s) };
    assert!(!st.memory_pressed(949, 1000) && st.memory_pressed(950, 1000));
    assert_eq!(step(&mut st, mem(949, 0)), Vec::<String>::new());
    let fx = st.handle(mem(950, 1), SystemTime::UNIX_EPOCH);
    assert_eq!(summary(&fx), ["container-memory 1"]);
    let warned =
        fx.iter().any(|e| matches!(e, Effect::Log(n) if n.level == Level::Warn && n.text.contains("restarting [b:1], the largest")));
    assert!(warned, "{fx:?}");
    // b restarts: nothing else meanwhile; online again and still pressed, within 5 s: nothing.
    step(&mut st, report(1, Launching, Some(102), None, false));
    assert_eq!(step(&mut st, mem(990, 2)), Vec::<String>::new());
    step(&mut st, report(1, Online, Some(102), None, false));
    step(&mut st, sampled(&[(0, 300), (1, 50)]));
    assert_eq!(step(&mut st, mem(990, 3)), Vec::<String>::new(), "the backoff after a recycle that did not help");
    assert_eq!(step(&mut st, mem(990, 7)), ["container-memory 0"]);
    // Stopping: never.
    step(&mut st, report(0, Online, Some(103), None, false));
    step(&mut st, Event::Signal(RuntimeSignal::Stop));
    assert_eq!(step(&mut st, mem(999, 100)), Vec::<String>::new());
    // Off: never, and no reading is pressed.
    let mut st = begin(true);
    assert!(!st.memory_pressed(999, 1000));
    assert_eq!(step(&mut st, mem(999, 0)), Vec::<String>::new());
}

#[test]
fn app_messages_land_in_the_table_bounded_and_go_on_the_bus() {
    let mut st = begin(true);
    let msg = |v: serde_json::Value| Event::AppMessage { pm_id: 0, message: v };
    let on_bus = |fx: &[Effect]| fx.iter().filter(|e| matches!(e, Effect::AppMessage { pm_id: 0, .. })).count();
    let fx = st.handle(msg(serde_json::json!({"type": "axm:monitor", "data": {"reqs": {"value": 3}}})), SystemTime::UNIX_EPOCH);
    assert_eq!(on_bus(&fx), 1);
    assert_eq!(st.slots[&0].axm_monitor["reqs"]["value"], 3);
    for i in 0..70 {
        st.handle(msg(serde_json::json!({"type": "axm:action", "data": {"action_name": format!("a{i}")}})), SystemTime::UNIX_EPOCH);
    }
    st.handle(msg(serde_json::json!({"type": "axm:action", "data": {"action_name": "a1"}})), SystemTime::UNIX_EPOCH);
    assert_eq!(st.slots[&0].axm_actions.len(), 64, "at most 64 actions, each once");
    // The watchdog's heartbeat keeps its lag and is no event.
    let fx = st.handle(msg(serde_json::json!({"type": crate::preload::HEARTBEAT, "lag": 250.0})), SystemTime::UNIX_EPOCH);
    assert_eq!(on_bus(&fx), 0);
    assert_eq!(st.slots[&0].event_loop_lag, Some(0.25));
    // Anything else only goes on the bus; an unknown instance's, nowhere.
    assert_eq!(on_bus(&st.handle(msg(serde_json::json!({"hello": 1})), SystemTime::UNIX_EPOCH)), 1);
    let stray = Event::AppMessage { pm_id: 9, message: serde_json::json!({}) };
    assert!(st.handle(stray, SystemTime::UNIX_EPOCH).is_empty());
}

#[test]
fn an_app_added_by_apply_waits_for_what_it_needs_among_the_running_ones() {
    use Status::*;
    let mut st = begin(true);
    // The file names b as it runs (the client checked the name); only c is new.
    let c = apps_of("apps:\n  - name: b\n    script: /bin/sh\n  - name: c\n    depends_on: {b: online}\n    script: /bin/sh\n")[1].clone();
    let new = Ecosystem { apps: vec![(*c).clone()], ..eco("") };
    assert_eq!(step(&mut st, Event::Apply { action: "startOrRestart".into(), eco: new }), ["hold 2"]);
    assert_eq!(st.order.waiting[2].as_deref(), Some("b (online)"));
    assert_eq!(step(&mut st, report(1, Online, Some(101), None, false)), ["start 2"]);
}

/// The start schedule (`staging.rs`): 4 instances on 2 CPUs, `preload`: started with the preload.
fn staged(preload: bool) -> State {
    let mut app = (*apps_of("apps:\n  - name: w\n    script: /bin/sh\n    instances: 4\n")[0]).clone();
    if preload {
        app.command.argv = crate::preload::with_preload(&app.command.argv, std::path::Path::new("/h/pm-runtime-preload.cjs"));
    }
    let mut st = State::new(vec![Arc::new(app)], true, 2, uid);
    assert_eq!(step(&mut st, Event::Begin), ["start 0", "start 1", "hold 2", "hold 3", "start the rest in 1s"]);
    st
}

fn started(pm_id: u32) -> Event {
    Event::AppMessage { pm_id, message: serde_json::json!({ "type": crate::preload::STARTED }) }
}

#[test]
fn a_first_wave_per_cpu_then_the_rest_once_one_of_it_is_up() {
    let rest = ["start 2", "start 3"].map(String::from).to_vec();
    for (what, preload, events, released_by_last) in [
        ("the preload says the main module ran", true, vec![report(0, Status::Online, Some(10), None, false), started(0)], true),
        ("a process with the preload exists: not yet", true, vec![report(0, Status::Online, Some(10), None, false)], false),
        ("a held instance cannot release itself", true, vec![started(2)], false),
        ("without the preload, its process existing is enough", false, vec![report(1, Status::Online, Some(11), None, false)], true),
        ("a first-wave instance ended", true, vec![report(0, Status::Errored, None, Some(1), false)], true),
        ("the bound is over", true, vec![Event::StartRest], true),
    ] {
        let mut st = staged(preload);
        let mut last = Vec::new();
        for ev in events {
            last = step(&mut st, ev);
        }
        let got: Vec<String> = last.into_iter().filter(|e| e.starts_with("start ")).collect();
        assert_eq!(got, if released_by_last { rest.clone() } else { vec![] }, "{what}");
        if released_by_last {
            // Once: nothing is held any more, the bound starts nothing.
            assert_eq!(step(&mut st, Event::StartRest), Vec::<String>::new(), "{what}");
            assert_eq!(step(&mut st, started(1)), Vec::<String>::new(), "{what}");
        }
    }
}

#[test]
fn the_preloads_start_message_is_never_on_the_bus() {
    let mut st = staged(true);
    for id in [0, 2] {
        let fx = st.handle(started(id), SystemTime::UNIX_EPOCH);
        assert!(!fx.iter().any(|e| matches!(e, Effect::AppMessage { .. })), "{fx:?}");
    }
}

#[test]
fn a_stop_while_the_schedule_holds_instances_forgets_them() {
    let mut st = staged(true);
    let fx = step(&mut st, Event::Signal(RuntimeSignal::Stop));
    for f in ["forget 2", "forget 3"] {
        assert!(fx.contains(&f.to_string()), "{fx:?}");
    }
    assert_eq!(step(&mut st, Event::StartRest), Vec::<String>::new());
}
