//! Fresh PostgreSQL databases for tests.
//!
//! Each [`PgDatabase`] is a new, empty database on the server named by
//! `MENTAT_TEST_PG_URL` (default [`DEFAULT_ADMIN_URL`]), so tests run in
//! parallel without seeing each other's rows. It is dropped when the value
//! is, even if the test panicked.
//!
//! ```no_run
//! # async fn demo() {
//! let db = mentat_testkit::PgDatabase::create().await;
//! // connect to db.url …
//! # }
//! ```

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};

/// The admin URL used when `MENTAT_TEST_PG_URL` is not set.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The server to create test databases on: `MENTAT_TEST_PG_URL`, else
/// [`DEFAULT_ADMIN_URL`]. The user needs the CREATEDB privilege.
pub fn admin_url() -> String {
    std::env::var("MENTAT_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

/// A database that exists for the lifetime of this value.
#[derive(Debug)]
pub struct PgDatabase {
    /// `postgres://…/mentat_t_<uuid>`: connect here.
    pub url: String,
    /// The database's name.
    pub name: String,
    admin_url: String,
}

impl PgDatabase {
    /// Creates `mentat_t_<uuid>` on the admin server. Panics with a hint if
    /// the server cannot be reached: the test needs a real PostgreSQL.
    pub async fn create() -> PgDatabase {
        let admin_url = admin_url();
        let name = format!("mentat_t_{}", uuid::Uuid::now_v7().simple());
        let mut admin = connect(&admin_url).await;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on {admin_url}: {e}"));
        let _ = admin.close().await;
        PgDatabase {
            url: with_database(&admin_url, &name),
            name,
            admin_url,
        }
    }
}

impl Drop for PgDatabase {
    /// Drops the database (`WITH (FORCE)`, closing connections still open),
    /// best effort, from a thread of its own so that it works inside or
    /// outside a tokio runtime.
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let dropper = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let Ok(runtime) = runtime else { return };
            runtime.block_on(async {
                let Ok(mut admin) = try_connect(&admin_url).await else {
                    return;
                };
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                if let Err(e) = sqlx::query(&sql).execute(&mut admin).await {
                    tracing::warn!(%e, database = %name, "cannot drop test database");
                }
                let _ = admin.close().await;
            });
        });
        let _ = dropper.join();
    }
}

async fn connect(url: &str) -> PgConnection {
    try_connect(url).await.unwrap_or_else(|e| {
        panic!(
            "cannot connect to PostgreSQL at {url}: {e}. Start one, or set MENTAT_TEST_PG_URL \
             to a server where this user may CREATE DATABASE"
        )
    })
}

async fn try_connect(url: &str) -> sqlx::Result<PgConnection> {
    // Quiet: CREATE/DROP DATABASE are not worth a log line per test.
    PgConnectOptions::from_str(url)?
        .disable_statement_logging()
        .connect()
        .await
}

/// `url` with its database (the path) replaced by `name`; query kept.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{name}", &base[..path_start]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_the_database_and_keeps_the_rest() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:5432", "x"),
            "postgres://h:5432/x"
        );
    }
}
