//! The planner's view of the event log: domain events in, recorded
//! envelopes out, with the world state kept in step with every append.

use std::collections::HashMap;

use anyhow::Context as _;
use mentat_domain::event::{Event, EventEnvelope, Meta, SCHEMA_VERSION};
use mentat_domain::planner::World;
use mentat_store::{CommandRecord, ExpectedVersion, NewEvent, RecordedEvent, Store};
use tokio::sync::Notify;

/// Page size when replaying the log.
const REPLAY_PAGE: i64 = 1_000;

/// The log and the state folded from it. Only the planner's main task owns
/// one, so appends are decided against the state they were folded into.
pub struct Log {
    store: Store,
    versions: HashMap<String, i64>,
    /// The world as of the last event appended or replayed.
    pub world: World,
    /// Woken after every append, for the relay.
    pub appended: std::sync::Arc<Notify>,
}

impl Log {
    /// Open the log and replay it into a fresh world.
    pub async fn open(store: Store) -> anyhow::Result<Self> {
        let mut log = Log {
            store,
            versions: HashMap::new(),
            world: World::default(),
            appended: std::sync::Arc::new(Notify::new()),
        };
        let mut after = 0;
        loop {
            let page = log.store.read_all(after, REPLAY_PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.position;
            for recorded in &page {
                let envelope = envelope(recorded)?;
                log.versions
                    .insert(envelope.stream.clone(), envelope.version);
                log.world.apply(&envelope);
            }
        }
        tracing::info!(position = log.world.position, "log replayed");
        Ok(log)
    }

    /// The store underneath (for reads that the world does not keep).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Append `events` to `stream` in one transaction and fold them into the
    /// world. `command` makes the append idempotent: when its id was already
    /// recorded nothing is appended and the first outcome is returned.
    pub async fn append(
        &mut self,
        stream: &str,
        events: Vec<(String, Event)>,
        meta: &Meta,
        command: Option<CommandRecord>,
        now_ms: i64,
    ) -> anyhow::Result<Option<String>> {
        let version = self.versions.get(stream).copied().unwrap_or(0);
        let metadata = serde_json::to_string(meta)?;
        let new: Vec<NewEvent> = events
            .iter()
            .map(|(id, event)| {
                Ok(NewEvent {
                    id: id.clone(),
                    event_type: event.type_name().to_owned(),
                    schema_version: SCHEMA_VERSION,
                    payload: serde_json::to_string(event)?,
                    metadata: metadata.clone(),
                    recorded_at_ms: now_ms,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        let expected = if version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(version)
        };
        let appended = self
            .store
            .append(stream, expected, command, new)
            .await
            .with_context(|| format!("appending to stream {stream}"))?;
        if appended.duplicate.is_some() {
            return Ok(appended.duplicate);
        }
        for (i, (id, event)) in events.into_iter().enumerate() {
            let envelope = EventEnvelope {
                id,
                position: appended.first_position + i as i64,
                stream: stream.to_owned(),
                version: version + 1 + i as i64,
                schema_version: SCHEMA_VERSION,
                recorded_at_ms: now_ms,
                meta: meta.clone(),
                event,
            };
            self.world.apply(&envelope);
        }
        self.versions
            .insert(stream.to_owned(), appended.stream_version);
        self.appended.notify_one();
        Ok(None)
    }
}

/// The domain envelope of a recorded event.
pub fn envelope(recorded: &RecordedEvent) -> anyhow::Result<EventEnvelope> {
    let event: Event = serde_json::from_str(&recorded.payload).with_context(|| {
        format!(
            "event at position {} ({}) does not decode",
            recorded.position, recorded.event_type
        )
    })?;
    let meta: Meta = serde_json::from_str(&recorded.metadata).unwrap_or_default();
    Ok(EventEnvelope {
        id: recorded.id.clone(),
        position: recorded.position,
        stream: recorded.stream.clone(),
        version: recorded.version,
        schema_version: recorded.schema_version,
        recorded_at_ms: recorded.recorded_at_ms,
        meta,
        event,
    })
}
