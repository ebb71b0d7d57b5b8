//! The router's HTTP/1.1 server side on the wire: `Expect: 100-continue`,
//! pipelined requests, HTTP/1.0 clients, the framing of answers whose
//! length is unknown, request bodies the router answered without reading
//! (dropped when short, the connection closed when long),
//! bytes sent right after an upgrade request, heads it refuses, and the
//! backend's header fields as the client gets them.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use mentat_testkit::NatsServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(3);
/// A GET of `web` that asks the router to close after the answer.
const GET_AND_CLOSE: &[u8] = b"GET / HTTP/1.1\r\nHost: web.localhost\r\nConnection: close\r\n\r\n";

/// A router whose service `web` is one backend, `a`.
async fn web() -> (NatsServer, Backend, TestRouter) {
    let nats = NatsServer::start();
    let bus = bus(&nats.url()).await;
    let a = Backend::start("a").await;
    publish_routes(&bus, "web", vec![a.route(1)]).await;
    let router = TestRouter::start(&nats.url()).await;
    (nats, a, router)
}

/// Read from `stream` until `text` has arrived (or fail after [`WAIT`]).
async fn read_until(stream: &mut TcpStream, seen: &mut Vec<u8>, text: &str) {
    let found = tokio::time::timeout(WAIT, async {
        while !String::from_utf8_lossy(seen).contains(text) {
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).await.expect("read");
            assert!(
                n > 0,
                "closed before {text:?}: {}",
                String::from_utf8_lossy(seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(
        found.is_ok(),
        "{text:?} not received: {}",
        String::from_utf8_lossy(seen)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_is_answered_once_a_backend_reads_the_body() {
    let (_nats, _a, router) = web().await;

    let mut stream = TcpStream::connect(router.addr).await.expect("connect");
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: web.localhost\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await
        .expect("write head");
    let mut seen = Vec::new();
    read_until(&mut stream, &mut seen, "HTTP/1.1 100 Continue\r\n\r\n").await;
    stream.write_all(b"hello").await.expect("write body");
    read_until(&mut stream, &mut seen, "a:hello").await;
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.contains("HTTP/1.1 200 OK\r\n"), "{seen}");

    // Refused before the body is asked for: no 100, and the connection closes.
    let answer = raw(
        router.addr,
        b"POST /echo HTTP/1.1\r\nHost: nope.localhost\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        WAIT,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_and_http_1_0_clients_are_served_in_order() {
    let (_nats, _a, router) = web().await;

    let answer = raw(
        router.addr,
        b"GET /status?code=201 HTTP/1.1\r\nHost: web.localhost\r\n\r\n\
          POST /echo HTTP/1.1\r\nHost: web.localhost\r\nContent-Length: 2\r\n\r\nhi\
          GET /status?code=202 HTTP/1.1\r\nHost: web.localhost\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    let created = answer.find("HTTP/1.1 201").expect("first answer");
    let echoed = answer.find("a:hi").expect("second answer");
    let accepted = answer.find("HTTP/1.1 202").expect("third answer");
    assert!(created < echoed && echoed < accepted, "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");

    // HTTP/1.0: closed after the answer unless the client asks otherwise.
    let started = std::time::Instant::now();
    let answer = raw(
        router.addr,
        b"GET / HTTP/1.0\r\nHost: web.localhost\r\n\r\n",
        WAIT,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("\r\n\r\na"), "{answer}");
    assert!(started.elapsed() < WAIT, "the router closed the connection");
    let mut stream = TcpStream::connect(router.addr).await.expect("connect");
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: web.localhost\r\nConnection: keep-alive\r\n\r\n")
        .await
        .expect("write");
    let mut seen = Vec::new();
    read_until(&mut stream, &mut seen, "connection: keep-alive\r\n").await;
    stream
        .write_all(b"GET /status?code=203 HTTP/1.0\r\nHost: web.localhost\r\n\r\n")
        .await
        .expect("second request on the same connection");
    read_until(&mut stream, &mut seen, "HTTP/1.1 203").await;
}

/// A backend that answers every request with `answer` and keeps the connection.
async fn backend_answering(answer: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                loop {
                    let mut buf = [0u8; 1024];
                    let Ok(n) = stream.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                    if head.windows(4).any(|w| w == b"\r\n\r\n") {
                        head.clear();
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// A router whose service `web` is the backend at `addr`.
async fn router_to(addr: SocketAddr) -> (NatsServer, TestRouter) {
    let nats = NatsServer::start();
    let bus = bus(&nats.url()).await;
    let route = mentat_domain::event::Backend {
        replica: "c".into(),
        addr: addr.to_string(),
        image: "v1".into(),
        weight: 1,
    };
    publish_routes(&bus, "web", vec![route]).await;
    let router = TestRouter::start(&nats.url()).await;
    (nats, router)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_of_unknown_length_is_chunked_or_runs_to_the_close_for_http_1_0() {
    let backend = backend_answering(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n",
    )
    .await;
    let (_nats, router) = router_to(backend).await;

    let answer = raw(router.addr, GET_AND_CLOSE, WAIT).await;
    assert!(
        answer.contains("transfer-encoding: chunked\r\n"),
        "{answer}"
    );
    let body = &answer[answer.find("\r\n\r\n").expect("head") + 4..];
    let mut decoded = String::new();
    let mut rest = body;
    loop {
        let (size, after) = rest.split_once("\r\n").expect("chunk size line");
        let size = usize::from_str_radix(size, 16).expect("hex size");
        if size == 0 {
            assert_eq!(after, "\r\n", "the last chunk ends the answer");
            break;
        }
        decoded.push_str(&after[..size]);
        rest = after[size..].strip_prefix("\r\n").expect("chunk end");
    }
    assert_eq!(decoded, "helloworld");

    let answer = raw(
        router.addr,
        b"GET / HTTP/1.0\r\nHost: web.localhost\r\n\r\n",
        WAIT,
    )
    .await;
    assert!(!answer.contains("transfer-encoding"), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nhelloworld"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backends_fields_reach_the_client_as_sent_less_the_hop_by_hop_ones() {
    let backend = backend_answering(
        b"HTTP/1.1 200 OK\r\nX-Custom: One\r\nConnection: X-Internal\r\nX-Internal: secret\r\n\
          Keep-Alive: timeout=5\r\nProxy-Foo: 1\r\nX-Request-Id: from-backend\r\n\
          Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 2\r\n\r\nok",
    )
    .await;
    let (_nats, router) = router_to(backend).await;

    let answer = raw(router.addr, GET_AND_CLOSE, WAIT).await;
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
    assert_eq!(body, "ok");
    let fields: Vec<&str> = head.lines().skip(1).collect();
    assert_eq!(
        fields,
        [
            "X-Custom: One",
            "X-Request-Id: from-backend",
            "Set-Cookie: a=1",
            "Set-Cookie: b=2",
            "Content-Length: 2",
            "connection: close",
        ],
        "{answer}"
    );

    // Without an id from the backend, the client gets the request's: the
    // router's own, since this client is not a trusted proxy.
    let backend = backend_answering(b"HTTP/1.1 204 No Content\r\n\r\n").await;
    let (_nats, router) = router_to(backend).await;
    let answer = raw(
        router.addr,
        b"GET / HTTP/1.1\r\nHost: web.localhost\r\nX-Request-Id: mine\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 204 No Content\r\n"),
        "{answer}"
    );
    let id = answer
        .split("\r\n")
        .find_map(|line| line.strip_prefix("x-request-id: "))
        .expect("an id");
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_answered_without_reading_it_is_dropped_and_the_connection_kept() {
    let (_nats, _a, router) = web().await;

    let answer = raw(
        router.addr,
        b"POST / HTTP/1.1\r\nHost: nope.localhost\r\nContent-Length: 5\r\n\r\nhello\
          POST /echo HTTP/1.1\r\nHost: web.localhost\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
          GET / HTTP/1.1\r\nHost: web.localhost\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    let refused = answer.find("HTTP/1.1 404").expect("the unknown host");
    let echoed = answer.find("a:abc").expect("the chunked body forwarded");
    assert!(refused < echoed, "{answer}");
    assert!(
        answer.ends_with("\r\n\r\na"),
        "the last request answered: {answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_too_long_to_drain_closes_the_connection_after_the_answer() {
    let (_nats, a, router) = web().await;

    // 100,000 bytes announced, past what the router reads and drops.
    let started = std::time::Instant::now();
    let mut request =
        b"POST / HTTP/1.1\r\nHost: nope.localhost\r\nContent-Length: 100000\r\n\r\n".to_vec();
    request.extend_from_slice(&[b'x'; 1000]);
    let answer = raw(router.addr, &request, WAIT).await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    assert!(started.elapsed() < WAIT, "the router closed the connection");
    assert_eq!(
        a.started.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing was forwarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_sent_right_after_an_upgrade_request_reach_the_backend() {
    let (_nats, _a, router) = web().await;

    let mut stream = TcpStream::connect(router.addr).await.expect("connect");
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nHost: web.localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nearly-bytes")
        .await
        .expect("write");
    let mut seen = Vec::new();
    read_until(&mut stream, &mut seen, "early-bytes").await;
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.starts_with("HTTP/1.1 101"), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_that_could_be_read_two_ways_are_refused() {
    let (_nats, a, router) = web().await;

    for head in [
        &b"POST /echo HTTP/1.1\r\nHost: web.localhost\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n"[..],
        b"POST /echo HTTP/1.1\r\nHost: web.localhost\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"GET / HTTP/1.1\r\nHost: web.localhost\r\nBad Name: 1\r\n\r\n",
    ] {
        let answer = raw(router.addr, head, WAIT).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("connection: close\r\n"), "{answer}");
    }
    assert_eq!(
        a.started.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing was forwarded"
    );
}
