//! Given/when/then scenarios for traffic thresholds: a breach reverts the
//! new version in any phase (or holds the deployment without auto_revert),
//! no data never advances nor fails a step, the bake window keeps watching
//! after the rollout, and breaches outside a deployment revert nothing.

mod common;

use common::Sim;
use mentat_domain::command::{Command, Outcome};
use mentat_domain::event::{Event, Judgement, Metric};
use mentat_domain::spec::{CanaryStep, DeploySpec, HealthSpec, Strategy, Thresholds};

fn health(bake_secs: u64) -> HealthSpec {
    HealthSpec {
        thresholds: Thresholds {
            window_secs: 1,
            min_requests: 10,
            ..Thresholds::default()
        },
        bake_secs,
        ..HealthSpec::default()
    }
}

fn serving_v1(deploy: DeploySpec, bake_secs: u64) -> Sim {
    let mut sim = Sim::with_health(3, deploy, Some(health(bake_secs)));
    let id = sim
        .deploy_with("v1", Some(Strategy::Rolling))
        .expect("first deploy");
    sim.wait(bake_secs as i64 * 1000 + 10_000);
    assert_eq!(sim.outcome(&id).0, Outcome::Completed);
    sim
}

fn errors(observed_bp: u64) -> Judgement {
    Judgement {
        metric: Metric::ErrorRate,
        observed: observed_bp,
        threshold: 500,
        baseline: Some(10),
        window_secs: 1,
        requests: 412,
    }
}

fn breach(sim: &mut Sim, version: &str) {
    sim.record(
        "web",
        vec![Event::ThresholdBreached {
            service: "web".into(),
            deployment_id: None,
            version: version.into(),
            judgement: errors(1234),
        }],
    );
    sim.settle();
}

fn verdict(sim: &mut Sim, version: &str, pass: bool) {
    let event = if pass {
        Event::ThresholdsMet {
            service: "web".into(),
            version: version.into(),
            requests: 100,
            window_secs: 1,
        }
    } else {
        Event::NoData {
            service: "web".into(),
            version: version.into(),
            requests: 3,
            min_requests: 10,
            window_secs: 1,
        }
    };
    sim.record("web", vec![event]);
    sim.settle();
}

fn stepped() -> DeploySpec {
    DeploySpec {
        strategy: Strategy::Canary,
        steps: vec![
            CanaryStep {
                percent: 10,
                bake_secs: 5,
            },
            CanaryStep {
                percent: 50,
                bake_secs: 5,
            },
        ],
        progress_deadline_secs: 30,
        ..DeploySpec::default()
    }
}

#[test]
fn a_breach_during_a_canary_step_reverts_at_once() {
    let mut sim = serving_v1(stepped(), 0);
    let id = sim.deploy("v2").expect("accepted");
    sim.run(40);
    assert!((sim.share_by_image()["v2"] - 10.0).abs() < 1e-9);
    let mark = sim.log.len();
    breach(&mut sim, "v2");
    // One decision: revert and route the canary out together.
    let types = sim.types_since(mark);
    assert_eq!(types[0], "ThresholdBreached");
    assert!(types.contains(&"DeploymentReverting"), "{types:?}");
    assert!(types.contains(&"RouteChanged"), "{types:?}");
    assert_eq!(sim.share_by_image().get("v1").copied(), Some(100.0));
    sim.run(40);
    let (outcome, failure) = sim.outcome(&id);
    assert_eq!(outcome, Outcome::Reverted);
    let failure = failure.unwrap_or_default();
    assert!(
        failure.contains("error rate 12.34% over 1s (412 requests), threshold 5.00%"),
        "{failure}"
    );
    let record = sim.world.services["web"]
        .history
        .last()
        .cloned()
        .expect("record");
    assert_eq!(record.breaches.len(), 1);
}

#[test]
fn steps_advance_only_on_a_pass_and_no_data_waits_for_the_deadline() {
    let mut sim = serving_v1(stepped(), 0);
    let id = sim.deploy("v2").expect("accepted");
    sim.run(40);
    verdict(&mut sim, "v2", false);
    sim.wait(10_000);
    assert!(
        (sim.share_by_image()["v2"] - 10.0).abs() < 1e-9,
        "no step forward on no data"
    );
    assert_eq!(
        sim.outcome(&id).0,
        Outcome::InProgress,
        "and no failure either"
    );
    verdict(&mut sim, "v2", true);
    sim.wait(1_000);
    assert!(
        (sim.share_by_image()["v2"] - 50.0).abs() < 1e-9,
        "a pass advances"
    );
    verdict(&mut sim, "v2", false);
    // Bake 5 s + deadline 30 s: then the deadline's declared outcome.
    sim.wait(40_000);
    let (outcome, failure) = sim.outcome(&id);
    assert_eq!(outcome, Outcome::Reverted);
    assert!(failure
        .unwrap_or_default()
        .contains("no progress within 30s"));
}

#[test]
fn a_breach_during_blue_green_standby_switches_back() {
    let deploy = DeploySpec {
        strategy: Strategy::BlueGreen,
        ..DeploySpec::default()
    };
    let mut sim = serving_v1(deploy, 0);
    let id = sim.deploy("v2").expect("accepted");
    sim.run(60);
    assert_eq!(sim.share_by_image().get("v2").copied(), Some(100.0));
    breach(&mut sim, "v2");
    assert_eq!(sim.share_by_image().get("v1").copied(), Some(100.0));
    sim.run(60);
    assert_eq!(sim.outcome(&id).0, Outcome::Reverted);
}

