//! Line framing of one byte stream (an app's stdout or stderr pipe).
//!
//! Owns: turning arbitrary reads into lines.
//! - A line is everything before a `\n` (the `\n` is not part of it). Partial lines are joined
//!   across reads, so how the app's writes were cut into reads never shows.
//! - Empty lines are lines (PM2 drops them; we keep them).
//! - `\r` is data: a CRLF line is handed out with its trailing `\r` (as PM2's raw mode prints
//!   it). Whether to show it is the formatter's choice (raw and `--formatted` keep it, `--json`
//!   and `--format` drop one trailing `\r`).
//! - Lines up to the cap ([`MAX_LINE`] = 4 MiB by default) are handed out whole, in one piece.
//! - A longer line is handed out in pieces of at most the cap; every piece but the last has
//!   `continued == true` (the formatter then appends its visible continuation marker). Cuts
//!   are moved back (by at most 3 bytes) to a UTF-8 character boundary when the bytes are
//!   UTF-8, so a character is not torn. Concatenating the pieces gives the line back exactly.
//!   Memory stays bounded by the cap plus one read.
//! - At EOF ([`Framer::finish`]) a trailing partial line is handed out as a line.
//! - A partial line left waiting (a prompt, progress dots) can be handed out as a line of its
//!   own ([`Framer::flush_idle`]; the pump does so after [`IDLE_FLUSH`] without new bytes), as
//!   PM2 prints every chunk at once: the rest of that line then comes as another line.
//!
//! Must never: allocate per line (lines inside one read are slices of that read; only a line
//! that spans reads is copied, into one reused buffer), alter bytes, lose or reorder bytes.

/// Lines up to this many bytes (4 MiB) stay whole; longer ones are split into pieces.
pub const MAX_LINE: usize = 4 * 1024 * 1024;

/// How long a partial line waits for the rest of it before it is shown as a line of its own.
/// Long enough that a line written in pieces in quick succession stays whole, short enough
/// for a prompt to be seen.
pub const IDLE_FLUSH: std::time::Duration = std::time::Duration::from_millis(500);

/// The pending-buffer capacity kept between long lines; a bigger one is released once empty.
const KEEP_CAPACITY: usize = 256 * 1024;

#[derive(Debug)]
pub struct Framer {
    pending: Vec<u8>,
    cap: usize,
    /// A piece of the current line was handed out early ([`Framer::flush_partial`]) and the
    /// line has not ended yet: EOF must still end it.
    continuing: bool,
}

impl Default for Framer {
    fn default() -> Self {
        Self::new()
    }
}

impl Framer {
    /// A framer with the [`MAX_LINE`] cap.
    pub fn new() -> Self {
        Self::with_cap(MAX_LINE)
    }

    /// A framer with another cap (at least 4 bytes, so a UTF-8 character always fits).
    pub fn with_cap(cap: usize) -> Self {
        Self { pending: Vec::new(), cap: cap.max(4), continuing: false }
    }

    /// Feeds one read. `emit(line, continued)` is called for every complete line, or piece of an
    /// over-long line, in order.
    pub fn push(&mut self, data: &[u8], emit: &mut dyn FnMut(&[u8], bool)) {
        let mut rest = data;
        while let Some(i) = memchr::memchr(b'\n', rest) {
            self.continuing = false;
            if self.pending.is_empty() {
                emit_split(&rest[..i], self.cap, emit);
            } else {
                self.pending.extend_from_slice(&rest[..i]);
                emit_split(&self.pending, self.cap, emit);
                self.clear_pending();
            }
            rest = &rest[i + 1..];
        }
        if rest.is_empty() {
            return;
        }
        self.pending.extend_from_slice(rest);
        if self.pending.len() > self.cap {
            // Hand out the full pieces of an over-long line now, keeping a tail that is not
            // known to be the end; memory stays bounded.
            let mut start = 0;
            while self.pending.len() - start > self.cap {
                let n = cut(&self.pending[start..], self.cap);
                emit(&self.pending[start..start + n], true);
                start += n;
            }
            self.pending.drain(..start);
        }
    }

    /// End of stream: a trailing partial line becomes a line.
    pub fn finish(&mut self, emit: &mut dyn FnMut(&[u8], bool)) {
        if !self.pending.is_empty() || self.continuing {
            emit_split(&self.pending, self.cap, emit);
        }
        self.pending = Vec::new();
        self.continuing = false;
    }

