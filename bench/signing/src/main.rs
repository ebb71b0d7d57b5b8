//! What a signed command costs the planner.
//!
//! 1. **Verification path**, in process: the planner's intake of one
//!    `deploy` as `mt` sends it (MessagePack): `intake::decode`, then
//!    `intake::authorise` as the engine calls it, which for a signed one
//!    takes the canonical content's SHA-256 and verifies the Ed25519
//!    signature; unsigned and signed, [`ROUNDS`] times each, alternating.
//! 2. **End to end**: a real nats-server and the release `mentat-planner`
//!    (SQLite, no executor), with a `security:` block that lists the
//!    bench's key but does not require signatures, so that unsigned and
//!    signed deploys are both decided; [`REQUESTS`] of each, alternating,
//!    each timed from the request to the planner's reply. With no host
//!    alive every deploy is rejected `no_capacity` after it was
//!    authorised, decided and its command id recorded (one commit), so
//!    every round does the same work but for the signature.
//!
//! Prints both as a markdown table (median, p90, p99 per command, and the
//! difference of the medians).
//!
//! Run (from the workspace root, nats-server on PATH):
//! `cargo build --release -p mentat-planner -p mentat-bench-signing && target/release/mentat-bench-signing`

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use mentat_bus::{codec, subject, Bus, Encoding};
use mentat_domain::audit::{key_hex, SigningKey};
use mentat_domain::command::{Apply, Deploy, RejectKind, StatusQuery, StatusReply};
use mentat_domain::security::{self, Operator, Role, SecuritySpec, Trust};
use mentat_domain::spec::ServiceSpec;
use mentat_domain::Reply;
use mentat_planner::intake;
use mentat_testkit::NatsServer;

/// Commands through the verification path, of each kind.
const ROUNDS: usize = 20_000;
/// Deploys sent to the planner, of each kind.
const REQUESTS: usize = 500;

fn main() -> Result<()> {
    let key = SigningKey::from_bytes(&[7; 32]);
    let path = verification_path(&key)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let e2e = runtime.block_on(end_to_end(&key))?;
    println!("| measured | unsigned median | signed median | difference (median) | unsigned p90 / p99 | signed p90 / p99 |");
    println!("|---|---:|---:|---:|---:|---:|");
    row(&format!("verification path, {ROUNDS} deploys each"), &path);
    row(&format!("deploy request to reply, {REQUESTS} each"), &e2e);
    Ok(())
}

/// Durations of the unsigned and the signed rounds.
struct Pair {
    unsigned: Vec<Duration>,
    signed: Vec<Duration>,
}

fn row(what: &str, pair: &Pair) {
    let (u, s) = (summary(&pair.unsigned), summary(&pair.signed));
    println!(
        "| {what} | {} | {} | {} | {} / {} | {} / {} |",
        us(u[0]),
        us(s[0]),
        signed_diff(s[0], u[0]),
        us(u[1]),
        us(u[2]),
        us(s[1]),
        us(s[2]),
    );
}

