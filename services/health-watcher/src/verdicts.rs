//! The judging task: it follows the routers' statistics, the route tables
//! and the thresholds, judges each version's window, and publishes the
//! verdicts that changed as facts (`ThresholdBreached`, `NoData`,
//! `ThresholdsMet` on `mentat.fact.health.<service>.<Type>`).
//!
//! Speed: a version is judged as soon as a statistics message about its
//! service arrives (and every [`TICK`] for windows that empty without
//! traffic), so detection costs one stats interval plus a few milliseconds.
//!
//! Restarts: the statistics are replayed from `now - (longest window +
//! [`REPLAY_MARGIN_MS`])`, nothing is judged before the replay has caught
//! up, and a window is judged only once the replay covers it (see
//! [`Traffic`]); verdicts published before are replayed too, so only
//! changes are published. A crash between a judgement and its publication
//! loses nothing: the restarted watcher judges the same window again.
//! Thresholds learnt after the feeds were opened (a service applied after
//! the watcher started) with a window longer than the replay re-open them
//! at once with a replay that covers it, rather than leaving that window
//! unjudged until the watcher has run as long as the window.

use std::collections::BTreeMap;
use std::time::Duration;

use mentat_bus::consumer::Replay;
use mentat_bus::{streams, Bus};
use mentat_domain::event::{Event, Fact};
use mentat_domain::spec::Thresholds;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::feeds;
use crate::idle::{Answer, Idle};
use crate::traffic::Traffic;

/// How often every window is judged even without new statistics.
pub const TICK: Duration = Duration::from_millis(100);
/// Statistics replayed beyond the longest window, in milliseconds.
pub const REPLAY_MARGIN_MS: i64 = 2_000;
/// Pause before re-opening a consumer that failed.
const REOPEN_DELAY: Duration = Duration::from_millis(500);

/// The thresholds of every service; `None` until the replica facts have
/// been replayed.
pub type ThresholdsRx = watch::Receiver<Option<BTreeMap<String, Thresholds>>>;

/// Queue capacities of the judging task.
#[derive(Debug, Clone, Copy)]
pub struct Queues {
    /// Verdicts waiting to be published. Overflow policy: the judging task
    /// waits (verdicts are never dropped; statistics wait in JetStream).
    pub verdicts: usize,
    /// Idle-probe answers waiting to be counted. Overflow: shed (see [`Idle`]).
    pub probe_answers: usize,
}

