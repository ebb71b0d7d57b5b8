//! Given/when/then scenarios for the rolling strategy, driven through the
//! pure planner core with a simulated cluster that answers every intent.

use std::collections::BTreeMap;

use mentat_domain::command::{Apply, Command, Deploy, Outcome, Rollback};
use mentat_domain::event::{Event, EventEnvelope, ExitStatus, Meta};
use mentat_domain::planner::{self, Decision, Settings, World};
use mentat_domain::spec::{DeploySpec, HealthSpec, RunSpec, ServiceSpec};
use proptest::prelude::*;

const SETTINGS: Settings = Settings {
    drain_timeout_ms: 5_000,
};

/// A planner and a make-believe cluster: replicas of images containing
/// "crash" exit at start, "unhealthy" never pass their probe.
struct Sim {
    world: World,
    log: Vec<EventEnvelope>,
    now: i64,
    started: BTreeMap<String, String>,
    /// Routed replica counts observed after every event.
    routed_counts: Vec<usize>,
    /// Images that ever received traffic.
    routed_images: Vec<String>,
}

impl Sim {
    fn new(replicas: u32, max_unavailable: u32) -> Self {
        let mut sim = Sim {
            world: World::default(),
            log: Vec::new(),
            now: 1_000_000,
            started: BTreeMap::new(),
            routed_counts: Vec::new(),
            routed_images: Vec::new(),
        };
        sim.record(
            "_hosts",
            vec![Event::HostJoined {
                host: "h1".into(),
                capacity: 64,
            }],
        );
        let spec = ServiceSpec {
            name: "web".into(),
            replicas,
            run: RunSpec {
                command: vec!["app".into()],
                args: vec![],
                env: BTreeMap::from([("APP_VERSION".into(), "{image}".into())]),
            },
            health: HealthSpec::default(),
            deploy: DeploySpec {
                max_unavailable,
                ..DeploySpec::default()
            },
            route: Default::default(),
        };
        let apply = Command::Apply(Apply {
            command_id: None,
            services: vec![spec],
            source: None,
            actor: None,
            reason: None,
        });
        sim.command(&apply).expect("apply accepted");
        sim
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
            let s = &self.world.services.get("web");
            if let Some(s) = s {
                self.routed_counts.push(s.routes.len());
                for b in &s.routes {
                    if !self.routed_images.contains(&b.image) {
                        self.routed_images.push(b.image.clone());
                    }
                }
            }
        }
    }

    fn command(&mut self, command: &Command) -> Result<Option<String>, String> {
        let id = format!("d{}", self.log.len());
        match planner::handle(&self.world, command, &id, self.now) {
            Decision::Accept {
                appends,
                deployment_id,
                ..
            } => {
                for a in appends {
                    self.record(&a.stream, a.events);
                }
                Ok(deployment_id)
            }
            Decision::Reject(reason) => Err(reason),
        }
    }

    fn deploy(&mut self, image: &str) -> Result<String, String> {
        let cmd = Command::Deploy(Deploy {
            command_id: None,
            service: "web".into(),
            image: image.into(),
            strategy: None,
            actor: Some("test".into()),
            reason: None,
        });
        self.command(&cmd).map(|id| id.expect("deployment id"))
    }

    /// Let the planner decide until it has nothing more to say.
    fn settle(&mut self) {
        loop {
            let events = planner::react(&self.world, "web", self.now, SETTINGS);
            if events.is_empty() {
                return;
            }
            self.record("web", events);
        }
    }

    /// Answer every intent as the cluster would, then let the planner react;
    /// repeat until quiet. Time moves 100 ms per round.
    fn run(&mut self, rounds: usize) {
        for _ in 0..rounds {
            self.settle();
            let facts = self.cluster_facts();
            if facts.is_empty() {
                self.now += 100;
            }
            self.record("web", facts);
        }
        self.settle();
    }

    /// Like [`Sim::run`], but each round delivers only a random subset of
    /// the facts the cluster has for the planner, in a random order, and
    /// time moves by a random step: the interleavings a real bus produces.
    fn run_shuffled(&mut self, rounds: usize, seed: u64) {
        let mut rng = seed | 1;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for _ in 0..rounds {
            self.settle();
            let mut facts = self.cluster_facts();
            // A start not delivered this round is reported again next round.
            for fact in &facts {
                if let Event::ReplicaStarted { replica, .. } = fact {
                    self.started.remove(replica);
                }
            }
            let mut delivered = Vec::new();
            while !facts.is_empty() {
                let i = (next() % facts.len() as u64) as usize;
                let fact = facts.swap_remove(i);
                if next() % 3 != 0 {
                    delivered.push(fact);
                }
            }
            for fact in delivered {
                self.deliver(fact);
                self.settle();
            }
            self.now += (next() % 300) as i64;
        }
        self.settle();
    }

    fn deliver(&mut self, fact: Event) {
        if let Event::ReplicaStarted { replica, .. } = &fact {
            let image = self.world.services["web"].replicas[replica].image.clone();
            self.started.insert(replica.clone(), image);
        }
        self.record("web", vec![fact]);
    }

    fn cluster_facts(&mut self) -> Vec<Event> {
        let s = &self.world.services["web"];
        let mut facts = Vec::new();
        for r in s.replicas.values() {
            use mentat_domain::planner::Phase::*;
            let exit = |requested| Event::ReplicaExited {
                replica: r.id.clone(),
                service: "web".into(),
                host: r.host.clone(),
                status: ExitStatus {
                    code: Some(if requested { 0 } else { 1 }),
                    signal: None,
                },
                requested,
            };
            match r.phase {
                Requested if !self.started.contains_key(&r.id) => {
                    self.started.insert(r.id.clone(), r.image.clone());
                    facts.push(Event::ReplicaStarted {
                        replica: r.id.clone(),
                        service: "web".into(),
                        host: r.host.clone(),
                        pid: 1,
                        addr: format!("127.0.0.1:{}", 9000 + self.started.len()),
                        health: r.health.clone(),
                    });
                }
                Running if r.image.contains("crash") => facts.push(exit(false)),
                Running if !r.image.contains("unhealthy") => facts.push(Event::ReplicaHealthy {
                    replica: r.id.clone(),
                    service: "web".into(),
                }),
                Draining if !r.drained => facts.push(Event::ReplicaDrained {
                    replica: r.id.clone(),
                    service: "web".into(),
                    router: "r1".into(),
                    timed_out: false,
                }),
                Stopping => facts.push(exit(true)),
                _ => {}
            }
        }
        facts
    }

    fn outcome(&self, id: &str) -> (Outcome, Option<String>) {
        let r = self.world.services["web"]
            .history
            .iter()
            .find(|r| r.deployment_id == id)
            .expect("deployment in history");
        (r.outcome, r.failure.clone())
    }

    fn routed_images_now(&self) -> Vec<String> {
        self.world.services["web"]
            .routes
            .iter()
            .map(|b| b.image.clone())
            .collect()
    }
}

