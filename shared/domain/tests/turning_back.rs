//! Given/when/then scenarios for the one rule for turning back
//! (`planner::policy`): each cause (a failed batch, a threshold breach, a
//! missed phase deadline, an operator's abort) with `auto_revert` on and
//! off, in the middle of a rolling update of three replicas from v1 to v2,
//! driven through the planner with the simulated cluster.

mod common;

use common::Sim;
use mentat_domain::command::{Command, Outcome};
use mentat_domain::event::{Event, ExitStatus, Judgement, Metric};
use mentat_domain::planner::Phase;
use mentat_domain::spec::DeploySpec;

fn deploy(auto_revert: bool) -> DeploySpec {
    DeploySpec {
        auto_revert,
        progress_deadline_secs: 5,
        ..DeploySpec::default()
    }
}

/// Given: web serves v1 on its 3 replicas.
fn serving_v1(auto_revert: bool) -> Sim {
    let mut sim = Sim::with(3, deploy(auto_revert));
    let id = sim.deploy("v1").expect("first deploy accepted");
    sim.run(80);
    assert_eq!(sim.outcome(&id).0, Outcome::Completed);
    sim
}

/// The replica the batch in progress starts, while it is not healthy yet.
fn starting_replica(sim: &Sim) -> Option<String> {
    let s = &sim.world.services["web"];
    let batch = s.deployment.as_ref()?.batch.as_ref()?;
    batch
        .start
        .iter()
        .find(|id| {
            s.replicas
                .get(*id)
                .is_some_and(|r| matches!(r.phase, Phase::Requested | Phase::Running))
        })
        .cloned()
}

/// Run until the second batch is starting its replica: v2 already serves
/// one replica, v1 the other two. The service is half-way.
fn half_way(sim: &mut Sim) -> String {
    for _ in 0..200 {
        let second = sim.world.services["web"]
            .deployment
            .as_ref()
            .and_then(|d| d.batch.as_ref())
            .is_some_and(|b| b.number == 2);
        if second {
            if let Some(replica) = starting_replica(sim) {
                assert_eq!(sim.share_by_image().len(), 2, "both versions serve");
                return replica;
            }
        }
        sim.run(1);
    }
    panic!("the second batch never started");
}

/// When: `replica` exits before becoming healthy.
fn crash(sim: &mut Sim, replica: &str) {
    sim.record(
        "web",
        vec![Event::ReplicaExited {
            replica: replica.to_owned(),
            service: "web".into(),
            host: "h1".into(),
            status: ExitStatus {
                code: Some(1),
                signal: None,
            },
            requested: false,
            reason: None,
        }],
    );
    sim.settle();
}

/// When: the health-watcher records a breach of v2's error rate.
fn breach(sim: &mut Sim) {
    sim.record(
        "web",
        vec![Event::ThresholdBreached {
            service: "web".into(),
            deployment_id: None,
            version: "v2".into(),
            judgement: Judgement {
                metric: Metric::ErrorRate,
                observed: 1234,
                threshold: 500,
                baseline: Some(10),
                window_secs: 1,
                requests: 412,
            },
        }],
    );
    sim.settle();
}

/// When: the executor never reports on the new batch, past the deadline.
fn deploy_and_stall(sim: &mut Sim) -> String {
    let id = sim.deploy("v2").expect("accepted");
    sim.settle();
    sim.now += 6_000;
    sim.settle();
    id
}

/// Then: the deployment reverted to v1 on every replica.
fn reverted(sim: &mut Sim, id: &str, from: usize) -> String {
    let types = sim.types_since(from);
    assert!(types.contains(&"DeploymentReverting"), "{types:?}");
    assert!(
        !types.contains(&"DeploymentPaused") && !types.contains(&"DeploymentFailed"),
        "{types:?}"
    );
    sim.run(300);
    let (outcome, failure) = sim.outcome(id);
    assert_eq!(outcome, Outcome::Reverted);
    assert_eq!((sim.running("v1"), sim.running("v2")), (3, 0));
    assert_eq!(sim.routed_images_now(), ["v1", "v1", "v1"]);
    failure.unwrap_or_default()
}

