//! Steering a deployment in flight: pause, resume, abort, promote. Each
//! records who asked and why (the command's actor and reason travel in
//! the events' metadata) and is rejected, changing nothing, when it does
//! not apply to where the deployment stands.

use crate::command::{Control, RejectKind, Rejection};
use crate::event::Event;
use crate::planner::decide::{defined, reject, Append, Decision};
use crate::planner::policy::{self, Cause, TurnBack};
use crate::planner::rolling;
use crate::planner::state::{Deployment, World};
use crate::spec::Strategy;

/// The deployment in flight for the command's service, or why there is none.
fn in_flight<'w>(world: &'w World, c: &Control) -> Result<&'w Deployment, Rejection> {
    let (state, _) = defined(world, &c.service)?;
    state.deployment.as_ref().ok_or_else(|| {
        Rejection::new(
            RejectKind::NoDeployment,
            format!("{} has no deployment in flight", c.service),
        )
    })
}

fn accept(c: &Control, d: &Deployment, event: Event, message: String) -> Decision {
    Decision::Accept {
        appends: vec![Append {
            stream: c.service.clone(),
            events: vec![event],
        }],
        deployment_id: Some(d.id.clone()),
        message,
    }
}

/// `by alice: reason` for the log.
fn who(c: &Control) -> String {
    let actor = c.actor.as_deref().unwrap_or("an operator");
    match c.reason.as_deref().filter(|r| !r.trim().is_empty()) {
        Some(reason) => format!("by {actor}: {reason}"),
        None => format!("by {actor}"),
    }
}

pub(crate) fn pause(world: &World, c: &Control) -> Decision {
    let d = match in_flight(world, c) {
        Ok(d) => d,
        Err(reason) => return Decision::Reject(reason),
    };
    if let Some(p) = &d.paused {
        return reject(
            RejectKind::WrongPhase,
            format!("deployment {} is already paused ({})", d.id, p.reason),
        );
    }
    if d.reverting.is_some() {
        return reject(
            RejectKind::WrongPhase,
            format!(
                "deployment {} is reverting to {}; a revert is not held",
                d.id,
                d.previous_image.as_deref().unwrap_or("the previous image")
            ),
        );
    }
    let event = Event::DeploymentPaused {
        deployment_id: d.id.clone(),
        reason: format!("paused {}", who(c)),
    };
    accept(c, d, event, format!("deployment {} paused", d.id))
}

/// Resume a held deployment; one held because its batch failed starts
/// that batch again, in the same decision.
pub(crate) fn resume(world: &World, c: &Control, now_ms: i64) -> Decision {
    let d = match in_flight(world, c) {
        Ok(d) => d,
        Err(reason) => return Decision::Reject(reason),
    };
    let Some(p) = &d.paused else {
        return reject(
            RejectKind::WrongPhase,
            format!("deployment {} is not paused", d.id),
        );
    };
    let mut events = vec![Event::DeploymentResumed {
        deployment_id: d.id.clone(),
        paused_ms: (now_ms - p.since_ms).max(0),
    }];
    let mut message = format!("deployment {} resumed", d.id);
    if let Ok((state, spec)) = defined(world, &c.service) {
        let retry = rolling::retry_failed_batch(world, state, spec, d, now_ms);
        if retry
            .iter()
            .any(|e| matches!(e, Event::BatchStarted { .. }))
        {
            message.push_str(": its failed batch starts again");
        }
        events.extend(retry);
    }
    Decision::Accept {
        appends: vec![Append {
            stream: c.service.clone(),
            events,
        }],
        deployment_id: Some(d.id.clone()),
        message,
    }
}

/// Abort (or a rollback while a deployment is in flight): turn back as
/// [`policy::turn_back`] says for an operator's abort, which reverts to the
/// previous image, or fails a deployment that has none. `verb` says which
/// command it was, in the log. A revert is not aborted.
pub(crate) fn abort(world: &World, c: &Control, verb: &str, now_ms: i64) -> Decision {
    let d = match in_flight(world, c) {
        Ok(d) => d,
        Err(reason) => return Decision::Reject(reason),
    };
    if d.reverting.is_some() {
        return reject(
            RejectKind::WrongPhase,
            format!(
                "deployment {} is already reverting to {}",
                d.id,
                d.previous_image.as_deref().unwrap_or("the previous image")
            ),
        );
    }
    let choice = policy::turn_back(Cause::Abort, d.into());
    let message = match (choice, &d.previous_image) {
        (TurnBack::Revert, Some(previous)) => {
            format!("deployment {} {verb}: reverting to {previous}", d.id)
        }
        (TurnBack::Hold, _) => format!("deployment {} {verb}: held", d.id),
        _ => format!(
            "deployment {} {verb}; {} had no previous image, so its replicas keep running",
            d.id, c.service
        ),
    };
    let event = policy::event(choice, d, format!("{verb} {}", who(c)), now_ms);
    accept(c, d, event, message)
}

pub(crate) fn promote(world: &World, c: &Control) -> Decision {
    let d = match in_flight(world, c) {
        Ok(d) => d,
        Err(reason) => return Decision::Reject(reason),
    };
    if d.reverting.is_some() {
        return reject(
            RejectKind::WrongPhase,
            format!("deployment {} is reverting", d.id),
        );
    }
    if let Some(p) = &d.paused {
        return reject(
            RejectKind::WrongPhase,
            format!(
                "deployment {} is paused ({}); mt resume it first",
                d.id, p.reason
            ),
        );
    }
    match d.strategy {
        Strategy::Canary if !d.canary.promoted => accept(
            c,
            d,
            Event::CanaryPromoted {
                deployment_id: d.id.clone(),
                automatic: false,
            },
            format!(
                "canary {} promoted: rolling {} out to every replica",
                d.id, d.image
            ),
        ),
        Strategy::Canary => reject(
            RejectKind::WrongPhase,
            format!("canary {} is already promoted", d.id),
        ),
        Strategy::BlueGreen if d.standby_until_ms.is_some() && !d.standby_ended => accept(
            c,
            d,
            Event::StandbyEnded {
                deployment_id: d.id.clone(),
                early: true,
            },
            format!("standby of deployment {} ended: retiring the old set", d.id),
        ),
        Strategy::BlueGreen if d.standby_ended => reject(
            RejectKind::WrongPhase,
            format!("deployment {} has already ended its standby", d.id),
        ),
        Strategy::BlueGreen => reject(
            RejectKind::WrongPhase,
            format!(
                "deployment {} has not switched traffic yet: the new set is not healthy",
                d.id
            ),
        ),
        Strategy::Rolling => reject(
            RejectKind::WrongPhase,
            format!(
                "deployment {} is rolling: there is no canary or standby to promote",
                d.id
            ),
        ),
    }
}
