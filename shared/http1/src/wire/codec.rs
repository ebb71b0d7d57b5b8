//! HTTP/1.1 framing, for requests and answers alike: the header fields
//! a message's framing depends on ([`Fields`]), and its body as it comes
//! off a socket (RFC 9112 §6 and §7.1): a Content-Length body, a chunked
//! one (chunk extensions and trailers are read and dropped), or one that
//! runs until the peer closes. Shared by answers ([`super::response`])
//! and requests ([`super::request`]), by the server and the client alike.

use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncRead;

use super::grammar::{chunk_size_line, content_length, line, trailer_line, trim_ows};

/// Bytes asked of a socket per read.
pub const READ_SIZE: usize = 8 * 1024;
/// Most bytes of chunk extensions in one body, all chunks together: past
/// it a body of one-byte chunks would carry far more framing than data.
pub const MAX_EXTENSION_BYTES: usize = 64 * 1024;
/// Most fields in a chunked body's trailer section.
pub const MAX_TRAILER_FIELDS: u16 = 32;
/// Most bytes in a chunked body's trailer section.
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;

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
/// buffer from the socket when it runs dry. The framing itself is a pure
/// state machine ([`Decoder::check`] runs it over bytes without consuming
/// them); only [`Decoder::poll_data`] does I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoder {
    state: State,
    /// Bytes of chunk extensions seen so far (bounded by [`MAX_EXTENSION_BYTES`]).
    extension_bytes: usize,
    /// Trailer fields seen so far (bounded by [`MAX_TRAILER_FIELDS`]).
    trailer_fields: u16,
    /// Bytes of trailer fields seen so far (bounded by [`MAX_TRAILER_BYTES`]).
    trailer_bytes: usize,
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
    /// The framing was broken: nothing more is read.
    Broken,
}

