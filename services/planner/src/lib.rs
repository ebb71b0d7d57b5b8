//! The planner: the only writer of the event log and the owner of every
//! deployment's state machine.
//!
//! One task owns the [`log::Log`] and the world folded from it, and takes
//! inputs one at a time: commands (from JetStream, replied to over core
//! NATS, see [`intake`]), facts from the other services, host heartbeats,
//! queries and timers. Every decision comes from the pure core in
//! `mentat_domain::planner`; this crate only carries it out: it appends the
//! events, and the [`relay`] publishes them for the executors and routers.
//!
//! - [`Config`] and [`run`]: start the planner.
//! - [`engine`]: the main loop.
//! - [`error`]: what can go wrong, by what the planner does about it.
//! - [`audit`]: the log checked before it is trusted, signed anchors of its
//!   head, and the audit queries.
//! - [`log`]: the log as domain events, with the world kept in step.
//! - [`intake`]: decoding commands, checking who sent them (signed
//!   commands), and pairing replies with requests.
//! - [`queries`]: status and history.
//! - [`relay`]: the log, published to JetStream.
//! - [`metrics`]: the names of its metrics on `/metrics`.
//! - [`standby`], [`roster`]: waiting to lead, and who else plans.
//!
//! Trust: at start the planner recomputes the log's whole hash chain and
//! checks it against its latest signed anchor before it decides anything,
//! and refuses to run on a broken log unless an operator accepts the break
//! (`--accept-break`, recorded in the log). See [`audit`].
//!
//! Leadership: several planners may run against one PostgreSQL log. Each
//! stands by until the newest epoch's lease has run out, then takes the
//! next epoch (`PlannerLeaderElected`), and from then on every append is
//! fenced by it: a planner that lost its lease cannot write, and stops with
//! `StaleEpoch`. With SQLite one planner runs per log file.

pub mod audit;
pub mod engine;
pub mod error;
pub mod intake;
pub mod log;
pub mod metrics;
pub mod queries;
pub mod relay;
pub mod roster;
pub mod standby;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use mentat_bus::client::redact;
use mentat_domain::limits;
use mentat_runtime::Shutdown;

