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
use mentat_domain::replay::Decided;
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
    /// Where the replays of the log leave worlds for the past-state
    /// queries, so that even the first query folds from a snapshot.
    snapshots: Option<std::sync::Arc<std::sync::Mutex<Snapshots>>>,
    /// The latest recording time of any event folded so far.
    latest_ms: i64,
}

impl Log {
    /// Open the log and replay it into a fresh world.
    pub async fn open(store: Store) -> Result<Self> {
        Log::open_keeping(store, None).await
    }

    /// [`Log::open`], leaving snapshots in `snapshots` as the past-state
    /// queries do ([`replay_until`]) whenever a replay passes one that is
    /// due.
    pub async fn open_keeping(
        store: Store,
        snapshots: Option<std::sync::Arc<std::sync::Mutex<Snapshots>>>,
    ) -> Result<Self> {
        let mut log = Log {
            store,
            versions: HashMap::new(),
            world: World::default(),
            broken: BTreeMap::new(),
            appended: std::sync::Arc::new(Notify::new()),
            snapshots,
            latest_ms: i64::MIN,
        };
        log.catch_up().await?;
        tracing::info!(position = log.world.position, "log replayed");
        Ok(log)
    }

    /// Fold every event recorded after the world's position: after a
    /// replay, a conflict, or an append whose commit was not confirmed.
    pub async fn catch_up(&mut self) -> Result<()> {
        let mut pages = self.store.pages(self.world.position, REPLAY_PAGE);
        loop {
            let page = pages.next().await?;
            if page.is_empty() {
                return Ok(());
            }
            for recorded in &page {
                match self.versions.get_mut(&recorded.stream) {
                    Some(version) => *version = recorded.version,
                    None => {
                        self.versions
                            .insert(recorded.stream.clone(), recorded.version);
                    }
                }
                if let Some((stream, broken)) = fold_recorded(&mut self.world, recorded) {
                    self.mark_broken(&stream, broken.position, broken.error);
                }
                self.latest_ms = self.latest_ms.max(recorded.recorded_at_ms);
                if let Some(snapshots) = &self.snapshots {
                    lock(snapshots).offer(recorded, self.latest_ms, &self.world, &self.broken);
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
        self.latest_ms = self.latest_ms.max(envelope.recorded_at_ms);
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
        // Every event carries the epoch it was decided under; the first
        // one how the decision was taken, with how many events it has.
        let total: usize = batch.iter().map(|(_, events)| events.len()).sum();
        let first = Meta {
            epoch: self.store.epoch(),
            decided: meta.decided.clone().map(|d| Decided {
                events: u32::try_from(total).unwrap_or(u32::MAX),
                ..d
            }),
            ..meta.clone()
        };
        let rest = Meta {
            decided: None,
            ..first.clone()
        };
        let to_json = |m: &Meta| serde_json::to_string(m).map_err(|e| Error::fatal("metadata", e));
        let metadata = [to_json(&first)?, to_json(&rest)?];
        let meta_of = |i: usize| if i == 0 { &first } else { &rest };
        let mut appends = Vec::with_capacity(batch.len());
        let mut i = 0;
        for (stream, events) in &batch {
            let version = self.versions.get(stream).copied().unwrap_or(0);
            let events = events
                .iter()
                .map(|(id, event)| {
                    i += 1;
                    new_event(id, event, &metadata[usize::from(i > 1)], now_ms)
                })
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
        let started = std::time::Instant::now();
        let appended = self.store.append_batch(appends, command).await?;
        metrics::histogram!(crate::metrics::APPEND_DURATION).record(started.elapsed());
        if let Some(first) = appended.first().and_then(|a| a.duplicate.clone()) {
            return Ok(Some(first));
        }
        let mut folded = 0;
        for ((stream, events), done) in batch.into_iter().zip(appended) {
            let version = done.stream_version - events.len() as i64;
            for (i, (id, event)) in events.into_iter().enumerate() {
                let meta = meta_of(folded);
                folded += 1;
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
                metrics::counter!(crate::metrics::EVENTS_APPENDED_TOTAL, "event" => envelope.event.type_name())
                    .increment(1);
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

/// Worlds folded up to a position, kept by the past-state queries so that
/// the next one folds from the nearest instead of from position 1. One is
/// taken every `every` events while folding, up to `max` of them (past
/// that, none more: the memory they hold is bounded). Each remembers the
/// hash of the event at its position and is used only while the log still
/// has that hash there: the chain makes it the hash of the whole prefix
/// the snapshot summarises.
#[derive(Debug)]
pub struct Snapshots {
    every: i64,
    max: usize,
    kept: BTreeMap<i64, Snapshot>,
}

#[derive(Debug, Clone)]
struct Snapshot {
    world: World,
    broken: BTreeMap<String, Broken>,
    hash: String,
    recorded_at_ms: i64,
    /// The latest recording time of any event up to here: a snapshot
    /// serves a point in time only if none of its events is after it.
    latest_ms: i64,
}

/// Events between two snapshots of the past-state queries.
pub const SNAPSHOT_EVERY: i64 = 50_000;
/// Most snapshots kept: 64 × 50,000 events covers a log of 3.2 million.
pub const MAX_SNAPSHOTS: usize = 64;

impl Default for Snapshots {
    fn default() -> Self {
        Snapshots::new(SNAPSHOT_EVERY, MAX_SNAPSHOTS)
    }
}

impl Snapshots {
    /// One snapshot every `every` events, at most `max`.
    pub fn new(every: i64, max: usize) -> Self {
        Snapshots {
            every: every.max(1),
            max,
            kept: BTreeMap::new(),
        }
    }

    /// How many are kept.
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// Keep a snapshot of `world` after `recorded` when one is due there:
    /// at every `every`-th position, while fewer than `max` are kept.
    /// `latest_ms` is the latest recording time of any event up to it.
    fn offer(
        &mut self,
        recorded: &RecordedEvent,
        latest_ms: i64,
        world: &World,
        broken: &BTreeMap<String, Broken>,
    ) {
        let due = recorded.position % self.every == 0
            && self.kept.len() < self.max
            && !self.kept.contains_key(&recorded.position);
        if due {
            let snap = Snapshot {
                world: world.clone(),
                broken: broken.clone(),
                hash: recorded.hash.clone(),
                recorded_at_ms: recorded.recorded_at_ms,
                latest_ms,
            };
            self.kept.insert(recorded.position, snap);
        }
    }

    /// The latest snapshot that lies before `point`.
    fn before(&self, point: StatePoint) -> Option<(i64, Snapshot)> {
        self.kept
            .iter()
            .rev()
            .find(|(position, snap)| match point {
                StatePoint::Position(p) => **position <= p,
                StatePoint::At(t) => snap.latest_ms <= t,
            })
            .map(|(p, s)| (*p, s.clone()))
    }
}

/// The snapshots, whoever panicked while holding them.
fn lock(snapshots: &std::sync::Mutex<Snapshots>) -> std::sync::MutexGuard<'_, Snapshots> {
    snapshots
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A snapshot still summarises the log when the log's event at its
/// position has the hash it had.
async fn still_holds(store: &Store, position: i64, hash: &str) -> Result<bool> {
    Ok(store
        .event_at(position)
        .await?
        .is_some_and(|e| e.hash == hash))
}

/// The world as the log folded into it up to `point`, with the streams
/// whose fold broke on the way, and the recording time of the last event
/// folded: the very fold [`Log::open`] replays with, stopped early, and
/// started from the nearest of `snapshots` that still holds (taking new
/// ones on the way). (Streams a failed *decision* marked broken are not in
/// the log, so they are not here.)
pub async fn replay_until(
    store: &Store,
    point: StatePoint,
    snapshots: &std::sync::Mutex<Snapshots>,
) -> Result<(World, BTreeMap<String, Broken>, Option<i64>)> {
    let lock = || lock(snapshots);
    let (mut world, mut broken, mut last_at, mut latest) = loop {
        let nearest = lock().before(point);
        let Some((position, snap)) = nearest else {
            break (World::default(), BTreeMap::new(), None, i64::MIN);
        };
        if still_holds(store, position, &snap.hash).await? {
            break (
                snap.world,
                snap.broken,
                Some(snap.recorded_at_ms),
                snap.latest_ms,
            );
        }
        // The log changed at or before it: it and every later one go.
        tracing::warn!(
            position,
            "a past-state snapshot no longer matches the log; dropped"
        );
        lock().kept.retain(|p, _| *p < position);
    };
    let mut pages = store.pages(world.position, REPLAY_PAGE);
    loop {
        let page = pages.next().await?;
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
            latest = latest.max(recorded.recorded_at_ms);
            lock().offer(recorded, latest, &world, &broken);
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use mentat_domain::audit::StatePoint;
    use mentat_domain::event::Event;
    use mentat_store::{ExpectedVersion, Store};

    use super::{new_event, replay_until, Snapshots};

    /// A log of `n` host events (hosts joining, every third one lost
    /// again), event `i` recorded at `i * 10` ms.
    async fn log_of(n: i64) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("a directory");
        let url = format!("sqlite://{}", dir.path().join("log.db").display());
        let store = Store::open(&url).await.expect("a store");
        for i in 1..=n {
            let event = if i % 3 == 0 {
                Event::HostLost {
                    host: format!("h{}", i - 1),
                    reason: "silent".into(),
                }
            } else {
                Event::HostJoined {
                    host: format!("h{i}"),
                    capacity: 4,
                }
            };
            let new = new_event(&format!("e{i}"), &event, "{}", i * 10).expect("an event");
            store
                .append("_hosts", ExpectedVersion::Any, None, vec![new])
                .await
                .expect("appended");
        }
        (dir, store)
    }

    /// The positions snapshots are kept at.
    fn kept_positions(snapshots: &Mutex<Snapshots>) -> Vec<i64> {
        snapshots
            .lock()
            .expect("lock")
            .kept
            .keys()
            .copied()
            .collect()
    }

    #[tokio::test]
    async fn the_replay_at_start_leaves_snapshots_that_fold_as_the_whole_log_does() {
        let (_dir, store) = log_of(95).await;
        let snapshots = std::sync::Arc::new(Mutex::new(Snapshots::new(10, 5)));
        let log = super::Log::open_keeping(store.clone(), Some(snapshots.clone()))
            .await
            .expect("replayed");
        assert_eq!(log.world.position, 95);
        assert_eq!(kept_positions(&snapshots), [10, 20, 30, 40, 50]);
        for point in [StatePoint::Position(47), StatePoint::At(475)] {
            let none = Mutex::new(Snapshots::new(i64::MAX, 0));
            let whole = replay_until(&store, point, &none).await.expect("folded");
            let from_start = replay_until(&store, point, &snapshots)
                .await
                .expect("folded");
            assert_eq!(from_start.0, whole.0, "{point:?}");
            assert_eq!(from_start.2, whole.2, "{point:?}");
        }
    }

    #[tokio::test]
    async fn a_fold_from_a_snapshot_is_the_fold_from_the_start() {
        let (_dir, store) = log_of(95).await;
        let snapshots = Mutex::new(Snapshots::new(10, 5));
        let points = [
            StatePoint::Position(95),
            StatePoint::Position(0),
            StatePoint::Position(37),
            StatePoint::Position(40),
            StatePoint::Position(500),
            StatePoint::At(375),
            StatePoint::At(9),
        ];
        for point in points {
            let none = Mutex::new(Snapshots::new(i64::MAX, 0));
            let whole = replay_until(&store, point, &none).await.expect("folded");
            let from_snapshot = replay_until(&store, point, &snapshots)
                .await
                .expect("folded");
            assert_eq!(from_snapshot.0, whole.0, "{point:?}");
            assert_eq!(from_snapshot.1, whole.1, "{point:?}");
            assert_eq!(from_snapshot.2, whole.2, "{point:?}");
        }
        // Every 10 events, at most 5 of them.
        let kept = kept_positions(&snapshots);
        assert_eq!(kept, [10, 20, 30, 40, 50]);
        let (world, _, at) = replay_until(&store, StatePoint::At(375), &snapshots)
            .await
            .expect("folded");
        assert_eq!((world.position, at), (37, Some(370)));
    }

    #[tokio::test]
    async fn a_snapshot_the_log_no_longer_matches_is_dropped() {
        let (_dir, store) = log_of(30).await;
        let snapshots = Mutex::new(Snapshots::new(10, 5));
        let whole = replay_until(&store, StatePoint::Position(25), &snapshots)
            .await
            .expect("folded");
        // As if the log had been rewritten at 20: the snapshot there, and
        // after it, no longer holds.
        for (p, snap) in snapshots.lock().expect("lock").kept.iter_mut() {
            if *p >= 20 {
                snap.hash = "0".repeat(64);
                snap.world.hosts.clear();
            }
        }
        let again = replay_until(&store, StatePoint::Position(25), &snapshots)
            .await
            .expect("folded");
        assert_eq!(again.0, whole.0);
        let kept = kept_positions(&snapshots);
        assert_eq!(kept, [10, 20], "20 dropped, then taken again from the log");
    }
}
