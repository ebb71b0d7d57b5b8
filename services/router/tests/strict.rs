//! Strict where RFC 9112 requires it: each leniency a smuggling probe found
//! is refused, and the raw recording backend shows what was forwarded:
//! nothing, or exactly one well-framed request.

mod common;

use std::time::Duration;

use common::*;
use mentat_testkit::NatsServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest wait for an answer: well under the header timeout (10 s), so
/// a router waiting for more bytes fails the test instead of answering late.
const WAIT: Duration = Duration::from_secs(3);
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// A router whose service `web` is a recording backend answering `answer`.
async fn web(answer: &'static [u8]) -> (NatsServer, Recorder, TestRouter) {
    let nats = NatsServer::start();
    let bus = bus(&nats.url()).await;
    let backend = Recorder::start(answer).await;
    route_web_to(&bus, backend.addr).await;
    let router = TestRouter::start(&nats.url()).await;
    (nats, backend, router)
}

/// Send `request` on a new connection; the status code of the answer and
/// the whole answer.
async fn status(router: &TestRouter, request: &[u8]) -> (u16, String) {
    let answer = raw(router.addr, request, WAIT).await;
    let code = answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (code, answer)
}

/// Each request is answered `code` and closes the connection, and not one
/// byte reached the backend.
async fn refused(router: &TestRouter, backend: &Recorder, code: u16, requests: &[Vec<u8>]) {
    for request in requests {
        let (got, answer) = status(router, request).await;
        let sent = String::from_utf8_lossy(request);
        assert_eq!(got, code, "{sent:?} -> {answer}");
        assert!(
            answer.contains("connection: close\r\n"),
            "{sent:?} -> {answer}"
        );
    }
    assert!(
        backend.received_nothing(),
        "forwarded: {:?}",
        backend.connections()
    );
}

