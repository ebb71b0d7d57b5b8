//! Bounds on a request in flight: a request body that stalls or trickles,
//! a backend that never answers and one that stalls mid-answer are cut
//! within their bound (small flag values here, generous slack: nothing
//! asserts speed), with the backend connection closed rather than pooled,
//! so that clients holding requests open cannot starve the others of a
//! backend's connections.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use mentat_router::Config;
use mentat_testkit::NatsServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
/// Slack allowed past a bound before a test calls the cut late.
const SLACK: Duration = Duration::from_secs(4);

/// A router whose service `web` is `backend`, with `tweak` applied to its config.
async fn router_to(
    backend: &Recorder,
    tweak: impl FnOnce(&mut Config),
) -> (NatsServer, TestRouter) {
    let nats = NatsServer::start();
    let bus = bus(&nats.url()).await;
    route_web_to(&bus, backend.addr).await;
    let mut config = Config {
        nats_url: nats.url(),
        ..test_config()
    };
    tweak(&mut config);
    let router = TestRouter::start_with(config).await;
    (nats, router)
}

/// Send `request` and read until the router closes the connection (at
/// most `bound` + [`SLACK`]): the answer, or `None` if it was not closed.
async fn until_closed(addr: SocketAddr, request: &[u8], bound: Duration) -> Option<String> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(bound + SLACK, stream.read_to_end(&mut answer)).await;
    read.is_ok()
        .then(|| String::from_utf8_lossy(&answer).into_owned())
}

/// How a trickling client ended.
#[derive(Debug)]
struct Trickled {
    /// What the router answered, if anything.
    answer: String,
    /// The router closed the connection (else the client gave up).
    cut: bool,
}

