//! Property: a valid message parses the same however its bytes are split
//! across reads: the head (method, target, fields, framing) and the
//! body, for requests and responses, Content-Length and chunked alike.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use mentat_http1::wire::codec::{Decoder, Framing};
use mentat_http1::wire::{request, response};
use proptest::prelude::*;
use tokio::io::{AsyncRead, ReadBuf};

/// An `AsyncRead` that gives its pieces one per read.
struct Pieces(VecDeque<Vec<u8>>);

impl AsyncRead for Pieces {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(mut piece) = self.0.pop_front() {
            let n = piece.len().min(out.remaining());
            out.put_slice(&piece[..n]);
            if n < piece.len() {
                self.0.push_front(piece.split_off(n));
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// `bytes` cut at `cuts` (positions, any order, any repeats).
fn split(bytes: &[u8], cuts: &[usize]) -> VecDeque<Vec<u8>> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    at.push(0);
    at.push(bytes.len());
    at.sort_unstable();
    at.dedup();
    at.windows(2).map(|w| bytes[w[0]..w[1]].to_vec()).collect()
}

/// The body after a head, read with `framing` from `buf` then `io`.
fn body(framing: Framing, buf: &mut BytesMut, io: &mut Pieces) -> Result<Vec<u8>, String> {
    let mut decoder = Decoder::new(framing);
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut out = Vec::new();
    loop {
        match decoder.poll_data(io, buf, &mut cx) {
            Poll::Ready(None) => return Ok(out),
            Poll::Ready(Some(Ok(data))) => out.extend_from_slice(&data),
            Poll::Ready(Some(Err(e))) => return Err(e.to_string()),
            Poll::Pending => return Err("pending".into()),
        }
    }
}

/// A request parsed from `pieces`, read one at a time: what it says.
fn read_request(mut pieces: VecDeque<Vec<u8>>) -> Result<String, String> {
    let mut buf = BytesMut::new();
    let head = loop {
        let piece = pieces.pop_front().ok_or("incomplete head")?;
        buf.extend_from_slice(&piece);
        if let Some(head) = request::parse(&mut buf).map_err(|e| format!("{e:?}"))? {
            break head;
        }
    };
    let fields: Vec<String> = head
        .fields
        .iter()
        .map(|(n, v)| {
            format!(
                "{}={}",
                String::from_utf8_lossy(n),
                String::from_utf8_lossy(v)
            )
        })
        .collect();
    let body = body(head.framing, &mut buf, &mut Pieces(pieces))?;
    Ok(format!(
        "{} {} {:?} {:?} {:?} {}",
        head.parts.method,
        head.parts.uri,
        fields,
        head.framing,
        head.keep_alive,
        String::from_utf8_lossy(&body)
    ))
}

/// A response parsed from `pieces`, read one at a time: what it says.
fn read_response(mut pieces: VecDeque<Vec<u8>>) -> Result<String, String> {
    let mut buf = BytesMut::new();
    let head = loop {
        let piece = pieces.pop_front().ok_or("incomplete head")?;
        buf.extend_from_slice(&piece);
        if let Some(head) = response::parse(&mut buf, false)? {
            break head;
        }
    };
    let body = body(head.framing, &mut buf, &mut Pieces(pieces))?;
    Ok(format!(
        "{} {:?} {} {:?} {}",
        head.status,
        head.framing,
        head.fields.len(),
        head.keep_alive,
        String::from_utf8_lossy(&body)
    ))
}

/// A body, framed by a length or chunked (chunks of the given sizes, with
/// or without extensions, and trailers).
fn framed(
    body: &[u8],
    chunks: &[usize],
    chunked: bool,
    ext: bool,
    trailers: bool,
) -> (String, Vec<u8>) {
    if !chunked {
        return (format!("Content-Length: {}\r\n", body.len()), body.to_vec());
    }
    let mut out = Vec::new();
    let mut rest = body;
    let mut sizes = chunks.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap_or(&1)).clamp(1, rest.len());
        out.extend_from_slice(format!("{n:X}").as_bytes());
        if ext {
            out.extend_from_slice(b" ; name=\"v;a\\\"l\"");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
    }
    out.extend_from_slice(b"0\r\n");
    if trailers {
        out.extend_from_slice(b"X-Checksum: abc\r\n");
    }
    out.extend_from_slice(b"\r\n");
    ("Transfer-Encoding: chunked\r\n".into(), out)
}

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9-]{0,12}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_request_parses_the_same_however_it_is_split(
        method in prop::sample::select(vec!["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
        path in "/[a-z0-9/._~-]{0,30}(\\?[a-z0-9=&]{0,20})?",
        fields in prop::collection::vec((token(), "[ -~]{0,30}"), 0..8),
        body in prop::collection::vec(any::<u8>(), 0..300),
        chunks in prop::collection::vec(1usize..64, 1..6),
        chunked in any::<bool>(),
        ext in any::<bool>(),
        trailers in any::<bool>(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let (framing, encoded) = framed(&body, &chunks, chunked, ext, trailers);
        let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: web.localhost\r\n");
        for (name, value) in &fields {
            let lower = name.to_ascii_lowercase();
            if ["host", "content-length", "transfer-encoding", "connection", "expect"].contains(&lower.as_str()) {
                continue;
            }
            raw.push_str(&format!("{name}: {}\r\n", value.trim()));
        }
        raw.push_str(&framing);
        raw.push_str("\r\n");
        let mut raw = raw.into_bytes();
        raw.extend_from_slice(&encoded);
        let whole = read_request(split(&raw, &[]));
        prop_assert!(whole.is_ok(), "{:?}: {}", whole, String::from_utf8_lossy(&raw));
        prop_assert!(whole.as_ref().is_ok_and(|w| w.ends_with(&*String::from_utf8_lossy(&body))));
        prop_assert_eq!(read_request(split(&raw, &cuts)), whole);
        let bytewise: Vec<usize> = (0..raw.len()).collect();
        prop_assert_eq!(read_request(split(&raw, &bytewise)), read_request(split(&raw, &[])));
    }

    #[test]
    fn a_response_parses_the_same_however_it_is_split(
        status in prop::sample::select(vec![200u16, 201, 206, 400, 404, 500, 503]),
        fields in prop::collection::vec((token(), "[ -~]{0,30}"), 0..8),
        body in prop::collection::vec(any::<u8>(), 0..300),
        chunks in prop::collection::vec(1usize..64, 1..6),
        chunked in any::<bool>(),
        ext in any::<bool>(),
        trailers in any::<bool>(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let (framing, encoded) = framed(&body, &chunks, chunked, ext, trailers);
        let mut raw = format!("HTTP/1.1 {status} Whatever\r\n");
        for (name, value) in &fields {
            let lower = name.to_ascii_lowercase();
            if ["content-length", "transfer-encoding", "connection"].contains(&lower.as_str()) {
                continue;
            }
            raw.push_str(&format!("{name}: {}\r\n", value.trim()));
        }
        raw.push_str(&framing);
        raw.push_str("\r\n");
        let mut raw = raw.into_bytes();
        raw.extend_from_slice(&encoded);
        let whole = read_response(split(&raw, &[]));
        prop_assert!(whole.is_ok(), "{:?}: {}", whole, String::from_utf8_lossy(&raw));
        prop_assert_eq!(read_response(split(&raw, &cuts)), whole);
    }
}
