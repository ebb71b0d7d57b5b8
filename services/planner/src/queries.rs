//! Answers to `mentat.query.status`, `mentat.query.history`,
//! `mentat.query.rollout` and `mentat.query.release`, read from
//! the world the log folded into (and, for raw events, the log itself),
//! and the audit queries (`mentat.query.audit_*`, see [`crate::audit`]).
//! [`status`] answers `mentat.query.audit_state` too, from a world folded
//! up to a past point.

use std::collections::BTreeMap;

use mentat_bus::{codec, subject, Bus, Encoding};
use mentat_domain::audit::{AuditExportQuery, AuditExportReply, AuditKeyQuery, AuditKeyReply};
use mentat_domain::command::{
    BrokenStatus, HeldStatus, HistoryQuery, HistoryReply, HostState, HostStatus, PlannersStatus,
    RejectKind, ReplicaStatus, Reply, RouterStatus, ServiceStatus, StatusQuery, StatusReply,
    VersionHealth,
};
use mentat_domain::environment::normalise;
use mentat_domain::paging;
use mentat_domain::planner::state::VerdictKind;
use mentat_domain::planner::{self, Phase, ServiceState, World};
use mentat_domain::release::{self, ReleaseQuery, ReleaseReply};
use mentat_domain::rollout::{self, RolloutQuery, RolloutReply};

use crate::audit::{self, Audit};
use crate::log::{envelope, Broken, Log};

/// What a planner, leading or standing by, answers queries from.
pub struct Answering<'a> {
    /// The log and the world folded from it.
    pub log: &'a Log,
    /// Since when the log has been unreachable, if it is.
    pub unavailable_since_ms: Option<i64>,
    /// Who leads, and the standbys.
    pub planners: PlannersStatus,
    /// Per router, the route version it last reported applying per service.
    pub applied: BTreeMap<String, &'a BTreeMap<String, i64>>,
    /// The key and anchors the audit queries answer with.
    pub audit: &'a Audit,
}

/// Answer a query on `mentat.query.<what>`.
pub async fn answer(bus: &Bus, msg: &async_nats::Message, on: Answering<'_>) {
    let encoding = Encoding::of(msg.headers.as_ref());
    let sent = match subject::last_token(&msg.subject) {
        "status" => {
            let reply = match codec::decode::<StatusQuery>(&msg.payload, encoding, "StatusQuery") {
                Ok(q) => match status(&on.log.world, &on.log.broken, &q, on.unavailable_since_ms) {
                    StatusReply::Ok {
                        services,
                        hosts,
                        log_unavailable_since_ms,
                        next,
                        host_states,
                        held,
                        ..
                    } => StatusReply::Ok {
                        services,
                        hosts,
                        log_unavailable_since_ms,
                        next,
                        planners: Some(on.planners),
                        routers: routers(&on.log.world, &on.applied),
                        host_states,
                        held,
                    },
                    rejected => rejected,
                },
                Err(e) => StatusReply::Rejected {
                    kind: RejectKind::Invalid,
                    reason: e.to_string(),
                },
            };
            bus.reply(msg, &reply).await
        }
        "history" => {
            let reply = match codec::decode::<HistoryQuery>(&msg.payload, encoding, "HistoryQuery")
            {
                Ok(q) => history(on.log, &q).await,
                Err(e) => HistoryReply::Rejected {
                    kind: RejectKind::Invalid,
                    reason: e.to_string(),
                },
            };
            bus.reply(msg, &reply).await
        }
        "rollout" => {
            let reply = match codec::decode::<RolloutQuery>(&msg.payload, encoding, "RolloutQuery")
            {
                Ok(q) => rollout::view::answer(&on.log.world, &q),
                Err(e) => RolloutReply::Rejected {
                    kind: RejectKind::Invalid,
                    reason: e.to_string(),
                },
            };
            bus.reply(msg, &reply).await
        }
        "release" => {
            let reply = match codec::decode::<ReleaseQuery>(&msg.payload, encoding, "ReleaseQuery")
            {
                Ok(q) => release::view::answer(&on.log.world, &q),
                Err(e) => ReleaseReply::Rejected {
                    kind: RejectKind::Invalid,
                    reason: e.to_string(),
                },
            };
            bus.reply(msg, &reply).await
        }
        "audit_verify" => {
            let store = on.log.store().clone();
            audit::answer::spawn_verify(store, bus.clone(), on.audit.clone(), msg.clone()).await;
            Ok(())
        }
        "audit_state" => {
            let store = on.log.store().clone();
            audit::answer::spawn_state(store, bus.clone(), on.audit.clone(), msg.clone()).await;
            Ok(())
        }
        "audit_replay" => {
            let store = on.log.store().clone();
            audit::answer::spawn_replay(store, bus.clone(), on.audit.clone(), msg.clone()).await;
            Ok(())
        }
        "audit_export" => {
            let reply =
                match codec::decode::<AuditExportQuery>(&msg.payload, encoding, "AuditExportQuery")
                {
                    Ok(q) => audit::answer::export(on.log.store(), &q).await,
                    Err(e) => AuditExportReply::Rejected {
                        kind: RejectKind::Invalid,
                        reason: e.to_string(),
                    },
                };
            bus.reply(msg, &reply).await
        }
        "audit_key" => {
            let reply =
                match codec::decode::<AuditKeyQuery>(&msg.payload, encoding, "AuditKeyQuery") {
                    Ok(_) => audit::answer::key(on.audit),
                    Err(e) => AuditKeyReply::Rejected {
                        kind: RejectKind::Invalid,
                        reason: e.to_string(),
                    },
                };
            bus.reply(msg, &reply).await
        }
        other => {
            let reason = format!(
                "unknown query `{other}`; known queries: status, history, rollout, release, audit_verify, \
                 audit_state, audit_replay, audit_export, audit_key"
            );
            bus.reply(msg, &Reply::rejected(RejectKind::Invalid, reason))
                .await
        }
    };
    if let Err(e) = sent {
        tracing::warn!(error = %e, subject = %msg.subject, "could not send reply");
    }
}

