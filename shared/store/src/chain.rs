//! Checking the hash chain, one event at a time, with no I/O: the same
//! check runs on rows read from the database ([`Store::verify_with`]) and
//! on lines of an exported file (`mt audit verify --file`).
//!
//! A [`Chain`] is fed the events in position order ([`Chain::push`]) and
//! stops at the first one that does not fit, saying where and what
//! ([`Break`], [`BreakKind`]). It can also be told:
//!
//! - **anchors** ([`Chain::anchor`]): positions whose hash was signed
//!   outside the database. A log rewritten from some position with every
//!   hash recomputed is consistent, but its hash at an anchored position
//!   is not the signed one ([`BreakKind::AnchorMismatch`]), and a log cut
//!   short before an anchored position misses it
//!   ([`BreakKind::PositionMissing`]).
//! - **accepted breaks** ([`Chain::accept`]): positions where an operator
//!   accepted a break. The row found there (or the first one after a
//!   missing position) is then trusted as it is stored, and the chain goes
//!   on from its hash; the break is still reported ([`Verified::accepted`]).
//!
//! [`Store::verify_with`]: crate::Store::verify_with

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use crate::hash::{event_hash, GENESIS_HASH};
use crate::{RecordedEvent, Verified};

/// How many hashes before the current position are kept, to tell an
/// inserted or removed event from an edited one. Only looked at after a
/// check failed, so it costs nothing on a good log.
const LOOK_BACK: usize = 16;

/// What kind of tampering a [`Break`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakKind {
    /// The event's stored hash does not match its contents: a field was
    /// edited in place (or the row was forged without the right hash).
    ContentChanged,
    /// The event's hash matches its contents but its `prev_hash` is not
    /// the hash of the event before it: the event before it was replaced
    /// with a recomputed hash, or this one was forged.
    LinkBroken,
    /// No event at this position while later ones exist (events were
    /// deleted, maybe the rest renumbered), or, at an anchored position
    /// past the end of the log, events were removed from its end.
    PositionMissing,
    /// An event the chain does not vouch for sits at this position: the
    /// event after it links past it to the one before.
    EventInserted,
    /// The chain holds together, but its hash at this position is not the
    /// one a signed anchor recorded: the log was rewritten at or before it.
    AnchorMismatch,
}

impl BreakKind {
    /// Every kind, in declaration order.
    pub const ALL: [BreakKind; 5] = [
        BreakKind::ContentChanged,
        BreakKind::LinkBroken,
        BreakKind::PositionMissing,
        BreakKind::EventInserted,
        BreakKind::AnchorMismatch,
    ];

    /// The kind's name in replies and output (`content_changed`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            BreakKind::ContentChanged => "content_changed",
            BreakKind::LinkBroken => "link_broken",
            BreakKind::PositionMissing => "position_missing",
            BreakKind::EventInserted => "event_inserted",
            BreakKind::AnchorMismatch => "anchor_mismatch",
        }
    }

    /// The kind named `name` (as [`BreakKind::as_str`] writes it).
    pub fn parse(name: &str) -> Option<BreakKind> {
        BreakKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for BreakKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first place where the log does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    /// The first position that cannot be trusted.
    pub position: i64,
    /// What is wrong there.
    pub kind: BreakKind,
    /// The hashes or positions that did not match, for people.
    pub detail: String,
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "position {} ({}): {}",
            self.position, self.kind, self.detail
        )
    }
}

/// A hash chain being checked. Feed it events in position order with
/// [`Chain::push`], then call [`Chain::finish`].
#[derive(Debug, Clone)]
pub struct Chain {
    /// The position the next event must have.
    next: i64,
    /// Hashes of the last positions checked, the newest last (the genesis
    /// hash, or the checkpoint's, first).
    recent: VecDeque<String>,
    anchors: BTreeMap<i64, String>,
    anchors_checked: usize,
    accepting: BTreeSet<i64>,
    accepted: Vec<Break>,
    /// Events pushed so far.
    checked: i64,
}

