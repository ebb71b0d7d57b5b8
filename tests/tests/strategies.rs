//! End to end: blue-green, canary, manual control and traffic commands with
//! the real binaries, a real nats-server and a real database, on SQLite and
//! on PostgreSQL; every one while a client sends requests through the
//! router without pause, each of which must be answered 200.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mentat_domain::command::{Outcome, ServiceStatus};
use mentat_domain::event::Event;
use mentat_e2e::load::{burst, get, Tally};
use mentat_e2e::{text, web_config_with, Cluster, Db, Load};

const HOST: &str = "web.localhost";

/// `mt ARGS` that must succeed; returns its stdout.
/// A cluster whose service `web` (deploy block `deploy`) serves v1.
async fn serving_v1(db: Db, replicas: u32, deploy: &str) -> Cluster {
    let cluster = Cluster::start(db).await;
    cluster.apply(&web_config_with(replicas, 0, deploy));
    cluster.deploy_first("v1");
    cluster
}

fn assert_all_ok(what: &str, tally: &Tally) {
    println!(
        "{what}: {} requests, answers by status {:?}, by version {:?}",
        tally.total(),
        tally.statuses,
        tally.per_version
    );
    assert_eq!(
        tally.ok(),
        tally.total(),
        "{what}: every request must be answered 200: {tally:?}"
    );
    assert!(
        tally.total() > 50,
        "{what}: too few requests to prove anything: {tally:?}"
    );
}

fn count(events: &[Event], type_name: &str) -> usize {
    events.iter().filter(|e| e.type_name() == type_name).count()
}

fn images(status: &ServiceStatus) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for i in &status.instances {
        *out.entry(i.image.clone()).or_default() += 1;
    }
    out
}

/// Percent of the answers of `tally` whose body is `version`.
fn percent(tally: &Tally, version: &str) -> f64 {
    let n = tally.per_version.get(version).copied().unwrap_or(0);
    n as f64 * 100.0 / tally.ok().max(1) as f64
}

