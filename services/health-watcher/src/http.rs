//! The probe itself: one HTTP/1.1 `GET` over a fresh TCP connection,
//! judged on the status line alone.
//!
//! Only the status line is read, so a probe costs one round trip and never
//! downloads a body; the connection is closed right after. This is all a
//! readiness probe needs, and it keeps an HTTP client library out of the
//! health-watcher.

use std::fmt;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most the probe reads while looking for the end of the status line.
const MAX_STATUS_LINE: usize = 1024;

/// Why a probe failed. Its text becomes the `reason` of `ReplicaUnhealthy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No TCP connection (refused, unreachable, bad address).
    Connect(String),
    /// The whole probe took longer than the timeout.
    Timeout(Duration),
    /// The replica answered with a status outside 2xx.
    Status(u16),
    /// The answer was not HTTP, or the connection broke mid-way.
    Protocol(String),
    /// The health path cannot be sent (it does not start with `/` or holds
    /// spaces or line breaks).
    InvalidPath(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Connect(e) => write!(f, "connection failed: {e}"),
            Failure::Timeout(t) => write!(f, "no answer within {} ms", t.as_millis()),
            Failure::Status(code) => write!(f, "HTTP status {code}"),
            Failure::Protocol(e) => write!(f, "bad HTTP answer: {e}"),
            Failure::InvalidPath(p) => write!(f, "invalid health path {p:?}"),
        }
    }
}

/// `GET http://<addr><path>` within `timeout`; `Ok` for a 2xx answer.
pub async fn get(addr: &str, path: &str, timeout: Duration) -> Result<(), Failure> {
    match status(addr, path, timeout).await {
        Ok(200..=299) => Ok(()),
        Ok(code) => Err(Failure::Status(code)),
        Err(failure) => Err(failure),
    }
}

/// `GET http://<addr><path>` within `timeout`: the status code, whatever it is.
pub async fn status(addr: &str, path: &str, timeout: Duration) -> Result<u16, Failure> {
    if !path.starts_with('/') || path.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(Failure::InvalidPath(path.to_owned()));
    }
    match tokio::time::timeout(timeout, exchange(addr, path)).await {
        Ok(result) => result,
        Err(_) => Err(Failure::Timeout(timeout)),
    }
}

/// Connect, send the request, and return the status code.
async fn exchange(addr: &str, path: &str) -> Result<u16, Failure> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| Failure::Connect(format!("{addr}: {e}")))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: mentat-health-watcher\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    let protocol = |e: std::io::Error| Failure::Protocol(e.to_string());
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(protocol)?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            return parse_status_line(&buf[..end]);
        }
        if buf.len() >= MAX_STATUS_LINE {
            return Err(Failure::Protocol("status line too long".into()));
        }
        let n = stream.read(&mut chunk).await.map_err(protocol)?;
        if n == 0 {
            return Err(Failure::Protocol(
                "connection closed before the status line".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The code of a status line such as `HTTP/1.1 200 OK`.
pub fn parse_status_line(line: &[u8]) -> Result<u16, Failure> {
    let text = String::from_utf8_lossy(line);
    let mut parts = text.split(' ');
    let version = parts.next().unwrap_or("");
    let code = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/") || code.len() != 3 {
        return Err(Failure::Protocol(format!("status line {text:?}")));
    }
    code.parse()
        .map_err(|_| Failure::Protocol(format!("status line {text:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 204 No Content"), Ok(204));
        assert_eq!(parse_status_line(b"HTTP/1.0 503"), Ok(503));
        assert!(matches!(
            parse_status_line(b"SSH-2.0-OpenSSH"),
            Err(Failure::Protocol(_))
        ));
        assert!(matches!(
            parse_status_line(b"HTTP/1.1 2000 OK"),
            Err(Failure::Protocol(_))
        ));
    }

    #[tokio::test]
    async fn refused_timed_out_and_invalid() {
        let port = mentat_testkit::free_port();
        let addr = format!("127.0.0.1:{port}");
        let t = Duration::from_millis(500);
        assert!(matches!(
            get(&addr, "/health", t).await,
            Err(Failure::Connect(_))
        ));
        assert!(matches!(
            get(&addr, "/a b", t).await,
            Err(Failure::InvalidPath(_))
        ));
        // A listener that accepts and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let _held = tokio::spawn(async move {
            let _conn = listener.accept().await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let short = Duration::from_millis(100);
        assert_eq!(
            get(&addr, "/health", short).await,
            Err(Failure::Timeout(short))
        );
    }
}
