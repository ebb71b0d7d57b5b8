//! End to end: a standby planner that cannot split the brain. Two planners
//! on one PostgreSQL log; exactly one leads. When the leader dies, the
//! standby takes the next epoch and finishes what was in flight; a leader
//! paused past its lease appends nothing when it wakes, and stops with
//! StaleEpoch.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mentat_domain::command::{Outcome, PlannersStatus, StatusReply};
use mentat_domain::event::{Event, EventEnvelope};
use mentat_e2e::{text, web_config_ready_after, Cluster, Db};

/// The planners as `mt status` sees them, when the query is answered.
async fn planners(cluster: &Cluster) -> Option<PlannersStatus> {
    match cluster.status_query(None).await {
        Ok(StatusReply::Ok { planners, .. }) => planners,
        _ => None,
    }
}

/// Wait until `ready` holds of the planners; how long it took.
async fn wait_planners(
    cluster: &Cluster,
    what: &str,
    ready: impl Fn(&PlannersStatus) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        if planners(cluster).await.as_ref().is_some_and(&ready) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what}: not within 60 s; planners: {:?}\n{}",
            planners(cluster).await,
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A cluster on PostgreSQL serving v1 on 3 replicas that take a while to
/// become ready, with a standby planner beside the leader.
async fn cluster_with_standby() -> Cluster {
    let mut cluster = Cluster::start(Db::Postgres).await;
    cluster.apply(&web_config_ready_after(3, 20, 700));
    cluster.deploy_first("v1");
    cluster.start_service("standby");
    wait_planners(&cluster, "the standby announces itself", |p| {
        p.leader.as_deref() == Some("planner") && p.standbys == ["standby"]
    })
    .await;
    cluster
}

/// Start deploying v2 in the background and wait until it is in flight.
async fn deploy_v2_in_flight(cluster: &Cluster) -> String {
    let mut mt = cluster.mt_spawn(&["deploy", "web", "--image", "v2", "--reason", "e2e"]);
    let status = cluster
        .wait_status("web", Duration::from_secs(30), "v2 in flight", |s| {
            s.deployment.as_ref().is_some_and(|d| d.image == "v2")
        })
        .await;
    let _ = mt.kill();
    let _ = mt.wait();
    status.deployment.expect("in flight").deployment_id
}

/// Every `PlannerLeaderElected` in the log, with its position, read from
/// the database itself.
async fn elections(cluster: &Cluster) -> Vec<(i64, i64)> {
    let store = mentat_store::Store::open(&cluster.database_url)
        .await
        .expect("open the log");
    let mut found = Vec::new();
    for e in store.read_all(0, 100_000).await.expect("read the log") {
        if e.event_type == "PlannerLeaderElected" {
            let event: Event = serde_json::from_str(&e.payload).expect("decodes");
            if let Event::PlannerLeaderElected { epoch, .. } = event {
                found.push((e.position, epoch));
            }
        }
    }
    store.close().await;
    found
}

