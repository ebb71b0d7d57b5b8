//! `mt deploy` and `mt rollback`: send the command, then follow the
//! deployment it started until it ends or waits for an operator.

use mentat_domain::command::{Deploy, Rollback};
use mentat_domain::Strategy;

use crate::error::Result;
use crate::follow::Goal;
use crate::send::{self, FollowArgs, Sent, WhoArgs};

/// `mt deploy`
#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// The service to deploy, as applied (`web`, or `web@staging` in an
    /// environment other than production).
    pub service: String,
    /// The environment, for a service named without one [default: production].
    #[arg(long, value_name = "ENV")]
    pub env: Option<String>,
    /// The image (version) to roll out.
    #[arg(long, value_name = "REF")]
    pub image: String,
    /// Strategy for this deployment only: rolling, blue-green or canary
    /// [default: the service's configured strategy].
    #[arg(long, value_name = "STRATEGY")]
    pub strategy: Option<Strategy>,
    /// Deploy a target of the fleet rollout in flight anyway: recorded,
    /// and the rollout leaves the service alone from then on.
    #[arg(long)]
    pub override_rollout: bool,
    #[command(flatten)]
    pub who: WhoArgs,
    #[command(flatten)]
    pub follow: FollowArgs,
}

/// `mt rollback`
#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The service to roll back: the deployment in flight is reverted, or
    /// else the image that served before the last deployment is deployed.
    pub service: String,
    #[command(flatten)]
    pub who: WhoArgs,
    #[command(flatten)]
    pub follow: FollowArgs,
}

/// `mt deploy SERVICE --image REF [--strategy S]`
pub async fn deploy(nats: &str, args: DeployArgs) -> Result<()> {
    let command_id = mentat_bus::new_id();
    let service = in_env(&args.service, args.env.as_deref());
    let cmd = Deploy {
        command_id: Some(command_id.clone()),
        signature: None,
        service: service.clone(),
        image: args.image,
        strategy: args.strategy,
        override_rollout: args.override_rollout,
        actor: args.who.actor(),
        reason: args.who.reason,
    };
    let sent = Sent {
        verb: "deploy",
        cmd: &cmd,
        service: &service,
        command_id: &command_id,
        goal: Goal::Complete,
    };
    send::send_and_follow(nats, sent, &args.follow).await
}

/// `service`, in `env` when one is given and the name has none.
fn in_env(service: &str, env: Option<&str>) -> String {
    match env {
        Some(env) if !service.contains('@') => format!("{service}@{env}"),
        _ => service.to_owned(),
    }
}

/// `mt rollback SERVICE`
pub async fn rollback(nats: &str, args: RollbackArgs) -> Result<()> {
    let command_id = mentat_bus::new_id();
    let cmd = Rollback {
        command_id: Some(command_id.clone()),
        signature: None,
        service: args.service.clone(),
        actor: args.who.actor(),
        reason: args.who.reason,
    };
    let sent = Sent {
        verb: "rollback",
        cmd: &cmd,
        service: &args.service,
        command_id: &command_id,
        goal: Goal::Rollback,
    };
    send::send_and_follow(nats, sent, &args.follow).await
}
