//! Playing one scenario, and its row in the matrix.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mentat_bus::{new_id, subject, Encoding};
use mentat_domain::command::{Control, Deploy, Outcome, StatusReply};
use mentat_domain::{Event, Reply};

use super::checks::{self, LogSummary, Served};
use super::traffic::Traffic;
use super::watch::Watch;
use super::{Component, Expected, Rollout, Scenario, Step, DOWN};
use crate::{web_config_health, Cluster, Db};

const HOST: &str = "web.localhost";
const REPLICAS: u32 = 3;

/// The longest a deployment may take to end after the kill; past it, it
/// is stuck.
const END_WITHIN: Duration = Duration::from_secs(300);

/// The longest PostgreSQL stays down waiting for the planner to notice.
const OUTAGE_WAIT: Duration = Duration::from_secs(10);

/// The service file: three replicas of mentat-demo-app that get ready
/// 300 ms after they start (so every batch lasts a while), tagged with
/// `CHAOS_RUN` so that their processes can be found; a bake of 2 s; the
/// strategy settings of every rollout (the deploy command picks one).
/// Latency is judged against 2 s rather than the default 500 ms: a loaded
/// 2-core machine must not turn a kill into a threshold breach.
fn config(tag: &str) -> String {
    web_config_health(
        REPLICAS,
        &format!(r#"CHAOS_RUN: "{tag}", READY_DELAY_MS: "300""#),
        "bake_secs: 2, thresholds: { window_secs: 1, min_requests: 5, latency_p99_ms: 2000 }",
        "strategy: rolling, max_unavailable: 1, health_timeout_secs: 20, auto_revert: true, \
         standby_secs: 3, steps: [{percent: 20, bake_secs: 2}, {percent: 50, bake_secs: 2}]",
    )
}

/// How a scenario went.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Every check held.
    Pass,
    /// A check failed (the first line of its message).
    Fail(String),
    /// The component cannot be killed yet.
    Unavailable(&'static str),
}

/// One line of the matrix.
#[derive(Debug, Clone)]
pub struct Row {
    /// The scenario.
    pub scenario: Scenario,
    /// How the deployment ended, when it did.
    pub outcome: Option<Outcome>,
    /// Requests answered and failed.
    pub served: Served,
    /// From the deploy command to the end of the deployment.
    pub time_to_end: Option<Duration>,
    /// What the log held.
    pub log: LogSummary,
    /// For a PostgreSQL kill: whether the planner reported the log
    /// unavailable before the server was started again.
    pub outage_seen: Option<bool>,
    /// The verdict.
    pub verdict: Verdict,
}

impl Row {
    /// Whether every check held (or the row could not be run yet).
    pub fn passed(&self) -> bool {
        !matches!(self.verdict, Verdict::Fail(_))
    }

    /// The row as a line of the Markdown matrix.
    pub fn to_markdown(&self) -> String {
        let expected = match self.scenario.expected() {
            Expected::Completed => "completed",
            Expected::Reverted => "reverted (abort)",
        };
        if let Verdict::Unavailable(why) = self.verdict {
            return format!(
                "| {} | {expected} | – | – | – | – | – | {why} |",
                self.scenario
            );
        }
        let outcome = self.outcome.map_or("–", Outcome::as_str);
        let down = self
            .served
            .router_down
            .map_or("–".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()));
        let time = self
            .time_to_end
            .map_or("–".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()));
        let result = match &self.verdict {
            Verdict::Pass => format!(
                "pass ({} events, {} facts, {} commands{})",
                self.log.events,
                self.log.facts,
                self.log.commands,
                match self.outage_seen {
                    Some(true) => "; the planner reported the log unavailable",
                    Some(false) => "; the planner did not notice the outage",
                    None => "",
                }
            ),
            Verdict::Fail(why) => format!("**FAIL**: {}", why.replace('|', "\\|")),
            Verdict::Unavailable(why) => (*why).to_owned(),
        };
        format!(
            "| {} | {expected} | {outcome} | {} | {} | {down} | {time} | {result} |",
            self.scenario, self.served.ok, self.served.failed
        )
    }
}

