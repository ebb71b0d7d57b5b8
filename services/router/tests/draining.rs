//! Draining and shutdown: a replica taken out of rotation finishes its
//! in-flight requests before ReplicaDrained is published, and a stopping
//! router finishes its in-flight requests.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use futures::StreamExt;
use hyper::StatusCode;
use mentat_domain::event::FactSource;
use mentat_domain::Event;
use mentat_testkit::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_replica_is_reported_drained_only_after_its_slow_request() {
    let nats = NatsServer::start();
    let bus = bus(&nats.url()).await;
    let mut facts = bus
        .client
        .subscribe(mentat_bus::subject::FACT_ALL)
        .await
        .expect("subscribe to facts");
    let (old, new) = (Backend::start("old").await, Backend::start("new").await);
    publish_routes(&bus, "web", vec![old.route(1)]).await;
    let router = TestRouter::start(&nats.url()).await;
    let client = client();

    let mut slow = {
        let (client, addr) = (client.clone(), router.addr);
        tokio::spawn(async move { get(&client, addr, "web.localhost", "/slow?ms=1500").await })
    };
    eventually("the slow request to reach the old replica", || async {
        old.started.load(Ordering::SeqCst) == 1
    })
    .await;

    publish_routes(&bus, "web", vec![new.route(1)]).await;
    eventually("new requests to go to the new replica", || async {
        get(&client, router.addr, "web.localhost", "/").await.body == "new"
    })
    .await;
    let seen = old.started.load(Ordering::SeqCst);
    for _ in 0..20 {
        assert_eq!(
            get(&client, router.addr, "web.localhost", "/").await.body,
            "new"
        );
    }
    assert_eq!(
        old.started.load(Ordering::SeqCst),
        seen,
        "no new request reached the old replica"
    );

    // The fact may only come once the old replica has answered the slow request.
    let mut drained = None;
    let answer = loop {
        tokio::select! {
            biased;
            answer = &mut slow => break answer.expect("slow request task"),
            msg = facts.next() => {
                assert_eq!(old.finished.load(Ordering::SeqCst), 1, "drained before its request finished");
                drained = msg;
            }
        }
    };
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "old")
    );
    let msg = match drained {
        Some(msg) => msg,
        None => tokio::time::timeout(Duration::from_secs(5), facts.next())
            .await
            .expect("ReplicaDrained arrives")
            .expect("subscription open"),
    };
    match fact(&msg).event {
        Event::ReplicaDrained {
            replica,
            service,
            router,
            timed_out,
        } => {
            assert_eq!((replica.as_str(), service.as_str()), ("old", "web"));
            assert_eq!(router, ROUTER_ID);
            assert!(!timed_out);
        }
        other => panic!("unexpected fact {other:?}"),
    }
    assert_eq!(
        msg.subject.as_str(),
        format!("mentat.fact.router.{ROUTER_ID}.web.ReplicaDrained")
    );

    // A replica with nothing in flight is reported at once; weight 0 counts as out.
    publish_routes(&bus, "web", vec![new.route(0)]).await;
    let msg = tokio::time::timeout(Duration::from_secs(5), facts.next())
        .await
        .expect("ReplicaDrained arrives")
        .expect("subscription open");
    assert!(
        matches!(fact(&msg).event, Event::ReplicaDrained { replica, timed_out: false, .. } if replica == "new")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_that_outlasts_the_timeout_is_reported_timed_out() {
    let nats = NatsServer::start();
    let bus = bus(&nats.url()).await;
    let mut facts = bus
        .client
        .subscribe(mentat_bus::subject::fact(
            FactSource::Router(ROUTER_ID),
            "web",
            "ReplicaDrained",
        ))
        .await
        .expect("subscribe to facts");
    let a = Backend::start("a").await;
    publish_routes(&bus, "web", vec![a.route(1)]).await;
    let router = TestRouter::start_with(mentat_router::Config {
        nats_url: nats.url(),
        // Longer than the second a drain gives tunnels to close, so that
        // waiting for that alone cannot pass for the drain timeout.
        drain_timeout_secs: 2,
        ..test_config()
    })
    .await;
    let client = client();
    let slow = {
        let (client, addr) = (client.clone(), router.addr);
        tokio::spawn(async move { get(&client, addr, "web.localhost", "/slow?ms=4000").await })
    };
    eventually("the slow request to start", || async {
        a.started.load(Ordering::SeqCst) == 1
    })
    .await;
    let removed_at = tokio::time::Instant::now();
    publish_routes(&bus, "web", vec![]).await;
    let msg = tokio::time::timeout(Duration::from_secs(5), facts.next())
        .await
        .expect("ReplicaDrained arrives")
        .expect("subscription open");
    let waited = removed_at.elapsed();
    assert!(matches!(
        fact(&msg).event,
        Event::ReplicaDrained {
            timed_out: true,
            ..
        }
    ));
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_millis(3900),
        "{waited:?}"
    );
    assert_eq!(
        a.finished.load(Ordering::SeqCst),
        0,
        "reported before the request ended"
    );
    // The request itself is not cut: it still completes.
    let answer = slow.await.expect("slow request task");
    assert_eq!((answer.status, answer.body.as_str()), (StatusCode::OK, "a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_requests_finish() {
    let nats = NatsServer::start();
    let bus = bus(&nats.url()).await;
    let a = Backend::start("a").await;
    publish_routes(&bus, "web", vec![a.route(1)]).await;
    let router = TestRouter::start(&nats.url()).await;
    let client = client();

    let slow = {
        let (client, addr) = (client.clone(), router.addr);
        tokio::spawn(async move { get(&client, addr, "web.localhost", "/slow?ms=800").await })
    };
    eventually("the slow request to start", || async {
        a.started.load(Ordering::SeqCst) == 1
    })
    .await;
    router.shutdown.cancel();
    let answer = slow.await.expect("slow request task");
    assert_eq!((answer.status, answer.body.as_str()), (StatusCode::OK, "a"));
    let mut router = router;
    tokio::time::timeout(Duration::from_secs(5), &mut router.task)
        .await
        .expect("router stops within the grace")
        .expect("router task");
    assert!(
        tokio::net::TcpStream::connect(router.addr).await.is_err(),
        "a stopped router accepts nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lived_connections_to_a_drained_replica_close_at_the_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let nats = NatsServer::start();
    let bus = bus(&nats.url()).await;
    let mut facts = bus
        .client
        .subscribe(mentat_bus::subject::fact(
            FactSource::Router(ROUTER_ID),
            "web",
            "ReplicaDrained",
        ))
        .await
        .expect("subscribe to facts");
    let (old, new) = (Backend::start("old").await, Backend::start("new").await);
    publish_routes(&bus, "web", vec![old.route(1)]).await;
    let router = TestRouter::start_with(mentat_router::Config {
        nats_url: nats.url(),
        drain_timeout_secs: 1,
        ..test_config()
    })
    .await;
    let client = client();
    let mut ws = upgrade(router.addr, "web.localhost").await;
    ws.write_all(b"ping").await.expect("send");
    let mut back = [0u8; 4];
    ws.read_exact(&mut back).await.expect("echo");
    // A keep-alive connection from the router to `old` stays in its pool.
    assert_eq!(
        get(&client, router.addr, "web.localhost", "/").await.body,
        "old"
    );
    assert_eq!(old.tunnels.load(Ordering::SeqCst), 1);
    assert_eq!(
        old.connections.load(Ordering::SeqCst),
        1,
        "one pooled connection"
    );

    let removed_at = tokio::time::Instant::now();
    publish_routes(&bus, "web", vec![new.route(1)]).await;
    // The tunnel still works during the drain.
    ws.write_all(b"pong").await.expect("send");
    ws.read_exact(&mut back)
        .await
        .expect("echo during the drain");
    assert_eq!(&back, b"pong");
    // At the timeout the router closes it: the client reads EOF.
    let mut rest = Vec::new();
    let eof = tokio::time::timeout(Duration::from_secs(5), ws.read_to_end(&mut rest)).await;
    assert!(matches!(eof, Ok(Ok(0))), "{eof:?}");
    let closed_after = removed_at.elapsed();
    assert!(
        closed_after >= Duration::from_millis(900),
        "{closed_after:?}"
    );
    let msg = tokio::time::timeout(Duration::from_secs(5), facts.next())
        .await
        .expect("ReplicaDrained arrives")
        .expect("subscription open");
    assert!(matches!(
        fact(&msg).event,
        Event::ReplicaDrained {
            timed_out: true,
            ..
        }
    ));
    eventually(
        "every connection to the drained replica to close",
        || async {
            old.connections.load(Ordering::SeqCst) == 0 && old.tunnels.load(Ordering::SeqCst) == 0
        },
    )
    .await;
    assert_eq!(
        get(&client, router.addr, "web.localhost", "/").await.body,
        "new"
    );
}

/// Open an upgraded connection through the router; returns the stream
/// after the 101 head.
async fn upgrade(router: std::net::SocketAddr, host: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(router)
        .await
        .expect("connect");
    let head = format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).await.expect("read head"), 1);
        seen.push(byte[0]);
    }
    assert!(seen.starts_with(b"HTTP/1.1 101"));
    stream
}
