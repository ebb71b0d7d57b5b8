//! End to end: the health-watcher's traffic thresholds with the real
//! binaries (router statistics every 100 ms, 1 s windows), on SQLite.
//!
//! - a failing canary is reverted at once, and few requests fail;
//! - a slow release trips the latency threshold;
//! - a release that breaks after it serves every replica is reverted in
//!   the bake window;
//! - too little traffic is "no data": the canary waits at its step until
//!   its deadline, which reverts it for want of progress, not a breach;
//! - a spike that hits both versions alike does not revert the canary;
//! - a health-watcher killed and restarted mid-canary publishes no breach;
//! - the revert benchmark of `bench/revert` (ignored; run by its script).

use std::time::{Duration, Instant};

use mentat_domain::command::{DeploymentRecord, Outcome};
use mentat_domain::event::{Event, Metric};
use mentat_e2e::load::Timeline;
use mentat_e2e::{text, web_config_health, Cluster, Db, Load};

#[path = "../../bench/revert/measure.rs"]
mod measure;

const HOST: &str = "web.localhost";
/// Router flags of every test here: statistics every 100 ms.
const ROUTER_ARGS: [&str; 2] = ["--stats-interval-ms", "100"];
/// Thresholds of every test here, unless a test says otherwise.
const THRESHOLDS: &str = "window_secs: 1, min_requests: 10, error_rate_percent: 5, latency_p99_ms: 200, max_degradation_percent: 100";

/// `mt ARGS` that must succeed; returns its stdout.
/// A cluster whose `web` runs v1 with `health` (extra fields), `env` and `deploy`.
async fn serving_v1(env: &str, health: &str, deploy: &str) -> Cluster {
    let cluster = Cluster::start_with_router_args(Db::Sqlite, &ROUTER_ARGS).await;
    cluster.apply(&web_config_health(2, env, health, deploy));
    cluster.deploy_first("v1");
    cluster
}

/// Deploy `image` (following it no further than mt does by default) and
/// return the deployment's record once it has ended.
async fn deploy_until_end(cluster: &Cluster, image: &str, within: Duration) -> DeploymentRecord {
    let out = cluster.mt(&["deploy", "web", "--image", image, "--no-wait"]);
    assert!(out.status.success(), "{}", text(&out));
    let d = cluster
        .status("web")
        .await
        .deployment
        .expect("a deployment in flight");
    cluster
        .wait_deployment("web", &d.deployment_id, within)
        .await
}

fn breaches(events: &[Event], of: &str) -> Vec<Metric> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ThresholdBreached {
                version, judgement, ..
            } if version == of => Some(judgement.metric),
            _ => None,
        })
        .collect()
}