/// What the scenario found so far, kept when a check fails later.
#[derive(Debug, Default, Clone)]
struct Found {
    outcome: Option<Outcome>,
    served: Served,
    time_to_end: Option<Duration>,
    log: LogSummary,
    outage_seen: Option<bool>,
}

/// Play `scenario` on a fresh cluster and return its row. A failed check
/// is a [`Verdict::Fail`] (its full message and the services' logs are
/// printed on stderr by the panic hook), not a panic of the caller.
pub async fn run(scenario: Scenario) -> Row {
    let row = |found: Found, verdict| Row {
        scenario,
        outcome: found.outcome,
        served: found.served,
        time_to_end: found.time_to_end,
        log: found.log,
        outage_seen: found.outage_seen,
        verdict,
    };
    let found = Arc::new(Mutex::new(Found::default()));
    let result = tokio::spawn(play(scenario, found.clone())).await;
    let found = found.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let verdict = match result {
        Ok(()) => Verdict::Pass,
        Err(e) => {
            let message = match e.try_into_panic() {
                Ok(panic) => panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "panicked".to_owned()),
                Err(e) => e.to_string(),
            };
            Verdict::Fail(
                message
                    .lines()
                    .next()
                    .unwrap_or("")
                    .chars()
                    .take(300)
                    .collect(),
            )
        }
    };
    let row = row(found, verdict);
    println!("{}", row.to_markdown());
    row
}

async fn play(scenario: Scenario, found: Arc<Mutex<Found>>) {
    let note = |f: &dyn Fn(&mut Found)| f(&mut found.lock().unwrap_or_else(|p| p.into_inner()));
    let mut cluster = match scenario.component {
        Component::NatsNode => Cluster::start_on_nats_cluster(Db::PrivatePostgres).await,
        _ => Cluster::start(Db::PrivatePostgres).await,
    };
    if scenario.component == Component::LeadingPlanner {
        cluster.start_service("standby");
        wait_for_standby(&cluster).await;
    }
    let tag = cluster
        .path()
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a data directory name")
        .to_owned();
    cluster.apply(&config(&tag));
    cluster.deploy_first("v1");
    let watch = Watch::start(cluster.bus.clone());
    let traffic = Traffic::start(cluster.router_addr(), HOST);
    let deploy_id = new_id();
    let sent = Instant::now();
    let id = deploy(&cluster, &deploy_id, scenario).await;
    let mut once = vec![(deploy_id.as_str(), "DeploymentStarted")];
    let abort_id = new_id();
    if scenario.step == Step::Revert {
        let moved_forward = |events: &[Event], traffic: &Traffic| match scenario.rollout {
            Rollout::Rolling => events
                .iter()
                .any(|e| matches!(e, Event::BatchCompleted { batch: 1, .. })),
            Rollout::BlueGreen => switched(events) && traffic.saw("v2"),
            Rollout::Canary => shifted(events, 1) && traffic.saw("v2"),
        };
        wait_for(
            &cluster,
            &watch,
            &traffic,
            &id,
            "moved forward",
            moved_forward,
        )
        .await;
        abort(&cluster, &abort_id).await;
        once.push((abort_id.as_str(), "DeploymentReverting"));
    }
    let step = move |events: &[Event], traffic: &Traffic| reached(scenario, events, traffic);
    wait_for(&cluster, &watch, &traffic, &id, "the step", step).await;
    let killed = Instant::now();
    let node = kill(&mut cluster, scenario.component);
    tokio::time::sleep(DOWN).await;
    if scenario.component == Component::Postgres {
        let seen = outage_seen(&cluster).await;
        note(&|f| f.outage_seen = Some(seen));
    }
    let restarted = Instant::now();
    restart(&mut cluster, scenario.component, node);

    let record = cluster.wait_deployment("web", &id, END_WITHIN).await;
    if std::env::var_os("MENTAT_CHAOS_LOGS").is_some() {
        eprintln!("--- {scenario} ---\n{}", cluster.logs());
    }
    let time_to_end = record
        .ended_at_ms
        .map(|end| Duration::from_millis((end - record.started_at_ms).max(0) as u64));
    note(&|f| {
        f.outcome = Some(record.outcome);
        f.time_to_end = time_to_end.or(Some(sent.elapsed()));
    });
    let ended = format!(
        "the deployment ended {} ({}), expected {}",
        record.outcome.as_str(),
        record.failure.as_deref().unwrap_or("no reason given"),
        match scenario.expected() {
            Expected::Completed => "completed",
            Expected::Reverted => "reverted by the abort",
        }
    );
    let image = match scenario.expected() {
        Expected::Completed => {
            assert!(
                record.outcome == Outcome::Completed,
                "{ended}\n{record:?}\n{}",
                cluster.logs()
            );
            "v2"
        }
        Expected::Reverted => {
            let why = record.failure.clone().unwrap_or_default();
            assert!(
                record.outcome == Outcome::Reverted && why.contains("aborted by chaos"),
                "{ended}\n{record:?}\n{}",
                cluster.logs()
            );
            "v1"
        }
    };
    checks::replicas_match(&cluster, &tag, image, REPLICAS as usize).await;
    let answers = traffic.stop().await;
    let router_killed = (scenario.component == Component::Router).then_some((killed, restarted));
    let served = checks::traffic(&answers, router_killed);
    note(&|f| f.served = served);
    let log = checks::log(&cluster, &once).await;
    note(&|f| f.log = log);
}

