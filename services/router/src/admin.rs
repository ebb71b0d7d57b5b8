//! The admin server: `GET /metrics` in the Prometheus text format, on its
//! own address so that it is never exposed with the proxy.
//!
//! Per instance (`service`, `replica`, `image` labels): requests, 5xx
//! answers, requests in flight and the latency histogram (cumulative, on
//! the bounds of [`mentat_domain::stats::LATENCY_BUCKET_BOUNDS_US`]); for
//! the router: the route-change apply latency histogram and counters.

use std::convert::Infallible;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use mentat_domain::stats::LATENCY_BUCKET_BOUNDS_US;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::{self, HistogramSnapshot, RouterMetrics};
use crate::traffic::Registry;

/// What `/metrics` reads.
#[derive(Debug, Clone)]
pub struct Sources {
    /// Per-instance counters.
    pub registry: Arc<Registry>,
    /// Router-wide metrics.
    pub metrics: Arc<RouterMetrics>,
}

/// Serve `/metrics` on `listener` until `stop`.
pub async fn serve(listener: TcpListener, sources: Sources, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let sources = sources.clone();
        let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let sources = sources.clone();
            async move { Ok::<_, Infallible>(answer(&req, &sources)) }
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
}

fn answer(req: &Request<hyper::body::Incoming>, sources: &Sources) -> Response<Full<Bytes>> {
    let (status, body, kind) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            render(sources),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
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

/// The Prometheus text of every metric.
pub fn render(sources: &Sources) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let instances = sources.registry.cumulative();
    let _ = writeln!(
        out,
        "# HELP {} Requests per instance.",
        metrics::REQUESTS_TOTAL
    );
    let _ = writeln!(out, "# TYPE {} counter", metrics::REQUESTS_TOTAL);
    for (e, t) in &instances {
        let _ = writeln!(
            out,
            "{}{{{}}} {}",
            metrics::REQUESTS_TOTAL,
            labels(e),
            t.requests
        );
    }
    let _ = writeln!(
        out,
        "# HELP {} 5xx answers per instance.",
        metrics::RESPONSES_5XX_TOTAL
    );
    let _ = writeln!(out, "# TYPE {} counter", metrics::RESPONSES_5XX_TOTAL);
    for (e, t) in &instances {
        let _ = writeln!(
            out,
            "{}{{{}}} {}",
            metrics::RESPONSES_5XX_TOTAL,
            labels(e),
            t.errors_5xx
        );
    }
    let _ = writeln!(
        out,
        "# HELP {} Requests in flight per instance.",
        metrics::IN_FLIGHT
    );
    let _ = writeln!(out, "# TYPE {} gauge", metrics::IN_FLIGHT);
    for (e, _) in &instances {
        let _ = writeln!(
            out,
            "{}{{{}}} {}",
            metrics::IN_FLIGHT,
            labels(e),
            e.in_flight()
        );
    }
    let _ = writeln!(
        out,
        "# HELP {} Connections to each instance: open (busy and idle) and idle.",
        metrics::BACKEND_CONNECTIONS
    );
    let _ = writeln!(out, "# TYPE {} gauge", metrics::BACKEND_CONNECTIONS);
    for (e, _) in &instances {
        let l = labels(e);
        let _ = writeln!(
            out,
            "{}{{{l},state=\"open\"}} {}",
            metrics::BACKEND_CONNECTIONS,
            e.pool.open_count()
        );
        let _ = writeln!(
            out,
            "{}{{{l},state=\"idle\"}} {}",
            metrics::BACKEND_CONNECTIONS,
            e.pool.idle_count()
        );
    }
    let _ = writeln!(
        out,
        "# HELP {} Request latency per instance, to the last byte.",
        metrics::REQUEST_DURATION
    );
    let _ = writeln!(out, "# TYPE {} histogram", metrics::REQUEST_DURATION);
    for (e, t) in &instances {
        histogram(&mut out, metrics::REQUEST_DURATION, &labels(e), &t.latency);
    }
    let m = &sources.metrics;
    let _ = writeln!(
        out,
        "# HELP {} From a RouteChanged stored by JetStream to the new table in use.",
        metrics::ROUTE_APPLY
    );
    let _ = writeln!(out, "# TYPE {} histogram", metrics::ROUTE_APPLY);
    histogram(
        &mut out,
        metrics::ROUTE_APPLY,
        "",
        &m.route_apply.snapshot(),
    );
    let _ = writeln!(out, "# TYPE {} counter", metrics::ROUTE_CHANGES_TOTAL);
    let _ = writeln!(
        out,
        "{} {}",
        metrics::ROUTE_CHANGES_TOTAL,
        m.route_changes.load(Ordering::Relaxed)
    );
    let _ = writeln!(out, "# TYPE {} counter", metrics::STATS_PUBLISH_FAILURES);
    let _ = writeln!(
        out,
        "{} {}",
        metrics::STATS_PUBLISH_FAILURES,
        m.stats_publish_failures.load(Ordering::Relaxed)
    );
    out
}

fn labels(e: &crate::endpoint::Endpoint) -> String {
    format!(
        "service=\"{}\",replica=\"{}\",image=\"{}\"",
        escape(&e.service),
        escape(&e.replica),
        escape(&e.image)
    )
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Cumulative `_bucket` lines, then `_sum` and `_count`, in seconds.
fn histogram(out: &mut String, name: &str, labels: &str, h: &HistogramSnapshot) {
    let sep = if labels.is_empty() { "" } else { "," };
    let mut cumulative = 0u64;
    for (i, bound) in LATENCY_BUCKET_BOUNDS_US.iter().enumerate() {
        cumulative += h.buckets.get(i).copied().unwrap_or(0);
        let le = *bound as f64 / 1e6;
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
        );
    }
    let count = h.count();
    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(out, "{name}_sum{braces} {}", h.sum_us as f64 / 1e6);
    let _ = writeln!(out, "{name}_count{braces} {count}");
}
