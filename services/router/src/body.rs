//! Body types. Nothing is buffered: request bodies stream to the backend,
//! response bodies stream back to the client.
//!
//! - [`RequestBody`]/[`OutBody`]: the client's body ([`ClientBody`], read
//!   from the client's connection), which can be handed to a second
//!   attempt as long as the first never started reading it, and which is
//!   cut when it grows past the body limit.
//! - [`ProxyBody`]: a response body: a short local answer, the backend's
//!   body holding the endpoint's in-flight count until its end (when its
//!   connection goes back to the pool), or the tunnel that follows a 101.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::AsyncWrite;

use crate::codec::{DecodeError, Decoder, Framing};
use crate::conn::ClientIo;
use crate::endpoint::InFlight;
use crate::tunnel::Tunnel;
use crate::upstream::Reader;

/// Boxed error of the bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The client's request body, shared by the attempts of one request: the
/// first attempt that polls it takes it, and later attempts can no longer
/// be made. The connection takes it back once the answer is in
/// ([`RequestBody::reclaim`]).
#[derive(Debug, Clone)]
pub enum RequestBody {
    /// No body at all: every attempt may be made.
    Empty,
    /// A body, and the limit past which it is cut.
    Streaming(Arc<Shared>, u64),
}

/// The state of a streaming request body shared by its attempts.
#[derive(Debug)]
pub struct Shared {
    /// The body, unless an attempt is reading it.
    body: Mutex<Option<ClientBody>>,
    /// Set when an attempt started reading the body.
    started: AtomicBool,
    /// What went wrong with the body, if anything ([`Fault`] as a number, 0 for nothing).
    fault: AtomicU8,
}

/// Why a client's request body could not be forwarded: the client's
/// doing, so the client gets a 4xx ([`Fault::status`]) and the backend
/// connection that got part of it is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Larger than the body limit (413).
    TooLarge = 1,
    /// Its framing is broken: a bad chunk (400).
    Malformed = 2,
    /// It came too slowly: a pause past the body idle bound, or the whole
    /// body past the request body bound (408).
    TimedOut = 3,
}

impl Fault {
    /// The status the client gets.
    pub fn status(self) -> hyper::StatusCode {
        match self {
            Fault::TooLarge => hyper::StatusCode::PAYLOAD_TOO_LARGE,
            Fault::Malformed => hyper::StatusCode::BAD_REQUEST,
            Fault::TimedOut => hyper::StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// The text of the client's answer.
    pub fn text(self) -> &'static str {
        match self {
            Fault::TooLarge => "request body too large\n",
            Fault::Malformed => "bad request body\n",
            Fault::TimedOut => "request body timed out\n",
        }
    }

    fn from_u8(n: u8) -> Option<Self> {
        match n {
            1 => Some(Fault::TooLarge),
            2 => Some(Fault::Malformed),
            3 => Some(Fault::TimedOut),
            _ => None,
        }
    }
}

impl RequestBody {
    /// Wrap the client's body, to be cut past `limit` bytes. A body whose
    /// Content-Length is past the limit is too large from the start.
    pub fn new(body: ClientBody, limit: u64) -> Self {
        let declared_too_large = body.decoder.remaining().is_some_and(|n| n > limit);
        let fault = if declared_too_large {
            Fault::TooLarge as u8
        } else {
            0
        };
        let shared = Shared {
            body: Mutex::new(Some(body)),
            started: AtomicBool::new(false),
            fault: AtomicU8::new(fault),
        };
        RequestBody::Streaming(Arc::new(shared), limit)
    }

    /// True when the request has no body.
    pub fn is_empty(&self) -> bool {
        matches!(self, RequestBody::Empty)
    }

    /// True while no attempt has started reading the body, so that another
    /// attempt would send the same request.
    pub fn replayable(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Streaming(shared, _) => !shared.started.load(Ordering::Relaxed),
        }
    }

