//! What crosses the bus about rollouts: the commands
//! (`mentat.cmd.rollout_*`), the query `mentat.query.rollout` and its
//! reply, and the parts of rollout events.

use crate::security::CommandSignature;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::command::RejectKind;
use crate::limits::{
    MAX_ACTOR_BYTES, MAX_COMMAND_ID_BYTES, MAX_IMAGE_BYTES, MAX_NAME_BYTES, MAX_REASON_BYTES,
    MAX_ROLLOUT_SERVICES, MAX_SELECTOR_BYTES, MAX_WAVES,
};

/// `mentat.cmd.rollout_start`: roll one image out over many services in
/// cumulative waves. Give `select` or `services`, not both.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutStart {
    /// Idempotency key: a retry with the same id returns the first reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_COMMAND_ID_BYTES))]
    pub command_id: Option<String>,
    /// Image to roll out.
    #[schemars(length(max = MAX_IMAGE_BYTES))]
    pub image: String,
    /// The services whose `labels` hold this `key=value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_SELECTOR_BYTES))]
    pub select: Option<String>,
    /// Or these services, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_ROLLOUT_SERVICES))]
    pub services: Vec<String>,
    /// Only services in this environment (`route.environment`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_NAME_BYTES))]
    pub environment: Option<String>,
    /// Cumulative percentages of the targets, increasing, the last 100
    /// [default: 1, 5, 25, 50, 100].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_WAVES))]
    pub waves: Vec<u32>,
    /// How long every target of a wave must hold its health after its
    /// deployment completed before the next wave starts [default: 60].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave_bake_secs: Option<u64>,
    /// Answer with the waves it would run, and change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Who asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_ACTOR_BYTES))]
    pub actor: Option<String>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_REASON_BYTES))]
    pub reason: Option<String>,
    /// The sender's signature (see [`crate::security`]): required once the
    /// `security:` block sets `require_signed_commands`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<CommandSignature>,
}

/// `mentat.cmd.rollout_pause`, `rollout_resume`, `rollout_cancel` and
/// `rollout_rollback_all`: steer the rollout in flight.
///
/// - pause (in progress): start no new deployment and no new wave.
/// - resume (paused): go on with the wave and the next ones; failed
///   targets stay where their own deployment left them, unless
///   `retry_failed` deploys them again first.
/// - cancel (in progress or paused): stop here, keep the new image where
///   it succeeded.
/// - rollback_all (paused): deploy every target that took the new image
///   back to its previous image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutControl {
    /// Idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_COMMAND_ID_BYTES))]
    pub command_id: Option<String>,
    /// Resume only: deploy the failed targets again before going on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retry_failed: bool,
    /// Who asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_ACTOR_BYTES))]
    pub actor: Option<String>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_REASON_BYTES))]
    pub reason: Option<String>,
    /// The sender's signature (see [`crate::security`]): required once the
    /// `security:` block sets `require_signed_commands`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<CommandSignature>,
}

/// One target of a rollout, as recorded when it started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RolloutTarget {
    /// Service.
    pub service: String,
    /// The image it served when the rollout started (none: never deployed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_image: Option<String>,
}

/// One wave of a rollout, as planned when it started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RolloutWave {
    /// The cumulative percentage of the targets reached once it is done.
    pub percent: u32,
    /// The services it deploys.
    pub members: Vec<String>,
}

/// A target that failed, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FailedTarget {
    /// Service.
    pub service: String,
    /// What went wrong.
    pub reason: String,
}

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// Waves are deployed one after the other.
    InProgress,
    /// Held, by an operator or by a failed target.
    Paused,
    /// Every target that took the new image goes back to its previous one.
    RollingBack,
    /// Every wave completed.
    Completed,
    /// Stopped by an operator; the new image stays where it succeeded.
    Cancelled,
    /// Rolled back by `rollback_all`.
    RolledBack,
}

impl RolloutState {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::InProgress => "in_progress",
            RolloutState::Paused => "paused",
            RolloutState::RollingBack => "rolling_back",
            RolloutState::Completed => "completed",
            RolloutState::Cancelled => "cancelled",
            RolloutState::RolledBack => "rolled_back",
        }
    }

    /// True while the rollout is in flight: a new one cannot start.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            RolloutState::InProgress | RolloutState::Paused | RolloutState::RollingBack
        )
    }
}

