//! The decider's start schedule (`supervisor::schedule`) applied to the app set: the instances
//! it holds wait as held instances do (an inbox, no task); what a first-wave instance reports
//! or says through the preload may start them, and [`super::Event::StartRest`] starts what is
//! still held once the bound is over.

use super::{Effect, State};
use crate::supervisor::schedule::Sign;
use crate::supervisor::status::{Status, Update};

impl State {
    /// What a report says of an instance, for the start schedule (while it holds any).
    pub(super) fn staging_report(&mut self, update: &Update, fx: &mut Vec<Effect>) {
        if !self.staging.holds() {
            return;
        }
        let r = &update.report;
        let sign = if r.gone || matches!(r.status, Status::Stopped | Status::Errored | Status::WaitingRestart) {
            Sign::Ended
        } else if r.pid.is_some() {
            let preload = self.slots.get(&update.pm_id).is_some_and(|s| crate::preload::given(&self.apps[s.app_index]));
            Sign::Spawned { preload }
        } else {
            return;
        };
        self.staged(update.pm_id, sign, fx);
    }

    /// An instance did `sign`: what the schedule holds starts if it was the one waited for.
    pub(super) fn staged(&mut self, pm_id: u32, sign: Sign, fx: &mut Vec<Effect>) {
        let ids = self.staging.observe(pm_id, sign);
        self.start_staged(ids, fx);
    }

    /// These instances, held by the schedule, start (those still held: not gone meanwhile).
    pub(super) fn start_staged(&mut self, ids: Vec<u32>, fx: &mut Vec<Effect>) {
        for pm_id in ids {
            if let Some(h) = self.held.remove(&pm_id) {
                fx.push(Effect::StartTask { pm_id, restart_time: h.restart_time, resumed: h.resumed });
            }
        }
    }
}
