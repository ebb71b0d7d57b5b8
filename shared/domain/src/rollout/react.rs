//! What a rollout does next, given the world and the time: level-triggered
//! like [`crate::planner::react`], so a planner restarted from the log
//! calls it again and carries on. Every deployment it starts is recorded
//! with the `RolloutTargetDeployed` that names it, in one decision: what
//! the log already holds is never decided again, so no target is
//! deployed twice.

use crate::command::Outcome;
use crate::event::{Event, ROLLOUTS_STREAM};
use crate::limits::secs_to_ms;
use crate::planner::decide::{defined, start_deployment};
use crate::planner::state::VerdictKind;
use crate::planner::{Append, Decision, World};
use crate::rollout::state::Rollout;
use crate::rollout::view::{record, target_state, took_image, why};
use crate::rollout::{FailedTarget, RolloutState, TargetState};
use crate::spec::Strategy;

/// The next appends of the rollout in flight at `now_ms`, as one
/// decision; empty when nothing is to be done until another event or
/// [`next_deadline`]. `new_id` names each deployment it starts.
pub fn react(world: &World, now_ms: i64, new_id: &mut dyn FnMut() -> String) -> Vec<Append> {
    let Some(r) = world.rollouts.active() else {
        return Vec::new();
    };
    match r.state {
        RolloutState::InProgress => in_progress(world, r, now_ms, new_id),
        RolloutState::RollingBack => rolling_back(world, r, now_ms, new_id),
        _ => Vec::new(),
    }
}

/// When [`react`] may have something to do without a new event: the end
/// of the current wave's bake.
pub fn next_deadline(world: &World) -> Option<i64> {
    world
        .rollouts
        .active()
        .filter(|r| r.state == RolloutState::InProgress)
        .and_then(|r| r.bake_until_ms)
}

fn own(events: Vec<Event>) -> Append {
    Append {
        stream: ROLLOUTS_STREAM.to_owned(),
        events,
    }
}

fn in_progress(
    world: &World,
    r: &Rollout,
    now_ms: i64,
    new_id: &mut dyn FnMut() -> String,
) -> Vec<Append> {
    let failed = new_failures(world, r);
    if !failed.is_empty() {
        return vec![own(vec![Event::RolloutPaused {
            rollout_id: r.id.clone(),
            wave: r.wave,
            failed,
            by_operator: false,
        }])];
    }
    if r.wave == 0 {
        return vec![own(vec![wave_started(r, 1)])];
    }
    // The wave's targets, and those of earlier waves a resume with
    // --retry-failed sent back to pending.
    let so_far = || r.targets.iter().filter(|(_, t)| t.wave <= r.wave);
    let pending: Vec<&String> = so_far()
        .filter(|(s, t)| target_state(world, s, t).0 == TargetState::Pending)
        .map(|(s, _)| s)
        .collect();
    let mut appends = Vec::new();
    let mut deployed = Vec::new();
    for service in pending {
        if let Ok(Some((append, event))) =
            deploy(world, r, service, &r.image, false, now_ms, new_id)
        {
            appends.push(append);
            deployed.push(event);
        }
    }
    if !deployed.is_empty() {
        appends.push(own(deployed));
        return appends;
    }
    let settled = so_far().all(|(s, t)| {
        matches!(
            target_state(world, s, t).0,
            TargetState::Completed | TargetState::Failed | TargetState::Overridden
        )
    });
    if !settled {
        return Vec::new();
    }
    match r.bake_until_ms {
        None if r.wave_bake_secs > 0 => vec![own(vec![Event::RolloutWaveBaking {
            rollout_id: r.id.clone(),
            wave: r.wave,
            until_ms: now_ms.saturating_add(secs_to_ms(r.wave_bake_secs)),
        }])],
        Some(until) if now_ms < until => Vec::new(),
        _ => vec![own(wave_completed(r, now_ms))],
    }
}

fn wave_started(r: &Rollout, wave: u32) -> Event {
    Event::RolloutWaveStarted {
        rollout_id: r.id.clone(),
        wave,
        members: r.members(wave).to_vec(),
    }
}

/// The wave completed, and what follows: the next wave, or the end.
fn wave_completed(r: &Rollout, now_ms: i64) -> Vec<Event> {
    let done = Event::RolloutWaveCompleted {
        rollout_id: r.id.clone(),
        wave: r.wave,
    };
    let next = if (r.wave as usize) < r.waves.len() {
        wave_started(r, r.wave + 1)
    } else {
        Event::RolloutCompleted {
            rollout_id: r.id.clone(),
            at_ms: now_ms,
        }
    };
    vec![done, next]
}

