//! Header fields as a head carried them ([`RawFields`]: slices of the
//! head, no copy, no header map) and the rules that hold for any
//! message: which fields are hop-by-hop (RFC 9110 §7.6.1), and what a
//! proxy passes on of an answer's fields ([`Passed`]).

use std::ops::Range;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, CONNECTION, UPGRADE};

/// `X-Request-Id`: an answer that carries one says so ([`Passed::has_request_id`]).
const X_REQUEST_ID: &[u8] = b"x-request-id";

/// Whether `name` (any case) concerns one connection only (RFC 9110
/// §7.6.1) and is never forwarded: `Connection`, `Keep-Alive`, `TE`,
/// `Trailer`, `Transfer-Encoding`, `Upgrade`, and every `Proxy-*` field
/// (`Proxy-Connection`, still sent by old clients, among them).
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    const NAMES: [&[u8]; 6] = [
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    ];
    NAMES.iter().any(|n| name.eq_ignore_ascii_case(n))
        || name
            .get(..6)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"proxy-"))
}

/// Append one `name: value` line of a message head to `out`.
#[inline]
pub fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Header fields as a head carried them: each name and value as offsets
/// into the head, in order, names in the sender's case. Reading, dropping
/// and passing them on copies nothing until they are written out, and
/// builds no header map.
#[derive(Debug, Default)]
pub struct RawFields {
    head: Bytes,
    spans: Vec<(Range<usize>, Range<usize>)>,
}

/// What [`RawFields::strip_hop_by_hop`] saw of an upgrade.
#[derive(Debug, Default)]
pub struct Upgrade {
    /// The first `Upgrade` field's value.
    pub protocol: Option<HeaderValue>,
    /// `Connection` lists `upgrade`.
    pub asked: bool,
}

impl RawFields {
    /// The fields at `spans` of `head` (as [`super::codec::Fields`] found them).
    pub fn new(head: Bytes, spans: Vec<(Range<usize>, Range<usize>)>) -> Self {
        RawFields { head, spans }
    }

    /// Each field's name and value, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.spans
            .iter()
            .map(|(name, value)| (&self.head[name.clone()], &self.head[value.clone()]))
    }

    /// The values of the fields called `name` (any case), in order.
    pub fn get_all<'a>(&'a self, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The value of the first field called `name` (any case).
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The first value of `name` as a header value sharing the head's bytes.
    pub fn value(&self, name: &[u8]) -> Option<HeaderValue> {
        let (_, value) = self
            .spans
            .iter()
            .find(|(n, _)| self.head[n.clone()].eq_ignore_ascii_case(name))?;
        HeaderValue::from_maybe_shared(self.head.slice(value.clone())).ok()
    }

    /// Whether a field called `name` (any case) is there.
    pub fn contains(&self, name: &[u8]) -> bool {
        self.get(name).is_some()
    }

    /// Remove every field called any of `names` (any case), in one pass.
    pub fn remove_all(&mut self, names: &[&[u8]]) {
        let head = &self.head;
        self.spans.retain(|(n, _)| {
            let n = &head[n.clone()];
            !names.iter().any(|name| n.eq_ignore_ascii_case(name))
        });
    }

    /// Remove every field called `name` (any case).
    pub fn remove(&mut self, name: &[u8]) {
        let head = &self.head;
        self.spans
            .retain(|(n, _)| !head[n.clone()].eq_ignore_ascii_case(name));
    }

    /// How many fields there are.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Remove the hop-by-hop fields, those the `Connection` field names
    /// among them but for the names in `keep`; say what they said of an
    /// upgrade.
    pub fn strip_hop_by_hop(&mut self, keep: &[&[u8]]) -> Upgrade {
        let head = &self.head;
        let mut named: Vec<&[u8]> = Vec::new();
        let mut upgrade = Upgrade::default();
        self.spans.retain(|(name, value)| {
            let name = &head[name.clone()];
            if !is_hop_by_hop(name) {
                return true;
            }
            if name.eq_ignore_ascii_case(b"upgrade") && upgrade.protocol.is_none() {
                upgrade.protocol = HeaderValue::from_maybe_shared(head.slice(value.clone())).ok();
            } else if name.eq_ignore_ascii_case(b"connection") {
                for token in head[value.clone()].split(|b| *b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"upgrade") {
                        upgrade.asked = true;
                    } else if !(token.is_empty()
                        || token.eq_ignore_ascii_case(b"close")
                        || token.eq_ignore_ascii_case(b"keep-alive")
                        || keep.iter().any(|k| token.eq_ignore_ascii_case(k)))
                    {
                        named.push(token);
                    }
                }
            }
            false
        });
        if !named.is_empty() {
            // Rare: the fields the Connection field names go too.
            self.spans.retain(|(name, _)| {
                let name = &head[name.clone()];
                !named.iter().any(|n| n.eq_ignore_ascii_case(name))
            });
        }
        upgrade
    }

    /// Append the fields to `out`, one `name: value` line each. Fields
    /// that were whole adjacent lines of the head go out in one copy.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let mut run: Option<Range<usize>> = None;
        for (name, value) in &self.spans {
            match &mut run {
                Some(lines) if self.head.get(lines.end..name.start) == Some(b"\r\n") => {
                    lines.end = value.end;
                }
                _ => {
                    if let Some(lines) = run.take() {
                        out.extend_from_slice(&self.head[lines]);
                        out.extend_from_slice(b"\r\n");
                    }
                    run = Some(name.start..value.end);
                }
            }
        }
        if let Some(lines) = run {
            out.extend_from_slice(&self.head[lines]);
            out.extend_from_slice(b"\r\n");
        }
    }
}

