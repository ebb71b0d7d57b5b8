//! The health-watcher's errors, by how a caller handles them.

/// Everything that can go wrong in the health-watcher.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is impossible; fatal at start-up (exit 64).
    #[error("invalid configuration: {field}: {message}")]
    Config {
        /// The flag that holds the bad value.
        field: &'static str,
        /// What is wrong and what would be accepted.
        message: String,
    },
    /// The bus refused or could not carry a message; retry later.
    #[error(transparent)]
    Bus(#[from] mentat_bus::Error),
    /// The fact consumer could not be created; retry later.
    #[error("fact consumer: {0}")]
    Consumer(String),
}

/// Result with the health-watcher's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
