//! The routing table: for each service, its backends with their weights and
//! a precomputed weighted schedule. The proxy reads it through an
//! [`ArcSwap`] (no lock on the request path); only the route feed writes it,
//! through a [`TableWriter`], which also decides which replicas to drain.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use mentat_domain::event::Backend;

use crate::endpoint::Endpoint;
use crate::weights;

/// The table shared by the proxy (readers) and the feed (the one writer).
pub type SharedTable = Arc<ArcSwap<Table>>;

/// One backend of a service in one version of the table.
#[derive(Debug, Clone)]
pub struct Route {
    /// The replica, shared with older and newer tables.
    pub endpoint: Arc<Endpoint>,
    /// `host:port` to connect to.
    pub addr: String,
    /// Relative weight; 0 is out of weighted rotation.
    pub weight: u32,
}

/// The routes of one service.
#[derive(Debug)]
pub struct ServiceRoutes {
    routes: Vec<Route>,
    schedule: Vec<usize>,
    cursor: AtomicUsize,
}

impl ServiceRoutes {
    /// Routes of a service, with their weighted schedule.
    pub fn new(routes: Vec<Route>) -> Self {
        let weights: Vec<u32> = routes.iter().map(|r| r.weight).collect();
        ServiceRoutes {
            schedule: weights::schedule(&weights),
            routes,
            cursor: AtomicUsize::new(0),
        }
    }

    /// Every route, in the order of the RouteChanged event.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The next route by weight; `None` when no weight is positive.
    pub fn pick(&self) -> Option<&Route> {
        if self.schedule.is_empty() {
            return None;
        }
        let n = self.cursor.fetch_add(1, Ordering::Relaxed) % self.schedule.len();
        self.routes.get(self.schedule[n])
    }

    /// The next route by weight whose replica is not `avoid`, for a retry.
    pub fn pick_other(&self, avoid: &str) -> Option<&Route> {
        (0..self.schedule.len())
            .filter_map(|_| self.pick())
            .find(|r| r.endpoint.replica != avoid)
    }

    /// The route of one replica, whatever its weight.
    pub fn replica(&self, replica: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.endpoint.replica == replica)
    }
}

/// One version of the whole table.
#[derive(Debug, Default)]
pub struct Table {
    services: HashMap<String, Arc<ServiceRoutes>>,
}

impl Table {
    /// The routes of a service that has had a RouteChanged event.
    pub fn service(&self, name: &str) -> Option<&Arc<ServiceRoutes>> {
        self.services.get(name)
    }

    /// Names of the known services, in no particular order.
    pub fn service_names(&self) -> Vec<String> {
        self.services.keys().cloned().collect()
    }

    /// How many services are known.
    pub fn len(&self) -> usize {
        self.services.len()
    }
}

/// A replica taken out of rotation, to report once idle.
#[derive(Debug, Clone)]
pub struct Drain {
    /// The replica.
    pub endpoint: Arc<Endpoint>,
    /// Its epoch when it left rotation; a different epoch at report time
    /// means it came back and the report is dropped.
    pub epoch: u64,
}

/// The single writer of a [`SharedTable`].
#[derive(Debug)]
pub struct TableWriter {
    table: SharedTable,
    /// Replicas removed from the table that still had requests in flight,
    /// kept so that one coming back keeps its count. Pruned once idle.
    retired: HashMap<(String, String), Arc<Endpoint>>,
}

impl TableWriter {
    /// A writer for `table`.
    pub fn new(table: SharedTable) -> Self {
        TableWriter {
            table,
            retired: HashMap::new(),
        }
    }

