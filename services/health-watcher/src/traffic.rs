//! Every service's traffic windows and the verdicts last published, as a
//! state machine: statistics, route tables and thresholds in, verdict
//! transitions out. No I/O and no clock (the caller passes `now_ms`).
//!
//! Once judged, a version returns to "no data" only below half of
//! `min_requests` (hysteresis, see [`hysteresis`]).
//!
//! A version is judged while it has traffic in its window or is in the
//! service's route table with a weight above 0; once it has neither, it is
//! forgotten (so a version deployed again later starts with a fresh
//! verdict). Nothing is judged before the windows are complete: the
//! statistics must cover `window_secs` back from now, counted from
//! `covered_from_ms` (the start of the replay of `MENTAT_STATS`), so a
//! restarted health-watcher never judges a half-empty window.

use std::collections::BTreeMap;

use mentat_domain::event::{Backend, Event};
use mentat_domain::spec::Thresholds;
use mentat_domain::stats::TrafficStats;

use crate::judge::{judge, Key, Verdict};
use crate::window::{Totals, Window};

/// How long traffic of a service without known thresholds is kept.
const UNKNOWN_WINDOW_MS: i64 = 60_000;

/// A version that needs idle probes: its window has too few requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Starving {
    /// Service.
    pub service: String,
    /// Version (image).
    pub version: String,
    /// Addresses of its replicas in the route table.
    pub addrs: Vec<String>,
    /// Probes per second to send.
    pub rps: u32,
}

#[derive(Debug, Default)]
struct Service {
    thresholds: Option<Thresholds>,
    windows: BTreeMap<String, Window>,
    /// Versions with a weight above 0, and their replicas' addresses.
    routed: BTreeMap<String, Vec<String>>,
    published: BTreeMap<String, Key>,
}

/// The windows and verdicts of every service.
#[derive(Debug)]
pub struct Traffic {
    services: BTreeMap<String, Service>,
    covered_from_ms: i64,
}

impl Traffic {
    /// Nothing seen yet; statistics are complete from `covered_from_ms` on.
    pub fn new(covered_from_ms: i64) -> Self {
        Self {
            services: BTreeMap::new(),
            covered_from_ms,
        }
    }

    /// Forget every window (the statistics are replayed again from
    /// `covered_from_ms`); published verdicts are kept.
    pub fn restart_windows(&mut self, covered_from_ms: i64) {
        self.covered_from_ms = covered_from_ms;
        for s in self.services.values_mut() {
            s.windows.clear();
        }
    }

    /// The thresholds of every service (from the latest `ReplicaStarted`).
    pub fn set_thresholds(&mut self, all: &BTreeMap<String, Thresholds>) {
        for (service, t) in all {
            self.service(service).thresholds = Some(t.clone());
        }
    }

    /// How far back to replay the statistics so that every window can be
    /// judged at once: the longest window plus `margin_ms`, at most
    /// `max_age_ms` (what the stream keeps).
    pub fn replay_span_ms(&self, margin_ms: i64, max_age_ms: i64) -> i64 {
        (self.longest_window_ms() + margin_ms).min(max_age_ms)
    }

    /// True when a replay from `now_ms - replay_span_ms` would cover windows
    /// that the statistics seen so far (complete from `covered_from_ms`) do
    /// not: a window longer than the one known when the feeds were opened
    /// (thresholds learnt later) is otherwise judged only once the watcher
    /// has run that long.
    pub fn needs_longer_replay(&self, now_ms: i64, margin_ms: i64, max_age_ms: i64) -> bool {
        now_ms - self.replay_span_ms(margin_ms, max_age_ms) + margin_ms < self.covered_from_ms
    }

    /// The longest window of any service, in milliseconds.
    pub fn longest_window_ms(&self) -> i64 {
        self.services
            .values()
            .filter_map(|s| s.thresholds.as_ref())
            .map(window_ms)
            .max()
            .unwrap_or(0)
    }

    /// A service's route table (from `RouteChanged`).
    pub fn set_routes(&mut self, service: &str, backends: &[Backend]) {
        let s = self.service(service);
        s.routed.clear();
        for b in backends.iter().filter(|b| b.weight > 0) {
            s.routed
                .entry(b.image.clone())
                .or_default()
                .push(b.addr.clone());
        }
    }

    /// A verdict published before (replayed from `MENTAT_FACTS`): only a
    /// different one is published next.
    pub fn seed(&mut self, event: &Event) {
        let (service, version, key) = match event {
            Event::ThresholdBreached {
                service,
                version,
                judgement,
                ..
            } => (service, version, Key::Breach(judgement.metric)),
            Event::NoData {
                service, version, ..
            } => (service, version, Key::NoData),
            Event::ThresholdsMet {
                service, version, ..
            } => (service, version, Key::Pass),
            _ => return,
        };
        self.service(service).published.insert(version.clone(), key);
    }

    /// Add one router interval; returns the services it touched.
    pub fn record(&mut self, stats: &TrafficStats) -> Vec<String> {
        let mut per_version: BTreeMap<(&str, &str), Totals> = BTreeMap::new();
        for i in &stats.instances {
            let t = per_version
                .entry((i.service.as_str(), i.image.as_str()))
                .or_default();
            t.add(&Totals {
                requests: i.requests,
                errors: i.errors_5xx,
                buckets: i.latency_buckets.clone(),
            });
        }
        let mut touched: Vec<String> = Vec::new();
        for ((service, version), totals) in per_version {
            self.record_one(service, version, stats.at_ms, totals);
            if touched.last().map(String::as_str) != Some(service) {
                touched.push(service.to_owned());
            }
        }
        touched
    }

