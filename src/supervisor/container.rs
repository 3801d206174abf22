//! The container's memory, as the coordinator sees it: the cgroup's limits and usage, read
//! with each sample and published in the status table (`ls` header, `/metrics`).
//!
//! Owns: the last reading and what has been said about it (a changed limit is logged once).
//! Reads through [`crate::process::cgroup`]; decides nothing about instances.

use std::time::{Duration, Instant};

use super::status::Container;
use crate::process::cgroup::{self, Cgroup};

/// The coordinator's view of the container.
#[derive(Debug, Default)]
pub struct Watch {
    cgroup: Option<&'static Cgroup>,
    pub last: Option<Container>,
}

impl Watch {
    /// Finds the runtime's cgroup and says what it allows (once, at start, when it limits
    /// anything: `ls` shows it always).
    pub fn start() -> Watch {
        let cgroup = cgroup::current();
        let mut w = Watch { cgroup, last: None };
        if w.read().is_some_and(|c| c.limits.memory.is_some() || c.limits.cpu.is_some()) {
            tracing::info!("{}", cgroup::describe(cgroup));
        }
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

pub const MIB: u64 = 1 << 20;

/// One app as planned at start, for the memory fit check.
#[derive(Debug, Clone, Copy)]
pub struct Planned<'a> {
    pub name: &'a str,
    pub instances: u32,
    /// `max_memory_restart`, bytes.
    pub max_memory: Option<u64>,
    /// A Node app (its heap is V8's default unless sized).
    pub node: bool,
    /// `node_heap: auto`: its heap is sized to fit.
    pub node_heap: bool,
}

/// At start: warnings when the apps (`instances[i]` of `apps[i]`) can outgrow the container's
/// memory, or stopping can outlast the platform's grace period.
pub fn warn_at_start(
    apps: &[std::sync::Arc<crate::config::App>],
    instances: &[u32],
    container: Option<Container>,
    shutdown_delay: Duration,
) {
    if let Some(c) = container
        && let Some(limit) = c.limits.memory
    {
        let planned: Vec<Planned> = apps
            .iter()
            .zip(instances)
            .map(|(a, n)| Planned {
                name: &a.name,
                instances: *n,
                max_memory: a.max_memory_restart,
                node: a.command.is_node,
                node_heap: a.node_heap,
            })
            .collect();
        let machine = cgroup::machine_memory().unwrap_or(limit);
        if let Some(w) = fit_warning(&planned, limit, c.limits.oom_group, v8_default_heap(machine)) {
            tracing::warn!("{w}");
        }
    }
    let longest = apps.iter().map(|a| a.kill_timeout).max().unwrap_or_default();
    let platform = platform_grace(&|k| std::env::var(k).ok(), std::path::Path::new("/.dockerenv").exists());
    if let Some(w) = grace_warning(longest, shutdown_delay, platform) {
        tracing::warn!("{w}");
    }
}

/// V8's default old-space limit as a Node that sees `machine` bytes of memory sets it (a
/// quarter of it, at most 2 GiB; older Nodes see the machine, not the container).
pub fn v8_default_heap(machine: u64) -> u64 {
    (machine / 4).min(2 << 30)
}

/// A warning when the apps may together use more than the container's `limit`: each instance
/// counts for its `max_memory_restart`, a Node instance without one for V8's default heap
/// (`v8_heap`); instances with `node_heap: auto` are sized to fit and other apps whose use is
/// unknown count for nothing. Says what would fit.
pub fn fit_warning(apps: &[Planned], limit: u64, oom_group: bool, v8_heap: u64) -> Option<String> {
    let mut parts = Vec::new();
    let mut total = 0u64;
    let mut counted = 0u64;
    for a in apps {
        let each = match (a.max_memory, a.node && !a.node_heap) {
            (Some(m), _) => m,
            (None, true) => v8_heap,
            (None, false) => continue,
        };
        let why = if a.max_memory.is_some() { "max_memory_restart" } else { "V8's default heap" };
        total = total.saturating_add(each.saturating_mul(a.instances.into()));
        counted += u64::from(a.instances);
        parts.push(format!("{} × {} ({why}) for {}", a.instances, cgroup::human(each), a.name));
    }
    if total <= limit || counted == 0 {
        return None;
    }
    let group =
        if oom_group { "; memory.oom.group is set, so one OOM kill stops every process of the container, pm-runtime included" } else { "" };
    let per = limit / counted;
    Some(format!(
        "Memory: the apps may grow to {} ({}), over the container's limit of {}{group}. What fits: at most {} each for these {counted} instance(s) (max_memory_restart: {}%, or node_heap: auto for Node apps), or fewer instances",
        cgroup::human(total),
        parts.join(", "),
        cgroup::human(limit),
        cgroup::human(per),
        (100 / counted).max(1),
    ))
}

/// `node_heap: auto`: the `--max-old-space-size` (MiB) of each of `instances` Node processes
/// sharing `limit`: 85 % of the limit split evenly, less 48 MiB of each process's memory that
/// is not heap, never under 64 MiB.
pub fn heap_size_mib(limit: u64, instances: u32) -> u64 {
    let share = limit / 100 * 85 / u64::from(instances.max(1));
    (share.saturating_sub(48 * MIB) / MIB).max(64)
}

/// Where the runtime runs, as far as it can tell, and how long that platform waits after its
/// stop signal before SIGKILL.
pub fn platform_grace(env: &dyn Fn(&str) -> Option<String>, dockerenv: bool) -> Option<(&'static str, Duration)> {
    let secs = |v: Option<String>| v.and_then(|v| v.trim().parse::<f64>().ok()).filter(|s| s.is_finite() && *s >= 0.0);
    if env("KUBERNETES_SERVICE_HOST").is_some() {
        let s = secs(env("TERMINATION_GRACE_PERIOD_SECONDS")).unwrap_or(30.0);
        return Some(("Kubernetes terminationGracePeriodSeconds", Duration::from_secs_f64(s)));
    }
    if env("DYNO").is_some() {
        return Some(("Heroku", Duration::from_secs(30)));
    }
    dockerenv.then_some(("Docker's default stop timeout", Duration::from_secs(10)))
}

/// A warning when stopping can take longer than the platform waits: the longest `kill_timeout`
/// plus `shutdown_delay` against its grace period.
pub fn grace_warning(longest_kill_timeout: Duration, shutdown_delay: Duration, platform: Option<(&str, Duration)>) -> Option<String> {
    let (name, grace) = platform?;
    let need = longest_kill_timeout + shutdown_delay;
    (need > grace).then(|| {
        format!(
            "Stopping may take {:.1}s (longest kill_timeout {:.1}s + shutdown_delay {:.1}s), longer than {name} ({:.0}s): the platform will SIGKILL the apps first",
            need.as_secs_f64(),
            longest_kill_timeout.as_secs_f64(),
            shutdown_delay.as_secs_f64(),
            grace.as_secs_f64()
        )
    })
}

/// The default share of the container's memory limit at which the largest instance is recycled.
pub const RECYCLE_AT: f64 = 0.95;
/// The pause after a recycle that did not bring the usage under the threshold, before another
/// (doubles while recycling does not help).
pub const RECYCLE_BACKOFF: Duration = Duration::from_secs(5);
const RECYCLE_BACKOFF_MAX: Duration = Duration::from_secs(300);

/// A `PM_RUNTIME_MEMORY_RECYCLE` value that is neither a percentage nor `off` (the value given).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("PM_RUNTIME_MEMORY_RECYCLE: expected a percentage of the container's memory limit (e.g. 95) or off, got {0:?}")]
pub struct BadRecycleThreshold(pub String);

/// `PM_RUNTIME_MEMORY_RECYCLE`: the share of the limit (`95`, `90%`), or `off`/`0`.
pub fn recycle_threshold(value: Option<&str>) -> Result<Option<f64>, BadRecycleThreshold> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else { return Ok(Some(RECYCLE_AT)) };
    if v.eq_ignore_ascii_case("off") || v == "0" {
        return Ok(None);
    }
    match v.trim_end_matches('%').trim().parse::<f64>() {
        Ok(p) if p > 0.0 && p <= 100.0 => Ok(Some(p / 100.0)),
        _ => Err(BadRecycleThreshold(v.to_string())),
    }
}

