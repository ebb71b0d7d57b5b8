//! One HTTP/1.1 client connection to a backend ([`Connection`]), over any
//! [`Io`] stream.
//!
//! A connection is driven by the request that uses it, in the caller's
//! task: the request head is written straight to the socket, the response
//! head is parsed from it ([`crate::wire::response`]), and the response
//! body is read from it as it is taken ([`Reader`]). There is no task per
//! connection and no channel between tasks.
//!
//! The request body is any [`Body`], streamed while the answer is
//! awaited, so that a backend that answers early (a 413, say) is heard;
//! the connection is then not reused. A body without a length is sent
//! chunked. Chunk extensions and trailers of an answer are read and
//! dropped. Connection pooling is the caller's: a connection whose answer
//! was read to its end comes back from [`Reader::take_reusable`].

use std::fmt::Write as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{Method, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::bounds::{within, within_for, Bounds};
use crate::io::Io;
use crate::wire::codec::{reserve, Decoder, READ_SIZE};
use crate::wire::fields::{push_field, RawFields};
use crate::wire::response::{self, MAX_HEAD_BYTES};
use crate::{BoxError, Error};

pub use crate::wire::response::Answer;

/// An open connection to a backend, idle or carrying one request.
#[derive(Debug)]
pub struct Connection<T> {
    io: T,
    /// Bytes read and not consumed yet (the rest of a head, body bytes).
    buf: BytesMut,
    /// True when the connection served an earlier request.
    reused: bool,
}

/// The request to send: its head and the fields the caller adds.
#[derive(Debug, Clone, Copy)]
pub struct Outbound<'a> {
    /// Method and target (sent in origin form, as HTTP/1.1).
    pub parts: &'a Parts,
    /// The fields, hop-by-hop ones already removed.
    pub fields: &'a RawFields,
    /// The `Host` sent when `fields` have none.
    pub host: &'a str,
}

impl<T: Io> Connection<T> {
    /// A fresh connection over `io`.
    pub fn new(io: T) -> Self {
        Connection {
            io,
            buf: BytesMut::new(),
            reused: false,
        }
    }

    /// The stream.
    pub fn io(&self) -> &T {
        &self.io
    }

    /// True when the connection served an earlier request.
    pub fn is_reused(&self) -> bool {
        self.reused
    }

    /// Send `request`, with the fields `extra` writes after its own (one
    /// `name: value\r\n` line each) and `body`, and read the answer's head.
    /// The body is streamed while the answer is awaited, within `bounds`:
    /// each piece from the body within the body idle bound and the whole
    /// within the request body bound (else [`Error::BodyTimedOut`]), each
    /// write within the body idle bound, and the answer's head within the
    /// response head bound once the request is written (else
    /// [`Error::TimedOut`]).
    pub async fn send<B>(
        &mut self,
        request: Outbound<'_>,
        extra: impl FnOnce(&mut Vec<u8>),
        body: &mut B,
        bounds: &Bounds,
    ) -> Result<Answer, Error>
    where
        B: Body<Data = Bytes, Error = BoxError> + Unpin,
    {
        let empty = body.is_end_stream();
        let chunked = !empty && !request.fields.contains(b"content-length");
        let head = encode_head(request, extra, chunked);
        self.write_head(&head).await?;
        let head_request = request.parts.method == Method::HEAD;
        if empty {
            let answer = read_head(&mut self.io, &mut self.buf, head_request);
            return within_for(bounds.response_head, answer)
                .await
                .unwrap_or(Err(Error::TimedOut));
        }
        let (mut reader, mut writer) = self.io.halves();
        let sending = write_body(&mut writer, body, chunked, bounds);
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
                        Err(e @ (Error::Body(_) | Error::BodyTimedOut)) => return Err(e),
                        Err(e) => write_error = Some(e),
                    }
                }
                answer = &mut answer => break answer,
                () = tokio::time::sleep_until(head_due.unwrap_or_else(Instant::now)), if head_due.is_some() => {
                    return Err(Error::TimedOut);
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
    async fn write_head(&mut self, head: &[u8]) -> Result<(), Error> {
        let mut written = 0;
        while written < head.len() {
            match self.io.write(&head[written..]).await {
                Ok(0) => {
                    return Err(Error::Write {
                        source: io::ErrorKind::WriteZero.into(),
                        sent: written > 0,
                    })
                }
                Ok(n) => written += n,
                Err(source) => {
                    return Err(Error::Write {
                        source,
                        sent: written > 0,
                    })
                }
            }
        }
        Ok(())
    }

    /// The stream and the bytes already read from it (a tunnel's first bytes).
    pub fn into_parts(self) -> (T, BytesMut) {
        (self.io, self.buf)
    }
}

