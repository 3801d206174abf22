//! The system calls of the cluster module: `sendmsg`/`recvmsg` with SCM_RIGHTS on the IPC
//! channel, and creating listening TCP sockets. No `unsafe` here: taking ownership of a received
//! fd is `process::unix::own_received_fd`, in the crate's one `unsafe` file.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::sys::socket::{
    AddressFamily, Backlog, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, SockaddrIn, SockaddrIn6, UnixAddr, bind,
    listen, recvmsg, sendmsg, setsockopt, socket, sockopt,
};

/// The most fds accepted with one `recvmsg`. Node sends one per message; more only if a worker
/// misbehaves. A larger ancillary payload is truncated by the kernel (MSG_CTRUNC).
const MAX_FDS_PER_READ: usize = 16;

/// What one `recvmsg` brought.
pub struct Received {
    /// Bytes read into the buffer; 0 means end of stream.
    pub bytes: usize,
    /// File descriptors received alongside (owned by us now, close-on-exec).
    pub fds: Vec<OwnedFd>,
    /// The kernel dropped ancillary data (fds lost): the peer must be told to resend.
    pub truncated: bool,
}

/// One non-blocking `recvmsg` on a stream socket. Errors are returned as they are
/// (`WouldBlock` included) so the caller can use it inside tokio's `try_io`.
pub fn recv_with_fds(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS_PER_READ]);
    let msg = recvmsg::<()>(fd.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT)
        .map_err(io::Error::from)?;
    let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
    let mut fds = Vec::new();
    // `cmsgs()` refuses to iterate a truncated buffer; whatever fds made it are then leaked,
    // which needs a peer sending more than MAX_FDS_PER_READ handles in one message.
    if let Ok(cmsgs) = msg.cmsgs() {
        for cmsg in cmsgs {
            if let ControlMessageOwned::ScmRights(raw) = cmsg {
                for r in raw {
                    fds.push(crate::process::unix::own_received_fd(r));
                }
            }
        }
    }
    Ok(Received { bytes: msg.bytes, fds, truncated })
}

/// One non-blocking `sendmsg` of `bytes`, with `fd` attached as SCM_RIGHTS when given.
/// Returns how many bytes were written (the fd travels with the first byte).
pub fn send_with_fd(sock: BorrowedFd<'_>, bytes: &[u8], fd: Option<BorrowedFd<'_>>) -> io::Result<usize> {
    let iov = [IoSlice::new(bytes)];
    let raw;
    let cmsgs: &[ControlMessage<'_>] = match fd {
        Some(f) => {
            raw = [f.as_raw_fd()];
            &[ControlMessage::ScmRights(&raw)]
        }
        None => &[],
    };
    sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT, None).map_err(io::Error::from)
}

/// The listen backlog, Node's default (`net.Server#listen` passes 511 to libuv).
pub const BACKLOG: i32 = 511;

/// Creates a listening TCP socket the way libuv does (SO_REUSEADDR, close-on-exec), and
/// **non-blocking**: O_NONBLOCK belongs to the open file description that every worker shares
/// in shared-handle mode, and libuv does not set it on a received handle (pitfall 1).
/// `v6only` applies to IPv6 addresses only (Node's `ipv6Only` listen option).
pub fn tcp_listener(addr: SocketAddr, v6only: bool) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv6() { AddressFamily::Inet6 } else { AddressFamily::Inet };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    match addr {
        SocketAddr::V4(a) => bind(fd.as_raw_fd(), &SockaddrIn::from(a))?,
        SocketAddr::V6(a) => {
            setsockopt(&fd, sockopt::Ipv6V6Only, &v6only)?;
            bind(fd.as_raw_fd(), &SockaddrIn6::from(a))?
        }
    }
    listen(&fd, Backlog::new(BACKLOG).unwrap_or(Backlog::MAXCONN))?;
    Ok(fd)
}

/// Binds what Node's primary binds for a listen without a host: `::` dual-stack first, then
/// `0.0.0.0` if that fails for any reason, as `net._createServerHandle` does.
pub fn tcp_listener_any(port: u16, v6only: bool) -> io::Result<OwnedFd> {
    tcp_listener(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port), v6only)
        .or_else(|_| tcp_listener(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port), false))
}

/// True for a Linux abstract socket name (`\0name`: no file).
pub fn is_abstract(path: &Path) -> bool {
    path.as_os_str().as_bytes().first() == Some(&0)
}

/// Creates a listening Unix stream socket at `path` (non-blocking, close-on-exec, backlog as
/// Node's), or in the abstract namespace for a name starting with `\0`. A socket file left by
/// a previous run that nobody listens on any more (connecting is refused) is replaced; any
/// other existing file gives EADDRINUSE, as in Node.
pub fn unix_listener(path: &Path) -> io::Result<OwnedFd> {
    let bytes = path.as_os_str().as_bytes();
    let addr = if is_abstract(path) { UnixAddr::new_abstract(&bytes[1..])? } else { UnixAddr::new(path)? };
    let fd = socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC, None)?;
    match bind(fd.as_raw_fd(), &addr) {
        Err(nix::errno::Errno::EADDRINUSE) if !is_abstract(path) && is_stale_socket(path) => {
            std::fs::remove_file(path)?;
            bind(fd.as_raw_fd(), &addr)?;
        }
        r => r?,
    }
    listen(&fd, Backlog::new(BACKLOG).unwrap_or(Backlog::MAXCONN))?;
    Ok(fd)
}

/// A socket file whose listener is gone (connecting is refused).
fn is_stale_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    is_socket && std::os::unix::net::UnixStream::connect(path).err().is_some_and(|e| e.kind() == io::ErrorKind::ConnectionRefused)
}

/// The local address of a bound socket.
pub fn local_addr(fd: BorrowedFd<'_>) -> io::Result<SocketAddr> {
    let addr: nix::sys::socket::SockaddrStorage = nix::sys::socket::getsockname(fd.as_raw_fd())?;
    if let Some(a) = addr.as_sockaddr_in() {
        return Ok(SocketAddr::V4((*a).into()));
    }
    if let Some(a) = addr.as_sockaddr_in6() {
        return Ok(SocketAddr::V6((*a).into()));
    }
    Err(io::Error::new(io::ErrorKind::InvalidInput, "not an IP socket"))
}
