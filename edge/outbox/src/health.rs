//! Health events: a component going down, degrading or recovering, as `health` events in the
//! outbox (so central learns of an outage after it, in order) and in the log.
//!
//! Only transitions are reported: a broker that refuses us for three days is one `down` event
//! and one `up` event, not a flood.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::json;

use crate::Outbox;
use acsgd_contract::envelope::Event;

/// A component's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Up,
    Degraded,
    Down,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Up => "up",
            State::Degraded => "degraded",
            State::Down => "down",
        }
    }
}

/// Reports health transitions into the outbox.
pub struct Health {
    outbox: Outbox,
    last: Mutex<HashMap<String, State>>,
}

impl Health {
    pub fn new(outbox: Outbox) -> Health {
        Health {
            outbox,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Records `component`'s state; emits a `health` event only if it changed. One-off
    /// happenings (a quarantine) use [`Health::event`] instead.
    pub async fn report(&self, component: &str, state: State, reason: &str) {
        {
            let mut last = self.last.lock().expect("health lock");
            let prev = last.insert(component.to_string(), state);
            // A component seen for the first time as up is not news.
            if prev == Some(state) || (prev.is_none() && state == State::Up) {
                return;
            }
        }
        self.event(component, state, reason, serde_json::Value::Null)
            .await;
    }

    /// Emits a `health` event unconditionally.
    pub async fn event(
        &self,
        component: &str,
        state: State,
        reason: &str,
        detail: serde_json::Value,
    ) {
        match state {
            State::Up => tracing::info!(component, reason, "health: up"),
            State::Degraded => tracing::warn!(component, reason, "health: degraded"),
            State::Down => tracing::error!(component, reason, "health: down"),
        }
        let mut body = json!({"component": component, "state": state.as_str(), "reason": reason});
        if !detail.is_null() {
            body["detail"] = detail;
        }
        if let Err(e) = self
            .outbox
            .append(Event::now(acsgd_contract::envelope::Kind::Health, body))
            .await
        {
            tracing::error!(component, error = %e, "could not record a health event");
        }
    }
}
