//! The executor's errors, by how a caller handles them.

use std::path::PathBuf;

/// Everything that can go wrong in the executor.
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
    /// Another executor holds the lock on this host directory; fatal.
    #[error("another executor is already running with {0}")]
    AlreadyRunning(PathBuf),
    /// Another executor sends heartbeats under this host id; fatal: give
    /// this one another `--host-id`.
    #[error("host id `{host}` is already live elsewhere (an executor advertising {other} sends its heartbeats); give this executor another --host-id")]
    HostIdTaken {
        /// The host id asked for.
        host: String,
        /// The address the other executor advertises, or `an unknown address`.
        other: String,
    },
    /// The bus refused or could not carry a message; retry later.
    #[error(transparent)]
    Bus(#[from] mentat_bus::Error),
    /// The intent consumer could not be created or read; retry later.
    #[error("intent consumer {consumer}: {detail}")]
    Consumer {
        /// Durable consumer name.
        consumer: String,
        /// What the server said.
        detail: String,
    },
    /// A file of the executor could not be read or written; fatal, since
    /// without its state file the executor would lose track of processes.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The state file exists but cannot be understood; fatal, an operator
    /// must look at it (the processes it lists may still be running).
    #[error("state file {path} is unreadable: {detail}")]
    CorruptState {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        detail: String,
    },
    /// A replica's program could not be started; reported to the planner as
    /// an exit with code 127.
    #[error("cannot start `{program}`: {detail}")]
    Spawn {
        /// Program that was to run.
        program: String,
        /// Why it did not start.
        detail: String,
    },
}

/// Result with the executor's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error on `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
