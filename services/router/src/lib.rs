//! Mentat's router: the data plane. An HTTP reverse proxy whose routing
//! table follows the `RouteChanged` events of the log, so that deployments
//! shift traffic without dropping a request.
//!
//! - `config`: flags and environment, validated before anything starts.
//! - `host`: `<host>.<domain>` and `<replica>.<host>.<domain>`.
//! - `table`: the hot-swapped routing table, keyed by environment and host
//!   name (`ArcSwap`, no lock on the request path), and the diff that finds
//!   the replicas leaving rotation; `weights`: the smooth weighted
//!   round-robin schedule; `sticky`: weighted rendezvous hashing for
//!   sticky sessions; `endpoint`: a replica's atomic in-flight count,
//!   rotation state, counters and connection `pool` (idle lists per
//!   worker) of `mentat_http1` client connections.
//! - `feed`: the ordered JetStream consumer that keeps the table current,
//!   starting from the last RouteChanged of every service, and times each
//!   change's apply latency.
//! - `drain`: waiting for in-flight requests, closing idle connections and
//!   tunnels, then `ReplicaDrained`.
//! - `proxy`: the request path, retries included, as the handler of the
//!   `mentat_http1` server; `headers` holds the router's header policy
//!   (forwarding fields, request ids) and `body` the answers' bodies;
//!   `tunnel` splices upgraded connections; `bounds` (from
//!   `mentat_http1`): how long a request may stay in flight (the backend's
//!   answer head, pauses in a body either way, the whole request body);
//!   `trust`: the `--trusted-proxies` whose forwarding fields are kept.
//! - `server`: the accept loop and its graceful stop, one per worker
//!   (a thread with a single-threaded runtime and its own `SO_REUSEPORT`
//!   listener), each connection served by `mentat_http1::server` (requests
//!   parsed strictly, answers written back, header and idle timeouts).
//! - `metrics`: lock-free counters and histograms; `traffic`: the
//!   per-interval `TrafficStats` publisher; `admin`: `GET /metrics`.
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

mod admin;
mod announce;
mod body;
pub mod config;
mod drain;
mod endpoint;
mod error;
mod feed;
mod headers;
mod host;
pub mod metrics;
mod pool;
mod proxy;
mod server;
mod sticky;
mod table;
mod traffic;
pub mod trust;
mod tunnel;
mod weights;

pub use mentat_http1::bounds;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mentat_bus::Bus;
use mentat_runtime::Shutdown;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;

pub use config::Config;
pub use error::Error;

use drain::Drainer;
use feed::Feed;
use pool::PoolSettings;
use proxy::Proxy;
use table::{SharedTable, TableWriter};
use traffic::Registry;
use trust::TrustedProxies;

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
    /// The listening sockets of the other workers (same address, `SO_REUSEPORT`).
    more_listeners: Vec<std::net::TcpListener>,
    local_addr: SocketAddr,
    admin: TcpListener,
    admin_addr: SocketAddr,
    bus: Bus,
    table: SharedTable,
    drainer: Drainer,
    feed: JoinHandle<()>,
    registry: Arc<Registry>,
    /// `--trusted-proxies`, parsed.
    trusted: TrustedProxies,
    /// The route version applied per service, for the heartbeats.
    applied: announce::Applied,
    shutdown: Shutdown,
}

impl Router {
    /// Validate `config`, listen, connect to NATS and load the current
    /// routing table (the last RouteChanged of every service).
    pub async fn bind(mut config: Config, shutdown: Shutdown) -> Result<Self, Error> {
        mentat_runtime::metrics::install();
        config.validate()?;
        let trusted = config.trusted_proxies()?;
        let listen_error = |source| Error::Listen {
            addr: config.listen,
            source,
        };
        refuse_shared_address(config.listen)?;
        let (listener, local_addr, more_listeners) = if config.workers == 1 {
            let listener = TcpListener::bind(config.listen)
                .await
                .map_err(listen_error)?;
            let local_addr = listener.local_addr().map_err(listen_error)?;
            (listener, local_addr, Vec::new())
        } else {
            // The first socket fixes the port (when 0 was asked), the others share it.
            let listener = reuseport_listener(config.listen).map_err(listen_error)?;
            let local_addr = listener.local_addr().map_err(listen_error)?;
            let more = (1..config.workers)
                .map(|_| reuseport_listener(local_addr).and_then(TcpListener::into_std))
                .collect::<Result<Vec<_>, _>>()
                .map_err(listen_error)?;
            (listener, local_addr, more)
        };
        let admin = TcpListener::bind(config.admin_listen)
            .await
            .map_err(|source| Error::Listen {
                addr: config.admin_listen,
                source,
            })?;
        let admin_addr = admin.local_addr().map_err(|source| Error::Listen {
            addr: config.admin_listen,
            source,
        })?;
        let access = config.access.access(&config.nats_url)?;
        let bus = Bus::connect_with(
            &access,
            "router",
            config.nats_wait(),
            config.stream_replicas,
        )
        .await?;
        // Listened to while the table loads, checked before serving.
        let mut others = bus
            .client
            .subscribe(mentat_bus::subject::router_heartbeat(&config.router_id))
            .await
            .map_err(|e| mentat_bus::Error::Nats(e.to_string()))?;
        let listening_since = tokio::time::Instant::now();
        mentat_bus::streams::ensure_stats(&bus).await?;
        let table = SharedTable::default();
        let drainer = Drainer::new(bus.clone(), &config.router_id, config.drain_timeout());
        let pool = PoolSettings {
            max_connections: config.max_backend_connections,
            connect_timeout: config.connect_timeout(),
        };
        let registry = Arc::new(Registry::default());
        let writer = TableWriter::new(table.clone(), pool);
        let applied = announce::Applied::default();
        let feed = Feed::open(
            bus.clone(),
            writer,
            drainer.clone(),
            registry.clone(),
            applied.clone(),
        )
        .await?;
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
        announce::refuse_taken_id(&config.router_id, &mut others, listening_since).await?;
        tracing::info!(addr = %local_addr, admin = %admin_addr, router_id = %config.router_id, domain = %config.domain, services = table.load().len(), "router listening");
        Ok(Router {
            config,
            listener,
            more_listeners,
            local_addr,
            admin,
            admin_addr,
            bus,
            table,
            drainer,
            feed,
            registry,
            trusted,
            applied,
            shutdown,
        })
    }

