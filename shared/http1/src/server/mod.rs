//! One client connection: the HTTP/1.1 server side, over any [`Io`]
//! stream, answering through a [`Handler`].
//!
//! Requests are read one after another (pipelined ones too) with
//! [`crate::wire::request::parse`], handed to the handler with their body
//! ([`RequestBody`], which the handler may stream on), and the answer is
//! written back: Content-Length when the length is known, else chunked
//! (or, for an HTTP/1.0 client, until the connection closes); the first
//! piece of the body goes out in the same write as the head. A 101 with
//! an upgrade hands the connection to [`Handler::upgrade`].
//!
//! An idle connection holds no buffer: one is taken when the client's next
//! bytes arrive, and the request's state lives in a box that goes with the
//! answer, so the many idle keep-alive connections of a busy site cost
//! little more than their sockets.
//!
//! Two timeouts:
//!
//! - **header timeout** (slowloris): from the connection's start, or from
//!   the first byte of a later request, the request's head must arrive
//!   within it, else the connection is closed;
//! - **idle timeout**: a keep-alive connection with no request in flight
//!   and no byte received for that long is closed.
//!
//! Neither applies while a request is in flight: the bounds of
//! [`crate::bounds`] do (the response head, the pause between two pieces
//! of a body either way, the whole request body), so a long download that
//! keeps moving is never cut, and a stalled one always is.
//!
//! A chunked request body is checked on the bytes the client already sent
//! before the request is handed over ([`crate::wire::codec::Decoder::check`]):
//! a body broken from its start gets 400 and reaches no backend. A HEAD
//! answer passed on from a backend keeps its length fields and gets none
//! invented.
//!
//! A request body left unread when the answer is written (the handler
//! answered without reading it, or its backend answered early) is read
//! and dropped, up to [`DRAIN_MAX`] bytes, so that the connection can be
//! kept; past that the connection is closed after the answer.

mod body;
mod respond;

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, DATE};
use http::request::Parts;
use http::{Method, StatusCode, Version};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

pub use body::{BodyTooLarge, Fault, RequestBody};

use crate::io::Io;
use crate::wire::codec::{self, Decoder, Framing};
use crate::wire::fields::{Passed, RawFields};
use crate::wire::request::{self, Head, Refusal};
use crate::BoxError;
use body::ClientIo;
use respond::{respond, Reply};

/// Room taken for a request head when the client's bytes arrive.
const HEAD_BUFFER: usize = 4 * 1024;
/// Most bytes of an unread request body dropped to keep the connection.
pub const DRAIN_MAX: u64 = 64 * 1024;
/// Longest wait for an unread request body, or for a closing client.
const DRAIN_TIME: Duration = Duration::from_secs(1);
/// Most bytes of a chunked request body read ahead, without waiting, to
/// check its framing before the request is handed over.
const CHECK_AHEAD: usize = 16 * 1024;

/// How the server treats one client connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time to receive a request's head.
    pub header_timeout: Duration,
    /// Time a connection may wait, idle, for its next request.
    pub idle_timeout: Duration,
    /// Largest request head, in bytes (431 beyond it).
    pub max_header_bytes: usize,
    /// Largest request body, in bytes (413 beyond it, [`Fault::TooLarge`]).
    pub max_body_bytes: u64,
    /// Longest pause in writing an answer (the body idle bound of
    /// [`crate::bounds`]): the handler's body must give its next piece,
    /// and the client take the last, within it.
    pub body_idle: Duration,
}

/// A request as the handler gets it: its head and fields, the body apart.
#[derive(Debug)]
pub struct Request {
    /// Method, target and version (its header map is empty: see `fields`).
    pub parts: Parts,
    /// The header fields, as sent (`Expect: 100-continue` removed: the
    /// server sends the `100 Continue` when the body is first read).
    pub fields: RawFields,
}

/// An answer to write back.
#[derive(Debug)]
pub struct Response<B, U> {
    /// The status.
    pub status: StatusCode,
    /// Fields the handler sets.
    pub headers: HeaderMap,
    /// Fields passed on from a peer as they came, `None` in the handler's
    /// own answers. An answer to HEAD passed on keeps its length fields
    /// and gets none invented.
    pub passed: Option<Passed>,
    /// One more field, written last, without a header map (no
    /// allocation); the router's request id, say.
    pub last: Option<(HeaderName, HeaderValue)>,
    /// The body.
    pub body: B,
    /// With a 101: what takes the connection over once the head is
    /// written ([`Handler::upgrade`]).
    pub upgrade: Option<U>,
}

