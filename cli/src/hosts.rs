//! `mt hosts`: the executor hosts and where each stands (live, suspect,
//! lost); `mt hosts release`: end a hold on re-placement after a mass host
//! loss.

use mentat_domain::command::{HeldStatus, HostStatus, ReleaseHosts, StatusReply};

use crate::client;
use crate::error::{Error, Result};
use crate::output;
use crate::send::{send_and_print, WhoArgs};

/// `mt hosts`
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Print the hosts as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
enum Cmd {
    /// Release the hold on re-placement (MassHostLossHeld): the replicas of
    /// lost hosts are placed again on the hosts that are left.
    Release(ReleaseArgs),
}

/// `mt hosts release`
#[derive(Debug, clap::Args)]
struct ReleaseArgs {
    /// Why the hosts that are left may take the lost hosts' replicas
    /// (required; recorded in the log).
    #[arg(long, value_name = "TEXT", required = true)]
    reason: String,
    /// Who asks, recorded in the log [default: $MENTAT_ACTOR, else $USER, else mt].
    #[arg(long, value_name = "NAME")]
    actor: Option<String>,
    /// Print the reply as JSON.
    #[arg(long)]
    json: bool,
}

/// List the hosts, or release a hold.
pub async fn run(nats: &str, args: Args) -> Result<()> {
    match args.command {
        Some(Cmd::Release(r)) => {
            let who = WhoArgs {
                actor: r.actor,
                reason: Some(r.reason),
            };
            let cmd = ReleaseHosts {
                command_id: Some(mentat_bus::new_id()),
                signature: None,
                actor: who.actor(),
                reason: who.reason,
            };
            send_and_print(nats, "release_hosts", &cmd, r.json).await
        }
        None => list(nats, args.json).await,
    }
}

async fn list(nats: &str, json: bool) -> Result<()> {
    let bus = client::connect(nats).await?;
    match client::status(&bus, None).await? {
        StatusReply::Ok {
            host_states, held, ..
        } => {
            if json {
                output::print(output::json_pretty(&host_states));
            } else {
                output::print(hosts_table(&host_states, held.as_ref()));
            }
            Ok(())
        }
        StatusReply::Rejected { kind, reason } => Err(Error::Rejected { kind, reason }),
    }
}

/// The hosts as a table, and the hold on re-placement if one is on.
pub fn hosts_table(hosts: &[HostStatus], held: Option<&HeldStatus>) -> String {
    let mut out = Vec::new();
    if hosts.is_empty() {
        out.push("no executor host has joined yet (is an executor running?)".to_owned());
    } else {
        let rows: Vec<Vec<String>> = hosts
            .iter()
            .map(|h| {
                vec![
                    h.host.clone(),
                    h.state.as_str().to_owned(),
                    h.replicas.to_string(),
                    h.capacity.to_string(),
                    h.suspect_since_ms
                        .map(|t| format!("{} UTC", output::utc(t)))
                        .unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        out.push(output::table(
            "",
            &["HOST", "STATE", "REPLICAS", "CAPACITY", "SUSPECT SINCE"],
            &rows,
        ));
    }
    out.extend(held.map(held_line));
    out.join("\n\n")
}

/// `re-placement held since ...`, with what releases it.
pub fn held_line(held: &HeldStatus) -> String {
    format!(
        "re-placement held since {} UTC: {} went suspect together (MassHostLossHeld); their replicas \
         are not placed again until they return or `mt hosts release --reason TEXT`",
        output::utc(held.since_ms),
        held.hosts.join(", ")
    )
}
