//! Decisions: what the planner does about a command, and what it does next
//! given the state of a service and the time.
//!
//! [`handle`] turns a command into events or a rejection. [`react`] looks at
//! one service and returns the next events of the deployment in flight (or
//! of keeping the service at its declared size): it is level-triggered, so a
//! planner restarted from the log simply calls it again and carries on.

use crate::command::{Apply, Command, Deploy, Rollback};
use crate::event::{Backend, Event};
use crate::planner::state::{Batch, Deployment, Phase, ServiceState, World};
use crate::spec::{ServiceSpec, Strategy};

/// Settings of the planner that are not part of any service's spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// How long to wait for a router's drained fact before stopping a replica anyway.
    pub drain_timeout_ms: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            drain_timeout_ms: 30_000,
        }
    }
}

/// Events to append to one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Append {
    /// Stream (service name or hosts).
    pub stream: String,
    /// Events, in order.
    pub events: Vec<Event>,
}

/// What a command decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Append these and reply accepted.
    Accept {
        /// Appends, one per stream.
        appends: Vec<Append>,
        /// Deployment started, if any.
        deployment_id: Option<String>,
        /// What was done, for the reply.
        message: String,
    },
    /// Reply rejected; nothing changes.
    Reject(String),
}

/// Decide about a command. `deployment_id` is the id a deployment started by
/// this command will have; `now_ms` is the time the command is handled.
pub fn handle(world: &World, command: &Command, deployment_id: &str, now_ms: i64) -> Decision {
    match command {
        Command::Apply(apply) => handle_apply(world, apply),
        Command::Deploy(deploy) => handle_deploy(world, deploy, deployment_id, now_ms),
        Command::Rollback(rollback) => handle_rollback(world, rollback, deployment_id, now_ms),
    }
}

fn handle_apply(world: &World, apply: &Apply) -> Decision {
    if apply.services.is_empty() {
        return Decision::Reject("the config defines no services".into());
    }
    let mut errors: Vec<String> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for spec in &apply.services {
        if !seen.insert(spec.name.as_str()) {
            errors.push(format!("services.{}: defined twice", spec.name));
        }
        errors.extend(spec.validate().iter().map(ToString::to_string));
    }
    if !errors.is_empty() {
        return Decision::Reject(format!(
            "nothing applied; the config has {} error(s):\n{}",
            errors.len(),
            errors.join("\n")
        ));
    }
    let changed: Vec<&ServiceSpec> = apply
        .services
        .iter()
        .filter(|spec| world.services.get(&spec.name).and_then(|s| s.spec.as_ref()) != Some(spec))
        .collect();
    let appends = changed
        .iter()
        .map(|spec| Append {
            stream: spec.name.clone(),
            events: vec![Event::ServiceDefined {
                spec: (*spec).clone(),
                source: apply.source.clone(),
            }],
        })
        .collect();
    let names: Vec<&str> = changed.iter().map(|s| s.name.as_str()).collect();
    let message = if names.is_empty() {
        "no change: every service is already defined this way".to_owned()
    } else {
        format!("applied {}", names.join(", "))
    };
    Decision::Accept {
        appends,
        deployment_id: None,
        message,
    }
}

/// The service's state and spec, or the reason a command about it is rejected.
fn deployable<'w>(
    world: &'w World,
    service: &str,
) -> Result<(&'w ServiceState, &'w ServiceSpec), String> {
    let Some((state, spec)) = world
        .services
        .get(service)
        .and_then(|s| s.spec.as_ref().map(|spec| (s, spec)))
    else {
        let known: Vec<&str> = world
            .services
            .iter()
            .filter(|(_, s)| s.spec.is_some())
            .map(|(n, _)| n.as_str())
            .collect();
        return Err(format!(
            "unknown service `{service}`: apply a config that defines it first (mt apply -f mentat.yaml); known services: {}",
            if known.is_empty() { "none".to_owned() } else { known.join(", ") }
        ));
    };
    if let Some(d) = &state.deployment {
        return Err(format!(
            "deployment {} of {service} (image {}) is in flight; wait for it to finish",
            d.id, d.image
        ));
    }
    if !world.hosts.values().any(|h| h.live) {
        return Err(
            "no executor host is alive to run replicas: start mentat-executor (mt up starts one)"
                .into(),
        );
    }
    Ok((state, spec))
}