    /// What went wrong with the body: too large from the start (its
    /// Content-Length is past the limit) or once cut, or broken framing.
    pub fn fault(&self) -> Option<Fault> {
        match self {
            RequestBody::Empty => None,
            RequestBody::Streaming(shared, _) => {
                Fault::from_u8(shared.fault.load(Ordering::Relaxed))
            }
        }
    }

    /// The body of one attempt.
    pub fn attempt(&self) -> OutBody {
        OutBody {
            source: self.clone(),
            taken: None,
            sent: 0,
        }
    }

    /// The client's body (and with it the client's connection) back, once
    /// no attempt holds it.
    pub fn reclaim(&self) -> Option<ClientBody> {
        match self {
            RequestBody::Empty => None,
            RequestBody::Streaming(shared, _) => shared.slot().take(),
        }
    }
}

impl Shared {
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<ClientBody>> {
        self.body.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The body of a client's request, read from the client's connection,
/// which it holds while the request is being forwarded.
#[derive(Debug)]
pub struct ClientBody {
    io: ClientIo,
    decoder: Decoder,
    /// Bytes of `100 Continue` still to write before the body is read
    /// (the client sent `Expect: 100-continue`).
    continue_left: usize,
}

/// The interim answer to `Expect: 100-continue`.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

impl ClientBody {
    /// The body framed as `framing` on `io`; `expect_continue` when the
    /// client waits for `100 Continue` before sending it.
    pub fn new(io: ClientIo, framing: Framing, expect_continue: bool) -> Self {
        ClientBody {
            io,
            decoder: Decoder::new(framing),
            continue_left: if expect_continue { CONTINUE.len() } else { 0 },
        }
    }

    /// The connection, how much of the body is left to read, and whether
    /// the client is still waiting for `100 Continue` (so never sent it).
    pub fn into_parts(self) -> (ClientIo, Decoder, bool) {
        let waiting = self.continue_left == CONTINUE.len();
        (self.io, self.decoder, waiting)
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        while this.continue_left > 0 {
            let rest = &CONTINUE[CONTINUE.len() - this.continue_left..];
            match Pin::new(&mut this.io.stream).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Some(Err(io::Error::from(io::ErrorKind::WriteZero).into())))
                }
                Poll::Ready(Ok(n)) => this.continue_left -= n,
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Pending => return Poll::Pending,
            }
        }
        this.decoder
            .poll_data(&mut this.io.stream, &mut this.io.buf, cx)
            .map(|step| step.map(|data| data.map(Frame::data).map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder.remaining() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

/// The body of one attempt to a backend.
#[derive(Debug)]
pub struct OutBody {
    source: RequestBody,
    taken: Option<ClientBody>,
    sent: u64,
}

impl Drop for OutBody {
    fn drop(&mut self) {
        // The connection needs its socket back, whatever became of the attempt.
        if let (Some(body), RequestBody::Streaming(shared, _)) = (self.taken.take(), &self.source) {
            *shared.slot() = Some(body);
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the request body was already sent to another backend")]
struct BodyGone;

/// The client sent its request body too slowly ([`Fault::TimedOut`]).
#[derive(Debug, thiserror::Error)]
#[error("the request body came too slowly")]
pub struct BodyTimedOut;

/// The request body grew past the limit.
#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than the limit")]
pub struct BodyTooLarge;

impl OutBody {
    /// Give up on the body because the client sent it too slowly: the
    /// error the attempt ends with, the fault noted for the answer.
    pub fn timed_out(&self) -> BoxError {
        if let RequestBody::Streaming(shared, _) = &self.source {
            shared.fault.store(Fault::TimedOut as u8, Ordering::Relaxed);
        }
        Box::new(BodyTimedOut)
    }
}

impl Body for OutBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let (shared, limit) = match &self.source {
            RequestBody::Empty => return Poll::Ready(None),
            RequestBody::Streaming(shared, limit) => (shared.clone(), *limit),
        };
        if self.taken.is_none() {
            if shared.started.swap(true, Ordering::Relaxed) {
                return Poll::Ready(Some(Err(Box::new(BodyGone))));
            }
            match shared.slot().take() {
                Some(b) => self.taken = Some(b),
                None => return Poll::Ready(Some(Err(Box::new(BodyGone)))),
            }
        }
        let Some(body) = self.taken.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = match Pin::new(body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => {
                if matches!(
                    e.downcast_ref::<DecodeError>(),
                    Some(DecodeError::BadChunk(_))
                ) {
                    shared
                        .fault
                        .store(Fault::Malformed as u8, Ordering::Relaxed);
                }
                return Poll::Ready(Some(Err(e)));
            }
            other => return other,
        };
        if let Some(data) = frame.data_ref() {
            self.sent += data.len() as u64;
            if self.sent > limit {
                shared.fault.store(Fault::TooLarge as u8, Ordering::Relaxed);
                return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        match (&self.taken, &self.source) {
            (Some(b), _) => b.is_end_stream(),
            (None, RequestBody::Empty) => true,
            (None, RequestBody::Streaming(shared, _)) => {
                shared.slot().as_ref().is_none_or(ClientBody::is_end_stream)
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.taken, &self.source) {
            (Some(b), _) => b.size_hint(),
            (None, RequestBody::Empty) => SizeHint::with_exact(0),
            (None, RequestBody::Streaming(shared, _)) => shared
                .slot()
                .as_ref()
                .map(ClientBody::size_hint)
                .unwrap_or_default(),
        }
    }
}

/// A response body sent to the client.
#[derive(Debug)]
pub struct ProxyBody {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    /// An answer of the router itself (404, 502, 503).
    Local(Full<Bytes>),
    /// The backend's body; the guard counts the request in flight until the
    /// body ends or the client goes away, and the connection goes back to
    /// the pool at the end.
    Upstream { body: Reader, guard: InFlight },
    /// After a 101: the backend's connection, to splice with the client's
    /// (`None` once taken).
    Tunnel(Option<Box<Tunnel>>),
}

impl ProxyBody {
    /// A short local body.
    pub fn local(text: impl Into<Bytes>) -> Self {
        ProxyBody {
            inner: Inner::Local(Full::new(text.into())),
        }
    }

    /// The backend's body, counted by `guard`.
    pub fn upstream(body: Reader, guard: InFlight) -> Self {
        let mut inner = Inner::Upstream { body, guard };
        inner.release_if_done();
        ProxyBody { inner }
    }

    /// No body: the connection becomes `tunnel` once the 101 is written.
    pub fn tunnel(tunnel: Tunnel) -> Self {
        ProxyBody {
            inner: Inner::Tunnel(Some(Box::new(tunnel))),
        }
    }

    /// Whether this is an answer of the router itself.
    pub fn is_local(&self) -> bool {
        matches!(self.inner, Inner::Local(_))
    }

    /// The tunnel that follows this (101) answer, if any.
    pub fn take_tunnel(&mut self) -> Option<Tunnel> {
        match &mut self.inner {
            Inner::Tunnel(tunnel) => tunnel.take().map(|t| *t),
            _ => None,
        }
    }
}

impl Inner {
    /// Give the connection back once the body is read to its end.
    fn release_if_done(&mut self) {
        if let Inner::Upstream { body, guard } = self {
            if let Some(upstream) = body.take_reusable() {
                guard.endpoint().pool.release(upstream);
            }
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match &mut this.inner {
            Inner::Local(full) => Pin::new(full).poll_frame(cx).map_err(|e| match e {}),
            Inner::Upstream { body, .. } => {
                let polled = Pin::new(body).poll_frame(cx);
                if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Ok(_)))) {
                    this.inner.release_if_done();
                }
                polled
            }
            Inner::Tunnel(_) => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Local(full) => full.is_end_stream(),
            Inner::Upstream { body, .. } => body.is_end_stream(),
            Inner::Tunnel(_) => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Local(full) => full.size_hint(),
            Inner::Upstream { body, .. } => body.size_hint(),
            Inner::Tunnel(_) => SizeHint::with_exact(0),
        }
    }
}
