//! The values that go into and come out of the log.

use std::fmt;

/// Which database a [`Store`](crate::Store) runs on. Behaviour is the same on
/// both; this is for logs, metrics and the odd backend-specific test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// An embedded SQLite file in WAL mode: the default for one planner.
    Sqlite,
    /// A PostgreSQL database: for a cluster of planners.
    Postgres,
}

/// What the writer believes the stream's version to be (optimistic
/// concurrency). A stream's version is the number of events in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the version: no concurrency check.
    Any,
    /// The stream must be empty (same as `Exact(0)`).
    NoStream,
    /// The stream must be at exactly this version.
    Exact(i64),
}

impl ExpectedVersion {
    /// Whether a stream at version `actual` satisfies this expectation.
    pub fn admits(self, actual: i64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::Exact(v) => actual == v,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any version"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::Exact(v) => write!(f, "version {v}"),
        }
    }
}

/// A command to remember, so that a retry of it is a no-op that returns
/// the first outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRecord {
    /// The command's id, chosen by whoever sent it (the planner uses fact
    /// ids as command ids for facts).
    pub id: String,
    /// Opaque JSON text from the caller, typically the reply it sent.
    pub outcome: String,
}

/// An event to append. Position, stream version and hashes are assigned by
/// the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// A UUIDv7 chosen by the caller; unique across the whole log.
    pub id: String,
    /// Stable, past-tense type name, e.g. `ReplicaStarted`.
    pub event_type: String,
    /// Version of the payload's schema for this type (for upcasters).
    pub schema_version: i32,
    /// The payload as JSON text, stored byte for byte.
    pub payload: String,
    /// Actor, reason, correlation and causation ids, trace context: JSON text.
    pub metadata: String,
    /// When the caller recorded it, in Unix milliseconds (time is data: the
    /// store never reads the clock).
    pub recorded_at_ms: i64,
}

/// An event as stored in the log.
///
/// Its fields are in the order of the `events` columns the store reads
/// (`EVENT_COLUMNS`): a page of the log decodes from arrays of them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct RecordedEvent {
    /// Global position: 1, 2, 3… with no gaps, in commit order. Readers
    /// resume with `position > checkpoint`.
    pub position: i64,
    /// The stream it belongs to.
    pub stream: String,
    /// Its version within the stream: 1, 2, 3… with no gaps.
    pub version: i64,
    /// See [`NewEvent::id`].
    pub id: String,
    /// See [`NewEvent::event_type`].
    pub event_type: String,
    /// See [`NewEvent::schema_version`].
    pub schema_version: i32,
    /// See [`NewEvent::payload`].
    pub payload: String,
    /// See [`NewEvent::metadata`].
    pub metadata: String,
    /// See [`NewEvent::recorded_at_ms`].
    pub recorded_at_ms: i64,
    /// The hash of the event at `position - 1`, or
    /// [`GENESIS_HASH`](crate::hash::GENESIS_HASH) for the first event.
    pub prev_hash: String,
    /// [`event_hash`](crate::hash::event_hash) of this event: it covers
    /// `prev_hash`, so it commits to the whole log before it.
    pub hash: String,
}

/// The events of one stream in a [`Store::append_batch`](crate::Store::append_batch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamAppend {
    /// The stream appended to.
    pub stream: String,
    /// What the writer believes the stream's version to be.
    pub expected: ExpectedVersion,
    /// The events, in order (may be empty: the version is still checked).
    pub events: Vec<NewEvent>,
}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// Position of the first event appended. When no event was appended
    /// this is `last_position + 1` (an empty range).
    pub first_position: i64,
    /// Position of the last event appended.
    pub last_position: i64,
    /// The stream's version after the append.
    pub stream_version: i64,
    /// `Some(first outcome)` when the command id had already been recorded:
    /// nothing was appended and the numbers above are those of the first
    /// append (all 0 if the command was recorded without events).
    pub duplicate: Option<String>,
}

/// The result of a successful [`Store::verify`](crate::Store::verify).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// How many events were checked (for the whole log, how many it holds).
    pub events: i64,
    /// The position of the last event checked (0 for an empty log).
    pub head_position: i64,
    /// The hash of the last event, or the genesis hash for an empty log.
    /// Publishing it elsewhere lets anyone check the log later.
    pub head_hash: String,
    /// How many anchors matched the log.
    pub anchors_checked: usize,
    /// Breaks an operator had accepted, found on the way.
    pub accepted: Vec<crate::Break>,
}
