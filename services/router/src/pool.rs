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

use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::upstream::Upstream;

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
                return Ok(Upstream::new(stream, slot));
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
