//! Threshold verdicts against a real nats-server: the test plays a router
//! (it publishes `TrafficStats` on `mentat.stats.r1`) and reads the verdict
//! facts the health-watcher publishes, across a restart of the watcher.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Relay;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use mentat_bus::codec::{self, Encoding};
use mentat_bus::{streams, subject, Bus};
use mentat_domain::event::{Event, Fact, Metric};
use mentat_domain::spec::{HealthSpec, Thresholds};
use mentat_domain::stats::{bucket_of, InstanceStats, TrafficStats, LATENCY_BUCKETS};
use mentat_health_watcher::Config;
use mentat_runtime::Shutdown;
use mentat_testkit::NatsServer;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(10);

struct Harness {
    nats: NatsServer,
    bus: Bus,
    verdicts: async_nats::Subscriber,
    /// Plays the planner's relay.
    relay: Relay,
}

impl Harness {
    /// NATS, the test's bus, and a service `web` judged over 1 s windows.
    async fn new() -> Self {
        let h = Self::bare().await;
        h.announce(1).await;
        h
    }

    /// NATS and the test's bus, no service known yet.
    async fn bare() -> Self {
        let nats = NatsServer::start();
        let bus = Bus::connect(&nats.url(), "test", WAIT).await.unwrap();
        streams::ensure_stats(&bus).await.unwrap();
        let verdicts = bus.client.subscribe(subject::FACT_ALL).await.unwrap();
        Harness {
            nats,
            bus,
            verdicts,
            relay: Relay::default(),
        }
    }

    /// A replica of `web` started: with it come the service's thresholds,
    /// over `window_secs`.
    async fn announce(&self, window_secs: u64) {
        let health = HealthSpec {
            thresholds: Thresholds {
                window_secs,
                min_requests: 20,
                ..Thresholds::default()
            },
            ..HealthSpec::default()
        };
        let started = Event::ReplicaStarted {
            replica: "web-1".into(),
            service: "web".into(),
            host: "h1".into(),
            pid: 1,
            // Nothing listens: the readiness probe fails, which is irrelevant here.
            addr: format!("127.0.0.1:{}", mentat_testkit::free_port()),
            health,
        };
        self.fact(started).await;
    }

    async fn fact(&self, event: Event) {
        self.relay.record(&self.bus, event).await;
    }

    fn watcher(&self) -> (Shutdown, JoinHandle<anyhow::Result<()>>) {
        let shutdown = Shutdown::new();
        let task = tokio::spawn(mentat_health_watcher::run(
            Config::new(self.nats.url()),
            shutdown.clone(),
        ));
        (shutdown, task)
    }

    /// One 100 ms interval of a router: `(image, requests, errors)`.
    async fn interval(&self, traffic: &[(&str, u64, u64)]) {
        let instances = traffic
            .iter()
            .map(|(image, requests, errors)| {
                let mut buckets = vec![0; LATENCY_BUCKETS];
                buckets[bucket_of(2_000)] = *requests;
                InstanceStats {
                    service: "web".into(),
                    replica: format!("web-{image}"),
                    image: (*image).into(),
                    requests: *requests,
                    errors_5xx: *errors,
                    latency_buckets: buckets,
                    p50_ms: 2.0,
                    p90_ms: 2.0,
                    p99_ms: 2.0,
                }
            })
            .collect();
        let stats = TrafficStats {
            router: "r1".into(),
            at_ms: mentat_bus::now_ms(),
            interval_ms: 100,
            instances,
        };
        self.bus
            .publish_durable(subject::stats("r1"), &mentat_bus::new_id(), &stats)
            .await
            .unwrap();
    }