async fn blue_green_switch_and_rollback_within_standby(db: Db) {
    let cluster = serving_v1(db, 3, "strategy: blue-green, standby_secs: 600").await;
    let load = Load::start(cluster.router_addr(), HOST);
    // mt deploy returns once traffic has switched and blue is on standby.
    let out = cluster.mt_ok(&["deploy", "web", "--image", "v2", "--timeout", "120"]);
    assert!(out.contains("standby"), "{out}");
    let status = cluster.status("web").await;
    assert_eq!(
        images(&status).get("v1"),
        Some(&3),
        "blue stays running: {status:#?}"
    );
    assert_eq!(images(&status).get("v2"), Some(&3), "{status:#?}");
    for i in &status.instances {
        let expected = if i.image == "v2" { 3333 } else { 0 };
        assert!(i.share_bp.abs_diff(expected) <= 1, "{i:?}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(load.tally().versions.last().map(String::as_str), Some("v2"));
    // Roll back within the standby window: one routing change, no process.
    let starts = count(&cluster.events("web").await, "ReplicaStartRequested");
    let asked = Instant::now();
    cluster.mt_ok(&["rollback", "web", "--reason", "e2e switch-back"]);
    let seen = loop {
        let t = load.tally();
        if t.versions.last().map(String::as_str) == Some("v1") {
            break asked.elapsed();
        }
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "traffic never came back to v1: {t:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    println!("blue-green switch-back: traffic on v1 {seen:?} after mt rollback was started");
    let id = cluster
        .status("web")
        .await
        .deployment
        .map(|d| d.deployment_id);
    if let Some(id) = id {
        let record = cluster
            .wait_deployment("web", &id, Duration::from_secs(60))
            .await;
        assert_eq!(record.outcome, Outcome::Reverted, "{record:?}");
    }
    let events = cluster.events("web").await;
    assert_eq!(
        count(&events, "ReplicaStartRequested"),
        starts,
        "the rollback started a process"
    );
    let status = cluster
        .wait_status("web", Duration::from_secs(30), "green stopped", |s| {
            !images(s).contains_key("v2")
        })
        .await;
    assert_eq!(images(&status).get("v1"), Some(&3));
    let tally = load.stop().await;
    assert_all_ok("blue-green switch and rollback", &tally);
    assert_eq!(tally.versions, ["v1", "v2", "v1"], "{tally:?}");
}

async fn canary_share_promote_and_abort(db: Db) {
    let cluster = serving_v1(db, 3, "strategy: rolling, canary_percent: 10").await;
    let load = Load::start(cluster.router_addr(), HOST);
    // The strategy is chosen at deploy time; mt returns while the canary holds.
    let out = cluster.mt_ok(&[
        "deploy",
        "web",
        "--image",
        "v2",
        "--strategy",
        "canary",
        "--timeout",
        "120",
    ]);
    assert!(out.contains("mt canary promote web"), "{out}");
    let status = cluster.status("web").await;
    assert_eq!(
        images(&status).get("v2"),
        Some(&1),
        "ceil(3 * 10%) = 1 canary: {status:#?}"
    );
    let sample = burst(&cluster.router_addr(), HOST, 4_000, 4).await;
    let share = percent(&sample, "v2");
    println!(
        "canary 10% of 3 replicas: {share:.2}% of {} requests",
        sample.ok()
    );
    assert_eq!(sample.ok(), sample.total(), "{sample:?}");
    assert!(
        (share - 10.0).abs() <= 2.0,
        "canary share {share}%: {sample:?}"
    );
    let ps = cluster.mt_ok(&["ps", "web"]);
    assert!(ps.contains("10.0%"), "mt ps shows the canary's share: {ps}");
    // Promote: the new image goes to every replica by the rolling rules.
    cluster.mt_ok(&["canary", "promote", "web", "--reason", "looks good"]);
    let status = cluster
        .wait_status(
            "web",
            Duration::from_secs(120),
            "promoted canary rolled out",
            |s| s.deployment.is_none() && images(s) == BTreeMap::from([("v2".to_owned(), 3)]),
        )
        .await;
    assert_eq!(status.image.as_deref(), Some("v2"));
    // Abort: the canary leaves rotation and stops; nothing else changes.
    cluster.mt_ok(&[
        "deploy",
        "web",
        "--image",
        "v3",
        "--strategy",
        "canary",
        "--timeout",
        "120",
    ]);
    let d = cluster
        .status("web")
        .await
        .deployment
        .expect("canary in flight");
    // mt follows the revert it asked for: exit 0 once reverted.
    cluster.mt_ok(&["canary", "abort", "web", "--reason", "e2e"]);
    let record = cluster
        .wait_deployment("web", &d.deployment_id, Duration::from_secs(60))
        .await;
    assert_eq!(record.outcome, Outcome::Reverted);
    assert!(record
        .failure
        .unwrap_or_default()
        .contains("aborted by e2e: e2e"));
    cluster
        .wait_status("web", Duration::from_secs(30), "canary stopped", |s| {
            !images(s).contains_key("v3")
        })
        .await;
    let tally = load.stop().await;
    assert_all_ok("canary promote and abort", &tally);
    assert_eq!(tally.versions.last().map(String::as_str), Some("v2"));
}

async fn canary_steps_advance_by_themselves(db: Db) {
    let deploy =
        "strategy: canary, steps: [{percent: 20, bake_secs: 2}, {percent: 50, bake_secs: 2}]";
    let cluster = serving_v1(db, 2, deploy).await;
    let load = Load::start(cluster.router_addr(), HOST);
    let started = Instant::now();
    let out = cluster.mt(&[
        "deploy",
        "web",
        "--image",
        "v2",
        "--wait",
        "--timeout",
        "120",
    ]);
    assert!(out.status.success(), "{}\n{}", text(&out), cluster.logs());
    println!("canary 20% -> 50% -> promoted: {:?}", started.elapsed());
    let events = cluster.events("web").await;
    let shifts: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            Event::TrafficShifted { percent, .. } => Some(*percent),
            _ => None,
        })
        .collect();
    assert_eq!(shifts, [20, 50]);
    assert!(events.iter().any(|e| matches!(
        e,
        Event::CanaryPromoted {
            automatic: true,
            ..
        }
    )));
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "two bakes of 2 s"
    );
    let tally = load.stop().await;
    assert_all_ok("canary steps", &tally);
    assert_eq!(tally.versions.first().map(String::as_str), Some("v1"));
    assert_eq!(tally.versions.last().map(String::as_str), Some("v2"));
}

