//! Lock-free counters and histograms, and the names of the metrics the
//! admin server exposes. The request path only does relaxed atomic adds
//! (and one lock-free push onto the exported latency histogram); readers
//! (the stats publisher, `/metrics`) take snapshots.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use mentat_domain::stats::{bucket_of, LATENCY_BUCKETS};

/// Requests per instance (counter).
pub const REQUESTS_TOTAL: &str = "mentat_router_requests_total";
/// 5xx answers per instance (counter).
pub const RESPONSES_5XX_TOTAL: &str = "mentat_router_responses_5xx_total";
/// Request latency per instance (histogram, seconds).
pub const REQUEST_DURATION: &str = "mentat_router_request_duration_seconds";
/// Requests in flight per instance (gauge).
pub const IN_FLIGHT: &str = "mentat_router_in_flight";
/// Connections from the router to each instance, by state (gauge).
pub const BACKEND_CONNECTIONS: &str = "mentat_router_backend_connections";
/// Time from a RouteChanged being stored by JetStream to the new table
/// being swapped in (histogram, seconds).
pub const ROUTE_APPLY: &str = "mentat_router_route_apply_seconds";
/// Route changes applied (counter).
pub const ROUTE_CHANGES_TOTAL: &str = "mentat_router_route_changes_total";
/// Traffic statistics messages that could not be published (counter).
pub const STATS_PUBLISH_FAILURES: &str = "mentat_router_stats_publish_failures_total";
/// The route version applied per service: the version of the service's
/// stream whose `RouteChanged` the table now holds (gauge).
pub const ROUTE_VERSION: &str = "mentat_router_route_version";

/// Describe every metric (the `# HELP` lines).
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(REQUESTS_TOTAL, "Requests per instance.");
    describe_counter!(RESPONSES_5XX_TOTAL, "5xx answers per instance.");
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Request latency per instance, to the last byte."
    );
    describe_gauge!(IN_FLIGHT, "Requests in flight per instance.");
    describe_gauge!(
        BACKEND_CONNECTIONS,
        "Connections to each instance: open (busy and idle) and idle."
    );
    describe_histogram!(
        ROUTE_APPLY,
        Unit::Seconds,
        "From a RouteChanged stored by JetStream to the new table in use."
    );
    describe_counter!(ROUTE_CHANGES_TOTAL, "Route changes applied.");
    describe_counter!(
        STATS_PUBLISH_FAILURES,
        "Traffic statistics that could not be published."
    );
    describe_gauge!(ROUTE_VERSION, "Route version applied per service.");
}

/// A histogram on the fixed bounds of [`mentat_domain::stats`].
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS],
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

/// A copy of a histogram's cumulative counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Count per bucket (not cumulative across buckets).
    pub buckets: Vec<u64>,
    /// Sum of the recorded values, in microseconds.
    pub sum_us: u64,
}

impl HistogramSnapshot {
    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// `self - earlier`, bucket by bucket (saturating).
    pub fn since(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: self
                .buckets
                .iter()
                .enumerate()
                .map(|(i, n)| n.saturating_sub(earlier.buckets.get(i).copied().unwrap_or(0)))
                .collect(),
            sum_us: self.sum_us.saturating_sub(earlier.sum_us),
        }
    }
}

impl Histogram {
    /// Record one value.
    pub fn record(&self, value: Duration) {
        let us = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

/// The traffic counters of one instance, cumulative since it appeared.
#[derive(Debug)]
pub struct TrafficCounters {
    requests: AtomicU64,
    errors_5xx: AtomicU64,
    latency: Histogram,
    /// The same latencies, on `/metrics` ([`REQUEST_DURATION`]). Swapped
    /// for a fresh handle by [`TrafficCounters::export_latency`], so a
    /// series the exporter dropped while idle comes back.
    exported: ArcSwap<metrics::Histogram>,
}

impl Default for TrafficCounters {
    fn default() -> Self {
        TrafficCounters {
            requests: AtomicU64::new(0),
            errors_5xx: AtomicU64::new(0),
            latency: Histogram::default(),
            exported: ArcSwap::from_pointee(metrics::Histogram::noop()),
        }
    }
}

/// A copy of [`TrafficCounters`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrafficSnapshot {
    /// Requests.
    pub requests: u64,
    /// 5xx answers.
    pub errors_5xx: u64,
    /// Latencies.
    pub latency: HistogramSnapshot,
}

impl TrafficCounters {
    /// Count one request that ended with `status` after `latency`.
    pub fn record(&self, status: u16, latency: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            self.errors_5xx.fetch_add(1, Ordering::Relaxed);
        }
        self.latency.record(latency);
        self.exported.load().record(latency.as_secs_f64());
    }

    /// Record latencies from now on into `histogram` too.
    pub fn export_latency(&self, histogram: metrics::Histogram) {
        self.exported.store(Arc::new(histogram));
    }

    /// The counts so far.
    pub fn snapshot(&self) -> TrafficSnapshot {
        TrafficSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            errors_5xx: self.errors_5xx.load(Ordering::Relaxed),
            latency: self.latency.snapshot(),
        }
    }
}

impl TrafficSnapshot {
    /// `self - earlier`.
    pub fn since(&self, earlier: &TrafficSnapshot) -> TrafficSnapshot {
        TrafficSnapshot {
            requests: self.requests.saturating_sub(earlier.requests),
            errors_5xx: self.errors_5xx.saturating_sub(earlier.errors_5xx),
            latency: self.latency.since(&earlier.latency),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_subtract_to_interval_deltas() {
        let c = TrafficCounters::default();
        c.record(200, Duration::from_micros(900));
        let first = c.snapshot();
        c.record(503, Duration::from_millis(100));
        c.record(200, Duration::from_micros(900));
        let delta = c.snapshot().since(&first);
        assert_eq!((delta.requests, delta.errors_5xx), (2, 1));
        assert_eq!(delta.latency.count(), 2);
        assert_eq!(delta.latency.sum_us, 100_900);
        assert_eq!(
            c.snapshot().latency.count(),
            3,
            "the counters stay cumulative"
        );
    }
}
