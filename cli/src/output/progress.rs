//! The progress lines printed while following a deployment, and what to
//! run next when it waits for an operator.

use std::collections::HashSet;

use mentat_domain::event::Backend;
use mentat_domain::{Event, Strategy};

use super::{clock, duration};

/// What is known of the deployment being followed, learnt from its events,
/// to word its progress lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Known {
    /// The service deployed.
    pub service: String,
    /// The image rolled out, once `DeploymentStarted` was seen.
    pub image: Option<String>,
    /// The image it replaces, once `DeploymentStarted` was seen.
    pub previous_image: Option<String>,
    /// Number of batches, when known.
    pub batches: Option<u32>,
    /// Number of canary steps, when known.
    pub steps: Option<u32>,
    /// Replicas the deployment replaces.
    pub old: HashSet<String>,
    /// The canary replicas, once started.
    pub canary: Vec<String>,
    /// How long the new version is watched once it serves every replica.
    pub bake_secs: Option<u64>,
}

impl Known {
    /// Nothing known yet of a deployment of `service`.
    pub fn new(service: &str) -> Self {
        Self {
            service: service.to_owned(),
            ..Self::default()
        }
    }

    fn age(&self, replica: &str) -> &'static str {
        if self.old.contains(replica) {
            "old replica"
        } else {
            "replica"
        }
    }
}

/// A deployment that waits for an operator: `mt deploy` stops following it
/// there (unless `--wait`) and says what can be done next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waiting {
    /// A canary held at a step without a bake time.
    Canary {
        /// Share of traffic the canary holds.
        percent: u32,
    },
    /// Blue-green: the old set is on standby until this time (ms since epoch).
    Standby {
        /// End of the standby window.
        until_ms: i64,
    },
    /// Held by an operator, or by a deadline with `auto_revert` off.
    Paused {
        /// Why, as the planner recorded it.
        reason: String,
    },
}

/// What to run next, for a deployment of `known.service` that waits.
pub fn next_steps(waiting: &Waiting, known: &Known) -> String {
    let service = &known.service;
    let image = known.image.as_deref().unwrap_or("the new image");
    let previous = known.previous_image.as_deref().unwrap_or("the old set");
    match waiting {
        Waiting::Canary { percent } => format!(
            "the canary holds {percent}% of traffic until you decide:\n  \
             mt canary promote {service}   rolls {image} out to every replica\n  \
             mt canary abort {service}     reverts to {previous}"
        ),
        Waiting::Standby { until_ms } => format!(
            "{image} serves all traffic; {previous} stays on standby until {} UTC, then the deployment completes:\n  \
             mt rollback {service}   switches traffic back to {previous}\n  \
             mt promote {service}    ends the standby now",
            clock(*until_ms)
        ),
        Waiting::Paused { .. } => format!(
            "the deployment is held until you decide:\n  \
             mt resume {service}   carries on from where it stopped\n  \
             mt abort {service}    reverts to {previous}"
        ),
    }
}

/// `paused by ana: why` as the planner words it, or `paused: why`.
pub fn paused_line(reason: &str) -> String {
    if reason.starts_with("paused") {
        reason.to_owned()
    } else {
        format!("paused: {reason}")
    }
}

