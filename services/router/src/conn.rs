//! One client connection: the router's own HTTP/1.1 server side.
//!
//! Requests are read one after another (pipelined ones too) with
//! [`crate::request::parse`], handed to the [`Proxy`], and the answer is
//! written back: Content-Length when the length is known, else chunked
//! (or, for an HTTP/1.0 client, until the connection closes); the first
//! piece of the body goes out in the same write as the head. A 101 turns
//! the connection into a [`crate::tunnel::Tunnel`].
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
//! before the request is forwarded ([`crate::codec::Decoder::check`]): a
//! body broken from its start gets 400 and reaches no backend. A HEAD
//! answer from a backend keeps its length fields and gets none invented.
//!
//! A request body left unread when the answer is written (the router
//! answered without forwarding it, or the backend answered early) is read
//! and dropped, up to [`DRAIN_MAX`] bytes, so that the connection can be
//! kept; past that the connection is closed after the answer.

use std::future::{poll_fn, Future};
use std::io::{self, IoSlice, Write as _};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Body;
use hyper::header::CONTENT_LENGTH;
use hyper::{Method, StatusCode, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use crate::body::{BoxError, ClientBody, Fault, RequestBody};
use crate::bounds::within_for;
use crate::codec::{self, Decoder, Framing};
use crate::headers::{push_field, Peer, X_REQUEST_ID};
use crate::proxy::{local, Outgoing, Proxy};
use crate::request::{self, Head, Refusal};
use crate::server::Limits;
use crate::tunnel::Tunnel;

/// Room taken for a request head when the client's bytes arrive.
const HEAD_BUFFER: usize = 4 * 1024;
/// Most bytes of an unread request body dropped to keep the connection.
pub const DRAIN_MAX: u64 = 64 * 1024;
/// Longest wait for an unread request body, or for a closing client.
const DRAIN_TIME: Duration = Duration::from_secs(1);
/// Most bytes of a chunked request body read ahead, without waiting, to
/// check its framing before the request is forwarded.
const CHECK_AHEAD: usize = 16 * 1024;

/// The two timeouts of a client connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Time to receive a request's head.
    pub header: Duration,
    /// Time a connection may wait, idle, for its next request.
    pub idle: Duration,
}

/// A client connection's socket and the bytes read from it that no
/// request has consumed yet.
#[derive(Debug)]
pub struct ClientIo {
    /// The socket.
    pub stream: TcpStream,
    /// Read and not yet consumed.
    pub buf: BytesMut,
}

