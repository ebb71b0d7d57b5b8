//! The server connection on its own, over in-memory streams: a client on
//! the other end of a `tokio::io::duplex`, a handler that echoes.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use mentat_http1::io::{Io, Pair};
use mentat_http1::server::{self, Handler, Limits, Request, RequestBody, Response};
use mentat_http1::wire::fields::{Passed, RawFields};
use mentat_http1::BoxError;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_util::sync::CancellationToken;

/// Answers `<method> <target> <body>` (the body read whole), or what
/// the target asks for: `/upgrade` a 101 whose upgrade writes `upgraded`,
/// `/head-length` an answer passed on with its own Content-Length.
#[derive(Clone, Default)]
struct Echo {
    calls: Arc<AtomicUsize>,
}

fn text(status: StatusCode, body: String) -> Response<BoxBody<Bytes, BoxError>, ()> {
    Response::text(
        status,
        Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed(),
    )
}

impl<S: Io> Handler<S> for Echo {
    type Body = BoxBody<Bytes, BoxError>;
    type Upgrade = ();

    fn handle<'a>(
        &'a self,
        request: Request,
        body: &'a mut RequestBody<S>,
    ) -> impl Future<Output = Response<Self::Body, ()>> + Send + 'a {
        self.calls.fetch_add(1, Ordering::SeqCst);
        async move {
            let target = request.parts.uri.to_string();
            if target == "/upgrade" {
                let mut resp = text(StatusCode::SWITCHING_PROTOCOLS, String::new());
                resp.upgrade = Some(());
                return resp;
            }
            if target == "/head-length" {
                let fields = RawFields::parse(b"Content-Length: 42\r\n\r\n").expect("fields");
                let mut resp = text(StatusCode::OK, String::new());
                resp.headers.clear();
                resp.passed = Some(Passed::new(fields, false));
                return resp;
            }
            let mut read = Vec::new();
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => read.extend_from_slice(&frame.into_data().unwrap_or_default()),
                    Err(_) => {
                        let fault = body.fault().map_or(StatusCode::BAD_GATEWAY, |f| f.status());
                        return text(fault, "fault\n".into());
                    }
                }
            }
            let said = format!(
                "{} {} {}",
                request.parts.method,
                target,
                String::from_utf8_lossy(&read)
            );
            text(StatusCode::OK, said)
        }
    }

    async fn upgrade(&self, (): (), mut client: S, _early: BytesMut) {
        let _ = client.write_all(b"upgraded").await;
        let _ = client.shutdown().await;
    }
}

fn limits() -> Limits {
    Limits {
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        max_header_bytes: 16 * 1024,
        max_body_bytes: 1024,
        body_idle: Duration::from_secs(30),
    }
}

/// A served connection: the client's end.
fn connect(handler: Echo) -> DuplexStream {
    let (client, ours) = tokio::io::duplex(64 * 1024);
    tokio::spawn(server::serve(
        Pair::split(ours),
        handler,
        limits(),
        CancellationToken::new(),
    ));
    client
}

/// Send `raw`, end the client's side, and read everything until the close.
async fn exchange(handler: Echo, raw: &[u8]) -> String {
    let mut client = connect(handler);
    client.write_all(raw).await.expect("write");
    client.shutdown().await.expect("shutdown");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut out))
        .await
        .expect("the server closes")
        .expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

/// The status codes of the answers in `out`, in order.
fn statuses(out: &str) -> Vec<u16> {
    out.match_indices("HTTP/1.1 ")
        .filter_map(|(at, _)| out.get(at + 9..at + 12)?.parse().ok())
        .collect()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let out = exchange(
        Echo::default(),
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
          POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
          POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: 1\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&out), [200, 200, 200], "{out}");
    let a = out.find("GET /a ").expect("first");
    let b = out.find("POST /b hello").expect("second");
    let c = out.find("POST /c abcde").expect("third, chunks decoded");
    assert!(a < b && b < c, "{out}");
    assert!(!out.contains("connection: close"), "kept alive: {out}");
}

#[tokio::test]
async fn heads_the_grammar_refuses_get_their_status_and_the_connection_closes() {
    for (raw, status) in [
        (&b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"[..], 400),
        (b"GET / HTTP/1.1\nHost: a\r\n\r\n", 400),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            501,
        ),
        (
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: \xc2\xa05\r\n\r\nhello",
            400,
        ),
        (b"FOO / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ] {
        let echo = Echo::default();
        let out = exchange(echo.clone(), raw).await;
        assert_eq!(
            statuses(&out),
            [status],
            "{}: {out}",
            String::from_utf8_lossy(raw)
        );
        assert!(out.contains("connection: close"), "{out}");
        assert_eq!(echo.calls.load(Ordering::SeqCst), 0, "never handed over");
    }
    let mut huge = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
    huge.resize(20 * 1024, b'a');
    huge.extend_from_slice(b"\r\n\r\n");
    assert_eq!(statuses(&exchange(Echo::default(), &huge).await), [431]);
}

#[tokio::test]
async fn a_chunked_body_broken_from_its_start_is_refused_before_the_handler() {
    let echo = Echo::default();
    let out = exchange(
        echo.clone(),
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&out), [400], "{out}");
    assert_eq!(echo.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_body_past_the_limit_is_the_clients_fault() {
    let mut raw = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        raw.extend_from_slice(b"200\r\n");
        raw.extend_from_slice(&[b'x'; 0x200]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let out = exchange(Echo::default(), &raw).await;
    assert_eq!(statuses(&out), [413], "{out}");
}

#[tokio::test]
async fn continue_is_sent_only_when_the_body_is_read() {
    let mut client = connect(Echo::default());
    client
        .write_all(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n",
        )
        .await
        .expect("write");
    let mut got = vec![0u8; 25];
    client.read_exact(&mut got).await.expect("read");
    assert_eq!(&got[..], b"HTTP/1.1 100 Continue\r\n\r\n");
    client.write_all(b"ok").await.expect("write");
    client.shutdown().await.expect("shutdown");
    let mut out = Vec::new();
    client.read_to_end(&mut out).await.expect("read");
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.starts_with("HTTP/1.1 200 OK\r\n") && out.ends_with("POST / ok"),
        "{out}"
    );
}

#[tokio::test]
async fn a_101_hands_the_connection_to_the_upgrade() {
    let out = exchange(
        Echo::default(),
        b"GET /upgrade HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n",
    )
    .await;
    assert!(
        out.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{out}"
    );
    assert!(out.ends_with("\r\n\r\nupgraded"), "{out}");
}

#[tokio::test]
async fn an_answer_to_head_passed_on_keeps_its_length_and_has_no_body() {
    let out = exchange(
        Echo::default(),
        b"HEAD /head-length HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n");
}

#[tokio::test(start_paused = true)]
async fn a_head_that_does_not_arrive_in_time_closes_the_connection() {
    let mut client = connect(Echo::default());
    client
        .write_all(b"GET / HTTP/1.1\r\nHo")
        .await
        .expect("write");
    let started = tokio::time::Instant::now();
    let mut out = Vec::new();
    client.read_to_end(&mut out).await.expect("read");
    assert!(out.is_empty(), "closed without an answer");
    assert_eq!(started.elapsed(), limits().header_timeout);
}
