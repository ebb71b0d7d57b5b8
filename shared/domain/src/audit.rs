//! Auditing the log over the bus: verifying its hash chain, exporting it,
//! and the signed anchors that pin its head outside the database.
//!
//! - `mentat.query.audit_verify` ([`AuditVerifyQuery`] → [`AuditVerifyReply`]):
//!   the planner recomputes the whole chain and checks it against every
//!   anchor it can read.
//! - `mentat.query.audit_export` ([`AuditExportQuery`] → [`AuditExportReply`]):
//!   the log a page at a time, each event with its hash and `prev_hash`
//!   ([`LoggedEvent`], also the line format of `mt audit export`).
//! - `mentat.query.audit_key` ([`AuditKeyQuery`] → [`AuditKeyReply`]): the
//!   planner's public key.
//! - `mentat.query.audit_state` ([`AuditStateQuery`] → [`AuditStateReply`]):
//!   what `mentat.query.status` would have answered at a past position or
//!   time.
//! - `mentat.audit.anchor` ([`AnchorRequest`] → [`AnchorReply`]): the leading
//!   planner signs an [`Anchor`] of the head now.
//!
//! An [`Anchor`] is Ed25519 over [`Anchor::signed_text`]; an acceptance of a
//! break ([`crate::Event::LogBreakAccepted`]) is signed the same way over
//! [`accepted_break_text`]. Both are checked here, with no I/O.

use ed25519_dalek::{Signature, Signer, Verifier};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::command::RejectKind;

/// Bytes of an Ed25519 public key, in hex: 64 characters.
pub const KEY_HEX_LEN: usize = 64;
/// Bytes of an Ed25519 signature, in hex: 128 characters.
pub const SIGNATURE_HEX_LEN: usize = 128;
/// Characters of a head hash (SHA-256 in hex).
pub const HASH_HEX_LEN: usize = 64;
/// Longest line of an anchor file, or anchor message, read (bytes); a longer
/// one is reported as a forged anchor without being parsed.
pub const MAX_ANCHOR_BYTES: usize = 1024;
/// Most anchors one verification reads from each source (stream, file):
/// 100 years of one every 5 minutes would be 10.5 million; past this, the
/// newest are kept.
pub const MAX_ANCHORS: usize = 1_000_000;
/// Longest line of an exported log read by `mt audit verify --file`. Events
/// come from commands of at most 256 KiB, so a line is well under this.
pub const MAX_EXPORT_LINE_BYTES: usize = 4 * 1024 * 1024;
/// Events per page of `mentat.query.audit_export` when the query gives no
/// limit, and the most it may ask for.
pub const EXPORT_DEFAULT_LIMIT: u32 = 500;
/// See [`EXPORT_DEFAULT_LIMIT`].
pub const EXPORT_MAX_LIMIT: u32 = 1_000;

/// What kind of tampering a break of the chain is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakKind {
    /// The event's stored hash does not match its contents: edited in place.
    ContentChanged,
    /// The event's `prev_hash` is not the hash of the event before it: that
    /// event was replaced with a recomputed hash, or this one was forged.
    LinkBroken,
    /// No event at this position while later ones (or an anchor) say there
    /// was one: events were deleted.
    PositionMissing,
    /// An event the chain does not vouch for sits here: the next one links
    /// past it.
    EventInserted,
    /// The chain holds, but its hash here is not the one a signed anchor
    /// recorded: the log was rewritten at or before this position.
    AnchorMismatch,
}

impl BreakKind {
    /// The kind's name on the wire (`content_changed`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            BreakKind::ContentChanged => "content_changed",
            BreakKind::LinkBroken => "link_broken",
            BreakKind::PositionMissing => "position_missing",
            BreakKind::EventInserted => "event_inserted",
            BreakKind::AnchorMismatch => "anchor_mismatch",
        }
    }
}

impl std::fmt::Display for BreakKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the log does not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LogBreak {
    /// The first position that cannot be trusted.
    pub position: i64,
    /// What is wrong there.
    pub kind: BreakKind,
    /// The hashes or positions that did not match.
    pub detail: String,
}

/// An anchor that does not check out: bad signature, another key, or not
/// an anchor at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ForgedAnchor {
    /// Where it was read: `stream` (JetStream `MENTAT_ANCHORS`) or the
    /// file's path and line.
    pub source: String,
    /// The position it claims, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
    /// What is wrong with it.
    pub reason: String,
}