/// Targets of the waves so far that failed and were not reported yet:
/// their deployment was reverted, failed or is held; they breached a
/// threshold with the new image since the rollout last went on; or they
/// cannot be deployed at all.
fn new_failures(world: &World, r: &Rollout) -> Vec<FailedTarget> {
    let mut failed = Vec::new();
    for (service, t) in &r.targets {
        if t.wave > r.wave || t.failure.is_some() || t.overridden.is_some() {
            continue;
        }
        let reason = match t.deployment_id.as_deref() {
            None => undeployable(world, service),
            Some(id) => match record(world, service, id) {
                Some(rec) if rec.outcome == Outcome::Completed => breach(world, r, service),
                Some(rec) if rec.outcome.is_final() => Some(why(rec)),
                Some(rec) => rec
                    .paused
                    .as_ref()
                    .map(|p| format!("deployment {} is held: {p}", rec.deployment_id)),
                None => None,
            },
        };
        if let Some(reason) = reason {
            failed.push(FailedTarget {
                service: service.clone(),
                reason,
            });
        }
    }
    failed
}

/// A breach of the rollout's image by `service` since the rollout last went on.
fn breach(world: &World, r: &Rollout, service: &str) -> Option<String> {
    let verdict = world.services.get(service)?.verdicts.get(&r.image)?;
    match &verdict.kind {
        VerdictKind::Breach(j) if verdict.since_ms >= r.watching_since_ms => {
            Some(format!("{} breached a threshold: {j}", r.image))
        }
        _ => None,
    }
}

/// Why `service` can never be deployed as it is, if so (waiting for a
/// deployment in flight or for a live host is not a failure).
fn undeployable(world: &World, service: &str) -> Option<String> {
    match defined(world, service) {
        Err(rejection) => Some(rejection.reason),
        Ok((_, spec)) => spec
            .validate()
            .first()
            .map(|e| format!("its spec in the log is not valid ({e}); apply a corrected config")),
    }
}

/// Start a deployment of `service` to `image`: the append to its stream
/// and the `RolloutTargetDeployed` that records it. `None` while it must
/// wait (a deployment of it in flight, no live host).
fn deploy(
    world: &World,
    r: &Rollout,
    service: &str,
    image: &str,
    rollback: bool,
    now_ms: i64,
    new_id: &mut dyn FnMut() -> String,
) -> Result<Option<(Append, Event)>, String> {
    let (state, spec) = defined(world, service).map_err(|e| e.reason)?;
    if state.deployment.is_some() || !world.hosts.values().any(|h| h.live) {
        return Ok(None);
    }
    if let Some(e) = spec.validate().first() {
        return Err(e.to_string());
    }
    // Its own strategy, but a canary needs a serving version beside it,
    // and a rollback goes straight to every replica.
    let strategy = match spec.deploy.strategy {
        Strategy::Canary if rollback || state.image.is_none() => Strategy::Rolling,
        Strategy::Canary if spec.deploy.unusable_for(Strategy::Canary).is_some() => {
            Strategy::Rolling
        }
        other => other,
    };
    let id = new_id();
    let Decision::Accept { mut appends, .. } =
        start_deployment(state, spec, image, strategy, rollback, &id, now_ms)
    else {
        return Ok(None);
    };
    let event = Event::RolloutTargetDeployed {
        rollout_id: r.id.clone(),
        service: service.to_owned(),
        deployment_id: id,
        image: image.to_owned(),
        rollback,
    };
    Ok(appends.pop().map(|a| (a, event)))
}

fn rolling_back(
    world: &World,
    r: &Rollout,
    now_ms: i64,
    new_id: &mut dyn FnMut() -> String,
) -> Vec<Append> {
    let mut appends = Vec::new();
    let mut deployed = Vec::new();
    let mut waiting = false;
    let mut reverted = 0;
    let mut failed = Vec::new();
    for service in &r.rollback {
        let Some(t) = r.targets.get(service) else {
            continue;
        };
        if t.rollback_id.is_some() {
            match target_state(world, service, t) {
                (TargetState::Reverted, _) => reverted += 1,
                (TargetState::Failed, reason) => failed.push(FailedTarget {
                    service: service.clone(),
                    reason: reason.unwrap_or_default(),
                }),
                _ => waiting = true,
            }
            continue;
        }
        match target_state(world, service, t).0 {
            TargetState::Deploying => waiting = true,
            _ if !took_image(world, service, t) => {}
            _ => {
                let Some(previous) = t.previous_image.as_deref() else {
                    failed.push(FailedTarget {
                        service: service.clone(),
                        reason: "no previous image: the rollout deployed it first".into(),
                    });
                    continue;
                };
                match deploy(world, r, service, previous, true, now_ms, new_id) {
                    Ok(Some((append, event))) => {
                        appends.push(append);
                        deployed.push(event);
                    }
                    Ok(None) => waiting = true,
                    Err(reason) => failed.push(FailedTarget {
                        service: service.clone(),
                        reason,
                    }),
                }
            }
        }
    }
    if !deployed.is_empty() {
        appends.push(own(deployed));
        return appends;
    }
    if waiting {
        return Vec::new();
    }
    vec![own(vec![Event::RolloutRollbackCompleted {
        rollout_id: r.id.clone(),
        reverted,
        failed,
    }])]
}
