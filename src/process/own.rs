//! The runtime's own process as /proc/self tells it: what `/metrics`, the API and OpenTelemetry
//! publish as the standard `process_*` series.

/// The standard `process_*` series of the runtime's own process.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SelfStats {
    pub cpu_seconds: f64,
    pub resident_memory_bytes: u64,
    pub virtual_memory_bytes: u64,
    pub start_time_seconds: f64,
    pub open_fds: u64,
    pub max_fds: Option<u64>,
}

impl SelfStats {
    /// Reads /proc/self (a handful of small reads).
    pub fn read() -> SelfStats {
        let mut s = SelfStats::default();
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat")
            && let Some((_, rest)) = stat.rsplit_once(')')
        {
            let f: Vec<&str> = rest.split_whitespace().collect();
            // After the command: state(0) … utime(11) stime(12) … starttime(19) vsize(20) rss(21).
            let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            s.cpu_seconds = (n(11) + n(12)) as f64 / 100.0;
            s.virtual_memory_bytes = n(20);
            s.resident_memory_bytes = n(21) * crate::process::unix::page_size();
            let boot = std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|t| t.lines().find_map(|l| l.strip_prefix("btime ").and_then(|v| v.trim().parse::<u64>().ok())));
            if let Some(boot) = boot {
                s.start_time_seconds = boot as f64 + n(19) as f64 / 100.0;
            }
        }
        s.open_fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count() as u64).unwrap_or(0);
        s.max_fds = std::fs::read_to_string("/proc/self/limits").ok().and_then(|t| {
            t.lines().find(|l| l.starts_with("Max open files")).and_then(|l| l.split_whitespace().nth(3)).and_then(|v| v.parse().ok())
        });
        s
    }
}

#[cfg(test)]
mod tests {
    use super::SelfStats;
    use std::time::{SystemTime, UNIX_EPOCH};

    #[test]
    fn reads_its_own_process() {
        let s = SelfStats::read();
        assert!(s.resident_memory_bytes > 0 && s.virtual_memory_bytes >= s.resident_memory_bytes);
        assert!(s.open_fds >= 3);
        assert!(s.max_fds.is_some_and(|m| m >= s.open_fds));
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
        assert!(s.start_time_seconds > now - 3600.0 && s.start_time_seconds <= now + 1.0, "{s:?}");
    }
}
