//! Statistics: per-interval TrafficStats deltas on JetStream
//! (`mentat.stats.<router-id>`, stream MENTAT_STATS), the same counters
//! cumulative on `/metrics`, and the route-change apply latency.

mod common;

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use common::*;
use futures::StreamExt;
use mentat_domain::stats::{percentile_ms, TrafficStats, LATENCY_BUCKETS};
use mentat_testkit::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_is_published_per_interval_and_exposed_on_metrics() {
    let nats = NatsServer::start();
    let bus = bus(&nats.url()).await;
    let (a, b) = (
        Backend::start_image("a", "v1").await,
        Backend::start_image("b", "v2").await,
    );
    publish_routes(&bus, "web", vec![a.route(1), b.route(1)]).await;
    let router = TestRouter::start_with(mentat_router::Config {
        nats_url: nats.url(),
        stats_interval_ms: 200,
        ..test_config()
    })
    .await;
    let client = client();
    for _ in 0..10 {
        get(&client, router.addr, "web.localhost", "/").await;
    }
    for _ in 0..4 {
        get(&client, router.addr, "a.web.localhost", "/status?code=500").await;
    }
    get(&client, router.addr, "b.web.localhost", "/slow?ms=120").await;

    // Read the stream from its start, as a restarted health-watcher would.
    let stream = bus
        .js
        .get_stream(mentat_bus::streams::STATS)
        .await
        .expect("the router created MENTAT_STATS");
    let consumer = stream
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::All,
            filter_subject: mentat_bus::subject::stats(ROUTER_ID),
            ..Default::default()
        })
        .await
        .expect("consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let (mut requests, mut errors) = (std::collections::HashMap::new(), 0u64);
    let mut b_buckets = vec![0u64; LATENCY_BUCKETS];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while requests.values().sum::<u64>() < 15 {
        let msg = tokio::time::timeout_at(deadline, messages.next())
            .await
            .expect("stats within 5 s")
            .expect("stream open")
            .expect("message");
        let stats = decode(&msg.payload);
        assert_eq!((stats.router.as_str(), stats.interval_ms), (ROUTER_ID, 200));
        for i in stats.instances {
            assert_eq!(i.latency_buckets.len(), LATENCY_BUCKETS);
            assert_eq!(i.latency_buckets.iter().sum::<u64>(), i.requests);
            assert!(i.requests > 0, "idle instances are left out");
            *requests
                .entry((i.replica.clone(), i.image.clone()))
                .or_insert(0) += i.requests;
            errors += i.errors_5xx;
            if i.replica == "b" {
                mentat_domain::stats::merge_buckets(&mut b_buckets, &i.latency_buckets);
            }
        }
        let _ = msg.ack().await;
    }
    // Deltas, not cumulative: the sums over the messages are the exact counts.
    assert_eq!(requests.get(&("a".to_owned(), "v1".to_owned())), Some(&9));
    assert_eq!(requests.get(&("b".to_owned(), "v2".to_owned())), Some(&6));
    assert_eq!(errors, 4);
    let p99 = percentile_ms(&b_buckets, 0.99);
    assert!(
        (90.0..=300.0).contains(&p99),
        "b's slow request shows in its p99: {p99} ms"
    );

    let text = metrics(router.admin).await;
    let series = |name: &str, replica: &str, image: &str| {
        sample(
            &text,
            &format!("{name}{{service=\"web\",replica=\"{replica}\",image=\"{image}\"}}"),
        )
    };
    assert_eq!(series("mentat_router_requests_total", "a", "v1"), Some(9.0));
    assert_eq!(
        series("mentat_router_responses_5xx_total", "a", "v1"),
        Some(4.0)
    );
    assert_eq!(
        series("mentat_router_request_duration_seconds_count", "b", "v2"),
        Some(6.0)
    );
    assert!(text.contains("mentat_router_request_duration_seconds_bucket{service=\"web\",replica=\"b\",image=\"v2\",le=\"+Inf\"} 6"));

    // Intervals without traffic publish nothing.
    let quiet = tokio::time::timeout(Duration::from_millis(700), messages.next()).await;
    assert!(quiet.is_err(), "published without new traffic");
    // Under steady traffic, a message every interval, each with only what
    // came since the one before.
    let started = tokio::time::Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < Duration::from_millis(1200) {
        get(&client, router.addr, "a.web.localhost", "/").await;
        sent += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut seen, mut published) = (0u64, 0u32);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while seen < sent {
        let msg = tokio::time::timeout_at(deadline, messages.next())
            .await
            .expect("stats within 5 s")
            .expect("stream open")
            .expect("message");
        seen += decode(&msg.payload)
            .instances
            .iter()
            .map(|i| i.requests)
            .sum::<u64>();
        published += 1;
        let _ = msg.ack().await;
    }
    assert_eq!(seen, sent, "the deltas add up to the requests sent");
    assert!(
        published >= 3,
        "{published} messages over 1.2 s of traffic at a 200 ms interval"
    );
}

fn decode(payload: &[u8]) -> TrafficStats {
    mentat_bus::codec::decode(payload, mentat_bus::Encoding::MsgPack, "TrafficStats")
        .expect("decodes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_change_apply_latency_is_measured() {
    let nats = NatsServer::start();
    let bus = bus(&nats.url()).await;
    let a = Backend::start("a").await;
    publish_routes(&bus, "web", vec![a.route(1)]).await;
    let router = TestRouter::start(&nats.url()).await;
    // The change loaded at start is applied but not timed (it is old);
    // live ones are. A histogram with no sample has no series yet.
    let text = metrics(router.admin).await;
    assert_eq!(
        sample(&text, "mentat_router_route_changes_total"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "mentat_router_route_apply_seconds_count").unwrap_or(0.0),
        0.0
    );
    for w in 1..=20 {
        publish_routes(&bus, "web", vec![a.route(w)]).await;
    }
    let mut count = 0.0;
    for _ in 0..100 {
        let text = metrics(router.admin).await;
        count = sample(&text, "mentat_router_route_apply_seconds_count").unwrap_or(0.0);
        if count >= 20.0 {
            let sum = sample(&text, "mentat_router_route_apply_seconds_sum").unwrap_or(f64::MAX);
            println!(
                "route apply: {count} changes, mean {:.3} ms",
                sum / count * 1000.0
            );
            assert!(
                sum / count < 0.05,
                "mean apply latency {sum} s over {count}"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(count, 20.0);
    let text = metrics(router.admin).await;
    assert_eq!(
        sample(&text, "mentat_router_route_version{service=\"web\"}"),
        Some(1.0),
        "the version of the stream event applied"
    );
}
