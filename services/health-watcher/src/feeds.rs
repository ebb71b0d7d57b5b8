//! The three JetStream reads behind the threshold verdicts, all ordered
//! (ephemeral) consumers, so a restart simply reads again:
//!
//! - [`open_stats`]: `MENTAT_STATS` (`mentat.stats.>`), from a start time:
//!   the replay rebuilds the windows a previous health-watcher had.
//! - [`open_routes`]: the last `RouteChanged` of every service and every
//!   later one (`MENTAT_EVENTS`): which versions take traffic, and where.
//! - [`seed_verdicts`]: the verdict facts published before
//!   (`MENTAT_FACTS`), so that only changes are published after a restart.

use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::Message;
use mentat_bus::codec::{self, Encoding};
use mentat_bus::consumer::{self, Replay};
use mentat_bus::{streams, subject, Bus};
use mentat_domain::event::{Event, Fact};
use mentat_domain::stats::TrafficStats;
use mentat_domain::EventEnvelope;

use crate::traffic::Traffic;
use crate::{Error, Result};

/// Longest wait for the replay of the verdict facts.
const SEED_TIMEOUT: Duration = Duration::from_secs(30);

/// The verdict fact types.
pub const VERDICTS: [&str; 3] = ["ThresholdBreached", "NoData", "ThresholdsMet"];

/// Router statistics stored at or after `start_ms` (ms since epoch), then
/// every new interval.
pub async fn open_stats(bus: &Bus, start_ms: i64) -> Result<Replay> {
    streams::ensure_stats(bus).await?;
    let start_time =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(start_ms) * 1_000_000)
            .map_err(|e| Error::Consumer(format!("start time {start_ms}: {e}")))?;
    consumer::ordered(
        bus,
        streams::STATS,
        vec![subject::STATS_ALL.to_owned()],
        DeliverPolicy::ByStartTime { start_time },
    )
    .await
    .map_err(|e| Error::Consumer(e.to_string()))
}

/// The current route table of every service, then every change.
pub async fn open_routes(bus: &Bus) -> Result<Replay> {
    consumer::ordered(
        bus,
        streams::EVENTS,
        vec![subject::events_of_type("RouteChanged")],
        DeliverPolicy::LastPerSubject,
    )
    .await
    .map_err(|e| Error::Consumer(e.to_string()))
}

/// True when no older message was waiting behind `msg`.
pub fn caught_up(msg: &Message) -> bool {
    msg.info().map(|i| i.pending == 0).unwrap_or(false)
}

/// Decode a router interval; `None` (logged) when it cannot be.
pub fn decode_stats(msg: &Message) -> Option<TrafficStats> {
    codec::decode(&msg.payload, Encoding::of(msg.headers.as_ref()), "TrafficStats")
        .map_err(|e| tracing::warn!(subject = %msg.subject, error = %e, "undecodable traffic statistics; skipping them"))
        .ok()
}

/// Decode a relayed event; `None` (logged) when it cannot be.
pub fn decode_event(msg: &Message) -> Option<Event> {
    codec::decode::<EventEnvelope>(
        &msg.payload,
        Encoding::of(msg.headers.as_ref()),
        "EventEnvelope",
    )
    .map(|env| env.event)
    .map_err(
        |e| tracing::warn!(subject = %msg.subject, error = %e, "undecodable event; skipping it"),
    )
    .ok()
}

/// Fold every verdict fact published so far into `traffic`.
pub async fn seed_verdicts(bus: &Bus, traffic: &mut Traffic) -> Result<usize> {
    let filters = VERDICTS
        .iter()
        .map(|t| subject::health_facts_of_type(t))
        .collect();
    let mut replay = consumer::ordered(bus, streams::FACTS, filters, DeliverPolicy::All)
        .await
        .map_err(|e| Error::Consumer(e.to_string()))?;
    if replay.backlog == 0 {
        return Ok(0);
    }
    let mut seen = 0;
    let read = async {
        while let Some(next) = replay.next().await {
            let msg = next.map_err(|e| Error::Consumer(e.to_string()))?;
            let fact =
                codec::decode::<Fact>(&msg.payload, Encoding::of(msg.headers.as_ref()), "Fact");
            match fact {
                Ok(fact) => {
                    traffic.seed(&fact.event);
                    seen += 1;
                }
                Err(e) => {
                    tracing::warn!(subject = %msg.subject, error = %e, "undecodable verdict; skipping it")
                }
            }
            if caught_up(&msg) {
                return Ok(());
            }
        }
        Err(Error::Consumer("verdict replay ended early".into()))
    };
    tokio::time::timeout(SEED_TIMEOUT, read)
        .await
        .map_err(|_| Error::Consumer("verdict replay timed out".into()))??;
    Ok(seen)
}
