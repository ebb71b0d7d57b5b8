//! One router per address: a router refuses to start on an address another
//! process listens on, even one that set `SO_REUSEPORT` as a router does,
//! while its own workers still share their port.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use mentat_router::{Config, Error, Router};
use mentat_runtime::Shutdown;
use mentat_testkit::NatsServer;
use tokio::net::{TcpListener, TcpSocket};

/// A listener on a free port of 127.0.0.1 with `SO_REUSEPORT`, as another
/// router's worker socket would be.
fn foreign_listener() -> (TcpListener, SocketAddr) {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket.set_reuseport(true).expect("SO_REUSEPORT");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let listener = socket.listen(128).expect("listen");
    let addr = listener.local_addr().expect("addr");
    (listener, addr)
}

fn config(nats: &NatsServer, listen: SocketAddr, workers: usize) -> Config {
    Config {
        nats_url: nats.url(),
        listen,
        workers,
        ..test_config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_refuses_an_address_another_process_listens_on() {
    let nats = NatsServer::start();
    let (foreign, addr) = foreign_listener();
    for workers in [2, 4, 1] {
        match Router::bind(config(&nats, addr, workers), Shutdown::new()).await {
            Err(Error::AddrInUse { addr: named }) => assert_eq!(named, addr),
            Err(other) => panic!("{workers} workers: expected AddrInUse, got {other}"),
            Ok(_) => panic!("{workers} workers: started on {addr}, shared with another process"),
        }
    }

    // Once the other process is gone, the same address is served by several
    // workers sharing the port.
    drop(foreign);
    let shutdown = Shutdown::new();
    let router = Router::bind(config(&nats, addr, 2), shutdown.clone())
        .await
        .expect("the address is free now");
    assert_eq!(router.local_addr(), addr);
    let serving = tokio::spawn(router.serve());
    let answer = raw(
        addr,
        b"GET / HTTP/1.1\r\nHost: nope.localhost\r\nConnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    shutdown.cancel();
    serving.await.expect("router stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exits_non_zero_naming_the_address() {
    let nats = NatsServer::start();
    let (_foreign, addr) = foreign_listener();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_mentat-router"))
        .args(["--nats", &nats.url()])
        .args(["--listen", &addr.to_string()])
        .args(["--admin-listen", "127.0.0.1:0"])
        .args(["--workers", "2"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the router exits instead of serving")
        .expect("the router runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "cannot listen on {addr}: another process already listens on it"
        )),
        "{text}"
    );
}

/// Two routers under one id would look like one to the planner, which waits
/// for every live router's drain: the second is refused, naming the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_id_live_elsewhere_is_refused_naming_the_other() {
    let nats = NatsServer::start();
    let first = TestRouter::start(&nats.url()).await;
    let second = Config {
        nats_url: nats.url(),
        ..test_config()
    };
    match Router::bind(second, Shutdown::new()).await {
        Err(Error::RouterIdTaken { router, other }) => {
            assert_eq!(router, ROUTER_ID);
            assert!(
                other.contains(&first.addr.to_string()),
                "names the other's address: {other}"
            );
        }
        Err(other) => panic!("expected RouterIdTaken, got {other}"),
        Ok(_) => panic!("a second router started under the id of a live one"),
    }
}
