//! Given/when/then scenarios for blue-green, canary, manual control
//! (pause, resume, abort, promote), phase deadlines and traffic commands,
//! driven through the pure planner core with a simulated cluster.

mod common;

use common::Sim;
use mentat_domain::command::{
    Command, Outcome, RejectKind, Rejection, Rollback, Route, Spawn, Stop, Weight,
};
use mentat_domain::event::Event;
use mentat_domain::planner::World;
use mentat_domain::spec::{CanaryStep, DeploySpec, Strategy};
use proptest::prelude::*;

fn blue_green(standby_secs: u64) -> DeploySpec {
    DeploySpec {
        strategy: Strategy::BlueGreen,
        standby_secs,
        ..DeploySpec::default()
    }
}

fn canary(percent: u32, steps: &[(u32, u64)]) -> DeploySpec {
    DeploySpec {
        strategy: Strategy::Canary,
        canary_percent: percent,
        steps: steps
            .iter()
            .map(|&(percent, bake_secs)| CanaryStep { percent, bake_secs })
            .collect(),
        ..DeploySpec::default()
    }
}

/// A service already serving `v1` on all its replicas.
fn serving_v1(replicas: u32, deploy: DeploySpec) -> Sim {
    let mut sim = Sim::with(replicas, deploy);
    let id = sim
        .deploy_with("v1", Some(Strategy::Rolling))
        .expect("first deploy accepted");
    sim.run(80);
    assert_eq!(sim.outcome(&id).0, Outcome::Completed);
    sim
}

fn starts(sim: &Sim) -> usize {
    sim.log
        .iter()
        .filter(|e| matches!(e.event, Event::ReplicaStartRequested { .. }))
        .count()
}

/// Weighted shares never mix the two versions of a blue-green deployment.
fn never_split(sim: &Sim, from: usize) -> bool {
    sim.tables[from..].iter().all(|t| {
        let mut images: Vec<&str> = t
            .iter()
            .filter(|b| b.weight > 0)
            .map(|b| b.image.as_str())
            .collect();
        images.dedup();
        images.len() <= 1
    })
}

// ---- blue-green ----

#[test]
fn blue_green_switches_all_traffic_at_once_and_keeps_blue_on_standby() {
    let mut sim = serving_v1(3, blue_green(60));
    let mark = sim.tables.len();
    let id = sim.deploy("v2").expect("accepted");
    sim.run(60);
    // Every green replica is up before any traffic moves, then all of it moves.
    assert_eq!(sim.running("v2"), 3);
    assert_eq!(sim.running("v1"), 3, "blue stays running on standby");
    assert_eq!(sim.share_by_image().get("v2").copied(), Some(100.0));
    assert!(never_split(&sim, mark));
    let switch = sim.tables[mark..]
        .iter()
        .position(|t| t.iter().any(|b| b.image == "v2"))
        .expect("a switch");
    let table = &sim.tables[mark + switch];
    assert_eq!(
        table
            .iter()
            .filter(|b| b.image == "v2" && b.weight > 0)
            .count(),
        3
    );
    assert_eq!(
        table.iter().filter(|b| b.image == "v1").count(),
        3,
        "blue on standby, weight 0"
    );
    assert!(sim.in_flight());
    assert_eq!(sim.outcome(&id).0, Outcome::InProgress);
    // The standby ends: blue drains and stops, the deployment completes.
    sim.wait(61_000);
    assert_eq!(sim.outcome(&id).0, Outcome::Completed);
    assert_eq!(sim.running("v1"), 0);
    assert_eq!(sim.running("v2"), 3);
}

