//! The routing table a service should have: which instances are in
//! rotation and with what weight.
//!
//! - An instance is in rotation once it is healthy and has an address, and
//!   until it is retired, replaced by a batch that has switched, or
//!   unhealthy. A batch switches when all its new replicas are healthy
//!   (never while the deployment is held).
//! - Weights: a blue-green standby set has 0 (running, reachable directly,
//!   no weighted traffic); during a canary the canary replicas share exactly
//!   the step's percent and the others the rest; otherwise an operator's
//!   weight, else 100 for a declared replica and 0 for a spawned one.
//! - A replica on a suspect or lost host has weight 0, unless every
//!   replica with a weight is on such a host (see [`super::hosts`]).

use std::collections::{BTreeMap, BTreeSet};

use crate::event::{Backend, Event};
use crate::planner::state::{Deployment, Phase, Replica, ServiceState};
use crate::spec::{ServiceSpec, Strategy};

/// Weight of a declared replica nobody set a weight for.
pub const DEFAULT_WEIGHT: u32 = 100;

/// The routing table the service should have now, as a change if it
/// differs. `unavailable` names the suspect and lost hosts.
pub(crate) fn route_change(
    state: &ServiceState,
    spec: &ServiceSpec,
    unavailable: &BTreeSet<&str>,
) -> Option<Event> {
    let mut backends = desired(state);
    silence(state, &mut backends, unavailable);
    (backends != state.routes || spec.route != state.route).then(|| Event::RouteChanged {
        service: spec.name.clone(),
        backends,
        route: spec.route.clone(),
        switch: None,
    })
}

fn desired(state: &ServiceState) -> Vec<Backend> {
    let d = state.deployment.as_ref();
    let batch = d.and_then(|d| d.batch.as_ref());
    let held = d.is_some_and(|d| d.paused.is_some());
    let healthy = |id: &String| {
        state
            .replicas
            .get(id)
            .is_some_and(|r| r.phase == Phase::Healthy)
    };
    // A member of a release moves only when the release switches.
    let gated = d.is_some_and(|d| d.plan.release.is_some() && !d.released && d.reverting.is_none());
    let switching =
        !held && !gated && batch.is_some_and(|b| !b.switched && b.start.iter().all(healthy));
    let moved = batch.is_some_and(|b| b.switched || switching);
    let standby = d.is_some_and(on_standby);
    let eligible = |r: &&Replica| {
        if r.phase != Phase::Healthy || r.addr.is_none() || r.retiring {
            return false;
        }
        match batch {
            Some(b) if b.start.contains(&r.id) => moved,
            Some(b) if b.replace.contains(&r.id) => !moved || standby,
            _ => true,
        }
    };
    let routed: Vec<&Replica> = state.replicas.values().filter(eligible).collect();
    let canary = d.filter(|d| in_canary_phase(d));
    let canary_weights = canary.map(|d| {
        let n_canary = routed
            .iter()
            .filter(|r| d.canary.replicas.contains(&r.id))
            .count();
        let n_stable = routed
            .iter()
            .filter(|r| !r.spawned && !d.canary.replicas.contains(&r.id))
            .count();
        split(d.canary.percent, n_canary as u32, n_stable as u32)
    });
    routed
        .into_iter()
        .map(|r| {
            let weight = match (canary, canary_weights) {
                _ if standby && moved && batch.is_some_and(|b| b.replace.contains(&r.id)) => 0,
                (Some(d), Some((c, _))) if d.canary.replicas.contains(&r.id) => c,
                (Some(_), Some((_, s))) if !r.spawned => s,
                _ => operator_weight(state, r),
            };
            Backend {
                replica: r.id.clone(),
                addr: r.addr.clone().unwrap_or_default(),
                image: r.image.clone(),
                weight,
            }
        })
        .collect()
}

