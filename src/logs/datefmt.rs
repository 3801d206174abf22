//! PM2's date formats: the dayjs tokens of `log_date_format`, `time: true` and
//! `PM2_LOG_DATE_FORMAT`, parsed once into a token list and rendered by hand into a byte buffer.
//!
//! Owns: the token grammar (exactly dayjs's `format()` regex, quirks included), and turning an
//! instant into broken-down fields ([`Parts`]) in local time (chrono's `Local`, which honours
//! `TZ`) or UTC.
//!
//! Must never: allocate while rendering (callers render once per line), read the clock itself
//! (callers pass the instant), or touch the environment other than through chrono's `Local`.
//!
//! Tokens (dayjs, English locale): `YYYY YY M MM MMM MMMM D DD d dd ddd dddd H HH h hh m mm s ss
//! SSS Z ZZ A a`, and `[text]` for literal text (`[]` with nothing inside is not an escape).
//! Anything else is literal. dayjs quirks kept: a run of `Y` of length 1 or 3 renders the offset
//! as `ZZ` does; runs are matched greedily (`MMMMM` = `MMMM` then `M`, `DDD` = `DD` then `D`,
//! `SS` is literal because only `SSS` is a token).

use std::time::SystemTime;

use chrono::{DateTime, Datelike, Local, Offset, Timelike, Utc};

/// Which clock face an instant is shown on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    /// The process's local time zone (chrono's `Local`: `TZ`, else `/etc/localtime`).
    Local,
    Utc,
}

/// One instant broken down into calendar fields in some zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts {
    pub year: i32,
    /// 1..=12
    pub month: u8,
    /// 1..=31
    pub day: u8,
    /// 0 = Sunday .. 6 = Saturday (dayjs `d`).
    pub weekday: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    pub millis: u16,
    /// Seconds east of UTC.
    pub offset_secs: i32,
}

impl Parts {
    pub fn new(t: SystemTime, zone: Zone) -> Parts {
        match zone {
            Zone::Utc => Self::from_chrono(&DateTime::<Utc>::from(t)),
            Zone::Local => Self::from_chrono(&DateTime::<Local>::from(t)),
        }
    }

    fn from_chrono<Tz: chrono::TimeZone>(d: &DateTime<Tz>) -> Parts {
        Parts {
            year: d.year(),
            month: d.month() as u8,
            day: d.day() as u8,
            weekday: d.weekday().num_days_from_sunday() as u8,
            hour: d.hour() as u8,
            minute: d.minute() as u8,
            // A leap second shows as :59.999, never :60.
            second: d.second().min(59) as u8,
            millis: (d.nanosecond() / 1_000_000).min(999) as u16,
            offset_secs: d.offset().fix().local_minus_utc(),
        }
    }

