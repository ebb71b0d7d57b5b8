//! Traffic statistics that routers publish every interval on
//! `mentat.stats.<router-id>` (stream `MENTAT_STATS`): per instance, the
//! requests, the 5xx answers and a latency histogram of that interval only
//! (deltas, never cumulative counts).
//!
//! Every router uses the same fixed bucket boundaries
//! ([`LATENCY_BUCKET_BOUNDS_US`]), so a consumer can add the bucket counts of
//! several intervals and several routers together ([`merge_buckets`]) and
//! read percentiles of the merged window ([`percentile_ms`]). The
//! `p50_ms`/`p90_ms`/`p99_ms` fields are a convenience for one interval of
//! one router; percentiles must never be averaged across windows.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Upper bounds, in microseconds, of the latency buckets: 50 µs times
/// `2^(k/2)` for `k` in `0..=40` (about 52 s), rounded. Bucket `k` counts
/// latencies `<= LATENCY_BUCKET_BOUNDS_US[k]` and above the previous bound;
/// one more bucket (index [`LATENCY_BUCKETS`]` - 1`) counts everything slower.
pub const LATENCY_BUCKET_BOUNDS_US: [u64; 41] = [
    50, 71, 100, 141, 200, 283, 400, 566, 800, 1131, 1600, 2263, 3200, 4525, 6400, 9051, 12800,
    18102, 25600, 36204, 51200, 72408, 102400, 144815, 204800, 289631, 409600, 579262, 819200,
    1158524, 1638400, 2317048, 3276800, 4634095, 6553600, 9268190, 13107200, 18536380, 26214400,
    37072760, 52428800,
];

/// Number of bucket counts in [`InstanceStats::latency_buckets`]: one per
/// bound plus the overflow bucket.
pub const LATENCY_BUCKETS: usize = LATENCY_BUCKET_BOUNDS_US.len() + 1;

/// One interval of traffic through one router.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TrafficStats {
    /// The router's id (`--router-id`).
    pub router: String,
    /// End of the interval, milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// Length of the interval, in milliseconds.
    pub interval_ms: u64,
    /// Every instance that served or failed a request in the interval.
    pub instances: Vec<InstanceStats>,
}

/// One instance (replica) during one interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InstanceStats {
    /// Service.
    pub service: String,
    /// Replica id.
    pub replica: String,
    /// Image (version) the replica runs.
    pub image: String,
    /// Requests answered or failed by this instance in the interval
    /// (attempts: a request retried elsewhere counts on both instances).
    pub requests: u64,
    /// Of those, answers with a 5xx status, including the router's own 502
    /// when the instance could not be reached or broke the response.
    pub errors_5xx: u64,
    /// Request counts per latency bucket ([`LATENCY_BUCKETS`] entries,
    /// bounds in [`LATENCY_BUCKET_BOUNDS_US`]); latency runs from the
    /// request leaving the router to the last byte of the answer.
    pub latency_buckets: Vec<u64>,
    /// Median latency of the interval, in milliseconds (0 without requests).
    pub p50_ms: f64,
    /// 90th percentile, in milliseconds.
    pub p90_ms: f64,
    /// 99th percentile, in milliseconds.
    pub p99_ms: f64,
}

/// The bucket index of a latency in microseconds.
pub fn bucket_of(latency_us: u64) -> usize {
    LATENCY_BUCKET_BOUNDS_US.partition_point(|bound| *bound < latency_us)
}

/// Add `other`'s bucket counts into `into` (missing entries count as 0, so
/// windows of different lengths merge).
pub fn merge_buckets(into: &mut Vec<u64>, other: &[u64]) {
    if into.len() < other.len() {
        into.resize(other.len(), 0);
    }
    for (sum, n) in into.iter_mut().zip(other) {
        *sum += n;
    }
}

/// The `q` quantile (0.0 to 1.0) of bucket counts, in milliseconds,
/// interpolated linearly inside its bucket. 0 without any count; the lower
/// bound of the overflow bucket when it falls there.
pub fn percentile_ms(buckets: &[u64], q: f64) -> f64 {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
    let mut seen = 0u64;
    for (i, n) in buckets.iter().enumerate() {
        if *n == 0 {
            continue;
        }
        if (seen + n) as f64 >= rank {
            let lower = if i == 0 {
                0
            } else {
                LATENCY_BUCKET_BOUNDS_US[(i - 1).min(LATENCY_BUCKET_BOUNDS_US.len() - 1)]
            };
            let Some(upper) = LATENCY_BUCKET_BOUNDS_US.get(i) else {
                return lower as f64 / 1000.0;
            };
            let within = (rank - seen as f64) / *n as f64;
            return (lower as f64 + within * (upper - lower) as f64) / 1000.0;
        }
        seen += n;
    }
    LATENCY_BUCKET_BOUNDS_US[LATENCY_BUCKET_BOUNDS_US.len() - 1] as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_grow_by_a_half_power_of_two() {
        for pair in LATENCY_BUCKET_BOUNDS_US.windows(2) {
            let ratio = pair[1] as f64 / pair[0] as f64;
            assert!((1.40..1.43).contains(&ratio), "{pair:?}");
        }
    }

    #[test]
    fn latencies_fall_in_the_bucket_of_their_upper_bound() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(50), 0);
        assert_eq!(bucket_of(51), 1);
        assert_eq!(bucket_of(800), 8);
        assert_eq!(bucket_of(1_000), 9);
        assert_eq!(bucket_of(u64::MAX), LATENCY_BUCKETS - 1);
    }

    #[test]
    fn percentiles_of_merged_windows() {
        let mut a = vec![0; LATENCY_BUCKETS];
        a[bucket_of(1_000)] = 90; // (800, 1131] µs
        let mut b = vec![0; LATENCY_BUCKETS];
        b[bucket_of(100_000)] = 10; // (72408, 102400] µs
        let mut window = Vec::new();
        merge_buckets(&mut window, &a);
        merge_buckets(&mut window, &b);
        assert_eq!(window.iter().sum::<u64>(), 100);
        let p50 = percentile_ms(&window, 0.5);
        assert!((0.8..=1.131).contains(&p50), "{p50}");
        let p99 = percentile_ms(&window, 0.99);
        assert!((72.4..=102.4).contains(&p99), "{p99}");
        assert_eq!(percentile_ms(&[], 0.99), 0.0);
    }
}
