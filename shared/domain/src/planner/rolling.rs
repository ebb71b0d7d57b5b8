//! The rolling strategy: batches of `max_unavailable` new replicas; a batch
//! switches traffic once all its replicas are healthy, retires the replicas
//! it replaces, and completes when they have exited. A failed batch turns
//! the deployment back by the rule of [`super::policy`].

use crate::event::Event;
use crate::limits::secs_to_ms;
use crate::planner::hosts;
use crate::planner::ids::next_replica_ids;
use crate::planner::policy::{self, Cause, TurnBack};
use crate::planner::state::{Batch, Deployment, Phase, Replica, ServiceState, World};
use crate::planner::steady::{no_room, place, serving, start_request, stop_request};
use crate::spec::{ServiceSpec, Strategy};

/// The next events of a rolling deployment, of the roll-out after a canary
/// is promoted, and of every revert.
pub(crate) fn react(
    world: &World,
    state: &ServiceState,
    spec: &ServiceSpec,
    d: &Deployment,
    now_ms: i64,
) -> Vec<Event> {
    match &d.batch {
        None => next_batch(world, state, spec, d, d.batch_size, now_ms),
        Some(batch) => react_batch(world, state, spec, d, batch, now_ms),
    }
}

/// Start the next batch of at most `k` new replicas replacing at most `k`
/// old ones, or finish the deployment when nothing is left to replace.
pub(crate) fn next_batch(
    world: &World,
    state: &ServiceState,
    spec: &ServiceSpec,
    d: &Deployment,
    k: u32,
    now_ms: i64,
) -> Vec<Event> {
    let Some(target) = d.target() else {
        // Reverting is only decided when there is a previous image.
        return vec![Event::DeploymentFailed {
            deployment_id: d.id.clone(),
            reason: "no previous image to revert to".into(),
            at_ms: now_ms,
        }];
    };
    let mut old: Vec<&Replica> = serving(state)
        .filter(|r| !is_target(d, r, target))
        .collect();
    // Retire replicas that serve no traffic first.
    old.sort_by_key(|r| (state.is_routed(&r.id), r.id.clone()));
    let current = serving(state).filter(|r| is_target(d, r, target)).count() as u32;
    let need_new = d.replicas.saturating_sub(current);
    if need_new == 0 && old.is_empty() {
        return bake_then_finish(d, now_ms);
    }
    let k = k.max(1) as usize;
    let count = (need_new as usize).min(k) as u32;
    // With the full count of the target running, every old replica can go
    // at once: that is how a revert to a warm set is a single flip.
    let retire = if need_new == 0 { old.len() } else { k };
    let replace: Vec<String> = old.iter().take(retire).map(|r| r.id.clone()).collect();
    start_batch(world, state, spec, d, target, count, replace, now_ms)
}

/// True when replica `r` runs what `d` converges to (`target`): its image;
/// for a member of a release, which may change more than the image,
/// being started by `d` (or, while reverting, not being started by it).
fn is_target(d: &Deployment, r: &Replica, target: &str) -> bool {
    if d.plan.release.is_none() {
        return r.image == target;
    }
    let ours = r.deployment.as_deref() == Some(d.id.as_str());
    r.image == target && ours == d.reverting.is_none()
}

/// Start a batch of `count` replicas of `image` that replaces `replace`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn start_batch(
    world: &World,
    state: &ServiceState,
    spec: &ServiceSpec,
    d: &Deployment,
    image: &str,
    count: u32,
    replace: Vec<String>,
    now_ms: i64,
) -> Vec<Event> {
    let count = count as usize;
    let placements = place(world, &spec.name, &replace, count);
    if placements.len() < count {
        return fail_batch(state, d, no_room(world, count), now_ms);
    }
    let number = d.batches_started + 1;
    let ids = next_replica_ids(world, state, spec, count);
    let mut events = Vec::new();
    let mut start = Vec::new();
    for (host, replica) in placements.into_iter().zip(ids) {
        start.push(replica.clone());
        events.push(start_request(spec, image, &replica, host, Some(&d.id)));
    }
    events.insert(
        0,
        Event::BatchStarted {
            deployment_id: d.id.clone(),
            batch: number,
            image: image.to_owned(),
            start,
            replace,
            deadline_ms: now_ms.saturating_add(secs_to_ms(d.plan.health_timeout_secs)),
        },
    );
    events
}

