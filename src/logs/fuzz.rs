//! Property tests standing in for fuzz targets: the line framer and the `log_date_format`
//! renderer (its 128-byte stack buffer is safe only by the "16 bytes free before each token"
//! rule). `PROPTEST_CASES` sets the case count (256 by default); `bench/fuzz.sh` runs them long.

use super::datefmt::{DateFormat, Parts};
use super::framer::Framer;
use proptest::prelude::*;

/// Bytes with many newlines and multi-byte UTF-8, cut into reads at random points.
fn stream() -> impl Strategy<Value = (Vec<u8>, Vec<prop::sample::Index>)> {
    let byte = prop_oneof![3 => any::<u8>(), 2 => Just(b'\n'), 2 => prop::sample::select(vec![b'a', b'\r', 0xC3, 0xA9, 0xE2, 0x82, 0xAC, 0xF0, 0x9F, 0x98, 0x80])];
    (prop::collection::vec(byte, 0..600), prop::collection::vec(any::<prop::sample::Index>(), 0..12))
}

/// Format strings built from dayjs tokens, brackets and random text.
fn date_format() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => prop::sample::select(vec!["YYYY", "YY", "Y", "YYY", "M", "MM", "MMM", "MMMM", "MMMMM", "D", "DD", "DDD", "d", "dd", "ddd", "dddd", "H", "HH", "h", "hh", "m", "mm", "s", "ss", "SSS", "SS", "Z", "ZZ", "A", "a", "[", "]", "[]", "[x]", "[YYYY]", "-", ":", "T", " "]).prop_map(str::to_string),
        1 => any::<String>(),
        1 => (1usize..300).prop_map(|n| "x".repeat(n)),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

fn parts() -> impl Strategy<Value = Parts> {
    (any::<i32>(), any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>(), any::<u16>(), any::<i32>()).prop_map(
        |(year, month, day, weekday, hour, minute, second, millis, offset_secs)| Parts {
            year,
            month,
            day,
            weekday,
            hour,
            minute,
            second,
            millis,
            offset_secs,
        },
    )
}

proptest! {
    /// Whatever the reads and the cap: the pieces give the stream back exactly, no piece is
    /// longer than the cap, only the last piece of a line is not "continued", and a partial
    /// line handed out early (memory pressure) changes nothing but the cut.
    #[test]
    fn fuzz_framer((data, cuts) in stream(), cap in 4usize..64, flush_at in any::<prop::sample::Index>()) {
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(data.len() + 1)).collect();
        points.push(data.len());
        points.sort_unstable();
        let flush_read = flush_at.index(points.len());
        let mut f = Framer::with_cap(cap);
        let mut out: Vec<u8> = Vec::new();
        let mut bad = None;
        let mut emit = |l: &[u8], continued: bool| {
            if l.len() > cap || (continued && l.is_empty()) {
                bad = Some((l.len(), continued));
            }
            out.extend_from_slice(l);
            if !continued {
                out.push(b'\n');
            }
        };
        let mut from = 0;
        for (i, &to) in points.iter().enumerate() {
            f.push(&data[from..to], &mut emit);
            if i == flush_read {
                f.flush_partial(&mut emit);
            }
            from = to;
        }
        f.finish(&mut emit);
        prop_assert_eq!(bad, None);
        let mut want = data.clone();
        if !want.is_empty() && want.last() != Some(&b'\n') {
            want.push(b'\n');
        }
        prop_assert_eq!(out, want);
    }

    /// Any format, any field values (out of range ones included): rendering never panics,
    /// gives valid UTF-8 for a UTF-8 format, and the same bytes through both entry points.
    #[test]
    fn fuzz_log_date_format(fmt in date_format(), t in parts()) {
        let f = DateFormat::parse(&fmt);
        let mut a = Vec::new();
        f.write(&mut a, &t);
        let mut b = Vec::new();
        f.write_with(&t, |piece| b.extend_from_slice(piece));
        prop_assert_eq!(&a, &b);
        prop_assert!(std::str::from_utf8(&a).is_ok());
        prop_assert!(a.len() <= fmt.len() * 12 + 16, "{} bytes from a {}-byte format", a.len(), fmt.len());
    }
}
