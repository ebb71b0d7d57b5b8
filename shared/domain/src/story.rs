//! One deployment's story, told from the log: which events are its own
//! ([`Membership`], the fold `mt deploy` follows it with, live) and the
//! whole of it once recorded ([`story`], what `mt audit why` prints): the
//! command that started it, every decision, the facts that drove them, and
//! how it ended.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::command::Outcome;
use crate::event::{Event, EventEnvelope};
use crate::security::SignedBy;
use crate::spec::Strategy;

/// Which events belong to one deployment, learnt as they come: its own
/// events, the replicas it starts and replaces, the health-watcher's
/// verdicts on the version it rolls out, and the loss of a host one of its
/// replicas ran on.
#[derive(Debug, Clone)]
pub struct Membership {
    deployment_id: String,
    service: String,
    command_id: Option<String>,
    image: Option<String>,
    replicas: BTreeSet<String>,
    hosts: BTreeSet<String>,
}

impl Membership {
    /// The events of deployment `deployment_id` of `service`, started (or
    /// steered) by command `command_id`.
    pub fn new(service: &str, deployment_id: &str, command_id: Option<&str>) -> Self {
        Self {
            deployment_id: deployment_id.to_owned(),
            service: service.to_owned(),
            command_id: command_id.map(str::to_owned),
            image: None,
            replicas: BTreeSet::new(),
            hosts: BTreeSet::new(),
        }
    }

    /// The image being rolled out, once its `DeploymentStarted` was seen.
    pub fn image(&self) -> Option<&str> {
        self.image.as_deref()
    }

    /// Whether `env` belongs to the deployment; what it teaches is learnt
    /// when it does. Events must come in log order.
    pub fn admits(&mut self, env: &EventEnvelope) -> bool {
        let ours = self.is_ours(env);
        if ours {
            self.learn(&env.event);
        }
        ours
    }

    fn is_ours(&self, env: &EventEnvelope) -> bool {
        if let Event::HostLost { host, .. } = &env.event {
            return self.hosts.contains(host);
        }
        if env.stream != self.service {
            return false;
        }
        if let Some(version) = env.event.judged_version() {
            return self.image.as_deref() == Some(version);
        }
        if let Some(id) = env.event.deployment_id() {
            return id == self.deployment_id;
        }
        let correlated = env
            .meta
            .correlation_id
            .as_ref()
            .is_some_and(|c| *c == self.deployment_id || Some(c) == self.command_id.as_ref());
        if correlated {
            return true;
        }
        match env.event.replica() {
            Some(replica) => self.replicas.contains(replica),
            None => matches!(env.event, Event::RouteChanged { .. }),
        }
    }

    fn learn(&mut self, event: &Event) {
        match event {
            Event::DeploymentStarted { image, .. } => self.image = Some(image.clone()),
            Event::BatchStarted { start, replace, .. } => {
                self.replicas.extend(start.iter().cloned());
                self.replicas.extend(replace.iter().cloned());
            }
            Event::ReplicaStartRequested { replica, host, .. }
            | Event::ReplicaStarted { replica, host, .. } => {
                self.replicas.insert(replica.clone());
                self.hosts.insert(host.clone());
            }
            other => {
                if let Some(replica) = other.replica() {
                    self.replicas.insert(replica.to_owned());
                }
            }
        }
    }
}

/// What part an event plays in a story.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// An operator's command (the event carries an actor or a reason).
    Command,
    /// The planner's own decision.
    Decision,
    /// Something observed: a replica's health or exit, a breach, a drain,
    /// a host lost.
    Fact,
}

impl Role {
    /// The role of `env`: facts are reported by other services (or are a
    /// host or router lost); an event with an actor or a reason was asked
    /// for by someone; the rest the planner decided.
    pub fn of(env: &EventEnvelope) -> Role {
        let observed = env.event.is_fact()
            || matches!(env.event, Event::HostLost { .. } | Event::RouterLost { .. });
        if observed {
            Role::Fact
        } else if env.meta.actor.is_some() || env.meta.reason.is_some() {
            Role::Command
        } else {
            Role::Decision
        }
    }

