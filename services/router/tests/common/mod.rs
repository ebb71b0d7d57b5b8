//! Fixtures for the router tests: in-process backends on port 0, a router
//! started in-process, a small HTTP client, and RouteChanged publishing.

#![allow(dead_code)] // each test file uses a different part

mod recorder;

#[allow(unused_imports)] // each test file uses a different part
pub use recorder::{next_request, Conn, Received, Recorder};

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HOST;
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mentat_bus::{subject, Bus};
use mentat_domain::event::Backend as RouteBackend;
use mentat_domain::spec::RouteSpec;
use mentat_domain::{Event, EventEnvelope, Fact, Meta};
use mentat_router::{Config, Router};
use mentat_runtime::Shutdown;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Id the test routers report in their facts.
pub const ROUTER_ID: &str = "test-router";

/// An in-process HTTP backend. `GET /` answers its name; `/slow?ms=N`
/// answers after N ms; `/headers` answers the forwarded headers it saw;
/// `/status?code=N` answers status N; a request with `Upgrade` gets 101 and
/// an echo of every byte. `connections` counts its open TCP connections.
pub struct Backend {
    pub name: String,
    pub image: String,
    pub addr: SocketAddr,
    pub started: Arc<AtomicUsize>,
    pub finished: Arc<AtomicUsize>,
    pub connections: Arc<AtomicUsize>,
    /// Upgraded connections (echo tunnels) open now.
    pub tunnels: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        Self::start_image(name, "v1").await
    }

    pub async fn start_image(name: &str, image: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("backend addr");
        let started = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let tunnels = Arc::new(AtomicUsize::new(0));
        let state = (
            name.to_owned(),
            started.clone(),
            finished.clone(),
            tunnels.clone(),
        );
        let open = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                let service = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(answer(req, state).await) }
                });
                let open = open.clone();
                open.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Backend {
            name: name.to_owned(),
            image: image.to_owned(),
            addr,
            started,
            finished,
            connections,
            tunnels,
            task,
        }
    }

    /// This backend as a route with `weight`.
    pub fn route(&self, weight: u32) -> RouteBackend {
        RouteBackend {
            replica: self.name.clone(),
            addr: self.addr.to_string(),
            image: self.image.clone(),
            weight,
        }
    }
}

/// Answer an upgrade with 101 and echo every byte until the client closes.
fn upgrade_echo(mut req: Request<Incoming>, tunnels: Arc<AtomicUsize>) -> Response<Full<Bytes>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        tunnels.fetch_add(1, Ordering::SeqCst);
        let mut io = TokioIo::new(upgraded);
        let mut buf = [0u8; 1024];
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = io.shutdown().await;
        tunnels.fetch_sub(1, Ordering::SeqCst);
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .body(Full::new(Bytes::new()))
        .expect("101")
}

