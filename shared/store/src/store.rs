//! [`Store`]: the handle, and the read side of the log.

use std::sync::Arc;

use sqlx::any::AnyRow;
use sqlx::AnyPool;
use sqlx::Row;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::chain::Chain;
use crate::open::Target;
use crate::{Backend, Error, RecordedEvent, Result, Verified};

/// The columns of `events`, in [`RecordedEvent`] order.
pub(crate) const EVENT_COLUMNS: &str = "position, stream, version, id, event_type, \
     schema_version, payload, metadata, recorded_at_ms, prev_hash, hash";

/// How many events [`Store::verify`] reads per query.
const VERIFY_PAGE: i64 = 1000;

/// A handle on the log. Cloning is cheap and clones share one connection
/// pool, so hand a clone to every task.
///
/// ```no_run
/// # async fn demo() -> mentat_store::Result<()> {
/// use mentat_store::{ExpectedVersion, NewEvent, Store};
///
/// let store = Store::open("sqlite://data/mentat.db").await?;
/// let event = NewEvent {
///     id: "0190a5c4-5c1e-7000-8000-000000000001".into(),
///     event_type: "DeploymentStarted".into(),
///     schema_version: 1,
///     payload: r#"{"service":"web"}"#.into(),
///     metadata: r#"{"actor":"alice"}"#.into(),
///     recorded_at_ms: 1_700_000_000_000,
/// };
/// let appended = store
///     .append("service-web", ExpectedVersion::NoStream, None, vec![event])
///     .await?;
/// assert_eq!(appended.stream_version, 1);
/// for event in store.read_all(0, 100).await? {
///     println!("{} {} {}", event.position, event.stream, event.event_type);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) pool: AnyPool,
    pub(crate) backend: Backend,
    /// Writers in this process queue here rather than in the database, so a
    /// waiting append holds no connection. Across processes the database
    /// lock taken by each write transaction does the same job.
    pub(crate) write_gate: Arc<Mutex<()>>,
    /// The planner epoch every write of this handle is fenced by, if any
    /// ([`Store::fenced`]).
    pub(crate) epoch: Option<i64>,
    /// The SQLite file, when the log is one.
    pub(crate) sqlite_file: Option<String>,
}

impl Store {
    /// Opens the log at `url`, creating and migrating it as needed.
    ///
    /// - `sqlite://path/to/mentat.db` (or `sqlite:path`, or `sqlite:///abs`):
    ///   the file and its parent directory are created if missing; the file
    ///   is switched to WAL mode; a busy writer is waited for up to 5 s.
    ///   `sqlite::memory:` gives a private in-memory log, for tests.
    /// - `postgres://user@host:port/db`: the database must exist.
    ///
    /// Migrations run every time and are idempotent: reopening a log leaves
    /// its data as it was.
    pub async fn open(url: &str) -> Result<Store> {
        let target = Target::parse(url)?;
        let pool = target.connect().await?;
        Ok(Store::from_pool(pool, &target))
    }

    /// A store on a connected pool.
    pub(crate) fn from_pool(pool: AnyPool, target: &Target) -> Store {
        tracing::debug!(backend = ?target.backend, "store opened");
        Store {
            pool,
            backend: target.backend,
            write_gate: Arc::new(Mutex::new(())),
            epoch: None,
            sqlite_file: target.file.clone(),
        }
    }

