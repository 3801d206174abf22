//! The cluster protocol for one worker, served by a task of its own, and the handle the
//! supervisor holds ([`WorkerChannel`]).
//!
//! The task owns the IPC socket. It answers everything the protocol needs without waiting for
//! the supervisor (`queryServer`, handle ACKs, `exitedAfterDisconnect`, round-robin
//! `newconn` replies), so a supervisor busy elsewhere never stalls a worker's `listen()` or a
//! connection hand-off. What the supervisor cares about comes out as [`WorkerEvent`]s.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use serde_json::{Value, json};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

use super::channel::Channel;
use super::listeners::{ListenRequest, Listener, Listeners, Local, RrConn, RrDispatch, Slot, SlotId};

/// What a worker did that the supervisor may care about.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerEvent {
    /// The worker's cluster module started (`act: online`).
    Online,
    /// A server of the worker is listening (`act: listening`): the cluster readiness signal.
    /// `address` is `None` when the app gave no host. Arrives *after* an app's
    /// `process.send('ready')` from its listen callback.
    Listening { address: Option<String>, port: u16 },
    /// A `queryServer` could not be served (bind failed, or an unsupported kind of server);
    /// the worker's server emits an `error` with this errno (positive here).
    ListenFailed { address: Option<String>, port: Option<i64>, errno: i32 },
    /// The app sent the string `"ready"` (`process.send('ready')`).
    Ready,
    /// Any other app message, as the app passed it to `process.send`.
    Message(Value),
    /// A server of the worker closed (`act: close`; also one per server on disconnect).
    /// The port itself stays open in pm-runtime.
    Closed { key: String },
    /// The app itself asked to leave (`cluster.worker.disconnect()` / `.kill()`): the worker
    /// will close its channel and exit; pm-runtime has acknowledged it.
    Disconnecting,
    /// The channel is closed (EOF or reset): the worker exited, crashed, or finished a graceful
    /// disconnect. The last event; `next_event` returns `None` afterwards.
    Disconnected,
}

/// App messages allowed to wait in the event queue; beyond this they are dropped (logged), so
/// a chatty worker cannot grow the runtime's memory when nobody reads its events.
const MAX_QUEUED_MESSAGES: usize = 10_000;

/// Times a handle is resent after a `NODE_HANDLE_NACK` (Node's `MAX_HANDLE_RETRANSMISSIONS`).
const MAX_RETRANSMISSIONS: u32 = 3;

/// Distinguishes dispatcher memberships (worker ids may be reused by a replacement, and a
/// held worker may join, leave and join again).
static NEXT_UID: AtomicU64 = AtomicU64::new(1);

/// The supervisor's side of one worker's IPC channel. Dropping it (and every
/// [`WorkerHandle`]) closes the channel, which makes a Node worker exit at once (code 0), as it
/// does when a Node primary dies: keep it until the worker has exited.
pub struct WorkerChannel {
    worker_id: u32,
    events: mpsc::UnboundedReceiver<WorkerEvent>,
    handle: WorkerHandle,
    queued_messages: Arc<AtomicUsize>,
}

/// Sends to a worker from anywhere (cheap to clone).
#[derive(Clone)]
pub struct WorkerHandle {
    tx: mpsc::UnboundedSender<Command>,
}

enum Command {
    Send(Vec<u8>, oneshot::Sender<io::Result<()>>),
    Disconnect(oneshot::Sender<io::Result<()>>),
    Admit(bool),
    Direct(u16, oneshot::Sender<Direct>),
}

/// What [`WorkerHandle::direct`] got: a connection to this worker alone, or why not.
#[derive(Debug)]
pub enum Direct {
    /// Our end of a loopback TCP connection whose other end was handed to the worker's server
    /// on that port (as a round-robin `newconn`, whatever the policy).
    Conn(std::net::TcpStream),
    /// The port is one of the app's cluster ports but this worker has no server on it (yet).
    NotListening,
    /// Not a port of the app's cluster listeners: connect to it as to anything else.
    NotClustered,
}

fn not_connected() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "worker channel closed")
}

impl WorkerHandle {
    /// Sends an app message (it reaches `process.on('message')`), e.g. `"shutdown"`.
    /// Resolves once written (after any handle ahead of it was acknowledged).
    pub async fn send(&self, msg: &Value) -> io::Result<()> {
        let mut line = serde_json::to_vec(msg).map_err(io::Error::other)?;
        line.push(b'\n');
        let (done, rx) = oneshot::channel();
        self.tx.send(Command::Send(line, done)).map_err(|_| not_connected())?;
        rx.await.map_err(|_| not_connected())?
    }

    /// Graceful retirement (`act: disconnect`): the worker closes its servers at once (the
    /// port stays open here, so no connection is refused), finishes its open connections,
    /// closes the channel and exits 0. In round-robin mode it gets no new connection from the
    /// moment this is called. Idempotent. Resolves once the request is written; watch for
    /// [`WorkerEvent::Disconnected`] and the exit, and always back it with the kill signal and
    /// a timed SIGKILL: a worker with long-lived connections (or a failed listen) never
    /// finishes disconnecting.
    pub async fn disconnect(&self) -> io::Result<()> {
        let (done, rx) = oneshot::channel();
        self.tx.send(Command::Disconnect(done)).map_err(|_| not_connected())?;
        rx.await.map_err(|_| not_connected())?
    }

