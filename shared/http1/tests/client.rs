//! The backend client on its own, over in-memory streams: a scripted
//! backend on the other end of a `tokio::io::duplex`.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::StatusCode;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use mentat_http1::bounds::Bounds;
use mentat_http1::client::{self, Answer, Connection, Outbound, Reader};
use mentat_http1::io::Pair;
use mentat_http1::wire::fields::RawFields;
use mentat_http1::{BoxError, Error};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};

type Duplex = Pair<ReadHalf<DuplexStream>, WriteHalf<DuplexStream>>;

/// A connection, and the backend's end of it.
fn connected() -> (Connection<Duplex>, DuplexStream) {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    (Connection::new(Pair::split(ours)), theirs)
}

/// Read one request head (up to its empty line) off `stream`.
async fn read_head(stream: &mut DuplexStream) -> Vec<u8> {
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = stream.read(&mut byte).await.expect("read");
        assert!(n > 0, "request expected");
        head.push(byte[0]);
    }
    head
}

/// A backend that answers each request with the next script, written in
/// the given pieces, then closes if told to.
fn scripted(mut stream: DuplexStream, scripts: Vec<(Vec<&'static [u8]>, bool)>) {
    tokio::spawn(async move {
        for (pieces, close) in scripts {
            read_head(&mut stream).await;
            for piece in pieces {
                stream.write_all(piece).await.expect("write");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            if close {
                return;
            }
        }
    });
}

fn get() -> (Parts, RawFields) {
    let (parts, ()) = http::Request::get("/")
        .body(())
        .expect("request")
        .into_parts();
    let fields = RawFields::parse(b"Host: web.localhost\r\n\r\n").expect("fields");
    (parts, fields)
}

async fn send_get(conn: &mut Connection<Duplex>) -> Result<Answer, Error> {
    let (parts, fields) = get();
    let request = Outbound {
        parts: &parts,
        fields: &fields,
        host: "backend",
    };
    let mut body = Empty::<Bytes>::new().map_err(|e| match e {});
    conn.send(request, |_| {}, &mut body, &Bounds::default())
        .await
}

/// Send a GET on `conn` and read the whole answer.
async fn exchange(
    mut conn: Connection<Duplex>,
) -> (
    StatusCode,
    Result<Vec<u8>, String>,
    Option<Connection<Duplex>>,
) {
    let answer = send_get(&mut conn).await.expect("an answer");
    let status = answer.status;
    let mut reader = Reader::new(conn, &answer);
    let mut body = Vec::new();
    let mut failed = None;
    while let Some(frame) = reader.frame().await {
        match frame {
            Ok(frame) => body.extend_from_slice(&frame.into_data().expect("data")),
            Err(e) => {
                failed = Some(e.to_string());
                break;
            }
        }
    }
    let body = match failed {
        Some(e) => Err(e),
        None => Ok(body),
    };
    (status, body, reader.take_reusable())
}

#[tokio::test]
async fn heads_skip_1xx_and_fail_clearly() {
    async fn head(raw: &[u8]) -> Result<(Answer, BytesMut), Error> {
        let mut buf = BytesMut::new();
        let answer = client::read_head(&mut &raw[..], &mut buf, false).await?;
        Ok((answer, buf))
    }
    let (answer, rest) =
        head(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await
            .expect("a final answer");
    assert_eq!((answer.status, &rest[..]), (StatusCode::OK, &b"ok"[..]));
    let (answer, _) = head(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n")
        .await
        .expect("101 is final");
    assert_eq!(answer.status, StatusCode::SWITCHING_PROTOCOLS);
    assert!(matches!(head(b"").await, Err(Error::Closed)));
    assert!(matches!(
        head(b"HTTP/1.1 200 OK\r\ncontent-").await,
        Err(Error::Malformed("connection closed in the response head"))
    ));
    let mut huge = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
    huge.resize(mentat_http1::wire::response::MAX_HEAD_BYTES + 10, b'a');
    assert!(matches!(
        head(&huge).await,
        Err(Error::Malformed("response head too large"))
    ));
    assert!(matches!(
        head(b"SSH-2.0-OpenSSH\r\n\r\n").await,
        Err(Error::Malformed("not an HTTP/1.x response"))
    ));
}

#[test]
fn request_heads_are_origin_form_with_a_host_and_chunked_when_unsized() {
    let (parts, ()) = http::Request::builder()
        .method("POST")
        .uri("http://web.example/a?b=1")
        .body(())
        .expect("request")
        .into_parts();
    let fields = RawFields::parse(b"X-One: 1\r\n\r\n").expect("fields");
    let request = Outbound {
        parts: &parts,
        fields: &fields,
        host: "10.0.0.1:80",
    };
    let head = client::encode_head(
        request,
        |out| out.extend_from_slice(b"x-extra: 2\r\n"),
        true,
    );
    assert_eq!(
        String::from_utf8(head).expect("utf-8"),
        "POST /a?b=1 HTTP/1.1\r\nhost: 10.0.0.1:80\r\nX-One: 1\r\nx-extra: 2\r\n\
         transfer-encoding: chunked\r\n\r\n"
    );
    let fields = RawFields::parse(b"Host: web.localhost\r\n\r\n").expect("fields");
    let request = Outbound {
        parts: &parts,
        fields: &fields,
        host: "10.0.0.1:80",
    };
    let head = String::from_utf8(client::encode_head(request, |_| {}, false)).expect("utf-8");
    assert_eq!(head, "POST /a?b=1 HTTP/1.1\r\nHost: web.localhost\r\n\r\n");
}

#[tokio::test]
async fn chunked_bodies_in_any_pieces_then_the_connection_is_reused() {
    let (conn, backend) = connected();
    scripted(
        backend,
        vec![
            (
                vec![
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhel",
                    b"lo\r",
                    b"\n6\r\n world\r\n0\r\nx-trailer: 1\r\n",
                    b"\r\n",
                ],
                false,
            ),
            (
                vec![b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"],
                false,
            ),
        ],
    );
    let (status, body, again) = exchange(conn).await;
    assert_eq!(
        (status, body.as_deref()),
        (StatusCode::OK, Ok(&b"hello world"[..]))
    );
    let again = again.expect("reusable after the last chunk and trailers");
    assert!(again.is_reused());
    let (status, body, again) = exchange(again).await;
    assert_eq!(
        (status, body.as_deref()),
        (StatusCode::CREATED, Ok(&b"ok"[..]))
    );
    assert!(again.is_some());
}

#[tokio::test]
async fn a_body_until_close_ends_at_the_close_and_a_cut_body_is_an_error() {
    let (conn, backend) = connected();
    scripted(
        backend,
        vec![(vec![b"HTTP/1.1 200 OK\r\n\r\nab", b"c"], true)],
    );
    let (_, body, again) = exchange(conn).await;
    assert_eq!(body.as_deref(), Ok(&b"abc"[..]));
    assert!(
        again.is_none(),
        "a body that ran to the close leaves no connection"
    );

    let (conn, backend) = connected();
    scripted(
        backend,
        vec![(
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"],
            true,
        )],
    );
    let (_, body, again) = exchange(conn).await;
    assert!(body.is_err_and(|e| e.contains("before the end of the body")));
    assert!(again.is_none());

    let (mut conn, backend) = connected();
    scripted(backend, vec![(vec![], true)]);
    let e = send_get(&mut conn).await.expect_err("no answer");
    assert!(matches!(e, Error::Closed) && !e.unsent(), "{e}");
}

#[tokio::test]
async fn a_body_of_unknown_length_is_sent_chunked_and_one_of_known_length_as_is() {
    let (parts, ()) = http::Request::post("/up")
        .body(())
        .expect("request")
        .into_parts();
    for (fields, expected) in [
        (
            &b"Host: web\r\n\r\n"[..],
            &b"transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"[..],
        ),
        (
            b"Host: web\r\nContent-Length: 11\r\n\r\n",
            b"\r\nhello world",
        ),
    ] {
        let (mut conn, mut backend) = connected();
        let fields = RawFields::parse(fields).expect("fields");
        let pieces: Vec<Result<http_body::Frame<Bytes>, BoxError>> = vec![
            Ok(http_body::Frame::data(Bytes::from_static(b"hello"))),
            Ok(http_body::Frame::data(Bytes::from_static(b" world"))),
        ];
        let mut body = StreamBody::new(futures::stream::iter(pieces));
        let received = tokio::spawn(async move {
            let mut all = read_head(&mut backend).await;
            // Read until the expected tail arrived.
            while !all.ends_with(expected) {
                let mut byte = [0u8; 1];
                if backend.read(&mut byte).await.expect("read") == 0 {
                    break;
                }
                all.push(byte[0]);
            }
            backend
                .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .await
                .expect("write");
            all
        });
        let request = Outbound {
            parts: &parts,
            fields: &fields,
            host: "backend",
        };
        let answer = conn
            .send(request, |_| {}, &mut body, &Bounds::default())
            .await
            .expect("an answer");
        assert_eq!(answer.status, StatusCode::NO_CONTENT);
        let all = String::from_utf8(received.await.expect("backend")).expect("utf-8");
        assert!(
            all.ends_with(std::str::from_utf8(expected).expect("utf-8")),
            "{all:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_silent_backend_times_out_after_the_response_head_bound() {
    let (mut conn, mut backend) = connected();
    let held = tokio::spawn(async move {
        read_head(&mut backend).await;
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop(backend);
    });
    let bounds = Bounds {
        response_head: Duration::from_secs(5),
        ..Bounds::default()
    };
    let (parts, fields) = get();
    let request = Outbound {
        parts: &parts,
        fields: &fields,
        host: "backend",
    };
    let started = tokio::time::Instant::now();
    let mut body = Full::new(Bytes::new()).map_err(|e| match e {});
    let e = conn
        .send(request, |_| {}, &mut body, &bounds)
        .await
        .expect_err("no answer in time");
    assert!(matches!(e, Error::TimedOut), "{e}");
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    held.abort();
}