/// Send the deploy of `v2` with the scenario's strategy; its deployment id.
async fn deploy(cluster: &Cluster, command_id: &str, scenario: Scenario) -> String {
    let deploy = Deploy {
        command_id: Some(command_id.to_owned()),
        signature: None,
        service: "web".into(),
        image: "v2".into(),
        strategy: Some(scenario.rollout.strategy()),
        override_rollout: false,
        actor: Some("chaos".into()),
        reason: Some(scenario.to_string()),
    };
    let reply: Reply = cluster
        .bus
        .request(
            &subject::command("deploy"),
            &deploy,
            Encoding::MsgPack,
            Duration::from_secs(10),
        )
        .await
        .expect("a reply to deploy");
    match reply {
        Reply::Accepted {
            deployment_id: Some(id),
            ..
        } => id,
        other => panic!("deploy v2 not accepted: {other:?}"),
    }
}

/// Abort the deployment in flight.
async fn abort(cluster: &Cluster, command_id: &str) {
    let abort = Control {
        command_id: Some(command_id.to_owned()),
        signature: None,
        service: "web".into(),
        actor: Some("chaos".into()),
        reason: Some("chaos revert".into()),
    };
    let reply: Reply = cluster
        .bus
        .request(
            &subject::command("abort"),
            &abort,
            Encoding::MsgPack,
            Duration::from_secs(10),
        )
        .await
        .expect("a reply to abort");
    assert!(
        matches!(reply, Reply::Accepted { .. }),
        "abort not accepted: {reply:?}"
    );
}

/// Whether the deployment whose events are `events` has reached the
/// scenario's step (see [`Step`]).
fn reached(scenario: Scenario, events: &[Event], traffic: &Traffic) -> bool {
    match (scenario.step, scenario.rollout) {
        (Step::Start, _) => !events.is_empty(),
        (Step::MidBatch, Rollout::Rolling) => replica_of_batch_started(events, 2),
        (Step::MidBatch, _) => replica_of_batch_started(events, 1),
        (Step::Switch, Rollout::Rolling) => new_replica_routed(events),
        (Step::Switch, Rollout::BlueGreen) => switched(events),
        (Step::Switch, Rollout::Canary) => shifted(events, 2),
        (Step::Wait, Rollout::Rolling) => events
            .iter()
            .any(|e| matches!(e, Event::BakeStarted { .. })),
        (Step::Wait, Rollout::BlueGreen) => switched(events) && traffic.saw("v2"),
        (Step::Wait, Rollout::Canary) => shifted(events, 1) && traffic.saw("v2"),
        (Step::Revert, Rollout::Rolling) => events
            .iter()
            .skip_while(|e| !matches!(e, Event::DeploymentReverting { .. }))
            .any(|e| matches!(e, Event::BatchStarted { image, .. } if image == "v1")),
        (Step::Revert, _) => events
            .iter()
            .any(|e| matches!(e, Event::DeploymentReverting { .. })),
    }
}

