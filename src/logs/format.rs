//! The shapes of the runtime's output: one call appends exactly one output line to a caller's
//! buffer.
//!
//! A runtime event is always one line: its message can carry untrusted text (app names, paths,
//! node's error text), so control characters in it are escaped in every format (`\n`, `\x1b`,
//! `\u{85}` in raw and `--formatted`; JSON escaping in `--json` and `--format`). App lines are
//! the app's own bytes and are not touched.
//!
//! Owns: the four output formats, per-app decoration (`log_date_format` / `time` prefix,
//! `log_type: json`), JSON and logfmt escaping, the continuation marker, and which of the
//! runtime's two streams a line belongs to.
//!
//! Must never: write to a file descriptor, allocate per line (everything is appended into the
//! caller's `Vec<u8>`; dates are rendered from a [`Stamp`] computed once per read), read the
//! clock, or produce a line that is not valid in its format (every `--json` line parses as
//! JSON, whatever bytes the app wrote).
//!
//! | format | app line | runtime event |
//! |---|---|---|
//! | raw (default) | the line's bytes as written + `\n`; app stderr → our stderr | `2026-11-21T16:04:44: PM2 log: App [web:0] online` (`PM2 warn:` / `PM2 error:` → our stderr, like PM2's `console.warn/error`) |
//! | `--formatted` | `0\|web  \| hello` (prefix green for out, red for err, when coloured) | `PM2    \| App [web:0] online` (blue) |
//! | `--json` | `{"message":"hello","timestamp":"2026-11-21T16:05:44.972Z","type":"out","process_id":0,"app_name":"web"}` | `{"message":…,"timestamp":…,"type":"process_event","status":"online","process_id":0,"app_name":"web"}`, or `{"message":…,"timestamp":…,"type":"PM2","level":"info","app_name":"PM2"}` (with `"process_id":N,"app_name":"<app>"` instead when the event concerns an app) |
//! | `--format` | `timestamp=2026-11-21-16:05:48+0000 app=web id=0 type=out message=hello` (`type=error` for stderr) | `timestamp=… app=web id=0 type=process_event status=online message="App [web:0] online"`, or `timestamp=… app=PM2 id=- type=PM2 level=info message="…"` |
//!
//! Streams: in raw mode app stderr and warn/error events go to our stderr, the rest to stdout;
//! every other format sends everything to stdout, so a log router reads one stream.
//!
//! Carriage returns: raw and `--formatted` keep the line's bytes as they are (a CRLF line keeps
//! its `\r`, as in PM2); `--json` and `--format` drop one trailing `\r` (the CRLF ending) and
//! escape any other `\r` as `\r` (PM2's `--json` deletes them all, losing data).
//!
//! Non-UTF-8 bytes: raw and `--formatted` pass them through; `--json` and quoted `--format`
//! values replace each invalid sequence with U+FFFD.
//!
//! `--formatted` alignment: the `<id>|<name>` column has PM2's width rule, `max(3, longest + 1)`
//! (longest label of at most 3 stays at 3), computed once from every app at start so it never
//! shifts; a label longer than that (an instance added later) is not cut, just not padded.
//! Colour is the caller's choice ([`use_color`]: TTY and no `NO_COLOR`).

use std::cell::OnceCell;
use std::io::IsTerminal;
use std::time::SystemTime;

use super::datefmt::{DateFormat, PM2_DEFAULT, Parts, Zone};

/// Appended to every piece of an over-long line except the last (see the framer). Greppable.
pub const CONTINUATION_MARKER: &str = " [pm-runtime: line continues]";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Out,
    Err,
}

impl Stream {
    /// PM2's name: `out` / `err`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Out => "out",
            Stream::Err => "err",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// Default: lines as the apps wrote them.
    Raw,
    /// `--formatted`
    Formatted { color: bool },
    /// `--json`
    Json,
    /// `--format` (logfmt)
    Logfmt,
}

/// Which app instance a line comes from. `pm_id` is shown as `process_id` / `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppTag<'a> {
    pub name: &'a str,
    pub pm_id: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }

    /// The console method PM2 prints in its own lines (`PM2 log:`, `PM2 warn:`, `PM2 error:`).
    fn pm2_method(self) -> &'static str {
        match self {
            Level::Info => "log",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// A line of the runtime itself.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    pub level: Level,
    pub message: &'a str,
    /// The app instance the event is about, if any.
    pub app: Option<AppTag<'a>>,
    /// PM2's process event name (`start`, `online`, `exit`, `stop`, `restart`, `errored`, …). An
    /// event with both `app` and `status` is a process event.
    pub status: Option<&'a str>,
}

impl<'a> Event<'a> {
    /// A runtime message not tied to an app.
    pub fn runtime(level: Level, message: &'a str) -> Self {
        Event { level, message, app: None, status: None }
    }

    /// A PM2 process event (`status`) of one app instance.
    pub fn process(level: Level, message: &'a str, app: AppTag<'a>, status: &'a str) -> Self {
        Event { level, message, app: Some(app), status: Some(status) }
    }
}

/// One instant with its calendar fields computed at most once per zone. Make one per read (or
/// per event) and share it among the lines of that read.
#[derive(Debug)]
pub struct Stamp {
    time: SystemTime,
    zone: Zone,
    local: OnceCell<Parts>,
    utc: OnceCell<Parts>,
}

impl Stamp {
    /// Local time (honouring `TZ`) for the formats that show local time.
    pub fn new(time: SystemTime) -> Self {
        Self::with_zone(time, Zone::Local)
    }

