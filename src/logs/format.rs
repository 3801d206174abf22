//! The shapes of the runtime's output: one function per line, appending into a caller buffer.
//!
//! | format | app line | runtime event |
//! |---|---|---|
//! | raw (default) | the line as written; app stderr → our stderr | `2026-11-21T16:04:44: PM2 log: App [web:0] online` (warn/error → stderr, as PM2's console) |
//! | `--formatted` | `0|web  | hello` (green/red prefix on a TTY) | `PM2    | App [web:0] online` (blue) |
//! | `--json` | `{"message":"hello","timestamp":"…Z","type":"out","process_id":0,"app_name":"web"}` | `{"message":…,"timestamp":…,"type":"process_event","status":"online","process_id":0,"app_name":"web"}` or `{…,"type":"PM2","level":"info","app_name":"PM2"}` |
//! | `--format` | `timestamp=2026-11-21-16:05:48+0000 app=web id=0 type=out message=hello` | `timestamp=… app=PM2 id=- type=PM2 level=info message="…"` |
//!
//! In every format but raw, everything goes to stdout, so a log router reads one stream. A piece
//! of an over-long line that continues on the next line ends with [`CONTINUATION_MARKER`].
//! Per-app decoration (`log_date_format` / `time` prefix, `log_type: json`) is applied to the line
//! first, as PM2 does before its bus.

use std::cell::OnceCell;
use std::time::SystemTime;

use chrono::{DateTime, Local, Utc};

use super::datefmt::DateFormat;

/// Appended to every piece of a line longer than the framer's cap except the last.
pub const CONTINUATION_MARKER: &str = " [pm-runtime: line continues]";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Out,
    Err,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Raw,
    Formatted { color: bool },
    Json,
    Logfmt,
}

#[derive(Debug, Clone, Copy)]
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
    fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// A runtime event: a line of the runtime itself.
pub struct Event<'a> {
    pub level: Level,
    pub message: &'a str,
    pub app: Option<AppTag<'a>>,
    /// PM2's process event name (start, online, exit, stop, restart, errored, …), if any.
    pub status: Option<&'a str>,
}

/// One instant, with its renderings computed at most once (a whole read shares one).
pub struct Stamp {
    time: SystemTime,
    iso: OnceCell<String>,
    local: OnceCell<DateTime<Local>>,
}

impl Stamp {
    pub fn new(time: SystemTime) -> Self {
        Self { time, iso: OnceCell::new(), local: OnceCell::new() }
    }
    /// UTC, ISO 8601 with milliseconds (`2026-11-21T16:05:44.972Z`).
    fn iso(&self) -> &str {
        self.iso.get_or_init(|| DateTime::<Utc>::from(self.time).format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
    }
    fn local(&self) -> &DateTime<Local> {
        self.local.get_or_init(|| DateTime::<Local>::from(self.time))
    }
}

/// Per-app decoration, built once per app.
#[derive(Debug, Clone, Default)]
pub struct Decoration {
    date: Option<DateFormat>,
    json: bool,
}

impl Decoration {
    /// `time: true` means `YYYY-MM-DDTHH:mm:ss` and wins over `log_date_format`, as in PM2.
    pub fn new(log_date_format: Option<&str>, time: bool, log_type_json: bool) -> Self {
        let date = if time { Some("YYYY-MM-DDTHH:mm:ss") } else { log_date_format.filter(|f| !f.is_empty()) };
        Self { date: date.map(DateFormat::parse), json: log_type_json }
    }

    fn is_plain(&self) -> bool {
        self.date.is_none() && !self.json
    }

