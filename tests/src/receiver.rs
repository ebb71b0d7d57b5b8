//! A webhook receiver for the notifier's tests: an HTTP/1.1 server on a
//! free port that records every request (head fields, body, when it came,
//! the status it answered) and answers 200, or 503 to the first
//! `fail_first` requests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Path of the request line.
    pub path: String,
    /// Head fields, names lowercased.
    pub headers: BTreeMap<String, String>,
    /// The body.
    pub body: Vec<u8>,
    /// When it was read whole (ms since the epoch).
    pub at_ms: i64,
    /// The status answered.
    pub status: u16,
}

/// The receiver; it stops with the test's runtime.
#[derive(Debug, Clone)]
pub struct Receiver {
    /// Its port on 127.0.0.1.
    pub port: u16,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    /// Listen on a free port; answer 503 to the first `fail_first` requests.
    pub async fn start(fail_first: usize) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let kept = got.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let got = kept.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, got, fail_first).await;
                });
            }
        });
        Receiver { port, got }
    }

    /// Every request so far, in the order they were read.
    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

async fn serve(
    mut stream: TcpStream,
    got: Arc<Mutex<Vec<Received>>>,
    fail_first: usize,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.lines();
    let path = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("")
        .to_owned();
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let status = {
        let mut all = got.lock().unwrap();
        let status = if all.len() < fail_first { 503 } else { 200 };
        all.push(Received {
            path,
            headers,
            body,
            at_ms: mentat_bus::now_ms(),
            status,
        });
        status
    };
    let answer = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(answer.as_bytes()).await?;
    stream.shutdown().await
}