    /// `zone` replaces local time (tests use [`Zone::Utc`]).
    pub fn with_zone(time: SystemTime, zone: Zone) -> Self {
        Stamp { time, zone, local: OnceCell::new(), utc: OnceCell::new() }
    }

    pub fn now() -> Self {
        Self::new(SystemTime::now())
    }

    pub fn time(&self) -> SystemTime {
        self.time
    }

    /// The fields in the stamp's zone (local time unless made with [`Stamp::with_zone`]).
    pub fn local(&self) -> &Parts {
        self.local.get_or_init(|| Parts::new(self.time, self.zone))
    }

    /// The fields in UTC (for ISO timestamps).
    pub fn utc(&self) -> &Parts {
        if self.zone == Zone::Utc {
            return self.local();
        }
        self.utc.get_or_init(|| Parts::new(self.time, Zone::Utc))
    }
}

impl From<SystemTime> for Stamp {
    fn from(t: SystemTime) -> Self {
        Stamp::new(t)
    }
}

/// Per-app decoration, applied to each line before the output format (PM2 applies it before its
/// bus, so it shows in every format): `log_type: json` wraps the line as PM2's JSON object
/// (`{"message":…,"timestamp":…,"type":"out"|"err","process_id":…,"app_name":…}`, timestamp =
/// `log_date_format` in local time if set, else ISO UTC), otherwise `log_date_format` prefixes
/// `<date>: `. `time: true` means `log_date_format = YYYY-MM-DDTHH:mm:ss` and wins over an
/// explicit format, as in PM2. Unlike PM2 the wrapped message carries no trailing newline, and
/// a CRLF line's `\r` is dropped in the JSON wrapping.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decoration {
    date: Option<DateFormat>,
    json: bool,
    /// `mask_secrets`: values replaced by `[redacted]` in every line (empty: off).
    pub secrets: Vec<String>,
}

impl Decoration {
    pub fn new(log_date_format: Option<&str>, time: bool, log_type_json: bool) -> Decoration {
        let date = if time { Some(PM2_DEFAULT) } else { log_date_format.filter(|f| !f.is_empty()) };
        Decoration { date: date.map(DateFormat::parse), json: log_type_json, secrets: Vec::new() }
    }

    /// No decoration at all (the line passes as is).
    pub fn is_plain(&self) -> bool {
        self.date.is_none() && !self.json
    }

    /// Appends one log-file line (ending in `\n`): the decorated line, as PM2 writes its files.
    pub fn file_line(&self, out: &mut Vec<u8>, tag: &AppTag, stream: Stream, line: &[u8], continued: bool, stamp: &Stamp) {
        let marker: &[u8] = if continued { CONTINUATION_MARKER.as_bytes() } else { b"" };
        self.write(out, tag, stream, line, marker, stamp);
        out.push(b'\n');
    }

    /// Writes the decorated line, `marker` appended to the line's text.
    fn write<P: Put + ?Sized>(&self, p: &mut P, tag: &AppTag, stream: Stream, line: &[u8], marker: &[u8], stamp: &Stamp) {
        if self.json {
            p.put(b"{\"message\":\"");
            {
                let mut e = JsonEsc(p);
                e.put(strip_cr(line));
                e.put(marker);
            }
            p.put(b"\",\"timestamp\":\"");
            match &self.date {
                Some(d) => {
                    let mut e = JsonEsc(p);
                    d.write_with(stamp.local(), |b| e.put(b));
                }
                None => p.put(&stamp.utc().iso_utc()),
            }
            p.put(b"\",\"type\":\"");
            p.put(stream.as_str().as_bytes());
            p.put(b"\",\"process_id\":");
            put_u32(p, tag.pm_id);
            p.put(b",\"app_name\":\"");
            JsonEsc(p).put(tag.name.as_bytes());
            p.put(b"\"}");
        } else {
            if let Some(d) = &self.date {
                d.write_with(stamp.local(), |b| p.put(b));
                p.put(b": ");
            }
            p.put(line);
            p.put(marker);
        }
    }
}

/// Whether `--formatted` output on our stdout should be coloured: only when it is a terminal and
/// `NO_COLOR` is unset or empty (no-color.org).
pub fn use_color() -> bool {
    color_wanted(std::io::stdout().is_terminal(), std::env::var_os("NO_COLOR").as_deref())
}

/// The rule behind [`use_color`], testable.
pub fn color_wanted(is_tty: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    is_tty && no_color.is_none_or(|v| v.is_empty())
}

/// Formats app lines and runtime events for the runtime's stdout/stderr. Built once at start.
#[derive(Debug, Clone)]
pub struct Formatter {
    format: OutputFormat,
    /// `--formatted`: width of the `<id>|<name>` column (before ` | `).
    prefix_width: usize,
    /// The date of raw-mode runtime lines (`PM2_LOG_DATE_FORMAT`); `None` = no `<date>: PM2 log: ` prefix.
    event_date: Option<DateFormat>,
    /// `--format`'s timestamp.
    logfmt_date: DateFormat,
}

const GREEN: &[u8] = b"\x1b[32m";
const RED: &[u8] = b"\x1b[31m";
const BLUE: &[u8] = b"\x1b[34m";
const RESET: &[u8] = b"\x1b[39m";

/// PM2's `--format` timestamp.
const LOGFMT_DATE: &str = "YYYY-MM-DD-HH:mm:ssZZ";

