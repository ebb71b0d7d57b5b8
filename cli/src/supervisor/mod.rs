//! `mt up`: the whole system on one machine, in the foreground.
//!
//! 1. The config is validated first (exit 64 on error).
//! 2. When nothing answers at the NATS URL, a nats-server child is started
//!    with JetStream in `<data-dir>/nats`; with `--nats-cluster N`, N of
//!    them clustered, each restarted like a service when it dies.
//! 3. The services (the four and the notifier) run as child processes, each restarted with backoff
//!    when it dies; their output is prefixed with their name and kept in
//!    `<data-dir>/logs/<service>.log`.
//! 4. Once the planner answers, the config is applied.
//! 5. Ctrl-C or SIGTERM stops everything in order within a bounded grace;
//!    a second signal kills at once.

mod child;
mod nats;
mod ready;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::future::join_all;
use mentat_runtime::config;
use mentat_runtime::shutdown::CancellationToken;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::task::JoinHandle;

use crate::client;
use crate::error::{Error, Result};
pub use child::ChildSpec;
use mentat_bus::access::Credentials;
use mentat_bus::identities::Role;
use mentat_bus::streams::CLUSTER_REPLICAS;
pub use nats::HOW_TO_GET as NATS_HOW_TO_GET;
pub use ready::DEFAULT_NATS_URL;

/// The five services (the four and the notifier), in the order they are stopped.
pub const SERVICES: [&str; 5] = [
    "notifier",
    "router",
    "planner",
    "health-watcher",
    "executor",
];
/// How long the services get to stop after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// How long the nats-server we started gets to stop.
const NATS_GRACE: Duration = Duration::from_secs(5);
/// How long a fresh nats-server may take to accept connections.
const NATS_READY: Duration = Duration::from_secs(10);

/// What `mt up` runs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// NATS URL.
    pub nats_url: String,
    /// Service file applied once the planner answers.
    pub config: PathBuf,
    /// Where NATS, the database and the logs live.
    pub data_dir: PathBuf,
    /// Database URL [default: `sqlite://<data-dir>/mentat.db`].
    pub database_url: Option<String>,
    /// Address the router listens on.
    pub http: String,
    /// Address of the router's admin server.
    pub admin: std::net::SocketAddr,
    /// Run this many clustered nats-server nodes instead of one.
    pub nats_cluster: Option<usize>,
    /// Run without NATS credentials (`--insecure`).
    pub insecure: bool,
    /// Serve NATS over TLS with a CA of its own (`--tls`).
    pub tls: bool,
    /// The operator's credentials and the CA, once made: what `mt up`
    /// itself uses.
    pub identity: client::Identity,
}

/// The identities `mt up` runs with: one per component under
/// `<data-dir>/identities`, made when missing, and the nats-server
/// configuration that gives each the least it needs.
#[derive(Debug, Clone)]
pub struct Security {
    /// Where the identities are.
    pub dir: PathBuf,
    /// The host id of the executor `mt up` runs.
    pub host: String,
}

impl Security {
    /// Make the identities of `mt up`'s components in `data_dir` (those
    /// there already are kept) and its nats-server configuration.
    pub fn init(data_dir: &Path, host: String) -> Result<Self> {
        let dir = data_dir.join(client::IDENTITIES_DIR);
        let hosts = [host.clone()];
        mentat_bus::identities::init(&dir, &Role::all(&hosts))?;
        Ok(Security { dir, host })
    }

    /// The credentials file of `role`.
    pub fn creds(&self, role: &Role) -> PathBuf {
        mentat_bus::identities::seed_path(&self.dir, role)
    }

    /// The credentials file of the service `name`.
    fn service_creds(&self, name: &str) -> PathBuf {
        let role = match name {
            "planner" => Role::Planner,
            "router" => Role::RouterOf(self.host.clone()),
            "health-watcher" => Role::HealthWatcher,
            "notifier" => Role::Notifier,
            _ => Role::Executor(self.host.clone()),
        };
        self.creds(&role)
    }

