//! The admin server: `GET /metrics` in the Prometheus text format, on its
//! own address so that it is never exposed with the proxy, served by
//! [`mentat_runtime::metrics`].
//!
//! Per instance (`service`, `replica`, `image` labels): requests, 5xx
//! answers, requests in flight, backend connections and the latency
//! histogram (on the bounds of
//! [`mentat_domain::stats::LATENCY_BUCKET_BOUNDS_US`]); per service the
//! route version applied; for the router: the route-change apply latency
//! histogram and counters. The request path keeps its own atomic counters
//! (they feed the traffic statistics too); [`refresh`] copies them into the
//! recorder before every scrape, so no request takes a lock for `/metrics`.

use std::sync::Arc;

use mentat_runtime::metrics::Refresh;
use metrics::{counter, gauge, histogram};

use crate::announce::Applied;
use crate::metrics as names;
use crate::traffic::Registry;

/// What the refresh reads: every instance's counters and the route
/// versions applied.
pub fn refresh(registry: Arc<Registry>, applied: Applied) -> Refresh {
    names::describe();
    Arc::new(move || {
        for (e, t) in registry.cumulative() {
            let labels = e.metric_labels();
            counter!(names::REQUESTS_TOTAL, &labels).absolute(t.requests);
            counter!(names::RESPONSES_5XX_TOTAL, &labels).absolute(t.errors_5xx);
            gauge!(names::IN_FLIGHT, &labels).set(e.in_flight() as f64);
            let mut open = labels.clone();
            open.push(("state", "open".into()));
            gauge!(names::BACKEND_CONNECTIONS, &open).set(e.pool.open_count() as f64);
            let mut idle = labels.clone();
            idle.push(("state", "idle".into()));
            gauge!(names::BACKEND_CONNECTIONS, &idle).set(e.pool.idle_count() as f64);
            // A fresh handle each time: the one the exporter dropped after an
            // idle hour would record into nothing.
            e.traffic
                .export_latency(histogram!(names::REQUEST_DURATION, &labels));
        }
        for (service, version) in applied.snapshot().0 {
            gauge!(names::ROUTE_VERSION, "service" => service).set(version as f64);
        }
    })
}
