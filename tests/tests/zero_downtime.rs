//! Zero downtime, as a client sees it: a constant load of at least 2,000
//! requests per second, over keep-alive connections through the router,
//! while a rolling deployment, a blue-green switch, a canary promotion and
//! an automatic revert happen one after the other. Every request must be
//! answered 200. The same again with backends that take a while to answer
//! each request, so that replicas leave rotation with requests in flight
//! and only the draining keeps them from being cut: the backends exit at
//! once on SIGTERM (`SHUTDOWN_GRACE_MS: 0`), so a replica stopped before
//! the router has drained it cuts the requests it still holds. And a
//! revert the health-watcher starts, under the same load: a canary whose
//! answers are too slow breaches the latency threshold while it serves its
//! share, and its traffic goes back to the stable version.

use std::time::{Duration, Instant};

use mentat_domain::Event;
use mentat_e2e::load::Tally;
use mentat_e2e::{text, Cluster, Db, Load};

const HOST: &str = "web.localhost";
const RATE: u32 = 2_000;

fn config(slow_ms: u64) -> String {
    format!(
        r#"services:
  web:
    replicas: 3
    run:
      command: ["mentat-demo-app"]
      env: {{ APP_VERSION: "{{image}}", SLOW_MS: "{slow_ms}", SHUTDOWN_GRACE_MS: "0" }}
    health: {{ path: /health, interval_ms: 100, healthy_after: 2, unhealthy_after: 3, bake_secs: 0 }}
    deploy: {{ strategy: rolling, max_unavailable: 1, health_timeout_secs: 10, standby_secs: 600 }}
"#
    )
}

/// Let the load run one more second, stop it, print its counts, and check
/// that every request was answered 200 and the rate held.
async fn stop_after_a_second(load: Load, started: Instant, what: &str, connections: u32) -> Tally {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let elapsed = started.elapsed();
    let tally = load.stop().await;
    let rate = tally.total() as f64 / elapsed.as_secs_f64();
    println!(
        "{what}: {} requests in {:.1}s ({rate:.0}/s over {connections} connections), by status {:?}, by version {:?}",
        tally.total(),
        elapsed.as_secs_f64(),
        tally.statuses,
        tally.per_version
    );
    assert_eq!(
        tally.ok(),
        tally.total(),
        "every request must be answered 200: by status {:?}, first failures {:?}",
        tally.statuses,
        tally.failures
    );
    assert!(
        rate >= f64::from(RATE) * 0.95,
        "the load fell to {rate:.0} requests/s"
    );
    tally
}

async fn every_strategy_under_constant_load(db: Db, slow_ms: u64, connections: u32) {
    // mentat-demo-app waits SLOW_MS before each answer only when its version
    // says `slow`: with slow backends every release does.
    let image = |n: u32| {
        if slow_ms > 0 {
            format!("v{n}-slow")
        } else {
            format!("v{n}")
        }
    };
    let cluster = Cluster::start(db).await;
    cluster.apply(&config(slow_ms));
    cluster.mt_ok(&["deploy", "web", "--image", &image(1), "--timeout", "120"]);
    let load = Load::start_rate(cluster.router_addr(), HOST, RATE, connections);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let step = |what: &str, load: &Load| {
        let t = load.tally();
        println!(
            "{:>6.1}s {what}: {} requests so far, by status {:?}",
            started.elapsed().as_secs_f64(),
            t.total(),
            t.statuses
        );
    };
    cluster.mt_ok(&["deploy", "web", "--image", &image(2), "--timeout", "120"]);
    step("rolling v1 -> v2 done", &load);
    cluster.mt_ok(&[
        "deploy",
        "web",
        "--image",
        &image(3),
        "--strategy",
        "blue-green",
        "--timeout",
        "120",
    ]);
    step("blue-green switch to v3", &load);
    cluster.mt_ok(&["promote", "web", "--timeout", "120"]);
    step("blue-green standby ended, v2 stopped", &load);
    cluster.mt_ok(&[
        "deploy",
        "web",
        "--image",
        &image(4),
        "--strategy",
        "canary",
        "--timeout",
        "120",
    ]);
    step("canary v4 at 10%", &load);
    cluster.mt_ok(&["canary", "promote", "web", "--timeout", "120"]);
    step("canary v4 promoted to every replica", &load);
    let out = cluster.mt(&["deploy", "web", "--image", "v5-crash", "--timeout", "120"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "v5-crash must be reverted: {}",
        text(&out)
    );
    step("v5-crash reverted automatically", &load);
    let what = format!("backends answering in {slow_ms} ms");
    let tally = stop_after_a_second(load, started, &what, connections).await;
    assert_eq!(tally.versions.first(), Some(&image(1)));
    assert_eq!(tally.versions.last(), Some(&image(4)));
    assert!(!tally.per_version.contains_key("v5-crash"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_backends_every_strategy_at_2000_rps() {
    every_strategy_under_constant_load(Db::Sqlite, 0, 32).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_backends_drain_every_strategy_at_2000_rps() {
    // 2,000/s of 50 ms requests keep about 100 in flight.
    every_strategy_under_constant_load(Db::Postgres, 50, 160).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latency_breach_is_reverted_at_2000_rps_with_every_request_answered() {
    // A v2-slow answers in 300 ms; the threshold is a p99 of 150 ms over 1 s.
    let config = r#"services:
  web:
    replicas: 3
    run:
      command: ["mentat-demo-app"]
      env: { APP_VERSION: "{image}", SLOW_MS: "300", SHUTDOWN_GRACE_MS: "0" }
    health:
      path: /health
      interval_ms: 100
      healthy_after: 2
      unhealthy_after: 3
      bake_secs: 0
      thresholds: { window_secs: 1, min_requests: 10, latency_p99_ms: 150, error_rate_percent: 5 }
    deploy: { strategy: canary, canary_percent: 10, health_timeout_secs: 10 }
"#;
    let cluster =
        Cluster::start_with_router_args(Db::Sqlite, &["--stats-interval-ms", "100"]).await;
    cluster.apply(config);
    cluster.deploy_first("v1");
    // The canary's tenth of 2,000/s keeps about 60 slow requests in flight.
    let connections = 160;
    let load = Load::start_rate(cluster.router_addr(), HOST, RATE, connections);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let out = cluster.mt(&[
        "deploy",
        "web",
        "--image",
        "v2-slow",
        "--wait",
        "--timeout",
        "120",
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "v2-slow must be reverted: {}",
        text(&out)
    );
    let tally = stop_after_a_second(load, started, "latency breach", connections).await;
    let breached =
        cluster.events("web").await.into_iter().any(
            |e| matches!(e, Event::ThresholdBreached { ref version, .. } if version == "v2-slow"),
        );
    assert!(
        breached,
        "the revert must come from a threshold breach: {}",
        text(&out)
    );
    assert!(
        tally.per_version.get("v2-slow").copied().unwrap_or(0) > 0,
        "the canary served no request: {:?}",
        tally.per_version
    );
    assert_eq!(tally.versions.last().map(String::as_str), Some("v1"));
}
