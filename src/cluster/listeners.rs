//! The listening sockets of one app, shared by all its workers, and the round-robin
//! dispatcher.
//!
//! A socket is bound once per `(address, port, addressType, fd)` (Node's key without the
//! per-worker index) on the first `queryServer` that names it (or earlier with
//! [`Listeners::prebind`]) and stays open until the registry is dropped, i.e. as long as the app
//! exists: a worker closing its server, or every worker being replaced during a reload, never
//! closes the port. Connections arriving while no worker listens wait in the kernel's backlog
//! (shared mode) or in the dispatcher (round-robin).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{Notify, mpsc};

use super::sys;

/// How connections reach the workers (Node's `cluster.schedulingPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedPolicy {
    /// `none`: every worker gets the listening socket; the kernel hands each connection to
    /// whichever worker accepts first. No per-connection work in pm-runtime.
    Shared,
    /// `rr`: pm-runtime accepts and passes each connection to the least-served worker with
    /// room (see the module docs). Node's default on Linux, and ours.
    RoundRobin,
}

impl SchedPolicy {
    /// The default when `NODE_CLUSTER_SCHED_POLICY` is not set (see the module docs for why).
    pub const DEFAULT: SchedPolicy = SchedPolicy::RoundRobin;

    /// Reads a `NODE_CLUSTER_SCHED_POLICY` value as Node does: `rr` or `none`; anything else
    /// (or nothing) gives the default.
    pub fn from_env_value(value: Option<&str>) -> SchedPolicy {
        match value {
            Some("rr") => SchedPolicy::RoundRobin,
            Some("none") => SchedPolicy::Shared,
            _ => SchedPolicy::DEFAULT,
        }
    }
}

/// What a worker's `queryServer` asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ListenRequest {
    /// The resolved IP the app asked for, or `None` for "any" (no host given).
    pub address: Option<String>,
    pub port: i64,
    /// The JS rendering of `addressType` (`4`, `6`, `udp4`, …).
    pub address_type: String,
    /// `listen({fd})`: an fd number in the *worker's* table.
    pub fd: Option<i64>,
    /// libuv's `UV_TCP_IPV6ONLY` flag (`ipv6Only: true`).
    pub ipv6_only: bool,
}

impl ListenRequest {
    /// The registry key: Node's `${address}:${port}:${addressType}:${fd}` (no index).
    fn key(&self) -> String {
        let address = self.address.as_deref().unwrap_or("null");
        let fd = self.fd.map(|f| f.to_string()).unwrap_or_else(|| "undefined".to_string());
        format!("{address}:{}:{}:{fd}", self.port, self.address_type)
    }
}

/// Refusals of a `queryServer`, as a positive errno (sent to the worker negated, libuv-style).
fn refuse(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

/// Where a listening socket is bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Local {
    Tcp(SocketAddr),
    /// A Unix socket: a filesystem path (absolute), or an abstract name starting with `\0`.
    Unix(PathBuf),
}

/// One listening socket of the app.
pub(crate) struct Listener {
    pub local: Local,
    /// Shared mode: the socket sent to every worker (a dup each time); never accepted on here.
    pub fd: Option<OwnedFd>,
    /// Round-robin mode: the dispatcher fed by the accept task.
    pub rr: Option<Arc<RrDispatch>>,
    accept_task: Option<tokio::task::AbortHandle>,
    /// What the first worker sent as `data` (TLS ticket keys), given to every worker.
    data: Mutex<Value>,
    /// A Unix socket's file, removed through its directory's descriptor.
    entry: Option<sys::UnixEntry>,
}

impl Listener {
    /// The `data` every worker gets: the first non-null one sent for this socket.
    pub fn data(&self, offered: &Value) -> Value {
        let mut d = lock(&self.data);
        if d.is_null() {
            *d = offered.clone();
        }
        d.clone()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(t) = &self.accept_task {
            t.abort();
        }
        // As libuv does when a bound pipe server closes: the socket file goes with it.
        if let Some(e) = &self.entry {
            e.remove();
        }
    }
}

/// The listening sockets of one app, shared by all its workers (cheap to clone). Dropping the
/// last clone closes them (once the worker channels that use them are gone too).
#[derive(Clone)]
pub struct Listeners {
    inner: Arc<Registry>,
    /// What a relative Unix socket path is relative to (the app's cwd).
    cwd: Option<PathBuf>,
    /// The user the app runs as, when not the runtime's (see [`Listeners::as_user`]).
    owner: Option<sys::Owner>,
}