impl Formatter {
    /// `apps`: every app instance known at start (for a stable `--formatted` width). Reads
    /// `PM2_LOG_DATE_FORMAT` for raw-mode runtime lines: unset → `YYYY-MM-DDTHH:mm:ss`; set but
    /// empty → no prefix at all (PM2 then leaves its console alone).
    pub fn new(format: OutputFormat, apps: &[AppTag]) -> Formatter {
        let env = std::env::var("PM2_LOG_DATE_FORMAT").ok();
        let event_date = match env.as_deref() {
            None => Some(PM2_DEFAULT),
            Some("") => None,
            Some(f) => Some(f),
        };
        Self::with_event_date_format(format, apps, event_date)
    }

    /// Like [`Formatter::new`], with the raw-mode runtime line date format given (`None`: no prefix).
    pub fn with_event_date_format(format: OutputFormat, apps: &[AppTag], event_date: Option<&str>) -> Formatter {
        let longest = apps.iter().map(label_len).max().unwrap_or(0);
        let prefix_width = if longest > 3 { longest + 1 } else { 3 };
        Formatter { format, prefix_width, event_date: event_date.map(DateFormat::parse), logfmt_date: DateFormat::parse(LOGFMT_DATE) }
    }

    pub fn format(&self) -> OutputFormat {
        self.format
    }

    pub fn prefix_width(&self) -> usize {
        self.prefix_width
    }

    /// Appends one output line (ending in `\n`) for one app line (`line` without its `\n`);
    /// `continued` pieces get [`CONTINUATION_MARKER`]. Returns the runtime stream it belongs to.
    #[allow(clippy::too_many_arguments)]
    pub fn app_line(
        &self,
        out: &mut Vec<u8>,
        tag: &AppTag,
        stream: Stream,
        deco: &Decoration,
        line: &[u8],
        continued: bool,
        stamp: &Stamp,
    ) -> Stream {
        let marker: &[u8] = if continued { CONTINUATION_MARKER.as_bytes() } else { b"" };
        match self.format {
            OutputFormat::Raw => {
                deco.write(out, tag, stream, line, marker, stamp);
                out.push(b'\n');
                return stream;
            }
            OutputFormat::Formatted { color } => {
                let c = color.then_some(if stream == Stream::Out { GREEN } else { RED });
                self.prefix(out, Some(tag.pm_id), tag.name, c);
                deco.write(out, tag, stream, line, marker, stamp);
                out.push(b'\n');
            }
            OutputFormat::Json => {
                out.extend_from_slice(b"{\"message\":\"");
                deco.write(&mut JsonEsc(out), tag, stream, strip_cr(line), marker, stamp);
                out.extend_from_slice(b"\",\"timestamp\":\"");
                out.extend_from_slice(&stamp.utc().iso_utc());
                out.extend_from_slice(b"\",\"type\":\"");
                out.extend_from_slice(stream.as_str().as_bytes());
                out.extend_from_slice(b"\",\"process_id\":");
                put_u32(out, tag.pm_id);
                out.extend_from_slice(b",\"app_name\":");
                json_str(out, tag.name.as_bytes());
                out.extend_from_slice(b"}\n");
            }
            OutputFormat::Logfmt => {
                self.logfmt_head(out, stamp, tag.name, Some(tag.pm_id));
                out.extend_from_slice(if stream == Stream::Out { b" type=out message=" } else { b" type=error message=" });
                let line = strip_cr(line);
                if deco.is_plain() && !continued && logfmt_plain(line) {
                    out.extend_from_slice(line);
                } else {
                    out.push(b'"');
                    deco.write(&mut JsonEsc(out), tag, stream, line, marker, stamp);
                    out.push(b'"');
                }
                out.push(b'\n');
            }
        }
        Stream::Out
    }

    /// Appends the output line(s) for one runtime event. Returns the runtime stream it belongs to.
    pub fn event(&self, out: &mut Vec<u8>, ev: &Event, stamp: &Stamp) -> Stream {
        let process = match (ev.app, ev.status) {
            (Some(app), Some(status)) => Some((app, status)),
            _ => None,
        };
        match self.format {
            OutputFormat::Raw => {
                if let Some(d) = &self.event_date {
                    d.write(out, stamp.local());
                    out.extend_from_slice(b": PM2 ");
                    out.extend_from_slice(ev.level.pm2_method().as_bytes());
                    out.extend_from_slice(b": ");
                }
                escape_controls(out, ev.message);
                out.push(b'\n');
                return if ev.level == Level::Info { Stream::Out } else { Stream::Err };
            }
            OutputFormat::Formatted { color } => {
                self.prefix(out, None, "PM2", color.then_some(BLUE));
                escape_controls(out, ev.message);
                out.push(b'\n');
            }
            OutputFormat::Json => {
                out.extend_from_slice(b"{\"message\":");
                json_str(out, ev.message.as_bytes());
                out.extend_from_slice(b",\"timestamp\":\"");
                out.extend_from_slice(&stamp.utc().iso_utc());
                out.push(b'"');
                if let Some((app, status)) = process {
                    out.extend_from_slice(b",\"type\":\"process_event\",\"status\":");
                    json_str(out, status.as_bytes());
                    out.extend_from_slice(b",\"process_id\":");
                    put_u32(out, app.pm_id);
                    out.extend_from_slice(b",\"app_name\":");
                    json_str(out, app.name.as_bytes());
                } else {
                    out.extend_from_slice(b",\"type\":\"PM2\",\"level\":\"");
                    out.extend_from_slice(ev.level.as_str().as_bytes());
                    out.push(b'"');
                    match ev.app {
                        Some(app) => {
                            out.extend_from_slice(b",\"process_id\":");
                            put_u32(out, app.pm_id);
                            out.extend_from_slice(b",\"app_name\":");
                            json_str(out, app.name.as_bytes());
                        }
                        None => out.extend_from_slice(b",\"app_name\":\"PM2\""),
                    }
                }
                out.extend_from_slice(b"}\n");
            }
            OutputFormat::Logfmt => {
                match (process, ev.app) {
                    (Some((app, status)), _) => {
                        self.logfmt_head(out, stamp, app.name, Some(app.pm_id));
                        out.extend_from_slice(b" type=process_event status=");
                        logfmt_value(out, status.as_bytes());
                    }
                    (None, app) => {
                        match app {
                            Some(app) => self.logfmt_head(out, stamp, app.name, Some(app.pm_id)),
                            None => self.logfmt_head(out, stamp, "PM2", None),
                        }
                        out.extend_from_slice(b" type=PM2 level=");
                        out.extend_from_slice(ev.level.as_str().as_bytes());
                    }
                }
                out.extend_from_slice(b" message=");
                logfmt_value(out, ev.message.as_bytes());
                out.push(b'\n');
            }
        }
        Stream::Out
    }

