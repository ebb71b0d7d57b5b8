//! The write side of the log: appends and command records.
//!
//! Every write runs in one transaction that first takes the log's lock
//! (`BEGIN IMMEDIATE` on SQLite, a transaction-scoped advisory lock on
//! PostgreSQL, which every writer of the log takes), so writers run one at a time, across processes too. Under
//! the lock the store reads the head and computes `position = head + 1`:
//! positions are gap-free (a rolled-back append used no number) and in
//! commit order (nobody else can commit while the lock is held), and each
//! new event can hash the one before it. Readers are never blocked.

use sqlx::AnyConnection;
use sqlx::{Any, Row, Transaction};

use crate::hash::{event_hash, GENESIS_HASH};
use crate::store::stream_version;
use crate::{
    Appended, Backend, CommandRecord, Error, ExpectedVersion, NewEvent, RecordedEvent, Result,
    Store, StreamAppend,
};

impl Store {
    /// Appends `events` to `stream`, all or nothing, in one transaction.
    ///
    /// In order, under the log's lock:
    /// 1. If `command` is given and its id was already recorded, nothing is
    ///    appended and the first append's result comes back with
    ///    [`Appended::duplicate`] set to the first outcome, whatever
    ///    `expected` says: a retried command is a no-op.
    /// 2. If the stream's version does not satisfy `expected`:
    ///    [`Error::Conflict`], nothing appended.
    /// 3. The events get the next global positions and stream versions and
    ///    are chained to the log's hash; an id already in the log gives
    ///    [`Error::DuplicateEvent`], nothing appended.
    /// 4. The command, if any, is recorded with `outcome` in the same
    ///    transaction, so it is recorded exactly when the events are.
    ///
    /// An empty `events` still checks `expected` and records the command.
    pub async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        command: Option<CommandRecord>,
        events: Vec<NewEvent>,
    ) -> Result<Appended> {
        let batch = vec![StreamAppend {
            stream: stream.to_owned(),
            expected,
            events,
        }];
        // One stream in, one result out (a duplicate too).
        Ok(self.append_batch(batch, command).await?.swap_remove(0))
    }

    /// Appends to several streams, all or nothing, in one transaction: one
    /// decision that touches several streams is recorded whole or not at
    /// all, with its command.
    ///
    /// The same steps as [`Store::append`], for each stream in order: the
    /// command is looked up once, first (a duplicate returns one
    /// [`Appended`] per stream, each carrying the first outcome and the
    /// numbers the command was recorded with); every stream's `expected` is
    /// checked ([`Error::Conflict`] on the first that does not hold,
    /// nothing appended); the events of all streams take consecutive
    /// positions and one unbroken hash chain; the command is recorded with
    /// the whole range. Returns one [`Appended`] per stream, in order.
    pub async fn append_batch(
        &self,
        batch: Vec<StreamAppend>,
        command: Option<CommandRecord>,
    ) -> Result<Vec<Appended>> {
        let streams = batch.len();
        let _turn = self.write_gate.lock().await;
        let mut tx = self.begin_write().await?;
        let result = append_in(&mut tx, self.epoch, batch, command.as_ref()).await;
        let appended = finish(tx, result).await?;
        if let (Some(first), Some(last)) = (appended.first(), appended.last()) {
            if first.duplicate.is_none() {
                tracing::debug!(
                    streams,
                    first_position = first.first_position,
                    last_position = last.last_position,
                    "appended"
                );
            }
        }
        Ok(appended)
    }

    /// Records a command that produced no events (a rejected command, say),
    /// so that a retry of it can return the same outcome.
    ///
    /// Returns `Some(first outcome)`, and records nothing, if the command id
    /// was already recorded (by this or by [`Store::append`]); `None` if it
    /// was recorded now.
    pub async fn record_command(&self, command: CommandRecord) -> Result<Option<String>> {
        let _turn = self.write_gate.lock().await;
        let mut tx = self.begin_write().await?;
        let result = async {
            if let Some(ours) = self.epoch {
                crate::leader::check_fence(&mut tx, ours).await?;
            }
            if let Some(first) = find_command(&mut tx, &command.id).await? {
                return Ok(first.duplicate);
            }
            insert_command(&mut tx, &command, None).await?;
            Ok(None)
        }
        .await;
        finish(tx, result).await
    }

    /// Begins a transaction holding the log's write lock.
    pub(crate) async fn begin_write(&self) -> Result<Transaction<'static, Any>> {
        match self.backend {
            Backend::Sqlite => Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?),
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                // Needs no right on any table, unlike LOCK TABLE (roles.rs).
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(crate::roles::WRITE_LOCK_KEY)
                    .execute(&mut *tx)
                    .await?;
                Ok(tx)
            }
        }
    }
}

/// Commits if `result` is `Ok`, rolls back otherwise, before the write lock
/// is handed to the next writer.
pub(crate) async fn finish<T>(tx: Transaction<'static, Any>, result: Result<T>) -> Result<T> {
    match result {
        Ok(value) => {
            tx.commit().await?;
            Ok(value)
        }
        Err(error) => {
            if let Err(rollback) = tx.rollback().await {
                tracing::warn!(%rollback, "rollback after a failed write failed");
            }
            Err(error)
        }
    }
}

