//! Given/when/then for `replay`: every decision of the simulated planner
//! is taken again from its log alone, the same; a changed setting, an
//! edited command or an event nobody decided is the first divergence, by
//! position.

#![allow(clippy::unwrap_used)] // a test fails loudly on purpose

mod common;

use common::{Sim, SETTINGS};
use mentat_domain::command::Outcome;
use mentat_domain::event::{Event, EventEnvelope, Meta};
use mentat_domain::planner::{Phase, Settings, World};
use mentat_domain::replay::{
    replay, AuditReplayQuery, Config, Decided, DecidedBy, ReplayReport, MAX_DRAIN_TIMEOUT_MS,
};
use mentat_domain::spec::{CanaryStep, DeploySpec, Strategy};
use proptest::prelude::*;

fn with_settings(settings: Settings) -> Config {
    Config {
        settings: Some(settings),
        ..Config::default()
    }
}

/// Replay `log` as the simulated planner decided it.
fn replayed(log: &[EventEnvelope]) -> ReplayReport {
    replay(log, with_settings(SETTINGS))
}

/// A service serving `v1`, then deployed to `v2` with `deploy`.
fn deployed(replicas: u32, deploy: DeploySpec) -> Sim {
    let mut sim = Sim::with(replicas, deploy);
    let first = sim.deploy_with("v1", Some(Strategy::Rolling)).unwrap();
    sim.run(80);
    assert_eq!(sim.outcome(&first).0, Outcome::Completed);
    let id = sim.deploy("v2").unwrap();
    sim.wait(120_000);
    assert_ne!(sim.outcome(&id).0, Outcome::InProgress);
    sim
}

#[test]
fn every_strategy_replays_with_no_divergence() {
    let canary = DeploySpec {
        strategy: Strategy::Canary,
        canary_percent: 25,
        steps: vec![CanaryStep {
            percent: 50,
            bake_secs: 1,
        }],
        ..DeploySpec::default()
    };
    let blue_green = DeploySpec {
        strategy: Strategy::BlueGreen,
        standby_secs: 2,
        ..DeploySpec::default()
    };
    let rolling = DeploySpec {
        max_unavailable: 2,
        ..DeploySpec::default()
    };
    for deploy in [rolling, canary, blue_green] {
        let strategy = deploy.strategy;
        let sim = deployed(4, deploy);
        let report = replayed(&sim.log);
        assert_eq!(report.divergence, None, "{strategy}");
        let decisions = sim.log.iter().filter(|e| e.meta.decided.is_some()).count();
        assert_eq!(report.decisions, decisions as u64, "{strategy}");
        assert!(report.decisions > 10, "{strategy}: {}", report.decisions);
        assert_eq!(report.events, sim.log.len() as u64);
    }
}

#[test]
fn a_revert_replays_with_no_divergence() {
    let mut sim = Sim::new(3, 1);
    let first = sim.deploy("v1").unwrap();
    sim.run(80);
    assert_eq!(sim.outcome(&first).0, Outcome::Completed);
    let id = sim.deploy("v2-crash").unwrap();
    sim.run(200);
    assert_eq!(sim.outcome(&id).0, Outcome::Reverted);
    assert_eq!(replayed(&sim.log).divergence, None);
}

#[test]
fn a_shorter_drain_timeout_changes_the_first_decision_that_drains() {
    // Given a rolling update decided with a drain timeout of 5 s,
    let sim = deployed(3, DeploySpec::default());
    // when it is replayed with 0 s,
    let changed = Settings {
        drain_timeout_ms: 0,
    };
    let report = replay(&sim.log, with_settings(changed));
    // then the first decision that took a replica out of rotation is the
    // first to change: now it stops that replica at once, in the same
    // decision, where the log's decision ended and waited for the drain.
    let d = report.divergence.expect("a divergence");
    let (start, decided) = first_decision_draining(&sim.log);
    assert_eq!(d.decision, start);
    assert_eq!(d.position, start + i64::from(decided.events));
    assert_eq!(d.logged, None, "the log's decision ended there");
    let stopped = match d.now.map(|p| p.event) {
        Some(Event::ReplicaStopRequested { replica, .. }) => replica,
        other => panic!("now: {other:?}"),
    };
    // The log stopped that replica later, once it had drained.
    let later = sim.log.iter().find(
        |e| matches!(&e.event, Event::ReplicaStopRequested { replica, .. } if *replica == stopped),
    );
    assert!(later.expect("stopped in the log").position > d.position);
    // With the recorded setting again, nothing diverges.
    assert_eq!(replayed(&sim.log).divergence, None);
}

/// The first decision after which a replica is draining: its position
/// and how it was taken.
fn first_decision_draining(log: &[EventEnvelope]) -> (i64, Decided) {
    let mut world = World::default();
    let mut current = None;
    for e in log {
        if let Some(decided) = &e.meta.decided {
            current = Some((e.position, decided.clone()));
        }
        world.apply(e);
        let draining = world.services.values().flat_map(|s| s.replicas.values());
        if draining.into_iter().any(|r| r.phase == Phase::Draining) {
            return current.expect("decided");
        }
    }
    panic!("no replica ever drained")
}