    /// The nats-server configuration.
    pub fn server_config(&self) -> PathBuf {
        self.dir.join(mentat_bus::identities::SERVER_CONFIG)
    }
}

/// This machine's host id, as the executor makes it from the hostname.
pub fn this_host_id() -> String {
    let name = nix::unistd::gethostname()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    mentat_domain::limits::sanitise_host_id(&name)
}

/// What `mt node` runs.
#[derive(Debug, Clone)]
pub struct NodePlan {
    /// NATS URL(s) of the cluster.
    pub nats_url: String,
    /// Where the executor's state and the logs live.
    pub data_dir: PathBuf,
    /// Host id (and router id); the executor's default when absent.
    pub host_id: Option<String>,
    /// The executor's `--advertise-ip`; its default when absent.
    pub advertise_ip: Option<std::net::IpAddr>,
    /// Address the router listens on.
    pub http: String,
    /// Address of the router's admin server.
    pub admin: std::net::SocketAddr,
    /// The executor's `--capacity`; its default when absent.
    pub capacity: Option<u32>,
    /// The executor's `--allow-command` patterns (none: any program).
    pub allow_command: Vec<String>,
    /// Run without NATS credentials (`--insecure`).
    pub insecure: bool,
    /// The CA NATS's certificate must be signed by (`--nats-ca`).
    pub ca: Option<PathBuf>,
}

/// The services `mt node` runs, in the order they are stopped.
pub const NODE_SERVICES: [&str; 2] = ["router", "executor"];

/// Run this host's executor and router until Ctrl-C or SIGTERM. The
/// cluster's NATS must answer first: a node that cannot reach it says which
/// URL it tried and what to check.
pub async fn run_node(plan: NodePlan) -> Result<()> {
    let data_dir = std::path::absolute(&plan.data_dir)?;
    let host = plan.host_id.clone().unwrap_or_else(this_host_id);
    let creds = node_creds(&plan, &data_dir, &host)?;
    let router_creds = creds
        .as_ref()
        .map(|(_, router)| Credentials::read(router))
        .transpose()?;
    let identity = client::Identity {
        credentials: router_creds,
        ca: plan.ca.clone(),
    };
    crate::client::connect_as(&plan.nats_url, identity)
        .await
        .map_err(|e| match e {
            Error::Unreachable { url, detail } => Error::Runtime(format!(
                "cannot reach the cluster's NATS at {url}: {detail}; check the URL \
                 (--nats or MENTAT_NATS_URL), that the server runs, and that this \
                 machine can reach its client port (4222 by default) through any firewall"
            )),
            e => e,
        })?;
    let exe_dir = std::env::current_exe()?
        .parent()
        .map(Path::to_owned)
        .ok_or_else(|| Error::Runtime("cannot tell where the mt executable is".into()))?;
    let log_dir = private_dirs(&data_dir)?;
    let path_env = children_path(&exe_dir)?;
    let mut specs = Vec::new();
    for name in NODE_SERVICES {
        let binary = format!("mentat-{name}");
        let program = find_program(&exe_dir, &binary).ok_or_else(|| {
            Error::Runtime(format!(
                "cannot find {binary} next to mt ({}) or on PATH",
                exe_dir.display()
            ))
        })?;
        let mut args: Vec<OsString> = vec!["--nats".into(), plan.nats_url.clone().into()];
        match &creds {
            Some((executor, router)) => {
                let file = if name == "executor" { executor } else { router };
                args.extend(["--nats-creds".into(), file.clone().into_os_string()]);
            }
            None if plan.insecure => args.push("--insecure".into()),
            None => {}
        }
        if let Some(ca) = &plan.ca {
            args.extend(["--nats-ca".into(), ca.clone().into_os_string()]);
        }
        if name == "executor" {
            args.extend([
                "--admin-listen".into(),
                admin_of(plan.admin, "executor")?.to_string().into(),
            ]);
            args.extend(["--data-dir".into(), data_dir.as_os_str().to_owned()]);
            if let Some(id) = &plan.host_id {
                args.extend(["--host-id".into(), id.into()]);
            }
            if let Some(ip) = plan.advertise_ip {
                args.extend(["--advertise-ip".into(), ip.to_string().into()]);
            }
            if let Some(capacity) = plan.capacity {
                args.extend(["--capacity".into(), capacity.to_string().into()]);
            }
            for pattern in &plan.allow_command {
                args.extend(["--allow-command".into(), pattern.into()]);
            }
        } else {
            args.extend([
                "--listen".into(),
                plan.http.clone().into(),
                "--admin-listen".into(),
                plan.admin.to_string().into(),
            ]);
            // Its id is the host's: what its own identity may speak for.
            args.extend(["--router-id".into(), host.clone().into()]);
        }
        specs.push(ChildSpec {
            name,
            program,
            args,
            path_env: Some(path_env.clone()),
            env: Vec::new(),
            log_dir: log_dir.clone(),
            echo: true,
        });
    }
    say(&format!(
        "joining the cluster at {} as {}",
        plan.nats_url,
        plan.host_id.as_deref().unwrap_or("this host")
    ));
    say(&format!(
        "metrics: {}",
        metrics_addresses(plan.admin, &["router", "executor"])?
    ));
    let mut signals = Signals::new()?;
    let kill = CancellationToken::new();
    let children: Vec<Supervised> = specs
        .into_iter()
        .map(|spec| Supervised::start(spec, &kill))
        .collect();
    signals.recv().await;
    say("stopping (press Ctrl-C again to kill at once)");
    let second = kill.clone();
    tokio::spawn(async move {
        signals.recv().await;
        say("second signal: killing everything now");
        second.cancel();
    });
    Supervised::stop_all(children, STOP_GRACE, &kill).await;
    say("stopped");
    Ok(())
}

