//! Fleet rollouts in the pure core, given/when/then: a fleet of services
//! on a make-believe cluster that answers every intent, the planner's
//! decisions for each service and for the rollout taken until quiet.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{service_facts, SETTINGS};
use mentat_domain::command::{Apply, Command, Deploy, RejectKind, Rejection};
use mentat_domain::event::{Event, EventEnvelope, Meta, ROLLOUTS_STREAM};
use mentat_domain::planner::{self, Decision, World};
use mentat_domain::rollout::{self, RolloutControl, RolloutStart, RolloutState, TargetState};
use mentat_domain::spec::{HealthSpec, RunSpec, ServiceSpec, Thresholds};

const BAD: &str = "v2";

/// A fleet of services `s01`.. with one replica each, labelled
/// `kind=edge`, serving v1. A service in `bad` crashes on image v2.
struct Fleet {
    world: World,
    log: Vec<EventEnvelope>,
    now: i64,
    started: BTreeMap<String, String>,
    bad: BTreeSet<String>,
    ids: u64,
}

fn spec(name: &str, labels: &[(&str, &str)]) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        replicas: 1,
        run: RunSpec {
            command: vec!["app".into()],
            args: vec![],
            env: BTreeMap::new(),
        },
        health: HealthSpec {
            thresholds: Thresholds {
                enabled: false,
                ..Thresholds::default()
            },
            bake_secs: 0,
            ..HealthSpec::default()
        },
        deploy: Default::default(),
        route: Default::default(),
        audit: Default::default(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        environments: Default::default(),
    }
}

impl Fleet {
    fn new(n: usize) -> Fleet {
        let mut fleet = Fleet {
            world: World::default(),
            log: Vec::new(),
            now: 1_000_000,
            started: BTreeMap::new(),
            bad: BTreeSet::new(),
            ids: 0,
        };
        fleet.record(
            "_hosts",
            vec![Event::HostJoined {
                host: "h1".into(),
                capacity: 1000,
            }],
        );
        let mut services: Vec<ServiceSpec> = (1..=n)
            .map(|i| spec(&format!("s{i:02}"), &[("kind", "edge")]))
            .collect();
        services.push(spec("core", &[("kind", "core")]));
        fleet
            .command(&Command::Apply(Apply {
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
            }))
            .expect("apply");
        for name in fleet.names() {
            fleet.deploy(&name, "v1", false).expect("deploy v1");
        }
        fleet.run(200);
        for name in fleet.names() {
            assert_eq!(fleet.world.services[&name].image.as_deref(), Some("v1"));
        }
        fleet
    }

    fn names(&self) -> Vec<String> {
        self.world.services.keys().cloned().collect()
    }

    fn record(&mut self, stream: &str, events: Vec<Event>) {
        for event in events {
            let position = self.log.len() as i64 + 1;
            let env = EventEnvelope {
                id: format!("e{position}"),
                position,
                stream: stream.to_owned(),
                version: 0,
                schema_version: 1,
                recorded_at_ms: self.now,
                meta: Meta {
                    actor: Some("ana".into()),
                    reason: Some("fleet".into()),
                    ..Meta::default()
                },
                event,
            };
            self.world.apply(&env);
            self.log.push(env);
        }
    }

    fn command(&mut self, command: &Command) -> Result<String, Rejection> {
        self.ids += 1;
        let id = format!("c{}", self.ids);
        match planner::handle(&self.world, command, &id, self.now) {
            Decision::Accept {
                appends, message, ..
            } => {
                for a in appends {
                    self.record(&a.stream, a.events);
                }
                Ok(message)
            }
            Decision::Reject(r) => Err(r),
        }
    }

    fn deploy(
        &mut self,
        service: &str,
        image: &str,
        override_rollout: bool,
    ) -> Result<String, Rejection> {
        self.command(&Command::Deploy(Deploy {
            command_id: None,
            signature: None,
            service: service.into(),
            image: image.into(),
            strategy: None,
            override_rollout,
            actor: Some("ana".into()),
            reason: None,
        }))
    }

