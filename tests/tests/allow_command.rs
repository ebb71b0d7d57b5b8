//! The executor's allow-list (`--allow-command`), end to end: a replica
//! whose program is not allowed is never started, its exit says why, and
//! its deployment fails with that reason; an allowed one runs.

#![allow(clippy::unwrap_used)] // a failing test should fail loudly

use std::time::Duration;

use mentat_domain::command::Outcome;
use mentat_domain::event::Event;
use mentat_e2e::{bin_dir, text, web_config, Args, Cluster, Db};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_off_the_list_fails_its_deployment_with_the_reason() {
    // Given an executor that may run the demo app and nothing else
    let demo = std::fs::canonicalize(bin_dir().join("mentat-demo-app")).unwrap();
    let pattern = demo.display().to_string();
    let allow = ["--allow-command", pattern.as_str()];
    let args = Args {
        executor: &allow,
        ..Args::default()
    };
    let cluster = Cluster::start_with(Db::Sqlite, args).await;
    // And two services: the demo app, and a shell
    let mut yaml = web_config(1, 30);
    yaml.push_str(
        r#"  shell:
    replicas: 1
    run:
      command: ["/bin/sh", "-c", "exec mentat-demo-app"]
      env: { APP_VERSION: "{image}" }
    health: { path: /health, interval_ms: 100, healthy_after: 2, unhealthy_after: 3 }
    deploy: { strategy: rolling, health_timeout_secs: 30, auto_revert: true }
"#,
    );
    cluster.apply(&yaml);

    // When the shell is deployed
    let out = cluster.mt(&[
        "deploy",
        "shell",
        "--image",
        "v1",
        "--wait",
        "--timeout",
        "120",
    ]);
    // Then the deployment fails, saying which program and why
    assert!(!out.status.success(), "{}", text(&out));
    let record = cluster.history("shell").await.pop().expect("a deployment");
    assert_eq!(record.outcome, Outcome::Failed, "{record:?}");
    let failure = record.failure.clone().unwrap_or_default();
    assert!(
        failure.contains("`/bin/sh`") && failure.contains("is not allowed on this host"),
        "{failure}"
    );
    // And the executor's fact said so: the replica never ran
    let refused = cluster
        .events("shell")
        .await
        .into_iter()
        .find_map(|e| match e {
            Event::ReplicaExited { status, reason, .. } => Some((status.code, reason)),
            _ => None,
        });
    let (code, reason) = refused.expect("an exit fact");
    assert_eq!(code, Some(127));
    assert!(reason.unwrap_or_default().contains("--allow-command"));

    // And the demo app, on the list, deploys
    cluster.deploy_first("v1");
    let web = cluster
        .wait_status("web", Duration::from_secs(60), "web serving v1", |s| {
            s.image.as_deref() == Some("v1")
        })
        .await;
    assert_eq!(web.instances.len(), 1, "{web:?}");
}