#[test]
fn first_deploy_brings_up_every_replica_and_routes_them() {
    let mut sim = Sim::new(3, 1);
    let id = sim.deploy("v1").expect("accepted");
    sim.run(50);
    assert_eq!(sim.outcome(&id).0, Outcome::Completed);
    assert_eq!(sim.routed_images_now(), ["v1", "v1", "v1"]);
    assert_eq!(sim.world.services["web"].image.as_deref(), Some("v1"));
}

#[test]
fn rolling_update_never_drops_below_the_declared_replicas() {
    let mut sim = Sim::new(3, 1);
    let first = sim.deploy("v1").expect("accepted");
    sim.run(50);
    assert_eq!(sim.outcome(&first).0, Outcome::Completed);
    let mark = sim.routed_counts.len();
    let id = sim.deploy("v2").expect("accepted");
    sim.run(80);
    assert_eq!(sim.outcome(&id).0, Outcome::Completed);
    assert_eq!(sim.routed_images_now(), ["v2", "v2", "v2"]);
    assert!(
        sim.routed_counts[mark..].iter().all(|&n| n >= 3),
        "capacity dropped: {:?}",
        &sim.routed_counts[mark..]
    );
    // Every replica was replaced by its own batch of one.
    let batches = sim
        .log
        .iter()
        .filter(|e| matches!(e.event, Event::BatchStarted { .. }))
        .count();
    assert_eq!(batches, 6);
}

