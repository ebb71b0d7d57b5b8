//! Answers to the audit queries: `mentat.query.audit_verify` (in a task of
//! its own, one at a time, since it reads the whole log),
//! `mentat.query.audit_state` (likewise: it folds the log up to a point),
//! `mentat.query.audit_replay` (in a task of its own, one at a time: it
//! takes every decision of the log again), `mentat.query.audit_export`
//! and `mentat.query.audit_key`. Any planner, leading or standing by,
//! answers them.

use std::sync::atomic::Ordering;

use mentat_bus::anchors::{self, Found};
use mentat_bus::{codec, Bus, Encoding};
use std::collections::BTreeMap;

use mentat_domain::audit::{
    self, AuditExportQuery, AuditExportReply, AuditKeyReply, AuditStateQuery, AuditStateReply,
    AuditVerifyQuery, AuditVerifyReply, LoggedEvent, StatePoint, EXPORT_DEFAULT_LIMIT,
    EXPORT_MAX_LIMIT,
};
use mentat_domain::command::{RejectKind, StatusQuery, StatusReply};
use mentat_domain::paging;
use mentat_domain::replay::{AuditReplayQuery, AuditReplayReply, Replay};
use mentat_store::{Chain, RecordedEvent, Store};

use super::{log_break, Audit};
use crate::{log, queries};

/// Verify the whole log in a task of its own and answer `msg` from it; or
/// answer at once that a verification is already running.
pub async fn spawn_verify(store: Store, bus: Bus, audit: Audit, msg: async_nats::Message) {
    let encoding = Encoding::of(msg.headers.as_ref());
    if let Err(e) = codec::decode::<AuditVerifyQuery>(&msg.payload, encoding, "AuditVerifyQuery") {
        let reply = AuditVerifyReply::Rejected {
            kind: RejectKind::Invalid,
            reason: e.to_string(),
        };
        send(&bus, &msg, &reply).await;
        return;
    }
    let busy = AuditVerifyReply::Rejected {
        kind: RejectKind::Unavailable,
        reason: "this planner is verifying the log already; retry when it is done".into(),
    };
    let flag = audit.verifying.clone();
    let on = bus.clone();
    let work = async move { verify(&store, &on, &audit).await };
    one_at_a_time(bus, msg, &flag, busy, work).await;
}

/// Answer `msg` with what `work` computes in a task of its own, one run
/// at a time per `flag`; while a run holds it, answer `busy` at once.
async fn one_at_a_time<R>(
    bus: Bus,
    msg: async_nats::Message,
    flag: &std::sync::Arc<std::sync::atomic::AtomicBool>,
    busy: R,
    work: impl std::future::Future<Output = R> + Send + 'static,
) where
    R: serde::Serialize + Send + Sync + 'static,
{
    if flag.swap(true, Ordering::SeqCst) {
        send(&bus, &msg, &busy).await;
        return;
    }
    let running = Running(flag.clone());
    tokio::spawn(async move {
        let reply = work.await;
        drop(running);
        send(&bus, &msg, &reply).await;
    });
}

