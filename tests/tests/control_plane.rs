//! End to end: a control plane that survives its inputs and its database.
//! The planner handles errors by kind: a fact that repeats an id in the log
//! is acknowledged and ignored, and a database that cannot be reached is
//! waited for while commands wait in JetStream.

use std::time::{Duration, Instant};

use mentat_bus::{now_ms, subject, Encoding};
use mentat_domain::command::{Apply, Deploy, Outcome, Reply, StatusReply};
use mentat_domain::event::{Event, Fact, HostHeartbeat};
use mentat_e2e::{on_both_databases, text, web_config, Cluster, Db};

on_both_databases!(
    a_fact_repeating_an_event_id_leaves_the_planner_up,
    forged_host_heartbeats_out_of_bounds_join_nothing,
    an_event_that_does_not_decode_breaks_its_service_only,
);

async fn cluster_with_v1(db: Db) -> Cluster {
    let cluster = Cluster::start(db).await;
    cluster.apply(&web_config(2, 5));
    cluster.deploy_first("v1");
    cluster
}

/// Any NATS client can publish a fact. One whose id is already in the log
/// (here: the id of the event that started the first deployment) used to
/// end the planner, and JetStream redelivered it to every restart.
async fn a_fact_repeating_an_event_id_leaves_the_planner_up(db: Db) {
    let mut cluster = cluster_with_v1(db).await;
    let taken = cluster.envelopes("web").await.remove(0).id;
    let forged = Fact {
        id: taken.clone(),
        observed_at_ms: now_ms(),
        event: Event::ReplicaHealthy {
            replica: "web-1".into(),
            service: "web".into(),
        },
    };
    cluster.bus.publish_fact(&forged).await.expect("published");
    // The planner has consumed it when a later command is answered: the
    // consumer delivers facts and commands one at a time, in order.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        cluster.is_running("planner"),
        "the planner exited on a repeated id:\n{}",
        cluster.logs()
    );
    let out = cluster.mt(&["deploy", "web", "--image", "v2", "--timeout", "120"]);
    assert!(
        out.status.success(),
        "deploy v2: {}\n{}",
        text(&out),
        cluster.logs()
    );
    let envelopes = cluster.envelopes("web").await;
    assert_eq!(
        envelopes.iter().filter(|e| e.id == taken).count(),
        1,
        "the repeated id is in the log once"
    );
    assert!(cluster.is_running("planner"));
}

