//! The planner's side of auditing: it trusts its log only after checking
//! it, anchors its head outside the database, and answers audit queries.
//!
//! - [`key`]: the Ed25519 key anchors and accepted breaks are signed with.
//! - [`trust`]: the check at start (the whole chain, against the latest
//!   anchor), accepting a break, the check again before leading, and
//!   signing anchors.
//! - [`answer`]: `mentat.query.audit_verify`, `audit_state`, `audit_export`,
//!   `audit_key`.
//!
//! What is trusted: the planner reads every row of the log at start
//! anyway (to replay it), so it recomputes the whole chain then, not only
//! from its latest anchor, and checks it against that anchor (the newest
//! signed by its key in `MENTAT_ANCHORS` or the anchor file). From then on
//! it trusts the log up to a [`Checkpoint`], and checks only what was
//! appended after it: before it takes the lead, and before it signs each
//! anchor (so it never signs a head it has not checked).

pub mod answer;
pub mod key;
pub mod trust;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use mentat_domain::audit::{self, LogBreak, SigningKey, VerifyingKey};

/// What the planner audits with: shared by the main loop and the tasks
/// that answer verifications.
#[derive(Clone)]
pub struct Audit {
    /// The key anchors and accepted breaks are signed with.
    pub key: SigningKey,
    /// This planner's id.
    pub planner: String,
    /// The file anchors are also appended to, when configured.
    pub anchor_file: Option<PathBuf>,
    /// Set while a verification runs: one at a time, others are turned
    /// away (each reads the whole log).
    pub verifying: Arc<AtomicBool>,
    /// Set while a replay of the decisions runs: one at a time, others
    /// are turned away (each folds the whole log).
    pub replaying: Arc<AtomicBool>,
    /// One permit: past states are rebuilt one at a time (each folds the
    /// log from its start); the next waits its turn.
    pub stating: Arc<tokio::sync::Semaphore>,
    /// Worlds folded by past-state queries, every
    /// [`SNAPSHOT_EVERY`](crate::log::SNAPSHOT_EVERY) events, that the next
    /// one starts from.
    pub snapshots: Arc<std::sync::Mutex<crate::log::Snapshots>>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("key", &audit::key_hex(&self.key.verifying_key()))
            .field("planner", &self.planner)
            .field("anchor_file", &self.anchor_file)
            .finish()
    }
}

impl Audit {
    /// The public half of the key.
    pub fn public(&self) -> VerifyingKey {
        self.key.verifying_key()
    }
}

/// The log checked up to `position`, whose event has `hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The last position checked (0: none).
    pub position: i64,
    /// Its hash (the genesis hash for 0).
    pub hash: String,
}

/// The store's kind of break, on the wire.
pub fn kind(kind: mentat_store::BreakKind) -> audit::BreakKind {
    use mentat_store::BreakKind as K;
    match kind {
        K::ContentChanged => audit::BreakKind::ContentChanged,
        K::LinkBroken => audit::BreakKind::LinkBroken,
        K::PositionMissing => audit::BreakKind::PositionMissing,
        K::EventInserted => audit::BreakKind::EventInserted,
        K::AnchorMismatch => audit::BreakKind::AnchorMismatch,
    }
}

/// The store's break, on the wire.
pub fn log_break(b: &mentat_store::Break) -> LogBreak {
    LogBreak {
        position: b.position,
        kind: kind(b.kind),
        detail: b.detail.clone(),
    }
}
