//! The relay: publishes every appended event, in log order, to the
//! JetStream stream `MENTAT_EVENTS` on `mentat.evt.<stream>.<EventType>`,
//! with the event id as `Nats-Msg-Id` so that publishing one twice is
//! harmless. JetStream is the fan-out and a replayable copy, not the truth:
//! the relay's checkpoint is the last event of the log it finds in the
//! stream as the log holds it, never a position read from the stream alone.

use std::sync::Arc;
use std::time::Duration;

use mentat_bus::{codec, streams, Bus, Encoding};
use mentat_domain::EventEnvelope;
use mentat_store::Store;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::log::envelope;

/// Events published per read of the log.
const PAGE: i64 = 500;
/// Most messages looked at, back from the end of `MENTAT_EVENTS`, for the
/// last one that is the log's; with none, the relay starts from the
/// beginning (publishing again is harmless, consumers are idempotent).
const LOOK_BACK: u64 = 1000;

/// Publish the log to JetStream until `cancel` fires.
pub async fn run(store: Store, bus: Bus, appended: Arc<Notify>, cancel: CancellationToken) {
    let mut checkpoint = loop {
        match last_published(&bus, &store).await {
            Ok(p) => break p,
            Err(e) => {
                tracing::warn!(error = %e, "relay cannot read its checkpoint; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    tracing::info!(checkpoint, "relay started");
    loop {
        match publish_after(&store, &bus, checkpoint).await {
            Ok(p) if p > checkpoint => {
                checkpoint = p;
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, checkpoint, "relay could not publish; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
                continue;
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = appended.notified() => {}
            // A safety net: a missed notification costs at most this much.
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// Publish the events after `checkpoint`; returns the new checkpoint.
async fn publish_after(store: &Store, bus: &Bus, checkpoint: i64) -> anyhow::Result<i64> {
    let mut last = checkpoint;
    for recorded in store.read_all(checkpoint, PAGE).await? {
        let env = match envelope(&recorded) {
            Ok(env) => env,
            Err(error) => {
                // The planner has marked its stream broken; the rest of the
                // log is still published.
                tracing::error!(%error, "relay skipped an event that does not decode");
                last = recorded.position;
                continue;
            }
        };
        bus.publish_event(&env).await?;
        last = env.position;
    }
    Ok(last)
}

/// Position of the last event of the log already in `MENTAT_EVENTS`, or
/// 0. A message counts only when the log holds the very same event (id,
/// stream, version, content) at the position the message names: anything
/// else there (forged, or from another log) is passed over with a warning.
async fn last_published(bus: &Bus, store: &Store) -> anyhow::Result<i64> {
    let mut stream = bus.js.get_stream(streams::EVENTS).await?;
    let state = stream.info().await?.state.clone();
    let first = state.first_sequence.max(1);
    let mut sequence = state.last_sequence;
    while sequence >= first && state.last_sequence - sequence < LOOK_BACK {
        // A message deleted from the stream leaves a hole: skip it.
        if let Ok(message) = stream.get_raw_message(sequence).await {
            match codec::decode::<EventEnvelope>(
                &message.payload,
                Encoding::MsgPack,
                "EventEnvelope",
            ) {
                Ok(env) if in_log(store, &env).await? => return Ok(env.position),
                Ok(env) => tracing::warn!(
                    sequence,
                    position = env.position,
                    event_id = %env.id,
                    "a message in MENTAT_EVENTS is not the log's event at the position it names; not taken as the relay's checkpoint"
                ),
                Err(e) => {
                    tracing::warn!(sequence, error = %e, "an undecodable message in MENTAT_EVENTS; not taken as the relay's checkpoint")
                }
            }
        }
        sequence -= 1;
    }
    Ok(0)
}

/// True when the log holds `env` at its position, as the relay publishes it.
async fn in_log(store: &Store, env: &EventEnvelope) -> anyhow::Result<bool> {
    if env.position < 1 {
        return Ok(false);
    }
    Ok(match store.event_at(env.position).await? {
        Some(recorded) => envelope(&recorded).is_ok_and(|logged| logged == *env),
        None => false,
    })
}