fn handle_deploy(world: &World, deploy: &Deploy, deployment_id: &str, now_ms: i64) -> Decision {
    let (state, spec) = match deployable(world, &deploy.service) {
        Ok(found) => found,
        Err(reason) => return Decision::Reject(reason),
    };
    if deploy.image.trim().is_empty() {
        return Decision::Reject("image must not be empty".into());
    }
    let strategy = deploy.strategy.unwrap_or(spec.deploy.strategy);
    if strategy != Strategy::Rolling {
        return Decision::Reject(format!(
            "strategy {strategy} is not available yet; deploy with --strategy rolling"
        ));
    }
    let up_to_date = state.image.as_deref() == Some(deploy.image.as_str())
        && serving(state).filter(|r| r.image == deploy.image).count() as u32 >= spec.replicas;
    if up_to_date {
        return Decision::Reject(format!(
            "{} already runs image {} on all {} replicas; nothing to do",
            deploy.service, deploy.image, spec.replicas
        ));
    }
    start_deployment(state, spec, &deploy.image, false, deployment_id, now_ms)
}

fn handle_rollback(
    world: &World,
    rollback: &Rollback,
    deployment_id: &str,
    now_ms: i64,
) -> Decision {
    let (state, spec) = match deployable(world, &rollback.service) {
        Ok(found) => found,
        Err(reason) => return Decision::Reject(reason),
    };
    let Some(previous) = state.previous_image() else {
        return Decision::Reject(format!(
            "{} has no previous image in its history to roll back to",
            rollback.service
        ));
    };
    start_deployment(state, spec, previous, true, deployment_id, now_ms)
}

fn start_deployment(
    state: &ServiceState,
    spec: &ServiceSpec,
    image: &str,
    rollback: bool,
    deployment_id: &str,
    now_ms: i64,
) -> Decision {
    let event = Event::DeploymentStarted {
        deployment_id: deployment_id.to_owned(),
        service: spec.name.clone(),
        image: image.to_owned(),
        previous_image: state.image.clone(),
        strategy: Strategy::Rolling,
        batch_size: spec.deploy.max_unavailable.max(1),
        replicas: spec.replicas,
        auto_revert: spec.deploy.auto_revert,
        rollback,
        at_ms: now_ms,
    };
    Decision::Accept {
        appends: vec![Append {
            stream: spec.name.clone(),
            events: vec![event],
        }],
        deployment_id: Some(deployment_id.to_owned()),
        message: format!(
            "{} of {} to {image} started",
            if rollback { "rollback" } else { "deployment" },
            spec.name
        ),
    }
}

/// Replicas that serve or may serve: not being retired, not exited.
fn serving(state: &ServiceState) -> impl Iterator<Item = &crate::planner::state::Replica> {
    state
        .replicas
        .values()
        .filter(|r| r.phase.is_serving_candidate())
}

/// The next events for `service` at `now_ms`. Empty when nothing is to be
/// done until another fact arrives or [`next_deadline`] passes.
pub fn react(world: &World, service: &str, now_ms: i64, settings: Settings) -> Vec<Event> {
    let Some(state) = world.services.get(service) else {
        return Vec::new();
    };
    let Some(spec) = state.spec.as_ref() else {
        return Vec::new();
    };
    let mut events = match &state.deployment {
        Some(d) => react_deployment(world, state, spec, d, now_ms),
        None => reconcile(world, state, spec),
    };
    if events.is_empty() {
        events.extend(route_change(state, spec));
    }
    if events.is_empty() {
        events.extend(stop_drained(state, spec, now_ms, settings));
    }
    events
}

/// The earliest time at which [`react`] may decide something without a new fact.
pub fn next_deadline(world: &World, service: &str, settings: Settings) -> Option<i64> {
    let state = world.services.get(service)?;
    let batch_deadline = state
        .deployment
        .as_ref()
        .and_then(|d| d.batch.as_ref())
        .filter(|b| !b.switched)
        .map(|b| b.deadline_ms);
    let drain_deadline = state
        .replicas
        .values()
        .filter(|r| r.phase == Phase::Draining)
        .filter_map(|r| r.drain_since_ms)
        .map(|t| t + settings.drain_timeout_ms)
        .min();
    [batch_deadline, drain_deadline].into_iter().flatten().min()
}

