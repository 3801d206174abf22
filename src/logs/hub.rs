//! The log hub: pumps that read app pipes, and the one writer thread that owns our stdout/stderr.
//!
//! Data path: an app pipe → its pump task (reads up to 64 KiB, frames whole lines, formats them
//! into one buffer) → a bounded channel → the writer thread → `write(2)` on fd 1 or 2.
//! - Lines are never torn: a buffer only ever holds whole formatted lines, and the writer is the
//!   only writer of our stdout and stderr, so nothing can interleave with a line.
//! - Back-pressure: app output read from the pipes and not yet written, unfinished lines
//!   included, is bounded by [`OUTPUT_BUDGET`] bytes for all apps together (a semaphore counted
//!   in bytes: a pump takes room for a read once its pipe is readable, the bytes carry their
//!   share to the writer, which gives it back once written). When the reader of our stdout
//!   stalls, pumps wait for room, stop reading their pipes, and the apps block on their own
//!   writes, exactly as without a runtime. Memory stays bounded; nothing is dropped. Only if the
//!   whole budget is held by unfinished lines while nothing is being written (which would wait
//!   forever) is a partial line handed out early, as a continued piece.
//!   The writer is a plain thread, so a blocked stdout never blocks the async tasks that reap,
//!   handle signals and restart apps.
//! - Runtime events are never awaited (they are emitted from anywhere, including the tasks that
//!   must not block): when the channel is full they wait in a small overflow queue that the
//!   writer drains after every buffer; beyond [`OVERFLOW_EVENTS`] they are counted, and the count
//!   is printed once output flows again. Only runtime events can be dropped, never app lines.
//! - EPIPE (our stdout closed): the apps keep running; their output to that stream is discarded
//!   from then on and one warning goes to the other stream.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, broadcast, mpsc};

use super::file::{FileLog, is_null};
use super::format::{AppTag, Decoration, Event, Formatter, OutputFormat, Stamp, Stream};
use super::framer::Framer;
use super::recent::Recent;
use crate::config::App;

/// How many formatted buffers may wait for the writer.
pub const CHANNEL_CHUNKS: usize = 64;
/// How many bytes of app output, all apps together, the runtime may hold: read from the pipes
/// and not yet written to our stdout/stderr (unfinished lines included). Counted in bytes, not
/// in buffers: with 4 MiB lines, 64 buffers were 256 MiB.
pub const OUTPUT_BUDGET: usize = 16 * 1024 * 1024;
/// How many runtime events may wait beyond that before they are counted as dropped.
pub const OVERFLOW_EVENTS: usize = 4096;
const READ_SIZE: usize = 64 * 1024;

enum Msg {
    /// A formatted buffer; app output carries its share of [`OUTPUT_BUDGET`], given back once
    /// written.
    Data(Stream, Vec<u8>, Option<OwnedSemaphorePermit>),
    Flush(std::sync::mpsc::Sender<()>),
}

struct Inner {
    tx: mpsc::Sender<Msg>,
    /// Bytes of app output that may still be queued for the writer ([`OUTPUT_BUDGET`]).
    budget: Arc<Semaphore>,
    /// App-output buffers queued for (or being written by) the writer.
    queued: AtomicUsize,
    overflow: Mutex<VecDeque<(Stream, Vec<u8>)>>,
    dropped_events: AtomicU64,
    formatter: Formatter,
    active_pumps: AtomicUsize,
    pumps_done: Notify,
    /// Open log files by path, with the instances writing to each (instances with
    /// `merge_logs` share one). A file is closed when its last instance is forgotten.
    files: Mutex<HashMap<PathBuf, (SharedFile, BTreeSet<u32>)>>,
    /// Recent lines per pm_id.
    recent: Mutex<HashMap<u32, Arc<Mutex<Recent>>>>,
    /// Sequence number of the last line remembered, across every app (for `logs` following).
    seq: AtomicU64,
    /// Live followers of every app line (HTTP log stream, PM2 Plus); lines are copied for them
    /// only while at least one is subscribed. Made by the first follower: its buffer
    /// (LIVE_CAPACITY slots, about 200 KB) is not kept by a runtime that has none.
    live: std::sync::OnceLock<broadcast::Sender<LiveLine>>,
    /// App lines read, by stream (`pm_runtime_log_lines_total{stream}`): out, err.
    lines: [AtomicU64; 2],
    /// Nanoseconds pumps waited for room because our stdout/stderr was slow.
    blocked_ns: AtomicU64,
}

