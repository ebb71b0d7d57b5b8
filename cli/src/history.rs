//! `mt history SERVICE [--events]`: the deployments of a service, or the
//! raw events of its stream; `mt history --env ENV`: the releases
//! deployed to an environment.

use mentat_domain::command::HistoryReply;
use mentat_domain::environment::normalise;
use mentat_domain::release::ReleaseQuery;

use crate::client;
use crate::error::{Error, Result};
use crate::output;

/// `mt history`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The service (`web`, `web@staging`).
    #[arg(required_unless_present = "env")]
    pub service: Option<String>,
    /// Instead, the releases deployed to this environment, oldest first.
    #[arg(long, value_name = "ENV", conflicts_with = "events")]
    pub env: Option<String>,
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
    let Some(service) = args.service.as_deref().map(normalise) else {
        return environment_history(&bus, args.env.unwrap_or_default(), args.json).await;
    };
    let reply = client::history(&bus, &service, args.events, client::QUERY_TIMEOUT).await?;
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

/// `mt history --env ENV`: the release deployments of an environment.
async fn environment_history(bus: &mentat_bus::Bus, env: String, json: bool) -> Result<()> {
    let query = ReleaseQuery {
        tag: None,
        environment: Some(env),
    };
    let (_, environments) = crate::release::ask(bus, &query).await?;
    let history: Vec<_> = environments.into_iter().flat_map(|e| e.history).collect();
    if json {
        output::print(output::json_pretty(&history));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = history
        .iter()
        .map(|h| {
            vec![
                h.tag.clone(),
                format!("{:?}", h.how).to_lowercase(),
                h.outcome.replace('_', " "),
                output::utc(h.started_at_ms),
                h.switched_at_ms.map(output::utc).unwrap_or_default(),
                h.actor.clone().unwrap_or_default(),
                [h.why.clone(), h.reason.clone()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join("; "),
            ]
        })
        .collect();
    output::print(output::table(
        "",
        &[
            "RELEASE", "HOW", "OUTCOME", "STARTED", "SWITCHED", "ACTOR", "WHY",
        ],
        &rows,
    ));
    Ok(())
}
