//! Draining with several routers: a replica out of rotation is stopped
//! only once every live router has reported it drained, or its drain
//! timed out; a lost router is not waited for; with no live router nothing
//! counts as drained before the timeout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Sim;
use mentat_domain::event::Event;
use mentat_domain::planner::Phase;

fn joined(router: &str) -> Event {
    Event::RouterJoined {
        router: router.into(),
        host: format!("{router}-host"),
        listen: "127.0.0.1:8080".into(),
    }
}

fn lost(router: &str) -> Event {
    Event::RouterLost {
        router: router.into(),
        reason: "no heartbeat".into(),
    }
}

fn drained_by(replica: &str, router: &str) -> Event {
    Event::ReplicaDrained {
        replica: replica.into(),
        service: "web".into(),
        router: router.into(),
        timed_out: false,
    }
}

/// `v1` serving on two replicas, then a rolling deploy of `v2` run until a
/// replaced `v1` replica drains: its id. The make-believe cluster reports
/// every drain from router `r1` only.
fn draining_after_r1(sim: &mut Sim) -> String {
    sim.deploy("v1").expect("accepted");
    sim.run(50);
    sim.deploy("v2").expect("accepted");
    for _ in 0..20 {
        sim.run(1);
        let draining = sim.world.services["web"]
            .replicas
            .values()
            .find(|r| r.phase == Phase::Draining && r.drained_by.contains("r1"))
            .map(|r| r.id.clone());
        if let Some(id) = draining {
            return id;
        }
    }
    panic!("no replica drained by r1");
}

/// The reason of the stop requested for `replica`, if any.
fn stop_reason(sim: &Sim, replica: &str) -> Option<String> {
    sim.log.iter().rev().find_map(|e| match &e.event {
        Event::ReplicaStopRequested {
            replica: r, reason, ..
        } if r == replica => Some(reason.clone()),
        _ => None,
    })
}

#[test]
fn given_two_live_routers_when_one_reports_a_drain_then_the_stop_waits_for_the_other() {
    let mut sim = Sim::new(2, 1);
    sim.record("_routers", vec![joined("r1"), joined("r2")]);
    let replica = draining_after_r1(&mut sim);
    sim.settle();
    assert_eq!(
        stop_reason(&sim, &replica),
        None,
        "stopped before r2 drained it"
    );

    sim.deliver(drained_by(&replica, "r2"));
    sim.settle();
    assert_eq!(
        stop_reason(&sim, &replica).as_deref(),
        Some("out of rotation and drained")
    );
}

#[test]
fn given_two_routers_when_one_is_lost_then_the_other_reports_suffice() {
    let mut sim = Sim::new(2, 1);
    sim.record("_routers", vec![joined("r1"), joined("r2")]);
    let replica = draining_after_r1(&mut sim);
    sim.settle();
    assert_eq!(stop_reason(&sim, &replica), None);

    sim.record("_routers", vec![lost("r2")]);
    sim.settle();
    assert_eq!(
        stop_reason(&sim, &replica).as_deref(),
        Some("out of rotation and drained")
    );
}

#[test]
fn given_no_live_router_then_nothing_counts_as_drained_before_the_timeout() {
    let mut sim = Sim::new(2, 1);
    sim.record("_routers", vec![joined("r1"), joined("r2")]);
    let replica = draining_after_r1(&mut sim);
    sim.record("_routers", vec![lost("r1"), lost("r2")]);
    sim.settle();
    assert_eq!(stop_reason(&sim, &replica), None);
    sim.wait(5_000); // the drain timeout of the tests' settings
    assert_eq!(
        stop_reason(&sim, &replica).as_deref(),
        Some("out of rotation and drain timed out")
    );
}

#[test]
fn given_no_live_router_when_a_deployment_runs_then_it_waits_for_one_or_its_deadline() {
    let mut sim = Sim::new(2, 1);
    sim.record("_routers", vec![joined("r1")]);
    sim.deploy("v1").expect("accepted");
    sim.run(50);
    sim.record("_routers", vec![lost("r1")]);
    let id = sim.deploy("v2").expect("accepted");
    let before = sim.log.len();
    sim.run(20);
    let decided: Vec<&str> = sim.types_since(before);
    assert!(
        !decided
            .iter()
            .any(|t| *t == "RouteChanged" || *t == "BatchStarted"),
        "moved on with no router: {decided:?}"
    );
    assert!(sim.in_flight(), "the deployment waits, in flight");
    let record = |sim: &Sim| {
        let s = &sim.world.services["web"];
        let d = s.deployment.as_ref().expect("in flight");
        let mut record = s.history.last().expect("recorded").clone();
        mentat_domain::planner::deployment::annotate(&sim.world, d, &mut record);
        record
    };
    let waiting = record(&sim);
    assert!(waiting.waiting_for_router, "{waiting:?}");
    assert!(waiting
        .phase
        .is_some_and(|p| p.starts_with("waiting for a router")));

    sim.record("_routers", vec![joined("r1")]);
    assert!(!record(&sim).waiting_for_router, "a router is live");
    sim.run(200);
    assert_eq!(
        sim.outcome(&id).0,
        mentat_domain::command::Outcome::Completed
    );
}
