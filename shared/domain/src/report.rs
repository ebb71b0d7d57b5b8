//! `mt audit report`: who did what, when, why and with what result over a
//! window of the log, and per service the four figures of delivery:
//! deployment frequency, change failure rate, time to restore and median
//! deployment duration. A pure function of the events and the window.
//!
//! - An *action* is one command as recorded: the events of one decision
//!   that carry an actor (every command `mt` sends does), appended
//!   together (same metadata, same time); it is shown once, by its first
//!   event. Its result is the outcome of the deployment it belongs to,
//!   when it belongs to one.
//! - The figures count the deployments *started* in the window (rollbacks
//!   included: they are deployments too).
//! - Change failure rate: reverted or failed, over those that ended.
//! - Time to restore: from the end of a reverted or failed deployment to
//!   the end of the next completed one of the service (once per run of
//!   failures: the first failure starts the clock); the median.
//! - Deployment duration: start to end of every deployment that ended,
//!   whatever its outcome; the median.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::command::Outcome;
use crate::event::{Event, EventEnvelope};

/// What to report on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Window {
    /// From (ms since epoch, included).
    pub since_ms: i64,
    /// To (ms since epoch, included): now.
    pub until_ms: i64,
    /// Only actions by this actor, and deployments started by them.
    pub actor: Option<String>,
    /// Only this service.
    pub service: Option<String>,
}

/// One command as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    /// Position of its first event.
    pub position: i64,
    /// When (ms since epoch).
    pub at_ms: i64,
    /// Who.
    pub actor: String,
    /// The stream it was appended to (the service, mostly).
    pub service: String,
    /// What: the type of its first event (`DeploymentStarted`, ...).
    pub what: String,
    /// Why, in the actor's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The deployment it started or steered, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    /// That deployment's outcome (as of the end of the log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Outcome>,
}

/// One service's figures over the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// Service.
    pub service: String,
    /// Deployments started in the window.
    pub deployments: u32,
    /// Deployments per day over the window.
    pub per_day: f64,
    /// Of those, how many completed, were reverted, failed, or are still in
    /// flight.
    pub completed: u32,
    /// See `completed`.
    pub reverted: u32,
    /// See `completed`.
    pub failed: u32,
    /// See `completed`.
    pub in_progress: u32,
    /// Reverted or failed over ended, in percent; none when none ended.
    pub change_failure_rate_percent: Option<f64>,
    /// Median time to restore (ms), over `restores` restorations.
    pub time_to_restore_ms: Option<i64>,
    /// How many restorations the median is over.
    pub restores: u32,
    /// Median duration of the deployments that ended (ms).
    pub median_duration_ms: Option<i64>,
}

/// The report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// From (ms since epoch).
    pub since_ms: i64,
    /// To (ms since epoch).
    pub until_ms: i64,
    /// Actions in the window, in log order.
    pub actions: Vec<Action>,
    /// Figures per service, by name.
    pub services: Vec<Figures>,
}

/// A deployment as the report needs it.
#[derive(Debug, Clone)]
struct Run {
    service: String,
    actor: Option<String>,
    started_ms: i64,
    outcome: Outcome,
    ended_ms: Option<i64>,
}

/// The report of `events` (the log in order) over `window`.
pub fn report(events: &[EventEnvelope], window: &Window) -> Report {
    let runs = deployments(events);
    Report {
        since_ms: window.since_ms,
        until_ms: window.until_ms,
        actions: actions(events, &runs, window),
        services: figures(&runs, window),
    }
}

fn in_window(at_ms: i64, window: &Window) -> bool {
    (window.since_ms..=window.until_ms).contains(&at_ms)
}

/// Every deployment of the log, by id, with its outcome.
fn deployments(events: &[EventEnvelope]) -> BTreeMap<String, Run> {
    let mut runs: BTreeMap<String, Run> = BTreeMap::new();
    for env in events {
        if let Event::DeploymentStarted {
            deployment_id,
            service,
            at_ms,
            ..
        } = &env.event
        {
            let run = Run {
                service: service.clone(),
                actor: env.meta.actor.clone(),
                started_ms: *at_ms,
                outcome: Outcome::InProgress,
                ended_ms: None,
            };
            runs.insert(deployment_id.clone(), run);
        } else if let Some((outcome, _, at_ms)) = env.event.ending() {
            let run = env.event.deployment_id().and_then(|id| runs.get_mut(id));
            if let Some(run) = run {
                run.outcome = outcome;
                run.ended_ms = Some(at_ms);
            }
        }
    }
    runs
}

