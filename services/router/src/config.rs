//! The router's configuration: flags, each with an environment variable,
//! validated before anything starts.

use std::net::SocketAddr;
use std::time::Duration;

use crate::trust::TrustedProxies;
use crate::Error;

/// Default NATS URL.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default domain: `web.localhost` reaches service `web`.
pub const DEFAULT_DOMAIN: &str = "localhost";
/// Default drain timeout, in seconds.
pub const DEFAULT_DRAIN_TIMEOUT_SECS: u64 = 30;
/// Default grace for in-flight requests at shutdown, in seconds.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 10;
/// Default time a client has to send its request headers, in seconds.
pub const DEFAULT_HEADER_TIMEOUT_SECS: u64 = 10;
/// Default timeout for connecting to a backend, in milliseconds.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 2_000;
/// Default cap on open client connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default time to keep trying to reach NATS at start, in seconds.
pub const DEFAULT_NATS_WAIT_SECS: u64 = 30;
/// Default admin listen address (`GET /metrics`).
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9180";
/// Default interval between two traffic statistics messages, in milliseconds.
pub const DEFAULT_STATS_INTERVAL_MS: u64 = 1_000;
/// Default limit on the size of a request's head (request line and headers), in bytes.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Smallest head limit accepted: less would refuse ordinary browsers' heads.
pub const MIN_MAX_HEADER_BYTES: usize = 8 * 1024;
/// Default limit on a request body, in bytes (10 MiB).
pub const DEFAULT_MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;
/// Default time an idle keep-alive client connection stays open, in seconds.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 60;
/// Default cap on connections from the router to one backend.
pub const DEFAULT_MAX_BACKEND_CONNECTIONS: usize = 512;
/// Default time from a request's last byte sent to a backend to its
/// answer's head, in seconds (then 504).
pub const DEFAULT_RESPONSE_TIMEOUT_SECS: u64 = mentat_http1::bounds::DEFAULT_RESPONSE_HEAD_SECS;
/// Default longest pause between two pieces of a body, either way, in seconds.
pub const DEFAULT_BODY_IDLE_TIMEOUT_SECS: u64 = mentat_http1::bounds::DEFAULT_BODY_IDLE_SECS;
/// Default longest time to receive a whole request body, in seconds: five
/// minutes, 300 MB at 1 MB/s, or the 10 MiB default body limit at 35 KB/s.
pub const DEFAULT_REQUEST_BODY_TIMEOUT_SECS: u64 = mentat_http1::bounds::DEFAULT_REQUEST_BODY_SECS;
/// Most request workers accepted by `--workers`.
pub const MAX_WORKERS: usize = 1024;

/// Everything the router needs to start. Build it with [`clap::Parser`] in
/// the binary, or from [`Config::default`] and field updates in tests.
#[derive(Debug, Clone, PartialEq, Eq, clap::Parser)]
#[command(
    name = "mentat-router",
    version,
    about = "Mentat's HTTP reverse proxy: routes <service>.<domain> to the replicas of the \
             latest RouteChanged event, weighted, with draining."
)]
pub struct Config {
    /// URL of the NATS server; several separated by commas for a cluster
    /// (the router moves to another when the one it uses goes away).
    #[arg(long = "nats", env = "MENTAT_NATS_URL", default_value = DEFAULT_NATS_URL)]
    pub nats_url: String,
    /// Copies JetStream keeps of each of Mentat's streams: `auto` (3 when
    /// the NATS cluster announces three or more servers, else 1; streams
    /// that exist are left as they are) or 1 to 5 (streams that exist are
    /// updated to it). Give every service the same value.
    #[arg(long, env = "MENTAT_STREAM_REPLICAS", default_value = "auto")]
    pub stream_replicas: mentat_bus::Replicas,
    /// Credentials for NATS, or `--insecure`.
    #[command(flatten)]
    pub access: mentat_runtime::NatsAccess,

    /// Address the proxy listens on (`host:port`; port 0 picks a free port).
    /// The router refuses to start when another process already listens
    /// there (its own `--workers` share the port; no one else does).
    #[arg(long, env = "MENTAT_ROUTER_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Domain of the Host names routed: `<service>.<domain>` reaches a
    /// service, `<replica>.<service>.<domain>` one replica.
    #[arg(long, env = "MENTAT_ROUTER_DOMAIN", default_value = DEFAULT_DOMAIN)]
    pub domain: String,

