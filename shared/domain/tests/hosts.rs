//! Host loss, given/when/then: a suspect host's replicas get weight 0 (but
//! never every weight of a service), a lost host's replicas are placed
//! again (also mid-deployment, without a revert), a host that comes back
//! has its replaced replicas stopped, and a mass loss holds re-placement
//! until an operator releases it or the hosts return.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Sim;
use mentat_domain::cluster::ClusterSpec;
use mentat_domain::command::{Apply, Command, Outcome, RejectKind, ReleaseHosts};
use mentat_domain::event::Event;
use mentat_domain::planner::{self, Phase};
use proptest::prelude::*;

fn joined(host: &str, capacity: u32) -> Event {
    Event::HostJoined {
        host: host.into(),
        capacity,
    }
}

fn suspected(host: &str) -> Event {
    Event::HostSuspected {
        host: host.into(),
        silent_ms: 3_000,
    }
}

fn lost(host: &str) -> Event {
    Event::HostLost {
        host: host.into(),
        reason: "no heartbeat for 30s".into(),
    }
}

/// Record a host event, then what the core decides about the cluster and
/// about the service, as the planner does.
fn host_event(sim: &mut Sim, event: Event) {
    sim.record("_hosts", vec![event]);
    let cluster = planner::react_cluster(&sim.world);
    sim.record("_cluster", cluster);
    sim.settle();
}

/// `web` on `replicas` replicas of `v1`, spread over h1 and the `others`.
fn serving(replicas: u32, others: &[&str]) -> Sim {
    let mut sim = Sim::new(replicas, 1);
    for h in others {
        sim.record("_hosts", vec![joined(h, 64)]);
    }
    sim.deploy("v1").expect("accepted");
    sim.run(60);
    assert!(!sim.in_flight());
    sim
}

fn on(sim: &Sim, host: &str) -> Vec<String> {
    sim.world.services["web"]
        .replicas
        .values()
        .filter(|r| r.host == host && r.phase.is_serving_candidate())
        .map(|r| r.id.clone())
        .collect()
}

fn replaced(sim: &Sim) -> Vec<(String, String, String)> {
    sim.log
        .iter()
        .filter_map(|e| match &e.event {
            Event::ReplicaReplaced {
                replica,
                host,
                new_replica,
                ..
            } => Some((replica.clone(), host.clone(), new_replica.clone())),
            _ => None,
        })
        .collect()
}

fn release(sim: &mut Sim, reason: Option<&str>) -> Result<Option<String>, RejectKind> {
    sim.command(&Command::ReleaseHosts(ReleaseHosts {
        command_id: None,
        signature: None,
        actor: Some("ana".into()),
        reason: reason.map(str::to_owned),
    }))
    .map_err(|r| r.kind)
}

#[test]
fn given_a_suspect_host_then_its_replicas_get_weight_0_at_once_and_get_it_back() {
    let mut sim = serving(4, &["h2"]);
    let away = on(&sim, "h2");
    assert_eq!(away.len(), 2, "spread 2/2");
    let tables = sim.tables.len();

    host_event(&mut sim, suspected("h2"));

    assert_eq!(sim.tables.len(), tables + 1, "one routing change");
    let weights = sim.weights();
    for id in &away {
        assert_eq!(weights[id], 0, "{id} on a suspect host");
    }
    assert_eq!(weights.values().filter(|w| **w > 0).count(), 2);
    assert!(replaced(&sim).is_empty(), "suspect is not lost");

    host_event(&mut sim, Event::HostSuspicionCleared { host: "h2".into() });
    assert!(sim.weights().values().all(|w| *w == 100), "weights back");
}

/// The rule of `planner::hosts`: a service whose every weighted replica is
/// on a suspect host keeps its weights (a router with nothing to send to
/// fails every request).
#[test]
fn given_every_host_of_a_service_suspect_then_no_weight_is_zeroed() {
    let mut sim = serving(2, &[]);
    let tables = sim.tables.len();
    host_event(&mut sim, suspected("h1"));
    assert_eq!(sim.tables.len(), tables, "no routing change");
    assert!(sim.weights().values().all(|w| *w == 100));
    assert!(sim.world.held.is_none(), "one host is no mass loss");
}

