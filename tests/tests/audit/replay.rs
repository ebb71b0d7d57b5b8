//! End to end: the audits that replay the log, on a whole Mentat (real
//! binaries, SQLite and PostgreSQL).
//!
//! - `mt audit state --position N --json` (and `--at T`) prints, byte for
//!   byte, what `mt status --json` printed live when the log's head was N,
//!   at seven moments of a run: before and during deployments, after a
//!   completed one and after a reverted one.
//! - `mt audit report` on that run's log gives the figures its history
//!   says it must.
//! - A service's `audit` policy rejects, by kind, a command with no actor
//!   and a rollback with no reason, and records nothing.
//! - `mt audit why` on a canary reverted by a breach names the breach with
//!   its numbers, and the actor and reason of the deploy.
//! - `mt audit replay` with a drain timeout other than the planner's
//!   reports, by position, the first decision that changes: the one that
//!   took an old replica out of rotation now stops it at once. (Every
//!   test's log replays with none when its cluster stops.)

use std::time::{Duration, Instant};

use mentat_bus::{subject, Encoding};
use mentat_domain::command::{Deploy, Outcome, RejectKind, Reply};
use mentat_domain::event::{Event, EventEnvelope, Metric};
use mentat_domain::replay::{AuditReplayQuery, AuditReplayReply, Decided, DecidedBy, ReplayReport};
use mentat_domain::report::Report;
use mentat_domain::story::{Role, Story};
use mentat_e2e::{text, web_config, web_config_health, Cluster, Db};
use mentat_store::Store;

/// One moment of the run: the log's head, and what `mt status --json`
/// printed while the head was there.
struct Moment {
    what: &'static str,
    head: i64,
    status: String,
}

/// `mt status --json` with the head read before and after it: retried
/// until both agree, so the status is that of exactly this head.
async fn capture(cluster: &Cluster, store: &Store, what: &'static str) -> Moment {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let before = store.head().await.unwrap();
        let status = cluster.mt_ok(&["status", "--json"]);
        let after = store.head().await.unwrap();
        if before == after {
            return Moment {
                what,
                head: before,
                status,
            };
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the log never held still"
        );
    }
}

/// `mt deploy web --image IMAGE` without waiting; the deployment's id.
async fn deploy_no_wait(cluster: &Cluster, image: &str) -> String {
    let out = cluster.mt(&["deploy", "web", "--image", image, "--no-wait"]);
    assert!(out.status.success(), "{}", text(&out));
    cluster
        .status("web")
        .await
        .deployment
        .expect("a deployment in flight")
        .deployment_id
}