    /// `2026-11-21T16:05:44.972Z`: dayjs's `toJSON` (meaningful for UTC parts; years are
    /// clamped to 0..=9999 so the shape is fixed).
    pub fn iso_utc(&self) -> [u8; 24] {
        let mut b = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, mut v: u32, width: usize| {
            for i in (at..at + width).rev() {
                b[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, self.year.clamp(0, 9999) as u32, 4);
        put(5, self.month as u32, 2);
        put(8, self.day as u32, 2);
        put(11, self.hour as u32, 2);
        put(14, self.minute as u32, 2);
        put(17, self.second as u32, 2);
        put(20, self.millis as u32, 3);
        b
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    /// Byte range into `DateFormat::text`.
    Lit(u32, u32),
    Year4,
    Year2,
    Month,
    Month2,
    MonthShort,
    MonthLong,
    Day,
    Day2,
    Weekday,
    WeekdayMin,
    WeekdayShort,
    WeekdayLong,
    Hour,
    Hour2,
    Hour12,
    Hour12x2,
    Minute,
    Minute2,
    Second,
    Second2,
    Millis,
    /// `+05:00`
    Offset,
    /// `+0500`
    OffsetCompact,
    AmPm,
    AmPmLower,
}

/// A parsed dayjs format string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateFormat {
    text: String,
    toks: Vec<Tok>,
}

/// PM2's default for its own lines and for `time: true`.
pub const PM2_DEFAULT: &str = "YYYY-MM-DDTHH:mm:ss";

const MONTHS: [&str; 12] =
    ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
const WEEKDAYS: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];

impl DateFormat {
    pub fn parse(fmt: &str) -> DateFormat {
        let b = fmt.as_bytes();
        let mut toks = Vec::new();
        let mut i = 0;
        let mut lit_start = 0;
        let run = |i: usize, c: u8, max: usize| b[i..].iter().take(max).take_while(|&&x| x == c).count();
        while i < b.len() {
            let (len, tok) = match b[i] {
                b'[' => match b[i + 1..].iter().position(|&x| x == b']') {
                    Some(n) if n > 0 => (n + 2, Tok::Lit((i + 1) as u32, (i + 1 + n) as u32)),
                    _ => (0, Tok::Year4),
                },
                b'Y' => match run(i, b'Y', 4) {
                    4 => (4, Tok::Year4),
                    2 => (2, Tok::Year2),
                    n => (n, Tok::OffsetCompact), // dayjs: `Y`/`YYY` fall through to the offset
                },
                b'M' => match run(i, b'M', 4) {
                    1 => (1, Tok::Month),
                    2 => (2, Tok::Month2),
                    3 => (3, Tok::MonthShort),
                    _ => (4, Tok::MonthLong),
                },
                b'D' => match run(i, b'D', 2) {
                    1 => (1, Tok::Day),
                    _ => (2, Tok::Day2),
                },
                b'd' => match run(i, b'd', 4) {
                    1 => (1, Tok::Weekday),
                    2 => (2, Tok::WeekdayMin),
                    3 => (3, Tok::WeekdayShort),
                    _ => (4, Tok::WeekdayLong),
                },
                b'H' => match run(i, b'H', 2) {
                    1 => (1, Tok::Hour),
                    _ => (2, Tok::Hour2),
                },
                b'h' => match run(i, b'h', 2) {
                    1 => (1, Tok::Hour12),
                    _ => (2, Tok::Hour12x2),
                },
                b'm' => match run(i, b'm', 2) {
                    1 => (1, Tok::Minute),
                    _ => (2, Tok::Minute2),
                },
                b's' => match run(i, b's', 2) {
                    1 => (1, Tok::Second),
                    _ => (2, Tok::Second2),
                },
                b'S' if run(i, b'S', 3) == 3 => (3, Tok::Millis),
                b'Z' => match run(i, b'Z', 2) {
                    1 => (1, Tok::Offset),
                    _ => (2, Tok::OffsetCompact),
                },
                b'A' => (1, Tok::AmPm),
                b'a' => (1, Tok::AmPmLower),
                _ => (0, Tok::Year4),
            };
            if len == 0 {
                i += 1; // literal byte; multi-byte UTF-8 stays contiguous in the literal range
                continue;
            }
            if lit_start < i {
                toks.push(Tok::Lit(lit_start as u32, i as u32));
            }
            toks.push(tok);
            i += len;
            lit_start = i;
        }
        if lit_start < b.len() {
            toks.push(Tok::Lit(lit_start as u32, b.len() as u32));
        }
        DateFormat { text: fmt.to_owned(), toks }
    }

    /// The format string as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Appends the rendering of `t` to `out`.
    pub fn write(&self, out: &mut Vec<u8>, t: &Parts) {
        self.write_with(t, |b| out.extend_from_slice(b));
    }

