//! Upgraded connections (WebSockets and other `Upgrade` protocols): once
//! the backend answers 101, the client's connection, after the 101 is
//! written to it, and the backend's are spliced, and bytes are copied both
//! ways until either side closes. Bytes either side sent after its head
//! (and that were already read) go first.
//!
//! A tunnel counts as a request in flight on its endpoint for its whole
//! life, so draining waits for it; at the end of the drain timeout (and at
//! shutdown) the router closes it gracefully: both sides get a TCP FIN
//! (`shutdown` of the write half), nothing is cut mid-write.

use std::time::Duration;

use bytes::BytesMut;
use hyper::{HeaderMap, StatusCode};
use mentat_http1::io::Io;
use mentat_http1::wire::fields::{set_upgrade, Passed};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::body::ProxyBody;
use crate::endpoint::InFlight;
use crate::pool::Upstream;
use crate::proxy::Outgoing;

/// How long a closed tunnel waits for both FINs to be written.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The backend's side of an upgraded connection, waiting for the client's.
#[derive(Debug)]
pub struct Tunnel {
    upstream: Upstream,
    guard: InFlight,
    stop: CancellationToken,
}

/// The client's answer to an upgrade: the backend's 101 (its `fields`, read on
/// `upstream`), which the tunnel takes over once the head is written. `guard` counts the tunnel in flight for its life.
pub fn splice(
    fields: Passed,
    upstream: Upstream,
    mut guard: InFlight,
    stop: &CancellationToken,
) -> Outgoing {
    // The handshake is the request; the tunnel's lifetime is not a latency.
    guard.record_now();
    // `Passed` leaves out the hop-by-hop fields: the handshake's go back in.
    let mut headers = HeaderMap::new();
    if let Some(protocol) = fields.upgrade() {
        set_upgrade(&mut headers, protocol);
    }
    let tunnel = Tunnel {
        upstream,
        guard,
        stop: stop.clone(),
    };
    Outgoing {
        status: StatusCode::SWITCHING_PROTOCOLS,
        headers,
        passed: Some(fields),
        last: None,
        body: ProxyBody::local(""),
        upgrade: Some(tunnel),
    }
}

impl Tunnel {
    /// Copy bytes between `client` (whose unread bytes are `early`) and the
    /// backend until either closes, the backend is drained or the router stops.
    pub async fn run<S: Io>(self, mut client: S, early: BytesMut) {
        let Tunnel {
            upstream,
            guard,
            stop,
        } = self;
        let mut closer = guard.endpoint().tunnel_closer();
        let (service, replica) = (&guard.endpoint().service, &guard.endpoint().replica);
        // The slot keeps the tunnel counted under the backend's connection cap.
        let Upstream { conn, slot: _slot } = upstream;
        let (mut backend, backend_early) = conn.into_parts();
        if !backend_early.is_empty() && client.write_all(&backend_early).await.is_err() {
            return;
        }
        if !early.is_empty() && backend.write_all(&early).await.is_err() {
            return;
        }
        tokio::select! {
            copied = tokio::io::copy_bidirectional(&mut client, &mut backend) => {
                if let Err(e) = copied {
                    tracing::debug!(service, replica_id = %replica, error = %e, "tunnel ended with an error");
                }
                return;
            }
            _ = closer.changed() => {
                tracing::info!(service, replica_id = %replica, "closing a tunnel to a drained backend");
            }
            () = stop.cancelled() => {}
        }
        let close = async {
            let _ = client.shutdown().await;
            let _ = backend.shutdown().await;
        };
        let _ = tokio::time::timeout(CLOSE_GRACE, close).await;
    }
}