    /// Replace the routes of `service` by `backends` (the full table of the
    /// service) and return the replicas that left rotation: removed ones, and
    /// those whose weight went from positive to 0. They are marked draining
    /// before the new table is published.
    pub fn apply(&mut self, service: &str, backends: &[Backend]) -> Vec<Drain> {
        self.retired.retain(|_, e| e.in_flight() > 0);
        let old_table = self.table.load_full();
        let old = old_table.service(service);
        let mut drains = Vec::new();
        let mut routes: Vec<Route> = Vec::with_capacity(backends.len());
        for b in backends {
            if routes.iter().any(|r| r.endpoint.replica == b.replica) {
                tracing::warn!(service, replica_id = %b.replica, "replica listed twice in RouteChanged; keeping the first");
                continue;
            }
            let previous = old.and_then(|s| s.replica(&b.replica));
            let endpoint = previous
                .map(|r| r.endpoint.clone())
                .or_else(|| {
                    self.retired
                        .remove(&(service.to_owned(), b.replica.clone()))
                })
                .unwrap_or_else(|| Endpoint::new(service, &b.replica, b.weight > 0));
            if b.weight > 0 && endpoint.is_draining() {
                endpoint.resume();
            } else if b.weight == 0 && previous.is_some_and(|p| p.weight > 0) {
                let epoch = endpoint.start_draining();
                drains.push(Drain {
                    endpoint: endpoint.clone(),
                    epoch,
                });
            }
            routes.push(Route {
                endpoint,
                addr: b.addr.clone(),
                weight: b.weight,
            });
        }
        for gone in old.map(|s| s.routes()).unwrap_or_default() {
            if routes
                .iter()
                .any(|r| r.endpoint.replica == gone.endpoint.replica)
            {
                continue;
            }
            let epoch = gone.endpoint.start_draining();
            drains.push(Drain {
                endpoint: gone.endpoint.clone(),
                epoch,
            });
            self.retired.insert(
                (service.to_owned(), gone.endpoint.replica.clone()),
                gone.endpoint.clone(),
            );
        }
        let mut services = old_table.services.clone();
        services.insert(service.to_owned(), Arc::new(ServiceRoutes::new(routes)));
        self.table.store(Arc::new(Table { services }));
        drains
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(replica: &str, weight: u32) -> Backend {
        Backend {
            replica: replica.into(),
            addr: format!("127.0.0.1:{}", 9000 + weight),
            image: "v1".into(),
            weight,
        }
    }

    fn replicas(drains: &[Drain]) -> Vec<&str> {
        drains.iter().map(|d| d.endpoint.replica.as_str()).collect()
    }

    #[test]
    fn the_first_table_drains_nothing_and_picks_by_weight() {
        let shared = SharedTable::default();
        let mut w = TableWriter::new(shared.clone());
        assert!(w
            .apply("web", &[backend("a", 1), backend("b", 3)])
            .is_empty());
        let table = shared.load();
        let web = table.service("web").expect("web");
        let picks: Vec<&str> = (0..4)
            .filter_map(|_| web.pick())
            .map(|r| r.endpoint.replica.as_str())
            .collect();
        assert_eq!(picks, ["b", "a", "b", "b"]);
        assert_eq!(
            web.pick_other("b").map(|r| r.endpoint.replica.as_str()),
            Some("a")
        );
    }

    #[test]
    fn removal_and_zero_weight_drain_and_keep_counts() {
        let shared = SharedTable::default();
        let mut w = TableWriter::new(shared.clone());
        w.apply("web", &[backend("a", 1), backend("b", 1), backend("c", 0)]);
        let a = shared
            .load()
            .service("web")
            .and_then(|s| s.replica("a"))
            .map(|r| r.endpoint.clone())
            .expect("a");
        let guard = a.acquire(true).expect("a in rotation");

        let drains = w.apply("web", &[backend("b", 0)]);
        assert_eq!(replicas(&drains), ["b", "a", "c"]);
        assert!(a.is_draining());
        let table = shared.load();
        let web = table.service("web").expect("web");
        assert!(web.pick().is_none(), "no weight left");
        assert!(web.replica("b").is_some(), "weight 0 stays addressable");

        // `a` comes back while its request is still in flight: same counter, stale drain.
        let drains = w.apply("web", &[backend("a", 2)]);
        assert_eq!(replicas(&drains), ["b"]);
        let back = shared
            .load()
            .service("web")
            .and_then(|s| s.replica("a"))
            .map(|r| r.endpoint.clone())
            .expect("a");
        assert!(Arc::ptr_eq(&a, &back));
        assert!(!a.is_draining());
        assert_eq!(back.in_flight(), 1);
        drop(guard);
    }

    #[test]
    fn services_are_independent() {
        let shared = SharedTable::default();
        let mut w = TableWriter::new(shared.clone());
        w.apply("web", &[backend("a", 1)]);
        assert!(w.apply("api", &[]).is_empty());
        let table = shared.load();
        assert_eq!(table.len(), 2);
        assert!(table.service("web").and_then(|s| s.pick()).is_some());
        assert!(table.service("api").and_then(|s| s.pick()).is_none());
    }
}
