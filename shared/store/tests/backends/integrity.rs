//! The log cannot be rewritten through SQL, and tampering that gets past
//! the guard (a forged insert, or an edit after dropping the triggers) is
//! caught by `verify`.

use mentat_store::hash::GENESIS_HASH;
use mentat_store::{Backend, BreakKind, Chain, Error, ExpectedVersion, Store, Verified};
use sqlx::AnyConnection;

use crate::{events, Db};

on_both_backends!(
    update_delete_and_truncate_are_refused,
    verify_passes_on_a_good_log,
    verify_finds_a_forged_hash,
    verify_finds_a_missing_position,
    verify_finds_an_edit_made_without_the_guard,
    verify_names_the_kind_of_each_tampering,
    a_consistent_rewrite_is_caught_by_an_anchor_only,
    verify_finds_an_event_inserted_with_the_rest_renumbered,
    verify_finds_an_event_replaced_with_a_recomputed_hash,
);

/// A store holding three events in two streams.
async fn three_events(db: &Db) -> Store {
    let store = db.open().await;
    store
        .append("a", ExpectedVersion::Any, None, events(1, 2))
        .await
        .expect("append a");
    store
        .append("b", ExpectedVersion::Any, None, events(3, 1))
        .await
        .expect("append b");
    store
}

/// Runs `sql` and checks that the append-only guard refused it (not, say,
/// a typo in the test).
async fn refused(conn: &mut AnyConnection, sql: &str) {
    match sqlx::query(sql).execute(&mut *conn).await {
        Err(sqlx::Error::Database(e)) => {
            assert!(e.message().contains("append-only"), "{sql:?}: {e}")
        }
        other => panic!("the database did not refuse {sql:?}: {other:?}"),
    }
}

async fn update_delete_and_truncate_are_refused(db: &Db) {
    let store = three_events(db).await;
    store
        .record_command(mentat_store::CommandRecord {
            id: "c".into(),
            outcome: "{}".into(),
        })
        .await
        .expect("record command");
    let before = store.read_all(0, 100).await.expect("read");

    let mut raw = db.raw().await;
    refused(
        &mut raw,
        "UPDATE events SET payload = '{}' WHERE position = 1",
    )
    .await;
    refused(&mut raw, "UPDATE events SET stream = 'x'").await;
    refused(&mut raw, "DELETE FROM events WHERE position = 3").await;
    refused(&mut raw, "DELETE FROM events").await;
    refused(&mut raw, "UPDATE commands SET outcome = 'x'").await;
    refused(&mut raw, "DELETE FROM commands").await;
    if db.backend() == Backend::Postgres {
        refused(&mut raw, "TRUNCATE events").await;
        refused(&mut raw, "TRUNCATE commands").await;
    }

    assert_eq!(store.read_all(0, 100).await.expect("read"), before);
    assert_eq!(
        store
            .command_outcome("c")
            .await
            .expect("outcome")
            .as_deref(),
        Some("{}")
    );
    store.verify().await.expect("intact");
}

async fn verify_passes_on_a_good_log(db: &Db) {
    let store = db.open().await;
    let empty = store.verify().await.expect("verify the empty log");
    assert_eq!(
        empty,
        Verified {
            events: 0,
            head_position: 0,
            head_hash: GENESIS_HASH.into(),
            anchors_checked: 0,
            accepted: Vec::new(),
        }
    );

    // More than one verify page (1000), in batches, over several streams.
    for (i, stream) in (0..).zip(["a", "b", "c"].iter().cycle().take(12)) {
        store
            .append(stream, ExpectedVersion::Any, None, events(i * 100, 100))
            .await
            .expect("append batch");
    }
    let last = store.read_all(1199, 1).await.expect("read last");
    let verified = store.verify().await.expect("verify");
    assert_eq!(
        verified,
        Verified {
            events: 1200,
            head_position: 1200,
            head_hash: last[0].hash.clone(),
            anchors_checked: 0,
            accepted: Vec::new(),
        }
    );
}