/// Then: the deployment is held where it is, the operator told why and
/// what to do; nothing reverted, nothing failed.
fn held(sim: &Sim, id: &str, from: usize) -> String {
    let types = sim.types_since(from);
    assert!(types.contains(&"DeploymentPaused"), "{types:?}");
    assert!(
        !types.contains(&"DeploymentReverting") && !types.contains(&"DeploymentFailed"),
        "{types:?}"
    );
    assert_eq!(sim.outcome(id).0, Outcome::InProgress);
    let reason = sim.held_because().expect("held");
    assert!(
        reason.contains(
            "auto_revert is off, so it is held: mt abort reverts to v1, mt resume carries on"
        ),
        "{reason}"
    );
    reason
}

// ---- a batch fails ----

#[test]
fn given_auto_revert_when_a_batch_fails_half_way_then_it_reverts() {
    let mut sim = serving_v1(true);
    let id = sim.deploy("v2").expect("accepted");
    let replica = half_way(&mut sim);
    let from = sim.log.len();
    crash(&mut sim, &replica);
    let failure = reverted(&mut sim, &id, from);
    assert!(
        failure.contains("exited before becoming healthy"),
        "{failure}"
    );
}

#[test]
fn given_no_auto_revert_when_a_batch_fails_half_way_then_it_is_held_not_failed() {
    let mut sim = serving_v1(false);
    let id = sim.deploy("v2").expect("accepted");
    let replica = half_way(&mut sim);
    let from = sim.log.len();
    crash(&mut sim, &replica);
    let reason = held(&sim, &id, from);
    assert!(
        reason.contains(&format!("replica {replica} (v2) exited")),
        "{reason}"
    );
    // Held, not abandoned: time passes, both versions keep serving, the
    // deployment stays in flight for the operator.
    sim.wait(60_000);
    assert_eq!(sim.outcome(&id).0, Outcome::InProgress);
    assert!(sim.held_because().is_some());
    assert_eq!(sim.share_by_image().len(), 2, "{:?}", sim.share_by_image());
}

#[test]
fn given_a_batch_failure_held_when_the_operator_aborts_then_it_reverts() {
    let mut sim = serving_v1(false);
    let id = sim.deploy("v2").expect("accepted");
    let replica = half_way(&mut sim);
    crash(&mut sim, &replica);
    let from = sim.log.len();
    sim.control(Command::Abort).expect("abort accepted");
    let failure = reverted(&mut sim, &id, from);
    assert!(failure.starts_with("aborted by ana: testing"), "{failure}");
}

#[test]
fn given_a_batch_failure_held_when_the_operator_resumes_then_the_batch_starts_again() {
    let mut sim = serving_v1(false);
    let id = sim.deploy("v2").expect("accepted");
    let replica = half_way(&mut sim);
    crash(&mut sim, &replica);
    let from = sim.log.len();
    sim.control(Command::Resume).expect("resume accepted");
    let types = sim.types_since(from);
    assert_eq!(
        &types[..3],
        ["DeploymentResumed", "BatchStarted", "ReplicaStartRequested"],
        "{types:?}"
    );
    let retried = sim.log[from + 1..]
        .iter()
        .find_map(|e| match &e.event {
            Event::BatchStarted { batch, start, .. } => Some((*batch, start.clone())),
            _ => None,
        })
        .expect("a batch");
    assert_eq!(retried.0, 3, "a new batch number");
    assert!(!retried.1.contains(&replica), "new replicas");
    sim.run(300);
    assert_eq!(sim.outcome(&id).0, Outcome::Completed);
    assert_eq!((sim.running("v1"), sim.running("v2")), (0, 3));
}

// ---- a threshold breach ----

#[test]
fn given_auto_revert_when_v2_breaches_half_way_then_it_reverts() {
    let mut sim = serving_v1(true);
    let id = sim.deploy("v2").expect("accepted");
    half_way(&mut sim);
    let from = sim.log.len();
    breach(&mut sim);
    let failure = reverted(&mut sim, &id, from);
    assert!(failure.contains("threshold breached by v2"), "{failure}");
}

#[test]
fn given_no_auto_revert_when_v2_breaches_half_way_then_it_is_held_with_its_batch() {
    let mut sim = serving_v1(false);
    let id = sim.deploy("v2").expect("accepted");
    let replica = half_way(&mut sim);
    let from = sim.log.len();
    breach(&mut sim);
    let reason = held(&sim, &id, from);
    assert!(reason.contains("threshold breached by v2"), "{reason}");
    assert!(
        !sim.types_since(from).contains(&"ReplicaStopRequested"),
        "the batch is kept for a resume"
    );
    assert_eq!(starting_replica(&sim), Some(replica));
}