async fn past_states_equal_live_status_and_the_report_counts_them(db: Db) {
    let cluster = Cluster::start_without_router(db).await;
    let store = Store::open_existing(&cluster.database_url).await.unwrap();
    let mut moments = vec![capture(&cluster, &store, "before anything").await];
    cluster.apply(&web_config(2, 10));
    moments.push(capture(&cluster, &store, "applied").await);

    let v1 = deploy_no_wait(&cluster, "v1").await;
    moments.push(capture(&cluster, &store, "v1 in flight").await);
    let within = Duration::from_secs(60);
    cluster.wait_deployment("web", &v1, within).await;
    moments.push(capture(&cluster, &store, "v1 completed").await);

    // v2 exits at start: the batch fails and it is reverted.
    let v2 = deploy_no_wait(&cluster, "v2-crash").await;
    moments.push(capture(&cluster, &store, "v2 in flight").await);
    let reverted = cluster.wait_deployment("web", &v2, within).await;
    assert_eq!(reverted.outcome, Outcome::Reverted, "{reverted:#?}");
    moments.push(capture(&cluster, &store, "v2 reverted").await);

    let v3 = deploy_no_wait(&cluster, "v3").await;
    cluster.wait_deployment("web", &v3, within).await;
    moments.push(capture(&cluster, &store, "v3 completed").await);

    // Every moment, rebuilt from the log by position, is byte for byte
    // what mt status printed then.
    let logged = store.read_all(0, 100_000).await.unwrap();
    let mut checked_at_time = 0;
    for m in &moments {
        let position = m.head.to_string();
        let state = cluster.mt_ok(&["audit", "state", "--position", &position, "--json"]);
        assert_eq!(state, m.status, "{} (position {})", m.what, m.head);
        // By time too, where the next event was recorded later than the
        // head (events recorded in the same millisecond are one point in time).
        let at = |p: i64| {
            logged
                .iter()
                .find(|e| e.position == p)
                .map(|e| e.recorded_at_ms)
        };
        let Some(head_at) = at(m.head) else { continue };
        if at(m.head + 1).is_some_and(|next| next == head_at) {
            continue;
        }
        let state = cluster.mt_ok(&["audit", "state", "--at", &head_at.to_string(), "--json"]);
        assert_eq!(state, m.status, "{} (at {head_at})", m.what);
        checked_at_time += 1;
    }
    assert!(
        checked_at_time >= 3,
        "only {checked_at_time} moments by time"
    );
    // One service asked for: the same as mt status web.
    let live_web = cluster.mt_ok(&["status", "web", "--json"]);
    let head = store.head().await.unwrap().to_string();
    let state_web = cluster.mt_ok(&["audit", "state", "web", "--position", &head, "--json"]);
    assert_eq!(state_web, live_web);
    let early = cluster.mt(&["audit", "state", "web", "--position", "1"]);
    assert_eq!(
        early.status.code(),
        Some(1),
        "web was not defined yet: {}",
        text(&early)
    );
    assert!(text(&early).contains("unknown_service"), "{}", text(&early));

    // The report of this run: three deployments, one reverted.
    let history = cluster.history("web").await;
    let (d1, d2, d3) = (&history[0], &history[1], &history[2]);
    let json = cluster.mt_ok(&["audit", "report", "--since", "1h", "--format", "json"]);
    let report: Report = serde_json::from_str(&json).unwrap();
    let [web] = report.services.as_slice() else {
        panic!("{report:#?}");
    };
    assert_eq!(web.service, "web");
    assert_eq!(
        (
            web.deployments,
            web.completed,
            web.reverted,
            web.failed,
            web.in_progress
        ),
        (3, 2, 1, 0, 0)
    );
    assert_eq!(web.per_day, 3.0 * 24.0);
    let rate = web.change_failure_rate_percent.unwrap();
    assert!((rate - 100.0 / 3.0).abs() < 1e-9, "{rate}");
    let end = |d: &mentat_domain::command::DeploymentRecord| d.ended_at_ms.unwrap();
    assert_eq!(web.restores, 1);
    assert_eq!(web.time_to_restore_ms, Some(end(d3) - end(d2)));
    let mut durations: Vec<i64> = [d1, d2, d3]
        .iter()
        .map(|d| end(d) - d.started_at_ms)
        .collect();
    durations.sort_unstable();
    assert_eq!(web.median_duration_ms, Some(durations[1]));
    // Who did what: the apply and the three deploys, by e2e (MENTAT_ACTOR).
    let deploys: Vec<(&str, Option<Outcome>)> = report
        .actions
        .iter()
        .filter(|a| a.what == "DeploymentStarted")
        .map(|a| (a.actor.as_str(), a.result))
        .collect();
    assert_eq!(
        deploys,
        [
            ("e2e", Some(Outcome::Completed)),
            ("e2e", Some(Outcome::Reverted)),
            ("e2e", Some(Outcome::Completed)),
        ]
    );
    let md = cluster.mt_ok(&["audit", "report", "--since", "1h"]);
    assert!(md.contains("| web | 3 | 72.00 | 2/1/0/0 | 33.3% |"), "{md}");
    let csv = cluster.mt_ok(&["audit", "report", "--since", "1h", "--format", "csv"]);
    assert!(csv.contains("\nweb,3,72.0000,2,1,0,0,33.33,"), "{csv}");
    let nobody = cluster.mt_ok(&[
        "audit", "report", "--since", "1h", "--actor", "nobody", "--format", "json",
    ]);
    let nobody: Report = serde_json::from_str(&nobody).unwrap();
    assert!(
        nobody.actions.is_empty() && nobody.services.is_empty(),
        "{nobody:#?}"
    );
    store.close().await;
}

