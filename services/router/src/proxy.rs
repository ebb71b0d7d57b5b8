//! The request path: find the service from the Host, pick a backend by
//! weight (or the one addressed), forward the request, stream the answer
//! back, and retry once on another backend when that is safe.
//!
//! Retry rules: a connect failure (nothing sent) is retried whatever the
//! method; an idempotent request (GET, HEAD, OPTIONS, PUT, DELETE, TRACE)
//! is retried after any failure before a response, as long as its body was
//! never read (bodies are streamed, never buffered). Requests addressed to
//! one replica are not retried elsewhere.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST, RETRY_AFTER};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::{OutBody, ProxyBody, RequestBody};
use crate::endpoint::InFlight;
use crate::headers::{self, X_REQUEST_ID};
use crate::host::{self, Target};
use crate::table::{Route, SharedTable};

/// Idle keep-alive connections to backends are closed after this long.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Most idle keep-alive connections kept per backend.
pub const POOL_MAX_IDLE_PER_BACKEND: usize = 64;
/// Attempts at picking a backend in rotation when the table changes under
/// the request (a picked replica started draining).
const PICK_ATTEMPTS: usize = 3;

type HttpClient = Client<HttpConnector, OutBody>;

/// The proxy: the table it reads and the pooled client it forwards with.
#[derive(Debug)]
pub struct Proxy {
    table: SharedTable,
    client: HttpClient,
    domain: String,
}

impl Proxy {
    /// A proxy for `<service>.<domain>` reading `table`.
    pub fn new(table: SharedTable, domain: &str, connect_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_BACKEND)
            .build(connector);
        Proxy {
            table,
            client,
            domain: domain.to_owned(),
        }
    }

    /// Answer one client request.
    pub async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<ProxyBody> {
        let host = req
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().host())
            .unwrap_or_default();
        let (service, direct) = match host::target(host, &self.domain) {
            Target::Service(service) => (service, None),
            Target::Replica { service, replica } => (service, Some(replica)),
            Target::Unknown(name) => {
                return local(StatusCode::NOT_FOUND, format!("no such service: {name}\n"))
            }
        };
        let Some(routes) = self.table.load().service(&service).cloned() else {
            return local(
                StatusCode::NOT_FOUND,
                format!("no such service: {service}\n"),
            );
        };
        if let Some(replica) = &direct {
            if routes.replica(replica).is_none() {
                let text = format!("no such replica: {replica} of service {service}\n");
                return local(StatusCode::NOT_FOUND, text);
            }
        }
        let (mut parts, body) = req.into_parts();
        let request_id = headers::forward_request(&mut parts.headers, peer.ip());
        let call = Call {
            service: &service,
            direct: direct.as_deref(),
            request_id: &request_id,
        };
        let mut resp = self.forward(&call, &parts, RequestBody::new(body)).await;
        if !resp.headers().contains_key(X_REQUEST_ID) {
            if let Ok(v) = HeaderValue::from_str(&request_id) {
                resp.headers_mut().insert(X_REQUEST_ID, v);
            }
        }
        resp
    }

    /// Send the request to one backend, and to a second one when allowed.
    async fn forward(
        &self,
        call: &Call<'_>,
        parts: &Parts,
        body: RequestBody,
    ) -> Response<ProxyBody> {
        let idempotent = matches!(
            parts.method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::PUT
                | Method::DELETE
                | Method::TRACE
        );
        let mut failed: Option<String> = None;
        for attempt in 1..=2 {
            let Some((route, guard)) = self.choose(call, failed.as_deref()) else {
                if failed.is_some() {
                    break;
                }
                return unavailable(call.service);
            };
            let replica = route.endpoint.replica.as_str();
            let Some(upstream) = upstream_request(parts, &route.addr, body.attempt()) else {
                tracing::error!(service = call.service, replica_id = replica, addr = %route.addr, "backend address is not a valid authority");
                failed = Some(replica.to_owned());
                continue;
            };
            match self.client.request(upstream).await {
                Ok(resp) => {
                    tracing::debug!(
                        request_id = call.request_id,
                        service = call.service,
                        replica_id = replica,
                        status = resp.status().as_u16(),
                        attempt,
                        "proxied"
                    );
                    return upstream_response(resp, guard);
                }
                Err(e) => {
                    let retry = attempt == 1
                        && call.direct.is_none()
                        && (e.is_connect() || idempotent)
                        && body.replayable();
                    tracing::warn!(request_id = call.request_id, service = call.service, replica_id = replica, error = %chain(&e), retry, "backend request failed");
                    if !retry {
                        return local(
                            StatusCode::BAD_GATEWAY,
                            format!("backend {replica} of service {} failed\n", call.service),
                        );
                    }
                    failed = Some(replica.to_owned());
                }
            }
        }
        local(
            StatusCode::BAD_GATEWAY,
            format!("no backend of service {} answered\n", call.service),
        )
    }

    /// The route for the next attempt, counted in flight. Rotation picks
    /// skip replicas that started draining since the table was loaded.
    fn choose(&self, call: &Call<'_>, avoid: Option<&str>) -> Option<(Route, InFlight)> {
        for _ in 0..PICK_ATTEMPTS {
            let table = self.table.load();
            let routes = table.service(call.service)?;
            let route = match (call.direct, avoid) {
                (Some(replica), _) => routes.replica(replica)?,
                (None, Some(avoid)) => routes.pick_other(avoid)?,
                (None, None) => routes.pick()?,
            };
            if let Some(guard) = route.endpoint.acquire(call.direct.is_none()) {
                return Some((route.clone(), guard));
            }
        }
        None
    }
}

/// What one client request is for.
struct Call<'a> {
    service: &'a str,
    direct: Option<&'a str>,
    request_id: &'a str,
}

fn upstream_request(parts: &Parts, addr: &str, body: OutBody) -> Option<Request<OutBody>> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri = Uri::builder()
        .scheme("http")
        .authority(addr)
        .path_and_query(path)
        .build()
        .ok()?;
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = parts.headers.clone();
    Some(req)
}

fn upstream_response(resp: Response<Incoming>, guard: InFlight) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(
        parts,
        ProxyBody::Upstream {
            body,
            _guard: guard,
        },
    )
}

/// A short plain-text answer of the router itself.
pub fn local(status: StatusCode, text: String) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::local(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn unavailable(service: &str) -> Response<ProxyBody> {
    let mut resp = local(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("no backend of service {service} is in rotation\n"),
    );
    resp.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// An error with its sources, for logs: `client error (Connect): tcp connect error: Connection refused`.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
