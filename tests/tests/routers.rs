//! End to end with two routers: both announce themselves, `mt status` lists
//! them, and a replica is stopped only after every live router reported it
//! drained; a router killed is recorded lost (it leaves `mt status`) and
//! no longer waited for.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use mentat_domain::command::StatusReply;
use mentat_domain::event::Event;
use mentat_e2e::{drained_stops, text, web_config, Cluster, Db};

/// Wait until the planner lists `n` live routers, all in step; their ids.
async fn routers_in_step(cluster: &Cluster, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(StatusReply::Ok { routers, .. }) = cluster.status_query(None).await {
            if routers.len() == n && routers.iter().all(|r| r.heard && r.behind.is_empty()) {
                return routers.into_iter().map(|r| r.router).collect();
            }
            assert!(
                Instant::now() < deadline,
                "never {n} routers in step: {routers:?}\n{}",
                cluster.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn deploy(cluster: &Cluster, image: &str) {
    let out = cluster.mt(&["deploy", "web", "--image", image, "--timeout", "120"]);
    assert!(
        out.status.success(),
        "deploy {image}: {}\n{}",
        text(&out),
        cluster.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_is_stopped_only_once_every_live_router_drained_it() {
    let cluster = Cluster::start(Db::Sqlite).await;
    let (mut r2, _) = cluster.extra_router("r2", &[], &[]);
    let routers = routers_in_step(&cluster, 2).await;
    assert!(routers.contains(&"r2".to_owned()), "{routers:?}");
    let status = cluster.mt_ok(&["status"]);
    assert!(status.contains("routers alive: "), "{status}");
    assert!(status.contains("r2 127.0.0.1:"), "{status}");

    cluster.apply(&web_config(3, 10));
    deploy(&cluster, "v1");
    deploy(&cluster, "v2");
    routers_in_step(&cluster, 2).await;

    // Every replica stopped as drained was reported drained by both routers
    // before its stop.
    let live: BTreeSet<String> = routers.iter().cloned().collect();
    let stopped =
        drained_stops(&cluster.events("web").await, &live).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stopped, 3, "the three v1 replicas stopped as drained");

    // r2 dies: it is recorded lost, and the next deploy does not wait for it.
    r2.kill().expect("kill r2");
    let _ = r2.wait();
    let left = routers_in_step(&cluster, 1).await;
    assert!(!left.contains(&"r2".to_owned()), "r2 still live: {left:?}");
    deploy(&cluster, "v3");
    let stops_after: Vec<String> = cluster
        .events("web")
        .await
        .into_iter()
        .filter_map(|e| match e {
            Event::ReplicaStopRequested { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert!(
        stops_after
            .iter()
            .rev()
            .take(3)
            .all(|r| r == "out of rotation and drained"),
        "with r2 lost, r1's drains suffice: {stops_after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_with_no_live_router_waits_for_one_and_says_so() {
    let mut cluster = Cluster::start(Db::Sqlite).await;
    cluster.apply(&web_config(2, 10));
    deploy(&cluster, "v1");
    cluster.kill("router");
    routers_in_step(&cluster, 0).await;

    let deploying = cluster.mt_spawn(&["deploy", "web", "--image", "v2", "--timeout", "120"]);
    let status = cluster
        .wait_status(
            "web",
            Duration::from_secs(20),
            "waiting for a router",
            |s| s.deployment.as_ref().is_some_and(|d| d.waiting_for_router),
        )
        .await;
    let shown = cluster.mt_ok(&["status", "web"]);
    assert!(shown.contains("waiting for a router"), "{shown}");
    // Nothing moved: no v2 replica takes traffic while no router is live.
    assert!(
        status
            .routes
            .iter()
            .all(|b| b.image == "v1" || b.weight == 0),
        "{:?}",
        status.routes
    );

    cluster.start_service("router");
    let out = tokio::task::block_in_place(|| deploying.wait_with_output()).expect("mt deploy");
    let said = text(&out);
    assert!(out.status.success(), "{said}\n{}", cluster.logs());
    assert!(said.contains("waiting for a router"), "{said}");
    assert!(said.contains("a router is live again"), "{said}");
}
