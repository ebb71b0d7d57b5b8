//! JetStream consumers as the services use them.
//!
//! - [`Durable`]: a named pull consumer whose position survives restarts
//!   (the planner's commands and facts, an executor's intents). It re-opens
//!   itself when the server ends or loses it, or its heartbeats stop (a
//!   NATS node lost under it), so a NATS restart is a pause, not a crash.
//! - [`ordered`]: an ephemeral ordered consumer for replays (the router's
//!   route tables, the health-watcher's replicas), with the number of
//!   messages that were waiting when it was created; it ends at a
//!   reconnection so that its owner re-opens it at once.

use std::time::Duration;

use async_nats::jetstream::consumer::pull::{self, Ordered, OrderedConfig};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy};
use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use tokio::sync::watch;

use crate::{Bus, Error, Result};

/// Pause before re-opening a consumer that failed.
pub const REOPEN_DELAY: Duration = Duration::from_secs(1);
/// How often the server says a durable consumer's pull is alive while no
/// message comes. Two missed in a row re-open the consumer: on a cluster,
/// a pull sent while the consumer was changing leader is never answered,
/// and would otherwise hold every message back until it expires.
pub const PULL_HEARTBEAT: Duration = Duration::from_secs(1);
/// How long one pull request lasts before the client sends a new one
/// (more than twice [`PULL_HEARTBEAT`], as the server requires).
pub const PULL_EXPIRES: Duration = Duration::from_secs(5);

/// What a durable consumer reads and how.
#[derive(Debug, Clone)]
pub struct DurableSpec {
    /// Stream it reads (see [`crate::streams`]).
    pub stream: &'static str,
    /// Durable name; the consumer's position is kept under it.
    pub name: String,
    /// Subjects it delivers; empty for the whole stream.
    pub filters: Vec<String>,
    /// Where a consumer created for the first time starts. An existing
    /// consumer keeps its position whatever this says.
    pub deliver: DeliverPolicy,
    /// How long the server waits for an acknowledgement before delivering
    /// a message again.
    pub ack_wait: Duration,
    /// How many delivered messages may wait for their acknowledgement; 0
    /// for the server's default. 1 delivers strictly in order, one at a
    /// time: a message held back (while the planner's log is unreachable)
    /// holds back every later one instead of being overtaken.
    pub max_ack_pending: i64,
}

/// A durable pull consumer that re-opens itself.
pub struct Durable {
    js: jetstream::Context,
    spec: DurableSpec,
    messages: Option<pull::Stream>,
    reconnections: watch::Receiver<u64>,
}

impl std::fmt::Debug for Durable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durable").field("spec", &self.spec).finish()
    }
}

impl Durable {
    /// Create the consumer if it does not exist yet, and start pulling.
    pub async fn open(bus: &Bus, spec: DurableSpec) -> Result<Self> {
        let mut durable = Durable {
            js: bus.js.clone(),
            spec,
            messages: None,
            reconnections: bus.reconnections(),
        };
        durable.messages = Some(durable.pull().await?);
        Ok(durable)
    }

