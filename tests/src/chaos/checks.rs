//! What must hold after every scenario, whatever was killed.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use mentat_bus::{codec, streams, Encoding};
use mentat_domain::{Event, Fact};
use mentat_store::Store;
use serde::Deserialize;

use super::traffic::Answer;
use crate::Cluster;

/// The processes of a cluster's replicas, found by the `CHAOS_RUN` tag in
/// their environment: address (`127.0.0.1:PORT`) → (pid, version).
pub fn live_replicas(tag: &str) -> BTreeMap<String, (u32, String)> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    let marker = format!("CHAOS_RUN={tag}");
    for pid in entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let vars: Vec<String> = environ
            .split(|b| *b == 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        if !vars.contains(&marker) || is_zombie(pid) {
            continue;
        }
        let var = |name: &str| {
            vars.iter()
                .find_map(|v| v.strip_prefix(&format!("{name}=")).map(str::to_owned))
                .unwrap_or_default()
        };
        out.insert(
            format!("127.0.0.1:{}", var("PORT")),
            (pid, var("APP_VERSION")),
        );
    }
    out
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 1..];
            rest.split_whitespace().next().map(|state| state == "Z")
        })
        .unwrap_or(true)
}

/// The replicas the log says run: the last `ReplicaStarted` of each
/// replica not followed by its `ReplicaExited` (replica → address).
pub fn running_per_log(events: &[Event]) -> BTreeMap<String, String> {
    let mut running = BTreeMap::new();
    for event in events {
        match event {
            Event::ReplicaStarted { replica, addr, .. } => {
                running.insert(replica.clone(), addr.clone());
            }
            Event::ReplicaExited { replica, .. } => {
                running.remove(replica);
            }
            _ => {}
        }
    }
    running
}

/// Wait until the service has settled (no deployment, every replica of
/// the status healthy) and then check that the log, the planner's status
/// and the live processes name the same `replicas` replicas, all running
/// `image`.
pub async fn replicas_match(cluster: &Cluster, tag: &str, image: &str, replicas: usize) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let status = cluster.status("web").await;
        let log = running_per_log(&cluster.events("web").await);
        let procs = live_replicas(tag);
        let per_status: BTreeMap<String, (String, String, String)> = status
            .instances
            .iter()
            .map(|i| {
                (
                    i.replica.clone(),
                    (
                        i.addr.clone().unwrap_or_default(),
                        i.image.clone(),
                        i.phase.clone(),
                    ),
                )
            })
            .collect();
        let log_addrs: Vec<&String> = log.values().collect();
        let proc_addrs: Vec<&String> = procs.keys().collect();
        let mut status_addrs: Vec<&String> = per_status.values().map(|(a, _, _)| a).collect();
        status_addrs.sort();
        let mut sorted_log = log_addrs.clone();
        sorted_log.sort();
        let settled = status.deployment.is_none()
            && per_status
                .values()
                .all(|(_, i, p)| i == image && p == "healthy")
            && procs.values().all(|(_, v)| v == image);
        if settled
            && log.len() == replicas
            && sorted_log == proc_addrs
            && status_addrs == proc_addrs
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replicas: the log, the status and the processes disagree, or are not {replicas} \
             healthy replicas of {image}, 90 s after the deployment ended\n\
             log (replica → address): {log:?}\n\
             status (replica → address, image, phase): {per_status:?}\n\
             processes (address → pid, version): {procs:?}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The load's answers, placed around the router's downtime.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Served {
    /// Requests answered 200.
    pub ok: u64,
    /// Requests not answered 200.
    pub failed: u64,
    /// For a router kill: from the kill to the first answer after it.
    pub router_down: Option<Duration>,
}