    fn start(&mut self, waves: &[u32], bake: u64) -> Result<String, Rejection> {
        self.command(&Command::RolloutStart(RolloutStart {
            image: BAD.into(),
            select: Some("kind=edge".into()),
            waves: waves.to_vec(),
            wave_bake_secs: Some(bake),
            actor: Some("ana".into()),
            ..RolloutStart::default()
        }))
    }

    fn control(
        &mut self,
        make: fn(RolloutControl) -> Command,
        retry_failed: bool,
    ) -> Result<String, Rejection> {
        self.command(&make(RolloutControl {
            retry_failed,
            ..RolloutControl::default()
        }))
    }

    /// Let the planner decide, for every service and the rollout, until quiet.
    fn settle(&mut self) {
        loop {
            let mut any = false;
            for name in self.names() {
                let events = planner::react(&self.world, &name, self.now, SETTINGS);
                if !events.is_empty() {
                    any = true;
                    self.record(&name, events);
                }
            }
            let mut ids = self.ids;
            let appends = rollout::react(&self.world, self.now, &mut || {
                ids += 1;
                format!("r{ids}")
            });
            self.ids = ids;
            for a in appends {
                any = true;
                self.record(&a.stream, a.events);
            }
            if !any {
                return;
            }
        }
    }

    /// Answer every intent, let the planner react; time moves 100 ms a round.
    fn run(&mut self, rounds: usize) {
        for _ in 0..rounds {
            self.settle();
            let mut all = Vec::new();
            for name in self.names() {
                let bad = self.bad.contains(&name);
                let crashes = |r: &mentat_domain::planner::Replica| bad && r.image == BAD;
                let facts = service_facts(
                    &self.world.services[&name],
                    &name,
                    &mut self.started,
                    &BTreeSet::new(),
                    crashes,
                );
                all.push((name, facts));
            }
            if all.iter().all(|(_, f)| f.is_empty()) {
                self.now += 100;
            }
            for (name, facts) in all {
                self.record(&name, facts);
            }
        }
        self.settle();
    }

    fn rollout_events(&self) -> Vec<&Event> {
        self.log
            .iter()
            .filter(|e| e.stream == ROLLOUTS_STREAM)
            .map(|e| &e.event)
            .collect()
    }

    fn types(&self) -> Vec<&'static str> {
        self.rollout_events()
            .iter()
            .map(|e| e.type_name())
            .filter(|t| *t != "RolloutTargetDeployed")
            .collect()
    }

    /// How many deployments of `service` to `image` the log holds.
    fn deployments(&self, service: &str, image: &str) -> usize {
        self.log
            .iter()
            .filter(|e| {
                matches!(&e.event, Event::DeploymentStarted { service: s, image: i, .. }
                    if s == service && i == image)
            })
            .count()
    }

    fn state(&self) -> RolloutState {
        self.world.rollouts.last.as_ref().expect("a rollout").state
    }

    fn target(&self, service: &str) -> TargetState {
        let r = self.world.rollouts.last.as_ref().expect("a rollout");
        rollout::view::target_state(&self.world, service, &r.targets[service]).0
    }

    /// The world folded again from the log, as a restarted planner does.
    fn replayed(&self) -> World {
        let mut world = World::default();
        for e in &self.log {
            world.apply(e);
        }
        world
    }
}

