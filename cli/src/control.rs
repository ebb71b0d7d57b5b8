//! `mt pause`, `mt resume`, `mt abort`, `mt promote` and `mt canary
//! promote|abort`: steer the deployment of a service that is in flight.
//! Pause and resume print the planner's reply; abort and promote then
//! follow the deployment like `mt deploy`.

use mentat_domain::command::Control;

use crate::error::Result;
use crate::follow::Goal;
use crate::send::{self, check_service, FollowArgs, Sent, WhoArgs};

/// `mt pause` and `mt resume`
#[derive(Debug, clap::Args)]
pub struct HoldArgs {
    /// The service whose deployment in flight is held or carried on.
    pub service: String,
    #[command(flatten)]
    pub who: WhoArgs,
    /// Print the reply as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `mt abort`, `mt promote`, `mt canary promote`, `mt canary abort`
#[derive(Debug, clap::Args)]
pub struct SteerArgs {
    /// The service whose deployment in flight is steered.
    pub service: String,
    #[command(flatten)]
    pub who: WhoArgs,
    #[command(flatten)]
    pub follow: FollowArgs,
}

/// `mt canary`
#[derive(Debug, clap::Subcommand)]
pub enum CanaryCmd {
    /// Promote the canary: skip its remaining steps and roll the new image
    /// out to every replica (sends `promote`), then follow it.
    Promote(SteerArgs),
    /// Abort the canary: revert to the previous image (sends `abort`), then
    /// follow the revert.
    Abort(SteerArgs),
}

/// The `Control` command for `service`, with a fresh command id.
pub fn control(service: &str, who: &WhoArgs) -> Control {
    Control {
        command_id: Some(mentat_bus::new_id()),
        signature: None,
        service: service.to_owned(),
        actor: who.actor(),
        reason: who.reason.clone(),
    }
}

/// `mt pause SERVICE` (`verb` "pause") or `mt resume SERVICE` ("resume").
pub async fn hold(nats: &str, verb: &str, args: HoldArgs) -> Result<()> {
    check_service(&args.service)?;
    let cmd = control(&args.service, &args.who);
    send::send_and_print(nats, verb, &cmd, args.json).await
}

/// `mt abort SERVICE`: follow the revert to its end.
pub async fn abort(nats: &str, args: SteerArgs) -> Result<()> {
    steer(nats, "abort", Goal::Revert, args).await
}

/// `mt promote SERVICE`: a canary rolls out to every replica; a blue-green
/// standby ends now. Follow to the end.
pub async fn promote(nats: &str, args: SteerArgs) -> Result<()> {
    steer(nats, "promote", Goal::Complete, args).await
}

/// `mt canary promote|abort SERVICE`
pub async fn canary(nats: &str, cmd: CanaryCmd) -> Result<()> {
    match cmd {
        CanaryCmd::Promote(args) => promote(nats, args).await,
        CanaryCmd::Abort(args) => abort(nats, args).await,
    }
}

async fn steer(nats: &str, verb: &str, goal: Goal, args: SteerArgs) -> Result<()> {
    let cmd = control(&args.service, &args.who);
    let command_id = cmd.command_id.clone().unwrap_or_default();
    let sent = Sent {
        verb,
        cmd: &cmd,
        service: &args.service,
        command_id: &command_id,
        goal,
    };
    send::send_and_follow(nats, sent, &args.follow).await
}
