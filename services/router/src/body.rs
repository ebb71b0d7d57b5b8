//! Body types. Nothing is buffered: request bodies stream to the backend,
//! response bodies stream back to the client.
//!
//! - [`RequestBody`]/[`OutBody`]: the client's body, which can be handed to
//!   a second attempt as long as the first never started reading it, and
//!   which is cut when it grows past the body limit.
//! - [`ProxyBody`]: a response body, either a short local answer or the
//!   backend's body holding the endpoint's in-flight count until its end,
//!   when its connection goes back to the pool.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::conn::Active;
use crate::endpoint::InFlight;
use crate::upstream::Reader;

/// Boxed error of the bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The client's request body, shared by the attempts of one request: the
/// first attempt that polls it takes it, and later attempts can no longer
/// be made.
#[derive(Debug, Clone)]
pub enum RequestBody {
    /// No body at all: every attempt may be made.
    Empty,
    /// A body not yet taken by any attempt (or `None` once taken).
    Streaming(Arc<Shared>, u64),
}

/// The state of a streaming request body shared by its attempts.
#[derive(Debug)]
pub struct Shared {
    body: Mutex<Option<Incoming>>,
    too_large: AtomicBool,
}

impl RequestBody {
    /// Wrap the client's body, to be cut past `limit` bytes.
    pub fn new(body: Incoming, limit: u64) -> Self {
        if body.is_end_stream() {
            RequestBody::Empty
        } else {
            let shared = Shared {
                body: Mutex::new(Some(body)),
                too_large: AtomicBool::new(false),
            };
            RequestBody::Streaming(Arc::new(shared), limit)
        }
    }

    /// True when the request has no body.
    pub fn is_empty(&self) -> bool {
        matches!(self, RequestBody::Empty)
    }

    /// True while no attempt has started reading the body, so that another
    /// attempt would send the same request.
    pub fn replayable(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Streaming(shared, _) => shared.slot().is_some(),
        }
    }

    /// True once the body was cut for being larger than the limit.
    pub fn too_large(&self) -> bool {
        match self {
            RequestBody::Empty => false,
            RequestBody::Streaming(shared, _) => shared.too_large.load(Ordering::Relaxed),
        }
    }

    /// The body of one attempt.
    pub fn attempt(&self) -> OutBody {
        OutBody {
            source: self.clone(),
            taken: None,
            sent: 0,
        }
    }
}

impl Shared {
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Incoming>> {
        self.body.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The body of one attempt to a backend.
#[derive(Debug)]
pub struct OutBody {
    source: RequestBody,
    taken: Option<Incoming>,
    sent: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("the request body was already sent to another backend")]
struct BodyGone;

/// The request body grew past the limit.
#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than the limit")]
pub struct BodyTooLarge;

impl Body for OutBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let (shared, limit) = match &self.source {
            RequestBody::Empty => return Poll::Ready(None),
            RequestBody::Streaming(shared, limit) => (shared.clone(), *limit),
        };
        if self.taken.is_none() {
            match shared.slot().take() {
                Some(b) => self.taken = Some(b),
                None => return Poll::Ready(Some(Err(Box::new(BodyGone)))),
            }
        }
        let Some(body) = self.taken.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = match Pin::new(body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other.map_err(Into::into),
        };
        if let Some(data) = frame.data_ref() {
            self.sent += data.len() as u64;
            if self.sent > limit {
                shared.too_large.store(true, Ordering::Relaxed);
                return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        match (&self.taken, &self.source) {
            (Some(b), _) => b.is_end_stream(),
            (None, RequestBody::Empty) => true,
            (None, RequestBody::Streaming(shared, _)) => {
                shared.slot().as_ref().is_none_or(Incoming::is_end_stream)
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.taken, &self.source) {
            (Some(b), _) => b.size_hint(),
            (None, RequestBody::Empty) => SizeHint::with_exact(0),
            (None, RequestBody::Streaming(shared, _)) => shared
                .slot()
                .as_ref()
                .map(Incoming::size_hint)
                .unwrap_or_default(),
        }
    }
}

/// A response body sent to the client.
#[derive(Debug)]
pub struct ProxyBody {
    inner: Inner,
    /// Counts the response as active on its client connection (idle timeout).
    active: Option<Active>,
}

#[derive(Debug)]
enum Inner {
    /// An answer of the router itself (404, 502, 503).
    Local(Full<Bytes>),
    /// The backend's body; the guard counts the request in flight until the
    /// body ends or the client goes away, and the connection goes back to
    /// the pool at the end.
    Upstream { body: Reader, guard: InFlight },
}

impl ProxyBody {
    /// A short local body.
    pub fn local(text: impl Into<Bytes>) -> Self {
        ProxyBody {
            inner: Inner::Local(Full::new(text.into())),
            active: None,
        }
    }

    /// The backend's body, counted by `guard`.
    pub fn upstream(body: Reader, guard: InFlight) -> Self {
        let mut inner = Inner::Upstream { body, guard };
        inner.release_if_done();
        ProxyBody {
            inner,
            active: None,
        }
    }

    /// Count this response as active on its client connection until dropped.
    pub fn set_active(&mut self, active: Active) {
        self.active = Some(active);
    }
}

impl Inner {
    /// Give the connection back once the body is read to its end.
    fn release_if_done(&mut self) {
        if let Inner::Upstream { body, guard } = self {
            if let Some(upstream) = body.take_reusable() {
                guard.endpoint().pool.release(upstream);
            }
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match &mut this.inner {
            Inner::Local(full) => Pin::new(full).poll_frame(cx).map_err(|e| match e {}),
            Inner::Upstream { body, .. } => {
                let polled = Pin::new(body).poll_frame(cx);
                if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Ok(_)))) {
                    this.inner.release_if_done();
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Local(full) => full.is_end_stream(),
            Inner::Upstream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Local(full) => full.size_hint(),
            Inner::Upstream { body, .. } => body.size_hint(),
        }
    }
}
