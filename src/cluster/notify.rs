//! sd_notify readiness for any language: the app's `NOTIFY_SOCKET` and the `READY=1` it sends.
//! The Node readiness signals (`process.send('ready')`, a worker's `listening`) come out of
//! [`super::WorkerChannel`]; this is the third and last readiness source.
//!
//! The socket is in the abstract namespace (no file to clean up) and lives as long as the
//! returned receiver: drop it and the reader task ends.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::oneshot;

/// Distinguishes the sockets of successive processes of one instance.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// Opens a notify socket for one process of instance `pm_id`: the `NOTIFY_SOCKET` value to give
/// it (`@name`), and a receiver that resolves on its `READY=1`. Must run inside the tokio runtime.
pub fn listen(pm_id: u32) -> std::io::Result<(String, oneshot::Receiver<()>)> {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("pm-runtime/{}/{pm_id}/{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    let sock = std::os::unix::net::UnixDatagram::bind_addr(&addr)?;
    sock.set_nonblocking(true)?;
    let sock = tokio::net::UnixDatagram::from_std(sock)?;
    let (tx, rx) = oneshot::channel();
    tokio::spawn(read(sock, tx));
    Ok((format!("@{name}"), rx))
}

/// Reads sd_notify datagrams (`KEY=value` lines) until `READY=1`, or until the process it
/// belongs to is gone (the receiver is dropped).
async fn read(sock: tokio::net::UnixDatagram, mut ready: oneshot::Sender<()>) {
    let mut buf = vec![0u8; 4096];
    loop {
        tokio::select! {
            _ = ready.closed() => return,
            got = sock.recv(&mut buf) => match got {
                Ok(n) if buf[..n].split(|&b| b == b'\n').any(|l| l == b"READY=1") => {
                    let _ = ready.send(());
                    return;
                }
                Ok(_) => {}
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
        let (value, mut ready) = super::listen(7).unwrap();
        let name = value.strip_prefix('@').unwrap();
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let client = std::os::unix::net::UnixDatagram::unbound().unwrap();
        client.send_to_addr(b"STATUS=warming up", &addr).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(ready.try_recv().is_err(), "not ready yet");
        client.send_to_addr(b"STATUS=warm\nREADY=1", &addr).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(2), ready).await.unwrap().unwrap();
    }
}
