//! The planner's view of the event log: domain events in, recorded
//! envelopes out, with the world state kept in step with every append.
//!
//! Folding is contained per stream: an event that does not decode, or whose
//! fold panics, marks its stream [`Broken`] (with the position and the
//! error) and the rest of the world goes on, so the planner never
//! crash-loops on its own log.

use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};

use mentat_domain::audit::StatePoint;
use mentat_domain::event::{Event, EventEnvelope, Meta, SCHEMA_VERSION};
use mentat_domain::planner::World;
use mentat_store::{CommandRecord, ExpectedVersion, NewEvent, RecordedEvent, Store, StreamAppend};
use tokio::sync::Notify;

use crate::error::{Error, Result};

/// Page size when replaying the log.
const REPLAY_PAGE: i64 = 1_000;

/// Why a stream is not folded or decided any more until an operator acts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// The position of the event being folded, or the log's position when
    /// a decision failed.
    pub position: i64,
    /// What went wrong.
    pub error: String,
}

/// The events of one decision for one stream.
pub type StreamEvents = (String, Vec<(String, Event)>);

/// The log and the state folded from it. Only the planner's main task owns
/// one, so appends are decided against the state they were folded into.
pub struct Log {
    store: Store,
    versions: HashMap<String, i64>,
    /// The world as of the last event appended or replayed.
    pub world: World,
    /// Streams whose fold or decision failed, by stream.
    pub broken: BTreeMap<String, Broken>,
    /// Woken after every append, for the relay.
    pub appended: std::sync::Arc<Notify>,
}

impl Log {
    /// Open the log and replay it into a fresh world.
    pub async fn open(store: Store) -> Result<Self> {
        let mut log = Log {
            store,
            versions: HashMap::new(),
            world: World::default(),
            broken: BTreeMap::new(),
            appended: std::sync::Arc::new(Notify::new()),
        };
        log.catch_up().await?;
        tracing::info!(position = log.world.position, "log replayed");
        Ok(log)
    }

    /// Fold every event recorded after the world's position: after a
    /// replay, a conflict, or an append whose commit was not confirmed.
    pub async fn catch_up(&mut self) -> Result<()> {
        loop {
            let page = self
                .store
                .read_all(self.world.position, REPLAY_PAGE)
                .await?;
            if page.is_empty() {
                return Ok(());
            }
            for recorded in &page {
                self.versions
                    .insert(recorded.stream.clone(), recorded.version);
                if let Some((stream, broken)) = fold_recorded(&mut self.world, recorded) {
                    self.mark_broken(&stream, broken.position, broken.error);
                }
            }
        }
    }

    /// From now on, write only as the leader of `epoch`: every append is
    /// fenced by it.
    pub fn fence(&mut self, epoch: i64) {
        self.store = self.store.fenced(epoch);
    }

    /// The store underneath (for reads that the world does not keep).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Fold one event, containing a panic to its stream.
    fn fold(&mut self, envelope: &EventEnvelope) {
        if let Some((stream, broken)) = fold_envelope(&mut self.world, envelope) {
            self.mark_broken(&stream, broken.position, broken.error);
        }
    }

    /// Record that `stream` is broken at `position`.
    pub fn mark_broken(&mut self, stream: &str, position: i64, error: String) {
        tracing::error!(%stream, position, %error, "stream marked broken; the others go on");
        self.broken
            .insert(stream.to_owned(), Broken { position, error });
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
    ) -> Result<Option<String>> {
        self.append_batch(vec![(stream.to_owned(), events)], meta, command, now_ms)
            .await
    }

