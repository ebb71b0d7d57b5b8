//! `mt status` and `mt history` as tables.

use mentat_domain::command::{DeploymentRecord, PlannersStatus, RouterStatus, ServiceStatus};
use mentat_domain::EventEnvelope;

use super::progress::paused_line;
use super::{clock, details, or_dash, short_id, table, utc};

/// `mt status`: one block per service, then the planners, the routers and
/// the hosts alive; first, when the planner cannot reach its log, since
/// when (the rest is stale).
pub fn status_report(
    services: &[ServiceStatus],
    hosts: &[String],
    log_unavailable_since_ms: Option<i64>,
    planners: Option<&PlannersStatus>,
    routers: &[RouterStatus],
) -> String {
    let mut out = Vec::new();
    if let Some(since) = log_unavailable_since_ms {
        out.push(format!(
            "log unavailable since {} UTC: the planner cannot reach its database; what follows is the last known state, and commands wait until it is back",
            utc(since)
        ));
    }
    if services.is_empty() {
        out.push("no services defined yet: apply a config with `mt apply -f mentat.yaml`".into());
    }
    for s in services {
        out.push(service_block(s));
    }
    out.extend(planners.map(planners_line));
    out.push(routers_line(routers));
    out.push(if hosts.is_empty() {
        "hosts alive: none (is an executor running?)".to_owned()
    } else {
        format!("hosts alive: {}", hosts.join(", "))
    });
    out.join("\n\n")
}

/// `routers: edge-1 127.0.0.1:8080 on h1 (in step), edge-2 ... (behind on web)`.
fn routers_line(routers: &[RouterStatus]) -> String {
    if routers.is_empty() {
        return "routers alive: none (deployments wait for a router, or for their phase deadline)"
            .to_owned();
    }
    let each: Vec<String> = routers
        .iter()
        .map(|r| {
            let lag = if !r.heard {
                "lag unknown".to_owned()
            } else if r.behind.is_empty() {
                "in step".to_owned()
            } else {
                format!("behind on {}", r.behind.join(", "))
            };
            format!("{} {} on {} ({lag})", r.router, r.listen, r.host)
        })
        .collect();
    format!("routers alive: {}", each.join(", "))
}

/// `planners: leader p-1 (epoch 3); standbys: p-2`.
fn planners_line(p: &PlannersStatus) -> String {
    let leader = match (&p.leader, p.epoch) {
        (Some(leader), Some(epoch)) => format!("leader {leader} (epoch {epoch})"),
        _ => "no leader elected yet".to_owned(),
    };
    let standbys = if p.standbys.is_empty() {
        "none".to_owned()
    } else {
        p.standbys.join(", ")
    };
    format!("planners: {leader}; standbys: {standbys}")
}

fn service_block(s: &ServiceStatus) -> String {
    let healthy = s.instances.iter().filter(|r| r.phase == "healthy").count();
    let mut lines = vec![format!(
        "{}  image {}  replicas {} wanted, {} healthy",
        s.service,
        or_dash(s.image.as_deref()),
        s.replicas,
        healthy
    )];
    if let Some(b) = &s.broken {
        lines.push(format!(
            "  BROKEN at log position {}: {}; the planner leaves it alone until it is re-applied, aborted or rolled back",
            b.position, b.error
        ));
    }
    match &s.deployment {
        Some(d) => {
            lines.push(format!("  {}", deployment_line(d)));
            lines.extend(now_line(d).map(|now| format!("    {now}")));
            lines.extend(d.breaches.iter().map(|b| format!("    breach: {b}")));
        }
        None => lines.push("  no deployment in flight".to_owned()),
    }
    if !s.health.is_empty() {
        let rows: Vec<Vec<String>> = s
            .health
            .iter()
            .map(|h| {
                vec![
                    h.version.clone(),
                    h.verdict.clone(),
                    clock(h.since_ms),
                    h.detail.clone(),
                ]
            })
            .collect();
        let header = ["VERSION", "TRAFFIC", "SINCE (UTC)", "DETAIL"];
        lines.push(table("  ", &header, &rows));
    }
    if s.instances.is_empty() {
        lines.push("  no replicas".to_owned());
    } else {
        let rows: Vec<Vec<String>> = s
            .instances
            .iter()
            .map(|r| {
                vec![
                    r.replica.clone(),
                    r.image.clone(),
                    r.host.clone(),
                    or_dash(r.addr.as_deref()),
                    r.phase.clone(),
                    r.weight.to_string(),
                ]
            })
            .collect();
        let header = ["REPLICA", "IMAGE", "HOST", "ADDRESS", "PHASE", "WEIGHT"];
        lines.push(table("  ", &header, &rows));
    }
    if let Some(cut) = &s.truncated {
        lines.push(format!("  (cut short) {cut}"));
    }
    lines.join("\n")
}

