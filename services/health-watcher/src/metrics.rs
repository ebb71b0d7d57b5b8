//! The health-watcher's metrics on `/metrics` (see `--admin-listen`), named
//! in one place; docs/METRICS.md lists every service's.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// Health probes sent, by result: `ok` (a 2xx) or `failed` (counter).
pub const PROBES_TOTAL: &str = "mentat_health_probes_total";
/// One health probe, from connecting to the answer or the timeout
/// (histogram, seconds).
pub const PROBE_DURATION: &str = "mentat_health_probe_seconds";
/// Replicas probed now (gauge).
pub const PROBED_REPLICAS: &str = "mentat_health_probed_replicas";
/// Replica health transitions published, by the state entered:
/// `healthy` or `unhealthy` (counter).
pub const TRANSITIONS_TOTAL: &str = "mentat_health_transitions_total";
/// Threshold verdicts published, by verdict: `ThresholdBreached`,
/// `NoData` or `ThresholdsMet` (counter).
pub const VERDICTS_TOTAL: &str = "mentat_health_verdicts_total";

/// Describe every metric (the `# HELP` lines).
pub fn describe() {
    describe_counter!(PROBES_TOTAL, "Health probes sent, by result (ok, failed).");
    describe_histogram!(
        PROBE_DURATION,
        Unit::Seconds,
        "One health probe, to its answer or its timeout."
    );
    describe_gauge!(PROBED_REPLICAS, "Replicas probed now.");
    describe_counter!(
        TRANSITIONS_TOTAL,
        "Replica health transitions published, by the state entered."
    );
    describe_counter!(VERDICTS_TOTAL, "Threshold verdicts published, by verdict.");
}
