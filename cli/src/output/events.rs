//! Events as text: the key fields of any event, for `mt history --events`.

use mentat_domain::event::{Metric, Plan};
use mentat_domain::{Event, Strategy};

use super::{clock, duration, short_id};

/// The key fields of an event as `name=value` pairs.
pub fn details(event: &Event) -> String {
    match event {
        Event::ServiceDefined { spec, source } => format!(
            "replicas={} strategy={} source={}",
            spec.replicas,
            spec.deploy.strategy,
            source.as_deref().unwrap_or("-")
        ),
        Event::HostJoined { host, capacity } => format!("host={host} capacity={capacity}"),
        Event::HostLost { host, reason } => format!("host={host} reason={reason:?}"),
        Event::HostSuspected { host, silent_ms } => {
            format!("host={host} silent={}", duration(*silent_ms))
        }
        Event::HostSuspicionCleared { host } => format!("host={host}"),
        Event::ClusterDefined { cluster, source } => format!(
            "suspect_after={}s lost_after={}s source={}",
            cluster.suspect_after_secs,
            cluster.lost_after_secs,
            source.as_deref().unwrap_or("-")
        ),
        Event::SecurityDefined { security, source } => format!(
            "require_signed_commands={} operators={} source={}",
            security.require_signed_commands,
            security
                .operators
                .iter()
                .map(|o| format!("{}:{}", o.name, o.role))
                .collect::<Vec<_>>()
                .join(","),
            source.as_deref().unwrap_or("-")
        ),
        Event::MassHostLossHeld { hosts, live } => {
            format!("hosts={} live={live}", hosts.join(","))
        }
        Event::MassHostLossReleased { hosts, by_operator } => format!(
            "hosts={} by={}",
            hosts.join(","),
            if *by_operator { "operator" } else { "hosts_returned" }
        ),
        Event::ReplicaReplaced {
            replica,
            host,
            new_replica,
            new_host,
            image,
            ..
        } => format!("replica={replica} host={host} new_replica={new_replica} new_host={new_host} image={image}"),
        Event::RouterJoined {
            router,
            host,
            listen,
        } => format!("router={router} host={host} listen={listen}"),
        Event::RouterLost { router, reason } => format!("router={router} reason={reason:?}"),
        Event::PlannerLeaderElected { planner, epoch, .. } => format!("planner={planner} epoch={epoch}"),
        Event::LogBreakAccepted {
            position,
            kind,
            actor,
            reason,
            ..
        } => format!("position={position} kind={kind} actor={actor} reason={reason:?}"),
        Event::DeploymentStarted {
            deployment_id,
            image,
            previous_image,
            strategy,
            batch_size,
            rollback,
            plan,
            ..
        } => {
            let plan = match strategy {
                Strategy::Rolling => String::new(),
                Strategy::Canary => format!(" {}", steps_detail(plan)),
                Strategy::BlueGreen => format!(" standby={}s", plan.standby_secs),
            };
            format!(
                "deployment={} image={image} previous={} strategy={strategy} batch_size={batch_size}{plan}{}",
                short_id(deployment_id),
                previous_image.as_deref().unwrap_or("-"),
                if *rollback { " rollback" } else { "" }
            )
        }
        Event::DeploymentPaused {
            deployment_id,
            reason,
        } => format!("deployment={} reason={reason:?}", short_id(deployment_id)),
        Event::DeploymentResumed {
            deployment_id,
            paused_ms,
        } => format!(
            "deployment={} paused_for={}",
            short_id(deployment_id),
            duration(*paused_ms).replace(' ', "")
        ),
        Event::TrafficShifted {
            deployment_id,
            step,
            percent,
            bake_secs,
        } => {
            let bake = match bake_secs {
                0 => "held".to_owned(),
                secs => format!("{secs}s"),
            };
            format!(
                "deployment={} step={step} percent={percent} bake={bake}",
                short_id(deployment_id)
            )
        }
        Event::CanaryPromoted {
            deployment_id,
            automatic,
        } => format!(
            "deployment={} by={}",
            short_id(deployment_id),
            if *automatic { "last-step" } else { "operator" }
        ),
        Event::TrafficSwitched {
            deployment_id,
            image,
            standby_image,
            standby_until_ms,
        } => format!(
            "deployment={} image={image} standby={} until={}",
            short_id(deployment_id),
            standby_image.as_deref().unwrap_or("-"),
            clock(*standby_until_ms)
        ),
        Event::StandbyEnded {
            deployment_id,
            early,
        } => format!("deployment={} early={early}", short_id(deployment_id)),
        Event::WeightsSet { weights, .. } => {
            let list: Vec<String> = weights.iter().map(|(r, w)| format!("{r}:{w}")).collect();
            format!("weights=[{}]", list.join(","))
        }
        Event::ReplicaRetireRequested { replica, .. } => format!("replica={replica}"),
        Event::ThresholdBreached {
            deployment_id,
            version,
            judgement: j,
            ..
        } => {
            let deployment = deployment_id
                .as_deref()
                .map(|d| format!("deployment={} ", short_id(d)))
                .unwrap_or_default();
            let baseline = j
                .baseline
                .map(|b| format!(" baseline={}", j.metric.format(b).replace(' ', "")))
                .unwrap_or_default();
            format!(
                "{deployment}version={version} metric={} observed={} threshold={}{baseline} window={}s requests={}",
                metric_name(j.metric),
                j.metric.format(j.observed).replace(' ', ""),
                j.metric.format(j.threshold).replace(' ', ""),
                j.window_secs,
                j.requests
            )
        }
        Event::NoData {
            version,
            requests,
            min_requests,
            window_secs,
            ..
        } => format!(
            "version={version} requests={requests} min_requests={min_requests} window={window_secs}s"
        ),
        Event::ThresholdsMet {
            version,
            requests,
            window_secs,
            ..
        } => format!("version={version} requests={requests} window={window_secs}s"),
        Event::BakeStarted {
            deployment_id,
            until_ms,
        } => format!(
            "deployment={} until={}",
            short_id(deployment_id),
            clock(*until_ms)
        ),
        Event::BatchStarted {
            deployment_id,
            batch,
            image,
            start,
            replace,
            ..
        } => format!(
            "deployment={} batch={batch} image={image} start=[{}] replace=[{}]",
            short_id(deployment_id),
            start.join(","),
            replace.join(",")
        ),
        Event::ReplicaStartRequested {
            replica,
            host,
            image,
            spawned,
            ..
        } => format!(
            "replica={replica} host={host} image={image}{}",
            if *spawned { " spawned" } else { "" }
        ),
        Event::ReplicaStarted {
            replica,
            host,
            pid,
            addr,
            ..
        } => format!("replica={replica} host={host} addr={addr} pid={pid}"),
        Event::ReplicaExited {
            replica,
            host,
            status,
            requested,
            reason,
            ..
        } => match reason {
            Some(reason) => format!(
                "replica={replica} host={host} status=\"{status}\" requested={requested} reason={reason:?}"
            ),
            None => format!("replica={replica} host={host} status=\"{status}\" requested={requested}"),
        },
        Event::ReplicaHealthy { replica, .. } => format!("replica={replica}"),
        Event::ReplicaUnhealthy {
            replica, reason, ..
        } => format!("replica={replica} reason={reason:?}"),
        Event::RouteChanged { backends, .. } => {
            let list: Vec<String> = backends
                .iter()
                .map(|b| format!("{}@{}:{}", b.replica, b.addr, b.weight))
                .collect();
            format!("backends=[{}]", list.join(","))
        }
        Event::ReplicaDrained {
            replica,
            router,
            timed_out,
            ..
        } => format!("replica={replica} router={router} timed_out={timed_out}"),
        Event::ReplicaStopRequested {
            replica,
            host,
            reason,
            ..
        } => format!("replica={replica} host={host} reason={reason:?}"),
        Event::BatchCompleted {
            deployment_id,
            batch,
        } => format!("deployment={} batch={batch}", short_id(deployment_id)),
        Event::DeploymentCompleted { deployment_id, .. } => {
            format!("deployment={}", short_id(deployment_id))
        }
        Event::DeploymentReverting {
            deployment_id,
            reason,
        }
        | Event::DeploymentReverted {
            deployment_id,
            reason,
            ..
        }
        | Event::DeploymentFailed {
            deployment_id,
            reason,
            ..
        } => format!("deployment={} reason={reason:?}", short_id(deployment_id)),
        Event::NotifyDefined { webhooks, source } => {
            let names: Vec<&str> = webhooks.iter().map(|w| w.name.as_str()).collect();
            format!(
                "webhooks={} source={}",
                names.join(","),
                source.as_deref().unwrap_or("-")
            )
        }
        Event::WebhookDelivered {
            webhook,
            event_id,
            event_type,
            attempts,
            status,
            ..
        } => format!(
            "webhook={webhook} event={event_type} id={} tries={attempts} status={status}",
            short_id(event_id)
        ),
        Event::WebhookFailed {
            webhook,
            event_id,
            event_type,
            attempts,
            error,
            ..
        } => format!(
            "webhook={webhook} event={event_type} id={} tries={attempts} error={error:?}",
            short_id(event_id)
        ),
        rollout => rollout_details(rollout),
    }
}

