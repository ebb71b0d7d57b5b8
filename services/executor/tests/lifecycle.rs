//! Starting, stopping and watching replicas: a real nats-server, the
//! executor in-process, real child processes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{alive, start_requested, wait_gone, Harness};
use mentat_domain::event::{Event, ExitStatus};

const SIGTERM: i32 = 15;
const SIGKILL: i32 = 9;

fn started(event: Event) -> (String, u32, String) {
    match event {
        Event::ReplicaStarted {
            replica, pid, addr, ..
        } => (replica, pid, addr),
        other => panic!("expected ReplicaStarted, got {other:?}"),
    }
}

fn exited(event: Event) -> (String, ExitStatus, bool) {
    match event {
        Event::ReplicaExited {
            replica,
            status,
            requested,
            ..
        } => (replica, status, requested),
        other => panic!("expected ReplicaExited, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_replica_gets_its_port_and_stops_on_sigterm() {
    let mut h = Harness::new().await;
    let executor = h.start(h.config("h1")).await;

    let mut intent = start_requested(
        "h1",
        "web-1",
        &[
            "sh",
            "-c",
            "echo port=$PORT arg=$1 env=$GREETING; exec sleep 60",
            "sh",
        ],
    );
    if let Event::ReplicaStartRequested { run, .. } = &mut intent {
        run.args.push("{port}".into());
        run.env.insert("GREETING".into(), "{image}-{port}".into());
    }
    h.publish_event(intent.clone()).await;
    let (replica, pid, addr) = started(h.next_fact().await);
    assert_eq!(replica, "web-1");
    assert!(alive(pid), "pid {pid} is not running");
    let port = addr.strip_prefix("127.0.0.1:").expect("local address");

    // The log shows PORT, {port} in args and {image}/{port} in env values.
    let log = h.host_dir("h1").join("logs/web-1.log");
    let expected = format!("port={port} arg={port} env=v1-{port}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains(&expected) {
            break;
        }
        assert!(Instant::now() < deadline, "log {log:?} has {text:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let state = std::fs::read_to_string(h.host_dir("h1").join("replicas.json")).unwrap();
    assert!(state.contains("web-1") && state.contains(&pid.to_string()));

    // A repeated start is answered with the same process.
    h.publish_event(intent).await;
    let (_, again, _) = started(h.next_fact().await);
    assert_eq!(again, pid);

    h.stop_replica("h1", "web-1").await;
    let (replica, status, requested) = exited(h.next_fact().await);
    assert_eq!(replica, "web-1");
    assert_eq!(status.signal, Some(SIGTERM));
    assert!(requested);
    wait_gone(pid).await;
    // The record goes once the exit is published (a crash in between
    // reports the exit again).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let state = std::fs::read_to_string(h.host_dir("h1").join("replicas.json")).unwrap();
        if !state.contains("web-1") {
            break;
        }
        assert!(Instant::now() < deadline, "{state}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A second stop re-reports the exit.
    h.stop_replica("h1", "web-1").await;
    let (_, again, _) = exited(h.next_fact().await);
    assert_eq!(again, status);
    executor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_ignoring_sigterm_is_killed_after_the_grace() {
    let mut h = Harness::new().await;
    let executor = h.start(h.config("h1")).await;
    h.start_replica("h1", "stubborn", &["sh", "-c", "trap '' TERM; sleep 1000"])
        .await;
    let (_, pid, _) = started(h.next_fact().await);
    // Let the shell install its trap before asking it to stop.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let asked = Instant::now();
    h.stop_replica("h1", "stubborn").await;
    let (_, status, requested) = exited(h.next_fact().await);
    assert_eq!(status.signal, Some(SIGKILL));
    assert!(requested);
    assert!(
        asked.elapsed() >= Duration::from_millis(900),
        "killed before the grace"
    );
    wait_gone(pid).await;
    executor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_and_missing_programs_report_their_exit_code() {
    let mut h = Harness::new().await;
    let executor = h.start(h.config("h1")).await;

    h.start_replica("h1", "crash", &["sh", "-c", "sleep 0.2; exit 3"])
        .await;
    started(h.next_fact().await);
    let (replica, status, requested) = exited(h.next_fact().await);
    assert_eq!(replica, "crash");
    assert_eq!(
        status,
        ExitStatus {
            code: Some(3),
            signal: None
        }
    );
    assert!(!requested);

    h.start_replica("h1", "missing", &["/nonexistent/mentat-no-such-program"])
        .await;
    let (replica, status, requested) = exited(h.next_fact().await);
    assert_eq!(replica, "missing");
    assert_eq!(status.code, Some(127));
    assert!(!requested);
    executor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intents_for_another_host_are_ignored() {
    let mut h = Harness::new().await;
    let executor = h.start(h.config("h1")).await;
    h.start_replica("h2", "elsewhere", &["sh", "-c", "exec sleep 60"])
        .await;
    h.stop_replica("h2", "elsewhere").await;
    h.assert_no_fact(Duration::from_millis(500)).await;
    // The consumer moved past them: the next intent for h1 is the next fact.
    h.start_replica("h1", "here", &["sh", "-c", "exec sleep 60"])
        .await;
    let (replica, _, _) = started(h.next_fact().await);
    assert_eq!(replica, "here");
    executor.stop().await;
    assert!(
        !std::fs::read_to_string(h.host_dir("h1").join("replicas.json"))
            .unwrap()
            .contains("elsewhere")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intents_naming_another_services_replica_are_refused() {
    let mut h = Harness::new().await;
    let executor = h.start(h.config("h1")).await;
    h.start_replica("h1", "web-23", &["sh", "-c", "exec sleep 60"])
        .await;
    let (_, pid, _) = started(h.next_fact().await);
    // Another service asks for the same id: neither started as web's
    // replica again nor reported as its own.
    let mut intent = start_requested("h1", "web-23", &["sh", "-c", "exec sleep 60"]);
    if let Event::ReplicaStartRequested { service, .. } = &mut intent {
        *service = "rec".into();
    }
    h.publish_event(intent).await;
    // ...and a stop of rec:web-23 does not reach web's process.
    h.publish_event(Event::ReplicaStopRequested {
        replica: "web-23".into(),
        service: "rec".into(),
        host: "h1".into(),
        reason: "test".into(),
    })
    .await;
    h.assert_no_fact(Duration::from_millis(500)).await;
    assert!(alive(pid), "web's replica was signalled");
    // Its own service still stops it.
    h.stop_replica("h1", "web-23").await;
    let (replica, status, requested) = exited(h.next_fact().await);
    assert_eq!(replica, "web-23");
    assert_eq!(status.signal, Some(SIGTERM));
    assert!(requested);
    executor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_stops_every_replica() {
    let mut h = Harness::new().await;
    let executor = h.start(h.config("h1")).await;
    let mut pids = Vec::new();
    for replica in ["a", "b"] {
        h.start_replica("h1", replica, &["sh", "-c", "exec sleep 60"])
            .await;
        pids.push(started(h.next_fact().await).1);
    }
    executor.stop().await;
    for _ in 0..2 {
        let (_, status, requested) = exited(h.next_fact().await);
        assert_eq!(status.signal, Some(SIGTERM));
        assert!(!requested, "the planner did not ask for this stop");
    }
    for pid in pids {
        assert!(!alive(pid), "pid {pid} survived the executor");
    }
}

/// A replica listens on the executor's advertised address: it gets it in
/// `HOST` and `{ip}`, and its `ReplicaStarted` names that address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_listens_on_the_advertised_address() {
    let mut h = Harness::new().await;
    let mut config = h.config("h1");
    config.advertise_ip = Some("127.0.0.2".parse().unwrap());
    let executor = h.start(config).await;
    h.start_replica(
        "h1",
        "web-1",
        &["sh", "-c", "echo host=$HOST ip={ip}; exec sleep 60"],
    )
    .await;
    let (_, pid, addr) = started(h.next_fact().await);
    let port = addr
        .strip_prefix("127.0.0.2:")
        .unwrap_or_else(|| panic!("{addr} is not on the advertised address"));
    assert!(port.parse::<u16>().is_ok(), "{addr}");
    let log = h.host_dir("h1").join("logs/web-1.log");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("host=127.0.0.2 ip=127.0.0.2") {
            break;
        }
        assert!(Instant::now() < deadline, "log {log:?} has {text:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    executor.stop().await;
    wait_gone(pid).await;
}

/// Two executors under one host id on different machines (here: different
/// data directories) would split that host's intents: the second is refused
/// at start, naming the first's address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_id_live_elsewhere_is_refused_naming_the_other() {
    let h = Harness::new().await;
    let first = h.start(h.config("h1")).await;
    let elsewhere = tempfile::tempdir().unwrap();
    let mut second = h.config("h1");
    second.data_dir = elsewhere.path().to_path_buf();
    let err = mentat_executor::run(second, mentat_runtime::Shutdown::new())
        .await
        .expect_err("a second executor under h1 must be refused");
    match err.downcast_ref::<mentat_executor::Error>() {
        Some(mentat_executor::Error::HostIdTaken { host, other }) => {
            assert_eq!(host, "h1");
            assert_eq!(other, "127.0.0.1");
        }
        other => panic!("expected HostIdTaken, got {other:?} ({err})"),
    }
    first.stop().await;
}