#[test]
fn blue_green_rollback_during_standby_flips_back_without_starting_anything() {
    let mut sim = serving_v1(3, blue_green(600));
    let id = sim.deploy("v2").expect("accepted");
    sim.run(60);
    assert_eq!(sim.share_by_image().get("v2").copied(), Some(100.0));
    let started = starts(&sim);
    let mark = sim.log.len();
    sim.command(&Command::Rollback(Rollback {
        command_id: None,
        signature: None,
        service: "web".into(),
        actor: Some("ana".into()),
        reason: Some("errors".into()),
    }))
    .expect("rollback accepted");
    sim.settle();
    // One decision: the revert and the routing change back to blue together.
    let types = sim.types_since(mark);
    assert!(types.contains(&"DeploymentReverting"), "{types:?}");
    assert!(types.contains(&"RouteChanged"), "{types:?}");
    assert_eq!(sim.share_by_image().get("v1").copied(), Some(100.0));
    sim.run(60);
    assert_eq!(starts(&sim), started, "no process started by the rollback");
    let (outcome, failure) = sim.outcome(&id);
    assert_eq!(outcome, Outcome::Reverted);
    assert!(failure.unwrap_or_default().contains("by ana: errors"));
    assert_eq!(sim.running("v2"), 0, "green stopped once drained");
    assert_eq!(sim.running("v1"), 3);
}

#[test]
fn blue_green_with_a_green_that_never_gets_healthy_leaves_blue_serving() {
    let mut sim = serving_v1(3, blue_green(600));
    let id = sim.deploy("v2-unhealthy").expect("accepted");
    sim.wait(12_000);
    assert_eq!(sim.outcome(&id).0, Outcome::Reverted);
    assert_eq!(sim.routed_images, vec!["v1".to_owned()]);
    assert_eq!(sim.running("v2-unhealthy"), 0);
    assert_eq!(sim.running("v1"), 3);
}

#[test]
fn promote_ends_a_blue_green_standby_early() {
    let mut sim = serving_v1(2, blue_green(600));
    let id = sim.deploy("v2").expect("accepted");
    sim.run(60);
    sim.control(Command::Promote).expect("promote accepted");
    sim.run(60);
    assert_eq!(sim.outcome(&id).0, Outcome::Completed);
    assert_eq!(sim.running("v1"), 0);
}

// ---- canary ----

#[test]
fn canary_of_ten_percent_of_three_replicas_is_one_replica_with_ten_percent() {
    let mut sim = serving_v1(3, canary(10, &[]));
    let id = sim.deploy("v2").expect("accepted");
    sim.run(60);
    assert_eq!(sim.running("v2"), 1);
    assert_eq!(sim.running("v1"), 3);
    let share = sim.share_by_image();
    assert!((share["v2"] - 10.0).abs() < 1e-9, "{share:?}");
    // Held for an operator: time passes, nothing moves.
    sim.wait(30_000);
    assert_eq!(sim.outcome(&id).0, Outcome::InProgress);
    assert!((sim.share_by_image()["v2"] - 10.0).abs() < 1e-9);
}

#[test]
fn a_promoted_canary_rolls_out_to_every_replica() {
    let mut sim = serving_v1(3, canary(10, &[]));
    let id = sim.deploy("v2").expect("accepted");
    sim.run(60);
    let mark = sim.routed_counts.len();
    sim.control(Command::Promote).expect("promote accepted");
    sim.run(200);
    assert_eq!(sim.outcome(&id).0, Outcome::Completed);
    assert_eq!(sim.running("v2"), 3);
    assert_eq!(sim.running("v1"), 0);
    let low = sim.routed_counts[mark..].iter().min().copied().unwrap_or(0);
    assert!(low >= 3, "capacity dropped to {low}");
}

#[test]
fn an_aborted_canary_leaves_rotation_and_stops() {
    let mut sim = serving_v1(3, canary(10, &[]));
    let id = sim.deploy("v2").expect("accepted");
    sim.run(60);
    let started = starts(&sim);
    sim.control(Command::Abort).expect("abort accepted");
    sim.settle();
    assert_eq!(sim.share_by_image().get("v1").copied(), Some(100.0));
    sim.run(60);
    let (outcome, failure) = sim.outcome(&id);
    assert_eq!(outcome, Outcome::Reverted);
    assert!(failure.unwrap_or_default().starts_with("aborted by ana"));
    assert_eq!(sim.running("v2"), 0);
    assert_eq!(starts(&sim), started);
}