    /// Bytes of a partial line waiting for its end.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Hands out the partial line now as a continued piece (it goes on in the next piece),
    /// keeping only an incomplete UTF-8 character at its end. For when holding it is not
    /// possible (the hub's memory budget is exhausted by unfinished lines).
    pub fn flush_partial(&mut self, emit: &mut dyn FnMut(&[u8], bool)) {
        let n = complete_prefix(&self.pending);
        if n > 0 {
            emit(&self.pending[..n], true);
            self.pending.drain(..n);
            self.continuing = true;
        }
    }

    /// Hands out the partial line now as a line of its own (PM2 shows each chunk so), keeping
    /// an incomplete UTF-8 character at its end for the next call (when that is all there is,
    /// it is handed out: the rest of it is not coming). A piece of an over-long line already
    /// handed out makes this the last piece of that line.
    pub fn flush_idle(&mut self, emit: &mut dyn FnMut(&[u8], bool)) {
        let n = match complete_prefix(&self.pending) {
            0 => self.pending.len(),
            n => n,
        };
        if n > 0 {
            emit(&self.pending[..n], false);
            self.pending.drain(..n);
            self.continuing = false;
        }
    }

    fn clear_pending(&mut self) {
        self.pending.clear();
        if self.pending.capacity() > KEEP_CAPACITY {
            self.pending = Vec::new();
        }
    }
}

/// Emits one complete line, in pieces if it is longer than `cap`.
fn emit_split(mut line: &[u8], cap: usize, emit: &mut dyn FnMut(&[u8], bool)) {
    while line.len() > cap {
        let n = cut(line, cap);
        emit(&line[..n], true);
        line = &line[n..];
    }
    emit(line, false);
}

/// Where to cut `s` (longer than `cap`): at `cap`, or up to 3 bytes earlier so the next piece does
/// not start inside a UTF-8 character.
fn cut(s: &[u8], cap: usize) -> usize {
    let is_cont = |b: u8| b & 0xC0 == 0x80;
    (cap.saturating_sub(3)..=cap).rev().find(|&i| i > 0 && !is_cont(s[i])).unwrap_or(cap)
}

