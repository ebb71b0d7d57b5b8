//! The relay: publishes every appended event, in log order, to the
//! JetStream stream `MENTAT_EVENTS` on `mentat.evt.<stream>.<EventType>`,
//! with the event id as `Nats-Msg-Id` so that publishing one twice is
//! harmless. JetStream is the fan-out and a replayable copy, not the truth.

use std::sync::Arc;
use std::time::Duration;

use mentat_bus::{codec, streams, subject, Bus, Encoding};
use mentat_domain::EventEnvelope;
use mentat_store::Store;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::log::envelope;

/// Events published per read of the log.
const PAGE: i64 = 500;

/// Publish the log to JetStream until `cancel` fires.
pub async fn run(store: Store, bus: Bus, appended: Arc<Notify>, cancel: CancellationToken) {
    let mut checkpoint = loop {
        match last_published(&bus).await {
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
        let subject = subject::event(&env.stream, env.event.type_name());
        bus.publish_durable(subject, &env.id, &env).await?;
        last = env.position;
    }
    Ok(last)
}

/// Position of the last event already in `MENTAT_EVENTS`, or 0.
async fn last_published(bus: &Bus) -> anyhow::Result<i64> {
    let mut stream = bus.js.get_stream(streams::EVENTS).await?;
    let last = stream.info().await?.state.last_sequence;
    if last == 0 {
        return Ok(0);
    }
    let message = stream.get_raw_message(last).await?;
    let env: EventEnvelope = codec::decode(&message.payload, Encoding::MsgPack, "EventEnvelope")?;
    Ok(env.position)
}
