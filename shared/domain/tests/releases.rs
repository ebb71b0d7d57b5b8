//! Environments and releases in the pure core, given/when/then: a fleet of
//! two services in staging and production on a make-believe cluster.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use mentat_domain::command::{Apply, Command, Deploy, RejectKind, Rejection};
use mentat_domain::environment::{EnvironmentOverride, EnvironmentSpec, Environments};
use mentat_domain::event::{Event, EventEnvelope, Judgement, Meta, Metric};
use mentat_domain::planner::{self, Decision, World};
use mentat_domain::release::{
    self, ReleaseCreate, ReleaseDeploy, ReleasePromote, ReleaseRollback, ReleaseState,
};
use mentat_domain::spec::{DeploySpec, HealthSpec, RunSpec, ServiceSpec, Strategy, Thresholds};

use common::{service_facts, SETTINGS};

const SERVICES: [&str; 4] = ["api", "api@staging", "web", "web@staging"];

struct Fleet {
    world: World,
    log: Vec<EventEnvelope>,
    now: i64,
    started: BTreeMap<String, String>,
    /// Images that crash at start, or never get healthy ("unhealthy" in the name).
    crash: BTreeSet<String>,
    /// Each transaction, as the type names of its events.
    transactions: Vec<Vec<&'static str>>,
    /// The length of the log after each transaction.
    boundaries: Vec<usize>,
    /// Check after each transaction that no environment serves two
    /// images (off for `mt deploy` of one service, which rolls).
    strict: bool,
}

fn spec(name: &str) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        replicas: 2,
        run: RunSpec {
            command: vec!["app".into()],
            args: vec![],
            env: BTreeMap::from([("APP_VERSION".into(), "{image}".into())]),
        },
        health: HealthSpec {
            thresholds: Thresholds {
                enabled: false,
                ..Thresholds::default()
            },
            bake_secs: 0,
            ..HealthSpec::default()
        },
        deploy: DeploySpec {
            strategy: Strategy::Rolling,
            standby_secs: 30,
            ..DeploySpec::default()
        },
        route: Default::default(),
        audit: Default::default(),
        labels: Default::default(),
        environments: BTreeMap::from([
            (
                "staging".to_owned(),
                EnvironmentOverride {
                    replicas: Some(1),
                    ..Default::default()
                },
            ),
            ("production".to_owned(), EnvironmentOverride::default()),
        ]),
    }
}

fn environments() -> Environments {
    BTreeMap::from([
        ("staging".to_owned(), EnvironmentSpec::default()),
        (
            "production".to_owned(),
            EnvironmentSpec {
                protected: true,
                promote_from: Some("staging".into()),
                min_soak_secs: 0,
            },
        ),
    ])
}

fn apply(services: Vec<ServiceSpec>) -> Command {
    Command::Apply(Apply {
        command_id: None,
        signature: None,
        services,
        cluster: None,
        security: None,
        notify: None,
        environments: Some(environments()),
        source: None,
        actor: None,
        reason: None,
    })
}

fn create(tag: &str, images: &[(&str, &str)]) -> Command {
    Command::ReleaseCreate(ReleaseCreate {
        command_id: None,
        signature: None,
        tag: tag.into(),
        description: None,
        services: None,
        environments: None,
        images: images
            .iter()
            .map(|(s, i)| ((*s).to_owned(), (*i).to_owned()))
            .collect(),
        deploy_to: None,
        actor: Some("ana".into()),
        reason: None,
    })
}

fn deploy_release(tag: &str, env: &str, force: bool, reason: Option<&str>) -> Command {
    Command::ReleaseDeploy(ReleaseDeploy {
        command_id: None,
        signature: None,
        tag: tag.into(),
        environment: env.into(),
        force,
        actor: Some("ana".into()),
        reason: reason.map(str::to_owned),
    })
}

fn promote(tag: &str) -> Command {
    Command::ReleasePromote(ReleasePromote {
        command_id: None,
        signature: None,
        tag: tag.into(),
        from: "staging".into(),
        to: "production".into(),
        actor: Some("ana".into()),
        reason: Some("staging is green".into()),
    })
}

