//! The conformance corpus (tests/conformance): each raw request is sent
//! as is, and the router either refuses it with the expected status,
//! forwarding not one byte, or forwards exactly one well-framed request
//! (that method, target and body) to a raw recording backend. With
//! `CONFORMANCE_REPORT=<file>` it also writes what it saw there, one line
//! per case, for bench/router/conformance.sh to print beside nginx.

mod common;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use mentat_testkit::NatsServer;

/// Longest wait for an answer: well under the header timeout (10 s), so
/// a router waiting for more bytes fails the case instead of answering late.
const WAIT: Duration = Duration::from_secs(3);
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";

/// One case of the corpus.
struct Case {
    name: String,
    expected: String,
    request: Vec<u8>,
}

fn corpus() -> Vec<Case> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/conformance");
    let manifest = std::fs::read_to_string(dir.join("cases.txt")).expect("cases.txt");
    manifest
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let mut columns = line.split(" | ");
            let name = columns.next().expect("a name").trim().to_owned();
            let expected = columns.next().expect("an outcome").trim().to_owned();
            let request = std::fs::read(dir.join(format!("{name}.http"))).expect("the request");
            Case {
                name,
                expected,
                request,
            }
        })
        .collect()
}

/// What happened to one request: `<status>` when nothing was forwarded,
/// `forward <status> METHOD TARGET BODY` when one request was, or what
/// went wrong.
async fn outcome(router: &TestRouter, backend: &Recorder, request: &[u8]) -> String {
    let before = match backend.requests() {
        Ok(requests) => requests.len(),
        Err(e) => return format!("backend already out of frame: {e}"),
    };
    let answer = raw(router.addr, request, WAIT).await;
    // The final answer's status: an interim `100 Continue` goes first.
    let mut last = answer.as_str();
    while last.starts_with("HTTP/1.1 1") {
        match last.split_once("\r\n\r\n") {
            Some((_, rest)) => last = rest,
            None => break,
        }
    }
    let status = last
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .unwrap_or("none")
        .to_owned();
    let requests = match backend.requests() {
        Ok(requests) => requests,
        Err(e) => return format!("{status}, the backend got a broken request: {e}"),
    };
    match &requests[before..] {
        [] => status,
        [one] => {
            let body = if one.body.is_empty() {
                "-".to_owned()
            } else {
                String::from_utf8_lossy(&one.body).into_owned()
            };
            let forwarded = format!("forward {} {} {body}", one.method, one.target);
            if status == "200" {
                forwarded
            } else {
                format!("{status} after {forwarded}")
            }
        }
        more => format!("{status}, {} requests forwarded", more.len()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_corpus_is_refused_or_forwarded_exactly_once() {
    let nats = NatsServer::start();
    let bus = bus(&nats.url()).await;
    let backend = Recorder::start(OK).await;
    route_web_to(&bus, backend.addr).await;
    let router = TestRouter::start(&nats.url()).await;
    let cases = corpus();
    assert!(cases.len() >= 50, "the corpus is there");
    let mut report = String::new();
    let mut wrong = Vec::new();
    for case in &cases {
        let got = outcome(&router, &backend, &case.request).await;
        let _ = writeln!(report, "{}\t{}\t{got}", case.name, case.expected);
        if got != case.expected {
            wrong.push(format!(
                "{}: expected {}, got {got}",
                case.name, case.expected
            ));
        }
    }
    if let Ok(path) = std::env::var("CONFORMANCE_REPORT") {
        std::fs::write(&path, &report).expect("the report");
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
