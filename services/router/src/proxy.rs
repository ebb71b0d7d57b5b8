//! The request path: find the routes from the environment and the Host,
//! pick a backend (the one addressed, the sticky one, or the next by
//! weight), forward the request on a pooled connection, stream the answer
//! back, and retry once on another backend when that is safe.
//!
//! Retry rules, for requests not addressed to one replica:
//!
//! - nothing reached the backend (connection refused or timed out, pool
//!   full, or a pooled connection found closed before the request was
//!   written): retried whatever the method;
//! - the request may have reached the backend (reset, closed before the
//!   answer) or the backend answered 502/503: retried only for idempotent
//!   methods (GET, HEAD, OPTIONS, PUT, DELETE, TRACE) whose body was never
//!   read (bodies are streamed, never buffered);
//! - never more than one retry. When no attempt reached any backend the
//!   answer is 503 with `Retry-After`, else 502.
//!
//! A request body the client breaks (too large, bad chunks, too slow) is
//! the client's fault: 413, 400 or 408, never retried, and the backend
//! connection that got part of it is closed. A backend that does not
//! answer within the response head bound gets the request a 504, not
//! retried, and its connection closed ([`crate::bounds`]). A 101 to a request that asked no
//! upgrade is a 502, and its backend connection is closed.

use std::borrow::Cow;
use std::sync::Arc;

use hyper::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use hyper::http::request::Parts;
use hyper::{Method, StatusCode};
use mentat_domain::spec::{Sticky, DEFAULT_ENVIRONMENT};
use mentat_http1::bounds::Bounds;
use mentat_http1::client::{Answer, Outbound, Reader};
use mentat_http1::io::Io;
use mentat_http1::server::{Fault, Request, RequestBody, Response};
use mentat_http1::wire::fields::RawFields;
use tokio_util::sync::CancellationToken;

use crate::body::ProxyBody;
use crate::endpoint::InFlight;
use crate::headers::{self, Peer, X_ENVIRONMENT, X_REQUEST_ID_NAME};
use crate::host::{self, Target};
use crate::pool::{CheckoutError, Upstream};
use crate::table::{ServiceRoutes, SharedTable};
use crate::trust::TrustedProxies;
use crate::tunnel::{self, Tunnel};

/// Attempts at picking a backend in rotation when the table changes under
/// the request (a picked replica started draining).
const PICK_ATTEMPTS: usize = 3;

/// The proxy: the table it reads and the limits it applies.
#[derive(Debug)]
pub struct Proxy {
    table: SharedTable,
    domain: String,
    /// The clients whose forwarding fields are kept.
    trusted: TrustedProxies,
    /// How long a request may take in flight.
    bounds: Bounds,
    /// Cancelled at shutdown: closes tunnels.
    stop: CancellationToken,
}

/// What goes back to a client: the status, the router's own header fields,
/// the backend's fields passed as they came (none in the router's own
/// answers), the request id (unless the backend sent one), the body, and
/// after a 101 the tunnel.
pub type Outgoing = Response<ProxyBody, Tunnel>;

/// What one client request is for.
struct Call<'a> {
    environment: &'a str,
    host: &'a str,
    /// The routes found when the request arrived, for the first pick.
    routes: &'a Arc<ServiceRoutes>,
    direct: Option<&'a str>,
    sticky_key: Option<&'a [u8]>,
    /// The client's fields, ready to be sent on.
    fields: &'a RawFields,
    forwarded: &'a headers::Forwarded,
    service: &'a str,
}

impl Call<'_> {
    /// The request id, for logs.
    fn request_id(&self) -> &str {
        self.forwarded.request_id.to_str().unwrap_or_default()
    }
}

impl Proxy {
    /// A proxy for `<host>.<domain>` reading `table`, trusting the
    /// forwarding fields of the clients in `trusted`, holding requests in
    /// flight within `bounds`.
    pub fn new(
        table: SharedTable,
        domain: &str,
        trusted: TrustedProxies,
        bounds: Bounds,
        stop: CancellationToken,
    ) -> Self {
        Proxy {
            table,
            domain: domain.to_owned(),
            trusted,
            bounds,
            stop,
        }
    }

