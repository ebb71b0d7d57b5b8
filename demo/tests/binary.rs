//! The built binary: configuration errors, a crashing version, serving and
//! stopping cleanly on SIGTERM.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mentat-demo-app");

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// One request with `Connection: close`; returns the status line and body.
fn request(port: u16, path: &str) -> Option<(String, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_owned(), body.to_owned()))
}

#[test]
fn bad_configuration_exits_2_and_a_crash_version_exits_1() {
    let missing_port = Command::new(BIN)
        .env_remove("PORT")
        .stderr(Stdio::null())
        .status()
        .expect("run");
    assert_eq!(missing_port.code(), Some(2));
    let crash = Command::new(BIN)
        .env("PORT", "1")
        .env("APP_VERSION", "v9-crash")
        .output()
        .expect("run");
    assert_eq!(crash.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&crash.stderr).contains("crash"));
}

#[test]
fn serves_its_version_and_stops_cleanly_on_sigterm() {
    let port = free_port();
    let mut child = Command::new(BIN)
        .args(["--version", "v2-unhealthy"])
        .env("PORT", port.to_string())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(10);
    let root = loop {
        if let Some(answer) = request(port, "/") {
            break answer;
        }
        assert!(Instant::now() < deadline, "demo app did not start");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(root.0.contains("200"), "{root:?}");
    assert_eq!(root.1, "v2-unhealthy\n");
    let health = request(port, "/health").expect("health answers");
    assert!(health.0.contains("503"), "{health:?}");

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "demo app did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}