/// Flags of `mentat-planner`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "mentat-planner",
    version,
    about = "Mentat's planner: owns the event log and decides every deployment step"
)]
pub struct Config {
    /// NATS server URL; several separated by commas for a cluster (the
    /// planner moves to another when the one it uses goes away).
    #[arg(long, env = "MENTAT_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats: String,
    /// Copies JetStream keeps of each of Mentat's streams: `auto` (3 when
    /// the NATS cluster announces three or more servers, else 1; streams
    /// that exist are left as they are) or 1 to 5 (streams that exist are
    /// updated to it). Give every service the same value.
    #[arg(long, env = "MENTAT_STREAM_REPLICAS", default_value = "auto")]
    pub stream_replicas: mentat_bus::Replicas,
    /// Credentials for NATS, or `--insecure`.
    #[command(flatten)]
    pub access: mentat_runtime::NatsAccess,
    /// Where `/metrics` is served, if anywhere.
    #[command(flatten)]
    pub admin: mentat_runtime::metrics::AdminListen,
    /// Event log: sqlite://PATH (default: DATA_DIR/mentat.db) or
    /// postgres://... A URL with a password is refused here (every local
    /// user reads command lines): give it in MENTAT_DATABASE_URL or
    /// --database-url-file.
    #[arg(long, env = "MENTAT_DATABASE_URL")]
    pub database_url: Option<String>,
    /// A file whose first line is the event log's URL, instead of
    /// --database-url.
    #[arg(
        long,
        env = "MENTAT_DATABASE_URL_FILE",
        value_name = "PATH",
        conflicts_with = "database_url"
    )]
    pub database_url_file: Option<PathBuf>,
    /// Directory for the SQLite log when no --database-url is given.
    #[arg(long, env = "MENTAT_DATA_DIR", default_value = ".mentat")]
    pub data_dir: PathBuf,
    /// How long to wait for a router to drain a replica before stopping it anyway.
    #[arg(long, default_value_t = 30)]
    pub drain_timeout_secs: u64,
    /// A router that sent no heartbeat for this long is considered lost
    /// (drains no longer wait for it). `--host-timeout-secs`, its former
    /// name, still works; executor hosts are judged by the service file's
    /// `cluster:` block (`suspect_after_secs`, `lost_after_secs`).
    #[arg(long, alias = "host-timeout-secs", default_value_t = 5)]
    pub router_timeout_secs: u64,
    /// This planner's id among the planners of one log [default: HOST-PID].
    #[arg(long, env = "MENTAT_PLANNER_ID")]
    pub planner_id: Option<String>,
    /// The leader's lease: a standby takes over this long after the leader
    /// last renewed it (renewed every quarter of it). 500 to 60000.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(500..=60_000))]
    pub lease_ms: u64,
    /// Run the migrations through this URL (PostgreSQL: the role that owns
    /// the schema), and append through --database-url's role, which is
    /// granted SELECT and INSERT on the log and nothing more (see README,
    /// "PostgreSQL with two roles"). Without it, the migrations run through
    /// --database-url.
    #[arg(long, env = "MENTAT_MIGRATE_URL", value_name = "URL")]
    pub migrate_url: Option<String>,
    /// A file whose first line is the migration URL, instead of
    /// --migrate-url.
    #[arg(
        long,
        env = "MENTAT_MIGRATE_URL_FILE",
        value_name = "PATH",
        conflicts_with = "migrate_url"
    )]
    pub migrate_url_file: Option<PathBuf>,
    /// The leader signs an anchor of the log's head this often (seconds,
    /// 1 to 86400), when the log moved since the last one.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub anchor_every_secs: u64,
    /// Also append every anchor to this file (one JSON anchor per line):
    /// keep it outside the data directory, on storage the database's
    /// administrators cannot rewrite.
    #[arg(long, env = "MENTAT_ANCHOR_FILE", value_name = "PATH")]
    pub anchor_file: Option<PathBuf>,
    /// The planner's Ed25519 key, generated there (mode 0600) on first
    /// start [default: DATA_DIR/anchor.key]. Give every planner of one log
    /// the same key.
    #[arg(long, env = "MENTAT_ANCHOR_KEY", value_name = "PATH")]
    pub anchor_key: Option<PathBuf>,
    /// An operator's Ed25519 public key (hex, as `mt key new` prints it)
    /// that this planner trusts as an admin whatever the service file's
    /// `security:` block says (repeatable): the apply that turns
    /// `require_signed_commands` on must be signed by one of these when any
    /// is given, and they can always change the block again.
    #[arg(long = "admin-key", env = "MENTAT_ADMIN_KEYS", value_name = "HEX",
          value_delimiter = ',', value_parser = admin_key)]
    pub admin_keys: Vec<String>,
    /// Run on a log whose hash chain is broken at POSITION (the position
    /// the planner named when it refused to start): the acceptance is
    /// recorded in the log, signed, with --actor and --reason.
    #[arg(long, value_name = "POSITION", requires_all = ["actor", "reason"],
          value_parser = clap::value_parser!(i64).range(1..))]
    pub accept_break: Option<i64>,
    /// Who accepts the break (with --accept-break; 1 to 128 bytes).
    #[arg(long, requires = "accept_break", value_parser = bounded::<{ limits::MAX_ACTOR_BYTES }>)]
    pub actor: Option<String>,
    /// Why (with --accept-break; 1 to 1024 bytes).
    #[arg(long, requires = "accept_break", value_parser = bounded::<{ limits::MAX_REASON_BYTES }>)]
    pub reason: Option<String>,
}

/// An Ed25519 public key in lowercase hex.
fn admin_key(value: &str) -> std::result::Result<String, String> {
    let key = value.trim().to_ascii_lowercase();
    mentat_domain::audit::parse_key(&key)?;
    Ok(key)
}

/// A non-blank flag value of at most `MAX` bytes.
fn bounded<const MAX: usize>(value: &str) -> std::result::Result<String, String> {
    if value.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > MAX {
        return Err(format!("{} bytes, at most {MAX}", value.len()));
    }
    Ok(value.to_owned())
}

