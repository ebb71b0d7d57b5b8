//! Commands (`mentat.cmd.<verb>`), queries (`mentat.query.<what>`) and
//! their replies.
//!
//! A command's reply is either [`Reply::Accepted`] or [`Reply::Rejected`]
//! with a reason a person can act on. `command_id` is optional; when given,
//! a retried command returns the first reply and changes nothing.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cluster::ClusterSpec;
use crate::event::{Backend, EventEnvelope};
use crate::limits::{
    MAX_ACTOR_BYTES, MAX_COMMAND_ID_BYTES, MAX_IMAGE_BYTES, MAX_INSTANCE_BYTES, MAX_NAME_BYTES,
    MAX_REASON_BYTES, MAX_SERVICES_PER_APPLY, MAX_SOURCE_BYTES, MAX_WEIGHT,
};
use crate::rollout::{RolloutControl, RolloutStart};
use crate::security::{CommandSignature, SecuritySpec};
use crate::spec::{ServiceSpec, Strategy};

/// `mentat.cmd.deploy`: roll a service out to a new image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    /// Idempotency key: a retry with the same id returns the first reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_COMMAND_ID_BYTES))]
    pub command_id: Option<String>,
    /// The sender's signature (see [`crate::security`]): required once the
    /// `security:` block sets `require_signed_commands`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<CommandSignature>,
    /// Service to deploy (as applied with `mentat.cmd.apply`).
    #[schemars(length(max = MAX_NAME_BYTES))]
    pub service: String,
    /// Image reference (for the process driver, the version string given to the app).
    #[schemars(length(max = MAX_IMAGE_BYTES))]
    pub image: String,
    /// Strategy for this deployment only; the service's configured one otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// Deploy a target of the fleet rollout in flight anyway (recorded as
    /// `RolloutTargetOverridden`; the rollout leaves the service alone).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub override_rollout: bool,
    /// Who asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_ACTOR_BYTES))]
    pub actor: Option<String>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_REASON_BYTES))]
    pub reason: Option<String>,
}

/// `mentat.cmd.rollback`: deploy the image that served before the last deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// Idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_COMMAND_ID_BYTES))]
    pub command_id: Option<String>,
    /// The sender's signature (see [`crate::security`]): required once the
    /// `security:` block sets `require_signed_commands`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<CommandSignature>,
    /// Service to roll back.
    #[schemars(length(max = MAX_NAME_BYTES))]
    pub service: String,
    /// Who asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_ACTOR_BYTES))]
    pub actor: Option<String>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_REASON_BYTES))]
    pub reason: Option<String>,
}

/// `mentat.cmd.apply`: define or redefine services.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Apply {
    /// Idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_COMMAND_ID_BYTES))]
    pub command_id: Option<String>,
    /// The sender's signature (see [`crate::security`]): required once the
    /// `security:` block sets `require_signed_commands`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<CommandSignature>,
    /// Every service of the config, validated before anything is applied.
    #[schemars(length(max = MAX_SERVICES_PER_APPLY))]
    pub services: Vec<ServiceSpec>,
    /// The config's cluster block, when it has one (validated with the
    /// services; recorded as `ClusterDefined` when it changes anything).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterSpec>,
    /// The config's security block, when it has one: who may sign commands
    /// and whether they must (recorded as `SecurityDefined` when it changes
    /// anything; see [`crate::security`] for who may change it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<SecuritySpec>,
    /// The config's notify block, when it has one (validated with the
    /// services; recorded as `NotifyDefined` when it changes anything).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Vec<crate::notify::Webhook>>,
    /// The config's environments block, when it has one: every service
    /// runs once in each environment it is listed for (see
    /// [`crate::environment`]); recorded as `EnvironmentsDefined`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environments: Option<crate::environment::Environments>,
    /// The file they came from, recorded in the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_SOURCE_BYTES))]
    pub source: Option<String>,
    /// Who asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_ACTOR_BYTES))]
    pub actor: Option<String>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_REASON_BYTES))]
    pub reason: Option<String>,
}