/// The request head as sent: origin-form target, HTTP/1.1, `Host` if the
/// fields have none, the fields, those `extra` writes, and
/// `Transfer-Encoding: chunked` for a body of unknown length.
pub fn encode_head(
    request: Outbound<'_>,
    extra: impl FnOnce(&mut Vec<u8>),
    chunked: bool,
) -> Vec<u8> {
    let Outbound {
        parts,
        fields,
        host,
    } = request;
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut head = Vec::with_capacity(256 + fields.len() * 32);
    head.extend_from_slice(parts.method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    if !fields.contains(b"host") {
        push_field(&mut head, b"host", host.as_bytes());
    }
    fields.write_to(&mut head);
    extra(&mut head);
    if chunked {
        head.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Stream `body` to the backend, chunked or as is, within `bounds`.
async fn write_body<W, B>(
    writer: &mut W,
    body: &mut B,
    chunked: bool,
    bounds: &Bounds,
) -> Result<(), Error>
where
    W: AsyncWrite + Unpin,
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    let whole_by = Instant::now() + bounds.request_body;
    loop {
        let due = (Instant::now() + bounds.body_idle).min(whole_by);
        let Some(frame) = within(due, body.frame()).await else {
            return Err(Error::BodyTimedOut);
        };
        let Some(frame) = frame else { break };
        let Ok(data) = frame.map_err(Error::Body)?.into_data() else {
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

/// Write `bytes` of a request body within the body idle bound.
async fn send<W: AsyncWrite + Unpin>(
    writer: &mut W,
    bytes: &[u8],
    bounds: &Bounds,
) -> Result<(), Error> {
    within_for(bounds.body_idle, writer.write_all(bytes))
        .await
        .ok_or(Error::TimedOut)?
        .map_err(|source| Error::Write { source, sent: true })
}

/// Read until a final response head is complete (1xx other than 101 are
/// skipped), leaving what follows it in `buf`.
pub async fn read_head<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<Answer, Error> {
    loop {
        if !buf.is_empty() {
            if let Some(answer) = response::parse(buf, head_request).map_err(Error::Malformed)? {
                if answer.status.is_informational()
                    && answer.status != StatusCode::SWITCHING_PROTOCOLS
                {
                    continue;
                }
                return Ok(answer);
            }
            if buf.len() >= MAX_HEAD_BYTES {
                return Err(Error::Malformed("response head too large"));
            }
        }
        reserve(buf, READ_SIZE);
        let n = tokio::io::AsyncReadExt::read_buf(reader, buf)
            .await
            .map_err(Error::Read)?;
        if n == 0 {
            return Err(if buf.is_empty() {
                Error::Closed
            } else {
                Error::Malformed("connection closed in the response head")
            });
        }
    }
}

/// An answer's body, read from its connection as it is taken. At its end
/// the connection can be had back ([`Reader::take_reusable`]).
#[derive(Debug)]
pub struct Reader<T> {
    conn: Option<Connection<T>>,
    decoder: Decoder,
    keep_alive: bool,
}

impl<T: Io> Reader<T> {
    /// The body that follows `answer` on `conn`.
    pub fn new(conn: Connection<T>, answer: &Answer) -> Self {
        Reader {
            conn: Some(conn),
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
    pub fn take_reusable(&mut self) -> Option<Connection<T>> {
        if !self.decoder.is_done() || !self.keep_alive {
            return None;
        }
        let mut conn = self.conn.take()?;
        if !conn.buf.is_empty() {
            return None; // bytes nobody asked for: not a connection to trust
        }
        // An idle connection holds no buffer; the next answer takes one.
        conn.buf = BytesMut::new();
        conn.reused = true;
        Some(conn)
    }
}

impl<T: Io> Body for Reader<T> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(conn) = this.conn.as_mut() else {
            return Poll::Ready(None);
        };
        match this.decoder.poll_data(&mut conn.io, &mut conn.buf, cx) {
            Poll::Ready(Some(Err(e))) => {
                this.keep_alive = false;
                this.conn = None;
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
