//! `cron_restart`: PM2 7 uses the JS `croner`; this is its Rust port, with the same dialect
//! (5 fields, or 6 with seconds first; `L`, `#`, `W`; day-of-month OR day-of-week).
//! Times are local (the `TZ` environment variable), as in PM2.

use std::time::Duration;

use chrono::{DateTime, Local, TimeZone};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// A `cron_restart` pattern croner does not accept.
#[derive(Debug, thiserror::Error)]
#[error("invalid cron pattern {pattern:?}: {source}")]
pub struct BadPattern {
    pattern: String,
    source: croner::errors::CronError,
}

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule(Cron);

impl Schedule {
    pub fn parse(pattern: &str) -> Result<Self, BadPattern> {
        let parser = CronParser::builder().seconds(Seconds::Optional).year(Year::Disallowed).build();
        parser.parse(pattern.trim()).map(Schedule).map_err(|source| BadPattern { pattern: pattern.to_string(), source })
    }

    /// Time from `now` until the next fire (strictly after `now`).
    pub fn until_next<Tz: TimeZone>(&self, now: &DateTime<Tz>) -> Option<Duration> {
        let next = self.0.find_next_occurrence(now, false).ok()?;
        (next.with_timezone(&chrono::Utc) - now.with_timezone(&chrono::Utc)).to_std().ok()
    }

    pub fn until_next_local(&self) -> Option<Duration> {
        self.until_next(&Local::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    #[test]
    fn next_fire_table() {
        // 2026-11-21 is a Saturday.
        let now = Utc.with_ymd_and_hms(2026, 11, 21, 10, 0, 1).unwrap();
        let table = [
            ("*/2 * * * * *", 1), // 6 fields: seconds first
            ("0 * * * *", 3599),  // 5 fields: top of the next hour
            ("30 10 * * *", 1799),
            ("0 0 * * SAT", 7 * 86400 - 36001), // today's midnight has passed: next Saturday
            ("0 12 21 * *", 2 * 3600 - 1),      // day of month
        ];
        for (p, secs) in table {
            let s = Schedule::parse(p).unwrap();
            assert_eq!(s.until_next(&now), Some(Duration::from_secs(secs)), "{p}");
        }
    }

    #[test]
    fn bad_patterns() {
        for p in ["", "61 * * * *", "* * *", "not a cron", "* * * * * * *"] {
            assert!(Schedule::parse(p).is_err(), "{p}");
        }
    }
}
