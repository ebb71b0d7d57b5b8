//! The request body as the server reads it off the client's connection
//! ([`RequestBody`]), handed to the handler by reference: the handler's
//! client streams it on as any [`Body`], and the connection has it back,
//! with its socket, once the handler has answered. Nothing is buffered,
//! nothing is shared: no lock, no reference count.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http_body::{Body, Frame, SizeHint};

use crate::io::Io;
use crate::wire::codec::{DecodeError, Decoder, Framing};
use crate::BoxError;

/// The interim answer to `Expect: 100-continue`.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Why a client's request body could not be forwarded: the client's
/// doing, so the client gets a 4xx ([`Fault::status`]) and whatever got
/// part of it is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Larger than the body limit (413).
    TooLarge,
    /// Its framing is broken: a bad chunk (400).
    Malformed,
    /// It came too slowly: a pause past the body idle bound, or the whole
    /// body past the request body bound (408).
    TimedOut,
}

impl Fault {
    /// The status the client gets.
    pub fn status(self) -> StatusCode {
        match self {
            Fault::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Fault::Malformed => StatusCode::BAD_REQUEST,
            Fault::TimedOut => StatusCode::REQUEST_TIMEOUT,
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
}

/// The request body grew past the limit.
#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than the limit")]
pub struct BodyTooLarge;

/// A client connection's stream and the bytes read from it that no
/// request has consumed yet.
#[derive(Debug)]
pub(crate) struct ClientIo<S> {
    /// The stream.
    pub stream: S,
    /// Read and not yet consumed.
    pub buf: BytesMut,
}

/// The body of a client's request, read from the client's connection,
/// which it holds while the request is handled. Cut past the body limit.
#[derive(Debug)]
pub struct RequestBody<S> {
    io: ClientIo<S>,
    decoder: Decoder,
    /// Bytes of `100 Continue` still to write before the body is read
    /// (the client sent `Expect: 100-continue`).
    continue_left: usize,
    /// Past this many bytes the body is cut.
    limit: u64,
    /// Body bytes read so far.
    read: u64,
    /// Set once the body was polled: it can no longer be sent whole again.
    started: bool,
    /// What went wrong with the body, if anything.
    fault: Option<Fault>,
}

impl<S: Io> RequestBody<S> {
    /// The body framed as `framing` on `io`; `expect_continue` when the
    /// client waits for `100 Continue` before sending it. A body whose
    /// Content-Length is past `limit` is too large from the start.
    pub(crate) fn new(
        io: ClientIo<S>,
        framing: Framing,
        expect_continue: bool,
        limit: u64,
    ) -> Self {
        let decoder = Decoder::new(framing);
        let declared_too_large = decoder.remaining().is_some_and(|n| n > limit);
        RequestBody {
            io,
            decoder,
            continue_left: if expect_continue { CONTINUE.len() } else { 0 },
            limit,
            read: 0,
            started: false,
            fault: declared_too_large.then_some(Fault::TooLarge),
        }
    }

    /// True when the request has no body at all.
    pub fn is_empty(&self) -> bool {
        self.decoder.is_done() && !self.started
    }

    /// True while nothing of the body was read, so that the request can be
    /// sent again, whole, somewhere else.
    pub fn replayable(&self) -> bool {
        !self.started
    }

    /// What went wrong with the body: too large from the start (its
    /// Content-Length is past the limit) or once cut, broken framing, or
    /// too slow ([`RequestBody::fail`]).
    pub fn fault(&self) -> Option<Fault> {
        self.fault
    }

    /// Note that the body's sender gave up on it for `fault` (it came too
    /// slowly): the connection will not read the rest of it.
    pub fn fail(&mut self, fault: Fault) {
        self.fault = Some(fault);
    }

    /// The connection, the body's decoder (how much is left to read), and
    /// whether the client is still waiting for `100 Continue` (so never
    /// sent it).
    pub(crate) fn into_parts(self) -> (ClientIo<S>, Decoder, bool) {
        let waiting = self.continue_left == CONTINUE.len();
        (self.io, self.decoder, waiting)
    }
}

impl<S: Io> Body for RequestBody<S> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        this.started = true;
        if this.fault == Some(Fault::TooLarge) {
            return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
        }
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
        match this
            .decoder
            .poll_data(&mut this.io.stream, &mut this.io.buf, cx)
        {
            Poll::Ready(Some(Ok(data))) => {
                this.read += data.len() as u64;
                if this.read > this.limit {
                    this.fault = Some(Fault::TooLarge);
                    return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(Some(Err(e))) => {
                if matches!(e, DecodeError::BadChunk(_)) {
                    this.fault = Some(Fault::Malformed);
                }
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
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
