//! The byte streams the server and the client run over: anything
//! `AsyncRead + AsyncWrite` that can also be read and written at once
//! (the client streams a request body while it waits for the answer's
//! head) and, at best, be waited on for readability without a buffer (an
//! idle keep-alive connection then holds none).
//!
//! [`TcpStream`] is one, at no cost (borrowed halves, the socket's own
//! readiness). [`Pair`] makes one of any reader and writer, such as the
//! halves of a `tokio::io::duplex` stream in tests.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A connection's byte stream.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {
    /// The read half, borrowed.
    type Reader<'a>: AsyncRead + Unpin + Send
    where
        Self: 'a;
    /// The write half, borrowed.
    type Writer<'a>: AsyncWrite + Unpin + Send
    where
        Self: 'a;

    /// Both halves, to read and write at once.
    fn halves(&mut self) -> (Self::Reader<'_>, Self::Writer<'_>);

    /// Ready once bytes can be read (or the stream ended or failed),
    /// without reading them. The default is always ready: the caller then
    /// reads with a buffer, which an idle connection holds meanwhile.
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let _ = cx;
        Poll::Ready(Ok(()))
    }
}

impl Io for TcpStream {
    type Reader<'a> = tokio::net::tcp::ReadHalf<'a>;
    type Writer<'a> = tokio::net::tcp::WriteHalf<'a>;

    fn halves(&mut self) -> (Self::Reader<'_>, Self::Writer<'_>) {
        self.split()
    }

    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_read_ready(cx)
    }
}

/// A stream made of a reader and a writer, such as the halves of
/// `tokio::io::split`.
#[derive(Debug)]
pub struct Pair<R, W> {
    /// Where bytes are read from.
    pub reader: R,
    /// Where bytes are written to.
    pub writer: W,
}

impl<S: AsyncRead + AsyncWrite> Pair<tokio::io::ReadHalf<S>, tokio::io::WriteHalf<S>> {
    /// `stream` split in two (`tokio::io::split`).
    pub fn split(stream: S) -> Self {
        let (reader, writer) = tokio::io::split(stream);
        Pair { reader, writer }
    }
}

impl<R, W> Io for Pair<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    type Reader<'a>
        = &'a mut R
    where
        Self: 'a;
    type Writer<'a>
        = &'a mut W
    where
        Self: 'a;

    fn halves(&mut self) -> (Self::Reader<'_>, Self::Writer<'_>) {
        (&mut self.reader, &mut self.writer)
    }
}

impl<R: AsyncRead + Unpin, W: Unpin> AsyncRead for Pair<R, W> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().reader).poll_read(cx, buf)
    }
}

impl<R: Unpin, W: AsyncWrite + Unpin> AsyncWrite for Pair<R, W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().writer).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().writer).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().writer).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().writer).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.writer.is_write_vectored()
    }
}
