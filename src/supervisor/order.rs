//! The start and stop order of the app set (`depends_on`, `role: init/sidecar`), as pure
//! functions over the apps' graph ([`crate::config::deps`]) and what their instances reached.
//!
//! - Start: an app's instances are held (no task, no process) until every app it needs has
//!   reached the condition ([`gate`]); what an instance reached is latched from its reports
//!   ([`Reached::observe`]), so a dependency that restarts later does not stop its dependents.
//! - A dependency that can no longer reach its condition (it exited non-zero or errored)
//!   blocks its dependents; a failed init job stops the container ([`failed_init`]).
//! - Stop: an app is told to stop once none of the apps that need it is running any more
//!   ([`may_stop`]): dependents first, sidecars last, each app within its own `kill_timeout`.
//! - Auto-exit counts every app but the sidecars ([`counted`]).
//!
//! Must never: touch a process, a clock or a channel (the decider calls these; the loop acts).

use crate::config::deps::Graph;
use crate::config::{Condition, Role};
use crate::process::Exit;

use super::machine::Shutdown;
use super::status::{Report, Status};

/// The order state the decider owns (`coordinator::State::order`): the graph, which apps are
/// released, what the held ones wait for, what each instance reached, how far the stop has gone.
#[derive(Debug, Clone)]
pub struct Order {
    pub graph: Graph,
    pub released: Vec<bool>,
    /// What a held app waits for (for `ls`), or why it cannot start.
    pub waiting: Vec<Option<std::sync::Arc<str>>>,
    /// The app waits for an app that failed: it counts as settled for auto-exit.
    pub blocked: Vec<bool>,
    pub told_stop: Vec<bool>,
    pub reached: std::collections::HashMap<u32, Reached>,
    /// The stop has begun (dependents first: see [`may_stop`]).
    pub stop_begun: bool,
    /// How far the stop of every app at once has gone.
    pub level: Shutdown,
    /// `shutdown_delay` runs: the apps get the stop when it is over.
    pub delay_pending: bool,
}

impl Default for Order {
    fn default() -> Self {
        Order {
            graph: Graph::default(),
            released: Vec::new(),
            waiting: Vec::new(),
            blocked: Vec::new(),
            told_stop: Vec::new(),
            reached: Default::default(),
            stop_begun: false,
            level: Shutdown::Running,
            delay_pending: false,
        }
    }
}

impl Order {
    /// Follows the app list (at start, and when an `apply` adds apps): the graph is rebuilt,
    /// apps that need nobody are released.
    pub fn sync(&mut self, apps: &[std::sync::Arc<crate::config::App>]) {
        if self.released.len() == apps.len() {
            return;
        }
        self.graph = crate::config::deps::of_apps(apps.iter().map(|a| &**a));
        let n = apps.len();
        for i in self.released.len()..n {
            self.released.push(self.graph.needs[i].is_empty());
        }
        self.waiting.resize(n, None);
        self.blocked.resize(n, false);
        self.told_stop.resize(n, false);
    }
}

/// Nothing reached (an instance that has not reported).
pub const NOTHING: Reached = Reached { started: false, online: false, ready: false, completed: false, failed: None };

/// What one instance has reached so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reached {
    pub started: bool,
    pub online: bool,
    pub ready: bool,
    pub completed: bool,
    /// Ended for good (not by request) with this exit, or errored: it cannot reach more by itself.
    pub failed: Option<Exit>,
}

impl Reached {
    /// Latches what a status report says.
    pub fn observe(&mut self, r: &Report) {
        if r.gone {
            return;
        }
        if r.pid.is_some() {
            self.started = true;
        }
        match r.status {
            Status::Launching => self.failed = None,
            Status::Online => {
                self.online = true;
                // Without a readiness probe, ready is online (wait_ready and listen are in it).
                self.ready |= r.ready;
                self.failed = None;
            }
            Status::Stopped | Status::Errored if !r.scheduled && !r.manual => {
                self.started |= r.last_exit.is_some();
                match (r.status, r.last_exit) {
                    (Status::Stopped, Some(Exit::Code(0))) => self.completed = true,
                    (_, exit) => self.failed = Some(exit.unwrap_or(Exit::Code(1))),
                }
            }
            _ => {}
        }
    }

    /// Whether this has reached `c`.
    pub fn meets(&self, c: Condition) -> bool {
        match c {
            Condition::Started => self.started,
            Condition::Online => self.online,
            Condition::Ready => self.ready,
            Condition::Completed => self.completed,
        }
    }