    /// Which database this store runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes every connection, waiting for those in use to be returned.
    /// Later calls on this store or its clones fail with
    /// [`Error::Database`].
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Up to `limit` events with `position > after_position`, in position
    /// order: page through the log by passing the last position seen. A
    /// `limit` of zero or less returns nothing.
    ///
    /// The page comes back as one row holding a JSON array of the events,
    /// built by the database: the driver's cost is per row (on SQLite a
    /// message from its worker thread and several copies of every column),
    /// and a replay reads millions of them. JSON strings carry every
    /// column's text exactly, so the hashes still check.
    pub async fn read_all(&self, after_position: i64, limit: i64) -> Result<Vec<RecordedEvent>> {
        if limit <= 0 {
            return Ok(Vec::new());
        }
        let page = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE position > $1 ORDER BY position LIMIT $2"
        );
        let sql = match self.backend {
            Backend::Sqlite => {
                format!("SELECT json_group_array(json_array({EVENT_COLUMNS})) FROM ({page})")
            }
            Backend::Postgres => format!(
                "SELECT COALESCE(json_agg(json_build_array({EVENT_COLUMNS}) ORDER BY position), \
                 '[]')::text FROM ({page}) AS page"
            ),
        };
        let row = sqlx::query(&sql)
            .bind(after_position)
            .bind(limit)
            .fetch_one(&self.pool)
            .await?;
        let json: String = row.try_get(0)?;
        // Undecodable as a column that does not decode would be.
        // Each event an array in the order of the struct's fields.
        let mut events: Vec<RecordedEvent> = serde_json::from_str(&json)
            .map_err(|e| Error::Database(sqlx::Error::Decode(Box::new(e))))?;
        if !events.is_sorted_by_key(|e| e.position) {
            // SQLite keeps the page's order in practice, without promising it.
            events.sort_unstable_by_key(|e| e.position);
        }
        Ok(events)
    }

    /// The log after `after_position`, in pages of `size`, each next page
    /// read while the caller works on the one it has: a replay decodes and
    /// folds on one core while the database and the driver work on another.
    pub fn pages(&self, after_position: i64, size: i64) -> Pages {
        let mut pages = Pages {
            store: self.clone(),
            size,
            reads: Default::default(),
        };
        pages.read_after(after_position);
        pages
    }

    /// Every event of `stream`, in version order (empty if there is none).
    pub async fn read_stream(&self, stream: &str) -> Result<Vec<RecordedEvent>> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE stream = $1 ORDER BY version");
        let rows = sqlx::query(&sql).bind(stream).fetch_all(&self.pool).await?;
        rows.iter().map(decode_event).collect()
    }

    /// The version of `stream`: how many events it holds, 0 if none.
    pub async fn stream_version(&self, stream: &str) -> Result<i64> {
        Ok(stream_version(&self.pool, stream).await?)
    }

    /// The position of the last event in the log, 0 if the log is empty.
    pub async fn head(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COALESCE(MAX(position), 0) FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// The outcome recorded for `command_id`, if that command was seen.
    pub async fn command_outcome(&self, command_id: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT outcome FROM commands WHERE id = $1")
            .bind(command_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// Re-reads the whole log from position 1 and recomputes the hash chain.
    ///
    /// Fails with [`Error::Tampered`] at the first position that is missing,
    /// does not link to the hash before it, or whose contents do not match
    /// its hash, saying which ([`BreakKind`](crate::BreakKind)). Cost: one
    /// full read of the log.
    pub async fn verify(&self) -> Result<Verified> {
        self.verify_with(Chain::genesis()).await
    }

    /// Feeds `chain` every event from its next position to the head, then
    /// finishes it: [`Store::verify`] with anchors, accepted breaks, or from
    /// a checkpoint (see [`Chain`]). A break becomes [`Error::Tampered`].
    pub async fn verify_with(&self, mut chain: Chain) -> Result<Verified> {
        let tampered = |b: crate::Break| Error::Tampered {
            position: b.position,
            kind: b.kind,
            detail: b.detail,
        };
        let mut pages = self.pages(chain.next_position() - 1, VERIFY_PAGE);
        loop {
            let page = pages.next().await?;
            if page.is_empty() {
                break;
            }
            for event in &page {
                chain.push(event).map_err(tampered)?;
            }
        }
        chain.finish().map_err(tampered)
    }

    /// The event at `position`, if the log holds one.
    pub async fn event_at(&self, position: i64) -> Result<Option<RecordedEvent>> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE position = $1");
        let row = sqlx::query(&sql)
            .bind(position)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(decode_event).transpose()
    }

    /// Every event of type `event_type`, in position order (for the few
    /// rare types the planner looks up at start, such as accepted breaks).
    pub async fn read_type(&self, event_type: &str) -> Result<Vec<RecordedEvent>> {
        let sql =
            format!("SELECT {EVENT_COLUMNS} FROM events WHERE event_type = $1 ORDER BY position");
        let rows = sqlx::query(&sql)
            .bind(event_type)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode_event).collect()
    }
}

/// The log page by page, from [`Store::pages`]. Dropping it stops the
/// reads in flight.
///
/// [`AHEAD`] pages are read at once: positions have no gaps, so the page
/// after one of `size` events ending at `p` starts after `p`, and the read
/// of each can start before the one before it ends (on PostgreSQL each
/// read is a server process of its own). A page that is short or does not
/// end where it should (the end of the log, or a gap an auditor will
/// report) drops the reads made on that guess and goes on from its last
/// position.
#[derive(Debug)]
pub struct Pages {
    store: Store,
    size: i64,
    /// The reads in flight, oldest first, each with the position it reads after.
    reads: std::collections::VecDeque<(i64, JoinHandle<Result<Vec<RecordedEvent>>>)>,
}

/// Pages read at once by [`Pages`].
pub const AHEAD: usize = 2;

impl Pages {
    /// The next page: empty once the log has no more (then always empty).
    /// Events appended meanwhile are in it, as with [`Store::read_all`].
    pub async fn next(&mut self) -> Result<Vec<RecordedEvent>> {
        let Some((after, read)) = self.reads.pop_front() else {
            return Ok(Vec::new());
        };
        let page = read.await.map_err(|e| {
            Error::Database(sqlx::Error::Protocol(format!(
                "reading a page of the log: {e}"
            )))
        })??;
        let Some(last) = page.last().map(|e| e.position) else {
            self.stop();
            return Ok(page);
        };
        let as_guessed = page.len() as i64 == self.size && last == after + self.size;
        if !as_guessed {
            self.stop();
        }
        self.read_after(last);
        Ok(page)
    }

    /// Keep [`AHEAD`] reads in flight, the first after `after` (unless it
    /// already is).
    fn read_after(&mut self, after: i64) {
        let mut from = self.reads.back().map_or(after, |(a, _)| a + self.size);
        while self.reads.len() < AHEAD {
            let (store, size) = (self.store.clone(), self.size);
            let read = tokio::spawn(async move { store.read_all(from, size).await });
            self.reads.push_back((from, read));
            from += self.size;
        }
    }

    /// Drop every read in flight.
    fn stop(&mut self) {
        for (_, read) in self.reads.drain(..) {
            read.abort();
        }
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The version of `stream`: its highest version, 0 if it has no events.
pub(crate) async fn stream_version<'e, E>(executor: E, stream: &str) -> sqlx::Result<i64>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let row = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM events WHERE stream = $1")
        .bind(stream)
        .fetch_one(executor)
        .await?;
    row.try_get(0)
}

/// A row of `SELECT {EVENT_COLUMNS}` as a [`RecordedEvent`].
fn decode_event(row: &AnyRow) -> Result<RecordedEvent> {
    Ok(RecordedEvent {
        position: row.try_get(0)?,
        stream: row.try_get(1)?,
        version: row.try_get(2)?,
        id: row.try_get(3)?,
        event_type: row.try_get(4)?,
        schema_version: row.try_get(5)?,
        payload: row.try_get(6)?,
        metadata: row.try_get(7)?,
        recorded_at_ms: row.try_get(8)?,
        prev_hash: row.try_get(9)?,
        hash: row.try_get(10)?,
    })
}
