//! End to end: environments and releases with the real binaries, a real
//! nats-server and a real database, on SQLite and on PostgreSQL, with
//! load through the router.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mentat_bus::{codec, subject, Encoding};
use mentat_domain::command::{RejectKind, Reply};
use mentat_domain::event::{Event, RouterHeartbeat};
use mentat_domain::release::{
    EnvironmentView, ReleasePromote, ReleaseQuery, ReleaseReply, ReleaseView,
};
use mentat_e2e::load::{self, Load};
use mentat_e2e::{text, Cluster, Db};

/// Services `names` in staging (1 replica) and production (2, protected,
/// promoted from staging), blue-green standby of `standby_secs`.
fn app_config(names: &[&str], standby_secs: u64) -> String {
    let mut yaml = String::from(
        "environments:\n  staging: {}\n  production: { protected: true, promote_from: staging }\nservices:\n",
    );
    for name in names {
        yaml.push_str(&format!(
            r#"  {name}:
    replicas: 2
    run:
      command: ["mentat-demo-app"]
      env: {{ APP_VERSION: "{{image}}" }}
    health: {{ path: /health, interval_ms: 100, healthy_after: 2, unhealthy_after: 3, bake_secs: 0, thresholds: {{ enabled: false }} }}
    deploy: {{ strategy: rolling, health_timeout_secs: 10, auto_revert: true, standby_secs: {standby_secs} }}
    environments:
      staging: {{ replicas: 1 }}
      production: {{}}
"#
        ));
    }
    yaml
}

/// The releases and environments, from `mentat.query.release`.
async fn releases(cluster: &Cluster) -> (Vec<ReleaseView>, Vec<EnvironmentView>) {
    let reply: ReleaseReply = cluster
        .bus
        .request(
            subject::QUERY_RELEASE,
            &ReleaseQuery::default(),
            Encoding::MsgPack,
            Duration::from_secs(5),
        )
        .await
        .expect("a release reply");
    match reply {
        ReleaseReply::Ok {
            releases,
            environments,
        } => (releases, environments),
        ReleaseReply::Rejected { kind, reason } => panic!("{kind}: {reason}"),
    }
}

