//! Mentat's router: the data plane. An HTTP reverse proxy whose routing
//! table follows the `RouteChanged` events of the log, so that deployments
//! shift traffic without dropping a request.
//!
//! - `config`: flags and environment, validated before anything starts.
//! - `host`: `<service>.<domain>` and `<replica>.<service>.<domain>`.
//! - `table`: the hot-swapped routing table (`ArcSwap`, no lock on the
//!   request path) and the diff that finds the replicas leaving rotation;
//!   `weights`: the smooth weighted round-robin schedule; `endpoint`: a
//!   replica's atomic in-flight count and rotation state.
//! - `feed`: the ordered JetStream consumer that keeps the table current,
//!   starting from the last RouteChanged of every service.
//! - `drain`: waiting for in-flight requests, then `ReplicaDrained`.
//! - `proxy`: the request path, retries included; `headers` and `body` hold
//!   what it rewrites and streams.
//! - `server`: the accept loop and its graceful stop.
//!
//! Start it with [`run`], or with [`Router::bind`] then [`Router::serve`]
//! to learn the bound address first (tests listen on port 0):
//!
//! ```no_run
//! # async fn example() -> Result<(), mentat_router::Error> {
//! use mentat_router::{Config, Router};
//! let config = Config {
//!     listen: "127.0.0.1:0".parse().expect("address"),
//!     ..Config::default()
//! };
//! let shutdown = mentat_runtime::Shutdown::new();
//! let router = Router::bind(config, shutdown.clone()).await?;
//! let addr = router.local_addr();
//! tokio::spawn(router.serve());
//! // ... send requests to `addr` with a Host header `<service>.localhost` ...
//! shutdown.cancel();
//! # Ok(()) }
//! ```

mod body;
pub mod config;
mod drain;
mod endpoint;
mod error;
mod feed;
mod headers;
mod host;
mod proxy;
mod server;
mod table;
mod weights;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mentat_bus::Bus;
use mentat_runtime::Shutdown;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::Config;
pub use error::Error;

use drain::Drainer;
use feed::Feed;
use proxy::Proxy;
use table::{SharedTable, TableWriter};

/// Longest wait at start for the current table before serving anyway
/// (requests for services not loaded yet get 404 meanwhile).
const INITIAL_TABLE_WAIT: Duration = Duration::from_secs(10);
/// Longest wait at shutdown for drains to be reported once requests are done.
const DRAIN_REPORT_GRACE: Duration = Duration::from_secs(3);

/// Run the router until `shutdown` is cancelled, then drain gracefully.
pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    Router::bind(config, shutdown).await?.serve().await;
    Ok(())
}

/// A router that is listening and has loaded the current table, but does
/// not accept connections until [`Router::serve`].
#[derive(Debug)]
pub struct Router {
    config: Config,
    listener: TcpListener,
    local_addr: SocketAddr,
    table: SharedTable,
    drainer: Drainer,
    feed: JoinHandle<()>,
    shutdown: Shutdown,
}

impl Router {
    /// Validate `config`, listen, connect to NATS and load the current
    /// routing table (the last RouteChanged of every service).
    pub async fn bind(mut config: Config, shutdown: Shutdown) -> Result<Self, Error> {
        config.validate()?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Listen {
                addr: config.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| Error::Listen {
            addr: config.listen,
            source,
        })?;
        let bus = Bus::connect(&config.nats_url, "router", config.nats_wait()).await?;
        let table = SharedTable::default();
        let drainer = Drainer::new(bus.clone(), &config.router_id, config.drain_timeout());
        let feed = Feed::open(bus, TableWriter::new(table.clone()), drainer.clone()).await?;
        let (current_tx, current_rx) = oneshot::channel();
        let feed = tokio::spawn(feed.run(shutdown.child(), current_tx));
        match tokio::time::timeout(INITIAL_TABLE_WAIT, current_rx).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => tracing::warn!("route feed stopped before the table was loaded"),
            Err(_) => tracing::warn!(
                wait_secs = INITIAL_TABLE_WAIT.as_secs(),
                "routing table not fully loaded yet; serving with what is known"
            ),
        }
        tracing::info!(addr = %local_addr, router_id = %config.router_id, domain = %config.domain, services = table.load().len(), "router listening");
        Ok(Router {
            config,
            listener,
            local_addr,
            table,
            drainer,
            feed,
            shutdown,
        })
    }

    /// The address the router listens on (the real port when asked for 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The validated configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Names of the services in the current table, sorted.
    pub fn services(&self) -> Vec<String> {
        let table = self.table.load();
        let mut names = table.service_names();
        names.sort();
        names
    }

    /// Serve until the shutdown tree is cancelled; then stop accepting,
    /// finish in-flight requests within the grace, stop following the feed
    /// and report the drains that completed.
    pub async fn serve(self) {
        let proxy = Arc::new(Proxy::new(
            self.table.clone(),
            &self.config.domain,
            self.config.connect_timeout(),
        ));
        let limits = server::Limits {
            header_timeout: self.config.header_timeout(),
            grace: self.config.shutdown_grace(),
            max_connections: self.config.max_connections,
        };
        server::serve(self.listener, proxy, limits, self.shutdown.token()).await;
        self.shutdown.cancel();
        if let Err(e) = self.feed.await {
            tracing::warn!(error = %e, "route feed task failed");
        }
        self.drainer.finish(DRAIN_REPORT_GRACE).await;
        tracing::info!("router stopped");
    }
}
