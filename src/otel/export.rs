//! The exporter's thread: a metrics tick and a log batcher, each with one request in flight at
//! a time, on a small tokio runtime of its own.
//!
//! Nothing here can slow the apps or the supervisor: the status feed is a snapshot, the log
//! follower is a bounded broadcast receiver (falling behind loses the oldest lines, counted),
//! and a batch that cannot be sent is counted and dropped, never kept growing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{broadcast, watch};

use crate::outbound::Client;

use super::model::{self, Host, LogRecord, ResourceLogs, RuntimeCounters};
use super::{Config, Protocol, Target, count_dropped, dropped_log_records, encode, printable};
use crate::logs::hub::LiveLine;
use crate::logs::{LogHub, Stream};
use crate::supervisor::status::StatusFeed;

/// A batch is sent when it holds this many records, or [`BATCH_DELAY`] after its first one.
const MAX_BATCH: usize = 512;
const BATCH_DELAY: Duration = Duration::from_secs(1);
/// Longest wait between attempts while the receiver fails.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// At most this much of one app line goes into a record.
const MAX_BODY: usize = 64 * 1024;
/// How long the runtime's exit waits for the last lines to go out.
const FINAL_FLUSH: Duration = Duration::from_secs(2);

/// What the exporter reads.
pub struct Handles {
    pub feed: StatusFeed,
    pub logs: LogHub,
    pub reaper: crate::process::Reaper,
}

/// The running exporter; [`Exporter::finish`] sends what is left before the runtime exits.
pub struct Exporter {
    stop: watch::Sender<bool>,
    done: std::sync::mpsc::Receiver<()>,
}

impl Exporter {
    /// Asks the exporter to send its last batch and waits for it (bounded).
    pub fn finish(self) {
        let _ = self.stop.send(true);
        let _ = self.done.recv_timeout(FINAL_FLUSH + Duration::from_millis(500));
    }
}

pub fn spawn(cfg: Config, h: Handles) -> std::io::Result<Exporter> {
    let (stop, stop_rx) = watch::channel(false);
    let (done_tx, done) = std::sync::mpsc::channel();
    // Subscribe now, on the caller's thread, so no line written after start is missed.
    let lines = cfg.logs.is_some().then(|| h.logs.subscribe());
    std::thread::Builder::new().name("otlp".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!("OpenTelemetry: cannot start the exporter: {e}");
                return;
            }
        };
        rt.block_on(run(cfg, h, lines, stop_rx));
        let _ = done_tx.send(());
    })?;
    Ok(Exporter { stop, done })
}

fn client(timeout: Duration) -> Result<Client, rustls::Error> {
    let (tls, _) = crate::outbound::tls_config(None)?;
    Ok(Client::new(tls, None, concat!("pm-runtime/", env!("CARGO_PKG_VERSION")), timeout))
}

/// One signal's sender: says once when it starts failing and once when it works again.
struct Sender {
    what: &'static str,
    target: Target,
    failing: bool,
    failures: u32,
}

impl Sender {
    fn new(what: &'static str, target: Target) -> Sender {
        Sender { what, target, failing: false, failures: 0 }
    }

    async fn send(&mut self, client: &Client, body: Vec<u8>) -> bool {
        let mut headers = vec![("Content-Type", self.target.protocol.content_type())];
        headers.extend(self.target.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        // The receiver's answer is not read beyond its status (a few bytes kept to end it).
        let outcome = match client.post(&self.target.url, &headers, body, 4096).await {
            Ok(resp) if (200..300).contains(&resp.status) => Ok(()),
            Ok(resp) => Err(format!("HTTP {}", resp.status)),
            Err(e) => Err(e.brief()),
        };
        match outcome {
            Ok(()) => {
                if self.failing {
                    tracing::info!("OpenTelemetry: {} export to {} works again", self.what, printable(&self.target.url));
                }
                self.failing = false;
                self.failures = 0;
                true
            }
            Err(why) => {
                if !self.failing {
                    tracing::warn!("OpenTelemetry: {} export to {} failed ({why}); retrying", self.what, printable(&self.target.url));
                }
                self.failing = true;
                self.failures = self.failures.saturating_add(1);
                false
            }
        }
    }

    /// How long to wait before the next attempt after failures (none while it works).
    fn backoff(&self) -> Duration {
        if self.failures == 0 { Duration::ZERO } else { (Duration::from_secs(1) * 2u32.saturating_pow(self.failures - 1)).min(MAX_BACKOFF) }
    }
}

async fn run(cfg: Config, h: Handles, lines: Option<broadcast::Receiver<LiveLine>>, stop: watch::Receiver<bool>) {
    let client = match client(cfg.timeout) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("OpenTelemetry: cannot set up TLS ({e}); export is off");
            return;
        }
    };
    let host = Host {
        host_name: crate::plus::hostname(),
        container_id: super::container_id(),
        pod_name: std::env::var("K8S_POD_NAME").or_else(|_| std::env::var("POD_NAME")).ok().filter(|v| !v.is_empty()),
        namespace: std::env::var("K8S_NAMESPACE_NAME").or_else(|_| std::env::var("POD_NAMESPACE")).ok().filter(|v| !v.is_empty()),
        extra: cfg.resource_attributes.iter().map(|(k, v)| (k.clone(), model::Value::Str(v.clone()))).collect(),
        service_name: cfg.service_name.clone(),
    };
    let metrics = cfg.metrics.clone().map(|t| metrics_loop(&client, t, cfg.interval, &h, &host, stop.clone()));
    let logs = cfg.logs.clone().zip(lines).map(|(t, rx)| logs_loop(&client, t, rx, &h.feed, &host, stop.clone()));
    tokio::join!(
        async {
            if let Some(m) = metrics {
                m.await
            }
        },
        async {
            if let Some(l) = logs {
                l.await
            }
        }
    );
}

