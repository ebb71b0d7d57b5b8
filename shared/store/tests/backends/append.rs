//! Appending and reading back: versions, positions, conflicts, duplicates.

use mentat_store::hash::GENESIS_HASH;
use mentat_store::{Appended, Error, ExpectedVersion};

use crate::{event, events, Db};

on_both_backends!(
    appends_and_reads_back,
    read_all_pages_by_position,
    conflicting_append_appends_nothing,
    duplicate_event_id_is_rejected,
    empty_append_checks_the_version_and_records_the_command,
);

fn appended(first: i64, last: i64, version: i64) -> Appended {
    Appended {
        first_position: first,
        last_position: last,
        stream_version: version,
        duplicate: None,
    }
}

async fn appends_and_reads_back(db: &Db) {
    let store = db.open().await;
    let web = events(1, 3);
    let host = events(4, 2);

    let a = store
        .append("service-web", ExpectedVersion::NoStream, None, web.clone())
        .await
        .expect("append to web");
    assert_eq!(a, appended(1, 3, 3));
    let b = store
        .append("host-a", ExpectedVersion::Any, None, host.clone())
        .await
        .expect("append to host");
    assert_eq!(b, appended(4, 5, 2));

    let stream = store.read_stream("service-web").await.expect("read stream");
    assert_eq!(stream.len(), 3);
    for (i, (got, sent)) in (1..).zip(stream.iter().zip(&web)) {
        assert_eq!((got.position, got.version), (i, i));
        assert_eq!(got.stream, "service-web");
        assert_eq!(got.id, sent.id);
        assert_eq!(got.event_type, sent.event_type);
        assert_eq!(got.schema_version, sent.schema_version);
        assert_eq!(got.payload, sent.payload, "payload kept byte for byte");
        assert_eq!(got.metadata, sent.metadata);
        assert_eq!(got.recorded_at_ms, sent.recorded_at_ms);
    }

    let all = store.read_all(0, 100).await.expect("read all");
    let positions: Vec<i64> = all.iter().map(|e| e.position).collect();
    assert_eq!(positions, [1, 2, 3, 4, 5]);
    assert_eq!(all[3].stream, "host-a");
    assert_eq!(all[3].version, 1);
    assert_eq!(all[0].prev_hash, GENESIS_HASH);
    for pair in all.windows(2) {
        assert_eq!(
            pair[1].prev_hash, pair[0].hash,
            "each event chains to the one before"
        );
    }

    assert_eq!(store.head().await.expect("head"), 5);
    assert_eq!(
        store.stream_version("service-web").await.expect("version"),
        3
    );
    assert_eq!(store.stream_version("nobody").await.expect("version"), 0);
    assert!(store.read_stream("nobody").await.expect("read").is_empty());
}

async fn read_all_pages_by_position(db: &Db) {
    let store = db.open().await;
    assert!(store.read_all(0, 10).await.expect("read empty").is_empty());
    assert_eq!(store.head().await.expect("head"), 0);
    store
        .append("s", ExpectedVersion::Any, None, events(1, 10))
        .await
        .expect("append");

    let page = |after, limit| {
        let store = store.clone();
        async move {
            let events = store.read_all(after, limit).await.expect("read page");
            events.iter().map(|e| e.position).collect::<Vec<_>>()
        }
    };
    assert_eq!(page(0, 4).await, [1, 2, 3, 4]);
    assert_eq!(page(4, 4).await, [5, 6, 7, 8]);
    assert_eq!(page(8, 4).await, [9, 10]);
    assert!(page(10, 4).await.is_empty());
    assert!(page(0, 0).await.is_empty(), "limit 0 reads nothing");
    assert!(
        page(0, -1).await.is_empty(),
        "a negative limit reads nothing"
    );
}

async fn conflicting_append_appends_nothing(db: &Db) {
    let store = db.open().await;
    store
        .append("s", ExpectedVersion::NoStream, None, events(1, 2))
        .await
        .expect("first append");

    for expected in [
        ExpectedVersion::Exact(1),
        ExpectedVersion::Exact(3),
        ExpectedVersion::NoStream,
    ] {
        let command = mentat_store::CommandRecord {
            id: format!("cmd-{expected}"),
            outcome: "{}".into(),
        };
        let err = store
            .append("s", expected, Some(command.clone()), events(10, 2))
            .await
            .expect_err("stale version must conflict");
        match err {
            Error::Conflict {
                stream,
                expected: e,
                actual,
            } => assert_eq!((stream.as_str(), e, actual), ("s", expected, 2)),
            other => panic!("expected Conflict, got {other:?}"),
        }
        let outcome = store.command_outcome(&command.id).await.expect("outcome");
        assert_eq!(outcome, None, "a conflicting append records no command");
    }
    assert_eq!(store.head().await.expect("head"), 2, "nothing appended");

    let ok = store
        .append("s", ExpectedVersion::Exact(2), None, events(20, 1))
        .await
        .expect("append at the right version");
    assert_eq!(ok, appended(3, 3, 3));
    let ok = store
        .append("s", ExpectedVersion::Any, None, events(30, 1))
        .await
        .expect("Any never conflicts");
    assert_eq!(ok, appended(4, 4, 4));
}

async fn duplicate_event_id_is_rejected(db: &Db) {
    let store = db.open().await;
    let first = event(1);
    store
        .append("a", ExpectedVersion::Any, None, vec![first.clone()])
        .await
        .expect("first append");

    // Same id in another stream, after a fresh event in the same batch.
    let batch = vec![event(2), first.clone()];
    let err = store
        .append("b", ExpectedVersion::Any, None, batch)
        .await
        .expect_err("duplicate id");
    assert!(
        matches!(&err, Error::DuplicateEvent { id } if *id == first.id),
        "{err:?}"
    );

    // The same id twice in one batch.
    let twin = event(3);
    let err = store
        .append(
            "c",
            ExpectedVersion::Any,
            None,
            vec![twin.clone(), twin.clone()],
        )
        .await
        .expect_err("duplicate id within a batch");
    assert!(
        matches!(&err, Error::DuplicateEvent { id } if *id == twin.id),
        "{err:?}"
    );

    assert_eq!(store.head().await.expect("head"), 1, "nothing appended");
    assert_eq!(store.stream_version("b").await.expect("version"), 0);
    // The next append still chains on from position 1.
    let next = store
        .append("b", ExpectedVersion::NoStream, None, events(4, 1))
        .await
        .expect("append after the failures");
    assert_eq!(next, appended(2, 2, 1));
    store.verify().await.expect("chain intact");
}

async fn empty_append_checks_the_version_and_records_the_command(db: &Db) {
    let store = db.open().await;
    let command = mentat_store::CommandRecord {
        id: "noop".into(),
        outcome: r#"{"accepted":true}"#.into(),
    };
    let first = store
        .append(
            "s",
            ExpectedVersion::NoStream,
            Some(command.clone()),
            vec![],
        )
        .await
        .expect("empty append");
    assert_eq!(first, appended(1, 0, 0), "an empty range");
    let again = store
        .append(
            "s",
            ExpectedVersion::Exact(7),
            Some(command.clone()),
            vec![],
        )
        .await
        .expect("retry");
    assert_eq!(again.duplicate.as_deref(), Some(command.outcome.as_str()));

    let err = store
        .append("s", ExpectedVersion::Exact(7), None, vec![])
        .await
        .expect_err("still checks the version");
    assert!(matches!(err, Error::Conflict { actual: 0, .. }), "{err:?}");
}
