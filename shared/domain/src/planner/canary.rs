//! The canary strategy.
//!
//! `canary_replicas = ceil(replicas * percent / 100)` replicas of the new
//! image start beside the serving set (batch 1, replacing nothing). Once
//! healthy they receive exactly the step's share of the traffic, by router
//! weight. Without `steps` the canary holds at `canary_percent` until an
//! operator promotes or aborts it (or its phase deadline passes); with
//! `steps` each one bakes for its time and the next follows while the
//! canary stays healthy, and the last one is followed by promotion. A
//! promoted canary rolls out to every replica by the rolling rules, the
//! canary replicas counting as new ones. A canary replica that fails fails
//! the deployment.

use crate::event::Event;
use crate::limits::secs_to_ms;
use crate::planner::rolling;
use crate::planner::state::{Deployment, Phase, ServiceState, VerdictKind, World};
use crate::spec::{CanaryStep, ServiceSpec};

/// Replicas a canary of `percent` percent needs out of `replicas` (never
/// more than `replicas`, whatever the numbers: the product is taken in u64).
pub fn replicas_for(replicas: u32, percent: u32) -> u32 {
    let share = (u64::from(replicas) * u64::from(percent.min(100))).div_ceil(100);
    u32::try_from(share).unwrap_or(replicas).max(1)
}

/// The steps of `d`: its plan's, or one held at `canary_percent`.
pub(crate) fn steps(d: &Deployment) -> Vec<CanaryStep> {
    if d.plan.steps.is_empty() {
        vec![CanaryStep {
            percent: d.plan.canary_percent,
            bake_secs: 0,
        }]
    } else {
        d.plan.steps.clone()
    }
}

/// True when the steps advance by themselves (the deploy block has `steps`).
pub(crate) fn is_automatic(d: &Deployment) -> bool {
    !d.plan.steps.is_empty()
}

pub(crate) fn react(
    world: &World,
    state: &ServiceState,
    spec: &ServiceSpec,
    d: &Deployment,
    now_ms: i64,
) -> Vec<Event> {
    if d.canary.promoted {
        return rolling::react(world, state, spec, d, now_ms);
    }
    if let Some(batch) = &d.batch {
        return rolling::react_batch(world, state, spec, d, batch, now_ms);
    }
    if d.batches_started == 0 {
        return rolling::start_batch(
            world,
            state,
            spec,
            d,
            &d.image,
            d.plan.canary_replicas.max(1),
            Vec::new(),
            now_ms,
        );
    }
    if let Some(r) = d
        .canary
        .replicas
        .iter()
        .filter_map(|id| state.replicas.get(id))
        .find(|r| matches!(r.phase, Phase::Unhealthy | Phase::Exited | Phase::Stopping))
    {
        let how = match r.phase {
            Phase::Unhealthy => "became unhealthy".to_owned(),
            _ => format!(
                "exited ({})",
                r.exit.clone().unwrap_or_else(|| "stopped".into())
            ),
        };
        let reason = format!("canary replica {} ({}) {how}", r.id, d.image);
        return rolling::fail_batch(state, d, reason, now_ms);
    }
    let steps = steps(d);
    let shift = |number: u32| {
        let step = steps[(number - 1) as usize];
        vec![Event::TrafficShifted {
            deployment_id: d.id.clone(),
            step: number,
            percent: step.percent,
            bake_secs: step.bake_secs,
        }]
    };
    if d.canary.step == 0 {
        return shift(1);
    }
    let baked = now_ms
        >= d.canary
            .step_since_ms
            .saturating_add(secs_to_ms(d.canary.bake_secs));
    if !is_automatic(d) || !baked {
        return Vec::new();
    }
    // Never a step forward on no data (nor on a breach, which reverts):
    // only while the health-watcher's verdict on the canary is a pass.
    let passed = state
        .verdicts
        .get(&d.image)
        .is_some_and(|v| v.kind == VerdictKind::Pass);
    if d.plan.thresholds && !passed {
        return Vec::new();
    }
    if (d.canary.step as usize) < steps.len() {
        shift(d.canary.step + 1)
    } else {
        vec![Event::CanaryPromoted {
            deployment_id: d.id.clone(),
            automatic: true,
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canary_replicas_round_up() {
        assert_eq!(replicas_for(3, 10), 1);
        assert_eq!(replicas_for(10, 10), 1);
        assert_eq!(replicas_for(10, 11), 2);
        assert_eq!(replicas_for(3, 50), 2);
        assert_eq!(replicas_for(4, 100), 4);
    }

    #[test]
    fn canary_replicas_cannot_overflow() {
        // Given numbers whose u32 product overflows, when the canary is
        // sized, then it is the share of the replicas, never more than all
        assert_eq!(replicas_for(u32::MAX, 10), 429_496_730);
        assert_eq!(replicas_for(u32::MAX, 100), u32::MAX);
        assert_eq!(replicas_for(u32::MAX, u32::MAX), u32::MAX);
        assert_eq!(replicas_for(1000, u32::MAX), 1000);
    }
}
