//! Events: every decision of the planner and every fact observed by the
//! other services, as written to the log.
//!
//! Event names are past tense and stable; a released event is never edited.
//! A change of shape gets a new schema version and an upcaster.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::cluster::ClusterSpec;
use crate::rollout::{FailedTarget, RolloutTarget, RolloutWave};
use crate::spec::{CanaryStep, HealthSpec, RouteSpec, RunSpec, ServiceSpec, Strategy};

/// Schema version of every event type in this release.
pub const SCHEMA_VERSION: i32 = 1;

/// Who did something and why, carried by every event in the log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Meta {
    /// The person or system that caused the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Why, in the actor's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Id shared by every event of one deployment or command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// Id of the command or event that directly caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// The planner epoch the event was decided under (see
    /// `PlannerLeaderElected`). Executors and routers act on an intent only
    /// if its epoch is not older than the newest they have seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
    /// The operator whose signature proved the command that caused the
    /// event (see [`crate::security`]): `actor` is then that operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed: Option<crate::security::SignedBy>,
    /// On the first event of each decision of the planner: when it was
    /// taken, what caused it and what the core was given, so that
    /// [`crate::replay`] takes it again from the log alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided: Option<crate::replay::Decided>,
}

impl Meta {
    /// Whether an intent with this metadata may be acted on by a consumer
    /// that has seen epochs up to `newest`, and the newest epoch after it.
    /// Events from before leadership existed carry no epoch and count as 0.
    pub fn admit_epoch(&self, newest: i64) -> (bool, i64) {
        let epoch = self.epoch.unwrap_or(0);
        (epoch >= newest, epoch.max(newest))
    }
}

/// How a replica's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ExitStatus {
    /// Exit code, when the process exited by itself.
    pub code: Option<i32>,
    /// Signal number, when a signal ended it.
    pub signal: Option<i32>,
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exit code {c}"),
            (None, Some(s)) => write!(f, "signal {s}"),
            (None, None) => f.write_str("unknown exit status"),
        }
    }
}

/// One backend in a service's routing table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Backend {
    /// Replica id.
    pub replica: String,
    /// `host:port` the router connects to.
    pub addr: String,
    /// Image the replica runs.
    pub image: String,
    /// Relative weight (0 to 100); 0 keeps the replica without traffic.
    pub weight: u32,
}