fn actions(events: &[EventEnvelope], runs: &BTreeMap<String, Run>, window: &Window) -> Vec<Action> {
    let mut out: Vec<Action> = Vec::new();
    let mut previous: Option<&EventEnvelope> = None;
    for env in events {
        let same_decision = previous.is_some_and(|p| {
            p.meta == env.meta
                && p.recorded_at_ms == env.recorded_at_ms
                && p.position + 1 == env.position
        });
        previous = Some(env);
        let Some(actor) = &env.meta.actor else {
            continue;
        };
        if same_decision || !in_window(env.recorded_at_ms, window) {
            continue;
        }
        if window.actor.as_ref().is_some_and(|a| a != actor)
            || window.service.as_ref().is_some_and(|s| *s != env.stream)
        {
            continue;
        }
        let deployment_id = env
            .event
            .deployment_id()
            .or(env.meta.correlation_id.as_deref())
            .filter(|id| runs.contains_key(*id))
            .map(str::to_owned);
        out.push(Action {
            position: env.position,
            at_ms: env.recorded_at_ms,
            actor: actor.clone(),
            service: env.stream.clone(),
            what: env.event.type_name().to_owned(),
            reason: env.meta.reason.clone(),
            result: deployment_id
                .as_ref()
                .and_then(|id| runs.get(id))
                .map(|r| r.outcome),
            deployment_id,
        });
    }
    out
}

fn figures(runs: &BTreeMap<String, Run>, window: &Window) -> Vec<Figures> {
    let mut by_service: BTreeMap<&str, Vec<&Run>> = BTreeMap::new();
    for run in runs.values() {
        if window.service.as_ref().is_some_and(|s| *s != run.service) {
            continue;
        }
        by_service.entry(&run.service).or_default().push(run);
    }
    let days = (window.until_ms - window.since_ms).max(1) as f64 / 86_400_000.0;
    by_service
        .into_iter()
        .filter_map(|(service, mut all)| {
            all.sort_by_key(|r| r.started_ms);
            let counted: Vec<&Run> = all
                .iter()
                .copied()
                .filter(|r| in_window(r.started_ms, window))
                .filter(|r| window.actor.is_none() || r.actor == window.actor)
                .collect();
            if counted.is_empty() {
                return None;
            }
            let count = |o: Outcome| counted.iter().filter(|r| r.outcome == o).count() as u32;
            let (completed, reverted, failed) = (
                count(Outcome::Completed),
                count(Outcome::Reverted),
                count(Outcome::Failed),
            );
            let ended = completed + reverted + failed;
            let restores = restores(&all, window);
            let durations: Vec<i64> = counted
                .iter()
                .filter_map(|r| r.ended_ms.map(|end| end - r.started_ms))
                .collect();
            Some(Figures {
                service: service.to_owned(),
                deployments: counted.len() as u32,
                per_day: counted.len() as f64 / days,
                completed,
                reverted,
                failed,
                in_progress: counted.len() as u32 - ended,
                change_failure_rate_percent: (ended > 0)
                    .then(|| f64::from(reverted + failed) * 100.0 / f64::from(ended)),
                time_to_restore_ms: median(restores.clone()),
                restores: restores.len() as u32,
                median_duration_ms: median(durations),
            })
        })
        .collect()
}

/// Times from the first of a run of failed or reverted deployments (ended
/// in the window) to the end of the next completed one, taking every
/// deployment of the service in order of their ends.
fn restores(all: &[&Run], window: &Window) -> Vec<i64> {
    let mut ended: Vec<&&Run> = all.iter().filter(|r| r.ended_ms.is_some()).collect();
    ended.sort_by_key(|r| r.ended_ms);
    let mut out = Vec::new();
    let mut broken_since: Option<i64> = None;
    for run in ended {
        let Some(end) = run.ended_ms else { continue };
        match run.outcome {
            Outcome::Reverted | Outcome::Failed => {
                if broken_since.is_none() && in_window(end, window) {
                    broken_since = Some(end);
                }
            }
            Outcome::Completed => {
                if let Some(since) = broken_since.take() {
                    out.push(end - since);
                }
            }
            Outcome::InProgress | Outcome::Reverting => {}
        }
    }
    out
}