/// A signed statement that the log's event at `position` had `head_hash`
/// at `at_ms`. Kept outside the database (a JetStream stream, a file), so
/// that a log rewritten from any earlier position is found even when its
/// own chain is consistent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Anchor {
    /// The log's head position when it was signed (0: an empty log).
    pub position: i64,
    /// The hash of the event at `position` (64 hex characters).
    pub head_hash: String,
    /// When it was signed, ms since the Unix epoch.
    pub at_ms: i64,
    /// The signer's Ed25519 public key, hex (64 characters).
    pub key: String,
    /// Ed25519 signature of [`Anchor::signed_text`], hex (128 characters).
    pub signature: String,
}

impl Anchor {
    /// The exact text an anchor signs.
    pub fn signed_text(position: i64, head_hash: &str, at_ms: i64) -> String {
        format!("mentat-anchor-v1\n{position}\n{head_hash}\n{at_ms}")
    }

    /// An anchor of `position` and `head_hash` at `at_ms`, signed with `key`.
    pub fn sign(key: &SigningKey, position: i64, head_hash: &str, at_ms: i64) -> Anchor {
        let text = Anchor::signed_text(position, head_hash, at_ms);
        Anchor {
            position,
            head_hash: head_hash.to_owned(),
            at_ms,
            key: key_hex(&key.verifying_key()),
            signature: hex::encode(key.sign(text.as_bytes()).to_bytes()),
        }
    }

    /// Whether the anchor is well formed and signed by `trusted`; why not
    /// otherwise.
    pub fn check(&self, trusted: &VerifyingKey) -> Result<(), String> {
        if self.position < 0 {
            return Err(format!("position {} is negative", self.position));
        }
        if self.head_hash.len() != HASH_HEX_LEN
            || !self.head_hash.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err("head_hash is not 64 hex characters".into());
        }
        if self.key != key_hex(trusted) {
            return Err(format!(
                "signed by key {}, not the trusted key {}",
                cut(&self.key, KEY_HEX_LEN),
                key_hex(trusted)
            ));
        }
        let text = Anchor::signed_text(self.position, &self.head_hash, self.at_ms);
        check_signature(trusted, &text, &self.signature)
    }
}

/// The exact text an acceptance of a break signs.
pub fn accepted_break_text(position: i64, kind: BreakKind, actor: &str, reason: &str) -> String {
    format!("mentat-break-accepted-v1\n{position}\n{kind}\n{actor}\n{reason}")
}

/// Signs `text` with `key`: hex.
pub fn sign_text(key: &SigningKey, text: &str) -> String {
    hex::encode(key.sign(text.as_bytes()).to_bytes())
}

/// Whether `signature` (hex) is `trusted`'s signature of `text`.
pub fn check_signature(trusted: &VerifyingKey, text: &str, signature: &str) -> Result<(), String> {
    if signature.len() != SIGNATURE_HEX_LEN {
        return Err(format!(
            "the signature is {} characters, not {SIGNATURE_HEX_LEN}",
            signature.len()
        ));
    }
    let bytes: [u8; 64] = hex::decode(signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("the signature is not hex")?;
    trusted
        .verify(text.as_bytes(), &Signature::from_bytes(&bytes))
        .map_err(|_| "bad signature".to_owned())
}

/// A public key in hex.
pub fn key_hex(key: &VerifyingKey) -> String {
    hex::encode(key.as_bytes())
}

/// A public key from hex (64 characters).
pub fn parse_key(text: &str) -> Result<VerifyingKey, String> {
    let text = text.trim();
    let bytes: [u8; 32] = hex::decode(text)
        .ok()
        .filter(|_| text.len() == KEY_HEX_LEN)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            format!(
                "`{}` is not an Ed25519 public key (64 hex characters)",
                cut(text, 80)
            )
        })?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| format!("not a valid Ed25519 public key: {e}"))
}

/// At most `max` bytes of `text`, cut on a character boundary, so that an
/// oversized value is never echoed back whole.
fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// One event of the log as stored, with its hashes: the line format of
/// `mt audit export` (one JSON object per line) and the items of
/// [`AuditExportReply`]. `payload` and `metadata` are the stored JSON text,
/// byte for byte, since the hash covers those bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LoggedEvent {
    /// Global position, from 1.
    pub position: i64,
    /// Stream.
    pub stream: String,
    /// Version in the stream, from 1.
    pub version: i64,
    /// Event id.
    pub id: String,
    /// Type name.
    pub event_type: String,
    /// Schema version of the type.
    pub schema_version: i32,
    /// The payload as stored (JSON text).
    pub payload: String,
    /// The metadata as stored (JSON text).
    pub metadata: String,
    /// When it was recorded, ms since the Unix epoch.
    pub recorded_at_ms: i64,
    /// The hash of the event before it (64 zeros for the first).
    pub prev_hash: String,
    /// This event's hash.
    pub hash: String,
}