/// Any NATS client can publish a heartbeat. One whose host id is huge, is
/// not the host its subject names, or whose address is not an address,
/// used to be taken as a host joining (a huge id went into the log, every
/// made-up id into the planner's memory); they are dropped.
async fn forged_host_heartbeats_out_of_bounds_join_nothing(db: Db) {
    let mut cluster = cluster_with_v1(db).await;
    let beat = |host: &str, ip: Option<&str>| HostHeartbeat {
        host: host.to_owned(),
        capacity: 100,
        running: 0,
        at_ms: now_ms(),
        ip: ip.map(str::to_owned),
    };
    let huge = "h".repeat(100_000);
    let forged = [
        (subject::heartbeat("huge"), beat(&huge, None)),
        (subject::heartbeat("someone-else"), beat("ghost", None)),
        (
            subject::heartbeat("bad-ip"),
            beat("bad-ip", Some("10.0.0.1; rm -rf /")),
        ),
        (subject::heartbeat("UPPER"), beat("UPPER", None)),
    ];
    for _ in 0..3 {
        for (subject, beat) in &forged {
            cluster
                .bus
                .publish(subject.clone(), beat)
                .await
                .expect("published");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // A well-formed one is taken: the check is not a wall.
    cluster
        .bus
        .publish(
            subject::heartbeat("spare"),
            &beat("spare", Some("127.0.0.1")),
        )
        .await
        .expect("published");
    let deadline = Instant::now() + Duration::from_secs(10);
    let hosts = loop {
        let Ok(StatusReply::Ok { hosts, .. }) = cluster.status_query(None).await else {
            panic!("status failed:\n{}", cluster.logs());
        };
        if hosts.iter().any(|h| h == "spare") || Instant::now() > deadline {
            break hosts;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(hosts, ["e2e-host", "spare"], "{}", cluster.logs());
    assert!(cluster.is_running("planner"));
}

/// The database goes away in the middle of a steady state (a partition:
/// the proxy in front of PostgreSQL closes every connection and refuses new
/// ones). The planner stays up, answers status from what it knows, marked
/// stale; a deploy sent meanwhile waits in JetStream and is carried out,
/// once, when the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_waited_out_and_nothing_is_lost() {
    let mut cluster = cluster_with_v1(Db::PostgresBehindProxy).await;
    let before = cluster.history("web").await.len();
    let proxy = cluster.db_proxy.as_ref().expect("a proxy");
    proxy.cut();
    // A deploy published while the log is unreachable.
    let deploy = Deploy {
        command_id: Some("deploy-during-outage".into()),
        signature: None,
        service: "web".into(),
        image: "v2".into(),
        strategy: None,
        override_rollout: false,
        actor: Some("e2e".into()),
        reason: Some("sent while the database is away".into()),
    };
    let payload = mentat_bus::codec::encode(&deploy, Encoding::MsgPack).expect("encode");
    // Fire and forget, as any client may: MENTAT_COMMANDS keeps it.
    cluster
        .bus
        .client
        .publish_with_headers(
            subject::command("deploy"),
            Encoding::MsgPack.headers(),
            payload,
        )
        .await
        .expect("publish");
    cluster.bus.client.flush().await.expect("flush");
    // Status says the log is unavailable, from the last known state.
    let deadline = Instant::now() + Duration::from_secs(30);
    let since = loop {
        if let Ok(StatusReply::Ok {
            log_unavailable_since_ms: Some(since),
            services,
            ..
        }) = cluster.status_query(None).await
        {
            assert_eq!(services.len(), 1, "the last known state is still shown");
            break since;
        }
        assert!(
            Instant::now() < deadline,
            "status never said the log is unavailable:\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(since <= now_ms());
    let out = cluster.mt(&["status"]);
    assert!(
        text(&out).contains("log unavailable since"),
        "mt status: {}",
        text(&out)
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        cluster.is_running("planner"),
        "the planner exited while its database was away:\n{}",
        cluster.logs()
    );

    let proxy = cluster.db_proxy.as_ref().expect("a proxy");
    let back = Instant::now();
    proxy.restore();
    // The first event after the outage, read from the database itself.
    let store = mentat_store::Store::open(&cluster.database_url)
        .await
        .expect("the log opens");
    let head = store.head().await.expect("head");
    while store.head().await.expect("head") == head {
        assert!(
            back.elapsed() < Duration::from_secs(60),
            "nothing appended after the outage:\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "database back to the first new event: {} ms",
        back.elapsed().as_millis()
    );
    store.close().await;
    // The deploy sent meanwhile is carried out, once.
    let deadline = Instant::now() + Duration::from_secs(120);
    let record = loop {
        if let Ok(records) = cluster.try_history("web").await {
            if records.len() > before {
                let r = records.last().cloned().expect("a record");
                if r.outcome.is_final() {
                    break r;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "the deploy sent during the outage was not carried out:\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    println!(
        "database back to the deploy recorded and completed: {:?}",
        back.elapsed()
    );
    assert_eq!(record.image, "v2");
    assert_eq!(record.outcome, Outcome::Completed, "{record:?}");
    let records = cluster.history("web").await;
    assert_eq!(records.len(), before + 1, "carried out once: {records:?}");
    let started = cluster
        .events("web")
        .await
        .into_iter()
        .filter(|e| matches!(e, Event::DeploymentStarted { .. }))
        .count();
    assert_eq!(started, before + 1, "one DeploymentStarted per deployment");
    match cluster.status_query(None).await {
        Ok(StatusReply::Ok {
            log_unavailable_since_ms,
            ..
        }) => assert_eq!(log_unavailable_since_ms, None, "no longer stale"),
        other => panic!("status: {other:?}"),
    }
    assert!(cluster.is_running("planner"));
}

/// Waits until `mt status` says the log is unavailable.
async fn wait_unavailable(cluster: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(StatusReply::Ok {
            log_unavailable_since_ms: Some(_),
            ..
        }) = cluster.status_query(None).await
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "status never said the log is unavailable:\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One decision is one transaction. An apply of three services is held by
/// a planner whose database is away; the planner is killed holding it and
/// the database comes back; the restarted planner carries the apply out
/// whole (every service once, the command recorded once), and the same
/// command sent again answers the first outcome and appends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_of_many_services_is_recorded_whole_once() {
    let mut cluster = Cluster::start(Db::PostgresBehindProxy).await;
    let spec = |name: &str| {
        serde_json::from_value(serde_json::json!({
            "name": name,
            "replicas": 1,
            "run": { "command": ["mentat-demo-app"] },
        }))
        .expect("a service spec")
    };
    let apply = Apply {
        command_id: Some("apply-three".into()),
        signature: None,
        services: vec![spec("alpha"), spec("beta"), spec("gamma")],
        cluster: None,
        security: None,
        notify: None,
        environments: None,
        source: None,
        actor: Some("e2e".into()),
        reason: None,
    };
    cluster.db_proxy.as_ref().expect("a proxy").cut();
    let payload = mentat_bus::codec::encode(&apply, Encoding::MsgPack).expect("encode");
    cluster
        .bus
        .client
        .publish_with_headers(
            subject::command("apply"),
            Encoding::MsgPack.headers(),
            payload,
        )
        .await
        .expect("publish");
    cluster.bus.client.flush().await.expect("flush");
    wait_unavailable(&cluster).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.kill("planner");
    cluster.db_proxy.as_ref().expect("a proxy").restore();
    cluster.start_service("planner");

    let store = mentat_store::Store::open(&cluster.database_url)
        .await
        .expect("the log opens");
    let deadline = Instant::now() + Duration::from_secs(60);
    while store
        .command_outcome("apply-three")
        .await
        .expect("read")
        .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "the held apply was not carried out:\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let defined = |log: &[mentat_store::RecordedEvent]| -> Vec<String> {
        let mut names: Vec<String> = log
            .iter()
            .filter(|e| e.event_type == "ServiceDefined")
            .map(|e| e.stream.clone())
            .collect();
        names.sort();
        names
    };
    let log = store.read_all(0, 100_000).await.expect("read");
    assert_eq!(
        defined(&log),
        ["alpha", "beta", "gamma"],
        "every service once"
    );
    let positions: Vec<i64> = log
        .iter()
        .filter(|e| e.event_type == "ServiceDefined")
        .map(|e| e.position)
        .collect();
    assert_eq!(
        positions[2] - positions[0],
        2,
        "in one run of positions: {positions:?}"
    );

    // The same command again: its first outcome, nothing appended.
    let head = store.head().await.expect("head");
    let reply: Reply = cluster
        .bus
        .request(
            &subject::command("apply"),
            &apply,
            Encoding::MsgPack,
            Duration::from_secs(10),
        )
        .await
        .expect("a reply");
    assert!(matches!(reply, Reply::Accepted { .. }), "{reply:?}");
    assert_eq!(
        store.head().await.expect("head"),
        head,
        "nothing appended again"
    );
    store.verify().await.expect("the chain holds");
    store.close().await;
}

/// Nothing in the log can keep the planner down. An event that does not
/// decode (written behind the planner's back, or by a newer build) is in
/// web's stream: the restarted planner marks web broken, at that position,
/// in `mt status`, and every other service goes on; re-applying web clears
/// the mark.
async fn an_event_that_does_not_decode_breaks_its_service_only(db: Db) {
    let mut cluster = Cluster::start(db).await;
    let two = format!(
        "{}  api:\n    replicas: 1\n    run:\n      command: [\"mentat-demo-app\"]\n      env: {{ APP_VERSION: \"{{image}}\" }}\n    health: {{ path: /health, interval_ms: 100, healthy_after: 2 }}\n    route: {{ host: api }}\n",
        web_config(1, 10)
    );
    cluster.apply(&two);
    cluster.deploy_first("v1");
    cluster.kill("planner");
    cluster.writes_to_log();
    let store = mentat_store::Store::open(&cluster.database_url)
        .await
        .expect("the log opens");
    let bad = mentat_store::NewEvent {
        id: "not-a-real-event".into(),
        event_type: "ReplicaStarted".into(),
        schema_version: 99,
        payload: r#"{"written_by":"a newer build"}"#.into(),
        metadata: "{}".into(),
        recorded_at_ms: now_ms(),
    };
    let at = store
        .append("web", mentat_store::ExpectedVersion::Any, None, vec![bad])
        .await
        .expect("appended")
        .first_position;
    store.close().await;
    cluster.start_service("planner");
    let deadline = Instant::now() + Duration::from_secs(60);
    let web = loop {
        if let Ok(StatusReply::Ok { services, .. }) = cluster.status_query(Some("web")).await {
            if let Some(web) = services.into_iter().find(|s| s.broken.is_some()) {
                break web;
            }
        }
        assert!(
            Instant::now() < deadline,
            "web was not marked broken:\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(web.broken.as_ref().map(|b| b.position), Some(at), "{web:?}");
    assert!(cluster.is_running("planner"));
    let out = cluster.mt(&["status"]);
    assert!(
        text(&out).contains(&format!("BROKEN at log position {at}")),
        "{}",
        text(&out)
    );

    // Every other service goes on, once the restarted planner leads (the
    // killed one's lease runs out first; commands meanwhile wait in
    // JetStream).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(
        cluster.status_query(None).await,
        Ok(StatusReply::Ok { planners: Some(ref p), .. }) if p.epoch == Some(2)
    ) {
        assert!(Instant::now() < deadline, "the planner does not lead");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = cluster.mt(&["deploy", "api", "--image", "a1", "--timeout", "120"]);
    assert!(
        out.status.success(),
        "deploy api: {}\n{}",
        text(&out),
        cluster.logs()
    );
    // An operator re-applies web: the mark is cleared and web is decided again.
    let three = two.replacen("replicas: 1", "replicas: 2", 1);
    cluster.apply(&three);
    cluster
        .wait_status(
            "web",
            Duration::from_secs(60),
            "web re-applied and scaled",
            |s| {
                s.broken.is_none()
                    && s.instances.iter().filter(|r| r.phase == "healthy").count() == 2
            },
        )
        .await;
}
