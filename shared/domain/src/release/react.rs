//! What the release deployments in flight do next, from the state alone
//! (level-triggered: a planner restarted from the log calls it again and
//! carries on).
//!
//! | in flight | when | decides |
//! |---|---|---|
//! | before the switch | a member failed, was turned back or is held | `ReleaseDeployFailed` (naming each failed member) and every other member turned back: nothing switched |
//! | before the switch | every member's new replicas are healthy | `ReleaseSwitched` and every member's `RouteChanged`, one switch |
//! | after the switch | a member breached a threshold, failed or turned back | `ReleaseDeployFailed {reverted}` and every member back, one switch |
//! | after the switch | every member completed | `ReleaseDeployCompleted` |
//!
//! A release derived from `mt deploy` of one service has no switch: its one
//! member moves by its own strategy, and the release serves once it
//! completed.

use crate::command::Outcome;
use crate::event::{Event, EventEnvelope, Meta, RELEASES_STREAM};
use crate::planner::policy::{self, Cause};
use crate::planner::state::{Deployment, Phase, VerdictKind};
use crate::planner::{rolling, Append, Settings, World};
use crate::release::state::ReleaseDeployment;
use crate::release::{Failed, How, RouteSwitch, Step};
use crate::rollout::FailedTarget;

/// Why every member turns back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnBack {
    /// A member failed before the switch.
    Failed,
    /// After the switch: a breach or a member's failure.
    Reverted,
    /// An operator rolled the environment back.
    RolledBack,
}

/// Where one member's deployment stands.
enum Standing<'w> {
    /// In flight.
    Running(&'w Deployment),
    /// Ended: completed, or why not.
    Ended(Option<String>),
}

fn standing<'w>(world: &'w World, service: &str, id: &str) -> Standing<'w> {
    let Some(state) = world.services.get(service) else {
        return Standing::Ended(Some("the service is gone".into()));
    };
    if let Some(d) = state.deployment.as_ref().filter(|d| d.id == id) {
        return Standing::Running(d);
    }
    match state.history.iter().rev().find(|r| r.deployment_id == id) {
        Some(r) if r.outcome == Outcome::Completed => Standing::Ended(None),
        Some(r) => Standing::Ended(Some(
            r.failure
                .clone()
                .unwrap_or_else(|| format!("{:?}", r.outcome).to_lowercase()),
        )),
        None => Standing::Ended(Some("its deployment is not in the log".into())),
    }
}

/// The first decision any release deployment in flight has now, as
/// appends for one transaction; empty when none has anything to do.
pub fn react(world: &World, now_ms: i64, settings: Settings) -> Vec<Append> {
    for d in world.releases.all_in_flight() {
        let appends = react_one(world, d, now_ms, settings);
        if !appends.is_empty() {
            return appends;
        }
    }
    Vec::new()
}

fn react_one(world: &World, d: &ReleaseDeployment, now_ms: i64, settings: Settings) -> Vec<Append> {
    let mut failures = Vec::new();
    let mut all_done = true;
    let mut all_green = true;
    for (m, id) in d.deploying() {
        match standing(world, &m.service, id) {
            Standing::Ended(None) => {}
            Standing::Ended(Some(reason)) => failures.push(FailedTarget {
                service: m.service.clone(),
                reason,
            }),
            Standing::Running(dep) => {
                all_done = false;
                // A member held or turning back on its own fails the
                // release; a derived release's one member steers itself.
                let held = dep.paused.as_ref().map(|p| &p.reason);
                let gone_back = dep.reverting.as_ref().or(held);
                if let Some(reason) = gone_back.filter(|_| d.started.how != How::Derived) {
                    failures.push(FailedTarget {
                        service: m.service.clone(),
                        reason: reason.clone(),
                    });
                } else if let Some(reason) = breach(world, &m.service, dep, d) {
                    failures.push(FailedTarget {
                        service: m.service.clone(),
                        reason,
                    });
                }
                all_green &= green(world, &m.service, dep);
            }
        }
    }
    let step = Step {
        deployment_id: d.started.deployment_id.clone(),
        tag: d.started.tag.clone(),
        environment: d.started.environment.clone(),
        at_ms: now_ms,
    };
    let switched = d.switched_at_ms.is_some();
    if !failures.is_empty() {
        let kind = if switched {
            TurnBack::Reverted
        } else {
            TurnBack::Failed
        };
        let reason = failures
            .iter()
            .map(|f| format!("{}: {}", f.service, f.reason))
            .collect::<Vec<_>>()
            .join("; ");
        return turn_back(world, d, kind, &reason, failures, now_ms, settings);
    }
    if all_done {
        return vec![releases(vec![Event::ReleaseDeployCompleted(step)])];
    }
    if !switched && all_green && d.started.how != How::Derived {
        return grouped(
            world,
            d,
            vec![Event::ReleaseSwitched(step)],
            Vec::new(),
            "switch",
            now_ms,
            settings,
        );
    }
    Vec::new()
}

/// Every new replica of member deployment `dep` is healthy, the switch
/// not yet made.
fn green(world: &World, service: &str, dep: &Deployment) -> bool {
    let Some(state) = world.services.get(service) else {
        return false;
    };
    dep.batch.as_ref().is_some_and(|b| {
        !b.start.is_empty()
            && b.start.iter().all(|id| {
                state
                    .replicas
                    .get(id)
                    .is_some_and(|r| r.phase == Phase::Healthy)
            })
    })
}

