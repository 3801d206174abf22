//! PM2's date formats (dayjs tokens, as in `log_date_format` and `PM2_LOG_DATE_FORMAT`),
//! translated once into a chrono strftime string.
//!
//! Tokens: YYYY YY M MM MMM MMMM D DD d dd ddd dddd H HH h hh m mm s ss SSS Z ZZ A a, and
//! `[literal]` escapes. Anything else is literal text.

use chrono::{DateTime, TimeZone};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateFormat {
    strftime: String,
}

const TOKENS: &[(&str, &str)] = &[
    ("YYYY", "%Y"),
    ("MMMM", "%B"),
    ("dddd", "%A"),
    ("MMM", "%b"),
    ("ddd", "%a"),
    ("SSS", "%3f"),
    ("YY", "%y"),
    ("MM", "%m"),
    ("DD", "%d"),
    ("dd", "%a"), // dayjs: two-letter weekday; chrono has none, the three-letter form is close
    ("HH", "%H"),
    ("hh", "%I"),
    ("mm", "%M"),
    ("ss", "%S"),
    ("ZZ", "%z"),
    ("M", "%-m"),
    ("D", "%-d"),
    ("d", "%w"),
    ("H", "%-H"),
    ("h", "%-I"),
    ("m", "%-M"),
    ("s", "%-S"),
    ("Z", "%:z"),
    ("A", "%p"),
    ("a", "%P"),
];

impl DateFormat {
    pub fn parse(dayjs: &str) -> Self {
        let mut out = String::new();
        let mut rest = dayjs;
        'outer: while let Some(c) = rest.chars().next() {
            if c == '['
                && let Some(end) = rest.find(']')
            {
                out.push_str(&rest[1..end].replace('%', "%%"));
                rest = &rest[end + 1..];
                continue;
            }
            for (tok, fmt) in TOKENS {
                if let Some(r) = rest.strip_prefix(tok) {
                    out.push_str(fmt);
                    rest = r;
                    continue 'outer;
                }
            }
            if c == '%' {
                out.push_str("%%");
            } else {
                out.push(c);
            }
            rest = &rest[c.len_utf8()..];
        }
        Self { strftime: out }
    }

    pub fn format<Tz: TimeZone>(&self, t: &DateTime<Tz>) -> String
    where
        Tz::Offset: std::fmt::Display,
    {
        t.format(&self.strftime).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{FixedOffset, Utc};

    #[test]
    fn tokens() {
        let t = Utc.with_ymd_and_hms(2026, 3, 7, 14, 5, 9).unwrap() + chrono::Duration::milliseconds(42);
        let table = [
            ("YYYY-MM-DDTHH:mm:ss", "2026-03-07T14:05:09"),
            ("YYYY-MM-DD HH:mm:ss.SSS", "2026-03-07 14:05:09.042"),
            ("YY M D H m s", "26 3 7 14 5 9"),
            ("hh:mm A", "02:05 PM"),
            ("dddd, MMMM D", "Saturday, March 7"),
            ("[at] HH[h]", "at 14h"),
            ("100%", "100%"),
            ("YYYY-MM-DD-HH:mm:ssZZ", "2026-03-07-14:05:09+0000"),
        ];
        for (f, want) in table {
            assert_eq!(DateFormat::parse(f).format(&t), want, "{f}");
        }
        let t2 = t.with_timezone(&FixedOffset::east_opt(3600).unwrap());
        assert_eq!(DateFormat::parse("HH Z").format(&t2), "15 +01:00");
    }
}
