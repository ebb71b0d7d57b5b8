//! Two roles on PostgreSQL: one that owns the schema, one that appends.
//!
//! Whoever owns the `events` table can drop or disable its append-only
//! triggers and then rewrite history. So in production the migrations run
//! as an **owner** role, and the planner appends through a role that may
//! only read and insert ([`Store::open_migrated_by`]): it cannot `UPDATE`,
//! `DELETE` or `TRUNCATE` the log, nor `ALTER` or `DROP` its triggers.
//!
//! What the appending role is granted, on the tables the migrations made:
//!
//! | table | rights | why |
//! |---|---|---|
//! | `events`, `commands` | `SELECT`, `INSERT` | read and append the log |
//! | `planner_epochs` | `SELECT`, `INSERT`, `UPDATE` | take an epoch, renew and give up its lease (`leader.rs`); rows are never deleted |
//!
//! Writers serialise on a transaction-scoped advisory lock
//! ([`WRITE_LOCK_KEY`]), which needs no right on any table (`LOCK TABLE
//! events IN EXCLUSIVE MODE` needs `UPDATE`).

use sqlx::{AnyPool, Row};

use crate::open::Target;
use crate::{Backend, Error, Result, Store};

/// The key of the advisory lock every write transaction takes on
/// PostgreSQL ("mentat" in ASCII).
pub const WRITE_LOCK_KEY: i64 = 0x6d65_6e74_6174;

impl Store {
    /// Opens the log at `url` without migrating it through `url`: the
    /// migrations run through `migrate_url` (the schema's owner), which
    /// then grants the role of `url` what it needs to append and nothing
    /// more (see the module docs). For PostgreSQL only;
    /// [`Error::InvalidUrl`] otherwise.
    pub async fn open_migrated_by(url: &str, migrate_url: &str) -> Result<Store> {
        let target = Target::parse(url)?;
        let owner = Target::parse(migrate_url)?;
        if target.backend != Backend::Postgres || owner.backend != Backend::Postgres {
            return Err(Error::InvalidUrl(format!(
                "{migrate_url} (a separate migration URL is for PostgreSQL logs only)"
            )));
        }
        let pool = target.connect_unmigrated().await?;
        let appender: String = sqlx::query("SELECT CAST(current_user AS TEXT)")
            .fetch_one(&pool)
            .await?
            .try_get(0)?;
        let owner_pool = owner.connect().await?;
        let granted = grant_appender(&owner_pool, &appender).await;
        owner_pool.close().await;
        granted?;
        Ok(Store::from_pool(pool, &target))
    }

    /// Opens the log at `url` to read it, without creating or migrating
    /// anything (for exports). Appending through it fails unless the schema
    /// is there.
    pub async fn open_existing(url: &str) -> Result<Store> {
        let target = Target::parse(url)?;
        let pool = target.connect_unmigrated().await?;
        Ok(Store::from_pool(pool, &target))
    }

    /// Why this store's role could rewrite the log behind the planner's
    /// back, if it could: on PostgreSQL, when the role owns `events` (so
    /// can disable its triggers), is a superuser, or may `UPDATE`, `DELETE`
    /// or `TRUNCATE` it. `None` when it can only read and insert, and on
    /// SQLite (where whoever can write the file can rewrite it).
    pub async fn rewrite_rights(&self) -> Result<Option<String>> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT CAST(current_user AS TEXT), \
                    (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), \
                    pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = 'events'::regclass), 'USAGE'), \
                    has_table_privilege('events', 'UPDATE') OR has_table_privilege('events', 'DELETE') \
                        OR has_table_privilege('events', 'TRUNCATE')",
        )
        .fetch_one(&self.pool)
        .await?;
        let role: String = row.try_get(0)?;
        let superuser: bool = row.try_get(1)?;
        let owner: bool = row.try_get(2)?;
        let rewrite: bool = row.try_get(3)?;
        let why = if superuser {
            "is a superuser"
        } else if owner {
            "owns the events table (it can disable its triggers)"
        } else if rewrite {
            "may UPDATE, DELETE or TRUNCATE events"
        } else {
            return Ok(None);
        };
        Ok(Some(format!(
            "the role {role} {why}: anyone with its password can rewrite the log; \
             run the migrations as the owner with --migrate-url and append through a role \
             that may only SELECT and INSERT"
        )))
    }
}

/// Grants `role` what appending needs (see the module docs), as the owner.
async fn grant_appender(owner: &AnyPool, role: &str) -> Result<()> {
    let owner_role: String = sqlx::query("SELECT CAST(current_user AS TEXT)")
        .fetch_one(owner)
        .await?
        .try_get(0)?;
    if owner_role == role {
        return Ok(());
    }
    let role = quote_ident(role);
    for sql in [
        format!("GRANT SELECT, INSERT ON events, commands TO {role}"),
        format!("GRANT SELECT, INSERT, UPDATE ON planner_epochs TO {role}"),
    ] {
        sqlx::query(&sql).execute(owner).await?;
    }
    Ok(())
}

/// `name` as a PostgreSQL identifier, quoted.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("mentat_planner"), "\"mentat_planner\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