    /// This router's id, reported in ReplicaDrained facts (default: the host
    /// name, else `router-<pid>`).
    #[arg(long, env = "MENTAT_ROUTER_ID", default_value_t = default_router_id())]
    pub router_id: String,

    /// Longest wait, in seconds, for the in-flight requests of a replica taken
    /// out of rotation before reporting it drained with `timed_out`.
    #[arg(long, env = "MENTAT_ROUTER_DRAIN_TIMEOUT_SECS", default_value_t = DEFAULT_DRAIN_TIMEOUT_SECS)]
    pub drain_timeout_secs: u64,

    /// Longest wait, in seconds, for in-flight requests once shutdown is requested.
    #[arg(long, env = "MENTAT_ROUTER_SHUTDOWN_GRACE_SECS", default_value_t = DEFAULT_SHUTDOWN_GRACE_SECS)]
    pub shutdown_grace_secs: u64,

    /// Time, in seconds, a client has to send a request's headers once its
    /// first byte arrived (against slowloris); the connection is closed after it.
    #[arg(long, env = "MENTAT_ROUTER_HEADER_TIMEOUT_SECS", default_value_t = DEFAULT_HEADER_TIMEOUT_SECS)]
    pub header_timeout_secs: u64,

    /// Time, in seconds, a keep-alive client connection may stay open with
    /// no request in flight and no byte received; then it is closed.
    #[arg(long, env = "MENTAT_ROUTER_IDLE_TIMEOUT_SECS", default_value_t = DEFAULT_IDLE_TIMEOUT_SECS)]
    pub idle_timeout_secs: u64,

    /// Time, in seconds, a backend has to send its answer's head once the
    /// whole request was written to it; past it the client gets 504 and
    /// the backend connection is closed. Not retried.
    #[arg(long, env = "MENTAT_ROUTER_RESPONSE_TIMEOUT_SECS", default_value_t = DEFAULT_RESPONSE_TIMEOUT_SECS)]
    pub response_timeout_secs: u64,

    /// Longest pause, in seconds, between two pieces of a body in either
    /// direction: a request body from the client (then 408), or an answer
    /// from the backend or to the client (then the answer is cut). Both
    /// connections of the request are closed. Upgraded connections
    /// (WebSockets) are not bounded.
    #[arg(long, env = "MENTAT_ROUTER_BODY_IDLE_TIMEOUT_SECS", default_value_t = DEFAULT_BODY_IDLE_TIMEOUT_SECS)]
    pub body_idle_timeout_secs: u64,

    /// Longest time, in seconds, to receive a whole request body from the
    /// client, however steadily it trickles in; past it the client gets 408
    /// and the backend connection that was receiving it is closed.
    #[arg(long, env = "MENTAT_ROUTER_REQUEST_BODY_TIMEOUT_SECS", default_value_t = DEFAULT_REQUEST_BODY_TIMEOUT_SECS)]
    pub request_body_timeout_secs: u64,

    /// Largest request head (request line and headers), in bytes; larger
    /// ones get 431. At least 8192.
    #[arg(long, env = "MENTAT_ROUTER_MAX_HEADER_BYTES", default_value_t = DEFAULT_MAX_HEADER_BYTES)]
    pub max_header_bytes: usize,

    /// Largest request body, in bytes; a larger Content-Length gets 413 at
    /// once, a longer chunked body is cut and answered 413.
    #[arg(long, env = "MENTAT_ROUTER_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: u64,

    /// Most connections the router opens to one backend (in use and idle);
    /// a request that finds them all busy waits up to the connect timeout,
    /// then goes to another backend or gets 503.
    #[arg(long, env = "MENTAT_ROUTER_MAX_BACKEND_CONNECTIONS", default_value_t = DEFAULT_MAX_BACKEND_CONNECTIONS)]
    pub max_backend_connections: usize,

