//! The router's header policy, on the fields as a head carried them
//! ([`RawFields`], whose hop-by-hop rules are HTTP/1.1's): `X-Forwarded-*`
//! and `X-Request-Id` set on the way in (the client's kept or extended
//! only when it is a trusted proxy, [`Peer`]), fields the router sets that
//! a `Connection` field cannot name away, and the `Upgrade` handshake
//! kept for upgrades (WebSockets).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use hyper::header::{HeaderName, HeaderValue};
use mentat_http1::wire::fields::{push_field, RawFields};

/// `X-Environment`: the environment whose table routes the request.
pub const X_ENVIRONMENT: &[u8] = b"x-environment";
/// `X-Request-Id`: kept when a trusted proxy sends one, generated otherwise.
pub const X_REQUEST_ID: &[u8] = b"x-request-id";
/// [`X_REQUEST_ID`] as a header name, for answers.
pub static X_REQUEST_ID_NAME: HeaderName = HeaderName::from_static("x-request-id");
/// `X-Forwarded-For`: the client's address, appended to a trusted proxy's chain.
const X_FORWARDED_FOR: &[u8] = b"x-forwarded-for";
/// `X-Forwarded-Proto`: `http` unless a trusted proxy in front already said.
const X_FORWARDED_PROTO: &[u8] = b"x-forwarded-proto";
/// `X-Forwarded-Host`: the Host the client asked for, unless a trusted
/// proxy in front already said.
const X_FORWARDED_HOST: &[u8] = b"x-forwarded-host";

/// The forwarding fields a client may only send as a trusted proxy.
const FORWARDING: [&[u8]; 4] = [
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    X_REQUEST_ID,
];

/// Fields of a request the router sets or frames it by: a client's
/// `Connection` field cannot name them away (RFC 9110 §7.6.1 is about a
/// connection's own options; these are the router's to set). The router
/// keeps or sets them as it would have had `Connection` not named them.
/// Every other name `Connection` lists (`Authorization`, `Cookie`, ...) is
/// removed, as the RFC requires.
const ROUTER_SET: [&[u8]; 6] = [
    b"host",
    b"content-length",
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    X_REQUEST_ID,
];

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

/// The client at the other end of a connection, as the router forwards its
/// requests: its address, and whether it is a trusted proxy
/// (`--trusted-proxies`). Made once per connection.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The address, as `X-Forwarded-For` carries it ([`client_addr`]).
    pub addr: HeaderValue,
    /// A trusted proxy: its forwarding fields are kept.
    pub trusted: bool,
}

impl Peer {
    /// The client at `ip`, trusted or not.
    pub fn new(ip: IpAddr, trusted: bool) -> Self {
        Peer {
            addr: client_addr(ip),
            trusted,
        }
    }
}

/// The fields the router adds to a forwarded request, written after the
/// client's own (see [`Forwarded::fields`]).
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
    /// The protocol the client asked to upgrade to (`Connection: upgrade`
    /// and an `Upgrade` field), sent on as the handshake.
    pub upgrade: Option<HeaderValue>,
}

impl Forwarded {
    /// The fields to send after the request's own: names and values.
    pub fn fields(&self) -> impl Iterator<Item = (&'static [u8], &HeaderValue)> {
        static HTTP: HeaderValue = HeaderValue::from_static("http");
        static UPGRADE_TOKEN: HeaderValue = HeaderValue::from_static("upgrade");
        let id = self.new_id.then_some((X_REQUEST_ID, &self.request_id));
        let proto = self.proto.then_some((X_FORWARDED_PROTO, &HTTP));
        let host = self.host.as_ref().map(|h| (X_FORWARDED_HOST, h));
        let upgrade = self
            .upgrade
            .as_ref()
            .into_iter()
            .flat_map(|p| [(&b"connection"[..], &UPGRADE_TOKEN), (&b"upgrade"[..], p)]);
        id.into_iter()
            .chain(std::iter::once((X_FORWARDED_FOR, &self.forwarded_for)))
            .chain(proto)
            .chain(host)
            .chain(upgrade)
    }
}

impl Forwarded {
    /// Append the fields ([`Forwarded::fields`]) to a head, one line each.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        for (name, value) in self.fields() {
            push_field(out, name, value.as_bytes());
        }
    }
}