/// Check the answers: every request answered 200; when the router was
/// killed (`router`: killed at, started again at), failures only from the
/// kill to the first answer after the restart, and every request after
/// that answered.
pub fn traffic(answers: &[Answer], router: Option<(Instant, Instant)>) -> Served {
    let ok = answers.iter().filter(|a| a.status == 200).count() as u64;
    let failed = answers.len() as u64 - ok;
    let failures = |list: &[Answer]| -> Vec<String> {
        list.iter()
            .filter(|a| a.status != 200)
            .take(5)
            .map(|a| format!("{}: {}", a.status, a.body))
            .collect()
    };
    assert!(
        ok > 100,
        "too few requests to prove anything: {ok} answered"
    );
    let Some((killed, restarted)) = router else {
        assert_eq!(
            failed,
            0,
            "{failed} requests not answered 200 (router never down), first: {:?}",
            failures(answers)
        );
        return Served {
            ok,
            failed,
            router_down: None,
        };
    };
    let before = answers.iter().take_while(|a| a.at < killed).count();
    assert!(
        answers[..before].iter().all(|a| a.status == 200),
        "requests failed before the router was killed: {:?}",
        failures(&answers[..before])
    );
    // The first answer from the new process: the old one is dead by then.
    let back = answers
        .iter()
        .position(|a| a.at >= restarted && a.status == 200)
        .expect("the router never answered again after its restart");
    let after = &answers[back..];
    assert!(
        after.iter().all(|a| a.status == 200),
        "requests failed after the restarted router had answered again: {:?}",
        failures(after)
    );
    assert!(
        after.len() > 100,
        "too few requests after the router's restart to prove anything: {}",
        after.len()
    );
    Served {
        ok,
        failed,
        router_down: Some(answers[back].at.duration_since(killed)),
    }
}

/// What the log holds, once checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogSummary {
    /// Events in the verified chain.
    pub events: i64,
    /// Facts published on the bus, each in the log once.
    pub facts: usize,
    /// Commands published on the bus, each recorded.
    pub commands: usize,
}

/// Just the id of a command, whatever its verb.
#[derive(Deserialize)]
struct CommandId {
    #[serde(default)]
    command_id: Option<String>,
}

/// Once the planner has taken every command and fact published so far,
/// check the log: its hash chain verifies; no event id appears twice;
/// every fact is an event with its own id and is recorded as such in
/// `commands`; every command id is in `commands`; `once` names commands
/// whose decision must appear exactly once (command id → event type).
pub async fn log(cluster: &Cluster, once: &[(&str, &str)]) -> LogSummary {
    let commands = consumed(cluster, streams::COMMANDS, "planner-commands").await;
    let facts = consumed(cluster, streams::FACTS, "planner-facts").await;
    let store = Store::open(&cluster.database_url)
        .await
        .expect("open the log");
    let verified = store
        .verify()
        .await
        .unwrap_or_else(|e| panic!("the log does not verify: {e}"));
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut caused: HashMap<(String, String), usize> = HashMap::new();
    let mut after = 0;
    loop {
        let page = store.read_all(after, 1000).await.expect("read the log");
        let Some(last) = page.last() else { break };
        after = last.position;
        for e in page {
            *ids.entry(e.id.clone()).or_default() += 1;
            let meta: serde_json::Value = serde_json::from_str(&e.metadata).unwrap_or_default();
            if let Some(cause) = meta.get("causation_id").and_then(|c| c.as_str()) {
                *caused
                    .entry((cause.to_owned(), e.event_type.clone()))
                    .or_default() += 1;
            }
        }
    }
    let repeated: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "event ids repeated: {repeated:?}");
    let mut fact_count = 0;
    for (payload, encoding) in &facts {
        let fact: Fact = codec::decode(payload, *encoding, "Fact").expect("a fact");
        assert_eq!(
            ids.get(&fact.id).copied().unwrap_or(0),
            1,
            "fact {} ({}) must be in the log exactly once",
            fact.id,
            fact.event.type_name()
        );
        let recorded = store
            .command_outcome(&fact.id)
            .await
            .expect("read commands");
        assert_eq!(
            recorded.as_deref(),
            Some("fact"),
            "fact {} recorded",
            fact.id
        );
        fact_count += 1;
    }
    let mut command_count = 0;
    for (payload, encoding) in &commands {
        let cmd: CommandId = codec::decode(payload, *encoding, "command").expect("a command");
        let id = cmd
            .command_id
            .expect("every command of the suite has an id");
        let recorded = store.command_outcome(&id).await.expect("read commands");
        assert!(recorded.is_some(), "command {id} is not in `commands`");
        command_count += 1;
    }
    for (id, event_type) in once {
        let n = caused
            .get(&((*id).to_owned(), (*event_type).to_owned()))
            .copied()
            .unwrap_or(0);
        assert_eq!(n, 1, "command {id}: {n} × {event_type} in the log, not 1");
    }
    store.close().await;
    LogSummary {
        events: verified.events,
        facts: fact_count,
        commands: command_count,
    }
}