impl Fleet {
    /// web and api in staging (1 replica) and production (2), on v1, with
    /// release r1 serving in both.
    fn new() -> Fleet {
        let mut fleet = Fleet {
            world: World::default(),
            log: Vec::new(),
            now: 1_000_000,
            started: BTreeMap::new(),
            crash: BTreeSet::new(),
            transactions: Vec::new(),
            boundaries: Vec::new(),
            strict: true,
        };
        fleet.record(
            "_hosts",
            vec![Event::HostJoined {
                host: "h1".into(),
                capacity: 64,
            }],
        );
        fleet
            .command(&apply(vec![spec("web"), spec("api")]))
            .expect("applied");
        for service in SERVICES {
            let deploy = Command::Deploy(Deploy {
                command_id: None,
                signature: None,
                service: service.into(),
                image: "v1".into(),
                strategy: None,
                override_rollout: false,
                actor: None,
                reason: None,
            });
            fleet.command(&deploy).expect("v1 deployed");
        }
        fleet.run(100);
        fleet.command(&create("r1", &[])).expect("r1 created");
        fleet
            .command(&deploy_release("r1", "staging", false, None))
            .expect("r1 to staging");
        fleet.command(&promote("r1")).expect("r1 promoted");
        fleet.run(20);
        assert_eq!(fleet.live("staging"), Some("r1".into()));
        assert_eq!(fleet.live("production"), Some("r1".into()));
        fleet
    }

    /// [`Fleet::new`], then r2 (web and api on v2) switched in staging,
    /// r1 warm.
    fn with_r2_in_staging() -> Fleet {
        let mut fleet = Fleet::new();
        fleet
            .command(&create("r2", &[("web", "v2"), ("api", "v2")]))
            .expect("r2 created");
        fleet
            .command(&deploy_release("r2", "staging", false, None))
            .expect("r2 to staging");
        fleet.run(60);
        assert_eq!(fleet.live("staging"), Some("r2".into()));
        fleet
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
                meta: Meta::default(),
                event,
            };
            self.world.apply(&env);
            self.log.push(env);
        }
    }

    /// Record one transaction, and check after it that no environment
    /// serves two releases at once.
    fn transaction(&mut self, appends: Vec<planner::Append>) {
        let mut types = Vec::new();
        for a in appends {
            types.extend(a.events.iter().map(Event::type_name));
            self.record(&a.stream, a.events);
        }
        self.transactions.push(types);
        self.boundaries.push(self.log.len());
        for env in ["staging", "production"]
            .into_iter()
            .filter(|_| self.strict)
        {
            let images = self.serving(env);
            assert!(
                images.len() <= 1,
                "{env} serves {images:?} at once after {:?}",
                self.transactions.last()
            );
        }
    }

    fn command(&mut self, command: &Command) -> Result<Option<String>, Rejection> {
        let id = format!("d{}", self.log.len());
        match planner::handle(&self.world, command, &id, self.now) {
            Decision::Accept {
                appends,
                deployment_id,
                ..
            } => {
                self.transaction(appends);
                self.settle();
                Ok(deployment_id)
            }
            Decision::Reject(reason) => Err(reason),
        }
    }

    fn settle(&mut self) {
        loop {
            let mut quiet = true;
            for service in SERVICES {
                let events = planner::react(&self.world, service, self.now, SETTINGS);
                if !events.is_empty() {
                    quiet = false;
                    self.transaction(vec![planner::Append {
                        stream: service.into(),
                        events,
                    }]);
                }
            }
            let appends = release::react(&self.world, self.now, SETTINGS);
            if !appends.is_empty() {
                quiet = false;
                self.transaction(appends);
            }
            if quiet {
                return;
            }
        }
    }

    fn run(&mut self, rounds: usize) {
        for _ in 0..rounds {
            self.settle();
            let mut any = false;
            for service in SERVICES {
                let crash = self.crash.clone();
                let facts = service_facts(
                    &self.world.services[service],
                    service,
                    &mut self.started,
                    &Default::default(),
                    |r| crash.contains(&r.image),
                );
                any |= !facts.is_empty();
                for fact in facts {
                    self.transaction(vec![planner::Append {
                        stream: service.into(),
                        events: vec![fact],
                    }]);
                }
            }
            if !any {
                self.now += 100;
            }
        }
        self.settle();
    }

    fn live(&self, env: &str) -> Option<String> {
        self.world.releases.live(env).map(|(t, _)| t.to_owned())
    }

    /// Images with weight in `env`'s routing tables, across its services.
    fn serving(&self, env: &str) -> BTreeSet<String> {
        self.world
            .services
            .values()
            .filter(|s| {
                s.spec
                    .as_ref()
                    .is_some_and(|s| s.route.environment() == env)
            })
            .flat_map(|s| s.routes.iter().filter(|b| b.weight > 0))
            .map(|b| b.image.clone())
            .collect()
    }

    fn started_since(&self, from: usize) -> usize {
        self.log[from..]
            .iter()
            .filter(|e| matches!(e.event, Event::ReplicaStartRequested { .. }))
            .count()
    }
}

