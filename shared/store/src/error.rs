//! The one error type of this crate. Each variant says what the caller does
//! next: re-decide, reject, retry, or stop and call an operator.

use crate::ExpectedVersion;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong with the log, grouped by what the caller should do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// **Re-decide.** The stream is not at the expected version: another
    /// writer appended first. Nothing was appended and the command was not
    /// recorded. Reload the stream, decide again, and append with the new
    /// version.
    #[error("stream {stream:?} is at version {actual}, the append expected {expected}")]
    Conflict {
        /// The stream appended to.
        stream: String,
        /// What the append expected.
        expected: ExpectedVersion,
        /// The stream's version when the append ran.
        actual: i64,
    },

    /// **Reject.** An event with this id is already in the log (or appears
    /// twice in the batch). Nothing was appended. Event ids are unique for
    /// ever, so retrying the same append will fail the same way.
    #[error("an event with id {id} is already in the log")]
    DuplicateEvent {
        /// The offending event id.
        id: String,
    },

    /// **Stop and call an operator.** The hash chain does not hold at
    /// `position`: a row was changed, inserted or removed behind the store's
    /// back. Nothing read from the log past that point can be trusted.
    #[error("the log is tampered at position {position} ({kind}): {detail}")]
    Tampered {
        /// The first position whose row does not fit the chain.
        position: i64,
        /// What kind of tampering it looks like.
        kind: crate::BreakKind,
        /// What did not match.
        detail: String,
    },

    /// **Retry later.** The database failed, timed out or could not be
    /// reached. The operation either committed fully or not at all; an
    /// append retried with the same command id is safe.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),

    /// **Stop leading.** The write was fenced by planner epoch `ours`, but
    /// epoch `current` has been taken since: another planner leads. Nothing
    /// was written; this planner must not write again.
    #[error("planner epoch {ours} is stale: epoch {current} leads now")]
    StaleEpoch {
        /// The epoch the write was fenced by.
        ours: i64,
        /// The newest epoch in the log.
        current: i64,
    },

    /// **Fatal (configuration).** Another planner already runs on this
    /// SQLite log file; with SQLite one planner runs per file.
    #[error("another planner already runs on the log file {path}: with SQLite, one planner runs per log file; stop the other one, or put the log on PostgreSQL to run standbys")]
    LogInUse {
        /// The lock file held by the other planner.
        path: String,
    },

    /// **Fatal (configuration).** The URL is neither `sqlite:` nor
    /// `postgres:`; fix the configuration.
    #[error("invalid store URL {0:?}: expected sqlite://path or postgres://…")]
    InvalidUrl(String),

    /// **Fatal (deployment).** The database's schema cannot be brought to
    /// this build's: it was migrated by a newer build, or an applied
    /// migration was edited. Run the matching build, or call an operator.
    #[error("cannot migrate the log's schema: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
}
