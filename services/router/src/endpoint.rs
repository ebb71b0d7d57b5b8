//! One replica as the router sees it: an in-flight counter, whether it is
//! in weighted rotation, its connection pool, its traffic counters and the
//! signal that closes its tunnels (WebSockets) at the end of a drain. An
//! endpoint outlives table changes, so requests started under an old table
//! are still counted when a new one takes it out.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

use crate::metrics::TrafficCounters;
use crate::pool::{Pool, PoolSettings};

/// How long a backend that refused a connection is passed over by weighted
/// picks (unless nothing else is left).
pub const EJECT_FOR: Duration = Duration::from_secs(2);

/// A replica of a service, shared by every table that lists it.
#[derive(Debug)]
pub struct Endpoint {
    /// Service it belongs to.
    pub service: String,
    /// Replica id.
    pub replica: String,
    /// Image (version) the replica runs.
    pub image: String,
    /// `host:port`.
    pub addr: String,
    /// Pooled connections to the replica.
    pub pool: Pool,
    /// Requests, 5xx and latency, cumulative.
    pub traffic: TrafficCounters,
    /// Milliseconds since [`clock_start`] until which weighted picks avoid it.
    ejected_until_ms: AtomicU64,
    /// Bumped to close the endpoint's tunnels.
    close_tunnels: watch::Sender<u64>,
    in_flight: AtomicUsize,
    /// True while out of weighted rotation (removed, or weight 0).
    draining: AtomicBool,
    /// Bumped each time the endpoint leaves or re-enters rotation, so a
    /// drain started before a re-entry knows it is stale.
    epoch: AtomicU64,
    idle: Notify,
}

impl Endpoint {
    /// A new endpoint, in rotation or not.
    pub fn new(
        service: &str,
        backend: &mentat_domain::event::Backend,
        settings: PoolSettings,
    ) -> Arc<Self> {
        let endpoint = Arc::new(Endpoint {
            service: service.to_owned(),
            replica: backend.replica.clone(),
            image: backend.image.clone(),
            addr: backend.addr.clone(),
            pool: Pool::new(settings),
            traffic: TrafficCounters::default(),
            ejected_until_ms: AtomicU64::new(0),
            close_tunnels: watch::Sender::new(0),
            in_flight: AtomicUsize::new(0),
            draining: AtomicBool::new(backend.weight == 0),
            epoch: AtomicU64::new(0),
            idle: Notify::new(),
        });
        let labels = endpoint.metric_labels();
        endpoint.traffic.export_latency(metrics::histogram!(
            crate::metrics::REQUEST_DURATION,
            &labels
        ));
        endpoint
    }

    /// The labels of its series on `/metrics`.
    pub fn metric_labels(&self) -> Vec<(&'static str, String)> {
        vec![
            ("service", self.service.clone()),
            ("replica", self.replica.clone()),
            ("image", self.image.clone()),
        ]
    }

    /// Requests in flight now (sent, or response still streaming).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// True while out of weighted rotation.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// The current rotation epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Take the endpoint out of rotation; returns the epoch a drain should
    /// check before reporting. Called before the table without it is
    /// published, so a request that still picks it from the old table sees
    /// the flag after counting itself (see [`Endpoint::acquire`]).
    pub fn start_draining(&self) -> u64 {
        self.draining.store(true, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Put the endpoint back in rotation; a drain in progress becomes stale.
    pub fn resume(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.draining.store(false, Ordering::SeqCst);
    }

    /// Count a request on this endpoint. With `rotation_only`, refuse when
    /// the endpoint is draining: the increment comes before the check and the
    /// drainer sets the flag before reading the count (both `SeqCst`), so
    /// either the request backs off or the drainer sees it in flight.
    pub fn acquire(self: &Arc<Self>, rotation_only: bool) -> Option<InFlight> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight {
            endpoint: self.clone(),
            started: Instant::now(),
            status: 502,
            record: true,
        };
        if rotation_only && self.is_draining() {
            return None; // dropping the guard undoes the count
        }
        Some(guard)
    }

    /// Wait until nothing is in flight, at most `timeout`. True when idle.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.in_flight() == 0;
            }
        }
    }

    /// Pass this endpoint over in weighted picks for [`EJECT_FOR`].
    pub fn eject(&self) {
        let until = now_ms() + u64::try_from(EJECT_FOR.as_millis()).unwrap_or(u64::MAX);
        self.ejected_until_ms.store(until, Ordering::Relaxed);
    }

    /// True while ejected after a refused connection.
    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until != 0 && now_ms() < until
    }

    /// A receiver that changes when the endpoint's tunnels must close.
    pub fn tunnel_closer(&self) -> watch::Receiver<u64> {
        self.close_tunnels.subscribe()
    }

    /// Close the endpoint's idle pooled connections and its tunnels, at the
    /// end of a drain. Returns how many idle connections were closed.
    pub fn close_connections(&self) -> usize {
        self.close_tunnels.send_modify(|n| *n += 1);
        self.pool.close_idle()
    }
}