/// Why no request comes next on a connection.
enum Stop {
    /// The client left, stayed idle too long, or the router is stopping.
    Close,
    /// A head the router will not take: answered, then the connection closes.
    Refuse(StatusCode, &'static str),
}

/// Serve the requests of one client (`client`: its address, as the proxy
/// writes it, and whether it is a trusted proxy) until it leaves, breaks a
/// limit, or `closing` is cancelled (then at the end of the request in
/// flight, if any).
pub async fn serve(
    stream: TcpStream,
    client: Peer,
    proxy: Arc<Proxy>,
    limits: Limits,
    closing: CancellationToken,
) {
    let mut io = ClientIo {
        stream,
        buf: BytesMut::new(),
    };
    let mut deadline = Deadline::after(limits.timeouts.header);
    let mut first = true;
    loop {
        let head = match next_head(&mut io, &mut deadline, &limits, &closing, first).await {
            Ok(head) => head,
            Err(Stop::Close) => return,
            Err(Stop::Refuse(status, why)) => {
                // Boxed, like a request: rare, and no weight on idle connections.
                Box::pin(refuse(io, status, why, proxy.bounds().body_idle)).await;
                return;
            }
        };
        first = false;
        if let Err(e) = check_body(&mut io, head.framing) {
            // Broken from its first bytes: refused before anything is forwarded.
            tracing::debug!(error = %e, "request body refused");
            let idle = proxy.bounds().body_idle;
            Box::pin(refuse(
                io,
                StatusCode::BAD_REQUEST,
                "bad request body",
                idle,
            ))
            .await;
            return;
        }
        // Boxed: the state of a request exists only while one is in flight.
        let exchange = Box::pin(exchange(io, head, &proxy, &client, &closing)).await;
        match exchange {
            Some(next) => io = next,
            None => return,
        }
    }
}

/// Check the framing of a chunked request body on the bytes the client
/// already sent (those buffered, and what the socket holds, up to
/// [`CHECK_AHEAD`], without waiting): a body broken from the start is
/// refused before anything of the request is forwarded. A body broken
/// later is found while it is forwarded (then 400, and the backend
/// connection closed).
fn check_body(io: &mut ClientIo, framing: Framing) -> Result<(), codec::DecodeError> {
    if framing != Framing::Chunked {
        return Ok(());
    }
    let decoder = Decoder::new(framing);
    while !decoder.check(&io.buf)? && io.buf.len() < CHECK_AHEAD {
        codec::reserve(&mut io.buf, codec::READ_SIZE);
        match io.stream.try_read_buf(&mut io.buf) {
            Ok(n) if n > 0 => {}
            // Nothing more yet, the end, or an error the body's reader will meet.
            _ => break,
        }
    }
    Ok(())
}

/// Answer a head the router will not take, then close.
async fn refuse(mut io: ClientIo, status: StatusCode, why: &'static str, idle: Duration) {
    tracing::debug!(status = status.as_u16(), why, "request refused");
    let text = match status {
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "request head too large\n",
        StatusCode::NOT_IMPLEMENTED => "not implemented\n",
        _ => "bad request\n",
    };
    let mut keep = false;
    if respond(
        &mut io,
        local(status, text),
        Reply::default(),
        &mut keep,
        idle,
    )
    .await
    .is_ok()
    {
        linger(io).await;
    }
}

/// Answer one request; the connection back when it can carry another.
async fn exchange(
    mut io: ClientIo,
    head: Head,
    proxy: &Proxy,
    client: &Peer,
    closing: &CancellationToken,
) -> Option<ClientIo> {
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
    let mut too_slow = false;
    let (resp, unread) = if framing == Framing::Empty {
        let resp = proxy.handle(parts, fields, RequestBody::Empty, client);
        (resp.await, None)
    } else {
        let body = ClientBody::new(io, framing, expect_continue);
        let body = RequestBody::new(body, proxy.max_body_bytes());
        let resp = proxy.handle(parts, fields, body.clone(), client).await;
        let fault = body.fault();
        let Some(body) = body.reclaim() else {
            // Every attempt gives the body back when it ends.
            tracing::error!("a request body was not given back; closing its connection");
            return None;
        };
        let (back, decoder, waiting) = body.into_parts();
        io = back;
        too_slow = fault == Some(Fault::TimedOut);
        (resp, (!decoder.is_done()).then_some((decoder, waiting)))
    };
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
    let tunnel = match respond(&mut io, resp, reply, &mut keep, proxy.bounds().body_idle).await {
        Ok(tunnel) => tunnel,
        Err(e) => {
            tracing::debug!(error = %e, "answer not sent in full; closing the client connection");
            return None;
        }
    };
    if let Some(tunnel) = tunnel {
        let ClientIo { stream, buf } = io;
        tunnel.run(stream, buf).await;
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
async fn next_head(
    io: &mut ClientIo,
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
            deadline.set(Instant::now() + limits.timeouts.idle);
        }
        // Polled by hand rather than with `select!`: the state of this wait
        // is what every idle connection carries.
        let mut cancelled = std::pin::pin!(closing.cancelled());
        let ready = poll_fn(|cx| {
            if cancelled.as_mut().poll(cx).is_ready() {
                return Poll::Ready(false);
            }
            if let Poll::Ready(ready) = io.stream.poll_read_ready(cx) {
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
                deadline.set(Instant::now() + limits.timeouts.header);
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

/// What the answer depends on in the request.
#[derive(Debug, Default, Clone, Copy)]
struct Reply {
    /// A HEAD request: the answer has no body, whatever its headers say.
    head_request: bool,
    /// An HTTP/1.0 client: no chunked coding, keep-alive only if asked.
    http10: bool,
}

/// How the body goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    /// No body.
    None,
    /// As is (its length was given, or it runs to the close).
    Raw,
    /// Chunked.
    Chunked,
}

/// Write `resp` to the client; `keep` says whether the connection stays
/// open and is cleared when the answer can only end with the close. The
/// tunnel, if the answer is a 101 that opens one. The body's pieces must
/// come from the backend, and be taken by the client, each within `idle`.
async fn respond(
    io: &mut ClientIo,
    resp: Outgoing,
    reply: Reply,
    keep: &mut bool,
    idle: Duration,
) -> Result<Option<Tunnel>, BoxError> {
    let Outgoing {
        status,
        headers,
        passed,
        request_id,
        mut body,
    } = resp;
    let tunnel = if status == StatusCode::SWITCHING_PROTOCOLS {
        body.take_tunnel()
    } else {
        None
    };
    let mut head = Vec::with_capacity(128 + (headers.len() + passed.len()) * 48);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in &headers {
        push_field(&mut head, name.as_str().as_bytes(), value.as_bytes());
    }
    passed.write_to(&mut head);
    if let Some(id) = request_id {
        push_field(&mut head, X_REQUEST_ID, id.as_bytes());
    }
    // RFC 9112 §6.3: 1xx, 204 and 304 never have a body nor framing of
    // their own; a HEAD answer keeps the length the GET would have.
    let no_framing = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let coding = if no_framing {
        Coding::None
    } else if headers.contains_key(CONTENT_LENGTH) || passed.has_length() {
        Coding::Raw
    } else if reply.head_request && !body.is_local() {
        // The backend's answer to HEAD: its length fields go as they came
        // (above), none is invented, and a coded body is announced as the
        // router would send it.
        if passed.is_coded() && !reply.http10 {
            head.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        Coding::None
    } else if let Some(n) = body.size_hint().exact() {
        let _ = write!(head, "content-length: {n}\r\n");
        Coding::Raw
    } else if reply.head_request {
        Coding::None
    } else if reply.http10 {
        *keep = false;
        Coding::Raw
    } else {
        head.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Coding::Chunked
    };
    let coding = if reply.head_request {
        Coding::None
    } else {
        coding
    };
    if tunnel.is_none() {
        if !*keep {
            head.extend_from_slice(b"connection: close\r\n");
        } else if reply.http10 {
            head.extend_from_slice(b"connection: keep-alive\r\n");
        }
    }
    head.extend_from_slice(b"\r\n");
    if coding == Coding::None {
        write_all(&mut io.stream, &[&head], idle).await?;
        return Ok(tunnel);
    }
    // The first piece of the body, if it is already there, goes with the head.
    let mut ready = match poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
        Poll::Ready(frame) => Some(frame),
        Poll::Pending => {
            write_all(&mut io.stream, &[&head], idle).await?;
            head.clear();
            None
        }
    };
    loop {
        let frame = match ready.take() {
            Some(frame) => frame,
            // A backend that stalls mid-body is cut (its head has gone).
            None => within_for(idle, body.frame())
                .await
                .ok_or_else(|| timed_out("the backend's answer stalled"))?,
        };
        let data = match frame {
            None => Bytes::new(),
            Some(Err(e)) => return Err(e),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                _ => continue, // trailers: not forwarded; empty frames
            },
        };
        let end = data.is_empty() || body.is_end_stream();
        if coding == Coding::Raw {
            write_all(&mut io.stream, &[&head, &data], idle).await?;
        } else {
            let mut size = [0u8; 20];
            let size = chunk_size(&data, &mut size);
            let tail: &[u8] = match (data.is_empty(), end) {
                (true, _) => b"0\r\n\r\n",
                (false, true) => b"\r\n0\r\n\r\n",
                (false, false) => b"\r\n",
            };
            write_all(&mut io.stream, &[&head, size, &data, tail], idle).await?;
        }
        head.clear();
        if end {
            return Ok(None);
        }
    }
}

/// The error of a body that stalled past the body idle bound.
fn timed_out(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what)
}

/// The chunk-size line of `data` (nothing for the last, empty chunk).
fn chunk_size<'a>(data: &[u8], out: &'a mut [u8; 20]) -> &'a [u8] {
    if data.is_empty() {
        return &[];
    }
    let mut cursor = io::Cursor::new(&mut out[..]);
    let _ = write!(cursor, "{:x}\r\n", data.len());
    let len = usize::try_from(cursor.position()).unwrap_or(0);
    &out[..len]
}

/// Write every piece, in as few system calls as the socket allows; an
/// error when the client takes nothing for `idle`.
async fn write_all(stream: &mut TcpStream, pieces: &[&[u8]], idle: Duration) -> io::Result<()> {
    let mut slices = [IoSlice::new(&[]); 4];
    for (slice, piece) in slices.iter_mut().zip(pieces) {
        *slice = IoSlice::new(piece);
    }
    let mut left = &mut slices[..pieces.len().min(4)];
    IoSlice::advance_slices(&mut left, 0);
    while !left.is_empty() {
        let n = within_for(idle, stream.write_vectored(left))
            .await
            .ok_or_else(|| timed_out("the client stopped reading the answer"))??;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut left, n);
    }
    Ok(())
}

/// Read and drop the rest of a request body; false when it is longer
/// than [`DRAIN_MAX`], slower than [`DRAIN_TIME`], or broken.
async fn drain_body(io: &mut ClientIo, mut decoder: Decoder) -> bool {
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
async fn linger(mut io: ClientIo) {
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
