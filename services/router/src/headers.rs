//! Header rewriting: hop-by-hop headers removed in both directions,
//! `X-Forwarded-*` and `X-Request-Id` added on the way in, and the
//! `Upgrade` handshake kept for upgrades (WebSockets).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

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
const HOP_BY_HOP: [HeaderName; 9] = [
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
    for name in HOP_BY_HOP {
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

/// Prepare request headers for the backend and return the request id.
/// `client` is the client's address ([`client_addr`]).
pub fn forward_request(headers: &mut HeaderMap, client: &HeaderValue) -> HeaderValue {
    strip_hop_by_hop(headers);
    // Room for the four headers below: the map grows once, not per insert.
    headers.reserve(4);
    let host = headers.get(HOST).cloned();
    let request_id = match headers.entry(X_REQUEST_ID) {
        Entry::Occupied(id) if !id.get().is_empty() && id.get().to_str().is_ok() => {
            id.get().clone()
        }
        Entry::Occupied(mut other) => {
            let id = new_request_id();
            other.insert(id.clone());
            id
        }
        Entry::Vacant(slot) => slot.insert(new_request_id()).clone(),
    };
    match headers.entry(X_FORWARDED_FOR) {
        Entry::Vacant(slot) => {
            slot.insert(client.clone());
        }
        Entry::Occupied(mut chain) => {
            let mut joined: Vec<u8> = Vec::new();
            for v in chain.iter().filter(|v| v.to_str().is_ok()) {
                joined.extend_from_slice(v.as_bytes());
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(client.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&joined) {
                chain.insert(v);
            }
        }
    }
    headers
        .entry(X_FORWARDED_PROTO)
        .or_insert_with(|| HeaderValue::from_static("http"));
    if let (Entry::Vacant(slot), Some(host)) = (headers.entry(X_FORWARDED_HOST), host) {
        slot.insert(host);
    }
    request_id
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
        let client = client_addr([10, 0, 0, 7].into());
        let client = &client;
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static("web.localhost"));
        let id = forward_request(&mut h, client);
        assert_eq!(h[X_REQUEST_ID], id);
        assert_eq!(h[X_FORWARDED_FOR], "10.0.0.7");
        assert_eq!(h[X_FORWARDED_PROTO], "http");
        assert_eq!(h[X_FORWARDED_HOST], "web.localhost");
        let next = forward_request(&mut HeaderMap::new(), client);
        assert_ne!(id, next, "request ids are unique");
        assert_eq!(id.len(), 32);

        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc"));
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        assert_eq!(forward_request(&mut h, client), "abc");
        assert_eq!(h[X_FORWARDED_FOR], "1.2.3.4, 10.0.0.7");
        assert_eq!(h[X_FORWARDED_PROTO], "https");
    }
}
