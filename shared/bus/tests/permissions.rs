//! Each identity `mentat_bus::identities` makes, against a real nats-server
//! run with the configuration it writes: what a component needs works, and
//! what it must not do is refused at once with `Error::Unauthorised`
//! naming the subject, never a hang.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failing test should fail loudly

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use mentat_bus::access::{Access, Credentials};
use mentat_bus::consumer::{self, Durable, DurableSpec};
use mentat_bus::identities::{self, Role};
use mentat_bus::{streams, subject, Bus, Encoding, Error, Replicas};
use mentat_domain::event::{Event, EventEnvelope, Fact, Meta};
use mentat_domain::spec::{HealthSpec, RunSpec};
use mentat_domain::stats::TrafficStats;
use mentat_testkit::NatsServer;

const WAIT: Duration = Duration::from_secs(10);
/// Longer than any refusal takes: a refusal that waits for it is a hang.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

struct Secured {
    nats: NatsServer,
    dir: tempfile::TempDir,
}

impl Secured {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let hosts = ["h1".to_owned(), "h2".to_owned()];
        let roles = Role::all(&hosts);
        identities::init(dir.path(), &roles).unwrap();
        let nats = NatsServer::start_with(Some(dir.path().join(identities::SERVER_CONFIG)));
        Secured { nats, dir }
    }

    fn creds(&self, role: &Role) -> PathBuf {
        identities::seed_path(self.dir.path(), role)
    }

    async fn bus(&self, role: &Role) -> Bus {
        let access = Access::new(&self.nats.url(), Some(&self.creds(role)), false).unwrap();
        Bus::connect_with(&access, &role.name(), WAIT, Replicas::Auto)
            .await
            .unwrap_or_else(|e| panic!("{role} connects: {e}"))
    }
}

fn assert_refused<T: std::fmt::Debug>(result: mentat_bus::Result<T>, subject: &str) {
    match result {
        Err(Error::Unauthorised {
            action: "publish",
            subject: refused,
        }) => assert_eq!(refused, subject),
        other => panic!("expected {subject} refused, got {other:?}"),
    }
}

fn started(host: &str) -> Fact {
    Fact {
        id: mentat_bus::new_id(),
        observed_at_ms: mentat_bus::now_ms(),
        event: Event::ReplicaStarted {
            replica: "web-1".into(),
            service: "web".into(),
            host: host.into(),
            pid: 1,
            addr: "127.0.0.1:1".into(),
            health: HealthSpec::default(),
        },
    }
}

fn envelope(event: Event) -> EventEnvelope {
    EventEnvelope {
        id: mentat_bus::new_id(),
        position: 1,
        stream: "web".into(),
        version: 1,
        schema_version: 1,
        recorded_at_ms: mentat_bus::now_ms(),
        meta: Meta::default(),
        event,
    }
}

#[tokio::test]
async fn the_router_cannot_send_a_command_and_a_viewer_cannot_deploy() {
    let s = Secured::start();
    let deploy = subject::command("deploy");
    for role in [Role::Router, Role::Viewer, Role::Executor("h1".into())] {
        let bus = s.bus(&role).await;
        let sent = bus
            .request::<_, serde_json::Value>(
                &deploy,
                &serde_json::json!({"service": "web", "image": "evil"}),
                Encoding::Json,
                REQUEST_TIMEOUT,
            )
            .await;
        assert_refused(sent, &deploy);
    }
    // The operator may: nobody answers (no planner here), which is not a refusal.
    let operator = s.bus(&Role::Operator).await;
    let sent = operator
        .request::<_, serde_json::Value>(
            &deploy,
            &serde_json::json!({}),
            Encoding::Json,
            Duration::from_secs(2),
        )
        .await;
    assert!(
        matches!(
            sent,
            Err(Error::NoResponders { .. } | Error::Timeout { .. })
        ),
        "{sent:?}"
    );
    // A viewer may ask.
    let viewer = s.bus(&Role::Viewer).await;
    let asked = viewer
        .request::<_, serde_json::Value>(
            subject::QUERY_STATUS,
            &serde_json::json!({}),
            Encoding::Json,
            Duration::from_secs(2),
        )
        .await;
    assert!(
        matches!(asked, Err(Error::NoResponders { .. })),
        "{asked:?}"
    );
}

#[tokio::test]
async fn an_executor_reports_facts_of_its_own_host_only() {
    let s = Secured::start();
    let h1 = s.bus(&Role::Executor("h1".into())).await;
    h1.publish_fact(&started("h1")).await.unwrap();
    let other = started("h2");
    let subject = subject::fact(other.event.fact_source().unwrap(), "web", "ReplicaStarted");
    assert_refused(h1.publish_fact(&other).await, &subject);
    // Nor does anyone but the health-watcher report health.
    let healthy = Fact {
        id: mentat_bus::new_id(),
        observed_at_ms: mentat_bus::now_ms(),
        event: Event::ReplicaHealthy {
            replica: "web-1".into(),
            service: "web".into(),
        },
    };
    assert_refused(
        h1.publish_fact(&healthy).await,
        "mentat.fact.health.web.ReplicaHealthy",
    );
    s.bus(&Role::HealthWatcher)
        .await
        .publish_fact(&healthy)
        .await
        .unwrap();
}