impl Default for Chain {
    fn default() -> Self {
        Chain::genesis()
    }
}

impl Chain {
    /// A chain checked from position 1.
    pub fn genesis() -> Chain {
        Chain::after(0, GENESIS_HASH)
    }

    /// A chain checked from `position + 1`, trusting that the event at
    /// `position` has `hash` (a checkpoint verified before, or an anchor).
    pub fn after(position: i64, hash: &str) -> Chain {
        Chain {
            next: position + 1,
            recent: VecDeque::from([hash.to_owned()]),
            anchors: BTreeMap::new(),
            anchors_checked: 0,
            accepting: BTreeSet::new(),
            accepted: Vec::new(),
            checked: 0,
        }
    }

    /// The position the next event must have (the first one to read).
    pub fn next_position(&self) -> i64 {
        self.next
    }

    /// Check that the event at `position` has `hash` (a signed anchor's,
    /// whose signature the caller checked). Anchors at or before the
    /// chain's start are out of its reach and ignored.
    pub fn anchor(&mut self, position: i64, hash: &str) {
        if position >= self.next {
            self.anchors.insert(position, hash.to_owned());
        }
    }

    /// Accept the break found at `position`, as an operator did.
    pub fn accept(&mut self, position: i64) {
        self.accepting.insert(position);
    }

    /// Check the next event. On a break that was not accepted, returns it
    /// and the chain must not be fed any more.
    pub fn push(&mut self, event: &RecordedEvent) -> Result<(), Break> {
        if let Some(found) = self.classify(event) {
            self.accept_or_fail(found)?;
            if event.position < self.next {
                // An accepted second row at a position already checked:
                // passed over, the chain goes on from the first.
                return Ok(());
            }
            // An accepted break: trust this row as stored, and check the
            // anchors of any positions skipped over.
            let skipped: Vec<i64> = self
                .anchors
                .range(self.next..event.position)
                .map(|(p, _)| *p)
                .collect();
            for position in skipped {
                self.accept_or_fail(Break {
                    position,
                    kind: BreakKind::AnchorMismatch,
                    detail: "an anchor vouches for a position the log does not hold".into(),
                })?;
                self.anchors.remove(&position);
            }
        }
        self.check_anchor(event)?;
        self.next = event.position + 1;
        self.checked += 1;
        self.recent.push_back(event.hash.clone());
        if self.recent.len() > LOOK_BACK + 1 {
            self.recent.pop_front();
        }
        Ok(())
    }

    /// The chain as checked so far: fails when an anchor vouches for a
    /// position past the last event (the log was cut short), unless that
    /// was accepted.
    pub fn finish(self) -> Result<Verified, Break> {
        self.finish_with(true)
    }

    /// The chain as checked so far, taken as a prefix of the log (an
    /// export, which anchors signed after it may reach past): anchors past
    /// its last event are left unchecked instead of calling it cut short.
    pub fn finish_prefix(self) -> Result<Verified, Break> {
        self.finish_with(false)
    }

    fn finish_with(mut self, whole: bool) -> Result<Verified, Break> {
        if !whole {
            self.anchors.clear();
        }
        let beyond: Vec<i64> = self.anchors.range(self.next..).map(|(p, _)| *p).collect();
        for position in beyond {
            // Named by the anchor's position, which stays the same as the
            // log grows again (then it is a mismatch there instead).
            let missing = Break {
                position,
                kind: BreakKind::PositionMissing,
                detail: format!(
                    "the log ends at position {} but an anchor vouches for position {position}: \
                     events were removed from its end",
                    self.next - 1
                ),
            };
            self.accept_or_fail(missing)?;
        }
        Ok(Verified {
            events: self.checked,
            head_position: self.next - 1,
            head_hash: self
                .recent
                .back()
                .cloned()
                .unwrap_or_else(|| GENESIS_HASH.to_owned()),
            anchors_checked: self.anchors_checked,
            accepted: self.accepted,
        })
    }

