//! Fixtures for the router tests: in-process backends on port 0, a router
//! started in-process, a small HTTP client, and RouteChanged publishing.

#![allow(dead_code)] // each test file uses a different part

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
use mentat_domain::{Event, EventEnvelope, Fact, Meta};
use mentat_router::{Config, Router};
use mentat_runtime::Shutdown;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Id the test routers report in their facts.
pub const ROUTER_ID: &str = "test-router";

/// An in-process HTTP backend. `GET /` answers its name; `/slow?ms=N`
/// answers after N ms; `/headers` answers the forwarded headers it saw.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub started: Arc<AtomicUsize>,
    pub finished: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("backend addr");
        let started = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(AtomicUsize::new(0));
        let state = (name.to_owned(), started.clone(), finished.clone());
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
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend {
            name: name.to_owned(),
            addr,
            started,
            finished,
            task,
        }
    }

    /// This backend as a route with `weight`.
    pub fn route(&self, weight: u32) -> RouteBackend {
        RouteBackend {
            replica: self.name.clone(),
            addr: self.addr.to_string(),
            image: "v1".into(),
            weight,
        }
    }
}

async fn answer(
    req: Request<Incoming>,
    (name, started, finished): (String, Arc<AtomicUsize>, Arc<AtomicUsize>),
) -> Response<Full<Bytes>> {
    started.fetch_add(1, Ordering::SeqCst);
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
        let services_at_start = router.services();
        let task = tokio::spawn(router.serve());
        TestRouter {
            addr,
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

/// Publish the full table of `service` the way the planner's relay does.
pub async fn publish_routes(bus: &Bus, service: &str, backends: Vec<RouteBackend>) {
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
            route: Default::default(),
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
