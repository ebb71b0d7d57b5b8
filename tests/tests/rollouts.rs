//! End to end: fleet rollouts over ten services, and the notifier's
//! webhooks, with the real binaries, a real nats-server and a real
//! database, on SQLite and on PostgreSQL.

use std::time::{Duration, Instant};

use mentat_bus::{subject, Encoding};
use mentat_domain::command::{RejectKind, Reply};
use mentat_domain::event::EventEnvelope;
use mentat_domain::rollout::{
    RolloutControl, RolloutQuery, RolloutReply, RolloutStart, RolloutState, RolloutStatus,
    TargetState,
};
use mentat_e2e::receiver::Receiver;
use mentat_e2e::{text, Cluster, Db};

/// The ten services of the fleet.
fn names() -> Vec<String> {
    (1..=10).map(|i| format!("s{i:02}")).collect()
}

/// The fleet of ten, `s04` exiting at start on v2 and v3.
fn fleet_config(ready_delay_ms: u64) -> String {
    mentat_e2e::fleet_config(10, ready_delay_ms, "")
}

/// The last rollout, from `mentat.query.rollout`.
async fn rollout(cluster: &Cluster) -> Option<RolloutStatus> {
    let reply: Result<RolloutReply, _> = cluster
        .bus
        .request(
            subject::QUERY_ROLLOUT,
            &RolloutQuery::default(),
            Encoding::MsgPack,
            Duration::from_secs(5),
        )
        .await;
    match reply {
        Ok(RolloutReply::Ok { rollout, .. }) => rollout,
        _ => None,
    }
}

