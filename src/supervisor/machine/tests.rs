//! Transition tests: every command in every state, and the lifecycle paths that matter
//! (Horust's `service_handler` tests are the model). No process, no clock: instants are made up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::*;
use crate::config::App;

/// App `a` (script /bin/sh) with these extra YAML lines, through the real config loader.
fn app(yaml_extra: &str) -> Arc<App> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.yml");
    std::fs::write(&path, format!("apps:\n  - name: a\n    script: /bin/sh\n{yaml_extra}")).unwrap();
    let eco = crate::config::load(&path, &Default::default()).unwrap_or_else(|e| panic!("{e:?}"));
    Arc::new(eco.apps.into_iter().next().unwrap())
}

fn machine(extra: &str) -> (Machine, Instant) {
    let now = Instant::now();
    (Machine::new(app(extra), 0, false, 0, policy::BACKOFF_RESET, now), now)
}

/// Drives a machine to Online with pid 100.
fn online(extra: &str) -> (Machine, Instant) {
    let (mut m, now) = machine(extra);
    let fx = m.step(Input::Begin, now);
    assert!(fx.contains(&Effect::Spawn), "{fx:?}");
    m.step(Input::Spawned { pid: 100 }, now);
    assert!(matches!(m.state, State::Online { pid: 100, .. }), "{:?}", m.state);
    (m, now)
}

fn reports(fx: &[Effect]) -> Vec<Status> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Report(r) => Some(r.status),
            _ => None,
        })
        .collect()
}

fn armed(fx: &[Effect], t: Timer) -> Option<Instant> {
    fx.iter().find_map(|e| match e {
        Effect::Arm(x, at) if *x == t => Some(*at),
        _ => None,
    })
}

fn all_cmds() -> Vec<Cmd> {
    vec![
        Cmd::Restart,
        Cmd::Start,
        Cmd::Stop,
        Cmd::Delete,
        Cmd::Signal(Signal::SIGUSR2),
        Cmd::Replace(app("")),
        Cmd::Reset,
        Cmd::Reload,
        Cmd::Send(Arc::new(serde_json::json!("hi"))),
        Cmd::OverMemory { pid: 100, rss: 200, limit: 100 },
        Cmd::ContainerMemory { pid: 100, used: 950, limit: 1000 },
    ]
}

