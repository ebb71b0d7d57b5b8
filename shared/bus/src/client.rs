//! A connected bus: a NATS client and its JetStream context, with the codec
//! applied on every publish and request.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::{HeaderMap, Message, ServerAddr};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::access::Access;

use mentat_domain::{EventEnvelope, Fact};

use crate::codec::{self, Encoding};
use crate::streams::{self, Replicas};
use crate::{subject, Error, Result};

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

/// The servers of a NATS URL list: one URL, or several separated by commas
/// (`nats://a:4222,nats://b:4222`), as `--nats` and `MENTAT_NATS_URL` take
/// them. The client connects to any of them and moves to another when the
/// one it uses goes away.
pub fn server_addrs(urls: &str) -> Result<Vec<ServerAddr>> {
    let addrs = urls
        .split(',')
        .map(str::trim)
        .map(|url| {
            if url.is_empty() {
                return Err(Error::InvalidUrl {
                    url: urls.to_owned(),
                    detail: "an empty entry in the list".into(),
                });
            }
            url.parse::<ServerAddr>().map_err(|e| Error::InvalidUrl {
                url: url.to_owned(),
                detail: e.to_string(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(addrs)
}

/// `urls` as it may be shown: every password replaced by `***`.
pub fn redact(urls: &str) -> String {
    urls.split(',')
        .map(|url| {
            let Some((scheme, rest)) = url.split_once("://") else {
                return url.to_owned();
            };
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let (authority, tail) = rest.split_at(end);
            match authority.rsplit_once('@') {
                Some((userinfo, host)) => match userinfo.split_once(':') {
                    Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
                    None => format!("{scheme}://***@{host}{tail}"),
                },
                None => url.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// How a client proves who it is, read from the URLs' user information
/// (async-nats itself ignores it): `USER:PASSWORD@` is a user and password,
/// `TOKEN@` alone a token. Every URL of a list that carries credentials must
/// carry the same ones.
#[derive(Clone, PartialEq, Eq)]
pub enum UrlAuth {
    /// No credentials in the URLs.
    None,
    /// `nats://USER:PASSWORD@…`.
    UserPassword(String, String),
    /// `nats://TOKEN@…`.
    Token(String),
}

impl std::fmt::Debug for UrlAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UrlAuth::None => f.write_str("None"),
            UrlAuth::UserPassword(user, _) => write!(f, "UserPassword({user}, ***)"),
            UrlAuth::Token(_) => f.write_str("Token(***)"),
        }
    }
}

impl UrlAuth {
    /// The credentials of `addrs` (percent-decoded).
    pub fn of(addrs: &[ServerAddr]) -> Result<UrlAuth> {
        let mut found = UrlAuth::None;
        for addr in addrs {
            let auth = match (addr.username(), addr.password()) {
                (Some(user), Some(pass)) => UrlAuth::UserPassword(decode(user), decode(pass)),
                (Some(token), None) => UrlAuth::Token(decode(token)),
                _ => continue,
            };
            if found != UrlAuth::None && found != auth {
                return Err(Error::InvalidUrl {
                    url: redact(addr.clone().into_inner().as_ref()),
                    detail: "the URLs of one list carry different credentials".into(),
                });
            }
            found = auth;
        }
        Ok(found)
    }

    fn apply(&self, options: async_nats::ConnectOptions) -> async_nats::ConnectOptions {
        match self {
            UrlAuth::None => options,
            UrlAuth::UserPassword(user, pass) => {
                options.user_and_password(user.clone(), pass.clone())
            }
            UrlAuth::Token(token) => options.token(token.clone()),
        }
    }
}

/// `text` with its `%XX` escapes decoded (as URL user information is written).
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// True for a subject of the JetStream API (`$JS.API.…`, `$JS.ACK.…`).
pub fn is_jetstream_api(subject: &str) -> bool {
    subject.starts_with("$JS.")
}

/// How many servers `info` announces in its cluster (its own client URL
/// and those of the servers it has routes to); 1 for a server alone.
pub fn cluster_servers(info: &async_nats::ServerInfo) -> usize {
    let urls: std::collections::BTreeSet<&str> =
        info.connect_urls.iter().map(String::as_str).collect();
    urls.len().max(1)
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
    /// The replicas of the streams this connection creates.
    replication: streams::Replication,
    /// What the server refused this identity, as it says so.
    violations: broadcast::Sender<Violation>,
}

/// Something the server refused this connection's identity: publishing or
/// subscribing on `subject`. It says so on the connection, not in answer
/// to the operation, which otherwise waits for a reply that never comes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// `publish` or `subscribe`.
    pub action: &'static str,
    /// The subject refused.
    pub subject: String,
}

impl Violation {
    /// Read the server's `Permissions Violation for Publish to "x"` (or
    /// `for Subscription to "x"`).
    pub fn parse(error: &str) -> Option<Violation> {
        let rest = error.trim().strip_prefix("Permissions Violation for ")?;
        let action = if rest.starts_with("Publish") {
            "publish"
        } else if rest.starts_with("Subscription") {
            "subscribe"
        } else {
            return None;
        };
        let (_, quoted) = rest.split_once('"')?;
        let (subject, _) = quoted.split_once('"')?;
        Some(Violation {
            action,
            subject: subject.to_owned(),
        })
    }
}

impl Bus {
    /// [`Bus::connect_with`] with no credentials and [`Replicas::Auto`]:
    /// what tests use.
    pub async fn connect(urls: &str, name: &str, wait: Duration) -> Result<Self> {
        Self::connect_with(&Access::open(urls), name, wait, Replicas::Auto).await
    }

    /// Connect to any server of `urls` (one URL or several separated by
    /// commas, see [`server_addrs`]), retrying until `wait` has passed, and
    /// make sure the streams exist with `replicas`. A server older than
    /// [`MIN_SERVER_VERSION`] is refused ([`Error::ServerTooOld`]) before
    /// anything is created on it. Once connected, the client reconnects by
    /// itself for as long as it lives, to whichever server of the list (or
    /// of the cluster, which the servers announce) answers. The identity is
    /// `access`'s credentials, else the user or token in the URLs.
    pub async fn connect_with(
        access: &Access,
        name: &str,
        wait: Duration,
        replicas: Replicas,
    ) -> Result<Self> {
        let urls = access.urls.as_str();
        let addrs = server_addrs(urls)?;
        let auth = UrlAuth::of(&addrs)?;
        let shown = redact(urls);
        let deadline = tokio::time::Instant::now() + wait;
        let (connected, connections) = watch::channel(0u64);
        let connected = Arc::new(connected);
        let (violations, _) = broadcast::channel(64);
        let client = loop {
            let connected = connected.clone();
            let refused = violations.clone();
            let mut options = auth.apply(async_nats::ConnectOptions::new());
            if let Some(credentials) = &access.credentials {
                options = credentials.apply(options)?;
            }
            if let Some(ca) = &access.ca {
                options = options.add_root_certificates(ca.clone()).require_tls(true);
            }
            let attempt = options
                .event_callback(move |event| {
                    let connected = connected.clone();
                    let refused = refused.clone();
                    async move {
                        match event {
                            async_nats::Event::Connected => connected.send_modify(|n| *n += 1),
                            async_nats::Event::Disconnected => {
                                tracing::warn!("disconnected from NATS; reconnecting")
                            }
                            async_nats::Event::ServerError(async_nats::ServerError::Other(e)) => {
                                match Violation::parse(&e) {
                                    Some(v) => {
                                        tracing::error!(
                                            action = v.action,
                                            subject = %v.subject,
                                            "the NATS server refused this identity; see the permissions of its credentials"
                                        );
                                        let _ = refused.send(v);
                                    }
                                    None => tracing::warn!(error = %e, "NATS server error"),
                                }
                            }
                            _ => {}
                        }
                    }
                })
                .name(name)
                .connection_timeout(Duration::from_secs(2))
                // Never give up reconnecting: a service outlives any one server.
                .max_reconnects(None)
                .connect(addrs.as_slice())
                .await;
            match attempt {
                Ok(c) => break c,
                // Refused credentials stay refused: say so now, not at the deadline.
                Err(e)
                    if matches!(
                        e.kind(),
                        async_nats::ConnectErrorKind::AuthorizationViolation
                            | async_nats::ConnectErrorKind::Authentication
                    ) =>
                {
                    return Err(Error::Refused {
                        url: shown,
                        detail: e.to_string(),
                    })
                }
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(Error::Nats(format!(
                        "cannot connect to NATS at {shown}: {e}"
                    )))
                }
                Err(e) => {
                    tracing::debug!(urls = %shown, error = %e, "NATS not reachable yet, retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let info = client.server_info();
        if parse_version(&info.version).is_some_and(is_too_old) {
            return Err(Error::ServerTooOld {
                url: shown,
                version: info.version,
            });
        }
        let replication = streams::Replication {
            replicas,
            servers: cluster_servers(&info),
        };
        tracing::info!(
            server = %info.server_name,
            servers = replication.servers,
            stream_replicas = replication.count(),
            "connected to NATS"
        );
        let js = jetstream::new(client.clone());
        let bus = Bus {
            client,
            js,
            connections,
            replication,
            violations,
        };
        // A cluster that has just started answers before it has elected its
        // JetStream leader: keep trying until `wait` has passed.
        loop {
            let ensured = bus.refusable(is_jetstream_api, streams::ensure(&bus.js, replication));
            match ensured.await {
                Ok(()) => return Ok(bus),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, "JetStream not ready yet, retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// The replicas of the streams this connection creates, and why.
    pub fn replication(&self) -> streams::Replication {
        self.replication
    }

    /// Run `op`, failing it with [`Error::Unauthorised`] as soon as the
    /// server says it refused this identity a subject `refused` picks:
    /// what would otherwise wait for a reply that never comes.
    pub async fn refusable<T>(
        &self,
        refused: impl Fn(&str) -> bool,
        op: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let mut violations = self.violations.subscribe();
        tokio::pin!(op);
        loop {
            tokio::select! {
                done = &mut op => return done,
                seen = violations.recv() => match seen {
                    Ok(v) if refused(&v.subject) => {
                        return Err(Error::Unauthorised {
                            action: v.action,
                            subject: v.subject,
                        })
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return op.await,
                },
            }
        }
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
        let sent = async {
            self.client
                .send_request(subject.to_owned(), req)
                .await
                .map_err(|e| Self::request_error(subject, timeout, e))
        };
        let reply = self.refusable(|s| s == subject, sent).await?;
        codec::decode(
            &reply.payload,
            Encoding::of(reply.headers.as_ref()),
            "reply",
        )
    }

    fn request_error(subject: &str, timeout: Duration, e: async_nats::RequestError) -> Error {
        match e.kind() {
            async_nats::RequestErrorKind::TimedOut => Error::Timeout {
                subject: subject.to_owned(),
                secs: timeout.as_secs(),
            },
            async_nats::RequestErrorKind::NoResponders => Error::NoResponders {
                subject: subject.to_owned(),
            },
            async_nats::RequestErrorKind::Other => Error::nats(e),
        }
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
        let not_a_fact = || Error::Encode(format!("{} is not a fact", fact.event.type_name()));
        let stream = fact.event.stream().ok_or_else(not_a_fact)?;
        let source = fact.event.fact_source().ok_or_else(not_a_fact)?;
        let subject = subject::fact(source, &stream, fact.event.type_name());
        self.publish_durable(subject, &fact.id, fact).await
    }

    /// Publish an event of the log to `MENTAT_EVENTS`, on
    /// `mentat.evt.<stream>.<EventType>` with its id as `Nats-Msg-Id`, and
    /// wait for the stream to acknowledge it (what the planner's relay does;
    /// only the planner's identity may).
    pub async fn publish_event(&self, env: &EventEnvelope) -> Result<()> {
        let subject = subject::event(&env.stream, env.event.type_name());
        self.publish_durable(subject, &env.id, env).await
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
        let published = async {
            self.js
                .publish_with_headers(subject.clone(), headers, payload)
                .await
                .map_err(Error::nats)?
                .await
                .map_err(Error::nats)
        };
        self.refusable(|s| s == subject, published).await?;
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

    #[test]
    fn a_url_list_gives_every_server_and_a_bad_entry_is_named() {
        let one = server_addrs("nats://127.0.0.1:4222").expect("one URL");
        assert_eq!(one.len(), 1);
        let three = server_addrs("nats://127.0.0.1:4222, nats://127.0.0.1:4223,127.0.0.1:4224")
            .expect("three URLs");
        let ports: Vec<u16> = three.iter().map(ServerAddr::port).collect();
        assert_eq!(ports, [4222, 4223, 4224]);
        for bad in ["", "nats://a:1,,nats://b:2", "nats://a:1,"] {
            assert!(
                matches!(server_addrs(bad), Err(Error::InvalidUrl { .. })),
                "{bad:?}"
            );
        }
        match server_addrs("nats://a:1,nats://b:port") {
            Err(Error::InvalidUrl { url, .. }) => assert_eq!(url, "nats://b:port"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn permission_violations_are_read() {
        assert_eq!(
            Violation::parse(r#"Permissions Violation for Publish to "mentat.cmd.deploy""#),
            Some(Violation {
                action: "publish",
                subject: "mentat.cmd.deploy".into()
            })
        );
        assert_eq!(
            Violation::parse(r#"Permissions Violation for Subscription to "mentat.evt.>""#),
            Some(Violation {
                action: "subscribe",
                subject: "mentat.evt.>".into()
            })
        );
        assert_eq!(Violation::parse("Maximum Payload Violation"), None);
        assert_eq!(Violation::parse("Permissions Violation for Publish"), None);
    }

    #[test]
    fn the_servers_of_a_cluster_are_counted_once_each() {
        let info = |urls: &[&str]| async_nats::ServerInfo {
            connect_urls: urls.iter().map(|u| (*u).to_owned()).collect(),
            ..Default::default()
        };
        assert_eq!(cluster_servers(&info(&[])), 1);
        assert_eq!(cluster_servers(&info(&["127.0.0.1:4222"])), 1);
        let three = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:2"];
        assert_eq!(cluster_servers(&info(&three)), 3);
    }
}
