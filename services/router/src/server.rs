//! The accept loop: a task per client connection, served by the HTTP/1.1
//! server ([`mentat_http1::server::serve`]) with the [`Proxy`] answering
//! ([`Client`]), a cap on open connections, and a graceful stop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use mentat_http1::io::Io;
use mentat_http1::server::{self as http1, Handler, Request, RequestBody};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::body::ProxyBody;
use crate::headers::Peer;
use crate::proxy::{Outgoing, Proxy};
use crate::tunnel::Tunnel;

/// Pause after a failed accept (out of file descriptors and the like).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How the server treats its clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Each connection's: header and idle timeouts, largest head and body.
    pub conn: http1::Limits,
    /// Longest wait for in-flight requests once stopped.
    pub grace: Duration,
}

/// One client connection's handler: the proxy, and the client as the
/// proxy forwards its requests.
#[derive(Debug)]
pub struct Client {
    proxy: Arc<Proxy>,
    peer: Peer,
}

impl<S: Io> Handler<S> for Client {
    type Body = ProxyBody;
    type Upgrade = Tunnel;

    fn handle<'a>(
        &'a self,
        request: Request,
        body: &'a mut RequestBody<S>,
    ) -> impl Future<Output = Outgoing> + Send + 'a {
        self.proxy.handle(request, body, &self.peer)
    }

    fn upgrade(
        &self,
        tunnel: Tunnel,
        client: S,
        early: BytesMut,
    ) -> impl Future<Output = ()> + Send {
        tunnel.run(client, early)
    }
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
        let client = Client {
            peer: Peer::new(peer.ip(), proxy.trusts(peer.ip())),
            proxy: proxy.clone(),
        };
        let closing = closing.clone();
        connections.spawn(async move {
            http1::serve(stream, client, limits.conn, closing).await;
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