fn kind<T: std::fmt::Debug>(r: Result<T, Rejection>) -> RejectKind {
    r.expect_err("rejected").kind
}

#[test]
fn each_service_runs_once_per_environment_with_its_overrides() {
    let fleet = Fleet::new();
    assert_eq!(fleet.world.services["web@staging"].routes.len(), 1);
    assert_eq!(fleet.world.services["web"].routes.len(), 2);
    let staging = &fleet.world.services["web@staging"].routes[0].replica;
    assert!(staging.starts_with("web-staging-"), "{staging}");
    assert_eq!(
        fleet.world.services["web"].route.environment(),
        "production"
    );
}

#[test]
fn a_release_switches_every_service_of_its_environment_in_one_transaction() {
    // Given staging and production on r1
    let mut fleet = Fleet::new();
    fleet
        .command(&create("r2", &[("web", "v2"), ("api", "v2")]))
        .expect("r2 created");
    assert_eq!(fleet.world.releases.state("r2"), ReleaseState::Ready);
    // When r2 is deployed to staging
    let from = fleet.transactions.len();
    fleet
        .command(&deploy_release("r2", "staging", false, None))
        .expect("r2 to staging");
    fleet.run(100);
    // Then one transaction switched both services, each RouteChanged tagged
    // with the same switch of two changes
    let switch = fleet.log.iter().find_map(|e| match &e.event {
        Event::ReleaseSwitched(s) if s.tag == "r2" => Some(s.deployment_id.clone()),
        _ => None,
    });
    let switch = switch.expect("switched");
    let tagged: Vec<(&str, u32)> = fleet
        .log
        .iter()
        .filter_map(|e| match &e.event {
            Event::RouteChanged {
                switch: Some(s), ..
            } if s.id.starts_with(&switch) => Some((e.stream.as_str(), s.changes)),
            _ => None,
        })
        .collect();
    assert_eq!(tagged, [("api@staging", 2), ("web@staging", 2)]);
    let switched = fleet.transactions[from..]
        .iter()
        .find(|t| t.contains(&"ReleaseSwitched"))
        .expect("the switch's transaction");
    assert_eq!(
        switched.iter().filter(|t| **t == "RouteChanged").count(),
        2,
        "{switched:?}"
    );
    // And staging serves r2 (v2 everywhere), production still r1
    assert_eq!(fleet.live("staging"), Some("r2".into()));
    assert_eq!(fleet.serving("staging"), BTreeSet::from(["v2".into()]));
    assert_eq!(fleet.serving("production"), BTreeSet::from(["v1".into()]));
    assert_eq!(
        fleet.world.releases.state("r2"),
        ReleaseState::Deployed(vec!["staging".into()])
    );
    // And once the standby ends, the release deployment completes
    fleet.now += 31_000;
    fleet.run(50);
    assert!(fleet.world.releases.in_flight("staging").is_none());
    assert_eq!(fleet.serving("staging"), BTreeSet::from(["v2".into()]));
}

