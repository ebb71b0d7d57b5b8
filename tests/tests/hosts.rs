//! Host loss with real executors: a second (and third) executor is
//! stopped with SIGSTOP, which is what a partitioned host looks like (its
//! replicas keep running, its heartbeats stop). Its replicas get weight 0
//! once it is suspect, are placed again once it is lost (in the middle of a
//! deployment, which completes without a revert), and are stopped when it
//! comes back. A short partition places nothing again; two of three hosts
//! stopped together hold re-placement until `mt hosts release`.

use mentat_bus::identities::Role;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mentat_domain::command::{HostState, Outcome, StatusReply};
use mentat_domain::event::Event;
use mentat_e2e::{bin_dir, replaced, stop_child, text, Cluster, Db};

/// suspect after 2 s, lost after 6 s: short, so that each test stays well
/// under a minute.
const CLUSTER: &str = "cluster: { suspect_after_secs: 2, lost_after_secs: 6 }\n";

/// One more executor host, stopped (SIGCONT, then SIGTERM: its replicas
/// stop with it) when the test ends.
struct Executor(Child);

impl Executor {
    fn start(cluster: &Cluster, host: &str, data: &Path) -> Executor {
        let bins = bin_dir();
        let path = format!(
            "{}:{}",
            bins.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let log = std::fs::File::create(data.join("executor.log")).expect("log file");
        let child = Command::new(bins.join("mentat-executor"))
            .args(["--nats", &cluster.nats_urls(), "--host-id", host])
            .args(cluster.identities.args(&Role::Executor(host.into())))
            .args(["--advertise-ip", "127.0.0.1", "--stop-grace-secs", "5"])
            .arg("--data-dir")
            .arg(data)
            .env("PATH", path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start an executor");
        Executor(child)
    }

    fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([format!("-{signal}"), self.0.id().to_string()])
            .status()
            .expect("kill");
        assert!(sent.success(), "kill -{signal}");
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.signal("CONT");
        stop_child(&mut self.0, "TERM", Duration::from_secs(10));
    }
}

/// The test service file: `replicas` of the demo app, each ready
/// `ready_ms` after it starts, and the short cluster block.
fn config(replicas: u32, ready_ms: u64) -> String {
    format!(
        r#"{CLUSTER}services:
  web:
    replicas: {replicas}
    run:
      command: ["mentat-demo-app"]
      env: {{ APP_VERSION: "{{image}}", READY_DELAY_MS: "{ready_ms}" }}
    health: {{ path: /health, interval_ms: 100, healthy_after: 2, unhealthy_after: 3, bake_secs: 0, thresholds: {{ enabled: false }} }}
    deploy: {{ strategy: rolling, max_unavailable: 1, health_timeout_secs: 10, auto_revert: true }}
"#
    )
}

/// Wait until `ready` holds of the host states (and the hold, if any).
async fn wait_hosts(
    cluster: &Cluster,
    within: Duration,
    what: &str,
    ready: impl Fn(&[(String, HostState)], bool) -> bool,
) {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(StatusReply::Ok {
            host_states, held, ..
        }) = cluster.status_query(None).await
        {
            let states: Vec<(String, HostState)> =
                host_states.into_iter().map(|h| (h.host, h.state)).collect();
            if ready(&states, held.is_some()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {within:?}: {states:?}, held {}\n{}",
                held.is_some(),
                cluster.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn state_of(states: &[(String, HostState)], host: &str) -> Option<HostState> {
    states.iter().find(|(h, _)| h == host).map(|(_, s)| *s)
}

/// A cluster with the tests' own executor plus `extra` executors, all live,
/// and `web` serving v1 on `replicas` replicas.
async fn serving(
    replicas: u32,
    ready_ms: u64,
    extra: &[&str],
    data: &Path,
) -> (Cluster, Vec<Executor>) {
    let cluster = Cluster::start(Db::Sqlite).await;
    let executors: Vec<Executor> = extra
        .iter()
        .map(|h| {
            let dir = data.join(h);
            std::fs::create_dir_all(&dir).expect("dir");
            Executor::start(&cluster, h, &dir)
        })
        .collect();
    let names: Vec<String> = extra.iter().map(|h| (*h).to_owned()).collect();
    wait_hosts(&cluster, Duration::from_secs(20), "hosts joined", |s, _| {
        names
            .iter()
            .all(|h| state_of(s, h) == Some(HostState::Live))
    })
    .await;
    let out = cluster.apply(&config(replicas, ready_ms));
    assert!(out.status.success(), "{}", text(&out));
    cluster.deploy_first("v1");
    (cluster, executors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_cut_off_mid_deploy_is_zeroed_replaced_and_cleaned_up_when_back() {
    let data = tempfile::tempdir().expect("tempdir");
    let (cluster, executors) = serving(4, 1_000, &["e2e-b"], data.path()).await;
    let on_b: Vec<String> = cluster
        .status("web")
        .await
        .instances
        .iter()
        .filter(|r| r.host == "e2e-b")
        .map(|r| r.replica.clone())
        .collect();
    assert_eq!(on_b.len(), 2, "spread 2/2");

    let mut deploy = cluster.mt_spawn(&["deploy", "web", "--image", "v2", "--timeout", "90"]);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    executors[0].signal("STOP");
    let cut = Instant::now();

    wait_hosts(&cluster, Duration::from_secs(5), "e2e-b suspect", |s, _| {
        state_of(s, "e2e-b") != Some(HostState::Live)
    })
    .await;
    // Suspect: every replica left on e2e-b has weight 0, in one table.
    cluster
        .wait_status("web", Duration::from_secs(5), "weight 0 on e2e-b", |s| {
            let routed_b = s
                .instances
                .iter()
                .filter(|r| r.host == "e2e-b" && r.share_bp > 0);
            routed_b.count() == 0
                && s.instances
                    .iter()
                    .any(|r| r.host != "e2e-b" && r.weight > 0)
        })
        .await;
    assert!(
        cut.elapsed() < Duration::from_secs(5),
        "suspect in {:?}",
        cut.elapsed()
    );

    // Lost: its replicas are placed again on the host left.
    let deadline = Instant::now() + Duration::from_secs(20);
    let moves = loop {
        let moves = replaced(&cluster.events("web").await);
        if !moves.is_empty() {
            break moves;
        }
        assert!(
            Instant::now() < deadline,
            "nothing placed again\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        moves.iter().all(|(_, host, _)| host == "e2e-b"),
        "{moves:?}"
    );

    // The deployment in flight completes, without a revert.
    let status = tokio::task::block_in_place(|| deploy.wait()).expect("mt deploy");
    assert!(status.success(), "mt deploy failed\n{}", cluster.logs());
    let history = cluster.history("web").await;
    let last = history.last().expect("a deployment");
    assert_eq!(last.outcome, Outcome::Completed, "{last:?}");
    let events = cluster.events("web").await;
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::DeploymentReverting { .. })),
        "no revert"
    );

    // Back: the replaced replicas still running there are stopped.
    executors[0].signal("CONT");
    let replaced_ids: Vec<String> = replaced(&events)
        .into_iter()
        .map(|(old, _, _)| old)
        .collect();
    cluster
        .wait_exited("web", &replaced_ids, Duration::from_secs(20), || {
            cluster.logs()
        })
        .await;
    let status = cluster
        .wait_status("web", Duration::from_secs(10), "four replicas of v2", |s| {
            s.instances.iter().filter(|r| r.phase != "exited").count() == 4
        })
        .await;
    assert!(
        status.instances.iter().all(|r| r.image == "v2"),
        "{:?}",
        status.instances
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_shorter_than_lost_after_places_nothing_again() {
    let data = tempfile::tempdir().expect("tempdir");
    let (cluster, executors) = serving(4, 0, &["e2e-b"], data.path()).await;
    executors[0].signal("STOP");
    wait_hosts(&cluster, Duration::from_secs(5), "e2e-b suspect", |s, _| {
        state_of(s, "e2e-b") == Some(HostState::Suspect)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    executors[0].signal("CONT");
    wait_hosts(
        &cluster,
        Duration::from_secs(5),
        "e2e-b live again",
        |s, _| state_of(s, "e2e-b") == Some(HostState::Live),
    )
    .await;
    let status = cluster
        .wait_status("web", Duration::from_secs(5), "weights back", |s| {
            s.instances.iter().all(|r| r.weight == 100)
        })
        .await;
    assert_eq!(status.instances.len(), 4);
    // Past the time it would have been lost: still nothing moved.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(replaced(&cluster.events("web").await).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_three_hosts_lost_together_hold_replacement_until_released() {
    let data = tempfile::tempdir().expect("tempdir");
    let (cluster, executors) = serving(6, 0, &["e2e-b", "e2e-c"], data.path()).await;
    executors[0].signal("STOP");
    executors[1].signal("STOP");
    wait_hosts(
        &cluster,
        Duration::from_secs(10),
        "both lost, held",
        |s, held| {
            held && state_of(s, "e2e-b") == Some(HostState::Lost)
                && state_of(s, "e2e-c") == Some(HostState::Lost)
        },
    )
    .await;
    let shown = cluster.mt_ok(&["status"]);
    assert!(shown.contains("re-placement held"), "{shown}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(replaced(&cluster.events("web").await).is_empty(), "held");

    let out = cluster.mt(&["hosts", "release"]);
    assert!(
        !out.status.success(),
        "a release without a reason: {}",
        text(&out)
    );
    cluster.mt_ok(&[
        "hosts",
        "release",
        "--reason",
        "b and c are gone",
        "--actor",
        "ana",
    ]);
    let status = cluster
        .wait_status(
            "web",
            Duration::from_secs(20),
            "six on the host left",
            |s| {
                s.instances
                    .iter()
                    .filter(|r| r.host == "e2e-host" && r.phase == "healthy")
                    .count()
                    == 6
            },
        )
        .await;
    assert_eq!(
        replaced(&cluster.events("web").await).len(),
        4,
        "{:?}",
        status.instances
    );
}
