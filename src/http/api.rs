//! Routes and handlers.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | PM2's `--web` JSON: `system_info`, `monit`, `processes` (a browser is sent to `/dashboard`) |
//! | `GET /api/v1/processes`, `/api/v1/processes/{name}` | the processes (jlist rows; `name` may be a pm_id) |
//! | `GET /api/v1/processes/{name}/history` | the app view: CPU/memory points of the last 6 h, restarts with reasons (their stderr lines with the bearer token) |
//! | `POST /api/v1/processes/{name}/restart\|reload\|stop\|start` | write actions (bearer token) |
//! | `POST /api/v1/processes/{name}/scale` `{"count": N \| "+N" \| "-N"}` | scale (bearer token) |
//! | `GET /metrics`, `/metrics/apps` | Prometheus text: the runtime; cluster apps' prom-client metrics |
//! | `GET /livez`, `/readyz`, `/healthz` | probes |
//! | `GET /logs?app=&lines=&follow=1` | recent lines (JSON), or Server-Sent Events that follow (bearer token) |
//! | `GET /dashboard` | the dashboard page |

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::aggregate::{self, Reply};
use super::metrics::RuntimeStats;
use super::{BODY_TIMEOUT, CONTROL_TIMEOUT, MAX_BODY, MAX_STREAMS, Token, Web};
use crate::config::ExecMode;
use crate::control::protocol::{Reply as ControlReply, Request};
use crate::control::server::ControlRequest;
use crate::logs::Stream;
use crate::process::own::SelfStats;
use crate::supervisor::jlist::Env;
use crate::supervisor::jlist::rows as process_rows;
use crate::supervisor::status::Status;
use crate::supervisor::status::{BusEvent, RestartReason, StatusTable};

type Shared = State<Arc<Web>>;

/// How long `/metrics/apps` waits for the workers' prom-client replies.
const APP_METRICS_TIMEOUT: Duration = Duration::from_secs(2);
/// Most lines `/logs` sends from the past.
const MAX_BACKLOG: usize = 1000;

const DASHBOARD: &str = include_str!("assets/dashboard.html");

pub fn router(web: Arc<Web>) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/api/v1/processes", get(list))
        .route("/api/v1/processes/{name}", get(one))
        .route("/api/v1/processes/{name}/history", get(history))
        .route("/api/v1/processes/{name}/{action}", post(act))
        .route("/metrics", get(metrics))
        .route("/metrics/apps", get(app_metrics))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/healthz", get(healthz))
        .route("/logs", get(logs))
        .route("/dashboard", get(dashboard))
        .fallback(not_found)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(web.clone(), check_host))
        .with_state(web)
}

/// DNS rebinding: a request that names a host we do not answer to is refused ([`super::hosts`]).
/// The probes are exempt (kubelet may send any `Host`; they reveal nothing).
async fn check_host(State(web): Shared, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let host = req.headers().get(header::HOST).map(|h| h.to_str().unwrap_or("\u{fffd}"));
    if matches!(req.uri().path(), "/livez" | "/readyz" | "/healthz") || super::hosts::allowed(host, &web.hosts) {
        return next.run(req).await;
    }
    let host: String = host.unwrap_or_default().chars().take(100).collect();
    error(
        StatusCode::MISDIRECTED_REQUEST,
        format!(
            "this server does not answer to the host {host:?}: connect by address or localhost, or list the name in PM_RUNTIME_WEB_HOSTS"
        ),
    )
}

/// What a connection admitted on the probes' reserve may ask: the probes, nothing else.
pub fn probe_router(web: Arc<Web>) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/healthz", get(healthz))
        .fallback(|| async {
            let mut r = error(StatusCode::SERVICE_UNAVAILABLE, "too many connections: only /livez, /readyz and /healthz are served now");
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        })
        .with_state(web)
}

/// `None` when the request carries the token; else the reply that says what is missing.
/// `what` names the surface ("write actions", "logs").
fn unauthorized(web: &Web, headers: &HeaderMap, what: &str) -> Option<Response> {
    let auth = headers.get(header::AUTHORIZATION).and_then(|h| h.to_str().ok());
    match &web.token {
        Token::Disabled => Some(error(StatusCode::FORBIDDEN, format!("{what} are disabled (PM_RUNTIME_WEB_TOKEN is empty)"))),
        t if !t.accepts(auth) => {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                format!(
                    "{what} need 'Authorization: Bearer <token>' (PM_RUNTIME_WEB_TOKEN, or the token in $PM2_HOME/pm-runtime-web.token)"
                ),
            );
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            Some(r)
        }
        _ => None,
    }
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": msg.into() }))).into_response()
}

