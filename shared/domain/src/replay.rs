//! Every decision of the planner taken again from the log alone, and
//! compared with what the log holds (`mt audit replay`).
//!
//! The planner records on the first event of each decision it appends
//! ([`Meta::decided`](crate::event::Meta)) what the log does not otherwise
//! hold of its inputs: the time it decided at, the position of what caused
//! it, how many events the decision appended, and which function of the
//! core decided with what ([`DecidedBy`]: the command itself and the id it
//! was given, the ids a rollout took). Everything else a decision depends
//! on is in the log already: the world folded from the events before it,
//! the facts and observations (hosts and routers joining or going silent,
//! leadership), and the planner's settings, recorded by every leader in
//! its `PlannerLeaderElected`.
//!
//! [`Replay`] folds the log from an empty world, one event at a time, and
//! at the first event of each decision gives the pure core the world as
//! the log stood just before it and the recorded inputs, then compares
//! what the core decides now, event by event, with the events of the
//! decision in the log. It stops at the first [`Divergence`]. An event
//! the planner decides ([`Event::is_decision`]) that belongs to no
//! recorded decision is a divergence too: the log holds a decision nobody
//! can take again.
//!
//! What this does not check: a command the planner rejected (rejections
//! are answered, not recorded), and a decision the planner would take now
//! at a moment the log holds none.
//!
//! Memory: the world and the events of the decision being compared; one
//! pass, so a log of any length replays in the space of its world.

use std::panic::{catch_unwind, AssertUnwindSafe};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::command::{Command, RejectKind};
use crate::event::{Event, EventEnvelope, CLUSTER_STREAM};
use crate::planner::{self, Append, Decision, Settings, World};
use crate::{release, rollout};

/// How one decision was taken: recorded on its first event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Decided {
    /// The time the planner decided at (ms since the epoch): the `now` the
    /// core was given.
    pub at_ms: i64,
    /// The position of the recorded input that led to the decision: the
    /// fact, the host or router observed, the first event of the command's
    /// decision, the leader's election at start. None for a command (the
    /// command is in [`DecidedBy::Command`]) and for a deadline passing
    /// (the time alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<i64>,
    /// How many events the decision appended: this one and the ones that
    /// follow it in the log (one transaction, consecutive positions).
    pub events: u32,
    /// Which function of the core decided, with what.
    #[serde(flatten)]
    pub by: DecidedBy,
}

/// Which function of the pure core took a decision, with the inputs the
/// log holds nowhere else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum DecidedBy {
    /// [`planner::handle`] on this command, accepted, given `id` for the
    /// deployment or rollout it may start.
    Command {
        /// The command as the planner decided on it.
        command: Box<Command>,
        /// The id it was given.
        id: String,
    },
    /// [`planner::react`] for the service whose stream the decision's
    /// first event is in.
    React,
    /// [`planner::react_cluster`]: a hold on re-placement, or its end.
    Cluster,
    /// [`rollout::react`], with the ids it took, in order.
    Rollout {
        /// Ids handed out for the deployments it started.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ids: Vec<String>,
    },
    /// [`release::react`]: a release deployment's step (its members'
    /// deployments, the switch, a turn back).
    Release,
}

impl DecidedBy {
    /// How a person names it: `deploy`, `react`, `cluster`, `rollout`, `release`.
    pub fn name(&self) -> &'static str {
        match self {
            DecidedBy::Command { command, .. } => command.verb(),
            DecidedBy::React => "react",
            DecidedBy::Cluster => "cluster",
            DecidedBy::Rollout { .. } => "rollout",
            DecidedBy::Release => "release",
        }
    }
}

/// What to replay, and with what.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Config {
    /// Compare the decisions that begin at this position or later (the
    /// log before it is folded all the same).
    pub from: i64,
    /// Stop after this position (a decision begun by then is compared
    /// whole).
    pub to: Option<i64>,
    /// Decide with these settings instead of those each leader recorded:
    /// how the decisions would change with another default.
    pub settings: Option<Settings>,
}

/// The longest drain timeout a replay may be asked to decide with: a day.
pub const MAX_DRAIN_TIMEOUT_MS: i64 = 86_400_000;

/// `mentat.query.audit_replay`: the planner replays its own log
/// ([`Replay`]) and answers with the [`ReplayReport`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditReplayQuery {
    /// Compare the decisions from this position on (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<i64>,
    /// Stop after this position (default: the head).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<i64>,
    /// Decide with this drain timeout (ms, at most
    /// [`MAX_DRAIN_TIMEOUT_MS`]) instead of the one each leader recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout_ms: Option<i64>,
}

