//! Test fixtures that start real servers: no mocks of NATS or the database.
//!
//! - [`nats`]: a nats-server child process on a free port with JetStream in
//!   a temporary directory, stopped and removed on drop; it can be stopped
//!   and restarted on the same port; [`NatsCluster`], three of them
//!   clustered with JetStream, any node killed and restarted.
//! - [`pg`]: a fresh PostgreSQL database per test, dropped afterwards.
//! - [`free_port`]: a TCP port nobody listens on.

#![allow(clippy::unwrap_used)] // fixtures fail the test loudly on purpose

pub mod nats;
pub mod pg;

pub use nats::{NatsCluster, NatsServer};
pub use pg::PgDatabase;

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// The first of `n` consecutive ports on 127.0.0.1 that are free now (as
/// `mt up --admin` takes: the router's, then one per service).
pub fn free_ports(n: u16) -> u16 {
    loop {
        let first = free_port();
        let all_free = (0..n).all(|i| {
            first
                .checked_add(i)
                .is_some_and(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        });
        if all_free {
            return first;
        }
    }
}
