//! The log as domain events, for the audits that tell its story
//! (`why`, `report`): from the planner a page at a time, as `mt audit
//! export` reads it, or from an exported file.

use std::path::Path;

use mentat_bus::subject;
use mentat_domain::audit::{AuditExportQuery, AuditExportReply, LoggedEvent, EXPORT_MAX_LIMIT};
use mentat_domain::EventEnvelope;

use crate::client;
use crate::error::{Error, Result};

/// Every event of the log, in order: from `file` (an export) when given,
/// else from the planner.
pub async fn events(nats: &str, file: Option<&Path>) -> Result<Vec<EventEnvelope>> {
    let logged = match file {
        Some(path) => from_file(path)?,
        None => from_bus(nats).await?,
    };
    logged
        .iter()
        .map(|e| envelope(e).map_err(Error::Runtime))
        .collect()
}

/// The event as the domain reads it, or why its payload does not decode
/// (naming its position). Metadata that does not decode reads as none, as
/// the planner reads it.
fn envelope(e: &LoggedEvent) -> std::result::Result<EventEnvelope, String> {
    let event = serde_json::from_str(&e.payload).map_err(|err| {
        format!(
            "event at position {} ({}) does not decode: {err}",
            e.position, e.event_type
        )
    })?;
    Ok(EventEnvelope {
        id: e.id.clone(),
        position: e.position,
        stream: e.stream.clone(),
        version: e.version,
        schema_version: e.schema_version,
        recorded_at_ms: e.recorded_at_ms,
        meta: serde_json::from_str(&e.metadata).unwrap_or_default(),
        event,
    })
}

fn from_file(path: &Path) -> Result<Vec<LoggedEvent>> {
    let mut lines = super::verify::Lines::open(path)?;
    let mut out = Vec::new();
    while let Some((number, event)) = lines.next_line()? {
        let event =
            event.map_err(|e| Error::Runtime(format!("{} line {number}: {e}", path.display())))?;
        out.push(event);
    }
    Ok(out)
}

async fn from_bus(nats: &str) -> Result<Vec<LoggedEvent>> {
    let mut out = Vec::new();
    pages_from_bus(nats, 0, Some(EXPORT_MAX_LIMIT), |events| {
        out.extend(events);
        Ok(())
    })
    .await?;
    Ok(out)
}

/// Ask the planner for the log after position `after`, a page of at most
/// `limit` events at a time (its own bound when `None`), and hand every
/// page to `each` in order: what `mt audit export` writes and what the
/// story-telling audits read.
pub async fn pages_from_bus(
    nats: &str,
    after: i64,
    limit: Option<u32>,
    mut each: impl FnMut(Vec<LoggedEvent>) -> Result<()>,
) -> Result<()> {
    let bus = client::connect(nats).await?;
    let mut query = AuditExportQuery {
        after: Some(after),
        limit,
    };
    loop {
        let reply = client::query(
            &bus,
            subject::QUERY_AUDIT_EXPORT,
            &query,
            client::QUERY_TIMEOUT,
        )
        .await?;
        let (events, next) = match reply {
            AuditExportReply::Ok { events, next } => (events, next),
            AuditExportReply::Rejected { kind, reason } => {
                return Err(Error::Rejected { kind, reason })
            }
        };
        each(events)?;
        match next {
            Some(n) if n > query.after.unwrap_or(0) => query.after = Some(n),
            Some(n) => {
                return Err(Error::Runtime(format!(
                    "the planner's next page ({n}) does not move past the last one"
                )))
            }
            None => return Ok(()),
        }
    }
}