    /// Add traffic of one version that ended at `at_ms` (an idle probe's answer).
    pub fn record_one(&mut self, service: &str, version: &str, at_ms: i64, totals: Totals) {
        self.service(service)
            .windows
            .entry(version.to_owned())
            .or_default()
            .push(at_ms, totals);
    }

    /// Judge every version of `service` at `now_ms`; the facts to publish
    /// (verdicts that changed). Nothing while thresholds are unknown or
    /// disabled, or while the window reaches back before the statistics.
    pub fn judge(&mut self, service: &str, now_ms: i64) -> Vec<Event> {
        let covered_from = self.covered_from_ms;
        let Some(s) = self.services.get_mut(service) else {
            return Vec::new();
        };
        let Some(t) = s.thresholds.clone().filter(|t| t.enabled) else {
            let keep = s.thresholds.as_ref().map_or(UNKNOWN_WINDOW_MS, window_ms);
            evict(s, now_ms - keep.max(UNKNOWN_WINDOW_MS));
            return Vec::new();
        };
        let cutoff = now_ms - window_ms(&t);
        evict(s, cutoff);
        if cutoff < covered_from {
            return Vec::new();
        }
        let mut versions: Vec<String> = s.windows.keys().cloned().collect();
        versions.extend(
            s.routed
                .keys()
                .filter(|v| !s.windows.contains_key(*v))
                .cloned(),
        );
        s.published.retain(|v, _| versions.contains(v));
        let mut facts = Vec::new();
        for version in &versions {
            let empty = Totals::default();
            let own = s.windows.get(version).map_or(&empty, Window::totals);
            let mut baseline: Option<Totals> = None;
            for (other, w) in &s.windows {
                if other != version && !w.is_empty() {
                    baseline.get_or_insert_with(Totals::default).add(w.totals());
                }
            }
            let verdict = judge(
                &hysteresis(&t, s.published.get(version)),
                own,
                baseline.as_ref(),
            );
            if s.published.get(version) == Some(&verdict.key()) {
                continue;
            }
            s.published.insert(version.clone(), verdict.key());
            facts.push(fact(service, version, &t, verdict));
        }
        facts
    }

    /// Judge every service.
    pub fn judge_all(&mut self, now_ms: i64) -> Vec<Event> {
        let services: Vec<String> = self.services.keys().cloned().collect();
        services
            .iter()
            .flat_map(|s| self.judge(s, now_ms))
            .collect()
    }

    /// Routed versions of services with idle probes whose window holds
    /// fewer than `min_requests` requests.
    pub fn starving(&self) -> Vec<Starving> {
        let mut out = Vec::new();
        for (service, s) in &self.services {
            let Some(t) = s
                .thresholds
                .as_ref()
                .filter(|t| t.enabled && t.idle_probe_rps > 0)
            else {
                continue;
            };
            for (version, addrs) in &s.routed {
                let requests = s.windows.get(version).map_or(0, |w| w.totals().requests);
                if requests < t.min_requests {
                    out.push(Starving {
                        service: service.clone(),
                        version: version.clone(),
                        addrs: addrs.clone(),
                        rps: t.idle_probe_rps,
                    });
                }
            }
        }
        out
    }

    fn service(&mut self, service: &str) -> &mut Service {
        self.services.entry(service.to_owned()).or_default()
    }
}

/// Hysteresis at the edge of "no data": once a version has a verdict (pass
/// or breach), it goes back to no data only below half of `min_requests`,
/// so a window hovering around `min_requests` does not flap between
/// verdicts (and a breach is not published again at each swing).
fn hysteresis(t: &Thresholds, published: Option<&Key>) -> Thresholds {
    match published {
        Some(Key::Pass | Key::Breach(_)) => Thresholds {
            min_requests: t.min_requests.div_ceil(2),
            ..t.clone()
        },
        _ => t.clone(),
    }
}

fn window_ms(t: &Thresholds) -> i64 {
    i64::try_from(t.window_secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// Drop old samples, and the windows of versions no longer routed once empty.
fn evict(s: &mut Service, cutoff_ms: i64) {
    for w in s.windows.values_mut() {
        w.evict(cutoff_ms);
    }
    let routed = &s.routed;
    s.windows
        .retain(|v, w| !w.is_empty() || routed.contains_key(v));
}

/// The fact announcing `verdict`.
fn fact(service: &str, version: &str, t: &Thresholds, verdict: Verdict) -> Event {
    let (service, version) = (service.to_owned(), version.to_owned());
    match verdict {
        Verdict::Pass { requests } => Event::ThresholdsMet {
            service,
            version,
            requests,
            window_secs: t.window_secs,
        },
        Verdict::NoData { requests } => Event::NoData {
            service,
            version,
            requests,
            min_requests: t.min_requests,
            window_secs: t.window_secs,
        },
        Verdict::Breach(judgement) => Event::ThresholdBreached {
            service,
            deployment_id: None,
            version,
            judgement,
        },
    }
}

#[cfg(test)]
#[path = "traffic_tests.rs"]
mod tests;