    /// The decorated line (PM2's `log_type: json` object, or `<date>: <line>`).
    fn apply(&self, tag: &AppTag, stream: Stream, line: &[u8], stamp: &Stamp) -> Vec<u8> {
        let mut out = Vec::with_capacity(line.len() + 64);
        if self.json {
            out.extend_from_slice(b"{\"message\":");
            json_str(&mut out, line);
            out.extend_from_slice(b",\"timestamp\":");
            match &self.date {
                Some(d) => json_str(&mut out, d.format(stamp.local()).as_bytes()),
                None => json_str(&mut out, stamp.iso().as_bytes()),
            }
            out.extend_from_slice(b",\"type\":");
            out.extend_from_slice(if stream == Stream::Out { b"\"out\"" } else { b"\"err\"" });
            out.extend_from_slice(format!(",\"process_id\":{},\"app_name\":", tag.pm_id).as_bytes());
            json_str(&mut out, tag.name.as_bytes());
            out.push(b'}');
        } else if let Some(d) = &self.date {
            out.extend_from_slice(d.format(stamp.local()).as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(line);
        }
        out
    }
}

pub struct Formatter {
    format: OutputFormat,
    /// `--formatted`: width of the `<id>|<name>` column.
    width: usize,
    /// Runtime event date format (`PM2_LOG_DATE_FORMAT`, default `YYYY-MM-DDTHH:mm:ss`).
    event_date: DateFormat,
}

const GREEN: &str = "\x1b[32m";
const RED: &str = "\x1b[31m";
const BLUE: &str = "\x1b[34m";
const RESET: &str = "\x1b[39m";

impl Formatter {
    pub fn new(format: OutputFormat, apps: &[AppTag]) -> Self {
        let width = apps.iter().map(|a| a.pm_id.to_string().len() + 1 + a.name.chars().count() + 1).max().unwrap_or(0).max(4);
        let event_date =
            std::env::var("PM2_LOG_DATE_FORMAT").ok().filter(|f| !f.is_empty()).unwrap_or_else(|| "YYYY-MM-DDTHH:mm:ss".into());
        Self { format, width, event_date: DateFormat::parse(&event_date) }
    }

    /// Appends one output line for one app line; returns the stream it goes to.
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
        let decorated;
        let line = if deco.is_plain() {
            line
        } else {
            decorated = deco.apply(tag, stream, line, stamp);
            &decorated
        };
        let marker: &[u8] = if continued { CONTINUATION_MARKER.as_bytes() } else { b"" };
        match self.format {
            OutputFormat::Raw => {
                out.extend_from_slice(line);
                out.extend_from_slice(marker);
                out.push(b'\n');
                return stream;
            }
            OutputFormat::Formatted { color } => {
                let label = format!("{}|{}", tag.pm_id, tag.name);
                self.prefix(out, &label, color.then_some(if stream == Stream::Out { GREEN } else { RED }));
                out.extend_from_slice(strip_cr(line));
                out.extend_from_slice(marker);
                out.push(b'\n');
            }
            OutputFormat::Json => {
                let mut msg = strip_cr(line).to_vec();
                msg.extend_from_slice(marker);
                out.extend_from_slice(b"{\"message\":");
                json_str(out, &msg);
                out.extend_from_slice(b",\"timestamp\":\"");
                out.extend_from_slice(stamp.iso().as_bytes());
                out.extend_from_slice(if stream == Stream::Out { b"\",\"type\":\"out\"" } else { b"\",\"type\":\"err\"" });
                out.extend_from_slice(format!(",\"process_id\":{},\"app_name\":", tag.pm_id).as_bytes());
                json_str(out, tag.name.as_bytes());
                out.extend_from_slice(b"}\n");
            }
            OutputFormat::Logfmt => {
                let mut msg = strip_cr(line).to_vec();
                msg.extend_from_slice(marker);
                self.logfmt_head(out, stamp, tag.name.as_bytes(), &tag.pm_id.to_string());
                out.extend_from_slice(if stream == Stream::Out { b" type=out message=" } else { b" type=error message=" });
                logfmt_value(out, &msg);
                out.push(b'\n');
            }
        }
        Stream::Out
    }