    /// Round-robin traffic gate of a worker made with [`WorkerChannel::with_gate`]: `true`
    /// makes its servers members of their dispatchers (they get connections), `false` takes
    /// them out again (a readiness probe that stopped passing). No effect on a shared handle:
    /// there the kernel gives connections to whoever listens.
    pub fn admit(&self, yes: bool) {
        let _ = self.tx.send(Command::Admit(yes));
    }

    /// A connection to this worker's server on TCP `port` only, past the dispatcher (a health
    /// probe must reach the process it judges, not whichever worker is next).
    pub async fn direct(&self, port: u16) -> io::Result<Direct> {
        let (done, rx) = oneshot::channel();
        self.tx.send(Command::Direct(port, done)).map_err(|_| not_connected())?;
        rx.await.map_err(|_| not_connected())
    }
}

impl WorkerChannel {
    /// Starts serving the cluster protocol on `stream` (our end of the worker's IPC socket)
    /// for the worker spawned with `NODE_UNIQUE_ID=<worker_id>`. Must be called inside a tokio
    /// runtime. `listeners` is `None` for a fork-mode Node child: it has no cluster primary,
    /// so a `queryServer` from it is refused (EPERM) instead of binding anything for it.
    pub fn new(stream: UnixStream, worker_id: u32, listeners: Option<Listeners>) -> Self {
        Self::with_gate(stream, worker_id, listeners, false)
    }

    /// As [`WorkerChannel::new`]; with `held`, the worker's round-robin servers get no
    /// connection until [`WorkerHandle::admit`] lets them (an app with a readiness probe: a
    /// worker takes traffic once it is ready). Its `listen()` completes as usual.
    pub fn with_gate(stream: UnixStream, worker_id: u32, listeners: Option<Listeners>, held: bool) -> Self {
        let (ev_tx, events) = mpsc::unbounded_channel();
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (rr_tx, rr_rx) = mpsc::unbounded_channel();
        let queued_messages = Arc::new(AtomicUsize::new(0));
        let worker = Worker {
            chan: Channel::new(stream),
            worker_id,
            listeners,
            events: ev_tx,
            queued_messages: queued_messages.clone(),
            dropped_messages: 0,
            seq: 0,
            out: VecDeque::new(),
            in_flight: None,
            rr_tx,
            rr_sent: HashMap::new(),
            servers: HashMap::new(),
            admitted: !held,
            disconnecting: false,
            disconnect_sent: false,
            broken: false,
            refused_query: false,
        };
        tokio::spawn(worker.run(cmd_rx, rr_rx));
        WorkerChannel { worker_id, events, handle: WorkerHandle { tx: cmd_tx }, queued_messages }
    }

    pub fn worker_id(&self) -> u32 {
        self.worker_id
    }

    /// The next event worth reporting; `None` once the channel has closed (after
    /// [`WorkerEvent::Disconnected`]). Cancel-safe.
    pub async fn next_event(&mut self) -> Option<WorkerEvent> {
        let ev = self.events.recv().await?;
        if matches!(ev, WorkerEvent::Message(_)) {
            self.queued_messages.fetch_sub(1, Ordering::Relaxed);
        }
        Some(ev)
    }

    /// See [`WorkerHandle::disconnect`].
    pub async fn disconnect(&self) -> io::Result<()> {
        self.handle.disconnect().await
    }

    /// See [`WorkerHandle::send`].
    pub async fn send(&self, msg: &Value) -> io::Result<()> {
        self.handle.send(msg).await
    }

    /// A handle for sending from other tasks.
    pub fn handle(&self) -> WorkerHandle {
        self.handle.clone()
    }

    /// See [`WorkerHandle::admit`].
    pub fn admit(&self, yes: bool) {
        self.handle.admit(yes);
    }
}

/// What goes with an outgoing line.
enum Attach {
    None,
    /// An fd of ours to send (a dup of a listening socket); closed once acknowledged.
    Fd(OwnedFd),
    /// The connection of `newconn` with this seq (kept in `rr_sent`).
    Conn(u64),
}

struct Outgoing {
    line: Vec<u8>,
    attach: Attach,
    done: Option<oneshot::Sender<io::Result<()>>>,
    retransmissions: u32,
}

impl Outgoing {
    fn new(msg: &Value, attach: Attach) -> Self {
        let mut line = serde_json::to_vec(msg).unwrap_or_default();
        line.push(b'\n');
        Outgoing { line, attach, done: None, retransmissions: 0 }
    }

    fn finish(&mut self, r: io::Result<()>) {
        if let Some(done) = self.done.take() {
            let _ = done.send(r);
        }
    }
}

/// A `newconn` sent (or queued) and not yet answered.
struct SentConn {
    fd: OwnedFd,
    /// The dispatcher and member it came through; `None` for a [`Direct`] connection (a
    /// probe's: it goes to this worker or nowhere).
    via: Option<(Arc<RrDispatch>, SlotId)>,
    /// The worker acknowledged the handle: it may have read from the connection.
    acked: bool,
}

/// A server the worker has (one per reply key).
struct Server {
    listener: Arc<Listener>,
    /// Round-robin membership while it takes connections.
    slot: Option<Slot>,
}

