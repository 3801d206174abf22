//! The dashboard's memory of the last hours: CPU and memory of every instance, and its recent
//! restarts with their reasons, exit statuses and last stderr lines.
//!
//! Owns: one ring per instance: [`CAPACITY`] points, one per [`INTERVAL`] (6 hours), 6 bytes
//! a point (CPU in tenths of a percent as `u16`, memory in KiB as `u32`): 12,960 bytes per
//! instance, allocated when the instance is first seen (pages are touched as points arrive),
//! and the last [`RESTARTS`] restarts with at most [`DEATH_LINES`] stderr lines each.
//!
//! Exists only with `--web`: the HTTP server's task feeds it ([`run`]). The server holds a status
//! feed, so the sampler already sweeps once a second; the history reads the table every
//! [`INTERVAL`] and adds no sweep. A point's CPU is the mean over its interval (from the tree's
//! CPU time), not the last second's rate.
//!
//! Must never: grow without bound (rings and restart lists are capped; instances that left the
//! table are forgotten); hold its lock across an await.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::logs::LogHub;
use crate::logs::format::Stream;
use crate::process::Exit;
use crate::supervisor::status::{ExitReason, InstanceStatus, RestartCounts, RestartReason, StatusFeed, StatusTable};

/// One point per interval.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Six hours of points.
pub const CAPACITY: usize = 6 * 3600 / 10;
/// Restarts remembered per instance.
pub const RESTARTS: usize = 20;
/// stderr lines kept with a restart.
pub const DEATH_LINES: usize = 5;

/// One restart, as seen when the table's restart counts grew.
#[derive(Debug, Clone, PartialEq)]
pub struct Restart {
    pub at: SystemTime,
    pub reason: RestartReason,
    /// How the process before it ended, when it did by itself or for its memory.
    pub exit: Option<Exit>,
    /// Why it ended (the status vocabulary's exit reason).
    pub why: Option<ExitReason>,
    /// The last stderr lines of that process.
    pub stderr: Vec<String>,
}

#[derive(Debug, Default)]
struct Ring {
    cpu: VecDeque<u16>,
    mem: VecDeque<u32>,
    /// The previous point's (pid, CPU seconds, when), for the mean over the interval.
    prev: Option<(Option<u32>, f64, Instant)>,
    counts: RestartCounts,
    restarts: VecDeque<Restart>,
    /// The log sequence number up to which lines belong to earlier processes.
    log_mark: u64,
    /// The process last seen, and the stderr lines of the one that ended (for its restart).
    pid: Option<u32>,
    ended: Vec<String>,
}

#[derive(Debug, Default)]
pub struct History {
    rings: BTreeMap<u32, Ring>,
    /// When the newest point was taken.
    last_at: Option<SystemTime>,
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// An exit as JSON: `{"code": N}` or `{"signal": "SIGKILL"}`, with `"reason"` when known; or null.
pub fn exit_json(e: Option<Exit>, why: Option<ExitReason>) -> Value {
    let mut v = match e {
        Some(Exit::Code(c)) => json!({ "code": c }),
        Some(Exit::Signal(s)) => {
            let name = nix::sys::signal::Signal::try_from(s).map_or_else(|_| s.to_string(), |s| s.as_str().to_string());
            json!({ "signal": name })
        }
        None => return Value::Null,
    };
    if let Some(w) = why {
        v["reason"] = json!(w.as_str());
    }
    v
}

impl History {
    /// The ring of an instance, made when it is first seen (its restarts so far are not news).
    fn ring(&mut self, i: &InstanceStatus) -> &mut Ring {
        // The whole ring at once: a growing VecDeque would double to 4096 points (24 KiB).
        self.rings.entry(i.pm_id).or_insert_with(|| Ring {
            cpu: VecDeque::with_capacity(CAPACITY),
            mem: VecDeque::with_capacity(CAPACITY),
            counts: i.restarts,
            ..Default::default()
        })
    }

    /// Takes one point per instance of the table (forgetting instances that left it).
    pub fn sample(&mut self, table: &StatusTable, now: Instant, wall: SystemTime) {
        if table.sampled_at.is_none() {
            return; // no numbers yet (the sampler has not swept)
        }
        self.rings.retain(|id, _| table.instance(*id).is_some());
        for i in &table.instances {
            let ring = self.ring(i);
            let s = i.sample;
            let cpu = match ring.prev {
                // The same process: its CPU time over the interval.
                Some((pid, secs, at)) if pid == i.pid() && pid.is_some() && s.cpu_seconds >= secs && now > at => {
                    (s.cpu_seconds - secs) / now.duration_since(at).as_secs_f64() * 100.0
                }
                _ => s.cpu_percent,
            };
            ring.prev = Some((i.pid(), s.cpu_seconds, now));
            if ring.cpu.len() == CAPACITY {
                ring.cpu.pop_front();
                ring.mem.pop_front();
            }
            ring.cpu.push_back((cpu * 10.0).round().clamp(0.0, u16::MAX as f64) as u16);
            ring.mem.push_back((s.memory_bytes / 1024).min(u32::MAX as u64) as u32);
        }
        self.last_at = Some(wall);
    }

