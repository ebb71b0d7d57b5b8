//! The audit side's speed on a log of a million events (issue "Event-replay
//! audits", point 10), on SQLite and PostgreSQL.
//!
//! The log is made by the pure planner itself: the simulated cluster of the
//! domain's scenario tests (`shared/domain/tests/common`) deploys service
//! `web` (4 replicas, rolling) from image to image and answers every
//! intent; that history is repeated for `web2`, `web3`, ... until the log
//! holds `EVENTS` events (default 1,000,000). They are appended in
//! transactions of 1,000, then:
//!
//! 1. **replay**: the planner's own start, `Log::open_keeping`: every
//!    event read, decoded and folded into the world, a snapshot of it kept
//!    every 50,000 events;
//! 2. **verify**: `Store::verify`, the whole hash chain recomputed;
//! 3. **state --at**: `replay_until` the point just before a snapshot in
//!    the middle of the log (the most events to fold from the nearest one),
//!    with the snapshots the planner's start left, as every query has; and
//!    with none, for comparison.
//!
//! Run: `cargo run --release -p mentat-bench-log` (`EVENTS=N` for another
//! size, `BACKENDS=sqlite` or `postgres` for one of them).

#[path = "../../../shared/domain/tests/common/mod.rs"]
mod sim;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use mentat_domain::audit::StatePoint;
use mentat_planner::log::{replay_until, Log, Snapshots};
use mentat_store::{ExpectedVersion, NewEvent, Store};
use mentat_testkit::PgDatabase;

/// Events per append transaction.
const BATCH: usize = 1_000;

