//! The planner's pure core: its state folded from the log and the decisions
//! it takes from that state.
//!
//! - [`state`]: [`World`], built by [`World::apply`] from recorded events.
//! - [`decide`]: [`handle`] for commands, [`react`] for what comes next,
//!   [`next_deadline`] for when to look again.
//! - `rolling`: the rolling strategy's batches, switch, revert.
//! - `steady`: routing table, drained replicas, replica count, placement.

pub mod decide;
mod rolling;
pub mod state;
mod steady;

pub use decide::{handle, next_deadline, react, Append, Decision, Settings};
pub use state::{Phase, Replica, ServiceState, World};