/// A POST of `web` with `fields` (each a `name: value` line) and `body`.
fn post(fields: &[&[u8]], body: &[u8]) -> Vec<u8> {
    let mut request = b"POST /p HTTP/1.1\r\nHost: web.localhost\r\nConnection: close\r\n".to_vec();
    for field in fields {
        request.extend_from_slice(field);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(body);
    request
}

/// A chunked POST of `web` whose body is `body` as sent.
fn chunked(body: &[u8]) -> Vec<u8> {
    post(&[b"Transfer-Encoding: chunked"], body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_host_is_refused() {
    let (_nats, backend, router) = web(OK).await;
    refused(
        &router,
        &backend,
        400,
        &[
            b"GET / HTTP/1.1\r\nHost: web.localhost\r\nHost: other.localhost\r\n\r\n".to_vec(),
            b"GET / HTTP/1.1\r\nHost: web.localhost\r\nhost: web.localhost\r\n\r\n".to_vec(),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_lengths_other_than_ascii_digits_are_refused() {
    let (_nats, backend, router) = web(OK).await;
    let requests: Vec<Vec<u8>> = [
        &b"Content-Length: \xc2\xa05"[..],
        b"Content-Length: 5\xc2\xa0",
        b"Content-Length: +5",
        b"Content-Length: -5",
        b"Content-Length: 0x5",
        b"Content-Length: 5 5",
        b"Content-Length: 5, 5",
        b"Content-Length: 99999999999999999999",
    ]
    .iter()
    .map(|field| post(&[field], b"hello"))
    .collect();
    refused(&router, &backend, 400, &requests).await;

    // The OWS the grammar allows around the digits is fine.
    let (code, answer) = status(&router, &post(&[b"Content-Length:  5\t"], b"hello")).await;
    assert_eq!(code, 200, "{answer}");
    let request = backend.only_request();
    assert_eq!(
        (request.one("content-length"), &request.body[..]),
        ("5", &b"hello"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_sizes_extensions_and_trailers_outside_the_grammar_or_bounds_are_refused_before_forwarding(
) {
    let (_nats, backend, router) = web(OK).await;
    let many_extensions = format!("5{}\r\nhello\r\n0\r\n\r\n", ";e=1".repeat(17));
    let long_extension = format!("5;e={}\r\nhello\r\n0\r\n\r\n", "x".repeat(5000));
    let many_trailers = format!("5\r\nhello\r\n0\r\n{}\r\n", "T: 1\r\n".repeat(33));
    let requests: Vec<Vec<u8>> = [
        &b"+5\r\nhello\r\n0\r\n\r\n"[..],
        b" 5\r\nhello\r\n0\r\n\r\n",
        b"5 \r\nhello\r\n0\r\n\r\n",
        b"0x5\r\nhello\r\n0\r\n\r\n",
        b"5;a\nb\r\nhello\r\n0\r\n\r\n",
        b"5;a=\"open\r\nhello\r\n0\r\n\r\n",
        b"11111111111111111\r\nhello\r\n0\r\n\r\n",
        b"5\r\nhelloXY0\r\n\r\n",
        b"5\r\nhello\r\n0\r\n folded: trailer\r\n\r\n",
        many_extensions.as_bytes(),
        long_extension.as_bytes(),
        many_trailers.as_bytes(),
    ]
    .iter()
    .map(|body| chunked(body))
    .collect();
    refused(&router, &backend, 400, &requests).await;

    // Within the grammar: forwarded, extensions and trailers dropped.
    let (code, answer) = status(
        &router,
        &chunked(b"5 ;a=\"q;x\" ; b\r\nhello\r\n0\r\nT: 1\r\n\r\n"),
    )
    .await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(backend.only_request().body, b"hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_lf_anywhere_in_the_framing_is_refused_at_once() {
    let (_nats, backend, router) = web(OK).await;
    // Each answered within WAIT (the header timeout is 10 s): the router
    // does not wait for a CRLF that is never coming.
    refused(
        &router,
        &backend,
        400,
        &[
            b"GET / HTTP/1.1\nHost: web.localhost\r\n\r\n".to_vec(),
            b"GET / HTTP/1.1\r\nHost: web.localhost\nX-A: 1\r\n\r\n".to_vec(),
            b"GET / HTTP/1.1\r\nHost: web.localhost\r\n\n".to_vec(),
            // Unfinished heads: refused on what came, not timed out.
            b"GET / HTTP/1.1\nHost: web.localhost\n".to_vec(),
            chunked(b"5\nhello\r\n0\r\n\r\n"),
            chunked(b"5\r\nhello\r\n0\n\r\n"),
            chunked(b"5\r\nhello\r\n0\r\nT: 1\n\r\n"),
            chunked(b"5\n"),
        ],
    )
    .await;
}

/// Send a chunked POST whose first chunk is good, wait for the backend to
/// get the head, then send `rest`: the answer.
async fn bad_chunk_later(router: &TestRouter, backend: &Recorder, rest: &[u8]) -> String {
    let mut stream = TcpStream::connect(router.addr).await.expect("connect");
    stream
        .write_all(&chunked(b"5\r\nhello\r\n"))
        .await
        .expect("write");
    eventually("the backend gets the head", || async {
        backend.connections().iter().any(|c| !c.bytes.is_empty())
    })
    .await;
    stream.write_all(rest).await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_chunk_after_the_body_started_is_400_and_closes_the_backend_connection() {
    for rest in [&b"+3\r\nabc\r\n0\r\n\r\n"[..], b"3\nabc\r\n0\r\n\r\n"] {
        let (_nats, backend, router) = web(OK).await;
        let answer = bad_chunk_later(&router, &backend, rest).await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
        assert!(answer.contains("connection: close\r\n"), "{answer}");
        assert!(backend.all_closed().await, "{:?}", backend.connections());
        let forwarded = backend.requests();
        assert!(
            forwarded.is_err(),
            "the backend never got a whole request: {forwarded:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_encoding_in_an_http_1_0_request_is_refused() {
    let (_nats, backend, router) = web(OK).await;
    refused(
        &router,
        &backend,
        400,
        &[b"POST / HTTP/1.0\r\nHost: web.localhost\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            .to_vec()],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_codings_other_than_chunked_alone_are_refused_as_nginx_does() {
    let (_nats, backend, router) = web(OK).await;
    let body = b"5\r\nhello\r\n0\r\n\r\n";
    refused(
        &router,
        &backend,
        400,
        &[post(
            &[b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"],
            body,
        )],
    )
    .await;
    let unknown: Vec<Vec<u8>> = [
        &b"Transfer-Encoding: gzip, chunked"[..],
        b"Transfer-Encoding: chunked, chunked",
        b"Transfer-Encoding: gzip",
        b"Transfer-Encoding: identity",
        b"Transfer-Encoding: chunked\xc2\xa0",
    ]
    .iter()
    .map(|field| post(&[field], body))
    .collect();
    refused(&router, &backend, 501, &unknown).await;

    // Coding names are case-insensitive.
    let (code, answer) = status(&router, &post(&[b"Transfer-Encoding: Chunked"], body)).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(backend.only_request().body, b"hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_malformed_methods_are_refused() {
    let (_nats, backend, router) = web(OK).await;
    refused(
        &router,
        &backend,
        400,
        &[
            b"FOO / HTTP/1.1\r\nHost: web.localhost\r\n\r\n".to_vec(),
            b"get / HTTP/1.1\r\nHost: web.localhost\r\n\r\n".to_vec(),
            b"G@T / HTTP/1.1\r\nHost: web.localhost\r\n\r\n".to_vec(),
            b"GET\x01 / HTTP/1.1\r\nHost: web.localhost\r\n\r\n".to_vec(),
        ],
    )
    .await;
    let (code, answer) = status(
        &router,
        b"PROPFIND /d HTTP/1.1\r\nHost: web.localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(code, 200, "a registered method is forwarded: {answer}");
    assert_eq!(backend.only_request().method, "PROPFIND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_answers_keep_the_backends_length_fields_and_carry_no_body() {
    const HEAD: &[u8] = b"HEAD /h HTTP/1.1\r\nHost: web.localhost\r\nConnection: close\r\n\r\n";
    for (answer, expect, absent) in [
        (
            &b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n"[..],
            &["Content-Length: 42\r\n"][..],
            &["transfer-encoding"][..],
        ),
        (
            b"HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\n",
            &["X-A: 1\r\n"],
            &["content-length", "transfer-encoding"],
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            &["transfer-encoding: chunked\r\n"],
            &["content-length"],
        ),
    ] {
        let (_nats, backend, router) = web(answer).await;
        let (code, got) = status(&router, HEAD).await;
        assert_eq!(code, 200, "{got}");
        for field in expect {
            assert!(got.contains(field), "{field:?} in {got}");
        }
        for name in absent {
            assert!(
                !got.to_ascii_lowercase().contains(name),
                "no {name} in {got}"
            );
        }
        assert!(got.ends_with("\r\n\r\n"), "no body after the head: {got:?}");
        assert_eq!(backend.only_request().method, "HEAD");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_101_nobody_asked_for_is_a_502_and_closes_the_backend_connection() {
    let (_nats, backend, router) = web(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await;
    let (code, answer) = status(
        &router,
        b"GET / HTTP/1.1\r\nHost: web.localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(code, 502, "{answer}");
    assert!(!answer.contains("101"), "{answer}");
    assert!(backend.all_closed().await, "{:?}", backend.connections());
    assert_eq!(backend.only_request().method, "GET");
}
