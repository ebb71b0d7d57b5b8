//! A raw recording backend: it keeps every byte each connection brought it,
//! answers each complete, well-framed request with a fixed answer (or
//! never), and notes when the router closes a connection. Its parser is
//! deliberately strict and separate from the router's: it is the oracle
//! for "the backend saw exactly one well-framed request".

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What one connection brought the backend.
#[derive(Debug, Clone, Default)]
pub struct Conn {
    /// Every byte received, in order.
    pub bytes: Vec<u8>,
    /// The router closed the connection (or reset it).
    pub closed: bool,
}

/// A request as the backend received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub target: String,
    /// Name and value of each header field, in order, as sent.
    pub fields: Vec<(String, String)>,
    /// The body, decoded when it was chunked.
    pub body: Vec<u8>,
}

impl Received {
    /// The values of the fields called `name` (any case), in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The only value of `name`; panics when there are none or several.
    pub fn one(&self, name: &str) -> &str {
        match self.all(name).as_slice() {
            [one] => one,
            other => panic!("{name}: expected one field, got {other:?} in {self:?}"),
        }
    }
}

/// A raw recording backend on port 0.
pub struct Recorder {
    pub addr: SocketAddr,
    conns: Arc<Mutex<Vec<Arc<Mutex<Conn>>>>>,
    task: JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorder {
    /// A backend answering every well-framed request with `answer`.
    pub async fn start(answer: &'static [u8]) -> Recorder {
        Self::run(Some(answer)).await
    }

    /// A backend that reads and records, and never answers.
    pub async fn silent() -> Recorder {
        Self::run(None).await
    }

    async fn run(answer: Option<&'static [u8]>) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let conns: Arc<Mutex<Vec<Arc<Mutex<Conn>>>>> = Arc::default();
        let all = conns.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let log = Arc::new(Mutex::new(Conn::default()));
                all.lock().expect("lock").push(log.clone());
                tokio::spawn(async move {
                    let mut pending = Vec::new();
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        log.lock().expect("lock").bytes.extend_from_slice(&buf[..n]);
                        pending.extend_from_slice(&buf[..n]);
                        while let Ok(Some((_, used))) = next_request(&pending) {
                            pending.drain(..used);
                            if let Some(answer) = answer {
                                if stream.write_all(answer).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    log.lock().expect("lock").closed = true;
                });
            }
        });
        Recorder { addr, conns, task }
    }

    /// What each connection brought, in the order they were accepted.
    pub fn connections(&self) -> Vec<Conn> {
        self.conns
            .lock()
            .expect("lock")
            .iter()
            .map(|c| c.lock().expect("lock").clone())
            .collect()
    }

    /// Not one byte reached the backend.
    pub fn received_nothing(&self) -> bool {
        self.connections().iter().all(|c| c.bytes.is_empty())
    }

    /// Every connection's bytes as whole, well-framed requests; an error
    /// when some bytes are not (broken, or a request left unfinished).
    pub fn requests(&self) -> Result<Vec<Received>, String> {
        let mut all = Vec::new();
        for conn in self.connections() {
            let mut rest = &conn.bytes[..];
            while !rest.is_empty() {
                match next_request(rest)? {
                    Some((request, used)) => {
                        all.push(request);
                        rest = &rest[used..];
                    }
                    None => {
                        return Err(format!(
                            "an unfinished request: {}",
                            String::from_utf8_lossy(rest)
                        ))
                    }
                }
            }
        }
        Ok(all)
    }

    /// The one request the backend received, well framed; panics otherwise.
    pub fn only_request(&self) -> Received {
        match self.requests() {
            Ok(mut requests) if requests.len() == 1 => requests.remove(0),
            other => panic!("expected exactly one well-framed request, got {other:?}"),
        }
    }

    /// Wait (at most 10 s) until every connection the router opened is closed.
    pub async fn all_closed(&self) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let conns = self.connections();
            if !conns.is_empty() && conns.iter().all(|c| c.closed) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The first request in `bytes` and the bytes it takes; `None` while it
/// is unfinished. Strict: CRLF lines only, a Content-Length of digits or
/// `Transfer-Encoding: chunked` alone, chunks of hex sizes.
pub fn next_request(bytes: &[u8]) -> Result<Option<(Received, usize)>, String> {
    let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = &bytes[..end + 4];
    if head
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || head[i - 1] != b'\r'))
    {
        return Err("a bare LF in the head".into());
    }
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut fields);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        other => return Err(format!("not a request head: {other:?}")),
    }
    let fields: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let request = |body| Received {
        method: parsed.method.unwrap_or_default().to_owned(),
        target: parsed.path.unwrap_or_default().to_owned(),
        fields: fields.clone(),
        body,
    };
    let named = |name: &str| -> Vec<&str> {
        fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let coded = named("transfer-encoding");
    let lengths = named("content-length");
    let rest = &bytes[head.len()..];
    match (coded.as_slice(), lengths.as_slice()) {
        ([], []) => Ok(Some((request(Vec::new()), head.len()))),
        ([], [length]) => {
            if length.is_empty() || !length.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("bad content-length {length:?}"));
            }
            let n: usize = length.parse().map_err(|e| format!("{e}"))?;
            if rest.len() < n {
                return Ok(None);
            }
            Ok(Some((request(rest[..n].to_vec()), head.len() + n)))
        }
        (["chunked"], []) => {
            Ok(dechunk(rest)?.map(|(body, used)| (request(body), head.len() + used)))
        }
        _ => Err(format!("ambiguous framing: {coded:?} {lengths:?}")),
    }
}

/// A chunked body without trailers (the router sends none): the data and
/// the bytes it takes; `None` while unfinished.
fn dechunk(mut bytes: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let total = bytes.len();
    let mut body = Vec::new();
    loop {
        let Some(eol) = bytes.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = &bytes[..eol];
        if line.is_empty() || !line.iter().all(u8::is_ascii_hexdigit) {
            return Err(format!(
                "bad chunk size {:?}",
                String::from_utf8_lossy(line)
            ));
        }
        let size = usize::from_str_radix(std::str::from_utf8(line).expect("hex"), 16)
            .map_err(|e| format!("{e}"))?;
        bytes = &bytes[eol + 2..];
        if size == 0 {
            return match bytes {
                [b'\r', b'\n', ..] => Ok(Some((body, total - bytes.len() + 2))),
                [] | [b'\r'] => Ok(None),
                _ => Err("trailers or junk after the last chunk".into()),
            };
        }
        if bytes.len() < size + 2 {
            return Ok(None);
        }
        if &bytes[size..size + 2] != b"\r\n" {
            return Err("a chunk longer than its size".into());
        }
        body.extend_from_slice(&bytes[..size]);
        bytes = &bytes[size + 2..];
    }
}
