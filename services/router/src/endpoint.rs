//! One replica as the router sees it: an in-flight counter and whether it is
//! in weighted rotation. An endpoint outlives table changes, so requests
//! started under an old table are still counted when a new one takes it out.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// A replica of a service, shared by every table that lists it.
#[derive(Debug)]
pub struct Endpoint {
    /// Service it belongs to.
    pub service: String,
    /// Replica id.
    pub replica: String,
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
    pub fn new(service: &str, replica: &str, in_rotation: bool) -> Arc<Self> {
        Arc::new(Endpoint {
            service: service.to_owned(),
            replica: replica.to_owned(),
            in_flight: AtomicUsize::new(0),
            draining: AtomicBool::new(!in_rotation),
            epoch: AtomicU64::new(0),
            idle: Notify::new(),
        })
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
        let guard = InFlight(self.clone());
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
}

/// One request counted on an endpoint until dropped: held by the response
/// body, so a streaming response counts until its last byte.
#[derive(Debug)]
pub struct InFlight(Arc<Endpoint>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_and_draining_refuses_rotation_picks() {
        let e = Endpoint::new("web", "r1", true);
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
        let e = Endpoint::new("web", "r1", true);
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
}
