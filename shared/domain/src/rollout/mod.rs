//! Fleet rollouts: one image rolled out over many services in cumulative
//! waves, one rollout in flight at a time, a failed target pausing it and
//! an operator choosing resume, cancel or rollback-all.
//!
//! A rollout is its own aggregate, the stream `_rollouts`. Each wave
//! deploys its targets as ordinary deployments, each with its service's
//! own strategy; the rollout only reads how they end. Everything it
//! decides is an event, so a planner restarted from the log goes on where
//! it was and never deploys a target twice.
//!
//! - [`waves`]: wave sizes from cumulative percentages.
//! - [`state`]: [`Rollouts`], folded from the log; the legal operations
//!   of each state.
//! - [`handle`]: the commands (`rollout_start`, `_pause`, `_resume`,
//!   `_cancel`, `_rollback_all`) and the guard on `deploy`.
//! - [`react`]: what the rollout in flight does next; when to look again.
//! - [`view`]: where each target stands; `mentat.query.rollout`'s answers.
//! - `messages`: the commands, query and reply types.
//!
//! States and the operations legal in each:
//!
//! | state | legal |
//! |---|---|
//! | none (idle), completed, cancelled, rolled back | start |
//! | in progress | pause, cancel |
//! | paused | resume, cancel, rollback-all |
//! | rolling back | none: wait |

pub mod handle;
mod messages;
pub mod react;
pub mod state;
pub mod view;
pub mod waves;

pub use handle::{control, guard_deploy, start};
pub use messages::*;
pub use react::{next_deadline, react};
pub use state::{Rollout, Rollouts};
