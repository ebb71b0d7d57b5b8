//! The planner's state, folded from the log by [`World::apply`].
//!
//! `apply` holds no business rule: it records what an event says. Every
//! decision is taken in [`super::decide`] from this state.

use std::collections::{BTreeMap, BTreeSet};

use crate::cluster::ClusterSpec;
use crate::command::{DeploymentRecord, Outcome};
use crate::event::{Backend, Event, EventEnvelope, FactSource, Judgement, Plan};
use crate::spec::{HealthSpec, RouteSpec, ServiceSpec, Strategy};

/// Where a replica is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// A start was requested; no process reported yet.
    Requested,
    /// Its process runs; not yet judged healthy.
    Running,
    /// Passed its readiness probe.
    Healthy,
    /// Failed its readiness probe.
    Unhealthy,
    /// Taken out of rotation; in-flight requests are finishing.
    Draining,
    /// A stop was requested.
    Stopping,
    /// Its process ended.
    Exited,
    /// Its host was lost and another replica took its place
    /// (`ReplicaReplaced`); it may still run there, and is stopped if the
    /// host comes back.
    Lost,
}

impl Phase {
    /// Lowercase name, as shown by `mt status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Requested => "starting",
            Phase::Running => "running",
            Phase::Healthy => "healthy",
            Phase::Unhealthy => "unhealthy",
            Phase::Draining => "draining",
            Phase::Stopping => "stopping",
            Phase::Exited => "exited",
            Phase::Lost => "lost",
        }
    }

    /// True while the replica's process may be running and is not being retired.
    pub fn is_serving_candidate(self) -> bool {
        matches!(
            self,
            Phase::Requested | Phase::Running | Phase::Healthy | Phase::Unhealthy
        )
    }
}

/// One replica as the planner knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// Replica id.
    pub id: String,
    /// Image it runs.
    pub image: String,
    /// Host it was placed on.
    pub host: String,
    /// `host:port`, once started.
    pub addr: Option<String>,
    /// Lifecycle phase.
    pub phase: Phase,
    /// When it was taken out of rotation (ms since epoch).
    pub drain_since_ms: Option<i64>,
    /// The routers that reported it has nothing in flight any more (or that
    /// their drain timed out) since it was taken out of rotation.
    pub drained_by: BTreeSet<String>,
    /// Readiness probe.
    pub health: HealthSpec,
    /// How it ended, once exited.
    pub exit: Option<String>,
    /// Started by an operator, outside the declared replicas.
    pub spawned: bool,
    /// When its process was reported started (ms since epoch).
    pub started_at_ms: Option<i64>,
    /// An operator asked for it to be taken out of rotation and stopped.
    pub retiring: bool,
    /// The replica that took its place when its host was lost.
    pub replaced_by: Option<String>,
    /// The deployment that started it.
    pub deployment: Option<String>,
}

/// The batch of a deployment in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Batch number, from 1.
    pub number: u32,
    /// Image the batch starts.
    pub image: String,
    /// Replicas it starts.
    pub start: Vec<String>,
    /// Replicas it retires once the new ones take traffic.
    pub replace: Vec<String>,
    /// When the new replicas must be healthy.
    pub deadline_ms: i64,
    /// Traffic moved to the new replicas.
    pub switched: bool,
}

/// A deployment in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    /// Deployment id.
    pub id: String,
    /// Image rolled out.
    pub image: String,
    /// Image serving before.
    pub previous_image: Option<String>,
    /// Strategy.
    pub strategy: Strategy,
    /// Replicas per batch.
    pub batch_size: u32,
    /// Replicas once done.
    pub replicas: u32,
    /// Roll back on failure.
    pub auto_revert: bool,
    /// Set once a failure turned the deployment around, with the reason.
    pub reverting: Option<String>,
    /// The batch in progress.
    pub batch: Option<Batch>,
    /// Batches started so far.
    pub batches_started: u32,
    /// The strategy's settings.
    pub plan: Plan,
    /// Set while the deployment is held.
    pub paused: Option<Paused>,
    /// When the current phase began (ms since epoch): the start of the
    /// deployment or the last step forward.
    pub phase_since_ms: i64,
    /// Canary progress.
    pub canary: Canary,
    /// Blue-green: end of the standby window, once traffic has switched.
    pub standby_until_ms: Option<i64>,
    /// Blue-green: the standby window is over.
    pub standby_ended: bool,
    /// When it started (ms since epoch).
    pub started_at_ms: i64,
    /// End of the bake window, once the new version serves every replica.
    pub bake_until_ms: Option<i64>,
    /// When it was last resumed (ms since epoch); a breach recorded until
    /// then was seen by whoever resumed it.
    pub resumed_at_ms: Option<i64>,
    /// A member of a release deployment (`plan.release`): the release
    /// switched, so its new replicas may take traffic.
    pub released: bool,
}

