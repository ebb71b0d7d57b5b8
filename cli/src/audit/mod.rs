//! `mt audit`: was the log changed? Verify its hash chain (through the
//! planner, or offline from an exported file), export it, print the
//! planner's public key, and have the planner sign an anchor now. And
//! what the log says: the state at a past point, why a deployment ended
//! as it did, who did what.
//!
//! - [`verify`]: `mt audit verify [--file F] [--anchors F] [--key K]`.
//! - [`export`]: `mt audit export [--from N] [--db URL]`.
//! - [`state`]: `mt audit state (--at TIME | --position N) [SERVICE]`.
//! - [`why`]: `mt audit why (DEPLOYMENT | POSITION) [--file F]`.
//! - [`report`]: `mt audit report --since DURATION [--actor A] [--service S]
//!   [--format md|csv|json] [--file F]`.
//! - [`replay`]: `mt audit replay [--from N] [--to M] [--file F | --db URL]`.
//! - `mt audit key`, `mt audit anchor`: here.
//!
//! Exports go over the bus, a page at a time, like every other command
//! (`mt` never reads the database); `--db URL` reads the database directly
//! instead, without migrating it, for when no planner runs (one that
//! refuses to start on a broken log, say).

pub mod export;
mod read;
pub mod replay;
pub mod report;
pub mod state;
pub mod verify;
pub mod why;

use std::time::Duration;

use mentat_bus::subject;
use mentat_domain::audit::{AnchorReply, AnchorRequest, AuditKeyQuery, AuditKeyReply};

use crate::client;
use crate::error::{Error, Result};
use crate::output;

/// `mt audit ...`
#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Recompute the log's hash chain and check it against every signed
    /// anchor; exit 0 with the head's position and hash, 1 naming the first
    /// bad position and the kind of break, or a forged anchor.
    Verify(Box<verify::Args>),
    /// Write the log to standard output, one JSON event per line, each with
    /// its hash and the hash before it.
    Export(export::Args),
    /// Print the planner's public key (anchors are signed with it).
    Key(JsonArg),
    /// Have the leading planner check the log since its last anchor and
    /// sign an anchor of its head now.
    Anchor(JsonArg),
    /// What `mt status` would have shown at a past time or position,
    /// rebuilt by folding the log up to it.
    State(state::Args),
    /// The story of one deployment: the command that started it, each
    /// decision, the facts that drove them (with their numbers), the end.
    Why(why::Args),
    /// Who did what, when, why and with what result; and per service the
    /// deployment frequency, change failure rate, time to restore and
    /// median deployment duration.
    Report(report::Args),
    /// Take every decision of the planner again from the log alone, from
    /// an empty state, and compare it with the events the log holds: "0
    /// divergences" (exit 0), or the first (exit 1) with its position,
    /// what the log holds and what the planner decides now.
    Replay(replay::Args),
}

/// `--json`
#[derive(Debug, clap::Args)]
pub struct JsonArg {
    /// Print the planner's reply as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Run one `mt audit` subcommand.
pub async fn run(nats: &str, cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Verify(args) => verify::run(nats, *args).await,
        Cmd::Export(args) => export::run(nats, args).await,
        Cmd::Key(args) => key(nats, args).await,
        Cmd::Anchor(args) => anchor(nats, args).await,
        Cmd::State(args) => state::run(nats, args).await,
        Cmd::Why(args) => why::run(nats, args).await,
        Cmd::Report(args) => report::run(nats, args).await,
        Cmd::Replay(args) => replay::run(nats, args).await,
    }
}

/// How long `mt audit anchor` waits: the planner checks what was appended
/// since its last anchor first.
const ANCHOR_TIMEOUT: Duration = Duration::from_secs(60);

async fn key(nats: &str, args: JsonArg) -> Result<()> {
    let bus = client::connect(nats).await?;
    let reply = planner_key(&bus).await?;
    if args.json {
        output::print(output::json_pretty(&reply));
    }
    match reply {
        AuditKeyReply::Ok { key, .. } => {
            if !args.json {
                output::print(key);
            }
            Ok(())
        }
        AuditKeyReply::Rejected { kind, reason } => Err(Error::Rejected { kind, reason }),
    }
}

/// Ask a planner for its public key.
pub async fn planner_key(bus: &mentat_bus::Bus) -> Result<AuditKeyReply> {
    client::query(
        bus,
        subject::QUERY_AUDIT_KEY,
        &AuditKeyQuery {},
        client::QUERY_TIMEOUT,
    )
    .await
}

async fn anchor(nats: &str, args: JsonArg) -> Result<()> {
    let bus = client::connect(nats).await?;
    let reply: AnchorReply = client::query(
        &bus,
        subject::AUDIT_ANCHOR,
        &AnchorRequest {},
        ANCHOR_TIMEOUT,
    )
    .await?;
    if args.json {
        output::print(output::json_pretty(&reply));
    }
    match reply {
        AnchorReply::Ok { anchor } => {
            if !args.json {
                output::print(format!(
                    "anchor signed: position {} hash {} at {} UTC",
                    anchor.position,
                    anchor.head_hash,
                    output::utc(anchor.at_ms)
                ));
            }
            Ok(())
        }
        AnchorReply::Rejected { kind, reason } => Err(Error::Rejected { kind, reason }),
    }
}