/// `mentat.cmd.pause`, `resume`, `abort` and `promote`: steer the
/// deployment of a service that is in flight.
///
/// - pause: hold where it is; no new step starts and deadlines stop counting.
/// - resume: carry on from where it was held.
/// - abort: revert to the previous image as fast as the strategy allows
///   (`mt canary abort` sends this too).
/// - promote: a canary skips its remaining steps and rolls out to every
///   replica; a blue-green deployment on standby retires the old set now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Control {
    /// Idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_COMMAND_ID_BYTES))]
    pub command_id: Option<String>,
    /// The sender's signature (see [`crate::security`]): required once the
    /// `security:` block sets `require_signed_commands`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<CommandSignature>,
    /// Service whose deployment is steered.
    #[schemars(length(max = MAX_NAME_BYTES))]
    pub service: String,
    /// Who asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_ACTOR_BYTES))]
    pub actor: Option<String>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_REASON_BYTES))]
    pub reason: Option<String>,
}

/// `mentat.cmd.weight`: set the router weight of one instance (0 to 100; 0
/// keeps it running without weighted traffic). Weights of a service's
/// instances are normalised by their sum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Weight {
    /// Idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_COMMAND_ID_BYTES))]
    pub command_id: Option<String>,
    /// The sender's signature (see [`crate::security`]): required once the
    /// `security:` block sets `require_signed_commands`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<CommandSignature>,
    /// Service.
    #[schemars(length(max = MAX_NAME_BYTES))]
    pub service: String,
    /// Instance (replica id).
    #[schemars(length(max = MAX_INSTANCE_BYTES))]
    pub instance: String,
    /// Weight, 0 to 100.
    #[schemars(range(max = MAX_WEIGHT))]
    pub weight: u32,
    /// Who asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_ACTOR_BYTES))]
    pub actor: Option<String>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_REASON_BYTES))]
    pub reason: Option<String>,
}

/// `mentat.cmd.route`: move all traffic from some instances to others in
/// one routing change (`from` to weight 0, `to` to weight 100). Each side
/// names an instance, or an image to mean every instance running it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_COMMAND_ID_BYTES))]
    pub command_id: Option<String>,
    /// The sender's signature (see [`crate::security`]): required once the
    /// `security:` block sets `require_signed_commands`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<CommandSignature>,
    /// Service.
    #[schemars(length(max = MAX_NAME_BYTES))]
    pub service: String,
    /// Instance or image that stops receiving traffic.
    #[schemars(length(max = MAX_IMAGE_BYTES))]
    pub from: String,
    /// Instance or image that receives it all.
    #[schemars(length(max = MAX_IMAGE_BYTES))]
    pub to: String,
    /// Who asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_ACTOR_BYTES))]
    pub actor: Option<String>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_REASON_BYTES))]
    pub reason: Option<String>,
}

/// `mentat.cmd.spawn`: start an extra named instance of a service, outside
/// its declared replicas, with weight 0 until told otherwise. It is reachable
/// at once as `<id>.<service>.<domain>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spawn {
    /// Idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_COMMAND_ID_BYTES))]
    pub command_id: Option<String>,
    /// The sender's signature (see [`crate::security`]): required once the
    /// `security:` block sets `require_signed_commands`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<CommandSignature>,
    /// Service.
    #[schemars(length(max = MAX_NAME_BYTES))]
    pub service: String,
    /// Instance id: 1-63 characters of a-z, 0-9 and -, starting with a letter.
    #[schemars(length(max = MAX_NAME_BYTES))]
    pub id: String,
    /// Image to run; the service's serving image when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_IMAGE_BYTES))]
    pub image: Option<String>,
    /// Who asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_ACTOR_BYTES))]
    pub actor: Option<String>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_REASON_BYTES))]
    pub reason: Option<String>,
}