/// The progress line for an event of a deployment being followed, or
/// `None` for events not worth a line.
pub fn progress(event: &Event, known: &Known) -> Option<String> {
    let of = |batch: &u32| match known.batches {
        Some(total) => format!("{batch}/{total}"),
        None => batch.to_string(),
    };
    Some(match event {
        Event::DeploymentStarted {
            service,
            image,
            previous_image,
            strategy,
            batch_size,
            replicas,
            rollback,
            ..
        } => {
            let verb = if *rollback {
                "rolling back"
            } else {
                "deploying"
            };
            let from = previous_image
                .as_deref()
                .map(|p| format!("{p} → "))
                .unwrap_or_default();
            let pace = match strategy {
                Strategy::Rolling => format!(", {batch_size} at a time"),
                _ => String::new(),
            };
            format!("{verb} {service} {from}{image} ({strategy}, {replicas} replicas{pace})")
        }
        Event::BatchStarted {
            batch,
            start,
            replace,
            ..
        } => {
            let mut parts = Vec::new();
            if !start.is_empty() {
                parts.push(format!("starting {}", start.join(", ")));
            }
            if !replace.is_empty() {
                let verb = if start.is_empty() { "retiring" } else { "replacing" };
                parts.push(format!("{verb} {}", replace.join(", ")));
            }
            format!("batch {} started: {}", of(batch), parts.join("; "))
        }
        Event::ReplicaStarted {
            replica,
            host,
            pid,
            addr,
            ..
        } => format!("replica {replica} started on {host} at {addr} (pid {pid})"),
        Event::ReplicaHealthy { replica, .. } => format!("{} {replica} healthy", known.age(replica)),
        Event::ReplicaUnhealthy {
            replica, reason, ..
        } => format!("{} {replica} unhealthy: {reason}", known.age(replica)),
        Event::ReplicaExited {
            replica,
            status,
            requested: true,
            ..
        } => format!("{} {replica} stopped ({status})", known.age(replica)),
        Event::ReplicaExited {
            replica,
            status,
            reason: Some(reason),
            ..
        } => format!("{replica} did not start ({status}): {reason}"),
        Event::ReplicaExited {
            replica, status, ..
        } => format!(
            "{} {replica} exited unexpectedly ({status})",
            known.age(replica)
        ),
        Event::RouteChanged { backends, .. } => format!("traffic shifted: {}", shares(backends)),
        Event::ReplicaDrained {
            replica, timed_out, ..
        } => {
            let late = if *timed_out {
                " (drain timeout passed with requests in flight)"
            } else {
                ""
            };
            format!("{} {replica} drained{late}", known.age(replica))
        }
        Event::ReplicaStopRequested {
            replica, reason, ..
        } => format!("{} {replica} stopping: {reason}", known.age(replica)),
        Event::ReplicaRetireRequested { replica, .. } => {
            format!("{} {replica} retiring at an operator's request", known.age(replica))
        }
        Event::BatchCompleted { batch, .. } => format!("batch {} completed", of(batch)),
        Event::DeploymentPaused { reason, .. } => paused_line(reason),
        Event::DeploymentResumed { paused_ms, .. } => {
            format!("resumed after {}", duration(*paused_ms))
        }
        Event::TrafficShifted {
            step,
            percent,
            bake_secs,
            ..
        } => canary_line(known, *step, *percent, *bake_secs),
        Event::CanaryPromoted { automatic, .. } => {
            let to = match &known.image {
                Some(image) => format!("rolling {image} out to every replica"),
                None => "rolling out to every replica".to_owned(),
            };
            if *automatic {
                format!("canary promoted after its last step: {to}")
            } else {
                format!("canary promoted: {to}")
            }
        }
        Event::TrafficSwitched {
            image,
            standby_image,
            standby_until_ms,
            ..
        } => match standby_image {
            Some(old) => format!(
                "traffic switched to {image}; {old} on standby until {} UTC (mt rollback {} switches back)",
                clock(*standby_until_ms),
                known.service
            ),
            None => format!("traffic switched to {image}"),
        },
        Event::StandbyEnded { early, .. } => {
            let when = if *early { " early" } else { "" };
            match &known.previous_image {
                Some(old) => format!("standby ended{when}: retiring the {old} set"),
                None => format!("standby ended{when}"),
            }
        }
        Event::ThresholdBreached {
            version, judgement, ..
        } => format!("threshold breached by {version}: {judgement}"),
        Event::NoData {
            version,
            requests,
            min_requests,
            window_secs,
            ..
        } => format!(
            "no data for {version}: {requests} requests over {window_secs}s, {min_requests} needed to judge it"
        ),
        Event::ThresholdsMet {
            version,
            requests,
            window_secs,
            ..
        } => format!("{version} within its thresholds over {window_secs}s ({requests} requests)"),
        Event::BakeStarted { until_ms, .. } => {
            let image = known.image.as_deref().unwrap_or("the new version");
            match known.bake_secs {
                Some(secs) => format!("baking {image} for {secs}s (mt abort reverts)"),
                None => format!(
                    "baking {image} until {} UTC (mt abort reverts)",
                    clock(*until_ms)
                ),
            }
        }
        Event::DeploymentReverting { reason, .. } => format!("reverting because {reason}"),
        Event::DeploymentCompleted { .. } => "deployment completed".to_owned(),
        Event::DeploymentReverted { reason, .. } => format!("deployment reverted: {reason}"),
        Event::DeploymentFailed { reason, .. } => format!("deployment failed: {reason}"),
        Event::ReplicaReplaced {
            replica,
            host,
            new_replica,
            new_host,
            ..
        } => format!("{replica} was on lost host {host}: {new_replica} takes its place on {new_host}"),
        Event::ServiceDefined { .. }
        | Event::HostJoined { .. }
        | Event::HostLost { .. }
        | Event::HostSuspected { .. }
        | Event::HostSuspicionCleared { .. }
        | Event::ClusterDefined { .. }
        | Event::SecurityDefined { .. }
        | Event::MassHostLossHeld { .. }
        | Event::MassHostLossReleased { .. }
        | Event::RouterJoined { .. }
        | Event::RouterLost { .. }
        | Event::PlannerLeaderElected { .. }
        | Event::LogBreakAccepted { .. }
        | Event::WeightsSet { .. }
        | Event::ReplicaStartRequested { .. } => return None,
        // A rollout's events (stream `_rollouts`) never reach a
        // deployment's follower.
        _ => return None,
    })
}