#[test]
fn ten_services_roll_out_in_three_waves_each_deployed_once() {
    // Given ten edge services on v1 and one core service
    let mut fleet = Fleet::new(10);
    // When a rollout of v2 to kind=edge starts in waves of 10, 50, 100 percent
    let message = fleet.start(&[10, 50, 100], 0).expect("started");
    assert!(message.contains("10 target(s) in 3 wave(s)"), "{message}");
    fleet.run(400);
    // Then every wave started and completed in order, and the rollout completed
    assert_eq!(fleet.state(), RolloutState::Completed);
    assert_eq!(
        fleet.types(),
        [
            "RolloutStarted",
            "RolloutWaveStarted",
            "RolloutWaveCompleted",
            "RolloutWaveStarted",
            "RolloutWaveCompleted",
            "RolloutWaveStarted",
            "RolloutWaveCompleted",
            "RolloutCompleted"
        ]
    );
    let sizes: Vec<usize> = fleet
        .rollout_events()
        .iter()
        .filter_map(|e| match e {
            Event::RolloutWaveStarted { members, .. } => Some(members.len()),
            _ => None,
        })
        .collect();
    assert_eq!(sizes, [1, 4, 5]);
    // And each edge service was deployed exactly once, the core one never
    for i in 1..=10 {
        let name = format!("s{i:02}");
        assert_eq!(fleet.deployments(&name, BAD), 1, "{name}");
        assert_eq!(fleet.world.services[&name].image.as_deref(), Some(BAD));
    }
    assert_eq!(fleet.deployments("core", BAD), 0);
    // And a replay of the log gives the same rollouts, with nothing left to decide
    let replayed = fleet.replayed();
    assert_eq!(replayed.rollouts, fleet.world.rollouts);
    assert!(rollout::react(&replayed, fleet.now, &mut || "x".into()).is_empty());
}

#[test]
fn a_failed_target_pauses_the_rollout_and_later_waves_wait() {
    // Given ten edge services, s04 crashing on v2 (it is in the second wave)
    let mut fleet = Fleet::new(10);
    fleet.bad.insert("s04".into());
    // When the rollout runs
    fleet.start(&[10, 50, 100], 0).expect("started");
    fleet.run(400);
    // Then it paused naming s04 and why
    assert_eq!(fleet.state(), RolloutState::Paused);
    let paused = fleet
        .rollout_events()
        .into_iter()
        .find_map(|e| match e {
            Event::RolloutPaused {
                failed,
                wave,
                by_operator: false,
                ..
            } => Some((failed.clone(), *wave)),
            _ => None,
        })
        .expect("paused");
    assert_eq!(paused.1, 2);
    assert_eq!(paused.0.len(), 1);
    assert_eq!(paused.0[0].service, "s04");
    assert!(paused.0[0].reason.contains("reverted"), "{:?}", paused.0);
    assert_eq!(fleet.target("s04"), TargetState::Failed);
    // And the third wave was never touched
    for name in ["s06", "s07", "s08", "s09", "s10"] {
        assert_eq!(fleet.deployments(name, BAD), 0, "{name}");
        assert_eq!(fleet.target(name), TargetState::Pending);
    }
    // And s04 is back on v1 by its own deployment's revert
    assert_eq!(fleet.world.services["s04"].image.as_deref(), Some("v1"));
    // When a second rollout starts, or a paused one is paused
    let e = fleet.start(&[100], 0).expect_err("a second start");
    // Then each is illegal, naming the legal operations
    assert_eq!(e.kind, RejectKind::IllegalState);
    assert!(
        e.reason.contains("paused") && e.reason.contains("resume, cancel, rollback-all"),
        "{e}"
    );
    let e = fleet
        .control(Command::RolloutPause, false)
        .expect_err("pause while paused");
    assert_eq!(e.kind, RejectKind::IllegalState);
    // When the operator resumes
    fleet
        .control(Command::RolloutResume, false)
        .expect("resumed");
    fleet.run(400);
    // Then the rollout goes on and completes; s04 stays where it was
    assert_eq!(
        fleet.state(),
        RolloutState::Completed,
        "{:?}",
        fleet.types()
    );
    assert_eq!(fleet.deployments("s04", BAD), 1);
    assert_eq!(fleet.world.services["s10"].image.as_deref(), Some(BAD));
    assert_eq!(fleet.world.services["s04"].image.as_deref(), Some("v1"));
}

