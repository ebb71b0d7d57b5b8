//! `mt node`: a second host joins the cluster with its own executor and
//! router; a service is spread over both hosts, its replicas there listen on
//! the node's advertised address, and the node's router serves it. A node
//! that cannot reach NATS says which URL it tried.

use mentat_bus::identities::Role;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mentat_domain::command::StatusReply;
use mentat_e2e::{bin_dir, load, text, web_config, Cluster, Db};
use mentat_testkit::{free_port, free_ports};

/// Stops `mt node` if the test fails half-way.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_with_its_executor_and_router_and_takes_its_share() {
    let cluster = Cluster::start(Db::Sqlite).await;
    let data = tempfile::tempdir().expect("tempdir");
    // Its identities, copied from where the cluster's were made.
    let ids = data.path().join("identities");
    std::fs::create_dir(&ids).expect("identities dir");
    for role in [
        Role::Executor("node-2".into()),
        Role::RouterOf("node-2".into()),
    ] {
        let from = cluster.identities.creds(&role);
        std::fs::copy(&from, ids.join(from.file_name().expect("a file"))).expect("copy");
    }
    let http = format!("127.0.0.1:{}", free_port());
    let admin = free_ports(4);
    let mut node = Node(
        Command::new(bin_dir().join("mt"))
            .args(["node", "--nats", &cluster.nats_urls()])
            .arg("--nats-ca")
            .arg(cluster.identities.ca())
            .args(["--host-id", "node-2", "--advertise-ip", "127.0.0.2"])
            .args(["--http", &http])
            .args(["--admin", &format!("127.0.0.1:{admin}")])
            .arg("--data-dir")
            .arg(data.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mt node"),
    );

    // Both hosts and both routers are live.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(StatusReply::Ok { hosts, routers, .. }) = cluster.status_query(None).await {
            if hosts.contains(&"node-2".to_owned()) && routers.iter().any(|r| r.router == "node-2")
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node-2 never joined: hosts {hosts:?}, routers {routers:?}\n{}",
                cluster.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    cluster.apply(&web_config(4, 10));
    let out = cluster.mt(&["deploy", "web", "--image", "v1", "--timeout", "120"]);
    assert!(out.status.success(), "{}\n{}", text(&out), cluster.logs());
    let status = cluster.status("web").await;
    let on_node: Vec<&str> = status
        .instances
        .iter()
        .filter(|r| r.host == "node-2")
        .filter_map(|r| r.addr.as_deref())
        .collect();
    assert_eq!(on_node.len(), 2, "spread 2/2: {:?}", status.instances);
    assert!(
        on_node.iter().all(|a| a.starts_with("127.0.0.2:")),
        "the node's replicas listen on its advertised address: {on_node:?}"
    );

    // The node's router serves the service.
    let (code, body) = load::get(&http, "web.localhost")
        .await
        .expect("GET through the node's router");
    assert_eq!((code, body.as_str()), (200, "v1"));
    // Its executor serves its metrics three ports after the router's.
    let executor = format!("127.0.0.1:{}", admin + 3);
    let (code, metrics) = load::get_path(&executor, "localhost", "/metrics")
        .await
        .expect("GET the executor's /metrics");
    assert_eq!(code, 200, "{metrics}");
    assert!(
        metrics.contains("mentat_executor_replica_starts_total 2"),
        "the node started two replicas: {metrics}"
    );

    // Ctrl-C stops the node.
    let signalled = Command::new("sh")
        .args(["-c", &format!("kill -INT {}", node.0.id())])
        .status()
        .expect("sh");
    assert!(signalled.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while node.0.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "mt node did not stop on SIGINT");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn a_node_that_cannot_reach_nats_names_the_url_it_tried() {
    let url = format!("nats://127.0.0.1:{}", free_port());
    let out = Command::new(bin_dir().join("mt"))
        .args(["node", "--nats", &url, "--host-id", "lonely"])
        .output()
        .expect("run mt node");
    assert!(!out.status.success());
    let said = text(&out);
    assert!(said.contains(&url), "names the URL: {said}");
}

#[test]
fn a_node_without_identities_refuses_a_nats_beyond_this_machine() {
    let data = tempfile::tempdir().expect("tempdir");
    // Refused before any connection: nothing needs to answer there.
    let out = Command::new(bin_dir().join("mt"))
        .args([
            "node",
            "--nats",
            "nats://10.255.255.1:4222",
            "--host-id",
            "far",
        ])
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .expect("run mt node");
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("mt security init") && said.contains("executor-far.nk"),
        "says how to get its identities: {said}"
    );
}
