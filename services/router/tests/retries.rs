//! Retries: a backend that refuses connections is skipped without the
//! client noticing; a request addressed to it directly is not sent elsewhere.

mod common;

use common::*;
use hyper::{Method, StatusCode};
use mentat_domain::event::Backend as RouteBackend;
use mentat_testkit::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_backend_is_retried_on_the_other_one() {
    let nats = NatsServer::start();
    let bus = bus(&nats.url()).await;
    let good = Backend::start("good").await;
    let refusing = RouteBackend {
        replica: "dead".into(),
        addr: format!("127.0.0.1:{}", mentat_testkit::free_port()),
        image: "v1".into(),
        weight: 1,
    };
    publish_routes(&bus, "web", vec![refusing, good.route(1)]).await;
    let router = TestRouter::start(&nats.url()).await;
    let client = client();

    for i in 0..40 {
        let answer = get(&client, router.addr, "web.localhost", "/").await;
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (StatusCode::OK, "good"),
            "GET {i}"
        );
    }
    // Nothing reached the refusing backend, so even a POST is retried.
    for i in 0..4 {
        let answer = send(
            &client,
            router.addr,
            Method::POST,
            "web.localhost",
            "/echo",
            "hi",
        )
        .await;
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (StatusCode::OK, "good:hi"),
            "POST {i}"
        );
    }
    let answer = get(&client, router.addr, "dead.web.localhost", "/").await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
}

/// A backend that reads the request and closes the connection without answering.
async fn closing_backend() -> std::net::SocketAddr {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            drop(stream);
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_idempotent_requests_are_retried_after_the_backend_closed() {
    let nats = NatsServer::start();
    let bus = bus(&nats.url()).await;
    let good = Backend::start("good").await;
    let closing = RouteBackend {
        replica: "closing".into(),
        addr: closing_backend().await.to_string(),
        image: "v1".into(),
        weight: 1,
    };
    publish_routes(&bus, "web", vec![closing, good.route(1)]).await;
    let router = TestRouter::start(&nats.url()).await;
    let client = client();

    for i in 0..10 {
        let answer = get(&client, router.addr, "web.localhost", "/").await;
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (StatusCode::OK, "good"),
            "GET {i}"
        );
        let answer = send(
            &client,
            router.addr,
            Method::DELETE,
            "web.localhost",
            "/",
            "",
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "DELETE {i}");
    }
    let before = good.started.load(std::sync::atomic::Ordering::SeqCst);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let answer = send(
            &client,
            router.addr,
            Method::POST,
            "web.localhost",
            "/echo",
            "x",
        )
        .await;
        statuses.push(answer.status);
    }
    let reached_good = good.started.load(std::sync::atomic::Ordering::SeqCst) - before;
    let bad = statuses
        .iter()
        .filter(|s| **s == StatusCode::BAD_GATEWAY)
        .count();
    assert_eq!(
        bad, 2,
        "POSTs that reached the closing backend fail: {statuses:?}"
    );
    assert_eq!(reached_good, 2, "and are not sent to another backend");
}