/// Judge and publish until `stop`.
pub async fn run(
    bus: Bus,
    mut thresholds: ThresholdsRx,
    probe_timeout: Duration,
    queues: Queues,
    stop: CancellationToken,
) {
    // The replica facts first: the thresholds say how far back to replay.
    let known = loop {
        if let Some(t) = thresholds.borrow_and_update().clone() {
            break t;
        }
        tokio::select! {
            () = stop.cancelled() => return,
            changed = thresholds.changed() => if changed.is_err() { return },
        }
    };
    let mut traffic = Traffic::new(0);
    traffic.set_thresholds(&known);
    loop {
        match feeds::seed_verdicts(&bus, &mut traffic).await {
            Ok(n) => {
                tracing::info!(verdicts = n, "replayed the verdicts published before");
                break;
            }
            Err(e) => tracing::warn!(error = %e, "cannot replay the verdicts; retrying"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(REOPEN_DELAY) => {}
        }
    }
    let (verdict_tx, verdict_rx) = mpsc::channel(queues.verdicts.max(1));
    let publisher = tokio::spawn(publish_all(bus.clone(), verdict_rx, stop.clone()));
    let (answer_tx, mut answers) = mpsc::channel(queues.probe_answers.max(1));
    let mut idle = Idle::new(answer_tx, probe_timeout);
    let mut judge = Judge {
        bus,
        traffic,
        verdicts: verdict_tx,
    };
    tokio::select! {
        () = stop.cancelled() => {}
        () = judge.follow(&mut thresholds, &mut answers, &mut idle) => {}
    }
    idle.stop_all();
    drop(judge);
    let _ = publisher.await;
}

struct Judge {
    bus: Bus,
    traffic: Traffic,
    verdicts: mpsc::Sender<Fact>,
}

impl Judge {
    /// Open the consumers (again after a failure) and judge forever.
    async fn follow(
        &mut self,
        thresholds: &mut ThresholdsRx,
        answers: &mut mpsc::Receiver<Answer>,
        idle: &mut Idle,
    ) {
        loop {
            let span = self
                .traffic
                .replay_span_ms(REPLAY_MARGIN_MS, stats_max_age_ms());
            let start = mentat_bus::now_ms() - span;
            let opened = async {
                let stats = feeds::open_stats(&self.bus, start).await?;
                let routes = feeds::open_routes(&self.bus).await?;
                Ok::<_, crate::Error>((stats, routes))
            };
            match opened.await {
                Ok((stats, routes)) => {
                    self.traffic.restart_windows(start);
                    tracing::info!(
                        replay_ms = span,
                        stats_backlog = stats.backlog,
                        "judging traffic"
                    );
                    let longer = self
                        .judge_feeds(stats, routes, thresholds, answers, idle)
                        .await;
                    if longer {
                        continue;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open the statistics or route feed; retrying")
                }
            }
            tokio::time::sleep(REOPEN_DELAY).await;
        }
    }

    /// Judge until one of the feeds ends (then they are re-opened), or
    /// until thresholds with a longer window than the replay covers arrive:
    /// `true` then, and the feeds are re-opened at once with a longer replay.
    async fn judge_feeds(
        &mut self,
        mut stats: Replay,
        mut routes: Replay,
        thresholds: &mut ThresholdsRx,
        answers: &mut mpsc::Receiver<Answer>,
        idle: &mut Idle,
    ) -> bool {
        let mut stats_current = stats.backlog == 0;
        let mut routes_current = routes.backlog == 0;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let ready = stats_current && routes_current;
            tokio::select! {
                next = stats.next() => {
                    let Some(Ok(msg)) = next else {
                        tracing::warn!("statistics feed ended (or NATS reconnected); re-opening it");
                        return false;
                    };
                    stats_current |= feeds::caught_up(&msg);
                    let Some(s) = feeds::decode_stats(&msg) else { continue };
                    let touched = self.traffic.record(&s);
                    if stats_current && routes_current {
                        let now = mentat_bus::now_ms();
                        for service in touched {
                            let facts = self.traffic.judge(&service, now);
                            self.send(facts, now).await;
                        }
                    }
                }
                next = routes.next() => {
                    let Some(Ok(msg)) = next else {
                        tracing::warn!("route feed ended (or NATS reconnected); re-opening it");
                        return false;
                    };
                    routes_current |= feeds::caught_up(&msg);
                    if let Some(Event::RouteChanged { service, backends, .. }) = feeds::decode_event(&msg) {
                        self.traffic.set_routes(&service, &backends);
                    }
                }
                Ok(()) = thresholds.changed() => {
                    if let Some(t) = thresholds.borrow_and_update().clone() {
                        self.traffic.set_thresholds(&t);
                        let now = mentat_bus::now_ms();
                        if self.traffic.needs_longer_replay(now, REPLAY_MARGIN_MS, stats_max_age_ms()) {
                            tracing::info!(
                                window_ms = self.traffic.longest_window_ms(),
                                "a longer window than the statistics replayed; replaying them again"
                            );
                            return true;
                        }
                    }
                }
                Some(a) = answers.recv() => {
                    self.traffic.record_one(&a.service, &a.version, a.at_ms, a.totals);
                }
                _ = tick.tick() => {
                    if ready {
                        let now = mentat_bus::now_ms();
                        let facts = self.traffic.judge_all(now);
                        self.send(facts, now).await;
                        idle.sync(self.traffic.starving());
                    }
                }
            }
        }
    }

    /// Queue verdict transitions for publication, each with a fresh id.
    async fn send(&self, events: Vec<Event>, now_ms: i64) {
        for event in events {
            log(&event);
            let fact = Fact {
                id: mentat_bus::new_id(),
                observed_at_ms: now_ms,
                event,
            };
            if self.verdicts.send(fact).await.is_err() {
                return;
            }
        }
    }
}

fn log(event: &Event) {
    match event {
        Event::ThresholdBreached {
            service,
            version,
            judgement,
            ..
        } => tracing::warn!(%service, %version, %judgement, "threshold breached"),
        Event::NoData {
            service,
            version,
            requests,
            min_requests,
            ..
        } => tracing::info!(%service, %version, requests, min_requests, "no data"),
        Event::ThresholdsMet {
            service,
            version,
            requests,
            ..
        } => tracing::info!(%service, %version, requests, "thresholds met"),
        _ => {}
    }
}

/// Publish queued verdicts in order, each retried with backoff (same id,
/// so the stream drops duplicates) until accepted or `stop`.
async fn publish_all(bus: Bus, mut verdicts: mpsc::Receiver<Fact>, stop: CancellationToken) {
    while let Some(fact) = verdicts.recv().await {
        let mut wait = Duration::from_millis(50);
        loop {
            match bus.publish_fact(&fact).await {
                Ok(()) => {
                    let verdict = fact.event.type_name();
                    metrics::counter!(crate::metrics::VERDICTS_TOTAL, "verdict" => verdict)
                        .increment(1);
                    break;
                }
                Err(e) => tracing::warn!(error = %e, "cannot publish a verdict; retrying"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(crate::probes::MAX_RETRY);
        }
    }
}

/// How long the statistics stream keeps a message, in milliseconds.
fn stats_max_age_ms() -> i64 {
    i64::try_from(streams::STATS_MAX_AGE.as_millis()).unwrap_or(i64::MAX)
}