fn signed_diff(signed: Duration, unsigned: Duration) -> String {
    let micros = signed.as_secs_f64() * 1e6 - unsigned.as_secs_f64() * 1e6;
    format!("{micros:+.1} µs")
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// Median, p90 and p99.
fn summary(samples: &[Duration]) -> [Duration; 3] {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let at = |q: f64| sorted[((sorted.len() as f64 - 1.0) * q).round() as usize];
    [at(0.5), at(0.9), at(0.99)]
}

/// A deploy as `mt` builds it.
fn deploy(id: usize) -> Deploy {
    Deploy {
        command_id: Some(format!("bench-{id:08}")),
        signature: None,
        service: "web".into(),
        image: format!("v{id}"),
        strategy: None,
        override_rollout: false,
        actor: Some("bench".into()),
        reason: Some("what a signature costs".into()),
    }
}

/// `deploy(id)` as a value, signed with `key` when given.
fn as_sent(id: usize, key: Option<&SigningKey>, at_ms: i64) -> Result<serde_json::Value> {
    let mut value = serde_json::to_value(deploy(id))?;
    if let Some(key) = key {
        let signature = security::sign(key, "deploy", &value, at_ms).context("a command id")?;
        value["signature"] = serde_json::to_value(signature)?;
    }
    Ok(value)
}

fn security_block(key: &SigningKey, required: bool) -> SecuritySpec {
    SecuritySpec {
        require_signed_commands: required,
        operators: vec![Operator {
            name: "bench".into(),
            key: key_hex(&key.verifying_key()),
            role: Role::Admin,
        }],
    }
}

/// The planner's intake of one command: decoded, then authorised as the
/// engine does; whether it was signed.
fn intake_once(payload: &[u8], trust: Trust<'_>, now_ms: i64) -> Result<bool> {
    let command = intake::decode("mentat.cmd.deploy", payload, Encoding::MsgPack)
        .map_err(|r| anyhow::anyhow!("{r}"))?;
    let (_, signed) = intake::authorise(trust, command, payload, Encoding::MsgPack, now_ms)
        .map_err(|r| anyhow::anyhow!("{r}"))?;
    Ok(signed.is_some())
}

fn verification_path(key: &SigningKey) -> Result<Pair> {
    let now_ms = 1_800_000_000_000;
    let block = security_block(key, false);
    let trust = Trust {
        current: Some(&block),
        admin_keys: &[],
    };
    let mut pair = Pair {
        unsigned: Vec::with_capacity(ROUNDS),
        signed: Vec::with_capacity(ROUNDS),
    };
    for i in 0..ROUNDS {
        let unsigned = codec::encode(&as_sent(i, None, now_ms)?, Encoding::MsgPack)?;
        let signed = codec::encode(&as_sent(i, Some(key), now_ms)?, Encoding::MsgPack)?;
        let started = Instant::now();
        ensure!(!intake_once(&unsigned, trust, now_ms)?, "unsigned");
        pair.unsigned.push(started.elapsed());
        let started = Instant::now();
        ensure!(intake_once(&signed, trust, now_ms)?, "signed");
        pair.signed.push(started.elapsed());
    }
    Ok(pair)
}

/// The release planner next to this binary, on `nats` and a SQLite log in `dir`.
fn start_planner(nats: &str, dir: &std::path::Path) -> Result<Child> {
    let exe = std::env::current_exe()?;
    let bin: PathBuf = exe.with_file_name("mentat-planner");
    ensure!(
        bin.exists(),
        "{} is not built: cargo build --release -p mentat-planner",
        bin.display()
    );
    let log = std::fs::File::create(dir.join("planner.log"))?;
    Ok(Command::new(bin)
        .args(["--nats", nats, "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?)
}

async fn request(bus: &Bus, verb: &str, value: &serde_json::Value) -> Result<Reply> {
    Ok(bus
        .request(
            &subject::command(verb),
            value,
            Encoding::MsgPack,
            Duration::from_secs(10),
        )
        .await?)
}

async fn end_to_end(key: &SigningKey) -> Result<Pair> {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir()?;
    let mut planner = start_planner(&nats.url(), dir.path())?;
    let result = measure(&nats.url(), key).await;
    let _ = planner.kill();
    let _ = planner.wait();
    result.with_context(|| {
        let log = std::fs::read_to_string(dir.path().join("planner.log")).unwrap_or_default();
        format!("planner log:\n{log}")
    })
}

async fn measure(url: &str, key: &SigningKey) -> Result<Pair> {
    let bus = Bus::connect(url, "bench", Duration::from_secs(10)).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let asked: Result<StatusReply, _> = bus
            .request(
                subject::QUERY_STATUS,
                &StatusQuery::default(),
                Encoding::MsgPack,
                Duration::from_secs(1),
            )
            .await;
        if matches!(asked, Ok(StatusReply::Ok { .. })) {
            break;
        }
        ensure!(Instant::now() < deadline, "the planner did not answer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let spec: ServiceSpec = serde_json::from_value(serde_json::json!({
        "name": "web", "replicas": 1, "run": {"command": ["mentat-demo-app"]}
    }))?;
    let apply = Apply {
        command_id: Some("bench-apply".into()),
        signature: None,
        services: vec![spec],
        cluster: None,
        security: Some(security_block(key, false)),
        notify: None,
        environments: None,
        source: None,
        actor: Some("bench".into()),
        reason: None,
    };
    let applied = request(&bus, "apply", &serde_json::to_value(apply)?).await?;
    if applied.rejection_kind().is_some() {
        bail!("apply: {applied:?}");
    }
    let mut pair = Pair {
        unsigned: Vec::with_capacity(REQUESTS),
        signed: Vec::with_capacity(REQUESTS),
    };
    for i in 0..REQUESTS {
        for signed in [false, true] {
            let at_ms = mentat_bus::now_ms();
            let value = as_sent(2 * i + usize::from(signed), signed.then_some(key), at_ms)?;
            let started = Instant::now();
            let reply = request(&bus, "deploy", &value).await?;
            let took = started.elapsed();
            ensure!(
                reply.rejection_kind() == Some(RejectKind::NoCapacity),
                "every deploy is decided and refused for want of hosts: {reply:?}"
            );
            match signed {
                true => pair.signed.push(took),
                false => pair.unsigned.push(took),
            }
        }
    }
    Ok(pair)
}