#[test]
fn canary_steps_advance_after_each_bake_and_then_promote() {
    let mut sim = serving_v1(4, canary(10, &[(5, 10), (25, 10), (50, 10)]));
    let id = sim.deploy("v2").expect("accepted");
    sim.run(40);
    // ceil(4 * 50 / 100) = 2 canary replicas, for the largest step.
    assert_eq!(sim.running("v2"), 2);
    let mut seen = Vec::new();
    for _ in 0..40 {
        if let Some(share) = sim.share_by_image().get("v2").copied() {
            if seen.last() != Some(&share) {
                seen.push(share);
            }
        }
        sim.wait(1_000);
    }
    sim.run(200);
    assert_eq!(&seen[..3], &[5.0, 25.0, 50.0], "{seen:?}");
    assert_eq!(sim.outcome(&id).0, Outcome::Completed);
    assert_eq!(sim.running("v2"), 4);
    let automatic = sim.log.iter().any(|e| {
        matches!(
            e.event,
            Event::CanaryPromoted {
                automatic: true,
                ..
            }
        )
    });
    assert!(automatic);
}

#[test]
fn promote_skips_the_remaining_steps() {
    let mut sim = serving_v1(3, canary(10, &[(5, 600), (50, 600)]));
    let id = sim.deploy("v2").expect("accepted");
    sim.run(40);
    assert!((sim.share_by_image()["v2"] - 5.0).abs() < 1e-9);
    sim.control(Command::Promote).expect("promote accepted");
    sim.run(200);
    assert_eq!(sim.outcome(&id).0, Outcome::Completed);
    let shifts = sim
        .log
        .iter()
        .filter(|e| matches!(e.event, Event::TrafficShifted { .. }))
        .count();
    assert_eq!(shifts, 1);
}

#[test]
fn a_canary_that_turns_unhealthy_while_baking_is_reverted() {
    let mut sim = serving_v1(3, canary(10, &[(10, 60), (50, 60)]));
    let id = sim.deploy("v2").expect("accepted");
    sim.run(40);
    let canary = sim.world.services["web"]
        .deployment
        .as_ref()
        .expect("in flight")
        .canary
        .replicas[0]
        .clone();
    sim.record(
        "web",
        vec![Event::ReplicaUnhealthy {
            replica: canary,
            service: "web".into(),
            reason: "503".into(),
        }],
    );
    sim.settle();
    assert_eq!(sim.share_by_image().get("v1").copied(), Some(100.0));
    sim.run(40);
    let (outcome, failure) = sim.outcome(&id);
    assert_eq!(outcome, Outcome::Reverted);
    assert!(failure.unwrap_or_default().contains("became unhealthy"));
}

#[test]
fn a_canary_needs_a_serving_version_and_a_share() {
    let mut sim = Sim::with(3, canary(10, &[]));
    let rejection = sim.deploy("v1").expect_err("no serving version");
    assert_eq!(rejection.kind, RejectKind::WrongPhase, "{rejection}");
    let mut sim = serving_v1(
        3,
        DeploySpec {
            canary_percent: 0,
            ..DeploySpec::default()
        },
    );
    let reason = sim
        .deploy_with("v2", Some(Strategy::Canary))
        .expect_err("canary_percent 0");
    assert_eq!(reason.kind, RejectKind::Invalid, "{reason}");
    assert!(
        reason.reason.contains("canary_percent"),
        "names the field: {reason}"
    );
    assert!(!sim.in_flight());
}

// ---- pause, resume, abort ----

#[test]
fn pause_holds_a_rolling_deployment_and_resume_carries_on() {
    let mut sim = serving_v1(3, DeploySpec::default());
    let id = sim.deploy("v2").expect("accepted");
    sim.settle();
    sim.control(Command::Pause).expect("pause accepted");
    assert_eq!(
        sim.control(Command::Pause).map_err(|r| r.kind),
        Err(RejectKind::WrongPhase),
        "already paused"
    );
    let batches = |sim: &Sim| {
        sim.log
            .iter()
            .filter(|e| matches!(e.event, Event::BatchStarted { .. }))
            .count()
    };
    let before = batches(&sim);
    // Far past the health timeout and the progress deadline: held, not failed.
    sim.wait(700_000);
    assert_eq!(batches(&sim), before, "no new batch while paused");
    assert_eq!(sim.outcome(&id).0, Outcome::InProgress);
    assert!(
        !sim.share_by_image().contains_key("v2"),
        "no switch while paused"
    );
    sim.control(Command::Resume).expect("resume accepted");
    sim.run(200);
    assert_eq!(sim.outcome(&id).0, Outcome::Completed);
    assert_eq!(sim.running("v2"), 3);
}

