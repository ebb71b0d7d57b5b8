//! The attacks of "least privilege on the bus", against a whole Mentat
//! whose NATS holds every identity to its permissions: each is refused, or
//! dropped, and does no harm.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mentat_bus::access::Access;
use mentat_bus::identities::Role;
use mentat_bus::{subject, Bus, Error, Replicas};
use mentat_domain::command::StatusReply;
use mentat_domain::event::{Backend, Event, EventEnvelope, Fact, Meta};
use mentat_domain::spec::{HealthSpec, RouteSpec, RunSpec};
use mentat_domain::stats::TrafficStats;
use mentat_e2e::{web_config, Cluster, Db};

/// A bus connected as `role`.
async fn as_identity(cluster: &Cluster, role: &Role) -> Bus {
    let creds = cluster.identities.creds(role);
    let access = Access::new(&cluster.nats_urls(), Some(&creds), false)
        .and_then(|a| a.with_ca(Some(cluster.identities.ca())))
        .expect("credentials");
    Bus::connect_with(
        &access,
        &role.name(),
        Duration::from_secs(10),
        Replicas::Auto,
    )
    .await
    .expect("connects")
}

fn envelope(position: i64, event: Event) -> EventEnvelope {
    EventEnvelope {
        id: mentat_bus::new_id(),
        position,
        stream: "web".into(),
        version: position,
        schema_version: 1,
        recorded_at_ms: mentat_bus::now_ms(),
        meta: Meta::default(),
        event,
    }
}

fn refused<T: std::fmt::Debug>(result: mentat_bus::Result<T>, subject: &str) {
    match result {
        Err(Error::Unauthorised {
            subject: refused, ..
        }) => assert_eq!(refused, subject),
        other => panic!("expected {subject} refused, got {other:?}"),
    }
}

async fn leader_epoch(cluster: &Cluster) -> Option<i64> {
    match cluster.status_query(None).await {
        Ok(StatusReply::Ok {
            planners: Some(p), ..
        }) => p.epoch,
        _ => None,
    }
}

async fn refused_facts(cluster: &Cluster) -> u64 {
    match cluster.status_query(None).await {
        Ok(StatusReply::Ok {
            planners: Some(p), ..
        }) => p.refused_facts,
        other => panic!("status: {other:?}"),
    }
}

/// A listener that counts the connections made to it: what the sender of
/// a forged `ReplicaStarted` wants probed.
async fn bait() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((_conn, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
        }
    });
    (addr, hits)
}

