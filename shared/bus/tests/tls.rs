//! NATS over TLS with the CA `mentat_bus::tls` makes, against real
//! nats-servers: a client given the CA connects and works, one without it
//! cannot connect, and the routes of a cluster are TLS too.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failing test should fail loudly

use std::io::{BufRead, BufReader};
use std::time::Duration;

use mentat_bus::access::Access;
use mentat_bus::{tls, Bus, Replicas};
use mentat_testkit::{NatsCluster, NatsServer};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_client_with_the_ca_works_and_one_without_cannot_connect() {
    let dir = tempfile::tempdir().unwrap();
    let ca = tls::init(dir.path(), &[]).unwrap();
    let nats = NatsServer::start_with(Some(dir.path().join(tls::SERVER_CONFIG)));
    let access = Access::open(&nats.url()).with_ca(Some(&ca)).unwrap();
    let bus = Bus::connect_with(&access, "tls", WAIT, Replicas::Auto)
        .await
        .unwrap();
    bus.publish_durable("mentat.fact.health.web.NoData".into(), "a", &"a")
        .await
        .unwrap();
    let without = Bus::connect(&nats.url(), "no-ca", Duration::from_secs(2)).await;
    match without {
        Err(mentat_bus::Error::Nats(e)) => assert!(e.contains("certificate"), "{e}"),
        other => panic!("connected without the CA: {other:?}"),
    }
    // Another CA will not do either.
    let other = tempfile::tempdir().unwrap();
    let other_ca = tls::init(other.path(), &[]).unwrap();
    let access = Access::open(&nats.url()).with_ca(Some(&other_ca)).unwrap();
    let wrong =
        Bus::connect_with(&access, "other-ca", Duration::from_secs(2), Replicas::Auto).await;
    assert!(wrong.is_err(), "connected with another CA");
}

#[tokio::test]
async fn the_routes_of_a_cluster_are_tls_and_its_streams_replicate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = tls::init(dir.path(), &[]).unwrap();
    let mut cluster = NatsCluster::start_with(3, Some(dir.path().join(tls::CLUSTER_CONFIG)));
    let access = Access::open(&cluster.urls()).with_ca(Some(&ca)).unwrap();
    let bus = Bus::connect_with(
        &access,
        "tls",
        Duration::from_secs(30),
        Replicas::Exactly(3),
    )
    .await
    .unwrap();
    bus.publish_durable("mentat.fact.health.web.NoData".into(), "a", &"a")
        .await
        .unwrap();
    // A route port speaks TLS from the first byte: no plain INFO, as a
    // cluster without TLS sends at once.
    let port = cluster.node(0).route_port().unwrap();
    assert_eq!(first_line(port), "", "a plain greeting on a TLS route port");
    let mut plain = NatsCluster::start(3);
    let port = plain.node(0).route_port().unwrap();
    assert!(first_line(port).starts_with("INFO "), "the control");
}

/// The first line a plain TCP client reads on `port` ("" when the server
/// closes the connection first).
fn first_line(port: u16) -> String {
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line
}
