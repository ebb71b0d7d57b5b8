//! End to end: replica ids are unique across the cluster. A spawn that
//! would take the id of another service's replica is refused, and that
//! replica keeps serving, with the real binaries, a real nats-server and a
//! real database, while a client sends requests through the router.

use std::time::Duration;

use mentat_domain::command::RejectKind;
use mentat_domain::event::Event;
use mentat_domain::Reply;
use mentat_e2e::{text, web_config, Cluster, Db, Load};

const HOST: &str = "web.localhost";

/// `web` (one replica) and `rec`, a second service never deployed.
fn web_and_rec() -> String {
    format!(
        "{}  rec:\n    replicas: 1\n    run:\n      command: [\"mentat-demo-app\"]\n",
        web_config(1, 10)
    )
}

/// `mt ARGS --json` for a command that must be rejected: its kind.
fn rejected_kind(cluster: &Cluster, args: &[&str]) -> RejectKind {
    let mut args = args.to_vec();
    args.push("--json");
    let out = cluster.mt(&args);
    assert_eq!(out.status.code(), Some(1), "rejected: {}", text(&out));
    match serde_json::from_slice::<Reply>(&out.stdout) {
        Ok(Reply::Rejected { kind, .. }) => kind,
        other => panic!("not a rejection: {other:?}\n{}", text(&out)),
    }
}

async fn a_spawn_cannot_take_the_id_of_another_services_replica(db: Db) {
    let cluster = Cluster::start(db).await;
    cluster.apply(&web_and_rec());
    cluster.deploy_first("v1");
    let load = Load::start(cluster.router_addr(), HOST);
    let before = cluster.status("web").await;
    let [serving] = before.instances.as_slice() else {
        panic!("one replica of web: {before:#?}");
    };
    assert_eq!(serving.phase, "healthy", "{before:#?}");
    let id = serving.replica.clone();

    // The reported case: rec asks for web's running replica's id.
    let kind = rejected_kind(&cluster, &["spawn", "rec", "--id", &id, "--image", "r1"]);
    assert_eq!(kind, RejectKind::Invalid);
    // A free id of web's form is web's to give, not rec's.
    let kind = rejected_kind(&cluster, &["spawn", "rec", "--id", "web-900"]);
    assert_eq!(kind, RejectKind::Invalid);
    // rec has no such instance, so stopping it cannot reach web's.
    let kind = rejected_kind(&cluster, &["stop", &format!("rec:{id}")]);
    assert_eq!(kind, RejectKind::UnknownInstance);

    // Web's replica keeps serving: same process, healthy, in rotation,
    // never asked to stop; rec started nothing.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = cluster.status("web").await;
    assert_eq!(after.instances, before.instances, "{after:#?}");
    assert!(
        after.routes.iter().any(|b| b.replica == id && b.weight > 0),
        "{after:#?}"
    );
    let stops = cluster
        .events("web")
        .await
        .into_iter()
        .filter(|e| matches!(e, Event::ReplicaStopRequested { .. }))
        .count();
    assert_eq!(stops, 0, "nothing of web was stopped");
    let rec = cluster.status("rec").await;
    assert!(rec.instances.is_empty(), "{rec:#?}");
    assert!(
        !cluster
            .events("rec")
            .await
            .iter()
            .any(|e| matches!(e, Event::ReplicaStartRequested { .. })),
        "rec started nothing"
    );
    let tally = load.stop().await;
    assert!(tally.total() > 50, "too few requests: {tally:?}");
    assert_eq!(
        tally.ok(),
        tally.total(),
        "every request answered 200: {tally:?}"
    );
}

mentat_e2e::on_both_databases!(a_spawn_cannot_take_the_id_of_another_services_replica);