/// Clears the "verifying" flag when dropped, even if the task panicked.
struct Running(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

async fn send<T: serde::Serialize>(bus: &Bus, msg: &async_nats::Message, reply: &T) {
    if let Err(e) = bus.reply(msg, reply).await {
        tracing::warn!(error = %e, subject = %msg.subject, "could not send reply");
    }
}

/// Recompute the whole chain, checking it against every anchor signed
/// with the planner's key (`MENTAT_ANCHORS` and the anchor file) and
/// skipping the breaks accepted in the log.
pub async fn verify(store: &Store, bus: &Bus, audit: &Audit) -> AuditVerifyReply {
    let trusted = audit.public();
    let mut found = Found::default();
    if let Err(e) = anchors::read_stream(bus, &trusted, &mut found).await {
        return AuditVerifyReply::Rejected {
            kind: RejectKind::Unavailable,
            reason: format!("cannot read the anchors in MENTAT_ANCHORS: {e}"),
        };
    }
    if let Some(path) = &audit.anchor_file {
        if let Err(e) = anchors::read_file(path, &trusted, &mut found) {
            return AuditVerifyReply::Rejected {
                kind: RejectKind::Unavailable,
                reason: format!("cannot read the anchor file {}: {e}", path.display()),
            };
        }
    }
    let accepted = match super::trust::accepted_breaks(store, &trusted).await {
        Ok(a) => a,
        Err(e) => return unavailable(e),
    };
    let mut chain = Chain::genesis();
    for anchor in &found.anchors {
        chain.anchor(anchor.position, &anchor.head_hash);
    }
    for position in accepted {
        chain.accept(position);
    }
    let anchors_read = found.anchors.len() as u64;
    match store.verify_with(chain).await {
        Ok(v) => AuditVerifyReply::Ok {
            head_position: v.head_position,
            head_hash: v.head_hash,
            anchors_checked: v.anchors_checked as u64,
            accepted: v.accepted.iter().map(log_break).collect(),
            forged: found.forged,
        },
        Err(mentat_store::Error::Tampered {
            position,
            kind,
            detail,
        }) => AuditVerifyReply::Broken {
            found: audit::LogBreak {
                position,
                kind: super::kind(kind),
                detail,
            },
            anchors_read,
            forged: found.forged,
        },
        Err(e) => unavailable(e),
    }
}

fn unavailable(e: impl std::fmt::Display) -> AuditVerifyReply {
    AuditVerifyReply::Rejected {
        kind: RejectKind::Unavailable,
        reason: format!("cannot read the log: {e}"),
    }
}

/// A page of the log as stored: events after `after`, at most `limit`
/// (default [`EXPORT_DEFAULT_LIMIT`], at most [`EXPORT_MAX_LIMIT`]) and
/// under [`paging::PAGE_BYTES`] (at least one).
pub async fn export(store: &Store, query: &AuditExportQuery) -> AuditExportReply {
    let after = query.after.unwrap_or(0).max(0);
    let limit = query
        .limit
        .unwrap_or(EXPORT_DEFAULT_LIMIT)
        .clamp(1, EXPORT_MAX_LIMIT);
    let recorded = match store.read_all(after, i64::from(limit)).await {
        Ok(r) => r,
        Err(e) => {
            return AuditExportReply::Rejected {
                kind: RejectKind::Unavailable,
                reason: format!("cannot read the log: {e}"),
            }
        }
    };
    let full = recorded.len() == limit as usize;
    let (page, rest) = paging::page(&recorded, None, Some(limit), |r| {
        r.payload.len() + r.metadata.len() + r.stream.len() + r.id.len() + 512
    });
    let events: Vec<LoggedEvent> = page.into_iter().map(logged).collect();
    let next = match events.last() {
        Some(last) if full || rest.is_some() => Some(last.position),
        _ => None,
    };
    AuditExportReply::Ok { events, next }
}

/// The planner's public key.
pub fn key(audit: &Audit) -> AuditKeyReply {
    AuditKeyReply::Ok {
        key: audit::key_hex(&audit.public()),
        planner: audit.planner.clone(),
    }
}

/// A stored event on the wire.
pub fn logged(r: RecordedEvent) -> LoggedEvent {
    LoggedEvent {
        position: r.position,
        stream: r.stream,
        version: r.version,
        id: r.id,
        event_type: r.event_type,
        schema_version: r.schema_version,
        payload: r.payload,
        metadata: r.metadata,
        recorded_at_ms: r.recorded_at_ms,
        prev_hash: r.prev_hash,
        hash: r.hash,
    }
}

/// Answer `mentat.query.audit_state` in a task of its own (it folds the log
/// from its start), one such fold at a time per planner: others wait
/// their turn.
pub async fn spawn_state(store: Store, bus: Bus, audit: Audit, msg: async_nats::Message) {
    let encoding = Encoding::of(msg.headers.as_ref());
    let query = codec::decode::<AuditStateQuery>(&msg.payload, encoding, "AuditStateQuery")
        .map_err(|e| e.to_string())
        .and_then(|q| q.point().map(|point| (q, point)));
    let (query, point) = match query {
        Ok(q) => q,
        Err(reason) => {
            let reply = AuditStateReply::Rejected {
                kind: RejectKind::Invalid,
                reason,
            };
            send(&bus, &msg, &reply).await;
            return;
        }
    };
    tokio::spawn(async move {
        let reply = match audit.stating.clone().acquire_owned().await {
            Ok(_turn) => state(&store, &audit, &query, point).await,
            Err(_) => AuditStateReply::Rejected {
                kind: RejectKind::Unavailable,
                reason: "this planner is shutting down".into(),
            },
        };
        send(&bus, &msg, &reply).await;
    });
}

/// What `mentat.query.status` would have answered at `point`: the world
/// folded up to it by [`log::replay_until`], answered by
/// [`queries::status`], the function that answers `status` live.
pub async fn state(
    store: &Store,
    audit: &Audit,
    query: &AuditStateQuery,
    point: StatePoint,
) -> AuditStateReply {
    let folded = log::replay_until(store, point, &audit.snapshots).await;
    let (world, broken, recorded_at_ms) = match folded {
        Ok(folded) => folded,
        Err(e) => return unavailable_state(e),
    };
    let status_query = StatusQuery {
        service: query.service.clone(),
        after: query.after,
        limit: query.limit,
    };
    match queries::status(&world, &broken, &status_query, None) {
        StatusReply::Ok {
            services,
            hosts,
            next,
            host_states,
            held,
            ..
        } => AuditStateReply::Ok {
            position: world.position,
            recorded_at_ms,
            services,
            hosts,
            next,
            planners: Some(queries::planners(&world, Vec::new(), &audit.planner)),
            routers: queries::routers(&world, &BTreeMap::new()),
            host_states,
            held,
        },
        StatusReply::Rejected { kind, reason } => AuditStateReply::Rejected { kind, reason },
    }
}

fn unavailable_state(e: impl std::fmt::Display) -> AuditStateReply {
    AuditStateReply::Rejected {
        kind: RejectKind::Unavailable,
        reason: format!("cannot read the log: {e}"),
    }
}

/// Events read from the log per query while replaying it.
const REPLAY_PAGE: i64 = 1_000;

/// Replay the log's decisions in a task of its own and answer `msg` from
/// it; or answer at once that the query is invalid, or that a replay is
/// already running.
pub async fn spawn_replay(store: Store, bus: Bus, audit: Audit, msg: async_nats::Message) {
    let encoding = Encoding::of(msg.headers.as_ref());
    let config = codec::decode::<AuditReplayQuery>(&msg.payload, encoding, "AuditReplayQuery")
        .map_err(|e| e.to_string())
        .and_then(|q| q.config());
    let config = match config {
        Ok(config) => config,
        Err(reason) => {
            let reply = AuditReplayReply::Rejected {
                kind: RejectKind::Invalid,
                reason,
            };
            send(&bus, &msg, &reply).await;
            return;
        }
    };
    let busy = AuditReplayReply::Rejected {
        kind: RejectKind::Unavailable,
        reason: "this planner is replaying the log already; retry when it is done".into(),
    };
    let work = async move { replay(&store, config).await };
    one_at_a_time(bus, msg, &audit.replaying, busy, work).await;
}

/// Every decision of the log taken again ([`Replay`]), reading it a page
/// at a time: the whole log is never held.
pub async fn replay(store: &Store, config: mentat_domain::replay::Config) -> AuditReplayReply {
    let mut replay = Replay::new(config);
    let mut after = 0;
    while replay.wants_more() {
        let page = match store.read_all(after, REPLAY_PAGE).await {
            Ok(page) => page,
            Err(e) => {
                return AuditReplayReply::Rejected {
                    kind: RejectKind::Unavailable,
                    reason: format!("cannot read the log: {e}"),
                }
            }
        };
        let Some(last) = page.last() else { break };
        after = last.position;
        for recorded in &page {
            if !replay.wants_more() {
                break;
            }
            match log::envelope(recorded) {
                Ok(e) => replay.feed(&e),
                Err(error) => {
                    return AuditReplayReply::Rejected {
                        kind: RejectKind::ServiceBroken,
                        reason: format!(
                            "cannot replay past position {}: {error}",
                            recorded.position
                        ),
                    }
                }
            }
        }
    }
    AuditReplayReply::Ok {
        report: replay.finish(),
    }
}
