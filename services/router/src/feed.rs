//! The route feed: an ordered, ephemeral JetStream consumer of
//! `mentat.evt.*.RouteChanged` on `MENTAT_EVENTS`, starting with the last
//! event of each service (the current table) and then following new ones.
//! Each event carries a service's full table, so re-reading one is harmless.
//!
//! Once the table is current, every live change's apply latency is
//! measured: from the time JetStream stored the event (its `published`
//! timestamp) to the moment the new table is swapped in.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::consumer::DeliverPolicy;
use mentat_bus::consumer::{self, Replay};
use mentat_bus::{codec, streams, subject, Bus, Encoding};
use mentat_domain::{Event, EventEnvelope};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::announce::Applied;
use crate::drain::Drainer;
use crate::metrics;
use crate::table::TableWriter;
use crate::traffic::Registry;
use crate::Error;

/// Pause before re-opening the consumer after it failed.
const REOPEN_BACKOFF: Duration = Duration::from_secs(1);

/// An open consumer and what it applies events to.
pub struct Feed {
    bus: Bus,
    writer: TableWriter,
    drainer: Drainer,
    messages: Replay,
    /// Messages to read before the table is current; 0 when already.
    backlog: u64,
    /// True once the table was current: later changes are timed.
    live: bool,
    registry: Arc<Registry>,
    /// The newest planner epoch applied per service: a route change from an
    /// older epoch is ignored. Per service, because a re-opened feed
    /// replays each service's last change, whatever epoch decided it.
    epochs: HashMap<String, i64>,
    /// The route version applied per service, for the heartbeats.
    applied: Applied,
}

impl Feed {
    /// Create the consumer.
    pub async fn open(
        bus: Bus,
        writer: TableWriter,
        drainer: Drainer,
        registry: Arc<Registry>,
        applied: Applied,
    ) -> Result<Self, Error> {
        let messages = subscribe(&bus).await?;
        Ok(Feed {
            bus,
            writer,
            drainer,
            backlog: messages.backlog,
            messages,
            live: false,
            epochs: HashMap::new(),
            registry,
            applied,
        })
    }

    /// Follow the feed until `stop`. `current` is sent once the events that
    /// existed when the consumer was created have been applied.
    pub async fn run(mut self, stop: CancellationToken, current: oneshot::Sender<()>) {
        let mut current = Some(current);
        loop {
            if self.backlog == 0 {
                if let Some(tx) = current.take() {
                    let _ = tx.send(());
                    self.live = true;
                }
            }
            let next = tokio::select! {
                () = stop.cancelled() => return,
                next = self.messages.next() => next,
            };
            match next {
                Some(Ok(msg)) => {
                    self.apply(&msg);
                    self.backlog = msg.info().map_or(0, |i| i.pending);
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "route feed failed; re-opening the consumer");
                    self.reopen(&stop).await;
                }
                None => {
                    tracing::warn!(
                        "route feed ended (or NATS reconnected); re-opening the consumer"
                    );
                    self.reopen(&stop).await;
                }
            }
        }
    }

    fn apply(&mut self, msg: &async_nats::jetstream::Message) {
        let encoding = Encoding::of(msg.headers.as_ref());
        let envelope: EventEnvelope = match codec::decode(&msg.payload, encoding, "EventEnvelope") {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(subject = %msg.subject, error = %e, "skipping an undecodable event");
                return;
            }
        };
        let Event::RouteChanged {
            service,
            backends,
            route,
        } = &envelope.event
        else {
            tracing::debug!(event_id = %envelope.id, event_type = envelope.event.type_name(), "skipping an event that is not RouteChanged");
            return;
        };
        let newest = self.epochs.get(service).copied().unwrap_or(0);
        let (admitted, newest) = envelope.meta.admit_epoch(newest);
        if !admitted {
            tracing::warn!(event_id = %envelope.id, service, epoch = ?envelope.meta.epoch, newest, "ignoring a route change from an older planner epoch");
            return;
        }
        self.epochs.insert(service.clone(), newest);
        let drains = self.writer.apply(service, backends, route);
        self.applied.set(service, envelope.version);
        let apply_us = self.live.then(|| apply_latency_us(msg)).flatten();
        self.registry.add(self.writer.take_created());
        ::metrics::counter!(metrics::ROUTE_CHANGES_TOTAL).increment(1);
        if let Some(us) = apply_us {
            ::metrics::histogram!(metrics::ROUTE_APPLY).record(us as f64 / 1e6);
        }
        tracing::info!(event_id = %envelope.id, service, backends = backends.len(), draining = drains.len(), apply_us, "route table updated");
        for drain in drains {
            self.drainer.spawn(drain);
        }
    }

    /// Re-create the consumer until it works or `stop`. It starts again from
    /// the last event of each service, which re-applies the current tables.
    async fn reopen(&mut self, stop: &CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(REOPEN_BACKOFF) => {}
            }
            match subscribe(&self.bus).await {
                Ok(messages) => {
                    self.backlog = messages.backlog;
                    self.messages = messages;
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "cannot re-open the route feed; retrying"),
            }
        }
    }
}

/// Microseconds from JetStream storing `msg` to now; `None` when the
/// clocks disagree (a timestamp in the future).
fn apply_latency_us(msg: &async_nats::jetstream::Message) -> Option<u64> {
    let published_ns = msg.info().ok()?.published.unix_timestamp_nanos();
    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_nanos();
    let elapsed_ns = i128::try_from(now_ns).ok()? - published_ns;
    u64::try_from(elapsed_ns / 1_000).ok()
}

/// An ordered consumer of the last RouteChanged of every service and every
/// later one.
async fn subscribe(bus: &Bus) -> Result<Replay, Error> {
    let filters = vec![subject::events_of_type("RouteChanged")];
    consumer::ordered(bus, streams::EVENTS, filters, DeliverPolicy::LastPerSubject)
        .await
        .map_err(|e| Error::Feed(e.to_string()))
}