/// The status of one service or of all, a page of services at a time;
/// each service is cut to [`paging::SERVICE_BYTES`] so that one with huge
/// fields cannot break the answer for every other. `broken` services say
/// why; the whole reply is stale (and marked so) while the log has been
/// unreachable since `unavailable_since_ms`.
pub fn status(
    world: &World,
    broken: &BTreeMap<String, Broken>,
    query: &StatusQuery,
    unavailable_since_ms: Option<i64>,
) -> StatusReply {
    // `web@production` is `web`.
    let query = &StatusQuery {
        service: query.service.as_deref().map(normalise),
        ..query.clone()
    };
    if let Some(name) = &query.service {
        if !world.services.contains_key(name) {
            return StatusReply::Rejected {
                kind: RejectKind::UnknownService,
                reason: format!("unknown service `{name}`"),
            };
        }
    }
    let all: Vec<ServiceStatus> = world
        .services
        .iter()
        .filter(|(name, s)| s.spec.is_some() && query.service.as_ref().is_none_or(|q| q == *name))
        .map(|(name, s)| {
            let mut status = ServiceStatus {
                broken: broken.get(name).map(|b| BrokenStatus {
                    position: b.position,
                    error: b.error.clone(),
                }),
                ..service_status(world, name, s)
            };
            cap(&mut status, paging::SERVICE_BYTES);
            status
        })
        .collect();
    let (services, next) = paging::page(&all, query.after, query.limit, json_size);
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
        next,
        planners: None,
        routers: Vec::new(),
        host_states: host_states(world),
        held: world.held.as_ref().map(|h| HeldStatus {
            hosts: h.hosts.clone(),
            since_ms: h.since_ms,
        }),
    }
}

/// Every host the log knows, live, suspect or lost, with its replicas.
pub fn host_states(world: &World) -> Vec<HostStatus> {
    world
        .hosts
        .iter()
        .map(|(id, h)| HostStatus {
            host: id.clone(),
            state: match (h.live, h.suspect_since_ms) {
                (false, _) => HostState::Lost,
                (true, Some(_)) => HostState::Suspect,
                (true, None) => HostState::Live,
            },
            capacity: h.capacity,
            replicas: world
                .services
                .values()
                .flat_map(|s| s.replicas.values())
                .filter(|r| &r.host == id && r.phase != Phase::Exited)
                .count() as u32,
            suspect_since_ms: h.suspect_since_ms,
        })
        .collect()
}

