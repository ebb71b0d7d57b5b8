//! Given/when/then scenarios for the rolling strategy, driven through the
//! pure planner core with a simulated cluster that answers every intent.

mod common;

use common::{Sim, SETTINGS};
use mentat_domain::command::{Command, Outcome, RejectKind, Rollback};
use mentat_domain::event::{Event, ExitStatus};
use std::collections::BTreeMap;

use mentat_domain::planner::{self, World};
use proptest::prelude::*;

#[test]
fn first_deploy_brings_up_every_replica_and_routes_them() {
    let mut sim = Sim::new(3, 1);
    let id = sim.deploy("v1").expect("accepted");
    sim.run(50);
    assert_eq!(sim.outcome(&id).0, Outcome::Completed);
    assert_eq!(sim.routed_images_now(), ["v1", "v1", "v1"]);
    assert_eq!(sim.world.services["web"].image.as_deref(), Some("v1"));
}

#[test]
fn rolling_update_never_drops_below_the_declared_replicas() {
    let mut sim = Sim::new(3, 1);
    let first = sim.deploy("v1").expect("accepted");
    sim.run(50);
    assert_eq!(sim.outcome(&first).0, Outcome::Completed);
    let mark = sim.routed_counts.len();
    let id = sim.deploy("v2").expect("accepted");
    sim.run(80);
    assert_eq!(sim.outcome(&id).0, Outcome::Completed);
    assert_eq!(sim.routed_images_now(), ["v2", "v2", "v2"]);
    assert!(
        sim.routed_counts[mark..].iter().all(|&n| n >= 3),
        "capacity dropped: {:?}",
        &sim.routed_counts[mark..]
    );
    // Every replica was replaced by its own batch of one.
    let batches = sim
        .log
        .iter()
        .filter(|e| matches!(e.event, Event::BatchStarted { .. }))
        .count();
    assert_eq!(batches, 6);
}

#[test]
fn batches_follow_max_unavailable() {
    let mut sim = Sim::new(4, 2);
    sim.deploy("v1").expect("accepted");
    sim.run(50);
    let id = sim.deploy("v2").expect("accepted");
    sim.run(80);
    assert_eq!(sim.outcome(&id).0, Outcome::Completed);
    let sizes: Vec<usize> = sim
        .log
        .iter()
        .filter_map(|e| match &e.event {
            Event::BatchStarted { start, .. } => Some(start.len()),
            _ => None,
        })
        .collect();
    assert_eq!(sizes, [2, 2, 2, 2]);
}

#[test]
fn a_crashing_release_is_reverted_and_never_gets_traffic() {
    let mut sim = Sim::new(3, 1);
    sim.deploy("v1").expect("accepted");
    sim.run(50);
    let id = sim.deploy("v2-crash").expect("accepted");
    sim.run(80);
    let (outcome, reason) = sim.outcome(&id);
    assert_eq!(outcome, Outcome::Reverted);
    assert!(reason
        .expect("reason")
        .contains("exited before becoming healthy"));
    assert_eq!(sim.routed_images, ["v1"]);
    assert_eq!(sim.routed_images_now(), ["v1", "v1", "v1"]);
}

#[test]
fn an_unhealthy_release_is_reverted_after_the_health_timeout() {
    let mut sim = Sim::new(3, 1);
    sim.deploy("v1").expect("accepted");
    sim.run(50);
    let id = sim.deploy("v2-unhealthy").expect("accepted");
    sim.run(200); // 20 s of simulated time > health_timeout_secs (10)
    let (outcome, reason) = sim.outcome(&id);
    assert_eq!(outcome, Outcome::Reverted);
    assert!(reason.expect("reason").contains("not healthy within 10s"));
    assert_eq!(sim.routed_images, ["v1"]);
    assert!(sim.world.services["web"]
        .replicas
        .values()
        .all(|r| r.image == "v1"));
}

