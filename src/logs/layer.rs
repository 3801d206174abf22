//! A `tracing` layer that turns the runtime's own events into log lines on the same writer as
//! the apps' lines, in the same format (`--json` output stays pure JSON, line by line).
//!
//! Events carry an optional `app` (name), `id` (pm_id) and `status` (PM2's process event name).

use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing::{Level as TLevel, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;

use super::format::{AppTag, Event, Level};
use super::hub::LogHub;

pub struct HubLayer {
    hub: LogHub,
    max_level: TLevel,
}

impl HubLayer {
    pub fn new(hub: LogHub, max_level: TLevel) -> Self {
        Self { hub, max_level }
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    app: Option<String>,
    id: Option<u32>,
    status: Option<String>,
    /// A death certificate as JSON (`--json` output carries it as an `exit` object).
    exit: Option<String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "app" => self.app = Some(value.to_string()),
            "status" => self.status = Some(value.to_string()),
            "exit" => self.exit = Some(value.to_string()),
            "message" => self.message.push_str(value),
            other => {
                let _ = write!(self.message, " {other}={value}");
            }
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "id" => self.id = u32::try_from(value).ok(),
            other => {
                let _ = write!(self.message, " {other}={value}");
            }
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        match field.name() {
            "id" => self.id = u32::try_from(value).ok(),
            other => {
                let _ = write!(self.message, " {other}={value}");
            }
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            "app" => self.app = Some(format!("{value:?}").trim_matches('"').to_string()),
            "status" => self.status = Some(format!("{value:?}").trim_matches('"').to_string()),
            "id" => self.id = format!("{value:?}").parse().ok(),
            "exit" => self.exit = Some(format!("{value:?}")),
            other => {
                let _ = write!(self.message, " {other}={value:?}");
            }
        }
    }
}

impl<S: Subscriber> Layer<S> for HubLayer {
    fn enabled(&self, meta: &tracing::Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        *meta.level() <= self.max_level
    }

    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if *event.metadata().level() > self.max_level {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        let level = match *event.metadata().level() {
            TLevel::ERROR => Level::Error,
            TLevel::WARN => Level::Warn,
            _ => Level::Info,
        };
        let app = match (&f.app, f.id) {
            (Some(name), Some(pm_id)) => Some(AppTag { name, pm_id }),
            _ => None,
        };
        self.hub.event(&Event { level, message: &f.message, app, status: f.status.as_deref(), exit: f.exit.as_deref() });
    }
}