    /// The role's name (`command`, `decision`, `fact`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Command => "command",
            Role::Decision => "decision",
            Role::Fact => "fact",
        }
    }
}

/// One event of a story.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Its position in the log.
    pub position: i64,
    /// When it was recorded (ms since epoch).
    pub at_ms: i64,
    /// Command, decision or fact.
    pub role: Role,
    /// Who asked, for a command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The signature that proved who asked, for a signed command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed: Option<SignedBy>,
    /// Why, in their words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The event, with every number it carries.
    pub event: Event,
}

impl Step {
    fn of(env: &EventEnvelope) -> Step {
        Step {
            position: env.position,
            at_ms: env.recorded_at_ms,
            role: Role::of(env),
            actor: env.meta.actor.clone(),
            signed: env.meta.signed.clone(),
            reason: env.meta.reason.clone(),
            event: env.event.clone(),
        }
    }
}

/// The story of one deployment (`mt audit why`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Story {
    /// Deployment id.
    pub deployment_id: String,
    /// Service deployed.
    pub service: String,
    /// Image rolled out.
    pub image: String,
    /// Image serving before it.
    pub previous_image: Option<String>,
    /// Strategy.
    pub strategy: Strategy,
    /// Whether it was a rollback command.
    pub rollback: bool,
    /// Who started it.
    pub actor: Option<String>,
    /// The signature that proved who started it, when signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed: Option<SignedBy>,
    /// Why they did.
    pub reason: Option<String>,
    /// When it started (ms since epoch).
    pub started_at_ms: i64,
    /// Every event of it after the start, in log order.
    pub steps: Vec<Step>,
    /// How it ended, or `in_progress` when the log ends first.
    pub outcome: Outcome,
    /// Why it did not complete.
    pub failure: Option<String>,
    /// When it ended.
    pub ended_at_ms: Option<i64>,
}

/// Why a story could not be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotFound {
    /// No deployment has this id, nor an id starting or ending with it.
    Deployment(String),
    /// Several deployments' ids start with it.
    Ambiguous(String, usize),
    /// The log holds no event at this position.
    Position(i64),
    /// The event at this position belongs to no deployment.
    NoDeployment(i64),
}

impl std::fmt::Display for NotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotFound::Deployment(id) => write!(f, "no deployment `{id}` in the log"),
            NotFound::Ambiguous(id, n) => {
                write!(f, "{n} deployments' ids start or end with `{id}`: give more of it")
            }
            NotFound::Position(p) => write!(f, "the log has no event at position {p}"),
            NotFound::NoDeployment(p) => write!(
                f,
                "the event at position {p} belongs to no deployment (none was in flight on its stream)"
            ),
        }
    }
}

/// The deployment `text` names: a deployment id, the unique start or end
/// of one (tables show an id's last 8 characters), or a position in the
/// log (digits) of any event of the deployment.
pub fn find(events: &[EventEnvelope], text: &str) -> Result<String, NotFound> {
    if let Ok(position) = text.parse::<i64>() {
        return of_position(events, position);
    }
    let ids: BTreeSet<&str> = events
        .iter()
        .filter_map(|env| match &env.event {
            Event::DeploymentStarted { deployment_id, .. }
                if deployment_id.starts_with(text) || deployment_id.ends_with(text) =>
            {
                Some(deployment_id.as_str())
            }
            _ => None,
        })
        .collect();
    if ids.contains(text) {
        return Ok(text.to_owned());
    }
    match ids.len() {
        0 => Err(NotFound::Deployment(text.to_owned())),
        1 => Ok(ids.into_iter().next().unwrap_or_default().to_owned()),
        n => Err(NotFound::Ambiguous(text.to_owned(), n)),
    }
}

