//! What one deployment's events mean for the person following it: which
//! events are its own, the progress line of each, and the milestones where
//! following stops (the end, or a wait for an operator).

use mentat_domain::command::Outcome;
use mentat_domain::story::Membership;
use mentat_domain::{Event, EventEnvelope, Strategy};

use crate::output::{self, Known, Waiting};

/// How a followed deployment ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// Completed, reverted or failed.
    pub outcome: Outcome,
    /// Why it did not complete.
    pub reason: Option<String>,
}

/// A point of a deployment where following it may stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Milestone {
    /// It waits for an operator (`mt deploy` returns unless `--wait`).
    Waiting(Waiting),
    /// It ended.
    Ended(Finished),
}

/// One event of the deployment, as the person following it sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Its progress line, if it deserves one.
    pub line: Option<String>,
    /// Where it leaves the deployment, when following may stop there.
    pub milestone: Option<Milestone>,
}

/// Said when a deployment that waited for a router goes on.
const ROUTER_BACK: &str = "a router is live again";

/// What one deployment's events mean for the person following it.
#[derive(Debug)]
pub struct Tracker {
    members: Membership,
    known: Known,
    strategy: Option<Strategy>,
    promoted: bool,
    reverting: bool,
    started: bool,
    waiting_for_router: bool,
}

impl Tracker {
    /// Follow deployment `deployment_id` of `service`, started (or steered)
    /// by command `command_id`.
    pub fn new(service: &str, deployment_id: &str, command_id: &str) -> Self {
        Self {
            members: Membership::new(service, deployment_id, Some(command_id)),
            known: Known::new(service),
            strategy: None,
            promoted: false,
            reverting: false,
            started: false,
            waiting_for_router: false,
        }
    }

    /// What to print when the deployment's `waiting_for_router` (from a
    /// poll of the history) is `now`: a line when it starts or stops
    /// waiting for a router, nothing while it stays the same.
    pub fn router_wait(&mut self, now: bool) -> Option<&'static str> {
        let was = std::mem::replace(&mut self.waiting_for_router, now);
        match (was, now) {
            (false, true) => Some(
                "waiting for a router: none is live; the deployment goes on when one joins, \
                 or its phase deadline decides",
            ),
            (true, false) => Some(ROUTER_BACK),
            _ => None,
        }
    }

    /// The deployment moved (an event of it came): if it was waiting for a
    /// router, one is live again.
    pub fn moved(&mut self) -> Option<&'static str> {
        std::mem::take(&mut self.waiting_for_router).then_some(ROUTER_BACK)
    }

    /// True once the deployment's `DeploymentStarted` was seen: it began
    /// while followed, rather than being joined in flight.
    pub fn saw_start(&self) -> bool {
        self.started
    }

    /// What is known of the deployment so far.
    pub fn known(&self) -> &Known {
        &self.known
    }

    /// `None` when the event is not about this deployment (the domain's
    /// [`Membership`] decides, as it does for `mt audit why`).
    pub fn observe(&mut self, env: &EventEnvelope) -> Option<Observed> {
        if !self.members.admits(env) {
            return None;
        }
        self.learn(&env.event);
        Some(Observed {
            line: output::progress(&env.event, &self.known),
            milestone: milestone(&env.event),
        })
    }

    fn learn(&mut self, event: &Event) {
        match event {
            Event::DeploymentStarted {
                image,
                previous_image,
                strategy,
                batch_size,
                replicas,
                plan,
                ..
            } => {
                self.started = true;
                self.strategy = Some(*strategy);
                self.known.image = Some(image.clone());
                self.known.previous_image.clone_from(previous_image);
                self.known.bake_secs = (plan.bake_secs > 0).then_some(plan.bake_secs);
                match strategy {
                    // The canary's batch comes before the rolling ones.
                    Strategy::Canary => {
                        self.known.steps = Some(plan.steps.len().max(1) as u32);
                    }
                    // One batch starts the whole green set.
                    Strategy::BlueGreen => self.known.batches = Some(1),
                    Strategy::Rolling => {
                        self.known.batches = Some(replicas.div_ceil((*batch_size).max(1)))
                    }
                }
            }
            Event::BatchStarted {
                batch,
                start,
                replace,
                ..
            } => {
                let canary = self.strategy == Some(Strategy::Canary)
                    && !self.promoted
                    && *batch == 1
                    && replace.is_empty();
                if canary {
                    self.known.canary.clone_from(start);
                }
                // A revert retires the deployment's own new replicas.
                if !self.reverting {
                    self.known.old.extend(replace.iter().cloned());
                }
            }
            Event::CanaryPromoted { .. } => self.promoted = true,
            Event::DeploymentReverting { .. } => {
                self.reverting = true;
                // The count of batches back is not known in advance.
                self.known.batches = None;
                self.known.old.clear();
            }
            _ => {}
        }
    }
}

