//! The blue-green strategy.
//!
//! A full green set of `replicas` replicas of the new image starts (one
//! batch replacing the whole blue set). When every green replica is healthy
//! all traffic moves to green in one routing change and blue stays running
//! with weight 0 for `standby_secs`: a revert in that window (`mt rollback`,
//! `mt abort`, a failure) is a single routing change back to blue, starting
//! no process. When the window ends (or `mt promote` ends it), blue is
//! drained and stopped and the deployment completes. If green does not
//! become healthy, blue never stops serving and green is stopped.

use crate::event::Event;
use crate::limits::secs_to_ms;
use crate::planner::rolling;
use crate::planner::state::{Deployment, Phase, ServiceState, World};
use crate::spec::ServiceSpec;

pub(crate) fn react(
    world: &World,
    state: &ServiceState,
    spec: &ServiceSpec,
    d: &Deployment,
    now_ms: i64,
) -> Vec<Event> {
    let Some(batch) = &d.batch else {
        return rolling::next_batch(world, state, spec, d, d.replicas, now_ms);
    };
    if !batch.switched || batch.replace.is_empty() {
        return rolling::react_batch(world, state, spec, d, batch, now_ms);
    }
    if !d.standby_ended {
        if let Some(r) = batch
            .start
            .iter()
            .filter_map(|id| state.replicas.get(id))
            .find(|r| matches!(r.phase, Phase::Unhealthy | Phase::Exited | Phase::Stopping))
        {
            let reason = format!(
                "replica {} ({}) failed on standby: {}",
                r.id,
                d.image,
                r.exit
                    .clone()
                    .unwrap_or_else(|| r.phase.as_str().to_owned())
            );
            return rolling::fail_batch(state, d, reason, now_ms);
        }
    }
    match d.standby_until_ms {
        None => vec![Event::TrafficSwitched {
            deployment_id: d.id.clone(),
            image: d.image.clone(),
            standby_image: d.previous_image.clone(),
            standby_until_ms: now_ms.saturating_add(secs_to_ms(d.plan.standby_secs)),
        }],
        Some(until) if !d.standby_ended => {
            if now_ms >= until {
                vec![Event::StandbyEnded {
                    deployment_id: d.id.clone(),
                    early: false,
                }]
            } else {
                Vec::new()
            }
        }
        Some(_) => rolling::react_batch(world, state, spec, d, batch, now_ms),
    }
}
