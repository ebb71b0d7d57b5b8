//! End to end: the log's audit, with the real planner and `mt` against a
//! real nats-server and a real database (SQLite and PostgreSQL), tampered
//! with as an attacker with database access would.
//!
//! - A payload edited with the triggers dropped: `mt audit verify` names
//!   the position and `content_changed`, online and from an export; the
//!   planner refuses to start on it, and starts once the break is accepted
//!   (`--accept-break`, recorded in the log with actor and reason).
//! - A row deleted: `position_missing` at its position.
//! - The chain rewritten consistently from some position, every hash
//!   recomputed: only the anchor finds it (`anchor_mismatch`), and the
//!   planner refuses to start.
//! - A forged anchor, in the anchor file and in `MENTAT_ANCHORS`: reported
//!   as forged, and ignored by the planner.
//! - PostgreSQL with two roles: the planner migrates as the owner and runs
//!   as a role that may only read and insert.
//! - [`replay`]: the audits that replay the log (`state`, `why`, `report`)
//!   and a service's audit policy, on a whole Mentat.

#![allow(clippy::unwrap_used)] // a failing test should fail loudly

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use mentat_bus::{anchors, Bus};
use mentat_domain::audit::{Anchor, AuditVerifyReply, BreakKind, SigningKey};
use mentat_e2e::{bin_dir, text};
use mentat_store::hash::{event_hash, GENESIS_HASH};
use mentat_store::Store;
use mentat_testkit::{NatsServer, PgDatabase};
use sqlx::{AnyConnection, Connection};
use tempfile::TempDir;

#[path = "audit/replay.rs"]
mod replay;

/// Three services: a log of a handful of events to tamper with.
const CONFIG: &str = r#"services:
  web:
    replicas: 1
    run: { command: ["mentat-demo-app"], env: { APP_VERSION: "{image}" } }
  api:
    replicas: 2
    run: { command: ["mentat-demo-app"] }
  jobs:
    replicas: 1
    run: { command: ["mentat-demo-app"] }
"#;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

/// NATS, a database and a planner started and stopped by the test.
struct Audited {
    nats: NatsServer,
    dir: TempDir,
    url: String,
    pg: Option<PgDatabase>,
    backend: Backend,
    planner: Option<Child>,
    runs: usize,
}

impl Audited {
    async fn new(backend: Backend) -> Audited {
        let dir = tempfile::tempdir().unwrap();
        let (url, pg) = match backend {
            Backend::Sqlite => (
                format!("sqlite://{}", dir.path().join("mentat.db").display()),
                None,
            ),
            Backend::Postgres => {
                let pg = PgDatabase::create().await;
                (pg.url.clone(), Some(pg))
            }
        };
        Audited {
            nats: NatsServer::start(),
            dir,
            url,
            pg,
            backend,
            planner: None,
            runs: 0,
        }
    }

    fn anchor_file(&self) -> PathBuf {
        self.dir.path().join("anchors/anchors.ndjson")
    }

    fn planner_command(&mut self, database_url: &str, extra: &[&str]) -> (Command, PathBuf) {
        self.runs += 1;
        let log = self.dir.path().join(format!("planner-{}.log", self.runs));
        let id = if extra.contains(&"--planner-id") {
            None
        } else {
            Some("planner")
        };
        let mut cmd = Command::new(bin_dir().join("mentat-planner"));
        cmd.args(["--nats", &self.nats.url(), "--database-url", database_url])
            .args([
                "--data-dir",
                &self.dir.path().join("data").display().to_string(),
            ])
            .args(["--anchor-file", &self.anchor_file().display().to_string()])
            .args(id.iter().flat_map(|id| ["--planner-id", id]))
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        (cmd, log)
    }

    /// Start the planner and wait until it answers.
    async fn start(&mut self, extra: &[&str]) {
        let url = self.url.clone();
        self.start_on(&url, extra).await;
    }