fn name(c: &Cmd) -> &'static str {
    match c {
        Cmd::Restart => "restart",
        Cmd::Start => "start",
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

/// A machine in each state worth testing, by name.
fn in_every_state() -> Vec<(&'static str, Machine, Instant)> {
    let mut out = Vec::new();
    let (m, now) = machine("");
    out.push(("new", m.clone(), now));
    let mut d = m.clone();
    d.step(Input::Cmd(Cmd::Delete), now);
    assert_eq!(d.state, State::Gone);
    out.push(("gone", d, now));
    let mut n = m.clone();
    n.step(Input::Begin, now);
    out.push(("starting", n.clone(), now));
    n.step(Input::SpawnFailed { starved: Some("Too many open files".into()) }, now);
    assert_eq!(n.state, State::Starved);
    out.push(("starved", n, now));
    let (m, now) = machine("    restart_delay: 1000\n");
    let mut w = m.clone();
    w.step(Input::Begin, now);
    w.step(Input::Spawned { pid: 100 }, now);
    w.step(Input::Exited { exit: Exit::Code(1), leftovers: false, oom: None }, now + Duration::from_secs(5));
    assert_eq!(w.state, State::Waiting);
    out.push(("waiting", w, now));
    let (mut l, now2) = machine("    wait_ready: true\n");
    l.step(Input::Begin, now2);
    l.step(Input::Spawned { pid: 100 }, now2);
    assert!(matches!(l.state, State::Launching { .. }));
    out.push(("launching", l, now2));
    let (o, now) = online("");
    out.push(("online", o.clone(), now));
    let mut s = o.clone();
    s.step(Input::Cmd(Cmd::Stop), now);
    assert!(matches!(s.state, State::Stopping { .. }));
    out.push(("stopping", s.clone(), now));
    let mut p = s;
    p.step(Input::Exited { exit: Exit::Signal(2), leftovers: false, oom: None }, now);
    assert!(matches!(p.state, State::Parked { status: Status::Stopped, manual: true }), "{:?}", p.state);
    out.push(("stopped", p, now));
    let mut g = o;
    g.step(Input::Exited { exit: Exit::Code(0), leftovers: false, oom: None }, now + Duration::from_secs(5));
    assert!(matches!(g.state, State::Grace { .. }), "{:?}", g.state);
    out.push(("grace", g, now));
    let (mut e, now) = machine("    max_restarts: 1\n    min_uptime: 1000\n");
    e.step(Input::Begin, now);
    e.step(Input::Spawned { pid: 100 }, now);
    e.step(Input::Exited { exit: Exit::Code(1), leftovers: false, oom: None }, now);
    assert!(matches!(e.state, State::Parked { status: Status::Errored, .. }), "{:?}", e.state);
    out.push(("errored", e, now));
    out
}

/// What each command does in each state: the next state's kind and the key effects.
#[test]
fn every_command_in_every_state() {
    use State as S;
    for (state_name, m, now) in in_every_state() {
        for cmd in all_cmds() {
            let mut m = m.clone();
            let before = m.state.clone();
            let fx = m.step(Input::Cmd(cmd.clone()), now + Duration::from_millis(10));
            let ctx = format!("{} in {state_name}: {:?} -> {:?}\n{fx:?}", name(&cmd), before, m.state);
            let kind = match &m.state {
                S::New => "new",
                S::Parked { status: Status::Stopped, .. } => "stopped",
                S::Parked { .. } => "errored",
                S::Waiting => "waiting",
                S::Launching { .. } => "launching",
                S::Online { .. } => "online",
                S::Stopping { then: Then::Restart(_), .. } => "stopping→restart",
                S::Stopping { then: Then::Park, .. } => "stopping→park",
                S::Stopping { then: Then::Delete, .. } => "stopping→delete",
                S::Stopping { then: Then::Shutdown, .. } => "stopping→shutdown",
                S::Grace { .. } => "grace",
                S::Starting => "starting",
                S::Starved => "starved",
                S::Gone => "gone",
            };
            let want = match (state_name, name(&cmd)) {
                // Running: restart-like commands stop first; stop parks; delete ends after the stop.
                ("online" | "launching", "restart" | "replace" | "over-memory" | "container-memory") => "stopping→restart",
                ("online", "reload") => "stopping→restart", // fork mode: reload = restart
                ("launching", "reload") => "stopping→restart",
                ("online" | "launching", "stop") => "stopping→park",
                ("online" | "launching", "delete") => "stopping→delete",
                ("online", _) => "online",
                ("launching", _) => "launching",
                // Stopping: answered at once, only what follows changes.
                ("stopping", "restart" | "start" | "reload" | "replace") => "stopping→restart",
                ("stopping", "delete") => "stopping→delete",
                ("stopping", _) => "stopping→park",
                // Not running: start-like commands start (spawn asked for).
                ("stopped" | "errored" | "waiting" | "grace", "restart" | "start" | "reload" | "replace") => "starting",
                ("stopped" | "errored" | "waiting" | "grace", "delete") => "gone",
                ("waiting" | "grace", "stop") => "stopped",
                ("waiting", _) => "waiting",
                ("grace", _) => "grace",
                ("stopped", _) => "stopped",
                ("errored", "stop") => "errored",
                ("errored", _) => "errored",
                ("starting", _) => "starting",
                // Out of resources between two tries: a stop or delete acts at once, a start
                // tries now.
                ("starved", "restart" | "start" | "reload" | "replace") => "starting",
                ("starved", "stop") => "stopped",
                ("starved", "delete") => "gone",
                ("starved", _) => "starved",
                // Before its first input only a delete does anything; after the end, nothing.
                ("new", "delete") => "gone",
                ("new", _) => "new",
                ("gone", _) => "gone",
                _ => unreachable!("{ctx}"),
            };
            assert_eq!(kind, want, "{ctx}");
            // Effects every case must (or must not) have.
            let has = |p: &dyn Fn(&Effect) -> bool| fx.iter().any(p);
            match (state_name, name(&cmd)) {
                ("online" | "launching" | "stopping", "signal") => assert!(has(&|e| *e == Effect::Signal(Signal::SIGUSR2)), "{ctx}"),
                ("online" | "launching" | "stopping", "send") => assert!(has(&|e| matches!(e, Effect::Send(_))), "{ctx}"),
                (_, "signal" | "send") => assert!(fx.is_empty(), "nothing to signal: {ctx}"),
                _ => {}
            }
            if want.starts_with("stopping") && !state_name.starts_with("stopping") {
                assert!(has(&|e| matches!(e, Effect::Terminate { signal: Signal::SIGINT, message: false })), "{ctx}");
                assert!(armed(&fx, Timer::Kill).is_some(), "the grace period is a timer: {ctx}");
                assert_eq!(reports(&fx), vec![Status::Stopping], "{ctx}");
            }
            if state_name == "stopping" {
                assert!(
                    !has(&|e| matches!(e, Effect::Terminate { .. } | Effect::Kill | Effect::Spawn)),
                    "the stop goes on unchanged: {ctx}"
                );
            }
            if want == "starting" && state_name != "starting" {
                assert!(has(&|e| *e == Effect::Spawn), "{ctx}");
                if state_name != "starved" {
                    assert_eq!(reports(&fx).last(), Some(&Status::Launching), "{ctx}");
                }
            }
            if want == "gone" && state_name != "gone" {
                assert!(has(&|e| *e == Effect::End), "{ctx}");
            }
            if state_name == "gone" {
                assert!(fx.is_empty(), "{ctx}");
            }
            if name(&cmd) == "reset" {
                assert_eq!(m.restart_time, 0, "{ctx}");
            }
        }
    }
}

#[test]
fn a_stop_is_one_budget_and_commands_are_answered_meanwhile() {
    let (mut m, now) = online("    kill_timeout: 1600\n");
    let fx = m.step(Input::Cmd(Cmd::Stop), now);
    assert_eq!(armed(&fx, Timer::Kill), Some(now + Duration::from_millis(1600)));
    // A delete during the stop is answered at once: same deadline, the task ends on exit.
    let fx = m.step(Input::Cmd(Cmd::Delete), now + Duration::from_millis(100));
    assert!(fx.is_empty(), "{fx:?}");
    let fx = m.step(Input::Timer(Timer::Kill), now + Duration::from_millis(1600));
    assert!(fx.contains(&Effect::Kill), "{fx:?}");
    let fx = m.step(Input::Exited { exit: Exit::Signal(9), leftovers: false, oom: None }, now + Duration::from_millis(1610));
    assert!(fx.contains(&Effect::End), "{fx:?}");
    assert_eq!(m.state, State::Gone);
}

#[test]
fn cluster_stop_disconnects_then_signals_at_half_the_budget_then_kills() {
    let (mut m, now) = machine("    kill_timeout: 1000\n");
    m.cluster = true;
    m.step(Input::Begin, now);
    m.step(Input::Spawned { pid: 7 }, now);
    m.step(Input::Ready(Ready::Listening(3000, None)), now);
    assert!(matches!(m.state, State::Online { .. }));
    let fx = m.step(Input::Shutdown(Shutdown::Graceful), now);
    assert!(fx.contains(&Effect::Disconnect), "{fx:?}");
    assert_eq!(armed(&fx, Timer::Signal), Some(now + Duration::from_millis(500)));
    assert_eq!(armed(&fx, Timer::Kill), Some(now + Duration::from_millis(1000)), "one budget, not two");
    let fx = m.step(Input::Timer(Timer::Signal), now + Duration::from_millis(500));
    assert!(fx.iter().any(|e| matches!(e, Effect::Terminate { .. })), "{fx:?}");
    let fx = m.step(Input::Exited { exit: Exit::Code(0), leftovers: false, oom: None }, now + Duration::from_millis(600));
    assert!(fx.contains(&Effect::End), "{fx:?}");
}

#[test]
fn leftovers_of_a_stopped_group_are_waited_for_then_killed_at_the_deadline() {
    let (mut m, now) = online("    kill_timeout: 1000\n");
    m.step(Input::Cmd(Cmd::Restart), now);
    let fx = m.step(Input::Exited { exit: Exit::Signal(2), leftovers: true, oom: None }, now + Duration::from_millis(10));
    assert!(armed(&fx, Timer::Leftovers).is_some() && !fx.contains(&Effect::Spawn), "{fx:?}");
    let fx = m.step(Input::Leftovers { alive: true }, now + Duration::from_millis(110));
    assert!(armed(&fx, Timer::Leftovers).is_some(), "{fx:?}");
    let fx = m.step(Input::Timer(Timer::Kill), now + Duration::from_millis(1000));
    assert!(fx.contains(&Effect::Kill) && fx.contains(&Effect::Spawn), "killed, then restarted: {fx:?}");
    assert_eq!(m.restart_time, 1);
}

#[test]
fn restarts_are_counted_with_their_reason() {
    let reason_of = |fx: &[Effect]| {
        fx.iter().find_map(|e| match e {
            Effect::Report(r) if r.status == Status::Launching => Some(r.reason),
            _ => None,
        })
    };
    let (mut m, now) = online("    cron_restart: '0 0 * * *'\n    max_memory_restart: 100\n");
    let t = now + Duration::from_secs(60);
    // A crash (restart at once after the grace: exit code 1 is a crash, no grace).
    let fx = m.step(Input::Exited { exit: Exit::Code(1), leftovers: false, oom: None }, t);
    assert_eq!(reason_of(&fx), Some(Some(RestartReason::Crash)));
    m.step(Input::Spawned { pid: 101 }, t);
    for (input, reason) in [
        (Input::Timer(Timer::Cron), RestartReason::Cron),
        (Input::Cmd(Cmd::OverMemory { pid: 102, rss: 200, limit: 100 }), RestartReason::Memory),
        (Input::Cmd(Cmd::ContainerMemory { pid: 102, used: 950, limit: 1000 }), RestartReason::Memory),
        (Input::Cmd(Cmd::Restart), RestartReason::Manual),
        (Input::Cmd(Cmd::Reload), RestartReason::Reload),
    ] {
        m.step(input, t);
        let fx = m.step(Input::Exited { exit: Exit::Signal(2), leftovers: false, oom: None }, t);
        assert_eq!(reason_of(&fx), Some(Some(reason)), "{fx:?}");
        m.step(Input::Spawned { pid: 102 }, t);
    }
    assert_eq!(m.restart_time, 6);
}

#[test]
fn a_requested_looking_exit_waits_for_the_stop_signal() {
    let (mut m, now) = online("");
    let t = now + Duration::from_secs(5);
    let fx = m.step(Input::Exited { exit: Exit::Signal(libc::SIGTERM), leftovers: false, oom: None }, t);
    assert_eq!(armed(&fx, Timer::Grace), Some(t + STOP_GRACE));
    // The runtime's stop arrives within the grace: stopped, never restarted.
    let fx = m.step(Input::Shutdown(Shutdown::Graceful), t + Duration::from_millis(30));
    assert!(!fx.contains(&Effect::Spawn) && fx.contains(&Effect::End), "{fx:?}");
    // Without it: restarted once the grace is over.
    let (mut m, now) = online("");
    let t = now + Duration::from_secs(5);
    m.step(Input::Exited { exit: Exit::Code(0), leftovers: false, oom: None }, t);
    let fx = m.step(Input::Timer(Timer::Grace), t + STOP_GRACE);
    assert!(fx.contains(&Effect::Spawn), "{fx:?}");
}

#[test]
fn readiness_by_mode() {
    // wait_ready in fork mode: 'ready' or READY=1; a cluster listen is no readiness then.
    let (mut m, now) = machine("    wait_ready: true\n    listen_timeout: 3000\n");
    m.step(Input::Begin, now);
    let fx = m.step(Input::Spawned { pid: 5 }, now);
    assert_eq!(armed(&fx, Timer::Listen), Some(now + Duration::from_millis(3000)));
    assert!(m.step(Input::Ready(Ready::Listening(80, None)), now).is_empty());
    let fx = m.step(Input::Ready(Ready::Notify), now);
    assert_eq!(reports(&fx), vec![Status::Online]);
    // Cluster without wait_ready: listening is readiness, and a timeout says so too.
    let (mut m, now) = machine("");
    m.cluster = true;
    m.step(Input::Begin, now);
    m.step(Input::Spawned { pid: 5 }, now);
    assert!(m.step(Input::Ready(Ready::Message), now).is_empty());
    let fx = m.step(Input::Timer(Timer::Listen), now);
    assert_eq!(reports(&fx), vec![Status::Online]);
    assert!(fx.iter().any(|e| matches!(e, Effect::Log(l) if l.level == Level::Warn)), "{fx:?}");
}

/// A cluster worker online as pid 5, reloaded: pid 6 is its replacement, 5 waits to retire.
fn reloading(extra: &str) -> (Machine, Instant) {
    let (mut m, now) = machine(extra);
    m.cluster = true;
    m.step(Input::Begin, now);
    m.step(Input::Spawned { pid: 5 }, now);
    m.step(Input::Ready(Ready::Listening(80, None)), now);
    let fx = m.step(Input::Cmd(Cmd::Reload), now);
    assert!(fx.contains(&Effect::HandOver(ExitReason::Stopped)) && fx.contains(&Effect::Spawn), "{fx:?}");
    assert!(!fx.iter().any(|e| matches!(e, Effect::RetireDisconnect | Effect::RetireTerminate { .. } | Effect::RetireKill)), "{fx:?}");
    assert_eq!(m.retiring, Some((5, Retire::Waiting)));
    m.step(Input::Spawned { pid: 6 }, now);
    (m, now)
}

#[test]
fn cluster_reload_retires_the_old_worker_with_its_own_kill_timeout_once_the_replacement_is_online() {
    let (mut m, now) = reloading(
        "    kill_timeout: 3000
",
    );
    let fx = m.step(Input::Ready(Ready::Listening(80, None)), now);
    assert!(fx.contains(&Effect::RetireDisconnect), "{fx:?}");
    assert_eq!(armed(&fx, Timer::RetireSignal), Some(now + Duration::from_millis(1500)));
    assert_eq!(armed(&fx, Timer::RetireKill), Some(now + Duration::from_millis(3000)));
    // A stop signal meanwhile stops the new worker and leaves the old one its grace.
    let fx = m.step(Input::Shutdown(Shutdown::Graceful), now + Duration::from_millis(100));
    assert!(!fx.iter().any(|e| matches!(e, Effect::RetireKill | Effect::End)), "{fx:?}");
    let fx = m.step(Input::Timer(Timer::RetireSignal), now + Duration::from_millis(1500));
    assert!(fx.contains(&Effect::RetireTerminate { signal: Signal::SIGINT, message: false }), "{fx:?}");
    let fx = m.step(Input::Exited { exit: Exit::Signal(2), leftovers: false, oom: None }, now + Duration::from_millis(1600));
    // The instance is gone, but its task waits for the retiring worker.
    assert_eq!(m.state, State::Gone);
    assert!(!fx.contains(&Effect::End), "{fx:?}");
    let fx = m.step(Input::Timer(Timer::RetireKill), now + Duration::from_millis(3000));
    assert!(fx.contains(&Effect::RetireKill), "{fx:?}");
    let fx = m.step(Input::RetireExited { exit: Exit::Signal(9), leftovers: false, oom: None }, now + Duration::from_millis(3010));
    assert!(
        fx.contains(&Effect::Retired) && fx.contains(&Effect::End) && fx.iter().any(|e| matches!(e, Effect::RetireDied { .. })),
        "{fx:?}"
    );
}

#[test]
fn a_second_stop_signal_kills_the_retiring_worker_and_a_reload_meanwhile_waits_its_turn() {
    let (mut m, now) = reloading("");
    m.step(Input::Ready(Ready::Listening(80, None)), now);
    // A reload while 5 retires: queued, started once 5 is gone.
    let fx = m.step(Input::Cmd(Cmd::Reload), now);
    assert!(!fx.contains(&Effect::HandOver(ExitReason::Stopped)) && !fx.contains(&Effect::Spawn), "{fx:?}");
    let fx = m.step(Input::RetireExited { exit: Exit::Code(0), leftovers: false, oom: None }, now);
    assert!(fx.contains(&Effect::Retired) && fx.contains(&Effect::HandOver(ExitReason::Stopped)) && fx.contains(&Effect::Spawn), "{fx:?}");
    assert_eq!(m.retiring, Some((6, Retire::Waiting)));
    // Force: the retiring worker is killed now.
    m.step(Input::Spawned { pid: 7 }, now);
    m.step(Input::Ready(Ready::Listening(80, None)), now);
    m.step(Input::Shutdown(Shutdown::Graceful), now);
    let fx = m.step(Input::Shutdown(Shutdown::Force), now);
    assert!(fx.contains(&Effect::RetireKill) && fx.contains(&Effect::Kill), "{fx:?}");
}

#[test]
fn a_replacement_that_fails_retires_the_old_worker_all_the_same() {
    let (mut m, now) = reloading("");
    let fx = m.step(Input::Exited { exit: Exit::Code(1), leftovers: false, oom: None }, now);
    assert!(fx.contains(&Effect::RetireDisconnect), "{fx:?}");
}

#[test]
fn a_starved_start_retries_uncounted_and_a_stop_meanwhile_acts_at_once() {
    let (mut m, now) = machine("");
    m.step(Input::Begin, now);
    let fx = m.step(Input::SpawnFailed { starved: Some("Too many open files".into()) }, now);
    assert_eq!(m.state, State::Starved);
    assert_eq!(armed(&fx, Timer::Respawn), Some(now + Duration::from_millis(100)));
    assert!(reports(&fx).is_empty(), "not a crash: {fx:?}");
    let fx = m.step(Input::Timer(Timer::Respawn), now);
    assert_eq!(fx, [Effect::Spawn]);
    let fx = m.step(Input::SpawnFailed { starved: Some("Too many open files".into()) }, now);
    assert_eq!(armed(&fx, Timer::Respawn), Some(now + Duration::from_millis(200)), "backs off");
    assert_eq!(m.restart_time, 0);
    let fx = m.step(Input::Cmd(Cmd::Stop), now);
    assert_eq!(reports(&fx), [Status::Stopped]);
    assert!(fx.contains(&Effect::Disarm(Timer::Respawn)), "{fx:?}");
    // During a shutdown a starved start is given up.
    let (mut m, now) = machine("");
    m.step(Input::Begin, now);
    m.step(Input::SpawnFailed { starved: Some("x".into()) }, now);
    let fx = m.step(Input::Shutdown(Shutdown::Graceful), now);
    assert!(fx.contains(&Effect::End), "{fx:?}");
}

/// Deno instances sharing their port with SO_REUSEPORT: not Node cluster workers (ready by
/// `'ready'`, stopped with the kill signal), but a reload still starts the replacement first.
#[test]
fn rolling_reload_without_node_cluster_hands_over_and_retires_once_ready() {
    let (mut m, now) = machine("    wait_ready: true\n");
    m.rolling = true;
    m.step(Input::Begin, now);
    m.step(Input::Spawned { pid: 5 }, now);
    m.step(Input::Ready(Ready::Message), now);
    let fx = m.step(Input::Cmd(Cmd::Reload), now);
    assert!(
        fx.contains(&Effect::HandOver(ExitReason::Stopped)) && fx.contains(&Effect::Spawn) && m.retiring == Some((5, Retire::Waiting)),
        "{fx:?}"
    );
    m.step(Input::Spawned { pid: 6 }, now);
    let fx = m.step(Input::Ready(Ready::Message), now);
    // Not a Node cluster worker: no disconnect, the kill signal at once (kill_timeout applies).
    assert!(fx.contains(&Effect::RetireTerminate { signal: Signal::SIGINT, message: false }), "{fx:?}");
    assert!(armed(&fx, Timer::RetireKill).is_some(), "{fx:?}");
    // Without `rolling`, the same app restarts (stop first).
    let (mut m, now) = machine("    wait_ready: true\n");
    m.step(Input::Begin, now);
    m.step(Input::Spawned { pid: 5 }, now);
    m.step(Input::Ready(Ready::Message), now);
    let fx = m.step(Input::Cmd(Cmd::Reload), now);
    assert!(!fx.iter().any(|e| matches!(e, Effect::HandOver(_))) && !fx.contains(&Effect::Spawn), "{fx:?}");
}

#[test]
fn autostart_false_parks_and_the_first_start_is_no_restart() {
    let (mut m, now) = machine("    autostart: false\n");
    let fx = m.step(Input::Begin, now);
    assert_eq!(reports(&fx), vec![Status::Stopped]);
    let fx = m.step(Input::Cmd(Cmd::Start), now);
    assert!(fx.contains(&Effect::Spawn));
    assert_eq!(m.restart_time, 0);
}

#[test]
fn a_late_memory_reading_of_a_previous_process_is_ignored() {
    let (mut m, now) = online("    max_memory_restart: 100\n");
    assert!(m.step(Input::Cmd(Cmd::OverMemory { pid: 99, rss: 200, limit: 100 }), now).is_empty());
    assert!(m.step(Input::Cmd(Cmd::ContainerMemory { pid: 99, used: 200, limit: 100 }), now).is_empty());
    assert!(matches!(m.state, State::Online { pid: 100, .. }));
}

#[test]
fn a_forced_shutdown_kills_at_once() {
    let (mut m, now) = online("    kill_timeout: 10000\n");
    m.step(Input::Shutdown(Shutdown::Graceful), now);
    let fx = m.step(Input::Shutdown(Shutdown::Force), now);
    assert!(fx.contains(&Effect::Kill), "{fx:?}");
}

/// PM2's `prev_restart_delay`: every report carries the backoff delay of the last restart;
/// zero with a plain `restart_delay`.
#[test]
fn reports_carry_the_last_backoff_delay() {
    let delays = |fx: &[Effect]| -> Vec<(Status, u128)> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Report(r) => Some((r.status, r.prev_restart_delay.as_millis())),
                _ => None,
            })
            .collect()
    };
    let (mut m, now) = online("    exp_backoff_restart_delay: 100\n");
    let mut t = now + Duration::from_secs(1);
    for want in [100, 150, 225] {
        let fx = m.step(Input::Exited { exit: Exit::Code(1), leftovers: false, oom: None }, t);
        assert_eq!(delays(&fx), [(Status::WaitingRestart, want)], "{fx:?}");
        assert_eq!(armed(&fx, Timer::Restart), Some(t + Duration::from_millis(want as u64)));
        t += Duration::from_millis(want as u64);
        let fx = m.step(Input::Timer(Timer::Restart), t);
        assert_eq!(delays(&fx), [(Status::Launching, want)], "{fx:?}");
        let fx = m.step(Input::Spawned { pid: 101 }, t);
        assert_eq!(delays(&fx), [(Status::Online, want)], "{fx:?}");
        assert_eq!(armed(&fx, Timer::BackoffReset), Some(t + policy::BACKOFF_RESET));
    }
    // A crash before the stable time keeps the sequence (the timer armed then is stale).
    let fx = m.step(Input::Exited { exit: Exit::Code(1), leftovers: false, oom: None }, t + Duration::from_secs(1));
    assert_eq!(delays(&fx), [(Status::WaitingRestart, 337)], "{fx:?}");
    t += Duration::from_secs(1) + Duration::from_millis(337);
    m.step(Input::Timer(Timer::Restart), t);
    m.step(Input::Spawned { pid: 102 }, t);
    // After a stable run (PM2's EXP_BACKOFF_RESET_TIMER) the backoff starts again, and the
    // status says so at once.
    t += policy::BACKOFF_RESET;
    let fx = m.step(Input::Timer(Timer::BackoffReset), t);
    assert_eq!(delays(&fx), [(Status::Online, 0)], "{fx:?}");
    assert!(m.step(Input::Timer(Timer::BackoffReset), t).is_empty(), "reported once");
    let fx = m.step(Input::Exited { exit: Exit::Code(1), leftovers: false, oom: None }, t);
    assert_eq!(delays(&fx), [(Status::WaitingRestart, 100)], "{fx:?}");
    // The same without the timer: the exit after a stable run starts over.
    let (mut m, now) = online("    exp_backoff_restart_delay: 100\n");
    m.step(Input::Exited { exit: Exit::Code(1), leftovers: false, oom: None }, now);
    m.step(Input::Timer(Timer::Restart), now);
    m.step(Input::Spawned { pid: 101 }, now);
    let fx = m.step(Input::Exited { exit: Exit::Code(1), leftovers: false, oom: None }, now + policy::BACKOFF_RESET);
    assert_eq!(delays(&fx), [(Status::WaitingRestart, 100)], "{fx:?}");

    let (mut m, now) = online("    restart_delay: 200\n");
    let fx = m.step(Input::Exited { exit: Exit::Code(1), leftovers: false, oom: None }, now + Duration::from_secs(1));
    assert_eq!(delays(&fx), [(Status::WaitingRestart, 0)], "{fx:?}");
}