async fn not_found(method: Method, uri: Uri) -> Response {
    let msg = format!(
        "no route {method} {}; routes: GET /, /api/v1/processes[/NAME], /metrics, /metrics/apps, /livez, /readyz, /healthz, /logs, /dashboard; POST /api/v1/processes/NAME/restart|reload|stop|start|scale",
        uri.path()
    );
    error(StatusCode::NOT_FOUND, msg)
}

async fn wrong_method(method: Method, uri: Uri) -> Response {
    let allowed = if uri.path().split('/').count() == 6 { "POST" } else { "GET" };
    let mut r = error(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on {} (use {allowed})", uri.path()));
    r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allowed));
    r
}

/// PM2's `--web` document.
async fn root(State(web): Shared, headers: HeaderMap) -> Response {
    // A browser asks for HTML: the dashboard. Scripts (PM2's clients) get the JSON.
    if headers.get(header::ACCEPT).and_then(|a| a.to_str().ok()).is_some_and(|a| a.contains("text/html")) {
        return Redirect::to("/dashboard").into_response();
    }
    let table = web.table();
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let meminfo = read("/proc/meminfo");
    let mem = |key: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    let loadavg: Vec<f64> = read("/proc/loadavg").split_whitespace().take(3).filter_map(|v| v.parse().ok()).collect();
    let cpus: Vec<Value> = read("/proc/cpuinfo")
        .lines()
        .filter_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| json!({ "model": m.trim() })))
        .collect();
    let body = json!({
        "system_info": {
            "hostname": read("/proc/sys/kernel/hostname").trim(),
            "uptime": read("/proc/uptime").split_whitespace().next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0),
        },
        "monit": {
            "loadavg": loadavg,
            "total_mem": mem("MemTotal:"),
            "free_mem": mem("MemAvailable:"),
            "cpu": cpus,
            "interfaces": {},
        },
        "processes": process_rows(&table, None, Env::Omit),
    });
    cors(axum::Json(body).into_response())
}

/// PM2's `--web` lets any page read it; only there, for compatibility (the API's rows carry
/// paths, cwd and user: no `Access-Control-Allow-Origin` on them).
fn cors(mut r: Response) -> Response {
    r.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    r
}

async fn list(State(web): Shared) -> Response {
    let table = web.table();
    axum::Json(json!({ "processes": process_rows(&table, None, Env::Omit), "stopping": table.stopping })).into_response()
}

/// pm_ids of `target`: an app name or a pm_id.
fn ids_of(table: &StatusTable, target: &str) -> Vec<u32> {
    let by_id = target.parse::<u32>().ok();
    table.instances.iter().filter(|i| i.app.name == target || Some(i.pm_id) == by_id).map(|i| i.pm_id).collect()
}

async fn one(State(web): Shared, Path(name): Path<String>) -> Response {
    let table = web.table();
    let ids = ids_of(&table, &name);
    if ids.is_empty() {
        return error(StatusCode::NOT_FOUND, format!("no process or app named {name:?}"));
    }
    axum::Json(json!({ "processes": process_rows(&table, Some(&ids), Env::Omit) })).into_response()
}

/// The app view's history of each instance of `name`: points every `interval_s`, the newest at
/// `end` (ms), the restarts the history saw (reason, exit, and with the write token the last
/// stderr lines: app output, like /logs), the counts by reason and the last exit; the git
/// branch, commit and remote of the app's directory.
async fn history(State(web): Shared, Path(name): Path<String>, headers: HeaderMap) -> Response {
    let table = web.table();
    let ids = ids_of(&table, &name);
    if ids.is_empty() {
        return error(StatusCode::NOT_FOUND, format!("no process or app named {name:?}"));
    }
    let with_stderr = web.token.accepts(headers.get(header::AUTHORIZATION).and_then(|h| h.to_str().ok()));
    let h = web.history.lock().unwrap_or_else(|e| e.into_inner());
    let instances: Vec<Value> = ids
        .iter()
        .filter_map(|id| table.instance(*id))
        .map(|i| {
            let mut v = h.json(i.pm_id, with_stderr);
            let counts: serde_json::Map<String, Value> =
                RestartReason::ALL.iter().map(|r| (r.as_str().into(), json!(i.restarts.get(*r)))).collect();
            v["restart_counts"] = Value::Object(counts);
            v["last_exit"] = super::history::exit_json(i.last_exit(), i.last.as_ref().and_then(|u| u.exit_reason));
            v
        })
        .collect();
    // Read now, only because someone looks.
    let git = table.instance(ids[0]).and_then(|i| crate::git::git(&i.app.cwd));
    let git = git.map(|g| json!({ "branch": g.branch, "commit": g.commit, "remote": g.remote }));
    let body = json!({ "interval_s": super::history::INTERVAL.as_secs(), "stderr": with_stderr, "git": git, "instances": instances });
    cors(axum::Json(body).into_response())
}