impl<B, U> Response<B, U> {
    /// A short plain-text answer, dated (RFC 9110 §6.6.1), with `body`.
    pub fn text(status: StatusCode, body: B) -> Self {
        let mut headers = HeaderMap::with_capacity(3);
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        let now = httpdate::fmt_http_date(std::time::SystemTime::now());
        if let Ok(date) = HeaderValue::from_str(&now) {
            headers.insert(DATE, date);
        }
        Response {
            status,
            headers,
            passed: None,
            last: None,
            body,
            upgrade: None,
        }
    }
}

/// What answers a connection's requests.
pub trait Handler<S: Io>: Send {
    /// The answers' body.
    type Body: Body<Data = Bytes, Error = BoxError> + Unpin + Send;
    /// What takes a connection over after a 101.
    type Upgrade: Send;

    /// Answer `request`; its body is `body`, to read (or not) before the
    /// answer is returned. The connection reads what is left of the body
    /// afterwards, or closes.
    fn handle<'a>(
        &'a self,
        request: Request,
        body: &'a mut RequestBody<S>,
    ) -> impl Future<Output = Response<Self::Body, Self::Upgrade>> + Send + 'a;

    /// Take the connection over after a 101 was written: `client` and the
    /// bytes already read from it (`early`).
    fn upgrade(
        &self,
        upgrade: Self::Upgrade,
        client: S,
        early: BytesMut,
    ) -> impl Future<Output = ()> + Send;
}

