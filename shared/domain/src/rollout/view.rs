//! Where each target of a rollout stands, read from the deployments the
//! rollout started, and the answers of `mentat.query.rollout`.

use crate::command::{DeploymentRecord, Outcome};
use crate::planner::World;
use crate::rollout::state::{Rollout, Target};
use crate::rollout::{RolloutStatus, RolloutSummary, TargetState, TargetStatus, WaveStatus};

/// The record of deployment `id` of `service`.
pub fn record<'w>(world: &'w World, service: &str, id: &str) -> Option<&'w DeploymentRecord> {
    world
        .services
        .get(service)?
        .history
        .iter()
        .rev()
        .find(|r| r.deployment_id == id)
}

/// Where a target stands, and why when it failed.
pub fn target_state(world: &World, service: &str, t: &Target) -> (TargetState, Option<String>) {
    if t.overridden.is_some() {
        return (TargetState::Overridden, None);
    }
    if let Some(id) = &t.rollback_id {
        return match record(world, service, id) {
            Some(rec) if rec.outcome == Outcome::Completed => (TargetState::Reverted, None),
            Some(rec) if rec.outcome.is_final() => (
                TargetState::Failed,
                Some(format!("rollback {}: {}", rec.outcome.as_str(), why(rec))),
            ),
            _ => (TargetState::RollingBack, None),
        };
    }
    if let Some(reason) = &t.failure {
        return (TargetState::Failed, Some(reason.clone()));
    }
    let Some(id) = &t.deployment_id else {
        return (TargetState::Pending, None);
    };
    match record(world, service, id) {
        Some(rec) if rec.outcome == Outcome::Completed => (TargetState::Completed, None),
        Some(rec) if rec.outcome.is_final() => (TargetState::Failed, Some(why(rec))),
        _ => (TargetState::Deploying, None),
    }
}

/// Why a deployment did not complete.
pub fn why(rec: &DeploymentRecord) -> String {
    let outcome = rec.outcome.as_str();
    match &rec.failure {
        Some(f) => format!("deployment {} {outcome}: {f}", rec.deployment_id),
        None => format!("deployment {} {outcome}", rec.deployment_id),
    }
}

/// True when the rollout's own deployment of the target completed: it took
/// the new image (a breach after that does not undo it).
pub fn took_image(world: &World, service: &str, t: &Target) -> bool {
    t.deployment_id
        .as_deref()
        .and_then(|id| record(world, service, id))
        .is_some_and(|rec| rec.outcome == Outcome::Completed)
}

/// The summary of a rollout.
pub fn summary(world: &World, r: &Rollout) -> RolloutSummary {
    let states: Vec<TargetState> = r
        .targets
        .iter()
        .map(|(s, t)| target_state(world, s, t).0)
        .collect();
    RolloutSummary {
        rollout_id: r.id.clone(),
        image: r.image.clone(),
        selector: r.selector.clone(),
        state: r.state,
        targets: r.targets.len() as u32,
        waves: r.waves.len() as u32,
        waves_completed: r.waves_completed,
        took_image: r
            .targets
            .iter()
            .filter(|(s, t)| took_image(world, s, t))
            .count() as u32,
        failed: states.iter().filter(|s| **s == TargetState::Failed).count() as u32,
        reverted: r.reverted,
        actor: r.actor.clone(),
        reason: r.reason.clone(),
        started_at_ms: r.started_at_ms,
        ended_at_ms: r.ended_at_ms,
    }
}

/// The last rollout in detail, if there was one.
pub fn status(world: &World) -> Option<RolloutStatus> {
    let r = world.rollouts.last.as_ref()?;
    let waves = r
        .waves
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let n = i as u32 + 1;
            let state = if n <= r.waves_completed {
                "completed"
            } else if !r.state.is_active() && n <= r.wave {
                // Cancelled or rolled back while it ran: it never will end.
                "stopped"
            } else if n < r.wave || (n == r.wave && r.bake_until_ms.is_none()) {
                "in_progress"
            } else if n == r.wave {
                "baking"
            } else {
                "pending"
            };
            let targets = w
                .members
                .iter()
                .filter_map(|s| r.targets.get(s).map(|t| (s, t)))
                .map(|(s, t)| {
                    let (state, reason) = target_state(world, s, t);
                    TargetStatus {
                        service: s.clone(),
                        state,
                        previous_image: t.previous_image.clone(),
                        deployment_id: t.rollback_id.clone().or(t.deployment_id.clone()),
                        reason,
                    }
                })
                .collect();
            WaveStatus {
                wave: n,
                percent: w.percent,
                state: state.to_owned(),
                targets,
            }
        })
        .collect();
    Some(RolloutStatus {
        summary: summary(world, r),
        wave: r.wave,
        bake_until_ms: r.bake_until_ms,
        wave_bake_secs: r.wave_bake_secs,
        paused: r.paused.as_ref().map(|(_, why)| why.clone()),
        legal: r.legal().iter().map(|s| (*s).to_owned()).collect(),
        waves,
        webhooks_delivered: r.webhooks_delivered,
        webhooks_failed: r.webhooks_failed,
        webhook_error: r.webhook_error.clone(),
    })
}

/// Past rollouts and the last one, newest first, at most `limit`.
pub fn history(world: &World, limit: usize) -> Vec<RolloutSummary> {
    let all = &world.rollouts;
    all.last
        .iter()
        .chain(all.past.iter().rev())
        .take(limit)
        .map(|r| summary(world, r))
        .collect()
}

/// Most past rollouts one answer lists.
pub const MAX_HISTORY: u32 = 100;
/// Past rollouts listed when the query does not say.
pub const DEFAULT_HISTORY: u32 = 20;

/// The answer to `mentat.query.rollout`.
pub fn answer(world: &World, query: &crate::rollout::RolloutQuery) -> crate::rollout::RolloutReply {
    if query.history {
        let limit = query.limit.unwrap_or(DEFAULT_HISTORY).clamp(1, MAX_HISTORY);
        return crate::rollout::RolloutReply::Ok {
            rollout: None,
            rollouts: history(world, limit as usize),
        };
    }
    crate::rollout::RolloutReply::Ok {
        rollout: status(world),
        rollouts: Vec::new(),
    }
}
