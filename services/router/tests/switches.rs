//! A release's switch: `RouteChanged` events tagged with one switch are
//! held until the last one came, then applied in one swap of the table,
//! which the heartbeat lists. Real nats-server, in-process backends and
//! router.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use hyper::StatusCode;
use mentat_bus::{codec, subject, Bus, Encoding};
use mentat_domain::event::{Backend as RouteBackend, RouterHeartbeat};
use mentat_domain::release::RouteSwitch;
use mentat_domain::{Event, EventEnvelope, Meta};
use mentat_testkit::NatsServer;

/// Publish `service`'s table as stream version `version`, tagged with
/// switch `id` of `changes` changes when given.
async fn publish(
    bus: &Bus,
    service: &str,
    version: i64,
    backends: Vec<RouteBackend>,
    switch: Option<(&str, u32)>,
) {
    let id = mentat_bus::new_id();
    let envelope = EventEnvelope {
        id: id.clone(),
        position: version,
        stream: service.to_owned(),
        version,
        schema_version: mentat_domain::event::SCHEMA_VERSION,
        recorded_at_ms: mentat_bus::now_ms(),
        meta: Meta::default(),
        event: Event::RouteChanged {
            service: service.to_owned(),
            backends,
            route: Default::default(),
            switch: switch.map(|(id, changes)| RouteSwitch {
                id: id.to_owned(),
                changes,
            }),
        },
    };
    bus.publish_durable(subject::event(service, "RouteChanged"), &id, &envelope)
        .await
        .expect("publish RouteChanged");
}

/// The next heartbeat of the test router.
async fn heartbeat(beats: &mut async_nats::Subscriber) -> RouterHeartbeat {
    let msg = tokio::time::timeout(Duration::from_secs(5), beats.next())
        .await
        .expect("a heartbeat")
        .expect("the subscription");
    codec::decode(
        &msg.payload,
        Encoding::of(msg.headers.as_ref()),
        "heartbeat",
    )
    .expect("decodes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_is_held_until_whole_then_applied_in_one_swap() {
    // Given web on a1 and api on b1
    let nats = NatsServer::start();
    let bus = bus(&nats.url()).await;
    let (a1, a2) = (Backend::start("a1").await, Backend::start("a2").await);
    let (b1, b2) = (Backend::start("b1").await, Backend::start("b2").await);
    let c2 = Backend::start("c2").await;
    publish(&bus, "web", 1, vec![a1.route(1)], None).await;
    publish(&bus, "api", 1, vec![b1.route(1)], None).await;
    let router = TestRouter::start(&nats.url()).await;
    let mut beats = bus
        .client
        .subscribe(subject::router_heartbeat(ROUTER_ID))
        .await
        .expect("subscribe");
    // When two of a switch's three changes come
    publish(&bus, "web", 2, vec![a2.route(1)], Some(("s1", 3))).await;
    publish(&bus, "api", 2, vec![b2.route(1)], Some(("s1", 3))).await;
    // Then two heartbeats later the router still serves and reports the old tables
    heartbeat(&mut beats).await;
    let beat = heartbeat(&mut beats).await;
    assert_eq!(beat.applied.get("web"), Some(&1), "{beat:?}");
    assert_eq!(beat.applied.get("api"), Some(&1), "{beat:?}");
    assert!(beat.switches.is_empty(), "{beat:?}");
    let client = client();
    assert_eq!(
        get(&client, router.addr, "web.localhost", "/").await.body,
        "a1"
    );
    assert_eq!(
        get(&client, router.addr, "api.localhost", "/").await.body,
        "b1"
    );
    // When the third comes
    publish(&bus, "auth", 1, vec![c2.route(1)], Some(("s1", 3))).await;
    // Then the three moved in one swap, which the heartbeat lists
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let beat = loop {
        let beat = heartbeat(&mut beats).await;
        if !beat.switches.is_empty() {
            break beat;
        }
        assert!(tokio::time::Instant::now() < deadline, "no switch applied");
    };
    assert_eq!(beat.switches.len(), 1, "{beat:?}");
    assert_eq!(beat.switches[0].id, "s1");
    assert_eq!(beat.switches[0].services, ["web", "api", "auth"]);
    assert_eq!(
        (
            beat.applied["web"],
            beat.applied["api"],
            beat.applied["auth"]
        ),
        (2, 2, 1)
    );
    for (host, body) in [("web", "a2"), ("api", "b2"), ("auth", "c2")] {
        let answer = get(&client, router.addr, &format!("{host}.localhost"), "/").await;
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (StatusCode::OK, body)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_catching_up_applies_what_came_of_a_switch() {
    // Given a switch of two changes, one of them superseded since by a
    // change of its own
    let nats = NatsServer::start();
    let bus = bus(&nats.url()).await;
    let (a2, b2, b3) = (
        Backend::start("a2").await,
        Backend::start("b2").await,
        Backend::start("b3").await,
    );
    publish(&bus, "web", 1, vec![a2.route(1)], Some(("s1", 2))).await;
    publish(&bus, "api", 1, vec![b2.route(1)], Some(("s1", 2))).await;
    publish(&bus, "api", 2, vec![b3.route(1)], None).await;
    // When a router starts
    let router = TestRouter::start(&nats.url()).await;
    // Then it serves the last table of each
    let client = client();
    assert_eq!(
        get(&client, router.addr, "web.localhost", "/").await.body,
        "a2"
    );
    assert_eq!(
        get(&client, router.addr, "api.localhost", "/").await.body,
        "b3"
    );
}
