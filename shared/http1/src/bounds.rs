//! Bounds on a request in flight, so that neither a slow client nor a
//! silent backend holds a backend connection for longer than configured
//! (the router sets them with the flags named here):
//!
//! - **response head** (`--response-timeout-secs`): from the request's
//!   last byte written to a backend until its answer's head is read; past
//!   it the client gets 504 and the backend connection is closed;
//! - **body idle** (`--body-idle-timeout-secs`): the longest pause between
//!   two pieces of a body, in either direction: the client's request body
//!   read and written to the backend, the backend's answer read and written
//!   to the client. A client's body that stalls gets 408; an answer that
//!   stalls is cut (its head has gone), and the connections on both sides
//!   are closed;
//! - **request body** (`--request-body-timeout-secs`): the longest time to
//!   receive a whole request body, however steadily it trickles in; past
//!   it, 408 and both connections closed.
//!
//! Upgraded connections (WebSockets) are not bounded: they are meant to
//! stay open and quiet.

use std::future::{poll_fn, Future};
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

/// Default [`Bounds::response_head`], in seconds.
pub const DEFAULT_RESPONSE_HEAD_SECS: u64 = 60;
/// Default [`Bounds::body_idle`], in seconds.
pub const DEFAULT_BODY_IDLE_SECS: u64 = 30;
/// Default [`Bounds::request_body`], in seconds.
pub const DEFAULT_REQUEST_BODY_SECS: u64 = 300;

/// The in-flight bounds of a proxied request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// From the request's last byte written to a backend until its answer's head.
    pub response_head: Duration,
    /// Longest pause between two pieces of a body, either way.
    pub body_idle: Duration,
    /// Longest time to receive a whole request body.
    pub request_body: Duration,
}

impl Default for Bounds {
    /// The flags' defaults.
    fn default() -> Self {
        Bounds {
            response_head: Duration::from_secs(DEFAULT_RESPONSE_HEAD_SECS),
            body_idle: Duration::from_secs(DEFAULT_BODY_IDLE_SECS),
            request_body: Duration::from_secs(DEFAULT_REQUEST_BODY_SECS),
        }
    }
}

/// `fut`'s output, or `None` once `deadline` has passed. `fut` is polled
/// once before a timer is armed, so that what is ready at once (most
/// reads and writes of a busy connection) costs no timer operation.
pub async fn within<F: Future>(deadline: Instant, fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    if let Poll::Ready(out) = poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await {
        return Some(out);
    }
    tokio::time::timeout_at(deadline, fut).await.ok()
}

/// [`within`] `wait` from now.
pub async fn within_for<F: Future>(wait: Duration, fut: F) -> Option<F::Output> {
    within(Instant::now() + wait, fut).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ready_futures_pass_and_slow_ones_are_cut_at_the_deadline() {
        assert_eq!(within_for(Duration::ZERO, async { 7 }).await, Some(7));
        let started = Instant::now();
        let slow = tokio::time::sleep(Duration::from_secs(10));
        assert_eq!(within_for(Duration::from_secs(3), slow).await, None);
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        let quick = tokio::time::sleep(Duration::from_secs(1));
        assert_eq!(within_for(Duration::from_secs(3), quick).await, Some(()));
    }
}
