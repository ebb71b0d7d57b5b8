//! JetStream streams. They make the bus durable: a command published while
//! the planner is down, a fact published while it restarts, and every event
//! the log has recorded are kept until a consumer takes them.
//!
//! On a NATS cluster of three or more servers the streams are replicated on
//! three of them, so that losing one server loses nothing and stops
//! nothing: see [`Replicas`].

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::{subject, Error, Result};

/// Most replicas JetStream keeps of a stream.
pub const MAX_REPLICAS: usize = 5;
/// Replicas of every stream on a cluster of at least this many servers,
/// under [`Replicas::Auto`]: a majority survives the loss of one server.
pub const CLUSTER_REPLICAS: usize = 3;

/// How many copies of each stream JetStream keeps (`--stream-replicas`,
/// `MENTAT_STREAM_REPLICAS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Replicas {
    /// [`CLUSTER_REPLICAS`] when the server connected to announces three or
    /// more servers in its cluster, else 1. A stream that exists already is
    /// left as it is: a difference is logged, never changed by a guess (a
    /// client that starts while a server is down sees fewer servers).
    #[default]
    Auto,
    /// This many (1 to [`MAX_REPLICAS`]), and a stream that exists with
    /// another count is updated to it.
    Exactly(usize),
}

impl Replicas {
    /// The replicas to create a stream with, on a cluster that announces
    /// `servers` servers (1 for a server alone).
    pub fn count(self, servers: usize) -> usize {
        match self {
            Replicas::Exactly(n) => n,
            Replicas::Auto if servers >= CLUSTER_REPLICAS => CLUSTER_REPLICAS,
            Replicas::Auto => 1,
        }
    }
}

impl FromStr for Replicas {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            "auto" => Ok(Replicas::Auto),
            n => match n.parse::<usize>() {
                Ok(n @ 1..=MAX_REPLICAS) => Ok(Replicas::Exactly(n)),
                _ => Err(format!(
                    "`{s}` is neither `auto` nor a number of replicas from 1 to {MAX_REPLICAS}"
                )),
            },
        }
    }
}

impl fmt::Display for Replicas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Replicas::Auto => f.write_str("auto"),
            Replicas::Exactly(n) => write!(f, "{n}"),
        }
    }
}

/// What decides the replicas of the streams a [`crate::Bus`] creates: the
/// setting, and how many servers the cluster announced at connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replication {
    /// The setting.
    pub replicas: Replicas,
    /// Servers the cluster announced (1 for a server alone).
    pub servers: usize,
}

impl Replication {
    /// A server alone, one replica: what tests of a single server use.
    pub const SINGLE: Replication = Replication {
        replicas: Replicas::Auto,
        servers: 1,
    };

    /// The replicas a stream is created with.
    pub fn count(&self) -> usize {
        self.replicas.count(self.servers)
    }
}

/// Commands (`mentat.cmd.>`), kept so that none is lost while the planner is
/// down. `no_ack` so that request/reply on the same subjects still reaches
/// the planner's answer, not the stream's acknowledgement.
pub const COMMANDS: &str = "MENTAT_COMMANDS";
/// Facts from executors, the health-watcher and routers (`mentat.fact.>`).
pub const FACTS: &str = "MENTAT_FACTS";
/// Every event of the log, published by the planner's relay (`mentat.evt.>`).
pub const EVENTS: &str = "MENTAT_EVENTS";
/// Signed anchors of the log's head (`mentat.anchors`), published by the
/// leading planner every `--anchor-every-secs` and on `mt audit anchor`.
/// Kept for ever, like the log: a verifier checks the log against each.
/// Created by [`ensure_anchors`] (the planner), not [`ensure`].
pub const ANCHORS: &str = "MENTAT_ANCHORS";

/// Router traffic statistics (`mentat.stats.>`), one message per router per
/// interval, kept [`STATS_MAX_AGE`] so that a restarted health-watcher can
/// rebuild its recent windows. Created by [`ensure_stats`], not [`ensure`]:
/// only routers and their consumers need it.
pub const STATS: &str = "MENTAT_STATS";
/// How long traffic statistics are kept.
pub const STATS_MAX_AGE: Duration = Duration::from_secs(15 * 60);

/// Window within which JetStream drops a re-published message with the same `Nats-Msg-Id`.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Configuration of the three streams every service ensures.
pub fn configs() -> [stream::Config; 3] {
    [
        stream::Config {
            name: COMMANDS.into(),
            subjects: vec![subject::CMD_ALL.into()],
            no_ack: true,
            max_age: Duration::from_secs(24 * 3600),
            duplicate_window: DUPLICATE_WINDOW,
            storage: stream::StorageType::File,
            ..Default::default()
        },
        stream::Config {
            name: FACTS.into(),
            subjects: vec![subject::FACT_ALL.into()],
            max_age: Duration::from_secs(7 * 24 * 3600),
            duplicate_window: DUPLICATE_WINDOW,
            storage: stream::StorageType::File,
            ..Default::default()
        },
        stream::Config {
            name: EVENTS.into(),
            subjects: vec![subject::EVT_ALL.into()],
            duplicate_window: DUPLICATE_WINDOW,
            storage: stream::StorageType::File,
            ..Default::default()
        },
    ]
}