/// The health-watcher's verdict on a version's traffic, and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Pass, no data, or a breach with its numbers.
    pub kind: VerdictKind,
    /// When it was recorded (ms since epoch).
    pub since_ms: i64,
}

/// What the health-watcher last said about a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerdictKind {
    /// Within every threshold, with enough requests.
    Pass,
    /// Too few requests to judge.
    NoData {
        /// Requests in the window.
        requests: u64,
        /// Requests needed.
        min_requests: u64,
    },
    /// A threshold was broken.
    Breach(Judgement),
}

/// Why and since when a deployment is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paused {
    /// When it was held (ms since epoch).
    pub since_ms: i64,
    /// Why.
    pub reason: String,
}

/// Where a canary deployment stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Canary {
    /// The canary replicas (the first batch's).
    pub replicas: Vec<String>,
    /// Current step, from 1; 0 before the canary receives traffic.
    pub step: u32,
    /// Share of traffic of the current step.
    pub percent: u32,
    /// When the current step began (ms since epoch).
    pub step_since_ms: i64,
    /// How long the current step bakes (0: until an operator decides).
    pub bake_secs: u64,
    /// Rolled out to every replica.
    pub promoted: bool,
}

impl Deployment {
    /// The image this deployment is converging to now: the new one, or the
    /// previous one while reverting.
    pub fn target(&self) -> Option<&str> {
        match &self.reverting {
            None => Some(&self.image),
            Some(_) => self.previous_image.as_deref(),
        }
    }
}

/// Everything the planner knows about one service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceState {
    /// The definition last applied.
    pub spec: Option<ServiceSpec>,
    /// Stream version of its last `RouteChanged`: the route version routers
    /// report having applied.
    pub route_version: i64,
    /// Image serving once the last deployment completed.
    pub image: Option<String>,
    /// Images that completed deployments, oldest first (no immediate repeats).
    pub images: Vec<String>,
    /// Every replica not yet forgotten (exited ones stay until their batch ends).
    pub replicas: BTreeMap<String, Replica>,
    /// The routing table last published.
    pub routes: Vec<Backend>,
    /// Weights set by operators, by instance.
    pub weights: BTreeMap<String, u32>,
    /// The health-watcher's latest verdict on each version's traffic.
    pub verdicts: BTreeMap<String, Verdict>,
    /// How the router serves the service, as last published.
    pub route: RouteSpec,
    /// The deployment in flight.
    pub deployment: Option<Deployment>,
    /// Every deployment, oldest first.
    pub history: Vec<DeploymentRecord>,
    /// The highest number of a declared replica's id `<service>-<n>` so
    /// far (at least the number of declared replicas requested); new ids
    /// go on from it.
    pub replica_seq: u64,
}

impl ServiceState {
    /// The image before the one serving now, from completed deployments.
    pub fn previous_image(&self) -> Option<&str> {
        let n = self.images.len();
        (n >= 2).then(|| self.images[n - 2].as_str())
    }

    fn record_mut(&mut self, deployment_id: &str) -> Option<&mut DeploymentRecord> {
        self.history
            .iter_mut()
            .rev()
            .find(|r| r.deployment_id == deployment_id)
    }

    /// True when the replica is in the routing table (weight 0 included).
    pub fn is_routed(&self, replica: &str) -> bool {
        self.routes.iter().any(|b| b.replica == replica)
    }
}

/// An executor host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Replicas it can run.
    pub capacity: u32,
    /// Not lost: it joined and no `HostLost` followed (it may be suspect).
    pub live: bool,
    /// When it was suspected (ms since epoch), until it heartbeats again;
    /// kept once it is lost.
    pub suspect_since_ms: Option<i64>,
}