#[test]
fn a_second_deploy_while_one_is_in_flight_is_rejected_naming_it() {
    let mut sim = Sim::new(3, 1);
    let id = sim.deploy("v1").expect("accepted");
    let rejection = sim.deploy("v2").expect_err("must be rejected");
    assert_eq!(
        rejection.kind,
        RejectKind::DeploymentInFlight,
        "{rejection}"
    );
    assert!(rejection.reason.contains(&id), "names it: {rejection}");
}

#[test]
fn rollback_returns_to_the_previous_image() {
    let mut sim = Sim::new(2, 1);
    sim.deploy("v1").expect("accepted");
    sim.run(50);
    sim.deploy("v2").expect("accepted");
    sim.run(50);
    let rollback = Command::Rollback(Rollback {
        command_id: None,
        signature: None,
        service: "web".into(),
        actor: None,
        reason: None,
    });
    let id = sim.command(&rollback).expect("accepted").expect("id");
    sim.run(50);
    assert_eq!(sim.outcome(&id).0, Outcome::Completed);
    assert_eq!(sim.routed_images_now(), ["v1", "v1"]);
}

#[test]
fn replaying_the_log_gives_the_same_state_and_decisions() {
    let mut sim = Sim::new(3, 1);
    sim.deploy("v1").expect("accepted");
    sim.run(50);
    sim.deploy("v2-crash").expect("accepted");
    sim.run(5); // stop mid-deployment
    let mut replayed = World::default();
    for e in &sim.log {
        replayed.apply(e);
    }
    assert_eq!(replayed, sim.world);
    assert_eq!(
        planner::react(&replayed, "web", sim.now, SETTINGS),
        planner::react(&sim.world, "web", sim.now, SETTINGS)
    );
}

#[test]
fn a_replica_that_dies_outside_a_deployment_is_replaced() {
    let mut sim = Sim::new(2, 1);
    sim.deploy("v1").expect("accepted");
    sim.run(50);
    let victim = sim.world.services["web"].routes[0].replica.clone();
    sim.record(
        "web",
        vec![Event::ReplicaExited {
            replica: victim.clone(),
            service: "web".into(),
            host: "h1".into(),
            status: ExitStatus {
                code: Some(137),
                signal: None,
            },
            requested: false,
            reason: None,
        }],
    );
    sim.run(20);
    let routes = &sim.world.services["web"].routes;
    assert_eq!(routes.len(), 2);
    assert!(routes.iter().all(|b| b.replica != victim));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever order and delay facts arrive in, a rolling update completes,
    /// never routes to fewer replicas than declared, and replays to the same
    /// state.
    #[test]
    fn rolling_update_holds_under_any_interleaving(seed in any::<u64>(), replicas in 1u32..5, batch in 1u32..3) {
        let batch = batch.min(replicas);
        let mut sim = Sim::new(replicas, batch);
        let first = sim.deploy("v1").expect("accepted");
        sim.run_shuffled(400, seed);
        prop_assert_eq!(sim.outcome(&first).0, Outcome::Completed);
        let mark = sim.routed_counts.len();
        let id = sim.deploy("v2").expect("accepted");
        sim.run_shuffled(600, seed.rotate_left(7));
        prop_assert_eq!(sim.outcome(&id).0, Outcome::Completed);
        let low = sim.routed_counts[mark..].iter().min().copied().unwrap_or(0);
        prop_assert!(low >= replicas as usize, "capacity dropped to {}", low);
        prop_assert!(sim.routed_images_now().iter().all(|i| i == "v2"));
        let mut replayed = World::default();
        for e in &sim.log {
            replayed.apply(e);
        }
        prop_assert_eq!(replayed, sim.world);
    }

    /// A release that never gets healthy is reverted under any interleaving,
    /// and never receives traffic.
    #[test]
    fn unhealthy_release_never_gets_traffic(seed in any::<u64>()) {
        let mut sim = Sim::new(3, 1);
        sim.deploy("v1").expect("accepted");
        sim.run_shuffled(400, seed);
        let id = sim.deploy("v2-unhealthy").expect("accepted");
        sim.run_shuffled(800, seed.rotate_left(3));
        prop_assert_eq!(sim.outcome(&id).0, Outcome::Reverted);
        prop_assert_eq!(sim.routed_images.clone(), vec!["v1".to_owned()]);
    }
}