#[test]
fn a_member_that_never_gets_healthy_switches_nothing_and_is_named() {
    let mut fleet = Fleet::new();
    fleet
        .command(&create("r2", &[("web", "v2"), ("api", "v2-unhealthy")]))
        .expect("r2 created");
    fleet
        .command(&deploy_release("r2", "staging", false, None))
        .expect("r2 to staging");
    fleet.run(200);
    let failed = fleet.log.iter().find_map(|e| match &e.event {
        Event::ReleaseDeployFailed(f) => Some(f.clone()),
        _ => None,
    });
    let failed = failed.expect("the release failed");
    let named: Vec<&str> = failed.failures.iter().map(|f| f.service.as_str()).collect();
    assert_eq!(named, ["api@staging"], "{failed:?}");
    assert!(!failed.reverted);
    assert!(
        !fleet
            .log
            .iter()
            .any(|e| matches!(e.event, Event::ReleaseSwitched(ref s) if s.tag == "r2")),
        "nothing switched"
    );
    assert_eq!(fleet.live("staging"), Some("r1".into()));
    assert_eq!(fleet.serving("staging"), BTreeSet::from(["v1".into()]));
    assert_eq!(fleet.world.releases.state("r2"), ReleaseState::Ready);
    assert!(fleet.world.services["web@staging"].deployment.is_none());
}

#[test]
fn a_protected_environment_takes_only_what_went_through_staging() {
    let mut fleet = Fleet::new();
    fleet
        .command(&create("r2", &[("web", "v2")]))
        .expect("r2 created");
    // Without a reason
    assert_eq!(
        kind(fleet.command(&deploy_release("r2", "production", false, None))),
        RejectKind::Invalid
    );
    // Never in staging
    assert_eq!(
        kind(fleet.command(&deploy_release("r2", "production", false, Some("hotfix")))),
        RejectKind::NotPromoted
    );
    // Promote needs it deployed in staging
    assert_eq!(kind(fleet.command(&promote("r2"))), RejectKind::WrongPhase);
    // Forced, with a reason: accepted and recorded as forced
    fleet
        .command(&deploy_release("r2", "production", true, Some("hotfix")))
        .expect("forced");
    let forced = fleet.log.iter().rev().find_map(|e| match &e.event {
        Event::ReleaseDeployStarted(s) => Some(s.forced),
        _ => None,
    });
    assert_eq!(forced, Some(true));
}

#[test]
fn a_rollback_while_warm_is_one_switch_and_starts_nothing() {
    let mut fleet = Fleet::with_r2_in_staging();
    // When staging is rolled back while r1 is on standby
    let from = fleet.log.len();
    let rollback = Command::ReleaseRollback(ReleaseRollback {
        command_id: None,
        signature: None,
        environment: "staging".into(),
        to: None,
        actor: Some("ana".into()),
        reason: Some("bad".into()),
    });
    fleet.command(&rollback).expect("rolled back");
    // Then the first transaction switched both back and started nothing
    assert_eq!(fleet.started_since(from), 0);
    assert_eq!(fleet.live("staging"), Some("r1".into()));
    assert_eq!(fleet.serving("staging"), BTreeSet::from(["v1".into()]));
    let back = fleet.log[from..]
        .iter()
        .filter(
            |e| matches!(&e.event, Event::RouteChanged { switch: Some(s), .. } if s.changes == 2),
        )
        .count();
    assert_eq!(back, 2);
    fleet.run(60);
    assert_eq!(fleet.world.releases.state("r2"), ReleaseState::RolledBack);
    assert_eq!(fleet.started_since(from), 0);
}

#[test]
fn a_release_is_immutable_and_its_tag_unique() {
    let mut fleet = Fleet::new();
    fleet.command(&create("r2", &[("web", "v2")])).expect("r2");
    let hash = fleet.world.releases.by_tag["r2"].snapshot.hash.clone();
    // Editing what is applied changes no release
    let mut web = spec("web");
    web.replicas = 3;
    fleet
        .command(&apply(vec![web, spec("api")]))
        .expect("applied");
    assert_eq!(fleet.world.releases.by_tag["r2"].snapshot.hash, hash);
    assert_eq!(
        kind(fleet.command(&create("r2", &[("web", "v3")]))),
        RejectKind::TagTaken
    );
}

