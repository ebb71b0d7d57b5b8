//! Given/when/then scenarios for replica ids, which are unique across the
//! cluster: a spawned instance cannot take an id another service's replica
//! holds or numbers its replicas with, and the planner's own numbering
//! skips ids in use anywhere.

mod common;

use common::Sim;
use mentat_domain::command::{Apply, Command, Outcome, RejectKind, Rejection, Spawn};
use mentat_domain::event::{Event, ExitStatus};
use mentat_domain::spec::{DeploySpec, Strategy};

/// `web` serving v1 on `replicas` replicas (`web-1`...), and a second
/// service `rec` defined beside it.
fn web_serving_v1_and_rec(replicas: u32) -> Sim {
    let mut sim = Sim::with(replicas, DeploySpec::default());
    define_rec(&mut sim);
    let id = sim
        .deploy_with("v1", Some(Strategy::Rolling))
        .expect("first deploy accepted");
    sim.run(80);
    assert_eq!(sim.outcome(&id).0, Outcome::Completed);
    sim
}

fn define_rec(sim: &mut Sim) {
    let mut rec = sim.world.services["web"].spec.clone().expect("web defined");
    rec.name = "rec".into();
    sim.command(&Command::Apply(Apply {
        command_id: None,
        signature: None,
        services: vec![rec],
        cluster: None,
        security: None,
        notify: None,
        environments: None,
        source: None,
        actor: None,
        reason: None,
    }))
    .expect("rec applied");
}

fn spawn(sim: &mut Sim, service: &str, id: &str) -> Result<Option<String>, Rejection> {
    sim.command(&Command::Spawn(Spawn {
        command_id: None,
        signature: None,
        service: service.into(),
        id: id.into(),
        image: Some("r1".into()),
        actor: None,
        reason: None,
    }))
}

/// The ids of `web`'s replicas that are not exited, in order.
fn web_ids(sim: &Sim) -> Vec<String> {
    sim.world.services["web"]
        .replicas
        .values()
        .filter(|r| r.phase.is_serving_candidate())
        .map(|r| r.id.clone())
        .collect()
}

/// Every replica id the planner asked an executor to start for `web`.
fn web_starts(sim: &Sim) -> Vec<String> {
    sim.log
        .iter()
        .filter_map(|e| match &e.event {
            Event::ReplicaStartRequested {
                replica, service, ..
            } if service == "web" => Some(replica.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_spawn_cannot_take_an_id_another_service_holds_or_numbers_its_replicas_with() {
    // Given web serving on web-1 and web-2, and rec defined.
    let mut sim = web_serving_v1_and_rec(2);
    assert_eq!(web_ids(&sim), ["web-1", "web-2"]);
    let before = sim.log.len();
    // When rec spawns an instance with the id of web's running replica,
    // then it is refused as invalid, naming the id and its owner.
    let refused = spawn(&mut sim, "rec", "web-2").expect_err("web-2 is web's");
    assert_eq!(refused.kind, RejectKind::Invalid, "{refused}");
    assert!(refused.reason.contains("id `web-2`"), "{refused}");
    assert!(refused.reason.contains("web:web-2"), "{refused}");
    // When the id is free but has web's form, it is refused too: web
    // would number a future replica that way.
    let refused = spawn(&mut sim, "rec", "web-9").expect_err("web's numbering");
    assert_eq!(refused.kind, RejectKind::Invalid, "{refused}");
    assert!(refused.reason.contains("id `web-9`"), "{refused}");
    assert!(refused.reason.contains("web-<number>"), "{refused}");
    // And the other way round: web cannot take rec's form.
    let refused = spawn(&mut sim, "web", "rec-1").expect_err("rec's numbering");
    assert_eq!(refused.kind, RejectKind::Invalid, "{refused}");
    assert!(refused.reason.contains("rec-<number>"), "{refused}");
    // Then nothing was recorded.
    assert_eq!(sim.log.len(), before);
    // When rec spawns `green`, web cannot spawn a `green` of its own.
    spawn(&mut sim, "rec", "green").expect("a free id");
    let refused = spawn(&mut sim, "web", "green").expect_err("rec's green");
    assert_eq!(refused.kind, RejectKind::Invalid, "{refused}");
    assert!(refused.reason.contains("rec:green"), "{refused}");
    // Web's own replicas keep running, untouched.
    assert_eq!(web_ids(&sim), ["web-1", "web-2"]);
}

#[test]
fn the_planner_numbers_new_replicas_past_ids_in_use_anywhere_and_never_reuses_one() {
    // Given a log in which rec holds an instance `web-3`, spawned before
    // ids were unique (or before web was defined), and web not yet deployed.
    let mut sim = Sim::with(3, DeploySpec::default());
    define_rec(&mut sim);
    let web_spec = sim.world.services["web"].spec.clone().expect("web");
    sim.record(
        "rec",
        vec![Event::ReplicaStartRequested {
            replica: "web-3".into(),
            service: "rec".into(),
            host: "h1".into(),
            image: "r1".into(),
            run: web_spec.run.clone(),
            health: web_spec.health.clone(),
            deployment_id: None,
            spawned: true,
        }],
    );
    // When web is deployed, then its replicas skip web-3.
    let id = sim
        .deploy_with("v1", Some(Strategy::Rolling))
        .expect("deploy");
    sim.run(80);
    assert_eq!(sim.outcome(&id).0, Outcome::Completed);
    assert_eq!(web_ids(&sim), ["web-1", "web-2", "web-4"]);
    assert!(!web_starts(&sim).contains(&"web-3".to_owned()));
    // When web rolls out v2 after web-3 is gone from rec too, then its new
    // replicas go on from the highest number given: no id is used twice.
    sim.record(
        "rec",
        vec![Event::ReplicaExited {
            replica: "web-3".into(),
            service: "rec".into(),
            host: "h1".into(),
            status: ExitStatus {
                code: Some(0),
                signal: None,
            },
            requested: true,
            reason: None,
        }],
    );
    assert!(sim.world.services["rec"].replicas.is_empty());
    let id = sim.deploy("v2").expect("deploy v2");
    sim.run(80);
    assert_eq!(sim.outcome(&id).0, Outcome::Completed);
    assert_eq!(web_ids(&sim), ["web-5", "web-6", "web-7"]);
    let starts = web_starts(&sim);
    let mut unique = starts.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), starts.len(), "an id used twice: {starts:?}");
}

#[test]
fn replaying_a_log_with_skipped_ids_gives_the_same_numbering() {
    let mut sim = Sim::with(2, DeploySpec::default());
    define_rec(&mut sim);
    let web_spec = sim.world.services["web"].spec.clone().expect("web");
    sim.record(
        "rec",
        vec![Event::ReplicaStartRequested {
            replica: "web-1".into(),
            service: "rec".into(),
            host: "h1".into(),
            image: "r1".into(),
            run: web_spec.run,
            health: web_spec.health,
            deployment_id: None,
            spawned: true,
        }],
    );
    sim.deploy("v1").expect("deploy");
    sim.run(80);
    let mut replayed = mentat_domain::planner::World::default();
    for e in &sim.log {
        replayed.apply(e);
    }
    assert_eq!(replayed, sim.world);
    assert_eq!(replayed.services["web"].replica_seq, 3, "web-2 and web-3");
}
