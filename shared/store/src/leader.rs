//! Planner leadership: epochs, leases and the fence on every write.
//!
//! Several planners may run against one PostgreSQL log; exactly one leads.
//! Leadership is a row of `planner_epochs`: the newest epoch leads, for as
//! long as its lease (kept in database time, so hosts' clocks do not
//! matter) is renewed. A planner takes the next epoch only when the newest
//! one's lease has run out ([`Store::try_lead`]), in a transaction holding
//! the log's write lock.
//!
//! The lease decides who *should* lead; the fence makes sure nobody else
//! *can* write. A handle from [`Store::fenced`] checks, inside the locked
//! transaction of every append and command record, that its epoch is still
//! the newest, and writes nothing otherwise ([`Error::StaleEpoch`]). So a
//! planner paused or cut off for longer than its lease cannot append a
//! single event when it wakes, whatever its own clock or memory says.
//!
//! With SQLite one planner runs per log file: [`Store::claim_log_file`]
//! holds an exclusive lock on a file beside it for the process's life.

use std::fs::{File, OpenOptions};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use sqlx::{AnyConnection, Row};

use crate::append::finish;
use crate::{Backend, Error, Result, Store};

/// The newest planner epoch in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    /// The epoch: 1 for the first planner ever elected, then one more per
    /// election.
    pub epoch: i64,
    /// The planner that took it.
    pub planner: String,
    /// When it was taken (database time, ms since the Unix epoch).
    pub elected_at_ms: i64,
    /// Until when its lease runs, unless renewed (database time).
    pub lease_until_ms: i64,
    /// The database's time when this was read, to compare the lease with.
    pub now_ms: i64,
}

impl Leader {
    /// Whether the lease has run out, as of when it was read.
    pub fn expired(&self) -> bool {
        self.lease_until_ms < self.now_ms
    }
}

/// An exclusive lock on a SQLite log file, held until dropped (or the
/// process ends, however it ends).
#[derive(Debug)]
pub struct LogFileLock {
    _lock: Flock<File>,
}

impl Store {
    /// A handle on the same log whose every write is fenced by `epoch`:
    /// it fails with [`Error::StaleEpoch`], writing nothing, once a newer
    /// epoch has been taken.
    pub fn fenced(&self, epoch: i64) -> Store {
        Store {
            epoch: Some(epoch),
            ..self.clone()
        }
    }

    /// The epoch this handle's writes are fenced by, if any.
    pub fn epoch(&self) -> Option<i64> {
        self.epoch
    }

    /// The newest epoch, or `None` before any planner was elected.
    pub async fn leader(&self) -> Result<Option<Leader>> {
        let mut conn = self.pool.acquire().await?;
        newest(&mut conn, self.backend).await
    }

    /// Take the next epoch for `planner`, with a lease of `lease`, if no
    /// planner leads (no epoch yet, or the newest one's lease ran out).
    /// Returns the epoch taken, or `None` when another planner's lease
    /// still runs.
    pub async fn try_lead(&self, planner: &str, lease: Duration) -> Result<Option<i64>> {
        let _turn = self.write_gate.lock().await;
        let mut tx = self.begin_write().await?;
        let result = async {
            let newest = newest(&mut tx, self.backend).await?;
            let now = db_now(&mut tx, self.backend).await?;
            if newest.as_ref().is_some_and(|l| l.lease_until_ms >= now) {
                return Ok(None);
            }
            let epoch = newest.map_or(1, |l| l.epoch + 1);
            sqlx::query(
                "INSERT INTO planner_epochs (epoch, planner, elected_at_ms, lease_until_ms) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(epoch)
            .bind(planner)
            .bind(now)
            .bind(now + lease_ms(lease))
            .execute(&mut *tx)
            .await?;
            Ok(Some(epoch))
        }
        .await;
        finish(tx, result).await
    }

    /// Renew the lease of `epoch` to `lease` from now. Fails with
    /// [`Error::StaleEpoch`] when a newer epoch has been taken.
    pub async fn renew_lease(&self, epoch: i64, lease: Duration) -> Result<()> {
        let _turn = self.write_gate.lock().await;
        let mut tx = self.begin_write().await?;
        let result = async {
            check_fence(&mut tx, epoch).await?;
            let now = db_now(&mut tx, self.backend).await?;
            sqlx::query("UPDATE planner_epochs SET lease_until_ms = $1 WHERE epoch = $2")
                .bind(now + lease_ms(lease))
                .bind(epoch)
                .execute(&mut *tx)
                .await?;
            Ok(())
        }
        .await;
        finish(tx, result).await
    }

    /// Give up the lease of `epoch` now, so that a standby (or this
    /// planner, restarted) takes over at once. Does nothing when a newer
    /// epoch leads already.
    pub async fn resign(&self, epoch: i64) -> Result<()> {
        let _turn = self.write_gate.lock().await;
        let mut tx = self.begin_write().await?;
        let result = async {
            sqlx::query("UPDATE planner_epochs SET lease_until_ms = 0 WHERE epoch = $1")
                .bind(epoch)
                .execute(&mut *tx)
                .await?;
            Ok(())
        }
        .await;
        finish(tx, result).await
    }

    /// With SQLite, lock the log file for this process (a file
    /// `<log>.planner.lock` beside it), or fail with [`Error::LogInUse`]
    /// when another process holds it. `None` on PostgreSQL and for an
    /// in-memory log, where nothing is locked.
    pub fn claim_log_file(&self) -> Result<Option<LogFileLock>> {
        let Some(file) = &self.sqlite_file else {
            return Ok(None);
        };
        let path = format!("{file}.planner.lock");
        let handle = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::Database(sqlx::Error::Io(e)))?;
        match Flock::lock(handle, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(LogFileLock { _lock: lock })),
            Err(_) => Err(Error::LogInUse { path }),
        }
    }
}

/// [`Error::StaleEpoch`] unless `ours` is the newest epoch. Runs inside a
/// write transaction, so no election can slip in before it commits.
pub(crate) async fn check_fence(tx: &mut AnyConnection, ours: i64) -> Result<()> {
    let row = sqlx::query("SELECT MAX(epoch) FROM planner_epochs")
        .fetch_one(&mut *tx)
        .await?;
    let current: Option<i64> = row.try_get(0)?;
    let current = current.unwrap_or(0);
    if current != ours {
        return Err(Error::StaleEpoch { ours, current });
    }
    Ok(())
}

async fn newest(conn: &mut AnyConnection, backend: Backend) -> Result<Option<Leader>> {
    let row = sqlx::query(
        "SELECT epoch, planner, elected_at_ms, lease_until_ms FROM planner_epochs \
         ORDER BY epoch DESC LIMIT 1",
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(Leader {
        epoch: row.try_get(0)?,
        planner: row.try_get(1)?,
        elected_at_ms: row.try_get(2)?,
        lease_until_ms: row.try_get(3)?,
        now_ms: db_now(conn, backend).await?,
    }))
}

/// The database's clock, in ms since the Unix epoch.
async fn db_now(conn: &mut AnyConnection, backend: Backend) -> Result<i64> {
    let sql = match backend {
        Backend::Postgres => "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        Backend::Sqlite => "SELECT CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
    };
    let row = sqlx::query(sql).fetch_one(conn).await?;
    Ok(row.try_get(0)?)
}

fn lease_ms(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2)
}
