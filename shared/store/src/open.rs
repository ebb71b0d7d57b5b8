//! Opening a store: reading the URL, connecting, migrating.
//!
//! Both backends go through sqlx's `Any` driver, so every query in this
//! crate is written once. The SQL is the common subset (`$1` placeholders
//! work on SQLite too); the few differences (how a write transaction takes
//! the log's lock, the migrations) are chosen by [`Backend`].

use std::path::Path;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::AnyPool;

use crate::{Backend, Error, Result};

/// Pool size: SQLite in WAL mode reads concurrently; PostgreSQL needs few
/// connections because writes are serialised anyway.
const MAX_CONNECTIONS: u32 = 8;

/// How long a SQLite connection waits for another process's write lock
/// before giving up with a `database is locked` error.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long to wait for a pooled connection, connecting included. Writers
/// queue on the store's write gate, not here, so a healthy database never
/// comes near it; an unreachable one (a refused connection is retried
/// until then) fails every call after this long, and the planner, which
/// awaits its appends inline, tells it apart as an outage that soon.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// On PostgreSQL, how long a session may sit idle inside a transaction
/// before the server ends it. The store's transactions never wait on
/// anything but the database, so only a writer frozen mid-transaction (a
/// planner paused by SIGSTOP, a VM suspended) gets there; ending its
/// session releases the write lock it held, so a standby can take over
/// instead of waiting on it for ever.
const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(5);

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// A URL understood, and what it takes to open it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) backend: Backend,
    /// The URL handed to sqlx (for SQLite, with `mode=rwc` added).
    pub(crate) url: String,
    /// The SQLite file, when there is one (not for `:memory:`).
    pub(crate) file: Option<String>,
}

impl Target {
    /// Reads `url`: `sqlite://path`, `sqlite:path`, `sqlite::memory:`,
    /// `postgres://…` or `postgresql://…`.
    pub(crate) fn parse(url: &str) -> Result<Target> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Target {
                backend: Backend::Postgres,
                url: url.to_owned(),
                file: None,
            });
        }
        let rest = url
            .strip_prefix("sqlite:")
            .ok_or_else(|| Error::InvalidUrl(url.to_owned()))?;
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        if path.is_empty() {
            return Err(Error::InvalidUrl(url.to_owned()));
        }
        let in_memory = path == ":memory:" || query.split('&').any(|p| p == "mode=memory");
        let has_mode = query.split('&').any(|p| p.starts_with("mode="));
        let url = match (has_mode, query.is_empty()) {
            (true, _) => url.to_owned(),
            (false, true) => format!("{url}?mode=rwc"),
            (false, false) => format!("{url}&mode=rwc"),
        };
        Ok(Target {
            backend: Backend::Sqlite,
            url,
            file: (!in_memory).then(|| path.to_owned()),
        })
    }

    /// Connects, sets SQLite up (parent directory, WAL) and runs the
    /// migrations, which are recorded in `_sqlx_migrations` and so are
    /// skipped on the next open.
    pub(crate) async fn connect(&self) -> Result<AnyPool> {
        let pool = self.connect_unmigrated().await?;
        match self.backend {
            Backend::Sqlite => {
                // WAL is a property of the file: set once, kept by every
                // later connection. Readers then never block the writer.
                sqlx::query("PRAGMA journal_mode = WAL")
                    .execute(&pool)
                    .await?;
                SQLITE_MIGRATIONS.run(&pool).await?;
            }
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&pool).await?,
        }
        Ok(pool)
    }

    /// Connects without touching the schema: for a role that may not
    /// change it, once the migrations ran as another role.
    pub(crate) async fn connect_unmigrated(&self) -> Result<AnyPool> {
        sqlx::any::install_default_drivers();
        if let Some(file) = &self.file {
            create_parent_dir(file)?;
            if self.url.contains("mode=rwc") {
                private_file(file)?;
            }
        }
        Ok(self.pool_options().connect(&self.url).await?)
    }

    fn pool_options(&self) -> AnyPoolOptions {
        let options = AnyPoolOptions::new().acquire_timeout(ACQUIRE_TIMEOUT);
        match (self.backend, &self.file) {
            (Backend::Postgres, _) => {
                options
                    .max_connections(MAX_CONNECTIONS)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            let ms = IDLE_IN_TRANSACTION_TIMEOUT.as_millis();
                            sqlx::query(&format!("SET idle_in_transaction_session_timeout = {ms}"))
                                .execute(conn)
                                .await?;
                            Ok(())
                        })
                    })
            }
            // Through the Any driver every new connection to `:memory:` is
            // a fresh, empty database: keep exactly one, for ever.
            (Backend::Sqlite, None) => options
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None),
            (Backend::Sqlite, Some(_)) => {
                options
                    .max_connections(MAX_CONNECTIONS)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            let ms = SQLITE_BUSY_TIMEOUT.as_millis();
                            sqlx::query(&format!("PRAGMA busy_timeout = {ms}"))
                                .execute(conn)
                                .await?;
                            Ok(())
                        })
                    })
            }
        }
    }
}