    async fn pull(&self) -> Result<pull::Stream> {
        let spec = &self.spec;
        let err = |e: &dyn std::fmt::Display| {
            Error::Nats(format!("consumer {} on {}: {e}", spec.name, spec.stream))
        };
        let consumer = self
            .js
            .get_stream(spec.stream)
            .await
            .map_err(|e| err(&e))?
            .get_or_create_consumer(
                &spec.name,
                pull::Config {
                    durable_name: Some(spec.name.clone()),
                    deliver_policy: spec.deliver,
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: spec.ack_wait,
                    max_ack_pending: spec.max_ack_pending,
                    filter_subjects: spec.filters.clone(),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| err(&e))?;
        consumer
            .stream()
            .heartbeat(PULL_HEARTBEAT)
            .expires(PULL_EXPIRES)
            .messages()
            .await
            .map_err(|e| err(&e))
    }

    /// The next message. Transient errors are logged and skipped; when the
    /// server ends the stream or loses the consumer, or the connection was
    /// re-established, it is opened again, retrying every [`REOPEN_DELAY`].
    /// Cancel-safe.
    pub async fn next(&mut self) -> jetstream::Message {
        loop {
            let Some(messages) = self.messages.as_mut() else {
                match self.pull().await {
                    Ok(m) => self.messages = Some(m),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot open the consumer; retrying");
                        tokio::time::sleep(REOPEN_DELAY).await;
                    }
                }
                continue;
            };
            let next = tokio::select! {
                next = messages.next() => next,
                Ok(()) = self.reconnections.changed() => {
                    tracing::info!(consumer = %self.spec.name, "reconnected to NATS; reopening the consumer");
                    self.messages = None;
                    continue;
                }
            };
            match next {
                Some(Ok(msg)) => return msg,
                Some(Err(e)) => {
                    tracing::warn!(consumer = %self.spec.name, error = %e, "consumer error");
                    if matches!(
                        e.kind(),
                        pull::MessagesErrorKind::ConsumerDeleted
                            | pull::MessagesErrorKind::NoResponders
                            | pull::MessagesErrorKind::MissingHeartbeat
                    ) {
                        // Deleted by an operator, lost by the server, or
                        // its pull went unanswered (a new leader on a
                        // cluster): create it again rather than wait.
                        self.messages = None;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                None => {
                    tracing::warn!(consumer = %self.spec.name, "consumer stream ended; reopening");
                    self.messages = None;
                }
            }
        }
    }
}

/// How many times an acknowledgement is sent until the server confirms it.
pub const ACK_ATTEMPTS: u32 = 10;

/// Acknowledge `msg` with `kind`. A final [`AckKind::Ack`] waits for the
/// server to confirm it and is sent again until it does (up to
/// [`ACK_ATTEMPTS`]): on a cluster an acknowledgement sent while the
/// consumer changes leader is lost, and the message would come back only
/// after its acknowledgement wait, holding back every message behind it.
/// A failure is logged: the server then delivers the message again, and
/// every handler is idempotent.
pub async fn ack(msg: &jetstream::Message, kind: AckKind) {
    if !matches!(kind, AckKind::Ack) {
        if let Err(e) = msg.ack_with(kind).await {
            tracing::warn!(subject = %msg.subject, error = %e, "cannot acknowledge a message");
        }
        return;
    }
    let mut pause = Duration::from_millis(100);
    for attempt in 1..=ACK_ATTEMPTS {
        match msg.double_ack().await {
            Ok(()) => return,
            Err(e) if attempt == ACK_ATTEMPTS => {
                tracing::warn!(subject = %msg.subject, error = %e, "the server never confirmed an acknowledgement");
            }
            Err(e) => {
                tracing::debug!(subject = %msg.subject, error = %e, "acknowledgement not confirmed; again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(REOPEN_DELAY);
            }
        }
    }
}

/// An ordered consumer for a replay: its messages, and how many matching
/// messages were waiting when it was created (0: nothing to replay).
pub struct Replay {
    messages: Ordered,
    reconnections: watch::Receiver<u64>,
    /// Matching messages waiting when the consumer was created.
    pub backlog: u64,
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay")
            .field("backlog", &self.backlog)
            .finish()
    }
}

impl Replay {
    /// The next message; `None` when the server ended the consumer or the
    /// connection was re-established: open a new one with [`ordered`].
    /// Cancel-safe.
    pub async fn next(&mut self) -> Option<Result<jetstream::Message>> {
        tokio::select! {
            next = self.messages.next() => next.map(|r| r.map_err(Error::nats)),
            Ok(()) = self.reconnections.changed() => None,
        }
    }
}

/// An ordered consumer of `filters` on `stream` from `deliver`.
pub async fn ordered(
    bus: &Bus,
    stream: &'static str,
    filters: Vec<String>,
    deliver: DeliverPolicy,
) -> Result<Replay> {
    let reconnections = bus.reconnections();
    let err = |e: &dyn std::fmt::Display| Error::Nats(format!("ordered consumer on {stream}: {e}"));
    let consumer = bus
        .js
        .get_stream(stream)
        .await
        .map_err(|e| err(&e))?
        .create_consumer(OrderedConfig {
            filter_subjects: filters,
            deliver_policy: deliver,
            ..Default::default()
        })
        .await
        .map_err(|e| err(&e))?;
    let backlog = consumer.cached_info().num_pending;
    let messages = consumer.messages().await.map_err(|e| err(&e))?;
    Ok(Replay {
        messages,
        reconnections,
        backlog,
    })
}
