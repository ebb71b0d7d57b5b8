//! Commands (`mentat.cmd.<verb>`), queries (`mentat.query.<what>`) and
//! their replies.
//!
//! A command's reply is either [`Reply::Accepted`] or [`Reply::Rejected`]
//! with a reason a person can act on. `command_id` is optional; when given,
//! a retried command returns the first reply and changes nothing.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::event::{Backend, EventEnvelope};
use crate::spec::{ServiceSpec, Strategy};

/// `mentat.cmd.deploy`: roll a service out to a new image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    /// Idempotency key: a retry with the same id returns the first reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<String>,
    /// Service to deploy (as applied with `mentat.cmd.apply`).
    pub service: String,
    /// Image reference (for the process driver, the version string given to the app).
    pub image: String,
    /// Strategy for this deployment only; the service's configured one otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// Who asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `mentat.cmd.rollback`: deploy the image that served before the last deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// Idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<String>,
    /// Service to roll back.
    pub service: String,
    /// Who asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `mentat.cmd.apply`: define or redefine services.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Apply {
    /// Idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<String>,
    /// Every service of the config, validated before anything is applied.
    pub services: Vec<ServiceSpec>,
    /// The file they came from, recorded in the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Who asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Any command, tagged by its verb.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `mentat.cmd.deploy`
    Deploy(Deploy),
    /// `mentat.cmd.rollback`
    Rollback(Rollback),
    /// `mentat.cmd.apply`
    Apply(Apply),
}

impl Command {
    /// Verbs understood on `mentat.cmd.<verb>`.
    pub const VERBS: [&'static str; 3] = ["deploy", "rollback", "apply"];

    /// The verb of this command.
    pub fn verb(&self) -> &'static str {
        match self {
            Command::Deploy(_) => "deploy",
            Command::Rollback(_) => "rollback",
            Command::Apply(_) => "apply",
        }
    }

    /// The command's idempotency key, when the sender gave one.
    pub fn command_id(&self) -> Option<&str> {
        match self {
            Command::Deploy(c) => c.command_id.as_deref(),
            Command::Rollback(c) => c.command_id.as_deref(),
            Command::Apply(c) => c.command_id.as_deref(),
        }
    }

    /// Actor and reason given with the command.
    pub fn actor_reason(&self) -> (Option<&str>, Option<&str>) {
        match self {
            Command::Deploy(c) => (c.actor.as_deref(), c.reason.as_deref()),
            Command::Rollback(c) => (c.actor.as_deref(), c.reason.as_deref()),
            Command::Apply(c) => (c.actor.as_deref(), c.reason.as_deref()),
        }
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
        /// Why, and what to do about it.
        reason: String,
    },
}

impl Reply {
    /// A rejection with the given reason.
    pub fn rejected(reason: impl Into<String>) -> Self {
        Reply::Rejected {
            reason: reason.into(),
        }
    }
}

/// `mentat.query.status`: current state of one service or of all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusQuery {
    /// Only this service; every service when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

/// `mentat.query.history`: deployments of a service, optionally with raw events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Service.
    pub service: String,
    /// Include every event of the service's stream.
    #[serde(default)]
    pub events: bool,
}

/// Reply to `mentat.query.status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum StatusReply {
    /// The services asked for.
    Ok {
        /// One entry per service.
        services: Vec<ServiceStatus>,
        /// Executor hosts currently alive.
        hosts: Vec<String>,
    },
    /// The query could not be answered.
    Rejected {
        /// Why.
        reason: String,
    },
}

/// Reply to `mentat.query.history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum HistoryReply {
    /// The service's history.
    Ok {
        /// Deployments, oldest first.
        deployments: Vec<DeploymentRecord>,
        /// Raw events, when asked for.
        #[serde(default)]
        events: Vec<EventEnvelope>,
    },
    /// The query could not be answered.
    Rejected {
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
    /// When it started (ms since epoch).
    pub started_at_ms: i64,
    /// When it ended (ms since epoch).
    pub ended_at_ms: Option<i64>,
}