/// The credentials files of this node's executor and router, from
/// `<data-dir>/identities` (`executor-<host>.nk` and `router-<host>.nk`,
/// as `mt security init --executor-hosts` makes them where the cluster's
/// identities are kept; a `router.nk`, which may speak for any router, is
/// taken when there is no `router-<host>.nk`).
/// `None` when they are not there: refused for a NATS beyond this machine
/// unless `--insecure`, with what to do.
fn node_creds(plan: &NodePlan, data_dir: &Path, host: &str) -> Result<Option<(PathBuf, PathBuf)>> {
    let dir = data_dir.join(client::IDENTITIES_DIR);
    let executor = mentat_bus::identities::seed_path(&dir, &Role::Executor(host.to_owned()));
    let router = [Role::RouterOf(host.to_owned()), Role::Router]
        .iter()
        .map(|role| mentat_bus::identities::seed_path(&dir, role))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            mentat_bus::identities::seed_path(&dir, &Role::RouterOf(host.to_owned()))
        });
    if executor.is_file() && router.is_file() {
        return Ok(Some((executor, router)));
    }
    match mentat_bus::access::Access::new(&plan.nats_url, None, plan.insecure) {
        Ok(_) => Ok(None),
        Err(mentat_bus::Error::Insecure { url }) => Err(Error::Usage(format!(
            "no NATS identity for host {host} in {}: where the cluster's identities are kept, \
             run `mt security init --dir DIR --executor-hosts {host}` (and restart NATS with \
             DIR/{}), then copy DIR/{} and DIR/{} here; or pass --insecure to talk to NATS at \
             {url} without credentials",
            dir.display(),
            mentat_bus::identities::SERVER_CONFIG,
            executor.file_name().unwrap_or_default().to_string_lossy(),
            router.file_name().unwrap_or_default().to_string_lossy(),
        ))),
        Err(e) => Err(e.into()),
    }
}

