//! The wire format of HTTP/1.1 (RFC 9112, and the field rules of RFC
//! 9110 it relies on): what bytes mean, without sockets. The bottom layer:
//! nothing here uses the server, the client or the bounds.

pub mod codec;
pub mod fields;
pub mod grammar;
pub mod request;
pub mod response;
