//! Connections from the router to one backend: kept alive and reused (most
//! recently used first), capped in number, and closable on demand when the
//! backend is drained.
//!
//! A connection returns to the pool when the response it carried has been
//! read to its end; a response dropped half-read closes its connection. A
//! request that finds every connection busy and the cap reached waits for
//! one to come back, at most the connect timeout.

use std::cell::Cell;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mentat_http1::client::Connection;
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Idle connections older than this are closed rather than reused.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Idle lists per pool: one per request worker (by [`set_worker`]), so a
/// worker reuses the connections its own runtime registered.
const WORKER_LISTS: usize = 16;

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// Mark the calling thread as request worker `n` (its idle lists).
pub fn set_worker(n: usize) {
    WORKER.with(|w| w.set(n % WORKER_LISTS));
}

fn worker() -> usize {
    WORKER.with(Cell::get)
}

/// How a pool connects.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// Most connections (busy and idle) to the backend.
    pub max_connections: usize,
    /// Longest wait for a TCP connection, and for a free one at the cap.
    pub connect_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_connections: crate::config::DEFAULT_MAX_BACKEND_CONNECTIONS,
            connect_timeout: Duration::from_millis(crate::config::DEFAULT_CONNECT_TIMEOUT_MS),
        }
    }
}

/// An open connection to a backend and its place under the pool's cap,
/// idle in its pool or carrying one request.
#[derive(Debug)]
pub struct Upstream {
    /// The HTTP/1.1 connection.
    pub conn: Connection<TcpStream>,
    /// The pool's slot, freed when the connection closes.
    pub slot: Slot,
}

impl Upstream {
    /// True unless the backend closed the connection (or sent bytes nobody
    /// asked for) while it was idle. Costs no system call while the socket
    /// has nothing to read.
    pub fn is_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.conn.io().try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

/// Why no connection could be had. Nothing was sent to the backend in any case.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    /// The TCP connection failed (refused, unreachable).
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// The TCP connection did not complete in time.
    #[error("connect timed out")]
    Timeout,
    /// Every allowed connection stayed busy for the whole wait.
    #[error("backend connection cap reached")]
    Full,
}

/// The connections to one backend.
#[derive(Debug)]
pub struct Pool {
    idle: [Mutex<Vec<Idle>>; WORKER_LISTS],
    permits: Arc<Semaphore>,
    /// Woken when a connection becomes idle or closes.
    changed: Arc<Notify>,
    settings: PoolSettings,
}

#[derive(Debug)]
struct Idle {
    upstream: Upstream,
    since: Instant,
}

/// A connection's place under the pool's cap, given back when the
/// connection closes.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    changed: Arc<Notify>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.changed.notify_one();
    }
}

impl Pool {
    /// An empty pool.
    pub fn new(settings: PoolSettings) -> Self {
        Pool {
            idle: std::array::from_fn(|_| Mutex::new(Vec::new())),
            permits: Arc::new(Semaphore::new(settings.max_connections)),
            changed: Arc::new(Notify::new()),
            settings,
        }
    }

    /// A connection to `addr`: an idle one of this worker, else a new one,
    /// else an idle one of another worker, else the next one freed within
    /// the connect timeout.
    pub async fn checkout(&self, addr: &str) -> Result<Upstream, CheckoutError> {
        let mine = worker();
        if let Some(upstream) = self.pop_idle(mine) {
            return Ok(upstream);
        }
        let deadline = tokio::time::Instant::now() + self.settings.connect_timeout;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(upstream) = self.pop_idle(mine) {
                return Ok(upstream);
            }
            if let Ok(permit) = self.permits.clone().try_acquire_owned() {
                let slot = Slot {
                    _permit: permit,
                    changed: self.changed.clone(),
                };
                let stream = tokio::time::timeout_at(deadline, TcpStream::connect(addr))
                    .await
                    .map_err(|_| CheckoutError::Timeout)?
                    .map_err(CheckoutError::Connect)?;
                let _ = stream.set_nodelay(true);
                return Ok(Upstream {
                    conn: Connection::new(stream),
                    slot,
                });
            }
            if let Some(upstream) = (0..WORKER_LISTS)
                .filter(|&n| n != mine)
                .find_map(|n| self.pop_idle(n))
            {
                return Ok(upstream);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(CheckoutError::Full);
            }
        }
    }

    /// Give a connection back once its response was read to the end.
    pub fn release(&self, upstream: Upstream) {
        self.lock(worker()).push(Idle {
            upstream,
            since: Instant::now(),
        });
        self.changed.notify_one();
    }

    /// Close every idle connection (a drained backend); busy ones close
    /// when their response ends, if the pool is asked again then.
    pub fn close_idle(&self) -> usize {
        (0..WORKER_LISTS)
            .map(|n| std::mem::take(&mut *self.lock(n)).len())
            .sum()
    }

    /// Close idle connections older than [`POOL_IDLE_TIMEOUT`] or closed by the backend.
    pub fn prune(&self) {
        for n in 0..WORKER_LISTS {
            self.lock(n)
                .retain(|i| i.since.elapsed() < POOL_IDLE_TIMEOUT && i.upstream.is_open());
        }
    }

    /// Idle connections now.
    pub fn idle_count(&self) -> usize {
        (0..WORKER_LISTS).map(|n| self.lock(n).len()).sum()
    }

    /// Connections open now (busy and idle).
    pub fn open_count(&self) -> usize {
        self.settings
            .max_connections
            .saturating_sub(self.permits.available_permits())
    }

    /// The most recently used idle connection of list `n` that is still open.
    fn pop_idle(&self, n: usize) -> Option<Upstream> {
        let mut idle = self.lock(n);
        while let Some(i) = idle.pop() {
            if i.since.elapsed() < POOL_IDLE_TIMEOUT && i.upstream.is_open() {
                return Some(i.upstream);
            }
        }
        None
    }

    fn lock(&self, n: usize) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle[n].lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    use mentat_http1::bounds::Bounds;
    use mentat_http1::client::Outbound;
    use mentat_http1::wire::fields::RawFields;

    use super::*;

    #[tokio::test]
    async fn a_connection_reset_before_the_request_left_is_unsent() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (reset_tx, reset_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            // Closing with a zero linger resets the connection.
            stream.set_zero_linger().expect("linger");
            drop(stream);
            let _ = reset_tx.send(());
        });
        let pool = Pool::new(PoolSettings::default());
        let mut upstream = pool.checkout(&addr.to_string()).await.expect("connect");
        reset_rx.await.expect("reset");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!upstream.is_open(), "the pool sees the reset");
        let (parts, ()) = hyper::Request::get("/")
            .body(())
            .expect("request")
            .into_parts();
        let fields = RawFields::parse(b"Host: web.localhost\r\n\r\n").expect("fields");
        let request = Outbound {
            parts: &parts,
            fields: &fields,
            host: "backend",
        };
        let mut body = Empty::<Bytes>::new().map_err(|e| match e {});
        let e = upstream
            .conn
            .send(request, |_| {}, &mut body, &Bounds::default())
            .await
            .expect_err("the connection was reset");
        assert!(
            e.unsent(),
            "nothing left the router, so it may be retried: {e}"
        );
    }
}