/// Create the streams that do not exist yet, with the replicas
/// `replication` asks for, and bring the replicas of existing ones in line
/// when the setting is explicit (see [`Replicas`]). Every service calls
/// this at start-up, so the order in which they start does not matter.
pub async fn ensure(js: &jetstream::Context, replication: Replication) -> Result<()> {
    for config in configs() {
        ensure_one(js, config, replication).await?;
    }
    Ok(())
}

/// Create one stream if it does not exist yet, and reconcile its replicas.
async fn ensure_one(
    js: &jetstream::Context,
    mut config: stream::Config,
    replication: Replication,
) -> Result<()> {
    let name = config.name.clone();
    let wanted = replication.count();
    config.num_replicas = wanted;
    let stream = js
        .get_or_create_stream(config)
        .await
        .map_err(|e| Error::Nats(format!("creating stream {name} ({wanted} replicas): {e}")))?;
    let existing = stream.cached_info().config.clone();
    if existing.num_replicas.max(1) == wanted {
        return Ok(());
    }
    let had = existing.num_replicas.max(1);
    if replication.replicas == Replicas::Auto {
        if had < wanted {
            tracing::warn!(
                stream = %name,
                replicas = had,
                servers = replication.servers,
                "the stream has {had} replica(s) although the cluster announces {} servers; \
                 start a service with --stream-replicas {wanted} (MENTAT_STREAM_REPLICAS) to replicate it",
                replication.servers
            );
        } else {
            // Fewer servers than replicas: one is down, or the cluster shrank.
            tracing::info!(stream = %name, replicas = had, servers = replication.servers, "stream replicas kept");
        }
        return Ok(());
    }
    let update = stream::Config {
        num_replicas: wanted,
        ..existing
    };
    match js.update_stream(update).await {
        Ok(_) => tracing::info!(stream = %name, from = had, to = wanted, "stream replicas changed"),
        Err(e) => tracing::error!(
            stream = %name,
            replicas = had,
            wanted,
            error = %e,
            "the server refused to change the stream's replicas; it keeps {had}"
        ),
    }
    Ok(())
}

/// Configuration of the [`ANCHORS`] stream: file storage, kept for ever.
pub fn anchors_config() -> stream::Config {
    stream::Config {
        name: ANCHORS.into(),
        subjects: vec![subject::ANCHORS.into()],
        duplicate_window: DUPLICATE_WINDOW,
        storage: stream::StorageType::File,
        ..Default::default()
    }
}

/// Create the [`ANCHORS`] stream if it does not exist yet, replicated like
/// the others. The planner calls it at start-up; nothing else writes
/// anchors, so other clients (every `mt` command) are spared the request.
pub async fn ensure_anchors(bus: &crate::Bus) -> Result<()> {
    ensure_one(&bus.js, anchors_config(), bus.replication()).await
}

/// Configuration of the [`STATS`] stream: file storage like the others (so
/// the window survives a NATS restart too), [`STATS_MAX_AGE`].
pub fn stats_config() -> stream::Config {
    stream::Config {
        name: STATS.into(),
        subjects: vec![subject::STATS_ALL.into()],
        max_age: STATS_MAX_AGE,
        storage: stream::StorageType::File,
        ..Default::default()
    }
}

/// Create the [`STATS`] stream if it does not exist yet (routers call it at
/// start-up, and so may its consumers), replicated like the others.
pub async fn ensure_stats(bus: &crate::Bus) -> Result<()> {
    ensure_one(&bus.js, stats_config(), bus.replication()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_are_read_from_auto_or_a_count() {
        assert_eq!("auto".parse(), Ok(Replicas::Auto));
        assert_eq!(" 3 ".parse(), Ok(Replicas::Exactly(3)));
        assert_eq!("1".parse(), Ok(Replicas::Exactly(1)));
        assert_eq!("5".parse(), Ok(Replicas::Exactly(5)));
        for bad in ["0", "6", "-1", "three", ""] {
            assert!(bad.parse::<Replicas>().is_err(), "{bad:?}");
        }
        assert_eq!(Replicas::Auto.to_string(), "auto");
        assert_eq!(Replicas::Exactly(3).to_string(), "3");
    }

    #[test]
    fn auto_replicates_on_three_servers_or_more_and_a_count_is_kept() {
        assert_eq!(Replicas::Auto.count(1), 1);
        assert_eq!(Replicas::Auto.count(2), 1);
        assert_eq!(Replicas::Auto.count(3), 3);
        assert_eq!(Replicas::Auto.count(5), 3);
        assert_eq!(Replicas::Exactly(1).count(5), 1);
        assert_eq!(Replicas::Exactly(3).count(1), 3);
    }
}