/// Asks the coordinator, as the control socket does.
async fn ask(web: &Web, req: Request) -> Result<ControlReply, Response> {
    let (tx, rx) = oneshot::channel();
    let unavailable = || error(StatusCode::SERVICE_UNAVAILABLE, "the runtime is stopping");
    if web.control.send(ControlRequest { req, reply: tx }).await.is_err() {
        return Err(unavailable());
    }
    match tokio::time::timeout(CONTROL_TIMEOUT, rx).await {
        Ok(Ok(reply)) => Ok(reply),
        _ => Err(unavailable()),
    }
}

/// The status of a refused write action: `404` when the target names nothing, else `409`.
fn refusal_status(reply: &ControlReply) -> StatusCode {
    if reply.not_found { StatusCode::NOT_FOUND } else { StatusCode::CONFLICT }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScaleBody {
    count: Value,
}

async fn act(State(web): Shared, Path((name, action)): Path<(String, String)>, request: axum::extract::Request) -> Response {
    // The token first: a client without it never gets a body read (nor a slot held while it
    // trickles one in).
    if let Some(r) = unauthorized(&web, request.headers(), "write actions") {
        return r;
    }
    let body = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(request.into_body(), MAX_BODY)).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => return error(StatusCode::PAYLOAD_TOO_LARGE, format!("the body is larger than {MAX_BODY} bytes (or broken)")),
        Err(_) => return error(StatusCode::REQUEST_TIMEOUT, format!("the body did not arrive within {}s", BODY_TIMEOUT.as_secs())),
    };
    if web.table().stopping {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the runtime is stopping");
    }
    let target = name.clone();
    let req = match action.as_str() {
        "restart" => Request::Restart { target },
        "reload" => Request::Reload { target },
        "stop" => Request::Stop { target },
        "start" => Request::Start { target },
        "scale" => {
            let count = match serde_json::from_slice::<ScaleBody>(&body) {
                Ok(ScaleBody { count: Value::Number(n) }) if n.is_i64() => n.to_string(),
                Ok(ScaleBody { count: Value::String(s) }) => s,
                Ok(_) => return error(StatusCode::BAD_REQUEST, "scale: \"count\" must be an integer, or a string \"N\", \"+N\" or \"-N\""),
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("scale: expected a JSON body {{\"count\": N}}: {e}")),
            };
            Request::Scale { name: target, count }
        }
        other => {
            return error(StatusCode::NOT_FOUND, format!("unknown action {other:?} (expected restart, reload, stop, start or scale)"));
        }
    };
    match ask(&web, req).await {
        Err(r) => r,
        Ok(reply) if reply.ok => axum::Json(reply).into_response(),
        Ok(reply) => error(refusal_status(&reply), reply.error.unwrap_or_else(|| "failed".into())),
    }
}

const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

async fn metrics(State(web): Shared) -> Response {
    let stats = RuntimeStats {
        log_lines: web.logs.line_counts(),
        log_blocked_seconds: web.logs.blocked().as_secs_f64(),
        reaped_orphans: web.reaper.orphans_reaped(),
        process: SelfStats::read(),
    };
    let text = super::metrics::render(&web.table(), &stats, web.compat_pm2, SystemTime::now());
    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], text).into_response()
}