    /// Send `traffic` every 100 ms for `secs` seconds.
    async fn traffic_for(&self, secs: f64, traffic: &[(&str, u64, u64)]) {
        let end = tokio::time::Instant::now() + Duration::from_secs_f64(secs);
        while tokio::time::Instant::now() < end {
            self.interval(traffic).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every verdict fact published since the last call (after a moment
    /// for the last judgement's fact to arrive).
    async fn drain(&mut self) -> Vec<Event> {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut out = Vec::new();
        while let Some(Some(msg)) = self.verdicts.next().now_or_never() {
            let fact: Fact =
                codec::decode(&msg.payload, Encoding::of(msg.headers.as_ref()), "Fact").unwrap();
            if matches!(
                fact.event,
                Event::ThresholdBreached { .. }
                    | Event::NoData { .. }
                    | Event::ThresholdsMet { .. }
            ) {
                out.push(fact.event);
            }
        }
        out
    }
}

async fn stop(shutdown: Shutdown, task: JoinHandle<anyhow::Result<()>>) {
    shutdown.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .expect("health-watcher did not stop")
        .unwrap()
        .unwrap();
}

fn breaches(events: &[Event]) -> Vec<(String, Metric)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ThresholdBreached {
                version, judgement, ..
            } => Some((version.clone(), judgement.metric)),
            _ => None,
        })
        .collect()
}

fn passes(events: &[Event], v: &str) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::ThresholdsMet { version, .. } if version == v))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_breaches_once_and_a_shared_spike_does_not() {
    let mut h = Harness::new().await;
    let (shutdown, task) = h.watcher();
    tokio::time::sleep(Duration::from_millis(500)).await;

    h.traffic_for(1.5, &[("v1", 45, 0), ("v2", 5, 0)]).await;
    let seen = h.drain().await;
    assert_eq!(passes(&seen, "v1"), 1, "{seen:?}");
    assert_eq!(passes(&seen, "v2"), 1, "{seen:?}");

    // Both versions fail alike: the canary is no worse than its baseline.
    h.traffic_for(1.5, &[("v1", 45, 45), ("v2", 5, 5)]).await;
    assert_eq!(breaches(&h.drain().await), [], "a shared spike breached");

    // Only the canary fails: one breach, published once.
    h.traffic_for(1.5, &[("v1", 45, 0), ("v2", 5, 5)]).await;
    let seen = h.drain().await;
    assert_eq!(
        breaches(&seen),
        [("v2".to_owned(), Metric::ErrorRate)],
        "{seen:?}"
    );
    stop(shutdown, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_watcher_rebuilds_its_windows_and_repeats_nothing() {
    let mut h = Harness::new().await;
    let (shutdown, task) = h.watcher();
    tokio::time::sleep(Duration::from_millis(500)).await;
    h.traffic_for(1.5, &[("v1", 45, 0), ("v2", 5, 0)]).await;
    assert_eq!(passes(&h.drain().await, "v2"), 1);

    // Killed mid-canary; traffic goes on, healthy, while it is down.
    stop(shutdown, task).await;
    h.traffic_for(0.5, &[("v1", 45, 0), ("v2", 5, 0)]).await;
    let (shutdown, task) = h.watcher();
    h.traffic_for(2.0, &[("v1", 45, 0), ("v2", 5, 0)]).await;
    let seen = h.drain().await;
    assert_eq!(seen, [], "the restarted watcher published {seen:?}");

    // A real breach after the restart is still reported.
    h.traffic_for(1.5, &[("v1", 45, 0), ("v2", 5, 5)]).await;
    assert_eq!(
        breaches(&h.drain().await),
        [("v2".to_owned(), Metric::ErrorRate)]
    );
    stop(shutdown, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_longer_than_the_first_replay_is_judged_from_the_start() {
    // The watcher runs before any service exists; a service with a 5 s
    // window appears: the watcher replays the statistics again for that
    // window, rather than judging nothing until it has run 5 s.
    let mut h = Harness::bare().await;
    let (shutdown, task) = h.watcher();
    tokio::time::sleep(Duration::from_millis(500)).await;
    h.announce(5).await;
    h.traffic_for(1.0, &[("v1", 45, 0), ("v2", 5, 5)]).await;
    let seen = h.drain().await;
    assert!(
        breaches(&seen).contains(&("v2".to_owned(), Metric::ErrorRate)),
        "{seen:?}"
    );
    stop(shutdown, task).await;
}
