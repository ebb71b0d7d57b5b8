//! Intents: the start and stop requests the planner's relay publishes to
//! `MENTAT_EVENTS`, read through one durable pull consumer per host.
//!
//! The consumer, `executor-<host-id>`, is created with `DeliverPolicy::New`
//! the first time, so a new executor does not replay intents from before it
//! existed. Afterwards it is durable: intents published while the executor
//! restarts wait for it, and an intent that was not acknowledged (the
//! executor died while handling it) is delivered again.

use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::DeliverPolicy;
use mentat_bus::codec::{self, Encoding};
use mentat_bus::consumer::{Durable, DurableSpec};
use mentat_bus::{streams, subject, Bus};
use mentat_domain::spec::{HealthSpec, RunSpec};
use mentat_domain::{Event, EventEnvelope};

use crate::{Error, Result};

/// How long the server waits for an acknowledgement before delivering an
/// intent again. Handling an intent never waits for a process to stop (the
/// watcher does that) and starting one is quick, so this is short: an
/// intent taken by an executor that was killed before acknowledging it
/// reaches the restarted executor this long after, well inside a batch's
/// health timeout. Handling an intent twice is harmless (a replica already
/// running is reported again).
pub const ACK_WAIT: Duration = Duration::from_secs(5);

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
                ..
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

/// Open the durable consumer of `host`'s intents (created the first time).
pub async fn open(bus: &Bus, host: &str) -> Result<Durable> {
    let spec = DurableSpec {
        stream: streams::EVENTS,
        name: consumer_name(host),
        filters: vec![
            subject::events_of_type("ReplicaStartRequested"),
            subject::events_of_type("ReplicaStopRequested"),
        ],
        deliver: DeliverPolicy::New,
        max_ack_pending: 0,
        ack_wait: ACK_WAIT,
    };
    Durable::open(bus, spec).await.map_err(|e| Error::Consumer {
        consumer: consumer_name(host),
        detail: e.to_string(),
    })
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
