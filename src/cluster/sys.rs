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

/// The user an app runs as, when it is not the runtime's: a socket is bound for it only where
/// that user could bind it itself, and belongs to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// The lowest port an unprivileged user may bind (`net.ipv4.ip_unprivileged_port_start`;
/// 1024 when it cannot be read).
pub fn unprivileged_port_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(1024)
}

/// Whether `owner` may create an entry in a directory of this owner and mode (write and
/// search permission, as the kernel decides for a process without capabilities).
pub fn may_create_in(owner: Owner, dir_uid: u32, dir_gid: u32, mode: u32) -> bool {
    let bits = if owner.uid == dir_uid {
        mode >> 6
    } else if owner.gid == dir_gid {
        mode >> 3
    } else {
        mode
    };
    bits & 0o3 == 0o3
}

/// The directory entry of a bound Unix socket, held by a descriptor of its directory: removing
/// it later removes that entry, in that directory, whatever became of the path meanwhile.
pub struct UnixEntry {
    dir: OwnedFd,
    name: std::ffi::OsString,
}

impl UnixEntry {
    /// Removes the socket file (when its server closes, as libuv does).
    pub fn remove(&self) {
        let _ = nix::unistd::unlinkat(&self.dir, self.name.as_os_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
    }
}

/// Creates a listening Unix stream socket at `path` (non-blocking, close-on-exec, backlog as
/// Node's), or in the abstract namespace for a name starting with `\0`.
///
/// The socket's directory is opened once and everything after goes through that descriptor
/// (binding via `/proc/self/fd/N/name`), so swapping a directory on the path for a symlink
/// changes nothing. For an `owner` (an app that runs as another user) the directory must be
/// one that user may create files in, and the socket is given to it. A socket file left by a
/// previous run that nobody listens on any more (connecting is refused), belonging to us or to
/// `owner`, is replaced; any other existing file gives EADDRINUSE, as in Node.
pub fn unix_listener(path: &Path, owner: Option<Owner>) -> io::Result<(OwnedFd, Option<UnixEntry>)> {
    use std::os::unix::fs::OpenOptionsExt;
    let bytes = path.as_os_str().as_bytes();
    let fd = socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC, None)?;
    if is_abstract(path) {
        bind(fd.as_raw_fd(), &UnixAddr::new_abstract(&bytes[1..])?)?;
        listen(&fd, Backlog::new(BACKLOG).unwrap_or(Backlog::MAXCONN))?;
        return Ok((fd, None));
    }
    let (Some(name), Some(dir)) = (path.file_name(), path.parent()) else { return Err(io::Error::from_raw_os_error(libc::EINVAL)) };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let dir: OwnedFd = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC).open(dir)?.into();
    let st = nix::sys::stat::fstat(&dir)?;
    if let Some(o) = owner
        && !may_create_in(o, st.st_uid, st.st_gid, st.st_mode)
    {
        return Err(io::Error::from_raw_os_error(libc::EACCES));
    }
    let via = Path::new("/proc/self/fd").join(dir.as_raw_fd().to_string()).join(name);
    let addr = UnixAddr::new(&via)?;
    match bind(fd.as_raw_fd(), &addr) {
        Err(nix::errno::Errno::EADDRINUSE) if is_stale_socket(&dir, name, &via, owner) => {
            nix::unistd::unlinkat(&dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir)?;
            bind(fd.as_raw_fd(), &addr)?;
        }
        r => r?,
    }
    let entry = UnixEntry { dir, name: name.to_owned() };
    if let Some(o) = owner {
        let owned = nix::unistd::fchownat(
            &entry.dir,
            name,
            Some(nix::unistd::Uid::from_raw(o.uid)),
            Some(nix::unistd::Gid::from_raw(o.gid)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        );
        if let Err(e) = owned {
            entry.remove();
            return Err(e.into());
        }
    }
    listen(&fd, Backlog::new(BACKLOG).unwrap_or(Backlog::MAXCONN))?;
    Ok((fd, Some(entry)))
}

/// A socket file in `dir` whose listener is gone (connecting is refused), and that belongs to
/// the user it is bound for (`owner`, else us): never a file of someone else, never through a
/// symlink.
fn is_stale_socket(dir: &OwnedFd, name: &std::ffi::OsStr, via: &Path, owner: Option<Owner>) -> bool {
    let Ok(st) = nix::sys::stat::fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) else { return false };
    let is_socket = st.st_mode & libc::S_IFMT == libc::S_IFSOCK;
    let ours = st.st_uid == owner.map_or_else(|| nix::unistd::geteuid().as_raw(), |o| o.uid);
    is_socket && ours && std::os::unix::net::UnixStream::connect(via).err().is_some_and(|e| e.kind() == io::ErrorKind::ConnectionRefused)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_may_create_in_a_directory() {
        let app = Owner { uid: 1000, gid: 100 };
        for (dir_uid, dir_gid, mode, may) in [
            (1000, 0, 0o700, true),
            (1000, 0, 0o500, false),
            (1000, 100, 0o077, false), // the owner's bits decide for the owner
            (0, 100, 0o770, true),
            (0, 100, 0o750, false),
            (0, 0, 0o755, false),
            (0, 0, 0o1777, true),
            (0, 0, 0o773, true),
            (0, 0, 0o776, false), // write without search
        ] {
            assert_eq!(may_create_in(app, dir_uid, dir_gid, mode), may, "{dir_uid}:{dir_gid} {mode:o}");
        }
    }
}