/// Who leads (from the log) and who stands by, as `status` reports them.
pub fn planners(world: &World, standbys: Vec<String>, answered_by: &str) -> PlannersStatus {
    PlannersStatus {
        leader: world.leader.as_ref().map(|(p, _)| p.clone()),
        epoch: world.leader.as_ref().map(|(_, e)| *e),
        standbys,
        answered_by: answered_by.to_owned(),
        refused_facts: 0,
    }
}

/// The live routers, each with the services whose latest routes it has not
/// reported applying.
pub fn routers(
    world: &World,
    applied: &BTreeMap<String, &BTreeMap<String, i64>>,
) -> Vec<RouterStatus> {
    world
        .routers
        .iter()
        .filter(|(_, r)| r.live)
        .map(|(id, r)| {
            let reported = applied.get(id);
            let behind = match reported {
                None => Vec::new(),
                Some(versions) => world
                    .services
                    .iter()
                    .filter(|(name, s)| {
                        s.route_version > 0
                            && versions.get(*name).is_none_or(|v| *v < s.route_version)
                    })
                    .map(|(name, _)| name.clone())
                    .collect(),
            };
            RouterStatus {
                router: id.clone(),
                host: r.host.clone(),
                listen: r.listen.clone(),
                heard: reported.is_some(),
                behind,
            }
        })
        .collect()
}

/// The size of `item` as JSON, never smaller than its MessagePack.
fn json_size<T: serde::Serialize>(item: &T) -> usize {
    serde_json::to_vec(item).map_or(usize::MAX, |v| v.len())
}

/// Cut the lists of `status` from their ends, longest first, until it
/// weighs at most `max` bytes, and say in `truncated` what was left out.
fn cap(status: &mut ServiceStatus, max: usize) {
    let mut size = json_size(status);
    if size <= max {
        return;
    }
    let mut cut = [0usize; 4];
    const LISTS: [&str; 4] = ["instances", "routes", "breaches", "version verdicts"];
    while size > max {
        let breaches = status.deployment.as_ref().map_or(0, |d| d.breaches.len());
        let lens = [
            status.instances.len(),
            status.routes.len(),
            breaches,
            status.health.len(),
        ];
        let Some(longest) = (0..4).filter(|i| lens[*i] > 0).max_by_key(|i| lens[*i]) else {
            break;
        };
        let freed = match longest {
            0 => status.instances.pop().map(|i| json_size(&i)),
            1 => status.routes.pop().map(|b| json_size(&b)),
            2 => status
                .deployment
                .as_mut()
                .and_then(|d| d.breaches.pop())
                .map(|b| json_size(&b)),
            _ => status.health.pop().map(|h| json_size(&h)),
        };
        size = size.saturating_sub(freed.unwrap_or(0) + 1);
        cut[longest] += 1;
    }
    let what: Vec<String> = cut
        .iter()
        .zip(LISTS)
        .filter(|(n, _)| **n > 0)
        .map(|(n, list)| format!("{n} {list}"))
        .collect();
    status.truncated = Some(format!(
        "left out to keep the service's status under {} KiB: {}",
        max / 1024,
        what.join(", ")
    ));
}

