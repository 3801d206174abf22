//! Readiness as a pure function of the status table (`/readyz`).
//!
//! `/livez` never looks at the apps (a crashing app must not get the container restarted by
//! its liveness probe: the runtime restarts the app); `/healthz` is `pm-runtime ping`, answered
//! by the coordinator itself.

use crate::supervisor::status::Status;
use crate::supervisor::status::StatusTable;

/// `Ok(n)`: every instance that should be online is ready (`n` of them). `Err(problems)`: why
/// not, one line per instance (or "the runtime is stopping").
pub fn readiness(table: &StatusTable) -> Result<usize, Vec<String>> {
    if table.stopping {
        return Err(vec!["the runtime is stopping".into()]);
    }
    let mut problems = Vec::new();
    let mut ready = 0;
    for i in &table.instances {
        let who = format!("{}:{}", i.app.name, i.pm_id);
        match i.status() {
            // Stopped on request, or until its cron fires: not expected online.
            Some(Status::Stopped) if i.manual() || i.scheduled() => {}
            Some(Status::Online) if i.ready() => ready += 1,
            Some(Status::Online) => problems.push(format!("{who} is online but not ready yet")),
            None => problems.push(format!("{who} has not started yet")),
            Some(s) => problems.push(format!("{who} is {}", s.as_str())),
        }
    }
    if problems.is_empty() { Ok(ready) } else { Err(problems) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::status::{InstanceStatus, Report, Update};
    use std::sync::Arc;

    /// `ready` is what the table says of an online instance (the tests name it for reading).
    fn row(pm_id: u32, status: Option<Status>, ready: bool, manual: bool, scheduled: bool) -> InstanceStatus {
        assert_eq!(ready, status == Some(Status::Online));
        InstanceStatus {
            pm_id,
            app: Arc::new(crate::http::test_app("web")),
            instance: 0,
            unique_id: String::new(),
            last: status.map(|s| Update { pm_id, since: None, version: None, report: Report { manual, scheduled, ..Report::of(s) } }),
            restarts: Default::default(),
            created_at: std::time::UNIX_EPOCH,
            sample: Default::default(),
            axm_monitor: Default::default(),
            axm_actions: Default::default(),
        }
    }

    #[test]
    fn ready_only_when_every_expected_instance_is() {
        use Status::*;
        // (rows, stopping, expected: Ok(ready count) or the number of problems)
        let cases: Vec<(Vec<InstanceStatus>, bool, Result<usize, usize>)> = vec![
            (vec![], false, Ok(0)),
            (vec![row(0, Some(Online), true, false, false), row(1, Some(Online), true, false, false)], false, Ok(2)),
            (vec![row(0, None, false, false, false)], false, Err(1)),
            (vec![row(0, Some(WaitingRestart), false, false, false)], false, Err(1)),
            (vec![row(0, Some(Errored), false, false, false), row(1, Some(Launching), false, false, false)], false, Err(2)),
            (vec![row(0, Some(Stopped), false, true, false), row(1, Some(Online), true, false, false)], false, Ok(1)),
            (vec![row(0, Some(Stopped), false, false, true)], false, Ok(0)),
            (vec![row(0, Some(Stopped), false, false, false)], false, Err(1)),
            (vec![row(0, Some(Online), true, false, false)], true, Err(1)),
        ];
        for (n, (instances, stopping, want)) in cases.into_iter().enumerate() {
            let t = StatusTable { instances, stopping, ..Default::default() };
            let got = readiness(&t).map_err(|p| p.len());
            assert_eq!(got, want, "case {n}");
        }
        let t = StatusTable { instances: vec![row(3, Some(Errored), false, false, false)], ..Default::default() };
        let p = readiness(&t).unwrap_err();
        assert!(p[0].ends_with(":3 is errored"), "{p:?}");
    }
}