impl Host {
    /// Live and not suspect: new replicas may be placed on it and its
    /// replicas keep their weights.
    pub fn available(&self) -> bool {
        self.live && self.suspect_since_ms.is_none()
    }
}

/// Re-placement held after a mass host loss (`MassHostLossHeld`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The hosts that went suspect together.
    pub hosts: Vec<String>,
    /// When it was decided (ms since epoch).
    pub since_ms: i64,
}

/// A router, as its `RouterJoined` and `RouterLost` events say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Router {
    /// The machine it runs on.
    pub host: String,
    /// The address it accepts requests on.
    pub listen: String,
    /// Sending heartbeats.
    pub live: bool,
}

/// The planner's whole state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct World {
    /// Services by name.
    pub services: BTreeMap<String, ServiceState>,
    /// Hosts by id.
    pub hosts: BTreeMap<String, Host>,
    /// Routers by id.
    pub routers: BTreeMap<String, Router>,
    /// Position of the last event applied.
    pub position: i64,
    /// The planner elected last, and its epoch.
    pub leader: Option<(String, i64)>,
    /// The cluster block last applied, if any (see [`World::cluster`]).
    pub cluster: Option<ClusterSpec>,
    /// The security block last applied, if any: who may sign commands and
    /// whether they must (see [`crate::security`]).
    pub security: Option<crate::security::SecuritySpec>,
    /// Set while re-placement is held after a mass host loss.
    pub held: Option<Hold>,
    /// When the last hold ended (ms since epoch): hosts suspected before
    /// then do not make a new one.
    pub released_at_ms: Option<i64>,
    /// Fleet rollouts (stream `_rollouts`).
    pub rollouts: crate::rollout::Rollouts,
    /// The webhooks of the notify block last applied.
    pub notify: Vec<crate::notify::Webhook>,
    /// The environments block last applied, if any.
    pub environments: Option<crate::environment::Environments>,
    /// Releases and what each environment serves (stream `_releases`).
    pub releases: crate::release::Releases,
}

impl World {
    /// A copy to chain decisions on ([`react`](super::react)), less what no
    /// decision reads and what grows with every deployment: each service's
    /// `history`, and its `images` before the last two (all
    /// [`ServiceState::previous_image`] needs). It costs the size of the
    /// present, not of the whole past: a service with a long history is
    /// decided about as fast as a new one.
    pub(crate) fn for_deciding(&self) -> World {
        let services = self
            .services
            .iter()
            .map(|(name, s)| {
                let recent = &s.images[s.images.len().saturating_sub(2)..];
                let state = ServiceState {
                    spec: s.spec.clone(),
                    route_version: s.route_version,
                    image: s.image.clone(),
                    images: recent.to_vec(),
                    replicas: s.replicas.clone(),
                    routes: s.routes.clone(),
                    weights: s.weights.clone(),
                    verdicts: s.verdicts.clone(),
                    route: s.route.clone(),
                    deployment: s.deployment.clone(),
                    history: Vec::new(),
                    replica_seq: s.replica_seq,
                };
                (name.clone(), state)
            })
            .collect();
        World {
            services,
            hosts: self.hosts.clone(),
            routers: self.routers.clone(),
            position: self.position,
            leader: self.leader.clone(),
            cluster: self.cluster,
            security: self.security.clone(),
            held: self.held.clone(),
            released_at_ms: self.released_at_ms,
            rollouts: self.rollouts.clone(),
            notify: self.notify.clone(),
            environments: self.environments.clone(),
            releases: self.releases.clone(),
        }
    }

    /// Why the fact `event`, reported by `from` (what its subject says, which
    /// only that identity may publish on), is not to be recorded; `None`
    /// when it may be. It must be a fact and name `from` as its source, and
    /// a host reports only about the replicas the log placed on it.
    pub fn refuse_fact(&self, event: &Event, from: FactSource<'_>) -> Option<String> {
        let kind = event.type_name();
        let Some(source) = event.fact_source() else {
            return Some(format!("{kind} is not a fact"));
        };
        if source != from {
            return Some(format!("a {kind} naming {source:?} came from {from:?}"));
        }
        if let FactSource::Host(host) = source {
            let replica = event.replica().unwrap_or_default();
            let placed = event
                .service()
                .and_then(|s| self.services.get(s))
                .and_then(|s| s.replicas.get(replica))
                .map(|r| r.host.as_str());
            match placed {
                Some(placed) if placed == host => {}
                Some(placed) => {
                    return Some(format!(
                        "host {host} reported a {kind} about replica {replica}, which the log placed on {placed}"
                    ))
                }
                None => {
                    return Some(format!(
                        "host {host} reported a {kind} about replica {replica}, which the log does not know"
                    ))
                }
            }
        }
        None
    }

