//! The executor: one per host, it runs that host's replicas.
//!
//! It reads start and stop intents for its host from the bus, runs each
//! replica as a process group on a free port, and reports what happens as
//! facts: `ReplicaStarted` when a process runs, `ReplicaExited` when it ends
//! (with `requested` telling a stop from a crash). Every heartbeat interval
//! it announces itself, its capacity and how many replicas it runs.
//!
//! It never loses track of a process: every replica is recorded in a state
//! file before it is announced, a restarted executor adopts the replicas
//! that still run and reports the others as exited, and a graceful shutdown
//! stops every replica (SIGTERM, grace, SIGKILL) before exiting.
//!
//! - [`config`]: flags, environment and defaults.
//! - [`allow`]: the programs this host may run (`--allow-command`).
//! - [`intents`]: the durable consumer of start/stop intents.
//! - [`metrics`]: the names of its metrics on `/metrics`.
//! - [`supervisor`]: the owner of the replicas; turns intents and exits into facts.
//! - [`watch`]: one task per replica waiting for its end and carrying out stops.
//! - [`process`]: spawning, `/proc` inspection and signals.
//! - [`state`]: the state file and the host directory lock.

pub mod allow;
pub mod config;
mod error;
pub mod intents;
pub mod metrics;
pub mod process;
pub mod state;
pub mod supervisor;
pub mod watch;

use std::time::Duration;

use async_nats::jetstream::AckKind;
use mentat_bus::Bus;
use mentat_runtime::Shutdown;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

pub use config::Config;
pub use error::{Error, Result};

use intents::Intent;
use mentat_bus::consumer::ack;
use supervisor::{Settings, Supervisor};

/// How long the executor waits for NATS at start-up.
pub const CONNECT_WAIT: Duration = Duration::from_secs(30);

/// Extra time, beyond the stop grace, that a graceful shutdown allows for
/// reaping the replicas and publishing their exits.
pub const SHUTDOWN_SLACK: Duration = Duration::from_secs(5);

/// Shortest time the executor listens for another's heartbeats under its
/// host id before it takes that host's intents.
pub const HOST_ID_CHECK: Duration = Duration::from_millis(1500);

/// Refuse to run as `host` when another executor already sends heartbeats
/// under that id (on another machine: two on one machine are stopped by the
/// lock): listen to the host's heartbeat subject for [`HOST_ID_CHECK`], or
/// two of our own intervals if longer, before taking a single intent.
async fn host_id_taken(bus: &Bus, host: &str, interval: Duration) -> Result<()> {
    let subject = mentat_bus::subject::heartbeat(host);
    let mut beats = bus
        .client
        .subscribe(subject)
        .await
        .map_err(|e| mentat_bus::Error::Nats(e.to_string()))?;
    let window = HOST_ID_CHECK.max(interval.saturating_mul(2));
    let Ok(Some(msg)) = tokio::time::timeout(window, futures::StreamExt::next(&mut beats)).await
    else {
        return Ok(());
    };
    let other = mentat_bus::codec::decode::<mentat_domain::event::HostHeartbeat>(
        &msg.payload,
        mentat_bus::codec::Encoding::of(msg.headers.as_ref()),
        "HostHeartbeat",
    )
    .ok()
    .and_then(|beat| beat.ip)
    .unwrap_or_else(|| "an unknown address".to_owned());
    Err(Error::HostIdTaken {
        host: host.to_owned(),
        other,
    })
}