/// Every event Mentat writes to its log. The JSON and MessagePack form is an
/// object whose `type` field names the variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type")]
pub enum Event {
    /// A service definition was applied from a config file.
    ServiceDefined {
        /// The whole definition as applied.
        spec: ServiceSpec,
        /// The file it came from, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<String>,
    },
    /// An executor host started sending heartbeats.
    HostJoined {
        /// Host id.
        host: String,
        /// How many replicas it can run.
        capacity: u32,
    },
    /// A router started sending heartbeats (or came back, or moved).
    RouterJoined {
        /// Router id (`--router-id`).
        router: String,
        /// The machine it runs on.
        host: String,
        /// The address it accepts requests on.
        listen: String,
    },
    /// A router stopped sending heartbeats: drains no longer wait for it.
    RouterLost {
        /// Router id.
        router: String,
        /// Why it is considered lost.
        reason: String,
    },
    /// A planner took the lead: `epoch` is one more than any before it, and
    /// every event it appends carries it (`Meta::epoch`).
    PlannerLeaderElected {
        /// The planner's id (`--planner-id`).
        planner: String,
        /// Its epoch.
        epoch: i64,
        /// The settings it decides with (`--drain-timeout-secs`), so that a
        /// replay of its decisions is given them too. Absent before they
        /// were recorded: the defaults.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        settings: Option<crate::planner::Settings>,
    },
    /// An operator accepted a break of the log's hash chain, so that the
    /// planner runs on it (`mentat-planner --accept-break`): from the
    /// position named on, the log is trusted as it is stored. Signed with
    /// the planner's key over
    /// [`accepted_break_text`](crate::audit::accepted_break_text), so that
    /// an acceptance cannot be forged by whoever can write the database.
    LogBreakAccepted {
        /// The first bad position accepted.
        position: i64,
        /// What was wrong there.
        kind: crate::audit::BreakKind,
        /// The hashes or positions that did not match.
        detail: String,
        /// Who accepted it.
        actor: String,
        /// Why.
        reason: String,
        /// The planner's public key (hex).
        key: String,
        /// The signature (hex).
        signature: String,
    },
    /// An executor host stopped sending heartbeats.
    HostLost {
        /// Host id.
        host: String,
        /// Why it is considered lost.
        reason: String,
    },
    /// The planner heard no heartbeat from a host for the cluster's
    /// `suspect_after_secs`: its replicas get weight 0 in every router
    /// (unless every host serving a service is suspect).
    HostSuspected {
        /// Host id.
        host: String,
        /// How long it had been silent (ms).
        silent_ms: i64,
    },
    /// A suspect host sent a heartbeat again before it was lost: its
    /// replicas get their weights back.
    HostSuspicionCleared {
        /// Host id.
        host: String,
    },
    /// The cluster block of a service file was applied (`mt apply`).
    ClusterDefined {
        /// The settings as applied, defaults filled in.
        cluster: ClusterSpec,
        /// The file it came from, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<String>,
    },
    /// The security block of a service file was applied (`mt apply`): who
    /// may sign commands, with what role, and whether they must. Its meta
    /// names the admin who signed it once signing is required.
    SecurityDefined {
        /// The block as applied.
        security: crate::security::SecuritySpec,
        /// The file it came from, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<String>,
    },
    /// More than half of the live hosts went suspect within
    /// `suspect_after_secs` of each other: replicas of lost hosts are not
    /// placed again until an operator releases the hold or the hosts return.
    MassHostLossHeld {
        /// The hosts that went suspect together.
        hosts: Vec<String>,
        /// Hosts live (suspect ones included) when it was decided.
        live: u32,
    },
    /// The hold on re-placement ended: an operator released it
    /// (`mt hosts release`, actor and reason in the event's meta), or every
    /// host it named is back.
    MassHostLossReleased {
        /// The hosts of the hold.
        hosts: Vec<String>,
        /// True when an operator released it.
        by_operator: bool,
    },
    /// A replica of a lost host was placed again: `new_replica` runs the
    /// same image on `new_host` (a `ReplicaStartRequested` follows), and
    /// takes the lost one's place in the deployment in flight. The lost
    /// replica is stopped if its host comes back.
    ReplicaReplaced {
        /// The replica left behind.
        replica: String,
        /// Service.
        service: String,
        /// The lost host it ran on.
        host: String,
        /// The replica that takes its place.
        new_replica: String,
        /// Where that one runs.
        new_host: String,
        /// Image both run.
        image: String,
    },
    /// A deployment was accepted and planned.
    DeploymentStarted {
        /// Deployment id (UUIDv7).
        deployment_id: String,
        /// Service being deployed.
        service: String,
        /// Image being rolled out.
        image: String,
        /// Image serving before this deployment, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        previous_image: Option<String>,
        /// Strategy in use.
        strategy: Strategy,
        /// Replicas replaced per batch.
        batch_size: u32,
        /// Replicas once complete.
        replicas: u32,
        /// Whether a failed batch rolls back automatically.
        auto_revert: bool,
        /// True when this deployment is a rollback command.
        #[serde(default)]
        rollback: bool,
        /// When it was accepted (milliseconds since the Unix epoch).
        at_ms: i64,
        /// The strategy's settings, fixed for the life of the deployment.
        #[serde(default)]
        plan: Plan,
    },
    /// An operator held the deployment, or a phase passed its deadline with
    /// `auto_revert` off: no new step starts and deadlines stop counting.
    DeploymentPaused {
        /// Deployment id.
        deployment_id: String,
        /// Why.
        reason: String,
    },
    /// The deployment carries on from where it was held.
    DeploymentResumed {
        /// Deployment id.
        deployment_id: String,
        /// How long it was held; every deadline moves on by this much.
        paused_ms: i64,
    },
    /// Canary: the canary's share of traffic was set for a step.
    TrafficShifted {
        /// Deployment id.
        deployment_id: String,
        /// Step number, from 1.
        step: u32,
        /// Share of the service's traffic the canary now receives.
        percent: u32,
        /// How long the step bakes before the next (0: until an operator decides).
        bake_secs: u64,
    },
    /// Canary: the new image is rolled out to every replica by the rolling rules.
    CanaryPromoted {
        /// Deployment id.
        deployment_id: String,
        /// True when the last step's bake ended, false when an operator promoted.
        automatic: bool,
    },
    /// Blue-green: all traffic moved to the new set in one routing change;
    /// the old set stays running, with weight 0, until the standby ends.
    TrafficSwitched {
        /// Deployment id.
        deployment_id: String,
        /// Image now serving.
        image: String,
        /// Image kept on standby.
        standby_image: Option<String>,
        /// End of the standby window (ms since epoch).
        standby_until_ms: i64,
    },
    /// Blue-green: the standby window ended; the old set is drained and stopped.
    StandbyEnded {
        /// Deployment id.
        deployment_id: String,
        /// True when an operator ended it before its time.
        early: bool,
    },
    /// An operator set router weights of instances (a `weight` or `route` command).
    WeightsSet {
        /// Service.
        service: String,
        /// New weight by instance.
        weights: BTreeMap<String, u32>,
    },
    /// Fact from the health-watcher: a version's traffic broke a threshold
    /// over the window. With `auto_revert`, a deployment that rolls this
    /// version out reverts at once, in any phase; without, it is held.
    ThresholdBreached {
        /// Service.
        service: String,
        /// The deployment in flight when it was judged, if the watcher knew one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deployment_id: Option<String>,
        /// Version (image) judged.
        version: String,
        /// What was measured, with the numbers.
        judgement: Judgement,
    },
    /// Fact from the health-watcher: a version's window holds fewer requests
    /// than `min_requests`, so it can be neither passed nor failed.
    NoData {
        /// Service.
        service: String,
        /// Version (image).
        version: String,
        /// Requests seen in the window.
        requests: u64,
        /// Requests needed.
        min_requests: u64,
        /// Window, in seconds.
        window_secs: u64,
    },
    /// Fact from the health-watcher: a version's traffic is within every
    /// threshold over a window with enough requests (after no data or a breach).
    ThresholdsMet {
        /// Service.
        service: String,
        /// Version (image).
        version: String,
        /// Requests in the window.
        requests: u64,
        /// Window, in seconds.
        window_secs: u64,
    },
    /// The new version serves every replica; it is watched for `bake_secs`
    /// more before the deployment completes.
    BakeStarted {
        /// Deployment id.
        deployment_id: String,
        /// End of the bake window (ms since epoch).
        until_ms: i64,
    },
    /// An operator asked for an instance to be taken out of rotation and stopped.
    ReplicaRetireRequested {
        /// Replica id.
        replica: String,
        /// Service.
        service: String,
    },
    /// A batch began: new replicas are being started to replace old ones.
    BatchStarted {
        /// Deployment id.
        deployment_id: String,
        /// Batch number, from 1.
        batch: u32,
        /// Image the batch starts.
        image: String,
        /// Replicas started by this batch.
        start: Vec<String>,
        /// Old replicas this batch takes out of rotation once the new ones are healthy.
        replace: Vec<String>,
        /// Time by which the new replicas must be healthy (ms since epoch).
        deadline_ms: i64,
    },
    /// The planner asked a host to start a replica.
    ReplicaStartRequested {
        /// Replica id.
        replica: String,
        /// Service it belongs to.
        service: String,
        /// Host that must start it.
        host: String,
        /// Image (version) it runs.
        image: String,
        /// Command, args and env with `{image}` already substituted; `{port}` is left for the executor.
        run: RunSpec,
        /// Readiness probe, for the health-watcher.
        health: HealthSpec,
        /// Deployment that asked for it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deployment_id: Option<String>,
        /// Started by an operator (`mt spawn`), outside the declared replicas.
        #[serde(default)]
        spawned: bool,
    },
    /// Fact from an executor: a replica's process is running.
    ReplicaStarted {
        /// Replica id.
        replica: String,
        /// Service.
        service: String,
        /// Host running it.
        host: String,
        /// Process id on that host.
        pid: u32,
        /// `host:port` it listens on.
        addr: String,
        /// Readiness probe to run against it.
        health: HealthSpec,
    },
    /// Fact from an executor: a replica's process ended.
    ReplicaExited {
        /// Replica id.
        replica: String,
        /// Service.
        service: String,
        /// Host that ran it.
        host: String,
        /// How it ended.
        status: ExitStatus,
        /// True when it ended because a stop was requested.
        requested: bool,
        /// Why it never ran, when the executor refused or failed to start
        /// it (exit code 127): the program is not on this host's
        /// `--allow-command` list, or could not be found.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Fact from the health-watcher: the replica passed `healthy_after` probes in a row.
    ReplicaHealthy {
        /// Replica id.
        replica: String,
        /// Service.
        service: String,
    },
    /// Fact from the health-watcher: the replica failed `unhealthy_after` probes in a row.
    ReplicaUnhealthy {
        /// Replica id.
        replica: String,
        /// Service.
        service: String,
        /// Last probe error.
        reason: String,
    },
    /// The routing table of a service changed; the full table is carried.
    RouteChanged {
        /// Service.
        service: String,
        /// Every backend that may receive traffic, with its weight.
        backends: Vec<Backend>,
        /// Host name, environment and sticky sessions of the service.
        #[serde(default)]
        route: RouteSpec,
        /// Set when this change is one of several a release moves at once:
        /// a router applies them all in one swap of its table.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        switch: Option<crate::release::RouteSwitch>,
    },
    /// Fact from a router: a replica out of rotation has no request in flight any more.
    ReplicaDrained {
        /// Replica id.
        replica: String,
        /// Service.
        service: String,
        /// Router that drained it.
        router: String,
        /// True when the drain timeout passed with requests still in flight.
        timed_out: bool,
    },
    /// The planner asked a host to stop a replica.
    ReplicaStopRequested {
        /// Replica id.
        replica: String,
        /// Service.
        service: String,
        /// Host running it.
        host: String,
        /// Why it is stopped.
        reason: String,
    },
    /// Every replica of a batch is healthy and its old replicas are stopped.
    BatchCompleted {
        /// Deployment id.
        deployment_id: String,
        /// Batch number.
        batch: u32,
    },
    /// A batch failed and the deployment is rolling back to the previous image.
    DeploymentReverting {
        /// Deployment id.
        deployment_id: String,
        /// What failed.
        reason: String,
    },
    /// The deployment finished: every replica runs the new image.
    DeploymentCompleted {
        /// Deployment id.
        deployment_id: String,
        /// When (ms since epoch).
        at_ms: i64,
    },
    /// The deployment was rolled back to the previous image.
    DeploymentReverted {
        /// Deployment id.
        deployment_id: String,
        /// What failed.
        reason: String,
        /// When (ms since epoch).
        at_ms: i64,
    },
    /// The deployment failed and was not (or could not be) rolled back.
    DeploymentFailed {
        /// Deployment id.
        deployment_id: String,
        /// What failed.
        reason: String,
        /// When (ms since epoch).
        at_ms: i64,
    },
    /// A fleet rollout began (`mentat.cmd.rollout_start`): its targets,
    /// each with the image it served, and its waves with their members,
    /// fixed for its whole life. Who started it and why are in the meta.
    RolloutStarted {
        /// Rollout id.
        rollout_id: String,
        /// Image rolled out.
        image: String,
        /// How the targets were chosen (`kind=edge`, or the services named).
        selector: String,
        /// Every target, in wave order, with its previous image.
        targets: Vec<RolloutTarget>,
        /// The waves, in order; a wave that would add no target is left out.
        waves: Vec<RolloutWave>,
        /// How long each wave's targets hold their health before the next.
        wave_bake_secs: u64,
        /// When it was accepted (ms since epoch).
        at_ms: i64,
    },
    /// A wave of the rollout began: its members are deployed.
    RolloutWaveStarted {
        /// Rollout id.
        rollout_id: String,
        /// Wave number, from 1.
        wave: u32,
        /// The services it deploys.
        members: Vec<String>,
    },
    /// The rollout started a deployment of one target (appended with the
    /// `DeploymentStarted` in the target's stream, in one transaction):
    /// a target is never deployed twice for one decision.
    RolloutTargetDeployed {
        /// Rollout id.
        rollout_id: String,
        /// The target.
        service: String,
        /// The deployment started.
        deployment_id: String,
        /// Image it deploys: the rollout's, or the previous one for a rollback.
        image: String,
        /// True when it takes the target back (`rollback_all`).
        #[serde(default)]
        rollback: bool,
    },
    /// Every target of the wave completed: it holds its health for
    /// `wave_bake_secs` before the wave completes.
    RolloutWaveBaking {
        /// Rollout id.
        rollout_id: String,
        /// Wave number.
        wave: u32,
        /// End of the bake (ms since epoch).
        until_ms: i64,
    },
    /// Every target of the wave completed and held its health through the bake.
    RolloutWaveCompleted {
        /// Rollout id.
        rollout_id: String,
        /// Wave number.
        wave: u32,
    },
    /// The rollout is held: targets failed (their deployment was reverted
    /// or failed, or they breached a threshold), or an operator paused it.
    RolloutPaused {
        /// Rollout id.
        rollout_id: String,
        /// The wave in progress.
        wave: u32,
        /// The targets that failed, with their reasons (empty when an
        /// operator paused it).
        failed: Vec<FailedTarget>,
        /// True when an operator paused it.
        #[serde(default)]
        by_operator: bool,
    },
    /// An operator resumed the rollout.
    RolloutResumed {
        /// Rollout id.
        rollout_id: String,
        /// The failed targets are deployed again first.
        #[serde(default)]
        retry_failed: bool,
        /// How long it was held; the bake moves on by this much.
        paused_ms: i64,
    },
    /// An operator cancelled the rollout: no further deployment; the new
    /// image stays where it succeeded.
    RolloutCancelled {
        /// Rollout id.
        rollout_id: String,
    },
    /// An operator asked for every target that took the new image to go
    /// back to its previous one.
    RolloutRollbackStarted {
        /// Rollout id.
        rollout_id: String,
        /// The targets to take back (those deployed by the rollout and not
        /// reverted by their own deployment).
        targets: Vec<String>,
    },
    /// Every rollback deployment ended.
    RolloutRollbackCompleted {
        /// Rollout id.
        rollout_id: String,
        /// How many targets are back on their previous image.
        reverted: u32,
        /// The targets that could not be taken back, and why.
        failed: Vec<FailedTarget>,
    },
    /// Every wave of the rollout completed.
    RolloutCompleted {
        /// Rollout id.
        rollout_id: String,
        /// When (ms since epoch).
        at_ms: i64,
    },
    /// An operator deployed a target of the rollout in flight outside it
    /// (`mt deploy --override-rollout`): the rollout leaves it alone.
    RolloutTargetOverridden {
        /// Rollout id.
        rollout_id: String,
        /// The target.
        service: String,
        /// The operator's deployment.
        deployment_id: String,
    },
    /// The notify block of a service file was applied (`mt apply`): the
    /// webhooks the notifier tells, from here on.
    NotifyDefined {
        /// Every webhook (empty: none).
        webhooks: Vec<crate::notify::Webhook>,
        /// The file it came from, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<String>,
    },
    /// Fact from the notifier: a webhook answered 2xx to an event.
    /// Recorded in the stream of the event it told.
    WebhookDelivered {
        /// Webhook name.
        webhook: String,
        /// The event told (also the `Idempotency-Key` sent).
        event_id: String,
        /// Its type.
        event_type: String,
        /// Its stream.
        stream: String,
        /// Its rollout, when it is a rollout's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rollout_id: Option<String>,
        /// Tries it took.
        attempts: u32,
        /// The HTTP status of the answer.
        status: u16,
    },
    /// Fact from the notifier: a webhook was tried for the last time and
    /// did not take the event.
    WebhookFailed {
        /// Webhook name.
        webhook: String,
        /// The event told.
        event_id: String,
        /// Its type.
        event_type: String,
        /// Its stream.
        stream: String,
        /// Its rollout, when it is a rollout's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rollout_id: Option<String>,
        /// Tries made.
        attempts: u32,
        /// The last error.
        error: String,
    },
    /// The environments block of a service file was applied (`mt apply`).
    EnvironmentsDefined {
        /// Every environment, by name.
        environments: crate::environment::Environments,
        /// The file it came from, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<String>,
    },
    /// A release was created (`mt release create`): an immutable snapshot
    /// of every service's definition in every environment, and its image.
    ReleaseCreated(crate::release::Snapshot),
    /// A release began to be deployed to an environment: the deployments of
    /// its members (each a `DeploymentStarted` in the member's stream,
    /// appended in the same transaction).
    ReleaseDeployStarted(crate::release::DeployStarted),
    /// Every member's new replicas are healthy: all the environment's
    /// services moved to the release in one routing change (each member's
    /// `RouteChanged`, tagged with this switch, in the same transaction).
    ReleaseSwitched(crate::release::Step),
    /// Every member of the release deployment completed.
    ReleaseDeployCompleted(crate::release::Step),
    /// The release deployment ended without the release serving: a member
    /// failed before the switch (nothing switched), or the release was
    /// reverted or rolled back after it (in one switch).
    ReleaseDeployFailed(crate::release::Failed),
}

/// A measurement that broke a threshold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Judgement {
    /// What was measured.
    pub metric: Metric,
    /// Observed value over the window (unit: see [`Metric`]).
    pub observed: u64,
    /// The threshold it broke.
    pub threshold: u64,
    /// The other versions' value over the same window, when compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<u64>,
    /// Window, in seconds.
    pub window_secs: u64,
    /// Requests in the window.
    pub requests: u64,
}