impl AuditReplayQuery {
    /// What to replay, or why the query is out of bounds (naming the field).
    pub fn config(&self) -> Result<Config, String> {
        let from = self.from.unwrap_or(1);
        if from < 1 {
            return Err(format!("from: {from} is not a position (1 or more)"));
        }
        if let Some(to) = self.to.filter(|to| *to < 1) {
            return Err(format!("to: {to} is not a position (1 or more)"));
        }
        let settings = match self.drain_timeout_ms {
            Some(ms) if !(0..=MAX_DRAIN_TIMEOUT_MS).contains(&ms) => {
                return Err(format!(
                    "drain_timeout_ms: {ms} is out of 0..={MAX_DRAIN_TIMEOUT_MS}"
                ))
            }
            Some(ms) => Some(Settings {
                drain_timeout_ms: ms,
            }),
            None => None,
        };
        Ok(Config {
            from,
            to: self.to,
            settings,
        })
    }
}

/// Reply to `mentat.query.audit_replay`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum AuditReplayReply {
    /// The log was replayed: the report says whether a decision diverged.
    Ok {
        /// What the replay found.
        report: ReplayReport,
    },
    /// Not replayed: the query is invalid (`invalid`), the planner is
    /// replaying already or cannot read its log (`unavailable`), or an
    /// event does not decode (`service_broken`).
    Rejected {
        /// What kind of refusal.
        kind: RejectKind,
        /// Why.
        reason: String,
    },
}

/// An event and the stream it is in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Placed {
    /// The stream.
    pub stream: String,
    /// The event.
    pub event: Event,
}

/// The planner rejects now a command it accepted then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RejectedNow {
    /// The kind of rejection.
    pub kind: RejectKind,
    /// Why.
    pub reason: String,
}

/// The first decision the planner takes differently now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Divergence {
    /// The position of the first event that differs (or, when the log's
    /// decision ends before the one taken now, where the next would be).
    pub position: i64,
    /// The position of the decision's first event.
    pub decision: i64,
    /// How the decision was recorded; none when the log holds a decided
    /// event outside any recorded decision.
    pub decided: Option<Decided>,
    /// What the log holds at `position` within the decision (none: the
    /// decision ends before it).
    pub logged: Option<Placed>,
    /// What the planner decides now there (none: nothing more).
    pub now: Option<Placed>,
    /// The planner now rejects the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<RejectedNow>,
    /// The core panicked deciding now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub panicked: Option<String>,
}

/// What a replay found (`mt audit replay --json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReplayReport {
    /// The first position compared from.
    pub from: i64,
    /// The last position read (0 for an empty log).
    pub to: i64,
    /// Events read.
    pub events: u64,
    /// Decisions taken again and compared.
    pub decisions: u64,
    /// Events whose fold panicked (left as the fold left them, as the
    /// planner leaves a broken stream).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unfolded: u64,
    /// The first divergence; none when every decision is taken the same.
    pub divergence: Option<Box<Divergence>>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What the core decides now for the decision being compared.
struct Pending {
    /// Position of its first event.
    start: i64,
    decided: Decided,
    /// Events the log holds for it still to come.
    remaining: u32,
    /// Index of the next one.
    next: usize,
    now: Vec<Placed>,
    rejected: Option<RejectedNow>,
    panicked: Option<String>,
}

/// A replay in progress: feed it the log in order ([`Replay::feed`]), then
/// take its [`ReplayReport`].
pub struct Replay {
    config: Config,
    world: World,
    /// The settings the last leader recorded.
    recorded: Settings,
    pending: Option<Pending>,
    /// The last position of a decision begun before [`Config::from`],
    /// which is not compared.
    skip_until: i64,
    report: ReplayReport,
}

impl Replay {
    /// A replay from an empty world.
    pub fn new(config: Config) -> Self {
        Replay {
            config,
            world: World::default(),
            recorded: Settings::default(),
            pending: None,
            skip_until: 0,
            report: ReplayReport {
                from: config.from.max(1),
                to: 0,
                events: 0,
                decisions: 0,
                unfolded: 0,
                divergence: None,
            },
        }
    }

    /// Whether to feed more: false once a divergence is found, or past
    /// [`Config::to`] with no decision left half compared.
    pub fn wants_more(&self) -> bool {
        self.report.divergence.is_none()
            && (self.pending.is_some() || self.config.to.is_none_or(|to| self.report.to < to))
    }

    /// Take the next event of the log (in position order): compare it when
    /// it is part of a decision, then fold it.
    pub fn feed(&mut self, e: &EventEnvelope) {
        if !self.wants_more() {
            return;
        }
        self.report.events += 1;
        self.report.to = e.position;
        let check = e.position >= self.report.from;
        if self.pending.is_none() && e.position > self.skip_until {
            match &e.meta.decided {
                Some(decided) if check => self.begin(e, decided),
                Some(decided) => self.skip_until = e.position + i64::from(decided.events) - 1,
                None if check && e.event.is_decision() => {
                    self.report.divergence = Some(Box::new(Divergence {
                        position: e.position,
                        decision: e.position,
                        decided: None,
                        logged: Some(placed(e)),
                        now: None,
                        rejected: None,
                        panicked: None,
                    }));
                }
                _ => {}
            }
        }
        if let Some(pending) = &mut self.pending {
            if let Some(divergence) = pending.compare(e) {
                self.report.divergence = Some(Box::new(divergence));
            }
            if pending.remaining == 0 {
                self.pending = None;
            }
        }
        if let Event::PlannerLeaderElected {
            settings: Some(s), ..
        } = &e.event
        {
            self.recorded = *s;
        }
        if catch_unwind(AssertUnwindSafe(|| self.world.apply(e))).is_err() {
            self.world.position = e.position;
            self.report.unfolded += 1;
        }
    }