#[test]
fn given_a_lost_host_then_each_replica_is_placed_again_with_its_image() {
    let mut sim = serving(4, &["h2"]);
    let away = on(&sim, "h2");
    host_event(&mut sim, suspected("h2"));
    sim.down.insert("h2".into());
    host_event(&mut sim, lost("h2"));

    let moves = replaced(&sim);
    assert_eq!(moves.len(), 2, "one ReplicaReplaced per replica");
    for (old, host, new) in &moves {
        assert!(away.contains(old));
        assert_eq!(host, "h2");
        let new = &sim.world.services["web"].replicas[new];
        assert_eq!(new.host, "h1");
        assert_eq!(new.image, "v1");
        assert_eq!(sim.world.services["web"].replicas[old].phase, Phase::Lost);
    }
    sim.run(30);
    assert_eq!(on(&sim, "h1").len(), 4, "all four on the host left");
    assert_eq!(sim.running("v1"), 4, "no more than declared");
    assert_eq!(sim.weights().values().filter(|w| **w > 0).count(), 4);
}

#[test]
fn given_a_host_lost_mid_deployment_then_the_deployment_completes_without_revert() {
    let mut sim = serving(4, &["h2"]);
    let id = sim.deploy("v2").expect("accepted");
    sim.run(3);
    assert!(sim.in_flight());
    host_event(&mut sim, suspected("h2"));
    sim.down.insert("h2".into());
    sim.run(5);
    host_event(&mut sim, lost("h2"));
    sim.run(200);

    assert!(!replaced(&sim).is_empty());
    assert_eq!(
        sim.outcome(&id).0,
        Outcome::Completed,
        "{:?}",
        sim.outcome(&id)
    );
    assert!(!sim
        .log
        .iter()
        .any(|e| matches!(e.event, Event::DeploymentReverting { .. })));
    assert_eq!(sim.running("v2"), 4);
    assert!(on(&sim, "h1").len() == 4);
}

#[test]
fn given_a_lost_host_that_returns_then_its_replaced_replicas_are_stopped() {
    let mut sim = serving(4, &["h2"]);
    let away = on(&sim, "h2");
    host_event(&mut sim, suspected("h2"));
    sim.down.insert("h2".into());
    host_event(&mut sim, lost("h2"));
    sim.run(30);

    sim.down.clear();
    host_event(&mut sim, joined("h2", 64));
    sim.run(30);

    for id in &away {
        assert!(
            !sim.world.services["web"].replicas.contains_key(id),
            "{id} stopped and forgotten"
        );
    }
    assert_eq!(sim.running("v1"), 4, "nothing runs twice");
}

#[test]
fn given_a_partition_shorter_than_lost_after_then_nothing_is_placed_again() {
    let mut sim = serving(4, &["h2"]);
    let before = sim.world.services["web"].replicas.clone();
    host_event(&mut sim, suspected("h2"));
    sim.down.insert("h2".into());
    sim.wait(10_000);
    sim.down.clear();
    host_event(&mut sim, Event::HostSuspicionCleared { host: "h2".into() });
    sim.run(10);
    assert!(replaced(&sim).is_empty());
    assert_eq!(sim.world.services["web"].replicas.len(), before.len());
    assert!(sim.weights().values().all(|w| *w == 100));
}

#[test]
fn given_most_hosts_suspect_together_then_replacement_is_held_until_released() {
    let mut sim = serving(6, &["h2", "h3"]);
    host_event(&mut sim, suspected("h2"));
    assert!(sim.world.held.is_none(), "one of three");
    sim.now += 1_000;
    host_event(&mut sim, suspected("h3"));
    let held = sim.world.held.clone().expect("held");
    assert_eq!(held.hosts, ["h2", "h3"]);

    sim.down.extend(["h2".to_owned(), "h3".to_owned()]);
    host_event(&mut sim, lost("h2"));
    host_event(&mut sim, lost("h3"));
    sim.run(20);
    assert!(replaced(&sim).is_empty(), "held: nothing piled on h1");

    assert_eq!(release(&mut sim, None), Err(RejectKind::Invalid));
    assert_eq!(release(&mut sim, Some("h2 and h3 are gone")), Ok(None));
    assert!(sim.world.held.is_none());
    assert_eq!(
        release(&mut sim, Some("again")),
        Err(RejectKind::NothingToDo)
    );
    sim.run(30);
    assert_eq!(replaced(&sim).len(), 4);
    assert_eq!(on(&sim, "h1").len(), 6);
}

