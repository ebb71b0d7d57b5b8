//! The body of an answer sent to a client: a short answer of the router
//! itself, or the backend's body, streamed as the client takes it, which
//! holds the endpoint's in-flight count until its end and then gives its
//! connection back to the pool. Request bodies are the server's
//! ([`mentat_http1::server::RequestBody`]), streamed to the backend as
//! they come.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, SizeHint};
use mentat_http1::client::Reader;
use mentat_http1::BoxError;
use tokio::net::TcpStream;

use crate::endpoint::InFlight;
use crate::pool::{Slot, Upstream};

/// A response body sent to the client.
#[derive(Debug)]
pub struct ProxyBody {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    /// An answer of the router itself (404, 502, 503).
    Local(Full<Bytes>),
    /// The backend's body; the guard counts the request in flight until the
    /// body ends or the client goes away, and the connection (with its
    /// place under the pool's cap, `slot`) goes back to the pool at the end.
    Upstream {
        body: Reader<TcpStream>,
        slot: Option<Slot>,
        guard: InFlight,
    },
}

impl ProxyBody {
    /// A short local body.
    pub fn local(text: impl Into<Bytes>) -> Self {
        ProxyBody {
            inner: Inner::Local(Full::new(text.into())),
        }
    }

    /// The backend's body, read on the connection that holds `slot`, counted by `guard`.
    pub fn upstream(body: Reader<TcpStream>, slot: Slot, guard: InFlight) -> Self {
        let mut inner = Inner::Upstream {
            body,
            slot: Some(slot),
            guard,
        };
        inner.release_if_done();
        ProxyBody { inner }
    }
}

impl Inner {
    /// Give the connection back once the body is read to its end.
    fn release_if_done(&mut self) {
        if let Inner::Upstream { body, slot, guard } = self {
            if let Some(conn) = body.take_reusable() {
                if let Some(slot) = slot.take() {
                    guard.endpoint().pool.release(Upstream { conn, slot });
                }
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
