//! `mt up`: flags of the local all-in-one mode; the work is in [`crate::supervisor`].

use std::path::PathBuf;

use mentat_runtime::secrets;

use crate::error::{Error, Result};
use crate::supervisor::{self, Plan};

/// `mt up`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Service file, validated first and applied once the planner answers.
    #[arg(long, value_name = "FILE", default_value = "mentat.yaml")]
    pub config: PathBuf,
    /// Where NATS data, the SQLite database and the logs are kept.
    #[arg(long, value_name = "DIR", default_value = ".mentat")]
    pub data_dir: PathBuf,
    /// The planner's database [default: sqlite://<data-dir>/mentat.db].
    /// A URL with a password is refused here (every local user reads
    /// command lines): give it in MENTAT_DATABASE_URL or
    /// --database-url-file.
    #[arg(long, value_name = "URL", env = "MENTAT_DATABASE_URL")]
    pub database_url: Option<String>,
    /// A file whose first line is the planner's database URL.
    #[arg(
        long,
        value_name = "PATH",
        env = "MENTAT_DATABASE_URL_FILE",
        conflicts_with = "database_url"
    )]
    pub database_url_file: Option<PathBuf>,
    /// Address the router listens on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub http: String,
    /// Address of the router's admin server (`GET /metrics`); the planner,
    /// health-watcher, executor and notifier serve theirs on the next four
    /// ports.
    /// Give each `mt up` on one machine its own.
    #[arg(
        long,
        value_name = "ADDR",
        env = "MENTAT_ROUTER_ADMIN_LISTEN",
        default_value = "127.0.0.1:9180"
    )]
    pub admin: std::net::SocketAddr,
    /// Run N nats-server nodes (3 to 5) clustered with JetStream on this
    /// machine instead of one: client ports from the --nats port up, route
    /// ports 2000 above them, a store each under <data-dir>/nats/. The
    /// services get every node's URL and streams get 3 replicas.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(3..=5))]
    pub nats_cluster: Option<u16>,
    /// Serve NATS over TLS (and the routes of --nats-cluster): a CA and
    /// certificates of its own are made in <data-dir>/tls, and every
    /// component verifies the server against the CA (<data-dir>/tls/ca.pem,
    /// for other shells: MENTAT_NATS_CA or --nats-ca).
    #[arg(long)]
    pub tls: bool,
}

/// Run the whole system in the foreground until Ctrl-C. Unless
/// `access.insecure`, every component gets its own NATS identity, made
/// under `<data-dir>/identities` (see [`supervisor::Security`]).
pub async fn run(nats: &str, access: mentat_runtime::NatsAccess, args: Args) -> Result<()> {
    if secrets::password_on_command_line(std::env::args_os(), &["--database-url"]).is_some() {
        return Err(Error::Usage(secrets::password_on_command_line_error(
            "--database-url",
            "MENTAT_DATABASE_URL",
        )));
    }
    let database_url = match &args.database_url_file {
        Some(path) => Some(secrets::read_secret_file(path).map_err(Error::Usage)?),
        None => args.database_url,
    };
    supervisor::run(Plan {
        nats_url: nats.to_owned(),
        config: args.config,
        data_dir: args.data_dir,
        database_url,
        http: args.http,
        admin: args.admin,
        nats_cluster: args.nats_cluster.map(usize::from),
        insecure: access.insecure,
        tls: args.tls,
        identity: Default::default(),
    })
    .await
}
