//! Zero downtime at the router: keep-alive load of at least 2,000 req/s
//! while the table changes under it (a canary added, weights moved,
//! backends replaced, a backend drained while slow requests are in flight),
//! and each replaced backend stopped as soon as its ReplicaDrained fact
//! arrives, as the planner does. Every request must get 200.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use hyper::StatusCode;
use mentat_domain::event::FactSource;
use mentat_domain::Event;
use mentat_testkit::NatsServer;

/// Concurrent keep-alive clients.
const CLIENTS: usize = 24;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_fails_while_the_table_changes_under_load() {
    let nats = NatsServer::start();
    let bus = bus(&nats.url()).await;
    let mut backends = HashMap::new();
    for (name, image) in [
        ("a", "v1"),
        ("b", "v1"),
        ("c", "v2"),
        ("d", "v2"),
        ("e", "v2"),
        ("f", "v3"),
    ] {
        backends.insert(name, Backend::start_image(name, image).await);
    }
    let route = |b: &HashMap<&str, Backend>, name: &str, w: u32| b[name].route(w);
    publish_routes(
        &bus,
        "web",
        vec![route(&backends, "a", 50), route(&backends, "b", 50)],
    )
    .await;
    let router = TestRouter::start_with(mentat_router::Config {
        nats_url: nats.url(),
        drain_timeout_secs: 5,
        ..test_config()
    })
    .await;
    let steps: Vec<Vec<_>> = vec![
        vec![
            route(&backends, "a", 45),
            route(&backends, "b", 45),
            route(&backends, "c", 10),
        ],
        vec![
            route(&backends, "a", 30),
            route(&backends, "b", 30),
            route(&backends, "c", 40),
        ],
        vec![
            route(&backends, "c", 40),
            route(&backends, "d", 30),
            route(&backends, "e", 30),
        ],
        vec![
            route(&backends, "c", 0),
            route(&backends, "d", 50),
            route(&backends, "e", 50),
        ],
        vec![route(&backends, "e", 50), route(&backends, "f", 50)],
    ];
    let backends = Arc::new(Mutex::new(backends));

    // Stop a backend as soon as the router reports it drained.
    let mut facts = bus
        .client
        .subscribe(mentat_bus::subject::fact(
            FactSource::Router(ROUTER_ID),
            "web",
            "ReplicaDrained",
        ))
        .await
        .expect("subscribe");
    let stopped = Arc::new(Mutex::new(Vec::new()));
    let stopper = {
        let (backends, stopped) = (backends.clone(), stopped.clone());
        tokio::spawn(async move {
            while let Some(msg) = facts.next().await {
                if let Event::ReplicaDrained { replica, .. } = fact(&msg).event {
                    if let Some(b) = backends.lock().expect("lock").remove(replica.as_str()) {
                        drop(b);
                        stopped.lock().expect("lock").push(replica);
                    }
                }
            }
        })
    };

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, slow_ok) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let mut load = Vec::new();
    for i in 0..CLIENTS {
        let (stop, ok, slow_ok, failures) =
            (stop.clone(), ok.clone(), slow_ok.clone(), failures.clone());
        let addr = router.addr;
        load.push(tokio::spawn(async move {
            let client = client();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                // One client in eight sends a slow request now and then, so
                // that drains find requests in flight.
                let slow = i.is_multiple_of(8) && n.is_multiple_of(20);
                let path = if slow { "/slow?ms=700" } else { "/" };
                let answer = get(&client, addr, "web.localhost", path).await;
                if answer.status == StatusCode::OK {
                    if slow { &slow_ok } else { &ok }.fetch_add(1, Ordering::Relaxed);
                } else {
                    failures
                        .lock()
                        .expect("lock")
                        .push((answer.status, answer.body));
                }
            }
        }));
    }

    let started = Instant::now();
    for step in steps {
        tokio::time::sleep(Duration::from_millis(800)).await;
        publish_routes(&bus, "web", step).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("load task");
    }
    let elapsed = started.elapsed();
    stopper.abort();
    let mut stopped = stopped.lock().expect("lock").clone();
    stopped.sort();

    let (ok, slow_ok) = (ok.load(Ordering::Relaxed), slow_ok.load(Ordering::Relaxed));
    let failures = failures.lock().expect("lock").clone();
    let rate = (ok + slow_ok) as f64 / elapsed.as_secs_f64();
    println!(
        "{ok} fast + {slow_ok} slow requests answered 200 in {elapsed:.2?} ({rate:.0} req/s over {CLIENTS} keep-alive clients); {} failed; backends stopped after ReplicaDrained: {stopped:?}",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "failed requests: {:?}",
        &failures[..failures.len().min(10)]
    );
    assert!(
        slow_ok >= 10,
        "slow requests were in flight across the changes"
    );
    for replica in ["a", "b", "c", "d"] {
        assert!(
            stopped.iter().any(|s| s == replica),
            "{replica} drained and stopped: {stopped:?}"
        );
    }
    assert!(rate >= 2000.0, "load held at {rate:.0} req/s, below 2,000");
}
