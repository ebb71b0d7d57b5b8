//! Events as text: the key fields of any event (`mt history --events`) and
//! the progress lines printed while following a deployment.

use std::collections::HashSet;

use mentat_domain::event::Backend;
use mentat_domain::Event;

use super::short_id;

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
        Event::DeploymentStarted {
            deployment_id,
            image,
            previous_image,
            strategy,
            batch_size,
            rollback,
            ..
        } => format!(
            "deployment={} image={image} previous={} strategy={strategy} batch_size={batch_size}{}",
            short_id(deployment_id),
            previous_image.as_deref().unwrap_or("-"),
            if *rollback { " rollback" } else { "" }
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
            ..
        } => format!("replica={replica} host={host} image={image}"),
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
            ..
        } => format!("replica={replica} host={host} status=\"{status}\" requested={requested}"),
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
    }
}

/// The progress line for an event of a deployment being followed, or
/// `None` for events not worth a line. `batches` is the number of batches
/// when known; `old` holds the replicas the deployment replaces.
pub fn progress(event: &Event, batches: Option<u32>, old: &HashSet<String>) -> Option<String> {
    let of = |batch: &u32| match batches {
        Some(total) => format!("{batch}/{total}"),
        None => batch.to_string(),
    };
    let age = |replica: &String| {
        if old.contains(replica) {
            "old replica"
        } else {
            "replica"
        }
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
            format!("{verb} {service} {from}{image} ({strategy}, {replicas} replicas, {batch_size} at a time)")
        }
        Event::BatchStarted {
            batch,
            start,
            replace,
            ..
        } => {
            let mut line = format!("batch {} started: starting {}", of(batch), start.join(", "));
            if !replace.is_empty() {
                line.push_str(&format!("; replacing {}", replace.join(", ")));
            }
            line
        }
        Event::ReplicaStarted {
            replica,
            host,
            pid,
            addr,
            ..
        } => format!("replica {replica} started on {host} at {addr} (pid {pid})"),
        Event::ReplicaHealthy { replica, .. } => format!("{} {replica} healthy", age(replica)),
        Event::ReplicaUnhealthy {
            replica, reason, ..
        } => format!("{} {replica} unhealthy: {reason}", age(replica)),
        Event::ReplicaExited {
            replica,
            status,
            requested: true,
            ..
        } => format!("{} {replica} stopped ({status})", age(replica)),
        Event::ReplicaExited {
            replica, status, ..
        } => format!("{} {replica} exited unexpectedly ({status})", age(replica)),
        Event::RouteChanged { backends, .. } => format!("traffic shifted: {}", shares(backends)),
        Event::ReplicaDrained {
            replica, timed_out, ..
        } => {
            let late = if *timed_out {
                " (drain timeout passed with requests in flight)"
            } else {
                ""
            };
            format!("{} {replica} drained{late}", age(replica))
        }
        Event::ReplicaStopRequested {
            replica, reason, ..
        } => format!("{} {replica} stopping: {reason}", age(replica)),
        Event::BatchCompleted { batch, .. } => format!("batch {} completed", of(batch)),
        Event::DeploymentReverting { reason, .. } => format!("reverting because {reason}"),
        Event::DeploymentCompleted { .. } => "deployment completed".to_owned(),
        Event::DeploymentReverted { reason, .. } => format!("deployment reverted: {reason}"),
        Event::DeploymentFailed { reason, .. } => format!("deployment failed: {reason}"),
        Event::ServiceDefined { .. }
        | Event::HostJoined { .. }
        | Event::HostLost { .. }
        | Event::ReplicaStartRequested { .. } => return None,
    })
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

    #[test]
    fn progress_lines_name_batches_replicas_and_traffic() {
        let old: HashSet<String> = ["web-1".to_owned()].into();
        let batch = Event::BatchStarted {
            deployment_id: "d".into(),
            batch: 1,
            image: "v2".into(),
            start: vec!["web-4".into()],
            replace: vec!["web-1".into()],
            deadline_ms: 0,
        };
        assert_eq!(
            progress(&batch, Some(3), &old).as_deref(),
            Some("batch 1/3 started: starting web-4; replacing web-1")
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
        };
        assert_eq!(
            progress(&exited, None, &old).as_deref(),
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
        };
        assert_eq!(
            progress(&routes, None, &old).as_deref(),
            Some("traffic shifted: v1 67%, v2 33%")
        );
        let reverting = Event::DeploymentReverting {
            deployment_id: "d".into(),
            reason: "web-4 not healthy within 10s".into(),
        };
        assert_eq!(
            progress(&reverting, None, &old).as_deref(),
            Some("reverting because web-4 not healthy within 10s")
        );
    }

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
}