#[test]
fn abort_mid_rolling_reverts_to_the_previous_image() {
    let mut sim = serving_v1(3, DeploySpec::default());
    let id = sim.deploy("v2").expect("accepted");
    while sim.running("v2") < 2 {
        sim.run(1);
    }
    assert!(sim.in_flight());
    sim.control(Command::Abort).expect("abort accepted");
    assert_eq!(
        sim.control(Command::Abort).map_err(|r| r.kind),
        Err(RejectKind::WrongPhase),
        "already reverting"
    );
    sim.run(200);
    assert_eq!(sim.outcome(&id).0, Outcome::Reverted);
    assert_eq!(sim.running("v1"), 3);
    assert_eq!(sim.running("v2"), 0);
}

#[test]
fn control_commands_without_a_deployment_are_rejected() {
    let mut sim = serving_v1(2, DeploySpec::default());
    for make in [
        Command::Pause,
        Command::Resume,
        Command::Abort,
        Command::Promote,
    ] {
        let reason = sim.control(make).expect_err("nothing in flight");
        assert_eq!(reason.kind, RejectKind::NoDeployment, "{reason}");
    }
}

// ---- deadlines ----

#[test]
fn a_phase_past_its_deadline_is_reverted_and_the_log_says_why() {
    let deploy = DeploySpec {
        progress_deadline_secs: 5,
        ..canary(10, &[])
    };
    let mut sim = serving_v1(3, deploy);
    let id = sim.deploy("v2").expect("accepted");
    sim.run(40);
    assert_eq!(sim.outcome(&id).0, Outcome::InProgress);
    sim.wait(6_000);
    sim.run(40);
    let (outcome, failure) = sim.outcome(&id);
    assert_eq!(outcome, Outcome::Reverted);
    let failure = failure.unwrap_or_default();
    assert!(failure.contains("no progress within 5s"), "{failure}");
    assert!(failure.contains("canary at 10%"), "{failure}");
}

#[test]
fn without_auto_revert_a_phase_past_its_deadline_is_held() {
    let deploy = DeploySpec {
        progress_deadline_secs: 5,
        auto_revert: false,
        ..canary(10, &[])
    };
    let mut sim = serving_v1(3, deploy);
    let id = sim.deploy("v2").expect("accepted");
    sim.run(40);
    sim.wait(6_000);
    assert_eq!(sim.outcome(&id).0, Outcome::InProgress);
    let held = sim.held_because().expect("held");
    assert!(held.contains("no progress within 5s"), "{held}");
    // Still at its canary share while held.
    assert!((sim.share_by_image()["v2"] - 10.0).abs() < 1e-9);
}

#[test]
fn a_pause_stops_the_deadline_clock() {
    let deploy = DeploySpec {
        progress_deadline_secs: 5,
        ..canary(10, &[])
    };
    let mut sim = serving_v1(3, deploy);
    let id = sim.deploy("v2").expect("accepted");
    while !sim.share_by_image().contains_key("v2") {
        sim.run(1);
    }
    sim.wait(3_000);
    sim.control(Command::Pause).expect("pause");
    sim.wait(20_000);
    sim.control(Command::Resume).expect("resume");
    sim.wait(1_000);
    assert_eq!(
        sim.outcome(&id).0,
        Outcome::InProgress,
        "3s + 1s of the 5s used"
    );
    sim.wait(2_000);
    assert_eq!(sim.outcome(&id).0, Outcome::Reverted);
}

// ---- traffic commands ----

