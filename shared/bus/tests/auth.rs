//! The bus on a NATS server that requires credentials: a user and password
//! (or a token) given in the URL is used, a connection without them is
//! refused at once with an error of its own kind, and no error shows the
//! password.

#![allow(clippy::unwrap_used)] // a failing test should fail loudly

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mentat_bus::{client, Bus, Error};
use mentat_testkit::free_port;

/// A nats-server with JetStream and `authorization`, on a free port.
struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server(authorization: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = dir.path().join("nats.conf");
    let store = dir.path().join("js");
    std::fs::write(
        &conf,
        format!(
            "listen: 127.0.0.1:{port}\njetstream {{ store_dir: {:?} }}\nauthorization {{ {authorization} }}\n",
            store.display().to_string()
        ),
    )
    .unwrap();
    let child = Command::new(mentat_testkit::nats::server_bin())
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nats-server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Server {
        child,
        port,
        _dir: dir,
    }
}

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_user_and_password_in_the_url_are_used_and_wrong_ones_refused_at_once() {
    // The password holds characters a URL must escape.
    let s = server(r#"users = [ { user: mentat, password: "p@ss:w/rd" } ]"#);
    let good = format!("nats://mentat:p%40ss%3Aw%2Frd@127.0.0.1:{}", s.port);
    let bus = Bus::connect(&good, "auth-test", WAIT).await.unwrap();
    bus.publish_durable("mentat.fact.test.a".into(), "a", &"a")
        .await
        .unwrap();

    for url in [
        format!("nats://127.0.0.1:{}", s.port),
        format!("nats://mentat:wrong-secret@127.0.0.1:{}", s.port),
    ] {
        let started = Instant::now();
        let err = Bus::connect(&url, "auth-test", WAIT).await.unwrap_err();
        assert!(matches!(err, Error::Refused { .. }), "{url}: {err:?}");
        assert!(started.elapsed() < WAIT / 2, "refused only at the deadline");
        let said = err.to_string();
        assert!(!said.contains("wrong-secret"), "{said}");
        assert!(said.contains(&format!("127.0.0.1:{}", s.port)), "{said}");
    }
}

#[tokio::test]
async fn a_token_in_the_url_is_used() {
    let s = server(r#"token: "s3cret-token""#);
    let url = format!("nats://s3cret-token@127.0.0.1:{}", s.port);
    Bus::connect(&url, "auth-test", WAIT).await.unwrap();
    let err = Bus::connect(
        &format!("nats://nope@127.0.0.1:{}", s.port),
        "auth-test",
        WAIT,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err:?}");
    assert!(!err.to_string().contains("nope@"), "{err}");
}

#[test]
fn passwords_are_masked_wherever_a_url_is_shown() {
    assert_eq!(
        client::redact("nats://u:secret@a:4222,nats://b:4222,nats://tok@c:4222/x"),
        "nats://u:***@a:4222,nats://b:4222,nats://***@c:4222/x"
    );
    assert_eq!(client::redact("nats://a:4222"), "nats://a:4222");
    // The planner masks its database URL with it too.
    assert_eq!(
        client::redact("postgres://mentat:s3cret@db:5432/mentat?sslmode=require"),
        "postgres://mentat:***@db:5432/mentat?sslmode=require"
    );
    assert_eq!(
        client::redact("sqlite:///var/lib/mentat/mentat.db"),
        "sqlite:///var/lib/mentat/mentat.db"
    );
    let addrs = client::server_addrs("nats://u:p@a:4222,nats://u:q@b:4222").unwrap();
    let err = client::UrlAuth::of(&addrs).unwrap_err();
    assert!(matches!(err, Error::InvalidUrl { .. }), "{err:?}");
    assert!(!err.to_string().contains(":q@"), "{err}");
}