/// What the bytes at the start of a buffer are, in a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    /// The next this many bytes are body data.
    Data(usize),
    /// The next this many bytes are framing (a chunk line, a trailer).
    Framing(usize),
    /// The body ends after the next this many bytes of framing.
    End(usize),
    /// More bytes are needed to tell.
    NeedMore,
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The peer closed the connection within the body.
    #[error("the connection closed before the end of the body")]
    Truncated,
    /// A chunked body that is not (RFC 9112 §7.1), or that breaks a bound.
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
        Decoder {
            state,
            extension_bytes: 0,
            trailer_fields: 0,
            trailer_bytes: 0,
        }
    }

    /// True once the whole body was read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// True once the body's framing was found broken.
    pub fn is_broken(&self) -> bool {
        self.state == State::Broken
    }

    /// Body bytes left, when known.
    pub fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Done => Some(0),
            State::Length(n) => Some(n),
            _ => None,
        }
    }

    /// Run the framing over the body bytes already at hand, without
    /// consuming them: an error as soon as they break it, else whether
    /// they hold the whole body. Lets a request whose body is broken from
    /// its first bytes be refused before anything of it is forwarded.
    pub fn check(&self, buf: &[u8]) -> Result<bool, DecodeError> {
        let mut probe = *self;
        let mut at = 0;
        loop {
            match probe.next_event(&buf[at..]) {
                Err(why) => return Err(DecodeError::BadChunk(why)),
                Ok(Event::Data(n) | Event::Framing(n)) => at += n,
                Ok(Event::End(_)) => return Ok(true),
                Ok(Event::NeedMore) => return Ok(false),
            }
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
            match self.next_event(buf) {
                Err(why) => return Poll::Ready(Some(Err(DecodeError::BadChunk(why)))),
                Ok(Event::Data(n)) => return Poll::Ready(Some(Ok(buf.split_to(n).freeze()))),
                Ok(Event::Framing(n)) => {
                    buf.advance(n);
                    continue;
                }
                Ok(Event::End(n)) => {
                    buf.advance(n);
                    return Poll::Ready(None);
                }
                Ok(Event::NeedMore) => {}
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

    /// What the bytes at the start of `input` are, moving past them (pure:
    /// no I/O). An error leaves the decoder broken.
    fn next_event(&mut self, input: &[u8]) -> Result<Event, &'static str> {
        let event = self.step(input);
        if event.is_err() {
            self.state = State::Broken;
        }
        event
    }

    fn step(&mut self, input: &[u8]) -> Result<Event, &'static str> {
        match self.state {
            State::Done => Ok(Event::End(0)),
            State::Broken => Err("the body's framing was already broken"),
            State::Length(left) | State::ChunkData(left) => {
                if input.is_empty() {
                    return Ok(Event::NeedMore);
                }
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                let left = left - n as u64;
                self.state = match (self.state, left) {
                    (State::Length(_), 0) => State::Done,
                    (State::Length(_), n) => State::Length(n),
                    (_, 0) => State::ChunkEnd,
                    (_, n) => State::ChunkData(n),
                };
                Ok(Event::Data(n))
            }
            State::UntilClose if input.is_empty() => Ok(Event::NeedMore),
            State::UntilClose => Ok(Event::Data(input.len())),
            State::ChunkSize => {
                let Some((line, used)) = line(input)? else {
                    return Ok(Event::NeedMore);
                };
                let (size, extensions) = chunk_size_line(line)?;
                self.extension_bytes += extensions;
                if self.extension_bytes > MAX_EXTENSION_BYTES {
                    return Err("too many bytes of chunk extensions");
                }
                self.state = if size == 0 {
                    State::Trailers
                } else {
                    State::ChunkData(size)
                };
                Ok(Event::Framing(used))
            }
            State::ChunkEnd => match input {
                [] | [b'\r'] => Ok(Event::NeedMore),
                [b'\r', b'\n', ..] => {
                    self.state = State::ChunkSize;
                    Ok(Event::Framing(2))
                }
                _ => Err("chunk longer than its size"),
            },
            State::Trailers => {
                let Some((line, used)) = line(input)? else {
                    return Ok(Event::NeedMore);
                };
                if line.is_empty() {
                    self.state = State::Done;
                    return Ok(Event::End(used));
                }
                trailer_line(line)?;
                self.trailer_fields += 1;
                self.trailer_bytes += used;
                if self.trailer_fields > MAX_TRAILER_FIELDS {
                    return Err("too many trailer fields");
                }
                if self.trailer_bytes > MAX_TRAILER_BYTES {
                    return Err("trailer section too large");
                }
                Ok(Event::Framing(used))
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

/// What a message's framing depends on in its header fields (RFC 9112
/// §6.1-§6.3, §9.3), gathered in one pass over the parsed head, and where
/// each field lies in the head, so that the fields can be passed on as
/// slices of it ([`super::fields::RawFields`]: no copy, no allocation per
/// field).
#[derive(Debug)]
pub struct Fields {
    /// A Transfer-Encoding was sent.
    pub coded: bool,
    /// Its last coding is chunked.
    pub chunked: bool,
    /// Transfer-Encoding fields sent (a request may have one at most).
    pub transfer_encodings: u8,
    /// The (last) Transfer-Encoding is exactly `chunked`, the only coding
    /// a request may have here.
    pub only_chunked: bool,
    /// Host fields sent (a request must have one at most).
    pub hosts: u8,
    /// The Content-Length, if any (several must agree).
    pub length: Option<u64>,
    /// Content-Length fields sent (a request may have one at most).
    pub lengths: u8,
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
            transfer_encodings: 0,
            only_chunked: false,
            hosts: 0,
            length: None,
            lengths: 0,
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
                out.transfer_encodings = out.transfer_encodings.saturating_add(1);
                out.chunked = value
                    .rsplit(|b| *b == b',')
                    .next()
                    .is_some_and(|last| trim_ows(last).eq_ignore_ascii_case(b"chunked"));
                out.only_chunked = trim_ows(value).eq_ignore_ascii_case(b"chunked");
            } else if name.eq_ignore_ascii_case(b"content-length") {
                let n = content_length(value).ok_or("bad content-length")?;
                if out.length.is_some_and(|l| l != n) {
                    return Err("conflicting content-length");
                }
                out.length = Some(n);
                out.lengths = out.lengths.saturating_add(1);
            } else if name.eq_ignore_ascii_case(b"host") {
                out.hosts = out.hosts.saturating_add(1);
            } else if name.eq_ignore_ascii_case(b"connection") {
                for token in value.split(|b| *b == b',') {
                    let token = trim_ows(token);
                    out.close |= token.eq_ignore_ascii_case(b"close");
                    out.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            } else if name.eq_ignore_ascii_case(b"expect") {
                out.expect_continue = trim_ows(value).eq_ignore_ascii_case(b"100-continue");
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An `AsyncRead` that gives `bytes` `step` at a time.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
    }

    impl AsyncRead for Trickle<'_> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            out: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let n = self.step.min(self.bytes.len()).min(out.remaining());
            out.put_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Poll::Ready(Ok(()))
        }
    }

    /// The body `raw` decodes to as `framing`, read `step` bytes at a time.
    fn decode(framing: Framing, raw: &[u8], step: usize) -> Result<Vec<u8>, String> {
        let mut io = Trickle { bytes: raw, step };
        let mut buf = BytesMut::new();
        let mut decoder = Decoder::new(framing);
        let mut body = Vec::new();
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        loop {
            match decoder.poll_data(&mut io, &mut buf, &mut cx) {
                Poll::Ready(None) => return Ok(body),
                Poll::Ready(Some(Ok(data))) => body.extend_from_slice(&data),
                Poll::Ready(Some(Err(e))) => return Err(e.to_string()),
                Poll::Pending => return Err("pending".into()),
            }
        }
    }

    fn chunked(raw: &[u8]) -> Result<Vec<u8>, String> {
        let whole = decode(Framing::Chunked, raw, raw.len().max(1));
        for step in [1, 2, 3, 7] {
            assert_eq!(
                decode(Framing::Chunked, raw, step),
                whole,
                "the same read {step} bytes at a time"
            );
        }
        let checked = Decoder::new(Framing::Chunked)
            .check(raw)
            .map_err(|e| e.to_string());
        assert_eq!(
            checked.is_err(),
            whole.is_err(),
            "check agrees with decoding: {whole:?}"
        );
        whole
    }

    #[test]
    fn chunked_bodies_with_extensions_and_trailers_decode_in_any_pieces() {
        assert_eq!(
            chunked(b"5\r\nhello\r\n6;a=b\r\n world\r\n0\r\n\r\n").as_deref(),
            Ok(&b"hello world"[..])
        );
        assert_eq!(
            chunked(b"00005 ; a ; b = \"q\\\"x;y\"\t;c=d\r\nhello\r\n0\r\nX-T: 1\r\nY: \r\n\r\n")
                .as_deref(),
            Ok(&b"hello"[..]),
            "leading zeros, BWS before `;`, quoted values, trailers"
        );
        assert_eq!(
            chunked(b"A\r\n0123456789\r\n0\r\n\r\n").as_deref(),
            Ok(&b"0123456789"[..])
        );
    }

    #[test]
    fn a_bare_lf_or_cr_in_a_chunked_body_is_an_error_at_once_never_a_wait() {
        for raw in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5;a\nb\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhello\r\n0\n\r\n",
            b"5\r\nhello\r\n0\r\nX-T: 1\n\r\n",
            b"5\rx\n",
        ] {
            let e = chunked(raw).expect_err("refused");
            assert!(
                e.contains("bare") || e.contains("longer than its size"),
                "{}: {e}",
                String::from_utf8_lossy(raw)
            );
            // Refused on these bytes alone, with the body not finished:
            // no wait for a CRLF that will never come.
            let bare = (0..raw.len())
                .find(|&i| match raw[i] {
                    b'\n' => i == 0 || raw[i - 1] != b'\r',
                    b'\r' => raw.get(i + 1) != Some(&b'\n'),
                    _ => false,
                })
                .expect("a bare LF or CR");
            let prefix = &raw[..=(bare + 1).min(raw.len() - 1)];
            assert!(
                Decoder::new(Framing::Chunked).check(prefix).is_err(),
                "{}",
                String::from_utf8_lossy(prefix)
            );
        }
        assert!(
            Decoder::new(Framing::Chunked).check(b"5\r").is_ok(),
            "a CR may be followed by its LF"
        );
    }

    #[test]
    fn chunk_extensions_and_trailers_are_bounded() {
        let long_line = format!(
            "1;a={}\r\nx\r\n0\r\n\r\n",
            "b".repeat(crate::wire::grammar::MAX_LINE)
        );
        assert_eq!(
            chunked(long_line.as_bytes()),
            Err("bad chunked encoding: line too long".into())
        );
        // Each line within bounds, their sum past the body's.
        let one = format!("1;a={}\r\nx\r\n", "b".repeat(1000));
        let raw = format!("{}0\r\n\r\n", one.repeat(MAX_EXTENSION_BYTES / 1000 + 1));
        assert_eq!(
            chunked(raw.as_bytes()),
            Err("bad chunked encoding: too many bytes of chunk extensions".into())
        );
        let raw = format!(
            "1\r\nx\r\n0\r\n{}\r\n",
            "X-T: 1\r\n".repeat(usize::from(MAX_TRAILER_FIELDS) + 1)
        );
        assert_eq!(
            chunked(raw.as_bytes()),
            Err("bad chunked encoding: too many trailer fields".into())
        );
        let field = format!("X-T: {}\r\n", "v".repeat(1000));
        let raw = format!("0\r\n{}\r\n", field.repeat(MAX_TRAILER_BYTES / 1000 + 1));
        assert_eq!(
            chunked(raw.as_bytes()),
            Err("bad chunked encoding: trailer section too large".into())
        );
        for trailer in [&b" X-T: 1"[..], b"X T: 1", b": 1", b"X-T 1", b"X-T: \x7f"] {
            let mut raw = b"0\r\n".to_vec();
            raw.extend_from_slice(trailer);
            raw.extend_from_slice(b"\r\n\r\n");
            assert_eq!(
                chunked(&raw),
                Err("bad chunked encoding: bad trailer field".into()),
                "{}",
                String::from_utf8_lossy(trailer)
            );
        }
    }

    #[test]
    fn a_broken_decoder_stays_broken_and_check_consumes_nothing() {
        let decoder = Decoder::new(Framing::Chunked);
        assert!(
            decoder.check(b"5\r\nhel").is_ok(),
            "incomplete is not broken"
        );
        assert!(decoder.check(b"5\r\nhello\r\nzz\r\n").is_err());
        assert_eq!(decoder, Decoder::new(Framing::Chunked), "check is pure");
        assert!(Decoder::new(Framing::Length(3)).check(b"\n\n\n\n").is_ok());
        let mut buf = BytesMut::from(&b"+5\r\n"[..]);
        let mut decoder = Decoder::new(Framing::Chunked);
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut io = Trickle {
            bytes: b"",
            step: 1,
        };
        assert!(matches!(
            decoder.poll_data(&mut io, &mut buf, &mut cx),
            Poll::Ready(Some(Err(DecodeError::BadChunk("bad chunk size"))))
        ));
        assert!(decoder.is_broken());
        assert!(matches!(
            decoder.poll_data(&mut io, &mut buf, &mut cx),
            Poll::Ready(Some(Err(DecodeError::BadChunk(_))))
        ));
    }
}