struct Worker {
    chan: Channel,
    worker_id: u32,
    /// `None`: not a cluster worker (fork mode).
    listeners: Option<Listeners>,
    events: mpsc::UnboundedSender<WorkerEvent>,
    queued_messages: Arc<AtomicUsize>,
    dropped_messages: u64,
    /// Our `seq` counter for NODE_CLUSTER messages.
    seq: u64,
    /// Messages waiting behind a handle in flight (Node's one-handle-in-flight rule).
    out: VecDeque<Outgoing>,
    /// The handle message written and not yet acknowledged.
    in_flight: Option<Outgoing>,
    rr_tx: mpsc::UnboundedSender<RrConn>,
    rr_sent: HashMap<u64, SentConn>,
    servers: HashMap<String, Server>,
    /// Its round-robin servers may be members (see [`WorkerChannel::with_gate`]).
    admitted: bool,
    /// The worker is leaving (either side asked): no new servers, no new connections.
    disconnecting: bool,
    disconnect_sent: bool,
    /// A write failed: the peer is gone; keep reading until EOF.
    broken: bool,
    /// A `queryServer` from a non-cluster child was refused (and said so, once).
    refused_query: bool,
}

impl Worker {
    async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<Command>, mut rr_rx: mpsc::UnboundedReceiver<RrConn>) {
        loop {
            self.flush().await;
            tokio::select! {
                line = self.chan.recv() => match line {
                    Ok(Some(line)) => self.on_line(&line).await,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!("cluster: worker {} channel error: {e}", self.worker_id);
                        break;
                    }
                },
                cmd = cmds.recv() => match cmd {
                    Some(c) => self.on_command(c),
                    None => break,
                },
                Some(conn) = rr_rx.recv() => self.on_rr_conn(conn),
            }
        }
        self.cleanup(&mut rr_rx);
        self.emit(WorkerEvent::Disconnected);
    }

    fn next_seq(&mut self) -> u64 {
        let s = self.seq;
        self.seq += 1;
        s
    }

    fn emit(&mut self, ev: WorkerEvent) {
        if matches!(ev, WorkerEvent::Message(_)) {
            if self.queued_messages.load(Ordering::Relaxed) >= MAX_QUEUED_MESSAGES {
                self.dropped_messages += 1;
                if self.dropped_messages.is_power_of_two() {
                    tracing::warn!(
                        "cluster: worker {}: {} app messages dropped (nobody reads them)",
                        self.worker_id,
                        self.dropped_messages
                    );
                }
                return;
            }
            self.queued_messages.fetch_add(1, Ordering::Relaxed);
        }
        let _ = self.events.send(ev);
    }

    // ----- writing

    /// Writes queued messages until a handle is in flight or the queue is empty.
    async fn flush(&mut self) {
        while self.in_flight.is_none() {
            let Some(mut o) = self.out.pop_front() else { return };
            let fd = match &o.attach {
                Attach::None => None,
                Attach::Fd(f) => Some(f.as_fd()),
                Attach::Conn(seq) => match self.rr_sent.get(seq) {
                    Some(s) => Some(s.fd.as_fd()),
                    None => continue, // already given elsewhere
                },
            };
            let r = if self.broken { Err(io::ErrorKind::BrokenPipe.into()) } else { self.chan.send(&o.line, fd).await };
            match r {
                Err(e) => {
                    self.broken = true;
                    o.finish(Err(e));
                    // A connection not delivered stays in `rr_sent` (unacked): re-dispatched at EOF.
                }
                Ok(()) if matches!(o.attach, Attach::None) => o.finish(Ok(())),
                Ok(()) => self.in_flight = Some(o),
            }
        }
    }

    /// Writes a flow-control line at once (ACK/NACK are never queued behind a handle).
    async fn write_now(&mut self, line: &[u8]) {
        if !self.broken && self.chan.send(line, None).await.is_err() {
            self.broken = true;
        }
    }

    fn queue(&mut self, msg: &Value, attach: Attach) {
        self.out.push_back(Outgoing::new(msg, attach));
    }

    fn queue_newconn(&mut self, conn: RrConn) {
        let RrConn { dispatch, slot, fd } = conn;
        let key = slot.1.clone();
        self.queue_conn(&key, fd, Some((dispatch, slot)));
    }

    fn queue_conn(&mut self, key: &str, fd: OwnedFd, via: Option<(Arc<RrDispatch>, SlotId)>) {
        let seq = self.next_seq();
        let msg = json!({"cmd": "NODE_HANDLE", "type": "net.Native",
            "msg": {"cmd": "NODE_CLUSTER", "act": "newconn", "key": key, "seq": seq}});
        self.rr_sent.insert(seq, SentConn { fd, via, acked: false });
        self.queue(&msg, Attach::Conn(seq));
    }

    // ----- reading

    async fn on_line(&mut self, line: &[u8]) {
        let Ok(v) = serde_json::from_slice::<Value>(line) else {
            tracing::debug!("cluster: worker {} sent malformed IPC data ({} bytes)", self.worker_id, line.len());
            return;
        };
        let cmd = v.get("cmd").and_then(Value::as_str).map(str::to_owned);
        match cmd.as_deref() {
            Some("NODE_HANDLE") => self.on_handle(v).await,
            Some("NODE_HANDLE_ACK") => self.on_handle_ack(),
            Some("NODE_HANDLE_NACK") => self.on_handle_nack(),
            Some("NODE_CLUSTER") => self.on_cluster(&v),
            Some(c) if c.len() > "NODE_".len() && c.starts_with("NODE_") => {
                tracing::debug!("cluster: worker {} sent internal message {c}", self.worker_id);
            }
            _ => self.on_app_message(v),
        }
    }

    fn on_app_message(&mut self, v: Value) {
        if v.as_str() == Some("ready") {
            self.emit(WorkerEvent::Ready);
        } else {
            self.emit(WorkerEvent::Message(v));
        }
    }

    /// The app sent a handle with a message (`process.send(msg, socket)`): acknowledge it
    /// (or the worker queues everything after it forever, pitfall 7), close it, and pass the
    /// message on.
    async fn on_handle(&mut self, mut v: Value) {
        let Some(fd) = self.chan.take_fd() else {
            // The fd was lost (MSG_CTRUNC) or never came: ask for it again.
            self.chan.take_lost_fd();
            self.write_now(b"{\"cmd\":\"NODE_HANDLE_NACK\"}\n").await;
            return;
        };
        drop(fd);
        self.write_now(b"{\"cmd\":\"NODE_HANDLE_ACK\"}\n").await;
        let inner = v.get_mut("msg").map(Value::take).unwrap_or(Value::Null);
        let internal = inner.get("cmd").and_then(Value::as_str).is_some_and(|c| c.len() > 5 && c.starts_with("NODE_"));
        if !internal {
            self.on_app_message(inner);
        }
    }

    fn on_handle_ack(&mut self) {
        let Some(mut o) = self.in_flight.take() else { return };
        if let Attach::Conn(seq) = o.attach
            && let Some(s) = self.rr_sent.get_mut(&seq)
        {
            s.acked = true;
        }
        o.finish(Ok(()));
    }

    fn on_handle_nack(&mut self) {
        let Some(mut o) = self.in_flight.take() else { return };
        o.retransmissions += 1;
        if o.retransmissions <= MAX_RETRANSMISSIONS {
            self.out.push_front(o);
            return;
        }
        tracing::warn!("cluster: worker {} refused a handle {} times; giving up", self.worker_id, o.retransmissions);
        if let Attach::Conn(seq) = o.attach
            && let Some(s) = self.rr_sent.remove(&seq)
        {
            self.conn_refused(s);
        }
        o.finish(Err(io::Error::other("handle refused by the worker")));
    }

    fn on_cluster(&mut self, v: &Value) {
        let act = v.get("act").and_then(Value::as_str);
        if act.is_none()
            && let Some(ack) = v.get("ack").and_then(Value::as_u64)
        {
            self.on_reply(ack, v);
            return;
        }
        match act {
            Some("online") => self.emit(WorkerEvent::Online),
            Some("queryServer") => self.on_query_server(v),
            Some("listening") => {
                let address = v.get("address").and_then(Value::as_str).map(str::to_owned);
                let port = v.get("port").and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok()).unwrap_or(0);
                self.emit(WorkerEvent::Listening { address, port });
            }
            Some("close") => {
                let key = js_string(v.get("key"));
                if let Some(s) = self.servers.remove(&key)
                    && let Some(slot) = s.slot
                {
                    leave(&s.listener, &slot.id);
                }
                self.emit(WorkerEvent::Closed { key });
            }
            Some("exitedAfterDisconnect") => {
                self.start_disconnecting();
                let seq = self.next_seq();
                let ack = v.get("seq").cloned().unwrap_or(Value::Null);
                self.queue(&json!({"cmd": "NODE_CLUSTER", "ack": ack, "seq": seq}), Attach::None);
                self.emit(WorkerEvent::Disconnecting);
            }
            other => tracing::debug!("cluster: worker {} sent unknown act {other:?}", self.worker_id),
        }
    }

    fn on_query_server(&mut self, v: &Value) {
        if self.disconnecting {
            return; // as Node's primary: a leaving worker gets no new server
        }
        let ack = v.get("seq").cloned().unwrap_or(Value::Null);
        let address = v.get("address").and_then(Value::as_str).map(str::to_owned);
        let port = v.get("port").and_then(Value::as_i64);
        let fd = v.get("fd").and_then(Value::as_i64);
        let data = v.get("data").cloned().unwrap_or(Value::Null);
        let flags = v.get("flags").and_then(Value::as_u64).unwrap_or(0);
        let key = [v.get("address"), v.get("port"), v.get("addressType"), v.get("fd"), v.get("index")].map(js_string).join(":");
        let req = ListenRequest {
            address: address.clone(),
            port: port.unwrap_or(-1),
            address_type: js_string(v.get("addressType")),
            fd,
            ipv6_only: flags & 1 != 0, // UV_TCP_IPV6ONLY
        };
        let Some(listeners) = &self.listeners else {
            // Only a cluster worker has a primary to ask; a fork-mode app writing this on its
            // IPC channel would otherwise have the runtime bind for it with its privileges.
            if !std::mem::replace(&mut self.refused_query, true) {
                tracing::warn!("a queryServer from a Node app not in cluster mode is refused ({})", clip(&key));
            }
            let seq = self.next_seq();
            self.queue(
                &json!({"cmd": "NODE_CLUSTER", "errno": -libc::EPERM, "key": key, "ack": ack, "data": data, "seq": seq}),
                Attach::None,
            );
            self.emit(WorkerEvent::ListenFailed { address, port, errno: libc::EPERM });
            return;
        };
        let listener = listeners.get_or_bind(&req).and_then(|l| match &l.fd {
            Some(fd) => Ok((l.clone(), Some(fd.try_clone()?))),
            None => Ok((l, None)),
        });
        let (listener, dup) = match listener {
            Ok(x) => x,
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(libc::EINVAL);
                tracing::warn!("cluster: worker {} cannot listen on {}: {e}", self.worker_id, clip(&key));
                let seq = self.next_seq();
                self.queue(
                    &json!({"cmd": "NODE_CLUSTER", "errno": -errno, "key": key, "ack": ack, "data": data, "seq": seq}),
                    Attach::None,
                );
                self.emit(WorkerEvent::ListenFailed { address, port, errno });
                return;
            }
        };
        let data = listener.data(&data);
        let seq = self.next_seq();
        if let Some(dup) = dup {
            // Shared handle: the worker gets (a dup of) the listening socket.
            let reply = json!({"cmd": "NODE_HANDLE", "type": "net.Native",
                "msg": {"cmd": "NODE_CLUSTER", "errno": 0, "key": key, "ack": ack, "data": data, "seq": seq}});
            self.queue(&reply, Attach::Fd(dup));
            self.servers.insert(key, Server { listener, slot: None });
        } else if listener.rr.is_some() {
            // Round-robin: a stand-in handle; `sockname` is what `server.address()` returns and
            // its port must be the port asked for (it is: we bound exactly that). A Unix socket
            // has none (the worker's server reports its path, as with Node's primary).
            let mut reply = json!({"cmd": "NODE_CLUSTER", "errno": null, "key": key, "ack": ack, "data": data, "seq": seq});
            if let Local::Tcp(a) = listener.local {
                let family = if a.is_ipv4() { "IPv4" } else { "IPv6" };
                reply["sockname"] = json!({"address": a.ip().to_string(), "family": family, "port": a.port()});
            }
            self.queue(&reply, Attach::None);
            self.servers.insert(key.clone(), Server { listener, slot: None });
            if self.admitted {
                self.join(&key);
            }
        }
    }

    /// The round-robin server `key` becomes a member of its dispatcher and takes the
    /// connections waiting there.
    fn join(&mut self, key: &str) {
        // A fresh id per membership: answers to connections of an earlier one (before the
        // gate closed) give it no extra room.
        let slot = Slot { id: (NEXT_UID.fetch_add(1, Ordering::Relaxed), key.to_string()), tx: self.rr_tx.clone() };
        let Some(server) = self.servers.get_mut(key).filter(|s| s.slot.is_none()) else { return };
        let Some(rr) = server.listener.rr.clone() else { return };
        server.slot = Some(slot.clone());
        for fd in rr.join(&slot) {
            self.queue_newconn(RrConn { dispatch: rr.clone(), slot: slot.id.clone(), fd });
        }
    }

    /// The readiness gate opens (every round-robin server joins) or closes (they leave).
    fn admit(&mut self, yes: bool) {
        self.admitted = yes;
        if self.disconnecting {
            return;
        }
        let keys: Vec<String> = self.servers.keys().cloned().collect();
        for key in keys {
            if yes {
                self.join(&key);
            } else if let Some(s) = self.servers.get_mut(&key)
                && let Some(slot) = s.slot.take()
            {
                leave(&s.listener, &slot.id);
            }
        }
    }

    /// A loopback connection whose server end goes to this worker's server on `port`.
    fn direct(&mut self, port: u16) -> Direct {
        let on_port = |l: &Listener| matches!(l.local, Local::Tcp(a) if a.port() == port);
        let key = self.servers.iter().find(|(_, s)| on_port(&s.listener)).map(|(k, _)| k.clone());
        let Some(key) = key.filter(|_| !self.disconnecting && !self.broken) else {
            let ours = self.listeners.as_ref().is_some_and(|l| l.bound().iter().any(|a| a.port() == port));
            return if ours { Direct::NotListening } else { Direct::NotClustered };
        };
        match loopback_pair() {
            Ok((ours, theirs)) => {
                self.queue_conn(&key, theirs, None);
                Direct::Conn(ours)
            }
            Err(e) => {
                tracing::debug!("cluster: no loopback connection for worker {}: {e}", self.worker_id);
                Direct::NotClustered
            }
        }
    }

    /// The worker's answer to our `newconn` with seq `ack`.
    fn on_reply(&mut self, ack: u64, v: &Value) {
        let Some(sent) = self.rr_sent.remove(&ack) else { return };
        if v.get("accepted").and_then(Value::as_bool) == Some(true) {
            // The worker has its own copy now.
            if let Some((dispatch, slot)) = sent.via {
                self.next_conn(&dispatch, &slot);
            }
        } else {
            self.conn_refused(sent);
        }
    }

    /// A connection the worker did not take: give it to another worker, then offer this one
    /// the next connection if it is still a member (Node's `RoundRobinHandle`). A direct one
    /// is closed (its prober sees the refusal).
    fn conn_refused(&mut self, sent: SentConn) {
        let Some((dispatch, slot)) = sent.via else { return };
        dispatch.distribute(sent.fd);
        self.next_conn(&dispatch, &slot);
    }

    fn next_conn(&mut self, dispatch: &Arc<super::listeners::RrDispatch>, slot: &SlotId) {
        let Some(s) = self.servers.get(&slot.1).and_then(|s| s.slot.clone()).filter(|s| &s.id == slot) else { return };
        if let Some(fd) = dispatch.handoff(&s) {
            self.queue_newconn(RrConn { dispatch: dispatch.clone(), slot: s.id, fd });
        }
    }

    /// A connection the dispatcher chose this worker for.
    fn on_rr_conn(&mut self, conn: RrConn) {
        let member = !self.disconnecting && self.servers.get(&conn.slot.1).is_some_and(|s| s.slot.is_some());
        if member {
            self.queue_newconn(conn);
        } else {
            conn.dispatch.distribute(conn.fd);
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Send(line, done) => {
                self.out.push_back(Outgoing { line, attach: Attach::None, done: Some(done), retransmissions: 0 });
            }
            Command::Admit(yes) => self.admit(yes),
            Command::Direct(port, done) => {
                let _ = done.send(self.direct(port));
            }
            Command::Disconnect(done) => {
                self.start_disconnecting();
                if self.disconnect_sent {
                    let _ = done.send(Ok(()));
                    return;
                }
                // Sent once only: a second `disconnect` makes a draining Node worker call
                // process.disconnect() twice, which throws ERR_IPC_DISCONNECTED.
                self.disconnect_sent = true;
                let seq = self.next_seq();
                let mut o = Outgoing::new(&json!({"cmd": "NODE_CLUSTER", "act": "disconnect", "seq": seq}), Attach::None);
                o.done = Some(done);
                self.out.push_back(o);
            }
        }
    }

    /// Stop choosing this worker for connections (before telling it to leave).
    fn start_disconnecting(&mut self) {
        self.disconnecting = true;
        for s in self.servers.values_mut() {
            if let Some(slot) = s.slot.take() {
                leave(&s.listener, &slot.id);
            }
        }
    }

    /// The channel is gone: leave every dispatcher, re-dispatch connections the worker never
    /// touched (no ACK), close the ones it may have read from, fail pending sends.
    fn cleanup(&mut self, rr_rx: &mut mpsc::UnboundedReceiver<RrConn>) {
        self.start_disconnecting();
        rr_rx.close();
        while let Ok(conn) = rr_rx.try_recv() {
            conn.dispatch.distribute(conn.fd);
        }
        for (_, sent) in self.rr_sent.drain() {
            if !sent.acked
                && let Some((dispatch, _)) = sent.via
            {
                dispatch.distribute(sent.fd);
            }
        }
        for mut o in self.in_flight.take().into_iter().chain(self.out.drain(..)) {
            o.finish(Err(not_connected()));
        }
    }
}