async fn pause_resume_and_abort_mid_deploy(db: Db) {
    let cluster = Cluster::start(db).await;
    // Replicas take a second to get ready, so each batch lasts a while.
    cluster.apply(&web_config_with(
        3,
        1000,
        "strategy: rolling, health_timeout_secs: 10",
    ));
    cluster.mt_ok(&["deploy", "web", "--image", "v1", "--timeout", "120"]);
    let load = Load::start(cluster.router_addr(), HOST);
    cluster.mt_ok(&["deploy", "web", "--image", "v2", "--no-wait"]);
    cluster.mt_ok(&["pause", "web", "--reason", "look first"]);
    let held = cluster.status("web").await.deployment.expect("in flight");
    assert!(
        held.paused.as_deref().unwrap_or("").contains("look first"),
        "{held:?}"
    );
    let batches = count(&cluster.events("web").await, "BatchStarted");
    // Longer than the health timeout: a held deployment neither moves nor fails.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(count(&cluster.events("web").await, "BatchStarted"), batches);
    let still = cluster
        .status("web")
        .await
        .deployment
        .expect("still in flight");
    assert_eq!(still.outcome, Outcome::InProgress);
    cluster.mt_ok(&["resume", "web"]);
    let record = cluster
        .wait_deployment("web", &held.deployment_id, Duration::from_secs(120))
        .await;
    assert_eq!(record.outcome, Outcome::Completed, "{record:?}");
    // Abort mid-deploy: back to the previous image.
    cluster.mt_ok(&["deploy", "web", "--image", "v3", "--no-wait"]);
    cluster
        .wait_status("web", Duration::from_secs(30), "first v3 replica up", |s| {
            images(s).contains_key("v3")
        })
        .await;
    let d = cluster
        .status("web")
        .await
        .deployment
        .expect("v3 in flight");
    cluster.mt_ok(&["abort", "web", "--reason", "changed my mind"]);
    let record = cluster
        .wait_deployment("web", &d.deployment_id, Duration::from_secs(120))
        .await;
    assert_eq!(record.outcome, Outcome::Reverted);
    let status = cluster
        .wait_status("web", Duration::from_secs(60), "v3 gone", |s| {
            !images(s).contains_key("v3")
        })
        .await;
    assert_eq!(images(&status).get("v2"), Some(&3));
    let tally = load.stop().await;
    assert_all_ok("pause, resume, abort", &tally);
    assert_eq!(tally.versions.last().map(String::as_str), Some("v2"));
}

async fn a_deadline_that_expires_reverts(db: Db) {
    let deploy = "strategy: canary, canary_percent: 10, progress_deadline_secs: 3";
    let cluster = serving_v1(db, 2, deploy).await;
    let load = Load::start(cluster.router_addr(), HOST);
    cluster.mt_ok(&["deploy", "web", "--image", "v2", "--timeout", "120"]);
    let d = cluster.status("web").await.deployment.expect("canary held");
    let record = cluster
        .wait_deployment("web", &d.deployment_id, Duration::from_secs(30))
        .await;
    assert_eq!(record.outcome, Outcome::Reverted);
    let failure = record.failure.unwrap_or_default();
    assert!(failure.contains("no progress within 3s"), "{failure}");
    let shown = cluster.mt_ok(&["history", "web"]);
    assert!(shown.contains("no progress within 3s"), "{shown}");
    let tally = load.stop().await;
    assert_all_ok("deadline revert", &tally);
}

