//! The verdict on one version's window, and on a canary against its
//! baseline. Pure functions of the thresholds and the counts.
//!
//! 1. Fewer than `min_requests` requests in the window: **no data**
//!    (neither a pass nor a breach).
//! 2. Error rate (5xx / requests) above `error_rate_percent`: a breach of
//!    [`Metric::ErrorRate`], unless the baseline excuses it (below).
//! 3. 99th-percentile latency above `latency_p99_ms`: a breach of
//!    [`Metric::LatencyP99`], same exception.
//! 4. Otherwise a **pass**.
//!
//! **Baseline.** With `compare_to_baseline`, when other versions of the
//! service served at least `min_requests` requests over the same window
//! (the baseline: all other versions together), a version that breaks an
//! absolute threshold breaches only if it is also worse than the baseline
//! by more than `max_degradation_percent`:
//!
//! ```text
//! observed > max(baseline, floor) * (100 + max_degradation_percent) / 100
//! ```
//!
//! The floor ([`ERROR_RATE_FLOOR_BP`] = 1 percentage point,
//! [`LATENCY_FLOOR_US`] = 10 ms) keeps a near-zero baseline from making any
//! difference an "infinite" degradation, and from making a tiny one count:
//! against a 0.1 % baseline, a canary must pass the absolute threshold and
//! 1.5 % (with the default 50 %). A spike that hits every version alike
//! (the baseline as bad as the canary) breaches nothing. With a baseline of
//! too few requests the version is judged on the absolute thresholds alone.
//!
//! Units are those of [`Judgement`]: basis points for the error rate,
//! microseconds for the latency.

use mentat_domain::event::{Judgement, Metric};
use mentat_domain::spec::Thresholds;

use crate::window::Totals;

/// Smallest error rate a baseline counts as, in basis points (1 %).
pub const ERROR_RATE_FLOOR_BP: u64 = 100;
/// Smallest p99 latency a baseline counts as, in microseconds (10 ms).
pub const LATENCY_FLOOR_US: u64 = 10_000;

/// The verdict on one version's window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Within every threshold, with enough requests.
    Pass {
        /// Requests in the window.
        requests: u64,
    },
    /// Fewer requests than `min_requests`.
    NoData {
        /// Requests in the window.
        requests: u64,
    },
    /// A threshold broken, with the numbers.
    Breach(Judgement),
}

/// What a verdict is, without its numbers: a fact is published only when
/// this changes (a breach of another metric is a change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// [`Verdict::Pass`].
    Pass,
    /// [`Verdict::NoData`].
    NoData,
    /// [`Verdict::Breach`] of this metric.
    Breach(Metric),
}

impl Verdict {
    /// The verdict without its numbers.
    pub fn key(&self) -> Key {
        match self {
            Verdict::Pass { .. } => Key::Pass,
            Verdict::NoData { .. } => Key::NoData,
            Verdict::Breach(j) => Key::Breach(j.metric),
        }
    }
}

/// Judge `own` (one version's window) against `t`; `baseline` is the other
/// versions' window over the same time, if any served.
pub fn judge(t: &Thresholds, own: &Totals, baseline: Option<&Totals>) -> Verdict {
    let requests = own.requests;
    if requests < t.min_requests {
        return Verdict::NoData { requests };
    }
    let baseline = baseline.filter(|b| t.compare_to_baseline && b.requests >= t.min_requests);
    let window_secs = t.window_secs;
    let check = |metric: Metric, observed: u64, threshold: u64, base: Option<u64>, floor: u64| {
        if observed <= threshold {
            return None;
        }
        if let Some(base) = base {
            if !degraded(observed, base, floor, t.max_degradation_percent) {
                return None;
            }
        }
        Some(Judgement {
            metric,
            observed,
            threshold,
            baseline: base,
            window_secs,
            requests,
        })
    };
    let error = check(
        Metric::ErrorRate,
        own.error_rate_bp(),
        u64::from(t.error_rate_percent) * 100,
        baseline.map(Totals::error_rate_bp),
        ERROR_RATE_FLOOR_BP,
    );
    let latency = || {
        check(
            Metric::LatencyP99,
            own.p99_us(),
            t.latency_p99_ms.saturating_mul(1000),
            baseline.map(Totals::p99_us),
            LATENCY_FLOOR_US,
        )
    };
    match error.or_else(latency) {
        Some(j) => Verdict::Breach(j),
        None => Verdict::Pass { requests },
    }
}