    /// Clients trusted as proxies in front of the router, as CIDRs
    /// separated by commas (`10.0.0.0/8,fd00::/8`; a bare address is that
    /// one address). From a trusted proxy, `X-Forwarded-For` is extended
    /// with its address and `X-Forwarded-Proto`, `X-Forwarded-Host` and
    /// `X-Request-Id` are kept; from any other client all four are replaced
    /// by the router's own values. Default: none (no client is trusted).
    #[arg(
        long,
        env = "MENTAT_ROUTER_TRUSTED_PROXIES",
        default_value = "",
        value_name = "CIDRS"
    )]
    pub trusted_proxies: String,

    /// Address of the admin server (`GET /metrics` in Prometheus text format).
    #[arg(long, env = "MENTAT_ROUTER_ADMIN_LISTEN", default_value = DEFAULT_ADMIN_LISTEN)]
    pub admin_listen: SocketAddr,

    /// Interval, in milliseconds, between two TrafficStats messages on
    /// `mentat.stats.<router-id>`.
    #[arg(long, env = "MENTAT_ROUTER_STATS_INTERVAL_MS", default_value_t = DEFAULT_STATS_INTERVAL_MS)]
    pub stats_interval_ms: u64,

    /// Timeout, in milliseconds, for connecting to a backend before trying another.
    #[arg(long, env = "MENTAT_ROUTER_CONNECT_TIMEOUT_MS", default_value_t = DEFAULT_CONNECT_TIMEOUT_MS)]
    pub connect_timeout_ms: u64,

    /// Most client connections open at once; further clients wait in the
    /// listen backlog until one closes.
    #[arg(long, env = "MENTAT_ROUTER_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// How long, in seconds, to keep trying to reach NATS at start.
    #[arg(long, env = "MENTAT_ROUTER_NATS_WAIT_SECS", default_value_t = DEFAULT_NATS_WAIT_SECS)]
    pub nats_wait_secs: u64,

    /// Request workers: each is one thread with a single-threaded runtime
    /// and its own listening socket on `--listen` (`SO_REUSEPORT`, the
    /// kernel spreads new connections over them), so a request is read,
    /// forwarded and answered on one thread with no cross-thread wake-up.
    /// They share the routing table, the backend pools, the statistics and
    /// the `--max-connections` cap. The first worker's thread also runs the
    /// admin server, the route feed and the statistics publisher. Default:
    /// the number of CPUs available; between 1 and 1024.
    #[arg(long, env = "MENTAT_ROUTER_WORKERS", default_value_t = default_workers())]
    pub workers: usize,
}

impl Default for Config {
    /// The documented defaults, without reading flags or the environment.
    fn default() -> Self {
        Config {
            nats_url: DEFAULT_NATS_URL.to_owned(),
            stream_replicas: mentat_bus::Replicas::Auto,
            access: mentat_runtime::NatsAccess::default(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            domain: DEFAULT_DOMAIN.to_owned(),
            router_id: default_router_id(),
            drain_timeout_secs: DEFAULT_DRAIN_TIMEOUT_SECS,
            shutdown_grace_secs: DEFAULT_SHUTDOWN_GRACE_SECS,
            header_timeout_secs: DEFAULT_HEADER_TIMEOUT_SECS,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            nats_wait_secs: DEFAULT_NATS_WAIT_SECS,
            idle_timeout_secs: DEFAULT_IDLE_TIMEOUT_SECS,
            response_timeout_secs: DEFAULT_RESPONSE_TIMEOUT_SECS,
            body_idle_timeout_secs: DEFAULT_BODY_IDLE_TIMEOUT_SECS,
            request_body_timeout_secs: DEFAULT_REQUEST_BODY_TIMEOUT_SECS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_backend_connections: DEFAULT_MAX_BACKEND_CONNECTIONS,
            trusted_proxies: String::new(),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9180)),
            stats_interval_ms: DEFAULT_STATS_INTERVAL_MS,
            workers: default_workers(),
        }
    }
}