/// A replica that batch `n` starts has reported `ReplicaStarted`.
fn replica_of_batch_started(events: &[Event], n: u32) -> bool {
    let Some(start) = events.iter().find_map(|e| match e {
        Event::BatchStarted { batch, start, .. } if *batch == n => Some(start),
        _ => None,
    }) else {
        return false;
    };
    events
        .iter()
        .any(|e| matches!(e, Event::ReplicaStarted { replica, .. } if start.contains(replica)))
}

/// A routing change has put a replica of batch 1 in rotation.
fn new_replica_routed(events: &[Event]) -> bool {
    let Some(start) = events.iter().find_map(|e| match e {
        Event::BatchStarted {
            batch: 1, start, ..
        } => Some(start),
        _ => None,
    }) else {
        return false;
    };
    events.iter().any(|e| match e {
        Event::RouteChanged { backends, .. } => backends
            .iter()
            .any(|b| start.contains(&b.replica) && b.weight > 0),
        _ => false,
    })
}

fn switched(events: &[Event]) -> bool {
    events
        .iter()
        .any(|e| matches!(e, Event::TrafficSwitched { .. }))
}

fn shifted(events: &[Event], n: u32) -> bool {
    events
        .iter()
        .any(|e| matches!(e, Event::TrafficShifted { step, .. } if *step == n))
}

/// Poll the events of deployment `id` and the load until `ready` holds.
async fn wait_for(
    cluster: &Cluster,
    watch: &Watch,
    traffic: &Traffic,
    id: &str,
    what: &str,
    ready: impl Fn(&[Event], &Traffic) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let events = watch.deployment(id);
        if ready(&events, traffic) {
            return;
        }
        let names: Vec<&str> = events.iter().map(Event::type_name).collect();
        assert!(
            Instant::now() < deadline,
            "{what} was never reached; events so far: {names:?}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// With PostgreSQL down: wait until the planner reports its log
/// unavailable (it does on its next append), for at most
/// [`OUTAGE_WAIT`]; whether it did.
async fn outage_seen(cluster: &Cluster) -> bool {
    let deadline = Instant::now() + OUTAGE_WAIT;
    while Instant::now() < deadline {
        if let Ok(StatusReply::Ok {
            log_unavailable_since_ms: Some(_),
            ..
        }) = cluster.status_query(None).await
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// SIGKILL the component.
/// Kill the component; for a NATS node, which one (the planner's).
fn kill(cluster: &mut Cluster, component: Component) -> Option<usize> {
    match (component, component.service()) {
        (_, Some(service)) => cluster.kill(service),
        (Component::NatsNode, None) => {
            let node = cluster.nats_serving("mentat-planner").unwrap_or(0);
            tokio::task::block_in_place(|| cluster.nats_node(node).stop());
            return Some(node);
        }
        (_, None) => {
            let pg = cluster.pg_server.as_mut().expect("a private PostgreSQL");
            tokio::task::block_in_place(|| pg.kill());
        }
    }
    None
}

/// Wait until the standby planner has announced itself to the leader.
async fn wait_for_standby(cluster: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mentat_domain::command::StatusReply::Ok {
            planners: Some(p), ..
        }) = cluster.status_query(None).await
        {
            if p.standbys.iter().any(|s| s == "standby") {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the standby planner never announced itself"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Start the component again.
fn restart(cluster: &mut Cluster, component: Component, node: Option<usize>) {
    match (component.service(), node) {
        (Some(service), _) => cluster.start_service(service),
        (None, Some(node)) => tokio::task::block_in_place(|| cluster.nats_node(node).restart()),
        (None, None) => {
            let pg = cluster.pg_server.as_mut().expect("a private PostgreSQL");
            tokio::task::block_in_place(|| pg.restart());
        }
    }
}
