//! Forwarding fields a client cannot forge or strip: from a client that is
//! not in `--trusted-proxies`, `X-Forwarded-For`, `-Proto`, `-Host` and
//! `X-Request-Id` are the router's own; from a trusted proxy the chain is
//! extended and the others kept; a `Connection` field cannot name away
//! Host or any field the router sets. The raw recording backend shows the
//! head exactly as forwarded.

mod common;

use std::time::Duration;

use common::*;
use mentat_testkit::NatsServer;

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
const WAIT: Duration = Duration::from_secs(3);

/// A router whose service `web` is a recording backend, trusting `trusted`.
async fn web(trusted: &str) -> (NatsServer, Recorder, TestRouter) {
    let nats = NatsServer::start();
    let bus = bus(&nats.url()).await;
    let backend = Recorder::start(OK).await;
    route_web_to(&bus, backend.addr).await;
    let router = TestRouter::start_with(mentat_router::Config {
        nats_url: nats.url(),
        trusted_proxies: trusted.into(),
        ..test_config()
    })
    .await;
    (nats, backend, router)
}

/// Send a GET of `web` with `fields` (whole `name: value` lines); the
/// answer, and the request as the backend got it.
async fn forward(router: &TestRouter, backend: &Recorder, fields: &str) -> (String, Received) {
    let request =
        format!("GET /f HTTP/1.1\r\nHost: web.localhost\r\nConnection: close\r\n{fields}\r\n");
    let answer = raw(router.addr, request.as_bytes(), WAIT).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    (answer, backend.only_request())
}

/// The `x-request-id` the client got.
fn answered_id(answer: &str) -> &str {
    answer
        .split("\r\n")
        .find_map(|line| line.strip_prefix("x-request-id: "))
        .expect("an x-request-id in the answer")
}

const FORGED: &str = "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n\
                      X-Forwarded-Host: evil.example\r\nX-Request-Id: forged\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_an_untrusted_client_forwarding_fields_and_the_request_id_are_replaced() {
    // 10.0.0.0/8 is trusted; the test client, 127.0.0.1, is not.
    let (_nats, backend, router) = web("10.0.0.0/8").await;
    let (answer, got) = forward(&router, &backend, FORGED).await;
    assert_eq!(got.one("x-forwarded-for"), "127.0.0.1");
    assert_eq!(got.one("x-forwarded-proto"), "http");
    assert_eq!(got.one("x-forwarded-host"), "web.localhost");
    let id = got.one("x-request-id");
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "the router's own id, not the client's: {id}"
    );
    assert_eq!(
        answered_id(&answer),
        id,
        "the client learns the id the backend saw"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_a_trusted_proxy_the_chain_is_extended_and_the_others_kept() {
    let (_nats, backend, router) = web("10.0.0.0/8, 127.0.0.1/32").await;
    let (answer, got) = forward(&router, &backend, FORGED).await;
    assert_eq!(got.one("x-forwarded-for"), "6.6.6.6, 127.0.0.1");
    assert_eq!(got.one("x-forwarded-proto"), "https");
    assert_eq!(got.one("x-forwarded-host"), "evil.example");
    assert_eq!(got.one("x-request-id"), "forged");
    assert_eq!(answered_id(&answer), "forged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cannot_remove_host() {
    let (_nats, backend, router) = web("").await;
    let (_, got) = forward(&router, &backend, "Connection: Host\r\n").await;
    assert_eq!(got.one("host"), "web.localhost");
    assert!(got.all("connection").is_empty(), "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cannot_remove_the_forwarding_chain_or_the_routers_fields() {
    let fields = "Connection: close, X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host, \
                  X-Request-Id\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n";
    // From an untrusted client the router's own values are set regardless.
    let (_nats, backend, router) = web("").await;
    let (_, got) = forward(&router, &backend, fields).await;
    assert_eq!(got.one("x-forwarded-for"), "127.0.0.1");
    assert_eq!(got.one("x-forwarded-proto"), "http");
    assert_eq!(got.one("x-forwarded-host"), "web.localhost");
    assert_eq!(got.one("x-request-id").len(), 32);

    // From a trusted proxy the chain and its fields are kept all the same.
    let (_nats, backend, router) = web("127.0.0.1").await;
    let (_, got) = forward(&router, &backend, fields).await;
    assert_eq!(got.one("x-forwarded-for"), "6.6.6.6, 127.0.0.1");
    assert_eq!(got.one("x-forwarded-proto"), "https");
    assert_eq!(got.one("x-forwarded-host"), "web.localhost");
    assert_eq!(got.one("x-request-id").len(), 32);
}

/// RFC 9110 §7.6.1: a proxy removes the fields `Connection` names.
/// Authorization and Cookie are end-to-end fields the router does not set,
/// so a client may name them away; only the router's own are protected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_may_remove_authorization_and_cookie_which_the_router_does_not_set() {
    let (_nats, backend, router) = web("").await;
    let (_, got) = forward(
        &router,
        &backend,
        "Connection: Authorization, Cookie\r\nAuthorization: Basic eDp5\r\nCookie: a=1\r\n\
         X-Kept: 1\r\n",
    )
    .await;
    assert!(got.all("authorization").is_empty(), "{got:?}");
    assert!(got.all("cookie").is_empty(), "{got:?}");
    assert_eq!(got.one("x-kept"), "1");
    assert_eq!(got.one("host"), "web.localhost");
}