/// Recycling before the OOM killer: when the container's memory nears its limit, the instance
/// with the largest tree is restarted gracefully — one at a time. A recycle that brought the
/// usage under the threshold allows the next one at once (a steady leak is recycled as often as
/// it needs); one that did not (the memory is elsewhere) makes the next wait, 5 s doubling to
/// 5 min: never a loop of restarts that do not help.
///
/// Owns: when the last recycle happened, whether the usage went under the threshold since,
/// which instance is being recycled, the current backoff.
/// Pure: the caller passes the clock and the readings.
#[derive(Debug, Clone)]
pub struct Recycler {
    pub threshold: f64,
    backoff: Duration,
    last: Option<Instant>,
    /// The instance being recycled, until it is online again.
    in_flight: Option<u32>,
    /// The usage went under the threshold since the last recycle.
    relieved: bool,
}

/// An instance that could be recycled: pm_id, memory of its tree, whether it is online (a
/// recycle waits for the previous one to be online again).
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    pub pm_id: u32,
    pub bytes: u64,
    pub online: bool,
}

impl Recycler {
    pub fn new(threshold: f64) -> Recycler {
        Recycler { threshold, backoff: RECYCLE_BACKOFF, last: None, in_flight: None, relieved: true }
    }

    /// Whether the container's memory `used` (working set) is at the threshold of `limit`.
    pub fn pressed(&self, used: u64, limit: u64) -> bool {
        used as f64 >= limit as f64 * self.threshold
    }