#[test]
fn batches_follow_max_unavailable() {
    let mut sim = Sim::new(4, 2);
    sim.deploy("v1").expect("accepted");
    sim.run(50);
    let id = sim.deploy("v2").expect("accepted");
    sim.run(80);
    assert_eq!(sim.outcome(&id).0, Outcome::Completed);
    let sizes: Vec<usize> = sim
        .log
        .iter()
        .filter_map(|e| match &e.event {
            Event::BatchStarted { start, .. } => Some(start.len()),
            _ => None,
        })
        .collect();
    assert_eq!(sizes, [2, 2, 2, 2]);
}

#[test]
fn a_crashing_release_is_reverted_and_never_gets_traffic() {
    let mut sim = Sim::new(3, 1);
    sim.deploy("v1").expect("accepted");
    sim.run(50);
    let id = sim.deploy("v2-crash").expect("accepted");
    sim.run(80);
    let (outcome, reason) = sim.outcome(&id);
    assert_eq!(outcome, Outcome::Reverted);
    assert!(reason
        .expect("reason")
        .contains("exited before becoming healthy"));
    assert_eq!(sim.routed_images, ["v1"]);
    assert_eq!(sim.routed_images_now(), ["v1", "v1", "v1"]);
}

#[test]
fn an_unhealthy_release_is_reverted_after_the_health_timeout() {
    let mut sim = Sim::new(3, 1);
    sim.deploy("v1").expect("accepted");
    sim.run(50);
    let id = sim.deploy("v2-unhealthy").expect("accepted");
    sim.run(200); // 20 s of simulated time > health_timeout_secs (10)
    let (outcome, reason) = sim.outcome(&id);
    assert_eq!(outcome, Outcome::Reverted);
    assert!(reason.expect("reason").contains("not healthy within 10s"));
    assert_eq!(sim.routed_images, ["v1"]);
    assert!(sim.world.services["web"]
        .replicas
        .values()
        .all(|r| r.image == "v1"));
}

#[test]
fn a_second_deploy_while_one_is_in_flight_is_rejected_naming_it() {
    let mut sim = Sim::new(3, 1);
    let id = sim.deploy("v1").expect("accepted");
    let reason = sim.deploy("v2").expect_err("must be rejected");
    assert!(reason.contains(&id), "{reason}");
}

#[test]
fn rollback_returns_to_the_previous_image() {
    let mut sim = Sim::new(2, 1);
    sim.deploy("v1").expect("accepted");
    sim.run(50);
    sim.deploy("v2").expect("accepted");
    sim.run(50);
    let rollback = Command::Rollback(Rollback {
        command_id: None,
        service: "web".into(),
        actor: None,
        reason: None,
    });
    let id = sim.command(&rollback).expect("accepted").expect("id");
    sim.run(50);
    assert_eq!(sim.outcome(&id).0, Outcome::Completed);
    assert_eq!(sim.routed_images_now(), ["v1", "v1"]);
}

#[test]
fn replaying_the_log_gives_the_same_state_and_decisions() {
    let mut sim = Sim::new(3, 1);
    sim.deploy("v1").expect("accepted");
    sim.run(50);
    sim.deploy("v2-crash").expect("accepted");
    sim.run(5); // stop mid-deployment
    let mut replayed = World::default();
    for e in &sim.log {
        replayed.apply(e);
    }
    assert_eq!(replayed, sim.world);
    assert_eq!(
        planner::react(&replayed, "web", sim.now, SETTINGS),
        planner::react(&sim.world, "web", sim.now, SETTINGS)
    );
}