    /// Append the events of one decision to several streams, all or
    /// nothing, with `command` recorded in the same transaction; then fold
    /// them. Returns the first outcome when `command` was already recorded
    /// (nothing appended).
    pub async fn append_batch(
        &mut self,
        batch: Vec<StreamEvents>,
        meta: &Meta,
        command: Option<CommandRecord>,
        now_ms: i64,
    ) -> Result<Option<String>> {
        // Every event carries the epoch it was decided under.
        let meta = &Meta {
            epoch: self.store.epoch(),
            ..meta.clone()
        };
        let metadata = serde_json::to_string(meta).map_err(|e| Error::fatal("metadata", e))?;
        let mut appends = Vec::with_capacity(batch.len());
        for (stream, events) in &batch {
            let version = self.versions.get(stream).copied().unwrap_or(0);
            let events = events
                .iter()
                .map(|(id, event)| new_event(id, event, &metadata, now_ms))
                .collect::<Result<_>>()?;
            appends.push(StreamAppend {
                stream: stream.clone(),
                expected: if version == 0 {
                    ExpectedVersion::NoStream
                } else {
                    ExpectedVersion::Exact(version)
                },
                events,
            });
        }
        let appended = self.store.append_batch(appends, command).await?;
        if let Some(first) = appended.first().and_then(|a| a.duplicate.clone()) {
            return Ok(Some(first));
        }
        for ((stream, events), done) in batch.into_iter().zip(appended) {
            let version = done.stream_version - events.len() as i64;
            for (i, (id, event)) in events.into_iter().enumerate() {
                let envelope = EventEnvelope {
                    id,
                    position: done.first_position + i as i64,
                    stream: stream.clone(),
                    version: version + 1 + i as i64,
                    schema_version: SCHEMA_VERSION,
                    recorded_at_ms: now_ms,
                    meta: meta.clone(),
                    event,
                };
                self.fold(&envelope);
            }
            self.versions.insert(stream, done.stream_version);
        }
        self.appended.notify_one();
        Ok(None)
    }
}

/// Fold one recorded event into `world`, as the planner does: an event
/// that does not decode, or whose fold panics, breaks its stream (returned
/// with why) and the world goes on.
fn fold_recorded(world: &mut World, recorded: &RecordedEvent) -> Option<(String, Broken)> {
    match envelope(recorded) {
        Ok(envelope) => fold_envelope(world, &envelope),
        Err(error) => {
            world.position = recorded.position;
            let broken = Broken {
                position: recorded.position,
                error,
            };
            Some((recorded.stream.clone(), broken))
        }
    }
}

/// Fold one event into `world`, containing a panic to its stream.
fn fold_envelope(world: &mut World, envelope: &EventEnvelope) -> Option<(String, Broken)> {
    let folded = catch_unwind(AssertUnwindSafe(|| world.apply(envelope)));
    let panic = folded.err()?;
    world.position = envelope.position;
    let error = format!(
        "folding {}: {}",
        envelope.event.type_name(),
        panic_message(&panic)
    );
    let broken = Broken {
        position: envelope.position,
        error,
    };
    Some((envelope.stream.clone(), broken))
}

/// The world as the log folded into it up to `point`, with the streams
/// whose fold broke on the way, and the recording time of the last event
/// folded: the very fold [`Log::open`] replays with, stopped early.
/// (Streams a failed *decision* marked broken are not in the log, so they
/// are not here.)
pub async fn replay_until(
    store: &Store,
    point: StatePoint,
) -> Result<(World, BTreeMap<String, Broken>, Option<i64>)> {
    let mut world = World::default();
    let mut broken = BTreeMap::new();
    let mut last_at = None;
    loop {
        let page = store.read_all(world.position, REPLAY_PAGE).await?;
        if page.is_empty() {
            return Ok((world, broken, last_at));
        }
        for recorded in &page {
            if point.passed(recorded.position, recorded.recorded_at_ms) {
                return Ok((world, broken, last_at));
            }
            if let Some((stream, b)) = fold_recorded(&mut world, recorded) {
                broken.insert(stream, b);
            }
            last_at = Some(recorded.recorded_at_ms);
        }
    }
}

pub(crate) fn new_event(id: &str, event: &Event, metadata: &str, now_ms: i64) -> Result<NewEvent> {
    Ok(NewEvent {
        id: id.to_owned(),
        event_type: event.type_name().to_owned(),
        schema_version: SCHEMA_VERSION,
        payload: serde_json::to_string(event).map_err(|e| Error::fatal("encoding an event", e))?,
        metadata: metadata.to_owned(),
        recorded_at_ms: now_ms,
    })
}

/// What a caught panic said.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// The domain envelope of a recorded event, or why it does not decode.
pub fn envelope(recorded: &RecordedEvent) -> std::result::Result<EventEnvelope, String> {
    let event: Event = serde_json::from_str(&recorded.payload).map_err(|e| {
        format!(
            "event at position {} ({}) does not decode: {e}",
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
