//! `mt audit export [--from N] [--db URL]`: the log as JSON lines.

use std::io::Write;

use mentat_domain::audit::LoggedEvent;
use mentat_store::RecordedEvent;

use crate::error::{Error, Result};

/// `mt audit export`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Start at this position (default: the first).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(i64).range(1..))]
    pub from: i64,
    /// Read the database at this URL directly (read only, nothing is
    /// migrated) instead of asking the planner over the bus: for when no
    /// planner runs.
    #[arg(long, value_name = "URL")]
    pub db: Option<String>,
}

/// Write the log to standard output.
pub async fn run(nats: &str, args: Args) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let written = match &args.db {
        Some(url) => from_db(url, args.from, &mut out).await,
        None => from_bus(nats, args.from, &mut out).await,
    };
    match written.and_then(|()| out.flush().map_err(Error::from)) {
        // `mt audit export | head`: stop quietly.
        Err(Error::Runtime(e)) if e.contains("Broken pipe") => Ok(()),
        other => other,
    }
}

async fn from_bus(nats: &str, from: i64, out: &mut impl Write) -> Result<()> {
    super::read::pages_from_bus(nats, from - 1, None, |events| {
        events.iter().try_for_each(|event| line(out, event))?;
        Ok(true)
    })
    .await
}

async fn from_db(url: &str, from: i64, out: &mut impl Write) -> Result<()> {
    super::read::pages_from_db(url, from - 1, |page| {
        for event in page {
            line(out, &logged(event))?;
        }
        Ok(true)
    })
    .await
}

fn line(out: &mut impl Write, event: &LoggedEvent) -> Result<()> {
    serde_json::to_writer(&mut *out, event).map_err(|e| Error::Runtime(e.to_string()))?;
    out.write_all(b"\n")?;
    Ok(())
}

/// A stored event as an exported line.
pub fn logged(r: RecordedEvent) -> LoggedEvent {
    LoggedEvent {
        position: r.position,
        stream: r.stream,
        version: r.version,
        id: r.id,
        event_type: r.event_type,
        schema_version: r.schema_version,
        payload: r.payload,
        metadata: r.metadata,
        recorded_at_ms: r.recorded_at_ms,
        prev_hash: r.prev_hash,
        hash: r.hash,
    }
}

/// An exported line as a stored event, to check its hash.
pub fn recorded(e: LoggedEvent) -> RecordedEvent {
    RecordedEvent {
        position: e.position,
        stream: e.stream,
        version: e.version,
        id: e.id,
        event_type: e.event_type,
        schema_version: e.schema_version,
        payload: e.payload,
        metadata: e.metadata,
        recorded_at_ms: e.recorded_at_ms,
        prev_hash: e.prev_hash,
        hash: e.hash,
    }
}