    /// Which instance to recycle now, if any.
    pub fn decide(&mut self, now: Instant, used: u64, limit: u64, candidates: &[Candidate]) -> Option<u32> {
        if let Some(id) = self.in_flight
            && candidates.iter().any(|c| c.pm_id == id && !c.online)
        {
            return None;
        }
        self.in_flight = None;
        if !self.pressed(used, limit) {
            self.relieved = true;
            return None;
        }
        if self.relieved {
            self.backoff = RECYCLE_BACKOFF;
        } else if self.last.is_some_and(|t| now.duration_since(t) < self.backoff) {
            return None;
        }
        // A tree too small to matter (under 5 % of the limit) is not worth a restart: the
        // memory is elsewhere (the runtime, page cache, a process just killed).
        let pick = candidates.iter().filter(|c| c.online && c.bytes >= limit / 20).max_by_key(|c| c.bytes)?;
        if !self.relieved {
            self.backoff = (self.backoff * 2).min(RECYCLE_BACKOFF_MAX);
        }
        self.relieved = false;
        self.last = Some(now);
        self.in_flight = Some(pick.pm_id);
        Some(pick.pm_id)
    }
}

/// Where the termination message goes: `/dev/termination-log` (Kubernetes shows it in
/// `kubectl describe pod`), or `PM_RUNTIME_TERMINATION_LOG`.
pub fn termination_log_path() -> std::path::PathBuf {
    std::env::var_os("PM_RUNTIME_TERMINATION_LOG").filter(|p| !p.is_empty()).map_or_else(|| "/dev/termination-log".into(), Into::into)
}

/// Writes `message` to the termination log when it exists and is writable (never creates it:
/// outside Kubernetes there is none). At most 4 KiB, as the kubelet reads.
pub fn write_termination_log(message: &str) {
    let path = termination_log_path();
    let Ok(mut f) = std::fs::OpenOptions::new().write(true).truncate(true).open(&path) else { return };
    let mut end = message.len().min(4096);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let _ = std::io::Write::write_all(&mut f, &message.as_bytes()[..end]);
}

