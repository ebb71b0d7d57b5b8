//! The releases and the environments they serve, folded from `_releases`.
//!
//! `apply` records what each event says and decides nothing. A release's
//! state is derived from the environments: deployed while one serves it,
//! rolled back once an environment was taken back from it, superseded once
//! it served and another took its place, ready before it ever served.

use std::collections::{BTreeMap, BTreeSet};

use crate::event::{Event, Meta};
use crate::release::{DeployStarted, How, Member, Snapshot};

/// Every release, and what each environment serves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Releases {
    /// Releases by tag.
    pub by_tag: BTreeMap<String, Release>,
    /// Tags in the order they were created.
    pub order: Vec<String>,
    /// Environments by name (those a release was ever deployed to).
    pub environments: BTreeMap<String, Environment>,
}

/// A release and who made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// The snapshot, as created.
    pub snapshot: Snapshot,
    /// Who created it.
    pub actor: Option<String>,
}

/// What an environment serves and how it got there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environment {
    /// The release serving, and since when (ms since epoch).
    pub live: Option<(String, i64)>,
    /// The release deployment in flight.
    pub in_flight: Option<ReleaseDeployment>,
    /// Every release deployment, oldest first.
    pub history: Vec<Entry>,
    /// Releases that served here (switched), in order.
    pub served: Vec<String>,
    /// Releases an operator rolled back from here.
    pub rolled_back: BTreeSet<String>,
}

/// A release deployment in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseDeployment {
    /// As it started.
    pub started: DeployStarted,
    /// When the environment switched to it (ms since epoch).
    pub switched_at_ms: Option<i64>,
}

impl ReleaseDeployment {
    /// The members that start new replicas, with their deployment ids.
    pub fn deploying(&self) -> impl Iterator<Item = (&Member, &str)> {
        self.started
            .members
            .iter()
            .filter_map(|m| m.deployment_id.as_deref().map(|d| (m, d)))
    }
}

/// One release deployment of an environment, as history shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Id of the release deployment.
    pub deployment_id: String,
    /// Release.
    pub tag: String,
    /// How it came.
    pub how: How,
    /// Forced into a protected environment.
    pub forced: bool,
    /// `in_progress`, `switched`, `completed`, `failed`, `reverted`, `rolled_back`.
    pub outcome: &'static str,
    /// Why it failed or was turned back.
    pub reason: Option<String>,
    /// Who, and why in their words.
    pub actor: Option<String>,
    /// Their reason.
    pub why: Option<String>,
    /// Started, switched, ended (ms since epoch).
    pub started_at_ms: i64,
    /// When it switched.
    pub switched_at_ms: Option<i64>,
    /// When it ended.
    pub ended_at_ms: Option<i64>,
}

/// The state of a release, derived from the environments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseState {
    /// Created, never served.
    Ready,
    /// Serving in these environments.
    Deployed(Vec<String>),
    /// It served, and another release took its place everywhere.
    Superseded,
    /// An operator rolled an environment back from it.
    RolledBack,
}

impl ReleaseState {
    /// Its name on the wire.
    pub fn as_str(&self) -> &'static str {
        match self {
            ReleaseState::Ready => "ready",
            ReleaseState::Deployed(_) => "deployed",
            ReleaseState::Superseded => "superseded",
            ReleaseState::RolledBack => "rolled_back",
        }
    }
}

impl Releases {
    /// The state of release `tag`.
    pub fn state(&self, tag: &str) -> ReleaseState {
        let deployed: Vec<String> = self.deployed_in(tag);
        if !deployed.is_empty() {
            return ReleaseState::Deployed(deployed);
        }
        let envs = self.environments.values();
        if envs.clone().any(|e| e.rolled_back.contains(tag)) {
            ReleaseState::RolledBack
        } else if envs.clone().any(|e| e.served.iter().any(|t| t == tag)) {
            ReleaseState::Superseded
        } else {
            ReleaseState::Ready
        }
    }