    /// True when `replica`, out of rotation, has drained in every live
    /// router: each reported it (its drain finished or timed out). With no
    /// live router nothing is drained (nothing says traffic left it; the
    /// drain timeout decides). A log that never saw a router join (written
    /// before routers announced themselves) takes one report as enough.
    pub fn drained(&self, replica: &Replica) -> bool {
        if self.routers.is_empty() {
            return !replica.drained_by.is_empty();
        }
        let mut live = self.routers.iter().filter(|(_, r)| r.live).peekable();
        live.peek().is_some() && live.all(|(id, _)| replica.drained_by.contains(id))
    }

    /// True when routers are known and none of them is live: a deployment
    /// waits rather than pretend that traffic moved. (A log in which no
    /// router ever joined predates routers' heartbeats: it does not wait.)
    pub fn no_live_router(&self) -> bool {
        !self.routers.is_empty() && self.routers.values().all(|r| !r.live)
    }

    /// The cluster settings: the block last applied, or the defaults.
    pub fn cluster(&self) -> ClusterSpec {
        self.cluster.unwrap_or_default()
    }

    /// The live routers' ids.
    pub fn live_routers(&self) -> impl Iterator<Item = &str> {
        self.routers
            .iter()
            .filter(|(_, r)| r.live)
            .map(|(id, _)| id.as_str())
    }

    /// The members of release deployment `id` in `environment` may take
    /// traffic: the release switched.
    fn release_switched(&mut self, environment: &str, id: &str) {
        let Some(d) = self.releases.in_flight(environment) else {
            return;
        };
        let members: Vec<(String, String)> = d
            .deploying()
            .filter(|_| d.started.deployment_id == id)
            .map(|(m, dep)| (m.service.clone(), dep.to_owned()))
            .collect();
        for (service, dep) in members {
            let deployment = self
                .services
                .get_mut(&service)
                .and_then(|s| s.deployment.as_mut())
                .filter(|d| d.id == dep);
            if let Some(d) = deployment {
                d.released = true;
            }
        }
    }

    /// Fold one recorded event into the state.
    pub fn apply(&mut self, envelope: &EventEnvelope) {
        self.position = envelope.position;
        let at = envelope.recorded_at_ms;
        let stream = envelope.stream.as_str();
        match &envelope.event {
            Event::HostJoined { host, capacity } => {
                self.hosts.insert(
                    host.clone(),
                    Host {
                        capacity: *capacity,
                        live: true,
                        suspect_since_ms: None,
                    },
                );
            }
            Event::HostLost { host, .. } => {
                if let Some(h) = self.hosts.get_mut(host) {
                    h.live = false;
                }
            }
            Event::HostSuspected { host, .. } => {
                if let Some(h) = self.hosts.get_mut(host) {
                    h.suspect_since_ms = Some(at);
                }
            }
            Event::HostSuspicionCleared { host } => {
                if let Some(h) = self.hosts.get_mut(host) {
                    h.suspect_since_ms = None;
                }
            }
            Event::ClusterDefined { cluster, .. } => self.cluster = Some(*cluster),
            Event::SecurityDefined { security, .. } => self.security = Some(security.clone()),
            Event::MassHostLossHeld { hosts, .. } => {
                self.held = Some(Hold {
                    hosts: hosts.clone(),
                    since_ms: at,
                });
            }
            Event::MassHostLossReleased { .. } => {
                self.held = None;
                self.released_at_ms = Some(at);
            }
            Event::RouterJoined {
                router,
                host,
                listen,
            } => {
                self.routers.insert(
                    router.clone(),
                    Router {
                        host: host.clone(),
                        listen: listen.clone(),
                        live: true,
                    },
                );
            }
            Event::RouterLost { router, .. } => {
                if let Some(r) = self.routers.get_mut(router) {
                    r.live = false;
                }
            }
            Event::PlannerLeaderElected { planner, epoch, .. } => {
                self.leader = Some((planner.clone(), *epoch));
            }
            // The log's own business: nothing of the world changes.
            Event::LogBreakAccepted { .. } => {}
            Event::ServiceDefined { spec, .. } => {
                self.services.entry(spec.name.clone()).or_default().spec = Some(spec.clone());
            }
            Event::NotifyDefined { webhooks, .. } => self.notify = webhooks.clone(),
            Event::EnvironmentsDefined { environments, .. } => {
                self.environments = Some(environments.clone());
            }
            event if crate::release::Releases::owns(event) => {
                self.releases.apply(event, at, &envelope.meta);
                if let Event::ReleaseSwitched(step) = event {
                    self.release_switched(&step.environment, &step.deployment_id);
                }
            }
            Event::WebhookDelivered { rollout_id, .. }
            | Event::WebhookFailed { rollout_id, .. } => {
                if let Some(id) = rollout_id {
                    self.rollouts.note_webhook(id, &envelope.event);
                }
            }
            event if event.rollout_id().is_some() => {
                self.rollouts.apply(event, at, &envelope.meta);
            }
            event => {
                let service = self.services.entry(stream.to_owned()).or_default();
                if matches!(event, Event::RouteChanged { .. }) {
                    service.route_version = envelope.version;
                }
                apply_service(service, event, at, &envelope.meta);
            }
        }
    }
}

