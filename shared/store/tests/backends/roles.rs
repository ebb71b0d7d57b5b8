//! PostgreSQL with two roles: the migrations run as the schema's owner,
//! the planner appends through a role that may only read and insert. That
//! role cannot disable a trigger, update, delete or truncate the log.

use mentat_store::{ExpectedVersion, Store};
use sqlx::{AnyConnection, Connection};

use crate::{events, Db};

/// `url` with its user replaced by `user` (the test server trusts local
/// connections).
fn as_user(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let host = rest.split_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{user}@{host}")
}

async fn exec(conn: &mut AnyConnection, sql: &str) {
    sqlx::query(sql)
        .execute(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Runs `sql` and checks that PostgreSQL refused it for want of a right
/// (SQLSTATE 42501 insufficient_privilege, or 42501-like "must be owner").
async fn denied(conn: &mut AnyConnection, sql: &str) {
    match sqlx::query(sql).execute(&mut *conn).await {
        Err(sqlx::Error::Database(e)) => assert_eq!(
            e.code().as_deref(),
            Some("42501"),
            "{sql:?} failed, but not for want of a right: {e}"
        ),
        other => panic!("the appender role could run {sql:?}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_appending_role_can_append_but_not_rewrite() {
    let db = Db::postgres().await;
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let (owner, appender) = (format!("owner_{suffix}"), format!("appender_{suffix}"));
    let mut admin = db.raw().await;
    let Db::Postgres(pg) = &db else {
        unreachable!()
    };
    exec(&mut admin, &format!("CREATE ROLE {owner} LOGIN")).await;
    exec(&mut admin, &format!("CREATE ROLE {appender} LOGIN")).await;
    exec(
        &mut admin,
        &format!("ALTER DATABASE {} OWNER TO {owner}", pg.name),
    )
    .await;
    exec(
        &mut admin,
        &format!("GRANT CREATE ON SCHEMA public TO {owner}"),
    )
    .await;

    let owner_url = as_user(db.url(), &owner);
    let appender_url = as_user(db.url(), &appender);
    // Without the owner, the appender cannot even create the schema.
    assert!(Store::open(&appender_url).await.is_err());
    let store = Store::open_migrated_by(&appender_url, &owner_url)
        .await
        .expect("migrate as the owner, open as the appender");
    assert_eq!(store.rewrite_rights().await.expect("rights"), None);
    // Everything the planner does works: elect, renew, append, record.
    let epoch = store
        .try_lead("p1", std::time::Duration::from_secs(5))
        .await
        .expect("lead")
        .expect("an epoch");
    store
        .renew_lease(epoch, std::time::Duration::from_secs(5))
        .await
        .expect("renew");
    let fenced = store.fenced(epoch);
    fenced
        .append("a", ExpectedVersion::NoStream, None, events(1, 3))
        .await
        .expect("append");
    fenced
        .record_command(mentat_store::CommandRecord {
            id: "c".into(),
            outcome: "{}".into(),
        })
        .await
        .expect("record");
    store.verify().await.expect("intact");
    // Reopening migrates again as the owner: nothing to do, still works.
    drop(
        Store::open_migrated_by(&appender_url, &owner_url)
            .await
            .expect("reopen"),
    );

    sqlx::any::install_default_drivers();
    let mut conn = AnyConnection::connect(&appender_url)
        .await
        .expect("connect");
    for sql in [
        "ALTER TABLE events DISABLE TRIGGER events_append_only",
        "ALTER TABLE events DISABLE TRIGGER ALL",
        "DROP TRIGGER events_append_only ON events",
        "UPDATE events SET payload = '{}' WHERE position = 1",
        "DELETE FROM events WHERE position = 3",
        "TRUNCATE events",
        "UPDATE commands SET outcome = 'x'",
        "DELETE FROM planner_epochs",
        "DROP TABLE events",
    ] {
        denied(&mut conn, sql).await;
    }
    drop(conn);
    store.close().await;
    // The owner could: that is why the planner does not run as it.
    let owner_store = Store::open(&owner_url).await.expect("as the owner");
    assert!(owner_store
        .rewrite_rights()
        .await
        .expect("rights")
        .is_some());
    owner_store.close().await;

    drop(admin);
    drop(db);
    let mut admin = mentat_testkit_admin().await;
    for role in [&appender, &owner] {
        let _ = sqlx::query(&format!("DROP ROLE IF EXISTS {role}"))
            .execute(&mut admin)
            .await;
    }
}

async fn mentat_testkit_admin() -> AnyConnection {
    sqlx::any::install_default_drivers();
    AnyConnection::connect(&mentat_testkit::pg::admin_url())
        .await
        .expect("admin connection")
}