#[test]
fn a_replica_that_dies_outside_a_deployment_is_replaced() {
    let mut sim = Sim::new(2, 1);
    sim.deploy("v1").expect("accepted");
    sim.run(50);
    let victim = sim.world.services["web"].routes[0].replica.clone();
    sim.record(
        "web",
        vec![Event::ReplicaExited {
            replica: victim.clone(),
            service: "web".into(),
            host: "h1".into(),
            status: ExitStatus {
                code: Some(137),
                signal: None,
            },
            requested: false,
        }],
    );
    sim.run(20);
    let routes = &sim.world.services["web"].routes;
    assert_eq!(routes.len(), 2);
    assert!(routes.iter().all(|b| b.replica != victim));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever order and delay facts arrive in, a rolling update completes,
    /// never routes to fewer replicas than declared, and replays to the same
    /// state.
    #[test]
    fn rolling_update_holds_under_any_interleaving(seed in any::<u64>(), replicas in 1u32..5, batch in 1u32..3) {
        let batch = batch.min(replicas);
        let mut sim = Sim::new(replicas, batch);
        let first = sim.deploy("v1").expect("accepted");
        sim.run_shuffled(400, seed);
        prop_assert_eq!(sim.outcome(&first).0, Outcome::Completed);
        let mark = sim.routed_counts.len();
        let id = sim.deploy("v2").expect("accepted");
        sim.run_shuffled(600, seed.rotate_left(7));
        prop_assert_eq!(sim.outcome(&id).0, Outcome::Completed);
        let low = sim.routed_counts[mark..].iter().min().copied().unwrap_or(0);
        prop_assert!(low >= replicas as usize, "capacity dropped to {}", low);
        prop_assert!(sim.routed_images_now().iter().all(|i| i == "v2"));
        let mut replayed = World::default();
        for e in &sim.log {
            replayed.apply(e);
        }
        prop_assert_eq!(replayed, sim.world);
    }

    /// A release that never gets healthy is reverted under any interleaving,
    /// and never receives traffic.
    #[test]
    fn unhealthy_release_never_gets_traffic(seed in any::<u64>()) {
        let mut sim = Sim::new(3, 1);
        sim.deploy("v1").expect("accepted");
        sim.run_shuffled(400, seed);
        let id = sim.deploy("v2-unhealthy").expect("accepted");
        sim.run_shuffled(800, seed.rotate_left(3));
        prop_assert_eq!(sim.outcome(&id).0, Outcome::Reverted);
        prop_assert_eq!(sim.routed_images.clone(), vec!["v1".to_owned()]);
    }
}

#[test]
fn replicas_are_placed_only_on_live_hosts() {
    let mut sim = Sim::new(4, 2);
    sim.record(
        "_hosts",
        vec![
            Event::HostJoined {
                host: "h2".into(),
                capacity: 64,
            },
            Event::HostJoined {
                host: "h3".into(),
                capacity: 64,
            },
            Event::HostLost {
                host: "h3".into(),
                reason: "no heartbeat".into(),
            },
        ],
    );
    sim.deploy("v1").expect("accepted");
    sim.run(50);
    let hosts: Vec<String> = sim.world.services["web"]
        .replicas
        .values()
        .map(|r| r.host.clone())
        .collect();
    assert_eq!(hosts.len(), 4);
    assert!(
        hosts.iter().all(|h| h != "h3"),
        "placed on a lost host: {hosts:?}"
    );
    assert!(
        hosts.contains(&"h1".to_owned()) && hosts.contains(&"h2".to_owned()),
        "{hosts:?}"
    );
}

#[test]
fn with_no_live_host_a_deploy_is_rejected_with_the_reason() {
    let mut sim = Sim::new(2, 1);
    sim.record(
        "_hosts",
        vec![Event::HostLost {
            host: "h1".into(),
            reason: "no heartbeat".into(),
        }],
    );
    let reason = sim.deploy("v1").expect_err("must be rejected");
    assert!(reason.contains("no executor host is alive"), "{reason}");
}
