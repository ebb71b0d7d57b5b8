//! Response heads from a backend (RFC 9112 §4, §6.3): parsed with
//! httparse out of the connection's buffer, the fields kept as slices of
//! the head and passed on without the hop-by-hop ones ([`Passed`]).
//!
//! Framing follows RFC 9112 §6.3: no body for HEAD, 1xx, 204 and 304;
//! chunked when the last transfer coding is chunked (a Content-Length
//! beside it is dropped); else the Content-Length; else the body runs to
//! the end of the connection, which is then not reused.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::StatusCode;

use super::codec::{Fields, Framing};
use super::fields::{Passed, RawFields};

/// Largest response head accepted.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields in a response head.
pub const MAX_HEADERS: usize = 128;

/// A response head and how to read the body that follows it.
#[derive(Debug)]
pub struct Answer {
    /// The status sent.
    pub status: StatusCode,
    /// Its header fields, less the hop-by-hop ones.
    pub fields: Passed,
    /// How its body is delimited.
    pub framing: Framing,
    /// The connection may carry another request after this body.
    pub keep_alive: bool,
}

/// Parse a response head at the start of `buf` and consume it; `None` when
/// more bytes are needed. `head_request`: the answer is to a HEAD, so has
/// no body whatever its fields say. The error says what is wrong.
pub fn parse(buf: &mut BytesMut, head_request: bool) -> Result<Option<Answer>, &'static str> {
    // Uninitialised: zeroing 128 fields per response costs more than parsing.
    let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let config = httparse::ParserConfig::default();
    let len = match config.parse_response_with_uninit_headers(&mut parsed, buf, &mut fields) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err("too many header fields"),
        Err(_) => return Err("not an HTTP/1.x response"),
    };
    let status = parsed
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or("bad status code")?;
    let http11 = parsed.version == Some(1);
    let fields = Fields::read(buf, parsed.headers)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(raw: &[u8], head_request: bool) -> (Answer, BytesMut) {
        let mut buf = BytesMut::from(raw);
        let answer = parse(&mut buf, head_request)
            .expect("valid")
            .expect("complete");
        (answer, buf)
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let (a, rest) = complete(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabc", false);
        assert_eq!((a.framing, a.keep_alive), (Framing::Length(3), true));
        assert_eq!(&rest[..], b"abc");
        let (a, _) = complete(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n", true);
        assert_eq!(a.framing, Framing::Empty, "HEAD has no body");
        let (a, _) = complete(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 9\r\n\r\n",
            false,
        );
        assert_eq!(a.framing, Framing::Chunked, "chunked wins over a length");
        assert!(!a.fields.has_length(), "and the length goes");
        let (a, _) = complete(b"HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!((a.framing, a.keep_alive), (Framing::UntilClose, false));
        let (a, _) = complete(b"HTTP/1.1 204 No Content\r\n\r\n", false);
        assert_eq!((a.framing, a.keep_alive), (Framing::Empty, true));
        let (a, _) = complete(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert!(!a.keep_alive);
        let (a, _) = complete(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false);
        assert!(!a.keep_alive, "HTTP/1.0 closes unless asked");
        let mut partial = BytesMut::from(&b"HTTP/1.1 200 OK\r\ncontent-le"[..]);
        assert!(parse(&mut partial, false).expect("valid").is_none());
        let mut bad = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n"[..],
        );
        assert_eq!(
            parse(&mut bad, false).err(),
            Some("conflicting content-length")
        );
        let mut bad = BytesMut::from(&b"SSH-2.0-OpenSSH\r\n\r\n"[..]);
        assert_eq!(
            parse(&mut bad, false).err(),
            Some("not an HTTP/1.x response")
        );
    }
}
