//! A client that keeps sending `GET /` through the router, over one
//! keep-alive connection (reconnecting if the router closes it), and counts
//! every answer by status and body.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// What the client saw.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Answers by status code (0 = the request got no answer at all).
    pub statuses: BTreeMap<u16, u64>,
    /// Bodies of 200 answers, in the order they changed (v1, v2, ...).
    pub versions: Vec<String>,
    /// Count of 200 answers per body.
    pub per_version: BTreeMap<String, u64>,
    /// The first few failures, described.
    pub failures: Vec<String>,
}

impl Tally {
    /// Requests sent.
    pub fn total(&self) -> u64 {
        self.statuses.values().sum()
    }

    /// Requests answered 200.
    pub fn ok(&self) -> u64 {
        self.statuses.get(&200).copied().unwrap_or(0)
    }
}

/// A running load.
pub struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    /// Start sending requests for `host` to the router at `addr`.
    pub fn start(addr: String, host: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let host = host.to_owned();
        let task = tokio::spawn({
            let stop = stop.clone();
            let tally = tally.clone();
            async move {
                let mut conn = Connection::new(&addr, &host);
                while !stop.load(Ordering::Relaxed) {
                    conn.send(&tally).await;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        });
        Load { stop, tally, task }
    }

    /// Send `rate` requests per second for `host`, spread over
    /// `connections` keep-alive connections, each paced to its share of the
    /// rate (a late request is sent at once, so the rate holds on average).
    pub fn start_rate(addr: String, host: &str, rate: u32, connections: u32) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let period = Duration::from_secs_f64(f64::from(connections) / f64::from(rate.max(1)));
        let mut tasks = Vec::new();
        for i in 0..connections.max(1) {
            let (addr, host) = (addr.clone(), host.to_owned());
            let (stop, tally) = (stop.clone(), tally.clone());
            tasks.push(tokio::spawn(async move {
                // Stagger the connections across one period.
                tokio::time::sleep(period.mul_f64(f64::from(i) / f64::from(connections))).await;
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let mut conn = Connection::new(&addr, &host);
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    conn.send(&tally).await;
                }
            }));
        }
        let task = tokio::spawn(async move {
            for t in tasks {
                let _ = t.await;
            }
        });
        Load { stop, tally, task }
    }

    /// What was seen so far.
    pub fn tally(&self) -> Tally {
        self.tally.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stop and return the final tally.
    pub async fn stop(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.tally.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Send `total` requests for `host` as fast as `connections` keep-alive
/// connections allow, and count the answers.
pub async fn burst(addr: &str, host: &str, total: usize, connections: usize) -> Tally {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let left = Arc::new(std::sync::atomic::AtomicUsize::new(total));
    let mut tasks = Vec::new();
    for _ in 0..connections.max(1) {
        let (addr, host) = (addr.to_owned(), host.to_owned());
        let (tally, left) = (tally.clone(), left.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Connection::new(&addr, &host);
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                conn.send(&tally).await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let t = tally.lock().unwrap_or_else(|p| p.into_inner()).clone();
    t
}

/// A `host` for the functions of this module that sends one more header
/// line with each request: `X-Environment: staging` picks the router's
/// staging table.
pub fn in_environment(host: &str, environment: &str) -> String {
    format!("{host}\r\nX-Environment: {environment}")
}

/// One `GET /` for `host`: status and body, or why there was no answer.
pub async fn get(addr: &str, host: &str) -> Result<(u16, String), String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut conn = BufReader::new(stream);
    request(&mut conn, host)
        .await
        .map(|(status, body, _)| (status, body.trim().to_owned()))
}

/// `GET path` for `host` at `addr` on a connection of its own, closed after
/// the answer: its status and whole body.
pub async fn get_path(addr: &str, host: &str, path: &str) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .map_err(|_| "no answer within 10 s".to_owned())?
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((status, body))
}

/// A keep-alive connection that reconnects when the router closes it.
struct Connection<'a> {
    addr: &'a str,
    host: &'a str,
    stream: Option<BufReader<TcpStream>>,
}

impl<'a> Connection<'a> {
    fn new(addr: &'a str, host: &'a str) -> Self {
        Connection {
            addr,
            host,
            stream: None,
        }
    }

    /// Send one request (connecting first if needed) and count its answer.
    async fn send(&mut self, tally: &Mutex<Tally>) {
        let stream = match self.stream.as_mut() {
            Some(s) => s,
            None => match TcpStream::connect(self.addr).await {
                Ok(s) => self.stream.insert(BufReader::new(s)),
                Err(e) => {
                    record(tally, Err(format!("connect: {e}")));
                    return;
                }
            },
        };
        let result = request(stream, self.host).await;
        if !record(tally, result) {
            self.stream = None;
        }
    }
}

/// Count one answer; returns whether the connection can be reused.
fn record(tally: &Mutex<Tally>, result: Result<(u16, String, bool), String>) -> bool {
    let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
    match result {
        Ok((status, body, keep)) => {
            *t.statuses.entry(status).or_default() += 1;
            if status == 200 {
                let body = body.trim().to_owned();
                if t.versions.last() != Some(&body) {
                    t.versions.push(body.clone());
                }
                *t.per_version.entry(body).or_default() += 1;
            } else if t.failures.len() < 10 {
                t.failures.push(format!("{status}: {}", body.trim()));
            }
            keep
        }
        Err(e) => {
            *t.statuses.entry(0).or_default() += 1;
            if t.failures.len() < 10 {
                t.failures.push(e);
            }
            false
        }
    }
}

/// One HTTP/1.1 request on a kept-alive connection: status, body, and
/// whether the connection stays open.
pub async fn request(
    c: &mut BufReader<TcpStream>,
    host: &str,
) -> Result<(u16, String, bool), String> {
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
    c.get_mut()
        .write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let io = async {
        let mut line = String::new();
        if c.read_line(&mut line)
            .await
            .map_err(|e| format!("read: {e}"))?
            == 0
        {
            return Err("connection closed before an answer".to_owned());
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {line:?}"))?;
        let mut length = 0usize;
        let mut keep = true;
        loop {
            let mut h = String::new();
            c.read_line(&mut h)
                .await
                .map_err(|e| format!("read: {e}"))?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let lower = h.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().map_err(|_| format!("bad length {h}"))?;
            }
            if lower.starts_with("connection:") && lower.contains("close") {
                keep = false;
            }
        }
        let mut body = vec![0u8; length];
        c.read_exact(&mut body)
            .await
            .map_err(|e| format!("read body: {e}"))?;
        Ok((status, String::from_utf8_lossy(&body).into_owned(), keep))
    };
    tokio::time::timeout(Duration::from_secs(10), io)
        .await
        .map_err(|_| "no answer within 10 s".to_owned())?
}

/// A non-200 answer seen by a [`Timeline`], with when it came.
#[derive(Debug, Clone)]
pub struct Stamp {
    /// When the request was sent (ms since the Unix epoch).
    pub sent_ms: i64,
    /// When the answer was read, or given up (ms since the Unix epoch).
    pub at_ms: i64,
    /// Its status (0: no answer at all).
    pub status: u16,
    /// Its body, or why there was no answer.
    pub body: String,
}

/// A paced load like [`Load::start_rate`] that keeps the time of every
/// answer other than 200, for latency measurements (the benchmark of
/// bench/revert and the threshold tests).
pub struct Timeline {
    stop: Arc<AtomicBool>,
    total: Arc<std::sync::atomic::AtomicU64>,
    stamps: Arc<Mutex<Vec<Stamp>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Timeline {
    /// Send `rate` requests per second for `host` over `connections`
    /// keep-alive connections.
    pub fn start(addr: String, host: &str, rate: u32, connections: u32) -> Timeline {
        let stop = Arc::new(AtomicBool::new(false));
        let total = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stamps = Arc::new(Mutex::new(Vec::new()));
        let connections = connections.max(1);
        let period = Duration::from_secs_f64(f64::from(connections) / f64::from(rate.max(1)));
        let mut tasks = Vec::new();
        for i in 0..connections {
            let (addr, host) = (addr.clone(), host.to_owned());
            let (stop, total, stamps) = (stop.clone(), total.clone(), stamps.clone());
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(period.mul_f64(f64::from(i) / f64::from(connections))).await;
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let mut conn: Option<BufReader<TcpStream>> = None;
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    if conn.is_none() {
                        match TcpStream::connect(&addr).await {
                            Ok(s) => conn = Some(BufReader::new(s)),
                            Err(_) => continue,
                        }
                    }
                    let Some(c) = conn.as_mut() else { continue };
                    let sent_ms = mentat_bus::now_ms();
                    let result = request(c, &host).await;
                    total.fetch_add(1, Ordering::Relaxed);
                    let stamp = |status, body: String| Stamp {
                        sent_ms,
                        at_ms: mentat_bus::now_ms(),
                        status,
                        body: body.trim().to_owned(),
                    };
                    match result {
                        Ok((200, _, keep)) => {
                            if !keep {
                                conn = None;
                            }
                        }
                        Ok((status, body, keep)) => {
                            stamps
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(stamp(status, body));
                            if !keep {
                                conn = None;
                            }
                        }
                        Err(e) => {
                            stamps
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(stamp(0, e));
                            conn = None;
                        }
                    }
                }
            }));
        }
        let task = tokio::spawn(async move {
            for t in tasks {
                let _ = t.await;
            }
        });
        Timeline {
            stop,
            total,
            stamps,
            task,
        }
    }

    /// Requests sent so far.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The non-200 answers so far, in the order they came.
    pub fn stamps(&self) -> Vec<Stamp> {
        self.stamps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stop; the requests sent and the non-200 answers.
    pub async fn stop(self) -> (u64, Vec<Stamp>) {
        self.stop.store(true, Ordering::Relaxed);
        let stamps = self.stamps.clone();
        let total = self.total.clone();
        let _ = self.task.await;
        let stamps = stamps.lock().unwrap_or_else(|p| p.into_inner()).clone();
        (total.load(Ordering::Relaxed), stamps)
    }
}