    /// `--formatted` prefix: `pad(<id>|<name>) | `, coloured as a whole when `color` is given.
    fn prefix(&self, out: &mut Vec<u8>, id: Option<u32>, name: &str, color: Option<&[u8]>) {
        if let Some(c) = color {
            out.extend_from_slice(c);
        }
        let mut len = name.chars().count();
        if let Some(id) = id {
            len += put_u32(out, id) + 1;
            out.push(b'|');
        }
        out.extend_from_slice(name.as_bytes());
        for _ in len..self.prefix_width {
            out.push(b' ');
        }
        out.extend_from_slice(b" | ");
        if color.is_some() {
            out.extend_from_slice(RESET);
        }
    }

    /// `timestamp=<local YYYY-MM-DD-HH:mm:ssZZ> app=<name> id=<id or ->`
    fn logfmt_head(&self, out: &mut Vec<u8>, stamp: &Stamp, app: &str, id: Option<u32>) {
        out.extend_from_slice(b"timestamp=");
        self.logfmt_date.write(out, stamp.local());
        out.extend_from_slice(b" app=");
        logfmt_value(out, app.as_bytes());
        out.extend_from_slice(b" id=");
        match id {
            Some(id) => {
                put_u32(out, id);
            }
            None => out.push(b'-'),
        }
    }
}

/// Characters in `<pm_id>|<name>`.
fn label_len(t: &AppTag) -> usize {
    digits(t.pm_id) + 1 + t.name.chars().count()
}

fn digits(mut n: u32) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Where escaped text goes: a buffer, or another escaper (for JSON inside JSON).
trait Put {
    fn put(&mut self, b: &[u8]);
}

impl Put for Vec<u8> {
    #[inline]
    fn put(&mut self, b: &[u8]) {
        self.extend_from_slice(b);
    }
}

/// Escapes everything put through it as the inside of a JSON string (invalid UTF-8 → U+FFFD).
struct JsonEsc<'a, P: Put + ?Sized>(&'a mut P);

impl<P: Put + ?Sized> Put for JsonEsc<'_, P> {
    #[inline]
    fn put(&mut self, b: &[u8]) {
        escape_json(self.0, b);
    }
}

