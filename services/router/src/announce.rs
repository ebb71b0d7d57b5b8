//! The router's heartbeat, `mentat.router.heartbeat.<router-id>` on core
//! NATS every [`EVERY`]: who it is, where it runs and listens, and the route
//! version it applied per service. The planner records `RouterJoined` and
//! `RouterLost` from it, waits for every live router before it counts a
//! replica drained, and shows each router's lag in `mt status`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mentat_bus::{subject, Bus};
use mentat_domain::event::{RouterHeartbeat, SwitchApplied};
use tokio_util::sync::CancellationToken;

use crate::Error;

/// Time between two heartbeats.
pub const EVERY: Duration = Duration::from_secs(1);

/// How many of the last release switches a heartbeat lists.
pub const SWITCHES_KEPT: usize = 8;

/// Per service, the stream version of the last `RouteChanged` applied,
/// and the last release switches applied (each in one swap); written by
/// the feed on each change, read once per heartbeat.
#[derive(Debug, Clone, Default)]
pub struct Applied(Arc<Mutex<Seen>>);

#[derive(Debug, Default)]
struct Seen {
    versions: BTreeMap<String, i64>,
    switches: std::collections::VecDeque<SwitchApplied>,
}

impl Applied {
    /// Each service's routes are now those of its version; with `switch`,
    /// they were applied in one swap as that release switch.
    pub fn set_all(&self, versions: &[(String, i64)], switch: Option<&str>) {
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for (service, version) in versions {
            seen.versions.insert(service.clone(), *version);
        }
        if let Some(id) = switch {
            if seen.switches.len() == SWITCHES_KEPT {
                seen.switches.pop_front();
            }
            seen.switches.push_back(SwitchApplied {
                id: id.to_owned(),
                services: versions.iter().map(|(s, _)| s.clone()).collect(),
            });
        }
    }

    /// The version applied per service, and the switches applied.
    pub fn snapshot(&self) -> (BTreeMap<String, i64>, Vec<SwitchApplied>) {
        let seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        (
            seen.versions.clone(),
            seen.switches.iter().cloned().collect(),
        )
    }
}

/// Who this router is, for its heartbeats.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `--router-id`.
    pub router: String,
    /// The machine's hostname.
    pub host: String,
    /// The address it accepts requests on.
    pub listen: String,
}

/// The machine's hostname, or `localhost` when it cannot be read.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// How long a starting router listens for another's heartbeats under its
/// id before it serves.
pub const ID_CHECK: Duration = Duration::from_millis(1500);

/// Fail with [`Error::RouterIdTaken`] when a heartbeat under `router` came
/// on `others` (subscribed at `since`, before this router sent any) within
/// [`ID_CHECK`] of `since`: another router is live with the same id, and
/// the planner could not tell their drains apart.
pub async fn refuse_taken_id(
    router: &str,
    others: &mut async_nats::Subscriber,
    since: tokio::time::Instant,
) -> Result<(), Error> {
    let until = since + ID_CHECK;
    let Ok(Some(msg)) = tokio::time::timeout_at(until, futures::StreamExt::next(others)).await
    else {
        return Ok(());
    };
    let other = mentat_bus::codec::decode::<RouterHeartbeat>(
        &msg.payload,
        mentat_bus::codec::Encoding::of(msg.headers.as_ref()),
        "RouterHeartbeat",
    )
    .map(|b| format!("a router on {} listening on {}", b.host, b.listen))
    .unwrap_or_else(|_| "a router".to_owned());
    Err(Error::RouterIdTaken {
        router: router.to_owned(),
        other,
    })
}

/// Publish a heartbeat every [`EVERY`] until `stop`; one that the bus
/// refuses is logged and the next one tried.
pub async fn publish(bus: Bus, me: Identity, applied: Applied, stop: CancellationToken) {
    let subject = subject::router_heartbeat(&me.router);
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (versions, switches) = applied.snapshot();
        let beat = RouterHeartbeat {
            router: me.router.clone(),
            host: me.host.clone(),
            listen: me.listen.clone(),
            applied: versions,
            switches,
            at_ms: mentat_bus::now_ms(),
        };
        if let Err(e) = bus.publish(subject.clone(), &beat).await {
            tracing::warn!(error = %e, "cannot publish the router heartbeat");
        }
    }
}
