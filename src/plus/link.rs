//! The link's loop, on its own thread: verify, connect, stream `status` and events, obey the
//! dashboard, and when anything fails wait (capped backoff) and start over. Never gives up.
//!
//! Owns: the websocket, the queue of packets kept while disconnected, log streaming's
//! deadline, and what has been reported to the user (each problem once, until it changes or the
//! link recovers).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::Message;

use super::Config;
use super::actions::{self, Order, Pm2Plan};
use super::packets::{self, HostFacts, Lifecycle};
use super::transport::{self, Backoff, Outbox, Socket};
use super::verify::{self, Meta, Refusal, Verdict};
use crate::control::protocol::Request;
use crate::control::server::ControlRequest;
use crate::logs::hub::LiveLine;
use crate::logs::{LogHub, Stream};
use crate::supervisor::status::{Bus, BusEvent, StatusFeed};

/// WS ping period (as the official agent).
const PING_EVERY: Duration = Duration::from_secs(5);
/// No frame at all (pongs included) for this long: the connection is dead.
const SILENCE_LIMIT: Duration = Duration::from_secs(20);
/// One frame write.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that lasted this long resets the backoff.
const STABLE: Duration = Duration::from_secs(30);
/// Log streaming after `startLogging`.
const LOGGING_FOR: Duration = Duration::from_secs(120);
/// Waiting for the coordinator's answer to a remote action.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often (in status ticks) the internal IP is looked up again.
const IP_EVERY: u32 = 60;
/// Remote actions that wait for the coordinator at once; beyond, an order is answered "busy"
/// (a hostile or broken backend must not queue a restart storm, nor crowd out local verbs).
const MAX_REMOTE_ACTIONS: usize = 8;

/// What the link reads and whom it asks.
pub struct Handles {
    pub feed: StatusFeed,
    pub bus: Bus,
    pub control: mpsc::Sender<ControlRequest>,
    pub logs: LogHub,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error(transparent)]
    Setup(#[from] transport::SetupError),
    #[error("cannot start its thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// Starts the link on its own thread. The bus is subscribed before this returns, so events of
/// the apps' first start are not missed.
pub fn spawn(cfg: Config, h: Handles) -> Result<(), SpawnError> {
    let (tls, warning) = transport::tls_config(cfg.extra_ca.as_deref())?;
    if let Some(w) = warning {
        tracing::warn!("{w}");
    }
    let client = Arc::new(transport::http_client(&cfg, &tls)?);
    let bus = h.bus.subscribe();
    if cfg.root.starts_with("http://") && !is_loopback_url(&cfg.root) {
        tracing::warn!("PM2 Plus: KEYMETRICS_NODE is plain http://: the keys travel unencrypted");
    }
    let link = Link {
        host: HostFacts::here(&cfg.pm2_version),
        meta: Meta::here(),
        runtime_node_env: std::env::var("NODE_ENV").ok(),
        cfg: Arc::new(cfg),
        client,
        feed: h.feed,
        bus: Some(bus),
        control: h.control,
        logs: h.logs,
        outbox: Outbox::default(),
        live: None,
        lifecycle: Lifecycle::default(),
        reported: None,
        announced: false,
        flapping: false,
        results: mpsc::unbounded_channel(),
        in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_REMOTE_ACTIONS)),
    };
    std::thread::Builder::new()
        .name("pm2-plus".into())
        .spawn(move || match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt.block_on(link.run()),
            Err(e) => tracing::error!("PM2 Plus: cannot start its runtime: {e}"),
        })
        .map_err(SpawnError::Thread)?;
    Ok(())
}

fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = match rest.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => rest.split(['/', ':']).next().unwrap_or(""),
    };
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Something to send or do, from the runtime's side.
enum Input {
    Packet(String),
    Nothing,
}

/// Why a session ended.
enum End {
    /// Reconnect at once to this endpoint (re-verify gave a new one).
    Moved(String),
    /// Wait, then verify again.
    Retry,
    /// The connection failed (said why): wait, then verify again.
    Lost(String),
}