    /// Appends one output line for a runtime event; returns the stream it goes to.
    pub fn event(&self, out: &mut Vec<u8>, ev: &Event, stamp: &Stamp) -> Stream {
        match self.format {
            OutputFormat::Raw => {
                let method = match ev.level {
                    Level::Info => "log",
                    Level::Warn => "warn",
                    Level::Error => "error",
                };
                out.extend_from_slice(format!("{}: PM2 {method}: {}\n", self.event_date.format(stamp.local()), ev.message).as_bytes());
                return if ev.level == Level::Info { Stream::Out } else { Stream::Err };
            }
            OutputFormat::Formatted { color } => {
                self.prefix(out, "PM2", color.then_some(BLUE));
                out.extend_from_slice(ev.message.as_bytes());
                out.push(b'\n');
            }
            OutputFormat::Json => {
                out.extend_from_slice(b"{\"message\":");
                json_str(out, ev.message.as_bytes());
                out.extend_from_slice(b",\"timestamp\":\"");
                out.extend_from_slice(stamp.iso().as_bytes());
                out.push(b'"');
                match (ev.status, ev.app) {
                    (Some(status), Some(app)) => {
                        out.extend_from_slice(b",\"type\":\"process_event\",\"status\":");
                        json_str(out, status.as_bytes());
                        out.extend_from_slice(format!(",\"process_id\":{},\"app_name\":", app.pm_id).as_bytes());
                        json_str(out, app.name.as_bytes());
                    }
                    _ => {
                        out.extend_from_slice(
                            format!(",\"type\":\"PM2\",\"level\":\"{}\",\"app_name\":\"PM2\"", ev.level.as_str()).as_bytes(),
                        );
                    }
                }
                out.extend_from_slice(b"}\n");
            }
            OutputFormat::Logfmt => {
                match (ev.status, ev.app) {
                    (Some(status), Some(app)) => {
                        self.logfmt_head(out, stamp, app.name.as_bytes(), &app.pm_id.to_string());
                        out.extend_from_slice(b" type=process_event status=");
                        logfmt_value(out, status.as_bytes());
                    }
                    _ => {
                        self.logfmt_head(out, stamp, b"PM2", "-");
                        out.extend_from_slice(format!(" type=PM2 level={}", ev.level.as_str()).as_bytes());
                    }
                }
                out.extend_from_slice(b" message=");
                logfmt_value(out, ev.message.as_bytes());
                out.push(b'\n');
            }
        }
        Stream::Out
    }

    fn prefix(&self, out: &mut Vec<u8>, label: &str, color: Option<&str>) {
        if let Some(c) = color {
            out.extend_from_slice(c.as_bytes());
        }
        out.extend_from_slice(label.as_bytes());
        for _ in label.chars().count()..self.width {
            out.push(b' ');
        }
        out.extend_from_slice(b"| ");
        if color.is_some() {
            out.extend_from_slice(RESET.as_bytes());
        }
    }