/// `observed` is worse than `baseline` (at least `floor`) by more than `pct` percent.
pub fn degraded(observed: u64, baseline: u64, floor: u64, pct: u32) -> bool {
    let bound = u128::from(baseline.max(floor)) * (100 + u128::from(pct)) / 100;
    u128::from(observed) > bound
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::window::Totals;

    /// The thresholds the unit tests judge by (also those of `traffic`'s).
    pub(crate) fn thresholds() -> Thresholds {
        Thresholds {
            enabled: true,
            error_rate_percent: 5,
            latency_p99_ms: 500,
            window_secs: 1,
            min_requests: 20,
            compare_to_baseline: true,
            max_degradation_percent: 50,
            idle_probe_rps: 0,
        }
    }

    fn traffic(requests: u64, errors: u64, latency_us: u64) -> Totals {
        let mut t = Totals::default();
        for i in 0..requests {
            t.add(&Totals::one(latency_us, i < errors));
        }
        t
    }

    #[test]
    fn given_too_few_requests_then_no_data_whatever_the_errors() {
        let v = judge(&thresholds(), &traffic(19, 19, 1_000), None);
        assert_eq!(v, Verdict::NoData { requests: 19 });
    }

    #[test]
    fn given_a_version_alone_when_errors_pass_the_threshold_then_breach_with_numbers() {
        let v = judge(&thresholds(), &traffic(100, 12, 1_000), None);
        let Verdict::Breach(j) = v else {
            panic!("expected a breach, got {v:?}");
        };
        assert_eq!(j.metric, Metric::ErrorRate);
        assert_eq!(j.observed, 1_200);
        assert_eq!(j.threshold, 500);
        assert_eq!(j.baseline, None);
        assert_eq!((j.window_secs, j.requests), (1, 100));
        assert_eq!(
            judge(&thresholds(), &traffic(100, 5, 1_000), None),
            Verdict::Pass { requests: 100 }
        );
    }

    #[test]
    fn given_a_slow_version_then_latency_breach_in_microseconds() {
        let v = judge(&thresholds(), &traffic(50, 0, 800_000), None);
        let Verdict::Breach(j) = v else {
            panic!("expected a breach, got {v:?}");
        };
        assert_eq!(j.metric, Metric::LatencyP99);
        assert_eq!(j.threshold, 500_000);
        assert!(j.observed > 500_000, "{j:?}");
    }

    #[test]
    fn a_canary_within_the_allowed_degradation_of_its_baseline_passes() {
        // Baseline 10 % errors; 50 % worse is 15 %.
        let baseline = traffic(900, 90, 1_000);
        let v = judge(&thresholds(), &traffic(100, 14, 1_000), Some(&baseline));
        assert_eq!(v, Verdict::Pass { requests: 100 });
        let v = judge(&thresholds(), &traffic(100, 16, 1_000), Some(&baseline));
        let Verdict::Breach(j) = v else {
            panic!("expected a breach, got {v:?}");
        };
        assert_eq!((j.observed, j.baseline), (1_600, Some(1_000)));
    }

    #[test]
    fn a_near_perfect_baseline_counts_as_its_floors() {
        // Errors: a 0.1 % baseline counts as 1 %, so 50 % worse is 1.5 %.
        let t = Thresholds {
            error_rate_percent: 1,
            ..thresholds()
        };
        let baseline = traffic(1_000, 1, 1_000);
        let v = judge(&t, &traffic(1_000, 14, 1_000), Some(&baseline));
        assert_eq!(v, Verdict::Pass { requests: 1_000 });
        let v = judge(&t, &traffic(1_000, 16, 1_000), Some(&baseline));
        assert!(
            matches!(v, Verdict::Breach(ref j) if j.metric == Metric::ErrorRate),
            "{v:?}"
        );
        // Latency: a 1 ms baseline counts as 10 ms, so 50 % worse is 15 ms.
        let t = Thresholds {
            latency_p99_ms: 5,
            ..thresholds()
        };
        let baseline = traffic(100, 0, 1_000);
        let v = judge(&t, &traffic(100, 0, 12_000), Some(&baseline));
        assert_eq!(v, Verdict::Pass { requests: 100 });
        let v = judge(&t, &traffic(100, 0, 30_000), Some(&baseline));
        assert!(
            matches!(v, Verdict::Breach(ref j) if j.metric == Metric::LatencyP99),
            "{v:?}"
        );
    }

    #[test]
    fn given_a_canary_worse_than_a_healthy_baseline_then_breach() {
        let baseline = traffic(900, 1, 1_000);
        let v = judge(&thresholds(), &traffic(100, 30, 1_000), Some(&baseline));
        let Verdict::Breach(j) = v else {
            panic!("expected a breach, got {v:?}");
        };
        assert_eq!(j.baseline, Some(11));
        assert_eq!(j.observed, 3_000);
    }

    #[test]
    fn given_a_spike_on_every_version_then_the_canary_does_not_breach() {
        let baseline = traffic(900, 900, 1_000);
        let v = judge(&thresholds(), &traffic(100, 100, 1_000), Some(&baseline));
        assert_eq!(v, Verdict::Pass { requests: 100 });
        let slow_everywhere = traffic(900, 0, 800_000);
        let v = judge(
            &thresholds(),
            &traffic(100, 0, 800_000),
            Some(&slow_everywhere),
        );
        assert_eq!(v, Verdict::Pass { requests: 100 });
    }

    #[test]
    fn given_a_baseline_with_too_few_requests_then_judged_absolutely() {
        let thin = traffic(5, 5, 1_000);
        let v = judge(&thresholds(), &traffic(100, 30, 1_000), Some(&thin));
        assert!(
            matches!(v, Verdict::Breach(ref j) if j.baseline.is_none()),
            "{v:?}"
        );
    }

    #[test]
    fn given_compare_off_then_the_baseline_is_ignored() {
        let t = Thresholds {
            compare_to_baseline: false,
            ..thresholds()
        };
        let bad_everywhere = traffic(900, 900, 1_000);
        let v = judge(&t, &traffic(100, 100, 1_000), Some(&bad_everywhere));
        assert!(matches!(v, Verdict::Breach(_)), "{v:?}");
    }

    #[test]
    fn degradation_is_relative_with_a_floor() {
        // Baseline 0: the floor (1 %) times 1.5 is the bound.
        assert!(!degraded(150, 0, ERROR_RATE_FLOOR_BP, 50));
        assert!(degraded(151, 0, ERROR_RATE_FLOOR_BP, 50));
        // Baseline 10 %: 15 % is the bound.
        assert!(!degraded(1_500, 1_000, ERROR_RATE_FLOOR_BP, 50));
        assert!(degraded(1_501, 1_000, ERROR_RATE_FLOOR_BP, 50));
    }

    #[test]
    fn keys_tell_metrics_apart() {
        let a = judge(&thresholds(), &traffic(100, 50, 1_000), None);
        let b = judge(&thresholds(), &traffic(100, 0, 900_000), None);
        assert_eq!(a.key(), Key::Breach(Metric::ErrorRate));
        assert_eq!(b.key(), Key::Breach(Metric::LatencyP99));
        assert_ne!(a.key(), b.key());
    }
}
