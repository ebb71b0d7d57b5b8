//! Releases: immutable snapshots of the whole app, deployed to
//! environments atomically across services.
//!
//! A release is its own aggregate, the stream `_releases`. It records
//! every service's definition in every environment, and each service's
//! image, with a content hash ([`diff::hash`]); nothing changes it
//! afterwards. Deploying it to an environment starts one deployment per
//! member service that needs new processes, each blue-green and gated:
//! its green set starts and gets healthy, then waits. When every member's
//! green set is healthy the release switches, in one transaction, every
//! member's routing table (each `RouteChanged` tagged with the switch, so
//! a router applies them in one swap); the previous release stays warm at
//! weight 0 for each service's `standby_secs`. A member failing before the
//! switch turns the others back too: nothing switched. A breach after it,
//! or a rollback while the previous release is warm, turns every member
//! back in one switch as well.
//!
//! - [`state`]: [`Releases`], folded from the log; the states of a release
//!   (ready, deployed, superseded, rolled back), what each environment
//!   serves and since when.
//! - [`handle`]: `release_create`, `_deploy`, `_promote`, `_rollback`.
//! - [`react`]: what the release deployments in flight do next.
//! - [`diff`]: the content hash and field-by-field differences.
//! - [`view`]: `mentat.query.release`'s answers.
//! - `messages`: the commands, query and reply types.

pub mod diff;
pub mod handle;
mod messages;
pub mod react;
pub mod state;
pub mod view;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::ServiceSpec;

pub use handle::{create, deploy, derive_from_deploy, promote, rollback};
pub use messages::*;
pub use react::react;
pub use state::{ReleaseState, Releases};

/// `ReleaseCreated`: a release as created, never changed afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Snapshot {
    /// The release's tag, unique in the log.
    pub tag: String,
    /// Release notes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Hex SHA-256 of the services and images ([`diff::hash`]).
    pub hash: String,
    /// Every service in every environment (`web`, `web@staging`), as it
    /// runs there, ordered by name.
    pub services: Vec<ServiceSpec>,
    /// Each service's image, by service name (the same in every environment).
    pub images: BTreeMap<String, String>,
    /// The release this one was derived from by `mt deploy` of one
    /// service, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derived_from: Option<String>,
    /// When it was created (ms since epoch).
    pub at_ms: i64,
}

impl Snapshot {
    /// The members of the release in `environment`: the definitions whose
    /// route is in it.
    pub fn members<'s>(&'s self, environment: &'s str) -> impl Iterator<Item = &'s ServiceSpec> {
        self.services
            .iter()
            .filter(move |s| s.route.environment() == environment)
    }

    /// The image of the service keyed `key` (`web@staging` has web's).
    pub fn image_of(&self, key: &str) -> Option<&str> {
        let (service, _) = crate::environment::split(key);
        self.images.get(service).map(String::as_str)
    }
}

/// `ReleaseDeployStarted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeployStarted {
    /// Id of the release deployment.
    pub deployment_id: String,
    /// Release deployed.
    pub tag: String,
    /// Environment it goes to.
    pub environment: String,
    /// The release the environment served before, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// Every service of the release in the environment.
    pub members: Vec<Member>,
    /// How it came: a deploy, a promotion, a rollback, or `mt deploy` of
    /// one service.
    pub how: How,
    /// A protected environment's rule was overridden (`--force`); the
    /// reason is in the event's meta.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
    /// When (ms since epoch).
    pub at_ms: i64,
}

/// How a release deployment came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum How {
    /// `mt release deploy`.
    Deploy,
    /// `mt release promote`.
    Promote,
    /// `mt release rollback` to a release whose replicas were no longer warm.
    Rollback,
    /// `mt deploy` of one service, recorded as a release derived from the
    /// live one.
    Derived,
}

/// One service of a release deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Member {
    /// Service key (`web`, `web@staging`).
    pub service: String,
    /// Image it serves with the release.
    pub image: String,
    /// The deployment that starts its new replicas; `None` when the
    /// change needs no new process (its definition is applied in place).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    /// Its definition before, when the release changes it: recorded again
    /// if the release deployment turns back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<ServiceSpec>,
}

/// `ReleaseSwitched`, `ReleaseDeployCompleted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Step {
    /// Id of the release deployment.
    pub deployment_id: String,
    /// Release.
    pub tag: String,
    /// Environment.
    pub environment: String,
    /// When (ms since epoch).
    pub at_ms: i64,
}

/// `ReleaseDeployFailed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Failed {
    /// Id of the release deployment.
    pub deployment_id: String,
    /// Release.
    pub tag: String,
    /// Environment.
    pub environment: String,
    /// Each member that failed, with its reason (empty for a rollback).
    pub failures: Vec<crate::rollout::FailedTarget>,
    /// The release had switched: it was reverted (a breach) or rolled
    /// back, in one switch back to the previous release.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reverted: bool,
    /// It was an operator's rollback (`mt release rollback`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rolled_back: bool,
    /// Why, in a sentence.
    pub reason: String,
    /// When (ms since epoch).
    pub at_ms: i64,
}

/// The tag on each `RouteChanged` of one switch: a router holds them until
/// it has `changes` of them, then applies them in one swap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RouteSwitch {
    /// Id of the switch (the release deployment's, and a suffix for a
    /// switch back).
    pub id: String,
    /// How many `RouteChanged` the switch holds.
    pub changes: u32,
}
