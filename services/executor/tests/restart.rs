//! No orphans across restarts: an executor that dies without stopping its
//! replicas hands them to the next one started on the same data directory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{alive, wait_gone, Harness};
use mentat_domain::event::{Event, ExitStatus};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_executor_adopts_live_replicas_and_reports_dead_ones() {
    let mut h = Harness::new().await;
    let mut config = h.config("h1");
    config.stop_replicas_on_shutdown = false; // a "crash"
    let first = h.start(config.clone()).await;

    let mut pids = std::collections::HashMap::new();
    for replica in ["keep", "kill-later", "die-while-down", "stop-while-down"] {
        h.start_replica("h1", replica, &["sh", "-c", "exec sleep 60"])
            .await;
        match h.next_fact().await {
            Event::ReplicaStarted { replica, pid, .. } => pids.insert(replica, pid),
            other => panic!("expected ReplicaStarted, got {other:?}"),
        };
    }
    first.stop().await;
    h.assert_no_fact(Duration::from_millis(300)).await;
    for pid in pids.values() {
        assert!(
            alive(*pid),
            "a crashed executor must leave replicas running"
        );
    }

    // While no executor runs: one replica dies, and a stop is requested.
    kill(
        Pid::from_raw(pids["die-while-down"] as i32),
        Signal::SIGKILL,
    )
    .unwrap();
    wait_gone(pids["die-while-down"]).await;
    h.stop_replica("h1", "stop-while-down").await;

    config.stop_replicas_on_shutdown = true;
    let second = h.start(config).await;
    // Adoption happens before the first heartbeat: three re-announced
    // replicas and one exit, in the state file's order.
    let mut adopted = Vec::new();
    let mut gone = Vec::new();
    for _ in 0..4 {
        match h.next_fact().await {
            Event::ReplicaStarted { replica, pid, .. } => {
                assert_eq!(pids[&replica], pid);
                adopted.push(replica);
            }
            Event::ReplicaExited {
                replica,
                status,
                requested,
                ..
            } => {
                assert_eq!(
                    status,
                    ExitStatus {
                        code: None,
                        signal: None
                    }
                );
                assert!(!requested);
                gone.push(replica);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    adopted.sort();
    assert_eq!(adopted, ["keep", "kill-later", "stop-while-down"]);
    assert_eq!(gone, ["die-while-down"]);

    // The stop published while it was down is delivered now.
    match h.next_fact().await {
        Event::ReplicaExited {
            replica, requested, ..
        } => {
            assert_eq!(replica, "stop-while-down");
            assert!(requested);
        }
        other => panic!("unexpected {other:?}"),
    }
    wait_gone(pids["stop-while-down"]).await;

    // An adopted replica that dies is noticed by polling.
    kill(Pid::from_raw(pids["kill-later"] as i32), Signal::SIGKILL).unwrap();
    match h.next_fact().await {
        Event::ReplicaExited {
            replica, requested, ..
        } => {
            assert_eq!(replica, "kill-later");
            assert!(!requested);
        }
        other => panic!("unexpected {other:?}"),
    }

    // A graceful shutdown stops adopted replicas too.
    second.stop().await;
    match h.next_fact().await {
        Event::ReplicaExited { replica, .. } => assert_eq!(replica, "keep"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(!alive(pids["keep"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_executors_cannot_share_a_host_directory() {
    let h = Harness::new().await;
    let first = h.start(h.config("h1")).await;
    let err = mentat_executor::run(h.config("h1"), mentat_runtime::Shutdown::new())
        .await
        .expect_err("second executor must refuse");
    assert!(matches!(
        err.downcast_ref::<mentat_executor::Error>(),
        Some(mentat_executor::Error::AlreadyRunning(_))
    ));
    first.stop().await;
}

/// An executor killed between spawning a replica and recording its pid
/// leaves a start in progress in its state file. The next executor finds
/// the process by its start token and adopts it; the redelivered intent then
/// starts nothing more. A start whose program never ran is dropped quietly:
/// its intent comes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_cut_short_by_a_kill_is_adopted_not_run_twice() {
    use std::os::unix::process::CommandExt;

    use mentat_executor::process::START_TOKEN_VAR;
    use mentat_executor::state::{Record, StateFile};

    let mut h = Harness::new().await;
    let host_dir = h.host_dir("h1");
    std::fs::create_dir_all(&host_dir).unwrap();
    let in_progress = |token: &str| Record {
        service: "web".into(),
        pid: 0,
        start_ticks: 0,
        addr: "127.0.0.1:1".into(),
        health: Default::default(),
        image: "v1".into(),
        log: host_dir.join("x.log"),
        started_at_ms: mentat_bus::now_ms(),
        stopping: false,
        token: token.into(),
    };
    // What a killed executor leaves: the process it spawned, and its record
    // without a pid; and a record of a start whose spawn never happened.
    let token = format!("h1/spawned/{}", mentat_bus::new_id());
    let mut orphan = std::process::Command::new("sleep")
        .arg("60")
        .env(START_TOKEN_VAR, &token)
        .process_group(0)
        .spawn()
        .unwrap();
    let orphan_pid = orphan.id();
    let mut state = StateFile::load(host_dir.join("replicas.json")).unwrap();
    state.insert("spawned".into(), in_progress(&token)).unwrap();
    state
        .insert("never-ran".into(), in_progress("h1/never-ran/x"))
        .unwrap();
    drop(state);

    let running = h.start(h.config("h1")).await;
    match h.next_fact().await {
        Event::ReplicaStarted { replica, pid, .. } => {
            assert_eq!(replica, "spawned");
            assert_eq!(pid, orphan_pid, "the orphan is adopted");
        }
        other => panic!("expected the orphan adopted, got {other:?}"),
    }
    h.assert_no_fact(Duration::from_millis(300)).await;
    let state = StateFile::load(host_dir.join("replicas.json")).unwrap();
    assert_eq!(
        state.replicas().keys().collect::<Vec<_>>(),
        ["spawned"],
        "the start that never ran is dropped"
    );
    assert_eq!(state.get("spawned").unwrap().pid, orphan_pid);

    // The intent that was never acknowledged comes again: no second process.
    h.start_replica("h1", "spawned", &["sh", "-c", "exec sleep 60"])
        .await;
    match h.next_fact().await {
        Event::ReplicaStarted { replica, pid, .. } => {
            assert_eq!(replica, "spawned");
            assert_eq!(pid, orphan_pid, "reported again, not started again");
        }
        other => panic!("unexpected {other:?}"),
    }
    running.stop().await;
    wait_gone(orphan_pid).await;
    // Gone means a zombie at most: reap it.
    let _ = orphan.wait();
}