/// Poll until `ready` holds of environment `env`.
async fn wait_env(
    cluster: &Cluster,
    env: &str,
    what: &str,
    ready: impl Fn(&EnvironmentView) -> bool,
) -> EnvironmentView {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, envs) = releases(cluster).await;
        let view = envs.into_iter().find(|e| e.name == env);
        if let Some(v) = view.as_ref().filter(|v| ready(v)) {
            return v.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within 120 s; {env}: {view:#?}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `env` serves `tag` and no release deployment is in flight there.
fn settled_on(tag: &'static str) -> impl Fn(&EnvironmentView) -> bool {
    move |e| {
        e.live.as_deref() == Some(tag)
            && e.history
                .iter()
                .all(|h| !matches!(h.outcome.as_str(), "in_progress" | "switched"))
    }
}

/// `mt ARGS` must fail naming `kind`.
fn refused(cluster: &Cluster, args: &[&str], kind: &str) {
    let out = cluster.mt(args);
    assert!(
        !out.status.success(),
        "mt {args:?} accepted: {}",
        text(&out)
    );
    assert!(text(&out).contains(kind), "mt {args:?}: {}", text(&out));
}

async fn staging_and_production_serve_their_own_release(db: Db) {
    // Given web in staging and production, r1 promoted to production and
    // r2 deployed to staging
    let cluster = Cluster::start(db).await;
    cluster.apply(&app_config(&["web"], 1));
    cluster.mt_ok(&[
        "release",
        "create",
        "r1",
        "--image",
        "web=v1",
        "--deploy-to",
        "staging",
    ]);
    wait_env(&cluster, "staging", "r1 in staging", settled_on("r1")).await;
    refused(
        &cluster,
        &[
            "release",
            "promote",
            "r1",
            "--from",
            "staging",
            "--to",
            "production",
        ],
        "reason",
    );
    cluster.mt_ok(&[
        "release",
        "promote",
        "r1",
        "--from",
        "staging",
        "--to",
        "production",
        "--reason",
        "e2e",
    ]);
    wait_env(&cluster, "production", "r1 in production", settled_on("r1")).await;
    cluster.mt_ok(&[
        "release",
        "create",
        "r2",
        "--image",
        "web=v2",
        "--deploy-to",
        "staging",
    ]);
    wait_env(&cluster, "staging", "r2 in staging", settled_on("r2")).await;
    // When 10,000 requests ask for staging and 10,000 ask for nothing
    let addr = cluster.router_addr();
    let staging = load::burst(
        &addr,
        &load::in_environment("web.localhost", "staging"),
        10_000,
        8,
    )
    .await;
    let production = load::burst(&addr, "web.localhost", 10_000, 8).await;
    // Then each got its own environment's release, every time
    assert_eq!(staging.ok(), 10_000, "{staging:?}");
    assert_eq!(
        staging.per_version,
        BTreeMap::from([("v2".to_owned(), 10_000)])
    );
    assert_eq!(production.ok(), 10_000, "{production:?}");
    assert_eq!(
        production.per_version,
        BTreeMap::from([("v1".to_owned(), 10_000)])
    );
    // And a release of the file is immutable: editing the file changes
    // nothing of it, and its tag cannot be taken again
    let file = cluster.dir.path().join("app.yaml");
    std::fs::write(&file, app_config(&["web"], 1)).expect("file");
    let file = file.to_str().expect("utf-8 path");
    cluster.mt_ok(&["release", "create", "r3", "-f", file, "--image", "web=v3"]);
    let shown = cluster.mt_ok(&["release", "show", "r3", "--json"]);
    std::fs::write(
        file,
        app_config(&["web"], 1).replace("replicas: 2", "replicas: 3"),
    )
    .expect("edit");
    assert_eq!(cluster.mt_ok(&["release", "show", "r3", "--json"]), shown);
    refused(
        &cluster,
        &["release", "create", "r3", "-f", file],
        "tag_taken",
    );
    let diff = cluster.mt_ok(&["release", "diff", "r2", "r3"]);
    assert!(diff.contains("images.web") && diff.contains("v3"), "{diff}");
    // And a protected production refuses a release that never served in
    // staging, unless forced with a reason (recorded)
    refused(
        &cluster,
        &[
            "release",
            "deploy",
            "r3",
            "--env",
            "production",
            "--reason",
            "e2e",
        ],
        "not_promoted",
    );
    cluster.mt_ok(&[
        "release",
        "deploy",
        "r3",
        "--env",
        "production",
        "--force",
        "--reason",
        "hotfix",
    ]);
    let forced = wait_env(&cluster, "production", "r3 forced", settled_on("r3")).await;
    let last = forced.history.last().expect("a deployment");
    assert!(
        last.forced && last.why.as_deref() == Some("hotfix"),
        "{last:?}"
    );
    // And bad input is refused by kind, naming it
    refused(
        &cluster,
        &["release", "deploy", "r2", "--env", "qa"],
        "unknown_environment",
    );
    refused(
        &cluster,
        &["release", "deploy", "r9", "--env", "staging"],
        "unknown_release",
    );
    refused(
        &cluster,
        &["release", "create", "r9", "--image", "cache=v1"],
        "unknown_service",
    );
    refused(
        &cluster,
        &["deploy", "web@qa", "--image", "v2", "--no-wait"],
        "unknown_service",
    );
    let (all, _) = releases(&cluster).await;
    let tags: Vec<&str> = all.iter().map(|r| r.tag.as_str()).collect();
    assert_eq!(tags, ["r1", "r2", "r3"], "nothing else recorded");
    let list = cluster.mt_ok(&["release", "list"]);
    assert!(
        list.contains("superseded") && list.contains("deployed (production)"),
        "{list}"
    );
    // And mt status and mt history show what each environment serves
    let status = cluster.mt_ok(&["status"]);
    let live = |env: &str, tag: &str| {
        status
            .lines()
            .any(|l| l.split_whitespace().take(2).eq([env, tag]))
    };
    assert!(
        live("production", "r3") && live("staging", "r2"),
        "{status}"
    );
    let history = cluster.mt_ok(&["history", "--env", "production"]);
    let rows: Vec<&str> = history.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{history}");
    assert!(
        rows[0].starts_with("r1") && rows[0].contains("promote"),
        "{history}"
    );
    assert!(
        rows[1].starts_with("r3") && rows[1].contains("hotfix"),
        "{history}"
    );
}

/// The next router heartbeat that lists switch `id`.
async fn switch_seen(
    cluster: &Cluster,
    heartbeats: &mut async_nats::Subscriber,
    id: &str,
) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), heartbeats.next())
            .await
            .expect("a router heartbeat")
            .expect("the subscription");
        let beat: RouterHeartbeat = codec::decode(
            &msg.payload,
            Encoding::of(msg.headers.as_ref()),
            "RouterHeartbeat",
        )
        .expect("a heartbeat");
        if let Some(s) = beat.switches.iter().find(|s| s.id == id) {
            return s.services.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no router applied {id}\n{}",
            cluster.logs()
        );
    }
}