/// Milliseconds since the router's clock started (monotonic).
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One request counted on an endpoint until dropped: held by the response
/// body, so a streaming response counts until its last byte. On drop it
/// records the request's status and latency in the endpoint's counters.
#[derive(Debug)]
pub struct InFlight {
    endpoint: Arc<Endpoint>,
    started: Instant,
    status: u16,
    record: bool,
}

impl InFlight {
    /// The endpoint counted.
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    /// The status to record (502 until set: an attempt that got no answer).
    pub fn set_status(&mut self, status: u16) {
        self.status = status;
    }

    /// Record the request now (status and latency so far) instead of at
    /// drop; used for tunnels, whose lifetime is not a latency.
    pub fn record_now(&mut self) {
        if self.record {
            self.record = false;
            let latency = self.started.elapsed();
            self.endpoint.traffic.record(self.status, latency);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.record_now();
        if self.endpoint.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.endpoint.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(weight: u32) -> Arc<Endpoint> {
        let backend = mentat_domain::event::Backend {
            replica: "r1".into(),
            addr: "127.0.0.1:1".into(),
            image: "v1".into(),
            weight,
        };
        Endpoint::new("web", &backend, PoolSettings::default())
    }

    #[test]
    fn guards_count_and_draining_refuses_rotation_picks() {
        let e = endpoint(1);
        let a = e.acquire(true).expect("in rotation");
        assert_eq!(e.in_flight(), 1);
        let epoch = e.start_draining();
        assert!(e.acquire(true).is_none());
        assert_eq!(e.in_flight(), 1, "a refused pick leaves no count");
        let direct = e.acquire(false).expect("direct requests still allowed");
        assert_eq!(e.in_flight(), 2);
        drop((a, direct));
        assert_eq!(e.in_flight(), 0);
        e.resume();
        assert_ne!(e.epoch(), epoch);
        assert!(e.acquire(true).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn wait_idle_returns_when_the_last_request_ends_or_times_out() {
        let e = endpoint(1);
        assert!(e.wait_idle(Duration::from_secs(1)).await);
        let guard = e.acquire(false).expect("guard");
        assert!(!e.wait_idle(Duration::from_secs(1)).await);
        let waiter = {
            let e = e.clone();
            tokio::spawn(async move { e.wait_idle(Duration::from_secs(30)).await })
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(guard);
        assert!(waiter.await.expect("join"));
    }

    #[test]
    fn guards_record_status_and_latency_once() {
        let e = endpoint(1);
        let mut g = e.acquire(false).expect("guard");
        g.set_status(503);
        g.record_now();
        drop(g);
        let mut ok = e.acquire(false).expect("guard");
        ok.set_status(200);
        drop(ok);
        let t = e.traffic.snapshot();
        assert_eq!((t.requests, t.errors_5xx), (2, 1));
        assert!(!e.is_ejected());
        e.eject();
        assert!(e.is_ejected());
    }
}
