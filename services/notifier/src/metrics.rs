//! The notifier's metrics on `/metrics` (see `--admin-listen`), named in
//! one place; docs/METRICS.md lists every service's.

use metrics::{describe_counter, describe_histogram, Unit};

/// Deliveries ended, by result: `delivered` or `failed` once the tries ran
/// out (counter).
pub const DELIVERIES_TOTAL: &str = "mentat_notifier_deliveries_total";
/// POSTs sent, by result: `ok` (a 2xx) or `failed` (counter).
pub const POSTS_TOTAL: &str = "mentat_notifier_posts_total";
/// One POST, to its status line or its timeout (histogram, seconds).
pub const POST_DURATION: &str = "mentat_notifier_post_seconds";

/// Describe every metric (the `# HELP` lines).
pub fn describe() {
    describe_counter!(
        DELIVERIES_TOTAL,
        "Deliveries ended, by result (delivered, or failed once the tries ran out)."
    );
    describe_counter!(POSTS_TOTAL, "POSTs sent, by result (ok, failed).");
    describe_histogram!(
        POST_DURATION,
        Unit::Seconds,
        "One POST, to its status line or its timeout."
    );
}
