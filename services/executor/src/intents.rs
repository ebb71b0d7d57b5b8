//! Intents: the start and stop requests the planner's relay publishes to
//! `MENTAT_EVENTS`, read through one durable pull consumer per host.
//!
//! The consumer, `executor-<host-id>`, is created with `DeliverPolicy::New`
//! the first time, so a new executor does not replay intents from before it
//! existed. Afterwards it is durable: intents published while the executor
//! restarts wait for it, and an intent that was not acknowledged (the
//! executor died while handling it) is delivered again.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use mentat_bus::codec::{self, Encoding};
use mentat_bus::{streams, subject, Bus};
use mentat_domain::spec::{HealthSpec, RunSpec};
use mentat_domain::{Event, EventEnvelope};

use crate::{Error, Result};

/// How long the server waits for an acknowledgement before delivering an
/// intent again. Handling an intent never waits for a process to stop (the
/// watcher does that), so this is generous.
pub const ACK_WAIT: Duration = Duration::from_secs(30);

/// Delay before an intent whose handling failed (the bus was unreachable)
/// is delivered again.
pub const RETRY_DELAY: Duration = Duration::from_secs(1);

/// A request to start a replica on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartIntent {
    /// Replica id.
    pub replica: String,
    /// Service.
    pub service: String,
    /// Image (version).
    pub image: String,
    /// How to run it.
    pub run: RunSpec,
    /// Readiness probe, passed on in `ReplicaStarted`.
    pub health: HealthSpec,
    /// Deployment that asked for it, for the logs.
    pub deployment_id: Option<String>,
}

/// What an event on the intent subjects asks of this executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// Start a replica.
    Start(StartIntent),
    /// Stop a replica.
    Stop {
        /// Replica id.
        replica: String,
        /// Service.
        service: String,
        /// Why, for the logs.
        reason: String,
    },
    /// Addressed to another host, or not an intent at all.
    NotForUs,
}

impl Intent {
    /// Interpret `event` for the executor of `host`.
    pub fn of(event: Event, host: &str) -> Self {
        match event {
            Event::ReplicaStartRequested {
                replica,
                service,
                host: target,
                image,
                run,
                health,
                deployment_id,
            } if target == host => Intent::Start(StartIntent {
                replica,
                service,
                image,
                run,
                health,
                deployment_id,
            }),
            Event::ReplicaStopRequested {
                replica,
                service,
                host: target,
                reason,
            } if target == host => Intent::Stop {
                replica,
                service,
                reason,
            },
            _ => Intent::NotForUs,
        }
    }
}

/// Name of the durable consumer of `host`.
pub fn consumer_name(host: &str) -> String {
    format!("executor-{host}")
}

/// The stream of intent messages, re-opened when the server ends it.
pub struct Intents {
    js: jetstream::Context,
    name: String,
    messages: Option<pull::Stream>,
}

impl std::fmt::Debug for Intents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intents").field("name", &self.name).finish()
    }
}

impl Intents {
    /// Create the durable consumer of `host` if it does not exist yet, and
    /// start pulling from it.
    pub async fn open(bus: &Bus, host: &str) -> Result<Self> {
        let mut intents = Intents {
            js: bus.js.clone(),
            name: consumer_name(host),
            messages: None,
        };
        intents.messages = Some(intents.pull().await?);
        Ok(intents)
    }

    async fn pull(&self) -> Result<pull::Stream> {
        let err = |detail: String| Error::Consumer {
            consumer: self.name.clone(),
            detail,
        };
        let stream = self
            .js
            .get_stream(streams::EVENTS)
            .await
            .map_err(|e| err(format!("stream {}: {e}", streams::EVENTS)))?;
        // `get_or_create` keeps an existing consumer as it is: its position
        // survives restarts, and `DeliverPolicy::New` only applies once.
        let consumer = stream
            .get_or_create_consumer(
                &self.name,
                pull::Config {
                    durable_name: Some(self.name.clone()),
                    description: Some("start/stop intents for one executor host".into()),
                    deliver_policy: DeliverPolicy::New,
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: ACK_WAIT,
                    filter_subjects: vec![
                        subject::events_of_type("ReplicaStartRequested"),
                        subject::events_of_type("ReplicaStopRequested"),
                    ],
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| err(e.to_string()))?;
        consumer.messages().await.map_err(|e| err(e.to_string()))
    }

    /// The next intent message. Transient errors are logged and skipped; when
    /// the server ends the stream it is opened again, retrying every second.
    /// Cancel-safe.
    pub async fn next(&mut self) -> jetstream::Message {
        loop {
            let Some(messages) = self.messages.as_mut() else {
                match self.pull().await {
                    Ok(m) => self.messages = Some(m),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot open the intent consumer; retrying");
                        tokio::time::sleep(RETRY_DELAY).await;
                    }
                }
                continue;
            };
            match messages.next().await {
                Some(Ok(msg)) => return msg,
                Some(Err(e)) => {
                    tracing::warn!(consumer = %self.name, error = %e, "intent consumer error");
                    if matches!(
                        e.kind(),
                        pull::MessagesErrorKind::ConsumerDeleted
                            | pull::MessagesErrorKind::NoResponders
                    ) {
                        // Deleted by an operator, or the server lost it:
                        // create it again rather than failing forever.
                        self.messages = None;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                None => {
                    tracing::warn!(consumer = %self.name, "intent stream ended; reopening");
                    self.messages = None;
                }
            }
        }
    }
}

/// Decode an intent message's envelope. `None` (after logging) when it
/// cannot be decoded: such a message is terminated, never redelivered.
pub fn decode(msg: &jetstream::Message) -> Option<EventEnvelope> {
    match codec::decode(
        &msg.payload,
        Encoding::of(msg.headers.as_ref()),
        "EventEnvelope",
    ) {
        Ok(envelope) => Some(envelope),
        Err(e) => {
            tracing::error!(subject = %msg.subject, error = %e, "undecodable intent; dropping it");
            None
        }
    }
}

/// Acknowledge `msg` with `kind`, logging a failure (the server will then
/// deliver it again, and handlers are idempotent).
pub async fn ack(msg: &jetstream::Message, kind: AckKind) {
    if let Err(e) = msg.ack_with(kind).await {
        tracing::warn!(subject = %msg.subject, error = %e, "cannot acknowledge intent");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_intents_for_this_host_are_taken() {
        let stop = |host: &str| Event::ReplicaStopRequested {
            replica: "r1".into(),
            service: "web".into(),
            host: host.into(),
            reason: "replaced".into(),
        };
        assert!(matches!(Intent::of(stop("h1"), "h1"), Intent::Stop { .. }));
        assert_eq!(Intent::of(stop("h2"), "h1"), Intent::NotForUs);
        let other = Event::ReplicaHealthy {
            replica: "r1".into(),
            service: "web".into(),
        };
        assert_eq!(Intent::of(other, "h1"), Intent::NotForUs);
    }
}
