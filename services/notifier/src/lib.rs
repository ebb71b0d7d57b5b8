//! The notifier: it turns the transitions of rollouts and deployments into
//! webhook POSTs.
//!
//! It consumes `MENTAT_EVENTS` with a durable consumer: `NotifyDefined`
//! (the webhooks of the service file's `notify:` block, as applied) and
//! the notifiable events (see [`mentat_domain::notify::NOTIFIABLE`]). For
//! each event, in log order, each webhook that wants it gets a POST:
//! Slack-compatible JSON or the event envelope, with the event id as
//! `Idempotency-Key` and, when the webhook has a secret, `X-Mentat-Signature:
//! sha256=<HMAC-SHA256 of the body>`. A failed POST is tried again after
//! 1 s, doubling to 60 s, 10 tries in all. Each outcome is published as a
//! fact (`WebhookDelivered`, `WebhookFailed`), which the planner records in
//! the stream of the event told; only then is the event acknowledged.
//!
//! A restart neither loses nor repeats a delivery: the consumer delivers
//! again what was not acknowledged, and the outcomes already published
//! (read back from `MENTAT_FACTS` at start) are not delivered again. (A
//! POST answered but whose outcome was not yet published when the process
//! died is sent again, with the same `Idempotency-Key`.) The notifier is a
//! process of its own: a slow or failing receiver never holds up a
//! deployment or a rollout, only later webhook deliveries.
//!
//! - [`format`]: the bodies (pure).
//! - [`hmac`]: the signature (pure).
//! - [`post`]: one POST.
//! - [`metrics`]: the names of its metrics on `/metrics`.

pub mod format;
pub mod hmac;
pub mod metrics;
pub mod post;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::AckKind;
use clap::Parser;
use mentat_bus::consumer::{ack, ordered, Durable, DurableSpec};
use mentat_bus::{codec, new_id, now_ms, streams, Bus, Encoding};
use mentat_domain::event::{Event, EventEnvelope};
use mentat_domain::notify::{parse_url, Webhook, NOTIFIABLE};
use mentat_domain::Fact;
use mentat_runtime::Shutdown;

/// How often an event being retried is reported in progress.
const PROGRESS: Duration = Duration::from_secs(2);

/// How long the notifier waits for NATS at start-up.
pub const CONNECT_WAIT: Duration = Duration::from_secs(30);

/// Everything the notifier needs to know at start-up.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "mentat-notifier",
    version,
    about = "POSTs the transitions of rollouts and deployments to the webhooks of the notify block."
)]
pub struct Config {
    /// NATS server to connect to; several URLs separated by commas for a cluster.
    #[arg(long, env = "MENTAT_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats: String,
    /// Copies JetStream keeps of each of Mentat's streams (`auto` or 1 to 5).
    #[arg(long, env = "MENTAT_STREAM_REPLICAS", default_value = "auto")]
    pub stream_replicas: mentat_bus::Replicas,
    /// Credentials for NATS, or `--insecure`.
    #[command(flatten)]
    pub access: mentat_runtime::NatsAccess,
    /// Where `/metrics` is served, if anywhere.
    #[command(flatten)]
    pub admin: mentat_runtime::metrics::AdminListen,
    /// Tries of one delivery before it is recorded as failed (1 to 20).
    #[arg(long, env = "MENTAT_WEBHOOK_TRIES", default_value_t = 10)]
    pub tries: u32,
    /// Pause before the second try, in milliseconds; it doubles after each.
    #[arg(long, env = "MENTAT_WEBHOOK_FIRST_RETRY_MS", default_value_t = 1000)]
    pub first_retry_ms: u64,
    /// Longest pause between tries, in milliseconds.
    #[arg(long, env = "MENTAT_WEBHOOK_MAX_RETRY_MS", default_value_t = 60_000)]
    pub max_retry_ms: u64,
    /// Milliseconds one POST may take (connect, send, status line).
    #[arg(long, env = "MENTAT_WEBHOOK_TIMEOUT_MS", default_value_t = 10_000)]
    pub timeout_ms: u64,
}

