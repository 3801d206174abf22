//! `script: serve` and `pm-runtime serve`: PM2's built-in static file server, run as an app.
//!
//! The app's process is this binary itself (`pm-runtime __serve [path] [port]`), so it is
//! supervised, logged and restarted like any app, and costs nothing when unused. Settings are
//! PM2's: `PM2_SERVE_PATH` (default: the app's cwd), `PM2_SERVE_PORT` (8080), `PM2_SERVE_HOST`
//! (0.0.0.0), `PM2_SERVE_SPA`, `PM2_SERVE_HOMEPAGE` (`/index.html`), `PM2_SERVE_BASIC_AUTH`
//! with `PM2_SERVE_BASIC_AUTH_USERNAME`/`_PASSWORD`; the environment wins over the arguments.
//! Ours: `PM2_SERVE_DOTFILES=true` serves dotfiles, which are otherwise a 404.
//!
//! Behaviour (PM2's `lib/API/Serve.js`, re-implemented): `/` and directories serve the
//! homepage (a sub-directory its own `index.html`); a missing file is a 404 with the root's
//! `404.html` if there is one; with SPA on, a missing path is first looked for by its last
//! segment at the root, then answered with the homepage. Basic auth answers 401 with a
//! `WWW-Authenticate` challenge. Found files get a Content-Type by extension and PM2's CORS
//! headers.
//!
//! HTTP/1 is hyper's (as for `--web`), not ours. Safety: only GET and HEAD; the request head
//! is bounded (16 KiB) and must arrive within 10 s; a client that reads nothing for 60 s is
//! dropped; at most 256 connections at once; one response per connection (`Connection: close`).
//! Paths are percent-decoded once, then resolved segment by segment: any `..` that would
//! leave the root is refused (403), and so is a file whose real path (symlinks resolved) lies
//! outside the root's real path. Only regular files are read (no FIFO or device). A path with a
//! segment starting with a dot (`/.env`, `/.git/config`) is a 404 unless `PM2_SERVE_DOTFILES`
//! is `true`: the root defaults to the app's cwd, where PM2 users keep `.env` files and
//! `.git` ([`names_a_dotfile`]); `/.well-known/` is public by definition and is served.

use std::convert::Infallible;
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpListener;

use crate::exit::Outcome;

/// The hidden subcommand that runs the server.
pub const SUBCOMMAND: &str = crate::config::SERVE_SUBCOMMAND;

const MAX_HEAD: usize = 16 * 1024;
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_CONNECTIONS: usize = 256;

/// The server's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub root: PathBuf,
    pub host: String,
    pub port: u16,
    pub spa: bool,
    pub homepage: String,
    /// (username, password); `Some` when `PM2_SERVE_BASIC_AUTH=true` (missing values never match).
    pub auth: Option<(Option<String>, Option<String>)>,
    /// `PM2_SERVE_DOTFILES=true`: serve files and directories whose name starts with a dot.
    pub dotfiles: bool,
}

/// A port (`PM2_SERVE_PORT` or the second argument) past 65535: the number given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("port {0} is out of range (1-65535)")]
pub struct PortOutOfRange(pub i64);

impl Options {
    /// Reads PM2's variables, then the positional `[path] [port]`, then PM2's defaults.
    pub fn from(args: &[String], var: &dyn Fn(&str) -> Option<String>, cwd: &Path) -> Result<Options, PortOutOfRange> {
        let set = |k: &str| var(k).filter(|v| !v.is_empty());
        let path = set("PM2_SERVE_PATH").or_else(|| args.first().cloned()).unwrap_or_else(|| ".".into());
        let port_text = set("PM2_SERVE_PORT").or_else(|| args.get(1).cloned());
        // PM2: parseInt(port) || 8080.
        let port = match port_text.as_deref().and_then(crate::config::js_parse_int) {
            None | Some(0) => 8080,
            Some(p) => u16::try_from(p).map_err(|_| PortOutOfRange(p))?,
        };
        Ok(Options {
            root: crate::config::normalize(&cwd.join(path)),
            host: set("PM2_SERVE_HOST").or_else(|| args.get(2).cloned()).unwrap_or_else(|| "0.0.0.0".into()),
            port,
            spa: var("PM2_SERVE_SPA").as_deref() == Some("true"),
            homepage: set("PM2_SERVE_HOMEPAGE").unwrap_or_else(|| "/index.html".into()),
            auth: (var("PM2_SERVE_BASIC_AUTH").as_deref() == Some("true"))
                .then(|| (var("PM2_SERVE_BASIC_AUTH_USERNAME"), var("PM2_SERVE_BASIC_AUTH_PASSWORD"))),
            dotfiles: var("PM2_SERVE_DOTFILES").as_deref() == Some("true"),
        })
    }
}