#[test]
fn replicas_are_placed_only_on_live_hosts() {
    let mut sim = Sim::new(4, 2);
    sim.record(
        "_hosts",
        vec![
            Event::HostJoined {
                host: "h2".into(),
                capacity: 64,
            },
            Event::HostJoined {
                host: "h3".into(),
                capacity: 64,
            },
            Event::HostLost {
                host: "h3".into(),
                reason: "no heartbeat".into(),
            },
        ],
    );
    sim.deploy("v1").expect("accepted");
    sim.run(50);
    let hosts: Vec<String> = sim.world.services["web"]
        .replicas
        .values()
        .map(|r| r.host.clone())
        .collect();
    assert_eq!(hosts.len(), 4);
    assert!(
        hosts.iter().all(|h| h != "h3"),
        "placed on a lost host: {hosts:?}"
    );
    assert!(
        hosts.contains(&"h1".to_owned()) && hosts.contains(&"h2".to_owned()),
        "{hosts:?}"
    );
}

#[test]
fn with_no_live_host_a_deploy_is_rejected_with_the_reason() {
    let mut sim = Sim::new(2, 1);
    sim.record(
        "_hosts",
        vec![Event::HostLost {
            host: "h1".into(),
            reason: "no heartbeat".into(),
        }],
    );
    let reason = sim.deploy("v1").expect_err("must be rejected");
    assert_eq!(reason.kind, RejectKind::NoCapacity, "{reason}");
}

/// Live replicas of `web` per host.
fn spread(sim: &Sim) -> BTreeMap<String, usize> {
    let mut per_host = BTreeMap::new();
    for r in sim.world.services["web"].replicas.values() {
        if r.phase != mentat_domain::planner::Phase::Exited {
            *per_host.entry(r.host.clone()).or_insert(0) += 1;
        }
    }
    per_host
}

#[test]
fn a_service_is_spread_over_the_live_hosts_and_stays_spread_through_a_rolling_deploy() {
    let mut sim = Sim::new(6, 2);
    let joined = |host: &str| Event::HostJoined {
        host: host.into(),
        capacity: 64,
    };
    sim.record("_hosts", vec![joined("h2"), joined("h3")]);
    sim.deploy("v1").expect("accepted");
    sim.run(100);
    let even: BTreeMap<String, usize> = [("h1", 2), ("h2", 2), ("h3", 2)]
        .into_iter()
        .map(|(h, n)| (h.to_owned(), n))
        .collect();
    assert_eq!(spread(&sim), even);
    let id = sim.deploy("v2").expect("accepted");
    sim.run(200);
    assert_eq!(sim.outcome(&id).0, Outcome::Completed);
    assert_eq!(sim.running("v2"), 6);
    assert_eq!(spread(&sim), even, "a rolling deploy keeps the spread");
}

#[test]
fn a_deploy_that_outgrows_the_hosts_says_how_many_were_needed_and_how_much_room_there_was() {
    let mut sim = Sim::new(4, 1);
    // h1 announces room for two replicas only.
    sim.record(
        "_hosts",
        vec![Event::HostJoined {
            host: "h1".into(),
            capacity: 2,
        }],
    );
    let id = sim.deploy("v1").expect("accepted");
    sim.run(100);
    let (outcome, reason) = sim.outcome(&id);
    assert_ne!(outcome, Outcome::Completed);
    let reason = reason.expect("a reason");
    assert!(
        reason.contains("1 new replica(s) needed, room for 0 on 1 live host(s)"),
        "{reason}"
    );
}
