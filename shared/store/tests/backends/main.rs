//! The store's behaviour, checked on both backends against real databases.
//!
//! Each case is an `async fn(&Db)` written once; [`on_both_backends!`]
//! turns a list of cases into `sqlite::<case>` and `postgres::<case>` tests,
//! so `cargo test -p mentat-store sqlite` runs one half. SQLite runs on a
//! temporary file; PostgreSQL on a fresh database from
//! [`mentat_testkit::PgDatabase`] (server from `MENTAT_TEST_PG_URL`).

use mentat_store::{Backend, NewEvent, Store};
use mentat_testkit::PgDatabase;
use sqlx::{AnyConnection, Connection};
use tempfile::TempDir;

/// Generates, for each named case, a test on SQLite and one on PostgreSQL.
macro_rules! on_both_backends {
    ($($case:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let db = $crate::Db::sqlite();
                    super::$case(&db).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let db = $crate::Db::postgres().await;
                    super::$case(&db).await;
                }
            )+
        }
    };
}

// After the macro, so that they can use it.
mod append;
mod batch;
mod commands;
mod integrity;
mod leadership;
mod lifecycle;
mod roles;

/// An empty database for one test, removed when dropped.
pub enum Db {
    Sqlite { _dir: TempDir, url: String },
    Postgres(PgDatabase),
}

impl Db {
    /// A SQLite file in a directory that does not exist yet (the store
    /// must create it).
    pub fn sqlite() -> Db {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}/not/yet/mentat.db", dir.path().display());
        Db::Sqlite { _dir: dir, url }
    }

    pub async fn postgres() -> Db {
        Db::Postgres(PgDatabase::create().await)
    }

    pub fn url(&self) -> &str {
        match self {
            Db::Sqlite { url, .. } => url,
            Db::Postgres(db) => &db.url,
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Db::Sqlite { .. } => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// Opens the store on this database.
    pub async fn open(&self) -> Store {
        let store = Store::open(self.url()).await.expect("open the store");
        assert_eq!(store.backend(), self.backend());
        store
    }

    /// A plain sqlx connection, bypassing the store: to try what the store
    /// never does (UPDATE, DELETE, forged rows).
    pub async fn raw(&self) -> AnyConnection {
        sqlx::any::install_default_drivers();
        AnyConnection::connect(self.url())
            .await
            .expect("raw connection")
    }
}

/// The `n`th test event: a fresh UUIDv7 id and a payload with non-ASCII
/// text and odd spacing, which must come back byte for byte.
pub fn event(n: i64) -> NewEvent {
    NewEvent {
        id: uuid::Uuid::now_v7().to_string(),
        event_type: "ReplicaStarted".into(),
        schema_version: 2,
        payload: format!(r#"{{ "n": {n},  "note": "héllo ✓" }}"#),
        metadata: format!(r#"{{"actor":"test","correlation_id":"c-{n}"}}"#),
        recorded_at_ms: 1_700_000_000_000 + n,
    }
}

/// `count` test events numbered from `first`.
pub fn events(first: i64, count: i64) -> Vec<NewEvent> {
    (first..first + count).map(event).collect()
}