/// Why no request comes next on a connection.
enum Stop {
    /// The client left, stayed idle too long, or the server is stopping.
    Close,
    /// A head the server will not take: answered, then the connection closes.
    Refuse(StatusCode, &'static str),
}

/// Serve the requests of one client on `stream` with `handler` until it
/// leaves, breaks a limit, or `closing` is cancelled (then at the end of
/// the request in flight, if any).
pub async fn serve<S: Io, H: Handler<S>>(
    stream: S,
    handler: H,
    limits: Limits,
    closing: CancellationToken,
) {
    let mut io = ClientIo {
        stream,
        buf: BytesMut::new(),
    };
    let mut deadline = Deadline::after(limits.header_timeout);
    let mut first = true;
    loop {
        let head = match next_head(&mut io, &mut deadline, &limits, &closing, first).await {
            Ok(head) => head,
            Err(Stop::Close) => return,
            Err(Stop::Refuse(status, why)) => {
                // Boxed, like a request: rare, and no weight on idle connections.
                Box::pin(refuse(io, status, why, limits.body_idle)).await;
                return;
            }
        };
        first = false;
        if let Err(e) = check_body(&mut io, head.framing).await {
            // Broken from its first bytes: refused before anything is forwarded.
            tracing::debug!(error = %e, "request body refused");
            Box::pin(refuse(
                io,
                StatusCode::BAD_REQUEST,
                "bad request body",
                limits.body_idle,
            ))
            .await;
            return;
        }
        // Boxed: the state of a request exists only while one is in flight.
        let exchange = Box::pin(exchange(io, head, &handler, &limits, &closing)).await;
        match exchange {
            Some(next) => io = next,
            None => return,
        }
    }
}

/// Check the framing of a chunked request body on the bytes the client
/// already sent (those buffered, and what the stream holds, up to
/// [`CHECK_AHEAD`], without waiting): a body broken from the start is
/// refused before anything of the request is handed over. A body broken
/// later is found while it is read (then 400, [`Fault::Malformed`]).
async fn check_body<S: Io>(
    io: &mut ClientIo<S>,
    framing: Framing,
) -> Result<(), codec::DecodeError> {
    if framing != Framing::Chunked {
        return Ok(());
    }
    let decoder = Decoder::new(framing);
    while !decoder.check(&io.buf)? && io.buf.len() < CHECK_AHEAD {
        codec::reserve(&mut io.buf, codec::READ_SIZE);
        // Polled once: what is there now, no wait.
        let read = poll_fn(|cx| {
            let read = tokio_util::io::poll_read_buf(Pin::new(&mut io.stream), cx, &mut io.buf);
            Poll::Ready(matches!(read, Poll::Ready(Ok(n)) if n > 0))
        })
        .await;
        if !read {
            // Nothing more yet, the end, or an error the body's reader will meet.
            break;
        }
    }
    Ok(())
}

/// Answer a head the server will not take, then close.
async fn refuse<S: Io>(mut io: ClientIo<S>, status: StatusCode, why: &'static str, idle: Duration) {
    tracing::debug!(status = status.as_u16(), why, "request refused");
    let text = match status {
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "request head too large\n",
        StatusCode::NOT_IMPLEMENTED => "not implemented\n",
        _ => "bad request\n",
    };
    let mut keep = false;
    let body = Full::new(Bytes::from_static(text.as_bytes())).map_err(|e| match e {});
    let answer: Response<_, std::convert::Infallible> = Response::text(status, body);
    let written = respond(&mut io.stream, answer, Reply::default(), &mut keep, idle).await;
    if written.is_ok() {
        linger(io).await;
    }
}

/// Answer one request; the connection back when it can carry another.
async fn exchange<S: Io, H: Handler<S>>(
    io: ClientIo<S>,
    head: Head,
    handler: &H,
    limits: &Limits,
    closing: &CancellationToken,
) -> Option<ClientIo<S>> {
    let Head {
        parts,
        fields,
        framing,
        keep_alive,
        expect_continue,
    } = head;
    let reply = Reply {
        head_request: parts.method == Method::HEAD,
        http10: parts.version == Version::HTTP_10,
    };
    let mut body = RequestBody::new(io, framing, expect_continue, limits.max_body_bytes);
    let resp = handler.handle(Request { parts, fields }, &mut body).await;
    let too_slow = body.fault() == Some(Fault::TimedOut);
    let (mut io, decoder, waiting) = body.into_parts();
    let unread = (!decoder.is_done()).then_some((decoder, waiting));
    let mut keep = keep_alive && !closing.is_cancelled();
    let drain = match unread {
        None => None,
        // Never asked for: the client may or may not send it.
        Some((_, true)) => {
            keep = false;
            None
        }
        // Broken framing, or a client too slow: nothing more is read.
        Some((decoder, _)) if decoder.is_broken() || too_slow => {
            keep = false;
            None
        }
        Some((decoder, false)) => {
            if decoder.remaining().is_some_and(|left| left > DRAIN_MAX) {
                keep = false;
            }
            Some(decoder)
        }
    };
    let upgrade = match respond(&mut io.stream, resp, reply, &mut keep, limits.body_idle).await {
        Ok(upgrade) => upgrade,
        Err(e) => {
            tracing::debug!(error = %e, "answer not sent in full; closing the client connection");
            return None;
        }
    };
    if let Some(upgrade) = upgrade {
        let ClientIo { stream, buf } = io;
        handler.upgrade(upgrade, stream, buf).await;
        return None;
    }
    if let Some(decoder) = drain {
        if keep && !drain_body(&mut io, decoder).await {
            keep = false;
        }
        if !keep {
            linger(io).await;
            return None;
        }
    }
    keep.then_some(io)
}

/// Wait for the next request head.
async fn next_head<S: Io>(
    io: &mut ClientIo<S>,
    deadline: &mut Deadline,
    limits: &Limits,
    closing: &CancellationToken,
    first: bool,
) -> Result<Head, Stop> {
    // A new connection's first head is due within the header timeout
    // (set at its start); a later one's first byte within the idle timeout.
    let mut head_started = first;
    if io.buf.is_empty() {
        // Idle: hold no buffer until the client sends something.
        io.buf = BytesMut::new();
        if !first {
            deadline.set(Instant::now() + limits.idle_timeout);
        }
        // Polled by hand rather than with `select!`: the state of this wait
        // is what every idle connection carries.
        let mut cancelled = std::pin::pin!(closing.cancelled());
        let ready = poll_fn(|cx| {
            if cancelled.as_mut().poll(cx).is_ready() {
                return Poll::Ready(false);
            }
            if let Poll::Ready(ready) = io.stream.poll_readable(cx) {
                return Poll::Ready(ready.is_ok());
            }
            deadline.poll(cx).map(|()| false)
        })
        .await;
        if !ready {
            return Err(Stop::Close);
        }
    }
    loop {
        if !io.buf.is_empty() {
            let buffered = io.buf.len();
            match request::parse(&mut io.buf) {
                // A whole head can arrive in one read past the limit.
                Ok(Some(_)) if buffered - io.buf.len() > limits.max_header_bytes => {
                    return Err(Stop::Refuse(
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        "request head too large",
                    ))
                }
                Ok(Some(head)) => return Ok(head),
                Ok(None) => {}
                Err(Refusal::TooManyHeaders) => {
                    return Err(Stop::Refuse(
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        "too many header fields",
                    ))
                }
                Err(Refusal::Bad(why)) => return Err(Stop::Refuse(StatusCode::BAD_REQUEST, why)),
                Err(Refusal::NotImplemented(why)) => {
                    return Err(Stop::Refuse(StatusCode::NOT_IMPLEMENTED, why))
                }
            }
            if io.buf.len() >= limits.max_header_bytes {
                return Err(Stop::Refuse(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "request head too large",
                ));
            }
            if !head_started {
                deadline.set(Instant::now() + limits.header_timeout);
                head_started = true;
            }
        }
        codec::reserve(&mut io.buf, HEAD_BUFFER);
        let read = poll_fn(|cx| {
            if let Poll::Ready(read) =
                tokio_util::io::poll_read_buf(Pin::new(&mut io.stream), cx, &mut io.buf)
            {
                return Poll::Ready(Some(read));
            }
            deadline.poll(cx).map(|()| None)
        })
        .await;
        match read {
            Some(Ok(n)) if n > 0 => {}
            Some(_) => return Err(Stop::Close),
            None => {
                if head_started {
                    tracing::debug!(
                        "request head not received in time; closing the client connection"
                    );
                }
                return Err(Stop::Close);
            }
        }
    }
}

/// Read and drop the rest of a request body; false when it is longer
/// than [`DRAIN_MAX`], slower than [`DRAIN_TIME`], or broken.
async fn drain_body<S: AsyncRead + Unpin>(io: &mut ClientIo<S>, mut decoder: Decoder) -> bool {
    let mut left = DRAIN_MAX;
    let drained = poll_fn(|cx| loop {
        match decoder.poll_data(&mut io.stream, &mut io.buf, cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => return Poll::Ready(true),
            Poll::Ready(Some(Ok(data))) if (data.len() as u64) <= left => {
                left -= data.len() as u64;
            }
            Poll::Ready(Some(_)) => return Poll::Ready(false),
        }
    });
    tokio::time::timeout(DRAIN_TIME, drained)
        .await
        .unwrap_or(false)
}

/// Close after an answer, reading (and dropping) what the client still
/// sends for a while: closing a socket with unread bytes would reset the
/// connection, and the reset can destroy the answer before the client
/// reads it. The bytes go through the connection's buffer, not an array
/// in this future: the future is part of every request's state.
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(mut io: ClientIo<S>) {
    let _ = io.stream.shutdown().await;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        loop {
            io.buf.clear();
            codec::reserve(&mut io.buf, HEAD_BUFFER);
            if !matches!(io.stream.read_buf(&mut io.buf).await, Ok(n) if n > 0) {
                break;
            }
        }
    })
    .await;
}

/// A deadline with one timer per connection, re-armed lazily (only when it
/// would fire too late, or when it fired early), so that a busy connection
/// costs no timer operation per request.
struct Deadline {
    timer: Pin<Box<Sleep>>,
    at: Instant,
}

impl Deadline {
    fn after(wait: Duration) -> Self {
        let at = Instant::now() + wait;
        Deadline {
            timer: Box::pin(tokio::time::sleep_until(at)),
            at,
        }
    }

    fn set(&mut self, at: Instant) {
        self.at = at;
    }

    /// Ready once the deadline has passed.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.timer.deadline() > self.at {
                let at = self.at;
                self.timer.as_mut().reset(at);
            }
            match self.timer.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) if Instant::now() >= self.at => return Poll::Ready(()),
                Poll::Ready(()) => {
                    let at = self.at;
                    self.timer.as_mut().reset(at);
                }
            }
        }
    }
}
