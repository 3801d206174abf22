//! The decider's start and stop order (`depends_on`, `role: init/sidecar`): which instance
//! starts now and which is held, when a held app is released or blocked, what an init job's
//! failure ends, what `start web` starts among web's dependencies, and which app is told to
//! stop next (dependents first, sidecars last). The rules themselves are `supervisor::order`'s
//! pure functions; here they are applied to the app set, with the log lines that say so.

use std::sync::Arc;

use super::{Effect, Held, Level, Note, Phase, State, note};
use crate::config::Role;
use crate::exit::Outcome;
use crate::supervisor::machine::{Cmd, Shutdown};
use crate::supervisor::order::{self, Gate, Reached};
use crate::supervisor::status::Status;

impl State {
    /// The task of slot `pm_id` starts now, or is held until its app's dependencies are met.
    pub(super) fn start_task(&mut self, pm_id: u32, restart_time: u32, resumed: bool, fx: &mut Vec<Effect>) {
        self.order.sync(&self.apps);
        let Some(app) = self.slots.get(&pm_id).map(|s| s.app_index) else { return };
        if self.order.released[app] && self.staging.admit(pm_id) {
            fx.push(Effect::StartTask { pm_id, restart_time, resumed });
        } else {
            self.held.insert(pm_id, Held { blocked: self.order.blocked[app], restart_time, resumed });
            fx.push(Effect::Hold(pm_id));
        }
    }

    /// The runtime is going down: held instances will never start, they are gone.
    pub(super) fn drop_held(&mut self, fx: &mut Vec<Effect>) {
        self.staging.release();
        let ids: Vec<u32> = std::mem::take(&mut self.held).into_keys().collect();
        if ids.is_empty() {
            return;
        }
        for pm_id in ids {
            self.tasks.remove(&pm_id);
            self.order.reached.remove(&pm_id);
            if let Some(slot) = self.slots.remove(&pm_id) {
                self.numbers.entry(slot.app_index).or_default().give_back(slot.instance);
            }
            fx.push(Effect::Forget(pm_id));
        }
        fx.push(Effect::Publish);
        self.check_end(fx);
    }

    /// A stop signal: with `shutdown_delay`, readiness ends now (the table says stopping) and
    /// the apps get the stop when it is over; without, at once.
    pub(super) fn stop_requested(&mut self, fx: &mut Vec<Effect>) {
        if self.shutdown_delay.is_zero() || self.order.stop_begun {
            return self.begin_stop(fx);
        }
        let secs = self.shutdown_delay.as_secs_f64();
        fx.push(note(Level::Info, format!("Not ready any more; stopping every app in {secs:.1}s (shutdown_delay)")));
        self.order.delay_pending = true;
        fx.push(Effect::StopIn(self.shutdown_delay));
    }

    /// The stop: with an order, the apps no running app depends on (then, as they end, the
    /// next ones: [`State::stop_next`]); without, every app at once.
    pub(super) fn begin_stop(&mut self, fx: &mut Vec<Effect>) {
        self.order.delay_pending = false;
        self.drop_held(fx);
        self.order.stop_begun = true;
        if self.order.graph.is_flat() {
            self.shutdown_all(Shutdown::Graceful, fx);
        } else {
            self.stop_next(fx);
        }
    }

    /// Every app to this shutdown level at once.
    pub(super) fn shutdown_all(&mut self, level: Shutdown, fx: &mut Vec<Effect>) {
        self.order.stop_begun = true;
        self.order.level = self.order.level.max(level);
        fx.push(Effect::Shutdown(level));
    }

    /// Tells the apps whose dependents have all ended to stop (dependents first, sidecars last).
    fn stop_next(&mut self, fx: &mut Vec<Effect>) {
        if !self.order.stop_begun || self.order.graph.is_flat() || self.order.level != Shutdown::Running {
            return;
        }
        // An app runs while a task of its instances does (a stopped instance keeps its slot
        // until the end, for the outcome).
        let mut running = vec![false; self.apps.len()];
        for s in self.tasks.iter().filter_map(|id| self.slots.get(id)) {
            running[s.app_index] = true;
        }
        let next = order::may_stop(&self.order.graph, &running, &self.order.told_stop);
        let names: Vec<&str> = next.iter().filter(|&&i| running[i]).map(|&i| self.apps[i].name.as_str()).collect();
        if !names.is_empty() && self.order.told_stop.iter().any(|t| *t) {
            fx.push(note(Level::Info, format!("Stopping {} (the apps that depend on it have stopped)", names.join(", "))));
        }
        for i in next {
            self.order.told_stop[i] = true;
            fx.push(Effect::StopApp(i));
        }
        if self.order.told_stop.iter().all(|t| *t) {
            self.order.level = Shutdown::Graceful;
        }
    }