fn service_status(world: &World, name: &str, s: &ServiceState) -> ServiceStatus {
    let deployment = s.deployment.as_ref().and_then(|d| {
        let mut record = s
            .history
            .iter()
            .rev()
            .find(|r| r.deployment_id == d.id)
            .cloned()?;
        planner::deployment::annotate(world, d, &mut record);
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
        truncated: None,
    }
}

/// A page of the deployments of a service, or of its raw events when asked.
pub async fn history(log: &Log, query: &HistoryQuery) -> HistoryReply {
    let query = &HistoryQuery {
        service: normalise(&query.service),
        ..query.clone()
    };
    let Some(state) = log.world.services.get(&query.service) else {
        return HistoryReply::Rejected {
            kind: RejectKind::UnknownService,
            reason: format!("unknown service `{}`", query.service),
        };
    };
    if !query.events {
        let (mut deployments, next) =
            paging::page(&state.history, query.after, query.limit, json_size);
        if let Some(d) = &state.deployment {
            if let Some(record) = deployments.iter_mut().find(|r| r.deployment_id == d.id) {
                planner::deployment::annotate(&log.world, d, record);
            }
        }
        return HistoryReply::Ok {
            deployments,
            events: Vec::new(),
            next,
        };
    }
    let recorded = match log.store().read_stream(&query.service).await {
        Ok(r) => r,
        Err(e) => {
            return HistoryReply::Rejected {
                kind: RejectKind::Unavailable,
                reason: format!("cannot read the log: {e}"),
            }
        }
    };
    // Stream versions run 1, 2, 3... with no gap: `after` versions are skipped.
    let (page, next) = paging::page(&recorded, query.after, query.limit, |r| {
        r.payload.len() + r.metadata.len() + 512
    });
    let mut events = Vec::with_capacity(page.len());
    for r in &page {
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
    HistoryReply::Ok {
        deployments: Vec::new(),
        events,
        next,
    }
}

#[cfg(test)]
mod tests {
    use mentat_domain::planner::state::{Replica, Verdict};
    use mentat_domain::spec::HealthSpec;

    use super::*;

    fn replica(id: &str, image: &str, phase: Phase) -> Replica {
        Replica {
            deployment: None,
            id: id.into(),
            image: image.into(),
            host: "vm".into(),
            addr: None,
            phase,
            drain_since_ms: None,
            drained_by: Default::default(),
            health: HealthSpec::default(),
            exit: None,
            spawned: false,
            started_at_ms: None,
            retiring: false,
            replaced_by: None,
        }
    }

    fn defined(name: &str) -> ServiceState {
        let spec = serde_json::json!({"name": name, "replicas": 1, "run": {"command": ["app"]}});
        ServiceState {
            spec: Some(serde_json::from_value(spec).expect("a spec")),
            ..ServiceState::default()
        }
    }

    #[test]
    fn one_service_with_huge_fields_is_cut_with_a_marker_and_status_still_answers() {
        let mut world = World::default();
        let mut big = defined("big");
        // 3,000 spawned instances with 1 KiB images: about 3 MiB of status.
        for n in 0..3_000 {
            let r = replica(&format!("i{n}"), &"x".repeat(1024), Phase::Healthy);
            big.replicas.insert(r.id.clone(), r);
        }
        world.services.insert("big".into(), big);
        let mut small = defined("small");
        let r = replica("small-1", "v1", Phase::Healthy);
        small.replicas.insert(r.id.clone(), r);
        world.services.insert("small".into(), small);

        let reply = status(&world, &BTreeMap::new(), &StatusQuery::default(), None);
        assert!(
            json_size(&reply) < paging::PAGE_BYTES,
            "{}",
            json_size(&reply)
        );
        let StatusReply::Ok { services, next, .. } = reply else {
            panic!("not answered: {reply:?}");
        };
        assert_eq!(next, None);
        let [big, small] = services.as_slice() else {
            panic!("both services: {services:?}");
        };
        assert!(
            json_size(big) <= paging::SERVICE_BYTES,
            "{}",
            json_size(big)
        );
        let cut = big.truncated.as_deref().expect("a marker");
        assert!(
            cut.contains(&format!("{} instances", 3_000 - big.instances.len())),
            "{cut}"
        );
        assert!(!big.instances.is_empty());
        assert_eq!(small.truncated, None);
        assert_eq!(small.instances.len(), 1);
    }

    #[test]
    fn status_pages_services_by_name() {
        let mut world = World::default();
        for name in ["a", "b", "c"] {
            world.services.insert(name.into(), defined(name));
        }
        let names = |reply: &StatusReply| match reply {
            StatusReply::Ok { services, next, .. } => (
                services
                    .iter()
                    .map(|s| s.service.clone())
                    .collect::<Vec<_>>(),
                *next,
            ),
            other => panic!("{other:?}"),
        };
        let query = StatusQuery {
            limit: Some(2),
            ..StatusQuery::default()
        };
        let (first, next) = names(&status(&world, &BTreeMap::new(), &query, None));
        assert_eq!(
            (first, next),
            (vec!["a".to_owned(), "b".to_owned()], Some(2))
        );
        let query = StatusQuery {
            after: next,
            ..query
        };
        let (rest, next) = names(&status(&world, &BTreeMap::new(), &query, None));
        assert_eq!((rest, next), (vec!["c".to_owned()], None));
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
        let status = service_status(&World::default(), "web", &s);
        let versions: Vec<&str> = status.health.iter().map(|h| h.version.as_str()).collect();
        assert_eq!(versions, ["v2", "v3"]);
    }
}