#[tokio::main]
async fn main() -> Result<()> {
    let events: usize = std::env::var("EVENTS")
        .ok()
        .map(|v| v.parse().context("EVENTS"))
        .transpose()?
        .unwrap_or(1_000_000);
    let backends = std::env::var("BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    let started = Instant::now();
    let log = generate(events)?;
    eprintln!(
        "generated {} events in {:.1} s",
        log.len(),
        started.elapsed().as_secs_f64()
    );
    let mut rows = Vec::new();
    let dir = tempfile::tempdir().context("temporary directory")?;
    if backends.contains("sqlite") {
        let url = format!("sqlite://{}/bench.db", dir.path().display());
        rows.push(measure("SQLite (WAL, file)", &url, &log).await?);
    }
    if backends.contains("postgres") {
        let pg = PgDatabase::create().await;
        rows.push(measure("PostgreSQL 15", &pg.url, &log).await?);
    }
    println!("| backend | events | replay (planner start) | verify | state --at, worst point | state --at, no snapshot |");
    println!("|---|---:|---:|---:|---:|---:|");
    for r in rows {
        println!("{r}");
    }
    Ok(())
}

/// One event to append: its stream and the event as the store takes it.
struct Entry {
    stream: String,
    event: NewEvent,
}

/// Events of one service's history, made by the pure planner; the log
/// repeats it for as many services as it takes.
const PER_SERVICE: usize = 20_000;

/// A log of `events` events: the pure planner deploying `web` from image
/// to image until its stream holds [`PER_SERVICE`] events, then the same
/// history for `web2`, `web3`, ... (names, replica and deployment ids
/// renamed, times moved on), until the log holds `events`. One simulated
/// service, not one long history: the simulation is quadratic in it.
fn generate(events: usize) -> Result<Vec<Entry>> {
    let mut sim = sim::Sim::new(4, 1);
    let mut image = 0u64;
    while sim.log.len() < PER_SERVICE.min(events) {
        image += 1;
        sim.deploy(&format!("v{image}")).expect("deploy accepted");
        sim.run(60);
        sim.now += 1_000;
    }
    let span = sim.now - sim.log[0].recorded_at_ms + 1_000;
    let mut log = Vec::with_capacity(events);
    for copy in 0.. {
        for e in &sim.log {
            if log.len() == events {
                return Ok(log);
            }
            if copy > 0 && e.stream == "_hosts" {
                continue;
            }
            let mut payload = serde_json::to_value(&e.event)?;
            let stream = if copy == 0 {
                e.stream.clone()
            } else {
                rename(&mut payload, copy);
                e.stream.replace("web", &format!("web{copy}"))
            };
            let n = log.len();
            log.push(Entry {
                stream,
                event: NewEvent {
                    id: format!("bench-{n}"),
                    event_type: e.event.type_name().to_owned(),
                    schema_version: e.schema_version,
                    payload: payload.to_string(),
                    metadata: serde_json::to_string(&e.meta)?,
                    recorded_at_ms: e.recorded_at_ms + span * copy,
                },
            });
        }
    }
    unreachable!("the loop returns once the log is full")
}

/// The same event for service `web{copy}`.
fn rename(value: &mut serde_json::Value, copy: i64) {
    use serde_json::Value;
    match value {
        Value::String(s) if s == "web" => *s = format!("web{copy}"),
        Value::String(s) if s.starts_with("web-") => {
            *s = s.replacen("web-", &format!("web{copy}-"), 1)
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rename(v, copy)),
        Value::Object(fields) => {
            for (key, v) in fields.iter_mut() {
                match v {
                    Value::String(id) if key == "deployment_id" => *id = format!("{id}-{copy}"),
                    _ => rename(v, copy),
                }
            }
        }
        _ => {}
    }
}

async fn measure(backend: &str, url: &str, log: &[Entry]) -> Result<String> {
    eprintln!("{backend}: {url}");
    let store = Store::open(url).await.context("open the store")?;
    let started = Instant::now();
    append(&store, log).await?;
    eprintln!(
        "{backend}: appended {} events in {:.1} s",
        log.len(),
        started.elapsed().as_secs_f64()
    );
    let head = store.head().await?;
    ensure!(
        head == log.len() as i64,
        "head {head}, {} events",
        log.len()
    );

    let (read, decode) = read_and_decode(&store, head).await?;
    eprintln!(
        "{backend}: read only {}, read and decode {}",
        rate(head, read),
        rate(head, decode)
    );
    // As the planner starts: the replay leaves the past-state snapshots.
    let snapshots = std::sync::Arc::new(std::sync::Mutex::new(Snapshots::default()));
    let started = Instant::now();
    let opened = Log::open_keeping(store.clone(), Some(snapshots.clone()))
        .await
        .context("replay")?;
    let replay = started.elapsed();
    ensure!(
        opened.world.position == head,
        "replayed to {}",
        opened.world.position
    );
    ensure!(
        opened.broken.is_empty(),
        "broken streams: {:?}",
        opened.broken
    );
    drop(opened);

    let started = Instant::now();
    let verified = store.verify().await.context("verify")?;
    let verify = started.elapsed();
    ensure!(verified.events == head, "verified {}", verified.events);

    // The worst point: just before the next snapshot.
    let point = StatePoint::Position(head / 2 + mentat_planner::log::SNAPSHOT_EVERY - 1);
    let started = Instant::now();
    replay_until(&store, point, &snapshots)
        .await
        .context("state at the middle")?;
    let first = started.elapsed();
    let none = std::sync::Mutex::new(Snapshots::default());
    let started = Instant::now();
    replay_until(&store, point, &none)
        .await
        .context("state with no snapshot")?;
    let cold = started.elapsed();
    store.close().await;
    Ok(format!(
        "| {backend} | {head} | {} | {} | {} | {} |",
        rate(head, replay),
        rate(head, verify),
        seconds(first),
        seconds(cold)
    ))
}

/// How long reading the whole log takes, and reading and decoding it,
/// without folding: where the replay's time goes.
async fn read_and_decode(store: &Store, head: i64) -> Result<(Duration, Duration)> {
    let mut times = [Duration::ZERO; 2];
    for (decode, time) in [false, true].into_iter().zip(&mut times) {
        let started = Instant::now();
        let mut after = 0;
        loop {
            let page = store.read_all(after, read_page()).await?;
            let Some(last) = page.last() else { break };
            after = last.position;
            if decode {
                for r in &page {
                    mentat_planner::log::envelope(r).map_err(anyhow::Error::msg)?;
                }
            }
        }
        ensure!(after == head, "read to {after}");
        *time = started.elapsed();
    }
    Ok((times[0], times[1]))
}

/// Append `log` in transactions of [`BATCH`], each run of one stream
/// together.
async fn append(store: &Store, log: &[Entry]) -> Result<()> {
    for chunk in log.chunks(BATCH) {
        let mut start = 0;
        while start < chunk.len() {
            let stream = &chunk[start].stream;
            let end = chunk[start..]
                .iter()
                .position(|e| &e.stream != stream)
                .map_or(chunk.len(), |n| start + n);
            let events = chunk[start..end].iter().map(|e| e.event.clone()).collect();
            store
                .append(stream, ExpectedVersion::Any, None, events)
                .await
                .context("append")?;
            start = end;
        }
    }
    Ok(())
}

fn rate(events: i64, elapsed: Duration) -> String {
    format!(
        "{:.0} ev/s ({:.2} s)",
        events as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    )
}

fn seconds(elapsed: Duration) -> String {
    format!("{:.3} s", elapsed.as_secs_f64())
}

/// Events per page of the read-only measurement (`READ_PAGE`, default
/// 1,000 as the planner reads).
fn read_page() -> i64 {
    std::env::var("READ_PAGE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000)
}