/// Appends a decimal; returns how many digits.
fn put_u32<P: Put + ?Sized>(p: &mut P, mut n: u32) -> usize {
    let mut b = [0u8; 10];
    let mut i = b.len();
    loop {
        i -= 1;
        b[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    p.put(&b[i..]);
    b.len() - i
}

/// For each byte: 0 = as is, else the letter after `\` (`u` = `\u00XX`).
static JSON_ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[b'\n' as usize] = b'n';
    t[b'\r' as usize] = b'r';
    t[b'\t' as usize] = b't';
    t[0x08] = b'b';
    t[0x0c] = b'f';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

fn escape_json<P: Put + ?Sized>(p: &mut P, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for chunk in bytes.utf8_chunks() {
        let s = chunk.valid().as_bytes();
        let mut start = 0;
        for (i, &c) in s.iter().enumerate() {
            let e = JSON_ESCAPE[c as usize];
            if e == 0 {
                continue;
            }
            if start < i {
                p.put(&s[start..i]);
            }
            if e == b'u' {
                p.put(&[b'\\', b'u', b'0', b'0', HEX[(c >> 4) as usize], HEX[(c & 0xf) as usize]]);
            } else {
                p.put(&[b'\\', e]);
            }
            start = i + 1;
        }
        if start < s.len() {
            p.put(&s[start..]);
        }
        if !chunk.invalid().is_empty() {
            p.put("\u{FFFD}".as_bytes());
        }
    }
}

/// Appends `s` as a quoted JSON string (invalid UTF-8 replaced by U+FFFD, controls escaped).
pub fn json_str(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    escape_json(out, s);
    out.push(b'"');
}

/// Appends `s` with every control character but tab escaped (`\n`, `\r`, `\x1b`, `\u{85}`),
/// so no text inside a runtime line can end it or forge another, or drive the terminal.
pub fn escape_controls(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if !c.is_control() || c == '\t' {
            continue;
        }
        out.extend_from_slice(&s.as_bytes()[start..i]);
        match c {
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            c if c.is_ascii() => out.extend_from_slice(&[b'\\', b'x', HEX[(c as usize) >> 4], HEX[(c as usize) & 0xf]]),
            c => out.extend_from_slice(format!("\\u{{{:x}}}", c as u32).as_bytes()),
        }
        start = i + c.len_utf8();
    }
    out.extend_from_slice(&s.as_bytes()[start..]);
}

/// A logfmt value may go unquoted: not empty, no space, control, `=` or `"`, valid UTF-8.
fn logfmt_plain(v: &[u8]) -> bool {
    !v.is_empty() && v.iter().all(|&c| c > b' ' && c != b'=' && c != b'"' && c != 0x7f) && (v.is_ascii() || std::str::from_utf8(v).is_ok())
}

/// Appends a logfmt value, quoted (JSON string escaping: `\"`, `\\`, `\n`, …) when needed.
fn logfmt_value(out: &mut Vec<u8>, v: &[u8]) {
    if logfmt_plain(v) {
        out.extend_from_slice(v);
    } else {
        json_str(out, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// 2026-11-21T16:05:44.972Z, shown in UTC.
    fn stamp() -> Stamp {
        Stamp::with_zone(UNIX_EPOCH + Duration::from_millis(1_795_277_144_972), Zone::Utc)
    }
    const WEB: AppTag = AppTag { name: "web", pm_id: 0 };

    fn fmt(f: OutputFormat) -> Formatter {
        Formatter::with_event_date_format(f, &[WEB], Some(PM2_DEFAULT))
    }
    fn app(f: &Formatter, stream: Stream, deco: &Decoration, line: &[u8], continued: bool) -> (String, Stream) {
        let mut out = Vec::new();
        let s = f.app_line(&mut out, &WEB, stream, deco, line, continued, &stamp());
        (String::from_utf8(out).unwrap(), s)
    }
    fn plain(f: OutputFormat, stream: Stream, line: &[u8]) -> (String, Stream) {
        app(&fmt(f), stream, &Decoration::default(), line, false)
    }
    fn ev(f: &Formatter, e: &Event) -> (String, Stream) {
        let mut out = Vec::new();
        let s = f.event(&mut out, e, &stamp());
        (String::from_utf8(out).unwrap(), s)
    }
    fn online() -> Event<'static> {
        Event::process(Level::Info, "App [web:0] online", WEB, "online")
    }
    fn all_formats() -> [OutputFormat; 5] {
        [
            OutputFormat::Raw,
            OutputFormat::Formatted { color: false },
            OutputFormat::Formatted { color: true },
            OutputFormat::Json,
            OutputFormat::Logfmt,
        ]
    }

    #[test]
    fn raw_app_lines() {
        assert_eq!(plain(OutputFormat::Raw, Stream::Out, b"hello"), ("hello\n".into(), Stream::Out));
        assert_eq!(plain(OutputFormat::Raw, Stream::Err, b"oops"), ("oops\n".into(), Stream::Err));
        assert_eq!(plain(OutputFormat::Raw, Stream::Out, b""), ("\n".into(), Stream::Out));
        assert_eq!(plain(OutputFormat::Raw, Stream::Out, b"crlf\r"), ("crlf\r\n".into(), Stream::Out));
        // Non-UTF-8 bytes pass through untouched.
        let mut out = Vec::new();
        fmt(OutputFormat::Raw).app_line(&mut out, &WEB, Stream::Out, &Decoration::default(), b"\xff\xfe", false, &stamp());
        assert_eq!(out, b"\xff\xfe\n");
        let (s, _) = app(&fmt(OutputFormat::Raw), Stream::Out, &Decoration::default(), b"abc", true);
        assert_eq!(s, "abc [pm-runtime: line continues]\n");
    }

    #[test]
    fn raw_events() {
        let f = fmt(OutputFormat::Raw);
        assert_eq!(ev(&f, &online()), ("2026-11-21T16:05:44: PM2 log: App [web:0] online\n".into(), Stream::Out));
        assert_eq!(ev(&f, &Event::runtime(Level::Warn, "slow stop")), ("2026-11-21T16:05:44: PM2 warn: slow stop\n".into(), Stream::Err));
        assert_eq!(
            ev(&f, &Event::runtime(Level::Error, "Script not found: /x.js")),
            ("2026-11-21T16:05:44: PM2 error: Script not found: /x.js\n".into(), Stream::Err)
        );
        let custom = Formatter::with_event_date_format(OutputFormat::Raw, &[WEB], Some("HH:mm"));
        assert_eq!(ev(&custom, &online()).0, "16:05: PM2 log: App [web:0] online\n");
        let none = Formatter::with_event_date_format(OutputFormat::Raw, &[WEB], None);
        assert_eq!(ev(&none, &online()).0, "App [web:0] online\n");
    }

    /// Untrusted text inside a runtime event cannot end its line or forge another.
    #[test]
    fn runtime_events_escape_control_characters() {
        let evil = "App [evil\n2026-11-21T16:05:44: PM2 log: App [web:0] online\r\x1b[2J\u{85}\tok";
        let want = "App [evil\\n2026-11-21T16:05:44: PM2 log: App [web:0] online\\r\\x1b[2J\\u{85}\tok";
        for f in all_formats() {
            let (s, _) = ev(&fmt(f), &Event::runtime(Level::Error, evil));
            assert_eq!(s.matches('\n').count(), 1, "{f:?}: {s:?}");
            assert!(s.ends_with('\n') && !s.contains('\r') && !s.contains("\x1b[2J"), "{f:?}: {s:?}");
            if matches!(f, OutputFormat::Raw | OutputFormat::Formatted { .. }) {
                assert!(s.contains(want) && !s.contains('\u{85}'), "{f:?}: {s:?}");
            }
        }
    }

    #[test]
    fn formatted_app_lines_and_events() {
        let f = OutputFormat::Formatted { color: false };
        assert_eq!(plain(f, Stream::Out, b"hello"), ("0|web  | hello\n".into(), Stream::Out));
        assert_eq!(plain(f, Stream::Err, b"oops"), ("0|web  | oops\n".into(), Stream::Out));
        assert_eq!(plain(f, Stream::Out, b""), ("0|web  | \n".into(), Stream::Out));
        assert_eq!(ev(&fmt(f), &online()), ("PM2    | App [web:0] online\n".into(), Stream::Out));
        assert_eq!(ev(&fmt(f), &Event::runtime(Level::Error, "a\nb")).0, "PM2    | a\\nb\n");
        // Coloured: PM2's exact bytes (the ` | ` is inside the colour).
        let c = OutputFormat::Formatted { color: true };
        assert_eq!(plain(c, Stream::Out, b"hello out line1").0, "\x1b[32m0|web  | \x1b[39mhello out line1\n");
        assert_eq!(plain(c, Stream::Err, b"e").0, "\x1b[31m0|web  | \x1b[39me\n");
        assert_eq!(ev(&fmt(c), &online()).0, "\x1b[34mPM2    | \x1b[39mApp [web:0] online\n");
    }

    #[test]
    fn formatted_alignment_follows_pm2_width_rule() {
        let tags = [WEB, AppTag { name: "worker", pm_id: 1 }, AppTag { name: "worker", pm_id: 12 }];
        let f = Formatter::with_event_date_format(OutputFormat::Formatted { color: false }, &tags, None);
        assert_eq!(f.prefix_width(), 10); // "12|worker" is 9
        let mut out = Vec::new();
        for t in &tags {
            f.app_line(&mut out, t, Stream::Out, &Decoration::default(), b"x", false, &stamp());
        }
        f.event(&mut out, &Event::runtime(Level::Info, "x"), &stamp());
        assert_eq!(String::from_utf8(out).unwrap(), "0|web      | x\n1|worker   | x\n12|worker  | x\nPM2        | x\n");
        // Short labels: width 3 (PM2's minimum); a later, longer label is not cut.
        let f = Formatter::with_event_date_format(OutputFormat::Formatted { color: false }, &[AppTag { name: "a", pm_id: 0 }], None);
        assert_eq!(f.prefix_width(), 3);
        let mut out = Vec::new();
        f.app_line(&mut out, &AppTag { name: "a", pm_id: 0 }, Stream::Out, &Decoration::default(), b"x", false, &stamp());
        f.app_line(&mut out, &AppTag { name: "long", pm_id: 7 }, Stream::Out, &Decoration::default(), b"y", false, &stamp());
        f.event(&mut out, &Event::runtime(Level::Info, "z"), &stamp());
        assert_eq!(String::from_utf8(out).unwrap(), "0|a | x\n7|long | y\nPM2 | z\n");
        // Multi-byte names are counted in characters.
        let f = Formatter::with_event_date_format(OutputFormat::Formatted { color: false }, &[AppTag { name: "café", pm_id: 0 }], None);
        assert_eq!(f.prefix_width(), 7);
    }

    #[test]
    fn json_app_lines() {
        let (s, stream) = plain(OutputFormat::Json, Stream::Out, b"hello");
        assert_eq!(stream, Stream::Out);
        assert_eq!(
            s,
            "{\"message\":\"hello\",\"timestamp\":\"2026-11-21T16:05:44.972Z\",\"type\":\"out\",\"process_id\":0,\"app_name\":\"web\"}\n"
        );
        let (s, stream) = plain(OutputFormat::Json, Stream::Err, b"say \"hi\"\t\\ \x01\x7f\r");
        assert_eq!(stream, Stream::Out);
        assert_eq!(
            s,
            "{\"message\":\"say \\\"hi\\\"\\t\\\\ \\u0001\x7f\",\"timestamp\":\"2026-11-21T16:05:44.972Z\",\"type\":\"err\",\"process_id\":0,\"app_name\":\"web\"}\n"
        );
        // Embedded CR is escaped; invalid UTF-8 becomes U+FFFD; the marker is inside the message.
        let (s, _) = app(&fmt(OutputFormat::Json), Stream::Out, &Decoration::default(), b"a\rb\xff", true);
        assert!(s.starts_with("{\"message\":\"a\\rb\u{FFFD} [pm-runtime: line continues]\","), "{s}");
    }

    #[test]
    fn json_events() {
        let f = fmt(OutputFormat::Json);
        assert_eq!(
            ev(&f, &online()),
            (
                "{\"message\":\"App [web:0] online\",\"timestamp\":\"2026-11-21T16:05:44.972Z\",\"type\":\"process_event\",\"status\":\"online\",\"process_id\":0,\"app_name\":\"web\"}\n".into(),
                Stream::Out
            )
        );
        assert_eq!(
            ev(&f, &Event::runtime(Level::Warn, "careful \"now\"")),
            (
                "{\"message\":\"careful \\\"now\\\"\",\"timestamp\":\"2026-11-21T16:05:44.972Z\",\"type\":\"PM2\",\"level\":\"warn\",\"app_name\":\"PM2\"}\n".into(),
                Stream::Out
            )
        );
        let about_app = Event { level: Level::Error, message: "Stopping app:web id:0", app: Some(WEB), status: None };
        assert_eq!(
            ev(&f, &about_app).0,
            "{\"message\":\"Stopping app:web id:0\",\"timestamp\":\"2026-11-21T16:05:44.972Z\",\"type\":\"PM2\",\"level\":\"error\",\"process_id\":0,\"app_name\":\"web\"}\n"
        );
    }

    #[test]
    fn logfmt_app_lines_and_events() {
        let f = OutputFormat::Logfmt;
        assert_eq!(
            plain(f, Stream::Out, b"hello"),
            ("timestamp=2026-11-21-16:05:44+0000 app=web id=0 type=out message=hello\n".into(), Stream::Out)
        );
        assert_eq!(
            plain(f, Stream::Err, b"hello out line1\r"),
            ("timestamp=2026-11-21-16:05:44+0000 app=web id=0 type=error message=\"hello out line1\"\n".into(), Stream::Out)
        );
        assert_eq!(plain(f, Stream::Out, b"").0, "timestamp=2026-11-21-16:05:44+0000 app=web id=0 type=out message=\"\"\n");
        assert_eq!(
            plain(f, Stream::Out, b"k=v \"q\" back\\slash\nnl").0,
            "timestamp=2026-11-21-16:05:44+0000 app=web id=0 type=out message=\"k=v \\\"q\\\" back\\\\slash\\nnl\"\n"
        );
        assert_eq!(plain(f, Stream::Out, "héllo".as_bytes()).0, "timestamp=2026-11-21-16:05:44+0000 app=web id=0 type=out message=héllo\n");
        assert_eq!(plain(f, Stream::Out, b"\xff").0, "timestamp=2026-11-21-16:05:44+0000 app=web id=0 type=out message=\"\u{FFFD}\"\n");
        let (s, _) = app(&fmt(f), Stream::Out, &Decoration::default(), b"abc", true);
        assert_eq!(s, "timestamp=2026-11-21-16:05:44+0000 app=web id=0 type=out message=\"abc [pm-runtime: line continues]\"\n");
        let lf = fmt(f);
        assert_eq!(
            ev(&lf, &online()),
            (
                "timestamp=2026-11-21-16:05:44+0000 app=web id=0 type=process_event status=online message=\"App [web:0] online\"\n".into(),
                Stream::Out
            )
        );
        assert_eq!(
            ev(&lf, &Event::runtime(Level::Info, "Launching in no daemon mode")).0,
            "timestamp=2026-11-21-16:05:44+0000 app=PM2 id=- type=PM2 level=info message=\"Launching in no daemon mode\"\n"
        );
        let about_app = Event { level: Level::Warn, message: "slow", app: Some(WEB), status: None };
        assert_eq!(ev(&lf, &about_app).0, "timestamp=2026-11-21-16:05:44+0000 app=web id=0 type=PM2 level=warn message=slow\n");
        let spaced = AppTag { name: "my app", pm_id: 3 };
        let mut out = Vec::new();
        lf.app_line(&mut out, &spaced, Stream::Out, &Decoration::default(), b"x", false, &stamp());
        assert_eq!(String::from_utf8(out).unwrap(), "timestamp=2026-11-21-16:05:44+0000 app=\"my app\" id=3 type=out message=x\n");
    }

    #[test]
    fn decorations_in_every_format() {
        let date = Decoration::new(Some("YYYY-MM-DD HH:mm Z"), false, false);
        let time = Decoration::new(Some("ignored"), true, false);
        let json = Decoration::new(None, false, true);
        let json_dated = Decoration::new(Some("[d]D \"x\""), false, true);
        assert!(Decoration::new(Some(""), false, false).is_plain());
        let cases: &[(OutputFormat, &Decoration, &str)] = &[
            (OutputFormat::Raw, &date, "2026-11-21 16:05 +00:00: hi\r\n"),
            (OutputFormat::Raw, &time, "2026-11-21T16:05:44: hi\r\n"),
            (
                OutputFormat::Raw,
                &json,
                "{\"message\":\"hi\",\"timestamp\":\"2026-11-21T16:05:44.972Z\",\"type\":\"out\",\"process_id\":0,\"app_name\":\"web\"}\n",
            ),
            (
                OutputFormat::Raw,
                &json_dated,
                "{\"message\":\"hi\",\"timestamp\":\"d21 \\\"x\\\"\",\"type\":\"out\",\"process_id\":0,\"app_name\":\"web\"}\n",
            ),
            (OutputFormat::Formatted { color: false }, &time, "0|web  | 2026-11-21T16:05:44: hi\r\n"),
            (
                OutputFormat::Json,
                &time,
                "{\"message\":\"2026-11-21T16:05:44: hi\",\"timestamp\":\"2026-11-21T16:05:44.972Z\",\"type\":\"out\",\"process_id\":0,\"app_name\":\"web\"}\n",
            ),
            (
                OutputFormat::Json,
                &json,
                "{\"message\":\"{\\\"message\\\":\\\"hi\\\",\\\"timestamp\\\":\\\"2026-11-21T16:05:44.972Z\\\",\\\"type\\\":\\\"out\\\",\\\"process_id\\\":0,\\\"app_name\\\":\\\"web\\\"}\",\"timestamp\":\"2026-11-21T16:05:44.972Z\",\"type\":\"out\",\"process_id\":0,\"app_name\":\"web\"}\n",
            ),
            (OutputFormat::Logfmt, &time, "timestamp=2026-11-21-16:05:44+0000 app=web id=0 type=out message=\"2026-11-21T16:05:44: hi\"\n"),
            (
                OutputFormat::Logfmt,
                &json,
                "timestamp=2026-11-21-16:05:44+0000 app=web id=0 type=out message=\"{\\\"message\\\":\\\"hi\\\",\\\"timestamp\\\":\\\"2026-11-21T16:05:44.972Z\\\",\\\"type\\\":\\\"out\\\",\\\"process_id\\\":0,\\\"app_name\\\":\\\"web\\\"}\"\n",
            ),
        ];
        for (f, deco, want) in cases {
            let (got, _) = app(&fmt(*f), Stream::Out, deco, b"hi\r", false);
            assert_eq!(got, *want, "{f:?} {deco:?}");
        }
        // The JSON wrapping of a continued piece carries the marker inside its message.
        let (got, _) = app(&fmt(OutputFormat::Raw), Stream::Err, &json, b"abc", true);
        assert!(got.starts_with("{\"message\":\"abc [pm-runtime: line continues]\",") && got.contains("\"type\":\"err\""), "{got}");
    }

    #[test]
    fn every_json_line_parses_whatever_the_bytes() {
        let f = fmt(OutputFormat::Json);
        let nasty: &[&[u8]] =
            &[b"", b"\"", b"\\", b"\x00\x01\x1f", b"\xff\xc3", b"\xf0\x9f\x98", "ok \u{2028} 😀".as_bytes(), b"\r\r", b"}{"];
        let decos = [Decoration::default(), Decoration::new(None, false, true), Decoration::new(Some("[\"]YYYY\\"), false, true)];
        let mut out = Vec::new();
        for line in nasty {
            for deco in &decos {
                for continued in [false, true] {
                    for stream in [Stream::Out, Stream::Err] {
                        f.app_line(&mut out, &AppTag { name: "we\"ird\\na\u{1}me", pm_id: 42 }, stream, deco, line, continued, &stamp());
                    }
                }
            }
            let msg = String::from_utf8_lossy(line);
            f.event(&mut out, &Event::runtime(Level::Error, &msg), &stamp());
            f.event(&mut out, &Event::process(Level::Info, &msg, AppTag { name: &msg, pm_id: 1 }, &msg), &stamp());
        }
        let text = String::from_utf8(out).unwrap();
        let mut n = 0;
        for l in text.split_terminator('\n') {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert!(v["timestamp"].is_string() && v["message"].is_string() && v["type"].is_string());
            n += 1;
        }
        assert_eq!(n, nasty.len() * (decos.len() * 4 + 2));
        // The message round-trips for valid UTF-8.
        let mut out = Vec::new();
        f.app_line(&mut out, &WEB, Stream::Out, &Decoration::default(), "tab\there \"q\" \u{1} é".as_bytes(), false, &stamp());
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["message"], "tab\there \"q\" \u{1} é");
    }

    #[test]
    fn every_format_ends_each_output_line_once() {
        for f in all_formats() {
            let fm = fmt(f);
            let mut out = Vec::new();
            fm.app_line(&mut out, &WEB, Stream::Out, &Decoration::default(), b"one", false, &stamp());
            assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1, "{f:?}");
            assert_eq!(out.last(), Some(&b'\n'));
            let mut out = Vec::new();
            fm.event(&mut out, &online(), &stamp());
            assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1, "{f:?}");
        }
    }

    #[test]
    fn colour_rule() {
        use std::ffi::OsStr;
        assert!(color_wanted(true, None));
        assert!(color_wanted(true, Some(OsStr::new(""))));
        assert!(!color_wanted(true, Some(OsStr::new("1"))));
        assert!(!color_wanted(false, None));
    }

    #[test]
    fn stamp_zones() {
        let s = stamp();
        assert_eq!(s.local(), s.utc());
        let l = Stamp::new(s.time());
        assert_eq!(l.utc(), s.utc());
        assert_eq!(l.utc().offset_secs, 0);
    }

    /// Throughput of framing + JSON formatting. Run with
    /// `cargo test --release -- --ignored --nocapture throughput`; expect well under a second for
    /// 1M lines of ~100 bytes on one core.
    #[test]
    #[ignore]
    fn throughput() {
        use super::super::framer::Framer;
        let mut input = Vec::new();
        for i in 0..1_000_000u32 {
            input.extend_from_slice(
                format!("{i:07} GET /api/v1/items?page=3 200 12.3ms \"Mozilla/5.0 (X11; Linux x86_64)\" ok\n").as_bytes(),
            );
        }
        for f in [OutputFormat::Raw, OutputFormat::Formatted { color: true }, OutputFormat::Json, OutputFormat::Logfmt] {
            let fm = fmt(f);
            let deco = Decoration::default();
            let start = std::time::Instant::now();
            let mut framer = Framer::new();
            let mut out = Vec::with_capacity(128 * 1024);
            let mut lines = 0u64;
            let mut bytes = 0usize;
            for read in input.chunks(64 * 1024) {
                let st = Stamp::new(SystemTime::now());
                framer.push(read, &mut |l, c| {
                    fm.app_line(&mut out, &WEB, Stream::Out, &deco, l, c, &st);
                    lines += 1;
                });
                bytes += out.len();
                out.clear();
            }
            let el = start.elapsed();
            println!("{f:?}: {lines} lines, {bytes} bytes in {el:?} ({:.0} lines/s)", lines as f64 / el.as_secs_f64());
            assert_eq!(lines, 1_000_000);
        }
    }
}
