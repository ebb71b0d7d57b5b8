//! Answers to `mentat.query.status` and `mentat.query.history`, read from
//! the world the log folded into (and, for raw events, the log itself).

use mentat_domain::command::{
    BrokenStatus, HistoryQuery, HistoryReply, RejectKind, ReplicaStatus, ServiceStatus,
    StatusQuery, StatusReply, VersionHealth,
};
use mentat_domain::planner::state::VerdictKind;
use mentat_domain::planner::{self, Phase, ServiceState};

use crate::log::{envelope, Log};

/// The status of one service or of all, from `log`'s world; stale (and
/// marked so) while the log has been unreachable since `unavailable_since_ms`.
pub fn status(log: &Log, query: &StatusQuery, unavailable_since_ms: Option<i64>) -> StatusReply {
    let world = &log.world;
    if let Some(name) = &query.service {
        if !world.services.contains_key(name) {
            return StatusReply::Rejected {
                kind: RejectKind::UnknownService,
                reason: format!("unknown service `{name}`"),
            };
        }
    }
    let services = world
        .services
        .iter()
        .filter(|(name, s)| s.spec.is_some() && query.service.as_ref().is_none_or(|q| q == *name))
        .map(|(name, s)| ServiceStatus {
            broken: log.broken.get(name).map(|b| BrokenStatus {
                position: b.position,
                error: b.error.clone(),
            }),
            ..service_status(name, s)
        })
        .collect();
    let hosts = world
        .hosts
        .iter()
        .filter(|(_, h)| h.live)
        .map(|(id, _)| id.clone())
        .collect();
    StatusReply::Ok {
        services,
        hosts,
        log_unavailable_since_ms: unavailable_since_ms,
    }
}

fn service_status(name: &str, s: &ServiceState) -> ServiceStatus {
    let deployment = s.deployment.as_ref().and_then(|d| {
        let mut record = s
            .history
            .iter()
            .rev()
            .find(|r| r.deployment_id == d.id)
            .cloned()?;
        record.phase = Some(planner::deployment::describe(d));
        Some(record)
    });
    let shares = planner::routes::shares(&s.routes);
    let instances: Vec<ReplicaStatus> = s
        .replicas
        .values()
        .filter(|r| r.phase != Phase::Exited)
        .map(|r| ReplicaStatus {
            replica: r.id.clone(),
            image: r.image.clone(),
            host: r.host.clone(),
            addr: r.addr.clone(),
            phase: r.phase.as_str().to_owned(),
            weight: s
                .routes
                .iter()
                .find(|b| b.replica == r.id)
                .map_or(0, |b| b.weight),
            share_bp: shares.get(&r.id).copied().unwrap_or(0),
            spawned: r.spawned,
            started_at_ms: r.started_at_ms,
        })
        .collect();
    // A version none of whose replicas is left has no traffic to judge.
    let health = s
        .verdicts
        .iter()
        .filter(|(version, _)| instances.iter().any(|r| &r.image == *version))
        .map(|(version, v)| {
            let (verdict, detail) = match &v.kind {
                VerdictKind::Pass => ("pass", "within every threshold".to_owned()),
                VerdictKind::NoData {
                    requests,
                    min_requests,
                } => (
                    "no_data",
                    format!("{requests} requests in the window, {min_requests} needed"),
                ),
                VerdictKind::Breach(j) => ("breach", j.to_string()),
            };
            VersionHealth {
                version: version.clone(),
                verdict: verdict.to_owned(),
                detail,
                since_ms: v.since_ms,
            }
        })
        .collect();
    ServiceStatus {
        service: name.to_owned(),
        image: s.image.clone(),
        replicas: s.spec.as_ref().map_or(0, |spec| spec.replicas),
        deployment,
        instances,
        routes: s.routes.clone(),
        health,
        broken: None,
    }
}

/// The deployments of a service, and its raw events when asked.
pub async fn history(log: &Log, query: &HistoryQuery) -> HistoryReply {
    let Some(state) = log.world.services.get(&query.service) else {
        return HistoryReply::Rejected {
            kind: RejectKind::UnknownService,
            reason: format!("unknown service `{}`", query.service),
        };
    };
    let mut events = Vec::new();
    if query.events {
        let recorded = match log.store().read_stream(&query.service).await {
            Ok(r) => r,
            Err(e) => {
                return HistoryReply::Rejected {
                    kind: RejectKind::Unavailable,
                    reason: format!("cannot read the log: {e}"),
                }
            }
        };
        for r in &recorded {
            match envelope(r) {
                Ok(env) => events.push(env),
                Err(e) => {
                    return HistoryReply::Rejected {
                        kind: RejectKind::ServiceBroken,
                        reason: e,
                    }
                }
            }
        }
    }
    HistoryReply::Ok {
        deployments: state.history.clone(),
        events,
    }
}

#[cfg(test)]
mod tests {
    use mentat_domain::planner::state::{Replica, Verdict};
    use mentat_domain::spec::HealthSpec;

    use super::*;

    fn replica(id: &str, image: &str, phase: Phase) -> Replica {
        Replica {
            id: id.into(),
            image: image.into(),
            host: "vm".into(),
            addr: None,
            phase,
            drain_since_ms: None,
            drained: false,
            health: HealthSpec::default(),
            exit: None,
            spawned: false,
            started_at_ms: None,
            retiring: false,
        }
    }

    #[test]
    fn status_gives_verdicts_only_for_versions_with_replicas_left() {
        let mut s = ServiceState::default();
        for r in [
            replica("web-1", "v1", Phase::Exited),
            replica("web-2", "v2", Phase::Healthy),
            replica("web-3", "v3", Phase::Draining),
        ] {
            s.replicas.insert(r.id.clone(), r);
        }
        for version in ["v0", "v1", "v2", "v3"] {
            let verdict = Verdict {
                kind: VerdictKind::Pass,
                since_ms: 1,
            };
            s.verdicts.insert(version.into(), verdict);
        }
        let status = service_status("web", &s);
        let versions: Vec<&str> = status.health.iter().map(|h| h.version.as_str()).collect();
        assert_eq!(versions, ["v2", "v3"]);
    }
}