fn position(events: &[Event], type_name: &str) -> Option<usize> {
    events.iter().position(|e| e.type_name() == type_name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_is_reverted_at_once_and_shown_with_its_numbers() {
    let health = format!("thresholds: {{{THRESHOLDS}}}, bake_secs: 1");
    let cluster = serving_v1(
        r#"ERROR_RATE: "1""#,
        &health,
        "strategy: canary, canary_percent: 10",
    )
    .await;
    let load = Timeline::start(cluster.router_addr(), HOST, 300, 6);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    let record = deploy_until_end(&cluster, "v2-error", Duration::from_secs(60)).await;
    let (total, stamps) = load.stop().await;
    let failed = stamps.len() as f64 * 100.0 / total.max(1) as f64;
    println!(
        "error canary: {:?} to the end of the revert; the client saw {} of {total} requests fail ({failed:.2}%)",
        started.elapsed(),
        stamps.len()
    );
    assert_eq!(record.outcome, Outcome::Reverted, "{record:#?}");
    let failure = record.failure.clone().unwrap_or_default();
    assert!(
        failure.contains("threshold breached by v2-error: error rate"),
        "{failure}"
    );
    assert!(failed < 5.0, "{failed}% of the requests failed");
    assert_eq!(record.breaches.len(), 1, "{record:#?}");
    // mt history shows the breach with its numbers, and so does --events.
    let history = cluster.mt_ok(&["history", "web"]);
    assert!(
        history.contains("breach: v2-error: error rate 100.00% over 1s"),
        "{history}"
    );
    assert!(history.contains("threshold 5.00%"), "{history}");
    let events = cluster.mt_ok(&["history", "web", "--events"]);
    assert!(events.contains("ThresholdBreached"), "{events}");
    assert!(
        events.contains("version=v2-error metric=error_rate observed=100.00% threshold=5.00%"),
        "{events}"
    );
    let status = cluster.mt_ok(&["status", "web"]);
    println!("{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_release_trips_the_latency_threshold() {
    let health = format!("thresholds: {{{THRESHOLDS}}}, bake_secs: 1");
    let cluster = serving_v1(
        r#"SLOW_MS: "400""#,
        &health,
        "strategy: canary, canary_percent: 50",
    )
    .await;
    let load = Load::start_rate(cluster.router_addr(), HOST, 100, 8);
    let record = deploy_until_end(&cluster, "v2-slow", Duration::from_secs(60)).await;
    load.stop().await;
    assert_eq!(record.outcome, Outcome::Reverted, "{record:#?}");
    let failure = record.failure.unwrap_or_default();
    assert!(
        failure.contains("threshold breached by v2-slow: p99 latency"),
        "{failure}"
    );
    assert!(failure.contains("threshold 200.0 ms"), "{failure}");
    let events = cluster.events("web").await;
    assert_eq!(breaches(&events, "v2-slow"), [Metric::LatencyP99]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_breaks_after_rolling_out_is_reverted_in_the_bake() {
    let env = r#"ERROR_RATE: "1", ERROR_AFTER_MS: "5000""#;
    let short = format!("thresholds: {{{THRESHOLDS}}}, bake_secs: 1");
    let cluster = serving_v1(env, &short, "strategy: rolling, max_unavailable: 1").await;
    // A long bake for the release under test.
    let long = format!("thresholds: {{{THRESHOLDS}}}, bake_secs: 30");
    cluster.apply(&web_config_health(
        2,
        env,
        &long,
        "strategy: rolling, max_unavailable: 1",
    ));
    let load = Load::start_rate(cluster.router_addr(), HOST, 200, 4);
    let record = deploy_until_end(&cluster, "v2-error", Duration::from_secs(60)).await;
    let tally = load.stop().await;
    println!("late failure: client answers {:?}", tally.statuses);
    assert_eq!(record.outcome, Outcome::Reverted, "{record:#?}");
    let failure = record.failure.unwrap_or_default();
    assert!(
        failure.contains("threshold breached by v2-error"),
        "{failure}"
    );
    let events = cluster.events("web").await;
    let bake = position(&events, "BakeStarted").expect("a bake window");
    let breach = position(&events, "ThresholdBreached").expect("a breach");
    assert!(
        bake < breach,
        "the breach came during the bake: {events:#?}"
    );
    assert_eq!(tally.versions.last().map(String::as_str), Some("v1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_little_traffic_is_no_data_and_the_deadline_decides() {
    let health = "thresholds: {window_secs: 1, min_requests: 1000}, bake_secs: 1";
    let deploy =
        "strategy: canary, steps: [{percent: 50, bake_secs: 1}], progress_deadline_secs: 6";
    let cluster = serving_v1("", health, deploy).await;
    let load = Load::start_rate(cluster.router_addr(), HOST, 20, 1);
    let record = deploy_until_end(&cluster, "v2", Duration::from_secs(60)).await;
    let tally = load.stop().await;
    assert_eq!(record.outcome, Outcome::Reverted, "{record:#?}");
    let failure = record.failure.unwrap_or_default();
    assert!(failure.contains("no progress within 6s"), "{failure}");
    assert!(!failure.contains("threshold"), "{failure}");
    let events = cluster.events("web").await;
    assert!(breaches(&events, "v2").is_empty());
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::NoData { version, .. } if version == "v2")));
    assert!(!events
        .iter()
        .any(|e| matches!(e, Event::ThresholdsMet { version, .. } if version == "v2")));
    assert_eq!(tally.ok(), tally.total(), "{tally:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_probes_give_a_quiet_canary_its_data() {
    let health = "thresholds: {window_secs: 1, min_requests: 10, idle_probe_rps: 30}, bake_secs: 1";
    let deploy =
        "strategy: canary, steps: [{percent: 50, bake_secs: 2}], progress_deadline_secs: 30";
    let cluster = serving_v1("", health, deploy).await;
    // No client at all: only the health-watcher's probes judge v2.
    let record = deploy_until_end(&cluster, "v2", Duration::from_secs(60)).await;
    assert_eq!(record.outcome, Outcome::Completed, "{record:#?}");
    let events = cluster.events("web").await;
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::ThresholdsMet { version, .. } if version == "v2")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spike_on_both_versions_does_not_revert_the_canary() {
    let cluster = Cluster::start_with_router_args(Db::Sqlite, &ROUTER_ARGS).await;
    let flag = cluster.path().join("spike");
    let env = format!(r#"ERROR_FILE: "{}""#, flag.display());
    let health = "thresholds: {window_secs: 1, min_requests: 20, error_rate_percent: 5, max_degradation_percent: 100}, bake_secs: 1";
    cluster.apply(&web_config_health(
        2,
        &env,
        health,
        "strategy: canary, canary_percent: 10",
    ));
    cluster.deploy_first("v1");
    let load = Load::start_rate(cluster.router_addr(), HOST, 400, 8);
    cluster.mt_ok(&["deploy", "web", "--image", "v2"]);
    wait_for(
        &cluster,
        "v2 passes",
        |e| matches!(e, Event::ThresholdsMet { version, .. } if version == "v2"),
    )
    .await;
    std::fs::write(&flag, b"down").expect("spike flag");
    tokio::time::sleep(Duration::from_secs(3)).await;
    std::fs::remove_file(&flag).expect("spike flag");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tally = load.stop().await;
    println!("spike: client answers {:?}", tally.statuses);
    assert!(
        tally.statuses.get(&500).copied().unwrap_or(0) > 100,
        "the spike happened: {tally:?}"
    );
    let status = cluster.status("web").await;
    let events = cluster.events("web").await;
    let Some(d) = status.deployment else {
        let history = cluster.mt_ok(&["history", "web"]);
        panic!("the canary is no longer in flight:\n{history}\n{events:#?}");
    };
    assert_eq!(d.outcome, Outcome::InProgress, "{d:#?}");
    assert!(breaches(&events, "v2").is_empty(), "{events:#?}");
    assert!(breaches(&events, "v1").is_empty(), "{events:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_health_watcher_publishes_no_false_breach() {
    let health = format!("thresholds: {{{THRESHOLDS}}}, bake_secs: 1");
    let mut cluster = serving_v1("", &health, "strategy: canary, canary_percent: 10").await;
    let load = Load::start_rate(cluster.router_addr(), HOST, 300, 6);
    cluster.mt_ok(&["deploy", "web", "--image", "v2"]);
    wait_for(
        &cluster,
        "v2 passes",
        |e| matches!(e, Event::ThresholdsMet { version, .. } if version == "v2"),
    )
    .await;
    let verdicts = |events: &[Event]| {
        events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Event::ThresholdBreached { .. }
                        | Event::NoData { .. }
                        | Event::ThresholdsMet { .. }
                )
            })
            .count()
    };
    let before = verdicts(&cluster.events("web").await);
    cluster.kill("health-watcher");
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.start_service("health-watcher");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let events = cluster.events("web").await;
    let tally = load.stop().await;
    assert!(breaches(&events, "v2").is_empty(), "{events:#?}");
    assert_eq!(
        verdicts(&events),
        before,
        "no verdict repeated after the restart: {events:#?}"
    );
    let d = cluster
        .status("web")
        .await
        .deployment
        .expect("canary in flight");
    assert_eq!(d.outcome, Outcome::InProgress);
    assert_eq!(tally.ok(), tally.total(), "{tally:?}");
}

/// Wait until an event of `web` matches.
async fn wait_for(cluster: &Cluster, what: &str, found: impl Fn(&Event) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cluster.events("web").await.iter().any(&found) {
        assert!(
            Instant::now() < deadline,
            "{what}: not within 30 s\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The revert benchmark (bench/revert/run.sh runs it; RUNS=20 by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: bench/revert/run.sh"]
async fn revert_benchmark() {
    measure::run().await;
}
