//! Writing an answer back to the client: its head from the handler's
//! fields and those passed on, its framing (Content-Length when known,
//! else chunked, or until the close for HTTP/1.0; none for HEAD, 1xx, 204
//! and 304), the first piece of its body in the same write as the head,
//! and every write and every wait for the body bounded by the body idle
//! bound.

use std::future::poll_fn;
use std::io::{self, IoSlice, Write as _};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::StatusCode;
use http_body::Body;
use http_body_util::BodyExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::Response;
use crate::bounds::within_for;
use crate::wire::fields::{push_field, Passed};
use crate::BoxError;

/// What the answer depends on in the request.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Reply {
    /// A HEAD request: the answer has no body, whatever its headers say.
    pub head_request: bool,
    /// An HTTP/1.0 client: no chunked coding, keep-alive only if asked.
    pub http10: bool,
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

/// Write `resp` to the client's `stream`; `keep` says whether the
/// connection stays open and is cleared when the answer can only end with
/// the close. The upgrade, if the answer is a 101 that has one. The
/// body's pieces must come from the handler's body, and be taken by the
/// client, each within `idle`.
pub(super) async fn respond<W, B, U>(
    stream: &mut W,
    resp: Response<B, U>,
    reply: Reply,
    keep: &mut bool,
    idle: Duration,
) -> Result<Option<U>, BoxError>
where
    W: AsyncWrite + Unpin,
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    let Response {
        status,
        headers,
        passed,
        last,
        mut body,
        upgrade,
    } = resp;
    let upgrade = upgrade.filter(|_| status == StatusCode::SWITCHING_PROTOCOLS);
    let passed_len = passed.as_ref().map_or(0, Passed::len);
    let mut head = Vec::with_capacity(128 + (headers.len() + passed_len) * 48);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in &headers {
        push_field(&mut head, name.as_str().as_bytes(), value.as_bytes());
    }
    if let Some(passed) = &passed {
        passed.write_to(&mut head);
    }
    if let Some((name, value)) = &last {
        push_field(&mut head, name.as_str().as_bytes(), value.as_bytes());
    }
    // RFC 9112 §6.3: 1xx, 204 and 304 never have a body nor framing of
    // their own; a HEAD answer keeps the length the GET would have.
    let no_framing = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let coding = if no_framing {
        Coding::None
    } else if headers.contains_key(CONTENT_LENGTH)
        || passed.as_ref().is_some_and(Passed::has_length)
    {
        Coding::Raw
    } else if let (true, Some(passed)) = (reply.head_request, &passed) {
        // An answer to HEAD passed on: its length fields go as they came
        // (above), none is invented, and a coded body is announced as the
        // server would send it.
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
    if upgrade.is_none() {
        if !*keep {
            head.extend_from_slice(b"connection: close\r\n");
        } else if reply.http10 {
            head.extend_from_slice(b"connection: keep-alive\r\n");
        }
    }
    head.extend_from_slice(b"\r\n");
    if coding == Coding::None {
        write_all(stream, &[&head], idle).await?;
        return Ok(upgrade);
    }
    // The first piece of the body, if it is already there, goes with the head.
    let mut ready = match poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
        Poll::Ready(frame) => Some(frame),
        Poll::Pending => {
            write_all(stream, &[&head], idle).await?;
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
            write_all(stream, &[&head, &data], idle).await?;
        } else {
            let mut size = [0u8; 20];
            let size = chunk_size(&data, &mut size);
            let tail: &[u8] = match (data.is_empty(), end) {
                (true, _) => b"0\r\n\r\n",
                (false, true) => b"\r\n0\r\n\r\n",
                (false, false) => b"\r\n",
            };
            write_all(stream, &[&head, size, &data, tail], idle).await?;
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
async fn write_all<W: AsyncWrite + Unpin>(
    stream: &mut W,
    pieces: &[&[u8]],
    idle: Duration,
) -> io::Result<()> {
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