    /// An app's view: every instance has reached it (an app without instances reached nothing);
    /// failed when any instance failed.
    pub fn of_app<'a>(instances: impl IntoIterator<Item = &'a Reached>) -> Reached {
        let mut all = Reached { started: true, online: true, ready: true, completed: true, failed: None };
        let mut any = false;
        for r in instances {
            any = true;
            all.started &= r.started;
            all.online &= r.online;
            all.ready &= r.ready;
            all.completed &= r.completed;
            all.failed = all.failed.or(r.failed);
        }
        if any { all } else { Reached::default() }
    }
}

/// Whether an app may start now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    Go,
    /// Still waiting for these apps to reach these conditions.
    Wait(Vec<(usize, Condition)>),
    /// This app failed before reaching the condition: it will not get there by itself.
    Blocked(usize, Condition, Exit),
}

/// Whether app `app` may start, given what every app reached (`apps[i]`, see [`Reached::of_app`]).
pub fn gate(g: &Graph, app: usize, apps: &[Reached]) -> Gate {
    let mut waits = Vec::new();
    for e in g.needs.get(app).into_iter().flatten() {
        let r = apps.get(e.to).copied().unwrap_or_default();
        if r.meets(e.condition) {
            continue;
        }
        if let Some(exit) = r.failed {
            return Gate::Blocked(e.to, e.condition, exit);
        }
        waits.push((e.to, e.condition));
    }
    if waits.is_empty() { Gate::Go } else { Gate::Wait(waits) }
}

/// The first init job that failed, with its exit: the container stops with its code.
pub fn failed_init(roles: &[Role], apps: &[Reached]) -> Option<(usize, Exit)> {
    roles.iter().zip(apps).enumerate().find_map(|(i, (role, r))| match (role, r.failed) {
        (Role::Init, Some(exit)) if !r.completed => Some((i, exit)),
        _ => None,
    })
}

/// The apps that may be told to stop now: not told yet, and no app that needs them is still
/// running (`running[i]`: app `i` has an instance that has not ended).
pub fn may_stop(g: &Graph, running: &[bool], told: &[bool]) -> Vec<usize> {
    (0..g.needs.len())
        .filter(|&i| !told.get(i).copied().unwrap_or(false))
        .filter(|&i| !(0..g.needs.len()).any(|j| j != i && running.get(j).copied().unwrap_or(false) && g.edge(j, i).is_some()))
        .collect()
}

/// Which apps count for auto-exit and the exit code: all but the sidecars (when every app is
/// a sidecar, all of them).
pub fn counted(roles: &[Role]) -> Vec<bool> {
    let all_sidecars = roles.iter().all(|r| *r == Role::Sidecar);
    roles.iter().map(|r| all_sidecars || *r != Role::Sidecar).collect()
}

