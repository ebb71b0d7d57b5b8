//! The rollout commands: start, pause, resume, cancel and rollback-all,
//! each legal only in some states (see [`legal`]); an illegal one is
//! rejected as [`RejectKind::IllegalState`], naming the legal ones.

use crate::command::{RejectKind, Rejection};
use crate::event::{Event, ROLLOUTS_STREAM};
use crate::limits::{shown, MAX_ROLLOUT_TARGETS};
use crate::planner::decide::defined;
use crate::planner::{Append, Decision, World};
use crate::rollout::state::{legal, Rollout};
use crate::rollout::view::{record, took_image};
use crate::rollout::waves::{split, DEFAULT_WAVES};
use crate::rollout::{RolloutControl, RolloutStart, RolloutTarget, RolloutWave};
use crate::spec::{is_valid_label, LABEL_RULE};

/// How long each wave bakes when the command does not say.
pub const DEFAULT_WAVE_BAKE_SECS: u64 = 60;

/// A rejection of `op` (as `mt rollout` names it) in the rollout's state,
/// naming the legal operations.
fn illegal(last: Option<&Rollout>, op: &str) -> Decision {
    let state = last.map(|r| r.state);
    let legal = legal(state);
    let now = match legal {
        [] => "none: wait for the rollback to finish".to_owned(),
        ops => ops.join(", "),
    };
    let what = match last {
        Some(r) => format!(
            "rollout {} (image {}) is {}",
            r.id,
            r.image,
            r.state.as_str()
        ),
        None => "there is no rollout (idle)".to_owned(),
    };
    Decision::Reject(Rejection::new(
        RejectKind::IllegalState,
        format!("{what}: `{op}` is not legal now; legal: {now}"),
    ))
}

fn rollout_append(event: Event) -> Vec<Append> {
    vec![Append {
        stream: ROLLOUTS_STREAM.to_owned(),
        events: vec![event],
    }]
}

fn accept(appends: Vec<Append>, message: String) -> Decision {
    Decision::Accept {
        appends,
        deployment_id: None,
        message,
    }
}

/// The services `c` chooses, in name order, or why it chooses none.
fn chosen<'w>(world: &'w World, c: &RolloutStart) -> Result<(Vec<&'w str>, String), Rejection> {
    let (mut names, selector): (Vec<&str>, String) = match (&c.select, c.services.is_empty()) {
        (Some(_), false) => {
            return Err(Rejection::invalid("give `select` or `services`, not both"))
        }
        (None, true) => {
            return Err(Rejection::invalid(
                "select: give `select` (key=value) or `services` (the services to roll out to)",
            ))
        }
        (Some(select), true) => {
            let Some((key, value)) = select
                .split_once('=')
                .filter(|(k, v)| is_valid_label(k) && is_valid_label(v))
            else {
                return Err(Rejection::invalid(format!(
                    "select: `{}` is not key=value; key and value {LABEL_RULE}",
                    shown(select)
                )));
            };
            let names = world
                .services
                .iter()
                .filter_map(|(name, s)| s.spec.as_ref().map(|spec| (name, spec)))
                .filter(|(_, spec)| spec.labels.get(key).map(String::as_str) == Some(value))
                .map(|(name, _)| name.as_str())
                .collect();
            (names, format!("{key}={value}"))
        }
        (None, false) => {
            let mut names = Vec::new();
            for name in &c.services {
                let (_, spec) = defined(world, name)?;
                if names.contains(&spec.name.as_str()) {
                    return Err(Rejection::invalid(format!(
                        "services: `{name}` is named twice"
                    )));
                }
                names.push(spec.name.as_str());
            }
            names.sort_unstable();
            (names.clone(), names.join(","))
        }
    };
    if let Some(env) = &c.environment {
        names.retain(|name| {
            world.services[*name]
                .spec
                .as_ref()
                .is_some_and(|spec| spec.route.environment() == env)
        });
    }
    if names.is_empty() {
        let env = c
            .environment
            .as_ref()
            .map(|e| format!(" in environment {}", shown(e)))
            .unwrap_or_default();
        return Err(Rejection::new(
            RejectKind::NothingToDo,
            format!("no service matches {selector}{env}: nothing to roll out"),
        ));
    }
    Ok((names, selector))
}

