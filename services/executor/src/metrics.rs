//! The executor's metrics on `/metrics` (see `--admin-listen`), named in
//! one place; docs/METRICS.md lists every service's.

use metrics::{describe_counter, describe_gauge};

/// Replicas this executor watches now (gauge).
pub const REPLICAS: &str = "mentat_executor_replicas";
/// Replicas this host may run (gauge).
pub const CAPACITY: &str = "mentat_executor_capacity";
/// Replica processes started (counter).
pub const STARTS_TOTAL: &str = "mentat_executor_replica_starts_total";
/// Starts of a replica that already ran and exited on this host, as the
/// planner asks after a crash (counter).
pub const RESTARTS_TOTAL: &str = "mentat_executor_replica_restarts_total";
/// Replicas that could not be started (counter).
pub const START_FAILURES_TOTAL: &str = "mentat_executor_replica_start_failures_total";
/// Replica exits, by whether a stop was asked for (`requested` is `false`
/// for a crash) (counter).
pub const EXITS_TOTAL: &str = "mentat_executor_replica_exits_total";

/// Describe every metric (the `# HELP` lines).
pub fn describe() {
    describe_gauge!(REPLICAS, "Replicas this executor watches now.");
    describe_gauge!(CAPACITY, "Replicas this host may run.");
    describe_counter!(STARTS_TOTAL, "Replica processes started.");
    describe_counter!(
        RESTARTS_TOTAL,
        "Starts of a replica that already ran and exited on this host."
    );
    describe_counter!(START_FAILURES_TOTAL, "Replicas that could not be started.");
    describe_counter!(
        EXITS_TOTAL,
        "Replica exits, by whether a stop was asked for (false: a crash)."
    );
}
