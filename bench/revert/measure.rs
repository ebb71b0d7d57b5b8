//! The revert benchmark (run by `bench/revert/run.sh`; compiled into the
//! e2e test `thresholds::revert_benchmark` so that it reuses the fixtures
//! that start the real binaries).
//!
//! One cluster on SQLite, router statistics every 100 ms, thresholds over
//! 1 s windows (error rate 5 %, at least 10 requests). `RUNS` times (20 by
//! default): a paced client sends 400 requests/s through the router; a
//! canary of `v<N>-error` takes 10 % of them, answers correctly for
//! `ERROR_AFTER_MS` (2 s) and then 500 to every request. For each run,
//! from the timestamps of the client, the fact, the log and the relayed
//! events (all on this machine, one clock):
//!
//! | column | from | to |
//! |---|---|---|
//! | detection | first 500 of the bad version at the client | `ThresholdBreached.observed_at_ms` (the watcher's judgement) |
//! | breach event | judgement | the breach recorded in the log (`recorded_at_ms`) |
//! | planner decision | breach recorded | `DeploymentReverting` recorded |
//! | routing change | `DeploymentReverting` recorded | the revert's `RouteChanged` relayed on NATS (what the router consumes) |
//! | end to end | first 500 at the client | last 500 of the bad version at the client |
//!
//! plus the bad version's 500s the client received. `ROUTERS=3` runs three
//! routers with the load spread over them (the health-watcher merges their
//! statistics); `DEFAULTS=1` leaves the router's statistics interval and
//! the thresholds at what `mt up` gives (1 s; window 10 s, 50 requests). One JSON object per run
//! is appended to `$REVERT_BENCH_OUT` (default `revert-bench.jsonl`).

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use mentat_bus::codec::{self, Encoding};
use mentat_bus::subject;
use mentat_domain::event::{Event, Fact, FactSource};
use mentat_domain::EventEnvelope;
use mentat_e2e::load::Timeline;
use mentat_e2e::{web_config_health, Cluster, Db};

/// Facts and relayed events seen on NATS, with when they came (ms).
type Seen = Arc<Mutex<Vec<(i64, Event, String)>>>;

pub async fn run() {
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    let out_path =
        std::env::var("REVERT_BENCH_OUT").unwrap_or_else(|_| "revert-bench.jsonl".into());
    let routers: usize = std::env::var("ROUTERS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1)
        .clamp(1, 10);
    // DEFAULTS=1: the router's statistics interval and the thresholds that
    // `mt up` and a service file without `thresholds:` give.
    let defaults = std::env::var("DEFAULTS").is_ok_and(|v| v == "1");
    let router_args: &[&str] = if defaults {
        &[]
    } else {
        &["--stats-interval-ms", "100"]
    };
    let cluster = Cluster::start_with_router_args(Db::Sqlite, router_args).await;
    let extra: Vec<(std::process::Child, String)> = (2..=routers)
        .map(|i| cluster.extra_router(&format!("r{i}"), router_args, &[]))
        .collect();
    let env = r#"ERROR_RATE: "1", ERROR_AFTER_MS: "2000""#;
    let health = if defaults {
        "bake_secs: 10"
    } else {
        "thresholds: {window_secs: 1, min_requests: 10, error_rate_percent: 5}, bake_secs: 1"
    };
    cluster.apply(&web_config_health(
        2,
        env,
        health,
        "strategy: canary, canary_percent: 10",
    ));
    cluster.deploy_first("v1");
    let seen: Seen = Arc::default();
    for filter in [
        subject::fact(FactSource::HealthWatcher, "web", "ThresholdBreached"),
        subject::event("web", "RouteChanged"),
    ] {
        let mut sub = cluster
            .bus
            .client
            .subscribe(filter)
            .await
            .expect("subscribe");
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let at = mentat_bus::now_ms();
                let enc = Encoding::of(msg.headers.as_ref());
                if let Ok(f) = codec::decode::<Fact>(&msg.payload, enc, "Fact") {
                    seen.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((at, f.event, f.id));
                } else if let Ok(e) =
                    codec::decode::<EventEnvelope>(&msg.payload, enc, "EventEnvelope")
                {
                    seen.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((at, e.event, e.id));
                }
            }
        });
    }
    // 400 requests/s in all, spread over the routers.
    let per = u32::try_from(routers).unwrap_or(1);
    let load: Vec<Timeline> = std::iter::once(cluster.router_addr())
        .chain(extra.iter().map(|(_, addr)| addr.clone()))
        .map(|addr| Timeline::start(addr, "web.localhost", 400 / per, (8 / per).max(2)))
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&out_path)
        .expect("output file");
    for n in 0..runs {
        let image = format!("v{}-error", n + 2);
        let out = cluster.mt(&["deploy", "web", "--image", &image, "--no-wait"]);
        assert!(out.status.success(), "{}", mentat_e2e::text(&out));
        let d = cluster
            .status("web")
            .await
            .deployment
            .expect("deployment in flight");
        let record = cluster
            .wait_deployment("web", &d.deployment_id, Duration::from_secs(60))
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let row = measure_run(
            &cluster,
            &load,
            &seen,
            &image,
            &d.deployment_id,
            &record.failure,
        )
        .await;
        println!("{row}");
        writeln!(file, "{row}").expect("write");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut total = 0;
    for timeline in load {
        total += timeline.stop().await.0;
    }
    for (mut child, _) in extra {
        mentat_e2e::stop_child(&mut child, "TERM", Duration::from_secs(10));
    }
    println!("{total} requests in all");
}

