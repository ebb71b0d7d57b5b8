//! One POST of a webhook body over a fresh TCP connection, judged on the
//! status line (plain HTTP/1.1; the body of the answer is not read).

use std::time::Duration;

use mentat_domain::notify::Url;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most read while looking for the end of the status line.
const MAX_STATUS_LINE: usize = 1024;

/// What a POST carries besides its body.
#[derive(Debug, Clone, Default)]
pub struct Headers {
    /// `X-Mentat-Event` (the event type).
    pub event_type: String,
    /// `X-Mentat-Event-Id` and `Idempotency-Key`.
    pub event_id: String,
    /// `X-Mentat-Signature`, when the webhook has a secret.
    pub signature: Option<String>,
}

/// POST `body` to `url` within `timeout`: the status code, or why there is none.
pub async fn post(
    url: &Url,
    headers: &Headers,
    body: &[u8],
    timeout: Duration,
) -> Result<u16, String> {
    match tokio::time::timeout(timeout, exchange(url, headers, body)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

fn request_head(url: &Url, headers: &Headers, length: usize) -> String {
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\nUser-Agent: mentat-notifier\r\nX-Mentat-Event: {}\r\nX-Mentat-Event-Id: {}\r\nIdempotency-Key: {}\r\nConnection: close\r\n",
        url.path, url.host, url.port, headers.event_type, headers.event_id, headers.event_id
    );
    if let Some(sig) = &headers.signature {
        head.push_str(&format!("X-Mentat-Signature: {sig}\r\n"));
    }
    head.push_str("\r\n");
    head
}

async fn exchange(url: &Url, headers: &Headers, body: &[u8]) -> Result<u16, String> {
    let mut stream = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| format!("connection failed: {e}"))?;
    let mut request = request_head(url, headers, body.len()).into_bytes();
    request.extend_from_slice(body);
    stream
        .write_all(&request)
        .await
        .map_err(|e| format!("sending: {e}"))?;
    let mut buf = Vec::with_capacity(128);
    let mut chunk = [0u8; 256];
    while !buf.contains(&b'\n') {
        if buf.len() > MAX_STATUS_LINE {
            return Err("no status line in the first 1024 bytes".into());
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("reading: {e}"))?;
        if n == 0 {
            return Err("connection closed before a status line".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    let mut parts = line.split_whitespace();
    match (
        parts.next(),
        parts.next().and_then(|c| c.parse::<u16>().ok()),
    ) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") => Ok(code),
        _ => Err(format!(
            "not an HTTP status line: {:?}",
            line.lines().next().unwrap_or("")
        )),
    }
}