impl Config {
    /// Check every field; the error names the first one that is wrong.
    /// Also normalises the domain (lower case, no surrounding dots).
    pub fn validate(&mut self) -> Result<(), Error> {
        if let Err(e) = mentat_bus::client::server_addrs(&self.nats_url) {
            return Err(invalid(
                "nats",
                format!("must name one NATS server or several separated by commas: {e}"),
            ));
        }
        let domain = self.domain.trim().trim_matches('.').to_ascii_lowercase();
        let label_ok =
            |l: &str| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if domain.is_empty() || !domain.split('.').all(label_ok) {
            return Err(invalid(
                "domain",
                format!(
                    "`{}` is not a DNS name such as `localhost` or `apps.example.com`",
                    self.domain
                ),
            ));
        }
        self.domain = domain;
        if self.router_id.is_empty() || self.router_id.chars().any(|c| c.is_whitespace()) {
            return Err(invalid("router-id", "must be non-empty without spaces"));
        }
        for (field, value) in [
            ("drain-timeout-secs", self.drain_timeout_secs),
            ("shutdown-grace-secs", self.shutdown_grace_secs),
            ("header-timeout-secs", self.header_timeout_secs),
            ("idle-timeout-secs", self.idle_timeout_secs),
            ("response-timeout-secs", self.response_timeout_secs),
            ("body-idle-timeout-secs", self.body_idle_timeout_secs),
            ("request-body-timeout-secs", self.request_body_timeout_secs),
        ] {
            if !(1..=3600).contains(&value) {
                return Err(invalid(field, format!("{value} is not between 1 and 3600")));
            }
        }
        if !(1..=60_000).contains(&self.connect_timeout_ms) {
            return Err(invalid("connect-timeout-ms", "must be between 1 and 60000"));
        }
        if self.max_connections == 0 {
            return Err(invalid("max-connections", "must be at least 1"));
        }
        if !(MIN_MAX_HEADER_BYTES..=1024 * 1024).contains(&self.max_header_bytes) {
            return Err(invalid(
                "max-header-bytes",
                format!("{} is not between 8192 and 1048576", self.max_header_bytes),
            ));
        }
        if self.max_body_bytes == 0 {
            return Err(invalid("max-body-bytes", "must be at least 1"));
        }
        if !(1..=100_000).contains(&self.max_backend_connections) {
            return Err(invalid(
                "max-backend-connections",
                "must be between 1 and 100000",
            ));
        }
        if !(100..=60_000).contains(&self.stats_interval_ms) {
            return Err(invalid(
                "stats-interval-ms",
                "must be between 100 and 60000",
            ));
        }
        if !(1..=MAX_WORKERS).contains(&self.workers) {
            return Err(invalid(
                "workers",
                format!("{} is not between 1 and {MAX_WORKERS}", self.workers),
            ));
        }
        self.trusted_proxies()?;
        if self.admin_listen == self.listen && self.listen.port() != 0 {
            return Err(invalid("admin-listen", "must differ from --listen"));
        }
        Ok(())
    }

    /// [`Config::trusted_proxies`] parsed; the error names the entry that
    /// is not a CIDR.
    pub fn trusted_proxies(&self) -> Result<TrustedProxies, Error> {
        TrustedProxies::parse(&self.trusted_proxies).map_err(|e| invalid("trusted-proxies", e))
    }

    /// [`Config::drain_timeout_secs`] as a duration.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_secs)
    }

    /// [`Config::shutdown_grace_secs`] as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// [`Config::header_timeout_secs`] as a duration.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout_secs)
    }

    /// [`Config::idle_timeout_secs`] as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    /// The in-flight bounds: [`Config::response_timeout_secs`],
    /// [`Config::body_idle_timeout_secs`] and
    /// [`Config::request_body_timeout_secs`] as durations.
    pub fn bounds(&self) -> crate::bounds::Bounds {
        crate::bounds::Bounds {
            response_head: Duration::from_secs(self.response_timeout_secs),
            body_idle: Duration::from_secs(self.body_idle_timeout_secs),
            request_body: Duration::from_secs(self.request_body_timeout_secs),
        }
    }

    /// [`Config::stats_interval_ms`] as a duration.
    pub fn stats_interval(&self) -> Duration {
        Duration::from_millis(self.stats_interval_ms)
    }

    /// [`Config::connect_timeout_ms`] as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// [`Config::nats_wait_secs`] as a duration.
    pub fn nats_wait(&self) -> Duration {
        Duration::from_secs(self.nats_wait_secs)
    }
}

fn invalid(field: &'static str, problem: impl Into<String>) -> Error {
    Error::Config {
        field,
        problem: problem.into(),
    }
}

/// The number of CPUs this process may run on (at least 1, at most [`MAX_WORKERS`]).
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(MAX_WORKERS)
}