async fn measure_run(
    cluster: &Cluster,
    load: &[Timeline],
    seen: &Seen,
    image: &str,
    deployment_id: &str,
    failure: &Option<String>,
) -> serde_json::Value {
    let body = format!("error from version {image}");
    let mut bad: Vec<i64> = load
        .iter()
        .flat_map(Timeline::stamps)
        .filter(|s| s.body == body)
        .map(|s| s.at_ms)
        .collect();
    bad.sort_unstable();
    let first_bad = bad.first().copied();
    let last_bad = bad.last().copied();
    let envelopes = history(cluster).await;
    let recorded = |f: &dyn Fn(&Event) -> bool| {
        envelopes
            .iter()
            .find(|e| f(&e.event))
            .map(|e| e.recorded_at_ms)
    };
    let breach_logged =
        recorded(&|e| matches!(e, Event::ThresholdBreached { version, .. } if version == image));
    let reverting = recorded(
        &|e| matches!(e, Event::DeploymentReverting { deployment_id: id, .. } if id == deployment_id),
    );
    let reverting_pos = envelopes.iter().position(|e| matches!(&e.event, Event::DeploymentReverting { deployment_id: id, .. } if id == deployment_id));
    let route = reverting_pos.and_then(|p| {
        envelopes[p..]
            .iter()
            .find(|e| matches!(e.event, Event::RouteChanged { .. }))
    });
    let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let fact = seen.iter().find_map(|(_, e, _)| match e {
        Event::ThresholdBreached { version, .. } if version == image => Some(e.clone()),
        _ => None,
    });
    let route_seen = route.and_then(|r| {
        seen.iter()
            .find(|(_, _, id)| *id == r.id)
            .map(|(at, _, _)| *at)
    });
    let fact_observed = fact_observed_ms(cluster, image).await;
    let diff = |a: Option<i64>, b: Option<i64>| match (a, b) {
        (Some(a), Some(b)) => serde_json::json!(b - a),
        _ => serde_json::Value::Null,
    };
    serde_json::json!({
        "image": image,
        "reverted_because": failure,
        "detection_ms": diff(first_bad, fact_observed),
        "breach_event_ms": diff(fact_observed, breach_logged),
        "decision_ms": diff(breach_logged, reverting),
        "routing_ms": diff(reverting, route_seen),
        "first_bad_to_route_ms": diff(first_bad, route_seen),
        "end_to_end_ms": diff(first_bad, last_bad),
        "bad_answers": bad.len(),
        "judgement": fact.map(|f| match f { Event::ThresholdBreached { judgement, .. } => judgement.to_string(), _ => String::new() }),
    })
}

/// The judgement time of the breach of `image`, from the fact as stored in
/// `MENTAT_FACTS` (its `observed_at_ms`).
async fn fact_observed_ms(cluster: &Cluster, image: &str) -> Option<i64> {
    use async_nats::jetstream::consumer::DeliverPolicy;
    let filters = vec![subject::fact(
        FactSource::HealthWatcher,
        "web",
        "ThresholdBreached",
    )];
    let mut replay = mentat_bus::consumer::ordered(
        &cluster.bus,
        mentat_bus::streams::FACTS,
        filters,
        DeliverPolicy::All,
    )
    .await
    .ok()?;
    let mut left = replay.backlog;
    while left > 0 {
        let msg = tokio::time::timeout(Duration::from_secs(5), replay.next())
            .await
            .ok()??
            .ok()?;
        left -= 1;
        let fact: Fact =
            codec::decode(&msg.payload, Encoding::of(msg.headers.as_ref()), "Fact").ok()?;
        if matches!(&fact.event, Event::ThresholdBreached { version, .. } if version == image) {
            return Some(fact.observed_at_ms);
        }
    }
    None
}

async fn history(cluster: &Cluster) -> Vec<EventEnvelope> {
    cluster.envelopes("web").await
}