fn react_deployment(
    world: &World,
    state: &ServiceState,
    spec: &ServiceSpec,
    d: &Deployment,
    now_ms: i64,
) -> Vec<Event> {
    match &d.batch {
        None => next_batch(world, state, spec, d, now_ms),
        Some(batch) => react_batch(state, spec, d, batch, now_ms),
    }
}

fn next_batch(
    world: &World,
    state: &ServiceState,
    spec: &ServiceSpec,
    d: &Deployment,
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
    let mut old: Vec<&crate::planner::state::Replica> =
        serving(state).filter(|r| r.image != target).collect();
    // Retire replicas that serve no traffic first.
    old.sort_by_key(|r| (state.is_routed(&r.id), r.id.clone()));
    let current = serving(state).filter(|r| r.image == target).count() as u32;
    let need_new = d.replicas.saturating_sub(current);
    if need_new == 0 && old.is_empty() {
        return vec![finish(d, now_ms)];
    }
    let k = d.batch_size as usize;
    let count = (need_new as usize).min(k);
    let placements = place(world, count);
    if placements.len() < count {
        return fail_batch(
            state,
            d,
            "no live executor host to place new replicas on".into(),
            now_ms,
        );
    }
    let number = d.batches_started + 1;
    let mut seq = state.replica_seq;
    let mut events = Vec::new();
    let mut start = Vec::new();
    for host in placements {
        seq += 1;
        let replica = format!("{}-{seq}", spec.name);
        start.push(replica.clone());
        events.push(start_request(spec, target, &replica, host, Some(&d.id)));
    }
    let replace: Vec<String> = old.iter().take(k).map(|r| r.id.clone()).collect();
    events.insert(
        0,
        Event::BatchStarted {
            deployment_id: d.id.clone(),
            batch: number,
            image: target.to_owned(),
            start,
            replace,
            deadline_ms: now_ms + (spec.deploy.health_timeout_secs as i64) * 1000,
        },
    );
    events
}

