//! The container's memory, as the coordinator sees it: the cgroup's limits and usage, read
//! with each sample and published in the status table (`ls` header, `/metrics`).
//!
//! Owns: the last reading and what has been said about it (a changed limit is logged once).
//! Reads through [`crate::process::cgroup`]; decides nothing about instances.

use crate::process::cgroup::{self, Cgroup, Limits, Usage, Version};

/// The container as of the last reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Container {
    pub version: Version,
    pub limits: Limits,
    pub usage: Option<Usage>,
    /// Processes the OOM killer has killed in the cgroup so far.
    pub oom_kills: Option<u64>,
}

/// The coordinator's view of the container.
#[derive(Debug, Default)]
pub struct Watch {
    cgroup: Option<&'static Cgroup>,
    pub last: Option<Container>,
}

impl Watch {
    /// Finds the runtime's cgroup and says what it allows (once, at start).
    pub fn start() -> Watch {
        let cgroup = cgroup::current();
        tracing::info!("{}", cgroup::describe(cgroup));
        let mut w = Watch { cgroup, last: None };
        w.read();
        w
    }

    /// Reads the limits and usage again; a limit that changed (a resize in place) is logged.
    pub fn read(&mut self) -> Option<Container> {
        let cg = self.cgroup?;
        let now = Container { version: cg.version, limits: cg.limits(), usage: cg.usage(), oom_kills: cg.oom_kills() };
        if let Some(before) = self.last
            && before.limits.memory != now.limits.memory
        {
            let show = |m: Option<u64>| m.map_or_else(|| "unlimited".to_string(), cgroup::human);
            tracing::warn!("The container's memory limit changed: {} → {}", show(before.limits.memory), show(now.limits.memory));
        }
        self.last = Some(now);
        self.last
    }
}