    /// Renders `t`, handing the output to `put` in pieces (for callers that escape it). The
    /// rendering is assembled in a stack buffer, so `put` is usually called once.
    pub fn write_with<F: FnMut(&[u8])>(&self, t: &Parts, mut put: F) {
        let text = self.text.as_bytes();
        let mut w = Buf { b: [0u8; 128], len: 0 };
        for tok in &self.toks {
            if w.len > w.b.len() - 16 {
                put(&w.b[..w.len]);
                w.len = 0;
            }
            match *tok {
                Tok::Lit(a, z) => {
                    let lit = &text[a as usize..z as usize];
                    if lit.len() > w.b.len() - w.len {
                        put(&w.b[..w.len]);
                        w.len = 0;
                        put(lit);
                    } else {
                        w.bytes(lit);
                    }
                }
                Tok::Year4 => w.num(t.year, 4),
                // dayjs: String(year).slice(-2)
                Tok::Year2 => w.num(t.year.rem_euclid(100), 2),
                Tok::Month => w.num(t.month as i32, 1),
                Tok::Month2 => w.num(t.month as i32, 2),
                Tok::MonthShort => w.bytes(&MONTHS[(t.month as usize).clamp(1, 12) - 1].as_bytes()[..3]),
                Tok::MonthLong => w.bytes(MONTHS[(t.month as usize).clamp(1, 12) - 1].as_bytes()),
                Tok::Day => w.num(t.day as i32, 1),
                Tok::Day2 => w.num(t.day as i32, 2),
                Tok::Weekday => w.num(t.weekday as i32, 1),
                Tok::WeekdayMin => w.bytes(&WEEKDAYS[t.weekday as usize % 7].as_bytes()[..2]),
                Tok::WeekdayShort => w.bytes(&WEEKDAYS[t.weekday as usize % 7].as_bytes()[..3]),
                Tok::WeekdayLong => w.bytes(WEEKDAYS[t.weekday as usize % 7].as_bytes()),
                Tok::Hour => w.num(t.hour as i32, 1),
                Tok::Hour2 => w.num(t.hour as i32, 2),
                Tok::Hour12 | Tok::Hour12x2 => {
                    let h = match t.hour % 12 {
                        0 => 12,
                        h => h,
                    };
                    w.num(h as i32, if *tok == Tok::Hour12 { 1 } else { 2 });
                }
                Tok::Minute => w.num(t.minute as i32, 1),
                Tok::Minute2 => w.num(t.minute as i32, 2),
                Tok::Second => w.num(t.second as i32, 1),
                Tok::Second2 => w.num(t.second as i32, 2),
                Tok::Millis => w.num(t.millis as i32, 3),
                Tok::Offset | Tok::OffsetCompact => {
                    let off = t.offset_secs;
                    w.bytes(if off < 0 { b"-" } else { b"+" });
                    let mins = off.unsigned_abs() / 60;
                    w.num((mins / 60) as i32, 2);
                    if *tok == Tok::Offset {
                        w.bytes(b":");
                    }
                    w.num((mins % 60) as i32, 2);
                }
                Tok::AmPm => w.bytes(if t.hour < 12 { b"AM" } else { b"PM" }),
                Tok::AmPmLower => w.bytes(if t.hour < 12 { b"am" } else { b"pm" }),
            }
        }
        if w.len > 0 {
            put(&w.b[..w.len]);
        }
    }

    /// Convenience for tests and one-off uses (allocates).
    pub fn format(&self, t: &Parts) -> String {
        let mut v = Vec::new();
        self.write(&mut v, t);
        String::from_utf8(v).unwrap_or_default()
    }
}

/// A stack buffer for one rendering. Callers keep at least 16 bytes free before each token
/// (the longest token, `September` / `Wednesday`, and any number fit in that).
struct Buf {
    b: [u8; 128],
    len: usize,
}

impl Buf {
    /// Short copies are done byte by byte: a `memcpy` call per token costs more than the token.
    #[inline]
    fn bytes(&mut self, s: &[u8]) {
        if s.len() > 16 {
            self.b[self.len..self.len + s.len()].copy_from_slice(s);
            self.len += s.len();
            return;
        }
        for &c in s {
            self.b[self.len] = c;
            self.len += 1;
        }
    }