    /// Records the restarts the table shows since the last look, with the stderr lines of the
    /// process that ended before: `stderr(pm_id, after)` gives the lines after `after` and the
    /// newest sequence number.
    pub fn note_restarts(&mut self, table: &StatusTable, wall: SystemTime, stderr: impl Fn(u32, u64) -> (Vec<String>, u64)) {
        for i in &table.instances {
            let ring = self.ring(i);
            // A process ended (seen as soon as its pid leaves the table): its lines are those
            // since the previous end.
            if ring.pid.is_some() && ring.pid != i.pid() {
                let (lines, mark) = stderr(i.pm_id, ring.log_mark);
                (ring.ended, ring.log_mark) = (lines, mark);
            }
            ring.pid = i.pid();
            for reason in RestartReason::ALL {
                let new = i.restarts.get(reason).saturating_sub(ring.counts.get(reason));
                for _ in 0..new {
                    if ring.restarts.len() == RESTARTS {
                        ring.restarts.pop_front();
                    }
                    let (exit, why) = match &i.last {
                        Some(u) if matches!(reason, RestartReason::Crash | RestartReason::Memory) => (u.last_exit, u.exit_reason),
                        _ => (None, None),
                    };
                    ring.restarts.push_back(Restart { at: wall, reason, exit, why, stderr: std::mem::take(&mut ring.ended) });
                }
            }
            ring.counts = i.restarts;
        }
    }

    /// What the dashboard shows of one instance; stderr lines only for `with_stderr`.
    pub fn json(&self, pm_id: u32, with_stderr: bool) -> Value {
        let Some(r) = self.rings.get(&pm_id) else { return json!({ "pm_id": pm_id, "cpu": [], "mem": [], "restarts": [] }) };
        let restarts: Vec<Value> = r
            .restarts
            .iter()
            .map(|x| {
                json!({
                    "at": ms(x.at),
                    "reason": x.reason.as_str(),
                    "exit": exit_json(x.exit, x.why),
                    "stderr": if with_stderr { json!(x.stderr) } else { Value::Null },
                })
            })
            .collect();
        json!({
            "pm_id": pm_id,
            "end": self.last_at.map(ms),
            "cpu": r.cpu.iter().map(|c| *c as f64 / 10.0).collect::<Vec<_>>(),
            "mem": r.mem.iter().map(|m| *m as u64 * 1024).collect::<Vec<_>>(),
            "restarts": restarts,
        })
    }

    /// Heap bytes held by the points (for the README's figure and its test).
    pub fn heap_bytes(&self) -> usize {
        self.rings.values().map(|r| r.cpu.capacity() * 2 + r.mem.capacity() * 4).sum()
    }
}

/// The last stderr lines of an instance written after sequence number `after`, from the log
/// hub's recent lines, and the newest sequence number.
fn last_stderr(hub: &LogHub, pm_id: u32, after: u64) -> (Vec<String>, u64) {
    let lines = hub.recent(pm_id, 0, Some(after));
    let mark = lines.iter().map(|(seq, _, _)| *seq).max().unwrap_or(after);
    let errs: Vec<String> =
        lines.into_iter().filter(|(_, s, _)| *s == Stream::Err).map(|(_, _, b)| String::from_utf8_lossy(&b).into_owned()).collect();
    (errs[errs.len().saturating_sub(DEATH_LINES)..].to_vec(), mark)
}

fn lock(h: &Mutex<History>) -> std::sync::MutexGuard<'_, History> {
    h.lock().unwrap_or_else(|e| e.into_inner())
}

