//! `mt status [SERVICE]`: what runs where, and the deployment in flight.

use mentat_domain::command::{HostState, StatusReply};

use mentat_domain::environment::normalise;

use crate::client;
use crate::error::{Error, Result};
use crate::output;

/// `mt status`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this service [default: every service].
    pub service: Option<String>,
    /// Print the planner's reply as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Ask the planner and print its answer.
pub async fn run(nats: &str, args: Args) -> Result<()> {
    let bus = client::connect(nats).await?;
    let service = args.service.as_deref().map(normalise);
    let reply = client::status(&bus, service).await?;
    if args.json {
        output::print(output::json_pretty(&reply));
    }
    match reply {
        StatusReply::Ok {
            services,
            hosts,
            log_unavailable_since_ms,
            planners,
            routers,
            host_states,
            held,
            ..
        } => {
            if !args.json {
                output::print(output::status_report(
                    &services,
                    &hosts,
                    log_unavailable_since_ms,
                    planners.as_ref(),
                    &routers,
                ));
                let away: Vec<String> = host_states
                    .iter()
                    .filter(|h| h.state != HostState::Live)
                    .map(|h| format!("{} ({})", h.host, h.state.as_str()))
                    .collect();
                if !away.is_empty() {
                    output::print(format!("\nhosts away: {}", away.join(", ")));
                }
                if let Some(held) = &held {
                    output::print(format!("\n{}", crate::hosts::held_line(held)));
                }
                // What each environment serves, once releases are used (a
                // planner that does not answer releases shows none).
                let environments = crate::release::ask(&bus, &Default::default()).await;
                if let Ok((releases, environments)) = environments {
                    if !releases.is_empty() {
                        output::print(format!(
                            "\n{}",
                            crate::release::environments_text(&environments)
                        ));
                    }
                }
            }
            Ok(())
        }
        StatusReply::Rejected { kind, reason } => Err(Error::Rejected { kind, reason }),
    }
}
