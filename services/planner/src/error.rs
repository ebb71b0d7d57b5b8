//! The planner's one error type. Each variant says what the engine does
//! about it: re-decide, acknowledge and go on, wait for the log, or stop.
//! Bad input is not an error here: it is a [`Rejection`] in the reply.
//!
//! [`Rejection`]: mentat_domain::command::Rejection

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while the planner carries out a decision.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// **Re-decide.** The stream moved since this planner folded it
    /// (another writer, or an append whose commit was not confirmed). Read
    /// the log up to its head and decide again.
    #[error("stream {stream} moved under the planner: {detail}")]
    Conflict {
        /// The stream appended to.
        stream: String,
        /// The store's words.
        detail: String,
    },

    /// **Acknowledge and go on.** An event with this id is already in the
    /// log: the fact was recorded before (or its sender reused an id).
    /// Nothing was appended; appending it again would fail the same way.
    #[error("an event with id {id} is already in the log")]
    Duplicate {
        /// The repeated id.
        id: String,
    },

    /// **Wait and retry.** The log cannot be reached. Nothing is
    /// acknowledged meanwhile: commands and facts wait in JetStream, and
    /// queries are answered from the last known state, marked stale.
    #[error("the log is unavailable: {0}")]
    Unavailable(String),

    /// **Stop leading.** Another planner took a newer epoch: this one was
    /// paused or cut off past its lease. Nothing was written; it must not
    /// write again, and stops.
    #[error("StaleEpoch: this planner's epoch {ours} is over, epoch {current} leads now; stopping without writing")]
    StaleEpoch {
        /// This planner's epoch.
        ours: i64,
        /// The newest epoch.
        current: i64,
    },

    /// **Refuse to run.** The log's hash chain does not hold at
    /// `position`: it was changed behind the planner's back. Nothing is
    /// decided on it until an operator looks and, if they choose, accepts
    /// the break (`--accept-break`), which is recorded in the log.
    #[error(
        "the log is broken at position {position} ({kind}): {detail}; the planner will not run \
         on it. Compare the log with an export or backup (mt audit export); to run on it as it \
         is, restart with --accept-break {position} --actor NAME --reason TEXT (recorded in the log)"
    )]
    LogBroken {
        /// The first bad position.
        position: i64,
        /// What kind of break.
        kind: mentat_store::BreakKind,
        /// What did not match.
        detail: String,
    },

    /// **Stop.** The log cannot be trusted or used by this build (tampered,
    /// schema from a newer build, a bad URL), or the planner's own state
    /// cannot be encoded. An operator has to look.
    #[error("{0}")]
    Fatal(String),
}

impl Error {
    /// A fatal error with context.
    pub fn fatal(context: &str, error: impl std::fmt::Display) -> Self {
        Error::Fatal(format!("{context}: {error}"))
    }
}

impl From<mentat_store::Error> for Error {
    fn from(e: mentat_store::Error) -> Self {
        use mentat_store::Error as Store;
        match e {
            Store::Conflict { ref stream, .. } => Error::Conflict {
                stream: stream.clone(),
                detail: e.to_string(),
            },
            Store::DuplicateEvent { id } => Error::Duplicate { id },
            Store::StaleEpoch { ours, current } => Error::StaleEpoch { ours, current },
            Store::Database(db) => Error::Unavailable(db.to_string()),
            Store::Tampered {
                position,
                kind,
                detail,
            } => Error::LogBroken {
                position,
                kind,
                detail,
            },
            Store::InvalidUrl(_) | Store::Migration(_) | Store::LogInUse { .. } => {
                Error::Fatal(e.to_string())
            }
        }
    }
}

impl From<mentat_bus::Error> for Error {
    fn from(e: mentat_bus::Error) -> Self {
        Error::fatal("the bus", e)
    }
}

impl From<async_nats::SubscribeError> for Error {
    fn from(e: async_nats::SubscribeError) -> Self {
        Error::fatal("subscribing", e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mentat_store::ExpectedVersion;

    #[test]
    fn store_errors_map_to_what_the_planner_does() {
        let conflict = mentat_store::Error::Conflict {
            stream: "web".into(),
            expected: ExpectedVersion::Exact(3),
            actual: 4,
        };
        assert!(matches!(Error::from(conflict), Error::Conflict { stream, .. } if stream == "web"));
        let duplicate = mentat_store::Error::DuplicateEvent { id: "e-1".into() };
        assert!(matches!(Error::from(duplicate), Error::Duplicate { id } if id == "e-1"));
        let down = mentat_store::Error::Database(sqlx::Error::PoolTimedOut);
        assert!(matches!(Error::from(down), Error::Unavailable(_)));
        let tampered = mentat_store::Error::Tampered {
            position: 7,
            kind: mentat_store::BreakKind::ContentChanged,
            detail: "hash".into(),
        };
        assert!(matches!(
            Error::from(tampered),
            Error::LogBroken { position: 7, .. }
        ));
    }
}
