//! PM2's value grammars: sizes (`100M`), durations (`5s`), shell-like argument splitting,
//! signal names, and the edit distance behind "did you mean".
//!
//! Accepted sizes: a non-negative integer number of bytes, or digits followed by `K`, `M` or `G`
//! (powers of 1024, as PM2's `sbyte`), case-insensitive, with an optional trailing `B` (`512MB`)
//! and optional spaces before the unit. Decimals (`1.5G`) are accepted too (PM2's regex
//! rejects them).
//!
//! Accepted durations: a non-negative number of milliseconds (number or numeric string), or
//! a number followed by `ms`, `s`, `m` or `h` (PM2's `stime` has `s`/`m`/`h`).

use std::str::FromStr;
use std::time::Duration;

/// Parses a size string (see module doc) to bytes.
///
/// Errs with `String` on purpose: the text becomes a config `Problem` (file, line, field).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let bad = || format!("expected a size in bytes or a number with K, M or G (e.g. \"200M\"), got {s:?}");
    let upper = t.to_ascii_uppercase();
    let body = upper.strip_suffix('B').unwrap_or(&upper);
    let (num, mult) = match body.chars().last() {
        Some('K') => (&body[..body.len() - 1], 1024u64),
        Some('M') => (&body[..body.len() - 1], 1024 * 1024),
        Some('G') => (&body[..body.len() - 1], 1024 * 1024 * 1024),
        _ => (body, 1),
    };
    let num = num.trim();
    if num.is_empty() || !num.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(bad());
    }
    let value: f64 = num.parse().map_err(|_| bad())?;
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// Parses `max_memory_restart`: a size (see module doc), or a percentage (`85%`) of `total`
/// (the container's memory limit, else the machine's memory; `None`: unknown).
///
/// Errs with `String` on purpose: the text becomes a config `Problem` (file, line, field).
pub fn parse_memory_limit(s: &str, total: Option<u64>) -> Result<u64, String> {
    let Some(pct) = s.trim().strip_suffix('%') else { return parse_size(s) };
    let p: f64 = pct
        .trim()
        .parse()
        .ok()
        .filter(|p: &f64| *p > 0.0 && *p <= 100.0)
        .ok_or_else(|| format!("expected a percentage above 0 and at most 100 (e.g. \"85%\") or a size (e.g. \"200M\"), got {s:?}"))?;
    let total =
        total.ok_or_else(|| format!("{s:?} is relative, but neither the container's memory limit nor the machine's memory is known"))?;
    Ok((total as f64 * p / 100.0) as u64)
}

/// Parses a duration string (see module doc).
///
/// Errs with `String` on purpose: the text becomes a config `Problem` (file, line, field).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let bad = || format!("expected milliseconds or a number with ms, s, m or h (e.g. \"5s\"), got {s:?}");
    let (num, unit_ms) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60_000.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3_600_000.0)
    } else {
        (t, 1.0)
    };
    let num = num.trim();
    if num.is_empty() || !num.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(bad());
    }
    let v: f64 = num.parse().map_err(|_| bad())?;
    ms_to_duration(v * unit_ms).ok_or_else(bad)
}

/// Milliseconds (possibly fractional) to a `Duration`; `None` if negative or not finite.
pub fn ms_to_duration(ms: f64) -> Option<Duration> {
    if !(0.0..=1e15).contains(&ms) {
        return None;
    }
    Some(Duration::from_micros((ms * 1000.0).round() as u64))
}

