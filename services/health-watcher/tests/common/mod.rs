//! What the tests share: playing the planner's relay.

use std::sync::atomic::{AtomicI64, Ordering};

use mentat_bus::Bus;
use mentat_domain::event::{Event, EventEnvelope, Meta};

/// Publishes events of the service `web` to `MENTAT_EVENTS` as the
/// planner's relay does once the log has recorded them, at positions 1, 2, ….
#[derive(Debug, Default)]
pub struct Relay {
    position: AtomicI64,
}

impl Relay {
    /// Publish `event` as the next one of the log.
    pub async fn record(&self, bus: &Bus, event: Event) {
        let position = self.position.fetch_add(1, Ordering::SeqCst) + 1;
        let env = EventEnvelope {
            id: mentat_bus::new_id(),
            position,
            stream: "web".into(),
            version: position,
            schema_version: 1,
            recorded_at_ms: mentat_bus::now_ms(),
            meta: Meta::default(),
            event,
        };
        bus.publish_event(&env)
            .await
            .expect("the event is published");
    }
}