/// `pm-runtime __serve [path] [port] [host]`: runs until killed.
pub fn run(args: &[String]) -> Outcome {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let opts = match Options::from(args, &|k| std::env::var(k).ok(), &cwd) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("serve: {e}");
            return Outcome::AppsFinished(1);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("serve: cannot start: {e}");
            return Outcome::Internal;
        }
    };
    rt.block_on(async move {
        let listener = match TcpListener::bind((opts.host.as_str(), opts.port)).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("serve: cannot listen on {}:{}: {e}", opts.host, opts.port);
                return Outcome::AppsFinished(1);
            }
        };
        // The real root, for the symlink check (a missing root serves 404s, as PM2).
        let real_root = std::fs::canonicalize(&opts.root).unwrap_or_else(|_| opts.root.clone());
        println!("Exposing {} directory on {}:{}", opts.root.display(), opts.host, opts.port);
        let site = Arc::new(Site { opts, real_root });
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else { return Outcome::Internal };
            match listener.accept().await {
                Ok((stream, _)) => {
                    let site = site.clone();
                    tokio::spawn(async move {
                        connection(stream, site).await;
                        drop(permit);
                    });
                }
                // Out of fds or a connection reset before accept: wait a moment, keep serving.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
}

/// One connection, one request, through hyper; dropped when the client stops reading.
async fn connection(stream: tokio::net::TcpStream, site: Arc<Site>) {
    let progress = Arc::new(Progress::new());
    let seen = progress.clone();
    let service = hyper::service::service_fn(move |req| handle(site.clone(), progress.clone(), req));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_header_size(MAX_HEAD)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    let stalled = async {
        loop {
            tokio::time::sleep(WRITE_TIMEOUT / 6).await;
            if seen.idle() > WRITE_TIMEOUT {
                break;
            }
        }
    };
    tokio::select! {
        _ = conn => {}
        _ = stalled => {}
    }
}

/// When a response last made progress (the request arrived, a chunk of a file was taken).
struct Progress {
    start: Instant,
    /// Milliseconds after `start`.
    last: AtomicU64,
}

impl Progress {
    fn new() -> Self {
        Progress { start: Instant::now(), last: AtomicU64::new(0) }
    }

    fn touch(&self) {
        self.last.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        self.start.elapsed().saturating_sub(Duration::from_millis(self.last.load(Ordering::Relaxed)))
    }
}

async fn handle(site: Arc<Site>, progress: Arc<Progress>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    progress.touch();
    let with_body = req.method() == Method::GET;
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(status(405, b"405 Method Not Allowed".to_vec(), Some((header::ALLOW, "GET, HEAD")), true));
    }
    if let Some(auth) = &site.opts.auth
        && !authorized(auth, req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()))
    {
        let challenge = (header::WWW_AUTHENTICATE, "Basic realm=\"Authentication service\"");
        return Ok(status(401, b"401 Unauthorized".to_vec(), Some(challenge), with_body));
    }
    Ok(match answer(&site, req.uri().path()) {
        Reply::File(path) => send_file(&path, with_body, progress).await,
        Reply::Status(code, text) => status(code, text, None, with_body),
    })
}

struct Site {
    opts: Options,
    real_root: PathBuf,
}

/// What to answer.
#[derive(Debug, PartialEq)]
enum Reply {
    File(PathBuf),
    /// Status and body.
    Status(u16, Vec<u8>),
}