    /// The report; a log that ends inside a decision ends it there.
    pub fn finish(mut self) -> ReplayReport {
        if let Some(p) = self.pending.take() {
            if self.report.divergence.is_none() && p.next < p.now.len() {
                let position = p.start + p.next as i64;
                self.report.divergence = Some(Box::new(p.diverged(position, None)));
            }
        }
        self.report
    }

    /// Decide again at the first event of a recorded decision.
    fn begin(&mut self, e: &EventEnvelope, decided: &Decided) {
        self.report.decisions += 1;
        let settings = self.config.settings.unwrap_or(self.recorded);
        let world = &self.world;
        let decided_now = catch_unwind(AssertUnwindSafe(|| {
            decide(world, &e.stream, decided, settings)
        }));
        let (now, rejected, panicked) = match decided_now {
            Ok(Ok(now)) => (now, None, None),
            Ok(Err(rejected)) => (Vec::new(), Some(rejected), None),
            Err(panic) => (Vec::new(), None, Some(panic_message(&panic))),
        };
        self.pending = Some(Pending {
            start: e.position,
            decided: decided.clone(),
            remaining: decided.events.max(1),
            next: 0,
            now,
            rejected,
            panicked,
        });
    }
}

impl Pending {
    /// Compare the log's next event of this decision with the one decided
    /// now; at its last, whether the core decides more now.
    fn compare(&mut self, e: &EventEnvelope) -> Option<Divergence> {
        let i = self.next;
        self.next += 1;
        self.remaining -= 1;
        let same = self
            .now
            .get(i)
            .is_some_and(|p| p.stream == e.stream && p.event == e.event);
        if !same {
            return Some(self.diverged(e.position, Some(placed(e))));
        }
        if self.remaining == 0 && self.next < self.now.len() {
            return Some(self.diverged(e.position + 1, None));
        }
        None
    }

    fn diverged(&self, position: i64, logged: Option<Placed>) -> Divergence {
        let index = (position - self.start) as usize;
        Divergence {
            position,
            decision: self.start,
            decided: Some(self.decided.clone()),
            logged,
            now: self.now.get(index).cloned(),
            rejected: self.rejected.clone(),
            panicked: self.panicked.clone(),
        }
    }
}

/// Replay `events` (in position order) with `config`.
pub fn replay<'a>(
    events: impl IntoIterator<Item = &'a EventEnvelope>,
    config: Config,
) -> ReplayReport {
    let mut replay = Replay::new(config);
    for e in events {
        if !replay.wants_more() {
            break;
        }
        replay.feed(e);
    }
    replay.finish()
}

/// What the core decides now, given the world just before the decision
/// and its recorded inputs: the events, in order, with their streams.
fn decide(
    world: &World,
    stream: &str,
    decided: &Decided,
    settings: Settings,
) -> Result<Vec<Placed>, RejectedNow> {
    let at = decided.at_ms;
    let appends = match &decided.by {
        DecidedBy::Command { command, id } => match planner::handle(world, command, id, at) {
            Decision::Accept { appends, .. } => appends,
            Decision::Reject(r) => {
                return Err(RejectedNow {
                    kind: r.kind,
                    reason: r.reason,
                })
            }
        },
        DecidedBy::React => vec![Append {
            stream: stream.to_owned(),
            events: planner::react(world, stream, at, settings),
        }],
        DecidedBy::Cluster => planner::react_cluster(world)
            .into_iter()
            .map(|event| Append {
                stream: event.stream().unwrap_or_else(|| CLUSTER_STREAM.to_owned()),
                events: vec![event],
            })
            .collect(),
        DecidedBy::Rollout { ids } => {
            let mut ids = ids.iter();
            rollout::react(world, at, &mut || ids.next().cloned().unwrap_or_default())
        }
        DecidedBy::Release => release::react(world, at, settings),
    };
    Ok(appends
        .into_iter()
        .flat_map(|a| {
            let stream = a.stream;
            a.events.into_iter().map(move |event| Placed {
                stream: stream.clone(),
                event,
            })
        })
        .collect())
}

fn placed(e: &EventEnvelope) -> Placed {
    Placed {
        stream: e.stream.clone(),
        event: e.event.clone(),
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned())
}
