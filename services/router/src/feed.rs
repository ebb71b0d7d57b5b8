//! The route feed: an ordered, ephemeral JetStream consumer of
//! `mentat.evt.*.RouteChanged` on `MENTAT_EVENTS`, starting with the last
//! event of each service (the current table) and then following new ones.
//! Each event carries a service's full table, so re-reading one is harmless.
//!
//! A release moves several services in one switch: their `RouteChanged`
//! carry the switch's id and size, arrive one after the other (they were
//! appended in one transaction), and are held until the last one is here,
//! then applied in one swap of the table. While catching up (the last
//! change of each service, at start or after a re-open) a switch may come
//! without some of its changes (superseded by later ones): what came of it
//! is applied in one swap when the catch-up ends, or when a change of
//! another switch or of none comes first.
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
use mentat_domain::event::Backend;
use mentat_domain::spec::RouteSpec;
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
    /// The changes of a release switch received so far, until it is whole.
    switch: Option<Pending>,
    /// Reading the changes that existed when the consumer was (re)opened:
    /// a switch may not come whole.
    catching_up: bool,
}

/// A release switch being received.
struct Pending {
    id: String,
    changes: u32,
    received: u32,
    /// The last change of each service, with its stream version.
    by_service: Vec<(String, Vec<Backend>, RouteSpec, i64)>,
    /// JetStream message of the first change, for the apply latency.
    first_latency_us: Option<u64>,
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
            switch: None,
            catching_up: true,
        })
    }

    /// Follow the feed until `stop`. `current` is sent once the events that
    /// existed when the consumer was created have been applied.
    pub async fn run(mut self, stop: CancellationToken, current: oneshot::Sender<()>) {
        let mut current = Some(current);
        loop {
            if self.backlog == 0 {
                if self.catching_up {
                    // A switch some of whose changes were superseded.
                    self.apply_switch();
                    self.catching_up = false;
                }
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
            switch,
        } = &envelope.event
        else {
            tracing::debug!(event_id = %envelope.id, event_type = envelope.event.type_name(), "skipping an event that is not RouteChanged");
            return;
        };
        let newest = self.epochs.get(service).copied().unwrap_or(0);
        let (admitted, newest) = envelope.meta.admit_epoch(newest);
        if !admitted {
            tracing::warn!(event_id = %envelope.id, service, epoch = ?envelope.meta.epoch, newest, "ignoring a route change from an older planner epoch");
            // Still one of the switch's changes: the others do not wait for it.
            let ours = |p: &Pending| switch.as_ref().is_some_and(|s| s.id == p.id);
            if let Some(p) = self.switch.as_mut().filter(|p| ours(p)) {
                p.received += 1;
                if p.received >= p.changes {
                    self.apply_switch();
                }
            }
            return;
        }
        self.epochs.insert(service.clone(), newest);
        let apply_us = self.live.then(|| apply_latency_us(msg)).flatten();
        let change = (
            service.clone(),
            backends.clone(),
            route.clone(),
            envelope.version,
        );
        // A change outside the switch being received ends it: apply what came.
        if self
            .switch
            .as_ref()
            .is_some_and(|p| switch.as_ref().is_none_or(|s| s.id != p.id))
        {
            self.apply_switch();
        }
        match switch.as_ref() {
            None => self.swap(vec![change], None, apply_us),
            Some(s) => {
                let pending = self.switch.get_or_insert_with(|| Pending {
                    id: s.id.clone(),
                    changes: s.changes,
                    received: 0,
                    by_service: Vec::new(),
                    first_latency_us: apply_us,
                });
                pending.received += 1;
                pending.by_service.retain(|(name, ..)| name != service);
                pending.by_service.push(change);
                if pending.received >= pending.changes {
                    self.apply_switch();
                }
            }
        }
    }

    /// Apply the release switch received so far, in one swap.
    fn apply_switch(&mut self) {
        if let Some(p) = self.switch.take() {
            let id = p.id;
            self.swap(p.by_service, Some(&id), p.first_latency_us);
        }
    }

    /// Swap in a table with `changes`, in one store.
    fn swap(
        &mut self,
        changes: Vec<(String, Vec<Backend>, RouteSpec, i64)>,
        switch: Option<&str>,
        apply_us: Option<u64>,
    ) {
        let all: Vec<(&str, &[Backend], &RouteSpec)> = changes
            .iter()
            .map(|(s, b, r, _)| (s.as_str(), b.as_slice(), r))
            .collect();
        let drains = self.writer.apply_all(&all);
        let versions: Vec<(String, i64)> =
            changes.iter().map(|(s, _, _, v)| (s.clone(), *v)).collect();
        self.applied.set_all(&versions, switch);
        self.registry.add(self.writer.take_created());
        ::metrics::counter!(metrics::ROUTE_CHANGES_TOTAL).increment(changes.len() as u64);
        if let Some(us) = apply_us {
            ::metrics::histogram!(metrics::ROUTE_APPLY).record(us as f64 / 1e6);
        }
        let services: Vec<&str> = changes.iter().map(|(s, ..)| s.as_str()).collect();
        tracing::info!(
            ?services,
            switch,
            draining = drains.len(),
            apply_us,
            "route table updated"
        );
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
                    self.apply_switch();
                    self.catching_up = true;
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
