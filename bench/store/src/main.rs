//! Throughput of the event log on SQLite and PostgreSQL.
//!
//! For each backend, on a fresh log:
//!
//! 1. **append 1/tx**: one event per append (one transaction, one commit
//!    with fsync), for [`SINGLE_BUDGET`] or [`SINGLE_MAX`] events;
//! 2. **append 100/tx**: [`BATCH`] events per append, for [`BATCHED_BUDGET`]
//!    or [`BATCHED_MAX`] events;
//! 3. **replay**: `read_all` over the whole log in pages of [`PAGE`];
//! 4. **verify**: recompute the whole hash chain.
//!
//! Every append carries a command record, as the planner's do, and a
//! realistic payload and metadata (~160 bytes of JSON each). SQLite runs on
//! a temporary file, PostgreSQL on a fresh database from
//! `MENTAT_TEST_PG_URL` (default local server).
//! Prints a markdown table of events per second.
//!
//! Run: `cargo run --release -p mentat-bench-store`

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use mentat_store::{CommandRecord, ExpectedVersion, NewEvent, Store};
use mentat_testkit::PgDatabase;

const SINGLE_BUDGET: Duration = Duration::from_secs(5);
const SINGLE_MAX: u64 = 20_000;
const BATCH: u64 = 100;
const BATCHED_BUDGET: Duration = Duration::from_secs(8);
const BATCHED_MAX: u64 = 50_000;
const PAGE: i64 = 1_000;
/// Appends rotate over this many streams, like services in flight.
const STREAMS: u64 = 16;

/// Events per second for one backend.
struct Figures {
    backend: &'static str,
    single: Rate,
    batched: Rate,
    replay: Rate,
    verify: Rate,
}

/// `events` handled in `elapsed`.
struct Rate {
    events: u64,
    elapsed: Duration,
}

impl Rate {
    fn per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let dir = tempfile::tempdir().context("temporary directory")?;
    let sqlite_url = format!("sqlite://{}/bench.db", dir.path().display());
    let sqlite = measure("SQLite (WAL, file)", &sqlite_url).await?;

    let pg = PgDatabase::create().await;
    let postgres = measure("PostgreSQL 15", &pg.url).await?;

    print_table(&[sqlite, postgres]);
    Ok(())
}

async fn measure(backend: &'static str, url: &str) -> Result<Figures> {
    eprintln!("{backend}: {url}");
    let store = Store::open(url).await.context("open the store")?;
    let single = append_for(&store, 1, SINGLE_BUDGET, SINGLE_MAX).await?;
    let batched = append_for(&store, BATCH, BATCHED_BUDGET, BATCHED_MAX).await?;
    let replay = replay(&store).await?;
    let started = Instant::now();
    let verified = store.verify().await.context("verify")?;
    let verify = Rate {
        events: u64::try_from(verified.events)?,
        elapsed: started.elapsed(),
    };
    store.close().await;
    Ok(Figures {
        backend,
        single,
        batched,
        replay,
        verify,
    })
}

/// Appends `per_tx` events per append until `budget` or `max` events.
async fn append_for(store: &Store, per_tx: u64, budget: Duration, max: u64) -> Result<Rate> {
    let started = Instant::now();
    let mut events = 0;
    while events < max && started.elapsed() < budget {
        let stream = format!("service-{}", events / per_tx % STREAMS);
        let batch: Vec<NewEvent> = (0..per_tx).map(|i| event(events + i)).collect();
        let command = CommandRecord {
            id: uuid::Uuid::now_v7().to_string(),
            outcome: r#"{"accepted":true}"#.into(),
        };
        store
            .append(&stream, ExpectedVersion::Any, Some(command), batch)
            .await
            .context("append")?;
        events += per_tx;
    }
    Ok(Rate {
        events,
        elapsed: started.elapsed(),
    })
}

/// Reads the whole log in pages, as a restarting planner does.
async fn replay(store: &Store) -> Result<Rate> {
    let head = store.head().await?;
    let started = Instant::now();
    let mut after = 0;
    loop {
        let page = store.read_all(after, PAGE).await.context("read_all")?;
        let Some(last) = page.last() else { break };
        after = last.position;
    }
    ensure!(after == head, "replay stopped at {after}, head is {head}");
    Ok(Rate {
        events: u64::try_from(head)?,
        elapsed: started.elapsed(),
    })
}

fn event(n: u64) -> NewEvent {
    NewEvent {
        id: uuid::Uuid::now_v7().to_string(),
        event_type: "ReplicaBecameHealthy".into(),
        schema_version: 1,
        payload: format!(
            r#"{{"deployment_id":"0190a5c4-5c1e-7000-8000-00000000abcd","service":"web","replica_id":"web-{n}","host":"host-{}","revision":"sha256:4f1c2a9e","checks_passed":3}}"#,
            n % 7
        ),
        metadata: r#"{"actor":"health-watcher","correlation_id":"0190a5c4-5c1e-7000-8000-00000000abcd","traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}"#.into(),
        recorded_at_ms: 1_700_000_000_000 + i64::try_from(n).unwrap_or(i64::MAX),
    }
}

fn print_table(rows: &[Figures]) {
    println!("| backend | append, 1 event/tx | append, {BATCH} events/tx | replay (read_all, pages of {PAGE}) | verify (hash chain) |");
    println!("|---|---:|---:|---:|---:|");
    for f in rows {
        println!(
            "| {} | {} | {} | {} | {} |",
            f.backend,
            cell(&f.single),
            cell(&f.batched),
            cell(&f.replay),
            cell(&f.verify)
        );
    }
}

fn cell(rate: &Rate) -> String {
    format!(
        "{:.0} ev/s ({} ev in {:.1} s)",
        rate.per_second(),
        rate.events,
        rate.elapsed.as_secs_f64()
    )
}
