//! One probe task per live replica: every `health.interval_ms` it sends a
//! `GET`, feeds the outcome to a [`Tracker`], and publishes the transitions
//! as `ReplicaHealthy` / `ReplicaUnhealthy` facts. Raw samples are never
//! published.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mentat_bus::Bus;
use mentat_domain::event::{Event, Fact};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::http;
use crate::live::{Live, Target};
use crate::tracker::{Tracker, Transition};

/// Shortest probe interval honoured, whatever a spec says.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// Longest wait between two attempts to publish a fact or a verdict. Short:
/// on a NATS cluster that lost a node, a stream has a new leader within a
/// few seconds, and a fact that waits longer eats the planner's deadlines.
pub(crate) const MAX_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Probe {
    target: Target,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// The running probe tasks, kept in step with the set of live replicas.
#[derive(Debug)]
pub struct Probes {
    bus: Bus,
    timeout: Duration,
    running: HashMap<String, Probe>,
    /// `running.len()`, for `/metrics`.
    probed: Arc<AtomicUsize>,
}

impl Probes {
    /// No probes yet; each probe will give up after `timeout`.
    pub fn new(bus: Bus, timeout: Duration) -> Self {
        Self {
            bus,
            timeout,
            running: HashMap::new(),
            probed: Arc::default(),
        }
    }

    /// How many replicas are probed, kept up to date by [`Probes::sync`].
    pub fn probed(&self) -> Arc<AtomicUsize> {
        self.probed.clone()
    }

    /// How many replicas are being probed.
    pub fn len(&self) -> usize {
        self.running.len()
    }

    /// True when nothing is probed.
    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Make the probes match `live`: stop those of replicas that exited or
    /// changed address, start those of new replicas, leave the rest alone
    /// (a repeated `ReplicaStarted` does not reset a probe).
    pub fn sync(&mut self, live: &Live) {
        self.running.retain(|replica, probe| {
            let keep = live.get(replica) == Some(&probe.target);
            if !keep {
                tracing::info!(replica_id = %replica, service = %probe.target.service, "stopped probing");
                probe.stop.cancel();
            }
            keep
        });
        for (replica, target) in live.iter() {
            if self.running.contains_key(replica) {
                continue;
            }
            tracing::info!(replica_id = %replica, service = %target.service, addr = %target.addr, path = %target.health.path, "probing");
            let stop = CancellationToken::new();
            let task = tokio::spawn(probe_loop(
                self.bus.clone(),
                replica.clone(),
                target.clone(),
                self.timeout,
                stop.clone(),
            ));
            let probe = Probe {
                target: target.clone(),
                stop,
                task,
            };
            self.running.insert(replica.clone(), probe);
        }
        self.probed.store(self.running.len(), Ordering::Relaxed);
    }

    /// Stop every probe and wait for them, at most `grace`.
    pub async fn shutdown(self, grace: Duration) {
        for probe in self.running.values() {
            probe.stop.cancel();
        }
        let all = futures::future::join_all(self.running.into_values().map(|p| p.task));
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!("probes did not stop within the grace");
        }
    }
}

async fn probe_loop(
    bus: Bus,
    replica: String,
    target: Target,
    timeout: Duration,
    stop: CancellationToken,
) {
    let health = &target.health;
    let mut tracker = Tracker::new(health.healthy_after, health.unhealthy_after);
    let period = Duration::from_millis(health.interval_ms).max(MIN_INTERVAL);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            outcome = async {
                ticks.tick().await;
                let started = std::time::Instant::now();
                let outcome = http::get(&target.addr, &health.path, timeout).await;
                metrics::histogram!(crate::metrics::PROBE_DURATION).record(started.elapsed());
                outcome
            } => outcome,
        };
        let result = if outcome.is_ok() { "ok" } else { "failed" };
        metrics::counter!(crate::metrics::PROBES_TOTAL, "result" => result).increment(1);
        if let Err(failure) = &outcome {
            tracing::debug!(replica_id = %replica, service = %target.service, %failure, "probe failed");
        }
        let Some(transition) = tracker.observe(outcome.map_err(|f| f.to_string())) else {
            continue;
        };
        let event = match transition {
            Transition::Healthy => {
                tracing::info!(replica_id = %replica, service = %target.service, "replica healthy");
                Event::ReplicaHealthy {
                    replica: replica.clone(),
                    service: target.service.clone(),
                }
            }
            Transition::Unhealthy(reason) => {
                tracing::warn!(replica_id = %replica, service = %target.service, %reason, "replica unhealthy");
                Event::ReplicaUnhealthy {
                    replica: replica.clone(),
                    service: target.service.clone(),
                    reason,
                }
            }
        };
        let fact = Fact {
            id: mentat_bus::new_id(),
            observed_at_ms: mentat_bus::now_ms(),
            event,
        };
        if !publish(&bus, &fact, &stop).await {
            return;
        }
        let entered = match &fact.event {
            Event::ReplicaHealthy { .. } => "healthy",
            _ => "unhealthy",
        };
        metrics::counter!(crate::metrics::TRANSITIONS_TOTAL, "to" => entered).increment(1);
    }
}

/// Publish `fact`, retrying with backoff (same id, so the stream drops
/// duplicates) until it is accepted or the probe is stopped; `false` when
/// stopped first.
async fn publish(bus: &Bus, fact: &Fact, stop: &CancellationToken) -> bool {
    let mut wait = Duration::from_millis(100);
    loop {
        match bus.publish_fact(fact).await {
            Ok(()) => return true,
            Err(e) => tracing::warn!(error = %e, "cannot publish health fact; retrying"),
        }
        tokio::select! {
            _ = stop.cancelled() => return false,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(MAX_RETRY);
    }
}