/// `mentat.cmd.stop`: take one instance out of rotation, let its requests
/// finish, and stop it. A declared replica is replaced to keep the count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Stop {
    /// Idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_COMMAND_ID_BYTES))]
    pub command_id: Option<String>,
    /// The sender's signature (see [`crate::security`]): required once the
    /// `security:` block sets `require_signed_commands`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<CommandSignature>,
    /// Service.
    #[schemars(length(max = MAX_NAME_BYTES))]
    pub service: String,
    /// Instance (replica id).
    #[schemars(length(max = MAX_INSTANCE_BYTES))]
    pub instance: String,
    /// Who asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_ACTOR_BYTES))]
    pub actor: Option<String>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_REASON_BYTES))]
    pub reason: Option<String>,
}

/// `mentat.cmd.release_hosts`: end a hold on re-placement
/// (`MassHostLossHeld`): replicas of lost hosts are placed again on the
/// hosts that are left. The reason is required.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseHosts {
    /// Idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_COMMAND_ID_BYTES))]
    pub command_id: Option<String>,
    /// The sender's signature (see [`crate::security`]): required once the
    /// `security:` block sets `require_signed_commands`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<CommandSignature>,
    /// Who asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_ACTOR_BYTES))]
    pub actor: Option<String>,
    /// Why (required: the log says why the survivors took the load).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_REASON_BYTES))]
    pub reason: Option<String>,
}

/// Any command, tagged by its verb. On the bus the verb is the subject's
/// and the body the payload; recorded in a decision's metadata
/// ([`crate::replay::Decided`]) it is `{"verb": "deploy", "body": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "verb", content = "body", rename_all = "snake_case")]
pub enum Command {
    /// `mentat.cmd.deploy`
    Deploy(Deploy),
    /// `mentat.cmd.rollback`
    Rollback(Rollback),
    /// `mentat.cmd.apply`
    Apply(Apply),
    /// `mentat.cmd.pause`
    Pause(Control),
    /// `mentat.cmd.resume`
    Resume(Control),
    /// `mentat.cmd.abort`
    Abort(Control),
    /// `mentat.cmd.promote`
    Promote(Control),
    /// `mentat.cmd.weight`
    Weight(Weight),
    /// `mentat.cmd.route`
    Route(Route),
    /// `mentat.cmd.spawn`
    Spawn(Spawn),
    /// `mentat.cmd.stop`
    Stop(Stop),
    /// `mentat.cmd.release_hosts`
    ReleaseHosts(ReleaseHosts),
    /// `mentat.cmd.rollout_start`
    RolloutStart(RolloutStart),
    /// `mentat.cmd.rollout_pause`
    RolloutPause(RolloutControl),
    /// `mentat.cmd.rollout_resume`
    RolloutResume(RolloutControl),
    /// `mentat.cmd.rollout_cancel`
    RolloutCancel(RolloutControl),
    /// `mentat.cmd.rollout_rollback_all`
    RolloutRollbackAll(RolloutControl),
    /// `mentat.cmd.release_create`
    ReleaseCreate(crate::release::ReleaseCreate),
    /// `mentat.cmd.release_deploy`
    ReleaseDeploy(crate::release::ReleaseDeploy),
    /// `mentat.cmd.release_promote`
    ReleasePromote(crate::release::ReleasePromote),
    /// `mentat.cmd.release_rollback`
    ReleaseRollback(crate::release::ReleaseRollback),
}

/// `(command_id, actor, reason, signature)` of any command struct.
macro_rules! common {
    ($c:expr) => {
        (
            $c.command_id.as_deref(),
            $c.actor.as_deref(),
            $c.reason.as_deref(),
            $c.signature.as_ref(),
        )
    };
}

