//! STAND-IN (replaced by the real formatter).
use std::time::SystemTime;
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
pub struct Event<'a> {
    pub level: Level,
    pub message: &'a str,
    pub app: Option<AppTag<'a>>,
    pub status: Option<&'a str>,
}
pub struct Decoration;
impl Decoration {
    pub fn new(_f: Option<&str>, _time: bool, _json: bool) -> Self {
        Decoration
    }
}
pub struct Formatter {
    format: OutputFormat,
}
impl Formatter {
    pub fn new(format: OutputFormat, _apps: &[AppTag]) -> Self {
        Self { format }
    }
    pub fn app_line(
        &self,
        out: &mut Vec<u8>,
        _tag: &AppTag,
        stream: Stream,
        _d: &Decoration,
        line: &[u8],
        _c: bool,
        _now: SystemTime,
    ) -> Stream {
        let _ = self.format;
        out.extend_from_slice(line);
        out.push(b'\n');
        stream
    }
    pub fn event(&self, out: &mut Vec<u8>, ev: &Event, _now: SystemTime) -> Stream {
        out.extend_from_slice(format!("PM2 log: {}\n", ev.message).as_bytes());
        Stream::Out
    }
}
