//! Three hosts with their own addresses on this machine ([`Lan`]: network
//! namespaces joined by a bridge), each running `mt node` (an executor and
//! a router); NATS, the planner and the health-watcher in the root
//! namespace; the test's client outside the hosts. Cutting a host's link is
//! a real partition: its processes keep running, nothing reaches them.
//!
//! These need root and iproute2; CI runs them (they fail there when the
//! namespaces cannot be made, and are skipped elsewhere).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mentat_bus::identities::Role;
use mentat_domain::command::{HostState, Outcome, StatusReply};
use mentat_domain::event::Event;
use mentat_e2e::load::{self, Timeline};
use mentat_e2e::netns::Lan;
use mentat_e2e::{
    bin_dir, drained_stops, replaced, stop_child, text, web_config_judged, Cluster, Db,
};

#[path = "../../bench/hosts/measure.rs"]
mod measure;

/// The multi-host benchmark (`bench/hosts/run.sh`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run by bench/hosts/run.sh"]
async fn hosts_benchmark() {
    measure::run().await;
}

/// The port every host's router listens on (each host has its own ports).
const HTTP_PORT: u16 = 8080;

/// `mt node` on one host of the lan; stopped with SIGINT (then SIGKILL)
/// when the test ends.
struct Node(Child);

impl Node {
    fn start(lan: &Lan, host: usize, cluster: &Cluster, data: &Path) -> Node {
        let bins = bin_dir();
        let path = format!(
            "{}:{}",
            bins.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let dir = data.join(host_id(host));
        // Its identities, copied from where the cluster's were made.
        let ids = dir.join("identities");
        std::fs::create_dir_all(&ids).expect("node identities dir");
        for role in [Role::Executor(host_id(host)), Role::RouterOf(host_id(host))] {
            let from = cluster.identities.creds(&role);
            std::fs::copy(&from, ids.join(from.file_name().expect("a file"))).expect("copy");
        }
        let log = std::fs::File::create(dir.join("node.log")).expect("node log");
        let child = lan
            .command(host, bins.join("mt"))
            .args([
                "node",
                "--nats",
                &cluster.nats_urls(),
                "--host-id",
                &host_id(host),
            ])
            .arg("--nats-ca")
            .arg(cluster.identities.ca())
            .args(["--advertise-ip", &lan.address(host).to_string()])
            .args(["--http", &format!("0.0.0.0:{HTTP_PORT}")])
            .args(["--admin", "127.0.0.1:9180"])
            .arg("--data-dir")
            .arg(&dir)
            .env("PATH", path)
            .env("RUST_LOG", "info")
            // JSON lines, with their times, for the benchmark.
            .env("MENTAT_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start mt node");
        Node(child)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        stop_child(&mut self.0, "INT", Duration::from_secs(20));
    }
}

fn host_id(host: usize) -> String {
    format!("h{host}")
}

/// The three hosts, the control plane and its NATS on the lan's gateway.
/// Fields drop in order: the nodes, then the control plane, then the lan.
struct Hosts {
    _nodes: Vec<Option<Node>>,
    cluster: Cluster,
    data: tempfile::TempDir,
    lan: Lan,
}

impl Hosts {
    /// Three live hosts with their routers, or `None` where namespaces
    /// cannot be made (outside CI).
    async fn start() -> Option<Hosts> {
        let lan = Lan::create(3)?;
        let cluster = Cluster::start_control_plane(IpAddr::V4(lan.gateway()), Db::Sqlite).await;
        let data = tempfile::tempdir().expect("tempdir");
        let nodes = (0..3)
            .map(|h| Some(Node::start(&lan, h, &cluster, data.path())))
            .collect();
        let hosts = Hosts {
            _nodes: nodes,
            cluster,
            data,
            lan,
        };
        hosts
            .wait_hosts(Duration::from_secs(60), "three hosts and routers", |s| {
                s.live.len() == 3 && s.routers == 3
            })
            .await;
        Some(hosts)
    }

    /// The address of host `host`'s router.
    fn router(&self, host: usize) -> String {
        format!("{}:{HTTP_PORT}", self.lan.address(host))
    }

    /// Every log: the control plane's and each node's.
    fn logs(&self) -> String {
        let mut out = self.cluster.logs();
        for h in 0..3 {
            let log = self.data.path().join(host_id(h)).join("node.log");
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(30)..];
            out.push_str(&format!(
                "--- node {} ---\n{}\n",
                host_id(h),
                tail.join("\n")
            ));
        }
        out
    }

