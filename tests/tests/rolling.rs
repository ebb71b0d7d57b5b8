//! End to end: rolling deployments with the real binaries, a real
//! nats-server and a real database, on SQLite and on PostgreSQL.

use std::time::Duration;

use mentat_bus::{codec, subject, Encoding};
use mentat_domain::command::{Outcome, RejectKind, Reply};
use mentat_e2e::{text, web_config, web_config_ready_after, Cluster, Db, Load};

const HOST: &str = "web.localhost";

/// Deploy `image` with `mt deploy` and wait for it; returns mt's output.
fn deploy(cluster: &Cluster, image: &str) -> std::process::Output {
    cluster.mt(&[
        "deploy",
        "web",
        "--image",
        image,
        "--reason",
        "e2e",
        "--timeout",
        "120",
    ])
}

async fn cluster_with_v1(db: Db) -> Cluster {
    let cluster = Cluster::start(db).await;
    cluster.apply(&web_config(3, 5));
    let out = deploy(&cluster, "v1");
    assert!(
        out.status.success(),
        "deploy v1: {}\n{}",
        text(&out),
        cluster.logs()
    );
    cluster
}

async fn rolling_update_answers_every_request(db: Db) {
    let cluster = cluster_with_v1(db).await;
    let load = Load::start(cluster.router_addr(), HOST);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = deploy(&cluster, "v2");
    assert!(
        out.status.success(),
        "deploy v2: {}\n{}",
        text(&out),
        cluster.logs()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tally = load.stop().await;
    println!("rolling v1 -> v2 under load: {tally:?}");
    assert_eq!(
        tally.ok(),
        tally.total(),
        "every request must be answered 200: {tally:?}"
    );
    assert!(
        tally.total() > 100,
        "too few requests to prove anything: {tally:?}"
    );
    assert_eq!(tally.versions.first().map(String::as_str), Some("v1"));
    assert_eq!(tally.versions.last().map(String::as_str), Some("v2"));
}

async fn bad_releases_are_reverted_without_losing_traffic(db: Db) {
    let cluster = cluster_with_v1(db).await;
    let load = Load::start(cluster.router_addr(), HOST);
    for bad in ["v2-crash", "v3-unhealthy"] {
        let out = deploy(&cluster, bad);
        assert!(!out.status.success(), "{bad} must fail: {}", text(&out));
        let all = text(&out);
        assert!(
            all.contains("revert"),
            "{bad}: mt should say it was reverted: {all}"
        );
    }
    let tally = load.stop().await;
    println!("bad releases under load: {tally:?}");
    assert_eq!(
        tally.ok(),
        tally.total(),
        "every request must be answered 200: {tally:?}"
    );
    assert_eq!(
        tally.versions,
        ["v1"],
        "traffic must never leave v1: {tally:?}"
    );
    let history = cluster.history("web").await;
    let reverted: Vec<_> = history
        .iter()
        .filter(|r| r.outcome == Outcome::Reverted)
        .collect();
    assert_eq!(reverted.len(), 2, "{history:?}");
    assert!(reverted[0]
        .failure
        .as_deref()
        .unwrap_or("")
        .contains("exited before becoming healthy"));
    assert!(reverted[1]
        .failure
        .as_deref()
        .unwrap_or("")
        .contains("not healthy within"));
    let out = cluster.mt(&["history", "web"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("reverted") && shown.contains("not healthy within"),
        "{shown}"
    );
}

async fn second_deploy_in_flight_is_rejected(db: Db) {
    let cluster = cluster_with_v1(db).await;
    // Replicas that take a second to get ready keep the first deployment in
    // flight for seconds, however loaded the machine is.
    cluster.apply(&web_config_ready_after(3, 10, 1000));
    let out = cluster.mt(&["deploy", "web", "--image", "v2", "--no-wait"]);
    assert!(out.status.success(), "{}", text(&out));
    let first = cluster
        .history("web")
        .await
        .last()
        .cloned()
        .expect("a deployment");
    let out = cluster.mt(&["deploy", "web", "--image", "v3", "--no-wait"]);
    assert!(
        !out.status.success(),
        "second deploy must be rejected: {}",
        text(&out)
    );
    assert!(
        text(&out).contains(&first.deployment_id),
        "the rejection must name the deployment in flight: {}",
        text(&out)
    );
    let done = cluster
        .wait_deployment("web", &first.deployment_id, Duration::from_secs(60))
        .await;
    assert_eq!(done.outcome, Outcome::Completed);
}

async fn planner_killed_mid_deploy_finishes_it(db: Db) {
    let mut cluster = cluster_with_v1(db).await;
    // Each new replica takes a second to get ready: the deployment lasts
    // several seconds, so the planner can be killed in the middle of it.
    cluster.apply(&web_config_ready_after(3, 10, 1000));
    let load = Load::start(cluster.router_addr(), HOST);
    let out = cluster.mt(&["deploy", "web", "--image", "v2", "--no-wait"]);
    assert!(out.status.success(), "{}", text(&out));
    let id = cluster
        .history("web")
        .await
        .last()
        .cloned()
        .expect("a deployment")
        .deployment_id;
    // Kill the planner once the first batch is done and the others are not.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = cluster
            .history("web")
            .await
            .last()
            .cloned()
            .expect("a deployment");
        if r.batches_done >= 1 {
            assert_eq!(
                r.outcome,
                Outcome::InProgress,
                "too late to kill mid-deploy: {r:?}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "first batch never completed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.kill("planner");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.start_service("planner");
    let done = cluster
        .wait_deployment("web", &id, Duration::from_secs(90))
        .await;
    assert_eq!(
        done.outcome,
        Outcome::Completed,
        "{done:?}\n{}",
        cluster.logs()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tally = load.stop().await;
    println!("planner killed mid-deploy: {tally:?}");
    assert_eq!(
        tally.ok(),
        tally.total(),
        "every request must be answered 200: {tally:?}"
    );
    assert_eq!(tally.versions.last().map(String::as_str), Some("v2"));
}

async fn command_published_while_planner_is_down_is_handled_later(db: Db) {
    let mut cluster = cluster_with_v1(db).await;
    cluster.kill("planner");
    // Fire and forget, as any client may: nobody is there to answer.
    let payload = br#"{"service":"web","image":"v2","command_id":"queued-1"}"#;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Content-Type", "application/json");
    cluster
        .bus
        .client
        .publish_with_headers(
            subject::command("deploy"),
            headers,
            payload.as_slice().into(),
        )
        .await
        .expect("publish");
    cluster.bus.client.flush().await.expect("flush");
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.start_service("planner");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let id = loop {
        if let Ok(records) = cluster.try_history("web").await {
            if let Some(r) = records.iter().find(|r| r.image == "v2") {
                break r.deployment_id.clone();
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the queued deploy was never handled\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let done = cluster
        .wait_deployment("web", &id, Duration::from_secs(60))
        .await;
    assert_eq!(done.outcome, Outcome::Completed);
}

async fn services_ride_out_a_nats_restart(db: Db) {
    let mut cluster = cluster_with_v1(db).await;
    // Same port, same JetStream data: every service reconnects and its
    // consumers pick up where they were.
    cluster.nats.restart();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let out = deploy(&cluster, "v2");
    assert!(
        out.status.success(),
        "deploy after a NATS restart: {}\n{}",
        text(&out),
        cluster.logs()
    );
    let load = Load::start(cluster.router_addr(), HOST);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tally = load.stop().await;
    assert_eq!(tally.ok(), tally.total(), "{tally:?}");
    assert_eq!(tally.versions, ["v2"], "{tally:?}");
}

/// Send `payload` as JSON on `mentat.cmd.deploy`, as any NATS client would,
/// and return the reply's raw bytes.
async fn json_deploy(cluster: &Cluster, payload: &'static [u8]) -> bytes::Bytes {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Content-Type", "application/json");
    cluster
        .bus
        .client
        .request_with_headers(subject::command("deploy"), headers, payload.into())
        .await
        .expect("a reply")
        .payload
}

async fn json_deploy_from_any_client(db: Db) {
    let cluster = cluster_with_v1(db).await;
    let reply = json_deploy(
        &cluster,
        br#"{"service":"web","image":"v2","actor":"curl-user","reason":"json"}"#,
    )
    .await;
    let text = String::from_utf8_lossy(&reply).into_owned();
    assert!(text.starts_with('{'), "the reply must be JSON too: {text}");
    let reply: Reply = codec::decode(&reply, Encoding::Json, "Reply").expect("JSON reply");
    let Reply::Accepted {
        deployment_id: Some(id),
        ..
    } = reply
    else {
        panic!("not accepted: {reply:?}");
    };
    let done = cluster
        .wait_deployment("web", &id, Duration::from_secs(60))
        .await;
    assert_eq!(done.outcome, Outcome::Completed);
    assert_eq!(done.actor.as_deref(), Some("curl-user"));
    // A malformed command is rejected with a reason, never ignored.
    let reply = json_deploy(&cluster, br#"{"service":"web"}"#).await;
    let reply: Reply = codec::decode(&reply, Encoding::Json, "Reply").expect("JSON reply");
    assert!(
        matches!(&reply, Reply::Rejected { kind: RejectKind::Invalid, reason } if reason.contains("image")),
        "{reply:?}"
    );
    // So is an unknown verb.
    let reply = cluster
        .bus
        .client
        .request(subject::command("launch"), "{}".into())
        .await
        .expect("a reply");
    let reply: Reply = codec::decode(&reply.payload, Encoding::MsgPack, "Reply").expect("reply");
    assert!(
        matches!(&reply, Reply::Rejected { kind: RejectKind::Invalid, reason } if reason.contains("launch")),
        "{reply:?}"
    );
}

mentat_e2e::on_both_databases!(
    rolling_update_answers_every_request,
    bad_releases_are_reverted_without_losing_traffic,
    second_deploy_in_flight_is_rejected,
    planner_killed_mid_deploy_finishes_it,
    command_published_while_planner_is_down_is_handled_later,
    services_ride_out_a_nats_restart,
    json_deploy_from_any_client,
);
