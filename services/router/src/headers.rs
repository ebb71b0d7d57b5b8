//! Header rewriting: hop-by-hop headers removed in both directions,
//! `X-Forwarded-*` and `X-Request-Id` added on the way in, and the
//! `Upgrade` handshake kept for upgrades (WebSockets).

use std::net::IpAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use bytes::Bytes;
use hyper::header::{
    Entry, HeaderMap, HeaderName, HeaderValue, CONNECTION, HOST, PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};

/// `X-Environment`: the environment whose table routes the request.
pub const X_ENVIRONMENT: HeaderName = HeaderName::from_static("x-environment");

/// `X-Request-Id`: kept when the client sends one, generated otherwise.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `X-Forwarded-For`: the client chain, this client appended.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`: `http` unless a proxy in front already said.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`: the Host the client asked for.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// `Keep-Alive`.
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
/// `Proxy-Connection` (non-standard, still sent by old clients).
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers that concern one connection only (RFC 9110 §7.6.1), never
/// forwarded; every other `Proxy-*` header goes too.
static HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
];

/// Remove hop-by-hop headers, including those the `Connection` header
/// names and every `Proxy-*` header.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names (no hashing) is
    // cheaper than nine removals that find nothing.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if headers.contains_key(CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if headers.keys().any(|k| k.as_str().starts_with("proxy-")) {
        let proxy: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("proxy-"))
            .cloned()
            .collect();
        for name in proxy {
            headers.remove(name);
        }
    }
}

/// A name [`strip_hop_by_hop`] removes whatever the `Connection` header says.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || name.as_str().starts_with("proxy-")
}