    /// After every event: during a stop the next apps are told; otherwise held apps whose
    /// dependencies are met are released, the others say what they wait for, and a failed init
    /// job ends the run with its code (nothing else starts).
    pub(super) fn advance_order(&mut self, fx: &mut Vec<Effect>) {
        if self.order.stop_begun {
            return self.stop_next(fx);
        }
        if self.order.graph.is_flat() || self.stopping || self.phase != Phase::Running {
            return;
        }
        let mut per_app: Vec<Vec<&Reached>> = vec![Vec::new(); self.apps.len()];
        for (id, s) in &self.slots {
            per_app[s.app_index].push(self.order.reached.get(id).unwrap_or(&order::NOTHING));
        }
        let reached: Vec<Reached> = per_app.into_iter().map(Reached::of_app).collect();
        let roles: Vec<Role> = self.apps.iter().map(|a| a.role).collect();
        if let Some((app, exit)) = order::failed_init(&roles, &reached) {
            let name = &self.apps[app].name;
            fx.push(note(
                Level::Error,
                format!(
                    "Init job [{name}] failed (exit code {}): stopping the container; the apps waiting for it were not started",
                    exit.as_code()
                ),
            ));
            self.drain(Outcome::AppsFinished(exit.as_code().max(1)), fx);
            return self.check_end(fx);
        }
        let apps = self.apps.clone();
        let names: Vec<&str> = apps.iter().map(|a| a.name.as_str()).collect();
        let held_apps: Vec<usize> = (0..apps.len()).filter(|&a| !self.order.released[a]).collect();
        for app in held_apps {
            let waiting = match order::gate(&self.order.graph, app, &reached) {
                Gate::Go => {
                    self.release(app, &names, fx);
                    continue;
                }
                Gate::Wait(waits) => {
                    self.order.blocked[app] = false;
                    order::describe(&waits, &names)
                }
                Gate::Blocked(dep, c, exit) => {
                    self.order.blocked[app] = true;
                    let text = format!("{} ({}): it ended with code {}; start it to try again", names[dep], c.as_str(), exit.as_code());
                    if self.order.waiting[app].as_deref() != Some(text.as_str()) {
                        fx.push(note(Level::Error, format!("App [{}] cannot start: it needs {text}", names[app])));
                    }
                    text
                }
            };
            self.order.waiting[app] = Some(Arc::from(waiting));
        }
        // A held instance whose app is blocked counts as settled for auto-exit.
        for (id, h) in self.held.iter_mut() {
            if let Some(s) = self.slots.get(id) {
                h.blocked = self.order.blocked[s.app_index];
            }
        }
        self.check_settled(fx);
    }

    /// The app's dependencies are met: its held instances start.
    fn release(&mut self, app: usize, names: &[&str], fx: &mut Vec<Effect>) {
        let met: Vec<String> = self.order.graph.needs[app].iter().map(|e| format!("{} {}", names[e.to], e.condition.as_str())).collect();
        fx.push(note(Level::Info, format!("App [{}] starting: {}", names[app], met.join(", "))));
        self.order.released[app] = true;
        self.order.waiting[app] = None;
        let held: Vec<u32> =
            self.slots.iter().filter(|(id, s)| s.app_index == app && self.held.contains_key(id)).map(|(id, _)| *id).collect();
        for pm_id in held {
            if let Some(h) = self.held.remove(&pm_id) {
                fx.push(Effect::StartTask { pm_id, restart_time: h.restart_time, resumed: h.resumed });
            }
        }
    }

    /// `start web` also starts what web needs (`depends_on`, init jobs, sidecars) that is
    /// stopped or errored, so that a held app can be released; running dependencies are left alone.
    pub(super) fn start_dependencies(&self, ids: &[u32], fx: &mut Vec<Effect>) {
        let targets: Vec<usize> = ids.iter().filter_map(|id| self.slots.get(id)).map(|s| s.app_index).collect();
        if targets.is_empty() {
            return;
        }
        let needed = self.order.graph.closure(&targets);
        for (id, s) in &self.slots {
            // A completed init job (or any job that exited 0) is done, not stopped.
            let done = self.order.reached.get(id).is_some_and(|r| r.completed);
            let parked = !done && s.last.as_ref().is_some_and(|u| matches!(u.status, Status::Stopped | Status::Errored));
            if needed.get(s.app_index).copied().unwrap_or(false) && !targets.contains(&s.app_index) && parked {
                let text = format!("Starting {}:{id}: {} depends on it", self.apps[s.app_index].name, self.apps[targets[0]].name);
                fx.push(Effect::Log(Note { level: Level::Info, about: None, text }));
                fx.push(Effect::Send(*id, Cmd::Start));
            }
        }
    }
}