/// Run the executor until `shutdown` is cancelled.
///
/// Start-up: validate `config`, lock `<data-dir>/executor/<host-id>/`, read
/// the state file, connect to NATS, make sure no other executor is live
/// under the same host id, open the intent consumer, adopt the
/// replicas a previous executor left. Then handle intents, exits and
/// heartbeats until shutdown. On shutdown, stop every replica unless
/// `config.stop_replicas_on_shutdown` is false.
pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    config.validate()?;
    let host = config.host_id.clone();
    let host_dir = config.host_dir();
    let logs_dir = host_dir.join("logs");
    std::fs::create_dir_all(&logs_dir).map_err(|e| Error::io(&logs_dir, e))?;
    let _lock = state::HostLock::acquire(&host_dir)?;
    let state = state::StateFile::load(host_dir.join("replicas.json"))?;

    metrics::describe();
    let _admin = config
        .admin
        .start(mentat_runtime::metrics::no_refresh(), shutdown.token())
        .await?;
    let client_name = format!("mentat-executor-{host}");
    let access = config.access.access(&config.nats)?;
    let bus = tokio::select! {
        bus = Bus::connect_with(&access, &client_name, CONNECT_WAIT, config.stream_replicas) => bus?,
        _ = shutdown.cancelled() => return Ok(()),
    };
    tokio::select! {
        taken = host_id_taken(&bus, &host, config.heartbeat_interval()) => taken?,
        _ = shutdown.cancelled() => return Ok(()),
    }
    let mut intents = tokio::select! {
        intents = intents::open(&bus, &host) => intents?,
        _ = shutdown.cancelled() => return Ok(()),
    };

    // One exit per replica at most is in flight, so a channel the size of
    // the capacity rarely fills; when it does, watchers wait (no exit is lost).
    let (exits_tx, mut exits) = mpsc::channel(config.capacity.clamp(16, 4096) as usize);
    let settings = Settings {
        host: host.clone(),
        ip: config.advertise_ip(),
        logs_dir,
        grace: config.stop_grace(),
        capacity: config.capacity,
        allow: config.allow_list(),
    };
    let mut supervisor = Supervisor::new(bus, settings, state, exits_tx);
    supervisor.adopt_all().await;
    tracing::info!(host_id = %host, advertise_ip = %config.advertise_ip(), dir = %host_dir.display(), running = supervisor.running(), "executor ready");

    // The newest planner epoch seen on an intent: intents arrive in log
    // order, so one from an older epoch was not decided by the leader.
    let mut newest_epoch = 0;
    let mut heartbeat = tokio::time::interval(config.heartbeat_interval());
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(exit) = exits.recv() => supervisor.exited(exit).await,
            msg = intents.next() => handle(&mut supervisor, &host, &mut newest_epoch, msg).await,
            _ = heartbeat.tick() => {
                if let Err(e) = supervisor.heartbeat().await {
                    tracing::warn!(error = %e, "cannot publish heartbeat");
                }
                if supervisor.has_unreported() {
                    supervisor.flush().await;
                }
            }
        }
    }

    if config.stop_replicas_on_shutdown {
        let deadline = Instant::now() + config.stop_grace() + SHUTDOWN_SLACK;
        supervisor.stop_all(&mut exits, deadline).await;
    } else {
        supervisor.abandon();
    }
    tracing::info!(host_id = %host, "executor stopped");
    Ok(())
}

/// Handle one intent message and acknowledge it: `Ack` when done, `Nak`
/// (delivered again after a delay) when the bus failed, `Term` when it can
/// never be understood or comes from a planner epoch older than
/// `newest_epoch` (which it updates).
async fn handle(
    supervisor: &mut Supervisor,
    host: &str,
    newest_epoch: &mut i64,
    msg: async_nats::jetstream::Message,
) {
    let Some(envelope) = intents::decode(&msg) else {
        ack(&msg, AckKind::Term).await;
        return;
    };
    let (admitted, newest) = envelope.meta.admit_epoch(*newest_epoch);
    if !admitted {
        tracing::warn!(event_id = %envelope.id, epoch = ?envelope.meta.epoch, newest, "ignoring an intent from an older planner epoch");
        ack(&msg, AckKind::Term).await;
        return;
    }
    *newest_epoch = newest;
    let result = match Intent::of(envelope.event, host) {
        Intent::Start(start) => supervisor.start(start).await,
        Intent::Stop {
            replica,
            service,
            reason,
        } => supervisor.stop(&replica, &service, &reason).await,
        Intent::NotForUs => Ok(()),
    };
    match result {
        Ok(()) => ack(&msg, AckKind::Ack).await,
        Err(e) => {
            tracing::warn!(event_id = %envelope.id, error = %e, "intent not handled; it will be delivered again");
            ack(&msg, AckKind::Nak(Some(intents::RETRY_DELAY))).await;
        }
    }
}