// ---- a missed phase deadline ----

#[test]
fn given_auto_revert_when_a_phase_misses_its_deadline_then_it_reverts() {
    let mut sim = serving_v1(true);
    let from = sim.log.len();
    let id = deploy_and_stall(&mut sim);
    let failure = reverted(&mut sim, &id, from);
    assert!(
        failure.contains("no progress within 5s (batch 1: waiting for"),
        "{failure}"
    );
}

#[test]
fn given_no_auto_revert_when_a_phase_misses_its_deadline_then_it_is_held() {
    let mut sim = serving_v1(false);
    let from = sim.log.len();
    let id = deploy_and_stall(&mut sim);
    let reason = held(&sim, &id, from);
    assert!(reason.contains("no progress within 5s"), "{reason}");
}

// ---- an operator's abort ----

#[test]
fn given_auto_revert_when_an_operator_aborts_half_way_then_it_reverts() {
    let mut sim = serving_v1(true);
    let id = sim.deploy("v2").expect("accepted");
    half_way(&mut sim);
    let from = sim.log.len();
    sim.control(Command::Abort).expect("abort accepted");
    let failure = reverted(&mut sim, &id, from);
    assert!(failure.starts_with("aborted by ana: testing"), "{failure}");
}

#[test]
fn given_no_auto_revert_when_an_operator_aborts_half_way_then_it_reverts() {
    let mut sim = serving_v1(false);
    let id = sim.deploy("v2").expect("accepted");
    half_way(&mut sim);
    let from = sim.log.len();
    sim.control(Command::Abort).expect("abort accepted");
    let failure = reverted(&mut sim, &id, from);
    assert!(failure.starts_with("aborted by ana: testing"), "{failure}");
}

// ---- no way back left ----

#[test]
fn given_a_revert_in_progress_when_its_batch_fails_then_the_deployment_fails() {
    let mut sim = serving_v1(true);
    let id = sim.deploy("v2").expect("accepted");
    half_way(&mut sim);
    sim.control(Command::Abort).expect("abort accepted");
    let replica = (0..200)
        .find_map(|_| {
            let found = starting_replica(&sim)
                .filter(|r| sim.world.services["web"].replicas[r].image == "v1");
            if found.is_none() {
                sim.run(1);
            }
            found
        })
        .expect("a revert batch starting v1");
    let from = sim.log.len();
    crash(&mut sim, &replica);
    let types = sim.types_since(from);
    assert!(types.contains(&"DeploymentFailed"), "{types:?}");
    let (outcome, failure) = sim.outcome(&id);
    assert_eq!(outcome, Outcome::Failed);
    assert!(
        failure
            .unwrap_or_default()
            .starts_with("revert failed: replica"),
        "names the revert"
    );
}

#[test]
fn given_a_first_deployment_with_auto_revert_when_its_batch_fails_then_it_fails() {
    let mut sim = Sim::with(3, deploy(true));
    let id = sim.deploy("v1-crash").expect("accepted");
    sim.run(50);
    let (outcome, failure) = sim.outcome(&id);
    assert_eq!(outcome, Outcome::Failed);
    let failure = failure.unwrap_or_default();
    assert!(
        failure.contains("exited before becoming healthy"),
        "{failure}"
    );
    assert!(
        failure.contains("no previous image to revert to"),
        "{failure}"
    );
}

#[test]
fn given_a_first_deployment_without_auto_revert_when_its_batch_fails_then_it_is_held() {
    let mut sim = Sim::with(3, deploy(false));
    let id = sim.deploy("v1-crash").expect("accepted");
    sim.run(50);
    assert_eq!(sim.outcome(&id).0, Outcome::InProgress);
    let reason = sim.held_because().expect("held");
    assert!(
        reason.contains("auto_revert is off, so it is held: mt abort ends it"),
        "{reason}"
    );
    sim.control(Command::Abort).expect("abort accepted");
    let (outcome, failure) = sim.outcome(&id);
    assert_eq!(outcome, Outcome::Failed);
    assert!(failure
        .unwrap_or_default()
        .contains("no previous image to revert to"));
}