/// The key fields of a rollout's event.
fn rollout_details(event: &Event) -> String {
    let id = event.rollout_id().map(short_id).unwrap_or("-");
    let rest = match event {
        Event::RolloutStarted {
            image,
            selector,
            targets,
            waves,
            wave_bake_secs,
            ..
        } => format!(
            "image={image} select={selector} targets={} waves={} bake={wave_bake_secs}s",
            targets.len(),
            waves.len()
        ),
        Event::RolloutWaveStarted { wave, members, .. } => {
            format!("wave={wave} members={}", members.join(","))
        }
        Event::RolloutTargetDeployed {
            service,
            deployment_id,
            image,
            rollback,
            ..
        } => format!(
            "service={service} deployment={} image={image}{}",
            short_id(deployment_id),
            if *rollback { " rollback" } else { "" }
        ),
        Event::RolloutWaveBaking { wave, until_ms, .. } => {
            format!("wave={wave} until={}", clock(*until_ms))
        }
        Event::RolloutWaveCompleted { wave, .. } => format!("wave={wave}"),
        Event::RolloutPaused {
            wave,
            failed,
            by_operator,
            ..
        } => {
            let failed: Vec<String> = failed
                .iter()
                .map(|f| format!("{}: {}", f.service, f.reason))
                .collect();
            format!(
                "wave={wave} by={} failed={failed:?}",
                if *by_operator { "operator" } else { "failure" }
            )
        }
        Event::RolloutResumed {
            retry_failed,
            paused_ms,
            ..
        } => format!(
            "retry_failed={retry_failed} paused={}",
            duration(*paused_ms)
        ),
        Event::RolloutRollbackStarted { targets, .. } => {
            format!("targets={}", targets.join(","))
        }
        Event::RolloutRollbackCompleted {
            reverted, failed, ..
        } => format!("reverted={reverted} failed={}", failed.len()),
        Event::RolloutTargetOverridden {
            service,
            deployment_id,
            ..
        } => format!("service={service} deployment={}", short_id(deployment_id)),
        _ => String::new(),
    };
    format!("rollout={id} {rest}").trim_end().to_owned()
}