    /// Whether a client at `ip` is a trusted proxy.
    pub fn trusts(&self, ip: std::net::IpAddr) -> bool {
        !self.trusted.is_empty() && self.trusted.trusts(ip)
    }

    /// Answer one client request (`request`, with `body`, which the server
    /// cuts past `--max-body-bytes`); `client` is the client ([`Peer`]).
    pub async fn handle<S: Io>(
        &self,
        request: Request,
        body: &mut RequestBody<S>,
        client: &Peer,
    ) -> Outgoing {
        let Request { parts, mut fields } = request;
        if parts.method == Method::CONNECT {
            return local(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not supported\n");
        }
        // Owned copies (reference counts, no copy of the bytes), so that the
        // names borrowed from them outlive the rewriting of the fields.
        let host_header = fields.value(b"host");
        let authority = parts.uri.authority().cloned();
        let environment_header = fields.value(X_ENVIRONMENT);
        let header_host = host_header.as_ref().and_then(|h| h.to_str().ok());
        let host = match (authority.as_ref(), header_host) {
            // Absolute form (RFC 9112 §3.2.2): the target's authority wins,
            // and it must not name another host than the Host header.
            (Some(authority), Some(h)) if !authority.as_str().eq_ignore_ascii_case(h) => {
                return local(StatusCode::BAD_REQUEST, "not a forward proxy\n");
            }
            (Some(authority), _) => authority.as_str(),
            (None, Some(h)) => h,
            (None, None) => return local(StatusCode::BAD_REQUEST, "missing Host header\n"),
        };
        let (name, direct) = match host::target(host, &self.domain) {
            Target::Service(name) => (name, None),
            Target::Replica { service, replica } => (Cow::Owned(service), Some(replica)),
            Target::Unknown(_) => return local(StatusCode::NOT_FOUND, "no such service\n"),
        };
        let environment = environment_of(environment_header.as_ref());
        let table = self.table.load();
        let Some(routes) = table.lookup(&environment, &name).cloned() else {
            return local(StatusCode::NOT_FOUND, "no such service\n");
        };
        drop(table);
        if let Some(replica) = &direct {
            if routes.replica(replica).is_none() {
                return local(StatusCode::NOT_FOUND, "no such replica\n");
            }
        }
        if let Some(fault) = body.fault() {
            return local(fault.status(), fault.text());
        }
        let sticky_key = routes.sticky.as_ref().and_then(|s| sticky_key(&fields, s));
        let forwarded = headers::forward_request(&mut fields, client);
        let upgrade = forwarded.upgrade.is_some();
        let call = Call {
            environment: &environment,
            host: &name,
            routes: &routes,
            direct: direct.as_deref(),
            sticky_key: sticky_key.as_deref(),
            fields: &fields,
            forwarded: &forwarded,
            service: &routes.service,
        };
        let mut resp = self.forward(&call, &parts, body, upgrade).await;
        if !resp.passed.as_ref().is_some_and(|p| p.has_request_id()) {
            resp.last = Some((X_REQUEST_ID_NAME.clone(), forwarded.request_id));
        }
        resp
    }

    /// Send the request to one backend, and to a second one when allowed.
    async fn forward<S: Io>(
        &self,
        call: &Call<'_>,
        parts: &Parts,
        body: &mut RequestBody<S>,
        upgrade: bool,
    ) -> Outgoing {
        let idempotent = matches!(
            parts.method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::PUT
                | Method::DELETE
                | Method::TRACE
        );
        let Some(mut guard) = self.choose(call, None) else {
            return unavailable();
        };
        let mut reached_backend = false;
        for attempt in 1..=2 {
            let endpoint = guard.endpoint().clone();
            let replica = endpoint.replica.as_str();
            let may_retry = attempt == 1 && call.direct.is_none();
            // Whether to retry, and why, once this attempt has failed.
            let sent: bool;
            match endpoint.pool.checkout(&endpoint.addr).await {
                Err(e) => {
                    if matches!(e, CheckoutError::Connect(_) | CheckoutError::Timeout) {
                        endpoint.eject();
                    }
                    tracing::warn!(request_id = call.request_id(), service = call.service, replica_id = replica, error = %e, retry = may_retry, "cannot reach backend");
                    sent = false;
                }
                Ok(mut upstream) => match upstream
                    .conn
                    .send(
                        Outbound {
                            parts,
                            fields: call.fields,
                            host: &endpoint.addr,
                        },
                        |head| call.forwarded.write_to(head),
                        body,
                        &self.bounds,
                    )
                    .await
                {
                    Ok(answer) => {
                        let status = answer.status;
                        guard.set_status(status.as_u16());
                        let retry_status = matches!(
                            status,
                            StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE
                        );
                        if may_retry && retry_status && idempotent && body.replayable() {
                            if let Some(next) = self.choose(call, Some(replica)) {
                                tracing::info!(
                                    request_id = call.request_id(),
                                    service = call.service,
                                    replica_id = replica,
                                    status = status.as_u16(),
                                    "backend answered {status}; retrying on another"
                                );
                                guard = next;
                                reached_backend = true;
                                continue;
                            }
                        }
                        tracing::debug!(
                            request_id = call.request_id(),
                            service = call.service,
                            replica_id = replica,
                            status = status.as_u16(),
                            attempt,
                            "proxied"
                        );
                        if status == StatusCode::SWITCHING_PROTOCOLS {
                            if upgrade {
                                return tunnel::splice(answer.fields, upstream, guard, &self.stop);
                            }
                            // The connection now speaks something else, which
                            // the client never asked for: neither side can
                            // go on with HTTP. Dropping `upstream` closes it.
                            tracing::warn!(
                                request_id = call.request_id(),
                                service = call.service,
                                replica_id = replica,
                                "backend answered 101 to a request that asked no upgrade"
                            );
                            guard.set_status(StatusCode::BAD_GATEWAY.as_u16());
                            return local(StatusCode::BAD_GATEWAY, "bad gateway\n");
                        }
                        return upstream_response(answer, upstream, guard);
                    }
                    Err(e) => {
                        if matches!(e, mentat_http1::Error::BodyTimedOut) {
                            body.fail(Fault::TimedOut);
                        }
                        if let Some(fault) = body.fault() {
                            // The client's doing; the backend connection,
                            // which got part of the body, closes here.
                            guard.set_status(fault.status().as_u16());
                            return local(fault.status(), fault.text());
                        }
                        if matches!(e, mentat_http1::Error::TimedOut) {
                            // Not retried: the backend may be working on it.
                            tracing::warn!(request_id = call.request_id(), service = call.service, replica_id = replica, error = %e, "backend request timed out");
                            guard.set_status(StatusCode::GATEWAY_TIMEOUT.as_u16());
                            return local(StatusCode::GATEWAY_TIMEOUT, "gateway timeout\n");
                        }
                        let unsent = e.unsent();
                        tracing::warn!(request_id = call.request_id(), service = call.service, replica_id = replica, reused = upstream.conn.is_reused(), unsent, error = %e, "backend request failed");
                        sent = !unsent;
                    }
                },
            }
            reached_backend |= sent;
            let retry = may_retry && (!sent || (idempotent && body.replayable()));
            if !retry {
                break;
            }
            drop(guard);
            match self.choose(call, Some(replica)) {
                Some(next) => guard = next,
                None => break,
            }
        }
        if reached_backend || call.direct.is_some() {
            local(StatusCode::BAD_GATEWAY, "bad gateway\n")
        } else {
            unavailable()
        }
    }

    /// The route for the next attempt, counted in flight. Rotation picks
    /// skip replicas that started draining since the table was loaded.
    fn choose(&self, call: &Call<'_>, avoid: Option<&str>) -> Option<InFlight> {
        for attempt in 0..PICK_ATTEMPTS {
            // The first pick uses the routes just looked up; a later one
            // (the table changed under the request) reads the table again.
            let table;
            let routes: &ServiceRoutes = if attempt == 0 {
                call.routes
            } else {
                table = self.table.load();
                table.lookup(call.environment, call.host)?
            };
            let route = match (call.direct, call.sticky_key) {
                (Some(replica), _) if avoid.is_none() => routes.replica(replica)?,
                (Some(_), _) => return None,
                (None, Some(key)) => routes.pick_sticky(key, avoid)?,
                (None, None) => match avoid {
                    Some(avoid) => routes.pick_other(avoid)?,
                    None => routes.pick()?,
                },
            };
            if let Some(guard) = route.endpoint.acquire(call.direct.is_none()) {
                return Some(guard);
            }
        }
        None
    }
}

/// The environment a request asks for (`X-Environment`, lower case), else `production`.
fn environment_of(header: Option<&HeaderValue>) -> Cow<'_, str> {
    let asked = header
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    match asked {
        None => Cow::Borrowed(DEFAULT_ENVIRONMENT),
        Some(v) if v.bytes().any(|b| b.is_ascii_uppercase()) => Cow::Owned(v.to_ascii_lowercase()),
        Some(v) => Cow::Borrowed(v),
    }
}

