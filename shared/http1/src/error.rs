//! The crate's error: why a request sent by the [`crate::client`] got no
//! answer, with what the caller should do about each.

use std::io;

use crate::BoxError;

/// Why a request got no answer from a backend.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing the request failed; `sent` is false when not one byte of it
    /// left: the backend cannot have seen it, so any request may be
    /// retried elsewhere ([`Error::unsent`]). Otherwise retry only what is
    /// idempotent.
    #[error("writing the request: {source}")]
    Write {
        /// The socket's error.
        source: io::Error,
        /// Whether any of the request may have reached the backend.
        sent: bool,
    },
    /// The request body failed (too large, broken, or its sender went
    /// away): the sender's fault, not retried; the body says why.
    #[error("request body: {0}")]
    Body(BoxError),
    /// The request body did not come within the body bounds (a pause past
    /// the body idle bound, or the whole body past the request body
    /// bound): the sender's fault, answered 408, not retried.
    #[error("the request body came too slowly")]
    BodyTimedOut,
    /// The backend closed the connection before answering: retry if idempotent.
    #[error("the backend closed the connection before answering")]
    Closed,
    /// Reading the answer failed: retry if idempotent.
    #[error("reading the answer: {0}")]
    Read(io::Error),
    /// The answer is not HTTP/1.x or breaks a limit: a bad gateway.
    #[error("bad answer from the backend: {0}")]
    Malformed(&'static str),
    /// The backend did not answer within the response head bound, or
    /// stopped reading the request body for longer than the body idle
    /// bound: 504, the connection closed, not retried (the backend may be
    /// working on it).
    #[error("the backend did not answer in time")]
    TimedOut,
}

impl Error {
    /// True when nothing of the request left: safe to retry anywhere.
    pub fn unsent(&self) -> bool {
        matches!(self, Error::Write { sent: false, .. })
    }
}
