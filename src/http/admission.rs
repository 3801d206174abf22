//! Who gets a connection slot, and how long a client may stall a reply.
//!
//! A hostile client on the network must not be able to starve the probes (kubelet restarts a
//! pod whose `/livez` fails). So: at most [`MAX_PER_PEER`] connections from one address; the
//! shared pool of [`MAX_CONNECTIONS`]; behind it a reserve of [`PROBE_RESERVE`] slots that only
//! answer `/livez`, `/readyz` and `/healthz`, for addresses that hold at most
//! [`RESERVE_MAX_HELD`] connections (kubelet; not the clients filling the pool); and every
//! write must progress within [`WRITE_TIMEOUT`] ([`Deadline`]). Reads are bounded elsewhere: headers by hyper's header
//! timeout, bodies by the handler that reads one (after checking the token).
//!
//! Owns the per-peer counts (only the accept loop admits; a slot is given back when its
//! [`Permits`] drop, at the end of the connection).

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Connections served at once (beyond them, and the probe reserve, `503` and close).
pub const MAX_CONNECTIONS: usize = 128;
/// Extra connections that only serve the probes, for when the pool is full.
pub const PROBE_RESERVE: usize = 16;
/// Connections from one address at once: one client cannot take the whole pool.
pub const MAX_PER_PEER: usize = 16;
/// An address holding more connections than this (this one included) gets no reserve slot.
pub const RESERVE_MAX_HELD: usize = 2;
/// A reply that cannot be written for this long (the client stopped reading) ends its connection.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The slots a connection holds until it ends.
pub struct Permits {
    _pool: OwnedSemaphorePermit,
    _peer: OwnedSemaphorePermit,
}

/// What a new connection gets.
pub enum Admit {
    /// Every route.
    Full(Permits),
    /// Only the probes (the pool is full).
    ProbesOnly(Permits),
    /// Nothing: say why and close.
    Refused(String),
}

/// The accept loop's bookkeeping of slots.
pub struct Admission {
    pool: Arc<Semaphore>,
    reserve: Arc<Semaphore>,
    per_peer: usize,
    peers: HashMap<IpAddr, Arc<Semaphore>>,
}

impl Admission {
    pub fn new(pool: usize, reserve: usize, per_peer: usize) -> Self {
        Admission { pool: Arc::new(Semaphore::new(pool)), reserve: Arc::new(Semaphore::new(reserve)), per_peer, peers: HashMap::new() }
    }

    /// Admits a connection from `peer`, or says why not.
    pub fn admit(&mut self, peer: IpAddr) -> Admit {
        let peer = peer.to_canonical();
        // Forget addresses that hold nothing (bounded by the connections held at once).
        let per_peer = self.per_peer;
        self.peers.retain(|_, s| s.available_permits() < per_peer);
        let counter = self.peers.entry(peer).or_insert_with(|| Arc::new(Semaphore::new(per_peer))).clone();
        let Ok(mine) = counter.clone().try_acquire_owned() else {
            return Admit::Refused(format!("too many connections from {peer} (at most {per_peer})"));
        };
        if let Ok(p) = self.pool.clone().try_acquire_owned() {
            return Admit::Full(Permits { _pool: p, _peer: mine });
        }
        let held = per_peer - counter.available_permits();
        if held > RESERVE_MAX_HELD {
            return Admit::Refused(format!("too many connections (at most {MAX_CONNECTIONS})"));
        }
        match self.reserve.clone().try_acquire_owned() {
            Ok(p) => Admit::ProbesOnly(Permits { _pool: p, _peer: mine }),
            Err(_) => Admit::Refused(format!("too many connections (at most {MAX_CONNECTIONS})")),
        }
    }
}

/// An I/O stream whose writes must make progress within a time limit: a client that stops
/// reading (a stalled log stream, a slow download) cannot hold its slot for ever.
pub struct Deadline<T> {
    io: T,
    limit: Duration,
    timer: Pin<Box<Sleep>>,
    armed: bool,
}

impl<T> Deadline<T> {
    pub fn new(io: T, limit: Duration) -> Self {
        Deadline { io, limit, timer: Box::pin(tokio::time::sleep(limit)), armed: false }
    }

    /// After a write made no progress: fail once the limit has passed since it first stalled.
    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.armed {
            self.timer.as_mut().reset(Instant::now() + self.limit);
            self.armed = true;
        }
        ready!(self.timer.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading")))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Deadline<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Deadline<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write(cx, buf) {
            Poll::Pending => self.stalled(cx).map(|r| r.map(|()| 0)),
            done => {
                self.armed = false;
                done
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Pending => self.stalled(cx),
            done => {
                self.armed = false;
                done
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.io).poll_shutdown(cx) {
            Poll::Pending => self.stalled(cx),
            done => done,
        }
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.stalled(cx).map(|r| r.map(|()| 0)),
            done => {
                self.armed = false;
                done
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_peer_cannot_take_the_pool_and_the_probes_keep_a_reserve() {
        let mut a = Admission::new(4, 2, 3);
        let mut held = Vec::new();
        for _ in 0..3 {
            let Admit::Full(p) = a.admit(ip("10.0.0.1")) else { panic!("the first three of a peer are served") };
            held.push(p);
        }
        let Admit::Refused(why) = a.admit(ip("10.0.0.1")) else { panic!("a fourth from the same peer is refused") };
        assert_eq!(why, "too many connections from 10.0.0.1 (at most 3)");
        // The same address written as IPv4-mapped IPv6 is the same peer.
        assert!(matches!(a.admit(ip("::ffff:10.0.0.1")), Admit::Refused(_)));
        let Admit::Full(p) = a.admit(ip("10.0.0.2")) else { panic!("another peer gets the last pooled slot") };
        held.push(p);
        let Admit::ProbesOnly(p) = a.admit(ip("10.0.0.2")) else { panic!("then the reserve, for probes only") };
        held.push(p);
        assert!(matches!(a.admit(ip("10.0.0.2")), Admit::Refused(_)), "not for a peer that holds more than two");
        let Admit::ProbesOnly(p) = a.admit(ip("10.0.0.3")) else { panic!("a peer that holds nothing gets one") };
        held.push(p);
        let Admit::Refused(why) = a.admit(ip("10.0.0.4")) else { panic!("then nothing") };
        assert_eq!(why, format!("too many connections (at most {MAX_CONNECTIONS})"));
        held.truncate(0);
        assert!(matches!(a.admit(ip("10.0.0.1")), Admit::Full(_)), "slots come back when connections end");
        assert!(a.peers.len() <= 1, "idle peers are forgotten: {}", a.peers.len());
    }

    #[tokio::test]
    async fn a_write_that_makes_no_progress_times_out() {
        use tokio::io::AsyncWriteExt;
        let (client, server) = tokio::io::duplex(16);
        let mut w = Deadline::new(server, Duration::from_millis(100));
        let t = std::time::Instant::now();
        let err = w.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(t.elapsed() >= Duration::from_millis(100));
        drop(client);
        // A reader that keeps up is never cut off.
        let (mut client, server) = tokio::io::duplex(16);
        let reader = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut all = Vec::new();
            client.read_to_end(&mut all).await.map(|_| all.len())
        });
        let mut w = Deadline::new(server, Duration::from_millis(200));
        w.write_all(&[1u8; 64 * 1024]).await.unwrap();
        w.shutdown().await.unwrap();
        drop(w);
        assert_eq!(reader.await.unwrap().unwrap(), 64 * 1024);
    }
}