    /// Wait until `ready` holds of the planner's view of hosts and routers.
    async fn wait_hosts(&self, within: Duration, what: &str, ready: impl Fn(&View) -> bool) {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(reply) = self.cluster.status_query(None).await {
                let view = View::of(reply);
                if ready(&view) {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "{what}: not within {within:?}: {view:?}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn events(&self) -> Vec<Event> {
        self.cluster.events("web").await
    }

    fn deploy(&self, image: &str) {
        let out = self
            .cluster
            .mt(&["deploy", "web", "--image", image, "--timeout", "120"]);
        assert!(
            out.status.success(),
            "deploy {image}: {}\n{}",
            text(&out),
            self.logs()
        );
    }

    /// Replicas of `web` not exited, by host.
    async fn spread(&self) -> BTreeMap<String, Vec<String>> {
        let mut by_host: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in self.cluster.status("web").await.instances {
            if r.phase != "exited" {
                by_host.entry(r.host).or_default().push(r.replica);
            }
        }
        by_host
    }
}

/// What the planner says of the hosts and routers.
#[derive(Debug, Default)]
struct View {
    live: BTreeSet<String>,
    states: BTreeMap<String, HostState>,
    held: bool,
    routers: usize,
    /// Routers whose last heartbeat reported every latest route applied.
    in_step: BTreeSet<String>,
}

impl View {
    fn of(reply: StatusReply) -> View {
        match reply {
            StatusReply::Ok {
                host_states,
                held,
                routers,
                ..
            } => View {
                live: host_states
                    .iter()
                    .filter(|h| h.state == HostState::Live)
                    .map(|h| h.host.clone())
                    .collect(),
                states: host_states.into_iter().map(|h| (h.host, h.state)).collect(),
                held: held.is_some(),
                routers: routers.len(),
                in_step: routers
                    .into_iter()
                    .filter(|r| r.heard && r.behind.is_empty())
                    .map(|r| r.router)
                    .collect(),
            },
            _ => View::default(),
        }
    }

    fn state(&self, host: usize) -> Option<HostState> {
        self.states.get(&host_id(host)).copied()
    }
}

/// A service of `replicas` replicas of the demo app, each ready `ready_ms`
/// after it starts, rolled one at a time, thresholds off.
fn web(replicas: u32, ready_ms: u64) -> String {
    let rolling =
        "strategy: rolling, max_unavailable: 1, health_timeout_secs: 20, auto_revert: true";
    web_config_judged(replicas, ready_ms, rolling, "enabled: false")
}

/// Short host timeouts, so that each test stays within a minute or so.
const FAST_LOSS: &str = "cluster: { suspect_after_secs: 2, lost_after_secs: 6 }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_replicas_spread_two_per_host_and_every_router_serves_them() {
    let Some(hosts) = Hosts::start().await else {
        return;
    };
    hosts.cluster.apply(&web(6, 0));
    hosts.deploy("v1");

    let spread = hosts.spread().await;
    let counts: Vec<usize> = spread.values().map(Vec::len).collect();
    assert_eq!(counts, vec![2, 2, 2], "{spread:?}");
    for r in hosts.cluster.status("web").await.instances {
        let host: usize = r.host[1..].parse().expect("h<N>");
        let addr = r.addr.expect("an address");
        assert!(
            addr.starts_with(&format!("{}:", hosts.lan.address(host))),
            "{} on {} listens on {addr}",
            r.replica,
            r.host
        );
    }
    // From outside the hosts, every router answers for the service.
    for h in 0..3 {
        let (code, body) = load::get(&hosts.router(h), "web.localhost")
            .await
            .unwrap_or_else(|e| panic!("GET through {}: {e}\n{}", hosts.router(h), hosts.logs()));
        assert_eq!((code, body.as_str()), (200, "v1"), "router of h{h}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_and_blue_green_through_two_routers_answer_every_request() {
    let Some(hosts) = Hosts::start().await else {
        return;
    };
    hosts.cluster.apply(&web(3, 300));
    hosts.deploy("v1");
    let routers: BTreeSet<String> = (0..3).map(host_id).collect();

    // 500 requests/s in total, through the routers of two hosts.
    let a = Timeline::start(hosts.router(0), "web.localhost", 250, 8);
    let b = Timeline::start(hosts.router(1), "web.localhost", 250, 8);
    hosts.deploy("v2");
    let blue_green = web(3, 300).replace(
        "strategy: rolling, max_unavailable: 1",
        "strategy: blue-green, standby_secs: 1",
    );
    hosts.cluster.apply(&blue_green);
    hosts.deploy("v3");
    let (sent_a, failed_a) = a.stop().await;
    let (sent_b, failed_b) = b.stop().await;
    assert!(sent_a > 0 && sent_b > 0);
    assert!(
        failed_a.is_empty() && failed_b.is_empty(),
        "of {sent_a} + {sent_b} requests, not answered 200: {:?}\n{}",
        failed_a
            .iter()
            .chain(&failed_b)
            .take(10)
            .collect::<Vec<_>>(),
        hosts.logs()
    );
    let stopped = drained_stops(&hosts.events().await, &routers)
        .unwrap_or_else(|e| panic!("{e}\n{}", hosts.logs()));
    assert!(
        stopped >= 3,
        "the v1 replicas stopped as drained: {stopped}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_cut_off_mid_deploy_moves_its_replicas_and_is_cleaned_up_when_back() {
    let Some(hosts) = Hosts::start().await else {
        return;
    };
    hosts
        .cluster
        .apply(&format!("{FAST_LOSS}{}", web(6, 1_000)));
    hosts.deploy("v1");
    let on_cut = hosts.spread().await.remove("h2").unwrap_or_default();
    assert_eq!(on_cut.len(), 2, "two replicas on h2");

    // 200 requests/s through h0's router while h2 is cut mid-deploy.
    let traffic = Timeline::start(hosts.router(0), "web.localhost", 200, 8);
    let mut deploy =
        hosts
            .cluster
            .mt_spawn(&["deploy", "web", "--image", "v2", "--timeout", "120"]);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    hosts.lan.cut(2);

    hosts
        .wait_hosts(Duration::from_secs(10), "h2 suspect", |v| {
            v.state(2).is_some_and(|s| s != HostState::Live)
        })
        .await;
    // Suspect: none of h2's replicas gets traffic any more, in any router.
    hosts
        .cluster
        .wait_status("web", Duration::from_secs(5), "h2 out of rotation", |s| {
            s.instances
                .iter()
                .all(|r| r.host != "h2" || r.share_bp == 0)
        })
        .await;
    // ... and both routers left have applied that change.
    hosts
        .wait_hosts(Duration::from_secs(5), "h0 and h1 in step", |v| {
            v.in_step.contains("h0") && v.in_step.contains("h1")
        })
        .await;
    let suspect_ms = mentat_bus::now_ms();

    // Lost: its replicas run healthy elsewhere; the deployment completes.
    let status = tokio::task::block_in_place(|| deploy.wait()).expect("mt deploy");
    assert!(status.success(), "mt deploy failed\n{}", hosts.logs());
    let events = hosts.events().await;
    let moved = replaced(&events);
    assert!(
        !moved.is_empty() && moved.iter().all(|(_, host, _)| host == "h2"),
        "{moved:?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::DeploymentReverting { .. })),
        "no revert\n{}",
        hosts.logs()
    );
    let history = hosts.cluster.history("web").await;
    assert_eq!(
        history.last().map(|d| d.outcome),
        Some(Outcome::Completed),
        "{history:?}"
    );
    let (sent, failed) = traffic.stop().await;
    // A request sent before the mark may have gone to h2 and waited there;
    // none sent after it may fail.
    let after: Vec<_> = failed.iter().filter(|s| s.sent_ms > suspect_ms).collect();
    eprintln!(
        "{sent} requests; {} sent before h2 was out of rotation not answered 200, {} sent after",
        failed.len() - after.len(),
        after.len()
    );
    assert!(
        after.is_empty(),
        "sent after the suspect mark, failed: {after:?}"
    );

    // Back: the replicas h2 still ran are stopped; none runs twice.
    hosts.lan.heal(2);
    let gone: Vec<String> = moved.into_iter().map(|(old, _, _)| old).collect();
    hosts
        .cluster
        .wait_exited("web", &gone, Duration::from_secs(30), || hosts.logs())
        .await;
    let status = hosts
        .cluster
        .wait_status("web", Duration::from_secs(10), "six replicas of v2", |s| {
            s.instances.iter().filter(|r| r.phase != "exited").count() == 6
        })
        .await;
    let running: Vec<&str> = status
        .instances
        .iter()
        .filter(|r| r.phase != "exited")
        .map(|r| r.replica.as_str())
        .collect();
    let distinct: BTreeSet<&str> = running.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        running.len(),
        "a replica twice: {running:?}"
    );
    assert!(status.instances.iter().all(|r| r.image == "v2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_second_partition_places_nothing_again() {
    let block = "cluster: { suspect_after_secs: 2, lost_after_secs: 15 }\n";
    let Some(hosts) = Hosts::start().await else {
        return;
    };
    hosts.cluster.apply(&format!("{block}{}", web(6, 0)));
    hosts.deploy("v1");
    hosts.lan.cut(1);
    let cut = Instant::now();
    hosts
        .wait_hosts(Duration::from_secs(10), "h1 suspect", |v| {
            v.state(1) == Some(HostState::Suspect)
        })
        .await;
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(cut.elapsed())).await;
    hosts.lan.heal(1);
    hosts
        .wait_hosts(Duration::from_secs(10), "h1 live again", |v| {
            v.state(1) == Some(HostState::Live)
        })
        .await;
    hosts
        .cluster
        .wait_status("web", Duration::from_secs(10), "weights back", |s| {
            s.instances.iter().all(|r| r.weight == 100)
        })
        .await;
    // Past the time it would have been lost: nothing moved.
    tokio::time::sleep(Duration::from_secs(16).saturating_sub(cut.elapsed())).await;
    assert!(replaced(&hosts.events().await).is_empty());
    assert_eq!(
        hosts
            .spread()
            .await
            .values()
            .map(Vec::len)
            .collect::<Vec<_>>(),
        vec![2, 2, 2]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_three_hosts_cut_hold_replacement_until_released() {
    let Some(hosts) = Hosts::start().await else {
        return;
    };
    hosts.cluster.apply(&format!("{FAST_LOSS}{}", web(6, 0)));
    hosts.deploy("v1");
    hosts.lan.cut(1);
    hosts.lan.cut(2);
    hosts
        .wait_hosts(Duration::from_secs(20), "h1 and h2 lost, held", |v| {
            v.held && v.state(1) == Some(HostState::Lost) && v.state(2) == Some(HostState::Lost)
        })
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(replaced(&hosts.events().await).is_empty(), "held");
    hosts
        .cluster
        .mt_ok(&["hosts", "release", "--reason", "h1 and h2 are gone"]);
    hosts
        .cluster
        .wait_status("web", Duration::from_secs(30), "six on h0", |s| {
            s.instances
                .iter()
                .filter(|r| r.host == "h0" && r.phase == "healthy")
                .count()
                == 6
        })
        .await;
    assert_eq!(replaced(&hosts.events().await).len(), 4);
}

/// The pid of the process named `name` running on host `host`.
fn pid_on(lan: &Lan, host: usize, name: &str) -> Option<u32> {
    let out = Command::new("ip")
        .args(["netns", "pids", &lan.namespace(host)])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == name)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_killed_mid_deploy_comes_back_sending_nothing_to_a_stopped_replica() {
    let Some(hosts) = Hosts::start().await else {
        return;
    };
    hosts.cluster.apply(&web(3, 300));
    hosts.deploy("v1");
    let traffic = Timeline::start(hosts.router(1), "web.localhost", 200, 8);
    let mut deploy =
        hosts
            .cluster
            .mt_spawn(&["deploy", "web", "--image", "v2", "--timeout", "120"]);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let first = pid_on(&hosts.lan, 1, "mentat-router").expect("h1's router");
    let killed = Command::new("kill")
        .args(["-KILL", &first.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let killed_ms = mentat_bus::now_ms();
    // `mt node` starts it again; it accepts connections once it is back.
    let deadline = Instant::now() + Duration::from_secs(30);
    let back_ms = loop {
        let again = pid_on(&hosts.lan, 1, "mentat-router").filter(|p| *p != first);
        if again.is_some()
            && tokio::net::TcpStream::connect(hosts.router(1))
                .await
                .is_ok()
        {
            break mentat_bus::now_ms();
        }
        assert!(
            Instant::now() < deadline,
            "h1's router did not come back\n{}",
            hosts.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let status = tokio::task::block_in_place(|| deploy.wait()).expect("mt deploy");
    assert!(status.success(), "mt deploy failed\n{}", hosts.logs());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (sent, failed) = traffic.stop().await;
    eprintln!(
        "{sent} requests; router down {} ms; {} not answered while it was down",
        back_ms - killed_ms,
        failed.len()
    );
    // While it was down, requests went unanswered (no status at all); no
    // answer from it was ever an error, and every request after it came
    // back was answered 200.
    let bad: Vec<_> = failed
        .iter()
        .filter(|s| s.status != 0 || s.sent_ms >= back_ms)
        .collect();
    assert!(
        bad.is_empty(),
        "answers other than 200 not explained by the router being down: {bad:?}\n{}",
        hosts.logs()
    );
}