#[test]
fn an_edited_command_is_found_at_its_decision() {
    let mut sim = deployed(2, DeploySpec::default());
    let at = sim
        .log
        .iter()
        .position(
            |e| matches!(e.event, Event::DeploymentStarted { ref image, .. } if image == "v2"),
        )
        .unwrap();
    let Some(DecidedBy::Command { command, .. }) =
        sim.log[at].meta.decided.as_mut().map(|d| &mut d.by)
    else {
        panic!("the deploy's decision")
    };
    if let mentat_domain::Command::Deploy(deploy) = command.as_mut() {
        deploy.image = "v3".into();
    }
    let d = replayed(&sim.log).divergence.expect("a divergence");
    assert_eq!((d.position, d.decision), (at as i64 + 1, at as i64 + 1));
    let image = |e: Option<Event>| match e {
        Some(Event::DeploymentStarted { image, .. }) => image,
        other => panic!("{other:?}"),
    };
    assert_eq!(image(d.logged.map(|p| p.event)), "v2");
    assert_eq!(image(d.now.map(|p| p.event)), "v3");
}

#[test]
fn a_decided_event_outside_any_decision_is_a_divergence() {
    let mut sim = deployed(2, DeploySpec::default());
    let forged = sim.log.len() as i64 + 1;
    sim.record(
        "web",
        vec![Event::ReplicaStopRequested {
            replica: "web-x".into(),
            service: "web".into(),
            host: "h1".into(),
            reason: "forged".into(),
        }],
    );
    let d = replayed(&sim.log).divergence.expect("a divergence");
    assert_eq!((d.position, d.decided), (forged, None));
    // Observations need no decision: a host joining is only folded.
    sim.log.pop();
    sim.record(
        "_hosts",
        vec![Event::HostJoined {
            host: "h2".into(),
            capacity: 8,
        }],
    );
    assert_eq!(replayed(&sim.log).divergence, None);
}

#[test]
fn from_and_to_bound_what_is_compared() {
    let sim = deployed(2, DeploySpec::default());
    let changed = Settings {
        drain_timeout_ms: 0,
    };
    let first = replay(&sim.log, with_settings(changed)).divergence.unwrap();
    // Up to before the decision that diverges: none.
    let to = Config {
        to: Some(first.decision - 1),
        ..with_settings(changed)
    };
    let report = replay(&sim.log, to);
    assert_eq!(report.divergence, None);
    assert!(report.to < first.decision);
    // Up to its first event: it is compared whole.
    let to = Config {
        to: Some(first.decision),
        ..with_settings(changed)
    };
    assert_eq!(replay(&sim.log, to).divergence, Some(first.clone()));
    // From after it: the next decision that drains is the first.
    let from = Config {
        from: first.position + 1,
        ..with_settings(changed)
    };
    let next = replay(&sim.log, from).divergence.unwrap();
    assert!(next.decision > first.position, "{next:?}");
    // From after the whole log: nothing compared, all of it folded.
    let from = Config {
        from: sim.log.len() as i64 + 1,
        ..with_settings(changed)
    };
    let report = replay(&sim.log, from);
    assert_eq!((report.decisions, report.divergence), (0, None));
    assert_eq!(report.events, sim.log.len() as u64);
}

#[test]
fn decisions_travel_in_metadata_as_json_and_messagepack() {
    let sim = deployed(2, DeploySpec::default());
    for e in sim.log.iter().filter(|e| e.meta.decided.is_some()) {
        let json: Meta = serde_json::from_str(&serde_json::to_string(&e.meta).unwrap()).unwrap();
        assert_eq!(json, e.meta);
        let packed = rmp_serde::to_vec_named(&e.meta).unwrap();
        let unpacked: Meta = rmp_serde::from_slice(&packed).unwrap();
        assert_eq!(unpacked, e.meta);
    }
}

#[test]
fn a_replay_query_out_of_bounds_names_its_field() {
    let query = |from, to, drain_timeout_ms| AuditReplayQuery {
        from,
        to,
        drain_timeout_ms,
    };
    for (bad, field) in [
        (query(Some(0), None, None), "from"),
        (query(None, Some(-1), None), "to"),
        (query(None, None, Some(-1)), "drain_timeout_ms"),
        (
            query(None, None, Some(MAX_DRAIN_TIMEOUT_MS + 1)),
            "drain_timeout_ms",
        ),
    ] {
        let error = bad.config().expect_err("out of bounds");
        assert!(error.starts_with(&format!("{field}:")), "{error}");
    }
    let config = query(None, Some(9), Some(0)).config().unwrap();
    assert_eq!((config.from, config.to), (1, Some(9)));
    assert_eq!(config.settings.map(|s| s.drain_timeout_ms), Some(0));
    assert_eq!(
        AuditReplayQuery::default().config(),
        Ok(Config {
            from: 1,
            ..Config::default()
        })
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Whatever order and delay facts arrive in, the log replays with no
    /// divergence.
    #[test]
    fn any_interleaving_replays_the_same(seed in any::<u64>(), replicas in 1u32..5, batch in 1u32..3) {
        let mut sim = Sim::new(replicas, batch.min(replicas));
        sim.deploy("v1").unwrap();
        sim.run_shuffled(400, seed);
        sim.deploy("v2").unwrap();
        sim.run_shuffled(600, seed.rotate_left(7));
        let report = replayed(&sim.log);
        prop_assert_eq!(report.divergence, None);
    }
}

#[path = "../../../bench/replay/measure.rs"]
mod measure;

/// `bench/replay/run.sh`: how fast decisions replay (ignored: no test
/// times anything).
#[test]
#[ignore = "a benchmark: bench/replay/run.sh"]
fn replay_benchmark() {
    measure::run();
}