/// The prom-client metrics of every cluster app, merged across its workers.
async fn app_metrics(State(web): Shared) -> Response {
    // One gather at a time: each asks every worker to compute its metrics, which no
    // unauthenticated client may multiply.
    let Ok(_gathering) = web.gather.try_lock() else {
        let mut r = error(StatusCode::SERVICE_UNAVAILABLE, "a gather of the apps' metrics is in progress; try again");
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    };
    let table = web.table();
    if table.stopping {
        // The coordinator no longer carries messages to the apps.
        return error(StatusCode::SERVICE_UNAVAILABLE, "the runtime is stopping");
    }
    // pm_id → app name, for the online workers of Node cluster apps.
    let workers: HashMap<u32, String> = table
        .instances
        .iter()
        .filter(|i| i.app.exec_mode == ExecMode::Cluster && i.app.command.is_node && i.status() == Some(Status::Online))
        .map(|i| (i.pm_id, i.app.name.clone()))
        .collect();
    let id = web.next_request.fetch_add(1, Ordering::Relaxed);
    // Listen before asking, so no reply can come first.
    let mut bus = web.bus.subscribe();
    for pm_id in workers.keys() {
        let _ = ask(&web, Request::Send { target: pm_id.to_string(), message: aggregate::request(id) }).await;
    }
    let mut replies: HashMap<u32, Reply> = HashMap::new();
    let deadline = tokio::time::Instant::now() + APP_METRICS_TIMEOUT;
    while replies.len() < workers.len() {
        match tokio::time::timeout_at(deadline, bus.recv()).await {
            Ok(Ok(BusEvent::AppMessage { pm_id, message, .. })) if workers.contains_key(&pm_id) => {
                if let Some(r) = aggregate::parse_reply(&message, id) {
                    replies.insert(pm_id, r);
                }
            }
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => break,
        }
    }
    // Per app, in table order: the workers' metrics by pm_id, or why not.
    let mut apps: Vec<(String, Vec<Vec<Value>>, Vec<String>)> = Vec::new();
    for a in &table.apps {
        let mut ids: Vec<u32> = workers.iter().filter(|(_, n)| **n == a.app.name).map(|(id, _)| *id).collect();
        ids.sort_unstable();
        let (mut metrics, mut notes) = (Vec::new(), Vec::new());
        for pm_id in ids {
            match replies.remove(&pm_id) {
                Some(Reply::Metrics(m)) => metrics.push(m),
                Some(Reply::Error(e)) => notes.push(format!("{}:{pm_id} answered with an error: {e}", a.app.name)),
                None => {}
            }
        }
        if !metrics.is_empty() || !notes.is_empty() {
            apps.push((a.app.name.clone(), metrics, notes));
        }
    }
    let merged: Vec<(String, aggregate::Aggregated)> = apps
        .into_iter()
        .map(|(name, metrics, notes)| {
            let mut agg = aggregate::aggregate(&metrics);
            agg.notes.extend(notes);
            (name, agg)
        })
        .collect();
    let refs: Vec<(&str, &aggregate::Aggregated)> = merged.iter().map(|(n, a)| (n.as_str(), a)).collect();
    let mut text = String::new();
    aggregate::render_apps(&mut text, &refs);
    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], text).into_response()
}

async fn livez() -> &'static str {
    "ok\n"
}

async fn readyz(State(web): Shared) -> Response {
    match super::health::readiness(&web.table()) {
        Ok(n) => (StatusCode::OK, format!("ok: {n} instance(s) ready\n")).into_response(),
        Err(problems) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready:\n{}\n", problems.join("\n"))).into_response(),
    }
}

