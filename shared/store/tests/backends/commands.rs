//! Command idempotency: a retried command is a no-op returning the first
//! outcome.

use mentat_store::{Appended, CommandRecord, Error, ExpectedVersion};

use crate::{event, events, Db};

on_both_backends!(
    retried_append_returns_the_first_outcome,
    recorded_command_answers_retries,
    failed_append_records_no_command,
);

fn command(id: &str, outcome: &str) -> CommandRecord {
    CommandRecord {
        id: id.into(),
        outcome: outcome.into(),
    }
}

async fn retried_append_returns_the_first_outcome(db: &Db) {
    let store = db.open().await;
    let first = command("cmd-1", r#"{"accepted":"d-1"}"#);
    let done = store
        .append(
            "web",
            ExpectedVersion::NoStream,
            Some(first.clone()),
            events(1, 2),
        )
        .await
        .expect("first append");
    assert_eq!(done.duplicate, None);

    // The retry carries a different outcome, new event ids and a version
    // that is stale by now: none of it matters, the id was seen.
    let retry = command("cmd-1", r#"{"accepted":"d-2"}"#);
    let again = store
        .append("web", ExpectedVersion::NoStream, Some(retry), events(3, 1))
        .await
        .expect("retry is not an error");
    assert_eq!(
        again,
        Appended {
            duplicate: Some(first.outcome.clone()),
            ..done
        },
        "same numbers as the first append, and its outcome"
    );
    assert_eq!(store.head().await.expect("head"), 2, "nothing appended");
    let outcome = store.command_outcome("cmd-1").await.expect("outcome");
    assert_eq!(outcome, Some(first.outcome));
    assert_eq!(store.command_outcome("cmd-2").await.expect("outcome"), None);
}

async fn recorded_command_answers_retries(db: &Db) {
    let store = db.open().await;
    let rejected = command("cmd-r", r#"{"rejected":"no such service"}"#);
    let first = store
        .record_command(rejected.clone())
        .await
        .expect("record");
    assert_eq!(first, None, "recorded now");
    let second = store
        .record_command(command("cmd-r", r#"{"rejected":"other"}"#))
        .await
        .expect("record again");
    assert_eq!(second, Some(rejected.outcome.clone()), "first outcome kept");

    // An append carrying that command id is a duplicate too.
    let append = store
        .append(
            "web",
            ExpectedVersion::Any,
            Some(rejected.clone()),
            vec![event(1)],
        )
        .await
        .expect("append");
    assert_eq!(
        append,
        Appended {
            first_position: 0,
            last_position: 0,
            stream_version: 0,
            duplicate: Some(rejected.outcome.clone()),
        }
    );
    assert_eq!(store.head().await.expect("head"), 0);
    let outcome = store.command_outcome("cmd-r").await.expect("outcome");
    assert_eq!(outcome, Some(rejected.outcome));
}

async fn failed_append_records_no_command(db: &Db) {
    let store = db.open().await;
    let taken = event(1);
    store
        .append("a", ExpectedVersion::Any, None, vec![taken.clone()])
        .await
        .expect("first append");
    let cmd = command("cmd-dup", "{}");
    let err = store
        .append("b", ExpectedVersion::Any, Some(cmd.clone()), vec![taken])
        .await
        .expect_err("duplicate event");
    assert!(matches!(err, Error::DuplicateEvent { .. }), "{err:?}");
    let outcome = store.command_outcome(&cmd.id).await.expect("outcome");
    assert_eq!(outcome, None, "rolled back with the events");
    // So a corrected retry of the command goes through.
    let ok = store
        .append("b", ExpectedVersion::Any, Some(cmd), events(2, 1))
        .await
        .expect("retry with a fresh event");
    assert_eq!(ok.duplicate, None);
}
