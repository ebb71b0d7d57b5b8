//! Manual traffic control: weights, an atomic route from some instances
//! to others, extra named instances, and stopping one instance.
//!
//! While a deployment is in flight its strategy owns the weights and the
//! lifecycle of the declared replicas, so these commands are then limited
//! to instances an operator spawned.

use std::collections::BTreeMap;

use crate::command::{RejectKind, Rejection, Spawn, Stop, Weight};
use crate::event::Event;
use crate::planner::decide::{defined, reject, Append, Decision};
use crate::planner::ids;
use crate::planner::state::{Replica, ServiceState, World};
use crate::planner::steady::{no_room, place};
use crate::spec::{is_valid_name, ServiceSpec};

/// Highest weight an operator can give.
pub use crate::limits::MAX_WEIGHT;

fn accept(service: &str, events: Vec<Event>, message: String) -> Decision {
    Decision::Accept {
        appends: vec![Append {
            stream: service.to_owned(),
            events,
        }],
        deployment_id: None,
        message,
    }
}

/// Instances an operator can address: started and not stopped.
fn live(state: &ServiceState) -> impl Iterator<Item = &Replica> {
    state
        .replicas
        .values()
        .filter(|r| r.phase.is_serving_candidate() && !r.retiring)
}

fn known_instances(state: &ServiceState) -> String {
    let ids: Vec<&str> = live(state).map(|r| r.id.as_str()).collect();
    if ids.is_empty() {
        "none".into()
    } else {
        ids.join(", ")
    }
}

/// The live instance `id`, or why it cannot be addressed.
fn instance<'s>(
    state: &'s ServiceState,
    spec: &ServiceSpec,
    id: &str,
) -> Result<&'s Replica, Rejection> {
    live(state).find(|r| r.id == id).ok_or_else(|| {
        Rejection::new(
            RejectKind::UnknownInstance,
            format!(
                "{} has no instance `{id}`; instances: {}",
                spec.name,
                known_instances(state)
            ),
        )
    })
}

/// Why the strategy of a deployment in flight owns `r`, if it does.
fn owned_by_deployment(state: &ServiceState, r: &Replica) -> Option<Rejection> {
    let d = state.deployment.as_ref()?;
    (!r.spawned).then(|| {
        Rejection::new(RejectKind::DeploymentInFlight, format!(
            "deployment {} sets the weights and lifecycle of {}'s declared replicas while it runs; wait for it, or mt abort it (spawned instances can be changed)",
            d.id, r.id
        ))
    })
}

pub(crate) fn weight(world: &World, c: &Weight) -> Decision {
    let (state, spec) = match defined(world, &c.service) {
        Ok(found) => found,
        Err(reason) => return Decision::Reject(reason),
    };
    if c.weight > MAX_WEIGHT {
        return reject(
            RejectKind::Invalid,
            format!(
                "weight {} is over {MAX_WEIGHT}: give 0 (no traffic, kept running) to {MAX_WEIGHT}",
                c.weight
            ),
        );
    }
    let r = match instance(state, spec, &c.instance) {
        Ok(r) => r,
        Err(reason) => return Decision::Reject(reason),
    };
    if let Some(reason) = owned_by_deployment(state, r) {
        return Decision::Reject(reason);
    }
    let weights = BTreeMap::from([(r.id.clone(), c.weight)]);
    accept(
        &c.service,
        vec![Event::WeightsSet {
            service: c.service.clone(),
            weights,
        }],
        format!("{}:{} weight {}", c.service, r.id, c.weight),
    )
}

/// The instances `name` stands for: the instance of that id, else every
/// instance running the image of that name.
fn resolve<'s>(
    state: &'s ServiceState,
    spec: &ServiceSpec,
    name: &str,
) -> Result<Vec<&'s Replica>, Rejection> {
    if let Some(r) = live(state).find(|r| r.id == name) {
        return Ok(vec![r]);
    }
    let by_image: Vec<&Replica> = live(state).filter(|r| r.image == name).collect();
    if by_image.is_empty() {
        return Err(Rejection::new(
            RejectKind::UnknownInstance,
            format!(
                "{} has no instance or image `{name}`; instances: {}",
                spec.name,
                known_instances(state)
            ),
        ));
    }
    Ok(by_image)
}

