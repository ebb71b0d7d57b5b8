//! End to end: fleet rollouts over ten services with the real binaries, a
//! real nats-server and a real database, on SQLite and on PostgreSQL.

use std::time::{Duration, Instant};

use mentat_bus::{subject, Encoding};
use mentat_domain::command::{RejectKind, Reply};
use mentat_domain::rollout::{
    RolloutControl, RolloutQuery, RolloutReply, RolloutStart, RolloutState, RolloutStatus,
    TargetState,
};
use mentat_e2e::{text, Cluster, Db};

/// The ten services of the fleet.
fn names() -> Vec<String> {
    (1..=10).map(|i| format!("s{i:02}")).collect()
}

/// Ten services `s01`..`s10` labelled `kind=edge`, one replica each, whose
/// replicas are ready `ready_delay_ms` after they start; `s04` exits at
/// start on images v2 and v3 (a bad image for that one target alone).
fn fleet_config(ready_delay_ms: u64) -> String {
    let mut yaml = String::from("services:\n");
    for name in names() {
        let command = if name == "s04" {
            r#"["sh", "-c", "case {image} in v2|v3) exit 1;; esac; exec mentat-demo-app"]"#
        } else {
            r#"["mentat-demo-app"]"#
        };
        yaml.push_str(&format!(
            r#"  {name}:
    replicas: 1
    labels: {{ kind: edge }}
    run:
      command: {command}
      env: {{ APP_VERSION: "{{image}}", READY_DELAY_MS: "{ready_delay_ms}" }}
    health: {{ path: /health, interval_ms: 100, healthy_after: 2, unhealthy_after: 3, bake_secs: 0, thresholds: {{ enabled: false }} }}
    deploy: {{ strategy: rolling, max_unavailable: 1, health_timeout_secs: 10, auto_revert: true }}
"#
        ));
    }
    yaml
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

mentat_e2e::on_both_databases!(
    a_failed_wave_pauses_and_rollback_all_reverts_what_took_the_image,
    planner_killed_mid_wave_deploys_every_target_once,
);