/// The median (the mean of the two middle values of an even count,
/// rounded down); none of nothing.
pub fn median(mut values: Vec<i64>) -> Option<i64> {
    values.sort_unstable();
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]).div_euclid(2)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Meta, Plan};
    use crate::spec::Strategy;

    const MIN: i64 = 60_000;

    /// A log built event by event, positions from 1.
    #[derive(Default)]
    struct Log(Vec<EventEnvelope>);

    impl Log {
        fn push(&mut self, stream: &str, at_ms: i64, meta: Meta, event: Event) {
            let position = self.0.len() as i64 + 1;
            self.0.push(EventEnvelope {
                id: format!("e{position}"),
                position,
                stream: stream.into(),
                version: position,
                schema_version: 1,
                recorded_at_ms: at_ms,
                meta,
                event,
            });
        }

        /// Deployment `id` of `service` by `actor` from `start` to `end`
        /// (minutes) ending as `outcome` (`None`: still in flight).
        fn deployment(
            &mut self,
            service: &str,
            id: &str,
            actor: &str,
            start: i64,
            end: i64,
            outcome: Option<Outcome>,
        ) {
            let meta = Meta {
                actor: Some(actor.into()),
                reason: Some(format!("ship {id}")),
                correlation_id: Some(id.into()),
                ..Meta::default()
            };
            let started = Event::DeploymentStarted {
                deployment_id: id.into(),
                service: service.into(),
                image: id.into(),
                previous_image: None,
                strategy: Strategy::Rolling,
                batch_size: 1,
                replicas: 1,
                auto_revert: true,
                rollback: false,
                at_ms: start * MIN,
                plan: Plan::default(),
            };
            self.push(service, start * MIN, meta.clone(), started);
            // The rest of the command's decision: not another action.
            let batch = Event::BatchStarted {
                deployment_id: id.into(),
                batch: 1,
                image: id.into(),
                start: vec![],
                replace: vec![],
                deadline_ms: 0,
            };
            self.push(service, start * MIN, meta, batch);
            let (deployment_id, at_ms, reason) = (id.to_owned(), end * MIN, "broke".to_owned());
            let ending = match outcome {
                None => return,
                Some(Outcome::Completed) => Event::DeploymentCompleted {
                    deployment_id,
                    at_ms,
                },
                Some(Outcome::Reverted) => Event::DeploymentReverted {
                    deployment_id,
                    reason,
                    at_ms,
                },
                Some(_) => Event::DeploymentFailed {
                    deployment_id,
                    reason,
                    at_ms,
                },
            };
            self.push(service, end * MIN, Meta::default(), ending);
        }
    }

    /// web: d1 completed (0-10), d2 reverted (20-24), d3 failed (30-31),
    /// d4 completed (40-50), d5 in flight (60-); api: a1 completed by bob
    /// (5-7). A day's window.
    fn known_log() -> Vec<EventEnvelope> {
        let mut log = Log::default();
        log.deployment("web", "d1", "ana", 0, 10, Some(Outcome::Completed));
        log.deployment("api", "a1", "bob", 5, 7, Some(Outcome::Completed));
        log.deployment("web", "d2", "ana", 20, 24, Some(Outcome::Reverted));
        log.deployment("web", "d3", "bob", 30, 31, Some(Outcome::Failed));
        log.deployment("web", "d4", "ana", 40, 50, Some(Outcome::Completed));
        log.deployment("web", "d5", "ana", 60, 0, None);
        log.0
    }

    fn day() -> Window {
        Window {
            since_ms: 0,
            until_ms: 24 * 60 * MIN,
            ..Window::default()
        }
    }

    #[test]
    fn a_known_log_gives_known_figures() {
        let report = report(&known_log(), &day());
        let [api, web] = report.services.as_slice() else {
            panic!("{report:#?}");
        };
        assert_eq!(api.service, "api");
        assert_eq!((api.deployments, api.completed), (1, 1));
        assert_eq!(api.change_failure_rate_percent, Some(0.0));
        assert_eq!(api.time_to_restore_ms, None);
        assert_eq!(api.median_duration_ms, Some(2 * MIN));

        assert_eq!(web.service, "web");
        assert_eq!(web.deployments, 5);
        assert_eq!(web.per_day, 5.0);
        assert_eq!(
            (web.completed, web.reverted, web.failed, web.in_progress),
            (2, 1, 1, 1)
        );
        assert_eq!(web.change_failure_rate_percent, Some(50.0));
        // From d2's revert (24) to d4's completion (50), once for d2 and d3.
        assert_eq!((web.time_to_restore_ms, web.restores), (Some(26 * MIN), 1));
        // 10, 4, 1, 10 minutes: the middle two are 4 and 10.
        assert_eq!(web.median_duration_ms, Some(7 * MIN));

        let who: Vec<(&str, &str, Option<Outcome>)> = report
            .actions
            .iter()
            .map(|a| {
                (
                    a.actor.as_str(),
                    a.deployment_id.as_deref().unwrap_or("-"),
                    a.result,
                )
            })
            .collect();
        assert_eq!(
            who,
            [
                ("ana", "d1", Some(Outcome::Completed)),
                ("bob", "a1", Some(Outcome::Completed)),
                ("ana", "d2", Some(Outcome::Reverted)),
                ("bob", "d3", Some(Outcome::Failed)),
                ("ana", "d4", Some(Outcome::Completed)),
                ("ana", "d5", Some(Outcome::InProgress)),
            ]
        );
        assert_eq!(report.actions[2].reason.as_deref(), Some("ship d2"));
        assert_eq!(report.actions[2].what, "DeploymentStarted");
        assert_eq!(report.actions[2].at_ms, 20 * MIN);
    }

    #[test]
    fn the_window_the_actor_and_the_service_narrow_the_report() {
        let window = Window {
            since_ms: 15 * MIN,
            until_ms: 24 * 60 * MIN,
            actor: Some("ana".into()),
            service: Some("web".into()),
        };
        let report = report(&known_log(), &window);
        let [web] = report.services.as_slice() else {
            panic!("{report:#?}");
        };
        // d2, d4, d5: ana's since minute 15.
        assert_eq!(web.deployments, 3);
        assert_eq!((web.completed, web.reverted, web.in_progress), (1, 1, 1));
        assert_eq!(web.median_duration_ms, Some(7 * MIN));
        let ids: Vec<&str> = report
            .actions
            .iter()
            .filter_map(|a| a.deployment_id.as_deref())
            .collect();
        assert_eq!(ids, ["d2", "d4", "d5"]);
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3, 1, 2]), Some(2));
        assert_eq!(median(vec![4, 1, 10, 10]), Some(7));
    }
}