/// POST a body announced as 1 MB to `web`, one byte every `every`, until
/// the router answers or closes, or `give_up` passes.
async fn trickle(addr: SocketAddr, every: Duration, give_up: Duration) -> Trickled {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"POST /t HTTP/1.1\r\nHost: web.localhost\r\nContent-Length: 1000000\r\n\r\n")
        .await
        .expect("write head");
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut cut = false;
    while started.elapsed() < give_up {
        if stream.write_all(b"x").await.is_err() {
            cut = true;
            break;
        }
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(every, stream.read(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(n)) if n > 0 => {
                answer.extend_from_slice(&buf[..n]);
                let rest = tokio::time::timeout(SLACK, stream.read_to_end(&mut answer)).await;
                cut = matches!(rest, Ok(Ok(_)));
                break;
            }
            Ok(_) => {
                cut = true;
                break;
            }
        }
    }
    Trickled {
        answer: String::from_utf8_lossy(&answer).into_owned(),
        cut,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_that_stalls_past_the_idle_bound_is_cut_and_its_backend_connection_closed() {
    let backend = Recorder::start(OK).await;
    let (_nats, router) = router_to(&backend, |c| c.body_idle_timeout_secs = 1).await;
    let started = Instant::now();
    // 10 bytes of the 100 announced, then nothing: held for ever.
    let answer = until_closed(
        router.addr,
        b"POST /u HTTP/1.1\r\nHost: web.localhost\r\nContent-Length: 100\r\n\r\n0123456789",
        Duration::from_secs(1),
    )
    .await
    .expect("the router closed the connection within the bound");
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    println!("cut after {:?}", started.elapsed());
    assert!(backend.all_closed().await, "{:?}", backend.connections());
    assert!(
        backend.requests().is_err(),
        "the backend never got a whole request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_trickled_past_the_whole_body_bound_is_cut() {
    let backend = Recorder::start(OK).await;
    let (_nats, router) = router_to(&backend, |c| {
        c.body_idle_timeout_secs = 1;
        c.request_body_timeout_secs = 2;
    })
    .await;
    // A byte every 250 ms: never idle for 1 s, cut at 2 s.
    let trickled = trickle(
        router.addr,
        Duration::from_millis(250),
        Duration::from_secs(2) + SLACK,
    )
    .await;
    assert!(trickled.cut, "{trickled:?}");
    assert!(trickled.answer.starts_with("HTTP/1.1 408 "), "{trickled:?}");
    assert!(backend.all_closed().await, "{:?}", backend.connections());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_never_answers_gets_504_after_the_head_timeout() {
    let backend = Recorder::silent().await;
    let (_nats, router) = router_to(&backend, |c| c.response_timeout_secs = 1).await;
    for request in [
        &b"GET /g HTTP/1.1\r\nHost: web.localhost\r\nConnection: close\r\n\r\n"[..],
        b"POST /p HTTP/1.1\r\nHost: web.localhost\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    ] {
        let answer = until_closed(router.addr, request, Duration::from_secs(1))
            .await
            .expect("answered within the bound");
        assert!(answer.starts_with("HTTP/1.1 504 "), "{answer}");
    }
    assert!(backend.all_closed().await, "{:?}", backend.connections());
    let forwarded = backend.requests().expect("whole requests");
    let methods: Vec<&str> = forwarded.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(methods, ["GET", "POST"], "each sent once, not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_stalls_mid_answer_is_cut_and_both_connections_closed() {
    // 10 bytes of the 100 announced, then nothing.
    let backend =
        Recorder::start(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789").await;
    let (_nats, router) = router_to(&backend, |c| c.body_idle_timeout_secs = 1).await;
    let answer = until_closed(
        router.addr,
        b"GET /s HTTP/1.1\r\nHost: web.localhost\r\n\r\n",
        Duration::from_secs(1),
    )
    .await
    .expect("the router closed the client connection within the bound");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\n0123456789"), "{answer}");
    assert!(backend.all_closed().await, "{:?}", backend.connections());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_clients_past_the_backend_connection_cap_no_longer_starve_normal_requests() {
    let backend = Recorder::start(OK).await;
    let (_nats, router) = router_to(&backend, |c| {
        c.max_backend_connections = 2;
        c.body_idle_timeout_secs = 1;
        c.request_body_timeout_secs = 2;
    })
    .await;
    // Twice as many trickling clients as the backend takes connections,
    // each willing to go on for 40 s.
    let tricklers: Vec<_> = (0..4)
        .map(|_| {
            let addr = router.addr;
            tokio::spawn(async move {
                trickle(addr, Duration::from_millis(200), Duration::from_secs(40)).await
            })
        })
        .collect();
    eventually("the tricklers hold the backend's connections", || async {
        backend.connections().len() >= 2
    })
    .await;

    // A normal request gets through once the bound has freed a connection.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut statuses = Vec::new();
    loop {
        let answer = raw(
            router.addr,
            b"GET /n HTTP/1.1\r\nHost: web.localhost\r\nConnection: close\r\n\r\n",
            Duration::from_secs(5),
        )
        .await;
        let status = answer.get(..12).unwrap_or_default().to_owned();
        if status == "HTTP/1.1 200" {
            break;
        }
        statuses.push(status);
        assert!(
            Instant::now() < deadline,
            "no normal request got through: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    for trickler in tricklers {
        let trickled = trickler.await.expect("trickler");
        assert!(trickled.cut, "{trickled:?}");
        assert!(
            trickled.answer.starts_with("HTTP/1.1 408 ")
                || trickled.answer.starts_with("HTTP/1.1 503 "),
            "cut, or never given a backend connection: {trickled:?}"
        );
    }
    // The trickled requests' backend connections were closed, not pooled.
    let trickled = || -> Vec<Conn> {
        backend
            .connections()
            .into_iter()
            .filter(|c| c.bytes.starts_with(b"POST /t "))
            .collect()
    };
    assert!(!trickled().is_empty());
    eventually(
        "the trickled requests' backend connections close",
        || async { trickled().iter().all(|c| c.closed) },
    )
    .await;
}