    async fn start_on(&mut self, database_url: &str, extra: &[&str]) {
        let (mut cmd, log) = self.planner_command(database_url, extra);
        self.planner = Some(cmd.spawn().unwrap());
        let deadline = Instant::now() + Duration::from_secs(30);
        // Leading: the leader alone answers `mt audit anchor`.
        while !self.mt(&["audit", "key"]).status.success()
            || !std::fs::read_to_string(&log)
                .unwrap()
                .contains("planner started")
        {
            let exited = self.planner.as_mut().unwrap().try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "the planner did not start ({exited:?}):\n{}",
                std::fs::read_to_string(&log).unwrap()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stop the planner (SIGTERM) and wait for it.
    fn stop(&mut self) {
        if let Some(mut child) = self.planner.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// Run the planner expecting it to refuse to start: its exit status
    /// and its log.
    fn refused(&mut self, extra: &[&str]) -> String {
        let url = self.url.clone();
        let (mut cmd, log) = self.planner_command(&url, extra);
        let mut child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "the planner ran on a broken log:\n{}",
                    std::fs::read_to_string(&log).unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(!status.success(), "{status:?}");
        std::fs::read_to_string(&log).unwrap()
    }

    fn mt(&self, args: &[&str]) -> Output {
        Command::new(bin_dir().join("mt"))
            .args(args)
            .args(["--nats", &self.nats.url()])
            .env("MENTAT_ACTOR", "e2e")
            .output()
            .unwrap()
    }

    fn mt_ok(&self, args: &[&str]) -> String {
        let out = self.mt(args);
        assert!(out.status.success(), "mt {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `mt audit verify ARGS --json`: its exit code and reply.
    fn verify(&self, args: &[&str]) -> (Option<i32>, AuditVerifyReply) {
        let out = self.mt(&[&["audit", "verify", "--json"], args].concat());
        let reply =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
        (out.status.code(), reply)
    }

    fn apply(&self) {
        let file = self.dir.path().join("mentat.yaml");
        std::fs::write(&file, CONFIG).unwrap();
        self.mt_ok(&["apply", "-f", file.to_str().unwrap()]);
    }

    /// `mt audit export --db URL` to a file; its path.
    fn export(&self, name: &str) -> PathBuf {
        let out = self.mt(&["audit", "export", "--db", &self.url]);
        assert!(out.status.success(), "{}", text(&out));
        let path = self.dir.path().join(name);
        std::fs::write(&path, &out.stdout).unwrap();
        path
    }

    async fn raw(&self) -> AnyConnection {
        sqlx::any::install_default_drivers();
        AnyConnection::connect(&self.url).await.unwrap()
    }

    /// Drop the triggers that refuse UPDATE and DELETE, as only someone who
    /// may change the schema can.
    async fn drop_guard(&self) {
        let mut raw = self.raw().await;
        let sql: &[&str] = match self.backend {
            Backend::Sqlite => &[
                "DROP TRIGGER IF EXISTS events_no_update",
                "DROP TRIGGER IF EXISTS events_no_delete",
            ],
            Backend::Postgres => &["DROP TRIGGER IF EXISTS events_append_only ON events"],
        };
        for sql in sql {
            sqlx::query(sql).execute(&mut raw).await.unwrap();
        }
    }

    async fn sql(&self, sql: &str) {
        let mut raw = self.raw().await;
        sqlx::query(sql).execute(&mut raw).await.unwrap();
    }

    /// The position of the first event of `event_type`.
    async fn position_of(&self, event_type: &str) -> i64 {
        let store = Store::open_existing(&self.url).await.unwrap();
        let found = store.read_type(event_type).await.unwrap();
        store.close().await;
        found[0].position
    }
}

impl Drop for Audited {
    fn drop(&mut self) {
        self.stop();
        drop(self.pg.take());
    }
}

fn broken_at(reply: &AuditVerifyReply) -> (i64, BreakKind) {
    match reply {
        AuditVerifyReply::Broken { found, .. } => (found.position, found.kind),
        other => panic!("not broken: {other:?}"),
    }
}

fn head(reply: &AuditVerifyReply) -> (i64, String) {
    match reply {
        AuditVerifyReply::Ok {
            head_position,
            head_hash,
            ..
        } => (*head_position, head_hash.clone()),
        other => panic!("not verified: {other:?}"),
    }
}

async fn an_edited_payload_is_named_refused_and_runs_once_accepted(backend: Backend) {
    let mut a = Audited::new(backend).await;
    a.start(&[]).await;
    a.apply();
    let (code, good) = a.verify(&[]);
    assert_eq!(code, Some(0), "{good:?}");
    let (head_position, head_hash) = head(&good);
    assert!(head_position >= 4, "{good:?}");
    // Without --json: the head's position and hash.
    let plain = a.mt_ok(&["audit", "verify"]);
    assert!(
        plain.contains(&format!("head position {head_position}, hash {head_hash}")),
        "{plain}"
    );
    let key = a.mt_ok(&["audit", "key"]).trim().to_owned();
    assert_eq!(key.len(), 64, "{key}");

    // The attacker edits a service's run.command in place.
    let edited = a.position_of("ServiceDefined").await + 1;
    a.drop_guard().await;
    a.sql(&format!(
        "UPDATE events SET payload = replace(payload, 'mentat-demo-app', 'curl-evil.sh') \
         WHERE position = {edited}"
    ))
    .await;
    let (code, reply) = a.verify(&[]);
    assert_eq!(code, Some(1));
    assert_eq!(broken_at(&reply), (edited, BreakKind::ContentChanged));
    let plain = a.mt(&["audit", "verify"]);
    assert_eq!(plain.status.code(), Some(1));
    assert!(
        text(&plain).contains(&format!("position {edited} (content_changed)")),
        "{}",
        text(&plain)
    );

    // The planner will not run on it...
    a.stop();
    let log = a.refused(&[]);
    assert!(
        log.contains(&format!("position {edited} (content_changed)"))
            && log.contains("--accept-break"),
        "{log}"
    );
    // ...an auditor with the export and the key finds the same offline...
    let export = a.export("edited.ndjson");
    let (code, offline) = a.verify(&["--file", export.to_str().unwrap(), "--key", &key]);
    assert_eq!(code, Some(1));
    assert_eq!(broken_at(&offline), (edited, BreakKind::ContentChanged));
    // ...and another position cannot be accepted in its place.
    let log = a.refused(&["--accept-break", "1", "--actor", "ana", "--reason", "no"]);
    assert!(log.contains(&format!("position {edited}")), "{log}");

    // Accepted by an operator, recorded in the log, and the planner runs.
    let position = edited.to_string();
    let accept = [
        "--accept-break",
        position.as_str(),
        "--actor",
        "ana",
        "--reason",
        "restored from backup",
    ];
    a.start(&accept).await;
    let (code, reply) = a.verify(&[]);
    assert_eq!(code, Some(0), "{reply:?}");
    let AuditVerifyReply::Ok { accepted, .. } = &reply else {
        panic!("{reply:?}")
    };
    assert_eq!(
        (accepted[0].position, accepted[0].kind),
        (edited, BreakKind::ContentChanged)
    );
    let store = Store::open_existing(&a.url).await.unwrap();
    let recorded = store.read_type("LogBreakAccepted").await.unwrap();
    assert_eq!(recorded.len(), 1);
    assert!(
        recorded[0].metadata.contains("\"actor\":\"ana\""),
        "{recorded:?}"
    );
    assert!(recorded[0].metadata.contains("restored from backup"));
    store.close().await;
    a.mt_ok(&["status"]);
    // Restarted as it is, the planner runs on the accepted break.
    a.stop();
    a.start(&[]).await;
    // Offline, the signed acceptance is honoured too.
    let export = a.export("accepted.ndjson");
    let (code, _) = a.verify(&["--file", export.to_str().unwrap(), "--key", &key]);
    assert_eq!(code, Some(0));
}

async fn a_deleted_row_is_a_missing_position(backend: Backend) {
    let mut a = Audited::new(backend).await;
    a.start(&[]).await;
    a.apply();
    let deleted = a.position_of("ServiceDefined").await + 1;
    a.drop_guard().await;
    a.sql(&format!("DELETE FROM events WHERE position = {deleted}"))
        .await;
    let (code, reply) = a.verify(&[]);
    assert_eq!(code, Some(1));
    assert_eq!(broken_at(&reply), (deleted, BreakKind::PositionMissing));
    let export = a.export("deleted.ndjson");
    let (code, offline) = a.verify(&["--file", export.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert_eq!(broken_at(&offline), (deleted, BreakKind::PositionMissing));
    a.stop();
    let log = a.refused(&[]);
    assert!(
        log.contains(&format!("position {deleted} (position_missing)")),
        "{log}"
    );
}

/// Rewrite every event from `from` on with a new payload and recomputed
/// hashes: a chain as consistent as the original.
async fn rewrite_from(a: &Audited, from: i64) {
    a.drop_guard().await;
    let store = Store::open_existing(&a.url).await.unwrap();
    let mut prev = match store.event_at(from - 1).await.unwrap() {
        Some(e) => e.hash,
        None => GENESIS_HASH.to_owned(),
    };
    let mut raw = a.raw().await;
    for mut e in store.read_all(from - 1, 10_000).await.unwrap() {
        e.payload = e.payload.replace("mentat-demo-app", "curl-evil.sh");
        e.prev_hash = prev;
        e.hash = event_hash(&e);
        sqlx::query(
            "UPDATE events SET payload = $1, prev_hash = $2, hash = $3 WHERE position = $4",
        )
        .bind(&e.payload)
        .bind(&e.prev_hash)
        .bind(&e.hash)
        .bind(e.position)
        .execute(&mut raw)
        .await
        .unwrap();
        prev = e.hash;
    }
    store.close().await;
    store_verifies(a).await;
}

/// The chain alone holds.
async fn store_verifies(a: &Audited) {
    let store = Store::open_existing(&a.url).await.unwrap();
    store.verify().await.expect("a consistent chain");
    store.close().await;
}

async fn a_consistent_rewrite_is_caught_by_the_anchor(backend: Backend) {
    let mut a = Audited::new(backend).await;
    a.start(&[]).await;
    a.apply();
    let anchored = a.mt_ok(&["audit", "anchor", "--json"]);
    let anchor: serde_json::Value = serde_json::from_str(&anchored).unwrap();
    let position = anchor["anchor"]["position"].as_i64().unwrap();
    let key = a.mt_ok(&["audit", "key"]).trim().to_owned();
    a.stop();
    let from = a.position_of("ServiceDefined").await;
    rewrite_from(&a, from).await;

    let log = a.refused(&[]);
    assert!(
        log.contains(&format!("position {position} (anchor_mismatch)")),
        "{log}"
    );
    // Offline, with the anchor file alone (no planner, so no stream read
    // through it; NATS still answers, so its anchors are read too).
    let export = a.export("rewritten.ndjson");
    let anchors = a.anchor_file();
    let (code, offline) = a.verify(&[
        "--file",
        export.to_str().unwrap(),
        "--anchors",
        anchors.to_str().unwrap(),
        "--key",
        &key,
    ]);
    assert_eq!(code, Some(1));
    assert_eq!(broken_at(&offline), (position, BreakKind::AnchorMismatch));
    // Online, through a planner that accepted the break (so that it runs):
    // the rewrite is still reported as accepted, not hidden.
    let accepted = position.to_string();
    a.start(&[
        "--accept-break",
        &accepted,
        "--actor",
        "ana",
        "--reason",
        "investigating",
    ])
    .await;
    let (code, reply) = a.verify(&[]);
    assert_eq!(code, Some(0), "{reply:?}");
    let AuditVerifyReply::Ok { accepted, .. } = &reply else {
        panic!("{reply:?}")
    };
    assert_eq!(accepted[0].kind, BreakKind::AnchorMismatch);
}

async fn a_rewrite_while_the_planner_runs_is_found_online(backend: Backend) {
    let mut a = Audited::new(backend).await;
    a.start(&[]).await;
    a.apply();
    let anchored = a.mt_ok(&["audit", "anchor", "--json"]);
    let anchor: serde_json::Value = serde_json::from_str(&anchored).unwrap();
    let position = anchor["anchor"]["position"].as_i64().unwrap();
    let from = a.position_of("ServiceDefined").await;
    rewrite_from(&a, from).await;
    let (code, reply) = a.verify(&[]);
    assert_eq!(code, Some(1));
    assert_eq!(broken_at(&reply), (position, BreakKind::AnchorMismatch));
}

/// An export is checked against the anchors signed before it was taken;
/// those signed since, past its end, do not make it "cut short".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_is_checked_against_the_anchors_before_its_end() {
    let mut a = Audited::new(Backend::Sqlite).await;
    a.start(&[]).await;
    a.apply();
    a.mt_ok(&["audit", "anchor"]);
    let export = a.dir.path().join("early.ndjson");
    std::fs::write(&export, a.mt_ok(&["audit", "export"])).unwrap();
    // The log moves on and is anchored again, past the export's end.
    a.mt_ok(&[
        "apply",
        "-f",
        a.dir.path().join("mentat.yaml").to_str().unwrap(),
    ]);
    let later = CONFIG.replace("replicas: 2", "replicas: 3");
    std::fs::write(a.dir.path().join("later.yaml"), later).unwrap();
    a.mt_ok(&[
        "apply",
        "-f",
        a.dir.path().join("later.yaml").to_str().unwrap(),
    ]);
    a.mt_ok(&["audit", "anchor"]);
    let (code, reply) = a.verify(&["--file", export.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{reply:?}");
    let AuditVerifyReply::Ok {
        anchors_checked, ..
    } = &reply
    else {
        panic!("{reply:?}")
    };
    assert!(*anchors_checked >= 2, "{reply:?}");
}

/// A standby checks what the leader appended before it takes over: on a
/// log broken meanwhile it refuses to lead, naming the break.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_refuses_to_take_over_a_log_broken_while_it_waited() {
    let mut a = Audited::new(Backend::Postgres).await;
    a.start(&["--lease-ms", "1000"]).await;
    let url = a.url.clone();
    let (mut cmd, standby_log) =
        a.planner_command(&url, &["--planner-id", "standby", "--lease-ms", "1000"]);
    let mut standby = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&standby_log)
        .unwrap()
        .contains("standing by")
    {
        assert!(Instant::now() < deadline, "no standby");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Appended after the standby checked the log, then edited.
    a.apply();
    let edited = a.position_of("ServiceDefined").await;
    a.drop_guard().await;
    a.sql(&format!(
        "UPDATE events SET payload = replace(payload, 'mentat-demo-app', 'curl-evil.sh') \
         WHERE position = {edited}"
    ))
    .await;
    // The leader dies; the standby's turn comes, and it will not lead.
    let _ = a.planner.as_mut().unwrap().kill();
    let _ = a.planner.take().unwrap().wait();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = standby.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = standby.kill();
            panic!(
                "the standby led a broken log:\n{}",
                std::fs::read_to_string(&standby_log).unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success());
    let log = std::fs::read_to_string(&standby_log).unwrap();
    assert!(
        log.contains(&format!("position {edited} (content_changed)")),
        "{log}"
    );
    let store = Store::open_existing(&a.url).await.unwrap();
    let elected = store.read_type("PlannerLeaderElected").await.unwrap();
    assert_eq!(
        elected.len(),
        1,
        "the standby appended nothing: {elected:?}"
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_anchors_are_reported_and_ignored_by_the_planner() {
    let mut a = Audited::new(Backend::Sqlite).await;
    a.start(&["--anchor-every-secs", "1"]).await;
    a.apply();
    // The periodic anchor covers the apply within a second or two.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, reply) = a.verify(&[]);
        let (head_position, head_hash) = head(&reply);
        let lines = std::fs::read_to_string(a.anchor_file()).unwrap_or_default();
        if lines.contains(&head_hash) && head_position >= 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no periodic anchor of the head: {lines}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let key = a.mt_ok(&["audit", "key"]).trim().to_owned();
    // A forged line in the file: a real anchor with another hash.
    let line = std::fs::read_to_string(a.anchor_file()).unwrap();
    let mut forged: Anchor = serde_json::from_str(line.lines().last().unwrap()).unwrap();
    forged.head_hash = "0".repeat(64);
    let mut text_line = serde_json::to_string(&forged).unwrap();
    text_line.push('\n');
    let mut all = line.clone();
    all.push_str(&text_line);
    std::fs::write(a.anchor_file(), all).unwrap();
    // And one in the stream, signed by another key.
    let bus = Bus::connect(&a.nats.url(), "attacker", Duration::from_secs(5))
        .await
        .unwrap();
    let other = SigningKey::from_bytes(&[7; 32]);
    anchors::publish(&bus, &Anchor::sign(&other, 1, &"1".repeat(64), 1))
        .await
        .unwrap();

    let (code, reply) = a.verify(&[]);
    assert_eq!(code, Some(1), "{reply:?}");
    let AuditVerifyReply::Ok { forged, .. } = &reply else {
        panic!("the log itself is fine: {reply:?}")
    };
    assert_eq!(forged.len(), 2, "{forged:?}");
    assert!(
        forged.iter().any(|f| f.reason.contains("bad signature")),
        "{forged:?}"
    );
    assert!(
        forged
            .iter()
            .any(|f| f.reason.contains("not the trusted key")),
        "{forged:?}"
    );
    let plain = a.mt(&["audit", "verify"]);
    assert_eq!(plain.status.code(), Some(1));
    assert!(text(&plain).contains("forged anchor"), "{}", text(&plain));
    // The export over the bus, a page at a time, is the database's.
    let export = a.export("log.ndjson");
    let over_bus = a.mt_ok(&["audit", "export"]);
    assert_eq!(over_bus, std::fs::read_to_string(&export).unwrap());
    let from_3 = a.mt_ok(&["audit", "export", "--from", "3"]);
    assert_eq!(from_3.lines().count(), over_bus.lines().count() - 2);
    assert!(from_3.starts_with("{\"position\":3,"), "{from_3}");
    // Offline too, from the file.
    a.stop();
    let anchors = a.anchor_file();
    let (code, offline) = a.verify(&[
        "--file",
        export.to_str().unwrap(),
        "--anchors",
        anchors.to_str().unwrap(),
        "--key",
        &key,
    ]);
    assert_eq!(code, Some(1));
    let AuditVerifyReply::Ok {
        forged,
        anchors_checked,
        ..
    } = &offline
    else {
        panic!("{offline:?}")
    };
    assert!(forged.len() >= 2 && *anchors_checked >= 1, "{offline:?}");
    // Anyone can publish to the bus: a forged anchor does not stop the planner.
    a.start(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_the_planner_runs_as_a_role_that_cannot_rewrite_the_log() {
    let mut a = Audited::new(Backend::Postgres).await;
    let suffix = mentat_bus::new_id().replace('-', "");
    let (owner, appender) = (format!("owner_{suffix}"), format!("planner_{suffix}"));
    let name = a.pg.as_ref().unwrap().name.clone();
    for sql in [
        format!("CREATE ROLE {owner} LOGIN"),
        format!("CREATE ROLE {appender} LOGIN"),
        format!("ALTER DATABASE {name} OWNER TO {owner}"),
    ] {
        a.sql(&sql).await;
    }
    let as_user = |user: &str| {
        let (scheme, rest) = a.url.split_once("://").unwrap();
        let host = rest.split_once('@').map_or(rest, |(_, h)| h);
        format!("{scheme}://{user}@{host}")
    };
    let (owner_url, appender_url) = (as_user(&owner), as_user(&appender));
    a.start_on(&appender_url, &["--migrate-url", &owner_url])
        .await;
    a.apply();
    let (code, reply) = a.verify(&[]);
    assert_eq!(code, Some(0), "{reply:?}");
    a.mt_ok(&["audit", "anchor"]);
    let log =
        std::fs::read_to_string(a.dir.path().join(format!("planner-{}.log", a.runs))).unwrap();
    assert!(!log.contains("can rewrite the log"), "{log}");
    // The planner's own role cannot cover its tracks.
    let mut planner = {
        sqlx::any::install_default_drivers();
        AnyConnection::connect(&appender_url).await.unwrap()
    };
    for sql in [
        "ALTER TABLE events DISABLE TRIGGER ALL",
        "UPDATE events SET payload = '{}' WHERE position = 1",
        "DELETE FROM events WHERE position = 1",
    ] {
        let refused = sqlx::query(sql).execute(&mut planner).await;
        assert!(
            matches!(&refused, Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42501")),
            "{sql}: {refused:?}"
        );
    }
    drop(planner);
    a.stop();
    let pg = a.pg.take();
    drop(pg);
    sqlx::any::install_default_drivers();
    let mut admin = AnyConnection::connect(&mentat_testkit::pg::admin_url())
        .await
        .unwrap();
    for role in [&appender, &owner] {
        let _ = sqlx::query(&format!("DROP ROLE IF EXISTS {role}"))
            .execute(&mut admin)
            .await;
    }
}

macro_rules! on_both_backends {
    ($($case:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Backend::Sqlite).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Backend::Postgres).await;
                }
            )+
        }
    };
}

on_both_backends!(
    an_edited_payload_is_named_refused_and_runs_once_accepted,
    a_deleted_row_is_a_missing_position,
    a_consistent_rewrite_is_caught_by_the_anchor,
    a_rewrite_while_the_planner_runs_is_found_online,
);