fn apply_service(s: &mut ServiceState, event: &Event, at: i64, meta: &crate::Meta) {
    match event {
        Event::DeploymentStarted {
            deployment_id,
            service,
            image,
            previous_image,
            strategy,
            batch_size,
            replicas,
            auto_revert,
            at_ms,
            plan,
            ..
        } => {
            s.deployment = Some(Deployment {
                id: deployment_id.clone(),
                image: image.clone(),
                previous_image: previous_image.clone(),
                strategy: *strategy,
                batch_size: *batch_size,
                replicas: *replicas,
                auto_revert: *auto_revert,
                reverting: None,
                batch: None,
                batches_started: 0,
                plan: plan.clone(),
                paused: None,
                phase_since_ms: at,
                canary: Canary::default(),
                standby_until_ms: None,
                standby_ended: false,
                started_at_ms: at,
                bake_until_ms: None,
                resumed_at_ms: None,
                released: false,
            });
            s.history.push(DeploymentRecord {
                deployment_id: deployment_id.clone(),
                service: service.clone(),
                image: image.clone(),
                previous_image: previous_image.clone(),
                strategy: *strategy,
                outcome: Outcome::InProgress,
                actor: meta.actor.clone(),
                reason: meta.reason.clone(),
                failure: None,
                batches_done: 0,
                phase: None,
                paused: None,
                waiting_for_router: false,
                breaches: Vec::new(),
                started_at_ms: *at_ms,
                ended_at_ms: None,
            });
        }
        Event::BatchStarted {
            batch,
            image,
            start,
            replace,
            deadline_ms,
            ..
        } => {
            if let Some(d) = s.deployment.as_mut() {
                d.batches_started = *batch;
                d.phase_since_ms = at;
                if d.strategy == Strategy::Canary && d.canary.replicas.is_empty() {
                    d.canary.replicas = start.clone();
                }
                d.batch = Some(Batch {
                    number: *batch,
                    image: image.clone(),
                    start: start.clone(),
                    replace: replace.clone(),
                    deadline_ms: *deadline_ms,
                    switched: false,
                });
            }
        }
        Event::ReplicaStartRequested {
            replica,
            service,
            host,
            image,
            health,
            spawned,
            deployment_id,
            ..
        } => {
            if !spawned {
                // Numbering skips ids in use elsewhere: it goes on from
                // the highest number given.
                let n = crate::planner::ids::number_of(service, replica).unwrap_or(0);
                s.replica_seq = s.replica_seq.saturating_add(1).max(n);
            }
            s.replicas.insert(
                replica.clone(),
                Replica {
                    id: replica.clone(),
                    image: image.clone(),
                    host: host.clone(),
                    addr: None,
                    phase: Phase::Requested,
                    drain_since_ms: None,
                    drained_by: BTreeSet::new(),
                    health: health.clone(),
                    exit: None,
                    spawned: *spawned,
                    started_at_ms: None,
                    retiring: false,
                    replaced_by: None,
                    deployment: deployment_id.clone(),
                },
            );
        }
        Event::ReplicaStarted { replica, addr, .. } => {
            if let Some(r) = s.replicas.get_mut(replica) {
                r.addr = Some(addr.clone());
                r.started_at_ms = Some(at);
                if r.phase == Phase::Requested {
                    r.phase = Phase::Running;
                }
            }
        }
        Event::ReplicaHealthy { replica, .. } => {
            if let Some(r) = s.replicas.get_mut(replica) {
                if matches!(
                    r.phase,
                    Phase::Running | Phase::Unhealthy | Phase::Requested
                ) {
                    r.phase = Phase::Healthy;
                }
            }
        }
        Event::ReplicaUnhealthy { replica, .. } => {
            if let Some(r) = s.replicas.get_mut(replica) {
                if matches!(r.phase, Phase::Running | Phase::Healthy | Phase::Requested) {
                    r.phase = Phase::Unhealthy;
                }
            }
        }
        Event::ReplicaExited {
            replica,
            status,
            reason,
            ..
        } => {
            if let Some(r) = s.replicas.get_mut(replica) {
                r.phase = Phase::Exited;
                r.exit = Some(match reason {
                    Some(reason) => format!("{status}: {reason}"),
                    None => status.to_string(),
                });
            }
            // Keep it while its batch may still need to know how it ended.
            if !s.is_routed(replica) {
                forget_exited(s);
            }
        }
        Event::ReplicaDrained {
            replica, router, ..
        } => {
            // Only a drain the planner asked for counts.
            if let Some(r) = s.replicas.get_mut(replica) {
                if r.phase == Phase::Draining {
                    r.drained_by.insert(router.clone());
                }
            }
        }
        Event::ReplicaStopRequested { replica, .. } => {
            if let Some(r) = s.replicas.get_mut(replica) {
                if r.phase != Phase::Exited {
                    r.phase = Phase::Stopping;
                }
            }
        }
        Event::RouteChanged {
            backends, route, ..
        } => {
            s.route = route.clone();
            apply_routes(s, backends, at);
        }
        Event::BatchCompleted { deployment_id, .. } => {
            if let Some(d) = s.deployment.as_mut() {
                d.batch = None;
                d.phase_since_ms = at;
            }
            if let Some(r) = s.record_mut(deployment_id) {
                r.batches_done += 1;
            }
            forget_exited(s);
        }
        Event::DeploymentReverting {
            deployment_id,
            reason,
        } => {
            if let Some(d) = s.deployment.as_mut() {
                d.reverting = Some(reason.clone());
                d.batch = None;
                d.paused = None;
                d.phase_since_ms = at;
            }
            if let Some(r) = s.record_mut(deployment_id) {
                r.outcome = Outcome::Reverting;
                r.failure = Some(reason.clone());
                r.paused = None;
            }
        }
        Event::DeploymentCompleted {
            deployment_id,
            at_ms,
        } => {
            if let Some(d) = s.deployment.take() {
                if s.images.last() != Some(&d.image) {
                    s.images.push(d.image.clone());
                }
                s.image = Some(d.image);
            }
            finish_record(s, deployment_id, Outcome::Completed, None, *at_ms);
        }
        Event::DeploymentReverted {
            deployment_id,
            reason,
            at_ms,
        } => {
            s.deployment = None;
            finish_record(s, deployment_id, Outcome::Reverted, Some(reason), *at_ms);
        }
        Event::DeploymentFailed {
            deployment_id,
            reason,
            at_ms,
        } => {
            s.deployment = None;
            finish_record(s, deployment_id, Outcome::Failed, Some(reason), *at_ms);
        }
        Event::DeploymentPaused {
            deployment_id,
            reason,
        } => {
            if let Some(d) = s.deployment.as_mut() {
                d.paused = Some(Paused {
                    since_ms: at,
                    reason: reason.clone(),
                });
            }
            if let Some(r) = s.record_mut(deployment_id) {
                r.paused = Some(reason.clone());
            }
        }
        Event::DeploymentResumed {
            deployment_id,
            paused_ms,
        } => {
            if let Some(d) = s.deployment.as_mut() {
                d.paused = None;
                d.resumed_at_ms = Some(at);
                d.phase_since_ms += paused_ms;
                d.canary.step_since_ms += paused_ms;
                if let Some(t) = d.standby_until_ms.as_mut() {
                    *t += paused_ms;
                }
                if let Some(t) = d.bake_until_ms.as_mut() {
                    *t += paused_ms;
                }
                if let Some(b) = d.batch.as_mut() {
                    b.deadline_ms += paused_ms;
                }
            }
            if let Some(r) = s.record_mut(deployment_id) {
                r.paused = None;
            }
        }
        Event::TrafficShifted {
            step,
            percent,
            bake_secs,
            ..
        } => {
            if let Some(d) = s.deployment.as_mut() {
                d.canary.step = *step;
                d.canary.percent = *percent;
                d.canary.bake_secs = *bake_secs;
                d.canary.step_since_ms = at;
                d.phase_since_ms = at;
            }
        }
        Event::CanaryPromoted { .. } => {
            if let Some(d) = s.deployment.as_mut() {
                d.canary.promoted = true;
                d.phase_since_ms = at;
            }
        }
        Event::TrafficSwitched {
            standby_until_ms, ..
        } => {
            if let Some(d) = s.deployment.as_mut() {
                d.standby_until_ms = Some(*standby_until_ms);
                d.phase_since_ms = at;
            }
        }
        Event::StandbyEnded { .. } => {
            if let Some(d) = s.deployment.as_mut() {
                d.standby_ended = true;
                d.phase_since_ms = at;
            }
        }
        Event::WeightsSet { weights, .. } => {
            s.weights
                .extend(weights.iter().map(|(k, v)| (k.clone(), *v)));
        }
        Event::ThresholdBreached {
            version, judgement, ..
        } => {
            let breach_of_new = s
                .deployment
                .as_ref()
                .is_some_and(|d| &d.image == version && d.reverting.is_none());
            if breach_of_new {
                let id = s
                    .deployment
                    .as_ref()
                    .map(|d| d.id.clone())
                    .unwrap_or_default();
                if let Some(r) = s.record_mut(&id) {
                    r.breaches.push(format!("{version}: {judgement}"));
                }
            }
            set_verdict(s, version, VerdictKind::Breach(judgement.clone()), at);
        }
        Event::NoData {
            version,
            requests,
            min_requests,
            ..
        } => set_verdict(
            s,
            version,
            VerdictKind::NoData {
                requests: *requests,
                min_requests: *min_requests,
            },
            at,
        ),
        Event::ThresholdsMet { version, .. } => set_verdict(s, version, VerdictKind::Pass, at),
        Event::BakeStarted { until_ms, .. } => {
            if let Some(d) = s.deployment.as_mut() {
                d.bake_until_ms = Some(*until_ms);
                d.phase_since_ms = at;
            }
        }
        Event::ReplicaRetireRequested { replica, .. } => {
            if let Some(r) = s.replicas.get_mut(replica) {
                r.retiring = true;
            }
        }
        Event::ReplicaReplaced {
            replica,
            new_replica,
            ..
        } => replaced(s, replica, new_replica, at),
        Event::HostJoined { .. }
        | Event::HostLost { .. }
        | Event::HostSuspected { .. }
        | Event::HostSuspicionCleared { .. }
        | Event::ClusterDefined { .. }
        | Event::SecurityDefined { .. }
        | Event::MassHostLossHeld { .. }
        | Event::MassHostLossReleased { .. }
        | Event::RouterJoined { .. }
        | Event::RouterLost { .. }
        | Event::PlannerLeaderElected { .. }
        | Event::LogBreakAccepted { .. }
        | Event::ServiceDefined { .. }
        | Event::RolloutStarted { .. }
        | Event::RolloutWaveStarted { .. }
        | Event::RolloutTargetDeployed { .. }
        | Event::RolloutWaveBaking { .. }
        | Event::RolloutWaveCompleted { .. }
        | Event::RolloutPaused { .. }
        | Event::RolloutResumed { .. }
        | Event::RolloutCancelled { .. }
        | Event::RolloutRollbackStarted { .. }
        | Event::RolloutRollbackCompleted { .. }
        | Event::RolloutCompleted { .. }
        | Event::RolloutTargetOverridden { .. }
        | Event::NotifyDefined { .. }
        | Event::WebhookDelivered { .. }
        | Event::WebhookFailed { .. }
        | Event::EnvironmentsDefined { .. }
        | Event::ReleaseCreated(_)
        | Event::ReleaseDeployStarted(_)
        | Event::ReleaseSwitched(_)
        | Event::ReleaseDeployCompleted(_)
        | Event::ReleaseDeployFailed(_) => {}
    }
}

