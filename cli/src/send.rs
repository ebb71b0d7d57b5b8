//! Sending a command: the flags every command shares, printing the
//! planner's reply, and following the deployment it started or steers.

use std::time::Duration;

use mentat_bus::{subject, Bus};
use mentat_domain::environment::{is_valid_reference, normalise};
use mentat_domain::Reply;
use serde::Serialize;

use crate::client;
use crate::error::{Error, Result};
use crate::follow::{Follow, Goal};
use crate::output;

/// Who asks and why, recorded in the log with the command.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct WhoArgs {
    /// Who asks, recorded in the log [default: $MENTAT_ACTOR, else $USER, else mt].
    #[arg(long, value_name = "NAME")]
    pub actor: Option<String>,
    /// Why, recorded in the log.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

impl WhoArgs {
    /// The actor to send: `--actor`, else [`client::default_actor`].
    pub fn actor(&self) -> Option<String> {
        Some(self.actor.clone().unwrap_or_else(client::default_actor))
    }
}

/// How a command that starts or steers a deployment follows it.
#[derive(Debug, Clone, clap::Args)]
pub struct FollowArgs {
    /// Print the reply and return without following the deployment.
    #[arg(long)]
    pub no_wait: bool,
    /// Follow to the end, through the points where the deployment waits for
    /// an operator (a held canary step, a blue-green standby, a pause)
    /// [default: return there, saying what to run next].
    #[arg(long, conflicts_with = "no_wait")]
    pub wait: bool,
    /// Stop following after this many seconds (the deployment goes on).
    #[arg(long, value_name = "SECS", default_value_t = 900)]
    pub timeout: u64,
    /// Print the reply and every event followed as JSON lines.
    #[arg(long)]
    pub json: bool,
}

/// A usage error unless `service` is a service name, or one in an
/// environment (`web@staging`).
pub fn check_service(service: &str) -> Result<()> {
    if is_valid_reference(service) {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "`{service}` is not a service name: 1-63 characters of a-z, 0-9 and -, starting with a letter, and @ENVIRONMENT after it if it is not in production"
    )))
}

/// Send `cmd` on `mentat.cmd.<verb>` and print the planner's reply.
pub async fn send_and_print<C: Serialize>(
    nats: &str,
    verb: &str,
    cmd: &C,
    json: bool,
) -> Result<()> {
    let bus = client::connect(nats).await?;
    let reply = client::command(&bus, verb, cmd).await?;
    print_reply(&reply, json).map(|_| ())
}

/// Print `reply` (as JSON with `--json`); the deployment it names when
/// accepted, [`Error::Rejected`] when not.
fn print_reply(reply: &Reply, json: bool) -> Result<Option<String>> {
    if json {
        output::print(output::json(reply));
    }
    match reply {
        Reply::Rejected { kind, reason } => Err(Error::Rejected {
            kind: *kind,
            reason: reason.clone(),
        }),
        Reply::Accepted { deployment_id, .. } => {
            if !json {
                output::print(output::reply(reply));
            }
            Ok(deployment_id.clone())
        }
    }
}

/// The command being sent and followed.
#[derive(Debug)]
pub struct Sent<'a, C> {
    /// `mentat.cmd.<verb>`
    pub verb: &'a str,
    /// The command.
    pub cmd: &'a C,
    /// The service it is about.
    pub service: &'a str,
    /// The command's idempotency key.
    pub command_id: &'a str,
    /// Which end of the deployment counts as a success.
    pub goal: Goal,
}

/// Send the command, print the reply, then follow the deployment the reply
/// names as `follow` says.
pub async fn send_and_follow<C: Serialize>(
    nats: &str,
    sent: Sent<'_, C>,
    follow: &FollowArgs,
) -> Result<()> {
    check_service(sent.service)?;
    // Its events are those of its stream: `web@production` is `web`.
    let key = normalise(sent.service);
    let sent = Sent {
        service: &key,
        ..sent
    };
    let bus = client::connect(nats).await?;
    // Subscribe before sending, so that no event of the deployment is missed.
    let events = match follow.no_wait {
        true => None,
        false => Some(subscribe(&bus, sent.service).await?),
    };
    let reply = client::command(&bus, sent.verb, sent.cmd).await?;
    let deployment_id = print_reply(&reply, follow.json)?;
    let (Some(events), Some(deployment_id)) = (events, deployment_id) else {
        return Ok(());
    };
    let followed = Follow {
        service: sent.service,
        deployment_id: &deployment_id,
        command_id: sent.command_id,
        goal: sent.goal,
        wait: follow.wait,
        timeout: Duration::from_secs(follow.timeout),
        json: follow.json,
    };
    followed.run(&bus, events).await
}

async fn subscribe(bus: &Bus, service: &str) -> Result<async_nats::Subscriber> {
    let events = bus
        .client
        .subscribe(subject::events_of_stream(service))
        .await
        .map_err(|e| Error::Runtime(format!("subscribing to {service}'s events: {e}")))?;
    // Make sure the server has the subscription before the command goes out.
    bus.client
        .flush()
        .await
        .map_err(|e| Error::Runtime(format!("flushing the subscription: {e}")))?;
    Ok(events)
}