pub(crate) fn route(world: &World, c: &crate::command::Route) -> Decision {
    let (state, spec) = match defined(world, &c.service) {
        Ok(found) => found,
        Err(reason) => return Decision::Reject(reason),
    };
    let (from, to) = match (resolve(state, spec, &c.from), resolve(state, spec, &c.to)) {
        (Ok(from), Ok(to)) => (from, to),
        (Err(reason), _) | (_, Err(reason)) => return Decision::Reject(reason),
    };
    if from.iter().any(|a| to.iter().any(|b| a.id == b.id)) {
        return reject(
            RejectKind::Invalid,
            format!("`{}` and `{}` name the same instance", c.from, c.to),
        );
    }
    if let Some(reason) = from
        .iter()
        .chain(&to)
        .find_map(|r| owned_by_deployment(state, r))
    {
        return Decision::Reject(reason);
    }
    let weights: BTreeMap<String, u32> = from
        .iter()
        .map(|r| (r.id.clone(), 0))
        .chain(to.iter().map(|r| (r.id.clone(), MAX_WEIGHT)))
        .collect();
    accept(
        &c.service,
        vec![Event::WeightsSet {
            service: c.service.clone(),
            weights,
        }],
        format!("{}: all traffic from {} to {}", c.service, c.from, c.to),
    )
}

pub(crate) fn spawn(world: &World, c: &Spawn) -> Decision {
    let (state, spec) = match defined(world, &c.service) {
        Ok(found) => found,
        Err(reason) => return Decision::Reject(reason),
    };
    if !is_valid_name(&c.id) {
        return reject(
            RejectKind::Invalid,
            format!(
            "instance id `{}` must be 1-63 characters of a-z, 0-9 and -, starting with a letter",
            c.id
        ),
        );
    }
    if let Some(reason) = id_taken(world, &c.id) {
        return Decision::Reject(reason);
    }
    let Some(image) = c.image.clone().or_else(|| state.image.clone()) else {
        return reject(
            RejectKind::Invalid,
            format!(
                "{} has no serving image yet; give one with --image",
                spec.name
            ),
        );
    };
    if image.trim().is_empty() {
        return Decision::Reject(Rejection::invalid("image must not be empty"));
    }
    let Some(host) = place(world, &spec.name, &[], 1).into_iter().next() else {
        return reject(RejectKind::NoCapacity, no_room(world, 1));
    };
    let mut event = crate::planner::steady::start_request(spec, &image, &c.id, host, None);
    if let Event::ReplicaStartRequested { spawned, .. } = &mut event {
        *spawned = true;
    }
    accept(
        &c.service,
        vec![event],
        format!(
            "{}:{} starting with image {image}, weight 0 (reach it directly as {}.{}.<router domain>)",
            spec.name,
            c.id,
            c.id,
            spec.route.host(&spec.name)
        ),
    )
}

/// Why a new instance may not be called `id`: a replica of some service
/// holds it, or a defined service numbers its declared replicas that way.
fn id_taken(world: &World, id: &str) -> Option<Rejection> {
    if let Some(service) = ids::holder(world, id) {
        return Some(Rejection::invalid(format!(
            "id `{id}` is in use by {service}:{id}; replica ids are unique across the cluster: choose another id (or mt stop {service}:{id} first)"
        )));
    }
    ids::numbering_service(world, id).map(|service| {
        Rejection::invalid(format!(
            "id `{id}` has the form {service}-<number>, kept for the declared replicas of {service}; choose another id"
        ))
    })
}

pub(crate) fn stop(world: &World, c: &Stop) -> Decision {
    let (state, spec) = match defined(world, &c.service) {
        Ok(found) => found,
        Err(reason) => return Decision::Reject(reason),
    };
    let r = match instance(state, spec, &c.instance) {
        Ok(r) => r,
        Err(reason) => return Decision::Reject(reason),
    };
    if let Some(reason) = owned_by_deployment(state, r) {
        return Decision::Reject(reason);
    }
    let message = if r.spawned {
        format!("{}:{} draining, then stopping", spec.name, r.id)
    } else {
        format!(
            "{}:{} draining, then stopping; a new replica replaces it to keep {} replicas",
            spec.name, r.id, spec.replicas
        )
    };
    accept(
        &c.service,
        vec![Event::ReplicaRetireRequested {
            replica: r.id.clone(),
            service: c.service.clone(),
        }],
        message,
    )
}
