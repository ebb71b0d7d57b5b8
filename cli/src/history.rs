//! `mt history SERVICE [--events]`: the deployments of a service, or the
//! raw events of its stream.

use mentat_domain::command::HistoryReply;

use crate::client;
use crate::error::{Error, Result};
use crate::output;

/// `mt history`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The service.
    pub service: String,
    /// Show the raw events of the service's stream instead of deployments.
    #[arg(long)]
    pub events: bool,
    /// Print the planner's reply as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Ask the planner and print its answer.
pub async fn run(nats: &str, args: Args) -> Result<()> {
    let bus = client::connect(nats).await?;
    let reply = client::history(&bus, &args.service, args.events, client::QUERY_TIMEOUT).await?;
    if args.json {
        output::print(output::json_pretty(&reply));
    }
    match reply {
        HistoryReply::Ok { .. } if args.json => Ok(()),
        HistoryReply::Ok {
            deployments,
            events,
            ..
        } => {
            if args.events {
                output::print(output::events_table(&events));
            } else {
                output::print(output::history_table(&deployments));
            }
            Ok(())
        }
        HistoryReply::Rejected { kind, reason } => Err(Error::Rejected { kind, reason }),
    }
}
