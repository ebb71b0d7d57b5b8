//! Routing: the table at start, weights, unknown hosts, empty tables,
//! direct addressing and forwarded headers. Real nats-server, in-process
//! backends and router.

mod common;

use common::*;
use hyper::header::RETRY_AFTER;
use hyper::StatusCode;
use mentat_testkit::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_started_after_the_route_change_routes_to_it() {
    let nats = NatsServer::start();
    let bus = bus(&nats.url()).await;
    let a = Backend::start("a").await;
    publish_routes(&bus, "web", vec![a.route(1)]).await;
    // A change of another service after it must not hide web's table.
    publish_routes(&bus, "api", vec![]).await;

    let router = TestRouter::start(&nats.url()).await;
    assert_eq!(router.services_at_start, ["api", "web"]);
    let client = client();
    // No waiting: bind returns once the current table is loaded.
    let answer = get(&client, router.addr, "web.localhost:8080", "/").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_one_to_three_split_traffic_a_quarter_to_three_quarters() {
    let nats = NatsServer::start();
    let bus = bus(&nats.url()).await;
    let router = TestRouter::start(&nats.url()).await;
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    publish_routes(&bus, "web", vec![a.route(1), b.route(3)]).await;
    let client = client();
    eventually("the table to reach the router", || async {
        get(&client, router.addr, "web.localhost", "/").await.status == StatusCode::OK
    })
    .await;

    let (mut to_a, mut to_b) = (0, 0);
    for _ in 0..2000 {
        let answer = get(&client, router.addr, "web.localhost", "/").await;
        assert_eq!(answer.status, StatusCode::OK);
        match answer.body.as_str() {
            "a" => to_a += 1,
            "b" => to_b += 1,
            other => panic!("unexpected body {other}"),
        }
    }
    let share_a = f64::from(to_a) / 2000.0;
    assert!(
        (0.20..=0.30).contains(&share_a),
        "a got {to_a}, b got {to_b}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_hosts_get_404_and_empty_tables_503_with_retry_after() {
    let nats = NatsServer::start();
    let bus = bus(&nats.url()).await;
    let a = Backend::start("a").await;
    publish_routes(&bus, "web", vec![]).await;
    publish_routes(&bus, "idle", vec![a.route(0)]).await;
    let router = TestRouter::start(&nats.url()).await;
    let client = client();

    let answer = get(&client, router.addr, "nope.localhost", "/").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.body, "no such service\n");
    let date = answer.headers.get("date").expect("a Date header");
    let date = httpdate::parse_http_date(date.to_str().expect("ascii")).expect("an HTTP date");
    let age = std::time::SystemTime::now()
        .duration_since(date)
        .unwrap_or_default();
    assert!(age < std::time::Duration::from_secs(60), "{age:?}");
    let answer = get(&client, router.addr, "example.com", "/").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);

    for service in ["web", "idle"] {
        let answer = get(&client, router.addr, &format!("{service}.localhost"), "/").await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{service}");
        assert_eq!(answer.headers[RETRY_AFTER], "1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_can_be_addressed_directly_whatever_its_weight() {
    let nats = NatsServer::start();
    let bus = bus(&nats.url()).await;
    let (a, b) = (Backend::start("web-a").await, Backend::start("web-b").await);
    publish_routes(&bus, "web", vec![a.route(1), b.route(0)]).await;
    let router = TestRouter::start(&nats.url()).await;
    let client = client();

    for _ in 0..5 {
        let answer = get(&client, router.addr, "web.localhost", "/").await;
        assert_eq!(answer.body, "web-a", "weight 0 gets no weighted traffic");
    }
    let answer = get(&client, router.addr, "web-b.web.localhost", "/").await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "web-b")
    );
    let answer = get(&client, router.addr, "web-a.web.localhost:8080", "/").await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "web-a")
    );
    let answer = get(&client, router.addr, "web-z.web.localhost", "/").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_added_and_hop_by_hop_ones_removed() {
    let nats = NatsServer::start();
    let bus = bus(&nats.url()).await;
    let a = Backend::start("a").await;
    publish_routes(&bus, "web", vec![a.route(1)]).await;
    let router = TestRouter::start(&nats.url()).await;

    let req = hyper::Request::builder()
        .uri(format!("http://{}/headers", router.addr))
        .header("host", "web.localhost")
        .header("connection", "x-secret")
        .header("x-secret", "1")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let resp = client().request(req).await.expect("answer");
    let rid = resp.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("body")
        .to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert_eq!(
        body,
        format!("xff=127.0.0.1 proto=http rid={rid} host=web.localhost secret=-")
    );
}
