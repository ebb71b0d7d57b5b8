//! Mentat's source of truth: an append-only, event-sourced log in SQL.
//!
//! The same log, with the same behaviour, on an embedded SQLite file (the
//! default) or on PostgreSQL (for a cluster of planners). This crate knows
//! nothing of Mentat's domain: an event is a type name, a schema version and
//! JSON text, and the caller chooses its id.
//!
//! What the log guarantees:
//!
//! - **Streams and optimistic concurrency.** Every event belongs to a stream
//!   (a service, a host, a rollout) and gets the next stream version. An
//!   append names the version it expects ([`ExpectedVersion`]); if another
//!   writer got there first it fails with [`Error::Conflict`] and appends
//!   nothing, and the caller reloads and decides again.
//! - **Idempotent commands.** An append may carry a [`CommandRecord`]; it is
//!   stored in the same transaction as the events. Retrying the command is a
//!   no-op that returns the first outcome ([`Appended::duplicate`]).
//!   [`Store::record_command`] does the same for commands that produced no
//!   events.
//! - **One decision, one transaction.** [`Store::append_batch`] appends to
//!   several streams at once, each with its expected version, and records
//!   the command with them: all of it is in the log, or none.
//! - **A gap-free global order.** Appends are serialised, so positions are
//!   1, 2, 3… with no gaps, in commit order: a reader that has processed up
//!   to position `p` resumes with [`Store::read_all`]`(p, …)` and misses
//!   nothing.
//! - **Tamper evidence.** Each event carries the hash of the one before it
//!   ([`hash`]); [`Store::verify`] recomputes the chain and names the first
//!   position that does not fit and how ([`BreakKind`]); [`Store::verify_with`]
//!   also checks signed anchors and skips breaks an operator accepted
//!   ([`chain`]).
//! - **One writing planner.** Planners take epochs with a lease
//!   ([`Store::try_lead`], [`Store::renew_lease`]); a handle from
//!   [`Store::fenced`] checks its epoch inside every write transaction and
//!   writes nothing once a newer epoch was taken ([`Error::StaleEpoch`]).
//!   With SQLite, [`Store::claim_log_file`] keeps a second planner off the
//!   file (`leader.rs`).
//! - **No rewriting.** Database triggers refuse every `UPDATE` and `DELETE`
//!   on `events` (and `commands`), and `TRUNCATE` on PostgreSQL. On
//!   PostgreSQL the planner can append through a role that may only read
//!   and insert, the migrations running as the schema's owner
//!   ([`Store::open_migrated_by`], [`roles`]), so that it cannot disable the
//!   triggers either.
//!
//! Module map:
//!
//! - [`Store`]: open a log ([`Store::open`]), read it, verify it
//!   (`store.rs`); append to it (`append.rs`); URL handling and migrations
//!   live in `open.rs`, the SQL schema in `migrations/{sqlite,postgres}/`.
//! - [`ExpectedVersion`], [`CommandRecord`], [`NewEvent`],
//!   [`RecordedEvent`], [`Appended`], [`Verified`], [`Backend`]: the values
//!   going in and out.
//! - [`hash`]: the hash chain and its framing; [`chain`]: checking it, with
//!   no I/O, on rows or on an exported file.
//! - [`Error`]: every failure, by what the caller should do about it.

mod append;
pub mod chain;
mod error;
pub mod hash;
mod leader;
mod open;
pub mod roles;
mod store;
mod types;

pub use chain::{Break, BreakKind, Chain};
pub use error::{Error, Result};
pub use leader::{Leader, LogFileLock};
pub use store::{Pages, Store};
pub use types::{
    Appended, Backend, CommandRecord, ExpectedVersion, NewEvent, RecordedEvent, StreamAppend,
    Verified,
};
