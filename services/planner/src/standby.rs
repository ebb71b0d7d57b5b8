//! Standing by: a planner that does not lead keeps its world in step with
//! the log, answers queries from it, and takes the lead as soon as the
//! leader's lease has run out. It takes no command and no fact (those wait
//! in JetStream for the leader) and publishes nothing but its heartbeat.

use std::time::Duration;

use async_nats::Subscriber;
use futures::StreamExt;
use mentat_bus::Bus;
use mentat_runtime::Shutdown;

use crate::audit::Audit;
use crate::error::{Error, Result};
use crate::log::Log;
use crate::queries;
use crate::roster::{self, Roster};

/// How often a standby tries to take the lead and reads the log.
const POLL: Duration = Duration::from_millis(250);

/// Wait until this planner leads; its epoch, or `None` when `shutdown`
/// came first. On return the world holds every event of the log.
///
/// `queries` is the planner's subscription to `mentat.query.>`, kept from
/// standing by to leading so that no query waiting in it is dropped.
pub async fn until_leading(
    bus: &Bus,
    log: &mut Log,
    roster: &mut Roster,
    lease: Duration,
    queries: &mut Subscriber,
    audit: &Audit,
    shutdown: &Shutdown,
) -> Result<Option<i64>> {
    let client = bus.client.clone();
    let mut heartbeats = client.subscribe(roster::HEARTBEAT_ALL).await?;
    let mut poll = tokio::time::interval(POLL);
    let mut announce = tokio::time::interval(roster::EVERY);
    let mut said = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            Some(msg) = queries.next() => {
                let on = queries::Answering {
                    log,
                    unavailable_since_ms: None,
                    planners: roster.status(&log.world),
                    // A standby does not follow router heartbeats: its
                    // answer says so (`heard: false`) for every router.
                    applied: Default::default(),
                    audit,
                };
                queries::answer(bus, &msg, on).await;
            }
            Some(msg) = heartbeats.next() => roster.heard(&msg),
            _ = announce.tick() => roster.announce(bus, None).await,
            _ = poll.tick() => {
                match log.store().try_lead(roster.me(), lease).await.map_err(Error::from) {
                    Ok(Some(epoch)) => {
                        log.catch_up().await?;
                        return Ok(Some(epoch));
                    }
                    Ok(None) => {
                        let leader = log.world.leader.clone();
                        if said != leader {
                            tracing::info!(?leader, "standing by: another planner leads");
                            said = leader;
                        }
                    }
                    Err(Error::Unavailable(e)) => {
                        tracing::warn!(error = %e, "standing by: the log is unreachable");
                    }
                    Err(e) => return Err(e),
                }
                match log.catch_up().await {
                    Ok(()) | Err(Error::Unavailable(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
}
