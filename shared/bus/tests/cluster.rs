//! The bus on a three-node NATS cluster: streams replicated on three
//! servers, replicas changed only when asked, and a client that loses its
//! server carries on on another without losing a message.

#![allow(clippy::unwrap_used)] // a failing test should fail loudly

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::AckKind;
use mentat_bus::access::Access;
use mentat_bus::consumer::{self, Durable, DurableSpec};
use mentat_bus::{streams, Bus, Replicas};
use mentat_testkit::{NatsCluster, NatsServer};

const WAIT: Duration = Duration::from_secs(30);

/// The replicas of every stream the bus creates.
async fn replicas(bus: &Bus) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for name in [streams::COMMANDS, streams::FACTS, streams::EVENTS] {
        let mut stream = bus.js.get_stream(name).await.unwrap();
        let info = stream.info().await.unwrap();
        out.push((name.to_owned(), info.config.num_replicas));
    }
    out
}

fn all(n: usize) -> Vec<(String, usize)> {
    [streams::COMMANDS, streams::FACTS, streams::EVENTS]
        .iter()
        .map(|s| ((*s).to_owned(), n))
        .collect()
}

#[tokio::test]
async fn streams_get_three_replicas_on_a_cluster_and_one_on_a_server_alone() {
    let cluster = NatsCluster::start(3);
    let bus = Bus::connect(&cluster.urls(), "test", WAIT).await.unwrap();
    assert_eq!(bus.replication().servers, 3);
    assert_eq!(replicas(&bus).await, all(3));
    // The planner's anchors are replicated alike.
    streams::ensure_anchors(&bus).await.unwrap();
    let mut anchors = bus.js.get_stream(streams::ANCHORS).await.unwrap();
    assert_eq!(anchors.info().await.unwrap().config.num_replicas, 3);
    // Every node holds a copy: the stream's group has the two other peers.
    let mut facts = bus.js.get_stream(streams::FACTS).await.unwrap();
    let info = facts.info().await.unwrap();
    let group = info.cluster.clone().unwrap();
    assert!(group.leader.is_some());
    assert_eq!(group.replicas.len(), 2, "{group:?}");

    let alone = NatsServer::start();
    let bus = Bus::connect(&alone.url(), "test", WAIT).await.unwrap();
    assert_eq!(bus.replication().servers, 1);
    assert_eq!(replicas(&bus).await, all(1));
}

#[tokio::test]
async fn existing_streams_change_replicas_only_when_a_count_is_set() {
    let cluster = NatsCluster::start(3);
    let urls = cluster.urls();
    let one = Bus::connect_with(&Access::open(&urls), "test", WAIT, Replicas::Exactly(1))
        .await
        .unwrap();
    assert_eq!(replicas(&one).await, all(1));
    // `auto` would create them with 3, but leaves existing ones alone.
    let auto = Bus::connect(&urls, "test", WAIT).await.unwrap();
    assert_eq!(auto.replication().count(), 3);
    assert_eq!(replicas(&auto).await, all(1));
    // A count that differs updates them.
    let three = Bus::connect_with(&Access::open(&urls), "test", WAIT, Replicas::Exactly(3))
        .await
        .unwrap();
    assert_eq!(replicas(&three).await, all(3));
    streams::ensure_stats(&three).await.unwrap();
    let mut stats = three.js.get_stream(streams::STATS).await.unwrap();
    assert_eq!(stats.info().await.unwrap().config.num_replicas, 3);
}

/// Publish `id` durably, again until the cluster takes it: what every
/// publisher of facts and events does (the id makes a repeat harmless).
async fn publish(bus: &Bus, id: &str) {
    let subject = format!("mentat.fact.test.{id}");
    for _ in 0..100 {
        match bus.publish_durable(subject.clone(), id, &id).await {
            Ok(()) => return,
            Err(e) => {
                eprintln!("publishing {id}: {e}; again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    panic!("the cluster never took {id}");
}

#[tokio::test]
async fn a_client_whose_server_dies_carries_on_on_another_and_loses_nothing() {
    let mut cluster = NatsCluster::start(3);
    let bus = Bus::connect(&cluster.urls(), "survivor", WAIT)
        .await
        .unwrap();
    let mut durable = Durable::open(
        &bus,
        DurableSpec {
            stream: streams::FACTS,
            name: "survivor".into(),
            filters: vec!["mentat.fact.test.>".into()],
            deliver: DeliverPolicy::All,
            ack_wait: Duration::from_secs(5),
            max_ack_pending: 0,
        },
    )
    .await
    .unwrap();
    let ids: Vec<String> = (0..40).map(|i| format!("m{i:02}")).collect();
    for id in &ids[..20] {
        publish(&bus, id).await;
    }
    let serving = cluster.serving("survivor").expect("connected to a node");
    let mut reconnected = bus.reconnections();
    cluster.kill(serving);
    tokio::time::timeout(WAIT, reconnected.changed())
        .await
        .expect("the client reconnects to another node")
        .unwrap();
    let now = cluster.serving("survivor");
    assert!(matches!(now, Some(n) if n != serving), "{now:?}");
    for id in &ids[20..] {
        publish(&bus, id).await;
    }

    let mut seen = BTreeSet::new();
    while seen.len() < ids.len() {
        let msg = durable.next().await;
        let id: String =
            mentat_bus::codec::decode(&msg.payload, mentat_bus::Encoding::MsgPack, "id").unwrap();
        consumer::ack(&msg, AckKind::Ack).await;
        seen.insert(id);
    }
    assert_eq!(seen, ids.iter().cloned().collect::<BTreeSet<_>>());
    // Each message is stored once, however often it was published.
    let mut facts = bus.js.get_stream(streams::FACTS).await.unwrap();
    assert_eq!(facts.info().await.unwrap().state.messages, 40);
}

/// Until the cluster notices that a killed node is gone (half a minute or
/// more), the server may place a new ordered consumer on it and never
/// answer. Every replay opened meanwhile must still open, and deliver.
#[tokio::test]
async fn replays_open_while_the_cluster_has_not_yet_noticed_a_dead_node() {
    for other in 1..=2 {
        let mut cluster = NatsCluster::start(3);
        let bus = Bus::connect(&cluster.urls(), "replayer", WAIT)
            .await
            .unwrap();
        let ids = ["r0", "r1", "r2"];
        for id in ids {
            publish(&bus, id).await;
        }
        let serving = cluster.serving("replayer").unwrap();
        cluster.kill((serving + other) % 3);
        for attempt in 0..6 {
            let mut replay = consumer::ordered(
                &bus,
                streams::FACTS,
                vec!["mentat.fact.test.>".into()],
                DeliverPolicy::All,
            )
            .await
            .unwrap_or_else(|e| panic!("replay {attempt} after a node died: {e}"));
            assert_eq!(replay.backlog, 3);
            for id in ids {
                let msg = replay.next().await.unwrap().unwrap();
                let got: String =
                    mentat_bus::codec::decode(&msg.payload, mentat_bus::Encoding::MsgPack, "id")
                        .unwrap();
                assert_eq!(got, id);
            }
        }
    }
}