fn died(fx: &[Effect]) -> Option<ExitReason> {
    fx.iter().find_map(|e| match e {
        Effect::Died { reason, .. } => Some(*reason),
        _ => None,
    })
}

#[test]
fn every_exit_says_why() {
    const KILL: Exit = Exit::Signal(libc::SIGKILL);
    // (how the process ended, what the cgroup's OOM count says, the reason), for an exit nobody asked for.
    let unasked = [
        (Exit::Code(1), None, ExitReason::Exit),
        (Exit::Code(0), Some(true), ExitReason::Exit),
        (Exit::Signal(libc::SIGSEGV), None, ExitReason::Signal),
        (Exit::Signal(libc::SIGTERM), Some(false), ExitReason::Signal),
        (KILL, Some(true), ExitReason::OomKilled),
        (KILL, None, ExitReason::OomKilled),
        (KILL, Some(false), ExitReason::Signal),
    ];
    for (exit, oom, want) in unasked {
        let (mut m, now) = online("");
        let fx = m.step(Input::Exited { exit, leftovers: false, oom }, now);
        assert_eq!(died(&fx), Some(want), "{exit:?} {oom:?}");
    }
    // Exits during a stop we began: stopped, memory_limit for a memory restart, unless the kernel killed it first.
    let (mut m, now) = online("");
    m.step(Input::Cmd(Cmd::Stop), now);
    assert_eq!(died(&m.step(Input::Exited { exit: Exit::Signal(15), leftovers: false, oom: Some(true) }, now)), Some(ExitReason::Stopped));
    let (mut m, now) = online("");
    m.step(Input::Cmd(Cmd::OverMemory { pid: 100, rss: 2, limit: 1 }), now);
    assert_eq!(died(&m.step(Input::Exited { exit: Exit::Code(0), leftovers: false, oom: None }, now)), Some(ExitReason::MemoryLimit));
    let (mut m, now) = online("");
    m.step(Input::Cmd(Cmd::Restart), now);
    assert_eq!(died(&m.step(Input::Exited { exit: KILL, leftovers: false, oom: Some(true) }, now)), Some(ExitReason::OomKilled));
    // Our own SIGKILL at the stop's deadline is no OOM kill.
    let (mut m, now) = online("");
    m.step(Input::Cmd(Cmd::Stop), now);
    m.step(Input::Timer(Timer::Kill), now);
    assert_eq!(died(&m.step(Input::Exited { exit: KILL, leftovers: false, oom: Some(true) }, now)), Some(ExitReason::Stopped));
    let names: Vec<_> = ExitReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(names, ["exit", "signal", "stopped", "memory_limit", "oom_killed", "probe", "watchdog"]);
}

