//! The HTTP side: `GET /` answers the version, `GET /health` the readiness,
//! and SIGTERM drains the connections before the process exits.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::behaviour::Settings;

/// A client must send its request headers within this time (slowloris).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The state every request sees.
#[derive(Debug)]
pub struct App {
    settings: Settings,
    started: Instant,
    served: AtomicU64,
}

impl App {
    /// An app that started now.
    pub fn new(settings: Settings) -> Self {
        App {
            settings,
            started: Instant::now(),
            served: AtomicU64::new(0),
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let get = matches!(*req.method(), Method::GET | Method::HEAD);
        match req.uri().path() {
            "/" if get => self.root().await,
            "/health" if get => self.health(),
            "/" | "/health" => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    async fn root(&self) -> Response<Full<Bytes>> {
        let n = self.served.fetch_add(1, Ordering::Relaxed);
        let behaviour = &self.settings.behaviour;
        if let Some(delay) = behaviour.slow {
            tokio::time::sleep(delay).await;
        }
        let version = &self.settings.version;
        let late_error = behaviour.fails(n) && self.started.elapsed() >= self.settings.error_after;
        let shared_error = self
            .settings
            .error_file
            .as_ref()
            .is_some_and(|f| f.exists());
        let mut resp = if late_error || shared_error {
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("error from version {version}\n"),
            )
        } else {
            text(StatusCode::OK, format!("{version}\n"))
        };
        if let Ok(v) = HeaderValue::from_str(version) {
            resp.headers_mut().insert("x-app-version", v);
        }
        resp
    }

    fn health(&self) -> Response<Full<Bytes>> {
        if self.settings.behaviour.unhealthy {
            text(StatusCode::SERVICE_UNAVAILABLE, "unhealthy\n")
        } else if self.started.elapsed() < self.settings.ready_delay {
            text(StatusCode::SERVICE_UNAVAILABLE, "starting\n")
        } else {
            text(StatusCode::OK, "ok")
        }
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Serve on `listener` until `stop` resolves, then stop accepting, let
/// in-flight requests finish (at most the settings' `shutdown_grace`; none
/// when it is zero) and close idle keep-alive connections.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    stop: impl std::future::Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    eprintln!("mentat-demo-app: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |req| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(app.handle(req).await) }
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                log_conn_error(peer, &e);
            }
        });
    }
    drop(listener);
    eprintln!(
        "mentat-demo-app: shutting down, waiting for {} connection(s)",
        graceful.count()
    );
    let grace = app.settings.shutdown_grace;
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        eprintln!("mentat-demo-app: grace of {grace:?} passed, exiting anyway");
    }
}

fn log_conn_error(peer: SocketAddr, e: &hyper::Error) {
    if !e.is_incomplete_message() {
        eprintln!("mentat-demo-app: connection from {peer}: {e}");
    }
}
