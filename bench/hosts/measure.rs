//! The multi-host benchmark (run by `bench/hosts/run.sh`; compiled into the
//! e2e test `netns_hosts::hosts_benchmark` so that it reuses the fixtures
//! that make hosts with their own addresses and start the real binaries).
//! Every time comes from one clock (this machine's): the bench's own, the
//! log's `recorded_at_ms`, and the routers' JSON log lines.
//!
//! 1. Host loss, `RUNS` times (10 by default), each on three fresh hosts
//!    (`suspect_after_secs` 2, `lost_after_secs` 6) with six replicas
//!    spread 2/2/2: h2's link is cut at T, and
//!    - weight 0 everywhere: T to the moment the last live router logged
//!      "route table updated" for the first `RouteChanged` in which every
//!      replica on h2 has weight 0 (or is gone);
//!    - healthy elsewhere: T to the last `ReplicaHealthy` of the replicas
//!      that took the place of h2's (`ReplicaReplaced`).
//! 2. Route propagation to 1, 3 and 10 routers (processes on this machine):
//!    for every `RouteChanged` of five deploys, its `recorded_at_ms` to the
//!    last router's "route table updated" for its event id.
//! 3. Control-plane time per rolling batch (6 instantly-ready replicas,
//!    one at a time, `healthy_after` 1), from the log:
//!    (`DeploymentCompleted` − `DeploymentStarted`) / batches, five deploys,
//!    on three hosts with three routers and on one host with one router.
//!
//! Prints a markdown report on stdout.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Child;

use mentat_domain::event::EventEnvelope;
use mentat_e2e::{stop_child, Cluster};

use super::*;

pub async fn run() {
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10);
    let (zero, elsewhere) = host_loss(runs).await;
    let mut propagation = Vec::new();
    for routers in [1, 3, 10] {
        propagation.push((routers, route_propagation(routers).await));
    }
    let three = batches_on_three_hosts().await;
    let one = batches_on_one_host().await;

    println!("## Multi-host benchmark ({} cores)\n", cores());
    println!("| measure | runs | p50 (ms) | p99 (ms) | min (ms) | max (ms) |");
    println!("|---|---:|---:|---:|---:|---:|");
    row("host cut → weight 0 in every router", &zero);
    row("host cut → its replicas healthy elsewhere", &elsewhere);
    for (routers, spans) in &propagation {
        row(
            &format!("route propagation, append → last of {routers} routers applied"),
            spans,
        );
    }
    row("per rolling batch, 3 hosts and 3 routers", &three);
    row("per rolling batch, 1 host and 1 router", &one);
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, usize::from)
}

fn row(what: &str, values: &[i64]) {
    let mut v = values.to_vec();
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    if v.is_empty() {
        println!("| {what} | 0 | - | - | - | - |");
    } else {
        println!(
            "| {what} | {} | {} | {} | {} | {} |",
            v.len(),
            at(0.5),
            at(0.99),
            v[0],
            v[v.len() - 1]
        );
    }
}

async fn host_loss(runs: usize) -> (Vec<i64>, Vec<i64>) {
    let (mut zero, mut elsewhere) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        let hosts = Hosts::start().await.expect("network namespaces");
        hosts.cluster.apply(&format!("{FAST_LOSS}{}", web(6, 0)));
        hosts.deploy("v1");
        let h2 = format!("{}:", hosts.lan.address(2));
        let cut_ms = mentat_bus::now_ms();
        hosts.lan.cut(2);
        let deadline = Instant::now() + Duration::from_secs(60);
        let envelopes = loop {
            let envelopes = hosts.cluster.envelopes("web").await;
            let events: Vec<Event> = envelopes.iter().map(|e| e.event.clone()).collect();
            let moved = replaced(&events);
            let healthy = |id: &String| {
                events
                    .iter()
                    .any(|e| matches!(e, Event::ReplicaHealthy { replica, .. } if replica == id))
            };
            if !moved.is_empty() && moved.iter().all(|(_, _, new)| healthy(new)) {
                break envelopes;
            }
            assert!(Instant::now() < deadline, "h2's replicas never moved");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let zeroing = envelopes
            .iter()
            .find(|e| {
                e.recorded_at_ms >= cut_ms
                    && matches!(&e.event, Event::RouteChanged { backends, .. }
                        if backends.iter().all(|b| !b.addr.starts_with(&h2) || b.weight == 0))
            })
            .expect("a RouteChanged that zeroes h2");
        let logs: Vec<PathBuf> = (0..2)
            .map(|h| hosts.data.path().join(host_id(h)).join("logs/router.log"))
            .collect();
        let applied = last_applied(&logs, &zeroing.id).expect("both routers applied it");
        let new: Vec<String> = replaced(
            &envelopes
                .iter()
                .map(|e| e.event.clone())
                .collect::<Vec<_>>(),
        )
        .into_iter()
        .map(|(_, _, new)| new)
        .collect();
        let healthy = envelopes
            .iter()
            .filter(|e| matches!(&e.event, Event::ReplicaHealthy { replica, .. } if new.contains(replica)))
            .map(|e| e.recorded_at_ms)
            .max()
            .expect("healthy");
        eprintln!(
            "host loss run {run}: weight 0 everywhere after {} ms, healthy elsewhere after {} ms",
            applied - cut_ms,
            healthy - cut_ms
        );
        zero.push(applied - cut_ms);
        elsewhere.push(healthy - cut_ms);
    }
    (zero, elsewhere)
}

/// A router of this machine, logging JSON lines to its own file; stopped
/// when dropped.
struct Router {
    child: Child,
    log: PathBuf,
}