fn readiness(fx: &[Effect]) -> Vec<bool> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Report(r) => Some(r.ready),
            _ => None,
        })
        .collect()
}

#[test]
fn liveness_failures_in_a_row_restart_with_reason_probe() {
    let (mut m, now) = machine("    liveness_probe: {tcp: 3000, initial_delay: 500, period: 1000, failure_threshold: 2}\n");
    m.step(Input::Begin, now);
    let fx = m.step(Input::Spawned { pid: 100 }, now);
    assert_eq!(armed(&fx, Timer::Probe(ProbeKind::Liveness)), Some(now + Duration::from_millis(500)), "first check after initial_delay");
    assert_eq!(m.step(Input::Timer(Timer::Probe(ProbeKind::Liveness)), now), [Effect::Probe(ProbeKind::Liveness)]);
    let fail = |m: &mut Machine, pid| m.step(Input::Probe { kind: ProbeKind::Liveness, pid, result: Err("refused".into()) }, now);
    // A result about an earlier process changes nothing.
    assert!(fail(&mut m, 99).is_empty());
    let fx = fail(&mut m, 100);
    assert_eq!(armed(&fx, Timer::Probe(ProbeKind::Liveness)), Some(now + Duration::from_secs(1)));
    // One failure is below the threshold: still online, the table shows the probe failing.
    assert_eq!(reports(&fx), [Status::Online], "{fx:?}");
    let view = |fx: &[Effect]| match fx.iter().find(|e| matches!(e, Effect::Report(_))) {
        Some(Effect::Report(r)) => r.probes.liveness.clone(),
        _ => None,
    };
    let failing = ProbeView { passing: Some(false), failures: 1, last_failure: Some("refused".into()) };
    assert_eq!(view(&fx), Some(failing.clone()));
    // A success resets the streak (the last failure's text stays).
    let fx = m.step(Input::Probe { kind: ProbeKind::Liveness, pid: 100, result: Ok(()) }, now);
    assert_eq!(view(&fx), Some(ProbeView { passing: Some(true), failures: 0, ..failing }));
    assert!(
        m.step(Input::Probe { kind: ProbeKind::Liveness, pid: 100, result: Ok(()) }, now).iter().all(|e| !matches!(e, Effect::Report(_))),
        "no change, no report"
    );
    assert_eq!(reports(&fail(&mut m, 100)), [Status::Online]);
    let fx = fail(&mut m, 100);
    assert_eq!(reports(&fx), [Status::Stopping], "{fx:?}");
    assert!(matches!(m.state, State::Stopping { then: Then::Restart(RestartReason::Probe), .. }), "{:?}", m.state);
    assert!(fx.iter().any(|e| matches!(e, Effect::Log(l) if l.text.contains("liveness probe (tcp :3000) failed 2 time(s) in a row: refused; restarting (reason: probe)"))), "{fx:?}");
}

