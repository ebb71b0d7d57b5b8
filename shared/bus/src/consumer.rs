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

use async_nats::jetstream::consumer::pull;
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
                // Bounded as a replay's creation is (see [`CREATE_TIMEOUT`]):
                // a request a dead node took is never answered.
                match tokio::time::timeout(CREATE_TIMEOUT, self.pull()).await {
                    Ok(Ok(m)) => self.messages = Some(m),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "cannot open the consumer; retrying");
                        tokio::time::sleep(REOPEN_DELAY).await;
                    }
                    Err(_) => {
                        tracing::info!(consumer = %self.spec.name, "no answer to opening the consumer; again");
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

/// An ordered consumer for a replay: its messages, in stream order with
/// none missing, and how many matching messages were waiting when it was
/// created (0: nothing to replay).
///
/// It is an ephemeral pull consumer (one replica, in memory, no acks) whose
/// server says every [`PULL_HEARTBEAT`] that its pull is alive. When the
/// heartbeats stop (the NATS node holding it died), the server loses it, or
/// a message comes out of order, it is created again from the stream
/// sequence after the last one delivered, so its owner sees neither a gap
/// nor a pause longer than a few heartbeats. (The library's own ordered
/// consumer waits for two missed 15 s heartbeats, a minute, before it
/// notices a lost node.)
pub struct Replay {
    js: jetstream::Context,
    stream: &'static str,
    filters: Vec<String>,
    /// Where the consumer starts when it is created the first time.
    deliver: DeliverPolicy,
    messages: Option<pull::Stream>,
    /// Stream sequence of the last message delivered, once there is one.
    delivered: Option<u64>,
    /// Consumer sequence of the last message taken from the current consumer.
    consumer_sequence: u64,
    reconnections: watch::Receiver<u64>,
    /// Matching messages waiting when the consumer was created.
    pub backlog: u64,
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay")
            .field("stream", &self.stream)
            .field("backlog", &self.backlog)
            .field("delivered", &self.delivered)
            .finish()
    }
}

impl Replay {
    /// The next message; `None` when the connection was re-established:
    /// open a new one with [`ordered`]. Errors are transient.
    /// Cancel-safe.
    pub async fn next(&mut self) -> Option<Result<jetstream::Message>> {
        loop {
            let Some(messages) = self.messages.as_mut() else {
                let deliver = match self.delivered {
                    Some(seq) => DeliverPolicy::ByStartSequence {
                        start_sequence: seq + 1,
                    },
                    None => self.deliver,
                };
                let created = tokio::select! {
                    created = create(&self.js, self.stream, &self.filters, deliver) => created,
                    Ok(()) = self.reconnections.changed() => return None,
                };
                match created {
                    Ok((messages, _)) => {
                        self.messages = Some(messages);
                        self.consumer_sequence = 0;
                    }
                    Err(e) => {
                        tracing::warn!(stream = self.stream, error = %e, "cannot re-create an ordered consumer; retrying");
                        tokio::time::sleep(RECREATE_DELAY).await;
                    }
                }
                continue;
            };
            let next = tokio::select! {
                next = messages.next() => next,
                Ok(()) = self.reconnections.changed() => return None,
            };
            match next {
                Some(Ok(msg)) => {
                    let info = match msg.info() {
                        Ok(info) => (info.consumer_sequence, info.stream_sequence),
                        Err(e) => return Some(Err(Error::nats(e))),
                    };
                    let (consumer_sequence, stream_sequence) = info;
                    if consumer_sequence != self.consumer_sequence + 1 {
                        tracing::info!(
                            stream = self.stream,
                            expected = self.consumer_sequence + 1,
                            got = consumer_sequence,
                            "ordered consumer out of order; re-creating it"
                        );
                        self.messages = None;
                        continue;
                    }
                    self.consumer_sequence = consumer_sequence;
                    self.delivered = Some(stream_sequence);
                    return Some(Ok(msg));
                }
                Some(Err(e)) => match e.kind() {
                    pull::MessagesErrorKind::MissingHeartbeat
                    | pull::MessagesErrorKind::NoResponders
                    | pull::MessagesErrorKind::ConsumerDeleted => {
                        tracing::warn!(stream = self.stream, error = %e, "ordered consumer lost; re-creating it");
                        self.messages = None;
                    }
                    _ => return Some(Err(Error::nats(e))),
                },
                None => {
                    tracing::warn!(
                        stream = self.stream,
                        "ordered consumer ended; re-creating it"
                    );
                    self.messages = None;
                }
            }
        }
    }
}