/// A line from `mt` itself, in the same column as the children's output.
pub(crate) fn say(message: &str) {
    eprintln!("{:>14} | {message}", "mt");
}

/// A program found in a directory of `PATH`.
pub(crate) fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A program next to the `mt` executable, else on `PATH`.
fn find_program(exe_dir: &Path, name: &str) -> Option<PathBuf> {
    let beside = exe_dir.join(name);
    beside.is_file().then_some(beside).or_else(|| on_path(name))
}

/// Run everything until Ctrl-C or SIGTERM.
pub async fn run(mut plan: Plan) -> Result<()> {
    let services = config::load_file(&plan.config)?;
    let cluster = match plan.nats_cluster {
        Some(size) => Some(nats::Cluster::on(&plan.nats_url, size).map_err(Error::Usage)?),
        None => None,
    };
    if let Some(cluster) = &cluster {
        // Everything from here on (services, applying the config) uses every node.
        plan.nats_url = cluster.urls();
    }
    let exe_dir = std::env::current_exe()?
        .parent()
        .map(Path::to_owned)
        .ok_or_else(|| Error::Runtime("cannot tell where the mt executable is".into()))?;
    let programs = find_services(&exe_dir)?;
    let data_dir = std::path::absolute(&plan.data_dir)?;
    let log_dir = private_dirs(&data_dir)?;
    let security = secure(&mut plan, &data_dir)?;
    let server_config = nats_config(&mut plan, security.as_ref(), &data_dir)?;
    let specs = service_specs(
        &plan,
        security.as_ref(),
        &programs,
        &exe_dir,
        &data_dir,
        &log_dir,
    )?;
    let mut signals = Signals::new()?;
    let kill = CancellationToken::new();

    let files = NatsFiles {
        config: server_config.as_deref(),
        data_dir: &data_dir,
        log_dir: &log_dir,
    };
    let nats = match &cluster {
        Some(cluster) => start_cluster(cluster, &files, &kill, &mut signals).await?,
        None => start_nats(&plan, &files, &kill, &mut signals).await?,
    };
    let Some(nats) = nats else {
        return Ok(()); // interrupted while NATS was starting
    };
    let children: Vec<Supervised> = specs
        .into_iter()
        .map(|spec| Supervised::start(spec, &kill))
        .collect();
    let applier = tokio::spawn(ready::apply_when_ready(plan.clone(), services));

    signals.recv().await;
    say("stopping (press Ctrl-C again to kill at once)");
    applier.abort();
    tokio::spawn(async move {
        signals.recv().await;
        say("second signal: killing everything now");
        kill.cancel();
    });
    shutdown(children, nats).await;
    say("stopped");
    Ok(())
}

/// Unless `--insecure`, make the identities (see [`Security`]), take the
/// operator's for `mt up`'s own connections and say how other `mt`
/// commands find it; with `--insecure`, say what that means.
fn secure(plan: &mut Plan, data_dir: &Path) -> Result<Option<Security>> {
    if plan.insecure {
        say(&format!(
            "--insecure: NATS at {} runs without credentials; anyone who can reach it commands this cluster",
            mentat_bus::client::redact(&plan.nats_url)
        ));
        return Ok(None);
    }
    let security = Security::init(data_dir, this_host_id())?;
    let operator = security.creds(&Role::Operator);
    plan.identity.credentials = Some(Credentials::read(&operator)?);
    let found = std::path::absolute(client::operator_creds(Path::new(client::DEFAULT_DATA_DIR)))?;
    if found != operator {
        say(&format!(
            "`mt` finds its credentials in ./{}/{}/ only: in other shells, first\n  export MENTAT_NATS_CREDS={}",
            client::DEFAULT_DATA_DIR,
            client::IDENTITIES_DIR,
            operator.display()
        ));
    }
    Ok(Some(security))
}