/// Applies `$body` to the command struct inside any [`Command`].
macro_rules! each {
    ($command:expr, $c:ident => $body:expr) => {
        match $command {
            Command::Deploy($c) => $body,
            Command::Rollback($c) => $body,
            Command::Apply($c) => $body,
            Command::Pause($c)
            | Command::Resume($c)
            | Command::Abort($c)
            | Command::Promote($c) => $body,
            Command::Weight($c) => $body,
            Command::Route($c) => $body,
            Command::Spawn($c) => $body,
            Command::Stop($c) => $body,
            Command::ReleaseHosts($c) => $body,
            Command::RolloutStart($c) => $body,
            Command::RolloutPause($c)
            | Command::RolloutResume($c)
            | Command::RolloutCancel($c)
            | Command::RolloutRollbackAll($c) => $body,
            Command::ReleaseCreate($c) => $body,
            Command::ReleaseDeploy($c) => $body,
            Command::ReleasePromote($c) => $body,
            Command::ReleaseRollback($c) => $body,
        }
    };
}

impl Command {
    /// Verbs understood on `mentat.cmd.<verb>`.
    pub const VERBS: [&'static str; 21] = [
        "deploy",
        "rollback",
        "apply",
        "pause",
        "resume",
        "abort",
        "promote",
        "weight",
        "route",
        "spawn",
        "stop",
        "release_hosts",
        "rollout_start",
        "rollout_pause",
        "rollout_resume",
        "rollout_cancel",
        "rollout_rollback_all",
        "release_create",
        "release_deploy",
        "release_promote",
        "release_rollback",
    ];

    /// The services this command is about (every service of an apply).
    pub fn services(&self) -> Vec<&str> {
        match self {
            Command::Deploy(c) => vec![c.service.as_str()],
            Command::Rollback(c) => vec![c.service.as_str()],
            Command::Apply(c) => c.services.iter().map(|s| s.name.as_str()).collect(),
            Command::Pause(c) | Command::Resume(c) | Command::Abort(c) | Command::Promote(c) => {
                vec![c.service.as_str()]
            }
            Command::Weight(c) => vec![c.service.as_str()],
            Command::Route(c) => vec![c.service.as_str()],
            Command::Spawn(c) => vec![c.service.as_str()],
            Command::Stop(c) => vec![c.service.as_str()],
            Command::ReleaseHosts(_) => Vec::new(),
            // The targets of a rollout are decided with it (see
            // `rollout::handle`), which checks their audit policies.
            Command::RolloutStart(_)
            | Command::RolloutPause(_)
            | Command::RolloutResume(_)
            | Command::RolloutCancel(_)
            | Command::RolloutRollbackAll(_) => Vec::new(),
            // A release's services are its environment's, checked with it.
            Command::ReleaseCreate(_)
            | Command::ReleaseDeploy(_)
            | Command::ReleasePromote(_)
            | Command::ReleaseRollback(_) => Vec::new(),
        }
    }

    /// The command with every service it names as its key: `web@production`
    /// is `web` (see [`crate::environment`]).
    pub fn normalised(&self) -> Command {
        let mut c = self.clone();
        let key = crate::environment::normalise;
        match &mut c {
            Command::Deploy(c) => c.service = key(&c.service),
            Command::Rollback(c) => c.service = key(&c.service),
            Command::Pause(c) | Command::Resume(c) | Command::Abort(c) | Command::Promote(c) => {
                c.service = key(&c.service)
            }
            Command::Weight(c) => c.service = key(&c.service),
            Command::Route(c) => c.service = key(&c.service),
            Command::Spawn(c) => c.service = key(&c.service),
            Command::Stop(c) => c.service = key(&c.service),
            _ => {}
        }
        c
    }

