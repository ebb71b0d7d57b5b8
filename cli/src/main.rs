//! `mt`: Mentat's command line. A client of the bus like any other: it
//! sends commands and queries over NATS and never reads the database (but
//! for `mt audit export --db`, for when no planner runs).
//!
//! - [`audit`]: verifying, exporting and anchoring the log.
//! - [`apply`], [`deploy`], [`control`], [`instances`], [`ps`], [`status`],
//!   [`history`], [`hosts`], [`rollout`], [`up`]: one module per subcommand
//!   or family of them.
//! - [`key`]: operators' key pairs for signed commands.
//! - [`send`]: the flags commands share, sending one and printing its reply.
//! - [`follow`]: following a deployment live.
//! - [`output`]: everything printed, as pure functions.
//! - [`client`]: connecting and requesting, telling "nobody answered" apart.
//! - [`supervisor`]: the processes of `mt up`.
//! - [`error`]: errors and their exit codes.

mod apply;
mod audit;
mod client;
mod control;
mod deploy;
mod error;
mod follow;
mod history;
mod hosts;
mod instances;
mod key;
mod node;
mod output;
mod ps;
mod release;
mod rollout;
mod security;
mod send;
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
    /// NATS server to talk to; several URLs separated by commas for a cluster.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "MENTAT_NATS_URL",
        default_value = supervisor::DEFAULT_NATS_URL
    )]
    nats: String,
    /// Sign every command with this operator's secret key (made by `mt key
    /// new`; see the service file's `security:` block).
    #[arg(long, global = true, value_name = "FILE", env = "MENTAT_KEY")]
    key_file: Option<std::path::PathBuf>,
    /// This `mt`'s NATS credentials (an nkey seed or .creds file) [default:
    /// ./.mentat/identities/operator.nk when `mt up` made it there].
    #[arg(long, global = true, value_name = "FILE", env = "MENTAT_NATS_CREDS")]
    nats_creds: Option<std::path::PathBuf>,
    /// The CA certificate NATS's must be signed by: TLS is then required
    /// [default: ./.mentat/tls/ca.pem when `mt up --tls` made it there].
    #[arg(long, global = true, value_name = "FILE", env = "MENTAT_NATS_CA")]
    nats_ca: Option<std::path::PathBuf>,
    /// Run without NATS credentials: `mt up` starts NATS open to anyone who
    /// reaches it; other commands talk to a NATS beyond this machine
    /// without credentials.
    #[arg(long, global = true)]
    insecure: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Validate a service file and apply it (nothing is sent if it is invalid).
    Apply(apply::Args),
    /// Deploy a new image of a service (rolling, blue-green or canary) and follow it.
    Deploy(deploy::DeployArgs),
    /// Revert the deployment in flight, or go back to the image that served
    /// before the last deployment.
    Rollback(deploy::RollbackArgs),
    /// Hold the deployment in flight: no new step starts, deadlines stop counting.
    Pause(control::HoldArgs),
    /// Carry on with a paused deployment from where it was held.
    Resume(control::HoldArgs),
    /// Revert the deployment in flight to the previous image, and follow the revert.
    Abort(control::SteerArgs),
    /// Promote a canary to every replica, or end a blue-green standby now.
    Promote(control::SteerArgs),
    /// Decide on a canary: promote it or abort it.
    #[command(subcommand)]
    Canary(control::CanaryCmd),
    /// Set the router weight (0-100) of one instance.
    #[command(allow_negative_numbers = true)]
    Weight(instances::WeightArgs),
    /// Move all traffic from some instances to others in one routing change.
    Route(instances::RouteArgs),
    /// Start an extra named instance of a service, with weight 0.
    Spawn(instances::SpawnArgs),
    /// Take one instance out of rotation, drain it and stop it.
    Stop(instances::StopArgs),
    /// List instances: address, uptime, health, weight and share of traffic.
    Ps(ps::Args),
    /// Show services, their replicas, the deployment in flight and the hosts alive.
    Status(status::Args),
    /// Show the deployments of a service, or its raw events.
    History(history::Args),
    /// List the executor hosts (live, suspect, lost); `mt hosts release`
    /// ends a hold on re-placement after a mass host loss.
    Hosts(hosts::Args),
    /// Run NATS, the four services and the notifier on this machine, in the foreground.
    Up(up::Args),
    /// Join a cluster as one more host: an executor and a router, in the foreground.
    Node(node::Args),
    /// Fleet rollouts: one image over many services in cumulative waves,
    /// with pause, resume, cancel and rollback-all.
    #[command(subcommand)]
    Rollout(rollout::Cmd),
    /// Releases: immutable snapshots of every service, deployed to an
    /// environment at once, promoted, rolled back.
    #[command(subcommand)]
    Release(release::Cmd),
    /// Audit the log: verify its hash chain and anchors, export it, the
    /// planner's key, sign an anchor now.
    #[command(subcommand)]
    Audit(audit::Cmd),
    /// Operators' keys: `mt key new NAME` makes a key pair to sign commands with.
    #[command(subcommand)]
    Key(key::Cmd),
    /// NATS identities and permissions for a cluster set up by hand.
    #[command(subcommand)]
    Security(security::Cmd),
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
            // A rejection's reason may quote what a client sent.
            for line in e.to_string().lines() {
                eprintln!("mt: {}", output::terminal_safe(line));
            }
            ExitCode::from(e.exit_code())
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    if let Some(path) = &cli.key_file {
        client::sign_with(path)?;
    }
    let nats = cli.nats.as_str();
    let access = mentat_runtime::NatsAccess {
        nats_creds: cli.nats_creds,
        nats_ca: cli.nats_ca,
        insecure: cli.insecure,
    };
    match &cli.command {
        // They choose their own identities.
        Cmd::Up(_) | Cmd::Node(_) | Cmd::Security(_) => {}
        _ => client::choose_credentials(
            nats,
            access.nats_creds.as_deref(),
            access.nats_ca.as_deref(),
            access.insecure,
        )?,
    }
    match cli.command {
        Cmd::Apply(args) => apply::run(nats, args).await,
        Cmd::Deploy(args) => deploy::deploy(nats, args).await,
        Cmd::Rollback(args) => deploy::rollback(nats, args).await,
        Cmd::Pause(args) => control::hold(nats, "pause", args).await,
        Cmd::Resume(args) => control::hold(nats, "resume", args).await,
        Cmd::Abort(args) => control::abort(nats, args).await,
        Cmd::Promote(args) => control::promote(nats, args).await,
        Cmd::Canary(cmd) => control::canary(nats, cmd).await,
        Cmd::Weight(args) => instances::weight(nats, args).await,
        Cmd::Route(args) => instances::route(nats, args).await,
        Cmd::Spawn(args) => instances::spawn(nats, args).await,
        Cmd::Stop(args) => instances::stop(nats, args).await,
        Cmd::Ps(args) => ps::run(nats, args).await,
        Cmd::Status(args) => status::run(nats, args).await,
        Cmd::History(args) => history::run(nats, args).await,
        Cmd::Hosts(args) => hosts::run(nats, args).await,
        Cmd::Up(args) => up::run(nats, access, args).await,
        Cmd::Node(args) => node::run(nats, access, args).await,
        Cmd::Audit(cmd) => audit::run(nats, cmd).await,
        Cmd::Key(cmd) => key::run(cmd),
        Cmd::Rollout(cmd) => rollout::run(nats, cmd).await,
        Cmd::Release(cmd) => release::run(nats, cmd).await,
        Cmd::Security(cmd) => security::run(cmd),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> std::result::Result<Cmd, clap::Error> {
        Cli::try_parse_from([&["mt"], args].concat()).map(|cli| cli.command)
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn deploy_takes_a_strategy_and_wait_flags() {
        let Ok(Cmd::Deploy(args)) =
            parse(&["deploy", "web", "--image", "v2", "--strategy", "canary"])
        else {
            panic!("deploy parses");
        };
        assert_eq!(args.strategy, Some(mentat_domain::Strategy::Canary));
        assert!(!args.follow.wait && !args.follow.no_wait);
        let Ok(Cmd::Deploy(args)) = parse(&["deploy", "web", "--image", "v2", "--wait"]) else {
            panic!("--wait parses");
        };
        assert!(args.follow.wait);
        assert!(parse(&["deploy", "web", "--image", "v2", "--strategy", "big-bang"]).is_err());
    }

    #[test]
    fn steering_commands_parse_with_actor_and_reason() {
        let Ok(Cmd::Pause(args)) = parse(&["pause", "web", "--actor", "ana", "--reason", "errors"])
        else {
            panic!("pause parses");
        };
        assert_eq!(args.who.actor.as_deref(), Some("ana"));
        assert_eq!(args.who.reason.as_deref(), Some("errors"));
        assert!(matches!(
            parse(&["canary", "promote", "web"]),
            Ok(Cmd::Canary(control::CanaryCmd::Promote(_)))
        ));
        assert!(matches!(
            parse(&["canary", "abort", "web", "--no-wait"]),
            Ok(Cmd::Canary(control::CanaryCmd::Abort(_)))
        ));
        assert!(matches!(parse(&["promote", "web"]), Ok(Cmd::Promote(_))));
        assert!(matches!(
            parse(&["abort", "web", "--timeout", "30"]),
            Ok(Cmd::Abort(_))
        ));
        assert!(parse(&["canary", "web"]).is_err());
    }

    #[test]
    fn rollout_commands_parse_and_check_their_flags() {
        let Ok(Cmd::Rollout(rollout::Cmd::Start(args))) = parse(&[
            "rollout",
            "start",
            "--image",
            "v2",
            "--select",
            "kind=edge",
            "--waves",
            "10,50,100",
            "--wave-bake-secs",
            "5",
            "--dry-run",
        ]) else {
            panic!("rollout start parses");
        };
        assert_eq!(args.waves, [10, 50, 100]);
        assert_eq!(args.select.as_deref(), Some("kind=edge"));
        assert!(args.dry_run && args.services.is_empty());
        let Ok(Cmd::Rollout(rollout::Cmd::Start(args))) =
            parse(&["rollout", "start", "--image", "v2", "--services", "a,b,c"])
        else {
            panic!("--services parses");
        };
        assert_eq!(args.services, ["a", "b", "c"]);
        for bad in [
            &["rollout", "start", "--image", "v2"][..],
            &[
                "rollout",
                "start",
                "--image",
                "v2",
                "--select",
                "k=v",
                "--services",
                "a",
            ],
            &["rollout", "history", "--limit", "0"],
            &["rollout", "resume", "--retry"],
        ] {
            let err = parse(bad).err().unwrap_or_else(|| panic!("{bad:?} parsed"));
            assert!(err.use_stderr(), "{bad:?}: a usage error, exit 64");
        }
        assert!(matches!(
            parse(&["rollout", "resume", "--retry-failed", "--reason", "fixed"]),
            Ok(Cmd::Rollout(rollout::Cmd::Resume(args))) if args.retry_failed
        ));
        assert!(matches!(
            parse(&["rollout", "rollback-all"]),
            Ok(Cmd::Rollout(rollout::Cmd::RollbackAll(_)))
        ));
        assert!(matches!(
            parse(&["rollout", "status", "--watch"]),
            Ok(Cmd::Rollout(rollout::Cmd::Status(args))) if args.watch
        ));
        let Ok(Cmd::Deploy(args)) =
            parse(&["deploy", "web", "--image", "v2", "--override-rollout"])
        else {
            panic!("--override-rollout parses");
        };
        assert!(args.override_rollout);
    }

    #[test]
    fn audit_commands_parse_and_check_their_flags() {
        assert!(matches!(
            parse(&["audit", "verify", "--json"]),
            Ok(Cmd::Audit(audit::Cmd::Verify(_)))
        ));
        let key = "ab".repeat(32);
        assert!(matches!(
            parse(&["audit", "verify", "--file", "log.ndjson", "--anchors", "a", "--anchors", "b"]),
            Ok(Cmd::Audit(audit::Cmd::Verify(args))) if args.anchors.len() == 2
        ));
        for bad in [
            &["audit", "verify", "--anchors", "a.ndjson"][..],
            &["audit", "verify", "--key", &key],
            &["audit", "verify", "--file", "f", "--key", "not-a-key"],
            &["audit", "verify", "--timeout", "0"],
            &["audit", "export", "--from", "0"],
        ] {
            let err = parse(bad).err().unwrap_or_else(|| panic!("{bad:?} parsed"));
            assert!(err.use_stderr(), "{bad:?}: a usage error, exit 64");
        }
        // The audit's trusted key and the signing key file are two flags.
        let public = mentat_domain::audit::SigningKey::from_bytes(&[1; 32]).verifying_key();
        let public = mentat_domain::audit::key_hex(&public);
        let both = Cli::try_parse_from([
            "mt",
            "audit",
            "verify",
            "--file",
            "log.ndjson",
            "--key",
            &public,
            "--key-file",
            "ana.key",
        ])
        .expect("parses");
        assert_eq!(both.key_file, Some("ana.key".into()));
        assert!(matches!(both.command, Cmd::Audit(audit::Cmd::Verify(_))));
        let signed =
            Cli::try_parse_from(["mt", "deploy", "web", "--image", "v2", "--key-file", "k"])
                .expect("parses");
        assert_eq!(signed.key_file, Some("k".into()));
        assert!(matches!(
            parse(&["audit", "export", "--from", "7", "--db", "sqlite://x.db"]),
            Ok(Cmd::Audit(audit::Cmd::Export(args))) if args.from == 7
        ));
        assert!(matches!(
            parse(&["audit", "key"]),
            Ok(Cmd::Audit(audit::Cmd::Key(_)))
        ));
        assert!(matches!(
            parse(&["audit", "anchor", "--json"]),
            Ok(Cmd::Audit(audit::Cmd::Anchor(_)))
        ));
        let replay = [
            "audit",
            "replay",
            "--from",
            "3",
            "--to",
            "9",
            "--db",
            "sqlite://x.db",
        ];
        assert!(matches!(
            parse(&[&replay[..], &["--drain-timeout-secs", "0"]].concat()),
            Ok(Cmd::Audit(audit::Cmd::Replay(args)))
                if (args.from, args.to, args.drain_timeout_secs) == (3, Some(9), Some(0))
        ));
        for bad in [
            &["audit", "replay", "--from", "0"][..],
            &["audit", "replay", "--file", "log", "--db", "sqlite://x.db"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn instance_commands_parse_and_check_their_arguments() {
        let Ok(Cmd::Weight(args)) = parse(&["weight", "web:web-4", "20"]) else {
            panic!("weight parses");
        };
        assert_eq!(args.target.service, "web");
        assert_eq!(args.target.instance, "web-4");
        assert_eq!(args.weight, 20);
        for bad in [
            &["weight", "web:web-4", "101"][..],
            &["weight", "web:web-4", "-1"],
            &["weight", "web", "1"],
        ] {
            let err = parse(bad).err().unwrap_or_else(|| panic!("{bad:?} parsed"));
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{bad:?}: {err}"
            );
            assert!(err.use_stderr(), "a usage error, exit 64");
        }
        let Ok(Cmd::Route(args)) = parse(&["route", "web", "--from", "v1", "--to", "web-5"]) else {
            panic!("route parses");
        };
        assert_eq!((args.from.as_str(), args.to.as_str()), ("v1", "web-5"));
        assert!(
            parse(&["route", "web", "--from", "v1"]).is_err(),
            "--to is required"
        );
        let Ok(Cmd::Spawn(args)) = parse(&["spawn", "web", "--id", "green"]) else {
            panic!("spawn parses");
        };
        assert_eq!((args.id.as_str(), args.image), ("green", None));
        assert!(matches!(parse(&["stop", "web:green"]), Ok(Cmd::Stop(_))));
        assert!(matches!(
            parse(&["ps"]),
            Ok(Cmd::Ps(ps::Args { service: None, .. }))
        ));
        assert!(matches!(
            parse(&["ps", "web", "--json"]),
            Ok(Cmd::Ps(ps::Args { json: true, .. }))
        ));
    }
}