    /// The environments serving `tag` now.
    pub fn deployed_in(&self, tag: &str) -> Vec<String> {
        self.environments
            .iter()
            .filter(|(_, e)| e.live.as_ref().is_some_and(|(t, _)| t == tag))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The release `environment` serves, and since when.
    pub fn live(&self, environment: &str) -> Option<(&str, i64)> {
        self.environments
            .get(environment)?
            .live
            .as_ref()
            .map(|(t, at)| (t.as_str(), *at))
    }

    /// The release deployment in flight in `environment`.
    pub fn in_flight(&self, environment: &str) -> Option<&ReleaseDeployment> {
        self.environments.get(environment)?.in_flight.as_ref()
    }

    /// Every release deployment in flight.
    pub fn all_in_flight(&self) -> impl Iterator<Item = &ReleaseDeployment> {
        self.environments
            .values()
            .filter_map(|e| e.in_flight.as_ref())
    }

    /// True when `event` is one of `_releases`.
    pub fn owns(event: &Event) -> bool {
        matches!(
            event,
            Event::ReleaseCreated(_)
                | Event::ReleaseDeployStarted(_)
                | Event::ReleaseSwitched(_)
                | Event::ReleaseDeployCompleted(_)
                | Event::ReleaseDeployFailed(_)
        )
    }

    /// Fold one event of `_releases` recorded at `at`.
    pub fn apply(&mut self, event: &Event, at: i64, meta: &Meta) {
        match event {
            Event::ReleaseCreated(snapshot) => {
                self.order.push(snapshot.tag.clone());
                self.by_tag.insert(
                    snapshot.tag.clone(),
                    Release {
                        snapshot: snapshot.clone(),
                        actor: meta.actor.clone(),
                    },
                );
            }
            Event::ReleaseDeployStarted(started) => {
                let env = self
                    .environments
                    .entry(started.environment.clone())
                    .or_default();
                if let (How::Rollback, Some((live, _))) = (started.how, &env.live) {
                    env.rolled_back.insert(live.clone());
                }
                env.history.push(Entry {
                    deployment_id: started.deployment_id.clone(),
                    tag: started.tag.clone(),
                    how: started.how,
                    forced: started.forced,
                    outcome: "in_progress",
                    reason: None,
                    actor: meta.actor.clone(),
                    why: meta.reason.clone(),
                    started_at_ms: started.at_ms,
                    switched_at_ms: None,
                    ended_at_ms: None,
                });
                env.in_flight = Some(ReleaseDeployment {
                    started: started.clone(),
                    switched_at_ms: None,
                });
            }
            Event::ReleaseSwitched(step) => {
                let Some(env) = self.environments.get_mut(&step.environment) else {
                    return;
                };
                if let Some(d) = env.in_flight.as_mut() {
                    d.switched_at_ms = Some(at);
                }
                env.live = Some((step.tag.clone(), at));
                env.served.push(step.tag.clone());
                if let Some(e) = entry(env, &step.deployment_id) {
                    e.outcome = "switched";
                    e.switched_at_ms = Some(at);
                }
            }
            Event::ReleaseDeployCompleted(step) => {
                let Some(env) = self.environments.get_mut(&step.environment) else {
                    return;
                };
                env.in_flight = None;
                if env.live.as_ref().is_none_or(|(t, _)| *t != step.tag) {
                    env.live = Some((step.tag.clone(), at));
                    env.served.push(step.tag.clone());
                }
                if let Some(e) = entry(env, &step.deployment_id) {
                    e.outcome = "completed";
                    e.ended_at_ms = Some(step.at_ms);
                }
            }
            Event::ReleaseDeployFailed(failed) => {
                let Some(env) = self.environments.get_mut(&failed.environment) else {
                    return;
                };
                let previous = env
                    .in_flight
                    .take()
                    .and_then(|d| d.started.previous.clone());
                if failed.reverted {
                    env.live = previous.map(|p| (p, at));
                }
                if failed.rolled_back {
                    env.rolled_back.insert(failed.tag.clone());
                }
                if let Some(e) = entry(env, &failed.deployment_id) {
                    e.outcome = match (failed.rolled_back, failed.reverted) {
                        (true, _) => "rolled_back",
                        (false, true) => "reverted",
                        (false, false) => "failed",
                    };
                    // A rollback says who asked and why (the event's meta).
                    e.reason = Some(match (failed.rolled_back, &meta.actor, &meta.reason) {
                        (true, actor, Some(why)) => format!(
                            "rolled back by {}: {why}",
                            actor.as_deref().unwrap_or("an operator")
                        ),
                        _ => failed.reason.clone(),
                    });
                    e.ended_at_ms = Some(failed.at_ms);
                }
            }
            _ => {}
        }
    }
}

fn entry<'e>(env: &'e mut Environment, deployment_id: &str) -> Option<&'e mut Entry> {
    env.history
        .iter_mut()
        .rev()
        .find(|e| e.deployment_id == deployment_id)
}