/// A measured quantity and its unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Share of 5xx answers, in basis points (hundredths of a percent).
    ErrorRate,
    /// 99th-percentile latency, in microseconds.
    LatencyP99,
}

impl Metric {
    /// A value of this metric for people: `12.34%`, `512.0 ms`.
    pub fn format(self, value: u64) -> String {
        match self {
            Metric::ErrorRate => format!("{}.{:02}%", value / 100, value % 100),
            Metric::LatencyP99 => format!("{:.1} ms", value as f64 / 1000.0),
        }
    }

    /// Name used in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::ErrorRate => "error rate",
            Metric::LatencyP99 => "p99 latency",
        }
    }
}

impl std::fmt::Display for Judgement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} over {}s ({} requests), threshold {}",
            self.metric.as_str(),
            self.metric.format(self.observed),
            self.window_secs,
            self.requests,
            self.metric.format(self.threshold)
        )?;
        if let Some(b) = self.baseline {
            write!(f, ", baseline {}", self.metric.format(b))?;
        }
        Ok(())
    }
}

/// A deployment's strategy settings, copied from the service's `deploy`
/// block when it starts, so that a config applied meanwhile does not change
/// a deployment in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct Plan {
    /// Canary replicas started beside the serving set (canary only).
    pub canary_replicas: u32,
    /// Share of traffic a canary without steps holds (canary only).
    pub canary_percent: u32,
    /// Canary traffic steps (canary only).
    pub steps: Vec<CanaryStep>,
    /// Standby window of the old set (blue-green only).
    pub standby_secs: u64,
    /// Longest time a phase may go without progress.
    pub progress_deadline_secs: u64,
    /// How long new replicas may take to become healthy.
    pub health_timeout_secs: u64,
    /// How long the new version is watched once it serves every replica.
    pub bake_secs: u64,
    /// Steps advance only on a pass of the traffic thresholds.
    pub thresholds: bool,
    /// The release deployment this deployment is a member of: its new
    /// replicas replace every old one (whatever their image) and take
    /// traffic only when the release switches; a breach is the release's
    /// to judge.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            canary_replicas: 0,
            canary_percent: 10,
            steps: Vec::new(),
            standby_secs: 600,
            progress_deadline_secs: 600,
            health_timeout_secs: 10,
            bake_secs: 0,
            thresholds: false,
            release: None,
        }
    }
}

