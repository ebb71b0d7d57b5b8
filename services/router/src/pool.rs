//! Connections from the router to one backend: kept alive and reused (most
//! recently used first), capped in number, and closable on demand when the
//! backend is drained.
//!
//! A connection returns to the pool when the response it carried has been
//! read to its end; a response dropped half-read closes its connection. A
//! request that finds every connection busy and the cap reached waits for
//! one to come back, at most the connect timeout.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::body::OutBody;

/// Idle connections older than this are closed rather than reused.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// The HTTP/1 handshake failed.
    #[error("handshake: {0}")]
    Handshake(hyper::Error),
}

/// The connections to one backend.
#[derive(Debug)]
pub struct Pool {
    idle: Mutex<Vec<Idle>>,
    permits: Arc<Semaphore>,
    /// Woken when a connection becomes idle or closes.
    changed: Arc<Notify>,
    settings: PoolSettings,
}

#[derive(Debug)]
struct Idle {
    sender: SendRequest<OutBody>,
    since: Instant,
}

/// A connection taken from the pool (or just opened) for one request.
#[derive(Debug)]
pub struct Conn {
    /// Where to send the request.
    pub sender: SendRequest<OutBody>,
    /// True when the connection served an earlier request.
    pub reused: bool,
}

impl Pool {
    /// An empty pool.
    pub fn new(settings: PoolSettings) -> Self {
        Pool {
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(settings.max_connections)),
            changed: Arc::new(Notify::new()),
            settings,
        }
    }

    /// A ready connection to `addr`: an idle one, else a new one, else the
    /// next one freed within the connect timeout.
    pub async fn checkout(&self, addr: &str) -> Result<Conn, CheckoutError> {
        let deadline = tokio::time::Instant::now() + self.settings.connect_timeout;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            while let Some(mut sender) = self.pop_idle() {
                if sender.is_ready() {
                    return Ok(Conn {
                        sender,
                        reused: true,
                    });
                }
                // Its previous response just ended: the connection task
                // is about to mark it ready, or it closed.
                if let Ok(Ok(())) = tokio::time::timeout_at(deadline, sender.ready()).await {
                    return Ok(Conn {
                        sender,
                        reused: true,
                    });
                }
            }
            if let Ok(permit) = self.permits.clone().try_acquire_owned() {
                let sender = tokio::time::timeout_at(deadline, self.connect(addr, permit))
                    .await
                    .map_err(|_| CheckoutError::Timeout)??;
                return Ok(Conn {
                    sender,
                    reused: false,
                });
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(CheckoutError::Full);
            }
        }
    }

    /// Open a connection; it holds `permit` until it closes.
    async fn connect(
        &self,
        addr: &str,
        permit: OwnedSemaphorePermit,
    ) -> Result<SendRequest<OutBody>, CheckoutError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(CheckoutError::Connect)?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(CheckoutError::Handshake)?;
        let changed = self.changed.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "backend connection ended with an error");
            }
            drop(permit);
            changed.notify_one();
        });
        Ok(sender)
    }

    /// Give a connection back once its response was read to the end.
    pub fn release(&self, sender: SendRequest<OutBody>) {
        if sender.is_closed() {
            return;
        }
        self.lock().push(Idle {
            sender,
            since: Instant::now(),
        });
        self.changed.notify_one();
    }

    /// Close every idle connection (a drained backend); busy ones close
    /// when their response ends, if the pool is asked again then.
    pub fn close_idle(&self) -> usize {
        let idle = std::mem::take(&mut *self.lock());
        idle.len()
    }

    /// Close idle connections older than [`POOL_IDLE_TIMEOUT`] or closed by the backend.
    pub fn prune(&self) {
        let mut idle = self.lock();
        idle.retain(|i| i.since.elapsed() < POOL_IDLE_TIMEOUT && !i.sender.is_closed());
    }

    /// Idle connections now.
    pub fn idle_count(&self) -> usize {
        self.lock().len()
    }

    /// Connections open now (busy and idle).
    pub fn open_count(&self) -> usize {
        self.settings
            .max_connections
            .saturating_sub(self.permits.available_permits())
    }

    fn pop_idle(&self) -> Option<SendRequest<OutBody>> {
        let mut idle = self.lock();
        while let Some(i) = idle.pop() {
            if !i.sender.is_closed() && i.since.elapsed() < POOL_IDLE_TIMEOUT {
                return Some(i.sender);
            }
        }
        None
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
