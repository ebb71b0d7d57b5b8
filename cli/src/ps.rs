//! `mt ps [SERVICE]`: every instance, with its address, uptime, health,
//! weight and share of the traffic (from `mentat.query.status`).

use std::time::{SystemTime, UNIX_EPOCH};

use mentat_domain::command::StatusReply;

use crate::client;
use crate::error::{Error, Result};
use crate::output;
use crate::send::check_service;

/// `mt ps`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this service's instances [default: every service's].
    pub service: Option<String>,
    /// Print the instances as a JSON array.
    #[arg(long)]
    pub json: bool,
}

/// Ask the planner and print its instances.
pub async fn run(nats: &str, args: Args) -> Result<()> {
    if let Some(service) = &args.service {
        check_service(service)?;
    }
    let bus = client::connect(nats).await?;
    match client::status(&bus, args.service).await? {
        StatusReply::Ok { services, .. } if args.json => {
            output::print(output::json_pretty(&output::ps_rows(&services)));
            Ok(())
        }
        StatusReply::Ok { services, .. } => {
            output::print(output::ps_table(&services, now_ms()));
            Ok(())
        }
        StatusReply::Rejected { kind, reason } => Err(Error::Rejected { kind, reason }),
    }
}

/// The local clock, in ms since the Unix epoch (only for uptimes).
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
