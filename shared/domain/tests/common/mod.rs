//! The pure planner core driven by a simulated cluster that answers every
//! intent, for given/when/then scenarios of every strategy.

#![allow(dead_code)]

use std::collections::BTreeMap;

use mentat_domain::command::{Apply, Command, Control, Deploy, Outcome, Rejection};
use mentat_domain::event::{Backend, Event, EventEnvelope, ExitStatus, Meta};
use mentat_domain::planner::{self, Append, Decision, Settings, World};
use mentat_domain::replay::{Decided, DecidedBy};
use mentat_domain::spec::{DeploySpec, HealthSpec, RunSpec, ServiceSpec, Strategy, Thresholds};

pub const SETTINGS: Settings = Settings {
    drain_timeout_ms: 5_000,
};

/// A planner and a make-believe cluster: replicas of images containing
/// "crash" exit at start, "unhealthy" never pass their probe.
pub struct Sim {
    pub world: World,
    pub log: Vec<EventEnvelope>,
    pub now: i64,
    pub started: BTreeMap<String, String>,
    /// Routed replica counts observed after every event.
    pub routed_counts: Vec<usize>,
    /// Images that ever received traffic.
    pub routed_images: Vec<String>,
    /// The routing table after every RouteChanged.
    pub tables: Vec<Vec<Backend>>,
    /// Hosts cut off: their replicas report nothing.
    pub down: std::collections::BTreeSet<String>,
}

impl Sim {
    pub fn new(replicas: u32, max_unavailable: u32) -> Self {
        Self::with(
            replicas,
            DeploySpec {
                max_unavailable,
                ..DeploySpec::default()
            },
        )
    }

    /// A cluster of one host and service `web` of `replicas` replicas deployed with `deploy`.
    pub fn with(replicas: u32, deploy: DeploySpec) -> Self {
        Self::with_health(replicas, deploy, None)
    }

    /// As [`Sim::with`], with a health spec of its own.
    pub fn with_health(replicas: u32, deploy: DeploySpec, health: Option<HealthSpec>) -> Self {
        let mut sim = Sim {
            world: World::default(),
            log: Vec::new(),
            now: 1_000_000,
            started: BTreeMap::new(),
            routed_counts: Vec::new(),
            routed_images: Vec::new(),
            tables: Vec::new(),
            down: Default::default(),
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
            // Traffic thresholds and bake are scenarios of their own.
            health: HealthSpec {
                thresholds: Thresholds {
                    enabled: false,
                    ..Thresholds::default()
                },
                bake_secs: 0,
                ..HealthSpec::default()
            },
            deploy,
            route: Default::default(),
            audit: Default::default(),
            labels: Default::default(),
            environments: Default::default(),
        };
        let spec = ServiceSpec {
            health: health.unwrap_or(spec.health),
            ..spec
        };
        let apply = Command::Apply(Apply {
            command_id: None,
            signature: None,
            services: vec![spec],
            cluster: None,
            security: None,
            notify: None,
            environments: None,
            source: None,
            actor: None,
            reason: None,
        });
        sim.command(&apply).expect("apply accepted");
        sim
    }

    /// Record what the planner was told or observed.
    pub fn record(&mut self, stream: &str, events: Vec<Event>) {
        self.record_meta(stream, events, None);
    }

    /// Record one decision, as the planner does: how it was taken on its
    /// first event, so that `replay` takes it again.
    pub fn record_decision(&mut self, appends: Vec<Append>, by: DecidedBy) {
        let events = appends.iter().map(|a| a.events.len() as u32).sum();
        let mut decided = Some(Decided {
            at_ms: self.now,
            cause: Some(self.log.len() as i64),
            events,
            by,
        });
        for a in appends {
            for event in a.events {
                self.record_meta(&a.stream, vec![event], decided.take());
            }
        }
    }