/// The length of `s` without a UTF-8 character that is cut short at its end.
fn complete_prefix(s: &[u8]) -> usize {
    let len = s.len();
    for back in 1..=len.min(4) {
        let b = s[len - back];
        if b & 0xC0 == 0x80 {
            continue; // a continuation byte: look further back for the lead
        }
        let need = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if need > back { len - back } else { len };
    }
    len
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

    #[test]
    fn flush_partial_keeps_an_unfinished_character() {
        let mut f = Framer::new();
        let mut out = Vec::new();
        f.push("abc\u{e9}".as_bytes(), &mut |l, c| out.push((l.to_vec(), c)));
        f.push(&"\u{20ac}".as_bytes()[..2], &mut |l, c| out.push((l.to_vec(), c)));
        f.flush_partial(&mut |l, c| out.push((l.to_vec(), c)));
        assert_eq!(out, vec![("abc\u{e9}".as_bytes().to_vec(), true)]);
        assert_eq!(f.pending_len(), 2);
        f.push(&"\u{20ac}\n".as_bytes()[2..], &mut |l, c| out.push((l.to_vec(), c)));
        assert_eq!(out[1], ("\u{20ac}".as_bytes().to_vec(), false));
        // Found by fuzz_framer: a line handed out early and then cut by EOF is still ended.
        let mut f = Framer::new();
        let mut out = Vec::new();
        f.push(b"x", &mut |l, c| out.push((l.to_vec(), c)));
        f.flush_partial(&mut |l, c| out.push((l.to_vec(), c)));
        f.finish(&mut |l, c| out.push((l.to_vec(), c)));
        assert_eq!(out, vec![(b"x".to_vec(), true), (Vec::new(), false)]);
        assert_eq!(complete_prefix(b""), 0);
        assert_eq!(complete_prefix(&[0xF0, 0x9F, 0x98]), 0);
        assert_eq!(complete_prefix(&[b'a', 0xF0, 0x9F, 0x98, 0x80]), 5);
        assert_eq!(complete_prefix(&[0x80, 0x80]), 2);
    }

    #[test]
    fn flush_idle_shows_a_waiting_partial_line_as_a_line_of_its_own() {
        let mut f = Framer::new();
        let mut out = Vec::new();
        f.push(b"done\nEnter name: ", &mut |l, c| out.push((l.to_vec(), c)));
        f.flush_idle(&mut |l, c| out.push((l.to_vec(), c)));
        assert_eq!(f.pending_len(), 0);
        f.flush_idle(&mut |l, c| out.push((l.to_vec(), c)));
        f.push(b"bob\n", &mut |l, c| out.push((l.to_vec(), c)));
        // EOF after an idle flush adds nothing: the shown piece was a line.
        f.push("x\u{e9}".as_bytes(), &mut |l, c| out.push((l.to_vec(), c)));
        f.push(&"\u{20ac}".as_bytes()[..1], &mut |l, c| out.push((l.to_vec(), c)));
        f.flush_idle(&mut |l, c| out.push((l.to_vec(), c)));
        f.push(&"\u{20ac}".as_bytes()[1..], &mut |l, c| out.push((l.to_vec(), c)));
        f.finish(&mut |l, c| out.push((l.to_vec(), c)));
        assert_eq!(show(&out), ["done", "Enter name: ", "bob", "x\u{e9}", "\u{20ac}"]);
    }

    fn show(v: &[(Vec<u8>, bool)]) -> Vec<String> {
        v.iter().map(|(l, c)| format!("{}{}", String::from_utf8_lossy(l), if *c { "+" } else { "" })).collect()
    }

    /// (reads, EOF after them?, expected lines; `+` marks a continued piece)
    type Case<'a> = (&'a [&'a [u8]], bool, &'a [&'a str]);

    #[test]
    fn table() {
        let cases: &[Case] = &[
            (&[b"a\nb\n"], false, &["a", "b"]),
            (&[b"par", b"tial\n"], false, &["partial"]),
            (&[b"par", b"", b"t", b"ial\nnext"], false, &["partial"]),
            (&[b"\n\nx\n"], false, &["", "", "x"]),
            (&[b"\n"], false, &[""]),
            (&[b"crlf\r\n"], false, &["crlf\r"]),
            (&[b"crlf\r", b"\nnext\r\n"], false, &["crlf\r", "next\r"]),
            (&[b"a\rb\n"], false, &["a\rb"]),
            (&[b"no newline"], false, &[]),
            (&[b"no newline"], true, &["no newline"]),
            (&[b"a\nb"], true, &["a", "b"]),
            (&[b"a\n"], true, &["a"]),
            (&[b""], true, &[]),
            (&[], true, &[]),
        ];
        for (reads, eof, want) in cases {
            assert_eq!(show(&frame(1 << 20, reads, *eof)), *want, "{reads:?}");
        }
    }

    #[test]
    fn every_split_point_gives_the_same_lines() {
        let texts: &[&[u8]] = &[
            b"first line\n\nthird, longer line with words\nlast",
            b"\r\n\r\nx\r\ny",
            b"\n\n\n",
            "h\u{e9}llo w\u{f6}rld \u{1F600}\nok\n".as_bytes(),
        ];
        for text in texts {
            for cap in [1 << 20, 5] {
                let whole = frame(cap, &[text], true);
                for i in 0..=text.len() {
                    for j in i..=text.len() {
                        let got = frame(cap, &[&text[..i], &text[i..j], &text[j..]], true);
                        assert_eq!(got, whole, "cap {cap}, split at {i},{j} of {text:?}");
                    }
                }
                // Byte by byte, too.
                let bytes: Vec<&[u8]> = text.chunks(1).collect();
                assert_eq!(frame(cap, &bytes, true), whole);
            }
        }
    }

    #[test]
    fn long_lines_are_split_and_nothing_is_lost() {
        let line: Vec<u8> = (0..25u8).map(|i| b'a' + i).collect();
        let mut input = line.clone();
        input.push(b'\n');
        for step in [1, 3, 7, 10, 26] {
            let reads: Vec<&[u8]> = input.chunks(step).collect();
            let got = frame(10, &reads, false);
            assert_eq!(got.iter().map(|(_, c)| *c).collect::<Vec<_>>(), vec![true, true, false], "step {step}");
            assert!(got.iter().all(|(l, _)| l.len() <= 10));
            assert_eq!(got.iter().flat_map(|(l, _)| l.clone()).collect::<Vec<u8>>(), line);
        }
        // Exactly the cap stays whole; cap + 1 is two pieces.
        assert_eq!(frame(10, &[b"0123456789\n"], false), vec![(b"0123456789".to_vec(), false)]);
        assert_eq!(show(&frame(10, &[b"0123456789A\n"], false)), ["0123456789+", "A"]);
        // An over-long trailing partial line is flushed at EOF, with its pieces marked.
        assert_eq!(show(&frame(10, &[b"0123456789ABCDEFGHIJK"], true)), ["0123456789+", "ABCDEFGHIJ+", "K"]);
        // A line of exactly 2 * cap, streamed: two pieces, the last not continued.
        assert_eq!(show(&frame(10, &[b"0123456789", b"ABCDEFGHIJ", b"\n"], false)), ["0123456789+", "ABCDEFGHIJ"]);
    }

    #[test]
    fn cuts_respect_utf8_characters() {
        // 'é' is 2 bytes, '😀' 4: no piece may start inside a character.
        let line = "aaaaaaaé😀😀bbb".repeat(5);
        let mut input = line.clone().into_bytes();
        input.push(b'\n');
        for step in [1, 4, 9, input.len()] {
            let reads: Vec<&[u8]> = input.chunks(step).collect();
            let got = frame(10, &reads, false);
            for (piece, _) in &got {
                assert!(std::str::from_utf8(piece).is_ok(), "torn character in {piece:?}");
                assert!(piece.len() <= 10);
            }
            assert_eq!(got.iter().flat_map(|(l, _)| l.clone()).collect::<Vec<u8>>(), line.as_bytes());
        }
        // Not UTF-8 at all: cut exactly at the cap.
        let bin = vec![0x80u8; 25];
        let got = frame(10, &[&bin, b"\n"], false);
        assert_eq!(got.iter().map(|(l, _)| l.len()).collect::<Vec<_>>(), [10, 10, 5]);
    }

    #[test]
    fn one_mib_line_stays_whole() {
        let mut input = vec![b'x'; 1 << 20];
        input.push(b'\n');
        let reads: Vec<&[u8]> = input.chunks(65536).collect();
        let got = frame(MAX_LINE, &reads, false);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].0.len(), got[0].1), (1 << 20, false));
    }

    #[test]
    fn line_over_the_default_cap_is_split_and_reassembles() {
        let mut line = Vec::with_capacity(MAX_LINE * 2 + 100);
        while line.len() < MAX_LINE * 2 + 100 {
            line.extend_from_slice(b"0123456789abcdef");
        }
        let mut input = line.clone();
        input.extend_from_slice(b"\nafter\n");
        let mut f = Framer::new();
        let mut pieces: Vec<(usize, bool)> = Vec::new();
        let mut joined = Vec::new();
        let mut after = Vec::new();
        for r in input.chunks(65536) {
            f.push(r, &mut |l, c| {
                if pieces.last().is_some_and(|p| !p.1) {
                    after.push(l.to_vec());
                } else {
                    pieces.push((l.len(), c));
                    joined.extend_from_slice(l);
                }
                assert!(l.len() <= MAX_LINE);
            });
            assert!(f.pending_len() <= MAX_LINE + 65536);
        }
        assert_eq!(pieces.iter().map(|p| p.1).collect::<Vec<_>>(), [true, true, false]);
        assert_eq!(pieces[0].0, MAX_LINE);
        assert!(joined == line);
        assert_eq!(after, [b"after".to_vec()]);
    }

    #[test]
    fn finish_resets() {
        let mut f = Framer::with_cap(16);
        let mut out = Vec::new();
        f.push(b"tail", &mut |l, c| out.push((l.to_vec(), c)));
        f.finish(&mut |l, c| out.push((l.to_vec(), c)));
        f.finish(&mut |l, c| out.push((l.to_vec(), c)));
        assert_eq!(out, [(b"tail".to_vec(), false)]);
        assert_eq!(f.pending_len(), 0);
    }
}
