//! Helpers for `bench/router/run.sh`:
//!
//! - `route <nats> <service> <addr>...`: publish one RouteChanged sending
//!   `<service>` to the backends at `<addr>` (equal weights).
//! - `apply <nats> <admin> <service> <addr> <n>`: publish `n` RouteChanged
//!   events, one every 10 ms, each with a different weight, then read the
//!   router's route-apply histogram from `http://<admin>/metrics` and print
//!   count, mean and p50/p90/p99/max bucket bounds.
//! - `idle <router> <host> <n> <hold_secs>`: open `n` keep-alive
//!   connections to the router, send one request on each, then hold them
//!   idle for `hold_secs`; prints `ready <n>` once all answered.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use mentat_bus::{subject, Bus};
use mentat_domain::event::Backend;
use mentat_domain::stats::{percentile_ms, LATENCY_BUCKETS};
use mentat_domain::{Event, EventEnvelope, Meta};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("route") if args.len() >= 4 => {
            let bus = Bus::connect(&args[1], "bench", Duration::from_secs(10)).await?;
            let backends = args[3..].iter().enumerate().map(|(i, a)| backend(i, a, 50)).collect();
            publish(&bus, &args[2], backends).await
        }
        Some("apply") if args.len() == 6 => apply(&args[1], &args[2], &args[3], &args[4], args[5].parse()?).await,
        Some("idle") if args.len() == 5 => idle(&args[1], &args[2], args[3].parse()?, args[4].parse()?).await,
        _ => bail!("usage: route <nats> <service> <addr>... | apply <nats> <admin> <service> <addr> <n> | idle <router> <host> <n> <hold_secs>"),
    }
}

fn backend(i: usize, addr: &str, weight: u32) -> Backend {
    Backend {
        replica: format!("r{i}"),
        addr: addr.to_owned(),
        image: "bench".into(),
        weight,
    }
}

async fn publish(bus: &Bus, service: &str, backends: Vec<Backend>) -> Result<()> {
    let id = mentat_bus::new_id();
    let envelope = EventEnvelope {
        id: id.clone(),
        position: 1,
        stream: service.to_owned(),
        version: 1,
        schema_version: mentat_domain::event::SCHEMA_VERSION,
        recorded_at_ms: mentat_bus::now_ms(),
        meta: Meta::default(),
        event: Event::RouteChanged {
            service: service.to_owned(),
            backends,
            route: Default::default(),
            switch: None,
        },
    };
    bus.publish_durable(subject::event(service, "RouteChanged"), &id, &envelope)
        .await?;
    Ok(())
}

async fn apply(nats: &str, admin: &str, service: &str, addr: &str, n: u32) -> Result<()> {
    let bus = Bus::connect(nats, "bench", Duration::from_secs(10)).await?;
    let before = route_apply(admin).await?;
    for i in 0..n {
        publish(&bus, service, vec![backend(0, addr, 1 + i % 100)]).await?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = route_apply(admin).await?;
    let buckets: Vec<u64> = after.0.iter().zip(&before.0).map(|(a, b)| a - b).collect();
    let count: u64 = buckets.iter().sum();
    let mean_ms = (after.1 - before.1) / count.max(1) as f64 * 1000.0;
    let max_bucket = buckets.iter().rposition(|n| *n > 0).unwrap_or(0);
    println!(
        "route changes applied: {count}/{n}; mean {mean_ms:.3} ms; p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms (interpolated in buckets); max <= {:.3} ms",
        percentile_ms(&buckets, 0.5),
        percentile_ms(&buckets, 0.9),
        percentile_ms(&buckets, 0.99),
        mentat_domain::stats::LATENCY_BUCKET_BOUNDS_US
            .get(max_bucket)
            .map_or(f64::INFINITY, |us| *us as f64 / 1000.0)
    );
    Ok(())
}

/// The route-apply histogram (per-bucket counts) and its sum in seconds.
async fn route_apply(admin: &str) -> Result<(Vec<u64>, f64)> {
    let text = http_get(admin, "/metrics").await?;
    let mut cumulative = Vec::new();
    let mut sum = 0.0;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("mentat_router_route_apply_seconds_bucket{") {
            let value = rest.rsplit(' ').next().context("bucket value")?;
            cumulative.push(value.parse::<u64>()?);
        } else if let Some(v) = line.strip_prefix("mentat_router_route_apply_seconds_sum ") {
            sum = v.parse()?;
        }
    }
    if cumulative.len() != LATENCY_BUCKETS {
        bail!("unexpected /metrics: {} apply buckets", cumulative.len());
    }
    let mut prev = 0;
    let buckets = cumulative
        .into_iter()
        .map(|c| {
            let n = c - prev;
            prev = c;
            n
        })
        .collect();
    Ok((buckets, sum))
}

async fn http_get(addr: &str, path: &str) -> Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

async fn idle(router: &str, host: &str, n: usize, hold_secs: u64) -> Result<()> {
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let mut conns = Vec::with_capacity(n);
    for chunk in 0..n.div_ceil(500) {
        let mut batch = Vec::new();
        for _ in (chunk * 500)..((chunk + 1) * 500).min(n) {
            let request = request.clone();
            let router = router.to_owned();
            batch.push(tokio::spawn(async move {
                let mut s = TcpStream::connect(&router).await?;
                s.write_all(request.as_bytes()).await?;
                let mut buf = [0u8; 4096];
                let got = s.read(&mut buf).await?;
                if !buf[..got].starts_with(b"HTTP/1.1 200") {
                    bail!(
                        "unexpected answer: {}",
                        String::from_utf8_lossy(&buf[..got])
                    );
                }
                Ok::<_, anyhow::Error>(s)
            }));
        }
        for b in batch {
            conns.push(b.await??);
        }
    }
    println!("ready {}", conns.len());
    tokio::time::sleep(Duration::from_secs(hold_secs)).await;
    drop(conns);
    Ok(())
}