/// A bad configuration value, naming its flag.
#[derive(Debug, thiserror::Error)]
#[error("--{field}: {message}")]
pub struct ConfigError {
    /// The flag.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

impl Config {
    /// Check every value; the error names the first bad flag.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, message: &str| {
            Err(ConfigError {
                field,
                message: message.to_owned(),
            })
        };
        if mentat_bus::client::server_addrs(&self.nats).is_err() {
            return bad(
                "nats",
                "must name one NATS server or several separated by commas",
            );
        }
        if !(1..=20).contains(&self.tries) {
            return bad("tries", "must be 1 to 20");
        }
        if self.first_retry_ms == 0 || self.first_retry_ms > self.max_retry_ms {
            return bad("first-retry-ms", "must be 1 to --max-retry-ms");
        }
        if self.max_retry_ms > 600_000 {
            return bad("max-retry-ms", "must be at most 600000 (10 minutes)");
        }
        if !(1..=60_000).contains(&self.timeout_ms) {
            return bad("timeout-ms", "must be 1 to 60000");
        }
        Ok(())
    }

    /// How long JetStream waits for an event to be acknowledged: one POST
    /// and a margin.
    pub fn ack_wait(&self) -> Duration {
        Duration::from_millis(self.timeout_ms) + Duration::from_secs(5)
    }

    /// The pause after try `n` (from 1): the first, doubled each time, capped.
    pub fn backoff(&self, n: u32) -> Duration {
        let ms = self
            .first_retry_ms
            .saturating_mul(1u64 << n.saturating_sub(1).min(30));
        Duration::from_millis(ms.min(self.max_retry_ms))
    }
}

/// A delivery: (event id, webhook name).
type Key = (String, String);

/// The subjects of the outcomes this notifier (or an earlier run) published.
fn outcome_filters() -> Vec<String> {
    ["WebhookDelivered", "WebhookFailed"]
        .iter()
        .map(|t| format!("mentat.fact.*.{t}"))
        .collect()
}

/// The events the notifier reads: the notify block, and what it tells.
fn event_filters() -> Vec<String> {
    std::iter::once("mentat.evt._notify.NotifyDefined".to_owned())
        .chain(NOTIFIABLE.iter().map(|t| format!("mentat.evt.*.{t}")))
        .collect()
}

/// Every message of `stream` under `filters` stored now, decoded as `T`
/// (those that do not decode are skipped).
async fn read_all<T: serde::de::DeserializeOwned>(
    bus: &Bus,
    stream: &'static str,
    filters: Vec<String>,
    what: &'static str,
) -> anyhow::Result<Vec<T>> {
    let mut out = Vec::new();
    let mut replay = ordered(bus, stream, filters, DeliverPolicy::All).await?;
    for _ in 0..replay.backlog {
        let Some(msg) = replay.next().await else {
            anyhow::bail!("the connection was re-established while reading {what}");
        };
        let msg = msg?;
        let encoding = Encoding::of(msg.headers.as_ref());
        if let Ok(value) = codec::decode::<T>(&msg.payload, encoding, what) {
            out.push(value);
        }
    }
    Ok(out)
}

/// Every delivery whose outcome is already published.
async fn published(bus: &Bus) -> anyhow::Result<HashSet<Key>> {
    let facts: Vec<Fact> = read_all(bus, streams::FACTS, outcome_filters(), "Fact").await?;
    Ok(facts
        .into_iter()
        .filter_map(|fact| match fact.event {
            Event::WebhookDelivered {
                event_id, webhook, ..
            }
            | Event::WebhookFailed {
                event_id, webhook, ..
            } => Some((event_id, webhook)),
            _ => None,
        })
        .collect())
}

/// Every notify block applied so far, by the log position of its
/// `NotifyDefined`: an event is told to the webhooks defined before it.
#[derive(Debug, Default)]
struct Defined(Vec<(i64, Vec<Webhook>)>);

impl Defined {
    fn add(&mut self, envelope: &EventEnvelope) {
        if let Event::NotifyDefined { webhooks, .. } = &envelope.event {
            if !self.0.iter().any(|(p, _)| *p == envelope.position) {
                self.0.push((envelope.position, webhooks.clone()));
                self.0.sort_by_key(|(p, _)| *p);
            }
        }
    }