struct Link {
    cfg: Arc<Config>,
    /// The verify call's HTTP and the websocket's stream.
    client: Arc<crate::outbound::Client>,
    host: HostFacts,
    meta: Meta,
    runtime_node_env: Option<String>,
    feed: StatusFeed,
    /// `None` once the runtime has closed the bus (it is shutting down).
    bus: Option<broadcast::Receiver<BusEvent>>,
    control: mpsc::Sender<ControlRequest>,
    logs: LogHub,
    outbox: Outbox,
    /// Log streaming: the subscription and until when.
    live: Option<(broadcast::Receiver<LiveLine>, Instant)>,
    lifecycle: Lifecycle,
    /// The problem last reported (its kind), so each is reported once.
    reported: Option<String>,
    /// The first connection was announced.
    announced: bool,
    /// The last session ended before it was [`STABLE`].
    flapping: bool,
    /// Answers of remote actions, made by helper tasks.
    /// The results channel holds one answer per order: the immediate ones are sent as the
    /// frames are read, the others by at most [`MAX_REMOTE_ACTIONS`] tasks, one permit each.
    results: (mpsc::UnboundedSender<String>, mpsc::UnboundedReceiver<String>),
    in_flight: Arc<tokio::sync::Semaphore>,
}

impl Link {
    async fn run(mut self) {
        let mut backoff = Backoff::default();
        let mut moved: Option<String> = None;
        loop {
            let ws_url = match moved.take() {
                Some(url) => url,
                None => match verify::call(&self.client, &self.cfg, &self.meta).await {
                    Verdict::Connect { ws } => ws,
                    Verdict::Refused(r) => {
                        self.problem(r.kind(), &r.describe(&self.cfg.root));
                        self.wait(backoff.delay(transport::jitter_unit())).await;
                        continue;
                    }
                },
            };
            let ws = match transport::connect(&ws_url, &self.cfg, &self.client).await {
                Ok(ws) => ws,
                Err(e) => {
                    self.problem("websocket", &format!("PM2 Plus: cannot open the websocket: {e}; retrying quietly"));
                    self.wait(backoff.delay(transport::jitter_unit())).await;
                    continue;
                }
            };
            self.recovered();
            let since = Instant::now();
            let end = self.session(ws, &ws_url).await;
            self.flapping = since.elapsed() < STABLE;
            if !self.flapping {
                backoff.reset();
            }
            match end {
                End::Moved(url) => moved = Some(url),
                End::Retry => self.wait(backoff.delay(transport::jitter_unit())).await,
                End::Lost(why) => {
                    // A connection that had been up a while going down is news again.
                    if !self.flapping && self.reported.as_deref() == Some("lost") {
                        self.reported = None;
                    }
                    self.problem("lost", &format!("PM2 Plus: connection lost ({why}); reconnecting"));
                    self.wait(backoff.delay(transport::jitter_unit())).await;
                }
            }
        }
    }

    /// Reports a problem once (until another one, or a recovery).
    fn problem(&mut self, kind: &str, text: &str) {
        let text = self.cfg.secret.scrub(text);
        if self.reported.as_deref() == Some(kind) {
            tracing::debug!("{text}");
        } else {
            tracing::warn!("{text}");
            self.reported = Some(kind.to_string());
        }
    }

    /// Connected: said once at the first connection and after each reported problem (a link
    /// that keeps dropping soon after connecting is reported once, not at every turn).
    fn recovered(&mut self) {
        if self.flapping && self.reported.as_deref() == Some("lost") {
            tracing::debug!("PM2 Plus: connected again as {}", self.cfg.machine_name);
        } else if self.reported.take().is_some() || !self.announced {
            tracing::info!("PM2 Plus: connected as {} (public key {})", self.cfg.machine_name, self.cfg.public_key);
            self.announced = true;
        } else {
            tracing::debug!("PM2 Plus: connected as {}", self.cfg.machine_name);
        }
    }

