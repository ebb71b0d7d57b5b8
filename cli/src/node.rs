//! `mt node`: this machine joins a Mentat cluster as one more host: an
//! executor and a router, supervised in the foreground, talking to the
//! cluster's NATS. The planner and the health-watcher run elsewhere (where
//! `mt up` runs, or as their own processes).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use crate::error::Result;
use crate::supervisor::{self, NodePlan};

/// `mt node`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// This host's id, also its router's id [default: the hostname, made
    /// into a valid id by the executor].
    #[arg(long, value_name = "ID")]
    pub host_id: Option<String>,
    /// The address of this machine that replicas listen on and the other
    /// hosts reach them at [default: its first non-loopback IPv4 address].
    #[arg(long, value_name = "IP")]
    pub advertise_ip: Option<IpAddr>,
    /// Address the router listens on.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8080")]
    pub http: String,
    /// Address of the router's admin server (`GET /metrics`); the executor
    /// serves its own three ports up, as under `mt up`.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9180")]
    pub admin: SocketAddr,
    /// Replicas this host offers to run.
    #[arg(long, value_name = "N")]
    pub capacity: Option<u32>,
    /// Where the executor's state and the replicas' and services' logs are kept.
    #[arg(long, value_name = "DIR", default_value = ".mentat")]
    pub data_dir: PathBuf,
    /// Run only programs whose real path matches this pattern (repeatable;
    /// the executor's `--allow-command`, e.g. `/srv/app/bin/*`).
    #[arg(long, value_name = "PATTERN")]
    pub allow_command: Vec<String>,
}

/// Run this host's executor and router until Ctrl-C.
pub async fn run(nats: &str, access: mentat_runtime::NatsAccess, args: Args) -> Result<()> {
    supervisor::run_node(NodePlan {
        insecure: access.insecure,
        ca: access.nats_ca,
        nats_url: nats.to_owned(),
        data_dir: args.data_dir,
        host_id: args.host_id,
        advertise_ip: args.advertise_ip,
        http: args.http,
        admin: args.admin,
        capacity: args.capacity,
        allow_command: args.allow_command,
    })
    .await
}