/// `ReplicaStartRequested` events recorded so far for `services`.
async fn starts(cluster: &Cluster, services: &[&str]) -> usize {
    let mut n = 0;
    for s in services {
        n += cluster
            .events(s)
            .await
            .iter()
            .filter(|e| matches!(e, Event::ReplicaStartRequested { .. }))
            .count();
    }
    n
}

async fn a_promote_of_three_services_switches_once_and_a_rollback_is_warm(db: Db) {
    // Given three services, r1 in both environments and r2 in staging
    let names = ["api", "auth", "web"];
    let mut cluster = Cluster::start(db).await;
    cluster.apply(&app_config(&names, 120));
    cluster.mt_ok(&[
        "release",
        "create",
        "r1",
        "--image",
        "web=v1",
        "--image",
        "api=v1",
        "--image",
        "auth=v1",
        "--deploy-to",
        "staging",
    ]);
    wait_env(&cluster, "staging", "r1 in staging", settled_on("r1")).await;
    cluster.mt_ok(&[
        "release",
        "promote",
        "r1",
        "--from",
        "staging",
        "--to",
        "production",
        "--reason",
        "e2e",
    ]);
    wait_env(&cluster, "production", "r1 in production", settled_on("r1")).await;
    cluster.mt_ok(&[
        "release",
        "create",
        "r2",
        "--image",
        "web=v2",
        "--image",
        "api=v2",
        "--image",
        "auth=v2",
        "--deploy-to",
        "staging",
    ]);
    wait_env(&cluster, "staging", "r2 in staging", |e| {
        e.live.as_deref() == Some("r2")
    })
    .await;
    // When r2 is promoted under 500 requests/s to production, the planner
    // killed right after it accepted the promote and started again
    let mut heartbeats = cluster
        .bus
        .client
        .subscribe("mentat.router.heartbeat.>")
        .await
        .expect("subscribe");
    let addr = cluster.router_addr();
    let loads: Vec<Load> = names
        .iter()
        // One connection each: answers are counted in the order requests
        // were sent, so the order of versions means something.
        .map(|n| Load::start_rate(addr.clone(), &format!("{n}.localhost"), 167, 1))
        .collect();
    let promote = ReleasePromote {
        command_id: Some("promote-r2".into()),
        signature: None,
        tag: "r2".into(),
        from: "staging".into(),
        to: "production".into(),
        actor: Some("e2e".into()),
        reason: Some("staging is green".into()),
    };
    let reply: Reply = cluster
        .bus
        .request(
            &subject::command("release_promote"),
            &promote,
            Encoding::MsgPack,
            Duration::from_secs(10),
        )
        .await
        .expect("a reply");
    let Reply::Accepted {
        deployment_id: Some(id),
        ..
    } = reply
    else {
        panic!("promote refused: {reply:?}");
    };
    cluster.kill("planner");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.start_service("planner");
    // Then the router moved the three services in one swap of its table
    let moved = switch_seen(&cluster, &mut heartbeats, &format!("{id}.switch")).await;
    assert_eq!(moved, ["api", "auth", "web"]);
    wait_env(&cluster, "production", "r2 live in production", |e| {
        e.live.as_deref() == Some("r2")
    })
    .await;
    // And every request was answered 200, v1 then v2, never back
    for (name, l) in names.iter().zip(loads) {
        let tally = l.stop().await;
        assert!(tally.total() > 100, "{name}: {tally:?}");
        assert_eq!(tally.ok(), tally.total(), "{name}: {tally:?}");
        assert_eq!(tally.versions, ["v1", "v2"], "{name}: {tally:?}");
    }
    // When production is rolled back while r1 is warm
    let production: Vec<&str> = names.to_vec();
    let before = starts(&cluster, &production).await;
    let web = Load::start_rate(addr.clone(), "web.localhost", 200, 1);
    let sent = Instant::now();
    cluster.mt_ok(&[
        "release",
        "rollback",
        "--env",
        "production",
        "--reason",
        "e2e rollback",
    ]);
    let mut first_old = None;
    while first_old.is_none() && sent.elapsed() < Duration::from_secs(10) {
        if let Ok((200, body)) = load::get(&addr, "web.localhost").await {
            if body == "v1" {
                first_old = Some(sent.elapsed());
            }
        }
    }
    eprintln!("rollback: first v1 answer {first_old:?} after the command was sent");
    if first_old.is_none_or(|t| t > Duration::from_secs(1)) {
        // A figure, not an assertion: say where the time went.
        let at = |service: &str, what: &str| {
            let log = cluster.log_of(service);
            let lines: Vec<String> = log
                .lines()
                .filter(|l| l.contains(what))
                .map(str::to_owned)
                .collect();
            lines.join("\n")
        };
        eprintln!(
            "slow rollback:\n{}\n{}",
            at("planner", "release_rollback"),
            at("router", "switch")
        );
    }
    let back = wait_env(&cluster, "production", "r1 back", |e| {
        e.live.as_deref() == Some("r1")
    })
    .await;
    // Then no process was started, every request answered, r2 marked rolled back
    let tally = web.stop().await;
    assert_eq!(tally.ok(), tally.total(), "{tally:?}");
    assert_eq!(tally.versions, ["v2", "v1"], "{tally:?}");
    assert_eq!(
        starts(&cluster, &production).await,
        before,
        "a rollback while warm starts nothing"
    );
    let last = back.history.last().expect("history");
    assert_eq!(
        (last.tag.as_str(), last.outcome.as_str()),
        ("r2", "rolled_back")
    );
    assert_eq!(
        last.reason.as_deref(),
        Some("rolled back by e2e: e2e rollback")
    );
    let list = cluster.mt_ok(&["release", "list"]);
    assert!(list.contains("rolled back"), "{list}");
    // (Each member's revert retires r2's replicas before a new release
    // may deploy it.)
    for name in names {
        let member = format!(
            "{id}.{}",
            1 + names.iter().position(|n| *n == name).unwrap_or(0)
        );
        cluster
            .wait_deployment(name, &member, Duration::from_secs(60))
            .await;
    }
    // When a release whose api never gets healthy goes to production
    // (forced: it never served in staging, whose r2 is still on standby)
    cluster.mt_ok(&[
        "release",
        "create",
        "r3",
        "--image",
        "api=v3-crash",
        "--image",
        "web=v3",
    ]);
    cluster.mt_ok(&[
        "release",
        "deploy",
        "r3",
        "--env",
        "production",
        "--force",
        "--reason",
        "e2e",
    ]);
    let failed = wait_env(&cluster, "production", "r3 failed", |e| {
        e.history
            .last()
            .is_some_and(|h| h.tag == "r3" && h.outcome == "failed")
    })
    .await;
    // Then nothing switched, production keeps r1, and the failure names api alone
    assert_eq!(failed.live.as_deref(), Some("r1"));
    let why = failed
        .history
        .last()
        .and_then(|h| h.reason.clone())
        .unwrap_or_default();
    assert!(
        why.contains("api: ") && !why.contains("web: ") && !why.contains("auth: "),
        "{why}"
    );
    let served = load::burst(&addr, "web.localhost", 200, 2).await;
    assert_eq!(served.per_version, BTreeMap::from([("v1".to_owned(), 200)]));
}

async fn a_release_create_rejects_a_file_missing_a_service(db: Db) {
    let cluster = Cluster::start(db).await;
    cluster.apply(&app_config(&["web", "api"], 1));
    let file = cluster.dir.path().join("web-only.yaml");
    std::fs::write(&file, app_config(&["web"], 1)).expect("file");
    let file = file.to_str().expect("utf-8 path");
    cluster.mt_ok(&[
        "release", "create", "web-only", "-f", file, "--image", "web=v1",
    ]);
    let out = cluster.mt(&["release", "deploy", "web-only", "--env", "staging"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("api@staging"), "{}", text(&out));
    assert!(
        text(&out).contains(RejectKind::UnknownService.as_str()),
        "{}",
        text(&out)
    );
}

mentat_e2e::on_both_databases!(
    staging_and_production_serve_their_own_release,
    a_promote_of_three_services_switches_once_and_a_rollback_is_warm,
    a_release_create_rejects_a_file_missing_a_service,
);