/// The termination message of a runtime that exits non-zero because of its apps: which app,
/// and why its last process ended.
pub fn termination_message(summary: &str, deaths: &[(String, u32, Option<&super::status::Death>)]) -> String {
    let mut s = summary.to_string();
    for (name, pm_id, death) in deaths {
        match death {
            Some(d) => s.push_str(&format!("\n{}", d.line(name, *pm_id))),
            None => s.push_str(&format!("\nApp [{name}:{pm_id}] never ran")),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn app(name: &str, instances: u32, max_memory: Option<u64>, node: bool, node_heap: bool) -> Planned<'_> {
        Planned { name, instances, max_memory, node, node_heap }
    }

    #[test]
    fn warns_when_the_apps_can_outgrow_the_container_and_says_what_fits() {
        let heap = v8_default_heap(16 * GIB);
        assert_eq!(heap, 2 * GIB);
        // 4 Node workers with V8's default heap in 1 GiB: over.
        let w = fit_warning(&[app("web", 4, None, true, false)], GIB, true, heap).expect("a warning");
        assert!(w.contains("4 × 2.0 GiB (V8's default heap) for web"), "{w}");
        assert!(w.contains("limit of 1.0 GiB; memory.oom.group is set"), "{w}");
        assert!(w.contains("at most 256 MiB each for these 4 instance(s) (max_memory_restart: 25%"), "{w}");
        // Sized ones that fit, heap-sized Node apps, and apps of unknown use: no warning.
        assert_eq!(fit_warning(&[app("web", 4, Some(200 * MIB), true, false), app("sh", 9, None, false, false)], GIB, false, heap), None);
        assert_eq!(fit_warning(&[app("web", 8, None, true, true)], GIB, false, heap), None);
        let w = fit_warning(&[app("a", 2, Some(400 * MIB), false, false), app("b", 1, Some(300 * MIB), false, false)], GIB, false, heap)
            .unwrap();
        assert!(w.contains("grow to 1.1 GiB (2 × 400 MiB (max_memory_restart) for a, 1 × 300 MiB (max_memory_restart) for b)"), "{w}");
        assert!(!w.contains("oom.group"));
    }

    #[test]
    fn heap_sizes_share_the_limit() {
        assert_eq!(heap_size_mib(GIB, 4), (GIB / 100 * 85 / 4 - 48 * MIB) / MIB);
        assert_eq!(heap_size_mib(GIB, 1), 822);
        assert_eq!(heap_size_mib(256 * MIB, 16), 64, "never under 64 MiB");
        assert_eq!(heap_size_mib(GIB, 0), heap_size_mib(GIB, 1));
    }

    #[test]
    fn grace_periods_by_platform() {
        let env =
            |pairs: &'static [(&'static str, &'static str)]| move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string());
        let k8s = platform_grace(&env(&[("KUBERNETES_SERVICE_HOST", "10.0.0.1"), ("TERMINATION_GRACE_PERIOD_SECONDS", "5")]), true);
        assert_eq!(k8s, Some(("Kubernetes terminationGracePeriodSeconds", Duration::from_secs(5))));
        assert_eq!(platform_grace(&env(&[("KUBERNETES_SERVICE_HOST", "x")]), false).unwrap().1, Duration::from_secs(30));
        assert_eq!(platform_grace(&env(&[("DYNO", "web.1")]), false).unwrap().0, "Heroku");
        assert_eq!(platform_grace(&env(&[]), true).unwrap().1, Duration::from_secs(10));
        assert_eq!(platform_grace(&env(&[]), false), None);
        let w = grace_warning(Duration::from_secs(8), Duration::from_secs(5), platform_grace(&env(&[]), true)).unwrap();
        assert!(
            w.contains("13.0s (longest kill_timeout 8.0s + shutdown_delay 5.0s), longer than Docker's default stop timeout (10s)"),
            "{w}"
        );
        assert_eq!(grace_warning(Duration::from_secs(8), Duration::ZERO, platform_grace(&env(&[]), true)), None);
        assert_eq!(grace_warning(Duration::from_secs(80), Duration::ZERO, None), None);
    }

    #[test]
    fn recycle_threshold_from_env() {
        assert_eq!(recycle_threshold(None), Ok(Some(0.95)));
        assert_eq!(recycle_threshold(Some("90")), Ok(Some(0.9)));
        assert_eq!(recycle_threshold(Some("80%")), Ok(Some(0.8)));
        assert_eq!(recycle_threshold(Some("off")), Ok(None));
        assert_eq!(recycle_threshold(Some("0")), Ok(None));
        assert_eq!(recycle_threshold(Some("150")), Err(BadRecycleThreshold("150".into())));
        assert!(BadRecycleThreshold("150".into()).to_string().starts_with("PM_RUNTIME_MEMORY_RECYCLE: expected a percentage"));
    }

    #[test]
    fn recycles_the_largest_one_at_a_time_with_a_backoff() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let c = |pm_id, bytes, online| Candidate { pm_id, bytes, online };
        let mut r = Recycler::new(0.95);
        let limit = 1000;
        let all = [c(0, 300, true), c(1, 500, true), c(2, 100, true)];
        // Under the threshold: nothing.
        assert_eq!(r.decide(at(0), 949, limit, &all), None);
        // At it: the largest tree.
        assert_eq!(r.decide(at(1), 950, limit, &all), Some(1));
        // Never two at once: 1 is restarting.
        assert_eq!(r.decide(at(20), 990, limit, &[c(0, 300, true), c(1, 0, false)]), None);
        // Online again, still pressed (the recycle did not help), past the backoff (5 s): the next largest.
        assert_eq!(r.decide(at(21), 990, limit, &[c(0, 300, true), c(1, 50, true)]), Some(0));
        // Still no relief: the backoff doubled to 10 s, then 20 s.
        assert_eq!(r.decide(at(29), 990, limit, &all), None);
        assert_eq!(r.decide(at(31), 990, limit, &all), Some(1));
        assert_eq!(r.decide(at(31 + 19), 990, limit, &all), None, "20 s now");
        // A recycle that helps (the usage went under the threshold) allows the next at once:
        // a steady leak is recycled as often as it needs.
        assert_eq!(r.decide(at(52), 10, limit, &all), None);
        assert_eq!(r.decide(at(53), 990, limit, &all), Some(1));
        assert_eq!(r.decide(at(54), 500, limit, &all), None);
        assert_eq!(r.decide(at(55), 990, limit, &all), Some(1), "relieved again: no wait");
        assert_eq!(r.decide(at(56), 990, limit, &all), None, "no relief since: 5 s");
        // Nothing online: nothing to recycle.
        assert_eq!(Recycler::new(0.95).decide(at(0), 990, limit, &[c(0, 900, false)]), None);
        // Only trees that matter: small ones are left alone, and no backoff is spent on them.
        let mut r = Recycler::new(0.95);
        assert_eq!(r.decide(at(0), 990, limit, &[c(0, 49, true), c(1, 10, true)]), None);
        assert_eq!(r.decide(at(1), 990, limit, &[c(0, 50, true), c(1, 10, true)]), Some(0));
    }
}
