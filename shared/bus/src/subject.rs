//! Every NATS subject Mentat uses. `schemas/README.md` documents each one
//! with its publisher, consumers and message type.

use mentat_domain::event::FactSource;

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
/// The planner replays its log's decisions (`mt audit replay`).
pub const QUERY_AUDIT_REPLAY: &str = "mentat.query.audit_replay";
/// `mentat.audit.anchor` (request/reply, not stored): the leading planner
/// signs an anchor now. Only the leader listens.
pub const AUDIT_ANCHOR: &str = "mentat.audit.anchor";
/// Signed anchors (JetStream stream `MENTAT_ANCHORS`).
pub const ANCHORS: &str = "mentat.anchors";
/// Every fact subject: `mentat.fact.<source>.<service>.<EventType>`, where
/// `<source>` is `host.<host>`, `router.<router>` or `health` (see [`fact`]).
pub const FACT_ALL: &str = "mentat.fact.>";
/// Prefix of the facts an executor reports: `mentat.fact.host.<host>.…`.
pub const HOST_FACTS_PREFIX: &str = "mentat.fact.host";
/// Prefix of the facts a router reports: `mentat.fact.router.<router>.…`.
pub const ROUTER_FACTS_PREFIX: &str = "mentat.fact.router";
/// Prefix of the facts the health-watcher reports: `mentat.fact.health.…`.
pub const HEALTH_FACTS_PREFIX: &str = "mentat.fact.health";
/// Prefix of the facts the notifier reports: `mentat.fact.notifier.…`.
pub const NOTIFIER_FACTS_PREFIX: &str = "mentat.fact.notifier";
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

/// The subject of a fact from `source` about `service`:
/// `mentat.fact.host.<host>.<service>.<event_type>`,
/// `mentat.fact.router.<router>.<service>.<event_type>` or
/// `mentat.fact.health.<service>.<event_type>`. Each source publishes only
/// under its own prefix (the server's permissions see to it), so the
/// subject says who reported the fact.
pub fn fact(source: FactSource<'_>, service: &str, event_type: &str) -> String {
    match source {
        FactSource::Host(host) => format!("{HOST_FACTS_PREFIX}.{host}.{service}.{event_type}"),
        FactSource::Router(router) => {
            format!("{ROUTER_FACTS_PREFIX}.{router}.{service}.{event_type}")
        }
        FactSource::HealthWatcher => format!("{HEALTH_FACTS_PREFIX}.{service}.{event_type}"),
        FactSource::Notifier => format!("{NOTIFIER_FACTS_PREFIX}.{service}.{event_type}"),
    }
}

/// Facts of one type from every host: `mentat.fact.host.*.*.<event_type>`.
pub fn host_facts_of_type(event_type: &str) -> String {
    format!("{HOST_FACTS_PREFIX}.*.*.{event_type}")
}

/// Facts of one type from the health-watcher: `mentat.fact.health.*.<event_type>`.
pub fn health_facts_of_type(event_type: &str) -> String {
    format!("{HEALTH_FACTS_PREFIX}.*.{event_type}")
}

/// What a fact's subject says: who reported it, about which service, of
/// which type. `None` for a subject [`fact`] does not build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FactSubject<'a> {
    /// Who reported it.
    pub source: FactSource<'a>,
    /// The service (the log stream) it is about.
    pub service: &'a str,
    /// Its event type.
    pub event_type: &'a str,
}

/// Read a fact's subject (the inverse of [`fact`]).
pub fn parse_fact(subject: &str) -> Option<FactSubject<'_>> {
    let rest = subject.strip_prefix("mentat.fact.")?;
    let tokens: Vec<&str> = rest.split('.').collect();
    let (source, service, event_type) = match tokens.as_slice() {
        ["host", host, service, t] => (FactSource::Host(host), *service, *t),
        ["router", router, service, t] => (FactSource::Router(router), *service, *t),
        ["health", service, t] => (FactSource::HealthWatcher, *service, *t),
        ["notifier", service, t] => (FactSource::Notifier, *service, *t),
        _ => return None,
    };
    let named = |token: &str| !token.is_empty() && !token.contains(['*', '>']);
    let source_named = match source {
        FactSource::Host(id) | FactSource::Router(id) => named(id),
        FactSource::HealthWatcher | FactSource::Notifier => true,
    };
    (source_named && named(service) && named(event_type)).then_some(FactSubject {
        source,
        service,
        event_type,
    })
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

/// Planner heartbeats: `mentat.planner.heartbeat.<planner>` (core NATS, not stored).
pub const PLANNER_HEARTBEAT_ALL: &str = "mentat.planner.heartbeat.*";

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

/// `mentat.query.release`: the releases and what each environment serves.
pub const QUERY_RELEASE: &str = "mentat.query.release";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fact_subject_names_its_source_and_reads_back() {
        for source in [
            FactSource::Host("h-1"),
            FactSource::Router("r1"),
            FactSource::HealthWatcher,
            FactSource::Notifier,
        ] {
            let subject = fact(source, "web", "ReplicaStarted");
            assert_eq!(
                parse_fact(&subject),
                Some(FactSubject {
                    source,
                    service: "web",
                    event_type: "ReplicaStarted"
                }),
                "{subject}"
            );
        }
        assert_eq!(
            fact(FactSource::Host("h1"), "web", "ReplicaExited"),
            "mentat.fact.host.h1.web.ReplicaExited"
        );
        for bad in [
            "mentat.fact.web.ReplicaStarted",
            "mentat.fact.host.h1.web",
            "mentat.fact.host.*.web.ReplicaStarted",
            "mentat.fact.health.web.ReplicaHealthy.extra",
            "mentat.fact.planner.web.ReplicaStarted",
            "mentat.evt.web.ReplicaStarted",
        ] {
            assert_eq!(parse_fact(bad), None, "{bad}");
        }
    }
}
