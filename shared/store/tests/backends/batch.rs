//! One decision over several streams: appended in one transaction with its
//! command, all or nothing.

use mentat_store::{CommandRecord, Error, ExpectedVersion, StreamAppend};

use crate::{event, events, Db};

on_both_backends!(
    a_batch_appends_every_stream_in_one_chain,
    a_conflict_on_any_stream_appends_nothing,
    a_duplicate_event_in_a_later_stream_appends_nothing,
    a_retried_batch_returns_the_first_outcome,
);

fn part(stream: &str, expected: ExpectedVersion, first: i64, count: i64) -> StreamAppend {
    StreamAppend {
        stream: stream.into(),
        expected,
        events: events(first, count),
    }
}

fn command(id: &str) -> CommandRecord {
    CommandRecord {
        id: id.into(),
        outcome: r#"{"status":"accepted"}"#.into(),
    }
}

async fn a_batch_appends_every_stream_in_one_chain(db: &Db) {
    let store = db.open().await;
    store
        .append("api", ExpectedVersion::NoStream, None, events(1, 1))
        .await
        .expect("seed api");
    let done = store
        .append_batch(
            vec![
                part("web", ExpectedVersion::NoStream, 2, 2),
                part("api", ExpectedVersion::Exact(1), 4, 1),
            ],
            Some(command("apply-1")),
        )
        .await
        .expect("batch");
    assert_eq!(done.len(), 2);
    assert_eq!((done[0].first_position, done[0].last_position), (2, 3));
    assert_eq!(done[0].stream_version, 2);
    assert_eq!((done[1].first_position, done[1].last_position), (4, 4));
    assert_eq!(done[1].stream_version, 2, "api was at 1");
    let verified = store.verify().await.expect("the chain holds");
    assert_eq!(verified.events, 4);
    assert!(store
        .command_outcome("apply-1")
        .await
        .expect("read")
        .is_some());
}

async fn a_conflict_on_any_stream_appends_nothing(db: &Db) {
    let store = db.open().await;
    store
        .append("api", ExpectedVersion::NoStream, None, events(1, 1))
        .await
        .expect("seed api");
    let err = store
        .append_batch(
            vec![
                part("web", ExpectedVersion::NoStream, 2, 2),
                part("api", ExpectedVersion::NoStream, 4, 1),
            ],
            Some(command("apply-1")),
        )
        .await
        .expect_err("api is not new");
    assert!(
        matches!(&err, Error::Conflict { stream, actual: 1, .. } if stream == "api"),
        "{err:?}"
    );
    assert_eq!(store.head().await.expect("head"), 1, "web not appended");
    assert_eq!(store.stream_version("web").await.expect("version"), 0);
    assert_eq!(store.command_outcome("apply-1").await.expect("read"), None);
}

async fn a_duplicate_event_in_a_later_stream_appends_nothing(db: &Db) {
    let store = db.open().await;
    let seeded = event(1);
    store
        .append("api", ExpectedVersion::NoStream, None, vec![seeded.clone()])
        .await
        .expect("seed api");
    let err = store
        .append_batch(
            vec![
                part("web", ExpectedVersion::NoStream, 2, 2),
                StreamAppend {
                    stream: "db".into(),
                    expected: ExpectedVersion::NoStream,
                    events: vec![seeded.clone()],
                },
            ],
            Some(command("apply-1")),
        )
        .await
        .expect_err("the id is taken");
    assert!(
        matches!(&err, Error::DuplicateEvent { id } if *id == seeded.id),
        "{err:?}"
    );
    assert_eq!(
        store.head().await.expect("head"),
        1,
        "the first stream rolled back too"
    );
    assert_eq!(store.command_outcome("apply-1").await.expect("read"), None);
    store.verify().await.expect("the chain holds");
}

async fn a_retried_batch_returns_the_first_outcome(db: &Db) {
    let store = db.open().await;
    let batch = || {
        vec![
            part("web", ExpectedVersion::NoStream, 1, 1),
            part("api", ExpectedVersion::NoStream, 2, 1),
        ]
    };
    let first = store
        .append_batch(batch(), Some(command("apply-1")))
        .await
        .expect("first");
    let again = store
        .append_batch(batch(), Some(command("apply-1")))
        .await
        .expect("a retry is not an error");
    assert_eq!(again.len(), 2);
    assert!(again.iter().all(|a| a.duplicate.is_some()));
    assert_eq!(again[0].first_position, first[0].first_position);
    assert_eq!(
        again[0].last_position, first[1].last_position,
        "the whole range"
    );
    assert_eq!(
        store.head().await.expect("head"),
        2,
        "nothing appended again"
    );
}