    fn record_meta(&mut self, stream: &str, events: Vec<Event>, decided: Option<Decided>) {
        let mut decided = decided;
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
                    decided: decided.take(),
                    ..Meta::default()
                },
                event,
            };
            self.world.apply(&env);
            if let Event::RouteChanged { backends, .. } = &env.event {
                self.tables.push(backends.clone());
            }
            self.log.push(env);
            let s = &self.world.services.get("web");
            if let Some(s) = s {
                self.routed_counts.push(s.routes.len());
                for b in s.routes.iter().filter(|b| b.weight > 0) {
                    if !self.routed_images.contains(&b.image) {
                        self.routed_images.push(b.image.clone());
                    }
                }
            }
        }
    }

    pub fn command(&mut self, command: &Command) -> Result<Option<String>, Rejection> {
        let id = format!("d{}", self.log.len());
        match planner::handle(&self.world, command, &id, self.now) {
            Decision::Accept {
                appends,
                deployment_id,
                ..
            } => {
                let by = DecidedBy::Command {
                    command: Box::new(command.clone()),
                    id,
                };
                self.record_decision(appends, by);
                Ok(deployment_id)
            }
            Decision::Reject(reason) => Err(reason),
        }
    }

    pub fn deploy(&mut self, image: &str) -> Result<String, Rejection> {
        self.deploy_with(image, None)
    }

    pub fn deploy_with(
        &mut self,
        image: &str,
        strategy: Option<Strategy>,
    ) -> Result<String, Rejection> {
        let cmd = Command::Deploy(Deploy {
            command_id: None,
            signature: None,
            service: "web".into(),
            image: image.into(),
            strategy,
            override_rollout: false,
            actor: Some("test".into()),
            reason: None,
        });
        self.command(&cmd).map(|id| id.expect("deployment id"))
    }

    /// Let the planner decide until it has nothing more to say.
    pub fn settle(&mut self) {
        loop {
            let events = planner::react(&self.world, "web", self.now, SETTINGS);
            if events.is_empty() {
                return;
            }
            let stream = "web".to_owned();
            self.record_decision(vec![Append { stream, events }], DecidedBy::React);
        }
    }

    /// Answer every intent as the cluster would, then let the planner react;
    /// repeat until quiet. Time moves 100 ms per round.
    pub fn run(&mut self, rounds: usize) {
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
    pub fn run_shuffled(&mut self, rounds: usize, seed: u64) {
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

    pub fn deliver(&mut self, fact: Event) {
        if let Event::ReplicaStarted { replica, .. } = &fact {
            let image = self.world.services["web"].replicas[replica].image.clone();
            self.started.insert(replica.clone(), image);
        }
        self.record("web", vec![fact]);
    }

    pub fn cluster_facts(&mut self) -> Vec<Event> {
        let crashes = |r: &mentat_domain::planner::Replica| r.image.contains("crash");
        service_facts(
            &self.world.services["web"],
            "web",
            &mut self.started,
            &self.down,
            crashes,
        )
    }

    pub fn outcome(&self, id: &str) -> (Outcome, Option<String>) {
        let r = self.world.services["web"]
            .history
            .iter()
            .find(|r| r.deployment_id == id)
            .expect("deployment in history");
        (r.outcome, r.failure.clone())
    }

    pub fn routed_images_now(&self) -> Vec<String> {
        self.world.services["web"]
            .routes
            .iter()
            .map(|b| b.image.clone())
            .collect()
    }

    /// A control command (pause, resume, abort, promote) from `ana`.
    pub fn control(&mut self, make: fn(Control) -> Command) -> Result<Option<String>, Rejection> {
        self.command(&make(Control {
            command_id: None,
            signature: None,
            service: "web".into(),
            actor: Some("ana".into()),
            reason: Some("testing".into()),
        }))
    }

    /// Weight by replica in the routing table.
    pub fn weights(&self) -> BTreeMap<String, u32> {
        self.world.services["web"]
            .routes
            .iter()
            .map(|b| (b.replica.clone(), b.weight))
            .collect()
    }

    /// Share of weighted traffic per image, in percent.
    pub fn share_by_image(&self) -> BTreeMap<String, f64> {
        let routes = &self.world.services["web"].routes;
        let total: u32 = routes.iter().map(|b| b.weight).sum();
        let mut out = BTreeMap::new();
        for b in routes {
            *out.entry(b.image.clone()).or_insert(0.0) +=
                f64::from(b.weight) * 100.0 / f64::from(total.max(1));
        }
        out
    }

    /// Replicas by image that are not exited.
    pub fn running(&self, image: &str) -> usize {
        self.world.services["web"]
            .replicas
            .values()
            .filter(|r| r.image == image && r.phase.is_serving_candidate())
            .count()
    }

    /// Type names of the events recorded since `from`.
    pub fn types_since(&self, from: usize) -> Vec<&'static str> {
        self.log[from..]
            .iter()
            .map(|e| e.event.type_name())
            .collect()
    }

    pub fn in_flight(&self) -> bool {
        self.world.services["web"].deployment.is_some()
    }

    /// Why the deployment in flight is held, if it is.
    pub fn held_because(&self) -> Option<String> {
        let d = self.world.services["web"].deployment.as_ref()?;
        d.paused.as_ref().map(|p| p.reason.clone())
    }

    /// Move time on by `ms`, letting the cluster and planner act every 100 ms.
    pub fn wait(&mut self, ms: i64) {
        let until = self.now + ms;
        while self.now < until {
            self.run(1);
            self.now += 100;
        }
        self.settle();
    }
}

/// What a make-believe cluster reports next about the replicas of
/// `service`: a requested replica starts (once: `started` remembers it),
/// a running one crashes when `crashes` says so, passes its probe unless
/// its image contains "unhealthy", a draining one drains, a stopping one
/// exits. Replicas on hosts in `down` report nothing.
pub fn service_facts(
    s: &mentat_domain::planner::ServiceState,
    service: &str,
    started: &mut BTreeMap<String, String>,
    down: &std::collections::BTreeSet<String>,
    crashes: impl Fn(&mentat_domain::planner::Replica) -> bool,
) -> Vec<Event> {
    let mut facts = Vec::new();
    for r in s.replicas.values().filter(|r| !down.contains(&r.host)) {
        use mentat_domain::planner::Phase::*;
        let exit = |requested| Event::ReplicaExited {
            replica: r.id.clone(),
            service: service.into(),
            host: r.host.clone(),
            status: ExitStatus {
                code: Some(if requested { 0 } else { 1 }),
                signal: None,
            },
            requested,
            reason: None,
        };
        match r.phase {
            Requested if !started.contains_key(&r.id) => {
                started.insert(r.id.clone(), r.image.clone());
                facts.push(Event::ReplicaStarted {
                    replica: r.id.clone(),
                    service: service.into(),
                    host: r.host.clone(),
                    pid: 1,
                    addr: format!("127.0.0.1:{}", 9000 + started.len()),
                    health: r.health.clone(),
                });
            }
            Running if crashes(r) => facts.push(exit(false)),
            Running if !r.image.contains("unhealthy") => facts.push(Event::ReplicaHealthy {
                replica: r.id.clone(),
                service: service.into(),
            }),
            Draining if r.drained_by.is_empty() => facts.push(Event::ReplicaDrained {
                replica: r.id.clone(),
                service: service.into(),
                router: "r1".into(),
                timed_out: false,
            }),
            Stopping => facts.push(exit(true)),
            _ => {}
        }
    }
    facts
}
