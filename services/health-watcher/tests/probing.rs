//! The health-watcher against a real nats-server and a real HTTP server
//! whose `/health` answer the test flips between 200 and 503.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Relay;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use mentat_bus::codec::{self, Encoding};
use mentat_bus::{subject, Bus};
use mentat_domain::event::{Event, ExitStatus, Fact};
use mentat_domain::spec::HealthSpec;
use mentat_health_watcher::Config;
use mentat_runtime::Shutdown;
use mentat_testkit::NatsServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(10);

/// A tiny HTTP server: every request gets `status`, and is counted.
struct App {
    addr: String,
    status: Arc<AtomicU16>,
    hits: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl App {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let status = Arc::new(AtomicU16::new(200));
        let hits = Arc::new(AtomicUsize::new(0));
        let (s, h) = (status.clone(), hits.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let (s, h) = (s.clone(), h.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 512];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    assert!(buf.starts_with(b"GET /health HTTP/1.1\r\n"));
                    h.fetch_add(1, Ordering::SeqCst);
                    let code = s.load(Ordering::SeqCst);
                    let answer = format!(
                        "HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    let _ = conn.write_all(answer.as_bytes()).await;
                });
            }
        });
        App {
            addr,
            status,
            hits,
            task,
        }
    }

    fn set(&self, code: u16) {
        self.status.store(code, Ordering::SeqCst);
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Harness {
    nats: NatsServer,
    bus: Bus,
    health_facts: async_nats::Subscriber,
    /// Plays the planner's relay.
    relay: Relay,
}

impl Harness {
    async fn new() -> Self {
        let nats = NatsServer::start();
        let bus = Bus::connect(&nats.url(), "test", WAIT).await.unwrap();
        let health_facts = bus.client.subscribe(subject::FACT_ALL).await.unwrap();
        Harness {
            nats,
            bus,
            health_facts,
            relay: Relay::default(),
        }
    }

    fn watcher(&self) -> (Shutdown, JoinHandle<anyhow::Result<()>>) {
        let mut config = Config::new(self.nats.url());
        config.probe_timeout_ms = 500;
        let shutdown = Shutdown::new();
        let task = tokio::spawn(mentat_health_watcher::run(config, shutdown.clone()));
        (shutdown, task)
    }

    async fn fact(&self, event: Event) {
        self.relay.record(&self.bus, event).await;
    }

    async fn started(&self, replica: &str, addr: &str, healthy_after: u32, unhealthy_after: u32) {
        self.fact(Event::ReplicaStarted {
            replica: replica.into(),
            service: "web".into(),
            host: "h1".into(),
            pid: 1,
            addr: addr.into(),
            health: HealthSpec {
                path: "/health".into(),
                interval_ms: 50,
                healthy_after,
                unhealthy_after,
                ..HealthSpec::default()
            },
        })
        .await;
    }

    async fn exited(&self, replica: &str) {
        self.fact(Event::ReplicaExited {
            replica: replica.into(),
            service: "web".into(),
            host: "h1".into(),
            status: ExitStatus {
                code: Some(0),
                signal: None,
            },
            requested: true,
            reason: None,
        })
        .await;
    }

    /// The next health fact (facts the test published itself are skipped),
    /// or `None` when none comes within `within`.
    async fn next_health(&mut self, within: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.health_facts.next())
                .await
                .ok()??;
            let fact: Fact =
                codec::decode(&msg.payload, Encoding::of(msg.headers.as_ref()), "Fact").unwrap();
            match fact.event {
                e @ (Event::ReplicaHealthy { .. } | Event::ReplicaUnhealthy { .. }) => {
                    return Some(e)
                }
                _ => continue,
            }
        }
    }

    async fn expect_health(&mut self) -> Event {
        self.next_health(WAIT)
            .await
            .expect("no health fact in time")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_after_n_passes_unhealthy_after_m_failures_and_back() {
    let mut h = Harness::new().await;
    let app = App::start().await;
    let (shutdown, task) = h.watcher();
    h.started("r1", &app.addr, 3, 2).await;
    // A repeated ReplicaStarted must not start a second probe.
    h.started("r1", &app.addr, 3, 2).await;

    assert_eq!(
        h.expect_health().await,
        Event::ReplicaHealthy {
            replica: "r1".into(),
            service: "web".into()
        }
    );
    assert!(app.hits() >= 3, "healthy after {} probes", app.hits());
    // Only transitions are published.
    assert_eq!(h.next_health(Duration::from_millis(400)).await, None);

    app.set(503);
    let before = app.hits();
    match h.expect_health().await {
        Event::ReplicaUnhealthy {
            replica, reason, ..
        } => {
            assert_eq!(replica, "r1");
            assert!(reason.contains("503"), "{reason}");
        }
        other => panic!("expected ReplicaUnhealthy, got {other:?}"),
    }
    assert!(app.hits() >= before + 2);
    assert_eq!(h.next_health(Duration::from_millis(300)).await, None);

    app.set(200);
    assert!(matches!(
        h.expect_health().await,
        Event::ReplicaHealthy { .. }
    ));
    stop(shutdown, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probing_stops_when_the_replica_exits() {
    let mut h = Harness::new().await;
    let app = App::start().await;
    let (shutdown, task) = h.watcher();
    h.started("r1", &app.addr, 1, 1).await;
    assert!(matches!(
        h.expect_health().await,
        Event::ReplicaHealthy { .. }
    ));
    h.exited("r1").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_exit = app.hits();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.hits(), after_exit, "still probing an exited replica");
    app.set(503);
    assert_eq!(h.next_health(Duration::from_millis(300)).await, None);
    stop(shutdown, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_watcher_rebuilds_the_live_set_from_the_facts() {
    let mut h = Harness::new().await;
    let app = App::start().await;
    let dead_port = mentat_testkit::free_port();
    let dead = format!("127.0.0.1:{dead_port}");
    // History published before the watcher exists: one replica still live,
    // one that exited (and would fail every probe), one live but down.
    h.started("live", &app.addr, 2, 2).await;
    h.started("gone", &dead, 1, 1).await;
    h.exited("gone").await;
    h.started("down", &dead, 1, 2).await;

    let (shutdown, task) = h.watcher();
    let mut seen = Vec::new();
    for _ in 0..2 {
        match h.expect_health().await {
            Event::ReplicaHealthy { replica, .. } => seen.push(format!("healthy {replica}")),
            Event::ReplicaUnhealthy {
                replica, reason, ..
            } => {
                assert!(reason.contains("connection"), "{reason}");
                seen.push(format!("unhealthy {replica}"))
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    seen.sort();
    assert_eq!(seen, ["healthy live", "unhealthy down"]);
    assert_eq!(h.next_health(Duration::from_millis(300)).await, None);
    stop(shutdown, task).await;

    // Restarted, it reports the current verdicts again (its state is new).
    let (shutdown, task) = h.watcher();
    let mut again = 0;
    while h.next_health(Duration::from_secs(3)).await.is_some() {
        again += 1;
        if again == 2 {
            break;
        }
    }
    assert_eq!(again, 2);
    stop(shutdown, task).await;
}
