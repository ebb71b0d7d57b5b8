//! Fixtures for the end-to-end tests: the real binaries (planner, executor,
//! health-watcher, router, mt, mentat-demo-app) against a real nats-server
//! on a free port and a real database, SQLite or a fresh PostgreSQL one.
//!
//! - [`Cluster`]: starts and stops the four services; kills and restarts one.
//!   When it stops, every decision in its log is replayed
//!   ([`assert_replays`]): each end-to-end test ends with 0 divergences.
//!   NATS runs with Mentat's permissions and over TLS: every service and
//!   `mt` has its own identity and verifies the server against the CA
//!   ([`Identities`]); the test's own bus plays every part.
//!   [`Cluster::start_on_nats_cluster`] runs them on a three-node NATS
//!   cluster instead of one server.
//! - [`Load`]: a client that sends requests through the router without pause
//!   and counts every answer.
//! - [`mt`]: runs the CLI against the cluster.
//! - [`pg_server::PgServer`]: a private PostgreSQL server that a test may
//!   kill and restart ([`Db::PrivatePostgres`]).
//! - [`receiver`]: a webhook receiver that records what it gets.
//! - [`chaos`]: the chaos suite's scenarios, checks and matrix.

#![allow(clippy::unwrap_used)] // fixtures fail the test loudly on purpose

pub mod chaos;
pub mod load;
pub mod netns;
pub mod pg_server;
pub mod proxy;
pub mod receiver;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use mentat_bus::access::{Access, Credentials};
use mentat_bus::identities::{self, Role};
use mentat_bus::{subject, tls, Bus, Encoding, Replicas};
use mentat_domain::command::{
    DeploymentRecord, HistoryQuery, HistoryReply, ServiceStatus, StatusQuery, StatusReply,
};
use mentat_domain::event::{Event, EventEnvelope};
use mentat_domain::replay::ReplayReport;
use mentat_testkit::{free_port, pg::PgDatabase, NatsCluster, NatsServer};
use tempfile::TempDir;

pub use load::Load;

/// Which database the planner's log lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    /// A SQLite file in the cluster's data directory.
    Sqlite,
    /// A fresh PostgreSQL database.
    Postgres,
    /// A fresh PostgreSQL database that the planner reaches through a
    /// [`proxy::Proxy`] the test can cut ([`Cluster::db_proxy`]).
    PostgresBehindProxy,
    /// A private PostgreSQL server of this cluster alone
    /// ([`Cluster::pg_server`]), which the test may kill and restart.
    PrivatePostgres,
}

/// Extra flags for some of the services, kept when they are restarted
/// (see [`Cluster::start_with`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct Args<'a> {
    /// For the router.
    pub router: &'a [&'a str],
    /// For the executor.
    pub executor: &'a [&'a str],
    /// For the planner (and a standby).
    pub planner: &'a [&'a str],
}

/// The four services.
pub const SERVICES: [&str; 4] = ["planner", "executor", "health-watcher", "router"];

/// The executor hosts that have an identity on a test cluster's NATS.
/// (`h0` to `h2`: the hosts of the multi-host tests, tests/tests/netns_hosts.rs.)
pub const HOSTS: [&str; 7] = ["e2e-host", "e2e-b", "e2e-c", "node-2", "h0", "h1", "h2"];

/// The NATS identities of a test cluster (`mt security init` for
/// [`HOSTS`]) and the nats-server configuration that holds each to its
/// permissions and serves them over TLS (`mt up --tls`), plus one
/// unrestricted identity for the test itself, which forges what the tests
/// forge.
#[derive(Debug)]
pub struct Identities {
    dir: TempDir,
    unrestricted: Credentials,
    ca: PathBuf,
}

impl Identities {
    /// Make them in a directory of their own.
    pub fn new() -> Self {
        Self::reached_at(&[])
    }

