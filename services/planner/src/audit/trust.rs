//! Checking the log before trusting it, accepting a break an operator
//! chose to accept, and signing anchors of what was checked.

use mentat_bus::anchors::{self, Found};
use mentat_bus::{new_id, Bus};
use mentat_domain::audit::{self, Anchor, VerifyingKey};
use mentat_domain::event::{Event, Meta, AUDIT_STREAM};
use mentat_store::{Chain, ExpectedVersion, Store};

use super::{Audit, Checkpoint};
use crate::error::{Error, Result};

/// Longest `detail` of a break recorded with its acceptance.
const MAX_DETAIL_BYTES: usize = 1024;

/// An operator's acceptance of a break (`--accept-break POSITION --actor
/// A --reason R`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acceptance {
    /// The position of the break accepted.
    pub position: i64,
    /// Who accepts it.
    pub actor: String,
    /// Why.
    pub reason: String,
}

/// Positions of the breaks accepted in the log (`LogBreakAccepted`) with a
/// signature of `trusted`. One without it (written into the database by
/// someone else) is ignored, with a warning.
pub async fn accepted_breaks(store: &Store, trusted: &VerifyingKey) -> Result<Vec<i64>> {
    let mut accepted = Vec::new();
    for recorded in store.read_type("LogBreakAccepted").await? {
        let signed = match serde_json::from_str::<Event>(&recorded.payload) {
            Ok(Event::LogBreakAccepted {
                position,
                kind,
                actor,
                reason,
                key,
                signature,
                ..
            }) => {
                let text = audit::accepted_break_text(position, kind, &actor, &reason);
                let ok = key == audit::key_hex(trusted)
                    && audit::check_signature(trusted, &text, &signature).is_ok();
                ok.then_some(position)
            }
            _ => None,
        };
        match signed {
            Some(position) => accepted.push(position),
            None => tracing::warn!(
                position = recorded.position,
                "a LogBreakAccepted not signed with this planner's key: ignored"
            ),
        }
    }
    Ok(accepted)
}

/// The newest anchor signed with the planner's key, in `MENTAT_ANCHORS` or
/// the anchor file. Anchors that do not check out are logged and ignored:
/// anyone on the bus can publish one, and that must not stop the planner.
pub async fn latest_anchor(bus: &Bus, audit: &Audit) -> Option<Anchor> {
    let trusted = audit.public();
    let mut found = match anchors::latest_in_stream(bus, &trusted).await {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read MENTAT_ANCHORS; checking without its anchors");
            Found::default()
        }
    };
    if let Some(path) = &audit.anchor_file {
        if let Err(e) = anchors::read_file(path, &trusted, &mut found) {
            tracing::warn!(file = %path.display(), error = %e, "cannot read the anchor file");
        }
    }
    for forged in &found.forged {
        tracing::warn!(source = %forged.source, position = ?forged.position, reason = %forged.reason, "ignored an anchor that does not check out");
    }
    found.anchors.into_iter().max_by_key(|a| a.position)
}

/// The check at start, before the planner decides anything: the whole
/// chain, against the newest anchor and with the breaks accepted so far.
/// A break fails with [`Error::LogBroken`], unless it is the one
/// `acceptance` names: then the acceptance is recorded in the log (signed)
/// and the check runs again. Returns how far the log was checked.
pub async fn check_at_start(
    store: &Store,
    bus: &Bus,
    audit: &Audit,
    acceptance: Option<&Acceptance>,
) -> Result<Checkpoint> {
    let trusted = audit.public();
    let mut accepted = accepted_breaks(store, &trusted).await?;
    let latest = latest_anchor(bus, audit).await;
    let mut recorded = false;
    loop {
        let mut chain = Chain::genesis();
        for position in &accepted {
            chain.accept(*position);
        }
        if let Some(anchor) = &latest {
            chain.anchor(anchor.position, &anchor.head_hash);
        }
        match store.verify_with(chain).await {
            Ok(verified) => {
                if let Some(a) = acceptance.filter(|a| !accepted.contains(&a.position)) {
                    return Err(Error::Fatal(format!(
                        "--accept-break {}: the log has no break at that position (it verifies \
                         up to position {}); start without --accept-break",
                        a.position, verified.head_position
                    )));
                }
                for b in &verified.accepted {
                    tracing::warn!(position = b.position, kind = %b.kind, "running on a break an operator accepted");
                }
                tracing::info!(
                    head = verified.head_position,
                    anchor = latest.as_ref().map(|a| a.position),
                    "log verified"
                );
                return Ok(Checkpoint {
                    position: verified.head_position,
                    hash: verified.head_hash,
                });
            }
            Err(mentat_store::Error::Tampered {
                position,
                kind,
                detail,
            }) => match acceptance {
                Some(a) if a.position == position && !recorded => {
                    record_acceptance(store, audit, a, kind, &detail).await?;
                    accepted.push(position);
                    recorded = true;
                }
                _ => {
                    return Err(Error::LogBroken {
                        position,
                        kind,
                        detail,
                    })
                }
            },
            Err(e) => return Err(e.into()),
        }
    }
}

