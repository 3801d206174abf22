//! The last lines of one app instance, for `logs --lines N`: a ring bounded both in lines and in
//! bytes.
//!
//! Owns: keeping recent lines (their raw bytes, before any output formatting) with their stream.
//!
//! Must never: allocate per pushed line once warm (all bytes live in one ring buffer that never
//! grows past the byte bound), grow without bound, or block (it is a plain value; the caller
//! does the locking).
//!
//! A line longer than the byte bound is kept truncated to the bound.

use std::collections::VecDeque;

use super::format::Stream;

/// Default bound in lines.
pub const RECENT_LINES: usize = 1000;
/// Default bound in bytes.
pub const RECENT_BYTES: usize = 1 << 20;

/// One remembered line: its sequence number (given by the caller; increasing, global across
/// apps so lines of several apps can be merged in order), its stream, its bytes.
pub type Line = (u64, Stream, Vec<u8>);

#[derive(Debug)]
pub struct Recent {
    /// The bytes of every remembered line, back to back, oldest first.
    bytes: VecDeque<u8>,
    /// (seq, stream, length in `bytes`) per line, oldest first.
    lines: VecDeque<(u64, Stream, u32)>,
    max_lines: usize,
    max_bytes: usize,
}

impl Default for Recent {
    fn default() -> Self {
        Self::new(RECENT_LINES, RECENT_BYTES)
    }
}

impl Recent {
    pub fn new(max_lines: usize, max_bytes: usize) -> Recent {
        Recent { bytes: VecDeque::new(), lines: VecDeque::new(), max_lines: max_lines.max(1), max_bytes: max_bytes.min(u32::MAX as usize) }
    }

    /// Remembers one line (without its `\n`). `seq` must not decrease from one push to the next.
    pub fn push(&mut self, seq: u64, stream: Stream, line: &[u8]) {
        let line = &line[..line.len().min(self.max_bytes)];
        while self.lines.len() >= self.max_lines || self.bytes.len() + line.len() > self.max_bytes {
            match self.lines.pop_front() {
                Some((_, _, len)) => {
                    self.bytes.drain(..len as usize);
                }
                None => break,
            }
        }
        self.bytes.extend(line);
        self.lines.push_back((seq, stream, line.len() as u32));
    }

    /// The last `n` lines, oldest first.
    pub fn last(&self, n: usize) -> Vec<Line> {
        self.lines_from(self.lines.len().saturating_sub(n))
    }

    /// The lines with a sequence number above `seq`, oldest first (for following a stream).
    pub fn after(&self, seq: u64) -> Vec<Line> {
        self.lines_from(self.lines.partition_point(|&(q, _, _)| q <= seq))
    }

    fn lines_from(&self, skip: usize) -> Vec<Line> {
        let mut at: usize = self.lines.iter().take(skip).map(|&(_, _, l)| l as usize).sum();
        let mut out = Vec::with_capacity(self.lines.len() - skip);
        for &(seq, stream, len) in self.lines.iter().skip(skip) {
            let end = at + len as usize;
            out.push((seq, stream, self.bytes.range(at..end).copied().collect()));
            at = end;
        }
        out
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Forgets everything (`pm2 flush`).
    pub fn clear(&mut self) {
        self.lines.clear();
        self.bytes.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(v: &[Line]) -> Vec<String> {
        v.iter().map(|(_, _, l)| String::from_utf8_lossy(l).into_owned()).collect()
    }

    #[test]
    fn bounded_by_lines() {
        let mut r = Recent::default();
        for i in 0..1500 {
            r.push(i, if i % 2 == 0 { Stream::Out } else { Stream::Err }, format!("{i}").as_bytes());
        }
        let last = r.last(3);
        assert_eq!(strs(&last), ["1497", "1498", "1499"]);
        assert_eq!(
            last.iter().map(|(q, s, _)| (*q, *s)).collect::<Vec<_>>(),
            [(1497, Stream::Err), (1498, Stream::Out), (1499, Stream::Err)]
        );
        assert_eq!(r.last(5000).len(), RECENT_LINES);
        assert_eq!(strs(&r.last(5000))[0], "500");
        assert!(r.last(0).is_empty());
    }

    #[test]
    fn after_a_sequence_number() {
        let mut r = Recent::default();
        for (q, l) in [(3, "a"), (7, "b"), (7, "c"), (9, "d")] {
            r.push(q, Stream::Out, l.as_bytes());
        }
        assert_eq!(strs(&r.after(0)), ["a", "b", "c", "d"]);
        assert_eq!(strs(&r.after(3)), ["b", "c", "d"]);
        assert_eq!(strs(&r.after(7)), ["d"]);
        assert!(r.after(9).is_empty());
    }

    #[test]
    fn bounded_by_bytes() {
        let mut r = Recent::new(100, 10);
        r.push(1, Stream::Out, b"aaaa");
        r.push(2, Stream::Out, b"");
        r.push(3, Stream::Out, b"bbbb");
        assert_eq!(strs(&r.last(10)), ["aaaa", "", "bbbb"]);
        r.push(4, Stream::Out, b"cccc");
        assert_eq!(strs(&r.last(10)), ["", "bbbb", "cccc"]);
        r.push(5, Stream::Err, b"0123456789ABC");
        assert_eq!(strs(&r.last(10)), ["0123456789"]);
        assert_eq!(strs(&r.after(4)), ["0123456789"]);
        r.clear();
        assert!(r.is_empty());
        r.push(6, Stream::Out, b"x");
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn ring_wraps_many_times_and_stays_exact() {
        let mut r = Recent::new(7, 64);
        let mut all = Vec::new();
        for i in 0..10_000u32 {
            let l = "y".repeat((i % 13) as usize) + &i.to_string();
            r.push(i.into(), Stream::Out, l.as_bytes());
            all.push(l);
            let got = strs(&r.last(usize::MAX));
            assert!(got.len() <= 7 && got.iter().map(String::len).sum::<usize>() <= 64);
            assert_eq!(got, all[all.len() - got.len()..]);
            assert_eq!(strs(&r.after(u64::from(i).saturating_sub(2))).len(), got.len().min(2).min(i as usize));
        }
    }
}