/// The host name (from the kernel, then `HOSTNAME`), else `router-<pid>`.
pub fn default_router_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && !h.chars().any(char::is_whitespace))
        .unwrap_or_else(|| format!("router-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn defaults_are_valid() {
        let mut c = Config::default();
        assert!(c.validate().is_ok());
        assert!(!c.router_id.is_empty());
    }

    #[test]
    fn flags_override_defaults() {
        let c = Config::try_parse_from([
            "mentat-router",
            "--nats",
            "nats://n:4222",
            "--listen",
            "0.0.0.0:0",
            "--domain",
            "Apps.Example.com.",
            "--router-id",
            "edge-1",
            "--drain-timeout-secs",
            "5",
        ]);
        let mut c = c.expect("flags parse");
        c.validate().expect("valid");
        assert_eq!(c.nats_url, "nats://n:4222");
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.domain, "apps.example.com");
        assert_eq!(c.router_id, "edge-1");
        assert_eq!(c.drain_timeout(), Duration::from_secs(5));
    }

    #[test]
    fn bad_values_name_their_field() {
        let field = |c: &mut Config| match c.validate() {
            Err(Error::Config { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        };
        let mut c = Config {
            domain: "bad domain".into(),
            ..Config::default()
        };
        assert_eq!(field(&mut c), "domain");
        let mut c = Config {
            drain_timeout_secs: 0,
            ..Config::default()
        };
        assert_eq!(field(&mut c), "drain-timeout-secs");
        let mut c = Config {
            router_id: "a b".into(),
            ..Config::default()
        };
        assert_eq!(field(&mut c), "router-id");
        let mut c = Config {
            max_header_bytes: 4096,
            ..Config::default()
        };
        assert_eq!(field(&mut c), "max-header-bytes");
        let mut c = Config {
            max_backend_connections: 0,
            ..Config::default()
        };
        assert_eq!(field(&mut c), "max-backend-connections");
        let mut c = Config {
            stats_interval_ms: 5,
            ..Config::default()
        };
        assert_eq!(field(&mut c), "stats-interval-ms");
        let mut c = Config {
            idle_timeout_secs: 0,
            ..Config::default()
        };
        assert_eq!(field(&mut c), "idle-timeout-secs");
        let mut c = Config {
            workers: 0,
            ..Config::default()
        };
        assert_eq!(field(&mut c), "workers");
        let mut c = Config {
            response_timeout_secs: 0,
            ..Config::default()
        };
        assert_eq!(field(&mut c), "response-timeout-secs");
        let mut c = Config {
            body_idle_timeout_secs: 3601,
            ..Config::default()
        };
        assert_eq!(field(&mut c), "body-idle-timeout-secs");
        let mut c = Config {
            request_body_timeout_secs: 0,
            ..Config::default()
        };
        assert_eq!(field(&mut c), "request-body-timeout-secs");
    }

    #[test]
    fn in_flight_bounds_default_to_60_30_and_300_seconds() {
        let c = Config::try_parse_from(["mentat-router", "--body-idle-timeout-secs", "5"])
            .expect("flags parse");
        let bounds = c.bounds();
        assert_eq!(bounds.response_head, Duration::from_secs(60));
        assert_eq!(bounds.body_idle, Duration::from_secs(5));
        assert_eq!(bounds.request_body, Duration::from_secs(300));
        assert_eq!(Config::default().bounds(), crate::bounds::Bounds::default());
    }

    #[test]
    fn trusted_proxies_are_cidrs_and_a_bad_one_is_named() {
        let c = Config::try_parse_from([
            "mentat-router",
            "--trusted-proxies",
            "10.0.0.0/8, 192.168.1.7,fd00::/16",
        ]);
        let mut c = c.expect("flags parse");
        c.validate().expect("valid");
        let trusted = c.trusted_proxies().expect("parsed");
        assert!(trusted.trusts("10.2.3.4".parse().expect("ip")));
        assert!(!trusted.trusts("127.0.0.1".parse().expect("ip")));
        assert!(Config::default()
            .trusted_proxies()
            .expect("none")
            .is_empty());

        let mut c = Config {
            trusted_proxies: "10.0.0.0/8,10.0.0.0/33".into(),
            ..Config::default()
        };
        match c.validate() {
            Err(Error::Config { field, problem }) => {
                assert_eq!(field, "trusted-proxies");
                assert!(
                    problem.contains("`10.0.0.0/33`"),
                    "names the entry: {problem}"
                );
            }
            other => panic!("expected a config error, got {other:?}"),
        }
    }
}