/// Inserts, as an intruder with INSERT rights would, a copy of event 3 at
/// position `3 + gap` with `payload`. Its `prev_hash` is event 3's hash
/// (the link looks right) but its `hash` is copied too, so it does not
/// match its contents.
async fn forge(db: &Db, gap: i64, payload: &str) {
    let mut raw = db.raw().await;
    sqlx::query(
        "INSERT INTO events (position, stream, version, id, event_type, schema_version, \
         payload, metadata, recorded_at_ms, prev_hash, hash) \
         SELECT position + $1, stream, version + 1, id || '-forged', event_type, \
         schema_version, $2, metadata, recorded_at_ms, hash, hash \
         FROM events WHERE position = 3",
    )
    .bind(gap)
    .bind(payload)
    .execute(&mut raw)
    .await
    .expect("forged insert");
}

fn assert_broken(result: Result<Verified, Error>, position: i64, kind: BreakKind) {
    match result {
        Err(Error::Tampered {
            position: p,
            kind: k,
            ..
        }) => assert_eq!((p, k), (position, kind)),
        other => panic!("expected {kind} at {position}, got {other:?}"),
    }
}

/// Drops the triggers that refuse UPDATE and DELETE, as only someone who
/// can change the schema can.
async fn drop_guard(db: &Db, raw: &mut AnyConnection) {
    let sql: &[&str] = match db.backend() {
        Backend::Sqlite => &[
            "DROP TRIGGER events_no_update",
            "DROP TRIGGER events_no_delete",
        ],
        Backend::Postgres => &["DROP TRIGGER events_append_only ON events"],
    };
    for sql in sql {
        sqlx::query(sql)
            .execute(&mut *raw)
            .await
            .expect("drop guard");
    }
}

async fn verify_names_the_kind_of_each_tampering(db: &Db) {
    let store = db.open().await;
    for i in 0..3 {
        store
            .append("a", ExpectedVersion::Any, None, events(i * 10, 4))
            .await
            .expect("append");
    }
    let mut raw = db.raw().await;
    drop_guard(db, &mut raw).await;
    sqlx::query("UPDATE events SET payload = '{\"edited\":1}' WHERE position = 5")
        .execute(&mut raw)
        .await
        .expect("edit");
    assert_broken(store.verify().await, 5, BreakKind::ContentChanged);
    // Accepted, the edit is reported and the rest is checked.
    let mut chain = Chain::genesis();
    chain.accept(5);
    let verified = store.verify_with(chain).await.expect("accepted");
    assert_eq!(verified.head_position, 12);
    assert_eq!(verified.accepted[0].kind, BreakKind::ContentChanged);

    sqlx::query("DELETE FROM events WHERE position = 9")
        .execute(&mut raw)
        .await
        .expect("delete");
    let mut chain = Chain::genesis();
    chain.accept(5);
    assert_broken(
        store.verify_with(chain).await,
        9,
        BreakKind::PositionMissing,
    );
}

/// Rewrites every event from `from` on with a new payload and recomputed
/// hashes, as an intruder who knows the hash would.
async fn rewrite_from(db: &Db, store: &Store, from: i64) {
    let mut raw = db.raw().await;
    drop_guard(db, &mut raw).await;
    let mut prev = store
        .event_at(from - 1)
        .await
        .expect("read")
        .map_or(GENESIS_HASH.to_owned(), |e| e.hash);
    for mut e in store.read_all(from - 1, 1000).await.expect("read") {
        e.payload = format!("{{\"rewritten\":{}}}", e.position);
        e.prev_hash = prev;
        e.hash = mentat_store::hash::event_hash(&e);
        sqlx::query(
            "UPDATE events SET payload = $1, prev_hash = $2, hash = $3 WHERE position = $4",
        )
        .bind(&e.payload)
        .bind(&e.prev_hash)
        .bind(&e.hash)
        .bind(e.position)
        .execute(&mut raw)
        .await
        .expect("rewrite");
        prev = e.hash;
    }
}

async fn a_consistent_rewrite_is_caught_by_an_anchor_only(db: &Db) {
    let store = db.open().await;
    store
        .append("a", ExpectedVersion::Any, None, events(0, 10))
        .await
        .expect("append");
    let anchored = store.verify().await.expect("good");
    rewrite_from(db, &store, 4).await;
    let rewritten = store.verify().await.expect("the chain alone holds");
    assert_ne!(rewritten.head_hash, anchored.head_hash);
    let mut chain = Chain::genesis();
    chain.anchor(anchored.head_position, &anchored.head_hash);
    assert_broken(
        store.verify_with(chain).await,
        10,
        BreakKind::AnchorMismatch,
    );
}