    /// The verb of this command.
    pub fn verb(&self) -> &'static str {
        match self {
            Command::Deploy(_) => "deploy",
            Command::Rollback(_) => "rollback",
            Command::Apply(_) => "apply",
            Command::Pause(_) => "pause",
            Command::Resume(_) => "resume",
            Command::Abort(_) => "abort",
            Command::Promote(_) => "promote",
            Command::Weight(_) => "weight",
            Command::Route(_) => "route",
            Command::Spawn(_) => "spawn",
            Command::Stop(_) => "stop",
            Command::ReleaseHosts(_) => "release_hosts",
            Command::RolloutStart(_) => "rollout_start",
            Command::RolloutPause(_) => "rollout_pause",
            Command::RolloutResume(_) => "rollout_resume",
            Command::RolloutCancel(_) => "rollout_cancel",
            Command::RolloutRollbackAll(_) => "rollout_rollback_all",
            Command::ReleaseCreate(_) => "release_create",
            Command::ReleaseDeploy(_) => "release_deploy",
            Command::ReleasePromote(_) => "release_promote",
            Command::ReleaseRollback(_) => "release_rollback",
        }
    }

    fn common(
        &self,
    ) -> (
        Option<&str>,
        Option<&str>,
        Option<&str>,
        Option<&CommandSignature>,
    ) {
        each!(self, c => common!(c))
    }

    /// The command's idempotency key, when the sender gave one.
    pub fn command_id(&self) -> Option<&str> {
        self.common().0
    }

    /// Actor and reason given with the command.
    pub fn actor_reason(&self) -> (Option<&str>, Option<&str>) {
        let (_, actor, reason, _) = self.common();
        (actor, reason)
    }

    /// The sender's signature, when the command carries one.
    pub fn signature(&self) -> Option<&CommandSignature> {
        self.common().3
    }

    /// Record `actor` as the command's actor: the operator a signature
    /// proved, in place of whatever the command said.
    pub fn set_actor(&mut self, actor: &str) {
        each!(self, c => c.actor = Some(actor.to_owned()))
    }
}

/// What kind of refusal a rejection is: what the sender can do about it.
/// Clients and tests match on the kind; the reason is for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RejectKind {
    /// The command itself is wrong: a field is missing, malformed or out of
    /// its bound (the reason names it). Fix the command; retrying it as it
    /// is fails the same way.
    Invalid,
    /// The service is not defined: apply a config that defines it first.
    UnknownService,
    /// The service has no instance by that id, version or image.
    UnknownInstance,
    /// A deployment of the service is in flight (or owns the instance):
    /// wait for it to end, or steer it.
    DeploymentInFlight,
    /// The service has no deployment in flight to steer.
    NoDeployment,
    /// The deployment in flight is not where the command applies (already
    /// paused, not paused, reverting, nothing to promote).
    WrongPhase,
    /// The command asks for what already is.
    NothingToDo,
    /// No live executor host has room: start one, or wait for one to come back.
    NoCapacity,
    /// The planner cannot reach its log now: retry later; nothing changed.
    Unavailable,
    /// The planner could not decide about this service (see `mt status`);
    /// re-apply it, abort or roll it back.
    ServiceBroken,
    /// This planner is a standby: the command goes to the leader.
    NotLeader,
    /// The sender may not do this: the signing operator's role does not
    /// allow the verb, or only an admin may change the security block.
    Unauthorised,
    /// Commands must be signed (`security.require_signed_commands`) and
    /// this one is not: send it with `mt --key-file FILE`.
    Unsigned,
    /// The signature does not hold for this command and key: it was changed
    /// after it was signed, or signed with another key.
    BadSignature,
    /// The signing key is not an operator's (`security.operators`).
    UnknownKey,
    /// The signature was made more than 5 minutes away from the planner's
    /// clock: sign it again (and check the clocks).
    StaleSignature,
    /// The fleet rollout is in a state where this operation is not legal:
    /// the reason names the state and the operations that are.
    IllegalState,
    /// The service is a target of the fleet rollout in flight: deploy it
    /// with `override_rollout`, or steer the rollout.
    RolloutInFlight,
    /// No environment by that name is declared (`environments:`).
    UnknownEnvironment,
    /// No release has that tag.
    UnknownRelease,
    /// A release with that tag exists: tags are never reused.
    TagTaken,
    /// The environment is protected and the release did not go through
    /// its `promote_from` (deploy it there first, or `--force` with a reason).
    NotPromoted,
}

