//! Following a deployment live: the service's relayed events as they come,
//! with `mentat.query.history` polled as a fallback in case one was missed.

use std::collections::HashSet;
use std::time::Duration;

use async_nats::{Message, Subscriber};
use futures::StreamExt;
use mentat_bus::codec::{self, Encoding};
use mentat_bus::Bus;
use mentat_domain::command::{HistoryReply, Outcome};
use mentat_domain::{Event, EventEnvelope};

use crate::client;
use crate::error::{Error, Result};
use crate::output;

/// How often the history is polled while following.
const POLL_EVERY: Duration = Duration::from_secs(3);
/// How long one poll may take.
const POLL_TIMEOUT: Duration = Duration::from_secs(2);

/// How a followed deployment ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// Completed, reverted or failed.
    pub outcome: Outcome,
    /// Why it did not complete.
    pub reason: Option<String>,
}

/// What one deployment's events mean for the person following it.
#[derive(Debug)]
pub struct Tracker {
    ids: [String; 2],
    batches: Option<u32>,
    replicas: HashSet<String>,
    old: HashSet<String>,
}

impl Tracker {
    /// Follow deployment `deployment_id`, started by command `command_id`.
    pub fn new(deployment_id: &str, command_id: &str) -> Self {
        Self {
            ids: [deployment_id.to_owned(), command_id.to_owned()],
            batches: None,
            replicas: HashSet::new(),
            old: HashSet::new(),
        }
    }

    /// `None` when the event is not about this deployment; otherwise its
    /// progress line (if it deserves one) and whether the deployment ended.
    pub fn observe(&mut self, env: &EventEnvelope) -> Option<(Option<String>, Option<Finished>)> {
        if !self.is_ours(env) {
            return None;
        }
        self.learn(&env.event);
        let line = output::progress(&env.event, self.batches, &self.old);
        let ended = |outcome, reason: &String| Finished {
            outcome,
            reason: Some(reason.clone()),
        };
        let finished = match &env.event {
            Event::DeploymentCompleted { .. } => Some(Finished {
                outcome: Outcome::Completed,
                reason: None,
            }),
            Event::DeploymentReverted { reason, .. } => Some(ended(Outcome::Reverted, reason)),
            Event::DeploymentFailed { reason, .. } => Some(ended(Outcome::Failed, reason)),
            _ => None,
        };
        Some((line, finished))
    }

    fn is_ours(&self, env: &EventEnvelope) -> bool {
        if let Some(id) = deployment_of(&env.event) {
            return id == self.ids[0];
        }
        if env
            .meta
            .correlation_id
            .as_ref()
            .is_some_and(|c| self.ids.contains(c))
        {
            return true;
        }
        match replica_of(&env.event) {
            Some(replica) => self.replicas.contains(replica),
            None => matches!(env.event, Event::RouteChanged { .. }),
        }
    }

    fn learn(&mut self, event: &Event) {
        match event {
            Event::DeploymentStarted {
                batch_size,
                replicas,
                ..
            } => self.batches = Some(replicas.div_ceil((*batch_size).max(1))),
            Event::BatchStarted { start, replace, .. } => {
                self.replicas.extend(start.iter().cloned());
                self.replicas.extend(replace.iter().cloned());
                self.old.extend(replace.iter().cloned());
            }
            other => {
                if let Some(replica) = replica_of(other) {
                    self.replicas.insert(replica.to_owned());
                }
            }
        }
    }
}

/// The deployment an event names, when it names one.
fn deployment_of(event: &Event) -> Option<&str> {
    match event {
        Event::DeploymentStarted { deployment_id, .. }
        | Event::BatchStarted { deployment_id, .. }
        | Event::BatchCompleted { deployment_id, .. }
        | Event::DeploymentReverting { deployment_id, .. }
        | Event::DeploymentCompleted { deployment_id, .. }
        | Event::DeploymentReverted { deployment_id, .. }
        | Event::DeploymentFailed { deployment_id, .. } => Some(deployment_id),
        Event::ReplicaStartRequested { deployment_id, .. } => deployment_id.as_deref(),
        _ => None,
    }
}

/// The replica an event is about, when it is about one.
fn replica_of(event: &Event) -> Option<&str> {
    match event {
        Event::ReplicaStartRequested { replica, .. }
        | Event::ReplicaStarted { replica, .. }
        | Event::ReplicaExited { replica, .. }
        | Event::ReplicaHealthy { replica, .. }
        | Event::ReplicaUnhealthy { replica, .. }
        | Event::ReplicaDrained { replica, .. }
        | Event::ReplicaStopRequested { replica, .. } => Some(replica),
        _ => None,
    }
}

/// What to follow and how to print it.
#[derive(Debug)]
pub struct Follow<'a> {
    /// The service deployed.
    pub service: &'a str,
    /// The deployment id from the planner's reply.
    pub deployment_id: &'a str,
    /// The command id we sent.
    pub command_id: &'a str,
    /// Give up after this long.
    pub timeout: Duration,
    /// Print events as JSON lines instead of progress lines.
    pub json: bool,
}