impl Event {
    /// True for the events other services report as facts (on
    /// `mentat.fact.<source>.<service>.<Type>`, see [`Event::fact_source`]);
    /// every other event is the planner's own.
    pub fn is_fact(&self) -> bool {
        matches!(
            self,
            Event::ReplicaStarted { .. }
                | Event::ReplicaExited { .. }
                | Event::ReplicaHealthy { .. }
                | Event::ReplicaUnhealthy { .. }
                | Event::ReplicaDrained { .. }
                | Event::ThresholdBreached { .. }
                | Event::NoData { .. }
                | Event::ThresholdsMet { .. }
                | Event::WebhookDelivered { .. }
                | Event::WebhookFailed { .. }
        )
    }

    /// Whether the planner decided this event, as opposed to recording what
    /// it was told or observed: facts, hosts and routers joining or going
    /// silent, leadership and accepted breaks are observations; everything
    /// else is a decision, which the log holds with its [`Meta::decided`].
    pub fn is_decision(&self) -> bool {
        !self.is_fact()
            && !matches!(
                self,
                Event::HostJoined { .. }
                    | Event::HostSuspected { .. }
                    | Event::HostSuspicionCleared { .. }
                    | Event::HostLost { .. }
                    | Event::RouterJoined { .. }
                    | Event::RouterLost { .. }
                    | Event::PlannerLeaderElected { .. }
                    | Event::LogBreakAccepted { .. }
            )
    }