    /// Waits while keeping events (queued for later).
    async fn wait(&mut self, d: Duration) {
        let until = tokio::time::Instant::now() + d;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return,
                input = self.next_input() => if let Input::Packet(p) = input { self.outbox.push(p) },
            }
        }
    }

    /// The next thing the runtime has for upstream: a bus event, a log line, an action's answer.
    async fn next_input(&mut self) -> Input {
        let logging = self.live.as_ref().map(|(_, until)| *until);
        tokio::select! {
            ev = recv_bus(&mut self.bus) => match ev {
                Some(ev) => self.on_bus(ev),
                None => { self.bus = None; Input::Nothing }
            },
            line = recv_live(&mut self.live) => match line {
                Some(l) => self.on_line(l),
                None => { self.live = None; Input::Nothing }
            },
            _ = sleep_until_opt(logging) => {
                self.live = None;
                Input::Nothing
            }
            Some(p) = self.results.1.recv() => Input::Packet(p),
        }
    }

    fn on_bus(&mut self, ev: BusEvent) -> Input {
        let server = self.cfg.machine_name.clone();
        match ev {
            BusEvent::Status { pm_id, name, report } => match self.lifecycle.next(pm_id, report.status) {
                Some(event) => Input::Packet(packets::frame(
                    "process:event",
                    &packets::process_event(
                        event,
                        report.manual,
                        pm_id,
                        &name,
                        &server,
                        SystemTime::now(),
                        report.exit_reason.map(|r| r.as_str()),
                    ),
                )),
                None => Input::Nothing,
            },
            BusEvent::AppMessage { pm_id, name, message } => {
                let logs = &self.logs;
                let last = || logs.recent(pm_id, 8, None).into_iter().map(|(_, _, l)| String::from_utf8_lossy(&l).into_owned()).collect();
                match packets::app_message(&message, pm_id, &name, &server, SystemTime::now(), last) {
                    Some((channel, payload)) => Input::Packet(packets::frame(&channel, &payload)),
                    None => Input::Nothing,
                }
            }
        }
    }

    fn on_line(&self, l: LiveLine) -> Input {
        let table = self.feed.borrow().clone();
        let name = table.instance(l.pm_id).map_or_else(String::new, |i| i.app.name.clone());
        let text = String::from_utf8_lossy(&l.line);
        let text = text.trim_end_matches(['\n', '\r']);
        let payload = packets::log_line(text, l.stream == Stream::Err, l.pm_id, &name, &self.cfg.machine_name, SystemTime::now());
        Input::Packet(packets::frame("logs", &payload))
    }

    /// One connected session, until the socket fails, goes silent, or re-verify says otherwise.
    async fn session(&mut self, mut ws: Socket, url: &str) -> End {
        let mut status_tick = tokio::time::interval(self.cfg.status_interval);
        status_tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut ping_tick = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
        ping_tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let (reverify_tx, mut reverify_rx) = mpsc::channel::<Verdict>(1);
        let reverifier = {
            let (client, cfg, meta) = (self.client.clone(), self.cfg.clone(), self.meta.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(cfg.reverify_interval).await;
                    if reverify_tx.send(verify::call(&client, &cfg, &meta).await).await.is_err() {
                        return;
                    }
                }
            })
        };
        let mut last_heard = Instant::now();
        let mut ticks = 0u32;
        let mut ip = packets::internal_ip();
        // Whatever waited while the link was down goes first.
        let end = 'session: {
            while let Some(p) = self.outbox.pop() {
                if let Err(e) = send(&mut ws, p.clone()).await {
                    self.outbox.requeue(p);
                    break 'session self.lost(&e.to_string());
                }
            }
            loop {
                tokio::select! {
                    _ = status_tick.tick() => {
                        ticks = ticks.wrapping_add(1);
                        if ticks.is_multiple_of(IP_EVERY) {
                            ip = packets::internal_ip();
                        }
                        let table = self.feed.borrow().clone();
                        let payload = packets::status(&table, &self.cfg.machine_name, &ip, self.host.server_block(), self.runtime_node_env.as_deref());
                        // A status that cannot be sent is dropped, never queued.
                        if let Err(e) = send(&mut ws, packets::frame("status", &payload)).await {
                            break 'session self.lost(&e.to_string());
                        }
                    }
                    _ = ping_tick.tick() => {
                        if last_heard.elapsed() > SILENCE_LIMIT {
                            break 'session self.lost(&format!("nothing heard for {} s", SILENCE_LIMIT.as_secs()));
                        }
                        if let Err(e) = timed(ws.send(Message::Ping(Vec::new().into()))).await {
                            break 'session self.lost(&e.to_string());
                        }
                    }
                    frame = ws.next() => match frame {
                        Some(Ok(msg)) => {
                            last_heard = Instant::now();
                            match msg {
                                Message::Text(t) => self.obey(t.as_str()),
                                Message::Close(_) => break 'session self.lost("closed by PM2 Plus"),
                                _ => {}
                            }
                        }
                        Some(Err(e)) => break 'session self.lost(&verify::clip(&e.to_string())),
                        None => break 'session self.lost("closed by PM2 Plus"),
                    },
                    Some(v) = reverify_rx.recv() => match v {
                        Verdict::Connect { ws: new } if new != url => {
                            tracing::info!("PM2 Plus: the websocket endpoint changed; reconnecting");
                            let _ = timed(ws.close(None)).await;
                            break 'session End::Moved(new);
                        }
                        Verdict::Connect { .. } => {}
                        // A network hiccup of the verify call alone does not drop a working link.
                        Verdict::Refused(Refusal::Unreachable(e)) => tracing::debug!("PM2 Plus: re-verify failed: {e}"),
                        Verdict::Refused(r) => {
                            self.problem(r.kind(), &r.describe(&self.cfg.root));
                            let _ = timed(ws.close(None)).await;
                            break 'session End::Retry;
                        }
                    },
                    input = self.next_input() => if let Input::Packet(p) = input
                        && let Err(e) = send(&mut ws, p.clone()).await
                    {
                        self.outbox.push(p);
                        break 'session self.lost(&e.to_string());
                    },
                }
            }
        };
        reverifier.abort();
        end
    }

    fn lost(&mut self, why: &str) -> End {
        End::Lost(why.to_string())
    }

    /// Acts on a frame from the dashboard.
    fn obey(&mut self, text: &str) {
        let order = actions::parse(text);
        let (cfg, tx) = (self.cfg.clone(), self.results.0.clone());
        match order {
            Order::Ignore => tracing::debug!("PM2 Plus: ignored a frame from upstream"),
            Order::Pm2 { method, app_name, plan } => {
                // Names come from upstream: one clipped line each in our log.
                tracing::info!(
                    "PM2 Plus: remote {}{}",
                    verify::clip(&method),
                    app_name.as_deref().map(|n| format!(" {}", verify::clip(n))).unwrap_or_default()
                );
                let reply = move |r: Result<Value, RemoteError>| {
                    let payload = actions::pm2_result(&method, app_name.as_deref(), r, &cfg.machine_name, &cfg.public_key);
                    let _ = tx.send(packets::frame("trigger:pm2:result", &payload));
                };
                match plan {
                    Pm2Plan::Refuse(e) => reply(Err(RemoteError::Refused(e))),
                    Pm2Plan::Ping => reply(Ok(serde_json::json!({ "msg": "pong" }))),
                    Pm2Plan::StartLogging => {
                        let until = Instant::now() + LOGGING_FOR;
                        match &mut self.live {
                            Some((_, u)) => *u = until,
                            None => self.live = Some((self.logs.subscribe(), until)),
                        }
                        reply(Ok(serde_json::json!(format!("log streaming on for {} s", LOGGING_FOR.as_secs()))));
                    }
                    Pm2Plan::StopLogging => {
                        self.live = None;
                        reply(Ok(serde_json::json!("log streaming off")));
                    }
                    Pm2Plan::Control(req) => {
                        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
                            return reply(Err(RemoteError::Busy(MAX_REMOTE_ACTIONS)));
                        };
                        let control = self.control.clone();
                        tokio::spawn(async move {
                            let _permit = permit;
                            reply(act(&control, req).await);
                        });
                    }
                }
            }
            Order::Custom(action) => {
                tracing::info!("PM2 Plus: remote action {} for process {}", verify::clip(&action.action_name), action.pm_id);
                let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
                    let busy = Err(RemoteError::Busy(MAX_REMOTE_ACTIONS));
                    let (channel, payload) = actions::custom_result(&action, busy);
                    let _ = tx.send(packets::frame(channel, &payload));
                    return;
                };
                let declared = self
                    .feed
                    .borrow()
                    .instance(action.pm_id)
                    .map(|i| i.axm_actions.iter().any(|a| a.get("action_name").and_then(Value::as_str) == Some(&action.action_name)));
                let control = self.control.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let result = match declared {
                        None => Err(RemoteError::NoProcess(action.pm_id)),
                        Some(false) => Err(RemoteError::Undeclared { pm_id: action.pm_id, action_name: action.action_name.clone() }),
                        Some(true) => {
                            let req = Request::Send { target: action.pm_id.to_string(), message: action.ipc_message() };
                            act(&control, req).await.map(|_| ())
                        }
                    };
                    let (channel, payload) = actions::custom_result(&action, result);
                    let _ = tx.send(packets::frame(channel, &payload));
                });
            }
        }
    }
}