/// One app line as it happens, for live followers: the same `seq` as `logs`/`recent`.
#[derive(Debug, Clone)]
pub struct LiveLine {
    pub seq: u64,
    pub pm_id: u32,
    pub stream: Stream,
    pub line: Arc<[u8]>,
}

/// Lines a live follower may fall behind by before it loses the oldest (it sees `Lagged`).
pub const LIVE_CAPACITY: usize = 4096;

type SharedFile = Arc<Mutex<FileLog>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock means a thread panicked mid-update of a log buffer; the data is still
    // usable for logging, and the runtime must keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where one pump also copies its lines.
struct Sinks {
    files: Vec<SharedFile>,
    recent: Arc<Mutex<Recent>>,
}

/// Handle to the log pipeline. Cheap to clone.
#[derive(Clone)]
pub struct LogHub {
    inner: Arc<Inner>,
}

impl LogHub {
    /// Starts the writer thread. `apps` gives the formatter every name up front, so the
    /// `--formatted` prefix width is stable.
    /// The thread runs for the life of the process; [`LogHub::flush`] is how to wait until
    /// everything sent so far has been written.
    pub fn start(format: OutputFormat, apps: &[AppTag]) -> io::Result<LogHub> {
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        let inner = Arc::new(Inner {
            tx,
            budget: Arc::new(Semaphore::new(OUTPUT_BUDGET)),
            queued: AtomicUsize::new(0),
            overflow: Mutex::new(VecDeque::new()),
            dropped_events: AtomicU64::new(0),
            formatter: Formatter::new(format, apps),
            active_pumps: AtomicUsize::new(0),
            pumps_done: Notify::new(),
            files: Mutex::new(HashMap::new()),
            recent: Mutex::new(HashMap::new()),
            seq: AtomicU64::new(0),
            live: std::sync::OnceLock::new(),
            lines: [AtomicU64::new(0), AtomicU64::new(0)],
            blocked_ns: AtomicU64::new(0),
        });
        let out = File::from(io::stdout().as_fd().try_clone_to_owned()?);
        let err = File::from(io::stderr().as_fd().try_clone_to_owned()?);
        let hub = LogHub { inner: inner.clone() };
        std::thread::Builder::new().name("log-writer".into()).spawn(move || writer_loop(rx, &inner, out, err))?;
        Ok(hub)
    }