#[test]
fn rollback_all_reverts_exactly_the_targets_that_took_the_image() {
    // Given a rollout paused in its second wave by s04
    let mut fleet = Fleet::new(10);
    fleet.bad.insert("s04".into());
    fleet.start(&[10, 50, 100], 0).expect("started");
    fleet.run(400);
    assert_eq!(fleet.state(), RolloutState::Paused);
    let took: Vec<String> = ["s01", "s02", "s03", "s05"].map(String::from).to_vec();
    for name in &took {
        assert_eq!(fleet.target(name), TargetState::Completed, "{name}");
    }
    // When the operator rolls back all
    let message = fleet
        .control(Command::RolloutRollbackAll, false)
        .expect("rollback-all");
    assert!(message.contains("4 target(s)"), "{message}");
    assert_eq!(fleet.state(), RolloutState::RollingBack);
    // Then nothing but waiting is legal meanwhile
    let e = fleet
        .control(Command::RolloutCancel, false)
        .expect_err("cancel");
    assert_eq!(e.kind, RejectKind::IllegalState);
    assert!(e.reason.contains("wait"), "{e}");
    fleet.run(400);
    // Then exactly those four are back on v1, s04 untouched, the rest never moved
    assert_eq!(fleet.state(), RolloutState::RolledBack);
    // And the waves read as they ended: the first done, the second stopped
    // where it was, the third never begun
    let shown = mentat_domain::rollout::view::status(&fleet.world).expect("a rollout");
    let waves: Vec<&str> = shown.waves.iter().map(|w| w.state.as_str()).collect();
    assert_eq!(waves, ["completed", "stopped", "pending"]);
    let done = fleet
        .rollout_events()
        .into_iter()
        .find_map(|e| match e {
            Event::RolloutRollbackCompleted {
                reverted, failed, ..
            } => Some((*reverted, failed.clone())),
            _ => None,
        })
        .expect("rollback completed");
    assert_eq!(done, (4, Vec::new()));
    for name in &took {
        assert_eq!(
            fleet.deployments(name, "v1"),
            2,
            "{name}: first deploy and rollback"
        );
        assert_eq!(fleet.target(name), TargetState::Reverted);
    }
    assert_eq!(fleet.deployments("s04", "v1"), 1, "s04 reverted by itself");
    for i in 1..=10 {
        let name = format!("s{i:02}");
        assert_eq!(
            fleet.world.services[&name].image.as_deref(),
            Some("v1"),
            "{name}"
        );
    }
    // And a new rollout may start
    fleet.bad.clear();
    fleet.start(&[100], 0).expect("a new rollout");
}

#[test]
fn resume_with_retry_deploys_the_failed_targets_again() {
    let mut fleet = Fleet::new(3);
    fleet.bad.insert("s02".into());
    fleet.start(&[1, 100], 0).expect("started");
    fleet.run(300);
    assert_eq!(fleet.state(), RolloutState::Paused);
    // When the cause is fixed and the operator resumes with --retry-failed
    fleet.bad.clear();
    let message = fleet
        .control(Command::RolloutResume, true)
        .expect("resumed");
    assert!(
        message.contains("1 failed target(s) deployed again"),
        "{message}"
    );
    fleet.run(300);
    // Then s02 was deployed a second time and the rollout completed
    assert_eq!(fleet.state(), RolloutState::Completed);
    assert_eq!(fleet.deployments("s02", BAD), 2);
    assert_eq!(fleet.world.services["s02"].image.as_deref(), Some(BAD));
    // And retry_failed belongs to resume alone
    let e = fleet
        .control(Command::RolloutCancel, true)
        .expect_err("cancel --retry-failed");
    assert_eq!(e.kind, RejectKind::Invalid);
}

#[test]
fn a_wave_completes_only_after_its_bake() {
    let mut fleet = Fleet::new(2);
    fleet.start(&[50, 100], 30).expect("started");
    fleet.run(100);
    // Then the first wave's target completed, and the wave bakes
    assert_eq!(fleet.target("s01"), TargetState::Completed);
    let r = fleet.world.rollouts.last.clone().expect("rollout");
    let until = r.bake_until_ms.expect("baking");
    assert_eq!(r.waves_completed, 0);
    assert_eq!(rollout::next_deadline(&fleet.world), Some(until));
    assert_eq!(
        fleet.deployments("s02", BAD),
        0,
        "the next wave waits for the bake"
    );
    // When the bake is over
    fleet.now = until;
    fleet.run(100);
    assert_eq!(
        fleet.deployments("s02", BAD),
        1,
        "the second wave after the bake"
    );
    fleet.now += 30_000;
    fleet.run(100);
    assert_eq!(fleet.state(), RolloutState::Completed);
}