/// The client's sticky-session key, from the cookie or header the route names.
fn sticky_key(fields: &RawFields, sticky: &Sticky) -> Option<Vec<u8>> {
    match sticky {
        Sticky::Header(name) => fields
            .get(name.as_bytes())
            .map(<[u8]>::to_vec)
            .filter(|v| !v.is_empty()),
        Sticky::Cookie(name) => fields
            .get_all(b"cookie")
            .filter_map(|v| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.trim().as_bytes().to_vec())
            .filter(|v| !v.is_empty()),
    }
}

fn upstream_response(answer: Answer, upstream: Upstream, guard: InFlight) -> Outgoing {
    let Upstream { conn, slot } = upstream;
    let body = Reader::new(conn, &answer);
    Response {
        status: answer.status,
        headers: HeaderMap::new(),
        passed: Some(answer.fields),
        last: None,
        body: ProxyBody::upstream(body, slot, guard),
        upgrade: None,
    }
}

/// A short plain-text answer of the router itself, dated (RFC 9110 §6.6.1).
pub fn local(status: StatusCode, text: &'static str) -> Outgoing {
    Response::text(status, ProxyBody::local(text))
}

/// 503 with `Retry-After`: nothing in rotation, or nothing reachable.
fn unavailable() -> Outgoing {
    let mut resp = local(StatusCode::SERVICE_UNAVAILABLE, "no backend available\n");
    resp.headers
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

#[cfg(test)]
mod tests {
    use mentat_domain::event::Backend;
    use mentat_domain::spec::RouteSpec;

    use super::*;
    use crate::pool::PoolSettings;
    use crate::table::TableWriter;

    #[test]
    fn a_request_that_looked_its_routes_up_before_a_replica_left_is_not_sent_to_it() {
        let shared = SharedTable::default();
        let mut writer = TableWriter::new(shared.clone(), PoolSettings::default());
        let backend = |replica: &str| Backend {
            replica: replica.into(),
            addr: "127.0.0.1:9".into(),
            image: "v1".into(),
            weight: 1,
        };
        let _ = writer.apply("web", &[backend("a"), backend("b")], &RouteSpec::default());
        let proxy = Proxy::new(
            shared.clone(),
            "localhost",
            TrustedProxies::default(),
            Bounds::default(),
            CancellationToken::new(),
        );
        // The routes a request found as it arrived...
        let table = shared.load();
        let stale = table.lookup(DEFAULT_ENVIRONMENT, "web").expect("web");
        // ...then `a` leaves rotation and starts draining.
        let drains = writer.apply("web", &[backend("b")], &RouteSpec::default());
        assert_eq!(drains.len(), 1);
        let mut fields = RawFields::parse(b"Host: web.localhost\r\n\r\n").expect("fields");
        let forwarded =
            headers::forward_request(&mut fields, &Peer::new([127, 0, 0, 1].into(), false));
        let call = Call {
            environment: DEFAULT_ENVIRONMENT,
            host: "web",
            routes: stale,
            direct: None,
            sticky_key: None,
            fields: &fields,
            forwarded: &forwarded,
            service: "web",
        };
        for i in 0..20 {
            let guard = proxy.choose(&call, None).expect("a backend in rotation");
            assert_eq!(guard.endpoint().replica, "b", "pick {i}");
        }
    }
}
