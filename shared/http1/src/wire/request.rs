//! Request heads from clients (RFC 9112 §2-§3, §6.3): parsed with httparse
//! out of the connection's buffer; header fields stay where they are in
//! the head ([`RawFields`]), not copied.
//!
//! Strict where RFC 9112 requires it, and as nginx answers otherwise:
//!
//! - every line ends with CRLF: a bare LF anywhere in the head is 400, as
//!   soon as it is seen (httparse alone takes it);
//! - the method is one of the IANA HTTP Method Registry's, spelt as
//!   registered ([`known_method`]); anything else is 400;
//! - one Host field at most (§3.2), else 400;
//! - a body is framed by `Transfer-Encoding: chunked` or a Content-Length
//!   of ASCII digits ([`super::codec::Fields`]). Transfer-Encoding in an
//!   HTTP/1.0 request, twice, or beside a Content-Length is 400, and so
//!   is a second Content-Length, even an equal one (nginx: "duplicate
//!   header line"); any
//!   coding other than exactly `chunked` is 501 (nginx: "unknown
//!   Transfer-Encoding").

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::request::Parts;
use http::{Method, Request, Uri, Version};

use super::codec::{Fields, Framing};
use super::fields::RawFields;

/// Most header fields in a request head.
pub const MAX_HEADERS: usize = 128;

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
    /// More header fields than the server takes (431).
    TooManyHeaders,
    /// Not a valid HTTP/1.x request head (400), and why.
    Bad(&'static str),
    /// A valid head asking for what the server does not implement (501):
    /// a transfer coding other than chunked.
    NotImplemented(&'static str),
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
        Ok(httparse::Status::Partial) if has_bare_lf(buf) => return Err(Refusal::Bad("bare LF")),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::TooManyHeaders),
        Err(_) => return Err(Refusal::Bad("not an HTTP/1.x request")),
    };
    if has_bare_lf(&buf[..len]) {
        return Err(Refusal::Bad("bare LF"));
    }
    let method = parsed
        .method
        .filter(|m| known_method(m))
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .ok_or(Refusal::Bad("unknown method"))?;
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
    if fields.hosts > 1 {
        return Err(Refusal::Bad("more than one host"));
    }
    let keep_alive = match version {
        Version::HTTP_10 => fields.keep_alive && !fields.close,
        _ => !fields.close,
    };
    let framing = framing(&fields, version)?;
    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(target)).map_err(|_| Refusal::Bad("bad target"))?;
    let expect_continue = fields.expect_continue;
    let mut fields = RawFields::new(head, fields.into_spans());
    if expect_continue {
        // Answered here: the server asks for the body when the handler reads it.
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

/// How a request's body is delimited (RFC 9112 §6.1-§6.3), checked in
/// nginx's order.
fn framing(fields: &Fields, version: Version) -> Result<Framing, Refusal> {
    if fields.lengths > 1 {
        // Even equal ones: a backend may read either, or refuse both.
        return Err(Refusal::Bad("more than one content-length"));
    }
    if !fields.coded {
        return Ok(fields.length.map_or(Framing::Empty, Framing::Length));
    }
    if fields.transfer_encodings > 1 {
        return Err(Refusal::Bad("more than one transfer-encoding"));
    }
    if version == Version::HTTP_10 {
        // §6.1: an HTTP/1.0 recipient cannot have meant it.
        return Err(Refusal::Bad("transfer-encoding in an HTTP/1.0 request"));
    }
    if !fields.only_chunked {
        return Err(Refusal::NotImplemented(
            "transfer-encoding other than chunked",
        ));
    }
    if fields.length.is_some() {
        // A length beside a transfer coding is how requests are smuggled.
        return Err(Refusal::Bad("both transfer-encoding and content-length"));
    }
    Ok(Framing::Chunked)
}

/// Whether `head` has an LF that no CR precedes.
fn has_bare_lf(head: &[u8]) -> bool {
    head.iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || head[i - 1] != b'\r'))
}