    fn accept_or_fail(&mut self, found: Break) -> Result<(), Break> {
        if self.accepting.remove(&found.position) {
            self.accepted.push(found);
            Ok(())
        } else {
            Err(found)
        }
    }

    fn check_anchor(&mut self, event: &RecordedEvent) -> Result<(), Break> {
        let Some(signed) = self.anchors.remove(&event.position) else {
            return Ok(());
        };
        if signed == event.hash {
            self.anchors_checked += 1;
            return Ok(());
        }
        self.accept_or_fail(Break {
            position: event.position,
            kind: BreakKind::AnchorMismatch,
            detail: format!(
                "a signed anchor says the hash here is {signed}, the log holds {}: \
                 the log was rewritten at or before this position",
                event.hash
            ),
        })
    }

    /// The hash `back` positions before the next one (1: the previous
    /// event's), when still kept.
    fn hash_before(&self, back: usize) -> Option<&str> {
        let len = self.recent.len();
        (back <= len).then(|| self.recent[len - back].as_str())
    }

    /// What is wrong with `event` as the next one, if anything.
    fn classify(&self, event: &RecordedEvent) -> Option<Break> {
        let p = self.next;
        let at = |position, kind, detail| {
            Some(Break {
                position,
                kind,
                detail,
            })
        };
        if event.position > p {
            return at(
                p,
                BreakKind::PositionMissing,
                format!(
                    "expected position {p}, the next event is at {}",
                    event.position
                ),
            );
        }
        if event.position < p {
            return at(
                event.position,
                BreakKind::EventInserted,
                format!(
                    "a second event at position {} (expected {p})",
                    event.position
                ),
            );
        }
        let prev = self.hash_before(1).unwrap_or(GENESIS_HASH);
        let content_ok = event.hash == event_hash(event);
        let link_ok = event.prev_hash == prev;
        if content_ok && link_ok {
            return None;
        }
        // Events inserted before this one, which still links to the event
        // before them (and, if the rest was renumbered, hashes as it did at
        // its old position).
        for d in 1..=LOOK_BACK {
            let Some(linked) = self.hash_before(d + 1) else {
                break;
            };
            let old_position = p - d as i64;
            if event.prev_hash == linked
                && (content_ok || hash_at(event, old_position) == event.hash)
            {
                return at(
                    old_position,
                    BreakKind::EventInserted,
                    format!(
                        "the event at position {p} links to position {}: \
                         {d} event(s) from position {old_position} were inserted before it",
                        old_position - 1
                    ),
                );
            }
        }
        if !content_ok {
            // Events removed before this one, and the rest renumbered: it
            // still hashes as it did at its old position.
            for d in 1..=LOOK_BACK as i64 {
                if hash_at(event, p + d) == event.hash {
                    return at(
                        p,
                        BreakKind::PositionMissing,
                        format!(
                            "the event at position {p} was at position {}: \
                             {d} event(s) were removed and the rest renumbered",
                            p + d
                        ),
                    );
                }
            }
            return at(
                p,
                BreakKind::ContentChanged,
                format!(
                    "the stored hash {} does not match the contents (computed {})",
                    event.hash,
                    event_hash(event)
                ),
            );
        }
        at(
            p,
            BreakKind::LinkBroken,
            format!(
                "prev_hash {} is not the hash of position {} ({prev}): that event was \
                 replaced with a recomputed hash, or this one was forged",
                event.prev_hash,
                p - 1
            ),
        )
    }
}