impl RawFields {
    /// The fields of `raw`: `name: value` lines, then an empty one; `None`
    /// when `raw` is not that (or has more than 64 fields). For tests and
    /// tools: heads off a connection are parsed by [`super::request`] and
    /// [`super::response`].
    pub fn parse(raw: &[u8]) -> Option<Self> {
        let mut parsed = [httparse::EMPTY_HEADER; 64];
        let httparse::Status::Complete((_, parsed)) =
            httparse::parse_headers(raw, &mut parsed).ok()?
        else {
            return None;
        };
        let spans = super::codec::Fields::read(raw, parsed).ok()?.into_spans();
        Some(RawFields::new(Bytes::copy_from_slice(raw), spans))
    }
}

/// A peer's header fields on their way to the other side: an answer's
/// fields less the hop-by-hop ones, as a proxy passes them on.
#[derive(Debug, Default)]
pub struct Passed {
    fields: RawFields,
    /// The `Upgrade` field's value: hop-by-hop, left out of `fields`, but
    /// an upgrade's answer sends it on (see [`set_upgrade`]).
    upgrade: Option<HeaderValue>,
    /// A `Content-Length` is among the fields.
    length: bool,
    /// An `X-Request-Id` is among the fields.
    request_id: bool,
    /// The backend sent a Transfer-Encoding (left out of `fields`).
    coded: bool,
}

impl Passed {
    /// `fields` without the hop-by-hop ones and, if the backend sent a
    /// transfer coding (`coded`), without `Content-Length`: the coding wins.
    pub fn new(mut fields: RawFields, coded: bool) -> Self {
        let upgrade = fields.strip_hop_by_hop(&[]).protocol;
        if coded {
            fields.remove(b"content-length");
        }
        Passed {
            length: !coded && fields.contains(b"content-length"),
            request_id: fields.contains(X_REQUEST_ID),
            fields,
            upgrade,
            coded,
        }
    }

    /// Whether the backend sent a Transfer-Encoding: its body (or, for
    /// HEAD, a GET's) has no length of its own.
    pub fn is_coded(&self) -> bool {
        self.coded
    }

    /// The protocol the backend's `Upgrade` field names, if it sent one.
    pub fn upgrade(&self) -> Option<HeaderValue> {
        self.upgrade.clone()
    }

    /// Whether a `Content-Length` is among the fields.
    pub fn has_length(&self) -> bool {
        self.length
    }

    /// Whether an `X-Request-Id` is among the fields.
    pub fn has_request_id(&self) -> bool {
        self.request_id
    }

    /// How many fields there are.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Append the fields to `out` ([`RawFields::write_to`]).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        self.fields.write_to(out);
    }
}

/// Put the upgrade handshake in `headers` (after the hop-by-hop fields
/// were stripped).
pub fn set_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, protocol);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> RawFields {
        RawFields::parse(raw).expect("valid fields")
    }

    fn written(fields: &RawFields) -> String {
        let mut out = Vec::new();
        fields.write_to(&mut out);
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn hop_by_hop_fields_go_including_those_connection_names() {
        let mut f = parse(
            b"Content-Type: text/plain\r\nConnection: keep-alive, X-Secret\r\n\
              Keep-Alive: timeout=5\r\nx-secret: 1\r\nTransfer-Encoding: chunked\r\n\
              Upgrade: websocket\r\nContent-Length: 3\r\nProxy-Foo: 1\r\nTE: trailers\r\n\
              Proxy-Authorization: Basic x\r\nTrailer: x\r\nProxy-Connection: keep-alive\r\n\
              Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n",
        );
        let upgrade = f.strip_hop_by_hop(&[]);
        assert_eq!(
            written(&f),
            "Content-Type: text/plain\r\nContent-Length: 3\r\n\
             Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n",
            "the others keep their case, order and repeats"
        );
        assert_eq!(upgrade.protocol.expect("kept aside"), "websocket");
        assert!(!upgrade.asked, "Connection did not ask for it");
        assert!(f.contains(b"CONTENT-LENGTH") && f.get(b"x-secret").is_none());
        assert_eq!(
            f.get_all(b"set-cookie").collect::<Vec<_>>(),
            [b"a=1", b"b=2"]
        );
    }

    #[test]
    fn lines_are_written_with_crlf_whatever_they_came_with() {
        let f = parse(b"X-A:  1 \nX-B: 2\n\n");
        assert_eq!(written(&f), "X-A:  1\r\nX-B: 2\r\n");
        assert_eq!(written(&parse(b"\r\n")), "");
    }

    #[test]
    fn a_backends_fields_are_passed_without_the_hop_by_hop_ones() {
        let p = Passed::new(
            parse(b"Connection: close\r\nContent-Length: 3\r\nUpgrade: h2c\r\n\r\n"),
            false,
        );
        assert!(p.has_length() && !p.has_request_id() && p.len() == 1);
        assert_eq!(p.upgrade().expect("kept aside"), "h2c");
        let p = Passed::new(
            parse(b"content-length: 3\r\nx-request-id: r1\r\n\r\n"),
            true,
        );
        assert_eq!(
            written(&p.fields),
            "x-request-id: r1\r\n",
            "the length dropped when asked"
        );
        assert!(!p.has_length() && p.has_request_id() && p.upgrade().is_none());
        let p = Passed::new(
            parse(b"Connection: Content-Length\r\nContent-Length: 3\r\n\r\n"),
            false,
        );
        assert!(
            !p.has_length() && p.is_empty(),
            "a length the Connection field names goes, and is not counted"
        );
    }
}