    /// The address the router listens on (the real port when asked for 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address of the admin server (`GET /metrics`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
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
        let refresh = admin::refresh(self.registry.clone(), self.applied.clone());
        let admin = tokio::spawn(mentat_runtime::metrics::serve(
            self.admin,
            refresh,
            self.shutdown.token(),
        ));
        let identity = announce::Identity {
            router: self.config.router_id.clone(),
            host: announce::hostname(),
            listen: self.local_addr.to_string(),
        };
        let heartbeats = tokio::spawn(announce::publish(
            self.bus.clone(),
            identity,
            self.applied.clone(),
            self.shutdown.token(),
        ));
        let stats = tokio::spawn(traffic::publish(
            self.bus.clone(),
            self.registry.clone(),
            self.config.router_id.clone(),
            self.config.stats_interval(),
            self.shutdown.token(),
        ));
        let proxy = Arc::new(Proxy::new(
            self.table.clone(),
            &self.config.domain,
            self.trusted.clone(),
            self.config.bounds(),
            self.shutdown.token(),
        ));
        let limits = server::Limits {
            conn: mentat_http1::server::Limits {
                header_timeout: self.config.header_timeout(),
                idle_timeout: self.config.idle_timeout(),
                max_header_bytes: self.config.max_header_bytes,
                max_body_bytes: self.config.max_body_bytes,
                body_idle: self.config.bounds().body_idle,
            },
            grace: self.config.shutdown_grace(),
        };
        let slots = Arc::new(Semaphore::new(self.config.max_connections));
        let mut workers = Vec::with_capacity(self.more_listeners.len());
        for (n, listener) in self.more_listeners.into_iter().enumerate() {
            let (proxy, slots, stop) = (proxy.clone(), slots.clone(), self.shutdown.token());
            let worker = std::thread::Builder::new()
                .name(format!("router-worker-{}", n + 1))
                .spawn(move || worker(n + 1, listener, proxy, limits, slots, stop));
            match worker {
                Ok(handle) => workers.push(handle),
                Err(e) => tracing::error!(error = %e, "cannot start a worker thread"),
            }
        }
        server::serve(self.listener, proxy, limits, slots, self.shutdown.token()).await;
        self.shutdown.cancel();
        // The other workers stop at the same time and within the same grace.
        let joined = tokio::task::spawn_blocking(move || {
            for handle in workers {
                if handle.join().is_err() {
                    tracing::error!("a worker thread panicked");
                }
            }
        });
        let _ = joined.await;
        let _ = admin.await;
        let _ = stats.await;
        let _ = heartbeats.await;
        if let Err(e) = self.feed.await {
            tracing::warn!(error = %e, "route feed task failed");
        }
        self.drainer.finish(DRAIN_REPORT_GRACE).await;
        tracing::info!("router stopped");
    }
}

/// Fail with [`Error::AddrInUse`] when another process already listens on
/// `addr`, before this router's workers bind it with `SO_REUSEPORT` (which
/// would otherwise join that process's sockets and split the traffic).
///
/// The probe binds `addr` once *without* `SO_REUSEPORT`: the kernel then
/// refuses it if any socket listens there, whether or not that socket set
/// `SO_REUSEPORT`. It sets `SO_REUSEADDR`, like the workers, so that the
/// TIME_WAIT connections of a router that just stopped do not count. The
/// probe is closed at once, and the first worker socket is bound right
/// after. What remains is the window between the two (a few system calls):
/// two routers started on one address in the same instant could both pass.
/// Closing it would need the probe held while the workers bind, which the
/// kernel refuses (a socket without `SO_REUSEPORT` excludes those with it);
/// a probe by connecting instead could not see overlapping addresses (a
/// router on `0.0.0.0:80` and one on `10.0.0.5:80`) and would wait on a
/// full backlog. Port 0 asks for a free port, which no one else holds: no
/// probe.
fn refuse_shared_address(addr: SocketAddr) -> Result<(), Error> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    };
    let bound = probe.and_then(|probe| {
        probe.set_reuseaddr(true)?;
        probe.bind(addr)
    });
    match bound {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(Error::AddrInUse { addr }),
        Err(source) => Err(Error::Listen { addr, source }),
    }
}

/// A listening socket on `addr` that other sockets of this process may
/// share (`SO_REUSEPORT`), for one worker each.
fn reuseport_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// One more request worker (number `worker_index`, the first being the
/// main runtime's 0): a single-threaded runtime serving `listener` until
/// `stop`, on the calling thread.
fn worker(
    worker_index: usize,
    listener: std::net::TcpListener,
    proxy: Arc<Proxy>,
    limits: server::Limits,
    slots: Arc<Semaphore>,
    stop: tokio_util::sync::CancellationToken,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start a worker runtime");
            return;
        }
    };
    pool::set_worker(worker_index);
    runtime.block_on(async move {
        match TcpListener::from_std(listener) {
            Ok(listener) => server::serve(listener, proxy, limits, slots, stop).await,
            Err(e) => tracing::error!(error = %e, "cannot register a worker's listener"),
        }
    });
}