    /// Emits one runtime event without ever waiting.
    pub fn event(&self, ev: &Event) {
        let mut buf = Vec::with_capacity(128);
        let stream = self.inner.formatter.event(&mut buf, ev, &Stamp::new(SystemTime::now()));
        match self.inner.tx.try_send(Msg::Data(stream, buf, None)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(Msg::Data(s, b, _))) => {
                let mut q = self.inner.overflow.lock().unwrap_or_else(|e| e.into_inner());
                if q.len() < OVERFLOW_EVENTS {
                    q.push_back((s, b));
                } else {
                    self.inner.dropped_events.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(_) => {}
        }
    }

    /// Starts a task that reads one app pipe until EOF and sends its lines to the writer.
    ///
    /// The receiver resolves (with an error) once the pump has read the pipe to its end and
    /// handed every line on: the last lines of a process that died are then in [`Self::recent`].
    pub fn pump(&self, pipe: pipe::Receiver, app: &App, pm_id: u32, stream: Stream) -> tokio::sync::oneshot::Receiver<()> {
        let (done, finished) = tokio::sync::oneshot::channel::<()>();
        if app.disable_logs {
            // Still drain the pipe, or the app would block on a full pipe.
            tokio::spawn(async move {
                drain(pipe).await;
                drop(done);
            });
            return finished;
        }
        let mut deco = Decoration::new(app.log_date_format.as_deref(), app.time, app.log_type.as_deref() == Some("json"));
        if app.mask_secrets {
            deco.secrets = crate::redact::secret_values(app);
        }
        let sinks = self.sinks(app, pm_id, stream);
        let hub = self.clone();
        let name = app.name.clone();
        hub.inner.active_pumps.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            hub.pump_loop(pipe, &name, pm_id, stream, &deco, &sinks).await;
            drop(done);
            if hub.inner.active_pumps.fetch_sub(1, Ordering::SeqCst) == 1 {
                hub.inner.pumps_done.notify_waiters();
            }
        });
        finished
    }

    /// The files (opened once, shared by path) and the recent-lines buffer of one stream.
    fn sinks(&self, app: &App, pm_id: u32, stream: Stream) -> Sinks {
        let recent = lock(&self.inner.recent).entry(pm_id).or_default().clone();
        let own = if stream == Stream::Out { &app.out_file } else { &app.error_file };
        let mut files = Vec::new();
        for path in [own, &app.log_file].into_iter().flatten() {
            let path = app.instance_path(path, pm_id);
            if is_null(&path) {
                continue;
            }
            let mut open = lock(&self.inner.files);
            if let Some((f, users)) = open.get_mut(&path) {
                users.insert(pm_id);
                // A start after a stop: the file may have been deleted or rotated meanwhile.
                if let Err(e) = lock(f).reopen_if_replaced() {
                    tracing::error!(app = %app.name, id = pm_id, "cannot reopen log file {}: {e}", path.display());
                }
                files.push(f.clone());
                continue;
            }
            match FileLog::open(&path, app.log_max_size, app.log_retain.unwrap_or(5)) {
                Ok(f) => {
                    let f = Arc::new(Mutex::new(f));
                    open.insert(path, (f.clone(), BTreeSet::from([pm_id])));
                    files.push(f);
                }
                Err(e) => tracing::error!(app = %app.name, id = pm_id, "cannot open log file {}: {e}", path.display()),
            }
        }
        Sinks { files, recent }
    }

    #[allow(clippy::too_many_arguments)]
    async fn pump_loop(&self, pipe: pipe::Receiver, name: &str, pm_id: u32, stream: Stream, deco: &Decoration, sinks: &Sinks) {
        let tag = AppTag { name, pm_id };
        let mut framer = Framer::new();
        let mut read_buf = vec![0u8; READ_SIZE];
        let mut out = Vec::with_capacity(READ_SIZE + 1024);
        let mut file_buf = Vec::new();
        let mut target = stream;
        // Budget held for the bytes of this stream's unfinished line (== framer.pending_len()).
        let mut held = self.inner.budget.clone().try_acquire_many_owned(0).ok();
        loop {
            // Wait for data without holding any budget (an idle app holds none), then for room
            // for one read: with a stalled stdout the pipe is left alone and the app blocks on
            // its own writes.
            // A partial line that waits longer than IDLE_FLUSH is shown as a line of its own.
            let ready = if framer.pending_len() == 0 {
                pipe.readable().await
            } else {
                match tokio::time::timeout(super::framer::IDLE_FLUSH, pipe.readable()).await {
                    Ok(r) => r,
                    Err(_) => {
                        let now = Stamp::new(SystemTime::now());
                        framer.flush_idle(&mut self.emitter(&tag, stream, deco, sinks, &now, &mut out, &mut file_buf, &mut target));
                        let left = held.as_ref().map_or(0, |h| h.num_permits()).saturating_sub(framer.pending_len());
                        let permit = held.as_mut().and_then(|h| h.split(left));
                        if !self.send(name, pm_id, sinks, &mut file_buf, &mut out, target, permit).await {
                            return;
                        }
                        continue;
                    }
                }
            };
            let Some(mut room) = self.room_for_read(&mut framer, &tag, stream, deco, sinks, &mut held).await else { return };
            let n = match ready.and_then(|()| pipe.try_read(&mut read_buf)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Ok(0) | Err(_) => 0,
                Ok(n) => n,
            };
            if let Some(unused) = room.split(READ_SIZE - n) {
                drop(unused);
            }
            match &mut held {
                Some(h) => h.merge(room),
                None => held = Some(room),
            }
            {
                // The stamp is per read and must not live across the await below.
                let now = Stamp::new(SystemTime::now());
                let mut emit = self.emitter(&tag, stream, deco, sinks, &now, &mut out, &mut file_buf, &mut target);
                if n == 0 {
                    framer.finish(&mut emit);
                } else {
                    framer.push(&read_buf[..n], &mut emit);
                }
            }
            // What left the framer takes its share of the budget along to the writer.
            let left = held.as_ref().map_or(0, |h| h.num_permits()).saturating_sub(framer.pending_len());
            let permit = held.as_mut().and_then(|h| h.split(left));
            if !self.send(name, pm_id, sinks, &mut file_buf, &mut out, target, permit).await || n == 0 {
                return;
            }
        }
    }

    /// Waits for [`READ_SIZE`] bytes of budget. If every byte of the budget is held by
    /// unfinished lines and nothing is queued for the writer, nobody could ever give any back:
    /// this stream's partial line is then handed out as a continued piece.
    async fn room_for_read(
        &self,
        framer: &mut Framer,
        tag: &AppTag<'_>,
        stream: Stream,
        deco: &Decoration,
        sinks: &Sinks,
        held: &mut Option<OwnedSemaphorePermit>,
    ) -> Option<OwnedSemaphorePermit> {
        if let Ok(p) = self.inner.budget.clone().try_acquire_many_owned(READ_SIZE as u32) {
            return Some(p);
        }
        // No room: the writer is behind (our stdout is slow). Count the wait.
        let since = std::time::Instant::now();
        let blocked = scopeguard(|| {
            self.inner.blocked_ns.fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
        });
        let _blocked = blocked;
        loop {
            tokio::select! {
                p = self.inner.budget.clone().acquire_many_owned(READ_SIZE as u32) => return p.ok(),
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            if self.inner.queued.load(Ordering::SeqCst) == 0 && framer.pending_len() > 0 {
                let mut out = Vec::new();
                let mut file_buf = Vec::new();
                let mut target = stream;
                let now = Stamp::new(SystemTime::now());
                framer.flush_partial(&mut self.emitter(tag, stream, deco, sinks, &now, &mut out, &mut file_buf, &mut target));
                let left = held.as_ref().map_or(0, |h| h.num_permits()).saturating_sub(framer.pending_len());
                let permit = held.as_mut().and_then(|h| h.split(left));
                if !self.send(tag.name, tag.pm_id, sinks, &mut file_buf, &mut out, target, permit).await {
                    return None;
                }
            }
        }
    }

    /// The per-line callback of the framer: format for our output, remember, copy for files.
    #[allow(clippy::too_many_arguments)]
    fn emitter<'a>(
        &'a self,
        tag: &'a AppTag<'a>,
        stream: Stream,
        deco: &'a Decoration,
        sinks: &'a Sinks,
        now: &'a Stamp,
        out: &'a mut Vec<u8>,
        file_buf: &'a mut Vec<u8>,
        target: &'a mut Stream,
    ) -> impl FnMut(&[u8], bool) + 'a {
        let fmt = &self.inner.formatter;
        let to_files = !sinks.files.is_empty();
        // Checked once per read, not per line: followers come and go rarely.
        let live = self.inner.live.get().filter(|l| l.receiver_count() > 0);
        let counter = &self.inner.lines[usize::from(stream == Stream::Err)];
        move |line: &[u8], continued: bool| {
            counter.fetch_add(1, Ordering::Relaxed);
            let masked = if deco.secrets.is_empty() { None } else { crate::redact::mask(line, &deco.secrets) };
            let line = masked.as_deref().unwrap_or(line);
            *target = fmt.app_line(out, tag, stream, deco, line, continued, now);
            let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed) + 1;
            lock(&sinks.recent).push(seq, stream, line);
            if let Some(live) = live {
                let _ = live.send(LiveLine { seq, pm_id: tag.pm_id, stream, line: line.into() });
            }
            if to_files {
                // Files get the line as PM2 writes them: with the app's decoration
                // (log_date_format, log_type: json), whatever the stdout format.
                deco.file_line(file_buf, tag, stream, line, continued, now);
            }
        }
    }

    /// Writes `file_buf` to the files and queues `out` (with its budget) for the writer.
    /// False when the writer is gone.
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        name: &str,
        pm_id: u32,
        sinks: &Sinks,
        file_buf: &mut Vec<u8>,
        out: &mut Vec<u8>,
        target: Stream,
        permit: Option<OwnedSemaphorePermit>,
    ) -> bool {
        if !file_buf.is_empty() {
            for f in &sinks.files {
                let mut f = lock(f);
                if let Err(e) = f.write_lines(file_buf) {
                    tracing::error!(app = %name, id = pm_id, "cannot write log file {}: {e}", f.path().display());
                }
            }
            file_buf.clear();
        }
        if out.is_empty() {
            return true;
        }
        let buf = std::mem::replace(out, Vec::with_capacity(READ_SIZE + 1024));
        self.inner.queued.fetch_add(1, Ordering::SeqCst);
        if self.inner.tx.send(Msg::Data(target, buf, permit)).await.is_err() {
            return false;
        }
        true
    }

    /// Waits until every pump has reached EOF, at most `timeout` (a daemonised grandchild can
    /// hold a pipe open forever).
    pub async fn drain_pumps(&self, timeout: Duration) {
        let wait = async {
            loop {
                let notified = self.inner.pumps_done.notified();
                if self.inner.active_pumps.load(Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(timeout, wait).await;
    }

    /// Waits until everything sent so far has been written.
    pub async fn flush(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.inner.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(5))).await;
        }
    }

    /// SIGUSR2 / `reloadLogs`: reopen every log file (after an external rotation).
    pub fn reopen_files(&self) {
        for (path, (f, _)) in lock(&self.inner.files).iter() {
            if let Err(e) = lock(f).reopen() {
                tracing::error!("cannot reopen log file {}: {e}", path.display());
            }
        }
    }

    /// `flush`: truncate the log files whose path is in `paths` (all when `None`).
    pub fn truncate_files(&self, paths: Option<&[PathBuf]>) {
        for (path, (f, _)) in lock(&self.inner.files).iter() {
            if paths.is_none_or(|p| p.contains(path))
                && let Err(e) = lock(f).truncate()
            {
                tracing::error!("cannot truncate log file {}: {e}", path.display());
            }
        }
    }

    /// Instance `pm_id` is gone (deleted, scaled down): its recent lines are dropped and the log
    /// files only it wrote are closed (a pump still draining its last output keeps its own
    /// handles until it ends). Without this, scaling up and down leaks memory and descriptors.
    pub fn forget(&self, pm_id: u32) {
        lock(&self.inner.recent).remove(&pm_id);
        lock(&self.inner.files).retain(|_, (_, users)| {
            users.remove(&pm_id);
            !users.is_empty()
        });
    }

    /// Follows every app line from now on (a slow follower loses the oldest, never blocks apps).
    pub fn subscribe(&self) -> broadcast::Receiver<LiveLine> {
        self.inner.live.get_or_init(|| broadcast::channel(LIVE_CAPACITY).0).subscribe()
    }

    /// App lines read so far: (stdout, stderr).
    pub fn line_counts(&self) -> (u64, u64) {
        (self.inner.lines[0].load(Ordering::Relaxed), self.inner.lines[1].load(Ordering::Relaxed))
    }

    /// Total time pumps waited for room because our stdout/stderr was slow (the apps were
    /// blocked on their writes meanwhile).
    pub fn blocked(&self) -> Duration {
        Duration::from_nanos(self.inner.blocked_ns.load(Ordering::Relaxed))
    }

    /// The sequence number of the last line remembered for an instance (0: none yet).
    pub fn last_seq(&self, pm_id: u32) -> u64 {
        let map = lock(&self.inner.recent);
        map.get(&pm_id).and_then(|r| lock(r).last(1).pop()).map_or(0, |l| l.0)
    }

    /// The last `n` stderr lines of an instance written after line `after` (a death
    /// certificate's lines: only the dead process's own), oldest first.
    pub fn last_err(&self, pm_id: u32, n: usize, after: u64) -> Vec<String> {
        let map = lock(&self.inner.recent);
        let Some(r) = map.get(&pm_id) else { return Vec::new() };
        let lines = lock(r).after(after);
        let mut err: Vec<String> =
            lines.into_iter().rev().filter(|l| l.1 == Stream::Err).take(n).map(|l| String::from_utf8_lossy(&l.2).into_owned()).collect();
        err.reverse();
        err
    }

    /// The last `n` lines of an instance (for `logs --lines N`), or those after `after`.
    pub fn recent(&self, pm_id: u32, n: usize, after: Option<u64>) -> Vec<super::recent::Line> {
        let map = lock(&self.inner.recent);
        let Some(r) = map.get(&pm_id) else { return Vec::new() };
        let r = lock(r);
        match after {
            Some(seq) => r.after(seq),
            None => r.last(n),
        }
    }
}