#[test]
fn readiness_makes_ready_after_success_threshold_and_unready_after_failure_threshold() {
    let (mut m, now) = online("    readiness_probe: {http: /ready, port: 3000, success_threshold: 2, failure_threshold: 1}\n");
    let probe = |m: &mut Machine, ok: bool| {
        let result = if ok { Ok(()) } else { Err("503".to_string()) };
        m.step(Input::Probe { kind: ProbeKind::Readiness, pid: 100, result }, now)
    };
    assert_eq!(readiness(&probe(&mut m, true)), [false], "one success of two: not ready (the probe shows passing)");
    assert_eq!(readiness(&probe(&mut m, true)), [true]);
    assert_eq!(readiness(&probe(&mut m, false)), [false], "one failure is the threshold");
    assert_eq!(readiness(&probe(&mut m, false)), [false], "already not ready: only the failure count moves");
}

#[test]
fn a_rolling_reload_retires_the_old_worker_only_once_the_new_one_is_ready() {
    let (mut m, now) = online("    readiness_probe: {tcp: 3000}\n");
    let fx = m.step(Input::Cmd(Cmd::Reload), now);
    assert!(!fx.iter().any(|e| matches!(e, Effect::HandOver(_))), "fork mode restarts: {fx:?}");
    // Cluster-like: a machine marked cluster hands over and retires on readiness.
    let (mut m, now) = {
        let now = Instant::now();
        let mut m = Machine::new(app("    readiness_probe: {tcp: 3000}\n"), 0, true, 0, policy::BACKOFF_RESET, now);
        m.step(Input::Begin, now);
        m.step(Input::Spawned { pid: 100 }, now);
        m.step(Input::Ready(Ready::Listening(3000, None)), now);
        m.step(Input::Probe { kind: ProbeKind::Readiness, pid: 100, result: Ok(()) }, now);
        (m, now)
    };
    let fx = m.step(Input::Cmd(Cmd::Reload), now);
    assert!(fx.iter().any(|e| matches!(e, Effect::HandOver(_))), "{fx:?}");
    m.step(Input::Spawned { pid: 200 }, now);
    let fx = m.step(Input::Ready(Ready::Listening(3000, None)), now);
    assert!(
        !fx.iter().any(|e| matches!(e, Effect::RetireDisconnect | Effect::RetireTerminate { .. })),
        "listening is not ready yet: {fx:?}"
    );
    let fx = m.step(Input::Probe { kind: ProbeKind::Readiness, pid: 200, result: Ok(()) }, now);
    assert!(fx.iter().any(|e| matches!(e, Effect::RetireDisconnect | Effect::RetireTerminate { .. })), "{fx:?}");
}