/// Weight 0 for the backends on `unavailable` hosts, unless no backend
/// with a weight would be left: then the table stays as it is (a router
/// with nothing to send to fails every request; a suspect host may still
/// serve).
fn silence(state: &ServiceState, backends: &mut [Backend], unavailable: &BTreeSet<&str>) {
    let off = |b: &Backend| {
        state
            .replicas
            .get(&b.replica)
            .is_some_and(|r| unavailable.contains(r.host.as_str()))
    };
    if !backends.iter().any(|b| b.weight > 0 && !off(b)) {
        return;
    }
    for b in backends.iter_mut() {
        if off(b) {
            b.weight = 0;
        }
    }
}

/// The weight an operator set, or the default for the kind of instance.
pub(crate) fn operator_weight(state: &ServiceState, r: &Replica) -> u32 {
    state
        .weights
        .get(&r.id)
        .copied()
        .unwrap_or(if r.spawned { 0 } else { DEFAULT_WEIGHT })
}

/// True while a blue-green deployment keeps the old set on standby.
fn on_standby(d: &Deployment) -> bool {
    d.strategy == Strategy::BlueGreen && d.reverting.is_none() && !d.standby_ended
}

/// True while a canary deployment decides the weights (before promotion).
pub(crate) fn in_canary_phase(d: &Deployment) -> bool {
    d.strategy == Strategy::Canary && d.reverting.is_none() && !d.canary.promoted
}

/// Per-replica weights `(canary, stable)` that give `n_canary` canary
/// replicas exactly `percent` of the traffic between them and `n_stable`
/// stable replicas the rest, reduced to the smallest integers.
pub fn split(percent: u32, n_canary: u32, n_stable: u32) -> (u32, u32) {
    let percent = percent.min(100);
    if n_canary == 0 || n_stable == 0 {
        // Nobody to share with: whoever is there takes what there is.
        return (if percent > 0 { DEFAULT_WEIGHT } else { 0 }, DEFAULT_WEIGHT);
    }
    // In u64, so no count of replicas overflows; a reduced weight that
    // still does not fit a u32 saturates.
    let canary = u64::from(percent) * u64::from(n_stable);
    let stable = u64::from(100 - percent) * u64::from(n_canary);
    let g = gcd(canary, stable).max(1);
    let weight = |w: u64| u32::try_from(w / g).unwrap_or(u32::MAX);
    (weight(canary), weight(stable))
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Share of each routed instance in the service's weighted traffic, in
/// hundredths of a percent (basis points).
pub fn shares(routes: &[Backend]) -> BTreeMap<String, u32> {
    let total: u64 = routes.iter().map(|b| u64::from(b.weight)).sum();
    routes
        .iter()
        .map(|b| {
            let share = (u64::from(b.weight) * 10_000)
                .checked_div(total)
                .unwrap_or(0) as u32;
            (b.replica.clone(), share)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(percent: u32, n_canary: u32, n_stable: u32) -> f64 {
        let (c, s) = split(percent, n_canary, n_stable);
        f64::from(c * n_canary) / f64::from(c * n_canary + s * n_stable) * 100.0
    }

    #[test]
    fn canary_weights_give_exactly_the_percent() {
        assert_eq!(split(10, 1, 3), (1, 3));
        for percent in 1..=100 {
            for n_canary in 1..=7 {
                for n_stable in 1..=9 {
                    let got = share(percent, n_canary, n_stable);
                    assert!(
                        (got - f64::from(percent)).abs() < 1e-9,
                        "{percent}% with {n_canary}/{n_stable}: {got}"
                    );
                }
            }
        }
    }

    #[test]
    fn canary_weights_cannot_overflow() {
        // Given counts of replicas whose product with a percent overflows a
        // u32, when the weights are split, then they keep the percent
        assert_eq!(split(10, u32::MAX, u32::MAX), (1, 9));
        assert_eq!(split(50, 1, u32::MAX), (u32::MAX, 1));
    }

    #[test]
    fn a_canary_at_zero_percent_gets_no_traffic() {
        assert_eq!(split(0, 1, 3).0, 0);
        assert_eq!(split(0, 2, 0).0, 0);
    }
}