/// `mentat.query.audit_verify`: recompute the whole chain. No fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditVerifyQuery {}

/// Reply to `mentat.query.audit_verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum AuditVerifyReply {
    /// The chain holds from position 1 to the head, and matches every
    /// anchor read. `forged` anchors, if any, were left out of the check.
    Ok {
        /// The head's position (0: an empty log).
        head_position: i64,
        /// The head's hash.
        head_hash: String,
        /// Anchors that matched the log.
        anchors_checked: u64,
        /// Breaks an operator accepted (`LogBreakAccepted`), found on the way.
        #[serde(default)]
        accepted: Vec<LogBreak>,
        /// Anchors with a bad signature, another key, or unreadable.
        #[serde(default)]
        forged: Vec<ForgedAnchor>,
    },
    /// The chain does not hold: the first bad position and its kind.
    Broken {
        /// Where and what.
        #[serde(rename = "break")]
        found: LogBreak,
        /// Anchors signed with the trusted key that were read.
        anchors_read: u64,
        /// Anchors with a bad signature, another key, or unreadable.
        #[serde(default)]
        forged: Vec<ForgedAnchor>,
    },
    /// The query could not be answered.
    Rejected {
        /// What kind of refusal.
        kind: RejectKind,
        /// Why.
        reason: String,
    },
}

/// `mentat.query.audit_export`: a page of the log, by position.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditExportQuery {
    /// Events after this position (0 or absent: from the first): the
    /// `next` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<i64>,
    /// At most this many events (default 500, at most 1000; 0 is read as
    /// 1); a page also ends before 256 KiB of events, holding at least one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Reply to `mentat.query.audit_export`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum AuditExportReply {
    /// A page of events, in position order, as stored.
    Ok {
        /// The events.
        events: Vec<LoggedEvent>,
        /// More events may follow: ask again with `after` set to this.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<i64>,
    },
    /// The query could not be answered.
    Rejected {
        /// What kind of refusal.
        kind: RejectKind,
        /// Why.
        reason: String,
    },
}

/// `mentat.query.audit_state`: what `mentat.query.status` would have
/// answered at a past point of the log, rebuilt by folding the log up to
/// it. Exactly one of `position` and `at_ms`; `service`, `after` and
/// `limit` page the services as in `mentat.query.status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditStateQuery {
    /// Fold the log up to this position, included (past the head: the head).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
    /// Fold every event recorded at or before this time (ms since the
    /// Unix epoch), stopping at the first one recorded after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<i64>,
    /// Only this service; every service when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Services after this many, in name order: the `next` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    /// At most this many services in the page (as `mentat.query.status`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

impl AuditStateQuery {
    /// The point asked for, or why the query names none or both.
    pub fn point(&self) -> Result<StatePoint, String> {
        match (self.position, self.at_ms) {
            (Some(p), None) if p >= 0 => Ok(StatePoint::Position(p)),
            (Some(p), None) => Err(format!("position: {p} is negative")),
            (None, Some(t)) => Ok(StatePoint::At(t)),
            _ => Err("give exactly one of position and at_ms".into()),
        }
    }
}

/// Where a rebuilt state stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatePoint {
    /// After the event at this position.
    Position(i64),
    /// After the last event recorded at or before this time (ms).
    At(i64),
}

impl StatePoint {
    /// Whether the event at `position`, recorded at `recorded_at_ms`, is
    /// past the point (and folding stops before it). Events come in
    /// position order.
    pub fn passed(self, position: i64, recorded_at_ms: i64) -> bool {
        match self {
            StatePoint::Position(p) => position > p,
            StatePoint::At(t) => recorded_at_ms > t,
        }
    }
}