/// The directory of a new SQLite log is created for its owner only.
fn create_parent_dir(file: &str) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match Path::new(file).parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::Database(sqlx::Error::Io(e))),
        _ => Ok(()),
    }
}

/// The SQLite log holds every service's environment: it is created
/// readable and writable by its owner only (0600), and one that others
/// could read is closed to them. SQLite gives its `-wal` and `-shm` files
/// the mode of the database file.
fn private_file(file: &str) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |e| Error::Database(sqlx::Error::Io(e));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mode = std::fs::metadata(file).map_err(io)?.permissions().mode();
            if mode & 0o077 != 0 {
                std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode & 0o700))
                    .map_err(io)?;
            }
            Ok(())
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Target {
        Target::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn sqlite_urls_get_create_mode_and_a_file() {
        let t = parse("sqlite://data/mentat.db");
        assert_eq!(t.backend, Backend::Sqlite);
        assert_eq!(t.url, "sqlite://data/mentat.db?mode=rwc");
        assert_eq!(t.file.as_deref(), Some("data/mentat.db"));

        let t = parse("sqlite:///var/lib/mentat/log.db?cache=private");
        assert_eq!(
            t.url,
            "sqlite:///var/lib/mentat/log.db?cache=private&mode=rwc"
        );
        assert_eq!(t.file.as_deref(), Some("/var/lib/mentat/log.db"));

        let t = parse("sqlite:log.db?mode=ro");
        assert_eq!(t.url, "sqlite:log.db?mode=ro");
    }

    #[tokio::test]
    async fn a_sqlite_log_is_its_owners_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mode = |p: &std::path::Path| {
            std::fs::metadata(p)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
                .permissions()
                .mode()
                & 0o777
        };
        let file = dir.path().join("new/mentat.db");
        let url = format!("sqlite://{}", file.display());
        let pool = parse(&url)
            .connect()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        pool.close().await;
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(file.parent().unwrap_or(dir.path())), 0o700);
        for side in ["mentat.db-wal", "mentat.db-shm"] {
            let path = dir.path().join("new").join(side);
            if path.exists() {
                assert_eq!(mode(&path), 0o600, "{side}");
            }
        }
        // A log left open to others by an older version is closed.
        let old = dir.path().join("old.db");
        std::fs::write(&old, b"").unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644))
            .unwrap_or_else(|e| panic!("{e}"));
        let pool = parse(&format!("sqlite://{}", old.display()))
            .connect()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        pool.close().await;
        assert_eq!(mode(&old), 0o600);
    }

    #[test]
    fn sqlite_memory_has_no_file() {
        assert_eq!(parse("sqlite::memory:").file, None);
        assert_eq!(parse("sqlite://x?mode=memory").file, None);
    }

    #[test]
    fn postgres_urls_pass_through() {
        for url in [
            "postgres://u@h/db",
            "postgresql://u@h:5433/db?sslmode=disable",
        ] {
            let t = parse(url);
            assert_eq!(t.backend, Backend::Postgres);
            assert_eq!(t.url, url);
        }
    }

    /// A writer frozen inside its transaction (here: one that takes the
    /// write lock and then waits) loses its session after
    /// [`IDLE_IN_TRANSACTION_TIMEOUT`], and with it the lock: the next
    /// writer gets it instead of waiting for ever.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_frozen_mid_transaction_releases_the_write_lock() {
        let db = mentat_testkit::PgDatabase::create().await;
        let pool = parse(&db.url).connect().await.expect("connect");
        let mut frozen = pool.begin().await.expect("begin");
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(crate::roles::WRITE_LOCK_KEY)
            .execute(&mut *frozen)
            .await
            .expect("lock");
        let started = std::time::Instant::now();
        let mut next = pool.begin().await.expect("begin");
        let waited = tokio::time::timeout(
            IDLE_IN_TRANSACTION_TIMEOUT * 3,
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(crate::roles::WRITE_LOCK_KEY)
                .execute(&mut *next),
        )
        .await;
        assert!(
            matches!(waited, Ok(Ok(_))),
            "the lock was never released: {waited:?}"
        );
        assert!(started.elapsed() >= IDLE_IN_TRANSACTION_TIMEOUT);
        drop(next);
        drop(frozen);
    }

    #[test]
    fn other_urls_are_invalid() {
        for url in ["mysql://h/db", "", "sqlite://", "/tmp/mentat.db"] {
            assert!(
                matches!(Target::parse(url), Err(Error::InvalidUrl(_))),
                "{url}"
            );
        }
    }
}