impl RejectKind {
    /// The kind's name on the wire (`unknown_service`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            RejectKind::Invalid => "invalid",
            RejectKind::UnknownService => "unknown_service",
            RejectKind::UnknownInstance => "unknown_instance",
            RejectKind::DeploymentInFlight => "deployment_in_flight",
            RejectKind::NoDeployment => "no_deployment",
            RejectKind::WrongPhase => "wrong_phase",
            RejectKind::NothingToDo => "nothing_to_do",
            RejectKind::NoCapacity => "no_capacity",
            RejectKind::Unavailable => "unavailable",
            RejectKind::ServiceBroken => "service_broken",
            RejectKind::NotLeader => "not_leader",
            RejectKind::Unauthorised => "unauthorised",
            RejectKind::Unsigned => "unsigned",
            RejectKind::BadSignature => "bad_signature",
            RejectKind::UnknownKey => "unknown_key",
            RejectKind::StaleSignature => "stale_signature",
            RejectKind::IllegalState => "illegal_state",
            RejectKind::RolloutInFlight => "rollout_in_flight",
            RejectKind::UnknownEnvironment => "unknown_environment",
            RejectKind::UnknownRelease => "unknown_release",
            RejectKind::TagTaken => "tag_taken",
            RejectKind::NotPromoted => "not_promoted",
        }
    }
}

impl std::fmt::Display for RejectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal: its kind, and the reason a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// What kind of refusal.
    pub kind: RejectKind,
    /// Why, and what to do about it.
    pub reason: String,
}

impl Rejection {
    /// A rejection of the given kind.
    pub fn new(kind: RejectKind, reason: impl Into<String>) -> Self {
        Rejection {
            kind,
            reason: reason.into(),
        }
    }

    /// The command is wrong: the reason names the field.
    pub fn invalid(reason: impl Into<String>) -> Self {
        Rejection::new(RejectKind::Invalid, reason)
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.reason, self.kind)
    }
}

/// Reply to every command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Reply {
    /// The command was accepted and recorded.
    Accepted {
        /// The deployment it started, for deploy and rollback.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deployment_id: Option<String>,
        /// What was done.
        message: String,
    },
    /// The command was refused; nothing changed.
    Rejected {
        /// What kind of refusal: match on this, not on the reason.
        kind: RejectKind,
        /// Why, and what to do about it.
        reason: String,
    },
}

impl Reply {
    /// A rejection of the given kind.
    pub fn rejected(kind: RejectKind, reason: impl Into<String>) -> Self {
        Reply::Rejected {
            kind,
            reason: reason.into(),
        }
    }

    /// The kind of a rejection; `None` when accepted.
    pub fn rejection_kind(&self) -> Option<RejectKind> {
        match self {
            Reply::Rejected { kind, .. } => Some(*kind),
            Reply::Accepted { .. } => None,
        }
    }
}

impl From<Rejection> for Reply {
    fn from(r: Rejection) -> Self {
        Reply::Rejected {
            kind: r.kind,
            reason: r.reason,
        }
    }
}

/// `mentat.query.status`: current state of one service or of all, a page
/// of services at a time (see [`crate::paging`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusQuery {
    /// Only this service; every service when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Services after this many, in name order: the `next` of the previous
    /// page; from the first when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    /// At most this many services in the page (default 100, at most
    /// 1000); a page also ends before 256 KiB of services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Where an executor host stands, as the planner judged it from its heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    /// Sending heartbeats.
    Live,
    /// Silent for `suspect_after_secs`: its replicas have weight 0.
    Suspect,
    /// Silent for `lost_after_secs`: its replicas are placed again (unless held).
    Lost,
}

impl HostState {
    /// Lowercase name, as `mt hosts` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Live => "live",
            HostState::Suspect => "suspect",
            HostState::Lost => "lost",
        }
    }
}

