//! The routing table: for each environment and host name, a service's
//! backends with their weights, a precomputed weighted schedule and the
//! versions used by sticky sessions. The proxy reads it through an
//! [`ArcSwap`] (no lock on the request path); only the route feed writes it,
//! through a [`TableWriter`], which also decides which replicas to drain.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use mentat_domain::event::Backend;
use mentat_domain::spec::{RouteSpec, Sticky};

use crate::endpoint::Endpoint;
use crate::pool::PoolSettings;
use crate::{sticky, weights};

/// Most schedule slots a pick walks past (ejected or avoided backends)
/// before falling back to the first usable route.
const MAX_PICK_TRIES: usize = 32;

/// The table shared by the proxy (readers) and the feed (the one writer).
pub type SharedTable = Arc<ArcSwap<Table>>;

/// One backend of a service in one version of the table.
#[derive(Debug, Clone)]
pub struct Route {
    /// The replica, shared with older and newer tables.
    pub endpoint: Arc<Endpoint>,
    /// Relative weight; 0 is out of weighted rotation.
    pub weight: u32,
}

/// The backends of one version (image) with weight, for sticky sessions.
#[derive(Debug)]
struct Version {
    image: String,
    /// Sum of its backends' weights.
    weight: u64,
    /// Indices into `routes` of its backends with weight.
    members: Vec<usize>,
}

/// The routes of one service.
#[derive(Debug)]
pub struct ServiceRoutes {
    /// The service.
    pub service: String,
    /// Where the sticky key is, if sessions are sticky.
    pub sticky: Option<Sticky>,
    routes: Vec<Route>,
    schedule: Vec<usize>,
    versions: Vec<Version>,
    cursor: AtomicUsize,
}

impl ServiceRoutes {
    /// Routes of a service, with their weighted schedule and versions.
    pub fn new(service: &str, sticky: Option<Sticky>, routes: Vec<Route>) -> Self {
        let weights: Vec<u32> = routes.iter().map(|r| r.weight).collect();
        let mut versions: Vec<Version> = Vec::new();
        for (i, r) in routes.iter().enumerate().filter(|(_, r)| r.weight > 0) {
            let image = &r.endpoint.image;
            match versions.iter_mut().find(|v| &v.image == image) {
                Some(v) => {
                    v.weight += u64::from(r.weight);
                    v.members.push(i);
                }
                None => versions.push(Version {
                    image: image.clone(),
                    weight: u64::from(r.weight),
                    members: vec![i],
                }),
            }
        }
        ServiceRoutes {
            service: service.to_owned(),
            sticky,
            schedule: weights::schedule(&weights),
            versions,
            routes,
            cursor: AtomicUsize::new(0),
        }
    }

    /// Every route, in the order of the RouteChanged event.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The next route by weight, passing over ejected backends while others
    /// are left; `None` when no weight is positive.
    pub fn pick(&self) -> Option<&Route> {
        self.pick_where(|_| true)
    }

    /// The next route by weight whose replica is not `avoid`, for a retry.
    pub fn pick_other(&self, avoid: &str) -> Option<&Route> {
        self.pick_where(|r| r.endpoint.replica != avoid)
    }

    fn pick_where(&self, ok: impl Fn(&Route) -> bool) -> Option<&Route> {
        let len = self.schedule.len();
        if len == 0 {
            return None;
        }
        let mut fallback = None;
        for _ in 0..len.min(MAX_PICK_TRIES) {
            let n = self.cursor.fetch_add(1, Ordering::Relaxed) % len;
            let route = self.routes.get(self.schedule[n])?;
            if !ok(route) {
                continue;
            }
            if !route.endpoint.is_ejected() {
                return Some(route);
            }
            fallback.get_or_insert(route);
        }
        fallback.or_else(|| self.routes.iter().find(|r| r.weight > 0 && ok(r)))
    }

    /// The route for a sticky `key`: the version by weighted rendezvous
    /// hashing, then an instance of it the same way (passing over ejected
    /// ones while others are left, and `avoid`).
    pub fn pick_sticky(&self, key: &[u8], avoid: Option<&str>) -> Option<&Route> {
        let v = sticky::choose(
            key,
            self.versions.iter().map(|v| (v.image.as_str(), v.weight)),
        )?;
        let members = &self.versions.get(v)?.members;
        let candidates = |healthy: bool| {
            members.iter().map(move |i| {
                let r = &self.routes[*i];
                let usable = avoid != Some(r.endpoint.replica.as_str())
                    && (!healthy || !r.endpoint.is_ejected());
                (
                    r.endpoint.replica.as_str(),
                    if usable { u64::from(r.weight) } else { 0 },
                )
            })
        };
        let chosen = sticky::choose(key, candidates(true))
            .or_else(|| sticky::choose(key, candidates(false)))?;
        members.get(chosen).and_then(|i| self.routes.get(*i))
    }

