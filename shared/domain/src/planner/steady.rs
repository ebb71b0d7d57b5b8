//! Keeping a service steady: the routing table that matches its healthy
//! replicas, replicas that drained are stopped, the declared number of
//! replicas of the serving image, and placement on live hosts.

use crate::event::{Backend, Event};
use crate::planner::decide::Settings;
use crate::planner::state::{Phase, Replica, ServiceState, World};
use crate::spec::ServiceSpec;

/// Replicas that serve or may serve: not being retired, not exited.
pub(crate) fn serving(state: &ServiceState) -> impl Iterator<Item = &Replica> {
    state
        .replicas
        .values()
        .filter(|r| r.phase.is_serving_candidate())
}

/// Outside a deployment: keep the declared number of replicas of the
/// serving image, one replacement at a time.
pub(crate) fn reconcile(world: &World, state: &ServiceState, spec: &ServiceSpec) -> Vec<Event> {
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
pub(crate) fn route_change(state: &ServiceState, spec: &ServiceSpec) -> Option<Event> {
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
    let eligible = |r: &&Replica| {
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
    (backends != state.routes || spec.route != state.route).then(|| Event::RouteChanged {
        service: spec.name.clone(),
        backends,
        route: spec.route.clone(),
    })
}

/// Replicas out of rotation whose drain finished (or timed out) are stopped.
pub(crate) fn stop_drained(
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
pub(crate) fn place(world: &World, count: usize) -> Vec<String> {
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

pub(crate) fn start_request(
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

pub(crate) fn stop_request(spec: &ServiceSpec, r: &Replica, reason: String) -> Event {
    Event::ReplicaStopRequested {
        replica: r.id.clone(),
        service: spec.name.clone(),
        host: r.host.clone(),
        reason,
    }
}