/// Whether `method` is in the IANA HTTP Method Registry, spelt as there
/// (methods are case-sensitive, RFC 9110 §9.1). `PRI` is left out: it is
/// HTTP/2's connection preface, never an HTTP/1.1 request.
pub fn known_method(method: &str) -> bool {
    matches!(
        method,
        "GET"
            | "HEAD"
            | "POST"
            | "PUT"
            | "DELETE"
            | "CONNECT"
            | "OPTIONS"
            | "TRACE"
            | "PATCH"
            | "QUERY"
            | "ACL"
            | "BASELINE-CONTROL"
            | "BIND"
            | "CHECKIN"
            | "CHECKOUT"
            | "COPY"
            | "LABEL"
            | "LINK"
            | "LOCK"
            | "MERGE"
            | "MKACTIVITY"
            | "MKCALENDAR"
            | "MKCOL"
            | "MKREDIRECTREF"
            | "MKWORKSPACE"
            | "MOVE"
            | "ORDERPATCH"
            | "PROPFIND"
            | "PROPPATCH"
            | "REBIND"
            | "REPORT"
            | "SEARCH"
            | "UNBIND"
            | "UNCHECKOUT"
            | "UNLINK"
            | "UNLOCK"
            | "UPDATE"
            | "UPDATEREDIRECTREF"
            | "VERSION-CONTROL"
    )
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
            b"PUT / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\nExpect: 100-continue\r\n\r\n",
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
    fn lengths_are_ascii_digits_only() {
        let refused = |value: &[u8]| {
            let mut raw = b"POST / HTTP/1.1\r\nContent-Length: ".to_vec();
            raw.extend_from_slice(value);
            raw.extend_from_slice(b"\r\n\r\n");
            head(&raw).err()
        };
        for bad in [
            &b"\xc2\xa05"[..],
            b"5\xc2\xa0",
            b"+5",
            b"-5",
            b"0x5",
            b"5 5",
            b"5,5",
            b"",
            b"1234567890123456789",
        ] {
            assert_eq!(
                refused(bad),
                Some(Refusal::Bad("bad content-length")),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let h = complete(b"POST / HTTP/1.1\r\nContent-Length: \t007 \r\n\r\n");
        assert_eq!(
            h.framing,
            Framing::Length(7),
            "OWS around the digits is fine"
        );
        let h = complete(b"POST / HTTP/1.1\r\nContent-Length: 999999999999999999\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(999_999_999_999_999_999));
    }

    #[test]
    fn a_bare_lf_anywhere_in_the_head_is_refused_at_once() {
        for raw in [
            &b"GET / HTTP/1.1\nHost: web\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: web\n\r\n",
            b"GET / HTTP/1.1\r\nHost: web\r\n\n",
            b"GET / HTTP/1.1\r\nHost: web\nX-A: 1\r\n",
            b"\nGET / HTTP/1.1\r\n",
        ] {
            assert_eq!(
                head(raw).err(),
                Some(Refusal::Bad("bare LF")),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn methods_are_the_registered_ones_spelt_as_registered() {
        for method in ["GET", "PATCH", "PROPFIND", "VERSION-CONTROL", "QUERY"] {
            let raw = format!("{method} / HTTP/1.1\r\nHost: web\r\n\r\n");
            assert_eq!(complete(raw.as_bytes()).parts.method.as_str(), method);
        }
        for method in ["FOO", "get", "Get", "PRI", "GETS"] {
            let raw = format!("{method} / HTTP/1.1\r\nHost: web\r\n\r\n");
            assert_eq!(
                head(raw.as_bytes()).err(),
                Some(Refusal::Bad("unknown method")),
                "{method}"
            );
        }
        assert_eq!(
            head(b"G@T / HTTP/1.1\r\n\r\n").err(),
            Some(Refusal::Bad("not an HTTP/1.x request")),
            "not a token"
        );
    }

    #[test]
    fn ambiguous_or_broken_heads_are_refused() {
        let refused = |raw: &[u8]| head(raw).err();
        assert_eq!(
            refused(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Some(Refusal::Bad("conflicting content-length"))
        );
        assert_eq!(
            refused(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx"),
            Some(Refusal::Bad("more than one content-length"))
        );
        assert_eq!(
            refused(b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n"),
            Some(Refusal::Bad("bad content-length"))
        );
        assert_eq!(
            refused(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n"),
            Some(Refusal::Bad("both transfer-encoding and content-length"))
        );
        for coding in [
            "gzip",
            "gzip, chunked",
            "chunked, chunked",
            "identity",
            "chunked;q=1",
        ] {
            let raw = format!("POST / HTTP/1.1\r\nTransfer-Encoding: {coding}\r\n\r\n");
            assert_eq!(
                refused(raw.as_bytes()),
                Some(Refusal::NotImplemented(
                    "transfer-encoding other than chunked"
                )),
                "{coding}"
            );
        }
        assert_eq!(
            refused(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Some(Refusal::Bad("more than one transfer-encoding"))
        );
        assert_eq!(
            refused(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Some(Refusal::Bad("transfer-encoding in an HTTP/1.0 request"))
        );
        assert_eq!(
            refused(b"SSH-2.0-OpenSSH\r\n\r\n"),
            Some(Refusal::Bad("not an HTTP/1.x request"))
        );
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            Some(Refusal::Bad("more than one host"))
        );
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: 1\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(refused(raw.as_bytes()), Some(Refusal::TooManyHeaders));
    }
}