/// `migrate (completed), proxy (ready)`: what a held app waits for, for `ls` and the log.
pub fn describe(waits: &[(usize, Condition)], names: &[&str]) -> String {
    waits.iter().map(|(i, c)| format!("{} ({})", names.get(*i).unwrap_or(&"?"), c.as_str())).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Dependency;
    use crate::config::deps::{Entry, graph};
    use Condition::*;

    fn report(status: Status, pid: Option<u32>, last_exit: Option<Exit>) -> Report {
        Report { pid, last_exit, ready: status == Status::Online, ..Report::of(status) }
    }

    fn reached(reports: &[Report]) -> Reached {
        let mut r = Reached::default();
        for x in reports {
            r.observe(x);
        }
        r
    }

    #[test]
    fn reports_latch_what_an_instance_reached() {
        let launching = report(Status::Launching, Some(7), None);
        let online = report(Status::Online, Some(7), None);
        let done = report(Status::Stopped, None, Some(Exit::Code(0)));
        let failed = report(Status::Stopped, None, Some(Exit::Code(3)));
        let errored = report(Status::Errored, None, Some(Exit::Signal(9)));
        let asked = Report { manual: true, ..report(Status::Stopped, None, Some(Exit::Signal(2))) };
        let restarting = report(Status::WaitingRestart, None, Some(Exit::Code(1)));
        let table: &[(&[Report], Reached)] = &[
            (&[], Reached::default()),
            (std::slice::from_ref(&launching), Reached { started: true, ..Default::default() }),
            (&[launching.clone(), online.clone()], Reached { started: true, online: true, ready: true, ..Default::default() }),
            // A one-shot that exits 0 before anyone saw it online: started and completed.
            (&[report(Status::Launching, None, None), done.clone()], Reached { started: true, completed: true, ..Default::default() }),
            (&[launching.clone(), failed.clone()], Reached { started: true, failed: Some(Exit::Code(3)), ..Default::default() }),
            (&[launching.clone(), errored], Reached { started: true, failed: Some(Exit::Signal(9)), ..Default::default() }),
            // Online is latched: a later crash and restart does not take it back.
            (&[online.clone(), restarting, launching.clone()], Reached { started: true, online: true, ready: true, ..Default::default() }),
            // Stopped on request is no failure; a manual restart after a failure clears it.
            (&[launching.clone(), asked], Reached { started: true, ..Default::default() }),
            (&[failed, launching.clone()], Reached { started: true, ..Default::default() }),
        ];
        for (reports, want) in table {
            assert_eq!(reached(reports), *want, "{reports:?}");
        }
    }

    #[test]
    fn an_app_reached_what_all_its_instances_reached() {
        let on = Reached { started: true, online: true, ready: true, ..Default::default() };
        let started = Reached { started: true, ..Default::default() };
        assert_eq!(Reached::of_app([&on, &on]), on);
        assert_eq!(Reached::of_app([&on, &started]), started);
        assert_eq!(Reached::of_app([]), Reached::default());
        let bad = Reached { failed: Some(Exit::Code(1)), ..started };
        assert_eq!(Reached::of_app([&on, &bad]).failed, Some(Exit::Code(1)));
    }

    /// migrate (init), proxy (sidecar), web → worker (started), worker.
    fn demo() -> Graph {
        let dep = |n: &str, c| vec![Dependency { name: n.into(), condition: c }];
        let none = vec![];
        let worker_dep = dep("worker", Some(Started));
        let entries = [
            Entry { name: "migrate", role: Role::Init, depends_on: &none },
            Entry { name: "proxy", role: Role::Sidecar, depends_on: &none },
            Entry { name: "web", role: Role::App, depends_on: &worker_dep },
            Entry { name: "worker", role: Role::App, depends_on: &none },
        ];
        graph(&entries).0
    }

    #[test]
    fn who_may_start_now() {
        let g = demo();
        let nothing = Reached::default();
        let up = Reached { started: true, online: true, ready: true, ..Default::default() };
        let done = Reached { started: true, completed: true, ..Default::default() };
        let started = Reached { started: true, ..Default::default() };
        let failed = Reached { started: true, failed: Some(Exit::Code(4)), ..Default::default() };
        // (what migrate, proxy, web, worker reached) → gate of each.
        let table: &[([Reached; 4], [Gate; 4])] = &[
            (
                [nothing; 4],
                [
                    Gate::Wait(vec![(1, Ready)]),
                    Gate::Go,
                    Gate::Wait(vec![(3, Started), (0, Completed), (1, Ready)]),
                    Gate::Wait(vec![(0, Completed), (1, Ready)]),
                ],
            ),
            (
                [nothing, up, nothing, nothing],
                [Gate::Go, Gate::Go, Gate::Wait(vec![(3, Started), (0, Completed)]), Gate::Wait(vec![(0, Completed)])],
            ),
            ([done, up, nothing, nothing], [Gate::Go, Gate::Go, Gate::Wait(vec![(3, Started)]), Gate::Go]),
            ([done, up, nothing, started], [Gate::Go, Gate::Go, Gate::Go, Gate::Go]),
            (
                [failed, up, nothing, nothing],
                [Gate::Go, Gate::Go, Gate::Blocked(0, Completed, Exit::Code(4)), Gate::Blocked(0, Completed, Exit::Code(4))],
            ),
        ];
        for (reached, want) in table {
            let got: Vec<Gate> = (0..4).map(|a| gate(&g, a, reached)).collect();
            assert_eq!(got, want, "{reached:?}");
        }
        let roles = [Role::Init, Role::Sidecar, Role::App, Role::App];
        assert_eq!(failed_init(&roles, &[failed, up, nothing, nothing]), Some((0, Exit::Code(4))));
        assert_eq!(failed_init(&roles, &[done, up, failed, nothing]), None, "only an init job stops the container");
    }

    #[test]
    fn stop_runs_dependents_first_and_sidecars_last() {
        let g = demo();
        // (running: migrate, proxy, web, worker; told) → may stop now.
        let table: &[([bool; 4], [bool; 4], &[usize])] = &[
            // migrate is not running, but web and worker (which need it) are: it waits its turn.
            ([false, true, true, true], [false; 4], &[2]),
            ([false, true, false, true], [true, false, true, false], &[3]),
            ([false, true, false, false], [true, false, true, true], &[1]),
            ([false, false, false, false], [true; 4], &[]),
        ];
        for (running, told, want) in table {
            assert_eq!(may_stop(&g, running, told), *want, "{running:?} {told:?}");
        }
    }

    #[test]
    fn sidecars_do_not_count_for_auto_exit_unless_there_is_nothing_else() {
        assert_eq!(counted(&[Role::Sidecar, Role::App, Role::Init]), [false, true, true]);
        assert_eq!(counted(&[Role::Sidecar, Role::Sidecar]), [true, true]);
        assert_eq!(describe(&[(0, Completed), (1, Ready)], &["migrate", "proxy"]), "migrate (completed), proxy (ready)");
    }
}
