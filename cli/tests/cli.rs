//! The `mt` binary against a real nats-server: bad configs are refused
//! before anything is sent, a missing planner is reported with exit code 3,
//! and the planner's replies and events (played here by a stand-in that
//! answers on the real subjects) are printed and followed.
//!
//! Needs a nats-server 2.10+: `NATS_SERVER_BIN`, else `nats-server` on PATH.

use std::process::Output;
use std::time::Duration;

use futures::StreamExt;
use mentat_bus::{subject, Bus};
use mentat_domain::command::{DeploymentRecord, HistoryReply, Outcome, ServiceStatus, StatusReply};
use mentat_domain::{Event, EventEnvelope, Meta, Reply, Strategy};
use mentat_testkit::NatsServer;

const BAD_CONFIG: &str = "\
services:
  web:
    replicas: 3
    run:
      command: [mentat-demo-app]
    deploy:
      max_unavailable: 4
      colour: blue
";

/// Run `mt` with `args` against `url`, off the async runtime.
async fn mt(url: &str, args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mt"));
    cmd.args(args)
        .env("MENTAT_NATS_URL", url)
        .env("USER", "tester");
    tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run mt")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn bus(server: &NatsServer) -> Bus {
    Bus::connect(&server.url(), "test", Duration::from_secs(5))
        .await
        .expect("connect")
}

#[tokio::test]
async fn apply_of_a_bad_file_names_file_line_and_field_and_sends_nothing() {
    let server = NatsServer::start();
    let bus = bus(&server).await;
    let mut commands = bus.client.subscribe(subject::CMD_ALL).await.expect("sub");
    bus.client.flush().await.expect("flush");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, BAD_CONFIG).expect("write");
    let path = file.display().to_string();

    let out = mt(&server.url(), &["apply", "-f", &path]).await;

    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let stderr = text(&out.stderr);
    for expected in [
        format!("{path}:7: services.web.deploy.max_unavailable: 4 is larger than replicas (3)"),
        format!("{path}:8: services.web.deploy.colour: unknown field `colour`"),
    ] {
        assert!(
            stderr.contains(&expected),
            "{expected:?} missing from {stderr}"
        );
    }
    let sent = tokio::time::timeout(Duration::from_millis(300), commands.next()).await;
    assert!(sent.is_err(), "a command was sent: {sent:?}");
}

#[tokio::test]
async fn status_without_a_planner_says_so_and_exits_3() {
    let server = NatsServer::start();
    let out = mt(&server.url(), &["status"]).await;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("planner"), "{stderr}");
    assert!(stderr.contains("mentat.query.status"), "{stderr}");
}

#[tokio::test]
async fn unreachable_nats_names_the_url_and_suggests_mt_up() {
    let url = format!("nats://127.0.0.1:{}", mentat_testkit::free_port());
    let out = mt(&url, &["status"]).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&url) && stderr.contains("mt up"),
        "{stderr}"
    );
}

