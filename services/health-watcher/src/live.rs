//! The set of live replicas, folded from `ReplicaStarted` and
//! `ReplicaExited` facts. Pure: the same facts in the same order always give
//! the same set, which is what lets a restarted health-watcher rebuild it by
//! replaying the fact stream.

use std::collections::BTreeMap;

use mentat_domain::event::Event;
use mentat_domain::spec::{HealthSpec, Thresholds};

/// What to probe for one replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Service it belongs to.
    pub service: String,
    /// `host:port` it listens on.
    pub addr: String,
    /// Its readiness probe.
    pub health: HealthSpec,
}

/// Replicas between their last `ReplicaStarted` and a later `ReplicaExited`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Live {
    replicas: BTreeMap<String, Target>,
    /// The traffic thresholds of each service, from its latest
    /// `ReplicaStarted` (kept after its replicas exit).
    thresholds: BTreeMap<String, Thresholds>,
}

impl Live {
    /// Fold one fact in. Other events are ignored. A repeated
    /// `ReplicaStarted` replaces the target (the same one, usually).
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::ReplicaStarted {
                replica,
                service,
                addr,
                health,
                ..
            } => {
                self.thresholds
                    .insert(service.clone(), health.thresholds.clone());
                let target = Target {
                    service: service.clone(),
                    addr: addr.clone(),
                    health: health.clone(),
                };
                self.replicas.insert(replica.clone(), target);
            }
            Event::ReplicaExited { replica, .. } => {
                self.replicas.remove(replica);
            }
            _ => {}
        }
    }

    /// The target of a live replica.
    pub fn get(&self, replica: &str) -> Option<&Target> {
        self.replicas.get(replica)
    }

    /// Every live replica and its target.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Target)> {
        self.replicas.iter()
    }

    /// The traffic thresholds of every service seen.
    pub fn thresholds(&self) -> &BTreeMap<String, Thresholds> {
        &self.thresholds
    }

    /// How many replicas are live.
    pub fn len(&self) -> usize {
        self.replicas.len()
    }

    /// True when no replica is live.
    pub fn is_empty(&self) -> bool {
        self.replicas.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mentat_domain::event::ExitStatus;

    fn started(replica: &str, port: u16) -> Event {
        Event::ReplicaStarted {
            replica: replica.into(),
            service: "web".into(),
            host: "h1".into(),
            pid: 1,
            addr: format!("127.0.0.1:{port}"),
            health: HealthSpec::default(),
        }
    }

    fn exited(replica: &str) -> Event {
        Event::ReplicaExited {
            replica: replica.into(),
            service: "web".into(),
            host: "h1".into(),
            status: ExitStatus {
                code: Some(0),
                signal: None,
            },
            requested: true,
            reason: None,
        }
    }

    #[test]
    fn a_replica_is_live_between_start_and_exit() {
        let mut live = Live::default();
        for e in [
            started("a", 1),
            started("b", 2),
            exited("a"),
            started("b", 2),
        ] {
            live.apply(&e);
        }
        assert_eq!(live.len(), 1);
        assert_eq!(live.get("b").map(|t| t.addr.as_str()), Some("127.0.0.1:2"));
        // Restarted under the same id on a new port: the new target wins.
        live.apply(&exited("b"));
        live.apply(&started("b", 3));
        assert_eq!(live.get("b").map(|t| t.addr.as_str()), Some("127.0.0.1:3"));
        live.apply(&exited("b"));
        assert!(live.is_empty());
    }
}
