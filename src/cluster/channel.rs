//! Node's IPC channel, primary side: newline-delimited JSON on a Unix stream socket, with file
//! descriptors passed as SCM_RIGHTS alongside the line that announces them.
//!
//! This layer only frames bytes: it yields whole lines and keeps the fds received so far in
//! arrival order. The protocol layer gives the oldest fd to the next `NODE_HANDLE` line, which
//! is how Node's receiver pairs them (and Node's sender keeps one handle in flight, so there is
//! never more than one waiting).

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use tokio::io::Interest;
use tokio::net::UnixStream;

use super::sys;

/// A line longer than this is dropped (up to its newline) instead of growing without bound: what
/// one app may make PID 1 hold per channel. Node has no limit; prom-client's replies of large
/// registries, the largest messages seen in practice, are a few MiB.
pub const MAX_LINE: usize = 16 * 1024 * 1024;

/// Bytes read per `recvmsg`.
const CHUNK: usize = 64 * 1024;

/// One worker's IPC socket (our end).
pub struct Channel {
    stream: UnixStream,
    framer: Framer,
    fds: VecDeque<OwnedFd>,
    /// The kernel truncated ancillary data since the last `take_fd`: a handle was lost.
    lost_fd: bool,
    eof: bool,
    chunk: Box<[u8]>,
}

impl Channel {
    pub fn new(stream: UnixStream) -> Self {
        Channel {
            stream,
            framer: Framer::default(),
            fds: VecDeque::new(),
            lost_fd: false,
            eof: false,
            chunk: vec![0u8; CHUNK].into_boxed_slice(),
        }
    }

    /// The next whole line (without its `\n`), or `None` at end of stream. A connection reset
    /// counts as end of stream (a SIGKILLed worker can leave one, research §6). Cancel-safe:
    /// bytes are only consumed into the internal buffer.
    pub async fn recv(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(line) = self.framer.take_line() {
                return Ok(Some(line));
            }
            if self.eof {
                return Ok(None);
            }
            self.stream.readable().await?;
            let chunk = &mut self.chunk;
            match self.stream.try_io(Interest::READABLE, || sys::recv_with_fds(self.stream.as_fd(), chunk)) {
                Ok(r) => {
                    self.fds.extend(r.fds);
                    self.lost_fd |= r.truncated;
                    if r.bytes == 0 {
                        self.eof = true;
                    } else {
                        self.framer.push(&self.chunk[..r.bytes]);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => self.eof = true,
                Err(e) => return Err(e),
            }
        }
    }

    /// The oldest received fd not yet claimed by a `NODE_HANDLE` line.
    pub fn take_fd(&mut self) -> Option<OwnedFd> {
        self.fds.pop_front()
    }

    /// True once if the kernel dropped fds (MSG_CTRUNC) since the last call.
    pub fn take_lost_fd(&mut self) -> bool {
        std::mem::take(&mut self.lost_fd)
    }

    /// Writes one whole line (`line` must end in `\n`), with `fd` attached to its first byte.
    /// Not cancel-safe: await it to completion.
    pub async fn send(&self, line: &[u8], fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
        let mut sent = 0;
        while sent < line.len() {
            self.stream.writable().await?;
            let attach = if sent == 0 { fd } else { None };
            match self.stream.try_io(Interest::WRITABLE, || sys::send_with_fd(self.stream.as_fd(), &line[sent..], attach)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Splits a byte stream into lines, dropping any line longer than [`MAX_LINE`].
#[derive(Default)]
struct Framer {
    buf: Vec<u8>,
    /// Position in `buf` up to which there is no newline.
    scanned: usize,
    /// Dropping an oversized line: discard bytes up to the next newline.
    skipping: bool,
}

impl Framer {
    fn push(&mut self, bytes: &[u8]) {
        if self.skipping {
            match memchr::memchr(b'\n', bytes) {
                Some(i) => {
                    self.skipping = false;
                    self.buf.extend_from_slice(&bytes[i + 1..]);
                }
                None => return,
            }
        } else {
            self.buf.extend_from_slice(bytes);
        }
        if self.buf.len() > MAX_LINE && memchr::memchr(b'\n', &self.buf[self.scanned..]).is_none() {
            tracing::warn!("cluster: dropping an IPC message longer than {MAX_LINE} bytes");
            self.buf.clear();
            self.scanned = 0;
            self.skipping = true;
        }
    }

    fn take_line(&mut self) -> Option<Vec<u8>> {
        let Some(i) = memchr::memchr(b'\n', &self.buf[self.scanned..]) else {
            self.scanned = self.buf.len();
            return None;
        };
        let i = i + self.scanned;
        let mut line: Vec<u8> = self.buf.drain(..=i).collect();
        line.pop();
        self.scanned = 0;
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn pair() -> (Channel, UnixStream) {
        let (a, b) = UnixStream::pair().expect("pair");
        (Channel::new(a), b)
    }

    #[tokio::test]
    async fn lines_are_framed_across_reads() {
        let (mut ch, peer) = pair();
        let peer = Channel::new(peer);
        peer.send(b"{\"a\":", None).await.expect("send");
        peer.send(b"1}\n\"ready\"\n", None).await.expect("send");
        assert_eq!(ch.recv().await.expect("recv").as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(ch.recv().await.expect("recv").as_deref(), Some(&b"\"ready\""[..]));
        drop(peer);
        assert_eq!(ch.recv().await.expect("recv"), None);
    }

    #[tokio::test]
    async fn fds_travel_with_their_line() {
        let (mut ch, peer) = pair();
        let peer = Channel::new(peer);
        let (x, _y) = std::os::unix::net::UnixStream::pair().expect("pair");
        peer.send(b"{\"cmd\":\"NODE_HANDLE\"}\n", Some(x.as_fd())).await.expect("send");
        let line = ch.recv().await.expect("recv").expect("line");
        assert_eq!(line, b"{\"cmd\":\"NODE_HANDLE\"}");
        let fd = ch.take_fd().expect("fd");
        assert_ne!(fd.as_raw_fd(), x.as_raw_fd());
        assert!(ch.take_fd().is_none());
        assert!(!ch.take_lost_fd());
    }

    #[test]
    fn oversized_lines_are_skipped() {
        let mut f = Framer::default();
        f.push(&vec![b'x'; MAX_LINE + 1]);
        f.push(b"xxx\n\"ok\"\n");
        assert_eq!(f.take_line().as_deref(), Some(&b"\"ok\""[..]));
    }
}