async fn answer(
    req: Request<Incoming>,
    (name, started, finished, tunnels): (
        String,
        Arc<AtomicUsize>,
        Arc<AtomicUsize>,
        Arc<AtomicUsize>,
    ),
) -> Response<Full<Bytes>> {
    started.fetch_add(1, Ordering::SeqCst);
    if req.headers().contains_key("upgrade") {
        return upgrade_echo(req, tunnels);
    }
    if req.uri().path() == "/status" {
        let code = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("code="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(500);
        finished.fetch_add(1, Ordering::SeqCst);
        let mut resp = Response::new(Full::new(Bytes::from(name)));
        *resp.status_mut() =
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return resp;
    }
    let body = match req.uri().path() {
        "/slow" => {
            let ms = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("ms="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            name
        }
        "/headers" => {
            let h = |n: &str| {
                req.headers()
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_owned()
            };
            format!(
                "xff={} proto={} rid={} host={} secret={}",
                h("x-forwarded-for"),
                h("x-forwarded-proto"),
                h("x-request-id"),
                h("host"),
                h("x-secret")
            )
        }
        "/echo" => match req.into_body().collect().await {
            Ok(b) => format!("{name}:{}", String::from_utf8_lossy(&b.to_bytes())),
            Err(e) => format!("body error {e}"),
        },
        _ => name,
    };
    finished.fetch_add(1, Ordering::SeqCst);
    Response::new(Full::new(Bytes::from(body)))
}

/// A router running in-process.
pub struct TestRouter {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// Services in the table when `bind` returned.
    pub services_at_start: Vec<String>,
    pub shutdown: Shutdown,
    pub task: JoinHandle<()>,
}

impl TestRouter {
    pub async fn start(nats_url: &str) -> TestRouter {
        Self::start_with(Config {
            nats_url: nats_url.to_owned(),
            ..test_config()
        })
        .await
    }

    pub async fn start_with(config: Config) -> TestRouter {
        let shutdown = Shutdown::new();
        let router = Router::bind(config, shutdown.clone())
            .await
            .expect("router binds");
        let addr = router.local_addr();
        let admin = router.admin_addr();
        let services_at_start = router.services();
        let task = tokio::spawn(router.serve());
        TestRouter {
            addr,
            admin,
            services_at_start,
            shutdown,
            task,
        }
    }
}

impl Drop for TestRouter {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A config for tests: port 0, a fixed router id, short timeouts.
pub fn test_config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        admin_listen: "127.0.0.1:0".parse().expect("addr"),
        router_id: ROUTER_ID.into(),
        drain_timeout_secs: 10,
        shutdown_grace_secs: 5,
        nats_wait_secs: 10,
        ..Config::default()
    }
}

pub async fn bus(nats_url: &str) -> Bus {
    Bus::connect(nats_url, "router-test", Duration::from_secs(10))
        .await
        .expect("bus connects")
}

/// Route service `web` to the backend listening at `addr` (replica `c`).
pub async fn route_web_to(bus: &Bus, addr: SocketAddr) {
    let route = RouteBackend {
        replica: "c".into(),
        addr: addr.to_string(),
        image: "v1".into(),
        weight: 1,
    };
    publish_routes(bus, "web", vec![route]).await;
}

/// Publish the full table of `service` the way the planner's relay does.
pub async fn publish_routes(bus: &Bus, service: &str, backends: Vec<RouteBackend>) {
    publish_route(bus, service, backends, RouteSpec::default()).await;
}

/// [`publish_routes`] with a route block.
pub async fn publish_route(
    bus: &Bus,
    service: &str,
    backends: Vec<RouteBackend>,
    route: RouteSpec,
) {
    let id = mentat_bus::new_id();
    let envelope = EventEnvelope {
        id: id.clone(),
        position: 1,
        stream: service.to_owned(),
        version: 1,
        schema_version: mentat_domain::event::SCHEMA_VERSION,
        recorded_at_ms: mentat_bus::now_ms(),
        meta: Meta::default(),
        event: Event::RouteChanged {
            service: service.to_owned(),
            backends,
            route,
            switch: None,
        },
    };
    bus.publish_durable(subject::event(service, "RouteChanged"), &id, &envelope)
        .await
        .expect("publish RouteChanged");
}

/// Decode a fact seen on core NATS.
pub fn fact(msg: &async_nats::Message) -> Fact {
    mentat_bus::codec::decode(
        &msg.payload,
        mentat_bus::Encoding::of(msg.headers.as_ref()),
        "Fact",
    )
    .expect("fact decodes")
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A response, its body read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

pub async fn send(
    client: &HttpClient,
    router: SocketAddr,
    method: Method,
    host: &str,
    path: &str,
    body: &str,
) -> Answer {
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{router}{path}"))
        .header(HOST, host)
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    let resp = client.request(req).await.expect("router answers");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

pub async fn get(client: &HttpClient, router: SocketAddr, host: &str, path: &str) -> Answer {
    send(client, router, Method::GET, host, path, "").await
}

/// POST `body` to `/echo` of `web.localhost` (the test backends answer
/// `<name>:<body>`).
pub async fn post_echo(client: &HttpClient, router: SocketAddr, body: &str) -> Answer {
    send(client, router, Method::POST, "web.localhost", "/echo", body).await
}

/// GET with extra headers.
pub async fn get_with(
    client: &HttpClient,
    router: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut req = Request::builder()
        .uri(format!("http://{router}{path}"))
        .header(HOST, host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::new())).expect("request");
    let resp = client.request(req).await.expect("router answers");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Send raw bytes on a new connection and read the answer until the
/// server closes or `wait` passes.
pub async fn raw(addr: SocketAddr, request: &[u8], wait: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The router's `/metrics` text.
pub async fn metrics(admin: SocketAddr) -> String {
    let client = client();
    let req = Request::builder()
        .uri(format!("http://{admin}/metrics"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = client.request(req).await.expect("admin answers");
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// The value of one sample line of `/metrics` (exact name and labels).
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Poll `check` until it holds, for at most 10 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