/// Before, every identity could read `_INBOX.>`: a viewer saw the
/// operator's replies. Each now has an inbox of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_identity_reads_the_replies_to_another() {
    let cluster = Cluster::start(Db::Sqlite).await;
    let viewer = as_identity(&cluster, &Role::Viewer).await;
    let mut eavesdrop = viewer
        .client
        .subscribe("_INBOX.>")
        .await
        .expect("the subscription is sent (the server refuses it)");
    viewer.client.flush().await.expect("flush");
    let operator = as_identity(&cluster, &Role::Operator).await;
    // A status query answered over the operator's inbox.
    let reply = operator
        .client
        .request(subject::QUERY_STATUS, Vec::new().into())
        .await
        .expect("the planner answers the operator");
    assert!(!reply.payload.is_empty());
    let overheard = tokio::time::timeout(Duration::from_secs(1), eavesdrop.next()).await;
    assert!(
        !matches!(overheard, Ok(Some(_))),
        "the viewer read a reply meant for the operator: {overheard:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_intents_routes_stats_and_facts_do_no_harm() {
    let cluster = Cluster::start(Db::Sqlite).await;
    cluster.apply(&web_config(2, 10));
    cluster.deploy_first("v1");
    let before = cluster.status("web").await;
    let (bait_addr, probed) = bait().await;

    // An intent the executor would run, and a route to the attacker's
    // address, published on the log's subjects: only the planner may.
    let intent = envelope(
        1_000,
        Event::ReplicaStartRequested {
            replica: "web-evil".into(),
            service: "web".into(),
            host: "e2e-host".into(),
            image: "evil".into(),
            run: RunSpec {
                command: vec!["/bin/sh".into(), "-c".into(), "touch /tmp/owned".into()],
                args: Vec::new(),
                env: Default::default(),
            },
            health: HealthSpec::default(),
            deployment_id: None,
            spawned: false,
        },
    );
    let route = envelope(
        1_001,
        Event::RouteChanged {
            service: "web".into(),
            backends: vec![Backend {
                replica: "web-evil".into(),
                addr: bait_addr.clone(),
                image: "evil".into(),
                weight: 100,
            }],
            route: RouteSpec::default(),
            switch: None,
        },
    );
    for role in [
        Role::Router,
        Role::Executor("e2e-b".into()),
        Role::HealthWatcher,
        Role::Operator,
    ] {
        let bus = as_identity(&cluster, &role).await;
        for env in [&intent, &route] {
            let on = subject::event("web", env.event.type_name());
            refused(bus.publish_event(env).await, &on);
        }
    }

    // Traffic statistics from anyone but a router, reverting a healthy release.
    let stats = TrafficStats {
        router: "made-up".into(),
        at_ms: mentat_bus::now_ms(),
        interval_ms: 1000,
        instances: Vec::new(),
    };
    let on = subject::stats("made-up");
    for role in [Role::HealthWatcher, Role::Executor("e2e-host".into())] {
        let bus = as_identity(&cluster, &role).await;
        refused(
            bus.publish_durable(on.clone(), &mentat_bus::new_id(), &stats)
                .await,
            &on,
        );
    }

    // A host reporting a replica it does not run, to have the attacker's
    // address probed: its subject is its own, but the log placed no such
    // replica there. Recorded nowhere, counted.
    let refused_before = refused_facts(&cluster).await;
    let other_host = as_identity(&cluster, &Role::Executor("e2e-b".into())).await;
    for replica in ["web-evil", &before.instances[0].replica] {
        let forged = Fact {
            id: mentat_bus::new_id(),
            observed_at_ms: mentat_bus::now_ms(),
            event: Event::ReplicaStarted {
                replica: replica.to_owned(),
                service: "web".into(),
                host: "e2e-b".into(),
                pid: 1,
                addr: bait_addr.clone(),
                health: HealthSpec::default(),
            },
        };
        other_host
            .publish_fact(&forged)
            .await
            .expect("its own subject");
    }

    // Facts and commands are taken in order: once the next deployment is
    // done, both forged facts were seen.
    cluster.mt_ok(&["deploy", "web", "--image", "v2", "--timeout", "120"]);
    assert_eq!(
        refused_facts(&cluster).await,
        refused_before + 2,
        "{}",
        cluster.logs()
    );
    let events = cluster.events("web").await;
    assert!(
        !events.iter().any(|e| matches!(
            e,
            Event::ReplicaStarted { host, .. } if host == "e2e-b"
        )),
        "a forged fact was recorded: {events:?}"
    );
    let after = cluster.status("web").await;
    assert!(
        after
            .instances
            .iter()
            .all(|r| r.replica != "web-evil" && r.host == "e2e-host"),
        "{:?}",
        after.instances
    );
    assert!(
        after.routes.iter().all(|b| b.addr != bait_addr),
        "{:?}",
        after.routes
    );
    assert_eq!(
        probed.load(Ordering::SeqCst),
        0,
        "the health-watcher probed an address the log never recorded"
    );
}

/// One message with a huge position in `MENTAT_EVENTS` (possible only for
/// an identity that may publish there), then a planner restart: the relay
/// does not take it as its checkpoint, so the next events still reach the
/// executors and the next deployment completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_position_in_the_events_stream_does_not_stop_the_relay() {
    let mut cluster = Cluster::start(Db::Sqlite).await;
    cluster.apply(&web_config(2, 10));
    cluster.deploy_first("v1");
    let forged = envelope(
        1_000_000_000,
        Event::ReplicaHealthy {
            replica: "web-1".into(),
            service: "web".into(),
        },
    );
    // The test's own, unrestricted identity: what an attacker had before
    // permissions, or a planner's identity stolen.
    cluster.bus.publish_event(&forged).await.expect("published");
    cluster.kill("planner");
    cluster.start_service("planner");
    // It leads once the lease of the one killed runs out (a new epoch).
    let deadline = Instant::now() + Duration::from_secs(60);
    while leader_epoch(&cluster).await < Some(2) {
        assert!(
            Instant::now() < deadline,
            "no new leader:\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.mt_ok(&["deploy", "web", "--image", "v2", "--timeout", "120"]);
    let status = cluster.status("web").await;
    assert_eq!(status.image.as_deref(), Some("v2"), "{status:?}");
    assert!(
        cluster
            .logs()
            .contains("not taken as the relay's checkpoint"),
        "{}",
        cluster.logs()
    );
}
