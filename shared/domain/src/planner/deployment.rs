//! The deployment in flight: held while paused, turned around when a phase
//! passes its deadline, otherwise driven by its strategy.
//!
//! Every phase has a deadline, `progress_deadline_secs` after it began
//! (after a timed wait, such as a canary step's bake or the blue-green
//! standby, ends). When it passes the deployment turns back by the rule of
//! [`super::policy`]: reverted, or held when `auto_revert` is off; a revert
//! that passes its own deadline fails. So no deployment waits forever, and
//! the log says which phase ran out of time.

use crate::command::DeploymentRecord;
use crate::event::{Event, Judgement};
use crate::limits::secs_to_ms;
use crate::planner::policy::{self, Cause, TurnBack};
use crate::planner::state::{Deployment, ServiceState, VerdictKind, World};
use crate::planner::{blue_green, canary, rolling};
use crate::spec::{ServiceSpec, Strategy};

/// The next events of deployment `d` at `now_ms`.
pub(crate) fn react(
    world: &World,
    state: &ServiceState,
    spec: &ServiceSpec,
    d: &Deployment,
    now_ms: i64,
) -> Vec<Event> {
    if d.paused.is_some() {
        return Vec::new();
    }
    if deadline(d).is_some_and(|t| now_ms >= t) {
        return deadline_passed(d, now_ms);
    }
    if let Some(judgement) = breach(state, d) {
        return breached(state, d, &judgement, now_ms);
    }
    if world.no_live_router() {
        // Nothing would carry the traffic a step moves: wait for a router
        // (its RouterJoined decides again) or for the phase deadline.
        return Vec::new();
    }
    if d.reverting.is_some() {
        return rolling::react(world, state, spec, d, now_ms);
    }
    match d.strategy {
        Strategy::Rolling => rolling::react(world, state, spec, d, now_ms),
        Strategy::Canary => canary::react(world, state, spec, d, now_ms),
        Strategy::BlueGreen => blue_green::react(world, state, spec, d, now_ms),
    }
}

/// When the current phase of `d` runs out of time; `None` while it is held.
pub(crate) fn deadline(d: &Deployment) -> Option<i64> {
    if d.paused.is_some() {
        return None;
    }
    let progress = secs_to_ms(d.plan.progress_deadline_secs.max(1));
    let since = if let Some(until) = timed_wait_until(d) {
        until.max(d.phase_since_ms)
    } else {
        d.phase_since_ms
    };
    Some(since.saturating_add(progress))
}

/// The end of the timed wait `d` is in, if any: a canary step that bakes
/// and the blue-green standby window.
pub(crate) fn timed_wait_until(d: &Deployment) -> Option<i64> {
    if d.reverting.is_some() {
        return None;
    }
    if let Some(until) = d.bake_until_ms {
        return Some(until);
    }
    match d.strategy {
        Strategy::Canary if !d.canary.promoted && d.canary.step > 0 && canary::is_automatic(d) => {
            Some(
                d.canary
                    .step_since_ms
                    .saturating_add(secs_to_ms(d.canary.bake_secs)),
            )
        }
        Strategy::BlueGreen if !d.standby_ended => d.standby_until_ms,
        _ => None,
    }
}

/// A threshold breach of the version `d` rolls out, recorded since it
/// started (or was last resumed), while it is not reverting.
fn breach(state: &ServiceState, d: &Deployment) -> Option<Judgement> {
    // A member of a release: the release judges, and turns every member back.
    if d.reverting.is_some() || d.plan.release.is_some() {
        return None;
    }
    let v = state.verdicts.get(&d.image)?;
    match &v.kind {
        VerdictKind::Breach(j)
            if v.since_ms >= d.started_at_ms && d.resumed_at_ms.is_none_or(|r| v.since_ms > r) =>
        {
            Some(j.clone())
        }
        _ => None,
    }
}

/// A breach turns the deployment back at once, in any phase (batches,
/// canary steps, standby, bake), as [`policy::turn_back`] says. Unless it
/// is held, the batch in progress is abandoned and its new replicas stop.
fn breached(state: &ServiceState, d: &Deployment, j: &Judgement, now_ms: i64) -> Vec<Event> {
    let reason = format!("threshold breached by {}: {j}", d.image);
    let choice = policy::turn_back(Cause::Breach, d.into());
    let mut events = match choice {
        TurnBack::Hold => Vec::new(),
        TurnBack::Revert | TurnBack::Fail => {
            rolling::stop_batch(state, d, "its version breached a threshold")
        }
    };
    events.push(policy::event(choice, d, reason, now_ms));
    events
}

/// The current phase of `d` ran out of time: turn back as
/// [`policy::turn_back`] says, naming the phase.
fn deadline_passed(d: &Deployment, now_ms: i64) -> Vec<Event> {
    let reason = format!(
        "no progress within {}s ({})",
        d.plan.progress_deadline_secs,
        describe(d)
    );
    let choice = policy::turn_back(Cause::Deadline, d.into());
    vec![policy::event(choice, d, reason, now_ms)]
}

/// Fill in what `record` (the history's record of `d`, in flight) says of
/// now: its phase, and whether it waits for a router because none is live.
pub fn annotate(world: &World, d: &Deployment, record: &mut DeploymentRecord) {
    record.waiting_for_router = d.paused.is_none() && world.no_live_router();
    record.phase = Some(if record.waiting_for_router {
        format!("waiting for a router: none is live ({})", describe(d))
    } else {
        describe(d)
    });
}

/// What `d` is doing or waiting for, in a few words.
pub fn describe(d: &Deployment) -> String {
    if let Some(p) = &d.paused {
        return format!("paused: {}", p.reason);
    }
    let batch = d.batch.as_ref().map(|b| {
        if b.switched {
            format!("batch {}: retiring {}", b.number, b.replace.join(", "))
        } else {
            format!(
                "batch {}: waiting for {} ({}) to become healthy",
                b.number,
                b.start.join(", "),
                b.image
            )
        }
    });
    if let (Some(until), None) = (d.bake_until_ms, &d.reverting) {
        return format!(
            "{} serves every replica; baking (watching its traffic) until {until} ms",
            d.image
        );
    }
    if d.reverting.is_some() {
        return format!(
            "reverting to {}{}",
            d.previous_image.as_deref().unwrap_or("nothing"),
            batch.map(|b| format!(", {b}")).unwrap_or_default()
        );
    }
    match d.strategy {
        Strategy::Canary if !d.canary.promoted && d.canary.step > 0 && d.batch.is_none() => {
            let steps = canary::steps(d).len();
            if canary::is_automatic(d) {
                format!(
                    "canary at {}% (step {} of {steps}), baking {}s",
                    d.canary.percent, d.canary.step, d.canary.bake_secs
                )
            } else {
                format!(
                    "canary at {}%: waiting for mt canary promote or mt canary abort",
                    d.canary.percent
                )
            }
        }
        Strategy::BlueGreen if d.standby_until_ms.is_some() && !d.standby_ended => format!(
            "switched to {}; {} on standby",
            d.image,
            d.previous_image.as_deref().unwrap_or("the old set")
        ),
        _ => batch.unwrap_or_else(|| "planning the next batch".into()),
    }
}