async fn drain(mut pipe: pipe::Receiver) {
    let mut buf = vec![0u8; READ_SIZE];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// One of our two output streams, with its EPIPE state.
struct Sink {
    file: File,
    closed: bool,
}

impl Sink {
    fn write(&mut self, buf: &[u8]) -> Option<io::Error> {
        if self.closed {
            return None;
        }
        match write_all_blocking(&mut self.file, buf) {
            Ok(()) => None,
            Err(e) => {
                self.closed = true;
                Some(e)
            }
        }
    }
}

/// `write_all` that also copes with an inherited non-blocking stdout (EAGAIN → wait until writable).
fn write_all_blocking(file: &mut File, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match file.write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let mut fds = [nix::poll::PollFd::new(file.as_fd(), nix::poll::PollFlags::POLLOUT)];
                let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn writer_loop(mut rx: mpsc::Receiver<Msg>, inner: &Inner, out: File, err: File) {
    let mut sinks = [Sink { file: out, closed: false }, Sink { file: err, closed: false }];
    let idx = |s: Stream| if s == Stream::Out { 0 } else { 1 };
    let write = |sinks: &mut [Sink; 2], s: Stream, buf: &[u8]| {
        let i = idx(s);
        if let Some(e) = sinks[i].write(buf) {
            let name = if i == 0 { "stdout" } else { "stderr" };
            let msg = format!(
                "pm-runtime: cannot write to {name} ({e}); the apps keep running, their output to {name} is discarded from now on\n"
            );
            let _ = sinks[1 - i].write(msg.as_bytes());
        }
    };
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            // The permit (if any) is dropped with the message, once written.
            Msg::Data(s, buf, permit) => {
                write(&mut sinks, s, &buf);
                if permit.is_some() {
                    inner.queued.fetch_sub(1, Ordering::SeqCst);
                }
            }
            Msg::Flush(ack) => {
                let _ = ack.send(());
            }
        }
        let pending: Vec<(Stream, Vec<u8>)> = inner.overflow.lock().unwrap_or_else(|e| e.into_inner()).drain(..).collect();
        for (s, buf) in pending {
            write(&mut sinks, s, &buf);
        }
        let dropped = inner.dropped_events.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let msg = format!("pm-runtime: {dropped} runtime event line(s) were dropped while output was blocked\n");
            write(&mut sinks, Stream::Err, msg.as_bytes());
        }
    }
}

/// Runs `f` when dropped (however the enclosing future ends, cancellation included).
fn scopeguard<F: FnMut()>(f: F) -> impl Drop {
    struct Guard<F: FnMut()>(F);
    impl<F: FnMut()> Drop for Guard<F> {
        fn drop(&mut self) {
            (self.0)()
        }
    }
    Guard(f)
}
