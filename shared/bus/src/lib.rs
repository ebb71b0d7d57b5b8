//! Mentat's bus: how the services talk to each other over NATS.
//!
//! - [`subject`]: every subject, in one place.
//! - [`codec`]: MessagePack with named fields, or JSON when the message says
//!   `Content-Type: application/json`.
//! - [`streams`]: the JetStream streams that make commands, facts and events
//!   survive a restart, replicated on a cluster.
//! - [`anchors`]: signed anchors of the log, in `MENTAT_ANCHORS` and in a file.
//! - [`access`]: an identity's credentials, and no NATS beyond this
//!   machine without them unless `--insecure`.
//! - [`identities`]: one nkey identity per component and the nats-server
//!   permissions that give each the least it needs.
//! - [`tls`]: a CA of Mentat's own and the NATS servers' certificate.
//! - [`client`]: connecting (to one server or any of a cluster, reconnecting
//!   to another when one goes away), requesting and publishing with the codec.
//! - [`consumer`]: durable consumers that re-open themselves, and ordered
//!   consumers for replays.

pub mod access;
pub mod anchors;
pub mod client;
pub mod codec;
pub mod consumer;
pub mod identities;
pub mod streams;
pub mod subject;
pub mod tls;

pub use client::Bus;
pub use codec::Encoding;
pub use streams::Replicas;

/// Errors of the bus, by how a caller handles them.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The NATS server could not be reached or refused the operation; retry later.
    #[error("nats: {0}")]
    Nats(String),
    /// A NATS URL (of the comma-separated list) cannot be read; fix the
    /// configuration, retrying does not help.
    #[error("invalid NATS URL {url}: {detail}")]
    InvalidUrl {
        /// The entry that cannot be read.
        url: String,
        /// Why.
        detail: String,
    },
    /// The NATS server refused the credentials (or their absence): fix
    /// them, retrying does not help. `url` has its password masked.
    #[error("the NATS server at {url} refused the connection: {detail}; give this component's credentials file with --nats-creds FILE (or MENTAT_NATS_CREDS; `mt security init` makes them), or a user and password in the URL (nats://USER:PASSWORD@HOST:PORT, best in MENTAT_NATS_URL rather than on a command line)")]
    Refused {
        /// The URL list, passwords masked.
        url: String,
        /// What the server said.
        detail: String,
    },
    /// A credentials file cannot be read or is not one; fix the path or
    /// the file, retrying does not help.
    #[error("cannot use the NATS credentials in {}: {detail}", path.display())]
    Credentials {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong (never the secret).
        detail: String,
    },
    /// No credentials, and a NATS server of the list is beyond this
    /// machine: refused before connecting, unless `--insecure`.
    #[error("refusing to talk to NATS at {url} without credentials: anyone who reaches it could command the cluster; give this component's credentials with --nats-creds FILE (or MENTAT_NATS_CREDS; `mt security init --dir DIR` makes one per component and the nats-server configuration), or pass --insecure to run without")]
    Insecure {
        /// The URL list, passwords masked.
        url: String,
    },
    /// The server refused this identity an operation (publishing or
    /// subscribing on `subject`): its permissions do not allow it.
    /// Reject; retrying does not help.
    #[error("unauthorised: the NATS server refused to let this identity {action} on {subject}")]
    Unauthorised {
        /// `publish` or `subscribe`.
        action: &'static str,
        /// The subject refused.
        subject: String,
    },
    /// The NATS server is older than [`client::MIN_SERVER_VERSION`]; nothing
    /// was created on it. Retrying does not help.
    #[error("{}", client::too_old_message(&format!("the NATS server at {url}"), version))]
    ServerTooOld {
        /// The URL connected to.
        url: String,
        /// The version the server announced.
        version: String,
    },
    /// A payload could not be decoded; reject the message, naming the problem.
    #[error("could not decode {what}: {detail}")]
    Decode {
        /// What was expected.
        what: &'static str,
        /// What went wrong.
        detail: String,
    },
    /// A value could not be encoded (a bug).
    #[error("could not encode: {0}")]
    Encode(String),
    /// Nobody listens on the subject (for a command: no planner, and no
    /// stream either); retry once the service is up.
    #[error("nobody answers on {subject}")]
    NoResponders {
        /// Subject of the request.
        subject: String,
    },
    /// Nobody answered a request in time; the command may still be queued.
    #[error("no reply on {subject} within {secs}s")]
    Timeout {
        /// Subject of the request.
        subject: String,
        /// How long we waited.
        secs: u64,
    },
}

/// Result with the bus [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn nats(e: impl std::fmt::Display) -> Self {
        Error::Nats(e.to_string())
    }
}

/// Write `text` to `path`, readable by its owner only (0600), replacing
/// it whole (written beside it, then renamed).
pub(crate) fn write_private(path: &std::path::Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let failed = |path: &std::path::Path, e: std::io::Error| Error::Credentials {
        path: path.to_owned(),
        detail: e.to_string(),
    };
    let tmp = path.with_extension("tmp");
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| failed(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| failed(path, e))
}

/// Current time in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A new UUIDv7, as text.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
