//! `mt apply -f FILE`: validate a service file and send it to the planner.

use std::path::{Path, PathBuf};

use mentat_bus::Bus;
use mentat_domain::command::Apply;
use mentat_domain::Reply;
use mentat_runtime::config::{self, ServiceFile};

use crate::client;
use crate::error::{Error, Result};
use crate::output;

/// `mt apply`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The service file (see examples/mentat.yaml).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
    /// Why, recorded in the log.
    #[arg(long)]
    pub reason: Option<String>,
    /// Print the reply as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Validate the file (nothing is sent when it is invalid), then apply it.
pub async fn run(nats: &str, args: Args) -> Result<()> {
    let file = config::load_file(&args.file)?;
    let bus = client::connect(nats).await?;
    let reply = send(&bus, file, &args.file, args.reason).await?;
    if args.json {
        output::print(output::json(&reply));
    }
    match reply {
        Reply::Accepted { .. } if !args.json => {
            output::print(output::reply(&reply));
            Ok(())
        }
        Reply::Accepted { .. } => Ok(()),
        Reply::Rejected { kind, reason } => Err(Error::Rejected { kind, reason }),
    }
}

/// Send an `Apply` of the services and cluster block of `config`, read
/// from `file`, and return the reply.
pub async fn send(
    bus: &Bus,
    config: ServiceFile,
    file: &Path,
    reason: Option<String>,
) -> Result<Reply> {
    let cmd = Apply {
        command_id: Some(mentat_bus::new_id()),
        signature: None,
        services: config.services,
        cluster: config.cluster,
        security: config.security,
        notify: config.notify,
        environments: config.environments,
        source: Some(file.display().to_string()),
        actor: Some(client::default_actor()),
        reason,
    };
    client::command(bus, "apply", &cmd).await
}
