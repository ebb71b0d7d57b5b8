//! The planner's pure core: its state folded from the log and the decisions
//! it takes from that state.
//!
//! - [`state`]: [`World`], built by [`World::apply`] from recorded events.
//! - [`decide`]: [`handle`] for commands, [`react`] for what comes next,
//!   [`next_deadline`] for when to look again.
//! - `deployment`: pause, phase deadlines, and the strategy of the
//!   deployment in flight: `rolling`, `canary`, `blue_green`.
//! - [`policy`]: the one rule for turning back (revert, hold or fail) when
//!   a batch fails, a threshold is breached, a deadline passes or an
//!   operator aborts.
//! - `control`: pause, resume, abort and promote commands; `traffic`: the
//!   weight, route, spawn and stop commands.
//! - [`routes`]: the routing table and its weights.
//! - `steady`: drained and retired replicas, replica count, placement.
//! - `ids`: replica ids, unique across the cluster.
//! - [`hosts`]: suspect and lost hosts, re-placement, the mass-loss hold.

mod blue_green;
pub mod canary;
mod control;
pub mod decide;
pub mod deployment;
pub mod hosts;
mod ids;
pub mod policy;
pub(crate) mod rolling;
pub mod routes;
pub mod state;
mod steady;
mod traffic;

pub use decide::{handle, next_deadline, react, Append, Decision, Settings};
pub use hosts::react_cluster;
pub use state::{Phase, Replica, ServiceState, World};