/// The configuration of the nats-servers `mt up` starts: the identities'
/// permissions (unless `--insecure`) and, with `--tls`, a CA and
/// certificates of its own in `<data-dir>/tls` (the CA then required of
/// every connection). `None` when there is nothing to configure.
fn nats_config(
    plan: &mut Plan,
    security: Option<&Security>,
    data_dir: &Path,
) -> Result<Option<PathBuf>> {
    let mut includes = Vec::new();
    if let Some(security) = security {
        includes.push(security.server_config());
    }
    if plan.tls {
        let tls = data_dir.join(client::TLS_DIR);
        let host = nats::host_port(&plan.nats_url).map(|(host, _)| host);
        let ca = mentat_bus::tls::init(&tls, &host.into_iter().collect::<Vec<_>>())?;
        let config = if plan.nats_cluster.is_some() {
            mentat_bus::tls::CLUSTER_CONFIG
        } else {
            mentat_bus::tls::SERVER_CONFIG
        };
        includes.push(tls.join(config));
        if ca != std::path::absolute(client::ca_cert(Path::new(client::DEFAULT_DATA_DIR)))? {
            say(&format!(
                "NATS is served over TLS with a CA of its own: in other shells, first\n  export MENTAT_NATS_CA={}",
                ca.display()
            ));
        }
        plan.identity.ca = Some(ca);
    }
    if includes.is_empty() {
        return Ok(None);
    }
    // nats-server takes one file: it includes the others, by relative path.
    let lines: Vec<String> = includes
        .iter()
        .map(|path| {
            let relative = path.strip_prefix(data_dir).unwrap_or(path);
            format!("include {:?}\n", relative.display().to_string())
        })
        .collect();
    let config = data_dir.join("nats.conf");
    std::fs::write(&config, lines.concat())?;
    Ok(Some(config))
}

/// The service binaries, or an error naming the ones missing.
fn find_services(exe_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for service in SERVICES {
        let name = format!("mentat-{service}");
        match find_program(exe_dir, &name) {
            Some(path) => found.push(path),
            None => missing.push(name),
        }
    }
    if missing.is_empty() {
        return Ok(found);
    }
    Err(Error::Runtime(format!(
        "cannot find {} next to mt ({}) or on PATH; build them with `cargo build --workspace`",
        missing.join(", "),
        exe_dir.display()
    )))
}

/// The children's PATH: the directory of `mt` first, so that replicas find
/// `mentat-demo-app` next to it, then this process's PATH.
fn children_path(exe_dir: &Path) -> Result<OsString> {
    let mut dirs = vec![exe_dir.to_owned()];
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs)
        .map_err(|e| Error::Runtime(format!("cannot build PATH for the services: {e}")))
}

/// Create `data_dir` and its `logs` directory readable by their owner
/// only (0700): they hold the event log with every service's environment,
/// the anchor key, replicas' output. A directory that already exists is
/// left as it is (it may be the operator's own), with a warning when other
/// users can read it. Returns the `logs` directory.
fn private_dirs(data_dir: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let log_dir = data_dir.join("logs");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&log_dir)?;
    for dir in [data_dir, log_dir.as_path()] {
        let mode = std::fs::metadata(dir)?.permissions().mode();
        if mode & 0o077 != 0 {
            say(&format!(
                "warning: other users can read {} (mode {:o}); `chmod 700` it",
                dir.display(),
                mode & 0o777
            ));
        }
    }
    Ok(log_dir)
}