/// The in-flight deployment of `mt status`, on one line.
fn deployment_line(d: &DeploymentRecord) -> String {
    let from = d
        .previous_image
        .as_deref()
        .map(|p| format!("{p} → "))
        .unwrap_or_default();
    let mut line = format!(
        "deployment {}: {from}{} ({}), {}, {} batch(es) done, started {} UTC",
        short_id(&d.deployment_id),
        d.image,
        d.strategy,
        d.outcome.as_str(),
        d.batches_done,
        utc(d.started_at_ms)
    );
    if let Some(actor) = &d.actor {
        line.push_str(&format!(" by {actor}"));
    }
    if let Some(reason) = &d.reason {
        line.push_str(&format!(": {reason}"));
    }
    if let Some(failure) = &d.failure {
        line.push_str(&format!(" (failure: {failure})"));
    }
    line
}

/// What an in-flight deployment is doing or waiting for; why, when it is held.
fn now_line(d: &DeploymentRecord) -> Option<String> {
    match (&d.paused, &d.phase) {
        // A deadline's pause already says what to run.
        (Some(reason), _) if reason.contains("mt resume") => Some(paused_line(reason)),
        (Some(reason), _) => Some(format!(
            "{}; `mt resume {}` carries on, `mt abort {}` reverts",
            paused_line(reason),
            d.service,
            d.service
        )),
        (None, Some(phase)) => Some(format!("now: {phase}")),
        (None, None) => None,
    }
}

/// `mt history`: one row per deployment, oldest first.
pub fn history_table(deployments: &[DeploymentRecord]) -> String {
    if deployments.is_empty() {
        return "no deployments yet".to_owned();
    }
    let rows: Vec<Vec<String>> = deployments
        .iter()
        .map(|d| {
            vec![
                short_id(&d.deployment_id).to_owned(),
                d.image.clone(),
                d.strategy.to_string(),
                d.outcome.as_str().to_owned(),
                utc(d.started_at_ms),
                d.ended_at_ms.map(utc).unwrap_or_else(|| "-".to_owned()),
                or_dash(d.actor.as_deref()),
                or_dash(d.reason.as_deref()),
                or_dash(d.failure.as_deref()),
            ]
        })
        .collect();
    let header = [
        "ID",
        "IMAGE",
        "STRATEGY",
        "OUTCOME",
        "STARTED (UTC)",
        "ENDED (UTC)",
        "ACTOR",
        "REASON",
        "FAILURE",
    ];
    let mut out = table("", &header, &rows);
    for d in deployments {
        for b in &d.breaches {
            out.push_str(&format!("\n{} breach: {b}", short_id(&d.deployment_id)));
        }
    }
    out
}