/// The metric's name in `mt history --events`.
fn metric_name(metric: Metric) -> &'static str {
    match metric {
        Metric::ErrorRate => "error_rate",
        Metric::LatencyP99 => "latency_p99",
    }
}

/// `10%/60s,50%/held` or `canary_percent=10`: a deployment plan's canary steps.
fn steps_detail(plan: &Plan) -> String {
    if plan.steps.is_empty() {
        return format!("canary_percent={}", plan.canary_percent);
    }
    let steps: Vec<String> = plan
        .steps
        .iter()
        .map(|s| match s.bake_secs {
            0 => format!("{}%/held", s.percent),
            secs => format!("{}%/{secs}s", s.percent),
        })
        .collect();
    format!("steps=[{}]", steps.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mentat_domain::spec::CanaryStep;
    use std::collections::BTreeMap;

    #[test]
    fn details_quote_free_text() {
        let e = Event::ReplicaStopRequested {
            replica: "web-1".into(),
            service: "web".into(),
            host: "h".into(),
            reason: "replaced by v2".into(),
        };
        assert_eq!(
            details(&e),
            "replica=web-1 host=h reason=\"replaced by v2\""
        );
    }

    #[test]
    fn details_of_verdicts_carry_their_numbers() {
        use mentat_domain::event::Judgement;
        let breach = Event::ThresholdBreached {
            service: "web".into(),
            deployment_id: None,
            version: "v2".into(),
            judgement: Judgement {
                metric: Metric::LatencyP99,
                observed: 812_300,
                threshold: 500_000,
                baseline: Some(2_100),
                window_secs: 1,
                requests: 64,
            },
        };
        assert_eq!(
            details(&breach),
            "version=v2 metric=latency_p99 observed=812.3ms threshold=500.0ms baseline=2.1ms window=1s requests=64"
        );
        let no_data = Event::NoData {
            service: "web".into(),
            version: "v2".into(),
            requests: 3,
            min_requests: 20,
            window_secs: 1,
        };
        assert_eq!(
            details(&no_data),
            "version=v2 requests=3 min_requests=20 window=1s"
        );
    }

    #[test]
    fn details_of_canary_blue_green_and_operator_events() {
        let plan = Plan {
            steps: vec![
                CanaryStep {
                    percent: 10,
                    bake_secs: 60,
                },
                CanaryStep {
                    percent: 50,
                    bake_secs: 0,
                },
            ],
            ..Plan::default()
        };
        let started = Event::DeploymentStarted {
            deployment_id: "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into(),
            service: "web".into(),
            image: "v2".into(),
            previous_image: Some("v1".into()),
            strategy: Strategy::Canary,
            batch_size: 1,
            replicas: 3,
            auto_revert: true,
            rollback: false,
            at_ms: 0,
            plan,
        };
        assert_eq!(
            details(&started),
            "deployment=2e3f4a5b image=v2 previous=v1 strategy=canary batch_size=1 steps=[10%/60s,50%/held]"
        );
        let shifted = Event::TrafficShifted {
            deployment_id: "d".into(),
            step: 2,
            percent: 50,
            bake_secs: 0,
        };
        assert_eq!(
            details(&shifted),
            "deployment=d step=2 percent=50 bake=held"
        );
        let switched = Event::TrafficSwitched {
            deployment_id: "d".into(),
            image: "v2".into(),
            standby_image: Some("v1".into()),
            standby_until_ms: 1_714_564_803_000,
        };
        assert_eq!(
            details(&switched),
            "deployment=d image=v2 standby=v1 until=12:00:03"
        );
        let resumed = Event::DeploymentResumed {
            deployment_id: "d".into(),
            paused_ms: 12_345,
        };
        assert_eq!(details(&resumed), "deployment=d paused_for=12.3s");
        let weights = Event::WeightsSet {
            service: "web".into(),
            weights: BTreeMap::from([("web-1".to_owned(), 0), ("web-4".to_owned(), 100)]),
        };
        assert_eq!(details(&weights), "weights=[web-1:0,web-4:100]");
        let promoted = Event::CanaryPromoted {
            deployment_id: "d".into(),
            automatic: false,
        };
        assert_eq!(details(&promoted), "deployment=d by=operator");
    }
}
