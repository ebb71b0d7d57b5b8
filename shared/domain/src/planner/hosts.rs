//! Host loss: what the planner does about hosts that stop sending
//! heartbeats. The planner service only measures silence and records
//! `HostSuspected`, `HostSuspicionCleared`, `HostLost` and `HostJoined`
//! (after the cluster block's `suspect_after_secs` and `lost_after_secs`);
//! everything that follows is decided here, from the log alone.
//!
//! - Suspect: the replicas of a suspect host get weight 0 in every router
//!   at once (one `RouteChanged` per service, see [`super::routes`]), and
//!   their weights come back when it heartbeats again. **Rule:** when every
//!   replica a service routes to with a weight sits on a suspect or lost
//!   host, nothing of that service is zeroed: a router with no backend
//!   answers every request with an error, while a host that only missed
//!   heartbeats (a busy executor on a single-host `mt up`) may well still
//!   serve.
//! - Lost: each replica it ran that was (or may become) serving is placed
//!   again on the available hosts: one `ReplicaReplaced` naming the lost
//!   host and the new replica, followed by its `ReplicaStartRequested`,
//!   same image. In a deployment the replacement takes the lost replica's
//!   place in the batch (see `state::replaced`), so the batch neither
//!   fails nor reverts because of it.
//! - Back: a host that heartbeats again after it was lost (`HostJoined`)
//!   has the replicas that were replaced stopped, so nothing runs twice.
//!   They have no weight to drain: they left the routing table when they
//!   were replaced.
//! - Mass loss: when more than half of the hosts (live, suspect ones
//!   included) go suspect within `suspect_after_secs` of each other, and
//!   there are at least two, re-placement is held (`MassHostLossHeld`)
//!   rather than piling every replica on the survivors, until an operator
//!   releases it ([`release`], `mt hosts release`) or every host of the
//!   hold is back (`MassHostLossReleased`). Weights go to 0 as usual.

use std::collections::BTreeSet;

use crate::command::{RejectKind, ReleaseHosts};
use crate::event::{Event, CLUSTER_STREAM};
use crate::planner::decide::{reject, Append, Decision};
use crate::planner::ids::next_replica_ids;
use crate::planner::state::{Phase, Replica, ServiceState, World};
use crate::planner::steady::{place, start_request, stop_request};
use crate::spec::ServiceSpec;

/// Hosts whose replicas get no weight: known, and suspect or lost. A host
/// the log never saw join is not in it.
pub(crate) fn unavailable(world: &World) -> BTreeSet<&str> {
    world
        .hosts
        .iter()
        .filter(|(_, h)| !h.available())
        .map(|(id, _)| id.as_str())
        .collect()
}

/// True when the log knows `host` and it is lost.
fn lost(world: &World, host: &str) -> bool {
    world.hosts.get(host).is_some_and(|h| !h.live)
}

/// Replicas of lost hosts that are to be placed again: declared ones that
/// serve or may serve (spawned instances keep their operator's name and
/// are not moved; retired ones were on their way out).
fn stranded<'s>(world: &World, state: &'s ServiceState) -> Vec<&'s Replica> {
    state
        .replicas
        .values()
        .filter(|r| r.phase.is_serving_candidate() && !r.spawned && !r.retiring)
        .filter(|r| lost(world, &r.host))
        .collect()
}

/// Replicas replaced while their host was lost, now that it is available
/// again: they are stopped.
fn returned<'s>(world: &World, state: &'s ServiceState) -> Vec<&'s Replica> {
    state
        .replicas
        .values()
        .filter(|r| r.phase == Phase::Lost)
        .filter(|r| world.hosts.get(&r.host).is_some_and(|h| h.available()))
        .collect()
}

