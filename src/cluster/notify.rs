//! sd_notify for any language: the app's `NOTIFY_SOCKET`, the `READY=1` it sends, and its
//! watchdog heartbeats (`WATCHDOG=1`, with `watchdog` set).
//! The Node readiness signals (`process.send('ready')`, a worker's `listening`) come out of
//! [`super::WorkerChannel`]; this is the third and last readiness source.
//!
//! The socket is in the abstract namespace (no file to clean up) and lives as long as the
//! returned receiver: drop it and the reader task ends.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

/// What an app said on its notify socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    Ready,
    Watchdog,
}

/// Distinguishes the sockets of successive processes of one instance.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// Opens a notify socket for one process of instance `pm_id`: the `NOTIFY_SOCKET` value to give
/// it (`@name`), and a receiver of its notices. Must run inside the tokio runtime.
pub fn listen(pm_id: u32) -> std::io::Result<(String, mpsc::UnboundedReceiver<Notice>)> {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("pm-runtime/{}/{pm_id}/{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    let sock = std::os::unix::net::UnixDatagram::bind_addr(&addr)?;
    sock.set_nonblocking(true)?;
    let sock = tokio::net::UnixDatagram::from_std(sock)?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(read(sock, tx));
    Ok((format!("@{name}"), rx))
}

/// Reads sd_notify datagrams (`KEY=value` lines) until the process it belongs to is gone (the
/// receiver is dropped). Only `READY=1` and `WATCHDOG=1` mean something here.
async fn read(sock: tokio::net::UnixDatagram, notices: mpsc::UnboundedSender<Notice>) {
    let mut buf = vec![0u8; 4096];
    loop {
        tokio::select! {
            _ = notices.closed() => return,
            got = sock.recv(&mut buf) => match got {
                Ok(n) => {
                    for line in buf[..n].split(|&b| b == b'\n') {
                        let notice = match line {
                            b"READY=1" => Notice::Ready,
                            b"WATCHDOG=1" => Notice::Watchdog,
                            _ => continue,
                        };
                        if notices.send(notice).is_err() {
                            return;
                        }
                    }
                }
                Err(_) => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn ready_1_resolves_and_other_lines_do_not() {
        use std::os::linux::net::SocketAddrExt;
        let (value, mut notices) = super::listen(7).unwrap();
        let name = value.strip_prefix('@').unwrap();
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let client = std::os::unix::net::UnixDatagram::unbound().unwrap();
        client.send_to_addr(b"STATUS=warming up", &addr).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(notices.try_recv().is_err(), "not ready yet");
        client.send_to_addr(b"STATUS=warm\nREADY=1\nWATCHDOG=1", &addr).unwrap();
        for want in [super::Notice::Ready, super::Notice::Watchdog] {
            let got = tokio::time::timeout(std::time::Duration::from_secs(2), notices.recv()).await.unwrap();
            assert_eq!(got, Some(want));
        }
    }
}
