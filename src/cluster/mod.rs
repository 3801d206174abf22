//! Cluster mode without a Node master: pm-runtime is the Node.js cluster *primary* for
//! unmodified Node apps. Every worker is a direct child of pm-runtime; pm-runtime answers the
//! worker's cluster messages on its IPC channel, so `http.createServer().listen(PORT)` in every
//! worker shares one port (research/node-cluster-protocol.md has the wire format).
//!
//! - [`Listeners`]: one per app. The listening sockets, bound once per
//!   `(address, port, addressType)` and kept open as long as the app exists, so the port never
//!   closes while workers are replaced.
//! - [`notify`]: sd_notify's `READY=1` for apps in any language (`wait_ready`): with the
//!   channel's `ready` and `listening`, every readiness signal comes from this module.
//! - [`WorkerChannel`]: one per Node child (fork-mode children too: it is the one Node IPC
//!   channel type, and readiness — `ready`, `listening` — comes out of it), over our end of
//!   its IPC socket. A task of its own serves
//!   the protocol (`online`, `queryServer`, `listening`, `close`, `exitedAfterDisconnect`,
//!   handle ACK/NACK, round-robin `newconn`) and reports [`WorkerEvent`]s; the supervisor sends
//!   app messages and the graceful `disconnect` through it.
//!
//! # Spawning a worker
//!
//! A worker gets `NODE_CHANNEL_FD=3` and `NODE_CHANNEL_SERIALIZATION_MODE=json` (set by
//! `process::spawn` for every Node child, fd [`crate::process::unix::IPC_FD`]) and
//! `NODE_UNIQUE_ID=<id>` ([`worker_id`], set by `supervisor/env.rs`). fd 3 is the child's
//! end of a close-on-exec `socketpair(AF_UNIX, SOCK_STREAM)`, dup2'ed into place between fork
//! and exec only in that child. `NODE_UNIQUE_ID` must never reach a process without the
//! channel (its `listen()` would never complete). The script must be a file (`node -e` gets
//! `cluster.worker === null`).
//!
//! # Scheduling
//!
//! Both Node policies are implemented; `NODE_CLUSTER_SCHED_POLICY` (`rr` / `none`) chooses, per
//! app, as in Node ([`SchedPolicy::from_env_value`]; read it from the app's env). The default
//! is **round-robin**, Node's own default on Linux (what PM2 users have today).
//!
//! Round-robin here: pm-runtime accepts each connection and gives it to the member server that
//! was given the fewest connections so far among those with room; a worker has room for 4
//! unanswered `newconn`s (Node's primary uses 1 and picks whoever answered first, which under
//! CPU contention gave 1.7–2.8× skews in our runs). A joining worker starts level with the
//! least-served one, so a replacement is not flooded. When nobody has room, connections wait
//! (up to 128, then in the kernel backlog) and go to whichever worker frees room first.
//! A worker of an app with a readiness probe is held ([`WorkerChannel::with_gate`]): its
//! `listen()` completes, but it joins the dispatcher only once ready, and leaves while not;
//! its probes reach it alone through [`WorkerHandle::direct`].
//!
//! Measured (4 workers, node 20.20.2, release build, a 2-core box with load average 4–6 from
//! other builds; requests per worker, client in-process; `tests/cluster.rs`):
//!
//! | load | round-robin | shared handle |
//! |---|---|---|
//! | 2000 req, conc 1, new conn each | 500/500/500/500 (1.00×), 1.0–1.4 s | 644/641/438/277 (2.3×), 0.8 s |
//! | 4000 req, conc 8, new conn each | 990/1003/1004/1003 (1.01–1.04×) | 1214/1068/999/719 (1.26–1.69×) |
//! | 32 keep-alive conns, 20000 req | connections 7/8/9/8 | connections 0/3/29/0 |
//! | rolling reload of 4 under load¹ | 0 failed | 0 failed |
//!
//! ¹ 32 keep-alive connections + 1 new-connection client + 4 clients of a 300 ms endpoint;
//! each old worker gets `disconnect` once its replacement listens, exits 0 in 17–280 ms.
//! Without the preload's drain (`crate::preload`), ~45 keep-alive requests per run met a
//! connection the retiring worker closed while idle (Node ≥ 19 closes idle keep-alive sockets
//! on `server.close()`, Node 26 also connections whose request is not read yet); with it, none.
//!
//! Shared mode fails the fairness target (busiest ≤ 1.5× idlest) and piles keep-alive
//! connections on one or two workers; round-robin meets it. The cost of round-robin is one
//! hop through pm-runtime per new connection: ~0.2 ms more per sequential connection here, and
//! when workers are saturated a new connection waits for a worker's event loop to take it.
//! Keep-alive traffic is not affected after the connection is set up.

//! # Bind policy
//!
//! What Node's primary binds: no host → `::` dual-stack, falling back to `0.0.0.0`; a host → that
//! IP. SO_REUSEADDR, backlog 511, close-on-exec, and O_NONBLOCK (shared mode hands the same
//! open file description to every worker, and libuv does not set it on a received handle).
//! Unix socket paths (`listen(path)`: Node sends the path as `address`, port and addressType
//! -1) are bound once per path like ports, in both policies: a relative path is taken from the
//! app's cwd (Node's primary would use its own), a stale socket file nobody listens on is
//! replaced (only one of the app's user), an abstract name (`\0…`) is supported, and the file
//! is removed when the app goes (libuv removes it when a pipe server closes); all through a
//! descriptor of the socket's directory, so no symlink swapped in meanwhile is followed.
//!
//! # Who may ask
//!
//! Only cluster workers: a fork-mode Node child writing `queryServer` on its IPC channel gets
//! EPERM. A worker that runs as another user (`uid`) gets only what that user could bind
//! itself: EACCES for a port below `net.ipv4.ip_unprivileged_port_start` or a Unix socket in a
//! directory it cannot write; the socket files made for it belong to it.
//! Not supported (the worker's server gets an `error`): UDP (`dgram` in a worker, ENOTSUP),
//! `listen({fd})` (EBADF: the fd is in the worker's table).

mod channel;
mod listeners;
pub mod notify;
mod sys;
mod worker;

pub use listeners::{Listeners, SchedPolicy};
pub use worker::{Direct, WorkerChannel, WorkerEvent, WorkerHandle};

/// The cluster worker id of instance `pm_id` (`NODE_UNIQUE_ID`, which becomes
/// `cluster.worker.id`): ids start at 1, and a replacement keeps its instance's id.
pub fn worker_id(pm_id: u32) -> u32 {
    pm_id + 1
}