/// Wait for a batch's new replicas to be healthy (failing it when one exits
/// or the health timeout passes), then retire the replicas it replaces.
///
/// Host loss is not the release's failure: a new replica late because its
/// host is suspect or lost does not fail the batch (it is placed again, and
/// its replacement gets a health timeout of its own), and a replica it
/// retires that is left on a lost host counts as gone.
pub(crate) fn react_batch(
    world: &World,
    state: &ServiceState,
    spec: &ServiceSpec,
    d: &Deployment,
    batch: &Batch,
    now_ms: i64,
) -> Vec<Event> {
    let switched = batch.switched || batch.start.is_empty();
    if !switched {
        let replica = |id: &String| state.replicas.get(id);
        if let Some(dead) = batch
            .start
            .iter()
            .filter_map(replica)
            .find(|r| matches!(r.phase, Phase::Exited | Phase::Stopping))
        {
            let how = dead.exit.clone().unwrap_or_else(|| "stopped".into());
            let reason = format!(
                "replica {} ({}) exited before becoming healthy ({how})",
                dead.id, batch.image
            );
            return fail_batch(state, d, reason, now_ms);
        }
        let healthy = batch
            .start
            .iter()
            .filter_map(replica)
            .filter(|r| r.phase == Phase::Healthy)
            .count();
        let unavailable = hosts::unavailable(world);
        let away =
            |id: &&String| replica(id).is_some_and(|r| unavailable.contains(r.host.as_str()));
        if healthy < batch.start.len() && now_ms >= batch.deadline_ms {
            let late: Vec<&str> = batch
                .start
                .iter()
                .filter(|id| replica(id).is_none_or(|r| r.phase != Phase::Healthy))
                .filter(|id| !away(id))
                .map(String::as_str)
                .collect();
            if late.is_empty() {
                // Every late replica is on a suspect or lost host: wait
                // for it, or for its replacement.
                return Vec::new();
            }
            let reason = format!(
                "replica(s) {} ({}) not healthy within {}s",
                late.join(", "),
                batch.image,
                d.plan.health_timeout_secs
            );
            return fail_batch(state, d, reason, now_ms);
        }
        // Waiting for health, or the switch is made by `route_change`.
        return Vec::new();
    }
    // Switched: retire the replaced replicas; the batch completes once they
    // have all exited.
    let mut events = Vec::new();
    for id in &batch.replace {
        if let Some(r) = state.replicas.get(id) {
            // Never in rotation (or already out of it without draining):
            // nothing to wait for.
            if matches!(
                r.phase,
                Phase::Requested | Phase::Running | Phase::Healthy | Phase::Unhealthy
            ) && !state.is_routed(id)
            {
                events.push(stop_request(
                    spec,
                    r,
                    format!("replaced by batch {}", batch.number),
                ));
            }
        }
    }
    let done = batch.replace.iter().all(|id| {
        state.replicas.get(id).is_none_or(|r| {
            matches!(r.phase, Phase::Exited | Phase::Lost)
                || world.hosts.get(&r.host).is_some_and(|h| !h.live)
        })
    });
    if events.is_empty() && done {
        events.push(Event::BatchCompleted {
            deployment_id: d.id.clone(),
            batch: batch.number,
        });
    }
    events
}

/// A batch of `d` failed: stop the new replicas it started that are not in
/// rotation, and turn back as [`policy::turn_back`] says.
pub(crate) fn fail_batch(
    state: &ServiceState,
    d: &Deployment,
    reason: String,
    now_ms: i64,
) -> Vec<Event> {
    let choice = policy::turn_back(Cause::BatchFailed, d.into());
    let mut events = stop_batch(state, d, "its batch failed");
    events.push(policy::event(choice, d, reason, now_ms));
    events
}

/// The batch of `d` failed and is stopped: it never switched traffic and a
/// replica it started has exited, is stopping or is gone.
fn has_failed(state: &ServiceState, batch: &Batch) -> bool {
    !batch.switched
        && batch.start.iter().any(|id| {
            state
                .replicas
                .get(id)
                .is_none_or(|r| matches!(r.phase, Phase::Exited | Phase::Stopping))
        })
}

/// When an operator resumes a deployment held because its batch failed
/// (the rule holds a failed batch when `auto_revert` is off), the batch
/// starts again: new replicas of its image, replacing the same ones.
/// Empty when the batch in progress, if any, has not failed, and for the
/// canary's first batch.
pub(crate) fn retry_failed_batch(
    world: &World,
    state: &ServiceState,
    spec: &ServiceSpec,
    d: &Deployment,
    now_ms: i64,
) -> Vec<Event> {
    let Some(batch) = d.batch.as_ref().filter(|b| has_failed(state, b)) else {
        return Vec::new();
    };
    // The canary's own replicas are named by its first batch: a failed
    // canary is held again until an operator aborts it.
    let canary_batch = d.strategy == Strategy::Canary && !d.canary.promoted;
    if canary_batch || policy::turn_back(Cause::BatchFailed, d.into()) != TurnBack::Hold {
        return Vec::new();
    }
    let count = batch.start.len() as u32;
    let replace = batch.replace.clone();
    start_batch(world, state, spec, d, &batch.image, count, replace, now_ms)
}

/// Stop requests for the replicas the batch of `d` started that are not in
/// rotation: those in rotation leave it through the revert, which drains them.
pub(crate) fn stop_batch(state: &ServiceState, d: &Deployment, why: &str) -> Vec<Event> {
    let spec_name = state
        .spec
        .as_ref()
        .map(|s| s.name.clone())
        .unwrap_or_default();
    d.batch
        .iter()
        .flat_map(|b| b.start.iter())
        .filter_map(|id| state.replicas.get(id))
        .filter(|r| r.phase.is_serving_candidate() && !state.is_routed(&r.id))
        .map(|r| Event::ReplicaStopRequested {
            replica: r.id.clone(),
            service: spec_name.clone(),
            host: r.host.clone(),
            reason: why.to_owned(),
        })
        .collect()
}

/// Once the new version serves every replica, watch it for `bake_secs`
/// before completing (a revert completes at once).
fn bake_then_finish(d: &Deployment, now_ms: i64) -> Vec<Event> {
    // Nothing to revert to on a first deployment: no point watching.
    if d.reverting.is_some() || d.plan.bake_secs == 0 || d.previous_image.is_none() {
        return vec![finish(d, now_ms)];
    }
    match d.bake_until_ms {
        None => vec![Event::BakeStarted {
            deployment_id: d.id.clone(),
            until_ms: now_ms.saturating_add(secs_to_ms(d.plan.bake_secs)),
        }],
        Some(until) if now_ms < until => Vec::new(),
        Some(_) => vec![finish(d, now_ms)],
    }
}

pub(crate) fn finish(d: &Deployment, now_ms: i64) -> Event {
    match &d.reverting {
        None => Event::DeploymentCompleted {
            deployment_id: d.id.clone(),
            at_ms: now_ms,
        },
        Some(reason) => Event::DeploymentReverted {
            deployment_id: d.id.clone(),
            reason: reason.clone(),
            at_ms: now_ms,
        },
    }
}
