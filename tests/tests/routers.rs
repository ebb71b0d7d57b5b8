//! End to end with two routers: both announce themselves, `mt status` lists
//! them, and a replica is stopped only after every live router reported it
//! drained; a router killed is recorded lost (it leaves `mt status`) and
//! no longer waited for.

use mentat_bus::identities::Role;
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mentat_domain::command::StatusReply;
use mentat_domain::event::Event;
use mentat_e2e::{bin_dir, text, web_config, Cluster, Db};
use mentat_testkit::free_port;

/// A second router, `r2`, on its own ports.
fn second_router(cluster: &Cluster) -> Child {
    Command::new(bin_dir().join("mentat-router"))
        .args(["--nats", &cluster.nats_urls(), "--router-id", "r2"])
        .args(cluster.identities.args(&Role::Router))
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--admin-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--drain-timeout-secs", "5"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a second router")
}

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
    let mut r2 = second_router(&cluster);
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
    let mut drained: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stopped = 0;
    for event in cluster.events("web").await {
        match event {
            Event::ReplicaDrained {
                replica, router, ..
            } => {
                drained.entry(replica).or_default().insert(router);
            }
            Event::ReplicaStopRequested {
                replica, reason, ..
            } if reason == "out of rotation and drained" => {
                stopped += 1;
                assert_eq!(
                    drained.get(&replica),
                    Some(&live),
                    "{replica} stopped before every router drained it"
                );
            }
            _ => {}
        }
    }
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