/// `canary web-5 at 10% of traffic (step 1 of 3, baking 60s)`.
fn canary_line(known: &Known, step: u32, percent: u32, bake_secs: u64) -> String {
    let who = match known.canary.as_slice() {
        [] => "canary".to_owned(),
        names => format!("canary {}", names.join(", ")),
    };
    let step = match known.steps {
        Some(total) => format!("step {step} of {total}"),
        None => format!("step {step}"),
    };
    let bake = match bake_secs {
        0 => "held until promoted or aborted".to_owned(),
        secs => format!("baking {secs}s"),
    };
    format!("{who} at {percent}% of traffic ({step}, {bake})")
}

/// Share of traffic per image, in order of first appearance: `v1 67%, v2 33%`.
fn shares(backends: &[Backend]) -> String {
    let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
    if total == 0 {
        return "no replica in rotation".to_owned();
    }
    let mut images: Vec<(&str, u64)> = Vec::new();
    for b in backends {
        match images.iter_mut().find(|(image, _)| *image == b.image) {
            Some((_, w)) => *w += u64::from(b.weight),
            None => images.push((&b.image, u64::from(b.weight))),
        }
    }
    let parts: Vec<String> = images
        .iter()
        .filter(|(_, w)| *w > 0)
        .map(|(image, w)| format!("{image} {}%", (w * 100 + total / 2) / total))
        .collect();
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use mentat_domain::event::ExitStatus;

    fn backend(replica: &str, image: &str, weight: u32) -> Backend {
        Backend {
            replica: replica.into(),
            addr: "127.0.0.1:1".into(),
            image: image.into(),
            weight,
        }
    }

    fn known() -> Known {
        Known {
            image: Some("v2".into()),
            previous_image: Some("v1".into()),
            old: ["web-1".to_owned()].into(),
            ..Known::new("web")
        }
    }

    #[test]
    fn progress_lines_name_batches_replicas_and_traffic() {
        let known = Known {
            batches: Some(3),
            ..known()
        };
        let batch = Event::BatchStarted {
            deployment_id: "d".into(),
            batch: 1,
            image: "v2".into(),
            start: vec!["web-4".into()],
            replace: vec!["web-1".into()],
            deadline_ms: 0,
        };
        assert_eq!(
            progress(&batch, &known).as_deref(),
            Some("batch 1/3 started: starting web-4; replacing web-1")
        );
        let retire = Event::BatchStarted {
            deployment_id: "d".into(),
            batch: 2,
            image: "v1".into(),
            start: vec![],
            replace: vec!["web-4".into(), "web-5".into()],
            deadline_ms: 0,
        };
        assert_eq!(
            progress(&retire, &Known::new("web")).as_deref(),
            Some("batch 2 started: retiring web-4, web-5"),
            "a revert to a warm set starts nothing"
        );
        let exited = Event::ReplicaExited {
            replica: "web-1".into(),
            service: "web".into(),
            host: "h".into(),
            status: ExitStatus {
                code: None,
                signal: Some(15),
            },
            requested: true,
            reason: None,
        };
        assert_eq!(
            progress(&exited, &known).as_deref(),
            Some("old replica web-1 stopped (signal 15)")
        );
        let routes = Event::RouteChanged {
            service: "web".into(),
            backends: vec![
                backend("web-1", "v1", 50),
                backend("web-2", "v1", 50),
                backend("web-4", "v2", 50),
                backend("web-5", "v2", 0),
            ],
            route: Default::default(),
            switch: None,
        };
        assert_eq!(
            progress(&routes, &known).as_deref(),
            Some("traffic shifted: v1 67%, v2 33%")
        );
        let reverting = Event::DeploymentReverting {
            deployment_id: "d".into(),
            reason: "web-4 not healthy within 10s".into(),
        };
        assert_eq!(
            progress(&reverting, &known).as_deref(),
            Some("reverting because web-4 not healthy within 10s")
        );
    }

    #[test]
    fn canary_steps_name_the_canary_its_share_and_its_bake() {
        let known = Known {
            steps: Some(3),
            canary: vec!["web-5".into()],
            ..known()
        };
        let shifted = |step, percent, bake_secs| Event::TrafficShifted {
            deployment_id: "d".into(),
            step,
            percent,
            bake_secs,
        };
        assert_eq!(
            progress(&shifted(1, 10, 60), &known).as_deref(),
            Some("canary web-5 at 10% of traffic (step 1 of 3, baking 60s)")
        );
        assert_eq!(
            progress(&shifted(3, 50, 0), &Known::new("web")).as_deref(),
            Some("canary at 50% of traffic (step 3, held until promoted or aborted)")
        );
        let promoted = |automatic| Event::CanaryPromoted {
            deployment_id: "d".into(),
            automatic,
        };
        assert_eq!(
            progress(&promoted(false), &known).as_deref(),
            Some("canary promoted: rolling v2 out to every replica")
        );
        assert_eq!(
            progress(&promoted(true), &known).as_deref(),
            Some("canary promoted after its last step: rolling v2 out to every replica")
        );
    }

    #[test]
    fn blue_green_pause_and_resume_lines() {
        let switched = Event::TrafficSwitched {
            deployment_id: "d".into(),
            image: "v2".into(),
            standby_image: Some("v1".into()),
            standby_until_ms: 1_714_568_587_000,
        };
        assert_eq!(
            progress(&switched, &known()).as_deref(),
            Some("traffic switched to v2; v1 on standby until 13:03:07 UTC (mt rollback web switches back)")
        );
        let ended = Event::StandbyEnded {
            deployment_id: "d".into(),
            early: true,
        };
        assert_eq!(
            progress(&ended, &known()).as_deref(),
            Some("standby ended early: retiring the v1 set")
        );
        let paused = Event::DeploymentPaused {
            deployment_id: "d".into(),
            reason: "paused by ana: error rate".into(),
        };
        assert_eq!(
            progress(&paused, &known()).as_deref(),
            Some("paused by ana: error rate")
        );
        let resumed = Event::DeploymentResumed {
            deployment_id: "d".into(),
            paused_ms: 12_300,
        };
        assert_eq!(
            progress(&resumed, &known()).as_deref(),
            Some("resumed after 12.3s")
        );
        assert_eq!(
            paused_line("batch 2 deadline passed"),
            "paused: batch 2 deadline passed"
        );
    }

    #[test]
    fn verdicts_and_bake_read_with_their_numbers() {
        use mentat_domain::event::{Judgement, Metric};
        let breach = Event::ThresholdBreached {
            service: "web".into(),
            deployment_id: None,
            version: "v2".into(),
            judgement: Judgement {
                metric: Metric::ErrorRate,
                observed: 1_234,
                threshold: 500,
                baseline: Some(10),
                window_secs: 1,
                requests: 412,
            },
        };
        assert_eq!(
            progress(&breach, &known()).as_deref(),
            Some("threshold breached by v2: error rate 12.34% over 1s (412 requests), threshold 5.00%, baseline 0.10%")
        );
        let no_data = Event::NoData {
            service: "web".into(),
            version: "v2".into(),
            requests: 3,
            min_requests: 20,
            window_secs: 1,
        };
        assert_eq!(
            progress(&no_data, &known()).as_deref(),
            Some("no data for v2: 3 requests over 1s, 20 needed to judge it")
        );
        let met = Event::ThresholdsMet {
            service: "web".into(),
            version: "v2".into(),
            requests: 40,
            window_secs: 1,
        };
        assert_eq!(
            progress(&met, &known()).as_deref(),
            Some("v2 within its thresholds over 1s (40 requests)")
        );
        let bake = Event::BakeStarted {
            deployment_id: "d".into(),
            until_ms: 1_714_568_587_000,
        };
        let baking = Known {
            bake_secs: Some(60),
            ..known()
        };
        assert_eq!(
            progress(&bake, &baking).as_deref(),
            Some("baking v2 for 60s (mt abort reverts)")
        );
        assert_eq!(
            progress(&bake, &known()).as_deref(),
            Some("baking v2 until 13:03:07 UTC (mt abort reverts)")
        );
    }

    #[test]
    fn waiting_deployments_say_what_to_run_next() {
        let canary = next_steps(&Waiting::Canary { percent: 10 }, &known());
        assert!(canary.contains("mt canary promote web"), "{canary}");
        assert!(canary.contains("mt canary abort web"), "{canary}");
        let standby = next_steps(
            &Waiting::Standby {
                until_ms: 1_714_568_587_000,
            },
            &known(),
        );
        assert!(standby.contains("until 13:03:07 UTC"), "{standby}");
        assert!(standby.contains("mt rollback web"), "{standby}");
        assert!(standby.contains("mt promote web"), "{standby}");
        let paused = next_steps(
            &Waiting::Paused {
                reason: "paused by ana".into(),
            },
            &known(),
        );
        assert!(paused.contains("mt resume web"), "{paused}");
        assert!(paused.contains("mt abort web"), "{paused}");
    }
}