#[test]
fn the_watchdog_restarts_only_a_process_whose_heartbeat_stopped() {
    let (mut m, now) = machine("    watchdog: 1000\n");
    m.step(Input::Begin, now);
    let fx = m.step(Input::Spawned { pid: 100 }, now);
    assert_eq!(armed(&fx, Timer::Watchdog), Some(now + Duration::from_secs(1)));
    // Never a heartbeat (no preload, no sd_notify): not watched, not restarted.
    let fx = m.step(Input::Timer(Timer::Watchdog), now);
    assert!(reports(&fx).is_empty() && matches!(m.state, State::Online { .. }), "{fx:?}");
    // A heartbeat re-arms; its silence restarts with reason watchdog.
    let later = now + Duration::from_millis(300);
    let fx = m.step(Input::Heartbeat, later);
    assert_eq!(armed(&fx, Timer::Watchdog), Some(later + Duration::from_secs(1)));
    let fx = m.step(Input::Timer(Timer::Watchdog), later + Duration::from_secs(1));
    assert_eq!(reports(&fx), [Status::Stopping]);
    assert!(matches!(m.state, State::Stopping { then: Then::Restart(RestartReason::Watchdog), .. }), "{:?}", m.state);
    // Heartbeats while stopping change nothing.
    assert!(m.step(Input::Heartbeat, later).is_empty());
}