    fn logfmt_head(&self, out: &mut Vec<u8>, stamp: &Stamp, app: &[u8], id: &str) {
        out.extend_from_slice(b"timestamp=");
        out.extend_from_slice(stamp.local().format("%Y-%m-%d-%H:%M:%S%z").to_string().as_bytes());
        out.extend_from_slice(b" app=");
        logfmt_value(out, app);
        out.extend_from_slice(b" id=");
        out.extend_from_slice(id.as_bytes());
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Appends `s` as a JSON string (invalid UTF-8 replaced by U+FFFD, control characters escaped).
pub fn json_str(out: &mut Vec<u8>, s: &[u8]) {
    let s = String::from_utf8_lossy(s);
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends a logfmt value, quoted when empty or when it holds spaces, `=`, quotes or controls.
fn logfmt_value(out: &mut Vec<u8>, v: &[u8]) {
    let plain = !v.is_empty() && v.iter().all(|&b| b > b' ' && b != b'=' && b != b'"' && b != 0x7f);
    if plain {
        out.extend_from_slice(v);
    } else {
        json_str(out, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn stamp() -> Stamp {
        Stamp::new(UNIX_EPOCH + Duration::from_millis(1_795_622_744_972))
    }
    fn tags() -> Vec<AppTag<'static>> {
        vec![AppTag { name: "web", pm_id: 0 }, AppTag { name: "worker", pm_id: 1 }]
    }
    fn line(f: OutputFormat, stream: Stream, text: &[u8], continued: bool) -> (String, Stream) {
        // Local time (logfmt, dates) depends on TZ: those tests check only the fixed parts.
        let fm = Formatter::new(f, &tags());
        let mut out = Vec::new();
        let s = fm.app_line(&mut out, &AppTag { name: "web", pm_id: 0 }, stream, &Decoration::default(), text, continued, &stamp());
        (String::from_utf8(out).unwrap(), s)
    }

    #[test]
    fn raw_shapes() {
        assert_eq!(line(OutputFormat::Raw, Stream::Out, b"hello", false), ("hello\n".into(), Stream::Out));
        assert_eq!(line(OutputFormat::Raw, Stream::Err, b"", false), ("\n".into(), Stream::Err));
        assert_eq!(line(OutputFormat::Raw, Stream::Out, b"abc", true).0, format!("abc{CONTINUATION_MARKER}\n"));
    }

    #[test]
    fn formatted_shapes() {
        assert_eq!(
            line(OutputFormat::Formatted { color: false }, Stream::Err, b"hello", false),
            ("0|web    | hello\n".into(), Stream::Out)
        );
        assert_eq!(line(OutputFormat::Formatted { color: true }, Stream::Out, b"hi", false).0, "\x1b[32m0|web    | \x1b[39mhi\n");
        let fm = Formatter::new(OutputFormat::Formatted { color: false }, &tags());
        let mut out = Vec::new();
        fm.event(&mut out, &Event { level: Level::Info, message: "App [web:0] online", app: None, status: None }, &stamp());
        assert_eq!(String::from_utf8(out).unwrap(), "PM2      | App [web:0] online\n");
    }

    #[test]
    fn json_shapes() {
        let (s, stream) = line(OutputFormat::Json, Stream::Err, b"say \"hi\"\t\x01\r", false);
        assert_eq!(stream, Stream::Out);
        assert_eq!(
            s,
            "{\"message\":\"say \\\"hi\\\"\\t\\u0001\",\"timestamp\":\"2026-11-25T16:05:44.972Z\",\"type\":\"err\",\"process_id\":0,\"app_name\":\"web\"}\n"
        );
        serde_json::from_str::<serde_json::Value>(&s).unwrap();
        let fm = Formatter::new(OutputFormat::Json, &tags());
        let mut out = Vec::new();
        fm.event(
            &mut out,
            &Event {
                level: Level::Info,
                message: "App [web:0] online",
                app: Some(AppTag { name: "web", pm_id: 0 }),
                status: Some("online"),
            },
            &stamp(),
        );
        fm.event(&mut out, &Event { level: Level::Warn, message: "careful", app: None, status: None }, &stamp());
        let text = String::from_utf8(out).unwrap();
        let mut it = text.lines();
        assert_eq!(
            it.next().unwrap(),
            "{\"message\":\"App [web:0] online\",\"timestamp\":\"2026-11-25T16:05:44.972Z\",\"type\":\"process_event\",\"status\":\"online\",\"process_id\":0,\"app_name\":\"web\"}"
        );
        assert_eq!(
            it.next().unwrap(),
            "{\"message\":\"careful\",\"timestamp\":\"2026-11-25T16:05:44.972Z\",\"type\":\"PM2\",\"level\":\"warn\",\"app_name\":\"PM2\"}"
        );
        // Invalid UTF-8 still yields valid JSON.
        let (s, _) = line(OutputFormat::Json, Stream::Out, b"\xff\xfe ok", false);
        serde_json::from_str::<serde_json::Value>(&s).unwrap();
    }

    #[test]
    fn logfmt_shapes() {
        let (s, _) = line(OutputFormat::Logfmt, Stream::Err, b"hello world", false);
        let (head, tail) = s.split_once(" app=").unwrap();
        assert!(head.starts_with("timestamp=2026-11-2"), "{head}");
        assert_eq!(tail, "web id=0 type=error message=\"hello world\"\n");
        let (s, _) = line(OutputFormat::Logfmt, Stream::Out, b"plain", false);
        assert!(s.ends_with(" app=web id=0 type=out message=plain\n"), "{s}");
        let (s, _) = line(OutputFormat::Logfmt, Stream::Out, b"", false);
        assert!(s.ends_with(" message=\"\"\n"), "{s}");
    }

    #[test]
    fn decorations() {
        let fm = Formatter::new(OutputFormat::Raw, &tags());
        let tag = AppTag { name: "web", pm_id: 3 };
        let mut out = Vec::new();
        fm.app_line(&mut out, &tag, Stream::Out, &Decoration::new(None, false, true), b"x", false, &stamp());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"message\":\"x\",\"timestamp\":\"2026-11-25T16:05:44.972Z\",\"type\":\"out\",\"process_id\":3,\"app_name\":\"web\"}\n"
        );
        let mut out = Vec::new();
        fm.app_line(&mut out, &tag, Stream::Out, &Decoration::new(Some("[day] D"), false, false), b"x", false, &stamp());
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("day 2") && s.ends_with(": x\n"), "{s}");
    }
}
