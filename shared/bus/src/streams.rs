//! JetStream streams. They make the bus durable: a command published while
//! the planner is down, a fact published while it restarts, and every event
//! the log has recorded are kept until a consumer takes them.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::{subject, Error, Result};

/// Commands (`mentat.cmd.>`), kept so that none is lost while the planner is
/// down. `no_ack` so that request/reply on the same subjects still reaches
/// the planner's answer, not the stream's acknowledgement.
pub const COMMANDS: &str = "MENTAT_COMMANDS";
/// Facts from executors, the health-watcher and routers (`mentat.fact.>`).
pub const FACTS: &str = "MENTAT_FACTS";
/// Every event of the log, published by the planner's relay (`mentat.evt.>`).
pub const EVENTS: &str = "MENTAT_EVENTS";

/// Router traffic statistics (`mentat.stats.>`), one message per router per
/// interval, kept [`STATS_MAX_AGE`] so that a restarted health-watcher can
/// rebuild its recent windows. Created by [`ensure_stats`], not [`ensure`]:
/// only routers and their consumers need it.
pub const STATS: &str = "MENTAT_STATS";
/// How long traffic statistics are kept.
pub const STATS_MAX_AGE: Duration = Duration::from_secs(15 * 60);

/// Window within which JetStream drops a re-published message with the same `Nats-Msg-Id`.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Configuration of the three streams.
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

/// Create the streams that do not exist yet. Every service calls this at
/// start-up, so the order in which they start does not matter.
pub async fn ensure(js: &jetstream::Context) -> Result<()> {
    for config in configs() {
        let name = config.name.clone();
        js.get_or_create_stream(config)
            .await
            .map_err(|e| Error::Nats(format!("creating stream {name}: {e}")))?;
    }
    Ok(())
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
/// start-up, and so may its consumers).
pub async fn ensure_stats(js: &jetstream::Context) -> Result<()> {
    js.get_or_create_stream(stats_config())
        .await
        .map_err(|e| Error::Nats(format!("creating stream {STATS}: {e}")))?;
    Ok(())
}