/// Basic auth as PM2 checks it (the password is everything after the first `:`).
fn authorized(expected: &(Option<String>, Option<String>), header: Option<&str>) -> bool {
    let Some(encoded) = header.and_then(|h| h.strip_prefix("Basic ")) else { return false };
    let Some(plain) = base64_decode(encoded.trim()) else { return false };
    let Ok(plain) = String::from_utf8(plain) else { return false };
    let Some((user, pass)) = plain.split_once(':') else { return false };
    let (Some(want_user), Some(want_pass)) = expected else { return false };
    // Both compared in full, whatever the first one gave (no early exit on the user name).
    let a = constant_time_eq(user.as_bytes(), want_user.as_bytes());
    let b = constant_time_eq(pass.as_bytes(), want_pass.as_bytes());
    a & b
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        if chunk.len() == 1 {
            return None;
        }
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// Percent-decoding of a URL path; `None` for a malformed escape or a NUL byte.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    if out.contains(&0) {
        return None;
    }
    String::from_utf8(out).ok()
}

/// The file under `root` that a decoded URL path names, or `None` when it would leave the root.
fn under_root(root: &Path, decoded: &str) -> Option<PathBuf> {
    let mut out = root.to_path_buf();
    let mut depth = 0usize;
    for c in Path::new(decoded).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                if depth == 0 {
                    return None;
                }
                out.pop();
                depth -= 1;
            }
            Component::Normal(p) => {
                out.push(p);
                depth += 1;
            }
            Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Whether a decoded URL path names a dotfile or something inside a dot-directory (`/.env`,
/// `/.git/config`, `/a/.ssh/id_rsa`), which `serve` does not give out unless asked to.
/// `/.well-known/…` (RFC 8615: public by definition) is not one.
pub fn names_a_dotfile(decoded: &str) -> bool {
    Path::new(decoded).components().enumerate().any(|(i, c)| match c {
        Component::Normal(name) => {
            let name = name.as_encoded_bytes();
            name.first() == Some(&b'.') && !(i == 1 && name == b".well-known")
        }
        _ => false,
    })
}

/// Decides the answer to a GET of `raw_path` (pure but for reading the filesystem).
fn answer(site: &Site, raw_path: &str) -> Reply {
    let forbidden = || Reply::Status(403, b"403 Forbidden".to_vec());
    let Some(decoded) = percent_decode(raw_path) else { return Reply::Status(400, b"400 Bad Request".to_vec()) };
    let opts = &site.opts;
    if !opts.dotfiles && names_a_dotfile(&decoded) {
        return Reply::Status(404, b"404 Not Found".to_vec());
    }
    let Some(mut path) = under_root(&opts.root, &decoded) else { return forbidden() };
    let mut want = decoded.clone();
    let mut wants_homepage = false;
    if decoded == "/" || decoded.is_empty() {
        want = opts.homepage.clone();
        wants_homepage = true;
        path = match under_root(&opts.root, &want) {
            Some(p) => p,
            None => return forbidden(),
        };
    } else if path.is_dir() {
        path.push("index.html");
    }
    loop {
        match open_check(site, &path) {
            Ok(real) => return Reply::File(real),
            Err(Found::Outside) => return forbidden(),
            Err(Found::Missing) => {}
        }
        // SPA: the last segment at the root (relative assets of deep routes), then the homepage.
        if opts.spa && !wants_homepage {
            wants_homepage = true;
            let base = Path::new(&want).file_name().map(|b| b.to_string_lossy().into_owned()).unwrap_or_default();
            want = format!("/{base}");
        } else if opts.spa && want != opts.homepage {
            want = opts.homepage.clone();
        } else {
            let body = match open_check(site, &opts.root.join("404.html")) {
                Ok(p) => std::fs::read(p).unwrap_or_else(|_| b"404 Not Found".to_vec()),
                Err(_) => b"404 Not Found".to_vec(),
            };
            return Reply::Status(404, body);
        }
        path = match under_root(&opts.root, &want) {
            Some(p) => p,
            None => return forbidden(),
        };
    }
}

enum Found {
    Missing,
    Outside,
}

/// The real path of a regular file inside the root's real path.
fn open_check(site: &Site, path: &Path) -> Result<PathBuf, Found> {
    let real = std::fs::canonicalize(path).map_err(|_| Found::Missing)?;
    if !real.starts_with(&site.real_root) {
        return Err(Found::Outside);
    }
    match std::fs::metadata(&real) {
        Ok(m) if m.is_file() => Ok(real),
        _ => Err(Found::Missing),
    }
}

/// A status answer (`text/html`, as PM2's).
fn status(code: u16, body: Vec<u8>, extra: Option<(header::HeaderName, &'static str)>, with_body: bool) -> Response<Body> {
    let len = body.len();
    let mut r = Response::new(if with_body { Body::from(body) } else { Body::empty() });
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Some((name, value)) = extra {
        h.insert(name, HeaderValue::from_static(value));
    }
    r
}

async fn send_file(path: &Path, with_body: bool, progress: Arc<Progress>) -> Response<Body> {
    let opened = match tokio::fs::File::open(path).await {
        Ok(f) => f.metadata().await.map(|m| (f, m.len())),
        Err(e) => Err(e),
    };
    let (file, len) = match opened {
        Ok(x) => x,
        Err(e) => {
            eprintln!("serve: cannot read {}: {e}", path.display());
            return status(500, b"500 Internal Server Error".to_vec(), None, with_body);
        }
    };
    let body = if with_body { Body::from_stream(FileChunks { file, left: len, buf: vec![0; 64 * 1024], progress }) } else { Body::empty() };
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(path)));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET"));
    r
}