/// Feeds `history` until the runtime ends: a point every [`INTERVAL`], restarts as they show.
pub async fn run(mut feed: StatusFeed, hub: LogHub, history: Arc<Mutex<History>>) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let table = feed.borrow().clone();
                let mut h = lock(&history);
                h.sample(&table, Instant::now(), SystemTime::now());
                h.note_restarts(&table, SystemTime::now(), |id, after| last_stderr(&hub, id, after));
            }
            changed = feed.changed() => {
                if changed.is_err() {
                    return;
                }
                let table = feed.borrow_and_update().clone();
                lock(&history).note_restarts(&table, SystemTime::now(), |id, after| last_stderr(&hub, id, after));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::status::{Report, Sample, Status, Update};

    fn instance(pm_id: u32, pid: u32, cpu_seconds: f64, memory_bytes: u64) -> InstanceStatus {
        let report = Report { pid: Some(pid), ..Report::of(Status::Online) };
        InstanceStatus {
            pm_id,
            app: Arc::new(crate::http::test_app("a")),
            instance: 0,
            unique_id: String::new(),
            last: Some(Update { pm_id, since: None, version: None, report }),
            restarts: RestartCounts::default(),
            created_at: SystemTime::now(),
            sample: Sample { memory_bytes, cpu_percent: 7.0, cpu_seconds },
            axm_monitor: Default::default(),
            axm_actions: Default::default(),
        }
    }

    fn report(i: &mut InstanceStatus) -> &mut Report {
        &mut i.last.as_mut().unwrap().report
    }

    #[test]
    fn points_are_means_over_the_interval_bounded_to_six_hours() {
        let mut h = History::default();
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let mut table = StatusTable { instances: vec![instance(0, 10, 1.0, 50 << 20)], ..Default::default() };
        h.sample(&table, t0, wall);
        assert_eq!(h.json(0, false)["cpu"], json!([]), "no point before the first sweep");
        table.sampled_at = Some(wall);
        h.sample(&table, t0, wall);
        table.instances[0].sample.cpu_seconds = 3.5;
        h.sample(&table, t0 + INTERVAL, wall);
        // A new process (restart): its first point is the sampler's rate, not a difference.
        report(&mut table.instances[0]).pid = Some(11);
        table.instances[0].sample.cpu_seconds = 0.1;
        h.sample(&table, t0 + INTERVAL * 2, wall);
        let v = h.json(0, false);
        assert_eq!(v["cpu"], json!([7.0, 25.0, 7.0]));
        assert_eq!(v["mem"][0], 50 << 20);
        for k in 0..CAPACITY + 50 {
            h.sample(&table, t0 + INTERVAL * (3 + k as u32), wall);
        }
        assert_eq!(h.json(0, false)["cpu"].as_array().unwrap().len(), CAPACITY);
        // 6 bytes a point: 12,960 bytes (12.7 KiB) per instance, allocated once.
        assert_eq!(h.heap_bytes(), CAPACITY * 6);
        // Instances that leave the table are forgotten.
        table.instances[0].pm_id = 1;
        h.sample(&table, t0, wall);
        assert_eq!(h.json(0, false)["cpu"], json!([]));
    }

    #[test]
    fn restarts_are_noted_with_reason_exit_and_stderr_only_when_allowed() {
        let mut h = History::default();
        let wall = SystemTime::now();
        let mut table = StatusTable { instances: vec![instance(0, 10, 0.0, 0)], sampled_at: Some(wall), ..Default::default() };
        h.sample(&table, Instant::now(), wall);
        h.note_restarts(&table, wall, |_, _| (vec!["never".into()], 0));
        assert_eq!(h.json(0, true)["restarts"], json!([]));
        // The process ends (its pid leaves the table), then is restarted.
        report(&mut table.instances[0]).pid = None;
        h.note_restarts(&table, wall, |id, after| (vec![format!("boom of {id} after {after}")], after + 10));
        let i = &mut table.instances[0];
        report(i).pid = Some(11);
        i.restarts.add(RestartReason::Crash);
        i.restarts.add(RestartReason::Manual);
        report(i).last_exit = Some(Exit::Signal(9));
        report(i).exit_reason = Some(ExitReason::Signal);
        h.note_restarts(&table, wall, |id, after| (vec![format!("boom of {id} after {after}")], after + 10));
        let v = h.json(0, true);
        let r = v["restarts"].as_array().unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(h.json(0, true)["restarts"].as_array().unwrap().len(), 2);
        assert_eq!((r[0]["reason"].as_str(), &r[0]["exit"]), (Some("crash"), &json!({"signal": "SIGKILL", "reason": "signal"})));
        assert_eq!(r[0]["stderr"], json!(["boom of 0 after 0"]));
        assert_eq!(r[1]["stderr"], json!([]), "a manual restart after it has no death lines");
        // The next death gets the lines after the previous one's.
        report(&mut table.instances[0]).pid = Some(12);
        table.instances[0].restarts.add(RestartReason::Crash);
        h.note_restarts(&table, wall, |id, after| (vec![format!("boom of {id} after {after}")], after + 10));
        assert_eq!(h.json(0, true)["restarts"][2]["stderr"], json!(["boom of 0 after 10"]));
        assert_eq!((r[1]["reason"].as_str(), &r[1]["exit"]), (Some("manual"), &Value::Null));
        assert_eq!(h.json(0, false)["restarts"][0]["stderr"], Value::Null);
        for _ in 0..RESTARTS + 5 {
            table.instances[0].restarts.add(RestartReason::Crash);
            h.note_restarts(&table, wall, |_, _| (Vec::new(), 0));
        }
        assert_eq!(h.json(0, true)["restarts"].as_array().unwrap().len(), RESTARTS);
    }
}