/// Wait until the planner's durable consumer `consumer` has acknowledged
/// every message `stream` held when asked, and return those messages.
async fn consumed(
    cluster: &Cluster,
    stream: &'static str,
    consumer: &str,
) -> Vec<(bytes::Bytes, Encoding)> {
    let js = &cluster.bus.js;
    let handle = retrying("the stream", || js.get_stream(stream)).await;
    let last = handle.cached_info().state.last_sequence;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let info = retrying("consumer info", || handle.consumer_info(consumer)).await;
        if info.ack_floor.stream_sequence >= last {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the planner has not taken every message of {stream} within 60 s: \
             acknowledged up to {} of {last}\n{}",
            info.ack_floor.stream_sequence,
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut out = Vec::new();
    for seq in 1..=last {
        let msg = retrying(&format!("{stream} message {seq}"), || {
            handle.get_raw_message(seq)
        })
        .await;
        let encoding = Encoding::of(Some(&msg.headers));
        out.push((msg.payload, encoding));
    }
    out
}

/// The answer of a JetStream API request, asked again for up to 30 s: just
/// after a NATS node was killed, a request can time out while the stream
/// elects a new leader, and the check only observes.
async fn retrying<T, E, F, Fut>(what: &str, mut request: F) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match request().await {
            Ok(answer) => return answer,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` answers with `status`, 5 ms apart from `from`.
    fn answers(from: Instant, n: usize, status: u16) -> Vec<Answer> {
        (0..n)
            .map(|i| Answer {
                at: from + Duration::from_millis(5 * i as u64),
                status,
                body: if status == 200 { "v1" } else { "connect" }.to_owned(),
            })
            .collect()
    }

    #[test]
    fn failures_are_allowed_only_while_the_router_is_down() {
        // Given 200 answers, a kill, 10 failures, a restart, 200 answers
        let t0 = Instant::now();
        let killed = t0 + Duration::from_secs(1);
        let restarted = killed + Duration::from_millis(100);
        let mut all = answers(t0, 200, 200);
        all.extend(answers(killed, 10, 0));
        all.extend(answers(restarted, 200, 200));
        // When they are checked with the router's downtime
        let served = traffic(&all, Some((killed, restarted)));
        // Then the failures are counted, and the downtime runs to the first answer
        assert_eq!((served.ok, served.failed), (400, 10));
        assert_eq!(served.router_down, Some(Duration::from_millis(100)));
    }

    #[test]
    #[should_panic(expected = "after the restarted router had answered again")]
    fn a_failure_after_the_router_answered_again_fails() {
        let t0 = Instant::now();
        let restarted = t0 + Duration::from_secs(2);
        let mut all = answers(t0, 200, 200);
        all.extend(answers(restarted, 150, 200));
        all.extend(answers(restarted + Duration::from_secs(1), 1, 0));
        all.extend(answers(restarted + Duration::from_secs(2), 150, 200));
        traffic(&all, Some((t0 + Duration::from_secs(1), restarted)));
    }

    #[test]
    #[should_panic(expected = "router never down")]
    fn any_failure_fails_when_the_router_was_not_killed() {
        let t0 = Instant::now();
        let mut all = answers(t0, 200, 200);
        all.extend(answers(t0 + Duration::from_secs(2), 1, 502));
        traffic(&all, None);
    }

    #[test]
    fn the_log_says_a_replica_runs_until_it_exits() {
        let started = |replica: &str, addr: &str| Event::ReplicaStarted {
            replica: replica.into(),
            service: "web".into(),
            host: "h".into(),
            pid: 1,
            addr: addr.into(),
            health: Default::default(),
        };
        let exited = Event::ReplicaExited {
            replica: "web-1".into(),
            service: "web".into(),
            host: "h".into(),
            status: mentat_domain::event::ExitStatus {
                code: Some(0),
                signal: None,
            },
            requested: true,
            reason: None,
        };
        let events = [
            started("web-1", "a:1"),
            started("web-2", "a:2"),
            exited,
            // re-published by a restarted executor that re-adopted it
            started("web-2", "a:2"),
        ];
        let running = running_per_log(&events);
        assert_eq!(
            running,
            BTreeMap::from([("web-2".to_owned(), "a:2".to_owned())])
        );
    }
}