#[tokio::test]
async fn only_the_planner_publishes_the_log_and_only_routers_traffic() {
    let s = Secured::start();
    // A forged intent: an executor would run it. And a forged route.
    let intent = envelope(Event::ReplicaStartRequested {
        replica: "web-9".into(),
        service: "web".into(),
        host: "h1".into(),
        image: "evil".into(),
        run: RunSpec {
            command: vec!["/bin/sh".into(), "-c".into(), "id".into()],
            args: Vec::new(),
            env: Default::default(),
        },
        health: HealthSpec::default(),
        deployment_id: None,
        spawned: false,
    });
    let evt = subject::event("web", "ReplicaStartRequested");
    for role in [
        Role::Router,
        Role::HealthWatcher,
        Role::Operator,
        Role::Viewer,
        Role::Executor("h1".into()),
    ] {
        assert_refused(s.bus(&role).await.publish_event(&intent).await, &evt);
    }
    s.bus(&Role::Planner)
        .await
        .publish_event(&intent)
        .await
        .unwrap();

    let stats = TrafficStats {
        router: "r1".into(),
        at_ms: mentat_bus::now_ms(),
        interval_ms: 1000,
        instances: Vec::new(),
    };
    let on = subject::stats("r1");
    let router = s.bus(&Role::Router).await;
    streams::ensure_stats(&router).await.unwrap();
    for role in [
        Role::HealthWatcher,
        Role::Executor("h1".into()),
        Role::Operator,
    ] {
        let bus = s.bus(&role).await;
        assert_refused(
            bus.publish_durable(on.clone(), &mentat_bus::new_id(), &stats)
                .await,
            &on,
        );
    }
    router
        .publish_durable(on, &mentat_bus::new_id(), &stats)
        .await
        .unwrap();
}

#[tokio::test]
async fn each_component_reads_what_it_needs() {
    let s = Secured::start();
    let planner = s.bus(&Role::Planner).await;
    streams::ensure_anchors(&planner).await.unwrap();
    let spec = |stream, name: &str, filters: Vec<String>| DurableSpec {
        stream,
        name: name.to_owned(),
        filters,
        deliver: DeliverPolicy::All,
        ack_wait: Duration::from_secs(30),
        max_ack_pending: 1,
    };
    Durable::open(
        &planner,
        spec(streams::COMMANDS, "planner-commands", vec![]),
    )
    .await
    .unwrap();
    Durable::open(&planner, spec(streams::FACTS, "planner-facts", vec![]))
        .await
        .unwrap();
    let intents = vec![
        subject::events_of_type("ReplicaStartRequested"),
        subject::events_of_type("ReplicaStopRequested"),
    ];
    let h1 = s.bus(&Role::Executor("h1".into())).await;
    Durable::open(&h1, spec(streams::EVENTS, "executor-h1", intents.clone()))
        .await
        .unwrap();
    let router = s.bus(&Role::Router).await;
    streams::ensure_stats(&router).await.unwrap();
    let routes = vec![subject::events_of_type("RouteChanged")];
    consumer::ordered(
        &router,
        streams::EVENTS,
        routes,
        DeliverPolicy::LastPerSubject,
    )
    .await
    .unwrap();
    let watcher = s.bus(&Role::HealthWatcher).await;
    for stream in [streams::FACTS, streams::EVENTS, streams::STATS] {
        consumer::ordered(&watcher, stream, Vec::new(), DeliverPolicy::All)
            .await
            .unwrap_or_else(|e| panic!("the health-watcher reads {stream}: {e}"));
    }
    for role in [Role::Operator, Role::Viewer] {
        let bus = s.bus(&role).await;
        for stream in [streams::EVENTS, streams::ANCHORS] {
            consumer::ordered(&bus, stream, Vec::new(), DeliverPolicy::All)
                .await
                .unwrap_or_else(|e| panic!("{role} reads {stream}: {e}"));
        }
    }
}

#[tokio::test]
async fn an_identity_the_server_does_not_know_is_refused_at_connect() {
    let s = Secured::start();
    let stranger = tempfile::tempdir().unwrap();
    identities::init(stranger.path(), &[Role::Operator]).unwrap();
    let creds =
        Credentials::read(&identities::seed_path(stranger.path(), &Role::Operator)).unwrap();
    let access = Access {
        urls: s.nats.url(),
        credentials: Some(creds),
        ca: None,
    };
    let refused = Bus::connect_with(&access, "stranger", WAIT, Replicas::Auto).await;
    assert!(matches!(refused, Err(Error::Refused { .. })), "{refused:?}");
    let anonymous = Bus::connect(&s.nats.url(), "anonymous", WAIT).await;
    assert!(
        matches!(anonymous, Err(Error::Refused { .. })),
        "{anonymous:?}"
    );
}