#[test]
fn a_readiness_probe_runs_as_soon_as_the_worker_listens() {
    let (mut m, now) = machine("    readiness_probe: {http: /ready, port: 3000, initial_delay: 2000, period: 10000}\n");
    m.cluster = true;
    m.step(Input::Begin, now);
    let fx = m.step(Input::Spawned { pid: 7 }, now);
    assert_eq!(armed(&fx, Timer::Probe(ProbeKind::Readiness)), Some(now + Duration::from_secs(2)));
    // Listening before initial_delay is over: the first check stays at initial_delay.
    let fx = m.step(Input::Ready(Ready::Listening(3000, None)), now + Duration::from_secs(1));
    assert_eq!(armed(&fx, Timer::Probe(ProbeKind::Readiness)), Some(now + Duration::from_secs(2)));
    // A check refused before the app listened waits a period; listening brings it forward.
    let (mut m, now) = machine("    readiness_probe: {http: /ready, port: 3000, period: 10000}\n");
    m.cluster = true;
    m.step(Input::Begin, now);
    m.step(Input::Spawned { pid: 7 }, now);
    let fx = m.step(Input::Probe { kind: ProbeKind::Readiness, pid: 7, result: Err("refused".into()) }, now);
    assert_eq!(armed(&fx, Timer::Probe(ProbeKind::Readiness)), Some(now + Duration::from_secs(10)));
    let later = now + Duration::from_millis(300);
    let fx = m.step(Input::Ready(Ready::Listening(3000, None)), later);
    assert_eq!(armed(&fx, Timer::Probe(ProbeKind::Readiness)), Some(later));
    // Once ready, listening again (a new generation reports through its own machine) arms nothing extra.
    m.step(Input::Probe { kind: ProbeKind::Readiness, pid: 7, result: Ok(()) }, later);
    assert!(m.probes.ready);
}