/// Reply to `mentat.query.audit_state`: the fields of a
/// `mentat.query.status` answer, computed by the same function from the
/// world folded up to the point, and where the fold stopped. What only
/// heartbeats tell (planners standing by, whether a router was heard and
/// the routes it had applied) is not in the log: `planners.standbys` is
/// empty and each router is not `heard`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)] // as StatusReply: one per reply, moved once
pub enum AuditStateReply {
    /// The state then.
    Ok {
        /// The last position folded (0: none).
        position: i64,
        /// When its event was recorded (ms since the Unix epoch).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recorded_at_ms: Option<i64>,
        /// As `mentat.query.status`.
        services: Vec<crate::command::ServiceStatus>,
        /// As `mentat.query.status`.
        hosts: Vec<String>,
        /// As `mentat.query.status`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<u64>,
        /// As `mentat.query.status` (leader and epoch from the log).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        planners: Option<crate::command::PlannersStatus>,
        /// As `mentat.query.status` (routers live in the log).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        routers: Vec<crate::command::RouterStatus>,
        /// As `mentat.query.status`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        host_states: Vec<crate::command::HostStatus>,
        /// As `mentat.query.status`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        held: Option<crate::command::HeldStatus>,
    },
    /// The query could not be answered.
    Rejected {
        /// What kind of refusal.
        kind: RejectKind,
        /// Why.
        reason: String,
    },
}

/// `mentat.query.audit_key`: the planner's public key. No fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditKeyQuery {}

/// Reply to `mentat.query.audit_key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum AuditKeyReply {
    /// The key anchors and accepted breaks are signed with.
    Ok {
        /// Ed25519 public key, hex.
        key: String,
        /// The planner that answered.
        planner: String,
    },
    /// The query could not be answered.
    Rejected {
        /// What kind of refusal.
        kind: RejectKind,
        /// Why.
        reason: String,
    },
}

/// `mentat.audit.anchor`: sign an anchor of the head now. No fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnchorRequest {}

/// Reply to `mentat.audit.anchor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum AnchorReply {
    /// The anchor, published to `MENTAT_ANCHORS` (and the anchor file).
    Ok {
        /// The anchor.
        anchor: Anchor,
    },
    /// No anchor was signed: the log did not verify since the last one
    /// (`unavailable` while it cannot be read).
    Rejected {
        /// What kind of refusal.
        kind: RejectKind,
        /// Why.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn an_anchor_checks_with_its_key_only() {
        let signer = key(1);
        let anchor = Anchor::sign(&signer, 42, &"ab".repeat(32), 1_700_000_000_000);
        assert_eq!(anchor.check(&signer.verifying_key()), Ok(()));
        let other = key(2).verifying_key();
        assert!(anchor
            .check(&other)
            .is_err_and(|e| e.contains("not the trusted key")));
    }

    #[test]
    fn any_change_to_a_signed_anchor_is_a_bad_signature() {
        let signer = key(1);
        let trusted = signer.verifying_key();
        let anchor = Anchor::sign(&signer, 42, &"ab".repeat(32), 1_700_000_000_000);
        let changes: Vec<fn(&mut Anchor)> = vec![
            |a| a.position += 1,
            |a| a.head_hash = "cd".repeat(32),
            |a| a.at_ms += 1,
            |a| a.signature.replace_range(0..2, "00"),
        ];
        for change in changes {
            let mut forged = anchor.clone();
            change(&mut forged);
            if forged.signature == anchor.signature {
                forged.signature.replace_range(0..2, "ff");
            }
            assert!(forged.check(&trusted).is_err(), "{forged:?}");
        }
        let mut short = anchor.clone();
        short.signature.truncate(10);
        assert!(short
            .check(&trusted)
            .is_err_and(|e| e.contains("characters")));
        let mut odd = anchor;
        odd.head_hash = "not hex".into();
        assert!(odd.check(&trusted).is_err());
    }

    #[test]
    fn keys_round_trip_through_hex_and_bad_ones_are_refused() {
        let k = key(7).verifying_key();
        assert_eq!(parse_key(&key_hex(&k)), Ok(k));
        for bad in ["", "zz", &"0".repeat(63), &"x".repeat(10_000)] {
            let err = parse_key(bad).expect_err("refused");
            assert!(err.len() < 200, "does not echo the whole value: {err}");
        }
    }

    #[test]
    fn an_accepted_break_signature_covers_actor_and_reason() {
        let signer = key(3);
        let text = accepted_break_text(7, BreakKind::ContentChanged, "ana", "restored");
        let signature = sign_text(&signer, &text);
        let trusted = signer.verifying_key();
        assert_eq!(check_signature(&trusted, &text, &signature), Ok(()));
        let other = accepted_break_text(7, BreakKind::ContentChanged, "eve", "restored");
        assert!(check_signature(&trusted, &other, &signature).is_err());
    }
}