/// The deployment the event at `position` belongs to: the one it names, or
/// the one in flight on its stream then.
fn of_position(events: &[EventEnvelope], position: i64) -> Result<String, NotFound> {
    let at = events
        .iter()
        .position(|e| e.position == position)
        .ok_or(NotFound::Position(position))?;
    let env = &events[at];
    if let Some(id) = env.event.deployment_id() {
        return Ok(id.to_owned());
    }
    let mut in_flight: Option<&str> = None;
    for e in events[..=at].iter().filter(|e| e.stream == env.stream) {
        if let Event::DeploymentStarted { deployment_id, .. } = &e.event {
            in_flight = Some(deployment_id);
        } else if e.event.ending().is_some() && e.position < position {
            in_flight = None;
        }
    }
    in_flight
        .map(str::to_owned)
        .ok_or(NotFound::NoDeployment(position))
}

/// The story of deployment `deployment_id`, from the events of the log in
/// order (from its start on at least).
pub fn story(events: &[EventEnvelope], deployment_id: &str) -> Result<Story, NotFound> {
    let start = events
        .iter()
        .position(|e| {
            matches!(&e.event, Event::DeploymentStarted { deployment_id: id, .. } if id == deployment_id)
        })
        .ok_or_else(|| NotFound::Deployment(deployment_id.to_owned()))?;
    let env = &events[start];
    let Event::DeploymentStarted {
        service,
        image,
        previous_image,
        strategy,
        rollback,
        at_ms,
        ..
    } = &env.event
    else {
        return Err(NotFound::Deployment(deployment_id.to_owned()));
    };
    let mut members = Membership::new(service, deployment_id, env.meta.causation_id.as_deref());
    members.admits(env);
    let mut told = Story {
        deployment_id: deployment_id.to_owned(),
        service: service.clone(),
        image: image.clone(),
        previous_image: previous_image.clone(),
        strategy: *strategy,
        rollback: *rollback,
        actor: env.meta.actor.clone(),
        signed: env.meta.signed.clone(),
        reason: env.meta.reason.clone(),
        started_at_ms: *at_ms,
        steps: Vec::new(),
        outcome: Outcome::InProgress,
        failure: None,
        ended_at_ms: None,
    };
    for env in &events[start + 1..] {
        if !members.admits(env) {
            continue;
        }
        told.steps.push(Step::of(env));
        if matches!(env.event, Event::DeploymentReverting { .. }) {
            told.outcome = Outcome::Reverting;
        }
        if let Some((outcome, failure, at_ms)) = env.event.ending() {
            told.outcome = outcome;
            told.failure = failure.map(str::to_owned);
            told.ended_at_ms = Some(at_ms);
            break;
        }
    }
    Ok(told)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Judgement, Meta, Metric, Plan};

    fn env(position: i64, stream: &str, meta: Meta, event: Event) -> EventEnvelope {
        EventEnvelope {
            id: format!("e{position}"),
            position,
            stream: stream.into(),
            version: position,
            schema_version: 1,
            recorded_at_ms: position * 1000,
            meta,
            event,
        }
    }

    fn started(id: &str, image: &str) -> Event {
        Event::DeploymentStarted {
            deployment_id: id.into(),
            service: "web".into(),
            image: image.into(),
            previous_image: Some("v1".into()),
            strategy: Strategy::Canary,
            batch_size: 1,
            replicas: 2,
            auto_revert: true,
            rollback: false,
            at_ms: 1000,
            plan: Plan::default(),
        }
    }

    fn breach(version: &str) -> Event {
        Event::ThresholdBreached {
            service: "web".into(),
            deployment_id: None,
            version: version.into(),
            judgement: Judgement {
                metric: Metric::ErrorRate,
                observed: 10_000,
                threshold: 500,
                baseline: None,
                window_secs: 1,
                requests: 42,
            },
        }
    }

    /// A canary of v2 started by ana, a breach of v2 (and one of v1, not
    /// its own), another service's replica, its revert.
    fn reverted_canary() -> Vec<EventEnvelope> {
        let ana = Meta {
            actor: Some("ana".into()),
            reason: Some("ship the cache".into()),
            correlation_id: Some("d2".into()),
            causation_id: Some("c1".into()),
            epoch: None,
            signed: None,
            decided: None,
        };
        let planner = Meta {
            correlation_id: Some("d2".into()),
            ..Meta::default()
        };
        let healthy = |replica: &str, service: &str| Event::ReplicaHealthy {
            replica: replica.into(),
            service: service.into(),
        };
        vec![
            env(1, "web", ana.clone(), started("d2", "v2")),
            env(
                2,
                "web",
                ana,
                Event::BatchStarted {
                    deployment_id: "d2".into(),
                    batch: 1,
                    image: "v2".into(),
                    start: vec!["web-3".into()],
                    replace: vec![],
                    deadline_ms: 9_000,
                },
            ),
            env(3, "web", Meta::default(), healthy("web-3", "web")),
            env(4, "api", Meta::default(), healthy("api-1", "api")),
            env(5, "web", Meta::default(), breach("v1")),
            env(6, "web", Meta::default(), breach("v2")),
            env(
                7,
                "web",
                planner.clone(),
                Event::DeploymentReverting {
                    deployment_id: "d2".into(),
                    reason: "threshold breached".into(),
                },
            ),
            env(
                8,
                "web",
                planner,
                Event::DeploymentReverted {
                    deployment_id: "d2".into(),
                    reason: "threshold breached".into(),
                    at_ms: 8_000,
                },
            ),
            env(9, "web", Meta::default(), healthy("web-3", "web")),
        ]
    }

    #[test]
    fn a_reverted_canary_tells_its_command_its_breach_and_its_end() {
        let events = reverted_canary();
        let told = story(&events, "d2").expect("a story");
        assert_eq!(told.actor.as_deref(), Some("ana"));
        assert_eq!(told.reason.as_deref(), Some("ship the cache"));
        assert_eq!(told.outcome, Outcome::Reverted);
        assert_eq!(told.failure.as_deref(), Some("threshold breached"));
        assert_eq!(told.ended_at_ms, Some(8_000));
        let positions: Vec<i64> = told.steps.iter().map(|s| s.position).collect();
        assert_eq!(
            positions,
            [2, 3, 6, 7, 8],
            "not api's, not v1's, not after the end"
        );
        let roles: Vec<Role> = told.steps.iter().map(|s| s.role).collect();
        use Role::*;
        assert_eq!(roles, [Command, Fact, Fact, Decision, Decision]);
        assert_eq!(told.steps[2].event, breach("v2"));
    }

    #[test]
    fn a_deployment_is_found_by_id_prefix_or_by_the_position_of_any_of_its_events() {
        let events = reverted_canary();
        assert_eq!(find(&events, "d2"), Ok("d2".into()));
        assert_eq!(find(&events, "d"), Ok("d2".into()));
        assert_eq!(find(&events, "6"), Ok("d2".into()), "a breach");
        assert_eq!(find(&events, "3"), Ok("d2".into()), "a health fact");
        assert_eq!(find(&events, "x"), Err(NotFound::Deployment("x".into())));
        assert_eq!(find(&events, "99"), Err(NotFound::Position(99)));
        assert_eq!(find(&events, "4"), Err(NotFound::NoDeployment(4)));
        assert_eq!(find(&events, "9"), Err(NotFound::NoDeployment(9)));
    }

    #[test]
    fn a_host_lost_belongs_to_the_deployment_whose_replica_it_ran() {
        let mut members = Membership::new("web", "d2", None);
        let requested = Event::ReplicaStartRequested {
            replica: "web-3".into(),
            service: "web".into(),
            host: "vm-2".into(),
            image: "v2".into(),
            run: serde_json::from_value(serde_json::json!({"command": ["app"]})).expect("run"),
            health: Default::default(),
            deployment_id: Some("d2".into()),
            spawned: false,
        };
        assert!(members.admits(&env(1, "web", Meta::default(), requested)));
        let lost = |host: &str| Event::HostLost {
            host: host.into(),
            reason: "silent".into(),
        };
        assert!(members.admits(&env(2, "_hosts", Meta::default(), lost("vm-2"))));
        assert!(!members.admits(&env(3, "_hosts", Meta::default(), lost("vm-9"))));
    }
}
