//! A connected bus: a NATS client and its JetStream context, with the codec
//! applied on every publish and request.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::{HeaderMap, Message};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;

use mentat_domain::Fact;

use crate::codec::{self, Encoding};
use crate::{streams, subject, Error, Result};

/// Header carrying the id of a message for JetStream de-duplication.
pub const MSG_ID: &str = "Nats-Msg-Id";

/// Oldest nats-server release Mentat works with: its consumers filter on
/// several subjects at once (`filter_subjects`), which came in 2.10.
pub const MIN_SERVER_VERSION: (u32, u32) = (2, 10);

/// The first `major.minor.patch` in `text` (`nats-server: v2.12.8`, `2.9.10`).
pub fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .find_map(|word| {
            let mut parts = word.split('.').map(str::parse::<u32>);
            match (parts.next(), parts.next(), parts.next()) {
                (Some(Ok(a)), Some(Ok(b)), Some(Ok(c))) => Some((a, b, c)),
                _ => None,
            }
        })
}

/// Why `what` (a server, or a nats-server binary) of `version` will not do.
pub fn too_old_message(what: &str, version: &str) -> String {
    format!(
        "{what} is version {version}; Mentat needs {}.{} or newer \
         (its consumers filter on several subjects at once)",
        MIN_SERVER_VERSION.0, MIN_SERVER_VERSION.1
    )
}

/// True when `version` is older than [`MIN_SERVER_VERSION`].
pub fn is_too_old((major, minor, _): (u32, u32, u32)) -> bool {
    (major, minor) < MIN_SERVER_VERSION
}

/// A connection to the bus.
#[derive(Clone, Debug)]
pub struct Bus {
    /// The core NATS client.
    pub client: async_nats::Client,
    /// The JetStream context on that client.
    pub js: jetstream::Context,
    /// Counts (re)connections to the server. Core subscriptions survive a
    /// reconnect by themselves; JetStream consumers re-open on it rather than
    /// wait for their idle heartbeats to run out (tens of seconds).
    connections: watch::Receiver<u64>,
}

impl Bus {
    /// Connect to `url`, retrying until `wait` has passed, and make sure the
    /// streams exist. A server older than [`MIN_SERVER_VERSION`] is refused
    /// ([`Error::ServerTooOld`]) before anything is created on it.
    pub async fn connect(url: &str, name: &str, wait: Duration) -> Result<Self> {
        let deadline = tokio::time::Instant::now() + wait;
        let (connected, connections) = watch::channel(0u64);
        let connected = Arc::new(connected);
        let client = loop {
            let connected = connected.clone();
            let attempt = async_nats::ConnectOptions::new()
                .event_callback(move |event| {
                    let connected = connected.clone();
                    async move {
                        if matches!(event, async_nats::Event::Connected) {
                            connected.send_modify(|n| *n += 1);
                        }
                    }
                })
                .name(name)
                .connection_timeout(Duration::from_secs(2))
                .connect(url)
                .await;
            match attempt {
                Ok(c) => break c,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(Error::Nats(format!("cannot connect to NATS at {url}: {e}")))
                }
                Err(e) => {
                    tracing::debug!(url, error = %e, "NATS not reachable yet, retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let version = client.server_info().version;
        if parse_version(&version).is_some_and(is_too_old) {
            return Err(Error::ServerTooOld {
                url: url.to_owned(),
                version,
            });
        }
        let js = jetstream::new(client.clone());
        let bus = Bus {
            client,
            js,
            connections,
        };
        streams::ensure(&bus.js).await?;
        Ok(bus)
    }

    /// Resolves at the next reconnection to the server after this call.
    pub fn reconnections(&self) -> watch::Receiver<u64> {
        let mut rx = self.connections.clone();
        rx.mark_unchanged();
        rx
    }

    /// Send a request encoded with `encoding` and decode the reply.
    pub async fn request<Req, Resp>(
        &self,
        subject: &str,
        request: &Req,
        encoding: Encoding,
        timeout: Duration,
    ) -> Result<Resp>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let payload = codec::encode(request, encoding)?;
        let req = async_nats::Request::new()
            .payload(payload)
            .headers(encoding.headers())
            .timeout(Some(timeout));
        let reply = self
            .client
            .send_request(subject.to_owned(), req)
            .await
            .map_err(|e| match e.kind() {
                async_nats::RequestErrorKind::TimedOut => Error::Timeout {
                    subject: subject.to_owned(),
                    secs: timeout.as_secs(),
                },
                async_nats::RequestErrorKind::NoResponders => Error::NoResponders {
                    subject: subject.to_owned(),
                },
                async_nats::RequestErrorKind::Other => Error::nats(e),
            })?;
        codec::decode(
            &reply.payload,
            Encoding::of(reply.headers.as_ref()),
            "reply",
        )
    }

    /// Answer `request` with `value`, in the encoding the request used.
    pub async fn reply<T: Serialize + ?Sized>(&self, request: &Message, value: &T) -> Result<()> {
        let Some(reply_to) = request.reply.clone() else {
            return Ok(());
        };
        let encoding = Encoding::of(request.headers.as_ref());
        let payload = codec::encode(value, encoding)?;
        self.client
            .publish_with_headers(reply_to, encoding.headers(), payload)
            .await
            .map_err(Error::nats)
    }

    /// Publish a fact to JetStream, with its id as `Nats-Msg-Id`, and wait
    /// for the stream to acknowledge it.
    pub async fn publish_fact(&self, fact: &Fact) -> Result<()> {
        let stream = fact
            .event
            .stream()
            .ok_or_else(|| Error::Encode(format!("{} is not a fact", fact.event.type_name())))?;
        let subject = subject::fact(&stream, fact.event.type_name());
        self.publish_durable(subject, &fact.id, fact).await
    }

    /// Publish `value` in MessagePack to a JetStream subject with `Nats-Msg-Id`
    /// set to `id`, and wait for the acknowledgement.
    pub async fn publish_durable<T: Serialize + ?Sized>(
        &self,
        subject: String,
        id: &str,
        value: &T,
    ) -> Result<()> {
        let mut headers: HeaderMap = Encoding::MsgPack.headers();
        headers.insert(MSG_ID, id);
        let payload = codec::encode(value, Encoding::MsgPack)?;
        self.js
            .publish_with_headers(subject, headers, payload)
            .await
            .map_err(Error::nats)?
            .await
            .map_err(Error::nats)?;
        Ok(())
    }

    /// Publish `value` in MessagePack on core NATS (not stored).
    pub async fn publish<T: Serialize + ?Sized>(&self, subject: String, value: &T) -> Result<()> {
        let payload = codec::encode(value, Encoding::MsgPack)?;
        self.client
            .publish_with_headers(subject, Encoding::MsgPack.headers(), payload)
            .await
            .map_err(Error::nats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_and_old_ones_refused() {
        assert_eq!(parse_version("nats-server: v2.12.8\n"), Some((2, 12, 8)));
        assert_eq!(parse_version("2.9.10"), Some((2, 9, 10)));
        assert_eq!(parse_version("2.11.0-RC.1"), Some((2, 11, 0)));
        assert_eq!(parse_version("nats-server: unknown"), None);
        assert!(is_too_old((2, 9, 10)));
        assert!(is_too_old((1, 99, 0)));
        assert!(!is_too_old((2, 10, 0)));
        assert!(!is_too_old((3, 0, 0)));
    }
}
