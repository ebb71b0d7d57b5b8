//! Every NATS subject Mentat uses. `schemas/README.md` documents each one
//! with its publisher, consumers and message type.

/// Prefix of command subjects: `mentat.cmd.<verb>` (request/reply).
pub const CMD_PREFIX: &str = "mentat.cmd";
/// Every command subject.
pub const CMD_ALL: &str = "mentat.cmd.>";
/// Prefix of query subjects: `mentat.query.<what>` (request/reply, not stored).
pub const QUERY_PREFIX: &str = "mentat.query";
/// `mentat.query.status`
pub const QUERY_STATUS: &str = "mentat.query.status";
/// `mentat.query.history`
pub const QUERY_HISTORY: &str = "mentat.query.history";
/// `mentat.query.audit_verify`: the planner recomputes the whole chain.
pub const QUERY_AUDIT_VERIFY: &str = "mentat.query.audit_verify";
/// `mentat.query.audit_export`: the log, a page at a time, with hashes.
pub const QUERY_AUDIT_EXPORT: &str = "mentat.query.audit_export";
/// `mentat.query.audit_key`: the planner's public key.
pub const QUERY_AUDIT_KEY: &str = "mentat.query.audit_key";
/// Request/reply: the status at a past position or time, rebuilt from the log.
pub const QUERY_AUDIT_STATE: &str = "mentat.query.audit_state";
/// `mentat.audit.anchor` (request/reply, not stored): the leading planner
/// signs an anchor now. Only the leader listens.
pub const AUDIT_ANCHOR: &str = "mentat.audit.anchor";
/// Signed anchors (JetStream stream `MENTAT_ANCHORS`).
pub const ANCHORS: &str = "mentat.anchors";
/// Every fact subject: `mentat.fact.<service>.<EventType>`.
pub const FACT_ALL: &str = "mentat.fact.>";
/// Every relayed log event: `mentat.evt.<stream>.<EventType>`.
pub const EVT_ALL: &str = "mentat.evt.>";
/// Prefix of router traffic statistics: `mentat.stats.<router-id>` (JetStream, stream `MENTAT_STATS`).
pub const STATS_PREFIX: &str = "mentat.stats";
/// Every router's traffic statistics.
pub const STATS_ALL: &str = "mentat.stats.>";
/// Host heartbeats: `mentat.host.heartbeat.<host>` (core NATS, not stored).
pub const HEARTBEAT_ALL: &str = "mentat.host.heartbeat.*";

/// `mentat.cmd.<verb>`
pub fn command(verb: &str) -> String {
    format!("{CMD_PREFIX}.{verb}")
}

/// `mentat.fact.<service>.<event_type>`
pub fn fact(service: &str, event_type: &str) -> String {
    format!("mentat.fact.{service}.{event_type}")
}

/// `mentat.evt.<stream>.<event_type>`
pub fn event(stream: &str, event_type: &str) -> String {
    format!("mentat.evt.{stream}.{event_type}")
}

/// Every relayed event of one type, whatever the stream: `mentat.evt.*.<event_type>`.
pub fn events_of_type(event_type: &str) -> String {
    format!("mentat.evt.*.{event_type}")
}

/// Every relayed event of one stream: `mentat.evt.<stream>.>`.
pub fn events_of_stream(stream: &str) -> String {
    format!("mentat.evt.{stream}.>")
}

/// `mentat.stats.<router_id>`
pub fn stats(router_id: &str) -> String {
    format!("{STATS_PREFIX}.{router_id}")
}

/// `mentat.host.heartbeat.<host>`
pub fn heartbeat(host: &str) -> String {
    format!("mentat.host.heartbeat.{host}")
}

/// Router heartbeats: `mentat.router.heartbeat.<router>` (core NATS, not stored).
pub const ROUTER_HEARTBEAT_ALL: &str = "mentat.router.heartbeat.*";

/// `mentat.router.heartbeat.<router>`
pub fn router_heartbeat(router: &str) -> String {
    format!("mentat.router.heartbeat.{router}")
}

/// The last token of a subject (the verb of a command, the type of an event).
pub fn last_token(subject: &str) -> &str {
    subject.rsplit('.').next().unwrap_or(subject)
}

/// `mentat.query.rollout`: the last fleet rollout in detail, or the past ones.
pub const QUERY_ROLLOUT: &str = "mentat.query.rollout";