fn react_batch(
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
        if healthy < batch.start.len() && now_ms >= batch.deadline_ms {
            let late: Vec<&str> = batch
                .start
                .iter()
                .filter(|id| replica(id).is_none_or(|r| r.phase != Phase::Healthy))
                .map(String::as_str)
                .collect();
            let reason = format!(
                "replica(s) {} ({}) not healthy within {}s",
                late.join(", "),
                batch.image,
                spec.deploy.health_timeout_secs
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
            if matches!(
                r.phase,
                Phase::Requested | Phase::Running | Phase::Unhealthy
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
        state
            .replicas
            .get(id)
            .is_none_or(|r| r.phase == Phase::Exited)
    });
    if events.is_empty() && done {
        events.push(Event::BatchCompleted {
            deployment_id: d.id.clone(),
            batch: batch.number,
        });
    }
    events
}

fn fail_batch(state: &ServiceState, d: &Deployment, reason: String, now_ms: i64) -> Vec<Event> {
    let spec_name = state
        .spec
        .as_ref()
        .map(|s| s.name.clone())
        .unwrap_or_default();
    let mut events: Vec<Event> = d
        .batch
        .iter()
        .flat_map(|b| b.start.iter())
        .filter_map(|id| state.replicas.get(id))
        .filter(|r| r.phase.is_serving_candidate())
        .map(|r| Event::ReplicaStopRequested {
            replica: r.id.clone(),
            service: spec_name.clone(),
            host: r.host.clone(),
            reason: "its batch failed".into(),
        })
        .collect();
    let event = if d.reverting.is_some() {
        Event::DeploymentFailed {
            deployment_id: d.id.clone(),
            reason: format!("revert failed: {reason}"),
            at_ms: now_ms,
        }
    } else if d.auto_revert && d.previous_image.is_some() {
        Event::DeploymentReverting {
            deployment_id: d.id.clone(),
            reason,
        }
    } else {
        let reason = if d.auto_revert {
            format!("{reason}; no previous image to revert to")
        } else {
            format!("{reason}; auto_revert is off, so nothing was rolled back")
        };
        Event::DeploymentFailed {
            deployment_id: d.id.clone(),
            reason,
            at_ms: now_ms,
        }
    };
    events.push(event);
    events
}

fn finish(d: &Deployment, now_ms: i64) -> Event {
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

/// Outside a deployment: keep the declared number of replicas of the
/// serving image, one replacement at a time.
fn reconcile(world: &World, state: &ServiceState, spec: &ServiceSpec) -> Vec<Event> {
    let Some(image) = state.image.as_deref() else {
        return Vec::new();
    };
    let alive = serving(state).filter(|r| r.image == image).count() as u32;
    let pending = serving(state).any(|r| matches!(r.phase, Phase::Requested | Phase::Running));
    if alive >= spec.replicas || pending {
        return Vec::new();
    }
    let Some(host) = place(world, 1).into_iter().next() else {
        return Vec::new();
    };
    let replica = format!("{}-{}", spec.name, state.replica_seq + 1);
    vec![start_request(spec, image, &replica, host, None)]
}

/// The routing table the service should have now, as a change if it differs.
fn route_change(state: &ServiceState, spec: &ServiceSpec) -> Option<Event> {
    let batch = state.deployment.as_ref().and_then(|d| d.batch.as_ref());
    let switching = batch.is_some_and(|b| {
        !b.switched
            && b.start.iter().all(|id| {
                state
                    .replicas
                    .get(id)
                    .is_some_and(|r| r.phase == Phase::Healthy)
            })
    });
    let eligible = |r: &&crate::planner::state::Replica| {
        if r.phase != Phase::Healthy || r.addr.is_none() {
            return false;
        }
        match batch {
            Some(b) if b.start.contains(&r.id) => b.switched || switching,
            Some(b) if b.replace.contains(&r.id) => !(b.switched || switching),
            _ => true,
        }
    };
    let backends: Vec<Backend> = state
        .replicas
        .values()
        .filter(eligible)
        .map(|r| Backend {
            replica: r.id.clone(),
            addr: r.addr.clone().unwrap_or_default(),
            image: r.image.clone(),
            weight: 100,
        })
        .collect();
    (backends != state.routes).then(|| Event::RouteChanged {
        service: spec.name.clone(),
        backends,
    })
}

/// Replicas out of rotation whose drain finished (or timed out) are stopped.
fn stop_drained(
    state: &ServiceState,
    spec: &ServiceSpec,
    now_ms: i64,
    settings: Settings,
) -> Vec<Event> {
    state
        .replicas
        .values()
        .filter(|r| r.phase == Phase::Draining)
        .filter(|r| {
            r.drained
                || r.drain_since_ms
                    .is_some_and(|t| now_ms >= t + settings.drain_timeout_ms)
        })
        .map(|r| {
            let why = if r.drained {
                "drained"
            } else {
                "drain timed out"
            };
            stop_request(spec, r, format!("out of rotation and {why}"))
        })
        .collect()
}

/// Hosts for `count` new replicas: live hosts with the fewest replicas first.
fn place(world: &World, count: usize) -> Vec<String> {
    let mut load: Vec<(u32, u32, String)> = world
        .hosts
        .iter()
        .filter(|(_, h)| h.live)
        .map(|(id, h)| {
            let used = world
                .services
                .values()
                .flat_map(|s| s.replicas.values())
                .filter(|r| &r.host == id && r.phase != Phase::Exited)
                .count() as u32;
            (used, h.capacity, id.clone())
        })
        .collect();
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        load.sort();
        let Some(slot) = load.iter_mut().find(|(used, cap, _)| used < cap) else {
            break;
        };
        slot.0 += 1;
        out.push(slot.2.clone());
    }
    out
}

fn start_request(
    spec: &ServiceSpec,
    image: &str,
    replica: &str,
    host: String,
    deployment_id: Option<&str>,
) -> Event {
    let sub = |s: &String| s.replace("{image}", image);
    let mut run = spec.run.clone();
    run.command = run.command.iter().map(sub).collect();
    run.args = run.args.iter().map(sub).collect();
    run.env = run.env.iter().map(|(k, v)| (k.clone(), sub(v))).collect();
    Event::ReplicaStartRequested {
        replica: replica.to_owned(),
        service: spec.name.clone(),
        host,
        image: image.to_owned(),
        run,
        health: spec.health.clone(),
        deployment_id: deployment_id.map(str::to_owned),
    }
}

fn stop_request(spec: &ServiceSpec, r: &crate::planner::state::Replica, reason: String) -> Event {
    Event::ReplicaStopRequested {
        replica: r.id.clone(),
        service: spec.name.clone(),
        host: r.host.clone(),
        reason,
    }
}