impl Router {
    fn start(cluster: &Cluster, id: usize) -> Router {
        let id = format!("r{id}");
        let (child, _) = cluster.extra_router(&id, &[], &[("MENTAT_LOG_FORMAT", "json")]);
        let log = cluster.path().join(format!("router-{id}.log"));
        Router { child, log }
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        stop_child(&mut self.child, "TERM", Duration::from_secs(10));
    }
}

async fn route_propagation(n: usize) -> Vec<i64> {
    let cluster = Cluster::start_without_router(Db::Sqlite).await;
    let routers: Vec<Router> = (0..n).map(|i| Router::start(&cluster, i)).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let joined = match cluster.status_query(None).await {
            Ok(StatusReply::Ok { routers, .. }) => routers.len(),
            _ => 0,
        };
        if joined == n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{joined} of {n} routers joined\n{}",
            routers
                .iter()
                .map(|r| std::fs::read_to_string(&r.log).unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.apply(&instant_web(2));
    let logs: Vec<PathBuf> = routers.iter().map(|r| r.log.clone()).collect();
    for image in ["v1", "v2", "v3", "v4", "v5"] {
        let out = cluster.mt(&["deploy", "web", "--image", image, "--timeout", "60"]);
        assert!(out.status.success(), "{}", text(&out));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let spans: Vec<i64> = cluster
        .envelopes("web")
        .await
        .iter()
        .filter(|e| matches!(e.event, Event::RouteChanged { .. }))
        .filter_map(|e| Some(last_applied(&logs, &e.id)? - e.recorded_at_ms))
        .collect();
    eprintln!("route propagation to {n} routers: {spans:?}");
    spans
}

async fn batches_on_three_hosts() -> Vec<i64> {
    let hosts = Hosts::start().await.expect("network namespaces");
    hosts.cluster.apply(&instant_web(6));
    for image in ["v1", "v2", "v3", "v4", "v5", "v6"] {
        hosts.deploy(image);
    }
    per_batch(&hosts.cluster.envelopes("web").await)
}

async fn batches_on_one_host() -> Vec<i64> {
    let cluster = Cluster::start(Db::Sqlite).await;
    cluster.apply(&instant_web(6));
    for image in ["v1", "v2", "v3", "v4", "v5", "v6"] {
        let out = cluster.mt(&["deploy", "web", "--image", image, "--timeout", "60"]);
        assert!(out.status.success(), "{}", text(&out));
    }
    per_batch(&cluster.envelopes("web").await)
}

/// `replicas` instantly-ready replicas, probed every 50 ms, healthy at the
/// first passing probe, rolled one at a time, no bake.
fn instant_web(replicas: u32) -> String {
    format!(
        r#"services:
  web:
    replicas: {replicas}
    run:
      command: ["mentat-demo-app"]
      env: {{ APP_VERSION: "{{image}}" }}
    health: {{ path: /health, interval_ms: 50, healthy_after: 1, unhealthy_after: 3, bake_secs: 0, thresholds: {{ enabled: false }} }}
    deploy: {{ strategy: rolling, max_unavailable: 1, health_timeout_secs: 20, auto_revert: true }}
"#
    )
}

/// Per deployment after the first (which starts from nothing), its span
/// in the log divided by its batches (ms).
fn per_batch(envelopes: &[EventEnvelope]) -> Vec<i64> {
    let mut started: BTreeMap<String, i64> = BTreeMap::new();
    let mut batches: BTreeMap<String, i64> = BTreeMap::new();
    let mut spans = Vec::new();
    for e in envelopes {
        match &e.event {
            Event::DeploymentStarted { deployment_id, .. } => {
                started.insert(deployment_id.clone(), e.recorded_at_ms);
            }
            Event::BatchCompleted { deployment_id, .. } => {
                *batches.entry(deployment_id.clone()).or_default() += 1;
            }
            Event::DeploymentCompleted { deployment_id, .. } => {
                let n = batches.get(deployment_id).copied().unwrap_or(0);
                if let Some(start) = started.get(deployment_id) {
                    if n > 1 {
                        spans.push((e.recorded_at_ms - start) / n);
                    }
                }
            }
            _ => {}
        }
    }
    spans.into_iter().skip(1).collect()
}

/// The time (ms) of the last of `logs`' "route table updated" lines for
/// `event_id`, or `None` when one of them has none.
fn last_applied(logs: &[PathBuf], event_id: &str) -> Option<i64> {
    logs.iter()
        .map(|log| {
            let text = std::fs::read_to_string(log).ok()?;
            text.lines().find_map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).ok()?;
                let fields = &v["fields"];
                (fields["message"] == "route table updated" && fields["event_id"] == event_id)
                    .then(|| rfc3339_ms(v["timestamp"].as_str()?))?
            })
        })
        .try_fold(i64::MIN, |latest, at| Some(latest.max(at?)))
}

/// `2026-12-07T19:29:57.123456Z` as ms since the Unix epoch.
fn rfc3339_ms(at: &str) -> Option<i64> {
    let (date, time) = at.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, min, s) = (t.next()??, t.next()??, t.next()??);
    let ms: i64 = format!("{frac:0<3}")[..3].parse().ok()?;
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + min) * 60_000 + s * 1000 + ms)
}

#[test]
fn rfc3339_ms_matches_the_unix_epoch() {
    assert_eq!(rfc3339_ms("1970-01-01T00:00:00.000Z"), Some(0));
    assert_eq!(
        rfc3339_ms("2026-12-07T19:29:57.123456Z"),
        Some(1_796_671_797_123)
    );
}