    /// As [`Identities::new`], the servers' TLS certificate good for
    /// `names` too (besides localhost and 127.0.0.1).
    pub fn reached_at(names: &[String]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let hosts: Vec<String> = HOSTS.iter().map(|h| (*h).to_owned()).collect();
        let made = identities::init(dir.path(), &Role::all(&hosts)).unwrap();
        let admin = dir.path().join("unrestricted");
        identities::init(&admin, &[Role::Operator]).unwrap();
        let unrestricted =
            Credentials::read(&identities::seed_path(&admin, &Role::Operator)).unwrap();
        let key = unrestricted.public_key().unwrap();
        let config = identities::server_config_with(&made, &[key]);
        std::fs::write(dir.path().join(identities::SERVER_CONFIG), config).unwrap();
        let ca = tls::init(&dir.path().join("tls"), names).unwrap();
        for (file, tls) in [
            ("nats.conf", tls::SERVER_CONFIG),
            ("nats-cluster.conf", tls::CLUSTER_CONFIG),
        ] {
            let config = format!(
                "include {:?}\ninclude \"tls/{tls}\"\n",
                identities::SERVER_CONFIG
            );
            std::fs::write(dir.path().join(file), config).unwrap();
        }
        Identities {
            dir,
            unrestricted,
            ca,
        }
    }

    /// The nats-server configuration of a server alone.
    pub fn server_config(&self) -> PathBuf {
        self.dir.path().join("nats.conf")
    }

    /// The nats-server configuration of the nodes of a cluster (its routes
    /// over TLS too).
    pub fn cluster_config(&self) -> PathBuf {
        self.dir.path().join("nats-cluster.conf")
    }

    /// The CA the servers' certificate is signed by.
    pub fn ca(&self) -> &Path {
        &self.ca
    }

    /// The credentials file of `role`.
    pub fn creds(&self, role: &Role) -> PathBuf {
        identities::seed_path(self.dir.path(), role)
    }

    /// `--nats-creds <file of role> --nats-ca <CA>`, for a component a
    /// test starts.
    pub fn args(&self, role: &Role) -> Vec<String> {
        vec![
            "--nats-creds".into(),
            self.creds(role).display().to_string(),
            "--nats-ca".into(),
            self.ca.display().to_string(),
        ]
    }
}

impl Default for Identities {
    fn default() -> Self {
        Self::new()
    }
}

/// Directory holding the workspace's built binaries (target/debug).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let dir = if deps.ends_with("deps") {
        deps.parent().unwrap().to_path_buf()
    } else {
        deps.to_path_buf()
    };
    for name in ["mt", "mentat-planner", "mentat-demo-app"] {
        assert!(
            dir.join(name).exists(),
            "{} is not built: run `cargo build --workspace --bins` first (scripts/test does)",
            dir.join(name).display()
        );
    }
    dir
}

/// A whole Mentat on this machine, as separate processes.
pub struct Cluster {
    /// The NATS server (can be stopped and restarted).
    pub nats: NatsServer,
    /// Data directory (SQLite log, executor state, replica logs).
    pub dir: TempDir,
    /// The database URL of the log.
    pub database_url: String,
    _pg: Option<PgDatabase>,
    /// The proxy in front of the database, with [`Db::PostgresBehindProxy`].
    pub db_proxy: Option<proxy::Proxy>,
    /// The private server, with [`Db::PrivatePostgres`].
    pub pg_server: Option<pg_server::PgServer>,
    procs: BTreeMap<&'static str, Child>,
    /// Port the router listens on.
    pub router_port: u16,
    /// Port of the router's admin server (`/metrics`).
    pub admin_port: u16,
    /// A bus connection for the test itself.
    pub bus: Bus,
    /// Extra flags for the router (see [`Cluster::start_with_router_args`]).
    router_args: Vec<String>,
    /// Extra flags for the executor (see [`Cluster::start_with`]).
    executor_args: Vec<String>,
    /// Extra flags for the planner (see [`Cluster::start_with`]).
    planner_args: Vec<String>,
    /// On a NATS cluster ([`Cluster::start_on_nats_cluster`]): its other
    /// nodes, `nats` being the first. Empty on a single server.
    pub nats_peers: Vec<NatsServer>,
    /// Every component's NATS identity.
    pub identities: Identities,
    /// Whether the log is replayed when the cluster stops (see
    /// [`Cluster::writes_to_log`]).
    replays: bool,
}