/// Before, any component that may replay a stream (`MSG.NEXT.<stream>.*`)
/// could pull from an executor's durable consumer too, and take its
/// intents away from it. The durables of the others are now denied.
#[tokio::test]
async fn no_component_pulls_from_the_durable_consumer_of_another() {
    use async_nats::jetstream::consumer::pull;
    use futures::StreamExt;

    let s = Secured::start();
    let planner = s.bus(&Role::Planner).await;
    let h1 = s.bus(&Role::Executor("h1".into())).await;
    let spec = DurableSpec {
        stream: streams::EVENTS,
        name: "executor-h1".into(),
        filters: vec![subject::events_of_type("ReplicaStartRequested")],
        deliver: DeliverPolicy::All,
        ack_wait: Duration::from_secs(30),
        max_ack_pending: 1,
    };
    let mut intents = Durable::open(&h1, spec).await.unwrap();
    let intent = envelope(Event::ReplicaStartRequested {
        replica: "web-1".into(),
        service: "web".into(),
        host: "h1".into(),
        image: "v1".into(),
        run: RunSpec {
            command: vec!["app".into()],
            args: Vec::new(),
            env: Default::default(),
        },
        health: HealthSpec::default(),
        deployment_id: None,
        spawned: false,
    });
    planner.publish_event(&intent).await.unwrap();

    for role in [
        Role::Router,
        Role::HealthWatcher,
        Role::Notifier,
        Role::Operator,
        Role::Viewer,
        Role::Executor("h2".into()),
    ] {
        let thief = s.bus(&role).await;
        let stream = thief.js.get_stream(streams::EVENTS).await.unwrap();
        // Looking it up may be refused already (an executor sees only its own).
        let Ok(consumer) = stream.get_consumer::<pull::Config>("executor-h1").await else {
            continue;
        };
        let pulled = consumer
            .fetch()
            .max_messages(1)
            .expires(Duration::from_millis(500))
            .messages()
            .await;
        if let Ok(mut messages) = pulled {
            let got = tokio::time::timeout(Duration::from_secs(2), messages.next()).await;
            assert!(
                !matches!(got, Ok(Some(Ok(_)))),
                "{role} pulled an intent meant for executor-h1"
            );
        }
    }
    // The executor itself has it, first time (no delivery lost to a thief).
    let msg = tokio::time::timeout(WAIT, intents.next())
        .await
        .expect("executor-h1 gets its intent");
    let info = msg.info().expect("a JetStream message");
    assert_eq!(info.delivered, 1, "delivered before, to someone else");
}

/// Before, every router shared one identity and could report drains (and
/// statistics) under another router's id, which the planner counts per
/// router. A router's own identity speaks for its id only.
#[tokio::test]
async fn a_router_speaks_for_its_own_id_only() {
    let s = Secured::start();
    let h1 = s.bus(&Role::RouterOf("h1".into())).await;
    streams::ensure_stats(&h1).await.unwrap();
    let stats = |router: &str| TrafficStats {
        router: router.into(),
        at_ms: mentat_bus::now_ms(),
        interval_ms: 1000,
        instances: Vec::new(),
    };
    h1.publish_durable(subject::stats("h1"), &mentat_bus::new_id(), &stats("h1"))
        .await
        .unwrap();
    let theirs = subject::stats("h2");
    assert_refused(
        h1.publish_durable(theirs.clone(), &mentat_bus::new_id(), &stats("h2"))
            .await,
        &theirs,
    );
    let drained = |router: &str| Fact {
        id: mentat_bus::new_id(),
        observed_at_ms: mentat_bus::now_ms(),
        event: Event::ReplicaDrained {
            replica: "web-1".into(),
            service: "web".into(),
            router: router.into(),
            timed_out: false,
        },
    };
    h1.publish_fact(&drained("h1")).await.unwrap();
    assert_refused(
        h1.publish_fact(&drained("h2")).await,
        "mentat.fact.router.h2.web.ReplicaDrained",
    );
    // Its heartbeat only (core NATS: the server drops the other one).
    let planner = s.bus(&Role::Planner).await;
    let mut beats = planner
        .client
        .subscribe(subject::ROUTER_HEARTBEAT_ALL)
        .await
        .unwrap();
    planner.client.flush().await.unwrap();
    h1.publish(subject::router_heartbeat("h2"), &serde_json::json!({}))
        .await
        .unwrap();
    let _ = h1.client.flush().await;
    // From a connection of its own: the refusal may cost the first one.
    let again = s.bus(&Role::RouterOf("h1".into())).await;
    again
        .publish(subject::router_heartbeat("h1"), &serde_json::json!({}))
        .await
        .unwrap();
    again.client.flush().await.unwrap();
    let first = tokio::time::timeout(WAIT, futures::StreamExt::next(&mut beats))
        .await
        .expect("a heartbeat")
        .expect("subscribed");
    assert_eq!(first.subject.as_str(), subject::router_heartbeat("h1"));
}
