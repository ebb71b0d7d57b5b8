//! HTTP/1.1 framing, for requests and answers alike: the header fields
//! a message's framing depends on ([`Fields`]), and its body as it comes
//! off a socket (RFC 9112 §6 and §7.1): a Content-Length body, a chunked
//! one (chunk extensions and trailers are read and dropped), or one that
//! runs until the peer closes. Shared by the backends' answers
//! ([`crate::upstream`]) and the clients' requests ([`crate::request`],
//! [`crate::body::ClientBody`]).

use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncRead;

/// Bytes asked of a socket per read.
pub const READ_SIZE: usize = 8 * 1024;
/// Longest chunk-size or trailer line.
const MAX_LINE: usize = 4 * 1024;

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the connection closes (responses only).
    UntilClose,
}

/// Reads one body's bytes out of a connection's buffer, refilling the
/// buffer from the socket when it runs dry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoder {
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Bytes left of a Content-Length body.
    Length(u64),
    /// Expecting a chunk-size line.
    ChunkSize,
    /// Bytes left of the current chunk.
    ChunkData(u64),
    /// Expecting the CRLF after a chunk.
    ChunkEnd,
    /// Reading trailer lines until the empty one.
    Trailers,
    /// Until the peer closes.
    UntilClose,
    Done,
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The peer closed the connection within the body.
    #[error("the connection closed before the end of the body")]
    Truncated,
    /// A chunked body that is not.
    #[error("bad chunked encoding: {0}")]
    BadChunk(&'static str),
    /// The socket failed.
    #[error("reading the body: {0}")]
    Io(#[from] io::Error),
}

impl Decoder {
    /// A decoder for a body framed as `framing`.
    pub fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::UntilClose => State::UntilClose,
        };
        Decoder { state }
    }

    /// True once the whole body was read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Body bytes left, when known.
    pub fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Done => Some(0),
            State::Length(n) => Some(n),
            _ => None,
        }
    }

    /// The next piece of the body out of `buf`, reading more from `io`
    /// when `buf` holds nothing usable; `None` at the end of the body.
    pub fn poll_data<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
        buf: &mut BytesMut,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, DecodeError>>> {
        loop {
            match self.state {
                State::Done => return Poll::Ready(None),
                State::Length(left) | State::ChunkData(left) => {
                    if let Some(data) = take_data(buf, left) {
                        let left = left - data.len() as u64;
                        self.state = match (self.state, left) {
                            (State::Length(_), 0) => State::Done,
                            (State::Length(_), n) => State::Length(n),
                            (_, 0) => State::ChunkEnd,
                            (_, n) => State::ChunkData(n),
                        };
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
                State::UntilClose => {
                    if let Some(data) = take_data(buf, u64::MAX) {
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
                State::ChunkSize => {
                    if let Some(line) = take_line(buf)? {
                        let size = std::str::from_utf8(&line)
                            .ok()
                            .and_then(|l| l.split(';').next())
                            .and_then(|s| u64::from_str_radix(s.trim(), 16).ok())
                            .ok_or(DecodeError::BadChunk("bad chunk size"))?;
                        self.state = if size == 0 {
                            State::Trailers
                        } else {
                            State::ChunkData(size)
                        };
                        continue;
                    }
                }
                State::ChunkEnd => {
                    if let Some(line) = take_line(buf)? {
                        if !line.is_empty() {
                            return Poll::Ready(Some(Err(DecodeError::BadChunk(
                                "chunk longer than its size",
                            ))));
                        }
                        self.state = State::ChunkSize;
                        continue;
                    }
                }
                State::Trailers => {
                    if let Some(line) = take_line(buf)? {
                        if line.is_empty() {
                            self.state = State::Done;
                            return Poll::Ready(None);
                        }
                        continue;
                    }
                }
            }
            // Nothing usable buffered: read more.
            reserve(buf, READ_SIZE);
            match tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(n)) if n > 0 => {}
                Poll::Ready(Ok(_)) if self.state == State::UntilClose => {
                    self.state = State::Done;
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(_)) => return Poll::Ready(Some(Err(DecodeError::Truncated))),
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
            }
        }
    }
}

/// Room for one more read: `size` more bytes when less than a quarter of
/// that is left.
pub fn reserve(buf: &mut BytesMut, size: usize) {
    if buf.capacity() - buf.len() < size / 4 {
        buf.reserve(size);
    }
}

/// Up to `left` body bytes already read, if any.
fn take_data(buf: &mut BytesMut, left: u64) -> Option<Bytes> {
    if buf.is_empty() {
        return None;
    }
    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
    Some(buf.split_to(n).freeze())
}

/// The next line (without its CRLF) if a whole one was read.
fn take_line(buf: &mut BytesMut) -> Result<Option<BytesMut>, DecodeError> {
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(at) => {
            let line = buf.split_to(at);
            buf.advance(2);
            Ok(Some(line))
        }
        None if buf.len() > MAX_LINE => Err(DecodeError::BadChunk("line too long")),
        None => Ok(None),
    }
}

/// What a message's framing depends on in its header fields (RFC 9112
/// §6.1-§6.3, §9.3), gathered in one pass over the parsed head, and where
/// each field lies in the head, so that the fields can be passed on as
/// slices of it ([`crate::headers::RawFields`]: no copy, no allocation per
/// field).
#[derive(Debug)]
pub struct Fields {
    /// A Transfer-Encoding was sent.
    pub coded: bool,
    /// Its last coding is chunked.
    pub chunked: bool,
    /// The Content-Length, if any (several must agree).
    pub length: Option<u64>,
    /// `Connection: close`.
    pub close: bool,
    /// `Connection: keep-alive` (meaningful for HTTP/1.0).
    pub keep_alive: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    /// Name and value of each field, as offsets into the head.
    spans: Vec<(Range<usize>, Range<usize>)>,
}

impl Fields {
    /// Read `fields`, parsed out of `head`.
    pub fn read(head: &[u8], fields: &[httparse::Header<'_>]) -> Result<Self, &'static str> {
        let start = head.as_ptr() as usize;
        let span = |s: &[u8]| {
            let at = s.as_ptr() as usize - start;
            at..at + s.len()
        };
        let mut out = Fields {
            coded: false,
            chunked: false,
            length: None,
            close: false,
            keep_alive: false,
            expect_continue: false,
            spans: Vec::with_capacity(fields.len()),
        };
        for field in fields {
            let name = field.name.as_bytes();
            let value = field.value;
            if name.eq_ignore_ascii_case(b"transfer-encoding") {
                out.coded = true;
                out.chunked = value
                    .rsplit(|b| *b == b',')
                    .next()
                    .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if name.eq_ignore_ascii_case(b"content-length") {
                let n = std::str::from_utf8(value)
                    .ok()
                    .map(str::trim)
                    .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or("bad content-length")?;
                if out.length.is_some_and(|l| l != n) {
                    return Err("conflicting content-length");
                }
                out.length = Some(n);
            } else if name.eq_ignore_ascii_case(b"connection") {
                for token in value.split(|b| *b == b',') {
                    let token = token.trim_ascii();
                    out.close |= token.eq_ignore_ascii_case(b"close");
                    out.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            } else if name.eq_ignore_ascii_case(b"expect") {
                out.expect_continue = value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
            }
            out.spans.push((span(name), span(value)));
        }
        Ok(out)
    }

    /// Name and value of each field, as offsets into the head.
    pub fn into_spans(self) -> Vec<(Range<usize>, Range<usize>)> {
        self.spans
    }
}
