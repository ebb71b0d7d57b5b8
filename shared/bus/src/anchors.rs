//! Where signed anchors are kept outside the database: the JetStream stream
//! `MENTAT_ANCHORS` (subject `mentat.anchors`) and, when an operator asks
//! for it, an append-only file (one JSON [`Anchor`] per line). The planner
//! writes both; the planner and `mt audit verify` read them.
//!
//! Anchors are JSON in both places, so that anyone can read them with any
//! NATS client or a text editor. Whatever is read is checked against a
//! trusted key ([`Anchor::check`]): an anchor that is malformed, too long,
//! signed by another key or badly signed is kept apart as a
//! [`ForgedAnchor`] and never used to judge the log.

use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::HeaderMap;
use mentat_domain::audit::{Anchor, ForgedAnchor, VerifyingKey, MAX_ANCHORS, MAX_ANCHOR_BYTES};

use crate::{consumer, streams, subject, Bus, Encoding, Error, Result};

/// How far back from the newest message [`latest_in_stream`] looks for one
/// that checks out.
const LATEST_LOOK_BACK: u64 = 100;
/// How long reading the stream waits for the next message before giving
/// up on the rest.
const READ_WAIT: Duration = Duration::from_secs(5);

/// Anchors read, and those that did not check out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// Anchors signed by the trusted key.
    pub anchors: Vec<Anchor>,
    /// The others.
    pub forged: Vec<ForgedAnchor>,
}

impl Found {
    /// Check one anchor's bytes, read at `source`, and keep it where it
    /// belongs.
    pub fn take(&mut self, bytes: &[u8], source: String, trusted: &VerifyingKey) {
        match check(bytes, trusted) {
            Ok(anchor) => self.anchors.push(anchor),
            Err((position, reason)) => self.forged.push(ForgedAnchor {
                source,
                position,
                reason,
            }),
        }
    }
}

/// The anchor in `bytes`, if it is one signed by `trusted`; otherwise the
/// position it claims (when readable) and what is wrong.
pub fn check(
    bytes: &[u8],
    trusted: &VerifyingKey,
) -> std::result::Result<Anchor, (Option<i64>, String)> {
    if bytes.len() > MAX_ANCHOR_BYTES {
        return Err((
            None,
            format!(
                "{} bytes, an anchor is at most {MAX_ANCHOR_BYTES}",
                bytes.len()
            ),
        ));
    }
    let anchor: Anchor =
        serde_json::from_slice(bytes).map_err(|e| (None, format!("not an anchor: {e}")))?;
    anchor
        .check(trusted)
        .map(|()| anchor.clone())
        .map_err(|reason| (Some(anchor.position), reason))
}

/// Publish `anchor` to `MENTAT_ANCHORS` and wait for the stream to keep it.
pub async fn publish(bus: &Bus, anchor: &Anchor) -> Result<()> {
    let payload = serde_json::to_vec(anchor).map_err(|e| Error::Encode(e.to_string()))?;
    let mut headers: HeaderMap = Encoding::Json.headers();
    let id = format!("anchor-{}-{}", anchor.position, anchor.at_ms);
    headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
    bus.js
        .publish_with_headers(subject::ANCHORS, headers, payload.into())
        .await
        .map_err(Error::nats)?
        .await
        .map_err(Error::nats)?;
    Ok(())
}

/// Every anchor in `MENTAT_ANCHORS` (the newest [`MAX_ANCHORS`] when there
/// are more), checked against `trusted`.
pub async fn read_stream(bus: &Bus, trusted: &VerifyingKey, found: &mut Found) -> Result<()> {
    let mut replay =
        consumer::ordered(bus, streams::ANCHORS, Vec::new(), DeliverPolicy::All).await?;
    let total = replay.backlog;
    let skip = total.saturating_sub(MAX_ANCHORS as u64);
    for n in 0..total {
        let next = tokio::time::timeout(READ_WAIT, replay.next()).await;
        let msg = match next {
            Ok(Some(Ok(msg))) => msg,
            Ok(Some(Err(e))) => return Err(e),
            Ok(None) | Err(_) => {
                return Err(Error::Nats(format!(
                    "{} stopped after {n} of {total} anchors",
                    streams::ANCHORS
                )))
            }
        };
        if n < skip {
            continue;
        }
        let sequence = msg.info().map_or(0, |i| i.stream_sequence);
        found.take(&msg.payload, format!("stream #{sequence}"), trusted);
    }
    Ok(())
}

