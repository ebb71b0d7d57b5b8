//! HTTP/1.1 as Mentat's router speaks it, in three layers that depend one
//! way only (`tests/layers.rs` checks it):
//!
//! 1. [`wire`]: the wire format, pure (no I/O but the decoder's reads):
//!    the lexical rules of framing ([`wire::grammar`]), the header fields
//!    a message's framing depends on and its body's decoder
//!    ([`wire::codec`]), fields kept as slices of their head and the
//!    header rules (hop-by-hop fields, [`wire::fields`]), request heads
//!    ([`wire::request`]) and response heads ([`wire::response`]).
//! 2. [`bounds`]: how long a request may stay in flight, and the deadline
//!    helper both sides use; [`io`]: the byte streams both sides run over
//!    ([`io::Io`]: `AsyncRead + AsyncWrite` that can be read and written
//!    at once), a TCP socket or an in-memory pair in tests.
//! 3. [`server`]: one client connection, requests read one after another
//!    and answered through a [`server::Handler`], the request body read
//!    from the connection as the handler's client sends it on
//!    ([`server::RequestBody`]); [`client`]: one connection to a backend,
//!    a request written and its answer read ([`client::Connection`]),
//!    the answer's body read as it is taken ([`client::Reader`]).
//!
//! The server and the client do not know each other: a handler (the
//! router's proxy) holds both, and passes the one's request body to the
//! other as any [`http_body::Body`]. Nothing here knows of routes,
//! backends' names or NATS.
//!
//! Guarantees: strict framing where RFC 9112 requires it (see
//! [`wire::request`] and [`wire::grammar`]); every line, field, chunk
//! extension and trailer bounded; no task, channel or lock per request; a
//! connection idle between requests holds no buffer.

pub mod bounds;
pub mod client;
mod error;
pub mod io;
pub mod server;
pub mod wire;

pub use error::Error;

/// Boxed error of the bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