/// Both ends of a fresh TCP connection on 127.0.0.1, non-blocking (libuv does not set
/// O_NONBLOCK on a handle it receives; tokio needs it on ours).
fn loopback_pair() -> io::Result<(std::net::TcpStream, OwnedFd)> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    let ours = std::net::TcpStream::connect(l.local_addr()?)?;
    let (theirs, _) = l.accept()?;
    ours.set_nonblocking(true)?;
    theirs.set_nonblocking(true)?;
    Ok((ours, OwnedFd::from(theirs)))
}

fn leave(listener: &Listener, id: &SlotId) {
    if let Some(rr) = &listener.rr {
        rr.leave(id);
    }
}

/// JavaScript's `String(v)` for the JSON values a key is built from (`undefined` when absent).
/// What a worker sent, fit for one line of our log: no control characters, at most 200 chars.
fn clip(s: &str) -> String {
    s.chars().take(200).map(|c| if c.is_control() { ' ' } else { c }).collect()
}

fn js_string(v: Option<&Value>) -> String {
    match v {
        None => "undefined".to_string(),
        Some(Value::Null) => "null".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 1e21 => format!("{f:.0}"),
            _ => n.to_string(),
        },
        Some(Value::Array(a)) => {
            a.iter().map(|x| if x.is_null() { String::new() } else { js_string(Some(x)) }).collect::<Vec<_>>().join(",")
        }
        Some(Value::Object(_)) => "[object Object]".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::SchedPolicy;
    use std::time::Duration;

    /// A fake worker: the other end of the channel, speaking raw lines.
    struct Fake {
        ch: Channel,
    }

    impl Fake {
        async fn send(&self, v: &Value) {
            let mut line = serde_json::to_vec(v).expect("json");
            line.push(b'\n');
            self.ch.send(&line, None).await.expect("send");
        }
        async fn raw(&self, bytes: &[u8]) {
            self.ch.send(bytes, None).await.expect("send");
        }
        async fn recv(&mut self) -> Value {
            let line = tokio::time::timeout(Duration::from_secs(5), self.ch.recv()).await.expect("timeout").expect("recv").expect("eof");
            serde_json::from_slice(&line).expect("json from primary")
        }
        async fn nothing_for(&mut self, ms: u64) {
            if let Ok(r) = tokio::time::timeout(Duration::from_millis(ms), self.ch.recv()).await {
                panic!("unexpected {:?}", r.map(|l| l.map(|l| String::from_utf8_lossy(&l).into_owned())));
            }
        }
    }

    fn pair(listeners: &Listeners, id: u32) -> (WorkerChannel, Fake) {
        let (a, b) = UnixStream::pair().expect("pair");
        (WorkerChannel::new(a, id, Some(listeners.clone())), Fake { ch: Channel::new(b) })
    }

    async fn event(w: &mut WorkerChannel) -> WorkerEvent {
        tokio::time::timeout(Duration::from_secs(5), w.next_event()).await.expect("timeout").expect("event")
    }

    fn query(seq: u64, port: u16) -> Value {
        json!({"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,"address":"127.0.0.1","port":port,"addressType":4,"backlog":511,"seq":seq})
    }

    #[test]
    fn js_strings() {
        assert_eq!(js_string(None), "undefined");
        assert_eq!(js_string(Some(&Value::Null)), "null");
        assert_eq!(js_string(Some(&json!(18080))), "18080");
        assert_eq!(js_string(Some(&json!("::1"))), "::1");
        assert_eq!(js_string(Some(&json!(4.0))), "4");
        let v = json!({"address": null, "port": 18080, "addressType": 4, "index": 0});
        let key = [v.get("address"), v.get("port"), v.get("addressType"), v.get("fd"), v.get("index")].map(js_string).join(":");
        assert_eq!(key, "null:18080:4:undefined:0");
    }

    #[tokio::test]
    async fn a_fork_mode_child_gets_no_server() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (a, b) = UnixStream::pair().expect("pair");
        let (mut w, mut f) = (WorkerChannel::new(a, 1, None), Fake { ch: Channel::new(b) });
        f.send(&query(3, port)).await;
        let reply = f.recv().await;
        assert_eq!((reply["ack"].clone(), reply["errno"].clone()), (json!(3), json!(-libc::EPERM)), "{reply}");
        assert!(matches!(event(&mut w).await, WorkerEvent::ListenFailed { errno: libc::EPERM, .. }));
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "nothing listens");
    }

    #[tokio::test]
    async fn malformed_input_never_panics() {
        let l = Listeners::new(SchedPolicy::Shared);
        let (mut w, mut f) = pair(&l, 1);
        f.raw(b"not json\n\n{\"cmd\":\n[1,2\n\xff\xfe\n").await;
        f.send(&json!({"cmd": "NODE_CLUSTER"})).await;
        f.send(&json!({"cmd": "NODE_CLUSTER", "act": 42, "ack": "x"})).await;
        f.send(&json!({"cmd": "NODE_CLUSTER", "ack": 99, "accepted": true})).await; // unknown ack
        f.send(&json!({"cmd": "NODE_HANDLE_ACK"})).await; // nothing in flight
        f.send(&json!({"cmd": "NODE_HANDLE_NACK"})).await;
        f.send(&json!({"cmd": "NODE_SOMETHING"})).await; // internal: swallowed
        f.send(&json!({"cmd": "NODE_CLUSTER", "act": "queryServer", "port": "abc", "address": 5, "addressType": {}, "seq": 7})).await;
        let reply = f.recv().await;
        assert_eq!(reply["ack"], json!(7));
        assert!(reply["errno"].as_i64().is_some_and(|e| e < 0), "{reply}");
        assert!(matches!(event(&mut w).await, WorkerEvent::ListenFailed { .. }));
        // A handle message without a handle is refused (NACK), not trusted.
        f.send(&json!({"cmd": "NODE_HANDLE", "type": "net.Native", "msg": "x"})).await;
        assert_eq!(f.recv().await, json!({"cmd": "NODE_HANDLE_NACK"}));
        f.send(&json!("ready")).await;
        f.send(&json!({"cmd": "NODE_"})).await; // not internal: exactly the prefix
        assert_eq!(event(&mut w).await, WorkerEvent::Ready);
        assert_eq!(event(&mut w).await, WorkerEvent::Message(json!({"cmd": "NODE_"})));
        drop(f);
        assert_eq!(event(&mut w).await, WorkerEvent::Disconnected);
        assert_eq!(w.next_event().await, None);
        assert!(w.send(&json!("late")).await.is_err());
    }

    #[tokio::test]
    async fn shared_handle_reply_and_one_handle_in_flight() {
        let l = Listeners::new(SchedPolicy::Shared);
        let (mut w, mut f) = pair(&l, 1);
        f.send(&json!({"cmd":"NODE_CLUSTER","act":"online","seq":0})).await;
        assert_eq!(event(&mut w).await, WorkerEvent::Online);
        f.send(&query(1, 0)).await;
        let reply = f.recv().await;
        assert_eq!(reply["cmd"], "NODE_HANDLE");
        assert_eq!(reply["type"], "net.Native");
        assert_eq!(reply["msg"], json!({"cmd":"NODE_CLUSTER","errno":0,"key":"127.0.0.1:0:4:undefined:0","ack":1,"data":null,"seq":0}));
        let fd = f.ch.take_fd().expect("listening socket");
        let addr = crate::cluster::sys::local_addr(fd.as_fd()).expect("addr");
        assert!(addr.port() > 0);
        // Messages wait behind the unacknowledged handle...
        let h = w.handle();
        let sent = tokio::spawn(async move { h.send(&json!("shutdown")).await });
        f.nothing_for(100).await;
        // ...and a NACK gets the handle again.
        f.send(&json!({"cmd": "NODE_HANDLE_NACK"})).await;
        assert_eq!(f.recv().await["msg"]["ack"], json!(1));
        assert!(f.ch.take_fd().is_some());
        f.send(&json!({"cmd": "NODE_HANDLE_ACK"})).await;
        assert_eq!(f.recv().await, json!("shutdown"));
        sent.await.expect("join").expect("sent");
        // A second worker asking for the same thing gets the same socket.
        let (_w2, mut f2) = pair(&l, 2);
        f2.send(&query(0, 0)).await;
        assert_eq!(f2.recv().await["msg"]["key"], "127.0.0.1:0:4:undefined:0");
        let fd2 = f2.ch.take_fd().expect("fd");
        assert_eq!(crate::cluster::sys::local_addr(fd2.as_fd()).expect("addr"), addr);
        assert_eq!(l.bound(), vec![addr]);
        f.send(&json!({"cmd":"NODE_CLUSTER","act":"listening","address":"127.0.0.1","port":addr.port(),"seq":2})).await;
        assert_eq!(event(&mut w).await, WorkerEvent::Listening { address: Some("127.0.0.1".into()), port: addr.port() });
    }

    #[tokio::test]
    async fn disconnects() {
        let l = Listeners::new(SchedPolicy::Shared);
        // Worker-initiated: acknowledged, or the worker never leaves.
        let (mut w, mut f) = pair(&l, 1);
        f.send(&json!({"cmd":"NODE_CLUSTER","act":"close","key":"k","seq":3})).await;
        f.send(&json!({"cmd":"NODE_CLUSTER","act":"exitedAfterDisconnect","seq":4})).await;
        assert_eq!(f.recv().await, json!({"cmd":"NODE_CLUSTER","ack":4,"seq":0}));
        assert_eq!(event(&mut w).await, WorkerEvent::Closed { key: "k".into() });
        assert_eq!(event(&mut w).await, WorkerEvent::Disconnecting);
        // Primary-initiated: sent once, however often asked; no new server afterwards.
        let (w2, mut f) = pair(&l, 2);
        w = w2;
        w.disconnect().await.expect("disconnect");
        w.disconnect().await.expect("again");
        assert_eq!(f.recv().await, json!({"cmd":"NODE_CLUSTER","act":"disconnect","seq":0}));
        f.send(&query(1, 0)).await;
        f.nothing_for(100).await;
    }

    #[tokio::test]
    async fn a_held_worker_gets_connections_once_admitted_and_direct_ones_before() {
        let l = Listeners::new(SchedPolicy::RoundRobin);
        let (a, b) = UnixStream::pair().expect("pair");
        let (w, mut f) = (WorkerChannel::with_gate(a, 1, Some(l.clone()), true), Fake { ch: Channel::new(b) });
        f.send(&query(1, 0)).await;
        let reply = f.recv().await;
        let port = reply["sockname"]["port"].as_u64().expect("listen completes while held") as u16;
        // Held: a client's connection waits in the dispatcher...
        let _c = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        f.nothing_for(150).await;
        // ...while a probe's own connection reaches this worker, and no other port does.
        let Direct::Conn(_probe) = w.handle().direct(port).await.expect("direct") else { panic!("no direct connection") };
        let m = f.recv().await;
        assert_eq!(m["msg"]["act"], "newconn");
        assert!(f.ch.take_fd().is_some());
        f.send(&json!({"cmd": "NODE_HANDLE_ACK"})).await;
        f.send(&json!({"cmd":"NODE_CLUSTER","ack":m["msg"]["seq"],"accepted":true,"seq":2})).await;
        assert!(matches!(w.handle().direct(port.wrapping_add(1)).await.expect("direct"), Direct::NotClustered));
        // Admitted: the waiting client connection comes.
        w.admit(true);
        let m = f.recv().await;
        assert_eq!(m["msg"]["act"], "newconn");
        assert!(f.ch.take_fd().is_some());
        // Held again: it leaves the dispatcher.
        f.send(&json!({"cmd": "NODE_HANDLE_ACK"})).await;
        f.send(&json!({"cmd":"NODE_CLUSTER","ack":m["msg"]["seq"],"accepted":true,"seq":3})).await;
        w.admit(false);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _c2 = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        f.nothing_for(150).await;
    }

    #[tokio::test]
    async fn round_robin_hands_off_and_redispatches() {
        let l = Listeners::new(SchedPolicy::RoundRobin);
        let (_w1, mut f1) = pair(&l, 1);
        f1.send(&query(5, 0)).await;
        let reply = f1.recv().await;
        assert_eq!(reply["errno"], Value::Null);
        assert_eq!(reply["ack"], json!(5));
        let port = reply["sockname"]["port"].as_u64().expect("sockname port") as u16;
        assert_eq!(reply["sockname"]["family"], "IPv4");
        assert_eq!(reply["sockname"]["address"], "127.0.0.1");
        assert!(f1.ch.take_fd().is_none());
        // A connection goes to the only worker.
        let _c1 = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        let m = f1.recv().await;
        assert_eq!(m["cmd"], "NODE_HANDLE");
        assert_eq!(m["msg"]["act"], "newconn");
        assert_eq!(m["msg"]["key"], "127.0.0.1:0:4:undefined:0");
        let seq = m["msg"]["seq"].clone();
        assert!(f1.ch.take_fd().is_some());
        // Worker 2 joins; worker 1 refuses the connection: it moves to worker 2.
        let (_w2, mut f2) = pair(&l, 2);
        f2.send(&query(0, 0)).await;
        assert_eq!(f2.recv().await["sockname"]["port"], json!(port));
        f1.send(&json!({"cmd": "NODE_HANDLE_ACK"})).await;
        f1.send(&json!({"cmd":"NODE_CLUSTER","act":"close","key":"127.0.0.1:0:4:undefined:0","seq":1})).await;
        f1.send(&json!({"cmd":"NODE_CLUSTER","ack":seq,"accepted":false,"seq":2})).await;
        let m2 = f2.recv().await;
        assert_eq!(m2["msg"]["act"], "newconn");
        assert!(f2.ch.take_fd().is_some());
        // Worker 2 dies before acknowledging: the connection is not lost, worker 3 gets it.
        let (_w3, mut f3) = pair(&l, 3);
        f3.send(&query(0, 0)).await;
        f3.recv().await;
        drop(f2);
        let m3 = f3.recv().await;
        assert_eq!(m3["msg"]["act"], "newconn");
        assert!(f3.ch.take_fd().is_some());
        f1.nothing_for(100).await;
    }
}