    /// The route of one replica, whatever its weight.
    pub fn replica(&self, replica: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.endpoint.replica == replica)
    }
}

/// FNV-1a, for the short names the request path looks up (environment,
/// host name): a few instructions per byte where SipHash costs hundreds per
/// lookup. Hash flooding needs many colliding keys *in* the table, and only
/// the route feed inserts them, so the keyed SipHash buys nothing here.
#[derive(Debug, Clone, Copy)]
pub struct NameHasher(u64);

impl Default for NameHasher {
    fn default() -> Self {
        NameHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for NameHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Hash maps keyed by names, with [`NameHasher`].
type Names = BuildHasherDefault<NameHasher>;

/// One version of the whole table.
#[derive(Debug, Default)]
pub struct Table {
    /// Environment, then host name (both lower case).
    hosts: HashMap<String, HashMap<String, Arc<ServiceRoutes>, Names>, Names>,
    /// Service name to its (environment, host).
    services: HashMap<String, (String, String)>,
}

impl Table {
    /// The routes served as `host` in `environment` (both lower case).
    pub fn lookup(&self, environment: &str, host: &str) -> Option<&Arc<ServiceRoutes>> {
        self.hosts.get(environment)?.get(host)
    }

    /// The routes of a service that has had a RouteChanged event.
    pub fn service(&self, name: &str) -> Option<&Arc<ServiceRoutes>> {
        let (env, host) = self.services.get(name)?;
        self.lookup(env, host)
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
    pool: PoolSettings,
    /// Replicas removed from the table that still had requests in flight,
    /// kept so that one coming back keeps its count. Pruned once idle.
    retired: HashMap<(String, String), Arc<Endpoint>>,
    /// Every endpoint created, for the statistics (see [`TableWriter::endpoints`]).
    created: Vec<Arc<Endpoint>>,
}

impl TableWriter {
    /// A writer for `table`; new endpoints get pools with `pool` settings.
    pub fn new(table: SharedTable, pool: PoolSettings) -> Self {
        TableWriter {
            table,
            pool,
            retired: HashMap::new(),
            created: Vec::new(),
        }
    }

    /// Endpoints created since the last call (for the statistics registry).
    pub fn take_created(&mut self) -> Vec<Arc<Endpoint>> {
        std::mem::take(&mut self.created)
    }

    /// Replace the routes of `service` by `backends` (the full table of the
    /// service), served as `route.host` in `route.environment`, and return
    /// the replicas that left rotation: removed ones, and those whose weight
    /// went from positive to 0. They are marked draining once the new table
    /// is published.
    #[cfg(test)]
    pub fn apply(&mut self, service: &str, backends: &[Backend], route: &RouteSpec) -> Vec<Drain> {
        self.apply_all(&[(service, backends, route)])
    }

    /// [`TableWriter::apply`] for several services at once (a release's
    /// switch): the new table holds every change and is swapped in once, so
    /// no request sees one service moved and another not.
    pub fn apply_all(&mut self, changes: &[(&str, &[Backend], &RouteSpec)]) -> Vec<Drain> {
        self.retired.retain(|_, e| e.in_flight() > 0);
        let old_table = self.table.load_full();
        let mut hosts = old_table.hosts.clone();
        let mut services = old_table.services.clone();
        let mut leaving: Vec<Arc<Endpoint>> = Vec::new();
        for (service, backends, route) in changes {
            let routes = self.stage(old_table.service(service), service, backends, &mut leaving);
            let env = route.environment().to_ascii_lowercase();
            let host = route.host(service).to_ascii_lowercase();
            if let Some((old_env, old_host)) = services.get(*service) {
                let mine = |s: &Arc<ServiceRoutes>| s.service == *service;
                if let Some(h) = hosts.get_mut(old_env) {
                    if h.get(old_host).is_some_and(mine) {
                        h.remove(old_host);
                    }
                }
            }
            let entry = hosts.entry(env.clone()).or_default();
            if let Some(other) = entry.get(&host).filter(|s| s.service != *service) {
                tracing::warn!(service, other = %other.service, environment = %env, host = %host, "two services claim the same host; the latest RouteChanged wins");
            }
            let routes = ServiceRoutes::new(service, route.sticky.clone(), routes);
            entry.insert(host.clone(), Arc::new(routes));
            services.insert((*service).to_owned(), (env, host));
        }
        hosts.retain(|_, h| !h.is_empty());
        self.table.store(Arc::new(Table { hosts, services }));
        // Only now do the leaving endpoints refuse new picks: a request that
        // read the old table and is refused reads this one and finds a
        // backend in rotation. (Marked before the swap, a switch that takes
        // every old backend out at once answered 503 in that window.) One
        // that already counted itself on a leaving endpoint is waited for.
        leaving
            .into_iter()
            .map(|endpoint| Drain {
                epoch: endpoint.start_draining(),
                endpoint,
            })
            .collect()
    }
    /// The routes of `service` for `backends`, reusing the endpoints of its
    /// `old` routes (or retired ones); those leaving rotation go to `leaving`.
    fn stage(
        &mut self,
        old: Option<&Arc<ServiceRoutes>>,
        service: &str,
        backends: &[Backend],
        leaving: &mut Vec<Arc<Endpoint>>,
    ) -> Vec<Route> {
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
                .unwrap_or_else(|| {
                    let e = Endpoint::new(service, b, self.pool);
                    self.created.push(e.clone());
                    e
                });
            if b.weight > 0 && endpoint.is_draining() {
                endpoint.resume();
            } else if b.weight == 0 && previous.is_some_and(|p| p.weight > 0) {
                leaving.push(endpoint.clone());
            }
            routes.push(Route {
                endpoint,
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
            leaving.push(gone.endpoint.clone());
            self.retired.insert(
                (service.to_owned(), gone.endpoint.replica.clone()),
                gone.endpoint.clone(),
            );
        }
        routes
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

    fn writer(shared: &SharedTable) -> TableWriter {
        TableWriter::new(shared.clone(), PoolSettings::default())
    }

    fn apply(w: &mut TableWriter, service: &str, backends: &[Backend]) -> Vec<Drain> {
        w.apply(service, backends, &RouteSpec::default())
    }

    fn replicas(drains: &[Drain]) -> Vec<&str> {
        drains.iter().map(|d| d.endpoint.replica.as_str()).collect()
    }

    /// A switch that takes every backend out of rotation at once (blue-green)
    /// must never leave a request without one: a reader refused by a leaving
    /// endpoint reads the table again, as the proxy does, and finds the new
    /// set. Many trials of one switch each, with readers spinning across it.
    #[test]
    fn a_whole_set_switch_never_leaves_a_reader_without_a_backend() {
        use std::sync::atomic::AtomicBool;
        let set = |prefix: &str| -> Vec<Backend> {
            (1..=3)
                .map(|i| backend(&format!("{prefix}{i}"), 100))
                .collect()
        };
        let failures = Arc::new(AtomicUsize::new(0));
        let picks = Arc::new(AtomicUsize::new(0));
        for _ in 0..300 {
            let shared = SharedTable::default();
            let mut w = writer(&shared);
            apply(&mut w, "web", &set("blue"));
            let stop = Arc::new(AtomicBool::new(false));
            let readers: Vec<_> = (0..2)
                .map(|_| {
                    let (shared, stop) = (shared.clone(), stop.clone());
                    let (failures, picks) = (failures.clone(), picks.clone());
                    std::thread::spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            let got = (0..3).find_map(|_| {
                                let table = shared.load();
                                let route = table.service("web")?.pick()?;
                                route.endpoint.acquire(true)
                            });
                            match got {
                                Some(_guard) => picks.fetch_add(1, Ordering::Relaxed),
                                None => failures.fetch_add(1, Ordering::Relaxed),
                            };
                        }
                    })
                })
                .collect();
            let before = picks.load(Ordering::Relaxed);
            while picks.load(Ordering::Relaxed) < before + 20 {
                std::thread::yield_now();
            }
            apply(&mut w, "web", &set("green"));
            let after = picks.load(Ordering::Relaxed);
            while picks.load(Ordering::Relaxed) < after + 20 {
                std::thread::yield_now();
            }
            stop.store(true, Ordering::Relaxed);
            for r in readers {
                r.join().expect("reader");
            }
        }
        assert_eq!(failures.load(Ordering::Relaxed), 0, "picks: {picks:?}");
    }

    #[test]
    fn the_first_table_drains_nothing_and_picks_by_weight() {
        let shared = SharedTable::default();
        let mut w = writer(&shared);
        assert!(apply(&mut w, "web", &[backend("a", 1), backend("b", 3)]).is_empty());
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
        let mut w = writer(&shared);
        apply(
            &mut w,
            "web",
            &[backend("a", 1), backend("b", 1), backend("c", 0)],
        );
        let a = shared
            .load()
            .service("web")
            .and_then(|s| s.replica("a"))
            .map(|r| r.endpoint.clone())
            .expect("a");
        let guard = a.acquire(true).expect("a in rotation");

        let drains = apply(&mut w, "web", &[backend("b", 0)]);
        assert_eq!(replicas(&drains), ["b", "a", "c"]);
        assert!(a.is_draining());
        let table = shared.load();
        let web = table.service("web").expect("web");
        assert!(web.pick().is_none(), "no weight left");
        assert!(web.replica("b").is_some(), "weight 0 stays addressable");

        // `a` comes back while its request is still in flight: same counter, stale drain.
        let drains = apply(&mut w, "web", &[backend("a", 2)]);
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
        let mut w = writer(&shared);
        apply(&mut w, "web", &[backend("a", 1)]);
        assert!(apply(&mut w, "api", &[]).is_empty());
        let table = shared.load();
        assert_eq!(table.len(), 2);
        assert!(table.service("web").and_then(|s| s.pick()).is_some());
        assert!(table.service("api").and_then(|s| s.pick()).is_none());
    }

    #[test]
    fn hosts_and_environments_key_the_table_and_moves_free_the_old_key() {
        let shared = SharedTable::default();
        let mut w = writer(&shared);
        let staging = RouteSpec {
            environment: "Staging".into(),
            host: "shop".into(),
            sticky: None,
        };
        w.apply("web", &[backend("a", 1)], &staging);
        w.apply("web2", &[backend("b", 1)], &RouteSpec::default());
        let table = shared.load();
        assert!(table.lookup("staging", "shop").is_some());
        assert!(table.lookup("production", "shop").is_none());
        assert!(table.lookup("staging", "web").is_none());
        assert_eq!(
            table
                .lookup("production", "web2")
                .map(|s| s.service.as_str()),
            Some("web2")
        );

        w.apply("web", &[backend("a", 1)], &RouteSpec::default());
        let table = shared.load();
        assert!(
            table.lookup("staging", "shop").is_none(),
            "the old key is freed"
        );
        assert!(table.lookup("production", "web").is_some());
    }

    #[test]
    fn sticky_picks_follow_the_version_then_the_instance() {
        let shared = SharedTable::default();
        let mut w = writer(&shared);
        let v = |replica: &str, image: &str, weight| Backend {
            image: image.into(),
            ..backend(replica, weight)
        };
        apply(
            &mut w,
            "web",
            &[v("a1", "v1", 45), v("a2", "v1", 45), v("b1", "v2", 10)],
        );
        let table = shared.load();
        let web = table.service("web").expect("web");
        let mut to_v2 = 0;
        for i in 0..10_000 {
            let key = format!("user-{i}");
            let r = web.pick_sticky(key.as_bytes(), None).expect("a route");
            assert_eq!(
                r.endpoint.replica,
                web.pick_sticky(key.as_bytes(), None)
                    .expect("again")
                    .endpoint
                    .replica
            );
            if r.endpoint.image == "v2" {
                to_v2 += 1;
            }
            let other = web.pick_sticky(key.as_bytes(), Some(&r.endpoint.replica));
            if r.endpoint.image == "v1" {
                let other = other.expect("the other v1 instance");
                assert_eq!(other.endpoint.image, "v1");
                assert_ne!(other.endpoint.replica, r.endpoint.replica);
            }
        }
        assert!((800..=1200).contains(&to_v2), "{to_v2}");
    }

    /// The replica each of 2,000 keys is sent to once `backends` apply.
    fn sticky_picks(
        shared: &SharedTable,
        w: &mut TableWriter,
        backends: &[Backend],
    ) -> Vec<String> {
        apply(w, "web", backends);
        let table = shared.load();
        let web = table.service("web").expect("web");
        (0..2_000)
            .map(|i| {
                let key = format!("user-{i}");
                let r = web.pick_sticky(key.as_bytes(), None).expect("a route");
                r.endpoint.replica.clone()
            })
            .collect()
    }

    #[test]
    fn a_sticky_key_does_not_depend_on_the_order_of_the_backends() {
        let shared = SharedTable::default();
        let mut w = writer(&shared);
        let v = |replica: &str, image: &str, weight| Backend {
            image: image.into(),
            ..backend(replica, weight)
        };
        let listed = [v("a1", "v1", 45), v("a2", "v1", 45), v("b1", "v2", 10)];
        let first = sticky_picks(&shared, &mut w, &listed);
        // The same weights, the canary listed first and the stable replicas
        // the other way round: not one key moves.
        let reordered = [v("b1", "v2", 10), v("a2", "v1", 45), v("a1", "v1", 45)];
        assert_eq!(sticky_picks(&shared, &mut w, &reordered), first);
    }
}
