//! A sliding window of one version's traffic, made of the intervals the
//! routers publish (and the idle probes' answers). Pure: no clock, the
//! caller says what "now" is.
//!
//! Each router interval is a delta (requests, 5xx, latency buckets with the
//! fixed bounds of [`mentat_domain::stats`]), so intervals of several
//! routers and several replicas simply add up. The window keeps running
//! [`Totals`]: adding a sample adds its counts, evicting one subtracts them,
//! so a judgement costs the same whatever the window's length.

use std::collections::VecDeque;

use mentat_domain::stats::{bucket_of, merge_buckets, percentile_ms, LATENCY_BUCKETS};

/// Most samples one window holds. Past it, the two oldest samples are
/// merged into one (overflow policy: coalesce, never drop counts), which
/// only makes the oldest counts leave the window a little later.
pub const MAX_SAMPLES: usize = 4096;

/// Requests, 5xx answers and the latency histogram of some traffic.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Totals {
    /// Requests answered or failed.
    pub requests: u64,
    /// Of those, 5xx answers (or no answer at all).
    pub errors: u64,
    /// Counts per latency bucket (bounds in `LATENCY_BUCKET_BOUNDS_US`).
    pub buckets: Vec<u64>,
}

impl Totals {
    /// One request that took `latency_us` and failed or not.
    pub fn one(latency_us: u64, failed: bool) -> Self {
        let mut buckets = vec![0; LATENCY_BUCKETS];
        buckets[bucket_of(latency_us)] = 1;
        Self {
            requests: 1,
            errors: u64::from(failed),
            buckets,
        }
    }

    /// Add `other` in.
    pub fn add(&mut self, other: &Totals) {
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors);
        merge_buckets(&mut self.buckets, &other.buckets);
    }

    /// Take `other` out (it must have been added before).
    pub fn subtract(&mut self, other: &Totals) {
        self.requests = self.requests.saturating_sub(other.requests);
        self.errors = self.errors.saturating_sub(other.errors);
        for (sum, n) in self.buckets.iter_mut().zip(&other.buckets) {
            *sum = sum.saturating_sub(*n);
        }
    }

    /// Share of errors in basis points (hundredths of a percent), rounded
    /// to the nearest; 0 without requests.
    pub fn error_rate_bp(&self) -> u64 {
        if self.requests == 0 {
            return 0;
        }
        let bp = (u128::from(self.errors.min(self.requests)) * 10_000
            + u128::from(self.requests) / 2)
            / u128::from(self.requests);
        bp as u64
    }

    /// The 99th-percentile latency in microseconds, from the histogram
    /// (interpolated within its bucket); 0 without requests.
    pub fn p99_us(&self) -> u64 {
        (percentile_ms(&self.buckets, 0.99) * 1000.0).round() as u64
    }
}

#[derive(Debug, Clone)]
struct Sample {
    at_ms: i64,
    totals: Totals,
}

/// Samples newer than a cut-off, with their running totals.
#[derive(Debug, Clone, Default)]
pub struct Window {
    samples: VecDeque<Sample>,
    totals: Totals,
}

impl Window {
    /// Add traffic that ended at `at_ms`.
    pub fn push(&mut self, at_ms: i64, totals: Totals) {
        self.totals.add(&totals);
        // Keep samples in time order even when routers' messages interleave.
        let pos = self
            .samples
            .iter()
            .rposition(|s| s.at_ms <= at_ms)
            .map_or(0, |i| i + 1);
        self.samples.insert(pos, Sample { at_ms, totals });
        if self.samples.len() > MAX_SAMPLES {
            if let (Some(oldest), Some(next)) = (self.samples.pop_front(), self.samples.front_mut())
            {
                next.totals.add(&oldest.totals);
            }
        }
    }

    /// Drop every sample that ended at or before `cutoff_ms`.
    pub fn evict(&mut self, cutoff_ms: i64) {
        while self.samples.front().is_some_and(|s| s.at_ms <= cutoff_ms) {
            if let Some(old) = self.samples.pop_front() {
                self.totals.subtract(&old.totals);
            }
        }
        if self.samples.is_empty() {
            self.totals = Totals::default();
        }
    }

    /// Everything in the window.
    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    /// True when the window holds no sample.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traffic(requests: u64, errors: u64, latency_us: u64) -> Totals {
        let mut t = Totals::default();
        for i in 0..requests {
            t.add(&Totals::one(latency_us, i < errors));
        }
        t
    }

    #[test]
    fn given_intervals_of_two_routers_when_merged_then_counts_add_up() {
        let mut w = Window::default();
        w.push(1_000, traffic(90, 0, 1_000));
        w.push(1_000, traffic(10, 10, 100_000));
        assert_eq!(w.totals().requests, 100);
        assert_eq!(w.totals().error_rate_bp(), 1_000);
        let p99 = w.totals().p99_us();
        assert!((72_408..=102_400).contains(&p99), "{p99}");
    }

    #[test]
    fn given_a_window_when_time_passes_then_old_intervals_leave_it() {
        let mut w = Window::default();
        w.push(1_000, traffic(5, 5, 100));
        w.push(1_500, traffic(3, 0, 100));
        w.push(1_200, traffic(2, 0, 100)); // late, from another router
        w.evict(1_000);
        assert_eq!(w.totals().requests, 5);
        assert_eq!(w.totals().errors, 0);
        w.evict(1_500);
        assert!(w.is_empty());
        assert_eq!(w.totals(), &Totals::default());
    }

    #[test]
    fn given_too_many_samples_then_the_oldest_are_coalesced_not_lost() {
        let mut w = Window::default();
        for i in 0..(MAX_SAMPLES as i64 + 10) {
            w.push(i, traffic(1, 0, 100));
        }
        assert_eq!(w.totals().requests, MAX_SAMPLES as u64 + 10);
        assert_eq!(w.samples.len(), MAX_SAMPLES);
    }

    #[test]
    fn rates_round_and_survive_empty_windows() {
        assert_eq!(Totals::default().error_rate_bp(), 0);
        assert_eq!(Totals::default().p99_us(), 0);
        assert_eq!(traffic(3, 1, 100).error_rate_bp(), 3_333);
        assert_eq!(traffic(3, 2, 100).error_rate_bp(), 6_667);
    }
}
