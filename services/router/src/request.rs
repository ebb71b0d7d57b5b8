//! Request heads from clients (RFC 9112 §2-§3, §6.3): parsed with httparse
//! out of the connection's buffer; header fields stay where they are in
//! the head ([`RawFields`]), not copied. Bodies are framed by
//! Transfer-Encoding (chunked last) or Content-Length; a request that
//! could be read two ways is refused.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use hyper::http::request::Parts;
use hyper::{Method, Request, Uri, Version};

use crate::codec::{Fields, Framing};
use crate::headers::RawFields;

/// Most header fields in a request head.
const MAX_HEADERS: usize = 128;

/// A request head, and what the connection needs to know of it.
#[derive(Debug)]
pub struct Head {
    /// Method, target and version (its header map is empty).
    pub parts: Parts,
    /// The header fields, as sent.
    pub fields: RawFields,
    /// How the body is delimited.
    pub framing: Framing,
    /// The client wants the connection kept open after the answer.
    pub keep_alive: bool,
    /// The client waits for `100 Continue` before sending the body.
    pub expect_continue: bool,
}

/// Why a request head is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// More header fields than the router takes (431).
    TooManyHeaders,
    /// Not a valid HTTP/1.x request head (400), and why.
    Bad(&'static str),
}

/// Parse a request head at the start of `buf` and consume it; `None` when
/// more bytes are needed.
pub fn parse(buf: &mut BytesMut) -> Result<Option<Head>, Refusal> {
    // Uninitialised: zeroing 128 fields per request costs more than parsing.
    let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let config = httparse::ParserConfig::default();
    let len = match config.parse_request_with_uninit_headers(&mut parsed, buf, &mut fields) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::TooManyHeaders),
        Err(_) => return Err(Refusal::Bad("not an HTTP/1.x request")),
    };
    let method = parsed
        .method
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .ok_or(Refusal::Bad("bad method"))?;
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let path = parsed.path.unwrap_or_default();
    let target = {
        let at = path.as_ptr() as usize - buf.as_ptr() as usize;
        at..at + path.len()
    };
    let fields = Fields::read(buf, parsed.headers).map_err(Refusal::Bad)?;
    let keep_alive = match version {
        Version::HTTP_10 => fields.keep_alive && !fields.close,
        _ => !fields.close,
    };
    let framing = match (fields.coded, fields.chunked, fields.length) {
        // A length beside a transfer coding is how requests are smuggled.
        (true, _, Some(_)) => {
            return Err(Refusal::Bad("both transfer-encoding and content-length"))
        }
        (true, false, None) => return Err(Refusal::Bad("transfer-encoding is not chunked")),
        (true, true, None) => Framing::Chunked,
        (false, _, Some(n)) => Framing::Length(n),
        (false, _, None) => Framing::Empty,
    };
    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(target)).map_err(|_| Refusal::Bad("bad target"))?;
    let expect_continue = fields.expect_continue;
    let mut fields = RawFields::new(head, fields.into_spans());
    if expect_continue {
        // Answered here: the router asks for the body when a backend reads it.
        fields.remove(b"expect");
    }
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    Ok(Some(Head {
        parts,
        fields,
        framing,
        keep_alive,
        expect_continue: expect_continue && framing != Framing::Empty,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &[u8]) -> Result<Option<(Head, BytesMut)>, Refusal> {
        let mut buf = BytesMut::from(raw);
        Ok(parse(&mut buf)?.map(|head| (head, buf)))
    }

    fn complete(raw: &[u8]) -> Head {
        head(raw).expect("valid").expect("complete").0
    }

    #[test]
    fn heads_give_method_target_headers_and_framing() {
        let (h, rest) = head(b"POST /a?b=1 HTTP/1.1\r\nHost: web\r\nContent-Length: 3\r\nX-A: 1\r\nX-A: 2\r\n\r\nabcGET")
            .expect("valid")
            .expect("complete");
        assert_eq!(h.parts.method, Method::POST);
        assert_eq!(h.parts.uri, "/a?b=1");
        assert_eq!(h.fields.get(b"host"), Some(&b"web"[..]));
        assert_eq!(h.fields.get_all(b"x-a").count(), 2);
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(3), true));
        assert_eq!(&rest[..], b"abcGET", "the body and what follows stay");

        let h = complete(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n");
        assert!(!h.keep_alive, "HTTP/1.0 closes unless asked");
        let h = complete(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(h.keep_alive);
        let h = complete(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(!h.keep_alive);
        let h = complete(
            b"PUT / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\nExpect: 100-continue\r\n\r\n",
        );
        assert_eq!(h.framing, Framing::Chunked);
        assert!(h.expect_continue && !h.fields.contains(b"expect"));
        let h = complete(b"GET http://web.localhost/x HTTP/1.1\r\n\r\n");
        assert_eq!(h.parts.uri.host(), Some("web.localhost"));
        assert!(head(b"GET / HTTP/1.1\r\nHost: we")
            .expect("valid")
            .is_none());
    }

    #[test]
    fn ambiguous_or_broken_heads_are_refused() {
        let refused = |raw: &[u8]| head(raw).err();
        assert_eq!(
            refused(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Some(Refusal::Bad("conflicting content-length"))
        );
        assert_eq!(
            refused(b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n"),
            Some(Refusal::Bad("bad content-length"))
        );
        assert_eq!(
            refused(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n"),
            Some(Refusal::Bad("both transfer-encoding and content-length"))
        );
        assert_eq!(
            refused(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Some(Refusal::Bad("transfer-encoding is not chunked"))
        );
        assert_eq!(
            refused(b"SSH-2.0-OpenSSH\r\n\r\n"),
            Some(Refusal::Bad("not an HTTP/1.x request"))
        );
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: 1\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(refused(raw.as_bytes()), Some(Refusal::TooManyHeaders));
    }
}