/// `rollout_start`: the targets, their waves and previous images, fixed now.
pub fn start(world: &World, c: &RolloutStart, rollout_id: &str, now_ms: i64) -> Decision {
    if world.rollouts.active().is_some() {
        return illegal(world.rollouts.last.as_ref(), "start");
    }
    if c.image.trim().is_empty() {
        return Decision::Reject(Rejection::invalid("image must not be empty"));
    }
    let (names, selector) = match chosen(world, c) {
        Ok(found) => found,
        Err(rejection) => return Decision::Reject(rejection),
    };
    let mut targets = Vec::new();
    let mut on_image = Vec::new();
    for name in names {
        let s = &world.services[name];
        if let Some(spec) = &s.spec {
            if let Some(field) =
                spec.audit
                    .missing("rollout_start", c.actor.as_deref(), c.reason.as_deref())
            {
                return Decision::Reject(Rejection::invalid(format!(
                    "{field}: `{name}` requires one (its audit block); give --{field}"
                )));
            }
        }
        if let Some(d) = &s.deployment {
            return Decision::Reject(Rejection::new(
                RejectKind::DeploymentInFlight,
                format!(
                    "deployment {} of {name} (image {}) is in flight; wait for it to finish",
                    d.id, d.image
                ),
            ));
        }
        if s.image.as_deref() == Some(c.image.as_str()) {
            on_image.push(name);
        } else {
            targets.push(RolloutTarget {
                service: name.to_owned(),
                previous_image: s.image.clone(),
            });
        }
    }
    if targets.is_empty() {
        return Decision::Reject(Rejection::new(
            RejectKind::NothingToDo,
            format!(
                "every service of {selector} already runs {}: nothing to roll out",
                shown(&c.image)
            ),
        ));
    }
    if targets.len() > MAX_ROLLOUT_TARGETS {
        return Decision::Reject(Rejection::invalid(format!(
            "{selector} matches {} services, at most {MAX_ROLLOUT_TARGETS} in one rollout",
            targets.len()
        )));
    }
    let percents = if c.waves.is_empty() {
        DEFAULT_WAVES.to_vec()
    } else {
        c.waves.clone()
    };
    let names: Vec<String> = targets.iter().map(|t| t.service.clone()).collect();
    let waves: Vec<RolloutWave> = split(&names, &percents)
        .into_iter()
        .map(|(percent, members)| RolloutWave { percent, members })
        .collect();
    let plan = plan_text(&waves, &on_image);
    if c.dry_run {
        return accept(
            Vec::new(),
            format!(
                "dry run: a rollout of {} to {} target(s) would run {} wave(s); nothing changed\n{plan}",
                c.image,
                targets.len(),
                waves.len()
            ),
        );
    }
    let message = format!(
        "rollout {rollout_id} of {} started: {} target(s) in {} wave(s)\n{plan}",
        c.image,
        targets.len(),
        waves.len()
    );
    let event = Event::RolloutStarted {
        rollout_id: rollout_id.to_owned(),
        image: c.image.clone(),
        selector,
        targets,
        waves,
        wave_bake_secs: c.wave_bake_secs.unwrap_or(DEFAULT_WAVE_BAKE_SECS),
        at_ms: now_ms,
    };
    accept(rollout_append(event), message)
}

fn plan_text(waves: &[RolloutWave], on_image: &[&str]) -> String {
    let mut lines: Vec<String> = waves
        .iter()
        .enumerate()
        .map(|(i, w)| {
            format!(
                "wave {} ({}%, {} target(s)): {}",
                i + 1,
                w.percent,
                w.members.len(),
                w.members.join(", ")
            )
        })
        .collect();
    if !on_image.is_empty() {
        lines.push(format!(
            "left out, already on the image: {}",
            on_image.join(", ")
        ));
    }
    lines.join("\n")
}

/// The name `mt rollout` gives an operation.
fn op_name(verb: &str) -> &str {
    match verb {
        "rollout_rollback_all" => "rollback-all",
        other => other.strip_prefix("rollout_").unwrap_or(other),
    }
}

