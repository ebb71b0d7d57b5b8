//! The log as domain events, for the audits that tell its story or take
//! its decisions again (`why`, `report`, `replay`): from the planner a
//! page at a time, as `mt audit export` reads it, from an exported file,
//! or from the database directly.

use std::path::Path;

use mentat_bus::subject;
use mentat_domain::audit::{AuditExportQuery, AuditExportReply, LoggedEvent, EXPORT_MAX_LIMIT};
use mentat_domain::EventEnvelope;
use mentat_store::{RecordedEvent, Store};

use crate::client;
use crate::error::{Error, Result};

/// Every event of the log, in order: from `file` (an export) when given,
/// else from the planner.
pub async fn events(nats: &str, file: Option<&Path>) -> Result<Vec<EventEnvelope>> {
    let source = match file {
        Some(path) => Source::File(path),
        None => Source::Bus(nats),
    };
    let mut out = Vec::new();
    each_event(source, |e| {
        out.push(e);
        Ok(true)
    })
    .await?;
    Ok(out)
}

/// Where the log is read from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// The planner, over the bus at this URL.
    Bus(&'a str),
    /// An export (`mt audit export`).
    File(&'a Path),
    /// The database at this URL, read only.
    Db(&'a str),
}

/// Hand every event of the log to `each`, in order, a page at a time,
/// until it returns false: the whole log is never held at once.
pub async fn each_event(
    source: Source<'_>,
    mut each: impl FnMut(EventEnvelope) -> Result<bool>,
) -> Result<()> {
    let mut one = |e: &LoggedEvent| envelope(e).map_err(Error::Runtime).and_then(&mut each);
    match source {
        Source::Bus(nats) => {
            pages_from_bus(nats, 0, Some(EXPORT_MAX_LIMIT), |events| {
                all(events.iter(), &mut one)
            })
            .await
        }
        Source::Db(url) => {
            pages_from_db(url, 0, |events| {
                all(events.into_iter().map(super::export::logged), |e| one(&e))
            })
            .await
        }
        Source::File(path) => {
            let mut lines = super::verify::Lines::open(path)?;
            while let Some((number, event)) = lines.next_line()? {
                let event = event.map_err(|e| {
                    Error::Runtime(format!("{} line {number}: {e}", path.display()))
                })?;
                if !one(&event)? {
                    break;
                }
            }
            Ok(())
        }
    }
}

/// `each` over `items` while it says go on; whether it always did.
fn all<T>(items: impl Iterator<Item = T>, mut each: impl FnMut(T) -> Result<bool>) -> Result<bool> {
    for item in items {
        if !each(item)? {
            return Ok(false);
        }
    }
    Ok(true)
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

/// Ask the planner for the log after position `after`, a page of at most
/// `limit` events at a time (its own bound when `None`), and hand every
/// page to `each` in order, until it returns false: what `mt audit
/// export` writes and what the story-telling audits read.
pub async fn pages_from_bus(
    nats: &str,
    after: i64,
    limit: Option<u32>,
    mut each: impl FnMut(Vec<LoggedEvent>) -> Result<bool>,
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
        if !each(events)? {
            return Ok(());
        }
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

/// Events read from the database per query, with `--db`.
const DB_PAGE: i64 = 1_000;

/// Read the log at `url` directly (read only, nothing migrated) after
/// position `after`, a page at a time, handing each to `each` until it
/// returns false.
pub async fn pages_from_db(
    url: &str,
    mut after: i64,
    mut each: impl FnMut(Vec<RecordedEvent>) -> Result<bool>,
) -> Result<()> {
    let store = Store::open_existing(url)
        .await
        .map_err(|e| Error::Runtime(format!("cannot open the log at {url}: {e}")))?;
    let read = loop {
        let page = match store.read_all(after, DB_PAGE).await {
            Ok(page) => page,
            Err(e) => break Err(Error::Runtime(format!("cannot read the log: {e}"))),
        };
        let Some(last) = page.last() else {
            break Ok(());
        };
        after = last.position;
        match each(page) {
            Ok(true) => {}
            other => break other.map(drop),
        }
    };
    store.close().await;
    read
}