impl Config {
    /// Defaults, with the given NATS and database URLs.
    pub fn new(nats: impl Into<String>, database_url: impl Into<String>) -> Self {
        Config {
            nats: nats.into(),
            stream_replicas: mentat_bus::Replicas::Auto,
            access: mentat_runtime::NatsAccess::default(),
            database_url: Some(database_url.into()),
            database_url_file: None,
            data_dir: PathBuf::from(".mentat"),
            drain_timeout_secs: 30,
            router_timeout_secs: 5,
            planner_id: None,
            lease_ms: 2000,
            migrate_url: None,
            migrate_url_file: None,
            anchor_every_secs: 300,
            anchor_file: None,
            anchor_key: None,
            admin_keys: Vec::new(),
            admin: Default::default(),
            accept_break: None,
            actor: None,
            reason: None,
        }
    }

    /// The signing key's file: `--anchor-key`, else `DATA_DIR/anchor.key`.
    pub fn anchor_key_path(&self) -> PathBuf {
        self.anchor_key
            .clone()
            .unwrap_or_else(|| self.data_dir.join("anchor.key"))
    }

    /// The break an operator accepts, when all three flags are given.
    pub fn acceptance(&self) -> Option<audit::trust::Acceptance> {
        Some(audit::trust::Acceptance {
            position: self.accept_break?,
            actor: self.actor.clone()?,
            reason: self.reason.clone()?,
        })
    }

    /// This planner's id: `--planner-id`, else `HOST-PID`.
    pub fn planner_id(&self) -> String {
        self.planner_id.clone().unwrap_or_else(|| {
            let host = nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "planner".to_owned());
            format!("{host}-{}", std::process::id())
        })
    }

    /// The settings the core decides with, recorded in the log by every
    /// leader (`PlannerLeaderElected`) so that a replay decides with them.
    pub fn settings(&self) -> mentat_domain::planner::Settings {
        mentat_domain::planner::Settings {
            drain_timeout_ms: i64::try_from(self.drain_timeout_secs.saturating_mul(1000))
                .unwrap_or(i64::MAX),
        }
    }

    /// The leader's lease.
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    /// Read the URLs given in files (`--database-url-file`,
    /// `--migrate-url-file`) into their places; the error names the file.
    pub fn read_url_files(&mut self) -> Result<(), String> {
        if let Some(path) = self.database_url_file.take() {
            self.database_url = Some(mentat_runtime::secrets::read_secret_file(&path)?);
        }
        if let Some(path) = self.migrate_url_file.take() {
            self.migrate_url = Some(mentat_runtime::secrets::read_secret_file(&path)?);
        }
        Ok(())
    }

    /// The database URL in effect.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("mentat.db").display()))
    }
}

/// Run the planner until `shutdown` is cancelled. A log that cannot be
/// reached at start is waited for, as it is later.
pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    // Before the log is opened: a planner without credentials for a NATS
    // beyond this machine does not start at all.
    let access = config.access.access(&config.nats)?;
    let url = config.database_url();
    // The past-state queries' snapshots, left by the replay at start too.
    let snapshots = std::sync::Arc::default();
    let Some((store, mut log)) =
        open_log(&url, config.migrate_url.as_deref(), &snapshots, &shutdown).await?
    else {
        return Ok(());
    };
    // With SQLite, one planner per log file, held until this process ends.
    let _file = store.claim_log_file()?;
    if let Some(why) = store.rewrite_rights().await? {
        tracing::warn!("{why}");
    }
    metrics::describe();
    let _admin = config
        .admin
        .start(mentat_runtime::metrics::no_refresh(), shutdown.token())
        .await?;
    let bus = mentat_bus::Bus::connect_with(
        &access,
        "mentat-planner",
        Duration::from_secs(30),
        config.stream_replicas,
    )
    .await?;
    if let Err(e) = mentat_bus::streams::ensure_anchors(&bus).await {
        // Anchors still go to the anchor file; publishing says what failed.
        tracing::warn!(error = %e, "cannot create MENTAT_ANCHORS");
    }
    let audit = audit::Audit {
        key: audit::key::load_or_create(&config.anchor_key_path())?,
        planner: config.planner_id(),
        anchor_file: config.anchor_file.clone(),
        verifying: Default::default(),
        replaying: Default::default(),
        stating: std::sync::Arc::new(tokio::sync::Semaphore::new(1)),
        snapshots,
    };
    // Before anything is decided: the whole chain, against the latest anchor.
    let acceptance = config.acceptance();
    let checkpoint =
        audit::trust::check_at_start(&store, &bus, &audit, acceptance.as_ref()).await?;
    // An acceptance just recorded is folded like any event.
    log.catch_up().await?;
    let mut roster = roster::Roster::new(config.planner_id());
    let lease = config.lease();
    // One subscription to queries, from standing by to leading: none waiting
    // in it is dropped at the handover.
    let mut queries = bus
        .client
        .queue_subscribe(
            format!("{}.>", mentat_bus::subject::QUERY_PREFIX),
            "mentat-planner".into(),
        )
        .await?;
    let leading = standby::until_leading(
        &bus,
        &mut log,
        &mut roster,
        lease,
        &mut queries,
        &audit,
        &shutdown,
    );
    let Some(epoch) = leading.await? else {
        return Ok(());
    };
    // What other leaders appended while this one stood by is checked
    // before it decides on it.
    let checkpoint = audit::trust::check_since(&store, &checkpoint).await?;
    log.fence(epoch);
    let elected = mentat_domain::Event::PlannerLeaderElected {
        planner: roster.me().to_owned(),
        epoch,
        settings: Some(config.settings()),
    };
    log.append(
        mentat_domain::event::PLANNERS_STREAM,
        vec![(mentat_bus::new_id(), elected)],
        &mentat_domain::Meta::default(),
        None,
        mentat_bus::now_ms(),
    )
    .await?;
    tracing::info!(planner = roster.me(), epoch, "leading");
    let relay = tokio::spawn(relay::run(
        store.clone(),
        bus.clone(),
        log.appended.clone(),
        shutdown.child(),
    ));
    tracing::info!(database = %redact(&url), nats = %redact(&config.nats), "planner started");
    let result = engine::Engine::new(config, bus, log, roster, audit, checkpoint)
        .run(queries, shutdown.clone())
        .await;
    shutdown.cancel();
    let _ = relay.await;
    store.close().await;
    Ok(result?)
}