struct Registry {
    policy: SchedPolicy,
    map: Mutex<HashMap<String, Arc<Listener>>>,
}

impl Listeners {
    pub fn new(policy: SchedPolicy) -> Self {
        Listeners { inner: Arc::new(Registry { policy, map: Mutex::new(HashMap::new()) }), cwd: None, owner: None }
    }

    /// The listeners of an app whose working directory is `cwd`: a relative Unix socket path
    /// (`server.listen('app.sock')`) is bound there, where the app expects it (Node's primary
    /// would bind it relative to its own cwd).
    pub fn for_app(policy: SchedPolicy, cwd: PathBuf) -> Self {
        Listeners::new(policy).with_cwd(cwd)
    }

    /// The same sockets seen from an app whose working directory is `cwd` (several apps share
    /// one registry, as under PM2's single cluster primary; each resolves relative Unix socket
    /// paths against its own cwd).
    pub fn with_cwd(&self, cwd: PathBuf) -> Self {
        Listeners { inner: self.inner.clone(), cwd: Some(cwd), owner: self.owner }
    }

    /// The same sockets seen from an app that runs as `uid`/`gid` (not the runtime's user):
    /// it gets only what it could bind itself (no port below
    /// `net.ipv4.ip_unprivileged_port_start`, no Unix socket in a directory it cannot write),
    /// and the socket files made for it are its own. Without this, an app dropped to `nobody`
    /// could have a root runtime listen on port 80 or create files in `/root` for it.
    pub fn as_user(&self, uid: u32, gid: u32) -> Self {
        Listeners { inner: self.inner.clone(), cwd: self.cwd.clone(), owner: Some(sys::Owner { uid, gid }) }
    }

    pub fn policy(&self) -> SchedPolicy {
        self.inner.policy
    }

    /// Binds the socket that `server.listen(port)` without a host asks for, before any worker
    /// starts, so the port answers (connections queue) while workers boot. With port 0 an
    /// ephemeral port is bound and registered as that port (pass it to the workers as `PORT`).
    /// Needs a tokio runtime in round-robin mode. Returns the bound address.
    pub fn prebind(&self, port: u16) -> io::Result<SocketAddr> {
        let req = ListenRequest { address: None, port: i64::from(port), address_type: "4".to_string(), fd: None, ipv6_only: false };
        let mut map = lock(&self.inner.map);
        if let Some(Local::Tcp(a)) = map.get(&req.key()).map(|l| &l.local) {
            return Ok(*a);
        }
        let listener = Arc::new(bind(&req, self.inner.policy, None, None)?);
        let Local::Tcp(addr) = listener.local else { return Err(refuse(libc::EINVAL)) };
        // Port 0: registered under the port actually bound, which is what the workers will ask for.
        let actual = ListenRequest { port: i64::from(addr.port()), ..req };
        map.insert(actual.key(), listener.clone());
        Ok(addr)
    }

    /// The TCP addresses currently bound.
    pub fn bound(&self) -> Vec<SocketAddr> {
        lock(&self.inner.map)
            .values()
            .filter_map(|l| match l.local {
                Local::Tcp(a) => Some(a),
                Local::Unix(_) => None,
            })
            .collect()
    }

    /// The socket for `req`, bound on first use. A failed bind is not remembered (the next
    /// worker tries again, as in Node).
    pub(crate) fn get_or_bind(&self, req: &ListenRequest) -> io::Result<Arc<Listener>> {
        // A relative Unix socket path is keyed by where it is bound (this app's cwd).
        let resolved;
        let req = match (&req.address, &self.cwd) {
            (Some(name), Some(cwd))
                if req.address_type == "-1" && !name.is_empty() && !name.starts_with('/') && !sys::is_abstract(Path::new(name)) =>
            {
                resolved = ListenRequest { address: Some(cwd.join(name).to_string_lossy().into_owned()), ..req.clone() };
                &resolved
            }
            _ => req,
        };
        if let Some(owner) = self.owner {
            // Before the registry: a socket another app bound is no more this app's to use.
            may_use(req, owner)?;
        }
        let key = req.key();
        let mut map = lock(&self.inner.map);
        if let Some(l) = map.get(&key) {
            return Ok(l.clone());
        }
        let listener = Arc::new(bind(req, self.inner.policy, self.cwd.as_deref(), self.owner)?);
        map.insert(key, listener.clone());
        Ok(listener)
    }
}

