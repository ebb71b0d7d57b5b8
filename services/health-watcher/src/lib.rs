//! The health-watcher: it probes every running replica and reports when one
//! becomes healthy or unhealthy.
//!
//! It learns which replicas run from the executors' facts: a replica is
//! live between its last `ReplicaStarted` and a later `ReplicaExited`. It
//! reads them from the start of the fact stream, so a restarted
//! health-watcher rebuilds the whole set before probing anything. For each
//! live replica one task sends `GET http://<addr><health.path>` every
//! `health.interval_ms`; `healthy_after` passes in a row publish
//! `ReplicaHealthy`, `unhealthy_after` failures in a row publish
//! `ReplicaUnhealthy`, and only changes are published.
//!
//! - [`config`]: flags, environment and defaults.
//! - [`facts`]: the ordered consumer of replica facts.
//! - [`live`]: the set of live replicas, folded from those facts (pure).
//! - [`tracker`]: one replica's verdict from consecutive probes (pure).
//! - [`probes`]: the probe tasks, kept in step with the live set.
//! - [`http`]: the probe: one `GET`, judged on its status line.
//! - [`metrics`]: the names of its metrics on `/metrics`.
//!
//! It also judges each version's traffic against the service's
//! `health.thresholds`, from the routers' statistics (`MENTAT_STATS`) and
//! its own idle probes, and publishes `ThresholdBreached`, `NoData` and
//! `ThresholdsMet` when a version's verdict changes:
//!
//! - [`window`]: one version's sliding window of traffic (pure).
//! - [`judge`]: the verdict on a window, and a canary against its baseline (pure).
//! - [`traffic`]: every service's windows and published verdicts (pure).
//! - [`feeds`]: the statistics, route-table and verdict consumers.
//! - [`idle`]: synthetic probes for versions with too little traffic.
//! - [`verdicts`]: the judging task that ties them together.

pub mod config;
mod error;
pub mod facts;
pub mod feeds;
pub mod http;
pub mod idle;
pub mod judge;
pub mod live;
pub mod metrics;
pub mod probes;
pub mod tracker;
pub mod traffic;
pub mod verdicts;
pub mod window;

use std::collections::BTreeMap;
use std::time::Duration;

use mentat_bus::Bus;
use mentat_domain::spec::Thresholds;
use mentat_runtime::Shutdown;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use error::{Error, Result};

use facts::Facts;
use live::Live;
use probes::Probes;

/// How long the health-watcher waits for NATS at start-up.
pub const CONNECT_WAIT: Duration = Duration::from_secs(30);

/// How long shutdown waits for the probe tasks.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Delay before reopening the fact consumer after it failed.
const REOPEN_DELAY: Duration = Duration::from_secs(1);

/// Run the health-watcher until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    config.validate()?;
    let access = config.access.access(&config.nats)?;
    let bus = tokio::select! {
        bus = Bus::connect_with(
            &access,
            "mentat-health-watcher",
            CONNECT_WAIT,
            config.stream_replicas,
        ) => bus?,
        _ = shutdown.cancelled() => return Ok(()),
    };
    let mut probes = Probes::new(bus.clone(), config.probe_timeout());
    metrics::describe();
    let probed = probes.probed();
    let refresh: mentat_runtime::metrics::Refresh = std::sync::Arc::new(move || {
        let probed = probed.load(std::sync::atomic::Ordering::Relaxed);
        ::metrics::gauge!(metrics::PROBED_REPLICAS).set(probed as f64);
    });
    let _admin = config.admin.start(refresh, shutdown.token()).await?;
    let (thresholds_tx, thresholds_rx) = watch::channel(None);
    let stop_judging = CancellationToken::new();
    let judging = tokio::spawn(verdicts::run(
        bus.clone(),
        thresholds_rx,
        config.probe_timeout(),
        config.queues(),
        stop_judging.clone(),
    ));
    tokio::select! {
        result = watch(&bus, &mut probes, &thresholds_tx) => result?,
        _ = shutdown.cancelled() => {}
    }
    tracing::info!(probes = probes.len(), "health-watcher stopping");
    stop_judging.cancel();
    probes.shutdown(SHUTDOWN_GRACE).await;
    if tokio::time::timeout(SHUTDOWN_GRACE, judging).await.is_err() {
        tracing::warn!("the judging task did not stop within the grace");
    }
    Ok(())
}

/// Tell the judging task the thresholds, when they changed.
fn share_thresholds(tx: &watch::Sender<Option<BTreeMap<String, Thresholds>>>, live: &Live) {
    tx.send_if_modified(|current| {
        if current.as_ref() == Some(live.thresholds()) {
            return false;
        }
        *current = Some(live.thresholds().clone());
        true
    });
}

/// Follow the replica facts forever, keeping `probes` in step. The consumer
/// is reopened (and the live set rebuilt from the start) when the server
/// ends it; running probes of replicas still live are kept.
async fn watch(
    bus: &Bus,
    probes: &mut Probes,
    thresholds: &watch::Sender<Option<BTreeMap<String, Thresholds>>>,
) -> Result<()> {
    let mut first = true;
    loop {
        let mut facts = match Facts::open(bus).await {
            Ok(f) => f,
            Err(e) if first => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "cannot reopen the fact consumer; retrying");
                tokio::time::sleep(REOPEN_DELAY).await;
                continue;
            }
        };
        first = false;
        let mut live = Live::default();
        let mut caught_up = facts.empty_at_start();
        if caught_up {
            probes.sync(&live);
            share_thresholds(thresholds, &live);
        }
        tracing::info!("health-watcher ready; replaying replica facts");
        loop {
            match facts.next().await {
                Ok(Some(delivery)) => {
                    if let Some(fact) = &delivery.fact {
                        live.apply(&fact.event);
                    }
                    if delivery.caught_up && !caught_up {
                        caught_up = true;
                        tracing::info!(live = live.len(), "replay done; probing live replicas");
                    }
                    if caught_up {
                        probes.sync(&live);
                        share_thresholds(thresholds, &live);
                    }
                }
                Ok(None) => {
                    tracing::warn!("fact stream ended; reopening");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "fact consumer error");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}
