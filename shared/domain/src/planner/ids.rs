//! Replica ids, unique across the cluster.
//!
//! Executors, the health-watcher and the routers' drain reports know a
//! replica by its id, so an id names one replica of one service at a time:
//! a spawned instance may not take an id that any service's replica holds,
//! nor one of the form `<service>-<n>` that a defined service numbers its
//! declared replicas with; and the planner's own numbering skips ids in use
//! anywhere.

use crate::planner::state::{ServiceState, World};
use crate::spec::ServiceSpec;

/// What a service's declared replicas' ids begin with: its name, and in
/// an environment other than the default one `-` and the environment
/// (`web-staging`), so that an id stays a DNS label.
pub(crate) fn prefix(service: &str) -> String {
    service.replace('@', "-")
}

/// The digits `n` of an id `<prefix>-<n>`.
fn digits<'i>(service: &str, id: &'i str) -> Option<&'i str> {
    let n = id.strip_prefix(&prefix(service))?.strip_prefix('-')?;
    (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then_some(n)
}

/// The number `n` of an id `<service>-<n>`, when it fits a `u64`.
pub(crate) fn number_of(service: &str, id: &str) -> Option<u64> {
    digits(service, id)?.parse().ok()
}

/// The service one of whose replicas (of any phase the planner still
/// tracks) has the id `id`.
pub(crate) fn holder<'w>(world: &'w World, id: &str) -> Option<&'w str> {
    world
        .services
        .iter()
        .find(|(_, s)| s.replicas.contains_key(id))
        .map(|(name, _)| name.as_str())
}

/// The defined service that numbers its declared replicas `<service>-<n>`
/// in the form of `id`.
pub(crate) fn numbering_service<'w>(world: &'w World, id: &str) -> Option<&'w str> {
    world
        .services
        .iter()
        .filter(|(_, s)| s.spec.is_some())
        .find(|(name, _)| digits(name, id).is_some())
        .map(|(name, _)| name.as_str())
}

/// `count` new ids `<service>-<n>` for declared replicas of `spec`,
/// numbered on from the service's last one and skipping every id a replica
/// of any service holds.
pub(crate) fn next_replica_ids(
    world: &World,
    state: &ServiceState,
    spec: &ServiceSpec,
    count: usize,
) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    let mut n = state.replica_seq;
    while ids.len() < count {
        n = n.saturating_add(1);
        let id = format!("{}-{n}", prefix(&spec.name));
        if holder(world, &id).is_none() {
            ids.push(id);
        }
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_digits_after_the_service_and_a_dash_are_a_number() {
        assert_eq!(number_of("web", "web-23"), Some(23));
        assert_eq!(number_of("web", "web-0"), Some(0));
        assert_eq!(number_of("web", "web-"), None);
        assert_eq!(number_of("web", "web-2a"), None);
        assert_eq!(number_of("web", "webs-2"), None);
        assert_eq!(number_of("web", "web2"), None);
        assert_eq!(number_of("web-2", "web-2-7"), Some(7));
        assert_eq!(number_of("web", "web-2-7"), None);
        assert_eq!(number_of("web", "web-99999999999999999999"), None);
        assert_eq!(number_of("web@staging", "web-staging-4"), Some(4));
        assert_eq!(number_of("web@staging", "web-4"), None);
        assert_eq!(
            digits("web", "web-99999999999999999999"),
            Some("99999999999999999999")
        );
    }
}
