//! The decider's memory decisions: a sample over an app's `max_memory_restart` is told to its
//! instance (its machine decides what that means in its state), and near the container's
//! memory limit the largest instance is recycled ([`crate::supervisor::container::Recycler`]
//! says which and when) before the kernel's OOM killer strikes.

use std::collections::HashMap;
use std::time::Instant;

use super::{Effect, Level, Note, Slot, State};
use crate::process::cgroup::human;
use crate::supervisor::container::Candidate;
use crate::supervisor::machine::Cmd;
use crate::supervisor::status::{Sample, Status};

impl State {
    /// A sweep of /proc: the numbers go into the table; every running instance whose tree is
    /// over its app's `max_memory_restart` is told so.
    pub(super) fn sampled(&mut self, mut samples: HashMap<u32, Sample>, fx: &mut Vec<Effect>) {
        for (id, slot) in self.slots.iter_mut() {
            slot.sample = samples.remove(id).unwrap_or_default();
            let Some(limit) = self.apps[slot.app_index].max_memory_restart else { continue };
            if let Some(pid) = slot.last.as_ref().and_then(|u| u.pid)
                && slot.sample.memory_bytes > limit
            {
                fx.push(Effect::Send(*id, Cmd::OverMemory { pid, rss: slot.sample.memory_bytes, limit }));
            }
        }
        fx.push(Effect::Publish);
    }

    /// Whether the container's memory `used` is at the recycling threshold of `limit` (the
    /// loop then sweeps /proc for fresh numbers before it reports the reading).
    pub fn memory_pressed(&self, used: u64, limit: u64) -> bool {
        self.recycler.as_ref().is_some_and(|r| r.pressed(used, limit))
    }

    /// The container's memory reading: the instance with the largest tree is restarted
    /// gracefully (one at a time, with a backoff) when the usage is at the threshold.
    pub(super) fn recycle(&mut self, used: u64, limit: u64, at: Instant, fx: &mut Vec<Effect>) {
        let Some(r) = self.recycler.as_mut() else { return };
        let online = |s: &Slot| s.last.as_ref().is_some_and(|u| u.status == Status::Online && u.pid.is_some());
        let candidates: Vec<Candidate> = self
            .slots
            .iter()
            .filter(|(_, s)| !self.stopping && s.last.as_ref().is_some_and(|u| u.pid.is_some() || u.status == Status::Launching))
            .map(|(id, s)| Candidate { pm_id: *id, bytes: s.sample.memory_bytes, online: online(s) })
            .collect();
        let Some(id) = r.decide(at, used, limit, &candidates) else { return };
        let Some(slot) = self.slots.get(&id) else { return };
        let Some(pid) = slot.last.as_ref().and_then(|u| u.pid) else { return };
        let pct = (r.threshold * 100.0).round();
        let name = self.apps[slot.app_index].name.clone();
        let text = format!(
            "The container uses {} of its {} memory limit (recycling at {pct}%): restarting [{name}:{id}], the largest ({}), before the OOM killer strikes",
            human(used),
            human(limit),
            human(slot.sample.memory_bytes)
        );
        fx.push(Effect::Log(Note { level: Level::Warn, about: Some((name, id, None)), text }));
        fx.push(Effect::Send(id, Cmd::ContainerMemory { pid, used, limit }));
    }
}