    /// Who may report this fact, which its subject names: the executor of
    /// the host that runs the replica, the router that drained it, the
    /// health-watcher, or the notifier. `None` for an event that is not a fact.
    pub fn fact_source(&self) -> Option<FactSource<'_>> {
        match self {
            Event::ReplicaStarted { host, .. } | Event::ReplicaExited { host, .. } => {
                Some(FactSource::Host(host))
            }
            Event::ReplicaDrained { router, .. } => Some(FactSource::Router(router)),
            Event::ReplicaHealthy { .. }
            | Event::ReplicaUnhealthy { .. }
            | Event::ThresholdBreached { .. }
            | Event::NoData { .. }
            | Event::ThresholdsMet { .. } => Some(FactSource::HealthWatcher),
            Event::WebhookDelivered { .. } | Event::WebhookFailed { .. } => {
                Some(FactSource::Notifier)
            }
            _ => None,
        }
    }

    /// Stable type name, as stored in the log and used in subjects.
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::ServiceDefined { .. } => "ServiceDefined",
            Event::HostJoined { .. } => "HostJoined",
            Event::HostLost { .. } => "HostLost",
            Event::HostSuspected { .. } => "HostSuspected",
            Event::HostSuspicionCleared { .. } => "HostSuspicionCleared",
            Event::ClusterDefined { .. } => "ClusterDefined",
            Event::SecurityDefined { .. } => "SecurityDefined",
            Event::MassHostLossHeld { .. } => "MassHostLossHeld",
            Event::MassHostLossReleased { .. } => "MassHostLossReleased",
            Event::ReplicaReplaced { .. } => "ReplicaReplaced",
            Event::RouterJoined { .. } => "RouterJoined",
            Event::RouterLost { .. } => "RouterLost",
            Event::PlannerLeaderElected { .. } => "PlannerLeaderElected",
            Event::LogBreakAccepted { .. } => "LogBreakAccepted",
            Event::DeploymentStarted { .. } => "DeploymentStarted",
            Event::BatchStarted { .. } => "BatchStarted",
            Event::ReplicaStartRequested { .. } => "ReplicaStartRequested",
            Event::ReplicaStarted { .. } => "ReplicaStarted",
            Event::ReplicaExited { .. } => "ReplicaExited",
            Event::ReplicaHealthy { .. } => "ReplicaHealthy",
            Event::ReplicaUnhealthy { .. } => "ReplicaUnhealthy",
            Event::RouteChanged { .. } => "RouteChanged",
            Event::ReplicaDrained { .. } => "ReplicaDrained",
            Event::ReplicaStopRequested { .. } => "ReplicaStopRequested",
            Event::BatchCompleted { .. } => "BatchCompleted",
            Event::DeploymentReverting { .. } => "DeploymentReverting",
            Event::DeploymentCompleted { .. } => "DeploymentCompleted",
            Event::DeploymentReverted { .. } => "DeploymentReverted",
            Event::DeploymentFailed { .. } => "DeploymentFailed",
            Event::DeploymentPaused { .. } => "DeploymentPaused",
            Event::DeploymentResumed { .. } => "DeploymentResumed",
            Event::TrafficShifted { .. } => "TrafficShifted",
            Event::CanaryPromoted { .. } => "CanaryPromoted",
            Event::TrafficSwitched { .. } => "TrafficSwitched",
            Event::StandbyEnded { .. } => "StandbyEnded",
            Event::WeightsSet { .. } => "WeightsSet",
            Event::ReplicaRetireRequested { .. } => "ReplicaRetireRequested",
            Event::ThresholdBreached { .. } => "ThresholdBreached",
            Event::NoData { .. } => "NoData",
            Event::ThresholdsMet { .. } => "ThresholdsMet",
            Event::BakeStarted { .. } => "BakeStarted",
            Event::RolloutStarted { .. } => "RolloutStarted",
            Event::RolloutWaveStarted { .. } => "RolloutWaveStarted",
            Event::RolloutTargetDeployed { .. } => "RolloutTargetDeployed",
            Event::RolloutWaveBaking { .. } => "RolloutWaveBaking",
            Event::RolloutWaveCompleted { .. } => "RolloutWaveCompleted",
            Event::RolloutPaused { .. } => "RolloutPaused",
            Event::RolloutResumed { .. } => "RolloutResumed",
            Event::RolloutCancelled { .. } => "RolloutCancelled",
            Event::RolloutRollbackStarted { .. } => "RolloutRollbackStarted",
            Event::RolloutRollbackCompleted { .. } => "RolloutRollbackCompleted",
            Event::RolloutCompleted { .. } => "RolloutCompleted",
            Event::RolloutTargetOverridden { .. } => "RolloutTargetOverridden",
            Event::NotifyDefined { .. } => "NotifyDefined",
            Event::WebhookDelivered { .. } => "WebhookDelivered",
            Event::WebhookFailed { .. } => "WebhookFailed",
            Event::EnvironmentsDefined { .. } => "EnvironmentsDefined",
            Event::ReleaseCreated(_) => "ReleaseCreated",
            Event::ReleaseDeployStarted(_) => "ReleaseDeployStarted",
            Event::ReleaseSwitched(_) => "ReleaseSwitched",
            Event::ReleaseDeployCompleted(_) => "ReleaseDeployCompleted",
            Event::ReleaseDeployFailed(_) => "ReleaseDeployFailed",
        }
    }

    /// The deployment this event names, when it names one. Facts of the
    /// health-watcher name the deployment in flight when they were judged,
    /// if the watcher knew one.
    pub fn deployment_id(&self) -> Option<&str> {
        match self {
            Event::DeploymentStarted { deployment_id, .. }
            | Event::BatchStarted { deployment_id, .. }
            | Event::BatchCompleted { deployment_id, .. }
            | Event::DeploymentPaused { deployment_id, .. }
            | Event::DeploymentResumed { deployment_id, .. }
            | Event::TrafficShifted { deployment_id, .. }
            | Event::CanaryPromoted { deployment_id, .. }
            | Event::TrafficSwitched { deployment_id, .. }
            | Event::StandbyEnded { deployment_id, .. }
            | Event::BakeStarted { deployment_id, .. }
            | Event::DeploymentReverting { deployment_id, .. }
            | Event::DeploymentCompleted { deployment_id, .. }
            | Event::DeploymentReverted { deployment_id, .. }
            | Event::DeploymentFailed { deployment_id, .. } => Some(deployment_id),
            Event::ReplicaStartRequested { deployment_id, .. }
            | Event::ThresholdBreached { deployment_id, .. } => deployment_id.as_deref(),
            _ => None,
        }
    }

    /// The rollout this event is about, when it is a rollout's.
    pub fn rollout_id(&self) -> Option<&str> {
        match self {
            Event::RolloutStarted { rollout_id, .. }
            | Event::RolloutWaveStarted { rollout_id, .. }
            | Event::RolloutTargetDeployed { rollout_id, .. }
            | Event::RolloutWaveBaking { rollout_id, .. }
            | Event::RolloutWaveCompleted { rollout_id, .. }
            | Event::RolloutPaused { rollout_id, .. }
            | Event::RolloutResumed { rollout_id, .. }
            | Event::RolloutCancelled { rollout_id }
            | Event::RolloutRollbackStarted { rollout_id, .. }
            | Event::RolloutRollbackCompleted { rollout_id, .. }
            | Event::RolloutCompleted { rollout_id, .. }
            | Event::RolloutTargetOverridden { rollout_id, .. } => Some(rollout_id),
            _ => None,
        }
    }

    /// The replica this event is about, when it is about one.
    pub fn replica(&self) -> Option<&str> {
        match self {
            Event::ReplicaStartRequested { replica, .. }
            | Event::ReplicaStarted { replica, .. }
            | Event::ReplicaExited { replica, .. }
            | Event::ReplicaHealthy { replica, .. }
            | Event::ReplicaUnhealthy { replica, .. }
            | Event::ReplicaDrained { replica, .. }
            | Event::ReplicaStopRequested { replica, .. }
            | Event::ReplicaRetireRequested { replica, .. }
            | Event::ReplicaReplaced { replica, .. } => Some(replica),
            _ => None,
        }
    }

    /// The service this event is about, when it names one. Deployment
    /// events carry only their deployment id (see [`Event::deployment_id`]);
    /// their service is the stream they were appended to.
    pub fn service(&self) -> Option<&str> {
        match self {
            Event::ServiceDefined { spec, .. } => Some(&spec.name),
            Event::DeploymentStarted { service, .. }
            | Event::ReplicaStartRequested { service, .. }
            | Event::ReplicaStarted { service, .. }
            | Event::ReplicaExited { service, .. }
            | Event::ReplicaHealthy { service, .. }
            | Event::ReplicaUnhealthy { service, .. }
            | Event::RouteChanged { service, .. }
            | Event::ReplicaDrained { service, .. }
            | Event::ReplicaStopRequested { service, .. }
            | Event::WeightsSet { service, .. }
            | Event::ReplicaRetireRequested { service, .. }
            | Event::ReplicaReplaced { service, .. }
            | Event::ThresholdBreached { service, .. }
            | Event::NoData { service, .. }
            | Event::ThresholdsMet { service, .. } => Some(service),
            _ => None,
        }
    }

    /// The version (image) a verdict of the health-watcher judged.
    pub fn judged_version(&self) -> Option<&str> {
        match self {
            Event::ThresholdBreached { version, .. }
            | Event::NoData { version, .. }
            | Event::ThresholdsMet { version, .. } => Some(version),
            _ => None,
        }
    }

    /// How a deployment ended, when this event ends one: its outcome, the
    /// reason it did not complete, and when.
    pub fn ending(&self) -> Option<(crate::command::Outcome, Option<&str>, i64)> {
        use crate::command::Outcome;
        match self {
            Event::DeploymentCompleted { at_ms, .. } => Some((Outcome::Completed, None, *at_ms)),
            Event::DeploymentReverted { reason, at_ms, .. } => {
                Some((Outcome::Reverted, Some(reason), *at_ms))
            }
            Event::DeploymentFailed { reason, at_ms, .. } => {
                Some((Outcome::Failed, Some(reason), *at_ms))
            }
            _ => None,
        }
    }

    /// The log stream this event belongs to: [`HOSTS_STREAM`] for host
    /// events, otherwise the name of the service. `None` for deployment
    /// events, which carry only their deployment id: the planner appends them
    /// to the stream of the service being deployed.
    pub fn stream(&self) -> Option<String> {
        Some(match self {
            Event::HostJoined { .. }
            | Event::HostLost { .. }
            | Event::HostSuspected { .. }
            | Event::HostSuspicionCleared { .. } => HOSTS_STREAM.to_owned(),
            Event::ClusterDefined { .. }
            | Event::SecurityDefined { .. }
            | Event::EnvironmentsDefined { .. }
            | Event::MassHostLossHeld { .. }
            | Event::MassHostLossReleased { .. } => CLUSTER_STREAM.to_owned(),
            Event::RouterJoined { .. } | Event::RouterLost { .. } => ROUTERS_STREAM.to_owned(),
            Event::PlannerLeaderElected { .. } => PLANNERS_STREAM.to_owned(),
            Event::LogBreakAccepted { .. } => AUDIT_STREAM.to_owned(),
            Event::NotifyDefined { .. } => NOTIFY_STREAM.to_owned(),
            // An outcome goes with the event it told: a rollout's or a
            // service's; any other stream is refused.
            Event::WebhookDelivered { stream, .. } | Event::WebhookFailed { stream, .. } => {
                if stream != ROLLOUTS_STREAM
                    && stream != RELEASES_STREAM
                    && !crate::environment::is_valid_reference(stream)
                {
                    return None;
                }
                stream.clone()
            }
            other if other.rollout_id().is_some() => ROLLOUTS_STREAM.to_owned(),
            Event::ReleaseCreated(_)
            | Event::ReleaseDeployStarted(_)
            | Event::ReleaseSwitched(_)
            | Event::ReleaseDeployCompleted(_)
            | Event::ReleaseDeployFailed(_) => RELEASES_STREAM.to_owned(),
            other => other.service()?.to_owned(),
        })
    }
}