/// What host loss asks of one service now: stop the replaced replicas of
/// hosts that came back, then place again the replicas of lost hosts
/// (unless a hold is on), as many as the available hosts have room for.
pub(crate) fn react(world: &World, state: &ServiceState, spec: &ServiceSpec) -> Vec<Event> {
    let back: Vec<Event> = returned(world, state)
        .into_iter()
        .map(|r| stop_request(spec, r, format!("replaced while {} was lost", r.host)))
        .collect();
    if !back.is_empty() || world.held.is_some() {
        return back;
    }
    let stranded = stranded(world, state);
    if stranded.is_empty() {
        return Vec::new();
    }
    let hosts = place(world, &spec.name, &[], stranded.len());
    let ids = next_replica_ids(world, state, spec, hosts.len());
    let deployment_id = state.deployment.as_ref().map(|d| d.id.as_str());
    let mut events = Vec::new();
    for ((old, host), new) in stranded.into_iter().zip(hosts).zip(ids) {
        events.push(Event::ReplicaReplaced {
            replica: old.id.clone(),
            service: spec.name.clone(),
            host: old.host.clone(),
            new_replica: new.clone(),
            new_host: host.clone(),
            image: old.image.clone(),
        });
        events.push(start_request(spec, &old.image, &new, host, deployment_id));
    }
    events
}

/// True when [`react`] has something to do for `service` without a new
/// fact (a hold was released, room appeared): the planner looks again on
/// its next tick.
pub(crate) fn pending(world: &World, state: &ServiceState, spec: &ServiceSpec) -> bool {
    if !returned(world, state).is_empty() {
        return true;
    }
    world.held.is_none()
        && !stranded(world, state).is_empty()
        && !place(world, &spec.name, &[], 1).is_empty()
}

/// Decisions about the cluster as a whole (appended to [`CLUSTER_STREAM`]):
/// a hold when a mass loss begins, its end when its hosts are all back.
pub fn react_cluster(world: &World) -> Vec<Event> {
    if let Some(hold) = &world.held {
        let back = hold
            .hosts
            .iter()
            .all(|id| world.hosts.get(id).is_some_and(|h| h.available()));
        return if back {
            vec![Event::MassHostLossReleased {
                hosts: hold.hosts.clone(),
                by_operator: false,
            }]
        } else {
            Vec::new()
        };
    }
    let window = world.cluster().suspect_after_ms();
    let after = world.released_at_ms.unwrap_or(i64::MIN);
    let suspected: Vec<(&str, i64)> = world
        .hosts
        .iter()
        .filter_map(|(id, h)| h.suspect_since_ms.map(|t| (id.as_str(), t)))
        .filter(|(_, t)| *t > after)
        .collect();
    let Some(newest) = suspected.iter().map(|(_, t)| *t).max() else {
        return Vec::new();
    };
    let wave: Vec<&str> = suspected
        .iter()
        .filter(|(_, t)| *t >= newest.saturating_sub(window))
        .map(|(id, _)| *id)
        .collect();
    let live = world
        .hosts
        .iter()
        .filter(|(id, h)| h.live || wave.contains(&id.as_str()))
        .count();
    if live >= 2 && wave.len() * 2 > live {
        vec![Event::MassHostLossHeld {
            hosts: wave.iter().map(|h| (*h).to_owned()).collect(),
            live: live as u32,
        }]
    } else {
        Vec::new()
    }
}

/// `mt hosts release`: end the hold on re-placement. The reason is
/// required; without a hold there is nothing to release.
pub(crate) fn release(world: &World, command: &ReleaseHosts) -> Decision {
    if command
        .reason
        .as_deref()
        .is_none_or(|r| r.trim().is_empty())
    {
        return reject(
            RejectKind::Invalid,
            "reason: required: say why the hosts that are left may take the lost hosts' replicas",
        );
    }
    let Some(hold) = &world.held else {
        return reject(
            RejectKind::NothingToDo,
            "re-placement is not held: no mass host loss is in progress",
        );
    };
    Decision::Accept {
        appends: vec![Append {
            stream: CLUSTER_STREAM.to_owned(),
            events: vec![Event::MassHostLossReleased {
                hosts: hold.hosts.clone(),
                by_operator: true,
            }],
        }],
        deployment_id: None,
        message: format!(
            "re-placement released: replicas of {} are placed again on the hosts left",
            hold.hosts.join(", ")
        ),
    }
}