#[tokio::test]
async fn without_credentials_a_nats_beyond_this_machine_is_refused_unless_insecure() {
    // Refused before connecting: nothing needs to answer there.
    let far = "nats://10.255.255.1:4222";
    let out = mt(far, &["status"]).await;
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    let said = text(&out.stderr);
    assert!(
        said.contains("--nats-creds") && said.contains("--insecure"),
        "says how to get credentials: {said}"
    );
    // A credentials file that is not one is named, and refused the same way.
    let dir = tempfile::tempdir().expect("tempdir");
    let junk = dir.path().join("junk.nk");
    std::fs::write(&junk, "not a seed").expect("write");
    let out = mt(
        far,
        &["status", "--nats-creds", junk.to_str().expect("utf-8")],
    )
    .await;
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("junk.nk"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !text(&out.stderr).contains("not a seed"),
        "{}",
        text(&out.stderr)
    );
    // With --insecure it goes on, and finds nothing there.
    let out = mt(far, &["status", "--insecure"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

/// Answer one request on `subject` with `reply`, and return the request.
async fn answer_once<T: serde::Serialize + Send + Sync + 'static>(
    bus: &Bus,
    subject: &str,
    reply: T,
) -> tokio::task::JoinHandle<async_nats::Message> {
    let mut sub = bus.client.subscribe(subject.to_owned()).await.expect("sub");
    bus.client.flush().await.expect("flush");
    let bus = bus.clone();
    tokio::spawn(async move {
        let msg = sub.next().await.expect("a request");
        bus.reply(&msg, &reply).await.expect("reply");
        msg
    })
}

fn record(outcome: Outcome) -> DeploymentRecord {
    DeploymentRecord {
        deployment_id: "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into(),
        service: "web".into(),
        image: "v2".into(),
        previous_image: Some("v1".into()),
        strategy: Strategy::Rolling,
        outcome,
        actor: Some("ana".into()),
        reason: Some("release".into()),
        failure: None,
        batches_done: 0,
        phase: None,
        paused: None,
        waiting_for_router: false,
        breaches: vec![],
        started_at_ms: 1_714_564_803_000,
        ended_at_ms: None,
    }
}

#[tokio::test]
async fn status_and_history_print_the_planners_answers() {
    let server = NatsServer::start();
    let bus = bus(&server).await;
    let status = StatusReply::Ok {
        services: vec![ServiceStatus {
            service: "web".into(),
            image: Some("v1".into()),
            replicas: 3,
            deployment: Some(record(Outcome::InProgress)),
            instances: vec![],
            routes: vec![],
            health: vec![],
            broken: None,
            truncated: None,
        }],
        hosts: vec!["host-a".into()],
        log_unavailable_since_ms: None,
        next: None,
        planners: None,
        routers: vec![],
        host_states: vec![],
        held: None,
    };
    let asked = answer_once(&bus, subject::QUERY_STATUS, status).await;
    let out = mt(&server.url(), &["status", "web"]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("web  image v1  replicas 3 wanted"),
        "{stdout}"
    );
    assert!(stdout.contains("hosts alive: host-a"), "{stdout}");
    let query: mentat_domain::command::StatusQuery = decode(&asked.await.expect("asked").payload);
    assert_eq!(query.service.as_deref(), Some("web"));

    let history = HistoryReply::Ok {
        deployments: vec![record(Outcome::Completed)],
        events: vec![],
        next: None,
    };
    let _asked = answer_once(&bus, subject::QUERY_HISTORY, history).await;
    let out = mt(&server.url(), &["history", "web", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["deployments"][0]["outcome"], "completed");
}

fn decode<T: serde::de::DeserializeOwned>(payload: &[u8]) -> T {
    mentat_bus::codec::decode(payload, mentat_bus::Encoding::MsgPack, "test").expect("decode")
}

fn envelope(position: i64, event: Event) -> EventEnvelope {
    EventEnvelope {
        id: mentat_bus::new_id(),
        position,
        stream: "web".into(),
        version: position,
        schema_version: 1,
        recorded_at_ms: 1_714_564_803_000 + position * 1000,
        meta: Meta::default(),
        event,
    }
}

/// Plays the planner for one deploy: accepts it, then publishes `events`
/// (built from the deployment id) on the service's event subjects.
async fn planner_for_one_deploy(bus: &Bus, events: fn(&str) -> Vec<Event>) {
    let mut sub = bus
        .client
        .subscribe(subject::command("deploy"))
        .await
        .expect("sub");
    bus.client.flush().await.expect("flush");
    let bus = bus.clone();
    tokio::spawn(async move {
        let msg = sub.next().await.expect("deploy command");
        let id = mentat_bus::new_id();
        let reply = Reply::Accepted {
            deployment_id: Some(id.clone()),
            message: "deploying web v2".into(),
        };
        bus.reply(&msg, &reply).await.expect("reply");
        for (i, event) in events(&id).into_iter().enumerate() {
            let subject = subject::event("web", event.type_name());
            let env = envelope(i as i64 + 1, event);
            bus.publish(subject, &env).await.expect("publish");
        }
    });
}

fn started(id: &str) -> Event {
    Event::DeploymentStarted {
        deployment_id: id.into(),
        service: "web".into(),
        image: "v2".into(),
        previous_image: Some("v1".into()),
        strategy: Strategy::Rolling,
        batch_size: 1,
        replicas: 2,
        auto_revert: true,
        rollback: false,
        at_ms: 0,
        plan: Default::default(),
    }
}

#[tokio::test]
async fn deploy_follows_the_deployment_until_it_completes() {
    let server = NatsServer::start();
    let bus = bus(&server).await;
    planner_for_one_deploy(&bus, |id| {
        vec![
            // Another deployment's end must not end ours.
            Event::DeploymentFailed {
                deployment_id: "other".into(),
                reason: "not ours".into(),
                at_ms: 0,
            },
            started(id),
            Event::BatchStarted {
                deployment_id: id.into(),
                batch: 1,
                image: "v2".into(),
                start: vec!["web-3".into()],
                replace: vec!["web-1".into()],
                deadline_ms: 0,
            },
            Event::ReplicaHealthy {
                replica: "web-3".into(),
                service: "web".into(),
            },
            Event::DeploymentCompleted {
                deployment_id: id.into(),
                at_ms: 0,
            },
        ]
    })
    .await;
    let out = mt(
        &server.url(),
        &["deploy", "web", "--image", "v2", "--timeout", "20"],
    )
    .await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stdout.contains("accepted: deploying web v2"), "{stdout}");
    assert!(
        stdout.contains("batch 1/2 started: starting web-3; replacing web-1"),
        "{stdout}"
    );
    assert!(stdout.contains("replica web-3 healthy"), "{stdout}");
    assert!(stdout.contains("deployment completed"), "{stdout}");
    assert!(!stdout.contains("not ours"), "{stdout}");
}

#[tokio::test]
async fn deploy_exits_1_with_the_reason_when_reverted() {
    let server = NatsServer::start();
    let bus = bus(&server).await;
    planner_for_one_deploy(&bus, |id| {
        vec![
            started(id),
            Event::DeploymentReverting {
                deployment_id: id.into(),
                reason: "web-3 not healthy within 10s".into(),
            },
            Event::DeploymentReverted {
                deployment_id: id.into(),
                reason: "web-3 not healthy within 10s".into(),
                at_ms: 0,
            },
        ]
    })
    .await;
    let out = mt(&server.url(), &["deploy", "web", "--image", "v2"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stdout).contains("reverting because web-3 not healthy within 10s"));
    assert!(text(&out.stderr).contains("reverted: web-3 not healthy within 10s"));
}

#[tokio::test]
async fn usage_errors_exit_64_and_help_lists_the_exit_codes() {
    let unused = "nats://127.0.0.1:1";
    let out = mt(unused, &["deploy", "web"]).await;
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(text(&out.stderr).contains("--image"));
    let out = mt(unused, &["deploy", "Not.A.Name", "--image", "v1"]).await;
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let out = mt(unused, &["--help"]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let help = text(&out.stdout);
    for line in ["  3   the planner did not answer", "  64  bad config file"] {
        assert!(help.contains(line), "{line:?} missing from {help}");
    }
}

#[tokio::test]
async fn every_new_command_without_a_planner_names_its_subject_and_exits_3() {
    let server = NatsServer::start();
    let cases: [(&[&str], &str); 11] = [
        (
            &["pause", "web", "--reason", "error rate"],
            "mentat.cmd.pause",
        ),
        (&["resume", "web"], "mentat.cmd.resume"),
        (&["abort", "web"], "mentat.cmd.abort"),
        (&["promote", "web"], "mentat.cmd.promote"),
        (&["canary", "promote", "web"], "mentat.cmd.promote"),
        (&["canary", "abort", "web"], "mentat.cmd.abort"),
        (&["weight", "web:web-4", "20"], "mentat.cmd.weight"),
        (
            &["route", "web", "--from", "v1", "--to", "v2"],
            "mentat.cmd.route",
        ),
        (
            &["spawn", "web", "--id", "green", "--image", "v2"],
            "mentat.cmd.spawn",
        ),
        (&["stop", "web:green"], "mentat.cmd.stop"),
        (&["ps", "web"], "mentat.query.status"),
    ];
    // A command waits out its full timeout (JetStream keeps it for the
    // planner, so nobody says "no responders"): ask them all at once.
    let url = server.url();
    let outs = futures::future::join_all(cases.iter().map(|(args, _)| mt(&url, args))).await;
    for ((args, subject), out) in cases.iter().zip(outs) {
        assert_eq!(out.status.code(), Some(3), "{args:?}: {out:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(subject), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn bad_instances_weights_and_routes_are_usage_errors_that_say_what_is_wrong() {
    let unused = "nats://127.0.0.1:1";
    let cases: [(&[&str], &str); 8] = [
        (&["weight", "web", "20"], "SERVICE:INSTANCE"),
        (&["weight", "web:web-4", "101"], "from 0"),
        (&["weight", "web:web-4", "-5"], "from 0"),
        (&["weight", "web:web-4", "ten"], "from 0"),
        (&["stop", "Web:web-4"], "not a service name"),
        (
            &["route", "web", "--from", "v1", "--to", "v1"],
            "--from and --to",
        ),
        (&["spawn", "web", "--id", "Green"], "not an instance id"),
        (
            &["deploy", "web", "--image", "v2", "--wait", "--no-wait"],
            "--no-wait",
        ),
    ];
    for (args, says) in cases {
        let out = mt(unused, args).await;
        assert_eq!(out.status.code(), Some(64), "{args:?}: {out:?}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(says),
            "{args:?}: {says:?} missing from {stderr}"
        );
    }
}

#[test]
fn the_example_config_is_valid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/mentat.yaml");
    let services = mentat_runtime::config::load(&path).expect("examples/mentat.yaml is valid");
    assert_eq!(services.len(), 1);
    assert_eq!(services[0].name, "web");
    assert_eq!(services[0].replicas, 3);
    assert_eq!(services[0].run.command, ["mentat-demo-app"]);
    assert_eq!(services[0].deploy.health_timeout_secs, 10);
}
