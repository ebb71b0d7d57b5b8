//! `mt rollout start|pause|resume|cancel|rollback-all|status|history`: a
//! fleet rollout in waves. Commands go to `mentat.cmd.rollout_*`; status
//! and history ask `mentat.query.rollout`.

use std::time::Duration;

use mentat_bus::subject;
use mentat_domain::rollout::{
    RolloutControl, RolloutQuery, RolloutReply, RolloutStart, RolloutStatus, RolloutSummary,
};

use crate::client;
use crate::error::{Error, Result};
use crate::output;
use crate::send::{self, WhoArgs};

/// `mt rollout`
#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Roll an image out over many services in cumulative waves.
    Start(StartArgs),
    /// Hold the rollout: no new deployment, no new wave.
    Pause(ControlArgs),
    /// Go on with a paused rollout.
    Resume(ResumeArgs),
    /// Stop the rollout; the new image stays where it succeeded.
    Cancel(ControlArgs),
    /// Deploy every target that took the new image back to its previous image.
    #[command(name = "rollback-all")]
    RollbackAll(ControlArgs),
    /// Show the last rollout: its waves, targets and their states.
    Status(StatusArgs),
    /// List past rollouts, newest first.
    History(HistoryArgs),
}

/// `mt rollout start`
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("targets").required(true).args(["select", "services"])))]
pub struct StartArgs {
    /// The image to roll out.
    #[arg(long, value_name = "REF")]
    pub image: String,
    /// The services whose labels hold KEY=VALUE (`labels:` in the service file).
    #[arg(long, value_name = "KEY=VALUE")]
    pub select: Option<String>,
    /// Or these services.
    #[arg(long, value_name = "A,B,C", value_delimiter = ',')]
    pub services: Vec<String>,
    /// Only services in this environment (`route.environment`).
    #[arg(long, value_name = "ENV")]
    pub env: Option<String>,
    /// Cumulative percentages of the targets, the last 100 [default: 1,5,25,50,100].
    #[arg(long, value_name = "P,P,..", value_delimiter = ',')]
    pub waves: Vec<u32>,
    /// How long each wave's targets hold their health before the next wave [default: 60].
    #[arg(long, value_name = "N")]
    pub wave_bake_secs: Option<u64>,
    /// Print the waves it would run and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub who: WhoArgs,
    /// Print the reply as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `mt rollout pause|cancel|rollback-all`
#[derive(Debug, clap::Args)]
pub struct ControlArgs {
    #[command(flatten)]
    pub who: WhoArgs,
    /// Print the reply as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `mt rollout resume`
#[derive(Debug, clap::Args)]
pub struct ResumeArgs {
    /// Deploy the failed targets again before going on.
    #[arg(long)]
    pub retry_failed: bool,
    #[command(flatten)]
    pub control: ControlArgs,
}

/// `mt rollout status`
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Show it again every second until the rollout is no longer in flight.
    #[arg(long)]
    pub watch: bool,
    /// Print the planner's reply as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `mt rollout history`
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// At most this many rollouts (1-100).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub limit: u32,
    /// Print the planner's reply as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Run `mt rollout ...`.
pub async fn run(nats: &str, cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Start(args) => {
            let cmd = RolloutStart {
                command_id: Some(mentat_bus::new_id()),
                image: args.image,
                select: args.select,
                services: args.services,
                environment: args.env,
                waves: args.waves,
                wave_bake_secs: args.wave_bake_secs,
                dry_run: args.dry_run,
                actor: args.who.actor(),
                reason: args.who.reason,
                signature: None,
            };
            send::send_and_print(nats, "rollout_start", &cmd, args.json).await
        }
        Cmd::Pause(args) => control(nats, "rollout_pause", args, false).await,
        Cmd::Resume(args) => control(nats, "rollout_resume", args.control, args.retry_failed).await,
        Cmd::Cancel(args) => control(nats, "rollout_cancel", args, false).await,
        Cmd::RollbackAll(args) => control(nats, "rollout_rollback_all", args, false).await,
        Cmd::Status(args) => status(nats, args).await,
        Cmd::History(args) => history(nats, args).await,
    }
}

async fn control(nats: &str, verb: &str, args: ControlArgs, retry_failed: bool) -> Result<()> {
    let cmd = RolloutControl {
        command_id: Some(mentat_bus::new_id()),
        retry_failed,
        actor: args.who.actor(),
        reason: args.who.reason,
        signature: None,
    };
    send::send_and_print(nats, verb, &cmd, args.json).await
}

async fn ask(
    bus: &mentat_bus::Bus,
    query: &RolloutQuery,
) -> Result<(Option<RolloutStatus>, Vec<RolloutSummary>)> {
    let reply: RolloutReply =
        client::query(bus, subject::QUERY_ROLLOUT, query, client::QUERY_TIMEOUT).await?;
    match reply {
        RolloutReply::Ok { rollout, rollouts } => Ok((rollout, rollouts)),
        RolloutReply::Rejected { kind, reason } => Err(Error::Rejected { kind, reason }),
    }
}

async fn status(nats: &str, args: StatusArgs) -> Result<()> {
    let bus = client::connect(nats).await?;
    loop {
        let (rollout, _) = ask(&bus, &RolloutQuery::default()).await?;
        if args.json {
            output::print(output::json(&rollout));
        } else {
            let now = mentat_bus::now_ms();
            let text = rollout.as_ref().map_or_else(
                || "no rollout yet (idle); legal: start".to_owned(),
                |r| output::rollout::status(r, now),
            );
            if args.watch {
                // Clear the screen and go home, then the status.
                print!("\x1b[2J\x1b[H");
            }
            output::print(text);
        }
        let active = rollout
            .as_ref()
            .is_some_and(|r| r.summary.state.is_active());
        if !args.watch || !active {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn history(nats: &str, args: HistoryArgs) -> Result<()> {
    let bus = client::connect(nats).await?;
    let query = RolloutQuery {
        history: true,
        limit: Some(args.limit),
    };
    let (_, rollouts) = ask(&bus, &query).await?;
    if args.json {
        output::print(output::json_pretty(&rollouts));
    } else {
        output::print(output::rollout::history(&rollouts));
    }
    Ok(())
}
