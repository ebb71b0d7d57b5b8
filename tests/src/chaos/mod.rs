//! The chaos suite: for each strategy, kill one component with SIGKILL at
//! one step of a deployment, start it again, and check that nothing was
//! lost or left half-way.
//!
//! A [`Scenario`] is a strategy ([`Rollout`]), a [`Step`] of its deployment
//! and a [`Component`]. [`run`] plays one on a fresh [`Cluster`](crate::Cluster)
//! with a private PostgreSQL ([`Db::PrivatePostgres`](crate::Db)) and a
//! client sending requests through the router without pause:
//!
//! 1. deploy `v1` (rolling), then deploy `v2` with the scenario's strategy;
//!    for [`Step::Revert`], abort it once it has moved forward;
//! 2. wait for the step, read from the events the planner publishes (its
//!    relay to `MENTAT_EVENTS`) and from the answers the client gets —
//!    never from a sleep;
//! 3. SIGKILL the component, leave it down for [`DOWN`] (PostgreSQL: and
//!    until the planner reports its log unavailable, for at most 10 s),
//!    start it again;
//! 4. check ([`checks`]): the deployment ends as its rules say (completed;
//!    or reverted, naming the abort); every replica the log says runs is a
//!    live process, and no other process of the cluster runs; the log's
//!    hash chain verifies; every command and fact published on the bus is
//!    in the log exactly once; every request was answered 200, except
//!    while the router itself was down.
//!
//! [`Row`]s print as a matrix ([`matrix`]).

mod checks;
mod run;
mod traffic;
mod watch;

use std::fmt;
use std::time::Duration;

use mentat_domain::Strategy;

pub use run::{run, Row, Verdict};

/// How long a killed component stays down before it is started again.
pub const DOWN: Duration = Duration::from_secs(1);

/// The strategy of the deployment under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollout {
    /// Rolling, one replica per batch.
    Rolling,
    /// Blue-green with a standby window.
    BlueGreen,
    /// Canary with automatic steps (20 % then 50 %, each baked).
    Canary,
}

impl Rollout {
    /// Every strategy, in matrix order.
    pub const ALL: [Rollout; 3] = [Rollout::Rolling, Rollout::BlueGreen, Rollout::Canary];

    /// The strategy sent with the deploy command.
    pub fn strategy(self) -> Strategy {
        match self {
            Rollout::Rolling => Strategy::Rolling,
            Rollout::BlueGreen => Strategy::BlueGreen,
            Rollout::Canary => Strategy::Canary,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Rollout::Rolling => "rolling",
            Rollout::BlueGreen => "blue-green",
            Rollout::Canary => "canary",
        }
    }
}

/// The step of the deployment at which the component is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Just after `DeploymentStarted`.
    Start,
    /// A new replica of a batch has started, the batch is not done (rolling:
    /// batch 2; blue-green: the green set; canary: the canary).
    MidBatch,
    /// Traffic moves: rolling, the first routing change that puts a new
    /// replica in rotation; blue-green, `TrafficSwitched`; canary, the
    /// automatic step to 50 % (`TrafficShifted {step: 2}`).
    Switch,
    /// A timed wait: rolling, the bake window (`BakeStarted`); blue-green,
    /// the standby window; canary, the first step's bake. For the last two,
    /// once the client has been answered by `v2`.
    Wait,
    /// In the middle of a revert: the deployment was aborted once it had
    /// moved forward (rolling: batch 1 done; blue-green: on standby; canary:
    /// baking its first step), and `DeploymentReverting` is recorded
    /// (rolling: and the first batch back to `v1` has started).
    Revert,
}

impl Step {
    /// Every step, in matrix order.
    pub const ALL: [Step; 5] = [
        Step::Start,
        Step::MidBatch,
        Step::Switch,
        Step::Wait,
        Step::Revert,
    ];

    fn name(self, rollout: Rollout) -> &'static str {
        match (self, rollout) {
            (Step::Start, _) => "start",
            (Step::MidBatch, _) => "mid-batch",
            (Step::Switch, _) => "switch",
            (Step::Wait, Rollout::BlueGreen) => "standby",
            (Step::Wait, _) => "bake",
            (Step::Revert, _) => "revert",
        }
    }
}

/// What is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// The planner (the only one).
    Planner,
    /// The executor of the host.
    Executor,
    /// The health-watcher.
    HealthWatcher,
    /// The router the client sends its requests through.
    Router,
    /// The PostgreSQL server holding the log (the postmaster and every backend).
    Postgres,
    /// The node of a three-node NATS cluster the planner is connected to.
    NatsNode,
    /// The leading planner while a standby planner waits to take over.
    LeadingPlanner,
}

impl Component {
    /// Every component, in matrix order.
    pub const ALL: [Component; 7] = [
        Component::Planner,
        Component::Executor,
        Component::HealthWatcher,
        Component::Router,
        Component::Postgres,
        Component::NatsNode,
        Component::LeadingPlanner,
    ];

    /// The service name in [`Cluster`](crate::Cluster), for the four services.
    pub fn service(self) -> Option<&'static str> {
        match self {
            Component::Planner | Component::LeadingPlanner => Some("planner"),
            Component::Executor => Some("executor"),
            Component::HealthWatcher => Some("health-watcher"),
            Component::Router => Some("router"),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Component::Planner => "planner",
            Component::Executor => "executor",
            Component::HealthWatcher => "health-watcher",
            Component::Router => "router",
            Component::Postgres => "postgres",
            Component::NatsNode => "nats node",
            Component::LeadingPlanner => "leading planner",
        }
    }
}

/// One kill at one step of one strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scenario {
    /// The strategy.
    pub rollout: Rollout,
    /// When the component is killed.
    pub step: Step,
    /// What is killed.
    pub component: Component,
}

impl Scenario {
    /// A scenario.
    pub fn new(rollout: Rollout, step: Step, component: Component) -> Self {
        Scenario {
            rollout,
            step,
            component,
        }
    }

    /// How the deployment must end.
    pub fn expected(&self) -> Expected {
        match self.step {
            Step::Revert => Expected::Reverted,
            _ => Expected::Completed,
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} / {} / {}",
            self.rollout.name(),
            self.step.name(self.rollout),
            self.component.name()
        )
    }
}

/// How a deployment must end by its own rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// Completed: `v2` on every replica.
    Completed,
    /// Reverted because it was aborted: `v1` on every replica.
    Reverted,
}

/// Every scenario: strategy × step × component.
pub fn full_matrix() -> Vec<Scenario> {
    let mut out = Vec::new();
    for rollout in Rollout::ALL {
        for step in Step::ALL {
            for component in Component::ALL {
                out.push(Scenario::new(rollout, step, component));
            }
        }
    }
    out
}

/// The rows as a Markdown table.
pub fn matrix(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario (strategy / step / killed) | expected | outcome | requests ok | failed | router down | time to end | result |\n\
         |---|---|---|---:|---:|---:|---:|---|\n",
    );
    for row in rows {
        out.push_str(&row.to_markdown());
        out.push('\n');
    }
    out
}
