//! Who may report a fact: a host only about the replicas the log placed
//! on it, and every fact only from the source it names.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Sim;
use mentat_domain::event::{Event, FactSource};
use mentat_domain::spec::HealthSpec;

fn started(replica: &str, host: &str) -> Event {
    Event::ReplicaStarted {
        replica: replica.into(),
        service: "web".into(),
        host: host.into(),
        pid: 1,
        addr: "127.0.0.1:1".into(),
        health: HealthSpec::default(),
    }
}

#[test]
fn a_host_reports_only_the_replicas_the_log_placed_on_it() {
    let mut sim = Sim::new(2, 1);
    sim.deploy("v1").expect("deploy");
    sim.run(50);
    let (replica, host) = sim.world.services["web"]
        .replicas
        .values()
        .map(|r| (r.id.clone(), r.host.clone()))
        .next()
        .expect("a replica");
    let world = &sim.world;
    assert_eq!(
        world.refuse_fact(&started(&replica, &host), FactSource::Host(&host)),
        None
    );
    // Another host, speaking for itself, about a replica it does not run.
    let why = world
        .refuse_fact(&started(&replica, "other"), FactSource::Host("other"))
        .expect("refused");
    assert!(why.contains(&host), "{why}");
    // A fact naming one host, sent by another.
    assert!(world
        .refuse_fact(&started(&replica, &host), FactSource::Host("other"))
        .is_some());
    // A replica the log does not know.
    assert!(world
        .refuse_fact(&started("web-evil", &host), FactSource::Host(&host))
        .is_some());
    let exited = Event::ReplicaExited {
        replica: replica.clone(),
        service: "web".into(),
        host: "other".into(),
        status: mentat_domain::event::ExitStatus {
            code: Some(0),
            signal: None,
        },
        requested: false,
        reason: None,
    };
    assert!(world
        .refuse_fact(&exited, FactSource::Host("other"))
        .is_some());
}

#[test]
fn health_and_drains_come_from_the_health_watcher_and_the_router_they_name() {
    let sim = Sim::new(1, 1);
    let world = &sim.world;
    let healthy = Event::ReplicaHealthy {
        replica: "web-1".into(),
        service: "web".into(),
    };
    assert_eq!(world.refuse_fact(&healthy, FactSource::HealthWatcher), None);
    assert!(world
        .refuse_fact(&healthy, FactSource::Host("h1"))
        .is_some());
    let drained = Event::ReplicaDrained {
        replica: "web-1".into(),
        service: "web".into(),
        router: "r1".into(),
        timed_out: false,
    };
    assert_eq!(world.refuse_fact(&drained, FactSource::Router("r1")), None);
    assert!(world
        .refuse_fact(&drained, FactSource::Router("r2"))
        .is_some());
    let not_a_fact = Event::RouterLost {
        router: "r1".into(),
        reason: "gone".into(),
    };
    assert!(world
        .refuse_fact(&not_a_fact, FactSource::Router("r1"))
        .is_some());
}