/// A file's bytes as a body, `left` of them at most, chunk by chunk as the client takes them.
struct FileChunks {
    file: tokio::fs::File,
    left: u64,
    buf: Vec<u8>,
    progress: Arc<Progress>,
}

impl futures_core::Stream for FileChunks {
    type Item = std::io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.left == 0 {
            return Poll::Ready(None);
        }
        let mut rb = ReadBuf::new(&mut this.buf);
        match Pin::new(&mut this.file).poll_read(cx, &mut rb) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len().min(usize::try_from(this.left).unwrap_or(usize::MAX));
                if n == 0 {
                    return Poll::Ready(None);
                }
                this.left -= n as u64;
                this.progress.touch();
                Poll::Ready(Some(Ok(Bytes::copy_from_slice(&this.buf[..n]))))
            }
        }
    }
}

/// The Content-Type of a file by its extension (unknown: `application/octet-stream`).
pub fn content_type(path: &Path) -> &'static str {
    let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" | "cjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "txt" | "text" | "log" | "conf" => "text/plain; charset=utf-8",
        "md" => "text/markdown; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "xml" => "application/xml",
        "yaml" | "yml" => "text/yaml; charset=utf-8",
        "svg" | "svgz" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/vnd.microsoft.icon",
        "bmp" => "image/bmp",
        "tif" | "tiff" => "image/tiff",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "eot" => "application/vnd.ms-fontobject",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "tar" => "application/x-tar",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "ogg" | "oga" => "audio/ogg",
        "mp4" | "m4v" => "video/mp4",
        "webm" => "video/webm",
        "mov" => "video/quicktime",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(spa: bool) -> (tempfile::TempDir, Site) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("www");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("index.html"), "home").unwrap();
        std::fs::write(root.join("app.js"), "js").unwrap();
        std::fs::write(root.join("sub/index.html"), "sub home").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "secret").unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("out")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("leak.txt")).unwrap();
        let opts = Options {
            root: root.clone(),
            host: "127.0.0.1".into(),
            port: 1,
            spa,
            homepage: "/index.html".into(),
            auth: None,
            dotfiles: false,
        };
        let real_root = std::fs::canonicalize(&root).unwrap();
        (dir, Site { opts, real_root })
    }

    fn file(r: Reply) -> String {
        match r {
            Reply::File(p) => std::fs::read_to_string(p).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    fn status(r: Reply) -> u16 {
        match r {
            Reply::Status(c, _) => c,
            Reply::File(p) => panic!("served {}", p.display()),
        }
    }

    #[test]
    fn dotfiles() {
        for (path, dot) in [
            ("/.env", true),
            ("/.git/config", true),
            ("/a/.ssh/id_rsa", true),
            ("/sub/../.env", true),
            ("/.well-known/acme-challenge/x", false),
            ("/a/.well-known/x", true),
            ("/app.js", false),
            ("/a.b/c", false),
            ("/", false),
            ("/./app.js", false),
            ("/../x", false),
        ] {
            assert_eq!(names_a_dotfile(path), dot, "{path}");
        }
        let (_d, mut s) = site(false);
        std::fs::write(s.opts.root.join(".env"), "SECRET=1").unwrap();
        assert_eq!(status(answer(&s, "/.env")), 404);
        assert_eq!(status(answer(&s, "/%2eenv")), 404, "decoded first");
        s.opts.dotfiles = true;
        assert_eq!(file(answer(&s, "/.env")), "SECRET=1");
    }

    #[test]
    fn answers() {
        let (_d, s) = site(false);
        assert_eq!(file(answer(&s, "/")), "home");
        assert_eq!(file(answer(&s, "/app.js")), "js");
        assert_eq!(file(answer(&s, "/sub/")), "sub home");
        assert_eq!(file(answer(&s, "/sub")), "sub home");
        assert_eq!(file(answer(&s, "/sub/../app.js")), "js");
        assert_eq!(status(answer(&s, "/nope")), 404);
        for evil in [
            "/../secret.txt",
            "/%2e%2e/secret.txt",
            "/%2e%2e%2fsecret.txt",
            "/..%2fsecret.txt",
            "/sub/../../secret.txt",
            "/out/secret.txt",
            "/leak.txt",
            "/%2E%2E/%2E%2E/etc/passwd",
        ] {
            assert_eq!(status(answer(&s, evil)), 403, "{evil}");
        }
        assert_eq!(status(answer(&s, "/%zz")), 400);
        assert_eq!(status(answer(&s, "/a%00b")), 400);
    }

    #[test]
    fn spa_fallbacks() {
        let (_d, s) = site(true);
        assert_eq!(file(answer(&s, "/some/route")), "home");
        assert_eq!(file(answer(&s, "/deep/route/app.js")), "js", "the last segment at the root, as PM2");
        assert_eq!(status(answer(&s, "/../secret.txt")), 403);
    }

    #[test]
    fn options_from_env_and_args() {
        let cwd = Path::new("/srv");
        let none = |_: &str| None;
        let o = Options::from(&[], &none, cwd).unwrap();
        assert_eq!((o.root.as_path(), o.port, o.host.as_str(), o.spa, o.auth), (cwd, 8080, "0.0.0.0", false, None));
        let o = Options::from(&["dist".into(), "3000".into()], &none, cwd).unwrap();
        assert_eq!((o.root, o.port), (PathBuf::from("/srv/dist"), 3000));
        let env = |k: &str| match k {
            "PM2_SERVE_PATH" => Some("/www".to_string()),
            "PM2_SERVE_PORT" => Some("9000,".to_string()),
            "PM2_SERVE_SPA" => Some("true".to_string()),
            "PM2_SERVE_BASIC_AUTH" => Some("true".to_string()),
            "PM2_SERVE_BASIC_AUTH_USERNAME" => Some("u".to_string()),
            _ => None,
        };
        let o = Options::from(&["dist".into(), "3000".into()], &env, cwd).unwrap();
        assert_eq!((o.root, o.port, o.spa), (PathBuf::from("/www"), 9000, true));
        assert_eq!(o.auth, Some((Some("u".into()), None)));
        assert_eq!(Options::from(&[".".into(), "70000".into()], &none, cwd), Err(PortOutOfRange(70000)));
    }

    #[test]
    fn basic_auth_and_parsing() {
        let want = (Some("admin".to_string()), Some("p:ss".to_string()));
        assert!(authorized(&want, Some("Basic YWRtaW46cDpzcw==")));
        assert!(!authorized(&want, Some("Basic YWRtaW46eA==")));
        assert!(!authorized(&want, Some("Bearer x")));
        assert!(!authorized(&want, None));
        assert!(!authorized(&want, Some("Basic !!!")));
        assert!(!authorized(&(Some("admin".into()), None), Some("Basic YWRtaW46")));
        assert_eq!(base64_decode("aGVsbG8").unwrap(), b"hello");
    }

    #[test]
    fn mime_types() {
        for (f, t) in [
            ("a.html", "text/html; charset=utf-8"),
            ("a.CSS", "text/css; charset=utf-8"),
            ("a.js", "text/javascript; charset=utf-8"),
            ("a.png", "image/png"),
            ("a.svg", "image/svg+xml"),
            ("a.woff2", "font/woff2"),
            ("a.wasm", "application/wasm"),
            ("noext", "application/octet-stream"),
        ] {
            assert_eq!(content_type(Path::new(f)), t, "{f}");
        }
    }
}