fn encode_metrics(protocol: Protocol, r: &[model::ResourceMetrics]) -> Vec<u8> {
    match protocol {
        Protocol::Protobuf => encode::metrics_protobuf(r),
        Protocol::Json => encode::metrics_json(r),
    }
}

async fn metrics_loop(client: &Client, target: Target, interval: Duration, h: &Handles, host: &Host, mut stop: watch::Receiver<bool>) {
    let mut sender = Sender::new("metrics", target);
    let started_at = {
        let s = crate::process::own::SelfStats::read();
        (s.start_time_seconds > 0.0).then(|| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(s.start_time_seconds))
    };
    let mut next = tokio::time::Instant::now() + interval;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = stop.changed() => return,
        }
        let table = h.feed.borrow().clone();
        let own = crate::process::own::SelfStats::read();
        let counters = RuntimeCounters {
            log_lines: h.logs.line_counts(),
            reaped_orphans: h.reaper.orphans_reaped(),
            dropped_log_records: dropped_log_records(),
            resident_memory_bytes: own.resident_memory_bytes,
            cpu_seconds: own.cpu_seconds,
            started_at,
        };
        let body = encode_metrics(sender.target.protocol, &model::metrics(&table, host, &counters, SystemTime::now()));
        let ok = sender.send(client, body).await;
        next = tokio::time::Instant::now() + if ok { interval } else { sender.backoff().max(interval.min(MAX_BACKOFF)) };
    }
}

/// Lines waiting to be sent, with when the first came.
#[derive(Default)]
struct Batch {
    lines: Vec<(LiveLine, SystemTime)>,
    since: Option<Instant>,
}

impl Batch {
    fn push(&mut self, line: LiveLine) {
        if self.lines.len() >= MAX_BATCH * 4 {
            // The receiver is failing and the batch is full: the oldest line goes.
            self.lines.remove(0);
            count_dropped(1);
        }
        self.since.get_or_insert_with(Instant::now);
        self.lines.push((line, SystemTime::now()));
    }

    fn due(&self) -> Option<Instant> {
        self.since.map(|t| t + BATCH_DELAY)
    }

    fn take(&mut self) -> Vec<(LiveLine, SystemTime)> {
        self.since = None;
        std::mem::take(&mut self.lines)
    }
}

/// Groups lines by instance under each instance's resource, as the table names it now.
fn records(table: &crate::supervisor::status::StatusTable, host: &Host, lines: Vec<(LiveLine, SystemTime)>) -> Vec<ResourceLogs> {
    let mut by_id: BTreeMap<u32, Vec<LogRecord>> = BTreeMap::new();
    for (l, at) in lines {
        let is_err = matches!(l.stream, Stream::Err);
        let mut text = String::from_utf8_lossy(&l.line[..l.line.len().min(MAX_BODY)]).into_owned();
        if text.ends_with('\n') {
            text.pop();
        }
        let severity = model::severity(&text, is_err);
        by_id.entry(l.pm_id).or_default().push(LogRecord {
            nanos: model::nanos(at),
            severity,
            body: text,
            attributes: model::record_attributes(is_err),
        });
    }
    by_id
        .into_iter()
        .map(|(pm_id, records)| {
            let resource = match table.instance(pm_id) {
                Some(i) => model::instance_resource(host, i),
                None => vec![("service.name".into(), model::Value::Str(format!("pm_id-{pm_id}")))],
            };
            ResourceLogs { resource, records }
        })
        .collect()
}

async fn logs_loop(
    client: &Client,
    target: Target,
    mut rx: broadcast::Receiver<LiveLine>,
    feed: &StatusFeed,
    host: &Host,
    mut stop: watch::Receiver<bool>,
) {
    let mut sender = Sender::new("logs", target);
    let mut batch = Batch::default();
    let mut retry_at: Option<tokio::time::Instant> = None;
    let mut stopping = false;
    loop {
        let due = batch.due().map(tokio::time::Instant::from_std);
        let send_at = match (due, retry_at) {
            (Some(d), Some(r)) => Some(d.max(r)),
            (d, _) => d,
        };
        let full = batch.lines.len() >= MAX_BATCH && retry_at.is_none_or(|r| r <= tokio::time::Instant::now());
        if !full && !stopping {
            tokio::select! {
                got = rx.recv() => match got {
                    Ok(line) => { batch.push(line); continue; }
                    Err(broadcast::error::RecvError::Lagged(n)) => { count_dropped(n); continue; }
                    Err(broadcast::error::RecvError::Closed) => stopping = true,
                },
                _ = async { match send_at { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {}
                _ = stop.changed() => stopping = true,
            }
        }
        if stopping {
            // Whatever has arrived by now goes in the last batch.
            while let Ok(line) = rx.try_recv() {
                batch.push(line);
            }
        }
        if !batch.lines.is_empty() {
            let lines = batch.take();
            let n = lines.len() as u64;
            let table = feed.borrow().clone();
            let resources = records(&table, host, lines);
            let body = match sender.target.protocol {
                Protocol::Protobuf => encode::logs_protobuf(&resources),
                Protocol::Json => encode::logs_json(&resources),
            };
            let sent = if stopping {
                tokio::time::timeout(FINAL_FLUSH, sender.send(client, body)).await.unwrap_or(false)
            } else {
                sender.send(client, body).await
            };
            if sent {
                retry_at = None;
            } else {
                count_dropped(n);
                retry_at = Some(tokio::time::Instant::now() + sender.backoff());
            }
        }
        if stopping {
            return;
        }
    }
}
