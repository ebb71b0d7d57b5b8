//! End to end on a three-node NATS cluster: the four services and `mt` get
//! every node's URL, the streams three replicas, and a deployment in flight
//! survives the SIGKILL of the NATS node a service is connected to, with no
//! command, fact or event lost or recorded twice.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use mentat_bus::streams;
use mentat_domain::command::Outcome;
use mentat_domain::event::{Event, EventEnvelope};
use mentat_e2e::{text, web_config_ready_after, Cluster, Db};

/// Start a rolling deployment of `image` without waiting for it, and return its id.
async fn start_deploy(cluster: &Cluster, image: &str) -> String {
    let out = cluster.mt(&["deploy", "web", "--image", image, "--no-wait"]);
    assert!(out.status.success(), "deploy {image}: {}", text(&out));
    let record = cluster
        .history("web")
        .await
        .last()
        .cloned()
        .expect("a deployment");
    assert_eq!(record.image, image);
    record.deployment_id
}

/// Wait until deployment `id` has completed its first batch but not the
/// whole deployment: the moment to pull a node from under it.
async fn wait_mid_deploy(cluster: &Cluster, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let records = cluster.history("web").await;
        let r = records
            .iter()
            .find(|r| r.deployment_id == id)
            .expect("the deployment");
        if r.batches_done >= 1 {
            assert_eq!(
                r.outcome,
                Outcome::InProgress,
                "too late to fail a node mid-deploy: {r:?}"
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "first batch never completed\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGKILL the NATS node `client` (a service's connection name) is on.
fn kill_node_of(cluster: &mut Cluster, client: &str) -> usize {
    let node = cluster
        .nats_serving(client)
        .unwrap_or_else(|| panic!("{client} is connected to no node"));
    cluster.nats_node(node).stop();
    node
}

/// The replica named by a replica event.
fn replica(event: &Event) -> Option<(&'static str, &str)> {
    let name = event.type_name();
    match event {
        Event::ReplicaStartRequested { replica, .. }
        | Event::ReplicaStarted { replica, .. }
        | Event::ReplicaHealthy { replica, .. }
        | Event::ReplicaStopRequested { replica, .. }
        | Event::ReplicaExited { replica, .. } => Some((name, replica)),
        _ => None,
    }
}

/// Everything deployment `id` needed is in the log: its start, every batch
/// started and completed, each new replica requested, started and healthy,
/// each replaced one asked to stop and exited, and its completion.
fn assert_complete(events: &[EventEnvelope], id: &str) {
    let of_id = |e: &&EventEnvelope| match &e.event {
        Event::DeploymentStarted { deployment_id, .. }
        | Event::DeploymentCompleted { deployment_id, .. }
        | Event::BatchCompleted { deployment_id, .. } => deployment_id == id,
        _ => false,
    };
    let kinds: Vec<&str> = events
        .iter()
        .filter(of_id)
        .map(|e| e.event.type_name())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "DeploymentStarted").count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "DeploymentCompleted")
            .count(),
        1,
        "{kinds:?}"
    );
    let (mut started, mut replaced) = (Vec::new(), Vec::new());
    let mut batches = 0;
    for e in events {
        if let Event::BatchStarted {
            deployment_id,
            start,
            replace,
            ..
        } = &e.event
        {
            if deployment_id == id {
                batches += 1;
                started.extend(start.iter().cloned());
                replaced.extend(replace.iter().cloned());
            }
        }
    }
    assert_eq!(batches, 3, "three batches of one replica");
    assert_eq!(
        kinds.iter().filter(|k| **k == "BatchCompleted").count(),
        3,
        "{kinds:?}"
    );
    let mut seen: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (kind, r) in events.iter().filter_map(|e| replica(&e.event)) {
        seen.entry(r).or_default().insert(kind);
    }
    for r in &started {
        for kind in ["ReplicaStartRequested", "ReplicaStarted", "ReplicaHealthy"] {
            assert!(
                seen.get(r.as_str()).is_some_and(|k| k.contains(kind)),
                "{r}: no {kind}"
            );
        }
    }
    for r in &replaced {
        for kind in ["ReplicaStopRequested", "ReplicaExited"] {
            assert!(
                seen.get(r.as_str()).is_some_and(|k| k.contains(kind)),
                "{r}: no {kind}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_survive_the_loss_of_a_nats_node() {
    let mut cluster = Cluster::start_on_nats_cluster(Db::Sqlite).await;
    // Each new replica takes 1.5 s to get ready: a deployment lasts several
    // seconds, long enough to fail a node in the middle of it.
    cluster.apply(&web_config_ready_after(3, 30, 1500));
    cluster.deploy_first("v1");
    let stream = {
        let mut s = cluster
            .bus
            .js
            .get_stream(streams::FACTS)
            .await
            .expect("facts stream");
        s.info().await.expect("stream info").config.num_replicas
    };
    assert_eq!(stream, 3, "the facts are kept on three nodes");

    // The planner's node dies in the middle of v2.
    let v2 = start_deploy(&cluster, "v2").await;
    wait_mid_deploy(&cluster, &v2).await;
    let planners = kill_node_of(&mut cluster, "mentat-planner");
    let done = cluster
        .wait_deployment("web", &v2, Duration::from_secs(120))
        .await;
    assert_eq!(
        done.outcome,
        Outcome::Completed,
        "{done:?}\n{}",
        cluster.logs()
    );
    cluster.nats_node(planners).restart();

    // Then the executor's node, in the middle of v3, and the command to
    // roll back is sent while it is down.
    let v3 = start_deploy(&cluster, "v3").await;
    wait_mid_deploy(&cluster, &v3).await;
    let executors = kill_node_of(&mut cluster, "mentat-executor-e2e-host");
    let done = cluster
        .wait_deployment("web", &v3, Duration::from_secs(120))
        .await;
    assert_eq!(
        done.outcome,
        Outcome::Completed,
        "{done:?}\n{}",
        cluster.logs()
    );
    cluster.mt_ok(&["rollback", "web", "--timeout", "120"]);
    cluster.nats_node(executors).restart();

    let events = cluster.envelopes("web").await;
    let ids: BTreeSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        ids.len(),
        events.len(),
        "an event or fact was recorded twice"
    );
    let versions: Vec<i64> = events.iter().map(|e| e.version).collect();
    let dense: Vec<i64> = (1..=events.len() as i64).collect();
    assert_eq!(versions, dense, "the stream's versions have a gap");
    assert_complete(&events, &v2);
    assert_complete(&events, &v3);

    let history = cluster.history("web").await;
    let images: Vec<(&str, Outcome)> = history
        .iter()
        .map(|r| (r.image.as_str(), r.outcome))
        .collect();
    assert_eq!(
        images,
        [
            ("v1", Outcome::Completed),
            ("v2", Outcome::Completed),
            ("v3", Outcome::Completed),
            ("v2", Outcome::Completed),
        ],
        "{history:#?}"
    );
    let printed = cluster.mt_ok(&["history", "web"]);
    assert_eq!(printed.matches("completed").count(), 4, "{printed}");
}