    fn before(&self, position: i64) -> &[Webhook] {
        self.0
            .iter()
            .rev()
            .find(|(p, _)| *p < position)
            .map_or(&[], |(_, w)| w.as_slice())
    }
}

/// Run the notifier until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    config.validate()?;
    let access = config.access.access(&config.nats)?;
    metrics::describe();
    let _admin = config
        .admin
        .start(mentat_runtime::metrics::no_refresh(), shutdown.token())
        .await?;
    let bus = tokio::select! {
        bus = Bus::connect_with(&access, "mentat-notifier", CONNECT_WAIT, config.stream_replicas) => bus?,
        _ = shutdown.cancelled() => return Ok(()),
    };
    let mut done = published(&bus).await?;
    // The consumer goes on after the last event acknowledged: the notify
    // blocks before it are read here.
    let mut defined = Defined::default();
    let filter = vec!["mentat.evt._notify.NotifyDefined".to_owned()];
    for envelope in
        read_all::<EventEnvelope>(&bus, streams::EVENTS, filter, "EventEnvelope").await?
    {
        defined.add(&envelope);
    }
    tracing::info!(
        outcomes = done.len(),
        notify_blocks = defined.0.len(),
        "notifier started"
    );
    let spec = DurableSpec {
        stream: streams::EVENTS,
        name: "notifier".into(),
        filters: event_filters(),
        deliver: DeliverPolicy::All,
        // Short, so that a message a stopped notifier held is delivered
        // again soon after a restart; while it retries, the message is
        // reported in progress every PROGRESS and before each POST.
        ack_wait: config.ack_wait(),
        max_ack_pending: 1,
    };
    let mut events = Durable::open(&bus, spec).await?;
    loop {
        let msg = tokio::select! {
            msg = events.next() => msg,
            _ = shutdown.cancelled() => break,
        };
        let encoding = Encoding::of(msg.headers.as_ref());
        let envelope = match codec::decode::<EventEnvelope>(&msg.payload, encoding, "EventEnvelope")
        {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "dropped an undecodable event");
                ack(&msg, AckKind::Ack).await;
                continue;
            }
        };
        if let Event::NotifyDefined { webhooks, .. } = &envelope.event {
            tracing::info!(webhooks = webhooks.len(), "webhooks defined");
            defined.add(&envelope);
            ack(&msg, AckKind::Ack).await;
            continue;
        }
        let webhooks = defined.before(envelope.position);
        // A POST and the publication of its outcome are never cut apart:
        // shutdown is heeded only between tries.
        match tell(
            &bus, &config, webhooks, &envelope, &mut done, &msg, &shutdown,
        )
        .await
        {
            Ok(true) => ack(&msg, AckKind::Ack).await,
            // Not acknowledged: delivered again after a restart.
            Ok(false) => break,
            Err(e) => {
                tracing::warn!(error = %e, "could not publish an outcome; the event comes again");
                ack(&msg, AckKind::Nak(Some(Duration::from_secs(1)))).await;
            }
        }
    }
    tracing::info!("notifier stopping");
    Ok(())
}