/// One executor host in `mt status` and `mt hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HostStatus {
    /// Host id.
    pub host: String,
    /// Live, suspect or lost.
    pub state: HostState,
    /// Replicas it can run.
    pub capacity: u32,
    /// Replicas the planner placed on it that have not exited.
    pub replicas: u32,
    /// Since when it is suspect (ms since epoch), while suspect or lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspect_since_ms: Option<i64>,
}

/// A hold on re-placement after a mass host loss.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HeldStatus {
    /// The hosts that went suspect together.
    pub hosts: Vec<String>,
    /// Since when (ms since epoch).
    pub since_ms: i64,
}

/// `mentat.query.history`: deployments of a service, or the raw events of
/// its stream, a page at a time (see [`crate::paging`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Service.
    pub service: String,
    /// Page the events of the service's stream instead of its deployments.
    #[serde(default)]
    pub events: bool,
    /// Items after this many (deployments oldest first, or events by
    /// stream version): the `next` of the previous page; from the first
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    /// At most this many items in the page (default 100, at most 1000); a
    /// page also ends before 256 KiB of items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Reply to `mentat.query.status`.
// A reply is built once per query and sent at once: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum StatusReply {
    /// The services asked for.
    Ok {
        /// One entry per service, in name order.
        services: Vec<ServiceStatus>,
        /// Executor hosts currently alive.
        hosts: Vec<String>,
        /// Set while the planner cannot reach its log: since when (ms since
        /// the epoch). The rest of the reply is the last known state, stale.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        log_unavailable_since_ms: Option<i64>,
        /// More services remain: ask again with `after` set to this.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<u64>,
        /// The planners: who leads, in which epoch, and the standbys.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        planners: Option<PlannersStatus>,
        /// The live routers, and the services whose latest routes each has
        /// not applied yet.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        routers: Vec<RouterStatus>,
        /// Every executor host the log knows, live, suspect or lost.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        host_states: Vec<HostStatus>,
        /// Set while re-placement is held after a mass host loss.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        held: Option<HeldStatus>,
    },
    /// The query could not be answered.
    Rejected {
        /// What kind of refusal.
        kind: RejectKind,
        /// Why.
        reason: String,
    },
}

/// Reply to `mentat.query.history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum HistoryReply {
    /// A page of the service's history.
    Ok {
        /// Deployments, oldest first (empty when events were asked for).
        deployments: Vec<DeploymentRecord>,
        /// Raw events, when asked for.
        #[serde(default)]
        events: Vec<EventEnvelope>,
        /// More items remain: ask again with `after` set to this.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<u64>,
    },
    /// The query could not be answered.
    Rejected {
        /// What kind of refusal.
        kind: RejectKind,
        /// Why.
        reason: String,
    },
}

/// What `mt status` shows for one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ServiceStatus {
    /// Service name.
    pub service: String,
    /// Image serving traffic, once a deployment has completed.
    pub image: Option<String>,
    /// Replicas desired.
    pub replicas: u32,
    /// The deployment in flight, if any.
    pub deployment: Option<DeploymentRecord>,
    /// Every replica known to the planner.
    pub instances: Vec<ReplicaStatus>,
    /// The routing table as last published.
    pub routes: Vec<Backend>,
    /// The health-watcher's latest verdict on each running version's traffic.
    #[serde(default)]
    pub health: Vec<VersionHealth>,
    /// Set when the planner could not fold or decide this service: it is
    /// left alone (every other service goes on) until an operator
    /// re-applies it, aborts or rolls it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broken: Option<BrokenStatus>,
    /// Set when the service's status passed 64 KiB and lists were cut
    /// short to stay under it: what was left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<String>,
}

