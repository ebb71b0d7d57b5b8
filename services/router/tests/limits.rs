//! Limits: request head size (431), body size (413), the header timeout
//! against slowloris, the idle timeout of keep-alive connections (which
//! never cuts a slow request), the per-backend connection cap, and the
//! refusal to act as a forward proxy.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use hyper::{Method, StatusCode};
use mentat_testkit::NatsServer;

async fn router_with(
    nats: &NatsServer,
    tweak: impl FnOnce(&mut mentat_router::Config),
) -> TestRouter {
    let mut config = mentat_router::Config {
        nats_url: nats.url(),
        ..test_config()
    };
    tweak(&mut config);
    TestRouter::start_with(config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_get_431_and_oversized_bodies_413() {
    let nats = NatsServer::start();
    let bus = bus(&nats.url()).await;
    let a = Backend::start("a").await;
    publish_routes(&bus, "web", vec![a.route(1)]).await;
    let router = router_with(&nats, |c| {
        // Not a power of two: the read buffer's capacity steps past it.
        c.max_header_bytes = 10_000;
        c.max_body_bytes = 1000;
    })
    .await;

    let big = "x".repeat(20_000);
    let head = format!("GET / HTTP/1.1\r\nHost: web.localhost\r\nX-Big: {big}\r\n\r\n");
    let answer = raw(router.addr, head.as_bytes(), Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // Just past the limit, and whole in one write.
    for over in [1, 300] {
        let big = "x".repeat(10_000 - 48 + over);
        let head = format!("GET / HTTP/1.1\r\nHost: web.localhost\r\nX-Big: {big}\r\n\r\n");
        assert_eq!(head.len(), 10_000 + over);
        let answer = raw(router.addr, head.as_bytes(), Duration::from_secs(3)).await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{over} over: {answer}");
    }
    let fits = format!(
        "GET / HTTP/1.1\r\nHost: web.localhost\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
        "x".repeat(9_900)
    );
    let answer = raw(router.addr, fits.as_bytes(), Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let client = client();
    let reached = a.started.load(Ordering::SeqCst);
    let answer = send(
        &client,
        router.addr,
        Method::POST,
        "web.localhost",
        "/echo",
        &"y".repeat(1001),
    )
    .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Refused on its Content-Length: the backend never saw it.
    assert_eq!(a.started.load(Ordering::SeqCst), reached);
    let answer = send(
        &client,
        router.addr,
        Method::POST,
        "web.localhost",
        "/echo",
        &"y".repeat(1000),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);

    // Chunked: no length announced, cut once past the limit.
    let chunk = "z".repeat(600);
    let chunked = format!(
        "POST /echo HTTP/1.1\r\nHost: web.localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"
    );
    let answer = raw(router.addr, chunked.as_bytes(), Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_too_slow_with_its_headers_is_disconnected() {
    let nats = NatsServer::start();
    let bus = bus(&nats.url()).await;
    let a = Backend::start("a").await;
    publish_routes(&bus, "web", vec![a.route(1)]).await;
    let router = router_with(&nats, |c| c.header_timeout_secs = 1).await;

    let started = Instant::now();
    let answer = raw(
        router.addr,
        b"GET / HTTP/1.1\r\nHost: web.localhost\r\n",
        Duration::from_secs(5),
    )
    .await;
    let waited = started.elapsed();
    assert!(!answer.contains("200 OK"), "{answer}");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    assert_eq!(a.started.load(Ordering::SeqCst), 0);

    // A client that trickles its head, a byte every 200 ms, is cut all the
    // same: the timeout runs from the head's first byte, not between reads.
    let started = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(router.addr)
        .await
        .expect("connect");
    let head = b"GET / HTTP/1.1\r\nHost: web.localhost\r\nX-Slow: ";
    let mut cut = None;
    for byte in head.iter().chain(std::iter::repeat(&b'x')).take(50) {
        if tokio::io::AsyncWriteExt::write_all(&mut stream, &[*byte])
            .await
            .is_err()
        {
            cut = Some(started.elapsed());
            break;
        }
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::io::AsyncReadExt::read(&mut stream, &mut buf),
        )
        .await;
        if let Ok(Ok(0) | Err(_)) = read {
            cut = Some(started.elapsed());
            break;
        }
    }
    let cut = cut.expect("a trickling client was never cut off");
    assert!(cut < Duration::from_secs(3), "cut only after {cut:?}");
    assert_eq!(a.started.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_close_but_slow_requests_do_not() {
    let nats = NatsServer::start();
    let bus = bus(&nats.url()).await;
    let a = Backend::start("a").await;
    publish_routes(&bus, "web", vec![a.route(1)]).await;
    let router = router_with(&nats, |c| c.idle_timeout_secs = 1).await;

    let started = Instant::now();
    let answer = raw(
        router.addr,
        b"GET /slow?ms=1500 HTTP/1.1\r\nHost: web.localhost\r\n\r\n",
        Duration::from_secs(6),
    )
    .await;
    let waited = started.elapsed();
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "the slow request is not cut: {answer}"
    );
    assert!(answer.ends_with('a'), "{answer}");
    // 1.5 s of request, then 1 s idle before the router closes.
    assert!(
        waited >= Duration::from_millis(2400) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_to_one_backend_are_capped() {
    let nats = NatsServer::start();
    let bus = bus(&nats.url()).await;
    let a = Backend::start("a").await;
    publish_routes(&bus, "web", vec![a.route(1)]).await;
    let router = router_with(&nats, |c| c.max_backend_connections = 2).await;

    let client = client();
    let requests: Vec<_> = (0..6)
        .map(|_| {
            let (client, addr) = (client.clone(), router.addr);
            tokio::spawn(async move { get(&client, addr, "web.localhost", "/slow?ms=300").await })
        })
        .collect();
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    while a.finished.load(Ordering::SeqCst) < 6 && Instant::now() < deadline {
        most = most.max(a.connections.load(Ordering::SeqCst));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for r in requests {
        assert_eq!(r.await.expect("request task").status, StatusCode::OK);
    }
    assert_eq!(a.finished.load(Ordering::SeqCst), 6);
    assert!(most <= 2, "{most} connections to one backend");
    println!("most connections to the backend at once: {most}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_is_not_an_open_proxy() {
    let nats = NatsServer::start();
    let bus = bus(&nats.url()).await;
    let a = Backend::start("a").await;
    publish_routes(&bus, "web", vec![a.route(1)]).await;
    let router = router_with(&nats, |_| {}).await;

    let wait = Duration::from_secs(3);
    let other = raw(
        router.addr,
        b"GET http://example.com/ HTTP/1.1\r\nHost: web.localhost\r\nConnection: close\r\n\r\n",
        wait,
    )
    .await;
    assert!(other.starts_with("HTTP/1.1 400"), "{other}");
    let connect = raw(
        router.addr,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nConnection: close\r\n\r\n",
        wait,
    )
    .await;
    assert!(connect.starts_with("HTTP/1.1 405"), "{connect}");
    let unknown = raw(
        router.addr,
        b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
        wait,
    )
    .await;
    assert!(unknown.starts_with("HTTP/1.1 404"), "{unknown}");
    assert_eq!(a.started.load(Ordering::SeqCst), 0, "nothing was forwarded");
    // The absolute form of a routed name is served.
    let same = raw(
        router.addr,
        b"GET http://web.localhost/ HTTP/1.1\r\nHost: web.localhost\r\nConnection: close\r\n\r\n",
        wait,
    )
    .await;
    assert!(same.starts_with("HTTP/1.1 200"), "{same}");
}