/// Create an ordered consumer of `filters` on `stream` from `deliver` and
/// start pulling; with the number of its matching messages waiting.
///
/// On a cluster that lost a node, the server may place the new consumer on
/// the dead node until it notices the loss (half a minute or more), and
/// then never answers the request: measured on 2.12, about one creation
/// in three in that window. Each attempt therefore has its own
/// bound, [`CREATE_TIMEOUT`], and the next attempt is placed afresh: up to
/// [`CREATE_ATTEMPTS`] in all.
async fn create(
    js: &jetstream::Context,
    stream: &'static str,
    filters: &[String],
    deliver: DeliverPolicy,
) -> Result<(pull::Stream, u64)> {
    let mut attempt = 1;
    loop {
        match tokio::time::timeout(CREATE_TIMEOUT, create_once(js, stream, filters, deliver)).await
        {
            Ok(created) => return created,
            Err(_) if attempt < CREATE_ATTEMPTS => {
                tracing::info!(
                    stream,
                    attempt,
                    "no answer to an ordered consumer's creation; placing it again"
                );
                attempt += 1;
            }
            Err(_) => {
                return Err(Error::Nats(format!(
                    "ordered consumer on {stream}: no answer to {CREATE_ATTEMPTS} creations of {}s each",
                    CREATE_TIMEOUT.as_secs()
                )))
            }
        }
    }
}

/// How long one attempt to create an ordered consumer may take. Creating
/// one takes milliseconds; a request the server placed on a dead node is
/// never answered.
pub const CREATE_TIMEOUT: Duration = Duration::from_secs(2);
/// Attempts to create an ordered consumer before [`create`] gives up.
pub const CREATE_ATTEMPTS: u32 = 10;

async fn create_once(
    js: &jetstream::Context,
    stream: &'static str,
    filters: &[String],
    deliver: DeliverPolicy,
) -> Result<(pull::Stream, u64)> {
    let err = |e: &dyn std::fmt::Display| Error::Nats(format!("ordered consumer on {stream}: {e}"));
    let consumer = js
        .get_stream(stream)
        .await
        .map_err(|e| err(&e))?
        .create_consumer(pull::Config {
            deliver_policy: deliver,
            ack_policy: AckPolicy::None,
            max_deliver: 1,
            filter_subjects: filters.to_vec(),
            num_replicas: 1,
            memory_storage: true,
            inactive_threshold: ORDERED_INACTIVE,
            ..Default::default()
        })
        .await
        .map_err(|e| err(&e))?;
    let backlog = consumer.cached_info().num_pending;
    let messages = consumer
        .stream()
        .heartbeat(PULL_HEARTBEAT)
        .expires(PULL_EXPIRES)
        .messages()
        .await
        .map_err(|e| err(&e))?;
    Ok((messages, backlog))
}

/// Pause before creating a lost ordered consumer again.
pub const RECREATE_DELAY: Duration = Duration::from_millis(250);
/// How long the server keeps an ordered consumer nobody pulls from.
const ORDERED_INACTIVE: Duration = Duration::from_secs(30);

/// An ordered consumer of `filters` on `stream` from `deliver`.
pub async fn ordered(
    bus: &Bus,
    stream: &'static str,
    filters: Vec<String>,
    deliver: DeliverPolicy,
) -> Result<Replay> {
    let mut replay = Replay {
        js: bus.js.clone(),
        stream,
        filters,
        deliver,
        messages: None,
        delivered: None,
        consumer_sequence: 0,
        reconnections: bus.reconnections(),
        backlog: 0,
    };
    let (messages, backlog) = create(&bus.js, stream, &replay.filters, deliver).await?;
    replay.messages = Some(messages);
    replay.backlog = backlog;
    Ok(replay)
}
