//! The router's error type, by how a caller handles it.

/// Errors of the router.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is wrong: fatal, exit with
    /// [`mentat_runtime::EXIT_CONFIG`] naming the field.
    #[error("invalid configuration: {field}: {problem}")]
    Config {
        /// The flag at fault, without its leading dashes.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// The listen address could not be bound: fatal (address in use, permission).
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Another process already listens on the address (another router,
    /// say): fatal. A router's workers share its port, but a router never
    /// shares it with another process.
    #[error("cannot listen on {addr}: another process already listens on it")]
    AddrInUse {
        /// The address.
        addr: std::net::SocketAddr,
    },
    /// Another router sends heartbeats under this router id: fatal, give
    /// this one another `--router-id`.
    #[error("router id `{router}` is already live elsewhere ({other} sends its heartbeats); give this router another --router-id")]
    RouterIdTaken {
        /// The id asked for.
        router: String,
        /// Where the other one runs and listens.
        other: String,
    },
    /// The bus could not be reached or refused an operation: retry later.
    #[error(transparent)]
    Bus(#[from] mentat_bus::Error),
    /// The route feed (the JetStream consumer of RouteChanged events) could
    /// not be created: retry later.
    #[error("route feed: {0}")]
    Feed(String),
}