/// Command lines of the services, in [`SERVICES`] order.
fn service_specs(
    plan: &Plan,
    security: Option<&Security>,
    programs: &[PathBuf],
    exe_dir: &Path,
    data_dir: &Path,
    log_dir: &Path,
) -> Result<Vec<ChildSpec>> {
    let path_env = children_path(exe_dir)?;
    let database_url = plan
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}/mentat.db", data_dir.display()));
    let data = data_dir.as_os_str().to_owned();
    let specs = SERVICES
        .iter()
        .zip(programs)
        .map(|(name, program)| -> Result<ChildSpec> {
            let mut args: Vec<OsString> = vec!["--nats".into(), plan.nats_url.clone().into()];
            match security {
                Some(security) => args.extend([
                    "--nats-creds".into(),
                    security.service_creds(name).into_os_string(),
                ]),
                None => args.push("--insecure".into()),
            }
            if let Some(ca) = &plan.identity.ca {
                args.extend(["--nats-ca".into(), ca.clone().into_os_string()]);
            }
            if let Some(security) = security {
                // The host (and router id) its identity may speak for.
                let flag = match *name {
                    "executor" => Some("--host-id"),
                    "router" => Some("--router-id"),
                    _ => None,
                };
                if let Some(flag) = flag {
                    args.extend([flag.into(), security.host.clone().into()]);
                }
            }
            if plan.nats_cluster.is_some() && std::env::var_os("MENTAT_STREAM_REPLICAS").is_none() {
                // Known, not guessed: the cluster may still be forming when a service connects.
                args.extend([
                    "--stream-replicas".into(),
                    CLUSTER_REPLICAS.to_string().into(),
                ]);
            }
            if *name != "router" {
                let admin = admin_of(plan.admin, name)?;
                args.extend(["--admin-listen".into(), admin.to_string().into()]);
            }
            match *name {
                "planner" => {
                    args.extend(["--data-dir".into(), data.clone()]);
                }
                "executor" => args.extend([
                    "--data-dir".into(),
                    data.clone(),
                    "--advertise-ip".into(),
                    "127.0.0.1".into(),
                ]),
                "router" => args.extend([
                    "--listen".into(),
                    plan.http.clone().into(),
                    "--admin-listen".into(),
                    plan.admin.to_string().into(),
                ]),
                _ => {}
            }
            // In the environment, which only the owner reads, not in `ps`.
            let env = match *name {
                "planner" => vec![("MENTAT_DATABASE_URL", database_url.clone().into())],
                _ => Vec::new(),
            };
            Ok(ChildSpec {
                name,
                program: program.clone(),
                args,
                path_env: Some(path_env.clone()),
                env,
                log_dir: log_dir.to_owned(),
                echo: true,
            })
        });
    let specs = specs.collect::<Result<Vec<_>>>()?;
    admin_ports_free(plan.admin, &ADMIN_OFFSETS)?;
    say(&format!(
        "metrics: {}",
        metrics_addresses(
            plan.admin,
            &["router", "planner", "health-watcher", "executor"]
        )?
    ));
    Ok(specs)
}

/// Where each service serves `/metrics`: the router on `--admin`, the
/// others on the ports after it, in the order of [`ADMIN_OFFSETS`] (all on
/// a port of their own choosing when `--admin` asks for port 0).
pub fn admin_of(router: std::net::SocketAddr, service: &str) -> Result<std::net::SocketAddr> {
    let offset = ADMIN_OFFSETS
        .iter()
        .position(|s| *s == service)
        .unwrap_or(0);
    if router.port() == 0 {
        return Ok(router);
    }
    let port = router.port().checked_add(offset as u16).ok_or_else(|| {
        Error::Usage(format!(
            "--admin {router}: the services' metrics take the {} ports from it up; \
                 give a port below {}",
            ADMIN_OFFSETS.len(),
            u16::MAX - ADMIN_OFFSETS.len() as u16 + 2
        ))
    })?;
    Ok(std::net::SocketAddr::new(router.ip(), port))
}

/// The services with a `/metrics` of their own, by port offset from the
/// router's admin address.
pub const ADMIN_OFFSETS: [&str; 5] = [
    "router",
    "planner",
    "health-watcher",
    "executor",
    "notifier",
];

