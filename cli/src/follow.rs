//! Following a deployment live: the service's relayed events as they come,
//! with `mentat.query.history` polled as a fallback in case one was missed.

mod tracker;

use std::time::Duration;

use async_nats::{Message, Subscriber};
use futures::StreamExt;
use mentat_bus::codec::{self, Encoding};
use mentat_bus::Bus;
use mentat_domain::command::{HistoryReply, Outcome};
use mentat_domain::EventEnvelope;

use crate::client;
use crate::error::{Error, Result};
use crate::output::{self, Waiting};

pub use tracker::{Finished, Milestone, Tracker};

/// How often the history is polled while following.
const POLL_EVERY: Duration = Duration::from_secs(3);
/// How long one poll may take.
const POLL_TIMEOUT: Duration = Duration::from_secs(2);

/// What the command being followed asked for, and so which end is a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// `mt deploy`, `mt promote`: completion; a revert or a failure exits 1.
    Complete,
    /// `mt abort`: the revert it asked for; only a failure exits 1.
    Revert,
    /// `mt rollback`: the completion of the rollback deployment it started,
    /// or, when it joined a deployment in flight, that deployment's revert.
    Rollback,
}

impl Goal {
    /// Whether ending with `outcome` is what was asked; `saw_start` tells a
    /// deployment started by the command from one it joined in flight.
    pub fn reached(self, outcome: Outcome, saw_start: bool) -> bool {
        let revert_asked = match self {
            Goal::Complete => false,
            Goal::Revert => true,
            Goal::Rollback => !saw_start,
        };
        match outcome {
            Outcome::Completed => true,
            Outcome::Reverted => revert_asked,
            Outcome::InProgress | Outcome::Reverting | Outcome::Failed => false,
        }
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
    /// Which end counts as a success.
    pub goal: Goal,
    /// Follow through the points where the deployment waits for an
    /// operator, to its end, instead of returning there.
    pub wait: bool,
    /// Give up after this long.
    pub timeout: Duration,
    /// Print events as JSON lines instead of progress lines.
    pub json: bool,
}

impl Follow<'_> {
    /// Print the deployment's progress until it ends, or until it waits for
    /// an operator (unless [`Follow::wait`]); `Ok` when it reached the goal
    /// or waits. `events` must have been subscribed before the command was sent.
    pub async fn run(&self, bus: &Bus, mut events: Subscriber) -> Result<()> {
        let mut tracker = Tracker::new(self.service, self.deployment_id, self.command_id);
        let deadline = tokio::time::sleep(self.timeout);
        tokio::pin!(deadline);
        let mut poll = tokio::time::interval(POLL_EVERY);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut live = true;
        loop {
            let milestone = tokio::select! {
                msg = events.next(), if live => match msg {
                    Some(msg) => self.on_message(&mut tracker, &msg),
                    None => {
                        live = false;
                        eprintln!("mt: live events stopped; polling the history instead");
                        None
                    }
                },
                _ = poll.tick() => self.poll(bus, &mut tracker).await,
                () = &mut deadline => {
                    return Err(Error::WaitTimedOut {
                        deployment_id: self.deployment_id.to_owned(),
                        service: self.service.to_owned(),
                        secs: self.timeout.as_secs(),
                    })
                }
            };
            match milestone {
                Some(Milestone::Ended(finished)) => return self.end(finished, &tracker),
                Some(Milestone::Waiting(waiting)) if !self.wait => {
                    if !self.json {
                        output::print(output::next_steps(&waiting, tracker.known()));
                    }
                    return Ok(());
                }
                Some(Milestone::Waiting(_)) | None => {}
            }
        }
    }

    fn on_message(&self, tracker: &mut Tracker, msg: &Message) -> Option<Milestone> {
        let encoding = Encoding::of(msg.headers.as_ref());
        let env: EventEnvelope = match codec::decode(&msg.payload, encoding, "EventEnvelope") {
            Ok(env) => env,
            Err(e) => {
                tracing::debug!(subject = %msg.subject, error = %e, "skipping undecodable event");
                return None;
            }
        };
        let seen = tracker.observe(&env)?;
        if self.json {
            output::print(output::json(&env));
        } else if let Some(line) = seen.line {
            if let Some(back) = tracker.moved() {
                output::print(format!("{}  {back}", output::clock(env.recorded_at_ms)));
            }
            output::print(format!("{}  {line}", output::clock(env.recorded_at_ms)));
        }
        seen.milestone
    }

    /// Look the deployment up in the history; `Some` once it has ended, or
    /// when it is paused (a missed `DeploymentPaused`).
    async fn poll(&self, bus: &Bus, tracker: &mut Tracker) -> Option<Milestone> {
        let reply = client::history(bus, self.service, false, POLL_TIMEOUT).await;
        let HistoryReply::Ok { deployments, .. } = reply.ok()? else {
            return None;
        };
        let record = deployments
            .into_iter()
            .find(|d| d.deployment_id == self.deployment_id)?;
        if !record.outcome.is_final() {
            if let Some(line) = tracker.router_wait(record.waiting_for_router) {
                if !self.json {
                    output::print(format!("{}  {line}", output::clock(mentat_bus::now_ms())));
                }
            }
            // Only for a deployment this command started: one joined in
            // flight (mt abort) may still show the pause it is taken out of.
            if self.wait || !tracker.saw_start() {
                return None;
            }
            let reason = record.paused.clone()?;
            if self.json {
                output::print(output::json(&record));
            } else {
                output::print(format!("deployment paused (seen in the history): {reason}"));
            }
            return Some(Milestone::Waiting(Waiting::Paused { reason }));
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
        Some(Milestone::Ended(Finished {
            outcome: record.outcome,
            reason: record.failure,
        }))
    }

    fn end(&self, finished: Finished, tracker: &Tracker) -> Result<()> {
        if self.goal.reached(finished.outcome, tracker.saw_start()) {
            return Ok(());
        }
        Err(Error::DeploymentFailed {
            deployment_id: self.deployment_id.to_owned(),
            outcome: finished.outcome.as_str(),
            reason: finished
                .reason
                .unwrap_or_else(|| "no reason recorded".to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_command_succeeds_on_the_end_it_asked_for() {
        use Outcome::{Completed, Failed, Reverted};
        assert!(Goal::Complete.reached(Completed, true));
        assert!(!Goal::Complete.reached(Reverted, true));
        assert!(!Goal::Complete.reached(Failed, true));
        assert!(Goal::Revert.reached(Reverted, false));
        assert!(!Goal::Revert.reached(Failed, false));
        assert!(
            Goal::Rollback.reached(Completed, true),
            "a rollback deployment completed"
        );
        assert!(
            !Goal::Rollback.reached(Reverted, true),
            "the rollback deployment itself was reverted"
        );
        assert!(
            Goal::Rollback.reached(Reverted, false),
            "the deployment in flight was rolled back"
        );
    }
}