/// `mt history --events`: the raw events, in log order.
pub fn events_table(events: &[EventEnvelope]) -> String {
    if events.is_empty() {
        return "no events".to_owned();
    }
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            let mut detail = details(&e.event);
            if let Some(actor) = &e.meta.actor {
                detail.push_str(&format!(" actor={actor:?}"));
            }
            if let Some(signed) = &e.meta.signed {
                detail.push_str(&super::signed_by(signed));
            }
            vec![
                e.position.to_string(),
                utc(e.recorded_at_ms),
                e.event.type_name().to_owned(),
                detail.trim().to_owned(),
            ]
        })
        .collect();
    table("", &["POSITION", "TIME (UTC)", "TYPE", "DETAILS"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mentat_domain::command::{Outcome, ReplicaStatus};
    use mentat_domain::{Event, Meta, Strategy};

    fn record() -> DeploymentRecord {
        DeploymentRecord {
            deployment_id: "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into(),
            service: "web".into(),
            image: "v2".into(),
            previous_image: Some("v1".into()),
            strategy: Strategy::Rolling,
            outcome: Outcome::Reverted,
            actor: Some("ana".into()),
            reason: Some("fix login".into()),
            failure: Some("web-3 not healthy within 10s".into()),
            batches_done: 1,
            phase: None,
            paused: None,
            waiting_for_router: false,
            breaches: vec![],
            started_at_ms: 1_714_564_803_000,
            ended_at_ms: Some(1_714_564_815_000),
        }
    }

    #[test]
    fn history_rows_show_every_column() {
        let text = history_table(&[record()]);
        let mut lines = text.lines();
        let header = lines.next().unwrap_or_default();
        assert!(
            header.starts_with("ID        IMAGE  STRATEGY  OUTCOME"),
            "{text}"
        );
        let row = lines.next().unwrap_or_default();
        for cell in [
            "2e3f4a5b",
            "v2",
            "rolling",
            "reverted",
            "2024-05-01 12:00:03",
            "2024-05-01 12:00:15",
            "ana",
            "fix login",
            "web-3 not healthy within 10s",
        ] {
            assert!(row.contains(cell), "{cell} missing from {row}");
        }
        assert_eq!(history_table(&[]), "no deployments yet");
    }

    #[test]
    fn status_shows_image_deployment_replicas_and_hosts() {
        let mut in_flight = record();
        in_flight.outcome = Outcome::InProgress;
        in_flight.failure = None;
        let status = ServiceStatus {
            service: "web".into(),
            image: Some("v1".into()),
            replicas: 2,
            deployment: Some(in_flight),
            instances: vec![ReplicaStatus {
                replica: "web-a".into(),
                image: "v1".into(),
                host: "h1".into(),
                addr: Some("127.0.0.1:4100".into()),
                phase: "healthy".into(),
                weight: 100,
                share_bp: 10_000,
                spawned: false,
                started_at_ms: Some(1_714_564_803_000),
            }],
            routes: vec![],
            health: vec![],
            broken: None,
            truncated: None,
        };
        let planners = PlannersStatus {
            leader: Some("p-1".into()),
            epoch: Some(3),
            standbys: vec!["p-2".into()],
            answered_by: "p-2".into(),
            refused_facts: 0,
        };
        let routers = [
            RouterStatus {
                router: "edge-1".into(),
                host: "h1".into(),
                listen: "127.0.0.1:8080".into(),
                heard: true,
                behind: vec![],
            },
            RouterStatus {
                router: "edge-2".into(),
                host: "h2".into(),
                listen: "10.0.0.2:8080".into(),
                heard: true,
                behind: vec!["web".into()],
            },
        ];
        let text = status_report(
            &[status],
            &["h1".to_owned()],
            None,
            Some(&planners),
            &routers,
        );
        assert!(
            text.contains("routers alive: edge-1 127.0.0.1:8080 on h1 (in step), edge-2 10.0.0.2:8080 on h2 (behind on web)"),
            "{text}"
        );
        assert!(
            text.contains("\n\nplanners: leader p-1 (epoch 3); standbys: p-2\n\n"),
            "{text}"
        );
        assert!(
            text.starts_with("web  image v1  replicas 2 wanted, 1 healthy"),
            "{text}"
        );
        assert!(
            text.contains("deployment 2e3f4a5b: v1 → v2 (rolling), in_progress"),
            "{text}"
        );
        assert!(
            text.contains("  REPLICA  IMAGE  HOST  ADDRESS         PHASE    WEIGHT"),
            "{text}"
        );
        assert!(
            text.contains("  web-a    v1     h1    127.0.0.1:4100  healthy  100"),
            "{text}"
        );
        assert!(text.ends_with("hosts alive: h1"), "{text}");
        assert!(!text.contains("log unavailable"), "{text}");
    }

    #[test]
    fn status_says_when_the_log_is_unavailable_and_which_service_is_broken() {
        let status = ServiceStatus {
            service: "web".into(),
            image: Some("v1".into()),
            replicas: 1,
            deployment: None,
            instances: vec![],
            routes: vec![],
            health: vec![],
            broken: Some(mentat_domain::command::BrokenStatus {
                position: 42,
                error: "deciding: attempt to multiply with overflow".into(),
            }),
            truncated: None,
        };
        let text = status_report(&[status], &[], Some(1_714_564_803_000), None, &[]);
        assert!(
            text.starts_with("log unavailable since 2024-05-01 12:00:03 UTC"),
            "{text}"
        );
        assert!(
            text.contains("BROKEN at log position 42: deciding: attempt to multiply"),
            "{text}"
        );
        assert!(status_report(&[], &[], None, None, &[]).contains("mt apply"));
    }

    #[test]
    fn status_shows_what_the_deployment_does_and_why_it_is_held() {
        let mut d = record();
        d.outcome = Outcome::InProgress;
        d.failure = None;
        d.strategy = Strategy::Canary;
        d.phase = Some("canary at 10%: waiting for mt canary promote or mt canary abort".into());
        let status = |deployment| ServiceStatus {
            service: "web".into(),
            image: Some("v1".into()),
            replicas: 2,
            deployment: Some(deployment),
            instances: vec![],
            routes: vec![],
            health: vec![],
            broken: None,
            truncated: None,
        };
        let text = status_report(&[status(d.clone())], &[], None, None, &[]);
        assert!(
            text.contains(
                "\n    now: canary at 10%: waiting for mt canary promote or mt canary abort\n"
            ),
            "{text}"
        );
        d.paused = Some("paused by ana: error rate up".into());
        d.phase = Some("paused: paused by ana: error rate up".into());
        let text = status_report(&[status(d)], &[], None, None, &[]);
        assert!(
            text.contains("\n    paused by ana: error rate up; `mt resume web` carries on, `mt abort web` reverts\n"),
            "{text}"
        );
        assert!(!text.contains("now:"), "{text}");
    }

    #[test]
    fn status_and_history_show_traffic_verdicts_and_breaches() {
        use mentat_domain::command::VersionHealth;
        let mut d = record();
        d.breaches = vec![
            "v2: error rate 12.34% over 1s (412 requests), threshold 5.00%, baseline 0.10%".into(),
        ];
        let status = ServiceStatus {
            service: "web".into(),
            image: Some("v1".into()),
            replicas: 2,
            deployment: Some(d.clone()),
            instances: vec![],
            routes: vec![],
            health: vec![VersionHealth {
                version: "v2".into(),
                verdict: "breach".into(),
                detail: "error rate 12.34% over 1s".into(),
                since_ms: 1_714_564_803_000,
            }],
            broken: None,
            truncated: None,
        };
        let text = status_report(&[status], &[], None, None, &[]);
        assert!(
            text.contains("\n    breach: v2: error rate 12.34% over 1s (412 requests), threshold 5.00%, baseline 0.10%\n"),
            "{text}"
        );
        assert!(
            text.contains("  VERSION  TRAFFIC  SINCE (UTC)  DETAIL\n  v2       breach   12:00:03     error rate 12.34% over 1s"),
            "{text}"
        );
        let history = history_table(&[d]);
        assert!(
            history.ends_with("\n2e3f4a5b breach: v2: error rate 12.34% over 1s (412 requests), threshold 5.00%, baseline 0.10%"),
            "{history}"
        );
    }

    #[test]
    fn events_show_position_time_type_and_key_fields() {
        let env = EventEnvelope {
            id: "e1".into(),
            position: 42,
            stream: "web".into(),
            version: 7,
            schema_version: 1,
            recorded_at_ms: 1_714_564_803_000,
            meta: Meta {
                actor: Some("ana".into()),
                ..Meta::default()
            },
            event: Event::ReplicaHealthy {
                replica: "web-a".into(),
                service: "web".into(),
            },
        };
        let text = events_table(&[env]);
        let row = text.lines().nth(1).unwrap_or_default();
        assert_eq!(
            row,
            "42        2024-05-01 12:00:03  ReplicaHealthy  replica=web-a actor=\"ana\""
        );
    }
}
