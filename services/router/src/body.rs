//! Body types. Nothing is buffered: request bodies stream to the backend,
//! response bodies stream back to the client.
//!
//! - [`OutBody`]: a request body that can be handed to a second attempt as
//!   long as the first never started reading it (a connect failure).
//! - [`ProxyBody`]: a response body, either a short local answer or the
//!   backend's body holding the endpoint's in-flight count until its end.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::endpoint::InFlight;

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
    Streaming(Arc<Mutex<Option<Incoming>>>),
}

impl RequestBody {
    /// Wrap the client's body.
    pub fn new(body: Incoming) -> Self {
        if body.is_end_stream() {
            RequestBody::Empty
        } else {
            RequestBody::Streaming(Arc::new(Mutex::new(Some(body))))
        }
    }

    /// True while no attempt has started reading the body, so that another
    /// attempt would send the same request.
    pub fn replayable(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Streaming(slot) => slot
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some(),
        }
    }

    /// The body of one attempt.
    pub fn attempt(&self) -> OutBody {
        OutBody {
            source: self.clone(),
            taken: None,
        }
    }
}

/// The body of one attempt to a backend.
#[derive(Debug)]
pub struct OutBody {
    source: RequestBody,
    taken: Option<Incoming>,
}

#[derive(Debug, thiserror::Error)]
#[error("the request body was already sent to another backend")]
struct BodyGone;

impl Body for OutBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.taken.is_none() {
            match &self.source {
                RequestBody::Empty => return Poll::Ready(None),
                RequestBody::Streaming(slot) => {
                    let body = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
                    match body {
                        Some(b) => self.taken = Some(b),
                        None => return Poll::Ready(Some(Err(Box::new(BodyGone)))),
                    }
                }
            }
        }
        match self.taken.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match (&self.taken, &self.source) {
            (Some(b), _) => b.is_end_stream(),
            (None, RequestBody::Empty) => true,
            (None, RequestBody::Streaming(slot)) => slot
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .is_none_or(Incoming::is_end_stream),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.taken, &self.source) {
            (Some(b), _) => b.size_hint(),
            (None, RequestBody::Empty) => SizeHint::with_exact(0),
            (None, RequestBody::Streaming(slot)) => slot
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .map(Incoming::size_hint)
                .unwrap_or_default(),
        }
    }
}

/// A response body sent to the client.
#[derive(Debug)]
pub enum ProxyBody {
    /// An answer of the router itself (404, 502, 503).
    Local(Full<Bytes>),
    /// The backend's body; the guard counts the request in flight until the
    /// body ends or the client goes away.
    Upstream {
        /// The backend's body.
        body: Incoming,
        /// The in-flight count, released on drop.
        _guard: InFlight,
    },
}

impl ProxyBody {
    /// A short local body.
    pub fn local(text: impl Into<Bytes>) -> Self {
        ProxyBody::Local(Full::new(text.into()))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Local(full) => Pin::new(full).poll_frame(cx).map_err(|e| match e {}),
            ProxyBody::Upstream { body, .. } => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Local(full) => full.is_end_stream(),
            ProxyBody::Upstream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Local(full) => full.size_hint(),
            ProxyBody::Upstream { body, .. } => body.size_hint(),
        }
    }
}
