//! The executor's configuration: flags, environment variables and defaults,
//! validated before anything starts so that a bad value exits with 64 and
//! names its field.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser};

use crate::Error;
pub use mentat_domain::limits::sanitise_host_id;

/// Everything the executor needs to know at start-up.
///
/// Each field is a flag, most with an environment variable; flags win over
/// the environment, which wins over the default.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "mentat-executor",
    version,
    about = "Runs the replicas of one host: starts and stops processes on request from the planner and reports what happens to them."
)]
pub struct Config {
    /// NATS server to connect to; several URLs separated by commas for a
    /// cluster (the executor moves to another when the one it uses goes away).
    #[arg(long, env = "MENTAT_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats: String,
    /// Copies JetStream keeps of each of Mentat's streams: `auto` (3 when
    /// the NATS cluster announces three or more servers, else 1; streams
    /// that exist are left as they are) or 1 to 5 (streams that exist are
    /// updated to it). Give every service the same value.
    #[arg(long, env = "MENTAT_STREAM_REPLICAS", default_value = "auto")]
    pub stream_replicas: mentat_bus::Replicas,
    /// Credentials for NATS, or `--insecure`.
    #[command(flatten)]
    pub access: mentat_runtime::NatsAccess,
    /// Where `/metrics` is served, if anywhere.
    #[command(flatten)]
    pub admin: mentat_runtime::metrics::AdminListen,

    /// Id of this host: 1 to 63 characters of a-z, 0-9 and `-`. Intents for
    /// other hosts are ignored. Defaults to the machine's hostname, lowercased
    /// and with every other character replaced by `-`.
    #[arg(long = "host-id", env = "MENTAT_HOST_ID", default_value_t = default_host_id())]
    pub host_id: String,

    /// Address of this host that its replicas listen on and that routers
    /// and the health-watcher on other hosts reach them at. It must be one
    /// of this host's addresses (any of 127.0.0.0/8 counts). Default: the
    /// host's first non-loopback IPv4 address, else 127.0.0.1; `mt up` gives
    /// 127.0.0.1.
    #[arg(long = "advertise-ip", env = "MENTAT_ADVERTISE_IP")]
    pub advertise_ip: Option<IpAddr>,

    /// Directory for Mentat's files. The executor keeps its state file and
    /// the replicas' logs under `<data-dir>/executor/<host-id>/`.
    #[arg(long = "data-dir", env = "MENTAT_DATA_DIR", default_value = ".mentat")]
    pub data_dir: PathBuf,

    /// How many replicas this host offers to run, as announced in heartbeats.
    /// The planner places replicas within it; the executor only warns when
    /// asked for more.
    #[arg(long, env = "MENTAT_CAPACITY", default_value_t = 64)]
    pub capacity: u32,

    /// Seconds a replica has between SIGTERM and SIGKILL when it is stopped.
    #[arg(
        long = "stop-grace-secs",
        env = "MENTAT_STOP_GRACE_SECS",
        default_value_t = 10
    )]
    pub stop_grace_secs: u64,

    /// Milliseconds between two heartbeats (at least 10).
    #[arg(
        long = "heartbeat-ms",
        env = "MENTAT_HEARTBEAT_MS",
        default_value_t = 1000
    )]
    pub heartbeat_ms: u64,

    /// Stop every replica when the executor shuts down (the default). With
    /// `--leave-replicas-running` the replicas outlive the executor and the
    /// next executor started with the same data directory adopts them: this
    /// is how to upgrade the executor without touching its replicas.
    #[arg(long = "leave-replicas-running", action = ArgAction::SetFalse)]
    pub stop_replicas_on_shutdown: bool,

    /// Run only programs whose real path matches one of these patterns
    /// (repeatable; `*` is any run of characters but `/`, `**` any run,
    /// `?` one character; for example `/usr/bin/*` or `/srv/app/bin/web`).
    /// A replica whose program is not allowed is not started: its exit is
    /// reported with the reason, and its deployment fails with it. Without
    /// the flag every program may run.
    #[arg(long = "allow-command", value_name = "PATTERN")]
    pub allow_command: Vec<String>,
}

impl Config {
    /// A configuration with every default, talking to `nats` and keeping its
    /// files under `data_dir`: what tests and embedders start from.
    pub fn new(nats: impl Into<String>, host_id: impl Into<String>, data_dir: PathBuf) -> Self {
        Self {
            nats: nats.into(),
            stream_replicas: mentat_bus::Replicas::Auto,
            access: mentat_runtime::NatsAccess::default(),
            admin: Default::default(),
            host_id: host_id.into(),
            advertise_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            data_dir,
            capacity: 64,
            stop_grace_secs: 10,
            heartbeat_ms: 1000,
            stop_replicas_on_shutdown: true,
            allow_command: Vec::new(),
        }
    }