/// Whether an app running as `owner` could bind what `req` asks for by itself (EACCES if not).
/// The directory of a Unix socket is checked again, race-free, when it is bound.
fn may_use(req: &ListenRequest, owner: sys::Owner) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if req.address_type == "-1" {
        let Some(name) = req.address.as_deref().filter(|a| !a.is_empty() && !sys::is_abstract(Path::new(a))) else { return Ok(()) };
        let dir = Path::new(name).parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let m = std::fs::metadata(dir)?;
        return if sys::may_create_in(owner, m.uid(), m.gid(), m.mode()) { Ok(()) } else { Err(refuse(libc::EACCES)) };
    }
    match u16::try_from(req.port) {
        Ok(p) if p != 0 && p < sys::unprivileged_port_start() => Err(refuse(libc::EACCES)),
        _ => Ok(()),
    }
}

fn bind(req: &ListenRequest, policy: SchedPolicy, cwd: Option<&Path>, owner: Option<sys::Owner>) -> io::Result<Listener> {
    if req.fd.is_some() {
        // `listen({fd: N})` names an fd of the worker, which pm-runtime cannot see.
        return Err(refuse(libc::EBADF));
    }
    if req.address_type == "-1" {
        // `listen(path)`: Node sends the path as the address, port and addressType -1.
        let Some(name) = req.address.as_deref().filter(|a| !a.is_empty()) else { return Err(refuse(libc::EINVAL)) };
        let path = match (sys::is_abstract(Path::new(name)), cwd) {
            (false, Some(cwd)) => cwd.join(name),
            _ => PathBuf::from(name),
        };
        let (fd, entry) = sys::unix_listener(&path, owner)?;
        let mut l = with_policy(fd, Local::Unix(path), policy)?;
        l.entry = entry;
        return Ok(l);
    }
    if req.address_type != "4" && req.address_type != "6" {
        // UDP (`udp4`/`udp6`) and anything else: not supported yet.
        return Err(refuse(libc::ENOTSUP));
    }
    let port = u16::try_from(req.port).map_err(|_| refuse(libc::EINVAL))?;
    let fd = match &req.address {
        None => sys::tcp_listener_any(port, req.ipv6_only)?,
        Some(a) => {
            let ip: IpAddr = a.parse().map_err(|_| refuse(libc::EINVAL))?;
            sys::tcp_listener(SocketAddr::new(ip, port), req.ipv6_only)?
        }
    };
    let addr = sys::local_addr(fd.as_fd())?;
    with_policy(fd, Local::Tcp(addr), policy)
}