/// Append one `name: value` line of a message head to `out`.
#[inline]
pub fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Whether `name` (as sent, any case) is one [`strip_hop_by_hop`] removes
/// whatever the `Connection` header says: [`HOP_BY_HOP`] as bytes, the
/// `proxy-` prefix covering three of them.
fn is_hop_by_hop_bytes(name: &[u8]) -> bool {
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

/// A backend's header fields on their way to a client: the fields of its
/// response head as they came (names in the backend's case), less the
/// hop-by-hop ones. They are written out as slices of the head, with no
/// header map built and dropped per answer.
#[derive(Debug, Default)]
pub struct Passed {
    head: Bytes,
    /// Name and value of each field kept, as offsets into `head`.
    fields: Vec<(Range<usize>, Range<usize>)>,
    /// The `Upgrade` field's value: hop-by-hop, left out of `fields`, but
    /// an upgrade's answer sends it on (see [`set_upgrade`]).
    upgrade: Option<HeaderValue>,
    /// A `Content-Length` is among the fields.
    length: bool,
    /// An `X-Request-Id` is among the fields.
    request_id: bool,
}

impl Passed {
    /// The fields at `spans` of `head` (as [`crate::codec::Fields`] found
    /// them), without the hop-by-hop ones (those [`strip_hop_by_hop`]
    /// removes) and, if `drop_length`, without `Content-Length`.
    pub fn new(
        head: Bytes,
        mut spans: Vec<(Range<usize>, Range<usize>)>,
        drop_length: bool,
    ) -> Self {
        let mut named: Vec<&[u8]> = Vec::new();
        let mut upgrade = None;
        let (mut length, mut request_id) = (false, false);
        spans.retain(|(name, value)| {
            let name = &head[name.clone()];
            if !is_hop_by_hop_bytes(name) {
                if name.eq_ignore_ascii_case(b"content-length") {
                    length = !drop_length;
                    return !drop_length;
                }
                request_id |= name.eq_ignore_ascii_case(b"x-request-id");
                return true;
            }
            if name.eq_ignore_ascii_case(b"upgrade") && upgrade.is_none() {
                upgrade = HeaderValue::from_maybe_shared(head.slice(value.clone())).ok();
            } else if name.eq_ignore_ascii_case(b"connection") {
                named.extend(
                    head[value.clone()]
                        .split(|b| *b == b',')
                        .map(<[u8]>::trim_ascii)
                        .filter(|n| !n.is_empty()),
                );
            }
            false
        });
        if !named.is_empty() {
            // Rare: fields the Connection header names go too.
            spans.retain(|(name, _)| {
                let name = &head[name.clone()];
                let keep = !named.iter().any(|n| n.eq_ignore_ascii_case(name));
                if !keep && name.eq_ignore_ascii_case(b"content-length") {
                    length = false;
                } else if !keep && name.eq_ignore_ascii_case(b"x-request-id") {
                    request_id = false;
                }
                keep
            });
        }
        Passed {
            head,
            fields: spans,
            upgrade,
            length,
            request_id,
        }
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

    /// Append the fields to `out`, one `name: value` line each. Fields
    /// that were whole adjacent lines of the head go out in one copy.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let mut run: Option<Range<usize>> = None;
        for (name, value) in &self.fields {
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

/// The protocol a request asks to upgrade to (`Connection: upgrade` and an
/// `Upgrade` header), if any.
pub fn upgrade_of(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(UPGRADE).cloned()).flatten()
}

/// Put the upgrade handshake back after [`strip_hop_by_hop`].
pub fn set_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, protocol);
}

/// A request id unique to this router process: a random 64-bit prefix
/// drawn once, then a counter (no system call per request, unlike a UUID
/// drawn from the OS's random source), as 32 lower-case hex digits.
fn new_request_id() -> HeaderValue {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| uuid::Uuid::new_v4().as_u64_pair().0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut id = [0u8; 32];
    hex(prefix, &mut id[..16]);
    hex(n, &mut id[16..]);
    HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// `value` as 16 lower-case hex digits into `out`.
fn hex(value: u64, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in out.iter_mut().enumerate() {
        let shift = 60 - 4 * i;
        *b = DIGITS[((value >> shift) & 0xf) as usize];
    }
}

/// The client's address as a header value, made once per connection.
pub fn client_addr(client: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&client.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The headers the router adds to a forwarded request. They are written
/// after the client's own (see [`Forwarded::fields`]) instead of being
/// inserted into its header map, which would hash and grow it per request.
#[derive(Debug, Clone)]
pub struct Forwarded {
    /// The request id: the client's, or a new one.
    pub request_id: HeaderValue,
    /// Whether the id is new (the client sent none, or an unusable one).
    new_id: bool,
    /// `X-Forwarded-For`: the client's chain with this client appended.
    forwarded_for: HeaderValue,
    /// `X-Forwarded-Proto: http`, unless the client's request had one.
    proto: bool,
    /// `X-Forwarded-Host`, unless the client's request had one.
    host: Option<HeaderValue>,
}

impl Forwarded {
    /// The fields to send after the request's own headers.
    pub fn fields(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        static HTTP: HeaderValue = HeaderValue::from_static("http");
        static ID: HeaderName = X_REQUEST_ID;
        static FOR: HeaderName = X_FORWARDED_FOR;
        static PROTO: HeaderName = X_FORWARDED_PROTO;
        static HOST: HeaderName = X_FORWARDED_HOST;
        let id = self.new_id.then_some((&ID, &self.request_id));
        let proto = self.proto.then_some((&PROTO, &HTTP));
        let host = self.host.as_ref().map(|h| (&HOST, h));
        id.into_iter()
            .chain(std::iter::once((&FOR, &self.forwarded_for)))
            .chain(proto)
            .chain(host)
    }
}

/// Prepare a request for the backend: remove its hop-by-hop headers and
/// say what to add ([`Forwarded`]). `client` is the client's address
/// ([`client_addr`]). The map changes beyond the hop-by-hop headers only
/// when the client sent an unusable request id or a forwarding chain.
pub fn forward_request(headers: &mut HeaderMap, client: &HeaderValue) -> Forwarded {
    strip_hop_by_hop(headers);
    let kept_id = headers
        .get(X_REQUEST_ID)
        .filter(|id| !id.is_empty() && id.to_str().is_ok())
        .cloned();
    let (request_id, new_id) = match kept_id {
        Some(id) => (id, false),
        None => {
            headers.remove(X_REQUEST_ID);
            (new_request_id(), true)
        }
    };
    let forwarded_for = match headers.entry(X_FORWARDED_FOR) {
        Entry::Vacant(_) => client.clone(),
        Entry::Occupied(chain) => {
            let mut joined: Vec<u8> = Vec::new();
            for v in chain.iter().filter(|v| v.to_str().is_ok()) {
                joined.extend_from_slice(v.as_bytes());
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(client.as_bytes());
            chain.remove_entry_mult().1.for_each(drop);
            HeaderValue::from_bytes(&joined).unwrap_or_else(|_| client.clone())
        }
    };
    let proto = !headers.contains_key(X_FORWARDED_PROTO);
    let host = if headers.contains_key(X_FORWARDED_HOST) {
        None
    } else {
        headers.get(HOST).cloned()
    };
    Forwarded {
        request_id,
        new_id,
        forwarded_for,
        proto,
        host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_including_those_connection_names() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, X-Secret"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("content-length", HeaderValue::from_static("3"));
        h.insert("proxy-foo", HeaderValue::from_static("1"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert("te", HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("content-length"));
    }

    /// `raw`'s fields as a backend's answer passes them on, written out.
    fn passed(raw: &[u8], drop_length: bool) -> (Passed, String) {
        let mut fields = [httparse::EMPTY_HEADER; 16];
        let httparse::Status::Complete((_, parsed)) =
            httparse::parse_headers(raw, &mut fields).expect("valid")
        else {
            panic!("complete");
        };
        let spans = crate::codec::Fields::read(raw, parsed)
            .expect("fields")
            .into_spans();
        let passed = Passed::new(Bytes::copy_from_slice(raw), spans, drop_length);
        let mut out = Vec::new();
        passed.write_to(&mut out);
        (passed, String::from_utf8(out).expect("utf-8"))
    }

    #[test]
    fn passed_fields_keep_their_case_and_lose_the_hop_by_hop_ones() {
        let (p, out) = passed(
            b"Content-Type: text/plain\r\nConnection: keep-alive, X-Secret\r\n\
              Keep-Alive: timeout=5\r\nx-secret: 1\r\nTransfer-Encoding: chunked\r\n\
              Upgrade: websocket\r\nContent-Length: 3\r\nProxy-Foo: 1\r\nTE: trailers\r\n\
              Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n",
            false,
        );
        assert_eq!(
            out,
            "Content-Type: text/plain\r\nContent-Length: 3\r\n\
             Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
        );
        assert_eq!(p.len(), 4);
        assert!(p.has_length() && !p.has_request_id(), "names in any case");
        assert_eq!(p.upgrade().expect("kept aside"), "websocket");

        let (p, out) = passed(b"content-length: 3\r\nx-request-id: r1\r\n\r\n", true);
        assert_eq!(out, "x-request-id: r1\r\n", "the length dropped when asked");
        assert!(!p.has_length() && p.has_request_id() && p.upgrade().is_none());
        let (_, out) = passed(b"X-A:  1 \nX-B: 2\n\n", false);
        assert_eq!(out, "X-A:  1\r\nX-B: 2\r\n", "lines end with CRLF");
        let (p, out) = passed(b"\r\n", false);
        assert!(p.len() == 0 && out.is_empty());
    }

    #[test]
    fn the_byte_names_are_the_hop_by_hop_names() {
        for name in &HOP_BY_HOP {
            assert!(is_hop_by_hop_bytes(name.as_str().to_uppercase().as_bytes()));
        }
        assert!(is_hop_by_hop_bytes(b"Proxy-Foo"));
        assert!(!is_hop_by_hop_bytes(b"content-length") && !is_hop_by_hop_bytes(b"proxy"));
    }

    #[test]
    fn upgrades_are_recognised_and_restored() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        let protocol = upgrade_of(&h).expect("an upgrade");
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty());
        set_upgrade(&mut h, protocol);
        assert_eq!(h[UPGRADE], "websocket");
        let mut plain = HeaderMap::new();
        plain.insert(UPGRADE, HeaderValue::from_static("websocket"));
        assert!(
            upgrade_of(&plain).is_none(),
            "Upgrade without Connection: upgrade"
        );
    }

    #[test]
    fn forwarded_headers_are_added_and_chained() {
        /// The request's headers as the backend gets them.
        fn sent(h: &mut HeaderMap, client: &HeaderValue) -> (HeaderValue, HeaderMap) {
            let forwarded = forward_request(h, client);
            let mut all = h.clone();
            for (name, value) in forwarded.fields() {
                all.append(name.clone(), value.clone());
            }
            (forwarded.request_id, all)
        }
        let client = client_addr([10, 0, 0, 7].into());
        let client = &client;
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static("web.localhost"));
        let (id, h) = sent(&mut h, client);
        assert_eq!(h[X_REQUEST_ID], id);
        assert_eq!(h[X_FORWARDED_FOR], "10.0.0.7");
        assert_eq!(h[X_FORWARDED_PROTO], "http");
        assert_eq!(h[X_FORWARDED_HOST], "web.localhost");
        assert_eq!(h.len(), 5);
        let (next, _) = sent(&mut HeaderMap::new(), client);
        assert_ne!(id, next, "request ids are unique");
        assert_eq!(id.len(), 32);

        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc"));
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("5.6.7.8"));
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        let (id, h) = sent(&mut h, client);
        assert_eq!(id, "abc");
        assert_eq!(h.get_all(X_REQUEST_ID).iter().count(), 1);
        let chain: Vec<_> = h.get_all(X_FORWARDED_FOR).iter().collect();
        assert_eq!(chain, ["1.2.3.4, 5.6.7.8, 10.0.0.7"]);
        assert_eq!(
            h.get_all(X_FORWARDED_PROTO).iter().collect::<Vec<_>>(),
            ["https"]
        );

        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static(""));
        let (id, h) = sent(&mut h, client);
        assert_eq!(id.len(), 32, "an empty id is replaced");
        assert_eq!(h.get_all(X_REQUEST_ID).iter().collect::<Vec<_>>(), [&id]);
    }
}
