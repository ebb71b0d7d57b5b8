//! Idle probes: synthetic `GET /` requests sent straight to the replicas of
//! a version whose window holds fewer than `min_requests` requests, when
//! the service asks for them (`health.thresholds.idle_probe_rps`). Their
//! answers (status and latency) count in that version's window alongside
//! the routers' statistics: a 5xx or no answer at all is an error, as the
//! router counts its own 502.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::http;
use crate::traffic::Starving;
use crate::window::Totals;

/// Path the idle probes request.
pub const PATH: &str = "/";

/// One idle probe's answer, for the judging task.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Service.
    pub service: String,
    /// Version probed.
    pub version: String,
    /// When the answer came (ms since epoch).
    pub at_ms: i64,
    /// One request: failed or not, and its latency.
    pub totals: Totals,
}

#[derive(Debug)]
struct Prober {
    addrs: Vec<String>,
    rps: u32,
    stop: CancellationToken,
}

/// The running idle probers, one per starving version.
#[derive(Debug)]
pub struct Idle {
    answers: mpsc::Sender<Answer>,
    timeout: Duration,
    running: BTreeMap<(String, String), Prober>,
}

impl Idle {
    /// No probers yet. Answers go to `answers`; when that queue is full an
    /// answer is dropped (overflow policy: shed, the probes are synthetic
    /// and the next one comes within a second).
    pub fn new(answers: mpsc::Sender<Answer>, timeout: Duration) -> Self {
        Self {
            answers,
            timeout,
            running: BTreeMap::new(),
        }
    }

    /// Probe exactly the `starving` versions: stop the others, start the
    /// new ones, restart those whose replicas or rate changed.
    pub fn sync(&mut self, starving: Vec<Starving>) {
        let mut wanted: BTreeMap<(String, String), Starving> = starving
            .into_iter()
            .map(|s| ((s.service.clone(), s.version.clone()), s))
            .collect();
        self.running.retain(|key, p| {
            let keep = wanted
                .get(key)
                .is_some_and(|s| s.addrs == p.addrs && s.rps == p.rps);
            if keep {
                wanted.remove(key);
            } else {
                p.stop.cancel();
            }
            keep
        });
        for (key, s) in wanted {
            tracing::info!(service = %s.service, version = %s.version, rps = s.rps, "too few requests in the window; sending idle probes");
            let stop = CancellationToken::new();
            let prober = Prober {
                addrs: s.addrs.clone(),
                rps: s.rps,
                stop: stop.clone(),
            };
            tokio::spawn(probe(s, self.answers.clone(), self.timeout, stop));
            self.running.insert(key, prober);
        }
    }

    /// Stop every prober.
    pub fn stop_all(&mut self) {
        for p in self.running.values() {
            p.stop.cancel();
        }
        self.running.clear();
    }
}

async fn probe(
    s: Starving,
    answers: mpsc::Sender<Answer>,
    timeout: Duration,
    stop: CancellationToken,
) {
    if s.addrs.is_empty() || s.rps == 0 {
        return;
    }
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / s.rps);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    for addr in s.addrs.iter().cycle() {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let started = Instant::now();
        let outcome = tokio::select! {
            () = stop.cancelled() => return,
            outcome = http::status(addr, PATH, timeout) => outcome,
        };
        let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let failed = !matches!(outcome, Ok(100..=499));
        let answer = Answer {
            service: s.service.clone(),
            version: s.version.clone(),
            at_ms: mentat_bus::now_ms(),
            totals: Totals::one(latency_us, failed),
        };
        if answers.try_send(answer).is_err() {
            tracing::debug!(service = %s.service, version = %s.version, "idle probe answer dropped: queue full");
        }
    }
}