impl Follow<'_> {
    /// Print the deployment's progress until it ends; `Ok` when it completed.
    /// `events` must have been subscribed before the command was sent.
    pub async fn run(&self, bus: &Bus, mut events: Subscriber) -> Result<()> {
        let mut tracker = Tracker::new(self.deployment_id, self.command_id);
        let deadline = tokio::time::sleep(self.timeout);
        tokio::pin!(deadline);
        let mut poll = tokio::time::interval(POLL_EVERY);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut live = true;
        loop {
            let finished = tokio::select! {
                msg = events.next(), if live => match msg {
                    Some(msg) => self.on_message(&mut tracker, &msg),
                    None => {
                        live = false;
                        eprintln!("mt: live events stopped; polling the history instead");
                        None
                    }
                },
                _ = poll.tick() => self.poll(bus).await,
                () = &mut deadline => {
                    return Err(Error::WaitTimedOut {
                        deployment_id: self.deployment_id.to_owned(),
                        service: self.service.to_owned(),
                        secs: self.timeout.as_secs(),
                    })
                }
            };
            if let Some(finished) = finished {
                return self.end(finished);
            }
        }
    }

    fn on_message(&self, tracker: &mut Tracker, msg: &Message) -> Option<Finished> {
        let encoding = Encoding::of(msg.headers.as_ref());
        let env: EventEnvelope = match codec::decode(&msg.payload, encoding, "EventEnvelope") {
            Ok(env) => env,
            Err(e) => {
                tracing::debug!(subject = %msg.subject, error = %e, "skipping undecodable event");
                return None;
            }
        };
        let (line, finished) = tracker.observe(&env)?;
        if self.json {
            output::print(output::json(&env));
        } else if let Some(line) = line {
            output::print(format!("{}  {line}", output::clock(env.recorded_at_ms)));
        }
        finished
    }

    /// Look the deployment up in the history; `Some` once it has ended.
    async fn poll(&self, bus: &Bus) -> Option<Finished> {
        let reply = client::history(bus, self.service, false, POLL_TIMEOUT).await;
        let HistoryReply::Ok { deployments, .. } = reply.ok()? else {
            return None;
        };
        let record = deployments
            .into_iter()
            .find(|d| d.deployment_id == self.deployment_id)?;
        if !record.outcome.is_final() {
            return None;
        }
        if self.json {
            output::print(output::json(&record));
        } else {
            let reason = record.failure.as_deref().unwrap_or("");
            output::print(format!(
                "deployment {} (seen in the history) {reason}",
                record.outcome.as_str()
            ));
        }
        Some(Finished {
            outcome: record.outcome,
            reason: record.failure,
        })
    }

    fn end(&self, finished: Finished) -> Result<()> {
        match finished.outcome {
            Outcome::Completed => Ok(()),
            outcome => Err(Error::DeploymentFailed {
                deployment_id: self.deployment_id.to_owned(),
                outcome: outcome.as_str(),
                reason: finished
                    .reason
                    .unwrap_or_else(|| "no reason recorded".to_owned()),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mentat_domain::event::ExitStatus;
    use mentat_domain::{Meta, Strategy};

    fn env(event: Event) -> EventEnvelope {
        EventEnvelope {
            id: "e".into(),
            position: 1,
            stream: "web".into(),
            version: 1,
            schema_version: 1,
            recorded_at_ms: 0,
            meta: Meta::default(),
            event,
        }
    }

    fn started(id: &str) -> Event {
        Event::DeploymentStarted {
            deployment_id: id.into(),
            service: "web".into(),
            image: "v2".into(),
            previous_image: Some("v1".into()),
            strategy: Strategy::Rolling,
            batch_size: 2,
            replicas: 3,
            auto_revert: true,
            rollback: false,
            at_ms: 0,
        }
    }

    #[test]
    fn follows_its_deployment_and_the_replicas_it_touches() {
        let mut t = Tracker::new("d1", "c1");
        assert!(
            t.observe(&env(started("d0"))).is_none(),
            "another deployment"
        );
        assert!(t.observe(&env(started("d1"))).is_some());
        let batch = Event::BatchStarted {
            deployment_id: "d1".into(),
            batch: 1,
            image: "v2".into(),
            start: vec!["web-4".into()],
            replace: vec!["web-1".into()],
            deadline_ms: 0,
        };
        let (line, _) = t.observe(&env(batch)).expect("ours");
        assert_eq!(
            line.as_deref(),
            Some("batch 1/2 started: starting web-4; replacing web-1")
        );
        let healthy = |r: &str| {
            env(Event::ReplicaHealthy {
                replica: r.into(),
                service: "web".into(),
            })
        };
        assert!(t.observe(&healthy("web-4")).is_some());
        assert!(t.observe(&healthy("web-9")).is_none(), "not touched by d1");
        let mut correlated = healthy("web-7");
        correlated.meta.correlation_id = Some("d1".into());
        assert!(t.observe(&correlated).is_some());
    }

    #[test]
    fn ends_on_completion_revert_or_failure_of_its_own_deployment() {
        let mut t = Tracker::new("d1", "c1");
        let done = |id: &str| {
            env(Event::DeploymentCompleted {
                deployment_id: id.into(),
                at_ms: 0,
            })
        };
        assert!(t.observe(&done("d0")).is_none());
        let (_, finished) = t.observe(&done("d1")).expect("ours");
        assert_eq!(finished.map(|f| f.outcome), Some(Outcome::Completed));
        let reverted = env(Event::DeploymentReverted {
            deployment_id: "d1".into(),
            reason: "web-4 unhealthy".into(),
            at_ms: 0,
        });
        let (_, finished) = t.observe(&reverted).expect("ours");
        let finished = finished.expect("final");
        assert_eq!(finished.outcome, Outcome::Reverted);
        assert_eq!(finished.reason.as_deref(), Some("web-4 unhealthy"));
        let exited = env(Event::ReplicaExited {
            replica: "web-4".into(),
            service: "web".into(),
            host: "h".into(),
            status: ExitStatus {
                code: Some(1),
                signal: None,
            },
            requested: false,
        });
        assert!(
            t.observe(&exited).is_none(),
            "web-4 was never part of d1 here"
        );
    }
}