/// A replica taken out of rotation while it was serving starts draining;
/// one removed because it was unhealthy keeps running, out of rotation.
fn apply_routes(s: &mut ServiceState, backends: &[Backend], at: i64) {
    let removed: Vec<String> = s
        .routes
        .iter()
        .filter(|old| !backends.iter().any(|b| b.replica == old.replica))
        .map(|b| b.replica.clone())
        .collect();
    for id in removed {
        if let Some(r) = s.replicas.get_mut(&id) {
            if matches!(r.phase, Phase::Healthy | Phase::Running) {
                r.phase = Phase::Draining;
                r.drain_since_ms = Some(at);
                r.drained_by.clear();
            }
        }
    }
    s.routes = backends.to_vec();
    if let Some(batch) = s.deployment.as_mut().and_then(|d| d.batch.as_mut()) {
        let routed = |id: &String| backends.iter().any(|b| &b.replica == id);
        if !batch.start.is_empty() && batch.start.iter().all(routed) {
            batch.switched = true;
        }
    }
}

/// `old`, on a lost host, was replaced by `new`: `old` is lost, and `new`
/// takes its place wherever the deployment in flight names it (its batch,
/// its canary set) and keeps its operator weight. A batch waiting for `old`
/// to become healthy waits for `new` as long as a new replica gets.
fn replaced(s: &mut ServiceState, old: &str, new: &str, at: i64) {
    if let Some(r) = s.replicas.get_mut(old) {
        r.phase = Phase::Lost;
        r.replaced_by = Some(new.to_owned());
    }
    if let Some(w) = s.weights.remove(old) {
        s.weights.insert(new.to_owned(), w);
    }
    let swap = |ids: &mut Vec<String>| {
        for id in ids.iter_mut().filter(|id| *id == old) {
            *id = new.to_owned();
        }
    };
    if let Some(d) = s.deployment.as_mut() {
        swap(&mut d.canary.replicas);
        let health_timeout = crate::limits::secs_to_ms(d.plan.health_timeout_secs);
        if let Some(b) = d.batch.as_mut() {
            if b.start.iter().any(|id| id == old) {
                b.deadline_ms = b.deadline_ms.max(at.saturating_add(health_timeout));
            }
            swap(&mut b.start);
            swap(&mut b.replace);
        }
    }
}