#[test]
fn bad_input_is_rejected_by_kind_naming_it_and_changes_nothing() {
    let mut fleet = Fleet::new();
    let before = fleet.log.len();
    let e = fleet
        .command(&create("r2", &[("cache", "v2")]))
        .expect_err("unknown service");
    assert_eq!(e.kind, RejectKind::UnknownService);
    assert!(e.reason.contains("`cache`"), "{e}");
    let e = fleet
        .command(&deploy_release("r1", "qa", false, None))
        .expect_err("unknown environment");
    assert_eq!(e.kind, RejectKind::UnknownEnvironment);
    assert!(e.reason.contains("`qa`"), "{e}");
    let e = fleet
        .command(&deploy_release("r9", "staging", false, None))
        .expect_err("unknown tag");
    assert_eq!(e.kind, RejectKind::UnknownRelease);
    assert!(e.reason.contains("`r9`"), "{e}");
    let e = fleet
        .command(&Command::Deploy(Deploy {
            command_id: None,
            signature: None,
            service: "web@qa".into(),
            image: "v2".into(),
            strategy: None,
            override_rollout: false,
            actor: None,
            reason: None,
        }))
        .expect_err("unknown service in an environment");
    assert_eq!(e.kind, RejectKind::UnknownService);
    // A release made from a file that lacks api, deployed where api runs
    let only_web = Command::ReleaseCreate(ReleaseCreate {
        services: Some(vec![spec("web")]),
        ..match create("web-only", &[("web", "v2")]) {
            Command::ReleaseCreate(c) => c,
            _ => unreachable!(),
        }
    });
    fleet.command(&only_web).expect("created");
    let after_create = fleet.log.len();
    let e = fleet
        .command(&deploy_release("web-only", "staging", false, None))
        .expect_err("lacks api");
    assert_eq!(e.kind, RejectKind::UnknownService);
    assert!(e.reason.contains("api@staging"), "{e}");
    assert_eq!(fleet.log.len(), after_create, "nothing recorded");
    assert_eq!(after_create, before + 1, "only the one release created");
}

#[test]
fn web_at_production_is_web() {
    let mut fleet = Fleet::new();
    fleet.strict = false;
    let deploy = Command::Deploy(Deploy {
        command_id: None,
        signature: None,
        service: "web@production".into(),
        image: "v3".into(),
        strategy: None,
        override_rollout: false,
        actor: None,
        reason: None,
    });
    fleet.command(&deploy).expect("deployed");
    assert!(fleet.world.services["web"].deployment.is_some());
    // And it is recorded as a release derived from production's live one
    let derived = fleet
        .world
        .releases
        .order
        .last()
        .cloned()
        .expect("a release");
    let snapshot = &fleet.world.releases.by_tag[&derived].snapshot;
    assert_eq!(snapshot.derived_from.as_deref(), Some("r1"));
    assert_eq!(snapshot.images["web"], "v3");
    fleet.run(100);
    assert_eq!(fleet.live("production"), Some(derived));
}