#[test]
fn a_breach_of_an_earlier_wave_pauses_the_rollout() {
    let mut fleet = Fleet::new(2);
    fleet.start(&[50, 100], 30).expect("started");
    fleet.run(100);
    assert_eq!(fleet.target("s01"), TargetState::Completed);
    // When the health-watcher reports a breach of v2 on s01
    fleet.record(
        "s01",
        vec![Event::ThresholdBreached {
            service: "s01".into(),
            deployment_id: None,
            version: BAD.into(),
            judgement: mentat_domain::event::Judgement {
                metric: mentat_domain::event::Metric::ErrorRate,
                observed: 5000,
                threshold: 500,
                baseline: None,
                window_secs: 10,
                requests: 100,
            },
        }],
    );
    fleet.run(10);
    // Then the rollout pauses naming it
    assert_eq!(fleet.state(), RolloutState::Paused);
    let r = fleet.world.rollouts.last.as_ref().expect("rollout");
    let why = &r.paused.as_ref().expect("paused").1;
    assert!(why.contains("s01") && why.contains("breached"), "{why}");
    // And resuming does not pause again for the breach it has seen
    fleet
        .control(Command::RolloutResume, false)
        .expect("resumed");
    for _ in 0..3 {
        fleet.now += 31_000;
        fleet.run(100);
    }
    assert_eq!(fleet.state(), RolloutState::Completed);
}

#[test]
fn a_retry_deploys_a_failed_target_of_an_earlier_wave_again() {
    // Given a rollout in its second wave, paused by a breach of s01, from its first
    let mut fleet = Fleet::new(2);
    fleet.start(&[50, 100], 30).expect("started");
    fleet.run(100);
    fleet.now += 31_000;
    fleet.run(100);
    assert_eq!(fleet.world.rollouts.last.as_ref().expect("rollout").wave, 2);
    assert_eq!(fleet.target("s02"), TargetState::Completed);
    fleet.record(
        "s01",
        vec![Event::ThresholdBreached {
            service: "s01".into(),
            deployment_id: None,
            version: BAD.into(),
            judgement: mentat_domain::event::Judgement {
                metric: mentat_domain::event::Metric::ErrorRate,
                observed: 5000,
                threshold: 500,
                baseline: None,
                window_secs: 10,
                requests: 100,
            },
        }],
    );
    fleet.run(10);
    assert_eq!(fleet.state(), RolloutState::Paused);
    // When the operator resumes with --retry-failed
    fleet
        .control(Command::RolloutResume, true)
        .expect("resumed");
    for _ in 0..3 {
        fleet.now += 31_000;
        fleet.run(100);
    }
    // Then s01 was deployed again before the rollout went on to the end
    assert_eq!(fleet.deployments("s01", BAD), 2);
    assert_eq!(fleet.state(), RolloutState::Completed);
}

#[test]
fn a_deploy_to_a_target_is_rejected_unless_it_overrides_the_rollout() {
    let mut fleet = Fleet::new(3);
    fleet.start(&[1, 100], 3600).expect("started");
    fleet.run(100);
    // When s03, in the second wave, is deployed by hand
    let e = fleet.deploy("s03", "v3", false).expect_err("rejected");
    assert_eq!(e.kind, RejectKind::RolloutInFlight);
    assert!(e.reason.contains("--override-rollout"), "{e}");
    // Then a service outside the rollout is not concerned
    fleet
        .deploy("core", "v3", false)
        .expect("core is no target");
    // And with the override it is accepted, recorded, and left alone
    fleet.deploy("s03", "v3", true).expect("overridden");
    assert!(fleet
        .rollout_events()
        .iter()
        .any(|e| matches!(e, Event::RolloutTargetOverridden { service, .. } if service == "s03")));
    fleet
        .control(Command::RolloutCancel, false)
        .expect("cancelled");
    assert_eq!(fleet.state(), RolloutState::Cancelled);
    fleet.run(200);
    assert_eq!(fleet.target("s03"), TargetState::Overridden);
    assert_eq!(fleet.deployments("s03", BAD), 0);
    assert_eq!(fleet.world.services["s03"].image.as_deref(), Some("v3"));
    // And after the cancel the new image stays where it succeeded
    assert_eq!(fleet.world.services["s01"].image.as_deref(), Some(BAD));
}

