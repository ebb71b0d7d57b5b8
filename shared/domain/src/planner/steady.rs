//! Keeping a service steady: the routing table that matches its healthy
//! replicas, replicas that drained are stopped, the declared number of
//! replicas of the serving image, and placement on live hosts.

use crate::event::Event;
use crate::limits::MAX_REPLICAS;
use crate::planner::decide::Settings;
use crate::planner::ids;
use crate::planner::state::{Phase, Replica, ServiceState, World};
use crate::spec::ServiceSpec;

/// Declared replicas that serve or may serve: not being retired, not
/// exited, not spawned by an operator.
pub(crate) fn serving(state: &ServiceState) -> impl Iterator<Item = &Replica> {
    state
        .replicas
        .values()
        .filter(|r| r.phase.is_serving_candidate() && !r.spawned && !r.retiring)
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
    let Some(host) = place(world, &spec.name, &[], 1).into_iter().next() else {
        return Vec::new();
    };
    ids::next_replica_ids(world, state, spec, 1)
        .into_iter()
        .map(|replica| start_request(spec, image, &replica, host.clone(), None))
        .collect()
}

/// Replicas out of rotation whose drain finished (or timed out) are stopped.
pub(crate) fn stop_drained(
    world: &World,
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
            world.drained(r)
                || r.drain_since_ms
                    .is_some_and(|t| now_ms >= t + settings.drain_timeout_ms)
        })
        .map(|r| {
            let why = if world.drained(r) {
                "drained"
            } else {
                "drain timed out"
            };
            stop_request(spec, r, format!("out of rotation and {why}"))
        })
        .collect()
}

/// Instances an operator stopped that are not in rotation are stopped now
/// (those in rotation drain first).
pub(crate) fn stop_retired(state: &ServiceState, spec: &ServiceSpec) -> Vec<Event> {
    state
        .replicas
        .values()
        .filter(|r| r.retiring && !state.is_routed(&r.id))
        .filter(|r| {
            matches!(
                r.phase,
                Phase::Requested | Phase::Running | Phase::Unhealthy | Phase::Healthy
            )
        })
        .map(|r| stop_request(spec, r, "stopped by an operator".into()))
        .collect()
}

/// Hosts for `count` new replicas of `service`, among the available ones
/// (live and not suspect): spread first, so that no
/// live host gets a second replica of the service while another live host
/// with room has fewer; among those, the host running the fewest replicas
/// in all; then by host id, so the choice is the same on every replay.
/// Replicas named in `leaving` (retired by the same decision) do not count.
/// Fewer hosts than `count` when the hosts have no more room, and never
/// more than [`MAX_REPLICAS`] (a spec recorded before the bounds may ask for
/// more).
pub(crate) fn place(world: &World, service: &str, leaving: &[String], count: usize) -> Vec<String> {
    // (replicas of the service, replicas in all, capacity, host id)
    let mut load: Vec<(u32, u32, u32, String)> = world
        .hosts
        .iter()
        .filter(|(_, h)| h.available())
        .map(|(id, h)| {
            let mut mine = 0;
            let mut all = 0;
            for (name, s) in &world.services {
                for r in s.replicas.values() {
                    if &r.host != id || r.phase == Phase::Exited {
                        continue;
                    }
                    all += 1;
                    if name == service && !leaving.contains(&r.id) {
                        mine += 1;
                    }
                }
            }
            (mine, all, h.capacity, id.clone())
        })
        .collect();
    let mut out = Vec::new();
    for _ in 0..count.min(MAX_REPLICAS as usize) {
        load.sort();
        let Some(slot) = load.iter_mut().find(|(_, all, cap, _)| all < cap) else {
            break;
        };
        slot.0 += 1;
        slot.1 += 1;
        out.push(slot.3.clone());
    }
    out
}

/// How many hosts are live, and how many more replicas they have room for
/// in all: the numbers a placement that fell short reports.
pub(crate) fn room(world: &World) -> (usize, u64) {
    let mut live = 0;
    let mut free = 0u64;
    for (id, h) in world.hosts.iter().filter(|(_, h)| h.live) {
        live += 1;
        let used = world
            .services
            .values()
            .flat_map(|s| s.replicas.values())
            .filter(|r| &r.host == id && r.phase != Phase::Exited)
            .count() as u64;
        free += u64::from(h.capacity).saturating_sub(used);
    }
    (live, free)
}

/// Why `needed` new replicas could not be placed, with the numbers.
pub(crate) fn no_room(world: &World, needed: usize) -> String {
    let (live, free) = room(world);
    if live == 0 {
        return "no live executor host to place new replicas on".to_owned();
    }
    format!(
        "not enough capacity: {needed} new replica(s) needed, room for {free} on {live} live host(s); \
         start another executor or raise --capacity"
    )
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
        spawned: false,
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