/// Tell every webhook that wants `envelope` and has not had it yet, and
/// publish each outcome. `Ok(false)` when `shutdown` came between tries.
async fn tell(
    bus: &Bus,
    config: &Config,
    webhooks: &[Webhook],
    envelope: &EventEnvelope,
    done: &mut HashSet<Key>,
    msg: &async_nats::jetstream::Message,
    shutdown: &Shutdown,
) -> anyhow::Result<bool> {
    let kind = envelope.event.type_name();
    for hook in webhooks.iter().filter(|w| w.wants(kind)) {
        let key = (envelope.id.clone(), hook.name.clone());
        if done.contains(&key) {
            continue;
        }
        let Some((attempts, result)) = deliver(config, hook, envelope, msg, shutdown).await else {
            return Ok(false);
        };
        let (stream, event_type, event_id, webhook) = (
            envelope.stream.clone(),
            kind.to_owned(),
            envelope.id.clone(),
            hook.name.clone(),
        );
        let rollout_id = envelope.event.rollout_id().map(str::to_owned);
        let result_label = if result.is_ok() {
            "delivered"
        } else {
            "failed"
        };
        ::metrics::counter!(metrics::DELIVERIES_TOTAL, "result" => result_label).increment(1);
        let event = match result {
            Ok(status) => Event::WebhookDelivered {
                webhook,
                event_id,
                event_type,
                stream,
                rollout_id,
                attempts,
                status,
            },
            Err(error) => {
                tracing::warn!(webhook = %hook.name, event = kind, %error, attempts, "webhook failed");
                Event::WebhookFailed {
                    webhook,
                    event_id,
                    event_type,
                    stream,
                    rollout_id,
                    attempts,
                    error,
                }
            }
        };
        let fact = Fact {
            id: new_id(),
            observed_at_ms: now_ms(),
            event,
        };
        bus.publish_fact(&fact).await?;
        done.insert(key);
    }
    Ok(true)
}

/// POST `envelope` to `hook` until it answers 2xx or the tries run out:
/// the tries made and the status, or the last error; `None` when
/// `shutdown` came while waiting to try again.
async fn deliver(
    config: &Config,
    hook: &Webhook,
    envelope: &EventEnvelope,
    msg: &async_nats::jetstream::Message,
    shutdown: &Shutdown,
) -> Option<(u32, Result<u16, String>)> {
    let url = match parse_url(&hook.url) {
        Ok(url) => url,
        Err(e) => return Some((0, Err(format!("url: {e}")))),
    };
    let body = format::body(envelope, hook.format);
    let mut last = String::new();
    for n in 1..=config.tries {
        if n > 1 {
            let until = tokio::time::Instant::now() + config.backoff(n - 1);
            while tokio::time::Instant::now() < until {
                tokio::select! {
                    _ = tokio::time::sleep_until(until.min(tokio::time::Instant::now() + PROGRESS)) => {}
                    _ = shutdown.cancelled() => return None,
                }
                ack(msg, AckKind::Progress).await;
            }
        }
        ack(msg, AckKind::Progress).await;
        // Read each time: a secret put right is used at the next try.
        let signature = match hook.secret_file.as_deref() {
            None => None,
            Some(path) => match mentat_runtime::secrets::read_secret_file(Path::new(path)) {
                Ok(secret) => Some(hmac::signature(secret.as_bytes(), &body)),
                Err(e) => {
                    last = format!("secret_file: {e}");
                    continue;
                }
            },
        };
        let headers = post::Headers {
            event_type: envelope.event.type_name().to_owned(),
            event_id: envelope.id.clone(),
            signature,
        };
        let started = std::time::Instant::now();
        let posted = post::post(
            &url,
            &headers,
            &body,
            Duration::from_millis(config.timeout_ms),
        )
        .await;
        ::metrics::histogram!(metrics::POST_DURATION).record(started.elapsed());
        let ok = if matches!(posted, Ok(200..=299)) {
            "ok"
        } else {
            "failed"
        };
        ::metrics::counter!(metrics::POSTS_TOTAL, "result" => ok).increment(1);
        match posted {
            Ok(status @ 200..=299) => {
                tracing::info!(webhook = %hook.name, event = headers.event_type, status, tries = n, "delivered");
                return Some((n, Ok(status)));
            }
            Ok(status) => last = format!("HTTP status {status}"),
            Err(e) => last = e,
        }
        tracing::debug!(webhook = %hook.name, error = %last, try_ = n, "webhook try failed");
    }
    Some((config.tries, Err(last)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_wait_one_second_doubling_to_a_minute() {
        let config = Config::parse_from(["mentat-notifier"]);
        config.validate().expect("defaults are valid");
        let waits: Vec<u64> = (1..config.tries)
            .map(|n| config.backoff(n).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(config.tries, 10);
        let bad = Config::parse_from(["mentat-notifier", "--tries", "0"]);
        assert_eq!(bad.validate().expect_err("0 tries").field, "tries");
    }
}