/// A breach of the member's new version since the release switched.
fn breach(world: &World, service: &str, dep: &Deployment, d: &ReleaseDeployment) -> Option<String> {
    let since = d.switched_at_ms?;
    let v = world.services.get(service)?.verdicts.get(&dep.image)?;
    match &v.kind {
        VerdictKind::Breach(j) if v.since_ms >= since => {
            Some(format!("threshold breached by {}: {j}", dep.image))
        }
        _ => None,
    }
}

/// `ReleaseDeployFailed` and every member still in flight turned back, in
/// one switch.
pub(crate) fn turn_back_all(
    world: &World,
    d: &ReleaseDeployment,
    kind: TurnBack,
    reason: &str,
    now_ms: i64,
) -> Vec<Append> {
    turn_back(
        world,
        d,
        kind,
        reason,
        Vec::new(),
        now_ms,
        Settings::default(),
    )
}

fn turn_back(
    world: &World,
    d: &ReleaseDeployment,
    kind: TurnBack,
    reason: &str,
    failures: Vec<FailedTarget>,
    now_ms: i64,
    settings: Settings,
) -> Vec<Append> {
    let why = match kind {
        TurnBack::Failed => format!("release {} failed: {reason}", d.started.tag),
        TurnBack::Reverted => format!("release {} reverted: {reason}", d.started.tag),
        TurnBack::RolledBack => format!("release {} rolled back", d.started.tag),
    };
    let mut members = Vec::new();
    for m in &d.started.members {
        // The definition the release replaced, recorded again.
        let mut events: Vec<Event> = m
            .replaces
            .iter()
            .map(|spec| Event::ServiceDefined {
                spec: spec.clone(),
                source: Some(format!("release {} turned back", d.started.tag)),
            })
            .collect();
        let running =
            m.deployment_id
                .as_deref()
                .and_then(|id| match standing(world, &m.service, id) {
                    Standing::Running(dep) if dep.reverting.is_none() => Some(dep),
                    _ => None,
                });
        if let (Some(dep), Some(state)) = (running, world.services.get(&m.service)) {
            events.extend(rolling::stop_batch(state, dep, "its release turned back"));
            let choice = policy::turn_back(Cause::Abort, dep.into());
            events.push(policy::event(choice, dep, why.clone(), now_ms));
        }
        if !events.is_empty() {
            members.push((m.service.clone(), events));
        }
    }
    let failed = Event::ReleaseDeployFailed(Failed {
        deployment_id: d.started.deployment_id.clone(),
        tag: d.started.tag.clone(),
        environment: d.started.environment.clone(),
        failures,
        reverted: kind != TurnBack::Failed,
        rolled_back: kind == TurnBack::RolledBack,
        reason: why,
        at_ms: now_ms,
    });
    grouped(world, d, vec![failed], members, "back", now_ms, settings)
}

fn releases(events: Vec<Event>) -> Append {
    Append {
        stream: RELEASES_STREAM.to_owned(),
        events,
    }
}

/// `lead` in `_releases` and each member's `events`, then what each
/// member of `d` decides on the state they make, as one transaction; every
/// `RouteChanged` among them tagged as one switch, so that each router
/// applies them in one swap of its table.
fn grouped(
    world: &World,
    d: &ReleaseDeployment,
    lead: Vec<Event>,
    members: Vec<(String, Vec<Event>)>,
    suffix: &str,
    now_ms: i64,
    settings: Settings,
) -> Vec<Append> {
    let mut scratch = world.clone();
    fold(&mut scratch, RELEASES_STREAM, &lead, now_ms);
    let mut appends = vec![releases(lead)];
    for (service, events) in members {
        fold(&mut scratch, &service, &events, now_ms);
        appends.push(Append {
            stream: service,
            events,
        });
    }
    for (m, _) in d.deploying() {
        let more = crate::planner::react(&scratch, &m.service, now_ms, settings);
        fold(&mut scratch, &m.service, &more, now_ms);
        match appends.iter_mut().find(|a| a.stream == m.service) {
            Some(a) => a.events.extend(more),
            None if !more.is_empty() => appends.push(Append {
                stream: m.service.clone(),
                events: more,
            }),
            None => {}
        }
    }
    let changes = appends
        .iter()
        .flat_map(|a| &a.events)
        .filter(|e| matches!(e, Event::RouteChanged { .. }))
        .count() as u32;
    let id = format!("{}.{suffix}", d.started.deployment_id);
    for e in appends.iter_mut().flat_map(|a| a.events.iter_mut()) {
        if let Event::RouteChanged { switch, .. } = e {
            *switch = Some(RouteSwitch {
                id: id.clone(),
                changes,
            });
        }
    }
    appends
}

/// Fold `events` of `stream` into `world` as if recorded at `now_ms`.
fn fold(world: &mut World, stream: &str, events: &[Event], now_ms: i64) {
    for event in events {
        world.apply(&EventEnvelope {
            id: String::new(),
            position: world.position,
            stream: stream.to_owned(),
            version: 0,
            schema_version: crate::event::SCHEMA_VERSION,
            recorded_at_ms: now_ms,
            meta: Meta::default(),
            event: event.clone(),
        });
    }
}
