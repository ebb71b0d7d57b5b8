//! The planner's metrics on `/metrics` (see `--admin-listen`), named in one
//! place; docs/METRICS.md lists every service's.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// Events appended, by event type: the planner's decisions and the facts
/// it recorded (counter, label `event`).
pub const EVENTS_APPENDED_TOTAL: &str = "mentat_planner_events_appended_total";
/// One append transaction to the log, from the call to its commit
/// (histogram, seconds).
pub const APPEND_DURATION: &str = "mentat_planner_append_seconds";
/// Commands answered, by verb and result: `accepted` or the rejection's
/// kind (counter, labels `verb`, `result`).
pub const COMMANDS_TOTAL: &str = "mentat_planner_commands_total";
/// Facts dropped because their source may not report them: a host about
/// another's replica, a router under another's id (counter).
pub const FACTS_REFUSED_TOTAL: &str = "mentat_planner_facts_refused_total";
/// Position of the newest event in the log (gauge).
pub const LOG_POSITION: &str = "mentat_planner_log_position";

/// Describe every metric (the `# HELP` lines).
pub fn describe() {
    describe_counter!(
        EVENTS_APPENDED_TOTAL,
        "Events appended to the log, by event type."
    );
    describe_histogram!(
        APPEND_DURATION,
        Unit::Seconds,
        "One append transaction to the log, to its commit."
    );
    describe_counter!(
        COMMANDS_TOTAL,
        "Commands answered, by verb and result (accepted or the rejection's kind)."
    );
    describe_counter!(
        FACTS_REFUSED_TOTAL,
        "Facts dropped because their source may not report them."
    );
    describe_gauge!(LOG_POSITION, "Position of the newest event in the log.");
}
