//! The real `mentat-executor` binary: SIGKILL leaves its replicas to the
//! next executor, SIGTERM stops them all before it exits, and a bad flag
//! exits with 64.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{alive, wait_gone, Harness, WAIT};
use futures::StreamExt;
use mentat_bus::subject;
use mentat_domain::event::Event;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn executor(h: &Harness) -> Child {
    Command::new(env!("CARGO_BIN_EXE_mentat-executor"))
        .args(["--nats", &h.nats.url(), "--host-id", "bin-host"])
        .args(["--advertise-ip", "127.0.0.1"])
        .args(["--heartbeat-ms", "50", "--stop-grace-secs", "2"])
        .arg("--data-dir")
        .arg(h.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_heartbeat(h: &Harness) {
    let mut beats = h
        .bus
        .client
        .subscribe(subject::heartbeat("bin-host"))
        .await
        .unwrap();
    let beat = tokio::time::timeout(WAIT, beats.next()).await;
    assert!(matches!(beat, Ok(Some(_))), "no heartbeat from the binary");
}

async fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "binary did not exit"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_leaves_replicas_for_the_next_executor_and_sigterm_stops_them() {
    let mut h = Harness::new().await;
    let mut first = executor(&h);
    wait_heartbeat(&h).await;
    h.start_replica("bin-host", "web-1", &["sh", "-c", "exec sleep 60"])
        .await;
    let pid = match h.next_fact().await {
        Event::ReplicaStarted { pid, .. } => pid,
        other => panic!("expected ReplicaStarted, got {other:?}"),
    };

    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    assert!(alive(pid));

    let mut second = executor(&h);
    match h.next_fact().await {
        Event::ReplicaStarted {
            replica, pid: p, ..
        } => {
            assert_eq!(replica, "web-1");
            assert_eq!(p, pid);
        }
        other => panic!("expected the replica re-adopted, got {other:?}"),
    }

    kill(Pid::from_raw(second.id() as i32), Signal::SIGTERM).unwrap();
    match h.next_fact().await {
        Event::ReplicaExited {
            replica, status, ..
        } => {
            assert_eq!(replica, "web-1");
            // Adopted, so not our child: the status is unknown.
            assert_eq!((status.code, status.signal), (None, None));
        }
        other => panic!("expected ReplicaExited, got {other:?}"),
    }
    wait_gone(pid).await;
    assert!(wait_exit(&mut second).await.success());
}

#[tokio::test]
async fn a_bad_flag_exits_with_64() {
    for args in [
        &["--capacity", "many"][..],
        &["--host-id", "Not_Valid"][..],
        &["--no-such-flag"][..],
    ] {
        let status = Command::new(env!("CARGO_BIN_EXE_mentat-executor"))
            .args(args)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(64), "{args:?}");
    }
    let help = Command::new(env!("CARGO_BIN_EXE_mentat-executor"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--stop-grace-secs"));
}
