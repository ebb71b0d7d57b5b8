//! Mentat's pure domain.
//!
//! Nothing in this crate performs I/O, reads a clock or spawns a task: time
//! and identifiers enter as data, so replaying the log always gives the same
//! state and the same decisions.
//!
//! - [`spec`]: service definitions and their validation.
//! - [`cluster`]: the cluster block (when a silent host is suspect, then lost).
//! - [`audit`]: verifying, exporting and anchoring the log over the bus.
//! - [`command`]: commands, queries and their replies.
//! - [`environment`]: the `environments:` block; a service run once per
//!   environment, addressed `web@staging`.
//! - [`limits`]: the bound of every number and string a command carries.
//! - [`event`]: every event of the log, and the envelopes that carry them.
//! - [`notify`]: the webhooks the notifier tells of transitions.
//! - [`paging`]: pages of query replies, so none outgrows NATS's payload limit.
//! - [`planner`]: the planner's state and decisions (rolling deployments).
//! - [`security`]: operators' keys and roles, signed commands and who
//!   may send what.
//! - [`rollout`]: fleet rollouts in waves over many services.
//! - [`replay`]: every decision of the planner taken again from the log
//!   and compared with it (`mt audit replay`).
//! - [`release`]: immutable releases deployed to environments, atomically
//!   across services.
//! - [`report`]: who did what, and the delivery figures per service, over a
//!   window of the log (`mt audit report`).
//! - [`story`]: which events are one deployment's, and its whole story
//!   (`mt deploy`'s progress, `mt audit why`).
//! - [`stats`]: traffic statistics the routers publish.

pub mod audit;
pub mod cluster;
pub mod command;
pub mod environment;
pub mod event;
pub mod limits;
pub mod notify;
pub mod paging;
pub mod planner;
pub mod release;
pub mod replay;
pub mod report;
pub mod rollout;
pub mod security;
pub mod spec;
pub mod stats;
pub mod story;

pub use command::{Command, Reply};
pub use event::{Event, EventEnvelope, Fact, Meta};
pub use spec::{ServiceSpec, Strategy};

/// The short form of an id shown to people: its last 8 characters (the
/// first ones of a UUIDv7 are a timestamp, shared by ids made close
/// together, such as a rollout's and its deployments').
pub fn short_id(id: &str) -> &str {
    let start = id.char_indices().rev().nth(7).map(|(i, _)| i).unwrap_or(0);
    &id[start..]
}