/// Where one target of a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TargetState {
    /// Its wave has not deployed it yet.
    Pending,
    /// Its deployment is in flight.
    Deploying,
    /// It took the new image.
    Completed,
    /// Its deployment was reverted or failed, or it breached a threshold.
    Failed,
    /// An operator deployed it outside the rollout (`--override-rollout`).
    Overridden,
    /// Going back to its previous image (`rollback_all`).
    RollingBack,
    /// Back on its previous image.
    Reverted,
}

impl TargetState {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetState::Pending => "pending",
            TargetState::Deploying => "deploying",
            TargetState::Completed => "completed",
            TargetState::Failed => "failed",
            TargetState::Overridden => "overridden",
            TargetState::RollingBack => "rolling_back",
            TargetState::Reverted => "reverted",
        }
    }
}

/// `mentat.query.rollout`: the rollout in flight (or the last one), or the
/// past rollouts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutQuery {
    /// List past rollouts (newest first) instead of the last one in detail.
    #[serde(default)]
    pub history: bool,
    /// At most this many past rollouts (default 20, at most 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Reply to `mentat.query.rollout`.
// A reply is built once per query and sent at once: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RolloutReply {
    /// The answer.
    Ok {
        /// The last rollout in detail (absent with `history`, or when there
        /// never was one).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rollout: Option<RolloutStatus>,
        /// Past rollouts, newest first (with `history`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        rollouts: Vec<RolloutSummary>,
    },
    /// The query could not be answered.
    Rejected {
        /// What kind of refusal.
        kind: RejectKind,
        /// Why.
        reason: String,
    },
}

/// One rollout in `mt rollout history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RolloutSummary {
    /// Rollout id.
    pub rollout_id: String,
    /// Image rolled out.
    pub image: String,
    /// How the targets were chosen.
    pub selector: String,
    /// Where it stands or how it ended.
    pub state: RolloutState,
    /// Targets.
    pub targets: u32,
    /// Waves planned.
    pub waves: u32,
    /// Waves completed.
    pub waves_completed: u32,
    /// Targets that took the new image.
    pub took_image: u32,
    /// Targets that failed.
    pub failed: u32,
    /// Targets reverted by `rollback_all`, once it completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverted: Option<u32>,
    /// Who started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it started (ms since epoch).
    pub started_at_ms: i64,
    /// When it ended (ms since epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at_ms: Option<i64>,
}

/// The last rollout in detail, in `mt rollout status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RolloutStatus {
    /// The summary.
    pub summary: RolloutSummary,
    /// The wave in progress (from 1; 0 before the first).
    pub wave: u32,
    /// End of the current wave's bake (ms since epoch), while it bakes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake_until_ms: Option<i64>,
    /// Seconds every wave bakes.
    pub wave_bake_secs: u64,
    /// Why it is paused, while it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<String>,
    /// The commands legal now.
    pub legal: Vec<String>,
    /// Every wave with its targets.
    pub waves: Vec<WaveStatus>,
    /// Webhook deliveries of its events that succeeded.
    #[serde(default)]
    pub webhooks_delivered: u32,
    /// Webhook deliveries of its events that failed for good.
    #[serde(default)]
    pub webhooks_failed: u32,
    /// The last such failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_error: Option<String>,
}

/// One wave in `mt rollout status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WaveStatus {
    /// Wave number, from 1.
    pub wave: u32,
    /// Cumulative percentage reached once it is done.
    pub percent: u32,
    /// `pending`, `in_progress`, `baking`, `completed` or `stopped` (the
    /// rollout was cancelled or rolled back while it ran).
    pub state: String,
    /// Its targets.
    pub targets: Vec<TargetStatus>,
}

/// One target in `mt rollout status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TargetStatus {
    /// Service.
    pub service: String,
    /// Where it stands.
    pub state: TargetState,
    /// Image before the rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_image: Option<String>,
    /// The rollout's last deployment of it (or its rollback's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