/// A bound socket as the policy uses it: handed to workers (shared), or accepted on here
/// (round-robin; needs a tokio runtime).
fn with_policy(fd: OwnedFd, local: Local, policy: SchedPolicy) -> io::Result<Listener> {
    let data = Mutex::new(Value::Null);
    match policy {
        SchedPolicy::Shared => Ok(Listener { local, fd: Some(fd), rr: None, accept_task: None, data, entry: None }),
        SchedPolicy::RoundRobin => {
            let acceptor = match local {
                Local::Tcp(_) => Acceptor::Tcp(tokio::net::TcpListener::from_std(std::net::TcpListener::from(fd))?),
                Local::Unix(_) => Acceptor::Unix(tokio::net::UnixListener::from_std(std::os::unix::net::UnixListener::from(fd))?),
            };
            let rr = Arc::new(RrDispatch::default());
            let task = tokio::spawn(accept_loop(acceptor, rr.clone()));
            Ok(Listener { local, fd: None, rr: Some(rr), accept_task: Some(task.abort_handle()), data, entry: None })
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Round-robin

/// Accepted connections held by the dispatcher before it stops accepting (the kernel backlog
/// holds the rest).
const PENDING_CAP: usize = 128;

/// Connections a worker server may have been sent and not yet answered. Node's primary uses
/// 1; see the module docs for the measurements behind this value.
pub(crate) const RR_IN_FLIGHT: usize = 4;

/// Identifies one server of one worker: the worker channel's unique number and the key we
/// gave that server.
pub(crate) type SlotId = (u64, String);

/// A worker server that can take connections.
#[derive(Clone)]
pub(crate) struct Slot {
    pub id: SlotId,
    pub tx: mpsc::UnboundedSender<RrConn>,
}

/// A connection on its way to a worker server.
pub(crate) struct RrConn {
    pub dispatch: Arc<RrDispatch>,
    pub slot: SlotId,
    pub fd: OwnedFd,
}

#[derive(Default)]
pub(crate) struct RrDispatch {
    state: Mutex<RrState>,
    space: Notify,
}

#[derive(Default)]
struct RrState {
    /// Member servers and how many connections each was given.
    members: HashMap<SlotId, u64>,
    /// Members given no connection since they joined: first among equals, so a new worker
    /// answers the next connection instead of after a turn of every other one (16 workers
    /// starting: the last one's first answer came 0.16–0.21 s after it listened).
    fresh: std::collections::HashSet<SlotId>,
    /// Room for one connection each (a member appears once per free credit).
    free: Vec<Slot>,
    /// Accepted connections waiting for room (only while `free` is empty).
    pending: VecDeque<OwnedFd>,
}

impl RrState {
    /// The free credit of the member that was given the fewest connections (among equals, one
    /// given none yet, then the longest-waiting one).
    fn take_least_served(&mut self) -> Option<Slot> {
        let (i, _) = self
            .free
            .iter()
            .enumerate()
            .min_by_key(|(_, s)| (self.members.get(&s.id).copied().unwrap_or(u64::MAX), !self.fresh.contains(&s.id)))?;
        Some(self.free.remove(i))
    }

    fn served(&mut self, id: &SlotId) {
        if let Some(n) = self.members.get_mut(id) {
            *n += 1;
            self.fresh.remove(id);
        }
    }
}

impl RrDispatch {
    /// Gives a connection to the member with room that was given the fewest so far, or
    /// queues it until one has room.
    pub fn distribute(self: &Arc<Self>, fd: OwnedFd) {
        let mut st = lock(&self.state);
        let mut fd = fd;
        while let Some(slot) = st.take_least_served() {
            let conn = RrConn { dispatch: self.clone(), slot: slot.id.clone(), fd };
            match slot.tx.send(conn) {
                Ok(()) => {
                    st.served(&slot.id);
                    return;
                }
                Err(e) => fd = e.0.fd, // that worker's channel is gone: next one
            }
        }
        st.pending.push_back(fd);
    }

    /// `slot` has room for one more connection (it just answered one). Returns a waiting
    /// connection for it, or records the room. Nothing for a slot that left.
    pub fn handoff(&self, slot: &Slot) -> Option<OwnedFd> {
        let mut st = lock(&self.state);
        if !st.members.contains_key(&slot.id) {
            return None;
        }
        if let Some(fd) = st.pending.pop_front() {
            // Pending connections mean nobody else has room: this one takes it.
            st.served(&slot.id);
            self.space.notify_one();
            return Some(fd);
        }
        st.free.push(slot.clone());
        None
    }

    /// A worker server starts taking connections, with room for [`RR_IN_FLIGHT`] at a time.
    /// It starts level with the least-served member (a replacement is not flooded to catch up).
    /// Returns the waiting connections it takes at once.
    pub fn join(&self, slot: &Slot) -> Vec<OwnedFd> {
        {
            let mut st = lock(&self.state);
            let level = st.members.values().copied().min().unwrap_or(0);
            st.members.insert(slot.id.clone(), level);
            st.fresh.insert(slot.id.clone());
        }
        (0..RR_IN_FLIGHT).filter_map(|_| self.handoff(slot)).collect()
    }

    /// A worker server stops taking connections (closed, disconnecting, or gone).
    pub fn leave(&self, id: &SlotId) {
        let mut st = lock(&self.state);
        st.members.remove(id);
        st.fresh.remove(id);
        st.free.retain(|s| &s.id != id);
    }

    fn pending_len(&self) -> usize {
        lock(&self.state).pending.len()
    }
}

/// What the round-robin accept task accepts on.
enum Acceptor {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

impl Acceptor {
    async fn accept(&self) -> io::Result<OwnedFd> {
        match self {
            Acceptor::Tcp(l) => l.accept().await.and_then(|(s, _)| s.into_std()).map(OwnedFd::from),
            Acceptor::Unix(l) => l.accept().await.and_then(|(s, _)| s.into_std()).map(OwnedFd::from),
        }
    }
}

async fn accept_loop(listener: Acceptor, rr: Arc<RrDispatch>) {
    loop {
        // Backpressure: past PENDING_CAP, leave connections in the kernel's backlog.
        loop {
            let space = rr.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            if rr.pending_len() < PENDING_CAP {
                break;
            }
            space.await;
        }
        match listener.accept().await {
            Ok(fd) => rr.distribute(fd),
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
            Err(e) => {
                // EMFILE/ENFILE/ENOBUFS…: the connection stays in the backlog; try again soon.
                tracing::warn!("cluster: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_from_env() {
        assert_eq!(SchedPolicy::from_env_value(Some("rr")), SchedPolicy::RoundRobin);
        assert_eq!(SchedPolicy::from_env_value(Some("none")), SchedPolicy::Shared);
        assert_eq!(SchedPolicy::from_env_value(Some("bogus")), SchedPolicy::DEFAULT);
        assert_eq!(SchedPolicy::from_env_value(None), SchedPolicy::DEFAULT);
    }

    #[test]
    fn keys_follow_node() {
        let r = ListenRequest { address: None, port: 8080, address_type: "4".into(), fd: None, ipv6_only: false };
        assert_eq!(r.key(), "null:8080:4:undefined");
        let r = ListenRequest { address: Some("::1".into()), port: 80, address_type: "6".into(), fd: Some(4), ipv6_only: false };
        assert_eq!(r.key(), "::1:80:6:4");
    }

    #[tokio::test]
    async fn shared_socket_is_bound_once_and_non_blocking() {
        let l = Listeners::new(SchedPolicy::Shared);
        let req = ListenRequest { address: Some("127.0.0.1".into()), port: 0, address_type: "4".into(), fd: None, ipv6_only: false };
        let a = l.get_or_bind(&req).expect("bind");
        let b = l.get_or_bind(&req).expect("bind");
        assert!(Arc::ptr_eq(&a, &b));
        let fd = a.fd.as_ref().expect("shared fd");
        let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).expect("fcntl");
        assert!(nix::fcntl::OFlag::from_bits_truncate(flags).contains(nix::fcntl::OFlag::O_NONBLOCK));
        // A second app cannot take the same port: the error is a plain errno.
        let Local::Tcp(addr) = a.local else { panic!("tcp") };
        let port = addr.port();
        let other = Listeners::new(SchedPolicy::Shared);
        let req2 = ListenRequest { port: i64::from(port), ..req };
        let err = other.get_or_bind(&req2).err().expect("in use");
        assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE));
    }

    /// Round-robin: a worker that joins starts level with the least-served one and takes the
    /// next connection (not after a turn of every member level with it), then takes turns.
    #[test]
    fn a_joining_worker_answers_the_next_connection_then_takes_turns() {
        let rr = Arc::new(RrDispatch::default());
        let mut rxs: Vec<mpsc::UnboundedReceiver<RrConn>> = Vec::new();
        let join = |rxs: &mut Vec<_>, n: u64| {
            let (tx, rx) = mpsc::unbounded_channel();
            rxs.push(rx);
            rr.join(&Slot { id: (n, "k".into()), tx });
        };
        // Each member has room for RR_IN_FLIGHT connections: none needs to answer here.
        let send = |rxs: &mut Vec<mpsc::UnboundedReceiver<RrConn>>| {
            rr.distribute(OwnedFd::from(std::os::unix::net::UnixStream::pair().unwrap().0));
            rxs.iter_mut().position(|rx| rx.try_recv().is_ok()).expect("given to a member")
        };
        for n in 0..3 {
            join(&mut rxs, n);
        }
        let mut order: Vec<usize> = (0..3).map(|_| send(&mut rxs)).collect();
        join(&mut rxs, 3);
        order.extend((0..4).map(|_| send(&mut rxs)));
        assert_eq!(order, [0, 1, 2, 3, 0, 1, 2], "the new worker first, then every one in turn");
    }

    #[tokio::test]
    async fn unsupported_requests_are_refused() {
        let l = Listeners::new(SchedPolicy::Shared);
        let udp = ListenRequest { address: None, port: 0, address_type: "udp4".into(), fd: None, ipv6_only: false };
        assert_eq!(l.get_or_bind(&udp).err().and_then(|e| e.raw_os_error()), Some(libc::ENOTSUP));
        let fd = ListenRequest { address: None, port: -1, address_type: "null".into(), fd: Some(4), ipv6_only: false };
        assert_eq!(l.get_or_bind(&fd).err().and_then(|e| e.raw_os_error()), Some(libc::EBADF));
        let bad = ListenRequest { address: Some("not-an-ip".into()), port: 0, address_type: "4".into(), fd: None, ipv6_only: false };
        assert_eq!(l.get_or_bind(&bad).err().and_then(|e| e.raw_os_error()), Some(libc::EINVAL));
    }
}