impl Cluster {
    /// Start NATS, the database and the four services, and wait until the
    /// planner answers and a host is alive.
    pub async fn start(db: Db) -> Cluster {
        Self::start_with_router_args(db, &[]).await
    }

    /// As [`Cluster::start`], with extra flags for the router (kept when it
    /// is restarted), for example `["--stats-interval-ms", "100"]`.
    pub async fn start_with_router_args(db: Db, router_args: &[&str]) -> Cluster {
        let args = Args {
            router: router_args,
            ..Args::default()
        };
        Self::start_with(db, args).await
    }

    /// As [`Cluster::start`], with extra flags for some of the services,
    /// for example `executor: &["--allow-command", "/usr/bin/*"]`.
    pub async fn start_with(db: Db, args: Args<'_>) -> Cluster {
        let ids = Identities::new();
        let nats = NatsServer::start_with(Some(ids.server_config()));
        Self::start_on(ids, nats, Vec::new(), db, args, &SERVICES).await
    }

    /// As [`Cluster::start`], with no router at all: no router is known,
    /// so drains are not waited for, and `mt status` lists none.
    pub async fn start_without_router(db: Db) -> Cluster {
        let services = ["planner", "executor", "health-watcher"];
        let ids = Identities::new();
        let nats = NatsServer::start_with(Some(ids.server_config()));
        Self::start_on(ids, nats, Vec::new(), db, Args::default(), &services).await
    }

    /// The planner and the health-watcher alone, on a NATS server that
    /// listens on `host` (for example a [`netns::Lan`]'s gateway, its TLS
    /// certificate made for that address too): the hosts join as `mt
    /// node`s of the test's own. Ready when the planner answers.
    pub async fn start_control_plane(host: std::net::IpAddr, db: Db) -> Cluster {
        let services = ["planner", "health-watcher"];
        let ids = Identities::reached_at(&[host.to_string()]);
        let nats = NatsServer::start_on(host, Some(ids.server_config()));
        Self::start_on(ids, nats, Vec::new(), db, Args::default(), &services).await
    }

    /// As [`Cluster::start`], on a three-node NATS cluster: every service
    /// (and `mt`) gets all three URLs, and the streams three replicas.
    /// [`Cluster::nats_node`] reaches each node, to kill and restart it.
    pub async fn start_on_nats_cluster(db: Db) -> Cluster {
        let ids = Identities::new();
        let mut nodes = NatsCluster::start_with(3, Some(ids.cluster_config())).into_nodes();
        let first = nodes.remove(0);
        Self::start_on(ids, first, nodes, db, Args::default(), &SERVICES).await
    }

    async fn start_on(
        identities: Identities,
        nats: NatsServer,
        nats_peers: Vec<NatsServer>,
        db: Db,
        args: Args<'_>,
        services: &[&'static str],
    ) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let (database_url, pg) = match db {
            Db::Sqlite => (
                format!("sqlite://{}", dir.path().join("mentat.db").display()),
                None,
            ),
            Db::Postgres | Db::PostgresBehindProxy => {
                let pg = PgDatabase::create().await;
                (pg.url.clone(), Some(pg))
            }
            Db::PrivatePostgres => (String::new(), None),
        };
        let pg_server = (db == Db::PrivatePostgres)
            .then(|| tokio::task::block_in_place(pg_server::PgServer::start));
        let database_url = match &pg_server {
            Some(server) => server.url(),
            None => database_url,
        };
        let (database_url, db_proxy) = if db == Db::PostgresBehindProxy {
            let (before, after) = database_url.split_once('@').unwrap();
            let (server, rest) = after.split_once('/').unwrap();
            let proxy = proxy::Proxy::start(server).await;
            let url = format!("{before}@127.0.0.1:{}/{rest}", proxy.port);
            (url, Some(proxy))
        } else {
            (database_url, None)
        };
        let urls: Vec<String> = std::iter::once(&nats)
            .chain(&nats_peers)
            .map(NatsServer::url)
            .collect();
        let access = Access {
            urls: urls.join(","),
            credentials: Some(identities.unrestricted.clone()),
            ca: Some(identities.ca.clone()),
        };
        let bus = Bus::connect_with(&access, "e2e", Duration::from_secs(30), Replicas::Auto)
            .await
            .unwrap();
        let mut cluster = Cluster {
            nats,
            dir,
            database_url,
            _pg: pg,
            db_proxy,
            pg_server,
            procs: BTreeMap::new(),
            router_port: free_port(),
            admin_port: free_port(),
            bus,
            router_args: args.router.iter().map(|a| (*a).to_owned()).collect(),
            executor_args: args.executor.iter().map(|a| (*a).to_owned()).collect(),
            planner_args: args.planner.iter().map(|a| (*a).to_owned()).collect(),
            nats_peers,
            identities,
            replays: true,
        };
        for service in services {
            cluster.start_service(service);
        }
        cluster.wait_ready().await;
        cluster
    }

