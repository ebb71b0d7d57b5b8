//! Prometheus metrics, the same way in every service: the [`metrics`]
//! crate's macros record, its Prometheus exporter keeps the values, and
//! [`serve`] answers `GET /metrics` on the service's admin address.
//!
//! Every histogram whose name ends in `_seconds` has the buckets of
//! [`mentat_domain::stats::LATENCY_BUCKET_BOUNDS_US`], so router latencies
//! read the same on `/metrics` as in the traffic statistics. A series that
//! has not changed for [`IDLE_TIMEOUT`] is dropped (a replica that left a
//! router's table leaves its `/metrics` that way); a counter dropped and
//! recorded again starts from zero, which Prometheus reads as a reset.
//!
//! Each service names its metrics in one module of its own (`metrics.rs`)
//! and describes them there; docs/METRICS.md lists them all.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often histogram samples are folded into their buckets and
/// [`Refresh`] runs, scraped or not.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// A series unchanged for this long is dropped.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Flag that sets a service's admin address, and its environment variable.
pub const ADMIN_FLAG: &str = "--admin-listen";

/// Called before every scrape and every [`UPKEEP_EVERY`]: sets the gauges
/// that are read from the service's state rather than recorded as it
/// changes.
pub type Refresh = Arc<dyn Fn() + Send + Sync>;

/// Install this process's recorder; later calls return the same handle.
/// Until it is installed the `metrics` macros record nothing.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let bounds: Vec<f64> = mentat_domain::stats::LATENCY_BUCKET_BOUNDS_US
                .iter()
                .map(|us| *us as f64 / 1e6)
                .collect();
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &bounds)
                .expect("the latency bounds are a valid bucket list")
                .idle_timeout(MetricKindMask::ALL, Some(IDLE_TIMEOUT))
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed; /metrics stays empty");
            }
            handle
        })
        .clone()
}

/// A [`Refresh`] that does nothing.
pub fn no_refresh() -> Refresh {
    Arc::new(|| {})
}

/// The admin address could not be listened on.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({ADMIN_FLAG}): {source}; give a free address")]
pub struct ListenError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// Why.
    pub source: std::io::Error,
}

/// The flag every service but the router takes for its admin server
/// (the router's is always on, see its own configuration).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AdminListen {
    /// Serve `GET /metrics` (Prometheus text format) on this address, e.g.
    /// 127.0.0.1:9181. Off when not given.
    #[arg(
        long = "admin-listen",
        env = "MENTAT_ADMIN_LISTEN",
        value_name = "ADDR"
    )]
    pub admin_listen: Option<SocketAddr>,
}

impl AdminListen {
    /// Install the recorder and, when an address was given, listen on it
    /// and serve until `stop`: the address bound (the real port when 0 was
    /// asked for) and the server's task.
    pub async fn start(
        &self,
        refresh: Refresh,
        stop: CancellationToken,
    ) -> Result<Option<(SocketAddr, JoinHandle<()>)>, ListenError> {
        install();
        let Some(addr) = self.admin_listen else {
            return Ok(None);
        };
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ListenError { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| ListenError { addr, source })?;
        tracing::info!(admin = %bound, "serving /metrics");
        Ok(Some((bound, tokio::spawn(serve(listener, refresh, stop)))))
    }
}

/// Serve `GET /metrics` on `listener` until `stop`, and keep the recorder
/// tidy meanwhile (see [`UPKEEP_EVERY`]).
pub async fn serve(listener: TcpListener, refresh: Refresh, stop: CancellationToken) {
    let handle = install();
    let upkeep = tokio::spawn(upkeep(handle.clone(), refresh.clone(), stop.clone()));
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (handle, refresh) = (handle.clone(), refresh.clone());
        let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let answer = answer(&req, &handle, &refresh);
            async move { Ok::<_, Infallible>(answer) }
        });
        let stop = stop.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = stop.cancelled() => {}
            }
        });
    }
    let _ = upkeep.await;
}

async fn upkeep(handle: PrometheusHandle, refresh: Refresh, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(UPKEEP_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        refresh();
        handle.run_upkeep();
    }
}

fn answer(
    req: &Request<hyper::body::Incoming>,
    handle: &PrometheusHandle,
    refresh: &Refresh,
) -> Response<Full<Bytes>> {
    let (status, body, kind) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            refresh();
            (
                StatusCode::OK,
                handle.render(),
                "text/plain; version=0.0.4; charset=utf-8",
            )
        }
        _ => (
            StatusCode::NOT_FOUND,
            "not found\n".to_owned(),
            "text/plain; charset=utf-8",
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_what_the_macros_record_with_the_latency_buckets() {
        install();
        metrics::counter!("mentat_test_things_total", "kind" => "a").increment(3);
        metrics::histogram!("mentat_test_wait_seconds").record(0.0009);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let refreshed = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = refreshed.clone();
        let refresh: Refresh = Arc::new(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            metrics::gauge!("mentat_test_level").set(7.0);
        });
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, refresh, stop.clone()));

        let text = get(addr, "/metrics").await;
        assert!(
            text.contains("mentat_test_things_total{kind=\"a\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("mentat_test_level 7"),
            "refreshed before the scrape: {text}"
        );
        // 900 µs falls in the bucket bounded by 1131 µs, as in TrafficStats.
        assert!(
            text.contains("mentat_test_wait_seconds_bucket{le=\"0.001131\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mentat_test_wait_seconds_bucket{le=\"0.0008\"} 0"),
            "{text}"
        );
        assert!(refreshed.load(std::sync::atomic::Ordering::Relaxed) >= 1);
        assert!(get(addr, "/other").await.is_empty());
        stop.cancel();
        server.await.expect("server task");
    }

    /// The body of `GET path` when it answers 200, else empty.
    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        match out.split_once("\r\n\r\n") {
            Some((head, body)) if head.starts_with("HTTP/1.1 200") => body.to_owned(),
            _ => String::new(),
        }
    }
}
