//! `mt`: Mentat's command line. A client of the bus like any other: it
//! sends commands and queries over NATS and never reads the database.
//!
//! - [`apply`], [`deploy`], [`status`], [`history`], [`up`]: one module per
//!   subcommand.
//! - [`follow`]: following a deployment live.
//! - [`output`]: everything printed, as pure functions.
//! - [`client`]: connecting and requesting, telling "nobody answered" apart.
//! - [`supervisor`]: the processes of `mt up`.
//! - [`error`]: errors and their exit codes.

mod apply;
mod client;
mod deploy;
mod error;
mod follow;
mod history;
mod output;
mod status;
mod supervisor;
mod up;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use error::{exit, Result, EXIT_CODES_HELP};

/// Mentat: zero-downtime deployments.
#[derive(Debug, Parser)]
#[command(name = "mt", version, after_help = EXIT_CODES_HELP)]
struct Cli {
    /// NATS server to talk to.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "MENTAT_NATS_URL",
        default_value = supervisor::DEFAULT_NATS_URL
    )]
    nats: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Validate a service file and apply it (nothing is sent if it is invalid).
    Apply(apply::Args),
    /// Deploy a new image of a service and follow the deployment.
    Deploy(deploy::DeployArgs),
    /// Go back to the image that served before the last deployment.
    Rollback(deploy::RollbackArgs),
    /// Show services, their replicas, the deployment in flight and the hosts alive.
    Status(status::Args),
    /// Show the deployments of a service, or its raw events.
    History(history::Args),
    /// Run NATS and the four services on this machine, in the foreground.
    Up(up::Args),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    if std::env::var_os("RUST_LOG").is_some() {
        mentat_runtime::telemetry::init("mt");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mt: cannot start the async runtime: {e}");
            return ExitCode::from(exit::RUNTIME);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            for line in e.to_string().lines() {
                eprintln!("mt: {line}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let nats = cli.nats.as_str();
    match cli.command {
        Cmd::Apply(args) => apply::run(nats, args).await,
        Cmd::Deploy(args) => deploy::deploy(nats, args).await,
        Cmd::Rollback(args) => deploy::rollback(nats, args).await,
        Cmd::Status(args) => status::run(nats, args).await,
        Cmd::History(args) => history::run(nats, args).await,
        Cmd::Up(args) => up::run(nats, args).await,
    }
}