#[test]
fn a_breach_in_the_bake_window_after_the_rollout_reverts() {
    let mut sim = serving_v1(DeploySpec::default(), 30);
    let id = sim.deploy("v2").expect("accepted");
    sim.run(200);
    assert_eq!(sim.running("v2"), 3);
    assert_eq!(sim.running("v1"), 0);
    assert_eq!(sim.outcome(&id).0, Outcome::InProgress, "baking");
    assert!(sim
        .log
        .iter()
        .any(|e| matches!(e.event, Event::BakeStarted { .. })));
    breach(&mut sim, "v2");
    sim.run(200);
    assert_eq!(sim.outcome(&id).0, Outcome::Reverted);
    assert_eq!(sim.running("v1"), 3);
}

#[test]
fn a_quiet_bake_window_completes() {
    let mut sim = serving_v1(DeploySpec::default(), 30);
    let id = sim.deploy("v2").expect("accepted");
    sim.run(200);
    assert_eq!(sim.outcome(&id).0, Outcome::InProgress);
    sim.wait(31_000);
    assert_eq!(sim.outcome(&id).0, Outcome::Completed);
}

#[test]
fn without_auto_revert_a_breach_holds_the_deployment() {
    let deploy = DeploySpec {
        auto_revert: false,
        ..stepped()
    };
    let mut sim = serving_v1(deploy, 0);
    let id = sim.deploy("v2").expect("accepted");
    sim.run(40);
    breach(&mut sim, "v2");
    assert_eq!(sim.outcome(&id).0, Outcome::InProgress);
    let held = sim.held_because().expect("held");
    assert!(held.contains("threshold breached by v2"), "{held}");
    // Resuming acknowledges the breach; a new one holds it again.
    sim.control(Command::Resume).expect("resume");
    sim.settle();
    assert!(sim.world.services["web"]
        .deployment
        .as_ref()
        .expect("d")
        .paused
        .is_none());
    sim.now += 100;
    breach(&mut sim, "v2");
    assert!(sim.world.services["web"]
        .deployment
        .as_ref()
        .expect("d")
        .paused
        .is_some());
}

/// Run round by round until `reached` holds, within 200 rounds.
fn run_until(sim: &mut Sim, what: &str, reached: impl Fn(&Sim) -> bool) {
    for _ in 0..200 {
        if reached(sim) {
            return;
        }
        sim.run(1);
    }
    panic!("{what} never happened");
}

/// Breach v2 now: the revert starts at once, and v1 is back on every replica.
fn breach_reverts_at_once(sim: &mut Sim, id: &str) {
    let from = sim.log.len();
    breach(sim, "v2");
    let since = sim.types_since(from);
    assert!(since.contains(&"DeploymentReverting"), "{since:?}");
    sim.run(200);
    assert_eq!(sim.outcome(id).0, Outcome::Reverted);
    assert_eq!((sim.running("v1"), sim.running("v2")), (3, 0));
}

#[test]
fn a_breach_in_the_middle_of_a_rolling_update_reverts_at_once() {
    let mut sim = serving_v1(DeploySpec::default(), 30);
    let id = sim.deploy("v2").expect("accepted");
    run_until(&mut sim, "the first batch taking traffic", |s| {
        s.running("v2") >= 1 && s.running("v1") >= 2
    });
    breach_reverts_at_once(&mut sim, &id);
}

#[test]
fn a_breach_while_a_promoted_canary_rolls_out_reverts_at_once() {
    let deploy = DeploySpec {
        strategy: Strategy::Canary,
        canary_percent: 10,
        ..DeploySpec::default()
    };
    let mut sim = serving_v1(deploy, 30);
    let id = sim.deploy("v2").expect("accepted");
    sim.run(60);
    assert_eq!((sim.running("v2"), sim.running("v1")), (1, 3), "the canary");
    sim.control(Command::Promote).expect("promote accepted");
    run_until(&mut sim, "the roll-out going on", |s| {
        s.running("v2") >= 2 && s.running("v1") >= 1
    });
    breach_reverts_at_once(&mut sim, &id);
}

#[test]
fn without_auto_revert_a_breach_holds_a_rolling_update_too() {
    let deploy = DeploySpec {
        auto_revert: false,
        ..DeploySpec::default()
    };
    let mut sim = serving_v1(deploy, 30);
    let id = sim.deploy("v2").expect("accepted");
    sim.run(200);
    assert_eq!(sim.outcome(&id).0, Outcome::InProgress, "baking");
    let from = sim.log.len();
    breach(&mut sim, "v2");
    let since = sim.types_since(from);
    assert!(
        !since.contains(&"DeploymentReverting") && !since.contains(&"DeploymentFailed"),
        "{since:?}"
    );
    assert_eq!(sim.outcome(&id).0, Outcome::InProgress);
    let held = sim.held_because().expect("held");
    assert!(held.contains("threshold breached by v2"), "{held}");
}

#[test]
fn breaches_of_the_old_version_or_outside_a_deployment_revert_nothing() {
    let mut sim = serving_v1(stepped(), 0);
    breach(&mut sim, "v1");
    assert!(!sim.in_flight());
    assert_eq!(sim.running("v1"), 3);
    let id = sim.deploy("v2").expect("accepted");
    sim.run(40);
    breach(&mut sim, "v1");
    assert_eq!(
        sim.outcome(&id).0,
        Outcome::InProgress,
        "the baseline's breach is not the canary's"
    );
}
