//! Upgraded connections (WebSockets and other `Upgrade` protocols): once
//! the backend answers 101, the client's and the backend's connections are
//! spliced and bytes are copied both ways until either side closes.
//!
//! A tunnel counts as a request in flight on its endpoint for its whole
//! life, so draining waits for it; at the end of the drain timeout (and at
//! shutdown) the router closes it gracefully: both sides get a TCP FIN
//! (`shutdown` of the write half), nothing is cut mid-write.

use std::time::Duration;

use hyper::http::request::Parts;
use hyper::http::response;
use hyper::upgrade::OnUpgrade;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::body::ProxyBody;
use crate::endpoint::InFlight;
use crate::headers;
use crate::proxy::local;
use crate::upstream::Upstream;

/// How long a closed tunnel waits for both FINs to be written.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Answer the client's upgrade with the backend's 101 (`head`, read on
/// `upstream`) and splice the two connections in a task that holds `guard`.
pub fn splice(
    parts: &mut Parts,
    mut head: response::Parts,
    upstream: Upstream,
    mut guard: InFlight,
    stop: &CancellationToken,
) -> Response<ProxyBody> {
    // The handshake is the request; the tunnel's lifetime is not a latency.
    guard.record_now();
    let Some(client) = parts.extensions.remove::<OnUpgrade>() else {
        return local(StatusCode::BAD_GATEWAY, "upgrade not possible\n");
    };
    let mut closer = guard.endpoint().tunnel_closer();
    let stop = stop.clone();
    let (service, replica) = (
        guard.endpoint().service.clone(),
        guard.endpoint().replica.clone(),
    );
    tokio::spawn(async move {
        let client = match client.await {
            Ok(client) => client,
            Err(e) => {
                tracing::debug!(service, replica_id = %replica, error = %e, "upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        // The slot keeps the tunnel counted under the backend's connection cap.
        let (mut backend, early, _slot) = upstream.into_parts();
        if !early.is_empty() && client.write_all(&early).await.is_err() {
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
        drop(guard);
    });
    let protocol = head.headers.get(hyper::header::UPGRADE).cloned();
    headers::strip_hop_by_hop(&mut head.headers);
    if let Some(protocol) = protocol {
        headers::set_upgrade(&mut head.headers, protocol);
    }
    Response::from_parts(head, ProxyBody::local(""))
}
