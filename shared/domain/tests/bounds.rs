//! Given/when/then scenarios for the bounds of `mentat_domain::limits`:
//! commands out of them are rejected before anything is decided, and a log
//! recorded before them cannot make the planner allocate by, or overflow
//! on, the numbers it holds.

mod common;

use common::Sim;
use mentat_domain::command::{Apply, Command, Outcome, RejectKind, Rejection};
use mentat_domain::event::{Event, Plan};
use mentat_domain::limits::{MAX_IMAGE_BYTES, MAX_SERVICES_PER_APPLY};
use mentat_domain::planner::{self, Settings};
use mentat_domain::spec::{ServiceSpec, Strategy};

/// The spec `web` is defined with.
fn web(sim: &Sim) -> ServiceSpec {
    sim.world.services["web"].spec.clone().expect("web defined")
}

fn apply(services: Vec<ServiceSpec>) -> Command {
    Command::Apply(Apply {
        command_id: None,
        signature: None,
        services,
        cluster: None,
        security: None,
        notify: None,
        environments: None,
        source: None,
        actor: None,
        reason: None,
    })
}

/// `result` is an invalid rejection whose reason names `field`.
fn invalid_naming<T: std::fmt::Debug>(result: Result<T, Rejection>, field: &str) -> Rejection {
    let rejection = result.expect_err("rejected");
    assert_eq!(rejection.kind, RejectKind::Invalid, "{rejection}");
    assert!(
        rejection.reason.contains(field),
        "`{field}` not named in {rejection}"
    );
    rejection
}

#[test]
fn a_spec_with_replicas_4294967295_is_rejected_naming_replicas() {
    // Given web defined with 3 replicas
    let mut sim = Sim::new(3, 1);
    let before = sim.log.len();
    // When a config redefines it with u32::MAX replicas
    let mut spec = web(&sim);
    spec.replicas = u32::MAX;
    let result = sim.command(&apply(vec![spec]));
    // Then it is invalid, naming the field and its bound, and nothing changed
    invalid_naming(result, "services.web.replicas: must be 1-1000");
    assert_eq!(sim.log.len(), before);
    assert_eq!(web(&sim).replicas, 3);
}

#[test]
fn a_deploy_with_a_900_kb_image_is_rejected_naming_image() {
    // Given web defined and a live host
    let mut sim = Sim::new(3, 1);
    let before = sim.log.len();
    // When a deploy of a 900 KB image arrives
    let result = sim.deploy(&"v".repeat(900_000));
    // Then it is invalid, naming the image and its bound without echoing it
    let rejection = invalid_naming(result, "image");
    assert_eq!(rejection.reason, "image: 900000 bytes, at most 512");
    assert_eq!(sim.log.len(), before, "nothing recorded");
    // And an image at the bound deploys
    sim.deploy(&"v".repeat(MAX_IMAGE_BYTES))
        .expect("an image at the bound is accepted");
}

#[test]
fn an_apply_of_more_services_than_the_bound_is_rejected_naming_services() {
    // Given web defined
    let mut sim = Sim::new(3, 1);
    // When one apply carries more services than the bound
    let spec = web(&sim);
    let services: Vec<ServiceSpec> = (0..=MAX_SERVICES_PER_APPLY)
        .map(|i| ServiceSpec {
            name: format!("s{i}"),
            ..spec.clone()
        })
        .collect();
    // Then it is invalid, naming the list
    invalid_naming(
        sim.command(&apply(services)),
        "services: 101 services, at most 100",
    );
}

/// Web, blue-green with 3 replicas, serving v1 on a host with room for 64.
fn serving_v1() -> Sim {
    let mut sim = Sim::with(
        3,
        mentat_domain::spec::DeploySpec {
            strategy: Strategy::BlueGreen,
            ..Default::default()
        },
    );
    sim.deploy_with("v1", Some(Strategy::Rolling))
        .expect("first deploy accepted");
    sim.run(80);
    sim
}