#[test]
fn given_a_hold_when_its_hosts_return_then_it_ends_and_nothing_moved() {
    let mut sim = serving(6, &["h2", "h3"]);
    host_event(&mut sim, suspected("h2"));
    host_event(&mut sim, suspected("h3"));
    assert!(sim.world.held.is_some());
    host_event(&mut sim, lost("h2"));
    host_event(&mut sim, Event::HostSuspicionCleared { host: "h3".into() });
    assert!(sim.world.held.is_some(), "h2 is still away");
    host_event(&mut sim, joined("h2", 64));
    assert!(sim.world.held.is_none());
    assert!(sim.log.iter().any(|e| matches!(
        e.event,
        Event::MassHostLossReleased {
            by_operator: false,
            ..
        }
    )));
    sim.run(10);
    assert!(replaced(&sim).is_empty());
    assert!(sim.weights().values().all(|w| *w == 100));
}

fn apply_cluster(sim: &mut Sim, suspect: u64, lost: u64) -> Result<Option<String>, RejectKind> {
    let spec = sim.world.services["web"].spec.clone().unwrap();
    sim.command(&Command::Apply(Apply {
        command_id: None,
        signature: None,
        services: vec![spec],
        cluster: Some(ClusterSpec {
            suspect_after_secs: suspect,
            lost_after_secs: lost,
        }),
        security: None,
        notify: None,
        environments: None,
        source: None,
        actor: None,
        reason: None,
    }))
    .map_err(|r| r.kind)
}

#[test]
fn the_cluster_block_is_validated_at_apply_and_recorded_once() {
    let mut sim = serving(1, &[]);
    let before = sim.log.len();
    assert_eq!(apply_cluster(&mut sim, 10, 5), Err(RejectKind::Invalid));
    assert_eq!(sim.log.len(), before, "nothing recorded");
    apply_cluster(&mut sim, 2, 6).expect("accepted");
    assert_eq!(sim.types_since(before), ["ClusterDefined"]);
    assert_eq!(sim.world.cluster().lost_after_secs, 6);
    apply_cluster(&mut sim, 2, 6).expect("accepted");
    assert_eq!(
        sim.log.len(),
        before + 1,
        "the same block again records nothing"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the capacities, re-placement never puts more replicas on a
    /// host than it can run, and after the lost host returns no replica of
    /// the service runs twice: declared replicas never exceed the count.
    #[test]
    fn replacement_stays_within_capacity_and_nothing_runs_twice(
        replicas in 1u32..8,
        cap1 in 1u32..8,
        cap3 in 0u32..8,
    ) {
        let mut sim = Sim::new(replicas, 1);
        sim.record("_hosts", vec![joined("h1", cap1), joined("h2", 8)]);
        if cap3 > 0 {
            sim.record("_hosts", vec![joined("h3", cap3)]);
        }
        sim.deploy("v1").expect("accepted");
        sim.run(80);
        host_event(&mut sim, suspected("h2"));
        sim.down.insert("h2".into());
        host_event(&mut sim, lost("h2"));
        sim.run(40);
        for (id, h) in &sim.world.hosts {
            if !h.live { continue; }
            let used = sim.world.services["web"].replicas.values()
                .filter(|r| &r.host == id && r.phase != Phase::Exited).count() as u32;
            prop_assert!(used <= h.capacity, "{id}: {used} > {}", h.capacity);
        }
        sim.down.clear();
        host_event(&mut sim, joined("h2", 8));
        sim.run(40);
        let serving = sim.world.services["web"].replicas.values()
            .filter(|r| r.phase.is_serving_candidate()).count() as u32;
        prop_assert!(serving <= replicas, "{serving} running for {replicas} declared");
        prop_assert!(!sim.world.services["web"].replicas.values().any(|r| r.phase == Phase::Lost && r.host == "h2"),
            "a replaced replica of the returned host still runs");
    }
}