    /// Decimal, zero-padded to at least `width` digits (a `-` sign first; negative years are
    /// out of scope anyway).
    #[inline]
    fn num(&mut self, v: i32, width: usize) {
        if v < 0 {
            self.b[self.len] = b'-';
            self.len += 1;
        }
        let v = v.unsigned_abs();
        let mut n = 1;
        let mut x = v;
        while x >= 10 {
            x /= 10;
            n += 1;
        }
        let n = n.max(width);
        let mut x = v;
        for i in (0..n).rev() {
            self.b[self.len + i] = b'0' + (x % 10) as u8;
            x /= 10;
        }
        self.len += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// 2026-03-07 14:05:09.042 UTC, a Saturday.
    fn t() -> Parts {
        Parts::new(UNIX_EPOCH + Duration::from_millis(1_772_892_309_042), Zone::Utc)
    }

    #[test]
    fn parts_from_utc() {
        let p = t();
        assert_eq!((p.year, p.month, p.day, p.weekday, p.hour, p.minute, p.second, p.millis), (2026, 3, 7, 6, 14, 5, 9, 42));
        assert_eq!(p.offset_secs, 0);
        assert_eq!(&p.iso_utc(), b"2026-03-07T14:05:09.042Z");
    }

    #[test]
    fn tokens_table() {
        let table = [
            ("YYYY-MM-DDTHH:mm:ss", "2026-03-07T14:05:09"),
            ("YYYY-MM-DD HH:mm:ss.SSS", "2026-03-07 14:05:09.042"),
            ("YYYY-MM-DD-HH:mm:ssZZ", "2026-03-07-14:05:09+0000"),
            ("YY M D H m s", "26 3 7 14 5 9"),
            ("MM DD HH mm ss", "03 07 14 05 09"),
            ("MMM MMMM", "Mar March"),
            ("d dd ddd dddd", "6 Sa Sat Saturday"),
            ("h hh A a", "2 02 PM pm"),
            ("Z ZZ", "+00:00 +0000"),
            ("SSS", "042"),
            // Literal escapes and plain literal text.
            ("[at] HH[h]", "at 14h"),
            ("[YYYY] YYYY", "YYYY 2026"),
            ("[]", "[]"),
            ("[unclosed", "[unclo9e6"), // dayjs: no `]`, so `s` and `d` are tokens
            ("100% x", "100% x"),
            ("日付 YYYY", "日付 2026"),
            ("", ""),
            // dayjs quirks: greedy runs, `SS` literal, `Y`/`YYY` render the offset.
            ("MMMMM", "March3"),
            ("DDD", "077"),
            ("SS S", "SS S"),
            ("Y", "+0000"),
            ("YYY", "+0000"),
            ("YYYYY", "2026+0000"),
        ];
        for (f, want) in table {
            assert_eq!(DateFormat::parse(f).format(&t()), want, "format {f:?}");
        }
    }

    #[test]
    fn twelve_hour_clock_edges() {
        let mut p = t();
        for (h, want) in [(0, "12 AM am"), (11, "11 AM am"), (12, "12 PM pm"), (23, "11 PM pm")] {
            p.hour = h;
            assert_eq!(DateFormat::parse("h A a").format(&p), want);
        }
    }

    #[test]
    fn offsets() {
        let mut p = t();
        p.offset_secs = 5 * 3600 + 30 * 60;
        assert_eq!(DateFormat::parse("Z ZZ").format(&p), "+05:30 +0530");
        p.offset_secs = -(3 * 3600);
        assert_eq!(DateFormat::parse("Z ZZ").format(&p), "-03:00 -0300");
    }

    #[test]
    fn local_zone_is_consistent_with_chrono() {
        // Whatever TZ the test runs under, Local parts must agree with chrono's Local.
        let now = SystemTime::now();
        let p = Parts::new(now, Zone::Local);
        let c = DateTime::<Local>::from(now);
        assert_eq!(DateFormat::parse("YYYY-MM-DDTHH:mm:ssZ").format(&p), c.format("%Y-%m-%dT%H:%M:%S%:z").to_string());
    }

    #[test]
    fn write_with_pieces_concatenate() {
        let f = DateFormat::parse("[x]YYYY-MM");
        let mut pieces = Vec::new();
        f.write_with(&t(), |b| pieces.push(b.to_vec()));
        assert_eq!(pieces.concat(), b"x2026-03");
        assert_eq!(f.as_str(), "[x]YYYY-MM");
    }
}