/// A world whose log holds, from before the bounds, web defined with
/// u32::MAX replicas and a blue-green deployment of as many started with
/// durations that overflow when counted in milliseconds: what made the
/// planner abort on a 103 GB allocation at every restart.
fn log_from_before_the_bounds() -> (Sim, String) {
    let mut sim = serving_v1();
    let mut spec = web(&sim);
    spec.replicas = u32::MAX;
    sim.record(
        "web",
        vec![Event::ServiceDefined {
            spec: spec.clone(),
            source: None,
        }],
    );
    let huge_secs = u64::MAX / 2;
    sim.record(
        "web",
        vec![Event::DeploymentStarted {
            deployment_id: "old".into(),
            service: "web".into(),
            image: "v2".into(),
            previous_image: Some("v1".into()),
            strategy: Strategy::BlueGreen,
            batch_size: u32::MAX,
            replicas: u32::MAX,
            auto_revert: true,
            rollback: false,
            at_ms: sim.now,
            plan: Plan {
                canary_replicas: u32::MAX,
                standby_secs: huge_secs,
                progress_deadline_secs: huge_secs,
                health_timeout_secs: huge_secs,
                bake_secs: huge_secs,
                ..Plan::default()
            },
        }],
    );
    (sim, "old".into())
}

#[test]
fn a_log_with_huge_replicas_from_before_the_bounds_does_not_abort_the_planner() {
    // Given the log from before the bounds, folded
    let (mut sim, id) = log_from_before_the_bounds();
    // When the planner reacts to it, as after a restart
    let first = planner::react(&sim.world, "web", sim.now, Settings::default());
    assert!(planner::next_deadline(&sim.world, "web", Settings::default()).is_some());
    // Then it returns: the green set cannot be placed, which fails the batch
    assert!(
        first
            .iter()
            .any(|e| matches!(e, Event::DeploymentReverting { .. })),
        "{first:?}"
    );
    // And the deployment ends (its revert to as many replicas cannot be
    // placed either), v1 still serving, with no more replicas started than
    // the host has room for
    sim.run(200);
    let (outcome, failure) = sim.outcome(&id);
    assert_eq!(outcome, Outcome::Failed, "{failure:?}");
    let shares = sim.share_by_image();
    assert_eq!(shares.get("v1"), Some(&100.0), "{shares:?}");
    let capacity = 64;
    let alive = sim.world.services["web"]
        .replicas
        .values()
        .filter(|r| r.phase.is_serving_candidate())
        .count();
    assert!(
        alive <= capacity,
        "{alive} replicas on a host of {capacity}"
    );
}

#[test]
fn a_spec_from_before_the_bounds_is_not_deployed_again() {
    // Given the log from before the bounds, its deployment over
    let (mut sim, _) = log_from_before_the_bounds();
    sim.run(200);
    assert!(!sim.in_flight());
    // When web is deployed or rolled back with the spec in the log
    let deploy = sim.deploy("v3");
    // Then it is invalid, naming the field to correct
    invalid_naming(deploy, "services.web.replicas");
    let rollback = sim.command(&Command::Rollback(mentat_domain::command::Rollback {
        command_id: None,
        signature: None,
        service: "web".into(),
        actor: None,
        reason: None,
    }));
    invalid_naming(rollback, "services.web.replicas");
    // And a corrected config deploys again
    let mut spec = web(&sim);
    spec.replicas = 3;
    sim.command(&apply(vec![spec])).expect("apply accepted");
    sim.deploy("v3").expect("deploy accepted");
}

#[test]
fn durations_from_before_the_bounds_saturate_instead_of_overflowing() {
    // Given a blue-green deployment recorded before the bounds, whose
    // durations overflow an i64 when counted in milliseconds
    let mut sim = serving_v1();
    let huge_secs = u64::MAX / 2;
    sim.record(
        "web",
        vec![Event::DeploymentStarted {
            deployment_id: "long".into(),
            service: "web".into(),
            image: "v2".into(),
            previous_image: Some("v1".into()),
            strategy: Strategy::BlueGreen,
            batch_size: 3,
            replicas: 3,
            auto_revert: true,
            rollback: false,
            at_ms: sim.now,
            plan: Plan {
                standby_secs: huge_secs,
                progress_deadline_secs: huge_secs,
                health_timeout_secs: huge_secs,
                bake_secs: huge_secs,
                ..Plan::default()
            },
        }],
    );
    // When it runs to its standby
    sim.run(200);
    // Then v2 serves, v1 waits on standby until the end of time, and the
    // next deadline is the latest time there is
    let shares = sim.share_by_image();
    assert_eq!((shares["v1"], shares["v2"]), (0.0, 100.0), "{shares:?}");
    assert!(sim.in_flight());
    assert_eq!(
        planner::next_deadline(&sim.world, "web", Settings::default()),
        Some(i64::MAX)
    );
}