/// `pm-runtime ping`, answered by the coordinator.
async fn healthz(State(web): Shared) -> Response {
    if web.table().stopping {
        return (StatusCode::SERVICE_UNAVAILABLE, "unhealthy: the runtime is stopping\n").into_response();
    }
    match ask(&web, Request::Ping).await {
        Ok(r) if r.healthy == Some(true) => (StatusCode::OK, "ok\n").into_response(),
        Ok(r) => {
            let problems = r.problems.unwrap_or_default();
            (StatusCode::SERVICE_UNAVAILABLE, format!("unhealthy:\n{}\n", problems.join("\n"))).into_response()
        }
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct LogsQuery {
    app: Option<String>,
    lines: Option<usize>,
    follow: Option<String>,
}

fn line_json(seq: u64, pm_id: u32, app: &str, stream: Stream, line: &[u8]) -> Value {
    json!({
        "seq": seq,
        "pm_id": pm_id,
        "app_name": app,
        "type": if stream == Stream::Out { "out" } else { "err" },
        "message": String::from_utf8_lossy(line),
    })
}

/// Whether an instance is one `app` asks for (a name, a pm_id, or everything).
fn wanted(app: Option<&str>, name: &str, pm_id: u32) -> bool {
    app.is_none_or(|a| a == "all" || a == name || a.parse::<u32>().ok() == Some(pm_id))
}

async fn logs(State(web): Shared, headers: HeaderMap, q: Result<Query<LogsQuery>, axum::extract::rejection::QueryRejection>) -> Response {
    // Apps print secrets (connection strings, tokens in stack traces): their output is as
    // sensitive as the write actions.
    if let Some(r) = unauthorized(&web, &headers, "logs") {
        return r;
    }
    let Ok(Query(q)) = q else {
        return error(StatusCode::BAD_REQUEST, "expected /logs?app=NAME&lines=N&follow=1");
    };
    let follow = q.follow.as_deref().is_some_and(|f| !matches!(f, "0" | "false" | ""));
    let stream_permit = match follow.then(|| web.streams.clone().try_acquire_owned()) {
        Some(Err(_)) => return error(StatusCode::SERVICE_UNAVAILABLE, format!("too many log streams (at most {MAX_STREAMS}); try again")),
        Some(Ok(p)) => Some(p),
        None => None,
    };
    let lines = q.lines.unwrap_or(if follow { 50 } else { 100 }).min(MAX_BACKLOG);
    let app = q.app.filter(|a| !a.is_empty());
    // Follow from before the backlog is read, so no line falls between the two.
    let live = follow.then(|| web.logs.subscribe());
    let table = web.table();
    let ids: Vec<(u32, String)> =
        table.instances.iter().filter(|i| wanted(app.as_deref(), &i.app.name, i.pm_id)).map(|i| (i.pm_id, i.app.name.clone())).collect();
    if ids.is_empty() && app.is_some() {
        return error(StatusCode::NOT_FOUND, format!("no process or app named {:?}", app.unwrap_or_default()));
    }
    let mut backlog: Vec<(u64, u32, &str, Stream, Vec<u8>)> = Vec::new();
    for (pm_id, name) in &ids {
        for (seq, stream, line) in web.logs.recent(*pm_id, lines, None) {
            backlog.push((seq, *pm_id, name, stream, line.to_vec()));
        }
    }
    backlog.sort_by_key(|l| l.0);
    let skip = backlog.len().saturating_sub(lines);
    let backlog: Vec<(u64, Value)> = backlog[skip..].iter().map(|(s, id, n, st, l)| (*s, line_json(*s, *id, n, *st, l))).collect();
    let Some(mut live) = live else {
        let lines: Vec<Value> = backlog.into_iter().map(|(_, v)| v).collect();
        return axum::Json(json!({ "lines": lines })).into_response();
    };
    let (tx, rx) = mpsc::channel::<Event>(256);
    let last = backlog.last().map_or(0, |l| l.0);
    tokio::spawn(async move {
        // Held as long as the stream lives.
        let _permit = stream_permit;
        for (seq, v) in backlog {
            if tx.send(Event::default().id(seq.to_string()).data(v.to_string())).await.is_err() {
                return;
            }
        }
        loop {
            let line = tokio::select! {
                _ = tx.closed() => return,
                l = live.recv() => l,
            };
            let ev = match line {
                Ok(l) if l.seq > last => {
                    let table = web.table();
                    let Some(i) = table.instance(l.pm_id) else { continue };
                    if !wanted(app.as_deref(), &i.app.name, l.pm_id) {
                        continue;
                    }
                    Event::default().id(l.seq.to_string()).data(line_json(l.seq, l.pm_id, &i.app.name, l.stream, &l.line).to_string())
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    Event::default().comment(format!("{n} line(s) skipped: this client fell behind"))
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if tx.send(ev).await.is_err() {
                return;
            }
        }
    });
    Sse::new(Events(rx)).keep_alive(KeepAlive::default()).into_response()
}

/// A channel of events as the stream `Sse` wants.
struct Events(mpsc::Receiver<Event>);

impl futures_core::Stream for Events {
    type Item = Result<Event, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|e| e.map(Ok))
    }
}

async fn dashboard() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], Html(DASHBOARD)).into_response()
}
