//! Planner leadership: epochs taken only when the lease ran out, and every
//! write fenced by the epoch it was decided under.

use std::time::Duration;

use mentat_store::{Backend, Error, ExpectedVersion};

use crate::{events, Db};

on_both_backends!(
    an_epoch_is_taken_only_when_the_lease_ran_out,
    a_stale_epoch_writes_nothing,
    one_planner_per_sqlite_file,
);

async fn an_epoch_is_taken_only_when_the_lease_ran_out(db: &Db) {
    let store = db.open().await;
    assert_eq!(store.leader().await.expect("read"), None);
    let first = store
        .try_lead("planner-a", Duration::from_secs(60))
        .await
        .expect("lead");
    assert_eq!(first, Some(1));
    let refused = store
        .try_lead("planner-b", Duration::from_secs(60))
        .await
        .expect("try");
    assert_eq!(refused, None, "planner-a's lease still runs");
    let leader = store.leader().await.expect("read").expect("a leader");
    assert_eq!((leader.epoch, leader.planner.as_str()), (1, "planner-a"));
    assert!(!leader.expired());

    // A lease of 1 ms runs out at once: the next planner takes epoch 2.
    store
        .renew_lease(1, Duration::from_millis(1))
        .await
        .expect("renew");
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(store
        .leader()
        .await
        .expect("read")
        .expect("leader")
        .expired());
    let second = store
        .try_lead("planner-b", Duration::from_secs(60))
        .await
        .expect("lead");
    assert_eq!(second, Some(2));
    let err = store
        .renew_lease(1, Duration::from_secs(60))
        .await
        .expect_err("epoch 1 is over");
    assert!(
        matches!(
            err,
            Error::StaleEpoch {
                ours: 1,
                current: 2
            }
        ),
        "{err:?}"
    );
}

async fn a_stale_epoch_writes_nothing(db: &Db) {
    let store = db.open().await;
    store
        .try_lead("planner-a", Duration::from_millis(1))
        .await
        .expect("lead");
    let old = store.fenced(1);
    old.append("web", ExpectedVersion::NoStream, None, events(1, 1))
        .await
        .expect("epoch 1 leads");
    tokio::time::sleep(Duration::from_millis(20)).await;
    store
        .try_lead("planner-b", Duration::from_secs(60))
        .await
        .expect("lead")
        .expect("epoch 2");
    let err = old
        .append("web", ExpectedVersion::Exact(1), None, events(2, 1))
        .await
        .expect_err("fenced");
    assert!(
        matches!(
            err,
            Error::StaleEpoch {
                ours: 1,
                current: 2
            }
        ),
        "{err:?}"
    );
    let err = old
        .record_command(mentat_store::CommandRecord {
            id: "c-1".into(),
            outcome: "{}".into(),
        })
        .await
        .expect_err("fenced");
    assert!(matches!(err, Error::StaleEpoch { .. }), "{err:?}");
    assert_eq!(store.head().await.expect("head"), 1, "nothing appended");
    assert_eq!(store.command_outcome("c-1").await.expect("read"), None);
    store
        .fenced(2)
        .append("web", ExpectedVersion::Exact(1), None, events(3, 1))
        .await
        .expect("epoch 2 leads");
    store.verify().await.expect("the chain holds");
}

async fn one_planner_per_sqlite_file(db: &Db) {
    let store = db.open().await;
    let held = store.claim_log_file().expect("first claim");
    match db.backend() {
        Backend::Postgres => assert!(held.is_none(), "nothing to lock on PostgreSQL"),
        Backend::Sqlite => {
            assert!(held.is_some());
            let other = db.open().await;
            let err = other.claim_log_file().expect_err("held by the first");
            assert!(matches!(err, Error::LogInUse { .. }), "{err:?}");
            drop(held);
            assert!(other.claim_log_file().expect("released").is_some());
        }
    }
}