/// Poll the last rollout until `ready` holds of it.
async fn wait_rollout(
    cluster: &Cluster,
    what: &str,
    ready: impl Fn(&RolloutStatus) -> bool,
) -> RolloutStatus {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let last = rollout(cluster).await;
        if let Some(r) = last.as_ref().filter(|r| ready(r)) {
            return r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within 120 s; rollout: {last:#?}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn in_state(state: RolloutState) -> impl Fn(&RolloutStatus) -> bool {
    move |r| r.summary.state == state
}

/// Start a rollout of `image` to kind=edge with `mt rollout start`.
fn start(cluster: &Cluster, image: &str, waves: &str) -> std::process::Output {
    cluster.mt(&[
        "rollout",
        "start",
        "--image",
        image,
        "--select",
        "kind=edge",
        "--waves",
        waves,
        "--wave-bake-secs",
        "1",
        "--reason",
        "e2e",
    ])
}

/// A command's reply, sent as any NATS client would.
async fn command<C: serde::Serialize>(cluster: &Cluster, verb: &str, cmd: &C) -> Reply {
    cluster
        .bus
        .request(
            &subject::command(verb),
            cmd,
            Encoding::MsgPack,
            Duration::from_secs(10),
        )
        .await
        .expect("a reply")
}

/// The images each deployment of `service` rolled out, oldest first.
async fn deployed_images(cluster: &Cluster, service: &str) -> Vec<String> {
    cluster
        .history(service)
        .await
        .into_iter()
        .map(|r| r.image)
        .collect()
}

/// The state of `service` in the rollout.
fn target(r: &RolloutStatus, service: &str) -> TargetState {
    r.waves
        .iter()
        .flat_map(|w| &w.targets)
        .find(|t| t.service == service)
        .unwrap_or_else(|| panic!("{service} is no target: {r:#?}"))
        .state
}

/// A fleet of ten services on v1, deployed by a first rollout in one wave.
async fn fleet_on_v1(db: Db, ready_delay_ms: u64) -> Cluster {
    let cluster = Cluster::start(db).await;
    cluster.apply(&fleet_config(ready_delay_ms));
    let out = start(&cluster, "v1", "100");
    assert!(out.status.success(), "{}", text(&out));
    let done = wait_rollout(&cluster, "v1 everywhere", in_state(RolloutState::Completed)).await;
    assert_eq!(done.summary.took_image, 10, "{done:#?}");
    cluster
}

async fn a_failed_wave_pauses_and_rollback_all_reverts_what_took_the_image(db: Db) {
    // Given ten services on v1, s04 crashing on v2
    let cluster = fleet_on_v1(db, 0).await;
    // When v2 rolls out in waves of 10, 50 and 100 percent
    let out = start(&cluster, "v2", "10,50,100");
    assert!(out.status.success(), "{}", text(&out));
    // Then it pauses in the second wave, naming s04
    let paused = wait_rollout(&cluster, "paused by s04", in_state(RolloutState::Paused)).await;
    assert_eq!(paused.wave, 2, "{paused:#?}");
    assert_eq!(target(&paused, "s04"), TargetState::Failed);
    let why = paused.paused.clone().unwrap_or_default();
    assert!(why.contains("s04"), "{why}");
    // And the third wave is untouched
    for name in ["s06", "s07", "s08", "s09", "s10"] {
        assert_eq!(target(&paused, name), TargetState::Pending, "{name}");
        assert_eq!(deployed_images(&cluster, name).await, ["v1"], "{name}");
    }
    // And a second start is rejected, naming the legal operations
    let second = RolloutStart {
        image: "v9".into(),
        select: Some("kind=edge".into()),
        ..RolloutStart::default()
    };
    match command(&cluster, "rollout_start", &second).await {
        Reply::Rejected { kind, reason } => {
            assert_eq!(kind, RejectKind::IllegalState, "{reason}");
            assert!(reason.contains("resume, cancel, rollback-all"), "{reason}");
        }
        other => panic!("a second start must be rejected: {other:?}"),
    }
    // And so is an operation illegal while paused, by mt too
    let reply = command(&cluster, "rollout_pause", &RolloutControl::default()).await;
    assert_eq!(
        reply.rejection_kind(),
        Some(RejectKind::IllegalState),
        "{reply:?}"
    );
    let out = cluster.mt(&["rollout", "pause"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("illegal_state"), "{}", text(&out));
    // And a deploy of a target is rejected unless it overrides the rollout
    let out = cluster.mt(&["deploy", "s07", "--image", "v1", "--no-wait"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("rollout_in_flight"), "{}", text(&out));
    // When the operator resumes
    cluster.mt_ok(&["rollout", "resume", "--reason", "s04 is known bad"]);
    // Then the rollout goes on to the end; s04 stays on v1
    let done = wait_rollout(&cluster, "v2 completed", in_state(RolloutState::Completed)).await;
    assert_eq!(done.summary.took_image, 9, "{done:#?}");
    assert_eq!(done.summary.waves_completed, 3);
    for name in names() {
        let images = deployed_images(&cluster, &name).await;
        assert_eq!(images, ["v1", "v2"], "{name}: each deployed once");
    }
    assert_eq!(cluster.status("s04").await.image.as_deref(), Some("v1"));
    // When v3, also bad for s04, rolls out and pauses in the second wave
    let out = start(&cluster, "v3", "10,50,100");
    assert!(out.status.success(), "{}", text(&out));
    wait_rollout(&cluster, "v3 paused", in_state(RolloutState::Paused)).await;
    // And the operator rolls back all
    let out = cluster.mt_ok(&["rollout", "rollback-all", "--reason", "v3 is bad"]);
    assert!(out.contains("4 target(s)"), "{out}");
    // Then exactly the four that took v3 go back to v2, s04 and the third wave untouched
    let back = wait_rollout(
        &cluster,
        "v3 rolled back",
        in_state(RolloutState::RolledBack),
    )
    .await;
    assert_eq!(back.summary.reverted, Some(4), "{back:#?}");
    for name in ["s01", "s02", "s03", "s05"] {
        assert_eq!(target(&back, name), TargetState::Reverted, "{name}");
        assert_eq!(
            deployed_images(&cluster, name).await,
            ["v1", "v2", "v3", "v2"],
            "{name}"
        );
        assert_eq!(cluster.status(name).await.image.as_deref(), Some("v2"));
    }
    assert_eq!(deployed_images(&cluster, "s04").await, ["v1", "v2", "v3"]);
    assert_eq!(cluster.status("s04").await.image.as_deref(), Some("v1"));
    for name in ["s06", "s07", "s08", "s09", "s10"] {
        assert_eq!(
            deployed_images(&cluster, name).await,
            ["v1", "v2"],
            "{name}"
        );
    }
    // And mt shows it all
    let shown = cluster.mt_ok(&["rollout", "status"]);
    assert!(
        shown.contains("rolled_back") && shown.contains("reverted"),
        "{shown}"
    );
    let history = cluster.mt_ok(&["rollout", "history"]);
    assert_eq!(
        history.lines().count(),
        4,
        "a header and three rollouts: {history}"
    );
}

async fn planner_killed_mid_wave_deploys_every_target_once(db: Db) {
    // Given ten services on v1 whose replicas take a second to be ready
    let mut cluster = fleet_on_v1(db, 1000).await;
    // When v2 rolls out to all but s04, and the planner is killed in the second wave
    let out = cluster.mt(&[
        "rollout",
        "start",
        "--image",
        "v2",
        "--services",
        "s01,s02,s03,s05,s06,s07,s08,s09,s10",
        "--waves",
        "10,50,100",
        "--wave-bake-secs",
        "1",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let mid = wait_rollout(&cluster, "second wave deploying", |r| {
        r.wave == 2
            && r.waves[1]
                .targets
                .iter()
                .any(|t| t.state == TargetState::Deploying)
    })
    .await;
    assert_eq!(mid.summary.state, RolloutState::InProgress);
    cluster.kill("planner");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.start_service("planner");
    // Then it goes on to the end
    let done = wait_rollout(&cluster, "v2 completed", in_state(RolloutState::Completed)).await;
    assert_eq!(done.summary.took_image, 9, "{done:#?}");
    // And every target was deployed to v2 exactly once
    for name in names().into_iter().filter(|n| n != "s04") {
        assert_eq!(
            deployed_images(&cluster, &name).await,
            ["v1", "v2"],
            "{name}\n{}",
            cluster.logs()
        );
    }
    assert_eq!(deployed_images(&cluster, "s04").await, ["v1"]);
}

async fn webhooks_tell_every_transition_once_in_log_order(db: Db) {
    // Given a receiver that refuses its first request, and a notifier
    let receiver = Receiver::start(1).await;
    let mut cluster = Cluster::start(db).await;
    cluster.start_service("notifier");
    let secret = cluster.dir.path().join("hook.secret");
    std::fs::write(&secret, "s3cret\n").expect("secret file");
    let url = format!("http://127.0.0.1:{}/hook", receiver.port);
    let notify = format!(
        "notify:\n  - {{ name: ops, url: \"{url}\", format: envelope, secret_file: \"{}\" }}\n  - {{ name: chat, url: \"{url}\", format: slack, events: [RolloutStarted, RolloutCompleted] }}\n",
        secret.display()
    );
    // When three services are rolled out in two waves, the notifier
    // stopped and started again in the middle
    cluster.apply(&mentat_e2e::fleet_config(3, 0, &notify));
    let out = start(&cluster, "v1", "50,100");
    assert!(out.status.success(), "{}", text(&out));
    let deadline = Instant::now() + Duration::from_secs(60);
    while receiver.received().len() < 3 {
        assert!(
            Instant::now() < deadline,
            "no webhook came\n{}",
            cluster.log_of("notifier")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.signal("notifier", "TERM");
    while cluster.is_running("notifier") {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.start_service("notifier");
    let done = wait_rollout(&cluster, "v1 completed", in_state(RolloutState::Completed)).await;
    // Then the outcomes are recorded: 6 rollout events to ops, 2 to chat
    let deadline = Instant::now() + Duration::from_secs(60);
    let told = loop {
        let last = rollout(&cluster).await.expect("a rollout");
        if last.webhooks_delivered + last.webhooks_failed >= 8 {
            break last;
        }
        assert!(
            Instant::now() < deadline,
            "outcomes not recorded: {last:#?}\nreceived: {:#?}\n--- notifier ---\n{}",
            receiver
                .received()
                .iter()
                .map(|r| (r.status, r.headers.get("x-mentat-event").cloned()))
                .collect::<Vec<_>>(),
            cluster.log_of("notifier")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!((told.webhooks_delivered, told.webhooks_failed), (8, 0));
    let ok: Vec<_> = receiver
        .received()
        .into_iter()
        .filter(|r| r.status == 200)
        .collect();
    // And ops got every notifiable event once, in log order, signed
    let ops: Vec<_> = ok
        .iter()
        .filter(|r| r.headers.contains_key("x-mentat-signature"))
        .collect();
    let envelopes: Vec<EventEnvelope> = ops
        .iter()
        .map(|r| serde_json::from_slice(&r.body).expect("an envelope"))
        .collect();
    for (r, e) in ops.iter().zip(&envelopes) {
        let expected = mentat_notifier::hmac::signature(b"s3cret", &r.body);
        assert_eq!(r.headers["x-mentat-signature"], expected);
        assert_eq!(r.headers["idempotency-key"], e.id);
        assert_eq!(r.headers["x-mentat-event"], e.event.type_name());
        assert_eq!(r.path, "/hook");
    }
    let positions: Vec<i64> = envelopes.iter().map(|e| e.position).collect();
    let mut sorted = positions.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(positions, sorted, "in log order, none twice");
    let mut types: Vec<&str> = envelopes.iter().map(|e| e.event.type_name()).collect();
    types.sort_unstable();
    let mut expected = vec![
        "RolloutStarted",
        "RolloutWaveStarted",
        "RolloutWaveStarted",
        "RolloutWaveCompleted",
        "RolloutWaveCompleted",
        "RolloutCompleted",
        "DeploymentStarted",
        "DeploymentStarted",
        "DeploymentStarted",
        "DeploymentCompleted",
        "DeploymentCompleted",
        "DeploymentCompleted",
    ];
    expected.sort_unstable();
    assert_eq!(
        types, expected,
        "every transition of the rollout and its deployments"
    );
    // And chat got the two it asked for, as Slack text, unsigned
    let chat: Vec<String> = ok
        .iter()
        .filter(|r| !r.headers.contains_key("x-mentat-signature"))
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
            v["text"].as_str().expect("text").to_owned()
        })
        .collect();
    assert_eq!(chat.len(), 2, "{chat:?}");
    assert!(
        chat[0].contains("started") && chat[1].contains("completed"),
        "{chat:?}"
    );
    // And the refused first request was tried again
    assert_eq!(receiver.received()[0].status, 503);
    let worst = ops
        .iter()
        .zip(&envelopes)
        .map(|(r, e)| r.at_ms - e.recorded_at_ms)
        .max()
        .unwrap_or(0);
    println!(
        "webhooks: {} delivered, longest from record to receipt {worst} ms (one retried after 1 s, a notifier restart)",
        ok.len()
    );
    assert_eq!(done.summary.took_image, 3);
}

mentat_e2e::on_both_databases!(
    a_failed_wave_pauses_and_rollback_all_reverts_what_took_the_image,
    planner_killed_mid_wave_deploys_every_target_once,
    webhooks_tell_every_transition_once_in_log_order,
);