async fn a_policy_rejects_by_kind_and_records_nothing(db: Db) {
    let cluster = Cluster::start_without_router(db).await;
    let config = web_config(1, 10).replace(
        "    deploy:",
        "    audit: { require_actor: true, require_reason_for: [rollback, stop] }\n    deploy:",
    );
    cluster.apply(&config);
    cluster.deploy_first("v1");
    let store = Store::open_existing(&cluster.database_url).await.unwrap();
    let head = store.head().await.unwrap();

    // A deploy with no actor, straight on the bus.
    let deploy = Deploy {
        command_id: None,
        signature: None,
        service: "web".into(),
        image: "v2".into(),
        strategy: None,
        override_rollout: false,
        actor: None,
        reason: None,
    };
    let reply: Reply = cluster
        .bus
        .request(
            subject::command("deploy").as_str(),
            &deploy,
            Encoding::Json,
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let Reply::Rejected { kind, reason } = reply else {
        panic!("accepted: {reply:?}");
    };
    assert_eq!(kind, RejectKind::Invalid, "{reason}");
    assert!(reason.starts_with("actor: "), "{reason}");

    // mt stop and mt rollback with no --reason (mt always sends an actor).
    for args in [&["stop", "web:web-1"][..], &["rollback", "web"][..]] {
        let out = cluster.mt(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(
            text(&out).contains("rejected (invalid): reason: "),
            "{args:?}: {}",
            text(&out)
        );
    }
    // Nothing recorded for them: whatever came since are facts and the
    // planner's own decisions (replicas settling), none asked by anyone.
    for e in store.read_all(head, 10_000).await.unwrap() {
        let meta: mentat_domain::Meta = serde_json::from_str(&e.metadata).unwrap();
        let asked = ["DeploymentStarted", "ReplicaRetireRequested"];
        assert!(
            meta.actor.is_none() && !asked.contains(&e.event_type.as_str()),
            "recorded after a rejection: {e:?}"
        );
    }

    // An unknown verb in the policy is refused at apply, naming the field.
    let file = cluster.path().join("bad.yaml");
    std::fs::write(&file, config.replace("rollback, stop", "rollback, reboot")).unwrap();
    let out = cluster.mt(&["apply", "-f", file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("services.web.audit.require_reason_for[1]"),
        "{}",
        text(&out)
    );
    store.close().await;
}

/// Router statistics every 100 ms, 1 s windows: a failing canary is
/// judged within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn why_tells_a_reverted_canary_with_its_breach_and_who_started_it() {
    let thresholds = "window_secs: 1, min_requests: 10, error_rate_percent: 5, latency_p99_ms: 200, max_degradation_percent: 100";
    let cluster =
        Cluster::start_with_router_args(Db::Sqlite, &["--stats-interval-ms", "100"]).await;
    cluster.apply(&web_config_health(
        2,
        r#"ERROR_RATE: "1""#,
        &format!("thresholds: {{{thresholds}}}, bake_secs: 1"),
        "strategy: canary, canary_percent: 10",
    ));
    cluster.deploy_first("v1");
    let load = mentat_e2e::Load::start_rate(cluster.router_addr(), "web.localhost", 200, 6);
    let out = cluster.mt(&[
        "deploy",
        "web",
        "--image",
        "v2-error",
        "--no-wait",
        "--actor",
        "ana",
        "--reason",
        "ship the new cache",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let id = cluster
        .status("web")
        .await
        .deployment
        .unwrap()
        .deployment_id;
    let record = cluster
        .wait_deployment("web", &id, Duration::from_secs(60))
        .await;
    load.stop().await;
    assert_eq!(record.outcome, Outcome::Reverted, "{record:#?}");

    let json = cluster.mt_ok(&["audit", "why", &id, "--json"]);
    let story: Story = serde_json::from_str(&json).unwrap();
    assert_eq!(story.deployment_id, id);
    assert_eq!(story.actor.as_deref(), Some("ana"));
    assert_eq!(story.reason.as_deref(), Some("ship the new cache"));
    assert_eq!(story.outcome, Outcome::Reverted);
    assert!(story
        .failure
        .as_deref()
        .unwrap()
        .contains("threshold breached"));
    let (position, judgement) = story
        .steps
        .iter()
        .find_map(|s| match &s.event {
            Event::ThresholdBreached {
                version, judgement, ..
            } if version == "v2-error" => {
                assert_eq!(s.role, Role::Fact);
                Some((s.position, judgement.clone()))
            }
            _ => None,
        })
        .expect("the breach in the story");
    assert_eq!(judgement.metric, Metric::ErrorRate);
    assert!(judgement.observed > judgement.threshold, "{judgement:?}");
    assert_eq!((judgement.threshold, judgement.window_secs), (500, 1));
    assert!(judgement.requests >= 10, "{judgement:?}");
    let revert = story
        .steps
        .iter()
        .position(|s| matches!(s.event, Event::DeploymentReverting { .. }))
        .expect("the decision to revert");
    assert!(
        story.steps[revert].position > position,
        "the breach drove the revert"
    );

    // As text, by the breach's position: the same story, with its numbers.
    let plain = cluster.mt_ok(&["audit", "why", &position.to_string()]);
    assert!(
        plain.contains(&format!("deployment {id} of web: v1 -> v2-error")),
        "{plain}"
    );
    assert!(
        plain.contains("by ana, reason: ship the new cache"),
        "{plain}"
    );
    let numbers = [
        format!(
            "version=v2-error metric=error_rate observed={} threshold=5.00%",
            Metric::ErrorRate.format(judgement.observed)
        ),
        format!("window=1s requests={}", judgement.requests),
    ];
    for n in numbers {
        assert!(plain.contains(&n), "{n} not in {plain}");
    }
    assert!(plain.contains(": reverted: threshold breached"), "{plain}");
    let missing = cluster.mt(&["audit", "why", "no-such-deployment"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing).contains("no deployment `no-such-deployment`"));
}

async fn a_changed_drain_timeout_is_the_first_divergence(db: Db) {
    let cluster = Cluster::start(db).await;
    cluster.apply(&web_config(2, 10));
    cluster.deploy_first("v1");
    let v2 = deploy_no_wait(&cluster, "v2").await;
    cluster
        .wait_deployment("web", &v2, Duration::from_secs(60))
        .await;
    let url = cluster.database_url.clone();
    let replay =
        |extra: &[&str]| cluster.mt(&[&["audit", "replay", "--db", &url][..], extra].concat());
    // As the planner decided (a drain timeout of 5 s): none.
    let same = replay(&[]);
    assert!(same.status.success(), "{}", text(&same));
    assert!(text(&same).contains("0 divergences"), "{}", text(&same));

    // With 0 s: the first decision that took a replica out of rotation.
    let changed = replay(&["--drain-timeout-secs", "0", "--json"]);
    assert_eq!(changed.status.code(), Some(1), "{}", text(&changed));
    let report: ReplayReport = serde_json::from_slice(&changed.stdout).unwrap();
    let d = report.divergence.expect("a divergence");
    let store = Store::open_existing(&url).await.unwrap();
    let logged: Vec<EventEnvelope> = store
        .read_all(0, 100_000)
        .await
        .unwrap()
        .iter()
        .map(|r| EventEnvelope {
            id: r.id.clone(),
            position: r.position,
            stream: r.stream.clone(),
            version: r.version,
            schema_version: r.schema_version,
            recorded_at_ms: r.recorded_at_ms,
            meta: serde_json::from_str(&r.metadata).unwrap(),
            event: serde_json::from_str(&r.payload).unwrap(),
        })
        .collect();
    // How each decision was taken is in the log: its cause before it (a
    // fact, for some), the command of the deploy with its id.
    let decided: Vec<(&EventEnvelope, &Decided)> = logged
        .iter()
        .filter_map(|e| e.meta.decided.as_ref().map(|d| (e, d)))
        .collect();
    assert!(decided
        .iter()
        .all(|(e, d)| d.cause.is_none_or(|c| c < e.position)));
    let caused_by_fact = decided
        .iter()
        .filter_map(|(_, d)| d.cause)
        .any(|c| logged.iter().any(|e| e.position == c && e.event.is_fact()));
    assert!(caused_by_fact, "no decision names a fact as its cause");
    let deployed = decided.iter().find_map(|(e, d)| match (&d.by, &e.event) {
        (DecidedBy::Command { command, id }, Event::DeploymentStarted { deployment_id, .. })
            if command.verb() == "deploy" && d.cause.is_none() =>
        {
            Some((id.clone(), deployment_id.clone()))
        }
        _ => None,
    });
    let (id, started) = deployed.expect("the deploy's decision");
    assert_eq!(id, started);

    // The first route change that leaves out a replica routed before it.
    let mut routed: Vec<String> = Vec::new();
    let (out, dropped) = logged
        .iter()
        .find_map(|e| match &e.event {
            Event::RouteChanged { backends, .. } => {
                let now: Vec<String> = backends
                    .iter()
                    .filter(|b| b.weight > 0)
                    .map(|b| b.replica.clone())
                    .collect();
                let gone = routed.iter().find(|r| !now.contains(r)).cloned();
                routed = now;
                gone.map(|replica| (e.position, replica))
            }
            _ => None,
        })
        .expect("a replica taken out of rotation");
    let decision = logged
        .iter()
        .rev()
        .find(|e| e.position <= out && e.meta.decided.is_some())
        .unwrap();
    let decided = decision.meta.decided.clone().unwrap();
    assert_eq!(d.decision, decision.position, "{d:#?}");
    assert_eq!(d.position, decision.position + i64::from(decided.events));
    assert_eq!(d.decided, Some(decided));
    assert_eq!(d.logged, None, "{d:#?}");
    match d.now.clone().map(|p| p.event) {
        Some(Event::ReplicaStopRequested { replica, .. }) => assert_eq!(replica, dropped),
        other => panic!("{other:?}"),
    }
    // The log stopped it later, once the router had drained it.
    let stopped = logged.iter().find(
        |e| matches!(&e.event, Event::ReplicaStopRequested { replica, .. } if *replica == dropped),
    );
    assert!(stopped.unwrap().position > d.position);
    // The planner, replaying its own log, finds the same.
    let by_planner = cluster.mt(&["audit", "replay", "--drain-timeout-secs", "0", "--json"]);
    assert_eq!(by_planner.status.code(), Some(1), "{}", text(&by_planner));
    let report: ReplayReport = serde_json::from_slice(&by_planner.stdout).unwrap();
    assert_eq!(report.divergence, Some(d.clone()));
    let same = cluster.mt_ok(&["audit", "replay"]);
    assert!(same.starts_with("0 divergences"), "{same}");
    // A query out of bounds is rejected by kind, naming the field.
    let query = AuditReplayQuery {
        drain_timeout_ms: Some(-1),
        ..AuditReplayQuery::default()
    };
    let reply: AuditReplayReply = cluster
        .bus
        .request(
            subject::QUERY_AUDIT_REPLAY,
            &query,
            Encoding::Json,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    match reply {
        AuditReplayReply::Rejected { kind, reason } => {
            assert_eq!(kind, RejectKind::Invalid);
            assert!(reason.starts_with("drain_timeout_ms:"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // Said plainly, with the position.
    let plain = replay(&["--drain-timeout-secs", "0"]);
    assert_eq!(plain.status.code(), Some(1));
    let said = text(&plain);
    assert!(
        said.contains(&format!("1 divergence: position {}", d.position)),
        "{said}"
    );
    assert!(said.contains("ReplicaStopRequested"), "{said}");
    store.close().await;
}

macro_rules! on_both_databases {
    ($($case:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(mentat_e2e::Db::Sqlite).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(mentat_e2e::Db::Postgres).await;
                }
            )+
        }
    };
}

on_both_databases!(
    past_states_equal_live_status_and_the_report_counts_them,
    a_policy_rejects_by_kind_and_records_nothing,
    a_changed_drain_timeout_is_the_first_divergence,
);
