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

    // POSTs first, before a refused connection has taken the dead backend
    // out of the choice: one of the two is sent to it, refused, and retried.
    for i in 0..2 {
        let answer = post_echo(&client, router.addr, "first").await;
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (StatusCode::OK, "good:first"),
            "first POST {i}"
        );
    }
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
        let answer = post_echo(&client, router.addr, "hi").await;
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
    // With a body and without one (nothing to replay is no reason to retry).
    for body in ["x", ""] {
        let before = good.started.load(std::sync::atomic::Ordering::SeqCst);
        let mut statuses = Vec::new();
        for _ in 0..4 {
            let answer = post_echo(&client, router.addr, body).await;
            statuses.push(answer.status);
        }
        let reached_good = good.started.load(std::sync::atomic::Ordering::SeqCst) - before;
        let bad = statuses
            .iter()
            .filter(|s| **s == StatusCode::BAD_GATEWAY)
            .count();
        assert_eq!(
            bad, 2,
            "POSTs ({body:?}) that reached the closing backend fail: {statuses:?}"
        );
        assert_eq!(
            reached_good, 2,
            "and are not sent to another backend ({body:?})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_requests_answered_503_are_retried_once_elsewhere() {
    let nats = NatsServer::start();
    let bus = bus(&nats.url()).await;
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    publish_routes(&bus, "web", vec![a.route(1), b.route(1)]).await;
    let router = TestRouter::start(&nats.url()).await;
    let client = client();

    // Each backend answers /status?code=N with N. An idempotent request
    // answered 502 or 503 is retried once, on the other backend, whose answer
    // is passed on; a POST or PATCH never is once it reached a backend, with
    // a body or without; and 500 is an answer, not a reason to retry.
    let cases = [
        (Method::GET, 503, "", 2),
        (Method::PUT, 503, "", 2),
        (Method::DELETE, 502, "", 2),
        (Method::POST, 502, "x", 1),
        (Method::POST, 502, "", 1),
        (Method::POST, 503, "", 1),
        (Method::PATCH, 503, "", 1),
        (Method::GET, 500, "", 1),
    ];
    let sent = || {
        a.started.load(std::sync::atomic::Ordering::SeqCst)
            + b.started.load(std::sync::atomic::Ordering::SeqCst)
    };
    for (method, code, body, sends) in cases {
        let before = sent();
        let path = format!("/status?code={code}");
        let answer = send(
            &client,
            router.addr,
            method.clone(),
            "web.localhost",
            &path,
            body,
        )
        .await;
        assert_eq!(answer.status.as_u16(), code, "{method} {path}");
        assert_eq!(
            sent() - before,
            sends,
            "{method} {path} {body:?}: sent {sends} time(s)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_from_one_backend_is_hidden_by_the_other() {
    let nats = NatsServer::start();
    let bus = bus(&nats.url()).await;
    let good = Backend::start("good").await;
    // A backend that answers every request 503 (overloaded).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let busy_addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy",
                        )
                        .await;
                }
            });
        }
    });
    let busy = RouteBackend {
        replica: "busy".into(),
        addr: busy_addr.to_string(),
        image: "v1".into(),
        weight: 1,
    };
    publish_routes(&bus, "web", vec![busy, good.route(1)]).await;
    let router = TestRouter::start(&nats.url()).await;
    let client = client();
    for i in 0..20 {
        let answer = get(&client, router.addr, "web.localhost", "/").await;
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (StatusCode::OK, "good"),
            "GET {i}"
        );
    }
    let mut posts = Vec::new();
    for _ in 0..4 {
        posts.push(post_echo(&client, router.addr, "p").await.status);
    }
    let unavailable = posts
        .iter()
        .filter(|s| **s == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    assert_eq!(
        unavailable, 2,
        "POSTs that reached the busy backend get its 503: {posts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_no_backend_can_be_reached_the_answer_is_503_with_retry_after() {
    let nats = NatsServer::start();
    let bus = bus(&nats.url()).await;
    let dead = |name: &str| RouteBackend {
        replica: name.into(),
        addr: format!("127.0.0.1:{}", mentat_testkit::free_port()),
        image: "v1".into(),
        weight: 1,
    };
    publish_routes(&bus, "web", vec![dead("d1"), dead("d2")]).await;
    let router = TestRouter::start(&nats.url()).await;
    let client = client();
    for method in [Method::GET, Method::POST] {
        let answer = send(&client, router.addr, method, "web.localhost", "/", "").await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer.headers[hyper::header::RETRY_AFTER], "1");
    }
}
