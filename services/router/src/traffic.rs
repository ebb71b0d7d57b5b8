//! Traffic statistics: the registry of every endpoint the router has
//! known, and the task that publishes a [`TrafficStats`] message of
//! per-interval deltas on `mentat.stats.<router-id>` (stream `MENTAT_STATS`).
//!
//! The request path never touches the registry: it only adds to the
//! endpoint's atomic counters. Once per interval the publisher snapshots
//! every endpoint and subtracts the previous snapshot; an endpoint gone
//! from every table and from every request is dropped after its last delta.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mentat_bus::{subject, Bus};
use mentat_domain::stats::{percentile_ms, InstanceStats, TrafficStats};
use tokio_util::sync::CancellationToken;

use crate::endpoint::Endpoint;
use crate::metrics::{self, TrafficSnapshot};

/// Every endpoint with traffic counters, and what was last published of them.
#[derive(Debug, Default)]
pub struct Registry {
    entries: Mutex<Vec<Entry>>,
}

#[derive(Debug)]
struct Entry {
    endpoint: Arc<Endpoint>,
    published: TrafficSnapshot,
}

impl Registry {
    /// Track new endpoints.
    pub fn add(&self, endpoints: Vec<Arc<Endpoint>>) {
        if endpoints.is_empty() {
            return;
        }
        let mut entries = self.lock();
        entries.extend(endpoints.into_iter().map(|endpoint| Entry {
            endpoint,
            published: TrafficSnapshot::default(),
        }));
    }

    /// The deltas since the previous call, for instances with traffic.
    /// Also closes stale pooled connections, and forgets endpoints nobody
    /// else holds any more.
    pub fn interval(&self) -> Vec<InstanceStats> {
        let mut entries = self.lock();
        let mut out = Vec::new();
        for entry in entries.iter_mut() {
            entry.endpoint.pool.prune();
            let now = entry.endpoint.traffic.snapshot();
            let delta = now.since(&entry.published);
            entry.published = now;
            if delta.requests == 0 {
                continue;
            }
            let e = &entry.endpoint;
            out.push(InstanceStats {
                service: e.service.clone(),
                replica: e.replica.clone(),
                image: e.image.clone(),
                requests: delta.requests,
                errors_5xx: delta.errors_5xx,
                p50_ms: percentile_ms(&delta.latency.buckets, 0.50),
                p90_ms: percentile_ms(&delta.latency.buckets, 0.90),
                p99_ms: percentile_ms(&delta.latency.buckets, 0.99),
                latency_buckets: delta.latency.buckets,
            });
        }
        // Only the registry holds it: out of every table, nothing in flight,
        // and its last delta was just taken.
        entries.retain(|e| Arc::strong_count(&e.endpoint) > 1);
        out
    }

    /// Every endpoint with its cumulative counters, for `/metrics`.
    pub fn cumulative(&self) -> Vec<(Arc<Endpoint>, TrafficSnapshot)> {
        self.lock()
            .iter()
            .map(|e| (e.endpoint.clone(), e.endpoint.traffic.snapshot()))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Publish one [`TrafficStats`] per `interval` until `stop` (intervals
/// without traffic publish nothing). A publication that fails is counted
/// and logged; its deltas are lost, never re-added to the next interval.
pub async fn publish(
    bus: Bus,
    registry: Arc<Registry>,
    router_id: String,
    interval: Duration,
    stop: CancellationToken,
) {
    let subject = subject::stats(&router_id);
    let interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let instances = registry.interval();
        if instances.is_empty() {
            continue;
        }
        let stats = TrafficStats {
            router: router_id.clone(),
            at_ms: mentat_bus::now_ms(),
            interval_ms,
            instances,
        };
        let id = mentat_bus::new_id();
        let sent = tokio::time::timeout(
            interval.max(Duration::from_secs(1)),
            bus.publish_durable(subject.clone(), &id, &stats),
        )
        .await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                ::metrics::counter!(metrics::STATS_PUBLISH_FAILURES).increment(1);
                tracing::warn!(error = %e, "could not publish traffic statistics");
            }
            Err(_) => {
                ::metrics::counter!(metrics::STATS_PUBLISH_FAILURES).increment(1);
                tracing::warn!("publishing traffic statistics timed out");
            }
        }
    }
}
