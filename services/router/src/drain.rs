//! Draining: once a replica leaves rotation, wait for its in-flight
//! requests (bounded by the drain timeout), close the router's idle
//! keep-alive connections and tunnels (WebSockets) to it, and publish
//! `ReplicaDrained`, the fact the planner waits for before it stops the
//! replica. Requests still running at the timeout are not cut (the
//! replica's own stop grace covers them); tunnels are, as they have no end.

use std::sync::Arc;
use std::time::Duration;

use mentat_bus::Bus;
use mentat_domain::{Event, Fact};
use tokio_util::task::TaskTracker;

use crate::table::Drain;

/// Attempts at publishing one fact before giving up (the planner then
/// relies on its own timeout).
const PUBLISH_ATTEMPTS: u32 = 5;
/// Pause before the second attempt; doubled each time.
const PUBLISH_BACKOFF: Duration = Duration::from_millis(200);
/// After closing tunnels at the timeout, how long to wait for them to end.
const TUNNEL_CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Runs one task per replica leaving rotation. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Drainer {
    bus: Bus,
    router_id: Arc<str>,
    timeout: Duration,
    tasks: TaskTracker,
}

impl Drainer {
    /// A drainer publishing as `router_id`.
    pub fn new(bus: Bus, router_id: &str, timeout: Duration) -> Self {
        Drainer {
            bus,
            router_id: router_id.into(),
            timeout,
            tasks: TaskTracker::new(),
        }
    }

    /// Start draining one replica. At most one task per replica leaving
    /// rotation, so the number of tasks is bounded by the table's size.
    pub fn spawn(&self, drain: Drain) {
        self.tasks.spawn(self.clone().drain(drain));
    }

    /// Wait for the drains in progress, at most `within`; the rest are
    /// abandoned (the planner's own timeout covers them).
    pub async fn finish(&self, within: Duration) {
        self.tasks.close();
        if tokio::time::timeout(within, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                pending = self.tasks.len(),
                "drains still in progress at shutdown; not reported"
            );
        }
    }

    async fn drain(self, drain: Drain) {
        let endpoint = &drain.endpoint;
        let (service, replica) = (endpoint.service.as_str(), endpoint.replica.as_str());
        tracing::info!(
            service,
            replica_id = replica,
            in_flight = endpoint.in_flight(),
            "replica out of rotation; draining"
        );
        let idle = endpoint.wait_idle(self.timeout).await;
        if endpoint.epoch() != drain.epoch {
            tracing::info!(
                service,
                replica_id = replica,
                "replica back in rotation before its drain ended; not reported"
            );
            return;
        }
        let closed = endpoint.close_connections();
        if !idle {
            // Tunnels end now; requests still running are left alone.
            endpoint.wait_idle(TUNNEL_CLOSE_WAIT).await;
        }
        tracing::debug!(
            service,
            replica_id = replica,
            idle_connections_closed = closed,
            "connections to the drained replica closed"
        );
        let fact = Fact {
            id: mentat_bus::new_id(),
            observed_at_ms: mentat_bus::now_ms(),
            event: Event::ReplicaDrained {
                replica: replica.to_owned(),
                service: service.to_owned(),
                router: self.router_id.to_string(),
                timed_out: !idle,
            },
        };
        if !idle {
            tracing::warn!(
                service,
                replica_id = replica,
                in_flight = endpoint.in_flight(),
                timeout_secs = self.timeout.as_secs(),
                "drain timed out"
            );
        }
        self.publish(&fact, service, replica).await;
    }

    async fn publish(&self, fact: &Fact, service: &str, replica: &str) {
        let mut backoff = PUBLISH_BACKOFF;
        for attempt in 1..=PUBLISH_ATTEMPTS {
            match self.bus.publish_fact(fact).await {
                Ok(()) => {
                    tracing::info!(service, replica_id = replica, fact_id = %fact.id, "replica drained");
                    return;
                }
                Err(e) if attempt < PUBLISH_ATTEMPTS => {
                    tracing::warn!(service, replica_id = replica, attempt, error = %e, "publishing ReplicaDrained failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
                Err(e) => {
                    tracing::error!(service, replica_id = replica, error = %e, "could not publish ReplicaDrained; giving up");
                }
            }
        }
    }
}