fn set_verdict(s: &mut ServiceState, version: &str, kind: VerdictKind, at: i64) {
    s.verdicts
        .insert(version.to_owned(), Verdict { kind, since_ms: at });
    // Keep only versions that still run, and the one just judged.
    let running: Vec<String> = s.replicas.values().map(|r| r.image.clone()).collect();
    s.verdicts
        .retain(|v, _| v == version || running.contains(v));
}

fn forget_exited(s: &mut ServiceState) {
    let referenced: Vec<String> = s
        .deployment
        .as_ref()
        .and_then(|d| d.batch.as_ref())
        .map(|b| b.start.iter().chain(&b.replace).cloned().collect())
        .unwrap_or_default();
    s.replicas
        .retain(|id, r| r.phase != Phase::Exited || referenced.contains(id));
    let replicas = &s.replicas;
    s.weights.retain(|id, _| replicas.contains_key(id));
}

fn finish_record(
    s: &mut ServiceState,
    deployment_id: &str,
    outcome: Outcome,
    reason: Option<&String>,
    at_ms: i64,
) {
    if let Some(r) = s.record_mut(deployment_id) {
        r.outcome = outcome;
        if reason.is_some() {
            r.failure = reason.cloned();
        }
        r.ended_at_ms = Some(at_ms);
    }
    forget_exited(s);
}
