//! The router's HTTP/1.1 client to its backends.
//!
//! A backend connection is driven by the request that uses it, in the task
//! of the client's connection: the request head is written straight to the
//! socket, the response head is parsed from it, and the response body is
//! read from it as the client takes it. There is no task per backend
//! connection and no channel between tasks, so a proxied request costs one
//! task's wake-ups instead of three tasks handing messages to each other.
//!
//! Framing follows RFC 9112 §6.3: no body for HEAD, 1xx, 204 and 304;
//! chunked when the last transfer coding is chunked; else Content-Length;
//! else the body runs to the end of the connection, which is then not
//! reused. Chunk extensions and trailers are read and dropped. A request
//! body without a length is sent chunked.

use std::fmt::Write as _;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use hyper::http::request::Parts;
use hyper::{Method, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::body::{BoxError, OutBody, RequestBody};
use crate::bounds::{within, within_for, Bounds};
use crate::codec::{reserve, Decoder, Fields, Framing, READ_SIZE};
use crate::headers::{push_field, Forwarded, Passed, RawFields};
use crate::pool::Slot;

/// Largest response head accepted from a backend.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields in a response head.
const MAX_HEADERS: usize = 128;

/// An open connection to a backend, idle in its pool or carrying one request.
#[derive(Debug)]
pub struct Upstream {
    stream: TcpStream,
    /// Bytes read and not consumed yet (the rest of a head, body bytes).
    buf: BytesMut,
    /// The pool's slot, freed when the connection closes.
    slot: Slot,
    /// True when the connection served an earlier request.
    pub reused: bool,
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Writing the request failed; `sent` is false when not one byte of it
    /// left (the backend cannot have seen it).
    #[error("writing the request: {source}")]
    Write {
        /// The socket's error.
        source: io::Error,
        /// Whether any of the request may have reached the backend.
        sent: bool,
    },
    /// The client's body failed (too large, or the client went away).
    #[error("request body: {0}")]
    Body(BoxError),
    /// The backend closed the connection before answering.
    #[error("the backend closed the connection before answering")]
    Closed,
    /// Reading the answer failed.
    #[error("reading the answer: {0}")]
    Read(io::Error),
    /// The answer is not HTTP/1.x or breaks a limit.
    #[error("bad answer from the backend: {0}")]
    Malformed(&'static str),
    /// The backend did not answer within the response head bound, or
    /// stopped reading the request body for longer than the body idle
    /// bound: 504, the connection closed, not retried.
    #[error("the backend did not answer in time")]
    TimedOut,
}

impl SendError {
    /// True when nothing of the request left the router.
    pub fn unsent(&self) -> bool {
        matches!(self, SendError::Write { sent: false, .. })
    }
}

/// The response head and how to read the body that follows it.
#[derive(Debug)]
pub struct Answer {
    /// The status the backend sent.
    pub status: StatusCode,
    /// Its header fields, less the hop-by-hop ones.
    pub fields: Passed,
    framing: Framing,
    /// The connection may carry another request after this body.
    keep_alive: bool,
}

impl Upstream {
    /// A fresh connection holding `slot`.
    pub fn new(stream: TcpStream, slot: Slot) -> Self {
        Upstream {
            stream,
            buf: BytesMut::new(),
            slot,
            reused: false,
        }
    }

    /// True unless the backend closed the connection (or sent bytes nobody
    /// asked for) while it was idle. Costs no system call while the socket
    /// has nothing to read.
    pub fn is_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Send the request (`parts` and `fields`, with `body`) and read the
    /// answer's head.
    /// The body is streamed while the answer is awaited: a backend that
    /// answers early (a 413, say) is heard, and the connection is then not
    /// reused.
    pub async fn send(
        &mut self,
        parts: &Parts,
        fields: &RawFields,
        forwarded: &Forwarded,
        addr: &str,
        body: &RequestBody,
        bounds: &Bounds,
    ) -> Result<Answer, SendError> {
        let chunked = !body.is_empty() && !fields.contains(b"content-length");
        let head = encode_head(parts, fields, forwarded, addr, chunked);
        self.write_head(&head).await?;
        let head_request = parts.method == Method::HEAD;
        if body.is_empty() {
            let answer = read_head(&mut self.stream, &mut self.buf, head_request);
            return within_for(bounds.response_head, answer)
                .await
                .unwrap_or(Err(SendError::TimedOut));
        }
        let mut out = body.attempt();
        let (mut reader, mut writer) = self.stream.split();
        let sending = write_body(&mut writer, &mut out, chunked, bounds);
        let answer = read_head(&mut reader, &mut self.buf, head_request);
        tokio::pin!(sending, answer);
        let mut sent_all = false;
        let mut write_error = None;
        // The answer's head is due once the whole request was written;
        // until then the body's own bounds apply.
        let mut head_due = None;
        let answer = loop {
            tokio::select! {
                biased;
                written = &mut sending, if !sent_all => {
                    sent_all = true;
                    head_due = Some(Instant::now() + bounds.response_head);
                    match written {
                        Ok(()) => {}
                        Err(e @ SendError::Body(_)) => return Err(e),
                        Err(e) => write_error = Some(e),
                    }
                }
                answer = &mut answer => break answer,
                () = tokio::time::sleep_until(head_due.unwrap_or_else(Instant::now)), if head_due.is_some() => {
                    return Err(SendError::TimedOut);
                }
            }
        };
        match (answer, write_error) {
            (Ok(mut answer), None) => {
                // An early answer leaves the backend waiting for the rest.
                answer.keep_alive &= sent_all;
                Ok(answer)
            }
            (Ok(mut answer), Some(_)) => {
                answer.keep_alive = false;
                Ok(answer)
            }
            (Err(_), Some(e)) => Err(e),
            (Err(e), None) => Err(e),
        }
    }

    /// Write the request head; an error on the first write means nothing
    /// was sent.
    async fn write_head(&mut self, head: &[u8]) -> Result<(), SendError> {
        let mut written = 0;
        while written < head.len() {
            match self.stream.write(&head[written..]).await {
                Ok(0) => {
                    return Err(SendError::Write {
                        source: io::ErrorKind::WriteZero.into(),
                        sent: written > 0,
                    })
                }
                Ok(n) => written += n,
                Err(source) => {
                    return Err(SendError::Write {
                        source,
                        sent: written > 0,
                    })
                }
            }
        }
        Ok(())
    }

    /// The socket and the bytes already read from it (a tunnel's first bytes).
    pub fn into_parts(self) -> (TcpStream, BytesMut, Slot) {
        (self.stream, self.buf, self.slot)
    }
}

/// The request head as sent to a backend: origin-form target, HTTP/1.1,
/// the client's fields (hop-by-hop ones already removed), `Host` if the
/// client sent none, the router's own, and `Transfer-Encoding: chunked`
/// for a body of unknown length.
fn encode_head(
    parts: &Parts,
    fields: &RawFields,
    forwarded: &Forwarded,
    addr: &str,
    chunked: bool,
) -> Vec<u8> {
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut head = Vec::with_capacity(256 + fields.len() * 32);
    head.extend_from_slice(parts.method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    if !fields.contains(b"host") {
        push_field(&mut head, b"host", addr.as_bytes());
    }
    fields.write_to(&mut head);
    for (name, value) in forwarded.fields() {
        push_field(&mut head, name, value.as_bytes());
    }
    if chunked {
        head.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Stream the client's body to the backend, chunked or as is, within
/// `bounds`: each piece from the client within the body idle bound, the
/// whole body within the request body bound (else the client's fault,
/// [`crate::body::Fault::TimedOut`]), and each write to the backend within
/// the body idle bound (else [`SendError::TimedOut`]).
async fn write_body<W: AsyncWrite + Unpin>(
    writer: &mut W,
    body: &mut OutBody,
    chunked: bool,
    bounds: &Bounds,
) -> Result<(), SendError> {
    let whole_by = Instant::now() + bounds.request_body;
    loop {
        let due = (Instant::now() + bounds.body_idle).min(whole_by);
        let Some(frame) = within(due, body.frame()).await else {
            return Err(SendError::Body(body.timed_out()));
        };
        let Some(frame) = frame else { break };
        let Ok(data) = frame.map_err(SendError::Body)?.into_data() else {
            continue; // trailers: not forwarded
        };
        if data.is_empty() {
            continue;
        }
        if chunked {
            let mut size = String::with_capacity(18);
            let _ = write!(size, "{:x}\r\n", data.len());
            send(writer, size.as_bytes(), bounds).await?;
            send(writer, &data, bounds).await?;
            send(writer, b"\r\n", bounds).await?;
        } else {
            send(writer, &data, bounds).await?;
        }
    }
    if chunked {
        send(writer, b"0\r\n\r\n", bounds).await?;
    }
    Ok(())
}

/// Write `bytes` of a request body to the backend within the body idle bound.
async fn send<W: AsyncWrite + Unpin>(
    writer: &mut W,
    bytes: &[u8],
    bounds: &Bounds,
) -> Result<(), SendError> {
    within_for(bounds.body_idle, writer.write_all(bytes))
        .await
        .ok_or(SendError::TimedOut)?
        .map_err(|source| SendError::Write { source, sent: true })
}

/// Read until a final response head is complete (1xx other than 101 are
/// skipped), leaving what follows it in `buf`.
async fn read_head<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<Answer, SendError> {
    loop {
        if !buf.is_empty() {
            if let Some(answer) = parse_head(buf, head_request)? {
                if answer.status.is_informational()
                    && answer.status != StatusCode::SWITCHING_PROTOCOLS
                {
                    continue;
                }
                return Ok(answer);
            }
            if buf.len() >= MAX_HEAD_BYTES {
                return Err(SendError::Malformed("response head too large"));
            }
        }
        reserve(buf, READ_SIZE);
        let n = tokio::io::AsyncReadExt::read_buf(reader, buf)
            .await
            .map_err(SendError::Read)?;
        if n == 0 {
            return Err(if buf.is_empty() {
                SendError::Closed
            } else {
                SendError::Malformed("connection closed in the response head")
            });
        }
    }
}

/// Parse a response head at the start of `buf` and consume it; `None` when
/// more bytes are needed.
fn parse_head(buf: &mut BytesMut, head_request: bool) -> Result<Option<Answer>, SendError> {
    // Uninitialised: zeroing 128 fields per response costs more than parsing.
    let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let config = httparse::ParserConfig::default();
    let len = match config.parse_response_with_uninit_headers(&mut parsed, buf, &mut fields) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(SendError::Malformed("too many header fields"))
        }
        Err(_) => return Err(SendError::Malformed("not an HTTP/1.x response")),
    };
    let status = parsed
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(SendError::Malformed("bad status code"))?;
    let http11 = parsed.version == Some(1);
    let fields = Fields::read(buf, parsed.headers).map_err(SendError::Malformed)?;
    let close = fields.close || (!http11 && !fields.keep_alive);
    let (coded, chunked, length) = (fields.coded, fields.chunked, fields.length);
    let head = buf.split_to(len).freeze();
    // RFC 9112 §6.3: the transfer coding decides; a length beside it would
    // be wrong for the client, who gets the decoded body.
    let fields = Passed::new(RawFields::new(head, fields.into_spans()), coded);
    let bodyless = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = match (bodyless, coded, chunked, length) {
        (true, ..) => Framing::Empty,
        (false, true, true, _) => Framing::Chunked,
        (false, true, false, _) => Framing::UntilClose,
        (false, false, _, Some(0)) => Framing::Empty,
        (false, false, _, Some(n)) => Framing::Length(n),
        (false, false, _, None) => Framing::UntilClose,
    };
    Ok(Some(Answer {
        status,
        fields,
        framing,
        keep_alive: !close && framing != Framing::UntilClose,
    }))
}

/// A backend's response body, read from its connection as the client
/// takes it. At its end the connection can be had back for the pool
/// ([`Reader::take_reusable`]).
#[derive(Debug)]
pub struct Reader {
    upstream: Option<Upstream>,
    decoder: Decoder,
    keep_alive: bool,
}

impl Reader {
    /// The body that follows `answer` on `upstream`.
    pub fn new(upstream: Upstream, answer: &Answer) -> Self {
        Reader {
            upstream: Some(upstream),
            decoder: Decoder::new(answer.framing),
            keep_alive: answer.keep_alive,
        }
    }

    /// True once the whole body was read.
    pub fn is_done(&self) -> bool {
        self.decoder.is_done()
    }

    /// The connection, once the body was read to its end and the
    /// connection can carry another request.
    pub fn take_reusable(&mut self) -> Option<Upstream> {
        if !self.decoder.is_done() || !self.keep_alive {
            return None;
        }
        let mut upstream = self.upstream.take()?;
        if !upstream.buf.is_empty() {
            return None; // bytes nobody asked for: not a connection to trust
        }
        // An idle connection holds no buffer; the next answer takes one.
        upstream.buf = BytesMut::new();
        upstream.reused = true;
        Some(upstream)
    }
}

impl Body for Reader {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(upstream) = this.upstream.as_mut() else {
            return Poll::Ready(None);
        };
        match this
            .decoder
            .poll_data(&mut upstream.stream, &mut upstream.buf, cx)
        {
            Poll::Ready(Some(Err(e))) => {
                this.keep_alive = false;
                this.upstream = None;
                Poll::Ready(Some(Err(Box::new(e))))
            }
            other => other.map(|step| step.map(|data| data.map(Frame::data).map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder.remaining() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8], head_request: bool) -> (Answer, BytesMut) {
        let mut buf = BytesMut::from(raw);
        let answer = parse_head(&mut buf, head_request)
            .expect("valid")
            .expect("complete");
        (answer, buf)
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let (a, rest) = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabc", false);
        assert_eq!((a.framing, a.keep_alive), (Framing::Length(3), true));
        assert_eq!(&rest[..], b"abc");
        let (a, _) = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n", true);
        assert_eq!(a.framing, Framing::Empty, "HEAD has no body");
        let (a, _) = parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 9\r\n\r\n",
            false,
        );
        assert_eq!(a.framing, Framing::Chunked, "chunked wins over a length");
        assert!(!a.fields.has_length(), "and the length goes");
        let (a, _) = parse(b"HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!((a.framing, a.keep_alive), (Framing::UntilClose, false));
        let (a, _) = parse(b"HTTP/1.1 204 No Content\r\n\r\n", false);
        assert_eq!((a.framing, a.keep_alive), (Framing::Empty, true));
        let (a, _) = parse(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert!(!a.keep_alive);
        let (a, _) = parse(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false);
        assert!(!a.keep_alive, "HTTP/1.0 closes unless asked");
        let mut partial = BytesMut::from(&b"HTTP/1.1 200 OK\r\ncontent-le"[..]);
        assert!(parse_head(&mut partial, false).expect("valid").is_none());
        let mut bad = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n"[..],
        );
        assert!(parse_head(&mut bad, false).is_err());
    }

    #[tokio::test]
    async fn heads_skip_1xx_and_fail_clearly() {
        async fn head(raw: &[u8]) -> Result<(Answer, BytesMut), SendError> {
            let mut buf = BytesMut::new();
            let answer = read_head(&mut &raw[..], &mut buf, false).await?;
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
        assert!(matches!(head(b"").await, Err(SendError::Closed)));
        assert!(matches!(
            head(b"HTTP/1.1 200 OK\r\ncontent-").await,
            Err(SendError::Malformed(
                "connection closed in the response head"
            ))
        ));
        let mut huge = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
        huge.resize(MAX_HEAD_BYTES + 10, b'a');
        assert!(matches!(
            head(&huge).await,
            Err(SendError::Malformed("response head too large"))
        ));
        assert!(matches!(
            head(b"SSH-2.0-OpenSSH\r\n\r\n").await,
            Err(SendError::Malformed("not an HTTP/1.x response"))
        ));
    }

    #[test]
    fn request_heads_are_origin_form_with_a_host_and_chunked_when_unsized() {
        let (parts, ()) = hyper::Request::builder()
            .method("POST")
            .uri("http://web.example/a?b=1")
            .body(())
            .expect("request")
            .into_parts();
        let client = crate::headers::Peer::new([10, 9, 8, 7].into(), false);
        let mut fields = RawFields::parse(b"X-One: 1\r\n\r\n");
        let forwarded = crate::headers::forward_request(&mut fields, &client);
        let id = forwarded.request_id.to_str().expect("ascii");
        let head = encode_head(&parts, &fields, &forwarded, "10.0.0.1:80", true);
        assert_eq!(
            String::from_utf8(head).expect("utf-8"),
            format!(
                "POST /a?b=1 HTTP/1.1\r\nhost: 10.0.0.1:80\r\nX-One: 1\r\nx-request-id: {id}\r\n\
                 x-forwarded-for: 10.9.8.7\r\nx-forwarded-proto: http\r\ntransfer-encoding: chunked\r\n\r\n"
            )
        );
        let mut fields = RawFields::parse(b"Host: web.localhost\r\n\r\n");
        let forwarded = crate::headers::forward_request(&mut fields, &client);
        let head = String::from_utf8(encode_head(
            &parts,
            &fields,
            &forwarded,
            "10.0.0.1:80",
            false,
        ))
        .expect("utf-8");
        assert!(head.contains("Host: web.localhost\r\n") && !head.contains("10.0.0.1"));
        assert!(head.contains("x-forwarded-host: web.localhost\r\n"));
    }

    /// A backend that answers each request on one connection with the next
    /// script, written in the given pieces, then closes if told to.
    async fn scripted(scripts: Vec<(Vec<&'static [u8]>, bool)>) -> std::net::SocketAddr {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            for (pieces, close) in scripts {
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let mut byte = [0u8; 1024];
                    let n = stream.read(&mut byte).await.expect("read");
                    assert!(n > 0, "request expected");
                    head.extend_from_slice(&byte[..n]);
                }
                for piece in pieces {
                    stream.write_all(piece).await.expect("write");
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                if close {
                    return;
                }
            }
        });
        addr
    }

    fn forwarded(fields: &mut RawFields) -> Forwarded {
        crate::headers::forward_request(
            fields,
            &crate::headers::Peer::new([127, 0, 0, 1].into(), false),
        )
    }

    /// A GET of `/` with a Host: its head and fields.
    fn get() -> (Parts, RawFields) {
        let (parts, ()) = hyper::Request::get("/")
            .body(())
            .expect("request")
            .into_parts();
        (parts, RawFields::parse(b"Host: web.localhost\r\n\r\n"))
    }

    /// Send a GET on `upstream`.
    async fn send_get(upstream: &mut Upstream) -> Result<Answer, SendError> {
        let (parts, mut fields) = get();
        let forwarded = forwarded(&mut fields);
        upstream
            .send(
                &parts,
                &fields,
                &forwarded,
                "backend",
                &RequestBody::Empty,
                &Bounds::default(),
            )
            .await
    }

    /// Send a GET on `upstream` and read the whole answer.
    async fn exchange(
        mut upstream: Upstream,
    ) -> (StatusCode, Result<Vec<u8>, String>, Option<Upstream>) {
        let answer = send_get(&mut upstream).await.expect("an answer");
        let status = answer.status;
        let mut reader = Reader::new(upstream, &answer);
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
    async fn chunked_bodies_in_any_pieces_then_the_connection_is_reused() {
        let addr = scripted(vec![
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
        ])
        .await;
        let pool = crate::pool::Pool::new(crate::pool::PoolSettings::default());
        let upstream = pool.checkout(&addr.to_string()).await.expect("connect");
        let (status, body, again) = exchange(upstream).await;
        assert_eq!(
            (status, body.as_deref()),
            (StatusCode::OK, Ok(&b"hello world"[..]))
        );
        let again = again.expect("reusable after the last chunk and trailers");
        let (status, body, again) = exchange(again).await;
        assert_eq!(
            (status, body.as_deref()),
            (StatusCode::CREATED, Ok(&b"ok"[..]))
        );
        assert!(again.is_some_and(|u| u.reused));
    }

    #[tokio::test]
    async fn a_body_until_close_ends_at_the_close_and_a_cut_body_is_an_error() {
        let pool = crate::pool::Pool::new(crate::pool::PoolSettings::default());
        let addr = scripted(vec![(vec![b"HTTP/1.1 200 OK\r\n\r\nab", b"c"], true)]).await;
        let upstream = pool.checkout(&addr.to_string()).await.expect("connect");
        let (_, body, again) = exchange(upstream).await;
        assert_eq!(body.as_deref(), Ok(&b"abc"[..]));
        assert!(
            again.is_none(),
            "a body that ran to the close leaves no connection"
        );

        let addr = scripted(vec![(
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"],
            true,
        )])
        .await;
        let upstream = pool.checkout(&addr.to_string()).await.expect("connect");
        let (_, body, again) = exchange(upstream).await;
        assert!(body.is_err_and(|e| e.contains("before the end of the body")));
        assert!(again.is_none());

        let addr = scripted(vec![(vec![], true)]).await;
        let mut upstream = pool.checkout(&addr.to_string()).await.expect("connect");
        let e = send_get(&mut upstream).await.expect_err("no answer");
        assert!(matches!(e, SendError::Closed) && !e.unsent(), "{e}");
    }

    #[tokio::test]
    async fn a_connection_reset_before_the_request_left_is_unsent() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (reset_tx, reset_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            // Closing with a zero linger resets the connection.
            stream.set_zero_linger().expect("linger");
            drop(stream);
            let _ = reset_tx.send(());
        });
        let pool = crate::pool::Pool::new(crate::pool::PoolSettings::default());
        let mut upstream = pool.checkout(&addr.to_string()).await.expect("connect");
        reset_rx.await.expect("reset");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let e = send_get(&mut upstream)
            .await
            .expect_err("the connection was reset");
        assert!(
            e.unsent(),
            "nothing left the router, so it may be retried: {e}"
        );
    }
}
