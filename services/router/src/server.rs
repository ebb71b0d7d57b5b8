//! The accept loop: a task per client connection (see [`crate::conn`]),
//! a cap on open connections, and a graceful stop.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::conn::{self, Timeouts};
use crate::headers::Peer;
use crate::proxy::Proxy;

/// Pause after a failed accept (out of file descriptors and the like).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How the server treats its clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Header and idle timeouts.
    pub timeouts: Timeouts,
    /// Largest request head, in bytes (431 beyond it).
    pub max_header_bytes: usize,
    /// Longest wait for in-flight requests once stopped.
    pub grace: Duration,
}

/// Serve `listener` until `stop` is cancelled; then stop accepting, close
/// idle keep-alive connections, let in-flight requests finish within
/// `limits.grace`, and abort what is left. Each open connection holds one
/// of `slots` (shared by every worker: the cap on open connections).
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    limits: Limits,
    slots: Arc<Semaphore>,
    stop: CancellationToken,
) {
    let mut connections = JoinSet::new();
    let closing = stop.child_token();
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = accept(&listener, &slots) => accepted,
        };
        let Some((stream, peer, slot)) = accepted else {
            tokio::time::sleep(ACCEPT_BACKOFF).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let client = Peer::new(peer.ip(), proxy.trusts(peer.ip()));
        let (proxy, closing) = (proxy.clone(), closing.clone());
        connections.spawn(async move {
            conn::serve(stream, client, proxy, limits, closing).await;
            drop(slot);
        });
    }
    drop(listener);
    tracing::info!(
        open_connections = connections.len(),
        grace_secs = limits.grace.as_secs(),
        "stopped accepting; finishing in-flight requests"
    );
    closing.cancel();
    let all_done = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.grace, all_done).await.is_err() {
        tracing::warn!(
            open_connections = connections.len(),
            "shutdown grace passed; closing the remaining connections"
        );
    }
    connections.shutdown().await;
}

/// Wait for a connection slot, then for a client. `None` after an accept error.
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> Option<(
    tokio::net::TcpStream,
    std::net::SocketAddr,
    tokio::sync::OwnedSemaphorePermit,
)> {
    let slot = slots.clone().acquire_owned().await.ok()?;
    match listener.accept().await {
        Ok((stream, peer)) => Some((stream, peer, slot)),
        Err(e) => {
            tracing::warn!(error = %e, "accept failed");
            None
        }
    }
}