fn spawn(sim: &mut Sim, id: &str, image: Option<&str>) -> Result<Option<String>, Rejection> {
    sim.command(&Command::Spawn(Spawn {
        command_id: None,
        signature: None,
        service: "web".into(),
        id: id.into(),
        image: image.map(str::to_owned),
        actor: None,
        reason: None,
    }))
}

fn weight(sim: &mut Sim, instance: &str, weight: u32) -> Result<Option<String>, Rejection> {
    sim.command(&Command::Weight(Weight {
        command_id: None,
        signature: None,
        service: "web".into(),
        instance: instance.into(),
        weight,
        actor: Some("ana".into()),
        reason: None,
    }))
}

#[test]
fn a_spawned_instance_starts_at_weight_zero_and_takes_the_weight_it_is_given() {
    let mut sim = serving_v1(2, DeploySpec::default());
    spawn(&mut sim, "green", Some("v2")).expect("spawn accepted");
    sim.run(40);
    assert_eq!(
        sim.weights().get("green"),
        Some(&0),
        "routed for direct addressing, no weight"
    );
    assert_eq!(
        sim.running("v1"),
        2,
        "a spawned instance is not one of the declared replicas"
    );
    weight(&mut sim, "green", 50).expect("weight accepted");
    sim.settle();
    let share = sim.share_by_image();
    assert!((share["v2"] - 20.0).abs() < 1e-9, "{share:?}"); // 50 / (100 + 100 + 50)
    sim.command(&Command::Route(Route {
        command_id: None,
        signature: None,
        service: "web".into(),
        from: "v1".into(),
        to: "green".into(),
        actor: None,
        reason: None,
    }))
    .expect("route accepted");
    sim.settle();
    assert_eq!(sim.share_by_image().get("v2").copied(), Some(100.0));
    assert_eq!(sim.running("v1"), 2, "weight 0 keeps them running");
    sim.command(&Command::Stop(Stop {
        command_id: None,
        signature: None,
        service: "web".into(),
        instance: "green".into(),
        actor: None,
        reason: None,
    }))
    .expect("stop accepted");
    sim.run(40);
    assert_eq!(sim.running("v2"), 0);
    assert!(
        sim.weights().values().all(|w| *w == 0),
        "v1 stays at the weight it was given"
    );
}

#[test]
fn traffic_commands_reject_impossible_requests_and_change_nothing() {
    let mut sim = serving_v1(2, DeploySpec::default());
    let before = sim.log.len();
    let kind = |r: Result<Option<String>, Rejection>| r.expect_err("rejected").kind;
    assert_eq!(kind(weight(&mut sim, "web-1", 101)), RejectKind::Invalid);
    assert_eq!(
        kind(weight(&mut sim, "nope", 10)),
        RejectKind::UnknownInstance
    );
    assert_eq!(kind(spawn(&mut sim, "web-9", None)), RejectKind::Invalid);
    assert_eq!(kind(spawn(&mut sim, "Bad_Id", None)), RejectKind::Invalid);
    spawn(&mut sim, "green", None).expect("spawn");
    let after_spawn = sim.log.len();
    assert_eq!(kind(spawn(&mut sim, "green", None)), RejectKind::Invalid);
    assert_eq!(after_spawn, before + 1);
    sim.deploy("v2").expect("deploy");
    sim.settle();
    let reason = weight(&mut sim, "web-1", 10).expect_err("owned by the deployment");
    assert_eq!(reason.kind, RejectKind::DeploymentInFlight, "{reason}");
}

// ---- replay and interleavings ----