/// Splits a string into arguments like a shell: whitespace separates, `'…'` and `"…"` group
/// (quotes removed, and may sit inside a word: `--x="a b"` → `--x=a b`), `\` escapes outside
/// single quotes. Errors on an unterminated quote.
///
/// Errs with `String` on purpose: the text becomes a config `Problem` (file, line, field).
pub fn split_args(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err(format!("unterminated ' quote in {s:?}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err(format!("unterminated \" quote in {s:?}")),
                        },
                        Some(c) => cur.push(c),
                        None => return Err(format!("unterminated \" quote in {s:?}")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    cur.push(c);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// The one grammar for signal names: `SIGTERM`, `term`, `sigusr2` or a number (`15`).
///
/// Errs with `String` on purpose: the text becomes a config `Problem` (file, line, field).
pub fn parse_signal(s: &str) -> Result<nix::sys::signal::Signal, String> {
    use nix::sys::signal::Signal;
    let t = s.trim();
    let parsed = if let Ok(n) = t.parse::<i32>() {
        Signal::try_from(n).ok()
    } else {
        let upper = t.to_ascii_uppercase();
        let full = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
        Signal::from_str(&full).ok()
    };
    parsed.ok_or_else(|| format!("unknown signal {s:?} (expected a name such as SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2)"))
}

/// JavaScript's `parseInt(s)` (radix 10, or 16 after `0x`): leading whitespace and a sign, then
/// as many digits as there are; `None` where JavaScript gives `NaN`. `"4,"` → 4, `"2.5"` → 2,
/// `"1e3"` → 1, `"0x10"` → 16. Saturates instead of losing precision.
pub fn js_parse_int(s: &str) -> Option<i64> {
    let t = s.trim_start();
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (radix, t) = match t.get(..2) {
        Some("0x" | "0X") => (16, &t[2..]),
        _ => (10, t),
    };
    let digits: &str = &t[..t.find(|c: char| !c.is_digit(radix)).unwrap_or(t.len())];
    if digits.is_empty() {
        return None;
    }
    let n =
        digits.chars().fold(0i64, |acc, c| acc.saturating_mul(i64::from(radix)).saturating_add(i64::from(c.to_digit(radix).unwrap_or(0))));
    Some(if neg { -n } else { n })
}

/// Levenshtein distance (for "did you mean").
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The closest candidate within a distance that scales with the word's length.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    let limit = (word.chars().count() / 3).clamp(1, 3);
    candidates
        .into_iter()
        .map(|c| (edit_distance(&lower, &c.to_ascii_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let table: &[(&str, Option<u64>)] = &[
            ("0", Some(0)),
            ("1024", Some(1024)),
            ("100K", Some(100 * 1024)),
            ("100k", Some(100 * 1024)),
            ("200M", Some(200 * 1024 * 1024)),
            ("200MB", Some(200 * 1024 * 1024)),
            ("1G", Some(1024 * 1024 * 1024)),
            ("1.5G", Some(1536 * 1024 * 1024)),
            (" 64 M ", Some(64 * 1024 * 1024)),
            ("", None),
            ("M", None),
            ("-1M", None),
            ("10T", None),
            ("ten", None),
            ("100B", Some(100)),
            ("1e3", None),
        ];
        for (input, want) in table {
            assert_eq!(parse_size(input).ok(), *want, "{input:?}");
        }
    }

    #[test]
    fn memory_limits_absolute_or_relative_to_the_container() {
        let gib = Some(1u64 << 30);
        let table: &[(&str, Option<u64>, Option<u64>)] = &[
            ("85%", gib, Some((0.85 * (1u64 << 30) as f64) as u64)),
            (" 50 % ", gib, Some(512 << 20)),
            ("100%", gib, Some(1 << 30)),
            ("200M", None, Some(200 << 20)),
            ("0%", gib, None),
            ("101%", gib, None),
            ("x%", gib, None),
            ("85%", None, None),
        ];
        for (input, total, want) in table {
            assert_eq!(parse_memory_limit(input, *total).ok(), *want, "{input:?} of {total:?}");
        }
        assert!(parse_memory_limit("85%", None).unwrap_err().contains("neither the container's memory limit"));
    }

    #[test]
    fn durations() {
        let ms = |n: u64| Some(Duration::from_millis(n));
        let table: &[(&str, Option<Duration>)] = &[
            ("0", ms(0)),
            ("1000", ms(1000)),
            ("250ms", ms(250)),
            ("5s", ms(5000)),
            ("1.5s", ms(1500)),
            ("2m", ms(120_000)),
            ("1h", ms(3_600_000)),
            ("", None),
            ("s", None),
            ("-5s", None),
            ("5d", None),
            ("five", None),
        ];
        for (input, want) in table {
            assert_eq!(parse_duration(input).ok(), *want, "{input:?}");
        }
    }

    #[test]
    fn splitting() {
        let table: &[(&str, &[&str])] = &[
            ("", &[]),
            ("  a  b ", &["a", "b"]),
            ("--max-old-space-size=4096 --inspect", &["--max-old-space-size=4096", "--inspect"]),
            ("-m 'hello world' \"x y\"", &["-m", "hello world", "x y"]),
            ("--title=\"a b\" c", &["--title=a b", "c"]),
            ("a\\ b", &["a b"]),
            ("''", &[""]),
        ];
        for (input, want) in table {
            assert_eq!(split_args(input).unwrap(), *want, "{input:?}");
        }
        assert!(split_args("'open").is_err());
        assert!(split_args("\"open").is_err());
    }

    #[test]
    fn parse_int_like_javascript() {
        let table: &[(&str, Option<i64>)] = &[
            ("4", Some(4)),
            ("4,", Some(4)),
            (" 12 workers", Some(12)),
            ("2.5", Some(2)),
            ("1e3", Some(1)),
            ("-1", Some(-1)),
            ("+3", Some(3)),
            ("0x10", Some(16)),
            ("", None),
            ("four", None),
            ("-", None),
            ("0x", None),
            ("99999999999999999999999", Some(i64::MAX)),
        ];
        for (input, want) in table {
            assert_eq!(js_parse_int(input), *want, "{input:?}");
        }
    }

    #[test]
    fn signals() {
        use nix::sys::signal::Signal;
        assert_eq!(parse_signal("SIGTERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("term").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("sigusr2").unwrap(), Signal::SIGUSR2);
        assert_eq!(parse_signal(" INT ").unwrap(), Signal::SIGINT);
        assert_eq!(parse_signal("15").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert!(parse_signal("").is_err());
        let e = parse_signal("SIGFOO").unwrap_err();
        assert!(e.contains("SIGTERM"), "{e}");
    }

    #[test]
    fn suggestions() {
        let keys = ["instances", "instance_var", "name", "script"];
        assert_eq!(suggest("instancez", keys), Some("instances"));
        assert_eq!(suggest("scirpt", keys), Some("script"));
        assert_eq!(suggest("completely_else", keys), None);
    }
}