/// Each of `services`' admin addresses can be listened on now: a service
/// that cannot bind its own would not start, so say which before anything
/// starts.
fn admin_ports_free(router: std::net::SocketAddr, services: &[&str]) -> Result<()> {
    for service in services {
        let addr = admin_of(router, service)?;
        if let Err(e) = std::net::TcpListener::bind(addr) {
            return Err(Error::Usage(format!(
                "--admin {router}: the {service}'s metrics would listen on {addr}, which is \
                 taken ({e}); give --admin an address whose next {} ports are free",
                services.len() - 1
            )));
        }
    }
    Ok(())
}

/// `router http://…/metrics, planner …` for the services named.
fn metrics_addresses(router: std::net::SocketAddr, services: &[&str]) -> Result<String> {
    if router.port() == 0 {
        return Ok(format!(
            "{} on ports of their own on {} (each logs its address)",
            services.join(", "),
            router.ip()
        ));
    }
    let mut shown = Vec::new();
    for service in services {
        shown.push(format!(
            "{service} http://{}/metrics",
            admin_of(router, service)?
        ));
    }
    Ok(shown.join(", "))
}

/// A child under supervision: its stop token and its supervising task.
struct Supervised {
    name: &'static str,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Supervised {
    fn start(spec: ChildSpec, kill: &CancellationToken) -> Self {
        let stop = CancellationToken::new();
        let name = spec.name;
        let task = tokio::spawn(child::supervise(spec, stop.clone(), kill.clone()));
        Supervised { name, stop, task }
    }

    /// SIGTERM, then wait up to `grace`; SIGKILL (through `kill`) after that.
    async fn stop_all(children: Vec<Supervised>, grace: Duration, kill: &CancellationToken) {
        let names: Vec<&str> = children.iter().map(|c| c.name).collect();
        for c in &children {
            c.stop.cancel();
        }
        let all = join_all(children.into_iter().map(|c| c.task));
        tokio::pin!(all);
        if tokio::time::timeout(grace, &mut all).await.is_err() {
            say(&format!(
                "{} did not stop within {}s; killing",
                names.join(", "),
                grace.as_secs()
            ));
            kill.cancel();
            all.await;
        }
    }
}

/// Stop the services (router first, executor last), then our nats-server.
async fn shutdown(children: Vec<Supervised>, nats: NatsChild) {
    let kill = nats.kill.clone();
    Supervised::stop_all(children, STOP_GRACE, &kill).await;
    if !nats.servers.is_empty() {
        Supervised::stop_all(nats.servers, NATS_GRACE, &kill).await;
    }
}

/// The nats-servers we started, if any, and the shared kill token.
struct NatsChild {
    servers: Vec<Supervised>,
    kill: CancellationToken,
}

/// Where the nats-servers `mt up` starts find their configuration, keep
/// their data and write their logs.
struct NatsFiles<'a> {
    /// Mentat's identities and their permissions, unless `--insecure`.
    config: Option<&'a Path>,
    data_dir: &'a Path,
    log_dir: &'a Path,
}

