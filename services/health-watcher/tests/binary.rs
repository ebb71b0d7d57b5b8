//! The real `mentat-health-watcher` binary: bad flags exit with 64, and
//! SIGTERM ends it cleanly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const BIN: &str = env!("CARGO_BIN_EXE_mentat-health-watcher");

#[test]
fn a_bad_flag_exits_with_64() {
    for args in [
        &["--probe-timeout-ms", "0"][..],
        &["--probe-timeout-ms", "soon"][..],
    ] {
        let status = Command::new(BIN)
            .args(args)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(64), "{args:?}");
    }
}

#[test]
fn sigterm_ends_it_cleanly() {
    let nats = mentat_testkit::NatsServer::start();
    let mut child = Command::new(BIN)
        .args(["--nats", &nats.url()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "exited early");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
}