async fn verify_finds_a_forged_hash(db: &Db) {
    let store = three_events(db).await;
    forge(db, 1, r#"{"forged":true}"#).await;
    assert_broken(store.verify().await, 4, BreakKind::ContentChanged);
}

async fn verify_finds_a_missing_position(db: &Db) {
    let store = three_events(db).await;
    // At 5, leaving 4 empty: the gap is found before the bad hash at 5.
    forge(db, 2, r#"{"forged":true}"#).await;
    assert_broken(store.verify().await, 4, BreakKind::PositionMissing);
}

async fn verify_finds_an_edit_made_without_the_guard(db: &Db) {
    let store = three_events(db).await;
    let mut raw = db.raw().await;
    // Only someone who can change the schema gets this far.
    let drop_guard: &[&str] = match db.backend() {
        Backend::Sqlite => &["DROP TRIGGER events_no_update"],
        Backend::Postgres => &["DROP TRIGGER events_append_only ON events"],
    };
    for sql in drop_guard {
        sqlx::query(sql)
            .execute(&mut raw)
            .await
            .expect("drop guard");
    }
    sqlx::query("UPDATE events SET payload = '{\"edited\":1}' WHERE position = 2")
        .execute(&mut raw)
        .await
        .expect("edit without the guard");
    assert_broken(store.verify().await, 2, BreakKind::ContentChanged);
}

async fn verify_finds_an_event_inserted_with_the_rest_renumbered(db: &Db) {
    let store = db.open().await;
    store
        .append("a", ExpectedVersion::Any, None, events(0, 8))
        .await
        .expect("append");
    let mut raw = db.raw().await;
    drop_guard(db, &mut raw).await;
    // Make room at 4 (in two steps, so no two rows ever share a position).
    for sql in [
        "UPDATE events SET position = position + 1000 WHERE position >= 4",
        "UPDATE events SET position = position - 999 WHERE position >= 1000",
    ] {
        sqlx::query(sql).execute(&mut raw).await.expect("renumber");
    }
    // A forged event at 4, properly hashed and linked to 3.
    let mut forged = store.event_at(5).await.expect("read").expect("moved");
    forged.position = 4;
    forged.id.push_str("-forged");
    forged.version += 100;
    forged.payload = r#"{"forged":true}"#.into();
    forged.prev_hash = store.event_at(3).await.expect("read").expect("3").hash;
    forged.hash = mentat_store::hash::event_hash(&forged);
    sqlx::query(
        "INSERT INTO events (position, stream, version, id, event_type, schema_version, \
         payload, metadata, recorded_at_ms, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(forged.position)
    .bind(&forged.stream)
    .bind(forged.version)
    .bind(&forged.id)
    .bind(&forged.event_type)
    .bind(forged.schema_version)
    .bind(&forged.payload)
    .bind(&forged.metadata)
    .bind(forged.recorded_at_ms)
    .bind(&forged.prev_hash)
    .bind(&forged.hash)
    .execute(&mut raw)
    .await
    .expect("insert");
    assert_broken(store.verify().await, 4, BreakKind::EventInserted);
}

async fn verify_finds_an_event_replaced_with_a_recomputed_hash(db: &Db) {
    let store = db.open().await;
    store
        .append("a", ExpectedVersion::Any, None, events(0, 6))
        .await
        .expect("append");
    let mut raw = db.raw().await;
    drop_guard(db, &mut raw).await;
    let mut e = store.event_at(3).await.expect("read").expect("3");
    e.payload = r#"{"replaced":true}"#.into();
    e.hash = mentat_store::hash::event_hash(&e);
    sqlx::query("UPDATE events SET payload = $1, hash = $2 WHERE position = 3")
        .bind(&e.payload)
        .bind(&e.hash)
        .execute(&mut raw)
        .await
        .expect("replace");
    // Row 3 is self-consistent; row 4 no longer links to it.
    assert_broken(store.verify().await, 4, BreakKind::LinkBroken);
}
