//! A client connection's socket, wrapped to enforce two timeouts hyper
//! does not separate:
//!
//! - **header timeout** (slowloris): from the connection's start, or from
//!   the first byte of a later request, the request's head must arrive
//!   within it, else the connection is closed;
//! - **idle timeout**: a keep-alive connection with no request in flight
//!   and no byte received for that long is closed (a clean EOF, as if the
//!   client had gone).
//!
//! Requests in flight are counted by [`Active`] guards: the proxy takes one
//! when a request's head has been read and the response body holds it
//! until its last byte, so neither timeout cuts a slow backend or a long
//! download.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// The two timeouts of a client connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Time to receive a request's head.
    pub header: Duration,
    /// Time a connection may wait, idle, for its next request.
    pub idle: Duration,
}

/// Requests in flight on one connection.
#[derive(Debug, Default)]
pub struct ConnState {
    active: AtomicUsize,
    /// Set once the connection became a tunnel: no timeout applies any more.
    upgraded: AtomicBool,
}

impl ConnState {
    /// Count one request until the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> Active {
        self.active.fetch_add(1, Ordering::AcqRel);
        Active(self.clone())
    }

    /// The connection is now a tunnel (after a 101).
    pub fn set_upgraded(&self) {
        self.upgraded.store(true, Ordering::Release);
    }

    fn busy(&self) -> bool {
        self.active.load(Ordering::Acquire) > 0 || self.upgraded.load(Ordering::Acquire)
    }
}

/// One request in flight on a client connection.
#[derive(Debug)]
pub struct Active(Arc<ConnState>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A request is in flight: no deadline.
    Busy,
    /// Waiting for the first byte of the next request.
    Idle,
    /// Reading a request head.
    Head,
}

/// The socket of a client connection, with its deadlines.
#[derive(Debug)]
pub struct ClientIo {
    stream: TcpStream,
    state: Arc<ConnState>,
    timeouts: Timeouts,
    phase: Phase,
    /// When the current phase times out.
    deadline: Instant,
    /// The timer; re-armed lazily (only when it would fire too late, or
    /// when it fired early), so a busy connection costs no timer operation
    /// per request.
    timer: Pin<Box<Sleep>>,
}

impl ClientIo {
    /// Wrap a freshly accepted socket: its first head is due within the header timeout.
    pub fn new(stream: TcpStream, state: Arc<ConnState>, timeouts: Timeouts) -> Self {
        ClientIo {
            stream,
            state,
            timeouts,
            phase: Phase::Head,
            deadline: Instant::now() + timeouts.header,
            timer: Box::pin(tokio::time::sleep(timeouts.header)),
        }
    }

    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        let wait = match phase {
            Phase::Busy => return,
            Phase::Idle => self.timeouts.idle,
            Phase::Head => self.timeouts.header,
        };
        self.deadline = Instant::now() + wait;
    }

    /// Ready once the current phase's deadline has passed.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.timer.deadline() > self.deadline {
                let at = self.deadline;
                self.timer.as_mut().reset(at);
            }
            match self.timer.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) if Instant::now() >= self.deadline => return Poll::Ready(()),
                Poll::Ready(()) => {
                    let at = self.deadline;
                    self.timer.as_mut().reset(at);
                }
            }
        }
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.state.busy() {
            this.phase = Phase::Busy;
            return Pin::new(&mut this.stream).poll_read(cx, buf);
        }
        if this.phase == Phase::Busy {
            this.enter(Phase::Idle);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.phase == Phase::Idle && buf.filled().len() > before {
                    this.enter(Phase::Head);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.poll_deadline(cx) {
                Poll::Pending => Poll::Pending,
                // Idle: end the connection like a client that left.
                Poll::Ready(()) if this.phase == Phase::Idle => Poll::Ready(Ok(())),
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request head not received in time",
                ))),
            },
        }
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
