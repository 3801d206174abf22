//! An app's own IPC messages: `@pm2/io`'s metrics and actions land in the table (bounded: an
//! app must not grow PID 1 for ever), the watchdog's heartbeat leaves its lag, and every other
//! message goes on the bus.

use std::sync::Arc;

use super::{Effect, State};
use crate::supervisor::schedule::Sign;

/// Custom actions (`axm:action`) kept per instance; one of more than 256 bytes of name or
/// 16 KiB of description, or beyond this count, is not kept.
const MAX_AXM_ACTIONS: usize = 64;

impl State {
    pub(super) fn app_message(&mut self, pm_id: u32, message: serde_json::Value, fx: &mut Vec<Effect>) {
        let Some(slot) = self.slots.get_mut(&pm_id) else { return };
        let kind = message.get("type").and_then(|t| t.as_str());
        // The preload's "main module has run": for the start schedule only, never on the bus.
        if kind == Some(crate::preload::STARTED) {
            return self.staged(pm_id, Sign::Started, fx);
        }
        // The watchdog's heartbeat: only its lag is kept (shown at the next publish), not an event.
        if kind == Some(crate::preload::HEARTBEAT) {
            slot.event_loop_lag = message.get("lag").and_then(|l| l.as_f64()).map(|ms| ms / 1000.0);
            return;
        }
        match (kind, message.get("data")) {
            (Some("axm:monitor"), Some(serde_json::Value::Object(data))) => {
                slot.axm_monitor = Arc::new(data.clone());
                fx.push(Effect::Publish);
            }
            (Some("axm:action"), Some(data)) => {
                let name = data.get("action_name");
                let fits = slot.axm_actions.len() < MAX_AXM_ACTIONS
                    && name.and_then(|n| n.as_str()).is_some_and(|n| !n.is_empty() && n.len() <= 256)
                    && data.to_string().len() <= 16 * 1024;
                if fits && !slot.axm_actions.iter().any(|a| a.get("action_name") == name) {
                    Arc::make_mut(&mut slot.axm_actions).push(data.clone());
                    fx.push(Effect::Publish);
                }
            }
            _ => {}
        }
        let name = self.apps[slot.app_index].name.clone();
        fx.push(Effect::AppMessage { pm_id, name, message: Arc::new(message) });
    }
}
