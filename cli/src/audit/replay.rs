//! `mt audit replay [--from N] [--to M] [--file F | --db URL] [--json]`:
//! every decision of the planner taken again from the log alone and
//! compared with what the log holds, by the domain ([`replay`]): by the
//! planner over its own log (`mentat.query.audit_replay`), or here,
//! offline, over an export or the database read a page at a time.

use std::path::PathBuf;
use std::time::Duration;

use mentat_bus::subject;
use mentat_domain::replay::{
    AuditReplayQuery, AuditReplayReply, Divergence, Placed, Replay, ReplayReport,
};

use super::read::{self, Source};
use crate::client;
use crate::error::{Error, Result};
use crate::output;

/// `mt audit replay`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Compare the decisions from this position on (the log before it is
    /// folded all the same).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(i64).range(1..))]
    pub from: i64,
    /// Stop after this position (a decision begun by then is compared
    /// whole).
    #[arg(long, value_name = "M", value_parser = clap::value_parser!(i64).range(1..))]
    pub to: Option<i64>,
    /// Decide with this drain timeout instead of the one each planner
    /// recorded when it took the lead: which decisions would change.
    #[arg(long, value_name = "SECS")]
    pub drain_timeout_secs: Option<u32>,
    /// Print the report as JSON (`schemas/audit-replay.json`).
    #[arg(long)]
    pub json: bool,
    /// Read this export (`mt audit export`) instead of asking the planner.
    #[arg(long, value_name = "PATH", conflicts_with = "db")]
    pub file: Option<PathBuf>,
    /// Read the database at this URL directly (read only), for when no
    /// planner runs.
    #[arg(long, value_name = "URL")]
    pub db: Option<String>,
    /// How long to wait for the planner's answer (it folds the whole log).
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub timeout: u64,
}

/// Replay; exit 0 with "0 divergences", 1 with the first.
pub async fn run(nats: &str, args: Args) -> Result<()> {
    let query = AuditReplayQuery {
        from: Some(args.from),
        to: args.to,
        drain_timeout_ms: args.drain_timeout_secs.map(|secs| i64::from(secs) * 1000),
    };
    let source = match (&args.file, &args.db) {
        (Some(path), _) => Source::File(path),
        (None, Some(url)) => Source::Db(url),
        (None, None) => return by_planner(nats, &query, &args).await,
    };
    let config = query.config().map_err(|reason| Error::Rejected {
        kind: mentat_domain::command::RejectKind::Invalid,
        reason,
    })?;
    let mut replay = Replay::new(config);
    read::each_event(source, |e| {
        replay.feed(&e);
        Ok(replay.wants_more())
    })
    .await?;
    print(&replay.finish(), args.json)
}

/// Have the planner replay its own log.
async fn by_planner(nats: &str, query: &AuditReplayQuery, args: &Args) -> Result<()> {
    let bus = client::connect(nats).await?;
    let timeout = Duration::from_secs(args.timeout);
    let reply = client::query(&bus, subject::QUERY_AUDIT_REPLAY, query, timeout).await?;
    match reply {
        AuditReplayReply::Ok { report } => print(&report, args.json),
        AuditReplayReply::Rejected { kind, reason } => Err(Error::Rejected { kind, reason }),
    }
}

/// Print the report; the error that ends `mt` on a divergence.
fn print(report: &ReplayReport, json: bool) -> Result<()> {
    if json {
        output::print(output::json_pretty(report));
    } else {
        output::print(text(report));
    }
    match &report.divergence {
        None => Ok(()),
        Some(d) => Err(Error::AuditFailed(format!(
            "the planner decides differently now at position {}",
            d.position
        ))),
    }
}

/// The report as a person reads it.
fn text(r: &ReplayReport) -> String {
    let read = format!(
        "{} decisions taken again, positions {} to {} ({} events read)",
        r.decisions, r.from, r.to, r.events
    );
    match &r.divergence {
        None => format!("0 divergences: {read}"),
        Some(d) => format!("1 divergence: {}\n{read}", divergence(d)),
    }
}

fn divergence(d: &Divergence) -> String {
    let Some(decided) = &d.decided else {
        return format!(
            "position {}: the log holds a decision the planner recorded no inputs for\n  \
             the log holds: {}",
            d.position,
            placed(d.logged.as_ref())
        );
    };
    let cause = decided
        .cause
        .map(|p| format!(", caused by position {p}"))
        .unwrap_or_default();
    let now = match (&d.rejected, &d.panicked) {
        (Some(r), _) => format!("rejects the command ({}): {}", r.kind, r.reason),
        (None, Some(panic)) => format!("panics: {panic}"),
        (None, None) => placed(d.now.as_ref()),
    };
    format!(
        "position {} (the decision at {}: {} at {} UTC{cause})\n  \
         the log holds:           {}\n  \
         the planner decides now: {now}",
        d.position,
        d.decision,
        decided.by.name(),
        output::utc(decided.at_ms),
        placed(d.logged.as_ref()),
    )
}

fn placed(p: Option<&Placed>) -> String {
    match p {
        None => "nothing more (the decision ends)".to_owned(),
        Some(p) => format!(
            "{} {} {}",
            p.stream,
            p.event.type_name(),
            output::terminal_safe(&output::details(&p.event))
        ),
    }
}