/// Whether `value` is visible ASCII (what [`HeaderValue::to_str`] takes).
fn visible_ascii(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
}

/// Prepare a request's fields for the backend: remove the hop-by-hop ones
/// (a `Connection` field cannot name the router's own, [`ROUTER_SET`]) and
/// say what to add ([`Forwarded`]). From a client that is not a trusted
/// proxy, its `X-Forwarded-*` and `X-Request-Id` fields are dropped and the
/// router's own values sent instead. From a trusted proxy, its chain is
/// extended with its address and its other fields kept (a request id that
/// is not a usable header value is still replaced). Every other field goes
/// unchanged.
pub fn forward_request(fields: &mut RawFields, peer: &Peer) -> Forwarded {
    let upgrade = fields.strip_hop_by_hop(&ROUTER_SET);
    if !peer.trusted {
        fields.remove_all(&FORWARDING);
    }
    let kept_id = fields
        .value(X_REQUEST_ID)
        .filter(|id| !id.is_empty() && id.to_str().is_ok());
    let (request_id, new_id) = match kept_id {
        Some(id) => (id, false),
        None => {
            fields.remove(X_REQUEST_ID);
            (new_request_id(), true)
        }
    };
    let client = &peer.addr;
    let forwarded_for = if fields.contains(X_FORWARDED_FOR) {
        let mut joined: Vec<u8> = Vec::new();
        for v in fields.get_all(X_FORWARDED_FOR).filter(|v| visible_ascii(v)) {
            joined.extend_from_slice(v);
            joined.extend_from_slice(b", ");
        }
        joined.extend_from_slice(client.as_bytes());
        fields.remove(X_FORWARDED_FOR);
        HeaderValue::from_bytes(&joined).unwrap_or_else(|_| client.clone())
    } else {
        client.clone()
    };
    let proto = !fields.contains(X_FORWARDED_PROTO);
    let host = if fields.contains(X_FORWARDED_HOST) {
        None
    } else {
        fields.value(b"host")
    };
    Forwarded {
        request_id,
        new_id,
        forwarded_for,
        proto,
        host,
        upgrade: upgrade.asked.then_some(upgrade.protocol).flatten(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request's fields as the backend gets them, and its id.
    fn sent(raw: &[u8], client: &Peer) -> (HeaderValue, String, Forwarded) {
        let mut f = RawFields::parse(raw).expect("valid fields");
        let forwarded = forward_request(&mut f, client);
        let mut out = Vec::new();
        f.write_to(&mut out);
        for (name, value) in forwarded.fields() {
            push_field(&mut out, name, value.as_bytes());
        }
        let out = String::from_utf8(out).expect("utf-8");
        (forwarded.request_id.clone(), out, forwarded)
    }

    #[test]
    fn upgrades_are_recognised_and_sent_on() {
        let client = Peer::new([10, 0, 0, 7].into(), false);
        let (id, out, forwarded) = sent(
            b"Connection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
            &client,
        );
        assert_eq!(forwarded.upgrade.expect("an upgrade"), "websocket");
        assert_eq!(
            out,
            format!(
                "x-request-id: {}\r\nx-forwarded-for: 10.0.0.7\r\nx-forwarded-proto: http\r\n\
                 connection: upgrade\r\nupgrade: websocket\r\n",
                id.to_str().expect("ascii")
            )
        );
        let (_, _, plain) = sent(b"Upgrade: websocket\r\n\r\n", &client);
        assert!(
            plain.upgrade.is_none(),
            "Upgrade without Connection: upgrade"
        );
        let (_, out, bare) = sent(b"Connection: upgrade\r\n\r\n", &client);
        assert!(
            bare.upgrade.is_none(),
            "Connection: upgrade without Upgrade"
        );
        assert!(!out.contains("upgrade"), "{out}");
    }

    #[test]
    fn forwarded_fields_are_added() {
        let client = Peer::new([10, 0, 0, 7].into(), false);
        let (id, out, _) = sent(b"Host: web.localhost\r\n\r\n", &client);
        let id = id.to_str().expect("ascii").to_owned();
        assert_eq!(
            out,
            format!(
                "Host: web.localhost\r\nx-request-id: {id}\r\nx-forwarded-for: 10.0.0.7\r\n\
                 x-forwarded-proto: http\r\nx-forwarded-host: web.localhost\r\n"
            )
        );
        let (next, _, _) = sent(b"\r\n", &client);
        assert_ne!(id, next, "request ids are unique");
        assert_eq!(id.len(), 32);
    }

    const FORGED: &[u8] = b"Host: web.localhost\r\nX-Request-Id: abc\r\n\
        X-Forwarded-For: 1.2.3.4\r\nx-forwarded-for: 5.6.7.8\r\n\
        X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\n\r\n";

    #[test]
    fn an_untrusted_clients_forwarding_fields_are_replaced_by_the_routers() {
        let client = Peer::new([10, 0, 0, 7].into(), false);
        let (id, out, _) = sent(FORGED, &client);
        let id = id.to_str().expect("ascii").to_owned();
        assert_eq!(id.len(), 32, "a new id, not the client's");
        assert_eq!(
            out,
            format!(
                "Host: web.localhost\r\nx-request-id: {id}\r\nx-forwarded-for: 10.0.0.7\r\n\
                 x-forwarded-proto: http\r\nx-forwarded-host: web.localhost\r\n"
            )
        );
    }

    #[test]
    fn a_trusted_proxys_chain_is_extended_and_its_other_fields_kept() {
        let proxy = Peer::new([10, 0, 0, 7].into(), true);
        let (id, out, _) = sent(FORGED, &proxy);
        assert_eq!(id, "abc");
        assert_eq!(
            out,
            "Host: web.localhost\r\nX-Request-Id: abc\r\nX-Forwarded-Proto: https\r\n\
             X-Forwarded-Host: evil.example\r\n\
             x-forwarded-for: 1.2.3.4, 5.6.7.8, 10.0.0.7\r\n",
            "the id kept once, the chain joined, proto and host kept"
        );

        let (_, out, _) = sent(
            b"X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-For: caf\xe9\r\n\r\n",
            &proxy,
        );
        assert!(
            out.ends_with("x-forwarded-for: 1.2.3.4, 10.0.0.7\r\nx-forwarded-proto: http\r\n"),
            "a link that is not visible ASCII is left out of the chain: {out}"
        );

        let (id, out, _) = sent(b"X-Request-Id: \r\n\r\n", &proxy);
        assert_eq!(id.len(), 32, "an empty id is replaced");
        assert_eq!(out.matches("x-request-id").count(), 1, "{out}");
        assert!(!out.contains("X-Request-Id"), "{out}");
    }

    #[test]
    fn connection_cannot_name_away_the_fields_the_router_sets() {
        for trusted in [false, true] {
            let peer = Peer::new([10, 0, 0, 7].into(), trusted);
            let (_, out, _) = sent(
                b"Connection: close, Host, Content-Length, X-Forwarded-For, X-Request-Id,\
                  x-forwarded-proto, X-Forwarded-Host, Authorization, Cookie, X-Other\r\n\
                  Host: web.localhost\r\nContent-Length: 2\r\nX-Forwarded-For: 1.2.3.4\r\n\
                  Authorization: Basic eA==\r\nCookie: a=1\r\nX-Other: 1\r\nX-Kept: 1\r\n\r\n",
                &peer,
            );
            assert!(
                out.starts_with("Host: web.localhost\r\nContent-Length: 2\r\n"),
                "{out}"
            );
            let chain = if trusted {
                "x-forwarded-for: 1.2.3.4, 10.0.0.7\r\n"
            } else {
                "x-forwarded-for: 10.0.0.7\r\n"
            };
            for field in [
                chain,
                "x-forwarded-proto: http\r\n",
                "x-forwarded-host: web.localhost\r\n",
                "X-Kept: 1\r\n",
            ] {
                assert!(out.contains(field), "{field:?} in {out}");
            }
            assert_eq!(out.matches("x-request-id: ").count(), 1, "{out}");
            for gone in ["Authorization", "Cookie", "X-Other", "Connection"] {
                assert!(
                    !out.contains(gone),
                    "{gone} named by Connection goes: {out}"
                );
            }
        }
    }
}
