//! Splits one byte stream (an app's stdout or stderr pipe) into whole lines.
//!
//! - A line is everything up to `\n` (excluded); partial lines are joined across reads.
//! - Lines up to [`MAX_LINE`] bytes (4 MiB) are emitted whole, in one piece.
//! - A longer line is emitted in pieces of `MAX_LINE` bytes; every piece but the last is marked
//!   `continued`, and the formatter appends [`super::format::CONTINUATION_MARKER`] to it, so
//!   nothing is lost and a reader can tell the pieces belong together.
//! - At EOF a trailing partial line is emitted as a line.
//! - Bytes are passed through untouched (`\r`, invalid UTF-8): deciding what to do with them is
//!   the formatter's job.
//!
//! Never allocates per line: complete lines inside one read are handed out as slices of it.

/// Lines up to this many bytes stay whole.
pub const MAX_LINE: usize = 4 * 1024 * 1024;

pub struct Framer {
    pending: Vec<u8>,
    cap: usize,
}

impl Default for Framer {
    fn default() -> Self {
        Self::new()
    }
}

impl Framer {
    pub fn new() -> Self {
        Self::with_cap(MAX_LINE)
    }

    pub fn with_cap(cap: usize) -> Self {
        Self { pending: Vec::new(), cap: cap.max(1) }
    }

    /// Feeds one read; `emit(piece, continued)` is called for each complete line (or piece).
    pub fn push(&mut self, data: &[u8], emit: &mut dyn FnMut(&[u8], bool)) {
        let mut rest = data;
        while let Some(i) = memchr::memchr(b'\n', rest) {
            if self.pending.is_empty() {
                emit_split(&rest[..i], self.cap, emit);
            } else {
                self.pending.extend_from_slice(&rest[..i]);
                emit_split(&self.pending, self.cap, emit);
                self.pending.clear();
            }
            rest = &rest[i + 1..];
        }
        self.pending.extend_from_slice(rest);
        if self.pending.len() > self.cap {
            // Flush whole pieces of an over-long line now, so memory stays bounded.
            let full = (self.pending.len() - 1) / self.cap * self.cap;
            for piece in self.pending[..full].chunks(self.cap) {
                emit(piece, true);
            }
            self.pending.drain(..full);
        }
        if self.pending.capacity() > 2 * self.cap.min(1 << 20) && self.pending.is_empty() {
            self.pending = Vec::new();
        }
    }

    /// End of stream: a trailing partial line becomes a line.
    pub fn finish(&mut self, emit: &mut dyn FnMut(&[u8], bool)) {
        if !self.pending.is_empty() {
            emit_split(&self.pending, self.cap, emit);
            self.pending = Vec::new();
        }
    }
}

fn emit_split(mut line: &[u8], cap: usize, emit: &mut dyn FnMut(&[u8], bool)) {
    while line.len() > cap {
        emit(&line[..cap], true);
        line = &line[cap..];
    }
    emit(line, false);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(cap: usize, reads: &[&[u8]], eof: bool) -> Vec<(Vec<u8>, bool)> {
        let mut f = Framer::with_cap(cap);
        let mut out = Vec::new();
        for r in reads {
            f.push(r, &mut |l, c| out.push((l.to_vec(), c)));
        }
        if eof {
            f.finish(&mut |l, c| out.push((l.to_vec(), c)));
        }
        out
    }

    fn lines(v: &[(Vec<u8>, bool)]) -> Vec<String> {
        v.iter().map(|(l, c)| format!("{}{}", String::from_utf8_lossy(l), if *c { "+" } else { "" })).collect()
    }

    /// (reads, then EOF?, expected lines; `+` marks a continued piece)
    type Case<'a> = (&'a [&'a [u8]], bool, &'a [&'a str]);

    #[test]
    fn table() {
        let cases: &[Case] = &[
            (&[b"a\nb\n"], false, &["a", "b"]),
            (&[b"par", b"tial\n"], false, &["partial"]),
            (&[b"\n\nx\n"], false, &["", "", "x"]),
            (&[b"crlf\r\n"], false, &["crlf\r"]),
            (&[b"no newline"], false, &[]),
            (&[b"no newline"], true, &["no newline"]),
            (&[b"a\nb"], true, &["a", "b"]),
            (&[b""], true, &[]),
        ];
        for (reads, eof, want) in cases {
            assert_eq!(lines(&frame(1 << 20, reads, *eof)), *want, "{reads:?}");
        }
    }

    #[test]
    fn every_split_point_gives_the_same_lines() {
        let text: &[u8] = b"first line\n\nthird, longer line with words\nlast";
        let whole = frame(1 << 20, &[text], true);
        for i in 0..text.len() {
            for j in i..text.len() {
                let got = frame(1 << 20, &[&text[..i], &text[i..j], &text[j..]], true);
                assert_eq!(got, whole, "split at {i},{j}");
            }
        }
    }

    #[test]
    fn long_lines_are_split_with_marker_and_nothing_is_lost() {
        let line: Vec<u8> = (0..25u8).map(|i| b'a' + i).collect();
        let mut input = line.clone();
        input.push(b'\n');
        for step in [1, 3, 7, 26] {
            let reads: Vec<&[u8]> = input.chunks(step).collect();
            let got = frame(10, &reads, true);
            assert_eq!(got.iter().map(|(_, c)| *c).collect::<Vec<_>>(), vec![true, true, false], "step {step}");
            assert_eq!(got.iter().flat_map(|(l, _)| l.clone()).collect::<Vec<u8>>(), line);
        }
        // Exactly the cap stays whole.
        assert_eq!(frame(10, &[b"0123456789\n"], false), vec![(b"0123456789".to_vec(), false)]);
    }

    #[test]
    fn one_mib_line_stays_whole() {
        let mut input = vec![b'x'; 1 << 20];
        input.push(b'\n');
        let reads: Vec<&[u8]> = input.chunks(65536).collect();
        let got = frame(MAX_LINE, &reads, false);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.len(), 1 << 20);
    }
}