    /// Start (or restart) one service.
    pub fn start_service(&mut self, service: &'static str) {
        let nats = self.nats_urls();
        let data = self.dir.path().display().to_string();
        let mut args: Vec<String> = vec!["--nats".into(), nats];
        let role = match service {
            "planner" | "standby" => Role::Planner,
            "executor" => Role::Executor("e2e-host".into()),
            "router" => Role::Router,
            "notifier" => Role::Notifier,
            _ => Role::HealthWatcher,
        };
        args.extend(self.identities.args(&role));
        match service {
            // `standby`: a second planner on the same log, standing by.
            "planner" | "standby" => {
                args.extend([
                    "--planner-id".into(),
                    service.into(),
                    "--database-url".into(),
                    self.database_url.clone(),
                    "--data-dir".into(),
                    data,
                    "--drain-timeout-secs".into(),
                    "5".into(),
                ]);
                args.extend(self.planner_args.iter().cloned());
            }
            "executor" => {
                args.extend([
                    "--data-dir".into(),
                    data,
                    "--host-id".into(),
                    "e2e-host".into(),
                    "--advertise-ip".into(),
                    "127.0.0.1".into(),
                    "--stop-grace-secs".into(),
                    "5".into(),
                ]);
                args.extend(self.executor_args.iter().cloned());
            }
            // A short POST timeout: after a restart, the event the
            // stopped notifier held comes again within it and 5 s.
            "notifier" => args.extend(["--timeout-ms".into(), "2000".into()]),
            "router" => {
                args.extend([
                    "--listen".into(),
                    format!("127.0.0.1:{}", self.router_port),
                    "--drain-timeout-secs".into(),
                    "5".into(),
                    // Tests run side by side: every router its own admin port.
                    "--admin-listen".into(),
                    format!("127.0.0.1:{}", self.admin_port),
                ]);
                args.extend(self.router_args.iter().cloned());
            }
            _ => {}
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{service}.log")))
            .unwrap();
        let bins = bin_dir();
        let path = format!(
            "{}:{}",
            bins.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let binary = match service {
            "standby" => "planner",
            other => other,
        };
        let child = Command::new(bins.join(format!("mentat-{binary}")))
            .args(&args)
            .env("PATH", path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.procs.insert(service, child);
    }

    /// One more router, `id`, on its own free ports, with `args` added (its
    /// log in the cluster's directory as `router-<id>.log`, with `env`
    /// set): the process and the address it listens on.
    pub fn extra_router(&self, id: &str, args: &[&str], env: &[(&str, &str)]) -> (Child, String) {
        let listen = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(self.dir.path().join(format!("router-{id}.log"))).unwrap();
        let child = Command::new(bin_dir().join("mentat-router"))
            .args(["--nats", &self.nats_urls(), "--router-id", id])
            .args(self.identities.args(&Role::Router))
            .args(["--listen", &listen])
            .args(["--admin-listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--drain-timeout-secs", "5"])
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        (child, listen)
    }

    /// Whether `service` was started and has not exited.
    pub fn is_running(&mut self, service: &'static str) -> bool {
        self.procs
            .get_mut(service)
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Send `signal` (`STOP`, `CONT`, `KILL`...) to a service's process.
    pub fn signal(&self, service: &'static str, signal: &str) {
        let child = self.procs.get(service).unwrap();
        let sent = Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} {service}");
    }

    /// The tail of one service's log.
    pub fn log_of(&self, service: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{service}.log"))).unwrap_or_default()
    }

    /// SIGKILL one service, as a crash would.
    pub fn kill(&mut self, service: &'static str) {
        if let Some(mut child) = self.procs.remove(service) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Wait until the planner answers and a host is alive.
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(StatusReply::Ok { hosts, .. }) = self.status_query(None).await {
                // Without an executor of its own, the planner answering is enough.
                if !hosts.is_empty() || !self.procs.contains_key("executor") {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "cluster not ready within 60 s; logs in {}:\n{}",
                self.dir.path().display(),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The tail of every service's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for service in SERVICES.iter().chain(&["standby"]) {
            let text = std::fs::read_to_string(self.dir.path().join(format!("{service}.log")))
                .unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            out.push_str(&format!("--- {service} ---\n{}\n", tail.join("\n")));
        }
        out
    }

    /// Write `yaml` to a file and `mt apply -f` it; panics unless it succeeds.
    pub fn apply(&self, yaml: &str) -> Output {
        let file = self.dir.path().join("mentat.yaml");
        std::fs::write(&file, yaml).unwrap();
        let out = self.mt(&["apply", "-f", file.to_str().unwrap()]);
        assert!(out.status.success(), "mt apply failed: {}", text(&out));
        out
    }

    /// Run `mt ARGS --nats URL` with the operator's identity.
    pub fn mt(&self, args: &[&str]) -> Output {
        Command::new(bin_dir().join("mt"))
            .args(args)
            .args(["--nats", &self.nats_urls()])
            .env("MENTAT_NATS_CREDS", self.identities.creds(&Role::Operator))
            .env("MENTAT_NATS_CA", self.identities.ca())
            .env("MENTAT_ACTOR", "e2e")
            .output()
            .unwrap()
    }

    /// Run `mt ARGS` and return its stdout; panics with mt's output and the
    /// services' logs unless it succeeds.
    pub fn mt_ok(&self, args: &[&str]) -> String {
        let out = self.mt(args);
        assert!(
            out.status.success(),
            "mt {}: {}\n{}",
            args.join(" "),
            text(&out),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Deploy `image` of `web` with a rolling deployment and wait until it
    /// completed: the first release, which canary and blue-green
    /// deployments compare with.
    pub fn deploy_first(&self, image: &str) {
        self.mt_ok(&[
            "deploy",
            "web",
            "--image",
            image,
            "--strategy",
            "rolling",
            "--wait",
            "--timeout",
            "120",
        ]);
    }

    /// `mt` in the background, for commands that follow a deployment.
    pub fn mt_spawn(&self, args: &[&str]) -> Child {
        Command::new(bin_dir().join("mt"))
            .args(args)
            .args(["--nats", &self.nats_urls()])
            .env("MENTAT_NATS_CREDS", self.identities.creds(&Role::Operator))
            .env("MENTAT_NATS_CA", self.identities.ca())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// The service's deployments, from `mentat.query.history`.
    pub async fn history(&self, service: &str) -> Vec<DeploymentRecord> {
        match self.try_history(service).await {
            Ok(deployments) => deployments,
            Err(e) => panic!("history query failed: {e}"),
        }
    }

    /// The service's deployments, or why the query failed (planner down).
    pub async fn try_history(&self, service: &str) -> Result<Vec<DeploymentRecord>, String> {
        match self.history_query(service, false).await {
            Ok(HistoryReply::Ok { deployments, .. }) => Ok(deployments),
            other => Err(format!("{other:?}")),
        }
    }

    /// `mentat.query.history` for `service`, with its raw events when
    /// `events`: every page, in one reply.
    async fn history_query(
        &self,
        service: &str,
        events: bool,
    ) -> Result<HistoryReply, mentat_bus::Error> {
        let mut query = HistoryQuery {
            service: service.into(),
            events,
            after: None,
            limit: None,
        };
        let (mut all_deployments, mut all_events) = (Vec::new(), Vec::new());
        loop {
            let reply: HistoryReply = self
                .bus
                .request(
                    subject::QUERY_HISTORY,
                    &query,
                    Encoding::MsgPack,
                    Duration::from_secs(5),
                )
                .await?;
            let HistoryReply::Ok {
                deployments,
                events,
                next,
            } = reply
            else {
                return Ok(reply);
            };
            all_deployments.extend(deployments);
            all_events.extend(events);
            if next.is_none() {
                return Ok(HistoryReply::Ok {
                    deployments: all_deployments,
                    events: all_events,
                    next: None,
                });
            }
            assert!(next > query.after, "the next page must move on: {next:?}");
            query.after = next;
        }
    }

    /// Wait until deployment `id` has ended, and return its record.
    pub async fn wait_deployment(
        &self,
        service: &str,
        id: &str,
        within: Duration,
    ) -> DeploymentRecord {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(records) = self.try_history(service).await {
                if let Some(r) = records.iter().find(|r| r.deployment_id == id) {
                    if r.outcome.is_final() {
                        return r.clone();
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "deployment {id} did not end within {within:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The status of `service`, from `mentat.query.status`.
    pub async fn status(&self, service: &str) -> ServiceStatus {
        match self.status_query(Some(service)).await {
            Ok(StatusReply::Ok { mut services, .. }) if !services.is_empty() => services.remove(0),
            other => panic!("status query failed: {other:?}"),
        }
    }

    /// `mentat.query.status` for one service or all.
    pub async fn status_query(
        &self,
        service: Option<&str>,
    ) -> Result<StatusReply, mentat_bus::Error> {
        // One service, or the first page of them (a test has a few).
        let query = StatusQuery {
            service: service.map(str::to_owned),
            ..StatusQuery::default()
        };
        self.bus
            .request(
                subject::QUERY_STATUS,
                &query,
                Encoding::MsgPack,
                Duration::from_secs(5),
            )
            .await
    }

    /// Every event of the service's stream, from `mentat.query.history`.
    pub async fn events(&self, service: &str) -> Vec<Event> {
        self.envelopes(service)
            .await
            .into_iter()
            .map(|e| e.event)
            .collect()
    }

    /// Every recorded event of the service's stream, with its envelope.
    pub async fn envelopes(&self, service: &str) -> Vec<EventEnvelope> {
        match self.history_query(service, true).await {
            Ok(HistoryReply::Ok { events, .. }) => events,
            other => panic!("history query failed: {other:?}"),
        }
    }

    /// Poll the status of `service` until `ready` holds of it.
    pub async fn wait_status(
        &self,
        service: &str,
        within: Duration,
        what: &str,
        ready: impl Fn(&ServiceStatus) -> bool,
    ) -> ServiceStatus {
        let deadline = Instant::now() + within;
        loop {
            let status = self.status(service).await;
            if ready(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {within:?}; status: {status:#?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every NATS node's URL, comma-separated (one on a single server).
    pub fn nats_urls(&self) -> String {
        let urls: Vec<String> = self.nats_nodes().map(NatsServer::url).collect();
        urls.join(",")
    }

    /// NATS node `i` (0 is `nats`, then `nats_peers`).
    pub fn nats_node(&mut self, i: usize) -> &mut NatsServer {
        match i {
            0 => &mut self.nats,
            i => &mut self.nats_peers[i - 1],
        }
    }

    /// The NATS node (as for [`Cluster::nats_node`]) a service is connected
    /// to, by the name it connects with (`mentat-planner`), when known.
    pub fn nats_serving(&self, client_name: &str) -> Option<usize> {
        mentat_testkit::nats::serving(self.nats_nodes(), client_name)
    }

    fn nats_nodes(&self) -> impl Iterator<Item = &NatsServer> {
        std::iter::once(&self.nats).chain(&self.nats_peers)
    }

    /// The router's address.
    pub fn router_addr(&self) -> String {
        format!("127.0.0.1:{}", self.router_port)
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Cluster {
    /// This test writes to the log itself, not through the planner (an
    /// event that does not decode, a history recorded by hand): its
    /// decisions are not replayed when it stops.
    pub fn writes_to_log(&mut self) {
        self.replays = false;
    }

    /// Every decision in the cluster's log replays the same
    /// ([`assert_replays`]). Called when the cluster stops, so that every
    /// end-to-end test ends with it.
    pub fn assert_replays(&self) -> ReplayReport {
        assert_replays(&self.database_url)
    }
}

/// `mt audit replay --db URL` on a log, read directly: every decision the
/// planner recorded, taken again from the log alone, must come out the
/// same. Panics with mt's answer otherwise.
pub fn assert_replays(database_url: &str) -> ReplayReport {
    let out = Command::new(bin_dir().join("mt"))
        .args(["audit", "replay", "--json", "--db", database_url])
        .output()
        .unwrap();
    let report: Option<ReplayReport> = serde_json::from_slice(&out.stdout).ok();
    match report {
        Some(report) if report.divergence.is_none() && out.status.success() => {
            eprintln!(
                "replayed: {} decisions, {} events, 0 divergences",
                report.decisions, report.events
            );
            report
        }
        _ => panic!("the log does not replay: {}", text(&out)),
    }
}

impl Drop for Cluster {
    /// Stop every process, then replay the log (unless the test failed
    /// already, or [`Cluster::writes_to_log`]).
    fn drop(&mut self) {
        // SIGTERM first so the executor stops its replicas.
        for child in self.procs.values() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for child in self.procs.values_mut() {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if self.replays && !std::thread::panicking() && !self.database_url.is_empty() {
            let _ = self.assert_replays();
        }
    }
}

/// One test per database: `on_both_databases!(a, b)` defines `sqlite::a`,
/// `postgres::a`, ... calling the `async fn a(db: Db)` of the file.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::Db::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::Db::Postgres).await })*
        }
    };
}

/// Stdout and stderr of a finished command, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A fleet of `count` services `s01`.. labelled `kind=edge`, one replica
/// each, ready `ready_delay_ms` after they start; `s04` exits at start on
/// images v2 and v3 (a bad image for that one target alone). `extra` is
/// appended (a `notify:` block, for example).
pub fn fleet_config(count: usize, ready_delay_ms: u64, extra: &str) -> String {
    let mut yaml = String::from("services:\n");
    for name in (1..=count).map(|i| format!("s{i:02}")) {
        let command = if name == "s04" {
            r#"["sh", "-c", "case {image} in v2|v3) exit 1;; esac; exec mentat-demo-app"]"#
        } else {
            r#"["mentat-demo-app"]"#
        };
        yaml.push_str(&format!(
            r#"  {name}:
    replicas: 1
    labels: {{ kind: edge }}
    run:
      command: {command}
      env: {{ APP_VERSION: "{{image}}", READY_DELAY_MS: "{ready_delay_ms}" }}
    health: {{ path: /health, interval_ms: 100, healthy_after: 2, unhealthy_after: 3, bake_secs: 0, thresholds: {{ enabled: false }} }}
    deploy: {{ strategy: rolling, max_unavailable: 1, health_timeout_secs: 10, auto_revert: true }}
"#
        ));
    }
    yaml.push_str(extra);
    yaml
}

/// The service file used by the tests: `replicas` of mentat-demo-app,
/// probed every 100 ms.
pub fn web_config(replicas: u32, health_timeout_secs: u64) -> String {
    web_config_ready_after(replicas, health_timeout_secs, 0)
}

/// As [`web_config`], with replicas that pass their probe only
/// `ready_delay_ms` after they start (so each batch takes at least that long).
pub fn web_config_ready_after(
    replicas: u32,
    health_timeout_secs: u64,
    ready_delay_ms: u64,
) -> String {
    web_config_with(
        replicas,
        ready_delay_ms,
        &format!(
            "strategy: rolling, max_unavailable: 1, health_timeout_secs: {health_timeout_secs}, auto_revert: true"
        ),
    )
}

/// The service file of the tests with its `deploy` block given as the
/// inside of a YAML flow map, for example
/// `strategy: canary, canary_percent: 10`.
pub fn web_config_with(replicas: u32, ready_delay_ms: u64, deploy: &str) -> String {
    web_config_judged(
        replicas,
        ready_delay_ms,
        deploy,
        "window_secs: 1, min_requests: 5",
    )
}

/// As [`web_config_with`], with the inside of the `health.thresholds` flow
/// map given too (the tests' default judges 1 s windows of at least 5 requests).
pub fn web_config_judged(
    replicas: u32,
    ready_delay_ms: u64,
    deploy: &str,
    thresholds: &str,
) -> String {
    format!(
        r#"services:
  web:
    replicas: {replicas}
    run:
      command: ["mentat-demo-app"]
      env: {{ APP_VERSION: "{{image}}", READY_DELAY_MS: "{ready_delay_ms}" }}
    health: {{ path: /health, interval_ms: 100, healthy_after: 2, unhealthy_after: 3, bake_secs: 0, thresholds: {{ {thresholds} }} }}
    deploy: {{ {deploy} }}
"#
    )
}

/// The service file of the threshold tests: `replicas` of mentat-demo-app
/// with extra environment entries `env` (the inside of a YAML flow map, may
/// be empty), extra `health` fields (for example
/// `thresholds: {window_secs: 1}, bake_secs: 2`) and the `deploy` block.
pub fn web_config_health(replicas: u32, env: &str, health: &str, deploy: &str) -> String {
    let env = if env.is_empty() {
        String::new()
    } else {
        format!(", {env}")
    };
    format!(
        r#"services:
  web:
    replicas: {replicas}
    run:
      command: ["mentat-demo-app"]
      env: {{ APP_VERSION: "{{image}}"{env} }}
    health: {{ path: /health, interval_ms: 100, healthy_after: 2, unhealthy_after: 3, {health} }}
    deploy: {{ {deploy} }}
"#
    )
}

/// The replicas the planner stopped as drained (`ReplicaStopRequested` with
/// "out of rotation and drained"), each checked against the
/// `ReplicaDrained` facts before it: how many there were, or which one was
/// stopped before every router in `routers` had reported it drained.
pub fn drained_stops(
    events: &[Event],
    routers: &std::collections::BTreeSet<String>,
) -> Result<usize, String> {
    let mut drained: BTreeMap<&str, std::collections::BTreeSet<String>> = BTreeMap::new();
    let mut stopped = 0;
    for event in events {
        match event {
            Event::ReplicaDrained {
                replica, router, ..
            } => {
                drained
                    .entry(replica.as_str())
                    .or_default()
                    .insert(router.clone());
            }
            Event::ReplicaStopRequested {
                replica, reason, ..
            } if reason == "out of rotation and drained" => {
                stopped += 1;
                let by = drained.get(replica.as_str());
                if !by.is_some_and(|by| routers.is_subset(by)) {
                    return Err(format!(
                        "{replica} stopped when drained by {by:?}, not by every router of {routers:?}"
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(stopped)
}

/// The replicas placed again because their host was lost
/// (`ReplicaReplaced`): (replica, its lost host, the replica in its place).
pub fn replaced(events: &[Event]) -> Vec<(String, String, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ReplicaReplaced {
                replica,
                host,
                new_replica,
                ..
            } => Some((replica.clone(), host.clone(), new_replica.clone())),
            _ => None,
        })
        .collect()
}

impl Cluster {
    /// Wait until every replica of `replicas` has a `ReplicaExited` in
    /// `service`'s log; `logs` is shown if not within `within`.
    pub async fn wait_exited(
        &self,
        service: &str,
        replicas: &[String],
        within: Duration,
        logs: impl Fn() -> String,
    ) {
        let deadline = Instant::now() + within;
        loop {
            let events = self.events(service).await;
            let exited = |id: &String| {
                events
                    .iter()
                    .any(|e| matches!(e, Event::ReplicaExited { replica, .. } if replica == id))
            };
            if replicas.iter().all(exited) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not all of {replicas:?} exited within {within:?}\n{}",
                logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Stop `child` as an operator would: send it `signal` (`TERM`, `INT`),
/// wait up to `within` for it to exit, then SIGKILL it.
pub fn stop_child(child: &mut Child, signal: &str, within: Duration) {
    let _ = Command::new("kill")
        .args([format!("-{signal}"), child.id().to_string()])
        .status();
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}