/// The hash `event` would have at `position`.
fn hash_at(event: &RecordedEvent, position: i64) -> String {
    let mut moved = event.clone();
    moved.position = position;
    event_hash(&moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A consistent chain of `n` events.
    fn log(n: i64) -> Vec<RecordedEvent> {
        let mut out: Vec<RecordedEvent> = Vec::new();
        for position in 1..=n {
            let prev_hash = out
                .last()
                .map_or(GENESIS_HASH.to_owned(), |e| e.hash.clone());
            let mut e = RecordedEvent {
                position,
                stream: "web".into(),
                version: position,
                id: format!("e-{position}"),
                event_type: "ReplicaStarted".into(),
                schema_version: 1,
                payload: format!(r#"{{"n":{position}}}"#),
                metadata: "{}".into(),
                recorded_at_ms: 1_700_000_000_000 + position,
                prev_hash,
                hash: String::new(),
            };
            e.hash = event_hash(&e);
            out.push(e);
        }
        out
    }

    /// Recompute every hash from `from` on, as an attacker covering tracks.
    fn rechain(events: &mut [RecordedEvent], from: usize) {
        for i in from..events.len() {
            events[i].prev_hash = if i == 0 {
                GENESIS_HASH.into()
            } else {
                events[i - 1].hash.clone()
            };
            events[i].hash = event_hash(&events[i]);
        }
    }

    fn check(chain: Chain, events: &[RecordedEvent]) -> Result<Verified, Break> {
        let mut chain = chain;
        for e in events {
            chain.push(e)?;
        }
        chain.finish()
    }

    fn broken(chain: Chain, events: &[RecordedEvent]) -> (i64, BreakKind) {
        match check(chain, events) {
            Err(b) => (b.position, b.kind),
            Ok(v) => panic!("not found: {v:?}"),
        }
    }

    #[test]
    fn a_good_log_verifies_with_its_head() {
        let events = log(40);
        let v = check(Chain::genesis(), &events).expect("good");
        assert_eq!((v.events, v.head_position), (40, 40));
        assert_eq!(v.head_hash, events[39].hash);
        let empty = check(Chain::genesis(), &[]).expect("empty");
        assert_eq!(
            (empty.head_position, empty.head_hash.as_str()),
            (0, GENESIS_HASH)
        );
    }

    #[test]
    fn an_edited_payload_is_content_changed_at_its_position() {
        let mut events = log(10);
        events[4].payload = r#"{"n":666}"#.into();
        assert_eq!(
            broken(Chain::genesis(), &events),
            (5, BreakKind::ContentChanged)
        );
    }

    #[test]
    fn a_deleted_row_is_a_missing_position() {
        let mut events = log(10);
        events.remove(6);
        assert_eq!(
            broken(Chain::genesis(), &events),
            (7, BreakKind::PositionMissing)
        );
    }

    #[test]
    fn rows_deleted_and_renumbered_are_a_missing_position() {
        let mut events = log(10);
        events.drain(3..5);
        for (i, e) in events.iter_mut().enumerate() {
            e.position = i as i64 + 1;
        }
        assert_eq!(
            broken(Chain::genesis(), &events),
            (4, BreakKind::PositionMissing)
        );
    }

    #[test]
    fn an_event_replaced_with_a_recomputed_hash_breaks_the_next_link() {
        let mut events = log(10);
        events[2].payload = r#"{"n":"forged"}"#.into();
        events[2].hash = event_hash(&events[2]);
        assert_eq!(
            broken(Chain::genesis(), &events),
            (4, BreakKind::LinkBroken)
        );
    }

    #[test]
    fn an_event_inserted_with_the_rest_renumbered_is_found_where_it_was_put() {
        let mut events = log(10);
        let mut forged = events[4].clone();
        forged.id = "forged".into();
        events.insert(4, forged);
        for (i, e) in events.iter_mut().enumerate().skip(4) {
            e.position = i as i64 + 1;
        }
        // The intruder is hashed properly and links to position 4.
        events[4].prev_hash = events[3].hash.clone();
        events[4].hash = event_hash(&events[4]);
        assert_eq!(
            broken(Chain::genesis(), &events),
            (5, BreakKind::EventInserted)
        );
    }

    #[test]
    fn a_duplicate_position_in_a_file_is_an_inserted_event() {
        let mut events = log(5);
        events.insert(3, events[2].clone());
        assert_eq!(
            broken(Chain::genesis(), &events),
            (3, BreakKind::EventInserted)
        );
        let mut chain = Chain::genesis();
        chain.accept(3);
        let v = check(chain, &events).expect("accepted, passed over");
        assert_eq!((v.head_position, v.accepted.len()), (5, 1));
    }

    #[test]
    fn a_consistent_rewrite_passes_the_chain_but_not_an_anchor_after_it() {
        let mut events = log(20);
        let anchored = events[14].clone();
        events[9].payload = r#"{"n":"rewritten"}"#.into();
        rechain(&mut events, 9);
        check(Chain::genesis(), &events).expect("the chain alone cannot tell");
        let mut chain = Chain::genesis();
        chain.anchor(anchored.position, &anchored.hash);
        assert_eq!(broken(chain, &events), (15, BreakKind::AnchorMismatch));
        // An anchor before the rewrite still matches.
        let mut chain = Chain::genesis();
        chain.anchor(5, &log(20)[4].hash);
        assert_eq!(check(chain, &events).expect("matches").anchors_checked, 1);
    }

    #[test]
    fn a_log_cut_short_below_an_anchor_misses_positions() {
        let events = log(20);
        let mut chain = Chain::genesis();
        chain.anchor(20, &events[19].hash);
        assert_eq!(
            broken(chain, &events[..17]),
            (20, BreakKind::PositionMissing)
        );
    }

    #[test]
    fn a_prefix_is_not_cut_short_by_anchors_signed_after_it() {
        let events = log(20);
        let mut chain = Chain::genesis();
        chain.anchor(10, &events[9].hash);
        chain.anchor(20, &events[19].hash);
        let mut prefix = chain.clone();
        for e in &events[..15] {
            prefix.push(e).expect("good");
        }
        let v = prefix.finish_prefix().expect("a prefix");
        assert_eq!((v.head_position, v.anchors_checked), (15, 1));
        assert_eq!(
            broken(chain, &events[..15]),
            (20, BreakKind::PositionMissing)
        );
    }

    #[test]
    fn an_accepted_break_is_reported_and_the_chain_goes_on_from_the_row_as_stored() {
        let mut events = log(10);
        events[4].payload = r#"{"n":666}"#.into();
        let mut chain = Chain::genesis();
        chain.accept(5);
        let v = check(chain, &events).expect("accepted");
        assert_eq!(v.head_position, 10);
        assert_eq!(v.accepted.len(), 1);
        assert_eq!(
            (v.accepted[0].position, v.accepted[0].kind),
            (5, BreakKind::ContentChanged)
        );
        // A second break is not covered by the first acceptance.
        events[7].payload = "{}".into();
        let mut chain = Chain::genesis();
        chain.accept(5);
        assert_eq!(broken(chain, &events), (8, BreakKind::ContentChanged));
        // A gap accepted: the chain restarts at the next row.
        let mut gap = log(10);
        gap.remove(2);
        let mut chain = Chain::genesis();
        chain.accept(3);
        assert_eq!(check(chain, &gap).expect("accepted gap").head_position, 10);
    }

    #[test]
    fn a_chain_from_a_checkpoint_checks_only_what_follows() {
        let mut events = log(10);
        events[1].payload = "edited before the checkpoint".into();
        let from = Chain::after(6, &events[5].hash);
        assert_eq!(from.next_position(), 7);
        let v = check(from, &events[6..]).expect("after the checkpoint");
        assert_eq!(v.head_position, 10);
        let mut from = Chain::after(6, &"f".repeat(64));
        assert_eq!(
            from.push(&events[6]).map_err(|b| b.kind),
            Err(BreakKind::LinkBroken)
        );
    }

    #[test]
    fn kinds_have_stable_names() {
        for kind in BreakKind::ALL {
            assert_eq!(BreakKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(BreakKind::ContentChanged.to_string(), "content_changed");
        assert_eq!(BreakKind::parse("nonsense"), None);
    }
}