/// Who reports a fact (see [`Event::fact_source`]); each has its own
/// subjects, and the bus lets only that identity publish on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactSource<'a> {
    /// The executor of this host.
    Host(&'a str),
    /// This router.
    Router(&'a str),
    /// The health-watcher.
    HealthWatcher,
    /// The notifier (the outcomes of its webhook deliveries).
    Notifier,
}

/// Name of the log stream that holds host events. Service names start with
/// a letter, so it cannot collide with one.
pub const HOSTS_STREAM: &str = "_hosts";
/// Log stream of router membership events (`RouterJoined`, `RouterLost`).
pub const ROUTERS_STREAM: &str = "_routers";
/// Log stream of the cluster's settings and of holds on re-placement
/// (`ClusterDefined`, `SecurityDefined`, `MassHostLossHeld`, `MassHostLossReleased`).
pub const CLUSTER_STREAM: &str = "_cluster";
/// The stream of planner elections.
pub const PLANNERS_STREAM: &str = "_planners";
/// The stream of the log's own audit events (`LogBreakAccepted`).
pub const AUDIT_STREAM: &str = "_audit";
/// The stream of fleet rollouts (`Rollout*` events): one rollout in
/// flight at a time, so one stream orders them all.
pub const ROLLOUTS_STREAM: &str = "_rollouts";
/// The stream of releases (`Release*` events): their snapshots and their
/// deployments to environments.
pub const RELEASES_STREAM: &str = "_releases";
/// The stream of the notify block (`NotifyDefined`).
pub const NOTIFY_STREAM: &str = "_notify";

/// An event as recorded in the log and published by the relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EventEnvelope {
    /// Event id (UUIDv7); also the `Nats-Msg-Id` of its publication.
    pub id: String,
    /// Gap-free global position in the log, from 1.
    pub position: i64,
    /// Stream (service name, or `_hosts`).
    pub stream: String,
    /// Version of the stream after this event, from 1.
    pub version: i64,
    /// Schema version of the event type.
    pub schema_version: i32,
    /// When it was recorded (ms since epoch).
    pub recorded_at_ms: i64,
    /// Actor, reason, correlation.
    pub meta: Meta,
    /// The event itself.
    pub event: Event,
}