/// Use the NATS server at the URL, or start one. `None` when a signal came
/// while it was starting (it is stopped again).
async fn start_nats(
    plan: &Plan,
    files: &NatsFiles<'_>,
    kill: &CancellationToken,
    signals: &mut Signals,
) -> Result<Option<NatsChild>> {
    let (host, port) = nats::host_port(&plan.nats_url).ok_or_else(|| {
        Error::Usage(format!(
            "cannot read host and port from --nats {}",
            plan.nats_url
        ))
    })?;
    if nats::answers(&host, port, Duration::from_secs(1)).await {
        // A server Mentat cannot work with stops `mt up` here, before any
        // service starts against it.
        crate::client::connect_as(&plan.nats_url, plan.identity.clone())
            .await
            .map_err(|e| match e {
                Error::Unreachable { url, detail } => Error::Runtime(format!(
                    "something answers at {url}, but not as a NATS server Mentat can use: {detail}"
                )),
                e => e,
            })?;
        say(&format!("using the NATS server at {}", plan.nats_url));
        if let Some(config) = files.config {
            say(&format!(
                "it enforces Mentat's permissions only when it runs with {}",
                config.display()
            ));
        }
        return Ok(Some(NatsChild {
            servers: Vec::new(),
            kill: kill.clone(),
        }));
    }
    if !nats::is_local(&host) {
        return Err(Error::Runtime(format!(
            "nothing answers at {} and {host} is not this machine; start that NATS server or use a local URL",
            plan.nats_url
        )));
    }
    let spec = nats::server_spec(&host, port, files.config, files.data_dir, files.log_dir)
        .map_err(|why| {
            Error::Runtime(format!("nothing answers at {}, and {why}", plan.nats_url))
        })?;
    say(&format!(
        "starting {} on {host}:{port} (log: {})",
        spec.program.display(),
        files.log_dir.join("nats.log").display()
    ));
    let server = Supervised::start(spec, kill);
    let started = NatsChild {
        servers: vec![server],
        kill: kill.clone(),
    };
    let ready = tokio::select! {
        ready = nats::wait_ready(&host, port, NATS_READY) => ready,
        () = signals.recv() => {
            shutdown(Vec::new(), started).await;
            return Ok(None);
        }
    };
    if !ready {
        shutdown(Vec::new(), started).await;
        return Err(Error::Runtime(format!(
            "nats-server did not accept connections on {host}:{port} within {}s; see {}",
            NATS_READY.as_secs(),
            files.log_dir.join("nats.log").display()
        )));
    }
    Ok(Some(started))
}

/// Start the nodes of `cluster` and wait until each accepts connections.
/// `None` when a signal came first (they are stopped again).
async fn start_cluster(
    cluster: &nats::Cluster,
    files: &NatsFiles<'_>,
    kill: &CancellationToken,
    signals: &mut Signals,
) -> Result<Option<NatsChild>> {
    for (port, what) in cluster.ports() {
        if nats::answers(&cluster.host, port, Duration::from_secs(1)).await {
            return Err(Error::Runtime(format!(
                "something already listens on {}:{port}, which --nats-cluster {} needs as {what}; \
                 stop it or pick other ports with --nats",
                cluster.host, cluster.size
            )));
        }
    }
    let specs = cluster
        .specs(files.config, files.data_dir, files.log_dir)
        .map_err(|why| Error::Runtime(format!("cannot start a NATS cluster: {why}")))?;
    say(&format!(
        "starting a {}-node NATS cluster: {} (logs: {})",
        cluster.size,
        cluster.urls(),
        files.log_dir.join("nats-*.log").display()
    ));
    let started = NatsChild {
        servers: specs
            .into_iter()
            .map(|s| Supervised::start(s, kill))
            .collect(),
        kill: kill.clone(),
    };
    let all_ready = async {
        for port in cluster.client_ports() {
            if !nats::wait_ready(&cluster.host, port, NATS_READY).await {
                return Some(port);
            }
        }
        None
    };
    let not_ready = tokio::select! {
        not_ready = all_ready => not_ready,
        () = signals.recv() => {
            shutdown(Vec::new(), started).await;
            return Ok(None);
        }
    };
    if let Some(port) = not_ready {
        shutdown(Vec::new(), started).await;
        return Err(Error::Runtime(format!(
            "a nats-server of the cluster did not accept connections on {}:{port} within {}s; see {}",
            cluster.host,
            NATS_READY.as_secs(),
            files.log_dir.display()
        )));
    }
    Ok(Some(started))
}

/// SIGINT and SIGTERM, whichever comes first.
struct Signals {
    int: Signal,
    term: Signal,
}

impl Signals {
    fn new() -> Result<Self> {
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}
