//! Concurrency and durability: gap-free positions under concurrent
//! writers, one winner per version, data kept across reopen.

use std::collections::BTreeMap;

use mentat_store::{CommandRecord, Error, ExpectedVersion, Store};
use tokio::task::JoinSet;

use crate::{events, Db};

on_both_backends!(
    concurrent_appends_are_gap_free,
    racing_writers_on_one_stream_conflict,
    data_survives_reopen,
);

const WRITERS: i64 = 8;
const APPENDS_PER_WRITER: i64 = 15;

/// Writers share a store in threes: within a store appends queue in
/// process; across stores (as across planner processes) only the
/// database's lock keeps them in line.
async fn stores(db: &Db) -> Vec<Store> {
    let mut stores = Vec::new();
    for _ in 0..3 {
        stores.push(db.open().await);
    }
    stores
}

fn pick(stores: &[Store], w: i64) -> Store {
    stores[w as usize % stores.len()].clone()
}

/// Writer `w` appends `APPENDS_PER_WRITER` times to its own stream, 1 to 3
/// events at a time, each append expecting the version it last saw.
async fn writer(store: Store, w: i64) -> i64 {
    let stream = format!("stream-{w}");
    let mut version = 0;
    for i in 0..APPENDS_PER_WRITER {
        let count = 1 + (w + i) % 3;
        let appended = store
            .append(
                &stream,
                ExpectedVersion::Exact(version),
                None,
                events(w * 1000 + i * 10, count),
            )
            .await
            .expect("append");
        assert_eq!(appended.last_position - appended.first_position + 1, count);
        version = appended.stream_version;
    }
    version
}

async fn concurrent_appends_are_gap_free(db: &Db) {
    let stores = stores(db).await;
    let mut tasks = JoinSet::new();
    for w in 0..WRITERS {
        tasks.spawn(writer(pick(&stores, w), w));
    }
    let mut total = 0;
    while let Some(version) = tasks.join_next().await {
        total += version.expect("writer task");
    }

    let store = &stores[0];
    let all = store.read_all(0, total + 10).await.expect("read all");
    let positions: Vec<i64> = all.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=total).collect::<Vec<_>>(), "gap-free");

    let mut versions: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for event in &all {
        versions
            .entry(&event.stream)
            .or_default()
            .push(event.version);
    }
    assert_eq!(versions.len() as i64, WRITERS);
    for (stream, v) in versions {
        let dense: Vec<i64> = (1..=v.len() as i64).collect();
        assert_eq!(v, dense, "versions of {stream}");
    }
    let verified = store.verify().await.expect("verify");
    assert_eq!(verified.events, total);
}

async fn racing_writers_on_one_stream_conflict(db: &Db) {
    let stores = stores(db).await;
    let mut tasks = JoinSet::new();
    for w in 0..WRITERS {
        let store = pick(&stores, w);
        tasks.spawn(async move {
            store
                .append("one", ExpectedVersion::NoStream, None, events(w * 10, 2))
                .await
        });
    }
    let (mut won, mut conflicted) = (0, 0);
    while let Some(result) = tasks.join_next().await {
        match result.expect("task") {
            Ok(_) => won += 1,
            Err(Error::Conflict { actual: 2, .. }) => conflicted += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((won, conflicted), (1, WRITERS - 1));
    assert_eq!(stores[0].head().await.expect("head"), 2);
}

async fn data_survives_reopen(db: &Db) {
    let store = db.open().await;
    store
        .append("a", ExpectedVersion::NoStream, None, events(1, 3))
        .await
        .expect("append");
    let command = CommandRecord {
        id: "c".into(),
        outcome: r#"{"ok":1}"#.into(),
    };
    store.record_command(command.clone()).await.expect("record");
    let before = store.read_all(0, 100).await.expect("read");
    store.close().await;
    drop(store);

    // Opening again runs the migrations again: they must be no-ops.
    let store = db.open().await;
    assert_eq!(store.read_all(0, 100).await.expect("read"), before);
    let outcome = store.command_outcome(&command.id).await.expect("outcome");
    assert_eq!(outcome, Some(command.outcome));
    let next = store
        .append("a", ExpectedVersion::Exact(3), None, events(4, 1))
        .await
        .expect("append after reopen");
    assert_eq!((next.first_position, next.stream_version), (4, 4));
    assert_eq!(store.verify().await.expect("verify").events, 4);
    // And a third open, with the store above still open.
    let again = db.open().await;
    assert_eq!(again.head().await.expect("head"), 4);
}

#[tokio::test]
async fn in_memory_sqlite_is_one_private_log() {
    let store = Store::open("sqlite::memory:").await.expect("open");
    store
        .append("a", ExpectedVersion::NoStream, None, events(1, 3))
        .await
        .expect("append");
    // Every call may use another pooled connection: they must all see it.
    for _ in 0..5 {
        assert_eq!(store.head().await.expect("head"), 3);
    }
    assert_eq!(store.verify().await.expect("verify").events, 3);
    let other = Store::open("sqlite::memory:").await.expect("open another");
    assert_eq!(other.head().await.expect("head"), 0, "not shared");
}

#[tokio::test]
async fn unknown_url_scheme_is_invalid() {
    for url in ["mysql://localhost/mentat", "mentat.db"] {
        let err = Store::open(url).await.expect_err(url);
        assert!(matches!(err, Error::InvalidUrl(_)), "{url}: {err:?}");
    }
}
