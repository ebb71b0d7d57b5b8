//! `mt deploy` and `mt rollback`: send the command, then follow the
//! deployment it started until it ends.

use std::time::Duration;

use mentat_bus::{subject, Bus};
use mentat_domain::command::{Deploy, Rollback};
use mentat_domain::spec::is_valid_name;
use mentat_domain::{Reply, Strategy};
use serde::Serialize;

use crate::client;
use crate::error::{Error, Result};
use crate::follow::Follow;
use crate::output;

/// `mt deploy`
#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// The service to deploy, as applied.
    pub service: String,
    /// The image (version) to roll out.
    #[arg(long, value_name = "REF")]
    pub image: String,
    /// Strategy for this deployment only: rolling, blue-green or canary
    /// [default: the service's configured strategy].
    #[arg(long, value_name = "STRATEGY")]
    pub strategy: Option<Strategy>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `mt rollback`
#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The service to roll back to the image that served before its last deployment.
    pub service: String,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Flags shared by deploy and rollback.
#[derive(Debug, clap::Args)]
pub struct CommonArgs {
    /// Who asks, recorded in the log [default: $MENTAT_ACTOR, else $USER, else mt].
    #[arg(long, value_name = "NAME")]
    pub actor: Option<String>,
    /// Why, recorded in the log.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Print the reply and return without following the deployment.
    #[arg(long)]
    pub no_wait: bool,
    /// Stop following after this many seconds (the deployment goes on).
    #[arg(long, value_name = "SECS", default_value_t = 900)]
    pub timeout: u64,
    /// Print the reply and every event followed as JSON lines.
    #[arg(long)]
    pub json: bool,
}

/// `mt deploy SERVICE --image REF`
pub async fn deploy(nats: &str, args: DeployArgs) -> Result<()> {
    let command_id = mentat_bus::new_id();
    let cmd = Deploy {
        command_id: Some(command_id.clone()),
        service: args.service.clone(),
        image: args.image,
        strategy: args.strategy,
        actor: Some(
            args.common
                .actor
                .clone()
                .unwrap_or_else(client::default_actor),
        ),
        reason: args.common.reason.clone(),
    };
    send_and_follow(
        nats,
        "deploy",
        &cmd,
        &args.service,
        &command_id,
        &args.common,
    )
    .await
}

/// `mt rollback SERVICE`
pub async fn rollback(nats: &str, args: RollbackArgs) -> Result<()> {
    let command_id = mentat_bus::new_id();
    let cmd = Rollback {
        command_id: Some(command_id.clone()),
        service: args.service.clone(),
        actor: Some(
            args.common
                .actor
                .clone()
                .unwrap_or_else(client::default_actor),
        ),
        reason: args.common.reason.clone(),
    };
    send_and_follow(
        nats,
        "rollback",
        &cmd,
        &args.service,
        &command_id,
        &args.common,
    )
    .await
}

async fn send_and_follow<C: Serialize>(
    nats: &str,
    verb: &str,
    cmd: &C,
    service: &str,
    command_id: &str,
    common: &CommonArgs,
) -> Result<()> {
    if !is_valid_name(service) {
        return Err(Error::Usage(format!(
            "`{service}` is not a service name: 1-63 characters of a-z, 0-9 and -, starting with a letter"
        )));
    }
    let bus = client::connect(nats).await?;
    // Subscribe before sending, so that no event of the deployment is missed.
    let events = match common.no_wait {
        true => None,
        false => Some(subscribe(&bus, service).await?),
    };
    let reply = client::command(&bus, verb, cmd).await?;
    if common.json {
        output::print(output::json(&reply));
    }
    let deployment_id = match reply {
        Reply::Rejected { reason } => return Err(Error::Rejected(reason)),
        Reply::Accepted {
            ref deployment_id, ..
        } => {
            if !common.json {
                output::print(output::reply(&reply));
            }
            deployment_id.clone()
        }
    };
    let (Some(events), Some(deployment_id)) = (events, deployment_id) else {
        return Ok(());
    };
    let follow = Follow {
        service,
        deployment_id: &deployment_id,
        command_id,
        timeout: Duration::from_secs(common.timeout),
        json: common.json,
    };
    follow.run(&bus, events).await
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