/// A fact published by an executor, health-watcher or router, before the
/// planner has recorded it. The planner appends it with this id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Fact {
    /// Fact id (UUIDv7); the event keeps it in the log.
    pub id: String,
    /// When it was observed (ms since epoch).
    pub observed_at_ms: i64,
    /// The observation.
    pub event: Event,
}

/// Liveness and capacity of an executor host, published every heartbeat interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HostHeartbeat {
    /// Host id.
    pub host: String,
    /// How many replicas it can run.
    pub capacity: u32,
    /// How many it runs now.
    pub running: u32,
    /// Time of the heartbeat (ms since epoch).
    pub at_ms: i64,
    /// The address its replicas listen on (`--advertise-ip`); absent from
    /// executors older than the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

/// A router's heartbeat (core NATS, `mentat.router.heartbeat.<router>`): who
/// it is, where, and the route version it applied per service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RouterHeartbeat {
    /// Router id.
    pub router: String,
    /// The machine it runs on.
    pub host: String,
    /// The address it accepts requests on.
    pub listen: String,
    /// Per service, the stream version of the last `RouteChanged` it applied.
    #[serde(default)]
    pub applied: BTreeMap<String, i64>,
    /// The last release switches it applied, each in one swap of its table.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub switches: Vec<SwitchApplied>,
    /// Time of the heartbeat (ms since epoch).
    pub at_ms: i64,
}

/// A release switch a router applied in one swap of its table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SwitchApplied {
    /// The switch's id (`RouteChanged.switch.id`).
    pub id: String,
    /// The services it moved.
    pub services: Vec<String>,
}

#[cfg(test)]
mod epoch_tests {
    use super::Meta;

    #[test]
    fn an_intent_from_an_older_epoch_is_not_admitted() {
        let at = |epoch| Meta {
            epoch,
            ..Meta::default()
        };
        assert_eq!(at(Some(2)).admit_epoch(1), (true, 2), "a newer epoch");
        assert_eq!(at(Some(2)).admit_epoch(2), (true, 2), "the same epoch");
        assert_eq!(at(Some(1)).admit_epoch(2), (false, 2), "an older epoch");
        assert_eq!(at(None).admit_epoch(0), (true, 0), "from before epochs");
        assert_eq!(at(None).admit_epoch(1), (false, 1));
    }
}