/// Open the store and replay the log, retrying while the database cannot
/// be reached; `None` when `shutdown` came first.
async fn open_log(
    url: &str,
    migrate_url: Option<&str>,
    snapshots: &std::sync::Arc<std::sync::Mutex<log::Snapshots>>,
    shutdown: &Shutdown,
) -> anyhow::Result<Option<(mentat_store::Store, log::Log)>> {
    let mut pause = Duration::from_millis(250);
    loop {
        let store = match migrate_url {
            Some(owner) => mentat_store::Store::open_migrated_by(url, owner).await,
            None => mentat_store::Store::open(url).await,
        };
        let opened = match store {
            Ok(store) => log::Log::open_keeping(store.clone(), Some(snapshots.clone()))
                .await
                .map(|log| (store, log)),
            Err(e) => Err(error::Error::from(e)),
        };
        match opened {
            Ok(opened) => return Ok(Some(opened)),
            Err(error::Error::Unavailable(e)) => {
                tracing::warn!(database = %redact(url), error = %e, retry_in = ?pause, "the log is unreachable; waiting for it");
            }
            Err(e) => {
                return Err(anyhow::Error::new(e))
                    .with_context(|| format!("opening the event log at {}", redact(url)))
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn parse(args: &[&str]) -> std::result::Result<Config, clap::Error> {
        Config::try_parse_from([&["mentat-planner"], args].concat())
    }

    #[test]
    fn a_break_is_accepted_only_with_an_actor_and_a_reason_within_bounds() {
        let config = parse(&[
            "--accept-break",
            "7",
            "--actor",
            "ana",
            "--reason",
            "restored",
        ])
        .expect("parses");
        let acceptance = config.acceptance().expect("an acceptance");
        assert_eq!((acceptance.position, acceptance.actor.as_str()), (7, "ana"));
        let long = "x".repeat(limits::MAX_REASON_BYTES + 1);
        for bad in [
            &["--accept-break", "7"][..],
            &["--accept-break", "7", "--actor", "ana"],
            &["--actor", "ana", "--reason", "r"],
            &["--accept-break", "0", "--actor", "ana", "--reason", "r"],
            &["--accept-break", "7", "--actor", " ", "--reason", "r"],
            &["--accept-break", "7", "--actor", "ana", "--reason", &long],
            &["--anchor-every-secs", "0"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let config = parse(&[]).expect("defaults");
        assert_eq!(config.anchor_every_secs, 300);
        assert_eq!(config.acceptance(), None);
        assert_eq!(
            config.anchor_key_path(),
            PathBuf::from(".mentat/anchor.key")
        );
    }
}