async fn weight_route_spawn_stop_and_direct_addressing(db: Db) {
    let cluster = serving_v1(db, 1, "strategy: rolling").await;
    let load = Load::start(cluster.router_addr(), HOST);
    let addr = cluster.router_addr();
    cluster.mt_ok(&["spawn", "web", "--id", "a", "--image", "va"]);
    cluster.mt_ok(&["spawn", "web", "--id", "b", "--image", "vb"]);
    cluster
        .wait_status(
            "web",
            Duration::from_secs(30),
            "spawned instances routed",
            |s| {
                ["a", "b"]
                    .iter()
                    .all(|id| s.routes.iter().any(|b| b.replica == *id))
            },
        )
        .await;
    // Weight 0: no weighted traffic, yet reachable directly, once the
    // router has applied the change the planner's status already shows.
    for (host, image) in [("a.web.localhost", "va"), ("b.web.localhost", "vb")] {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut answer = get(&addr, host).await;
        while answer != Ok((200, image.to_owned())) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            answer = get(&addr, host).await;
        }
        assert_eq!(answer, Ok((200, image.to_owned())), "{host}");
    }
    let sample = burst(&addr, HOST, 500, 2).await;
    assert_eq!(
        sample.per_version.keys().collect::<Vec<_>>(),
        ["v1"],
        "{sample:?}"
    );
    // Weights normalised across instances: 20 / 30 / 50.
    let v1 = cluster
        .status("web")
        .await
        .instances
        .iter()
        .find(|i| i.image == "v1")
        .expect("v1")
        .replica
        .clone();
    cluster.mt_ok(&["weight", &format!("web:{v1}"), "20"]);
    cluster.mt_ok(&["weight", "web:a", "30"]);
    cluster.mt_ok(&["weight", "web:b", "50"]);
    cluster
        .wait_status("web", Duration::from_secs(10), "weights published", |s| {
            s.routes.iter().map(|b| b.weight).sum::<u32>() == 100
        })
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sample = burst(&addr, HOST, 10_000, 4).await;
    assert_eq!(sample.ok(), sample.total(), "{sample:?}");
    for (version, want) in [("v1", 20.0), ("va", 30.0), ("vb", 50.0)] {
        let got = percent(&sample, version);
        println!("weight {want}% -> {got:.2}% of 10,000 requests to {version}");
        assert!(
            (got - want).abs() <= 2.0,
            "{version}: {got}% for weight {want}"
        );
    }
    let ps = cluster.mt_ok(&["ps", "web"]);
    for needle in ["web:a", "web:b", "healthy", "50.0%"] {
        assert!(ps.contains(needle), "mt ps lacks {needle}: {ps}");
    }
    // Route: one atomic change, all traffic from v1 and b to a.
    cluster.mt_ok(&["route", "web", "--from", "vb", "--to", "a"]);
    cluster.mt_ok(&["weight", &format!("web:{v1}"), "0"]);
    cluster
        .wait_status("web", Duration::from_secs(10), "routed to a", |s| {
            s.instances
                .iter()
                .all(|i| (i.replica == "a") == (i.share_bp == 10_000))
        })
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sample = burst(&addr, HOST, 500, 2).await;
    assert_eq!(
        sample.per_version.keys().collect::<Vec<_>>(),
        ["va"],
        "{sample:?}"
    );
    // Impossible requests are refused and change nothing.
    let out = cluster.mt(&["weight", "web:a", "101"]);
    assert!(!out.status.success(), "{}", text(&out));
    let out = cluster.mt(&["weight", "web:nope", "10"]);
    assert_eq!(out.status.code(), Some(1), "rejected: {}", text(&out));
    assert!(text(&out).contains("no instance `nope`"), "{}", text(&out));
    // Stop: b drains and stops; a keeps serving.
    cluster.mt_ok(&["stop", "web:b"]);
    cluster
        .wait_status("web", Duration::from_secs(30), "b stopped", |s| {
            !s.instances.iter().any(|i| i.replica == "b")
        })
        .await;
    let (status, _) = get(&addr, "b.web.localhost").await.expect("an answer");
    assert!(
        status == 404 || status == 503,
        "a stopped instance is not addressable: {status}"
    );
    cluster.mt_ok(&["route", "web", "--from", "a", "--to", &v1]);
    cluster
        .wait_status("web", Duration::from_secs(10), "back to v1", |s| {
            s.instances
                .iter()
                .all(|i| (i.replica == v1) == (i.share_bp == 10_000))
        })
        .await;
    cluster.mt_ok(&["stop", "web:a"]);
    cluster
        .wait_status("web", Duration::from_secs(30), "a stopped", |s| {
            s.instances.len() == 1
        })
        .await;
    let tally = load.stop().await;
    assert_all_ok("weight, route, spawn, stop", &tally);
}

mentat_e2e::on_both_databases!(
    blue_green_switch_and_rollback_within_standby,
    canary_share_promote_and_abort,
    canary_steps_advance_by_themselves,
    pause_resume_and_abort_mid_deploy,
    a_deadline_that_expires_reverts,
    weight_route_spawn_stop_and_direct_addressing,
);