#[test]
fn a_planner_restarted_at_any_step_of_a_promote_never_splits_an_environment() {
    // Given r2 serving in staging, promoted to production
    let mut fleet = Fleet::new();
    fleet
        .command(&create("r2", &[("web", "v2"), ("api", "v2")]))
        .expect("r2 created");
    fleet
        .command(&deploy_release("r2", "staging", false, None))
        .expect("r2 to staging");
    fleet.run(60);
    let from = fleet.boundaries.len();
    fleet.command(&promote("r2")).expect("promoted");
    fleet.run(60);
    fleet.now += 31_000;
    fleet.run(100);
    assert_eq!(fleet.live("production"), Some("r2".into()));
    // When the planner restarts after any transaction of the promote (its
    // world rebuilt from the log alone), then it carries on to production
    // on r2, and no transaction leaves production on two releases (checked
    // by `transaction`)
    let cuts: Vec<usize> = fleet.boundaries[from..].to_vec();
    assert!(cuts.len() > 10, "{} transactions", cuts.len());
    for cut in cuts {
        let mut again = Fleet {
            world: World::default(),
            log: Vec::new(),
            now: fleet.log[cut - 1].recorded_at_ms,
            started: BTreeMap::new(),
            crash: BTreeSet::new(),
            transactions: Vec::new(),
            boundaries: Vec::new(),
            strict: true,
        };
        for e in &fleet.log[..cut] {
            again.world.apply(e);
            again.log.push(e.clone());
            if let Event::ReplicaStarted { replica, .. } = &e.event {
                again.started.insert(replica.clone(), String::new());
            }
        }
        again.run(60);
        again.now += 31_000;
        again.run(100);
        assert_eq!(again.live("production"), Some("r2".into()), "cut at {cut}");
        assert_eq!(
            again.serving("production"),
            BTreeSet::from(["v2".into()]),
            "cut at {cut}"
        );
    }
}

#[test]
fn a_breach_after_the_switch_reverts_the_whole_release_in_one_switch() {
    // Given r2 serving in staging, r1 warm
    let mut fleet = Fleet::with_r2_in_staging();
    // When web's new version breaches a threshold in staging
    let from = fleet.log.len();
    let breach = Event::ThresholdBreached {
        service: "web@staging".into(),
        deployment_id: None,
        version: "v2".into(),
        judgement: Judgement {
            metric: Metric::ErrorRate,
            observed: 5000,
            threshold: 500,
            baseline: None,
            window_secs: 10,
            requests: 100,
        },
    };
    fleet.transaction(vec![planner::Append {
        stream: "web@staging".into(),
        events: vec![breach],
    }]);
    fleet.settle();
    // Then both services went back to r1 in one switch, starting nothing
    assert_eq!(fleet.started_since(from), 0);
    assert_eq!(fleet.live("staging"), Some("r1".into()));
    assert_eq!(fleet.serving("staging"), BTreeSet::from(["v1".into()]));
    let failed = fleet.log[from..].iter().find_map(|e| match &e.event {
        Event::ReleaseDeployFailed(f) => Some(f.clone()),
        _ => None,
    });
    let failed = failed.expect("reverted");
    assert!(failed.reverted && !failed.rolled_back, "{failed:?}");
    assert_eq!(failed.failures[0].service, "web@staging");
    let back: Vec<&str> = fleet.log[from..]
        .iter()
        .filter(
            |e| matches!(&e.event, Event::RouteChanged { switch: Some(s), .. } if s.changes == 2),
        )
        .map(|e| e.stream.as_str())
        .collect();
    assert_eq!(back, ["api@staging", "web@staging"]);
}

#[test]
fn a_failed_release_records_the_definitions_it_replaced_again() {
    // Given staging on r1
    let mut fleet = Fleet::new();
    let before = fleet.world.services["web@staging"].spec.clone();
    // When a release that changes web's environment and whose api never
    // gets healthy is deployed to staging
    let with_env = |name: &str| {
        let mut s = spec(name);
        s.run.env.insert("FEATURE".into(), "on".into());
        s
    };
    let r2 = Command::ReleaseCreate(ReleaseCreate {
        services: Some(vec![with_env("web"), with_env("api")]),
        ..match create("r2", &[("web", "v2"), ("api", "v2-unhealthy")]) {
            Command::ReleaseCreate(c) => c,
            _ => unreachable!(),
        }
    });
    fleet.command(&r2).expect("r2 created");
    fleet
        .command(&deploy_release("r2", "staging", false, None))
        .expect("r2 to staging");
    assert_ne!(fleet.world.services["web@staging"].spec, before);
    fleet.run(200);
    // Then it failed, and web is defined as it was
    assert_eq!(fleet.world.releases.in_flight("staging"), None);
    assert_eq!(fleet.live("staging"), Some("r1".into()));
    assert_eq!(fleet.world.services["web@staging"].spec, before);
    assert_eq!(fleet.serving("staging"), BTreeSet::from(["v1".into()]));
}