/// Where `event` leaves its deployment, when following may stop there.
fn milestone(event: &Event) -> Option<Milestone> {
    let ended = |outcome, reason: Option<&String>| {
        Some(Milestone::Ended(Finished {
            outcome,
            reason: reason.cloned(),
        }))
    };
    let waiting = |w| Some(Milestone::Waiting(w));
    match event {
        Event::DeploymentCompleted { .. } => ended(Outcome::Completed, None),
        Event::DeploymentReverted { reason, .. } => ended(Outcome::Reverted, Some(reason)),
        Event::DeploymentFailed { reason, .. } => ended(Outcome::Failed, Some(reason)),
        Event::TrafficShifted {
            percent,
            bake_secs: 0,
            ..
        } => waiting(Waiting::Canary { percent: *percent }),
        Event::TrafficSwitched {
            standby_until_ms, ..
        } => waiting(Waiting::Standby {
            until_ms: *standby_until_ms,
        }),
        Event::DeploymentPaused { reason, .. } => waiting(Waiting::Paused {
            reason: reason.clone(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mentat_domain::event::{ExitStatus, Plan};
    use mentat_domain::spec::CanaryStep;
    use mentat_domain::Meta;

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

    fn started(id: &str, strategy: Strategy, plan: Plan) -> Event {
        Event::DeploymentStarted {
            deployment_id: id.into(),
            service: "web".into(),
            image: "v2".into(),
            previous_image: Some("v1".into()),
            strategy,
            batch_size: 2,
            replicas: 3,
            auto_revert: true,
            rollback: false,
            at_ms: 0,
            plan,
        }
    }

    fn rolling(id: &str) -> Event {
        started(id, Strategy::Rolling, Plan::default())
    }

    fn batch(batch: u32, start: &str, replace: &[&str]) -> Event {
        Event::BatchStarted {
            deployment_id: "d1".into(),
            batch,
            image: "v2".into(),
            start: vec![start.into()],
            replace: replace.iter().map(|r| (*r).to_owned()).collect(),
            deadline_ms: 0,
        }
    }

    #[test]
    fn follows_its_deployment_and_the_replicas_it_touches() {
        let mut t = Tracker::new("web", "d1", "c1");
        assert!(
            t.observe(&env(rolling("d0"))).is_none(),
            "another deployment"
        );
        assert!(t.observe(&env(rolling("d1"))).is_some());
        assert!(t.saw_start());
        let seen = t
            .observe(&env(batch(1, "web-4", &["web-1"])))
            .expect("ours");
        assert_eq!(
            seen.line.as_deref(),
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
        let mut t = Tracker::new("web", "d1", "c1");
        let done = |id: &str| {
            env(Event::DeploymentCompleted {
                deployment_id: id.into(),
                at_ms: 0,
            })
        };
        assert!(t.observe(&done("d0")).is_none());
        let seen = t.observe(&done("d1")).expect("ours");
        assert!(matches!(
            seen.milestone,
            Some(Milestone::Ended(Finished {
                outcome: Outcome::Completed,
                ..
            }))
        ));
        let reverted = env(Event::DeploymentReverted {
            deployment_id: "d1".into(),
            reason: "web-4 unhealthy".into(),
            at_ms: 0,
        });
        let seen = t.observe(&reverted).expect("ours");
        assert_eq!(
            seen.milestone,
            Some(Milestone::Ended(Finished {
                outcome: Outcome::Reverted,
                reason: Some("web-4 unhealthy".into()),
            }))
        );
        let exited = env(Event::ReplicaExited {
            replica: "web-4".into(),
            service: "web".into(),
            host: "h".into(),
            status: ExitStatus {
                code: Some(1),
                signal: None,
            },
            requested: false,
            reason: None,
        });
        assert!(
            t.observe(&exited).is_none(),
            "web-4 was never part of d1 here"
        );
    }

    #[test]
    fn a_canary_without_bake_waits_for_an_operator_and_one_with_bake_does_not() {
        let plan = Plan {
            steps: vec![
                CanaryStep {
                    percent: 10,
                    bake_secs: 60,
                },
                CanaryStep {
                    percent: 50,
                    bake_secs: 0,
                },
            ],
            ..Plan::default()
        };
        let mut t = Tracker::new("web", "d1", "c1");
        t.observe(&env(started("d1", Strategy::Canary, plan)));
        let seen = t.observe(&env(batch(1, "web-5", &[]))).expect("ours");
        assert_eq!(
            seen.line.as_deref(),
            Some("batch 1 started: starting web-5")
        );
        let shifted = |step, percent, bake_secs| {
            env(Event::TrafficShifted {
                deployment_id: "d1".into(),
                step,
                percent,
                bake_secs,
            })
        };
        let seen = t.observe(&shifted(1, 10, 60)).expect("ours");
        assert_eq!(
            seen.line.as_deref(),
            Some("canary web-5 at 10% of traffic (step 1 of 2, baking 60s)")
        );
        assert_eq!(seen.milestone, None);
        let seen = t.observe(&shifted(2, 50, 0)).expect("ours");
        assert_eq!(
            seen.milestone,
            Some(Milestone::Waiting(Waiting::Canary { percent: 50 }))
        );
        t.observe(&env(Event::CanaryPromoted {
            deployment_id: "d1".into(),
            automatic: false,
        }));
        t.observe(&env(batch(2, "web-6", &["web-1"])));
        assert_eq!(
            t.known().canary,
            ["web-5"],
            "rolling batches are not canaries"
        );
    }

    #[test]
    fn a_blue_green_standby_and_a_pause_wait_for_an_operator() {
        let mut t = Tracker::new("web", "d1", "c1");
        t.observe(&env(started("d1", Strategy::BlueGreen, Plan::default())));
        let switched = env(Event::TrafficSwitched {
            deployment_id: "d1".into(),
            image: "v2".into(),
            standby_image: Some("v1".into()),
            standby_until_ms: 42,
        });
        assert_eq!(
            t.observe(&switched).and_then(|s| s.milestone),
            Some(Milestone::Waiting(Waiting::Standby { until_ms: 42 }))
        );
        let paused = env(Event::DeploymentPaused {
            deployment_id: "d1".into(),
            reason: "paused by ana".into(),
        });
        assert_eq!(
            t.observe(&paused).and_then(|s| s.milestone),
            Some(Milestone::Waiting(Waiting::Paused {
                reason: "paused by ana".into()
            }))
        );
        let other = env(Event::DeploymentPaused {
            deployment_id: "d0".into(),
            reason: "not ours".into(),
        });
        assert!(t.observe(&other).is_none());
    }
}