/// The newest anchor in `MENTAT_ANCHORS` signed by `trusted`, looking back
/// past at most [`LATEST_LOOK_BACK`] that are not, which are returned too.
pub async fn latest_in_stream(bus: &Bus, trusted: &VerifyingKey) -> Result<Found> {
    let mut stream = bus
        .js
        .get_stream(streams::ANCHORS)
        .await
        .map_err(Error::nats)?;
    let state = stream.info().await.map_err(Error::nats)?.state.clone();
    let mut found = Found::default();
    let mut sequence = state.last_sequence;
    while sequence >= state.first_sequence.max(1)
        && state.last_sequence - sequence < LATEST_LOOK_BACK
    {
        // A message deleted from the stream leaves a hole: skip it.
        if let Ok(msg) = stream.get_raw_message(sequence).await {
            found.take(&msg.payload, format!("stream #{sequence}"), trusted);
            if !found.anchors.is_empty() {
                break;
            }
        }
        sequence -= 1;
    }
    Ok(found)
}

/// Every anchor of the file at `path` (one JSON anchor per line; blank
/// lines skipped), checked against `trusted`. A file that does not exist
/// holds none. Reads at most [`MAX_ANCHORS`] lines, and at most
/// [`MAX_ANCHOR_BYTES`] of each.
pub fn read_file(path: &Path, trusted: &VerifyingKey, found: &mut Found) -> std::io::Result<()> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut reader = std::io::BufReader::new(file);
    let mut line = Vec::new();
    for number in 1..=MAX_ANCHORS {
        line.clear();
        let read = Read::by_ref(&mut reader)
            .take(MAX_ANCHOR_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if read == 0 {
            break;
        }
        let whole = line.last() == Some(&b'\n');
        if !whole && line.len() > MAX_ANCHOR_BYTES {
            // Skip the rest of an overlong line.
            let mut rest = Vec::new();
            reader.read_until(b'\n', &mut rest)?;
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let source = format!("{}:{number}", path.display());
        if !whole && line.len() > MAX_ANCHOR_BYTES {
            found.forged.push(ForgedAnchor {
                source,
                position: None,
                reason: format!("a line longer than {MAX_ANCHOR_BYTES} bytes"),
            });
            continue;
        }
        found.take(text, source, trusted);
    }
    Ok(())
}

/// Append `anchor` to the file at `path` as one JSON line, creating it
/// (and its directory) when needed, and wait for it to be on disk.
pub fn append_file(path: &Path, anchor: &Anchor) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut line = serde_json::to_vec(anchor)?;
    line.push(b'\n');
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(&line)?;
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use mentat_domain::audit::SigningKey;

    use super::*;

    fn signer() -> SigningKey {
        SigningKey::from_bytes(&[9; 32])
    }

    #[test]
    fn a_file_of_anchors_is_read_back_and_forged_lines_are_named() {
        let dir = std::env::temp_dir().join(format!("anchors-{}", uuid::Uuid::now_v7()));
        let path = dir.join("anchors.ndjson");
        let key = signer();
        for position in [3, 9] {
            let anchor = Anchor::sign(&key, position, &"a".repeat(64), 1_700_000_000_000);
            append_file(&path, &anchor).expect("append");
        }
        let mut forged = Anchor::sign(&key, 12, &"a".repeat(64), 1);
        forged.head_hash = "b".repeat(64);
        let mut text = std::fs::read_to_string(&path).expect("read");
        text.push_str(&serde_json::to_string(&forged).expect("json"));
        text.push_str("\n\nnot json\n");
        text.push_str(&"x".repeat(MAX_ANCHOR_BYTES * 3));
        text.push('\n');
        std::fs::write(&path, text).expect("write");

        let mut found = Found::default();
        read_file(&path, &key.verifying_key(), &mut found).expect("read");
        let positions: Vec<i64> = found.anchors.iter().map(|a| a.position).collect();
        assert_eq!(positions, [3, 9]);
        let forged: Vec<(String, Option<i64>)> = found
            .forged
            .iter()
            .map(|f| {
                (
                    f.source.rsplit(':').next().unwrap_or("").to_owned(),
                    f.position,
                )
            })
            .collect();
        assert_eq!(
            forged,
            [
                ("3".to_owned(), Some(12)),
                ("5".to_owned(), None),
                ("6".to_owned(), None)
            ]
        );
        let mut none = Found::default();
        read_file(&dir.join("missing"), &key.verifying_key(), &mut none).expect("no file");
        assert_eq!(none, Found::default());
        let _ = std::fs::remove_dir_all(dir);
    }
}
