//! The last lines of each app instance, for `logs --lines N` (bounded in lines and bytes).

use std::collections::VecDeque;

use super::format::Stream;

pub const RECENT_LINES: usize = 1000;
pub const RECENT_BYTES: usize = 1 << 20;

/// One remembered line: a sequence number (global across apps, increasing), its stream, its bytes.
pub type Line = (u64, Stream, Vec<u8>);

#[derive(Default)]
pub struct Recent {
    lines: VecDeque<(u64, Stream, Box<[u8]>)>,
    bytes: usize,
}

impl Recent {
    pub fn push(&mut self, seq: u64, stream: Stream, line: &[u8]) {
        let line: Box<[u8]> = line[..line.len().min(RECENT_BYTES)].into();
        self.bytes += line.len();
        self.lines.push_back((seq, stream, line));
        while self.lines.len() > RECENT_LINES || self.bytes > RECENT_BYTES {
            match self.lines.pop_front() {
                Some((_, _, l)) => self.bytes -= l.len(),
                None => break,
            }
        }
    }

    /// The last `n` lines, oldest first.
    pub fn last(&self, n: usize) -> Vec<Line> {
        self.lines.iter().skip(self.lines.len().saturating_sub(n)).map(|(q, s, l)| (*q, *s, l.to_vec())).collect()
    }

    /// Lines with a sequence number above `seq`, oldest first (for following a stream).
    pub fn after(&self, seq: u64) -> Vec<Line> {
        self.lines.iter().filter(|(q, _, _)| *q > seq).map(|(q, s, l)| (*q, *s, l.to_vec())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_by_lines_and_bytes() {
        let mut r = Recent::default();
        for i in 0..1500 {
            r.push(i, Stream::Out, format!("{i}").as_bytes());
        }
        let last = r.last(3);
        assert_eq!(last.iter().map(|(_, _, l)| String::from_utf8_lossy(l).into_owned()).collect::<Vec<_>>(), vec!["1497", "1498", "1499"]);
        assert_eq!(r.after(1497).len(), 2);
        assert_eq!(r.last(5000).len(), RECENT_LINES);
        r.push(1500, Stream::Err, &vec![b'x'; RECENT_BYTES]);
        assert_eq!(r.last(5000).len(), 1);
    }
}
