//! The release commands (`mentat.cmd.release_*`), `mentat.query.release`
//! and its reply.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::command::RejectKind;
use crate::environment::Environments;
use crate::limits::{
    MAX_ACTOR_BYTES, MAX_COMMAND_ID_BYTES, MAX_NAME_BYTES, MAX_REASON_BYTES, MAX_SERVICES_PER_APPLY,
};
use crate::security::CommandSignature;
use crate::spec::ServiceSpec;

/// Longest release tag.
pub const MAX_TAG_BYTES: usize = 128;
/// Longest release description.
pub const MAX_DESCRIPTION_BYTES: usize = 4096;

/// `mentat.cmd.release_create`: record an immutable snapshot of every
/// service's definition and image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseCreate {
    /// Idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_COMMAND_ID_BYTES))]
    pub command_id: Option<String>,
    /// The sender's signature (see [`crate::security`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<CommandSignature>,
    /// The release's tag: 1-128 characters of A-Z, a-z, 0-9, `.`, `_`,
    /// `-` and `+`, starting with a letter or digit; unique.
    #[schemars(length(max = MAX_TAG_BYTES))]
    pub tag: String,
    /// Release notes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_DESCRIPTION_BYTES))]
    pub description: Option<String>,
    /// The services of a service file, as it declares them; absent: the
    /// definitions applied now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_SERVICES_PER_APPLY))]
    pub services: Option<Vec<ServiceSpec>>,
    /// That file's `environments:` block, if it has one (else the one
    /// applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environments: Option<Environments>,
    /// Images by service name; a service not named keeps the image it
    /// serves in the default environment (or the only one it runs in).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, String>,
    /// Deploy the release to this environment at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_NAME_BYTES))]
    pub deploy_to: Option<String>,
    /// Who asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_ACTOR_BYTES))]
    pub actor: Option<String>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_REASON_BYTES))]
    pub reason: Option<String>,
}

/// `mentat.cmd.release_deploy`: move every service of an environment to a
/// release at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseDeploy {
    /// Idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_COMMAND_ID_BYTES))]
    pub command_id: Option<String>,
    /// The sender's signature (see [`crate::security`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<CommandSignature>,
    /// Release to deploy.
    #[schemars(length(max = MAX_TAG_BYTES))]
    pub tag: String,
    /// Environment to deploy it to.
    #[schemars(length(max = MAX_NAME_BYTES))]
    pub environment: String,
    /// Deploy to a protected environment a release that did not go
    /// through its `promote_from` (recorded; needs a reason).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
    /// Who asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_ACTOR_BYTES))]
    pub actor: Option<String>,
    /// Why (required by a protected environment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_REASON_BYTES))]
    pub reason: Option<String>,
}

/// `mentat.cmd.release_promote`: deploy to `to` the release deployed in
/// `from`, the same snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleasePromote {
    /// Idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_COMMAND_ID_BYTES))]
    pub command_id: Option<String>,
    /// The sender's signature (see [`crate::security`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<CommandSignature>,
    /// Release to promote.
    #[schemars(length(max = MAX_TAG_BYTES))]
    pub tag: String,
    /// Environment it serves in.
    #[schemars(length(max = MAX_NAME_BYTES))]
    pub from: String,
    /// Environment it goes to.
    #[schemars(length(max = MAX_NAME_BYTES))]
    pub to: String,
    /// Who asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_ACTOR_BYTES))]
    pub actor: Option<String>,
    /// Why (required by a protected environment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_REASON_BYTES))]
    pub reason: Option<String>,
}

/// `mentat.cmd.release_rollback`: take an environment back to its
/// previous release (or the one named).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRollback {
    /// Idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_COMMAND_ID_BYTES))]
    pub command_id: Option<String>,
    /// The sender's signature (see [`crate::security`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<CommandSignature>,
    /// Environment to roll back.
    #[schemars(length(max = MAX_NAME_BYTES))]
    pub environment: String,
    /// The release to go back to; absent: the one before the live one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_TAG_BYTES))]
    pub to: Option<String>,
    /// Who asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_ACTOR_BYTES))]
    pub actor: Option<String>,
    /// Why (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_REASON_BYTES))]
    pub reason: Option<String>,
}

/// `mentat.query.release`: the releases (all, or one tag) and what each
/// environment serves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ReleaseQuery {
    /// One release, with its snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Only the releases that were ever deployed to this environment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
}

/// The answer to `mentat.query.release`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ReleaseReply {
    /// The releases, oldest first, and the environments.
    Ok {
        /// Releases (with their snapshot when one tag was asked for).
        releases: Vec<ReleaseView>,
        /// Every environment: what it serves, since when, its history.
        environments: Vec<EnvironmentView>,
    },
    /// The query was refused (an unknown tag or environment).
    Rejected {
        /// Why, by kind.
        kind: RejectKind,
        /// Why, in words.
        reason: String,
    },
}

/// One release as `mt release list` and `show` print it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReleaseView {
    /// Tag.
    pub tag: String,
    /// Release notes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Content hash.
    pub hash: String,
    /// `ready`, `deployed`, `superseded` or `rolled_back`.
    pub state: String,
    /// Environments it serves in now.
    pub deployed_in: Vec<String>,
    /// Environments it was rolled back from.
    pub rolled_back_in: Vec<String>,
    /// Images by service.
    pub images: BTreeMap<String, String>,
    /// The release it was derived from (`mt deploy` of one service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derived_from: Option<String>,
    /// Who created it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// When (ms since epoch).
    pub created_at_ms: i64,
    /// Every definition, when one release was asked for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceSpec>,
}

/// One environment as `mt release list`, `mt status` and `mt history` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EnvironmentView {
    /// Name.
    pub name: String,
    /// Protected (deploys need a reason and go through `promote_from`).
    pub protected: bool,
    /// Where its releases come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote_from: Option<String>,
    /// The release serving there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<String>,
    /// Since when (ms since epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_since_ms: Option<i64>,
    /// Its release deployments, oldest first.
    pub history: Vec<EnvironmentEntry>,
}

/// One release deployment of an environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EnvironmentEntry {
    /// Id of the release deployment.
    pub deployment_id: String,
    /// Release.
    pub tag: String,
    /// How it came.
    pub how: super::How,
    /// `in_progress`, `switched`, `completed`, `failed`, `reverted` or `rolled_back`.
    pub outcome: String,
    /// Why it failed or was turned back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Forced into a protected environment.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
    /// Who.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Why, in their words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// Started (ms since epoch).
    pub started_at_ms: i64,
    /// Switched (ms since epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switched_at_ms: Option<i64>,
    /// Ended (ms since epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at_ms: Option<i64>,
}