/// Why a remote action (a PM2 method or an app's custom action) was not done. Its text is the
/// action's error message PM2 Plus shows: it becomes that string in [`actions::pm2_result`] /
/// [`actions::custom_result`], word for word.
#[derive(Debug, thiserror::Error)]
enum RemoteError {
    /// The method is not one we run, or lacks a parameter ([`Pm2Plan::Refuse`]'s text).
    #[error("{0}")]
    Refused(String),
    #[error("busy: {0} remote actions are in progress; try again")]
    Busy(usize),
    #[error("no process with id {0}")]
    NoProcess(u32),
    #[error("process {pm_id} has not declared an action named {action_name:?}")]
    Undeclared { pm_id: u32, action_name: String },
    #[error(transparent)]
    Ask(#[from] AskError),
    #[error(transparent)]
    Control(#[from] actions::ControlError),
}

/// Why the coordinator gave no usable answer.
#[derive(Debug, thiserror::Error)]
enum AskError {
    #[error("the runtime is shutting down")]
    ShuttingDown,
    #[error("unreadable answer: {0}")]
    Unreadable(#[source] serde_json::Error),
    #[error("the runtime did not answer in time")]
    Timeout,
}

/// Why a frame could not be written to PM2 Plus (the session is then lost).
#[derive(Debug, thiserror::Error)]
enum SendError {
    /// The websocket's own error, its text clipped to one line.
    #[error("{}", verify::clip(&.0.to_string()))]
    Ws(#[source] tokio_tungstenite::tungstenite::Error),
    #[error("a write took more than {} s", .0.as_secs())]
    Timeout(Duration),
}

/// One request to the coordinator, as the control socket sends it.
async fn ask(control: &mpsc::Sender<ControlRequest>, req: Request) -> Result<Value, AskError> {
    let (reply, rx) = oneshot::channel();
    let asked = async {
        control.send(ControlRequest { req, reply }).await.map_err(|_| AskError::ShuttingDown)?;
        let reply = rx.await.map_err(|_| AskError::ShuttingDown)?;
        serde_json::to_value(reply).map_err(AskError::Unreadable)
    };
    tokio::time::timeout(CONTROL_TIMEOUT, asked).await.unwrap_or(Err(AskError::Timeout))
}

/// A control request done for PM2 Plus: asked, and its reply read as a result.
async fn act(control: &mpsc::Sender<ControlRequest>, req: Request) -> Result<Value, RemoteError> {
    Ok(actions::control_result(ask(control, req).await?)?)
}

async fn send(ws: &mut Socket, frame: String) -> Result<(), SendError> {
    timed(ws.send(Message::text(frame))).await
}

async fn timed(f: impl std::future::Future<Output = Result<(), tokio_tungstenite::tungstenite::Error>>) -> Result<(), SendError> {
    match tokio::time::timeout(SEND_TIMEOUT, f).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(SendError::Ws(e)),
        Err(_) => Err(SendError::Timeout(SEND_TIMEOUT)),
    }
}

async fn recv_bus(bus: &mut Option<broadcast::Receiver<BusEvent>>) -> Option<BusEvent> {
    let Some(rx) = bus else { return std::future::pending().await };
    loop {
        match rx.recv().await {
            Ok(ev) => return Some(ev),
            Err(broadcast::error::RecvError::Lagged(n)) => tracing::debug!("PM2 Plus: {n} event(s) skipped (the link fell behind)"),
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

async fn recv_live(live: &mut Option<(broadcast::Receiver<LiveLine>, Instant)>) -> Option<LiveLine> {
    let Some((rx, _)) = live else { return std::future::pending().await };
    loop {
        match rx.recv().await {
            Ok(l) => return Some(l),
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_urls() {
        for (url, want) in [
            ("http://127.0.0.1:9", true),
            ("http://localhost/x", true),
            ("http://[::1]:80", true),
            ("http://127.9.9.9", true),
            ("http://10.0.0.1", false),
            ("http://pm2.example.com", false),
        ] {
            assert_eq!(super::is_loopback_url(url), want, "{url}");
        }
    }

    /// What PM2 Plus shows as a failed action's message: the same words as before the errors
    /// were typed.
    #[test]
    fn remote_errors_read_as_before() {
        use super::{AskError, RemoteError, SendError};
        let texts: [(RemoteError, &str); 7] = [
            (RemoteError::Refused("Method not allowed".into()), "Method not allowed"),
            (RemoteError::Busy(8), "busy: 8 remote actions are in progress; try again"),
            (RemoteError::NoProcess(3), "no process with id 3"),
            (RemoteError::Undeclared { pm_id: 3, action_name: "f".into() }, r#"process 3 has not declared an action named "f""#),
            (AskError::ShuttingDown.into(), "the runtime is shutting down"),
            (AskError::Timeout.into(), "the runtime did not answer in time"),
            (crate::plus::actions::ControlError::Failed(None).into(), "failed"),
        ];
        for (e, want) in texts {
            assert_eq!(e.to_string(), want);
        }
        assert_eq!(SendError::Timeout(std::time::Duration::from_secs(10)).to_string(), "a write took more than 10 s");
    }
}