#[test]
fn replaying_a_canary_log_gives_the_same_state_and_decisions() {
    let mut sim = serving_v1(3, canary(10, &[(10, 5), (50, 5)]));
    sim.deploy("v2").expect("accepted");
    sim.run(40);
    sim.wait(6_000);
    let mut replayed = World::default();
    for e in &sim.log {
        replayed.apply(e);
    }
    assert_eq!(replayed, sim.world);
    assert_eq!(
        mentat_domain::planner::react(&replayed, "web", sim.now, common::SETTINGS),
        mentat_domain::planner::react(&sim.world, "web", sim.now, common::SETTINGS)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever order facts arrive in, blue-green never splits traffic
    /// between versions, never has fewer weighted replicas than declared,
    /// and completes once the standby ends.
    #[test]
    fn blue_green_holds_under_any_interleaving(seed in any::<u64>(), replicas in 1u32..5) {
        let mut sim = Sim::with(replicas, blue_green(5));
        sim.deploy("v1").expect("accepted");
        sim.run_shuffled(400, seed);
        let mark = sim.tables.len();
        let id = sim.deploy("v2").expect("accepted");
        sim.run_shuffled(800, seed.rotate_left(5));
        sim.wait(6_000);
        sim.run_shuffled(200, seed.rotate_left(9));
        prop_assert_eq!(sim.outcome(&id).0, Outcome::Completed);
        prop_assert!(never_split(&sim, mark));
        let low = sim.tables[mark..]
            .iter()
            .map(|t| t.iter().filter(|b| b.weight > 0).count())
            .min()
            .unwrap_or(0);
        prop_assert!(low >= replicas as usize, "weighted capacity dropped to {}", low);
    }

    /// A canary's share is exactly its step's percent whenever it has
    /// traffic, under any interleaving, and an aborted canary ends reverted.
    #[test]
    fn canary_share_is_exact_under_any_interleaving(seed in any::<u64>(), replicas in 1u32..6, percent in 1u32..100) {
        let mut sim = serving_v1(replicas, canary(percent, &[]));
        let mark = sim.tables.len();
        let id = sim.deploy("v2").expect("accepted");
        sim.run_shuffled(600, seed);
        for t in &sim.tables[mark..] {
            let total: u32 = t.iter().map(|b| b.weight).sum();
            let v2: u32 = t.iter().filter(|b| b.image == "v2").map(|b| b.weight).sum();
            let has_v1 = t.iter().any(|b| b.image == "v1" && b.weight > 0);
            if v2 > 0 && has_v1 {
                let share = f64::from(v2) * 100.0 / f64::from(total);
                prop_assert!((share - f64::from(percent)).abs() < 1e-9, "share {} for {}%", share, percent);
            }
        }
        sim.control(Command::Abort).expect("abort");
        sim.run_shuffled(600, seed.rotate_left(3));
        prop_assert_eq!(sim.outcome(&id).0, Outcome::Reverted);
        prop_assert_eq!(sim.running("v2"), 0);
    }
}

// ---- error paths of the control and traffic commands ----

#[test]
fn aborting_a_first_deployment_fails_it_and_keeps_its_replicas() {
    let mut sim = Sim::with(3, DeploySpec::default());
    let id = sim.deploy("v1").expect("accepted");
    while sim.running("v1") < 1 {
        sim.run(1);
    }
    sim.control(Command::Abort).expect("abort accepted");
    let (outcome, failure) = sim.outcome(&id);
    assert_eq!(outcome, Outcome::Failed);
    assert!(failure
        .unwrap_or_default()
        .contains("no previous image to revert to"));
    sim.run(20);
    assert!(
        sim.running("v1") >= 1,
        "nothing to revert to: nothing stopped"
    );
}

#[test]
fn promote_and_resume_that_do_not_apply_are_rejected() {
    let mut sim = serving_v1(3, DeploySpec::default());
    sim.deploy("v2").expect("accepted");
    sim.settle();
    let reason = sim.control(Command::Promote).expect_err("rolling");
    assert_eq!(reason.kind, RejectKind::WrongPhase, "{reason}");
    let reason = sim.control(Command::Resume).expect_err("not paused");
    assert_eq!(reason.kind, RejectKind::WrongPhase, "{reason}");
}

#[test]
fn spawn_without_a_live_host_is_rejected_and_changes_nothing() {
    let mut sim = serving_v1(1, DeploySpec::default());
    sim.record(
        "_hosts",
        vec![Event::HostLost {
            host: "h1".into(),
            reason: "test".into(),
        }],
    );
    let before = sim.log.len();
    let reason = spawn(&mut sim, "green", Some("v2")).expect_err("no host");
    assert_eq!(reason.kind, RejectKind::NoCapacity, "{reason}");
    assert_eq!(sim.log.len(), before);
}
