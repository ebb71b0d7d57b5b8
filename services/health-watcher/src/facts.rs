//! Replica facts as the log recorded them, read from `MENTAT_EVENTS`
//! through an ordered (ephemeral) consumer from the very first message, so
//! that a restarted health-watcher rebuilds the set of live replicas before
//! it starts probing. Only what the planner accepted counts: a fact it
//! refused (a `ReplicaStarted` from another host than the replica's) never
//! makes the health-watcher probe the address it names.

use async_nats::jetstream::consumer::DeliverPolicy;
use mentat_bus::codec::{self, Encoding};
use mentat_bus::consumer::{self, Replay};
use mentat_bus::{streams, subject, Bus};
use mentat_domain::event::{EventEnvelope, Fact};

use crate::{Error, Result};

/// The subjects of the recorded facts the health-watcher needs.
pub fn filter_subjects() -> Vec<String> {
    vec![
        subject::events_of_type("ReplicaStarted"),
        subject::events_of_type("ReplicaExited"),
    ]
}

/// One fact and whether the replay had caught up with the stream when it
/// was delivered.
#[derive(Debug)]
pub struct Delivery {
    /// The fact; `None` when the message could not be decoded (logged).
    pub fact: Option<Fact>,
    /// True when no older matching message was still waiting: the set of
    /// live replicas is current.
    pub caught_up: bool,
}

/// An ordered consumer over the replica facts.
pub struct Facts {
    messages: Replay,
}

impl std::fmt::Debug for Facts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Facts")
            .field("initial_pending", &self.messages.backlog)
            .finish()
    }
}

impl Facts {
    /// Create the consumer, delivering every stored fact first.
    pub async fn open(bus: &Bus) -> Result<Self> {
        let messages =
            consumer::ordered(bus, streams::EVENTS, filter_subjects(), DeliverPolicy::All)
                .await
                .map_err(|e| Error::Consumer(e.to_string()))?;
        Ok(Self { messages })
    }

    /// True when the stream held no matching fact when the consumer was
    /// created: there is nothing to replay.
    pub fn empty_at_start(&self) -> bool {
        self.messages.backlog == 0
    }

    /// The next fact. `Ok(None)` when the server ended the stream or NATS
    /// reconnected (open a new consumer); errors are transient and logged by
    /// the caller.
    /// Cancel-safe.
    pub async fn next(&mut self) -> Result<Option<Delivery>> {
        let msg = match self.messages.next().await {
            None => return Ok(None),
            Some(Err(e)) => return Err(Error::Consumer(e.to_string())),
            Some(Ok(msg)) => msg,
        };
        let caught_up = msg.info().map(|i| i.pending == 0).unwrap_or(false);
        let fact = match codec::decode::<EventEnvelope>(
            &msg.payload,
            Encoding::of(msg.headers.as_ref()),
            "EventEnvelope",
        ) {
            Ok(env) => Some(Fact {
                id: env.id,
                observed_at_ms: env.recorded_at_ms,
                event: env.event,
            }),
            Err(e) => {
                tracing::warn!(subject = %msg.subject, error = %e, "undecodable fact; skipping it");
                None
            }
        };
        Ok(Some(Delivery { fact, caught_up }))
    }
}