/// `rollout_pause`, `rollout_resume`, `rollout_cancel`, `rollout_rollback_all`.
pub fn control(world: &World, verb: &str, c: &RolloutControl, now_ms: i64) -> Decision {
    let op = op_name(verb);
    if c.retry_failed && op != "resume" {
        return Decision::Reject(Rejection::invalid(format!(
            "retry_failed: only `resume` takes it, not `{op}`"
        )));
    }
    let last = world.rollouts.last.as_ref();
    let Some(r) = last.filter(|r| r.legal().contains(&op)) else {
        return illegal(last, op);
    };
    let id = r.id.clone();
    let (event, message) = match op {
        "pause" => (
            Event::RolloutPaused {
                rollout_id: id.clone(),
                wave: r.wave,
                failed: Vec::new(),
                by_operator: true,
            },
            format!("rollout {id} paused at wave {}", r.wave),
        ),
        "resume" => {
            let since = r.paused.as_ref().map_or(now_ms, |(at, _)| *at);
            let retried = r.targets.values().filter(|t| t.failure.is_some()).count();
            let what = if c.retry_failed {
                format!("; {retried} failed target(s) deployed again first")
            } else {
                String::new()
            };
            (
                Event::RolloutResumed {
                    rollout_id: id.clone(),
                    retry_failed: c.retry_failed,
                    paused_ms: now_ms.saturating_sub(since).max(0),
                },
                format!("rollout {id} resumed at wave {}{what}", r.wave),
            )
        }
        "cancel" => (
            Event::RolloutCancelled {
                rollout_id: id.clone(),
            },
            format!("rollout {id} cancelled; the new image stays where it succeeded"),
        ),
        _ => {
            let targets = rollback_targets(world, r);
            let message = format!(
                "rollout {id} rolling back {} target(s) to their previous image",
                targets.len()
            );
            (
                Event::RolloutRollbackStarted {
                    rollout_id: id.clone(),
                    targets,
                },
                message,
            )
        }
    };
    accept(rollout_append(event), message)
}

/// The targets `rollback_all` takes back: those the rollout deployed whose
/// deployment took the new image or is still in flight (it may yet);
/// those reverted by their own deployment are left alone.
fn rollback_targets(world: &World, r: &Rollout) -> Vec<String> {
    let mut out = Vec::new();
    for wave in &r.waves {
        for service in &wave.members {
            let Some(t) = r.targets.get(service) else {
                continue;
            };
            if t.overridden.is_some() {
                continue;
            }
            let in_flight_or_took = t.deployment_id.as_deref().is_some_and(|id| {
                took_image(world, service, t)
                    || record(world, service, id).is_some_and(|rec| !rec.outcome.is_final())
            });
            if in_flight_or_took {
                out.push(service.clone());
            }
        }
    }
    out
}

/// The deployment of a target of the rollout in flight: rejected unless
/// the command overrides the rollout, then recorded. `Ok(None)` when the
/// service is no target of a rollout in flight.
pub fn guard_deploy(
    world: &World,
    service: &str,
    override_rollout: bool,
    deployment_id: &str,
) -> Result<Option<Append>, Rejection> {
    let Some(r) = world.rollouts.active() else {
        return Ok(None);
    };
    let Some(t) = r.targets.get(service).filter(|t| t.overridden.is_none()) else {
        return Ok(None);
    };
    if !override_rollout {
        let state = crate::rollout::view::target_state(world, service, t).0;
        return Err(Rejection::new(
            RejectKind::RolloutInFlight,
            format!(
                "{service} is a target of rollout {} (image {}, {}; this target {}): steer the rollout with mt rollout, or deploy with --override-rollout",
                r.id,
                r.image,
                r.state.as_str(),
                state.as_str()
            ),
        ));
    }
    Ok(Some(Append {
        stream: ROLLOUTS_STREAM.to_owned(),
        events: vec![Event::RolloutTargetOverridden {
            rollout_id: r.id.clone(),
            service: service.to_owned(),
            deployment_id: deployment_id.to_owned(),
        }],
    }))
}
