//! End to end: a history far longer than one NATS message (1 MB by
//! default) is answered in full, a page at a time, by `mt history`, with
//! the real binaries, a real nats-server and a real database.

use std::time::{Duration, Instant};

use mentat_bus::{codec, Encoding};
use mentat_domain::command::HistoryReply;
use mentat_domain::event::{Event, Meta, Plan, SCHEMA_VERSION};
use mentat_domain::spec::Strategy;
use mentat_e2e::{web_config, Cluster, Db};
use mentat_store::{ExpectedVersion, NewEvent, Store};

/// Deployments recorded: each record carries two 1 KiB images, so the
/// whole history is about 1.5 MB.
const DEPLOYMENTS: usize = 600;

/// `DEPLOYMENTS` failed deployments of `web`, as the planner records them.
fn failed_deployments() -> Vec<NewEvent> {
    let meta = serde_json::to_string(&Meta::default()).expect("meta encodes");
    let mut out = Vec::new();
    for n in 0..DEPLOYMENTS {
        let id = format!("deployment-{n:04}");
        let image = format!("{n:04}-{}", "i".repeat(1024));
        let events = [
            Event::DeploymentStarted {
                deployment_id: id.clone(),
                service: "web".into(),
                image: image.clone(),
                previous_image: Some(image),
                strategy: Strategy::Rolling,
                batch_size: 1,
                replicas: 1,
                auto_revert: true,
                rollback: false,
                at_ms: 1_000 + n as i64,
                plan: Plan::default(),
            },
            Event::DeploymentFailed {
                deployment_id: id,
                reason: "recorded by the test".into(),
                at_ms: 1_001 + n as i64,
            },
        ];
        out.extend(events.into_iter().map(|event| NewEvent {
            id: mentat_bus::new_id(),
            event_type: event.type_name().to_owned(),
            schema_version: SCHEMA_VERSION,
            payload: serde_json::to_string(&event).expect("event encodes"),
            metadata: meta.clone(),
            recorded_at_ms: 1_000 + n as i64,
        }));
    }
    out
}

async fn a_history_past_the_payload_limit_is_answered_in_full(db: Db) {
    let mut cluster = Cluster::start(db).await;
    cluster.apply(&web_config(1, 10));
    // Record the history in the log while the planner is down; it folds
    // it when it comes back.
    cluster.kill("planner");
    cluster.writes_to_log();
    let store = Store::open(&cluster.database_url)
        .await
        .expect("the log opens");
    let version = store.stream_version("web").await.expect("web's version");
    store
        .append(
            "web",
            ExpectedVersion::Exact(version),
            None,
            failed_deployments(),
        )
        .await
        .expect("history appended");
    store.close().await;
    cluster.start_service("planner");
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.try_history("web").await.is_err() {
        assert!(
            Instant::now() < deadline,
            "planner not back\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let out = cluster.mt_ok(&["history", "web", "--json"]);
    let reply: HistoryReply = serde_json::from_str(&out).expect("mt history --json");
    let HistoryReply::Ok {
        deployments, next, ..
    } = &reply
    else {
        panic!("{reply:?}");
    };
    assert_eq!(*next, None);
    let ids: Vec<&str> = deployments
        .iter()
        .map(|d| d.deployment_id.as_str())
        .collect();
    let want: Vec<String> = (0..DEPLOYMENTS)
        .map(|n| format!("deployment-{n:04}"))
        .collect();
    assert_eq!(ids, want, "every deployment, oldest first");
    // In one message, as before paging, it would not pass NATS's limit.
    let whole = codec::encode(&reply, Encoding::MsgPack).expect("encodes");
    assert!(whole.len() > 1024 * 1024, "only {} bytes", whole.len());

    let table = cluster.mt_ok(&["history", "web"]);
    let rows = table
        .lines()
        .filter(|l| l.contains("recorded by the test"))
        .count();
    assert_eq!(rows, DEPLOYMENTS, "one row per deployment in mt history");
    let events = cluster.envelopes("web").await;
    let recorded = events
        .iter()
        .filter(|e| matches!(e.event, Event::DeploymentFailed { .. }))
        .count();
    assert_eq!(recorded, DEPLOYMENTS);
    let raw = cluster.mt_ok(&["history", "web", "--events"]);
    let failed = raw
        .lines()
        .filter(|l| l.contains("DeploymentFailed"))
        .count();
    assert_eq!(
        failed, DEPLOYMENTS,
        "one line per event in mt history --events"
    );
}

mentat_e2e::on_both_databases!(a_history_past_the_payload_limit_is_answered_in_full);