/// The steps of [`Store::append_batch`], inside the locked transaction.
async fn append_in(
    tx: &mut AnyConnection,
    fence: Option<i64>,
    batch: Vec<StreamAppend>,
    command: Option<&CommandRecord>,
) -> Result<Vec<Appended>> {
    if let Some(ours) = fence {
        crate::leader::check_fence(tx, ours).await?;
    }
    if let Some(command) = command {
        if let Some(first) = find_command(tx, &command.id).await? {
            return Ok(vec![first; batch.len().max(1)]);
        }
    }
    let mut actual = Vec::with_capacity(batch.len());
    for append in &batch {
        let version = stream_version(&mut *tx, &append.stream).await?;
        if !append.expected.admits(version) {
            return Err(Error::Conflict {
                stream: append.stream.clone(),
                expected: append.expected,
                actual: version,
            });
        }
        actual.push(version);
    }
    let (head, mut prev_hash) = last_link(tx).await?;
    let mut position = head;
    let mut result = Vec::with_capacity(batch.len());
    for (append, version) in batch.into_iter().zip(actual) {
        let mut appended = Appended {
            first_position: position + 1,
            last_position: position,
            stream_version: version,
            duplicate: None,
        };
        for new in append.events {
            appended.last_position += 1;
            appended.stream_version += 1;
            let event = chain(new, &append.stream, &appended, prev_hash);
            insert_event(tx, &event).await?;
            prev_hash = event.hash;
        }
        position = appended.last_position;
        result.push(appended);
    }
    if let Some(command) = command {
        let whole = Appended {
            first_position: head + 1,
            last_position: position,
            stream_version: result.last().map_or(0, |a| a.stream_version),
            duplicate: None,
        };
        insert_command(tx, command, Some(&whole)).await?;
    }
    Ok(result)
}

/// The position and hash of the last event: what the next one chains to.
async fn last_link(tx: &mut AnyConnection) -> Result<(i64, String)> {
    let row = sqlx::query("SELECT position, hash FROM events ORDER BY position DESC LIMIT 1")
        .fetch_optional(tx)
        .await?;
    match row {
        Some(row) => Ok((row.try_get(0)?, row.try_get(1)?)),
        None => Ok((0, GENESIS_HASH.to_owned())),
    }
}

/// `new` as the event at `at.last_position` / `at.stream_version`, chained
/// to `prev_hash`.
fn chain(new: NewEvent, stream: &str, at: &Appended, prev_hash: String) -> RecordedEvent {
    let mut event = RecordedEvent {
        position: at.last_position,
        stream: stream.to_owned(),
        version: at.stream_version,
        id: new.id,
        event_type: new.event_type,
        schema_version: new.schema_version,
        payload: new.payload,
        metadata: new.metadata,
        recorded_at_ms: new.recorded_at_ms,
        prev_hash,
        hash: String::new(),
    };
    event.hash = event_hash(&event);
    event
}

async fn insert_event(tx: &mut AnyConnection, event: &RecordedEvent) -> Result<()> {
    let sql = format!(
        "INSERT INTO events ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        crate::store::EVENT_COLUMNS
    );
    sqlx::query(&sql)
        .bind(event.position)
        .bind(&event.stream)
        .bind(event.version)
        .bind(&event.id)
        .bind(&event.event_type)
        .bind(event.schema_version)
        .bind(&event.payload)
        .bind(&event.metadata)
        .bind(event.recorded_at_ms)
        .bind(&event.prev_hash)
        .bind(&event.hash)
        .execute(tx)
        .await
        .map_err(|error| match &error {
            // Position and (stream, version) were computed under the lock,
            // so the only unique key this insert can break is the id.
            sqlx::Error::Database(db) if db.is_unique_violation() => Error::DuplicateEvent {
                id: event.id.clone(),
            },
            _ => Error::Database(error),
        })?;
    Ok(())
}

/// The recorded result of command `id`, as a duplicate [`Appended`].
async fn find_command(tx: &mut AnyConnection, id: &str) -> Result<Option<Appended>> {
    let row = sqlx::query(
        "SELECT outcome, first_position, last_position, stream_version \
         FROM commands WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(tx)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let number = |i| -> Result<i64> { Ok(row.try_get::<Option<i64>, _>(i)?.unwrap_or(0)) };
    Ok(Some(Appended {
        first_position: number(1)?,
        last_position: number(2)?,
        stream_version: number(3)?,
        duplicate: Some(row.try_get(0)?),
    }))
}

/// Records `command`, with the positions of the append it came with.
async fn insert_command(
    tx: &mut AnyConnection,
    command: &CommandRecord,
    appended: Option<&Appended>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO commands (id, outcome, first_position, last_position, stream_version) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&command.id)
    .bind(&command.outcome)
    .bind(appended.map(|a| a.first_position))
    .bind(appended.map(|a| a.last_position))
    .bind(appended.map(|a| a.stream_version))
    .execute(tx)
    .await?;
    Ok(())
}