/// Every replica was asked to start once, and none twice.
fn started_once(events: &[EventEnvelope]) {
    let mut starts: BTreeMap<&str, usize> = BTreeMap::new();
    for e in events {
        if let Event::ReplicaStartRequested { replica, .. } = &e.event {
            *starts.entry(replica).or_default() += 1;
        }
    }
    assert!(
        starts.values().all(|n| *n == 1),
        "a replica was started twice: {starts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_a_dead_leader_and_finishes_the_deployment() {
    let mut cluster = cluster_with_standby().await;
    let id = deploy_v2_in_flight(&cluster).await;
    cluster.kill("planner");
    let takeover = wait_planners(&cluster, "the standby leads", |p| {
        p.leader.as_deref() == Some("standby") && p.epoch == Some(2)
    })
    .await;
    println!("takeover after SIGKILL of the leader: {takeover:?}");
    let record = cluster
        .wait_deployment("web", &id, Duration::from_secs(120))
        .await;
    assert_eq!(record.outcome, Outcome::Completed, "{record:?}");
    let events = cluster.envelopes("web").await;
    started_once(&events);
    let epochs: Vec<i64> = elections(&cluster).await.iter().map(|e| e.1).collect();
    assert_eq!(epochs, [1, 2]);
}

/// The stale leader: paused (SIGSTOP) past its lease while a deployment
/// runs, the standby takes over; resumed (SIGCONT), the old leader appends
/// nothing and stops with StaleEpoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_past_its_lease_appends_nothing_when_it_wakes() {
    let mut cluster = cluster_with_standby().await;
    let id = deploy_v2_in_flight(&cluster).await;
    cluster.signal("planner", "STOP");
    wait_planners(&cluster, "the standby leads", |p| {
        p.leader.as_deref() == Some("standby") && p.epoch == Some(2)
    })
    .await;
    // Let the new leader work while the old one sleeps, then wake it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.signal("planner", "CONT");
    let woke = Instant::now();
    while cluster.is_running("planner") {
        assert!(
            woke.elapsed() < Duration::from_secs(30),
            "the old leader did not stop:\n{}",
            cluster.log_of("planner")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("old leader stopped {:?} after SIGCONT", woke.elapsed());
    assert!(
        cluster.log_of("planner").contains("StaleEpoch"),
        "it says why it stopped:\n{}",
        cluster.log_of("planner")
    );
    let record = cluster
        .wait_deployment("web", &id, Duration::from_secs(120))
        .await;
    assert_eq!(record.outcome, Outcome::Completed, "{record:?}");

    // Nothing decided under epoch 1 after epoch 2 was elected.
    let elected_at = elections(&cluster)
        .await
        .iter()
        .find(|e| e.1 == 2)
        .map(|e| e.0)
        .expect("epoch 2 elected");
    let events = cluster.envelopes("web").await;
    let late_epoch_1: Vec<&EventEnvelope> = events
        .iter()
        .filter(|e| e.position > elected_at && e.meta.epoch != Some(2) && !e.event.is_fact())
        .collect();
    assert!(
        late_epoch_1.is_empty(),
        "the old leader appended after it lost the lead: {late_epoch_1:#?}"
    );
    started_once(&events);
    let out = cluster.mt(&["status"]);
    assert!(
        text(&out).contains("planners: leader standby (epoch 2)"),
        "{}",
        text(&out)
    );
}

/// The takeover benchmark (`bench/takeover/run.sh`): `RUNS` times (20 by
/// default), SIGKILL the leading planner of an idle cluster on PostgreSQL
/// and time how long until `mt status` names the standby as the leader of
/// the next epoch; restart the killed planner as the new standby. Prints
/// each time and the p50, p99 and max.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run by bench/takeover/run.sh"]
async fn takeover_benchmark() {
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    let mut cluster = cluster_with_standby().await;
    let mut times = Vec::new();
    let (mut leader, mut standby) = ("planner", "standby");
    for run in 0..runs {
        let epoch = planners(&cluster)
            .await
            .and_then(|p| p.epoch)
            .expect("epoch");
        cluster.kill(leader);
        let took = wait_planners(&cluster, "takeover", |p| {
            p.leader.as_deref() == Some(standby) && p.epoch == Some(epoch + 1)
        })
        .await;
        println!("run {run}: takeover {} ms", took.as_millis());
        times.push(took);
        cluster.start_service(leader);
        wait_planners(&cluster, "the killed planner stands by again", |p| {
            p.standbys.iter().any(|s| s == leader)
        })
        .await;
        std::mem::swap(&mut leader, &mut standby);
    }
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1];
    println!(
        "takeover over {} runs: p50 {} ms, p99 {} ms, max {} ms",
        times.len(),
        at(0.50).as_millis(),
        at(0.99).as_millis(),
        times[times.len() - 1].as_millis()
    );
}