#[test]
fn a_start_names_what_is_wrong_and_changes_nothing() {
    let mut fleet = Fleet::new(3);
    let before = fleet.log.len();
    let start = |select: Option<&str>, services: &[&str]| {
        Command::RolloutStart(RolloutStart {
            image: BAD.into(),
            select: select.map(str::to_owned),
            services: services.iter().map(|s| (*s).to_owned()).collect(),
            ..RolloutStart::default()
        })
    };
    let kind = |f: &mut Fleet, c: &Command| f.command(c).expect_err("rejected").kind;
    assert_eq!(
        kind(&mut fleet, &start(Some("kind=none"), &[])),
        RejectKind::NothingToDo
    );
    assert_eq!(
        kind(&mut fleet, &start(Some("kind"), &[])),
        RejectKind::Invalid
    );
    assert_eq!(kind(&mut fleet, &start(None, &[])), RejectKind::Invalid);
    assert_eq!(
        kind(&mut fleet, &start(Some("kind=edge"), &["s01"])),
        RejectKind::Invalid
    );
    assert_eq!(
        kind(&mut fleet, &start(None, &["s01", "nope"])),
        RejectKind::UnknownService
    );
    assert_eq!(
        kind(&mut fleet, &start(None, &["s01", "s01"])),
        RejectKind::Invalid
    );
    let bad_waves = Command::RolloutStart(RolloutStart {
        image: BAD.into(),
        services: vec!["s01".into()],
        waves: vec![10, 50],
        ..RolloutStart::default()
    });
    let e = fleet.command(&bad_waves).expect_err("waves");
    assert!(e.reason.starts_with("waves: "), "{e}");
    // Every service already on the image: nothing to do
    let on_v1 = Command::RolloutStart(RolloutStart {
        image: "v1".into(),
        select: Some("kind=edge".into()),
        ..RolloutStart::default()
    });
    assert_eq!(kind(&mut fleet, &on_v1), RejectKind::NothingToDo);
    // A dry run answers with the waves and records nothing
    let dry = Command::RolloutStart(RolloutStart {
        image: BAD.into(),
        services: vec!["s03".into(), "s01".into(), "s02".into()],
        dry_run: true,
        ..RolloutStart::default()
    });
    let message = fleet.command(&dry).expect("dry run");
    assert!(
        message.contains("wave 1 (1%, 1 target(s)): s01"),
        "{message}"
    );
    assert!(
        message.contains("wave 3 (100%, 1 target(s)): s03"),
        "{message}"
    );
    assert_eq!(fleet.log.len(), before, "nothing recorded");
    assert!(fleet.world.rollouts.last.is_none());
    // And with no rollout, only start is legal
    let e = fleet
        .control(Command::RolloutResume, false)
        .expect_err("resume");
    assert_eq!(e.kind, RejectKind::IllegalState);
    assert!(
        e.reason.contains("idle") && e.reason.ends_with("legal: start"),
        "{e}"
    );
}

#[test]
fn targets_already_on_the_image_are_left_out() {
    let mut fleet = Fleet::new(3);
    fleet.deploy("s02", BAD, false).expect("s02 to v2");
    fleet.run(100);
    let message = fleet.start(&[100], 0).expect("started");
    assert!(message.contains("2 target(s)"), "{message}");
    assert!(message.contains("already on the image: s02"), "{message}");
    let r = fleet.world.rollouts.last.as_ref().expect("rollout");
    assert!(!r.targets.contains_key("s02"));
    assert_eq!(r.targets["s01"].previous_image.as_deref(), Some("v1"));
}