/// Append a signed `LogBreakAccepted` to the log.
async fn record_acceptance(
    store: &Store,
    audit: &Audit,
    acceptance: &Acceptance,
    kind: mentat_store::BreakKind,
    detail: &str,
) -> Result<()> {
    let kind = super::kind(kind);
    let Acceptance {
        position,
        actor,
        reason,
    } = acceptance.clone();
    let text = audit::accepted_break_text(position, kind, &actor, &reason);
    let event = Event::LogBreakAccepted {
        position,
        kind,
        detail: cut(detail, MAX_DETAIL_BYTES).to_owned(),
        actor: actor.clone(),
        reason: reason.clone(),
        key: audit::key_hex(&audit.public()),
        signature: audit::sign_text(&audit.key, &text),
    };
    let meta = Meta {
        actor: Some(actor.clone()),
        reason: Some(reason.clone()),
        ..Meta::default()
    };
    let metadata = serde_json::to_string(&meta).map_err(|e| Error::fatal("metadata", e))?;
    let new = crate::log::new_event(&new_id(), &event, &metadata, mentat_bus::now_ms())?;
    store
        .append(AUDIT_STREAM, ExpectedVersion::Any, None, vec![new])
        .await?;
    tracing::warn!(position, %kind, %actor, %reason, "break accepted by an operator; recorded in the log");
    Ok(())
}

/// Check what was appended since `checkpoint`; the new checkpoint.
pub async fn check_since(store: &Store, checkpoint: &Checkpoint) -> Result<Checkpoint> {
    let verified = store
        .verify_with(Chain::after(checkpoint.position, &checkpoint.hash))
        .await?;
    Ok(Checkpoint {
        position: verified.head_position,
        hash: verified.head_hash,
    })
}

/// Check what was appended since `checkpoint`, then sign an anchor of the
/// head, publish it to `MENTAT_ANCHORS` and append it to the anchor file.
/// Returns the anchor and what could not keep it (a place that failed is
/// logged; the anchor is still good wherever it was kept).
pub async fn sign_anchor(
    store: &Store,
    bus: &Bus,
    audit: &Audit,
    checkpoint: &mut Checkpoint,
    now_ms: i64,
) -> Result<(Anchor, Vec<String>)> {
    *checkpoint = check_since(store, checkpoint).await?;
    let anchor = Anchor::sign(&audit.key, checkpoint.position, &checkpoint.hash, now_ms);
    let mut failed = Vec::new();
    if let Err(e) = anchors::publish(bus, &anchor).await {
        tracing::warn!(error = %e, position = anchor.position, "cannot publish the anchor to MENTAT_ANCHORS");
        failed.push(format!("MENTAT_ANCHORS: {e}"));
    }
    if let Some(path) = &audit.anchor_file {
        if let Err(e) = anchors::append_file(path, &anchor) {
            tracing::warn!(error = %e, file = %path.display(), "cannot append the anchor to the anchor file");
            failed.push(format!("{}: {e}", path.display()));
        }
    }
    tracing::info!(
        position = anchor.position,
        hash = %anchor.head_hash,
        "anchor signed"
    );
    Ok((anchor, failed))
}

/// At most `max` bytes of `text`, on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
