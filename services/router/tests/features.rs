//! Routing features: environments and host names from the route block,
//! sticky sessions by cookie or header, and upgraded (WebSocket)
//! connections passed through.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use hyper::StatusCode;
use mentat_domain::spec::{RouteSpec, Sticky};
use mentat_testkit::NatsServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_header_and_host_name_choose_the_table() {
    let nats = NatsServer::start();
    let bus = bus(&nats.url()).await;
    let (prod, staging) = (
        Backend::start("prod").await,
        Backend::start("staging").await,
    );
    publish_routes(&bus, "web", vec![prod.route(1)]).await;
    let route = RouteSpec {
        environment: "staging".into(),
        host: "shop".into(),
        sticky: None,
    };
    publish_route(&bus, "web-staging", vec![staging.route(1)], route).await;
    let router = TestRouter::start(&nats.url()).await;
    let client = client();

    let answer = get(&client, router.addr, "web.localhost", "/").await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "prod")
    );
    let answer = get_with(
        &client,
        router.addr,
        "shop.localhost",
        "/",
        &[("x-environment", "Staging")],
    )
    .await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "staging")
    );
    let answer = get_with(
        &client,
        router.addr,
        "staging.shop.localhost",
        "/",
        &[("x-environment", "staging")],
    )
    .await;
    assert_eq!(
        answer.body, "staging",
        "direct addressing within the environment"
    );
    // Not in production, and production's web is not in staging.
    let answer = get(&client, router.addr, "shop.localhost", "/").await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::NOT_FOUND, "no such service\n")
    );
    let answer = get_with(
        &client,
        router.addr,
        "web.localhost",
        "/",
        &[("x-environment", "staging")],
    )
    .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_keys_stay_on_their_version_and_follow_the_weights() {
    let nats = NatsServer::start();
    let bus = bus(&nats.url()).await;
    let stable = [
        Backend::start_image("s1", "v1").await,
        Backend::start_image("s2", "v1").await,
    ];
    let canary = Backend::start_image("c1", "v2").await;
    let route = |sticky| RouteSpec {
        sticky: Some(sticky),
        ..RouteSpec::default()
    };
    let backends = |canary_weight: u32| {
        vec![
            stable[0].route((100 - canary_weight) / 2),
            stable[1].route((100 - canary_weight) / 2),
            canary.route(canary_weight),
        ]
    };
    publish_route(
        &bus,
        "web",
        backends(20),
        route(Sticky::Cookie("session".into())),
    )
    .await;
    let router = TestRouter::start(&nats.url()).await;
    let client = client();

    let mut first: HashMap<usize, String> = HashMap::new();
    for i in 0..300 {
        let cookie = format!("theme=dark; session=user-{i}");
        let a = get_with(
            &client,
            router.addr,
            "web.localhost",
            "/",
            &[("cookie", &cookie)],
        )
        .await;
        let b = get_with(
            &client,
            router.addr,
            "web.localhost",
            "/",
            &[("cookie", &cookie)],
        )
        .await;
        assert_eq!(a.body, b.body, "key {i} moved while the weights held");
        first.insert(i, a.body);
    }
    let on_canary = first.values().filter(|b| *b == "c1").count();
    assert!(
        (30..=95).contains(&on_canary),
        "{on_canary} of 300 keys on a 20% canary"
    );

    // The canary grows: keys only move toward it.
    publish_route(
        &bus,
        "web",
        backends(50),
        route(Sticky::Cookie("session".into())),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut now_on_canary = 0;
    for (i, before) in &first {
        let cookie = format!("session=user-{i}");
        let now = get_with(
            &client,
            router.addr,
            "web.localhost",
            "/",
            &[("cookie", &cookie)],
        )
        .await
        .body;
        if before == "c1" {
            assert_eq!(now, "c1", "key {i} left the canary as it grew");
        }
        now_on_canary += usize::from(now == "c1");
    }
    assert!(now_on_canary > on_canary, "{on_canary} -> {now_on_canary}");

    // Requests without the key are spread by weight.
    let mut spread = HashMap::<String, usize>::new();
    for _ in 0..100 {
        *spread
            .entry(get(&client, router.addr, "web.localhost", "/").await.body)
            .or_default() += 1;
    }
    assert_eq!(spread.get("c1"), Some(&50), "{spread:?}");

    // A header key works the same way.
    publish_route(
        &bus,
        "web",
        backends(50),
        route(Sticky::Header("x-user".into())),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..50 {
        let user = format!("u{i}");
        let a = get_with(
            &client,
            router.addr,
            "web.localhost",
            "/",
            &[("x-user", &user)],
        )
        .await;
        let b = get_with(
            &client,
            router.addr,
            "web.localhost",
            "/",
            &[("x-user", &user)],
        )
        .await;
        assert_eq!(a.body, b.body);
    }
}

/// Open an upgraded connection through the router; returns the stream
/// after the 101 head.
pub async fn upgrade(router: std::net::SocketAddr, host: &str) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(router)
        .await
        .expect("connect");
    let head = format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).await.expect("read head");
        assert_eq!(
            n,
            1,
            "closed during the handshake: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&seen).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_pass_through_both_ways() {
    let nats = NatsServer::start();
    let bus = bus(&nats.url()).await;
    let a = Backend::start("a").await;
    publish_routes(&bus, "web", vec![a.route(1)]).await;
    let router = TestRouter::start(&nats.url()).await;

    let mut ws = upgrade(router.addr, "web.localhost").await;
    for msg in [&b"hello"[..], b"\x81\x05frame", &[0u8; 3000]] {
        ws.write_all(msg).await.expect("send");
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), ws.read_exact(&mut back))
            .await
            .expect("echo in time")
            .expect("echo");
        assert_eq!(back, msg);
    }
    ws.shutdown().await.expect("close");
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), ws.read_to_end(&mut rest)).await;
    assert!(
        matches!(n, Ok(Ok(0))),
        "the backend's close reaches the client"
    );
}