    /// Check every value; the error names the first bad field.
    pub fn validate(&self) -> Result<(), Error> {
        if !is_valid_host_id(&self.host_id) {
            return Err(Error::Config {
                field: "host-id",
                message: format!(
                    "`{}` must be 1-63 characters of a-z, 0-9 and -",
                    self.host_id
                ),
            });
        }
        if let Err(e) = mentat_bus::client::server_addrs(&self.nats) {
            return Err(Error::Config {
                field: "nats",
                message: format!("must name one NATS server or several separated by commas: {e}"),
            });
        }
        if let Some(ip) = self.advertise_ip {
            if !is_local(ip) {
                return Err(Error::Config {
                    field: "advertise-ip",
                    message: format!(
                        "{ip} is not an address of this host (its addresses: {}); \
                         give one of them, or leave the flag out to use the first",
                        local_addrs()
                            .iter()
                            .map(IpAddr::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
        }
        if self.capacity == 0 {
            return Err(Error::Config {
                field: "capacity",
                message: "must be at least 1".into(),
            });
        }
        if let Err(message) = crate::allow::AllowList::new(self.allow_command.clone()) {
            return Err(Error::Config {
                field: "allow-command",
                message,
            });
        }
        if self.heartbeat_ms < 10 {
            return Err(Error::Config {
                field: "heartbeat-ms",
                message: "must be at least 10".into(),
            });
        }
        Ok(())
    }

    /// The address replicas listen on: `--advertise-ip`, or the host's
    /// first non-loopback IPv4 address, or 127.0.0.1.
    pub fn advertise_ip(&self) -> IpAddr {
        self.advertise_ip.unwrap_or_else(|| {
            local_addrs()
                .into_iter()
                .find(|ip| ip.is_ipv4() && !ip.is_loopback())
                .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
        })
    }

    /// Time between SIGTERM and SIGKILL.
    pub fn stop_grace(&self) -> Duration {
        Duration::from_secs(self.stop_grace_secs)
    }

    /// Time between heartbeats.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }

    /// The programs this host may run (`--allow-command`), once validated.
    pub fn allow_list(&self) -> crate::allow::AllowList {
        crate::allow::AllowList::new(self.allow_command.clone()).unwrap_or_default()
    }

    /// `<data-dir>/executor/<host-id>`: where this executor keeps its files.
    pub fn host_dir(&self) -> PathBuf {
        self.data_dir.join("executor").join(&self.host_id)
    }
}

pub use mentat_domain::limits::is_valid_host_id;

/// Every address of this host's interfaces, in the kernel's order.
pub fn local_addrs() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|a| {
            let addr = a.address?;
            if let Some(v4) = addr.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                addr.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect()
}

/// True when `ip` is an address of this host: a loopback address (Linux
/// answers on all of 127.0.0.0/8) or one of its interfaces'.
pub fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || local_addrs().contains(&ip)
}

/// The machine's hostname made into a valid host id, or `localhost` when
/// it cannot be read.
pub fn default_host_id() -> String {
    let name = nix::unistd::gethostname()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    sanitise_host_id(&name)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn hostnames_become_valid_host_ids() {
        assert_eq!(sanitise_host_id("Web-01.example.COM"), "web-01-example-com");
        assert_eq!(sanitise_host_id("--a_b--"), "a-b");
        assert_eq!(sanitise_host_id(""), "localhost");
        assert_eq!(sanitise_host_id("..."), "localhost");
        assert_eq!(sanitise_host_id(&"x".repeat(100)).len(), 63);
        assert!(is_valid_host_id(&default_host_id()));
    }

    #[test]
    fn defaults_match_the_documentation() {
        let c = Config::try_parse_from(["mentat-executor", "--host-id", "h1"]).expect("parse");
        assert_eq!(c.capacity, 64);
        assert_eq!(c.stop_grace_secs, 10);
        assert_eq!(c.heartbeat_ms, 1000);
        assert!(c.stop_replicas_on_shutdown);
        assert_eq!(c.host_dir(), PathBuf::from(".mentat/executor/h1"));
        let c = Config::try_parse_from(["x", "--host-id", "h1", "--leave-replicas-running"])
            .expect("parse");
        assert!(!c.stop_replicas_on_shutdown);
    }

    #[test]
    fn the_default_advertised_address_is_one_of_the_hosts() {
        let c = Config::try_parse_from(["mentat-executor", "--host-id", "h1"]).expect("parse");
        assert_eq!(c.advertise_ip, None);
        assert!(is_local(c.advertise_ip()));
        assert!(local_addrs().iter().any(IpAddr::is_loopback));
    }

    #[test]
    fn bad_values_name_their_field() {
        let mut c = Config::new("nats://x", "Bad_Host", PathBuf::from("d"));
        assert!(matches!(
            c.validate(),
            Err(Error::Config {
                field: "host-id",
                ..
            })
        ));
        c.host_id = "ok".into();
        // TEST-NET-3: documentation only, on no interface of any machine.
        c.advertise_ip = Some("203.0.113.7".parse().unwrap());
        assert!(matches!(
            c.validate(),
            Err(Error::Config {
                field: "advertise-ip",
                ..
            })
        ));
        c.advertise_ip = Some("127.0.0.2".parse().unwrap());
        c.validate().expect("all of 127.0.0.0/8 is local");
        c.capacity = 0;
        assert!(matches!(
            c.validate(),
            Err(Error::Config {
                field: "capacity",
                ..
            })
        ));
    }
}