/// The planners, in `mt status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PlannersStatus {
    /// The planner elected last (`PlannerLeaderElected`), if any.
    pub leader: Option<String>,
    /// Its epoch.
    pub epoch: Option<i64>,
    /// Planners waiting to take over, heard from in the last few seconds.
    pub standbys: Vec<String>,
    /// The planner that answered this query.
    pub answered_by: String,
    /// Facts the leading planner dropped since it started because their
    /// source may not report them (a host about a replica it does not
    /// run, a subject that does not say who reported it).
    #[serde(default)]
    pub refused_facts: u64,
}

/// A live router in `mt status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RouterStatus {
    /// Router id.
    pub router: String,
    /// The machine it runs on.
    pub host: String,
    /// The address it accepts requests on.
    pub listen: String,
    /// Whether the planner that answered has heard its heartbeat (a
    /// standby does not follow them): without it, `behind` says nothing.
    pub heard: bool,
    /// Services whose latest `RouteChanged` it has not reported applying
    /// (in its last heartbeat); empty when it is in step.
    pub behind: Vec<String>,
}

/// Why a service is broken, in `mt status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BrokenStatus {
    /// Position in the log of the event being folded, or the log's position
    /// when a decision failed.
    pub position: i64,
    /// What went wrong.
    pub error: String,
}

/// The health-watcher's latest verdict on one version, in `mt status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VersionHealth {
    /// Version (image).
    pub version: String,
    /// `pass`, `no_data` or `breach`.
    pub verdict: String,
    /// The numbers behind it.
    pub detail: String,
    /// When it was recorded (ms since epoch).
    pub since_ms: i64,
}

/// One replica in `mt status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReplicaStatus {
    /// Replica id.
    pub replica: String,
    /// Image it runs.
    pub image: String,
    /// Host it runs on.
    pub host: String,
    /// `host:port`, once started.
    pub addr: Option<String>,
    /// Lifecycle phase: starting, running, healthy, unhealthy, draining, stopping.
    pub phase: String,
    /// Router weight (0 when not in rotation).
    pub weight: u32,
    /// Share of the service's weighted traffic, in hundredths of a percent.
    #[serde(default)]
    pub share_bp: u32,
    /// Started by `mt spawn`, outside the declared replicas.
    #[serde(default)]
    pub spawned: bool,
    /// When its process was reported started (ms since epoch).
    #[serde(default)]
    pub started_at_ms: Option<i64>,
}

/// Outcome of a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Still running.
    InProgress,
    /// Rolling back after a failure.
    Reverting,
    /// Every replica runs the new image.
    Completed,
    /// Rolled back to the previous image.
    Reverted,
    /// Failed and not rolled back.
    Failed,
}

impl Outcome {
    /// True once the deployment has ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Outcome::Completed | Outcome::Reverted | Outcome::Failed
        )
    }

    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::InProgress => "in_progress",
            Outcome::Reverting => "reverting",
            Outcome::Completed => "completed",
            Outcome::Reverted => "reverted",
            Outcome::Failed => "failed",
        }
    }
}

/// One deployment in `mt history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeploymentRecord {
    /// Deployment id.
    pub deployment_id: String,
    /// Service.
    pub service: String,
    /// Image rolled out.
    pub image: String,
    /// Image it replaced.
    pub previous_image: Option<String>,
    /// Strategy.
    pub strategy: Strategy,
    /// Where it stands or how it ended.
    pub outcome: Outcome,
    /// Who started it.
    pub actor: Option<String>,
    /// Why it was started.
    pub reason: Option<String>,
    /// Why it failed or was reverted.
    pub failure: Option<String>,
    /// Batches completed so far.
    pub batches_done: u32,
    /// What the deployment is doing or waiting for now, while in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Why it is held, while paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<String>,
    /// True while it is in flight and no router is live: nothing would
    /// carry the traffic its next step moves, so it waits for a router (or
    /// for its phase deadline).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub waiting_for_router: bool,
    /// Threshold breaches of its new version while it ran, with their numbers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub breaches: Vec<String>,
    /// When it started (ms since epoch).
    pub started_at_ms: i64,
    /// When it ended (ms since epoch).
    pub ended_at_ms: Option<i64>,
}
