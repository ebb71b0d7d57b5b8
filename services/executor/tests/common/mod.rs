//! Fixtures for the executor's tests: a real nats-server, the executor run
//! in-process on a temporary data directory, and helpers to publish intents
//! and wait for facts.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use mentat_bus::codec::{self, Encoding};
use mentat_bus::{subject, Bus};
use mentat_domain::event::{Event, EventEnvelope, Fact, Meta, SCHEMA_VERSION};
use mentat_domain::spec::{HealthSpec, RunSpec};
use mentat_executor::Config;
use mentat_runtime::Shutdown;
use mentat_testkit::NatsServer;
use tempfile::TempDir;
use tokio::task::JoinHandle;

/// How long a test waits for any one fact.
pub const WAIT: Duration = Duration::from_secs(15);

/// A nats-server, a bus client listening to every fact, and a data directory.
pub struct Harness {
    pub nats: NatsServer,
    pub bus: Bus,
    facts: async_nats::Subscriber,
    pub dir: TempDir,
    position: i64,
}

/// An executor running in-process.
pub struct Running {
    pub shutdown: Shutdown,
    pub task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Cancel it and wait for `run` to return.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("executor did not stop in time")
            .expect("executor task panicked")
            .expect("executor failed");
    }
}

impl Harness {
    pub async fn new() -> Self {
        let nats = NatsServer::start();
        let bus = Bus::connect(&nats.url(), "test", Duration::from_secs(10))
            .await
            .unwrap();
        let facts = bus.client.subscribe(subject::FACT_ALL).await.unwrap();
        Harness {
            nats,
            bus,
            facts,
            dir: tempfile::tempdir().unwrap(),
            position: 0,
        }
    }

    /// A fast configuration for `host`: 1 s grace, 50 ms heartbeats.
    pub fn config(&self, host: &str) -> Config {
        let mut c = Config::new(self.nats.url(), host, self.dir.path().to_path_buf());
        c.stop_grace_secs = 1;
        c.heartbeat_ms = 50;
        c
    }

    /// Directory of `host`'s executor files.
    pub fn host_dir(&self, host: &str) -> PathBuf {
        self.dir.path().join("executor").join(host)
    }

    /// Run an executor and wait for its first heartbeat: by then its intent
    /// consumer exists.
    pub async fn start(&self, config: Config) -> Running {
        let mut beats = self
            .bus
            .client
            .subscribe(subject::heartbeat(&config.host_id))
            .await
            .unwrap();
        let shutdown = Shutdown::new();
        let task = tokio::spawn(mentat_executor::run(config, shutdown.clone()));
        let beat = tokio::time::timeout(WAIT, beats.next()).await;
        assert!(
            matches!(beat, Ok(Some(_))),
            "no heartbeat from the executor"
        );
        Running { shutdown, task }
    }

    /// Publish an event the way the planner's relay does.
    pub async fn publish_event(&mut self, event: Event) {
        self.position += 1;
        let stream = event.stream().unwrap_or_else(|| "web".into());
        let envelope = EventEnvelope {
            id: mentat_bus::new_id(),
            position: self.position,
            stream: stream.clone(),
            version: self.position,
            schema_version: SCHEMA_VERSION,
            recorded_at_ms: mentat_bus::now_ms(),
            meta: Meta::default(),
            event,
        };
        let subject = subject::event(&stream, envelope.event.type_name());
        self.bus
            .publish_durable(subject, &envelope.id, &envelope)
            .await
            .unwrap();
    }

    /// Ask `host` to start `replica` of service `web` running `command`.
    pub async fn start_replica(&mut self, host: &str, replica: &str, command: &[&str]) {
        self.publish_event(start_requested(host, replica, command))
            .await;
    }

    /// Ask `host` to stop `replica`.
    pub async fn stop_replica(&mut self, host: &str, replica: &str) {
        self.publish_event(Event::ReplicaStopRequested {
            replica: replica.into(),
            service: "web".into(),
            host: host.into(),
            reason: "test".into(),
        })
        .await;
    }

    /// The next fact, whatever it is.
    pub async fn next_fact(&mut self) -> Event {
        let msg = tokio::time::timeout(WAIT, self.facts.next())
            .await
            .expect("no fact in time")
            .expect("fact subscription ended");
        let fact: Fact =
            codec::decode(&msg.payload, Encoding::of(msg.headers.as_ref()), "Fact").unwrap();
        fact.event
    }

    /// No fact arrives within `window`.
    pub async fn assert_no_fact(&mut self, window: Duration) {
        if let Ok(Some(msg)) = tokio::time::timeout(window, self.facts.next()).await {
            let fact: Fact =
                codec::decode(&msg.payload, Encoding::of(msg.headers.as_ref()), "Fact").unwrap();
            panic!("unexpected fact {:?}", fact.event);
        }
    }
}

/// A start request for `replica` of service `web`.
pub fn start_requested(host: &str, replica: &str, command: &[&str]) -> Event {
    Event::ReplicaStartRequested {
        replica: replica.into(),
        service: "web".into(),
        host: host.into(),
        image: "v1".into(),
        run: RunSpec {
            command: command.iter().map(|s| s.to_string()).collect(),
            args: vec![],
            env: Default::default(),
        },
        health: HealthSpec::default(),
        deployment_id: None,
        spawned: false,
    }
}

/// True while `/proc/<pid>` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    mentat_executor::process::stat(pid).is_some_and(|s| !matches!(s.state, 'Z' | 'X'))
}

/// Wait until `pid` is gone.
pub async fn wait_gone(pid: u32) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while alive(pid) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "pid {pid} still alive"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
