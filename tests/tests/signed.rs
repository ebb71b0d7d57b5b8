//! Commands whose sender is proven: the real planner, executor and `mt`,
//! with a `security:` block that requires signed commands. Each refusal is
//! matched by its kind and changes nothing; the actor recorded is the
//! signing operator's, whatever the command said; a command sent again
//! with its id changes nothing.

#![allow(clippy::unwrap_used)] // a failing test should fail loudly

use std::path::{Path, PathBuf};
use std::time::Duration;

use mentat_bus::{subject, Encoding};
use mentat_domain::audit::LoggedEvent;
use mentat_domain::audit::SigningKey;
use mentat_domain::command::{Deploy, RejectKind};
use mentat_domain::event::{Event, Meta};
use mentat_domain::security;
use mentat_domain::Reply;
use mentat_e2e::{on_both_databases, text, web_config, Args, Cluster, Db};

/// An operator's key pair made by `mt key new`: its secret file and key.
struct Key {
    file: PathBuf,
    public: String,
    secret: SigningKey,
}

fn key_new(cluster: &Cluster, name: &str) -> Key {
    let dir = cluster.path().join("keys");
    let out = cluster.mt_ok(&["key", "new", name, "--dir", dir.to_str().unwrap()]);
    let public = out.lines().next().unwrap().trim().to_owned();
    let file = dir.join(format!("{name}.key"));
    let hex = std::fs::read_to_string(&file).unwrap();
    let bytes: [u8; 32] = hex::decode(hex.trim()).unwrap().try_into().unwrap();
    let secret = SigningKey::from_bytes(&bytes);
    assert_eq!(
        mentat_domain::audit::key_hex(&secret.verifying_key()),
        public
    );
    Key {
        file,
        public,
        secret,
    }
}

/// The tests' service file with a security block requiring signatures.
fn secured_config(operators: &[(&str, &Key, &str)]) -> String {
    let mut yaml = web_config(1, 30);
    yaml.push_str("security:\n  require_signed_commands: true\n  operators:\n");
    for (name, key, role) in operators {
        yaml.push_str(&format!(
            "    - {{ name: {name}, key: {}, role: {role} }}\n",
            key.public
        ));
    }
    yaml
}

/// `mt ARGS --json`, signed with `key` when given: the planner's reply.
fn reply_of(cluster: &Cluster, key: Option<&Path>, args: &[&str]) -> Reply {
    let mut all: Vec<&str> = args.to_vec();
    all.push("--json");
    if let Some(key) = key {
        all.extend(["--key-file", key.to_str().unwrap()]);
    }
    let out = cluster.mt(&all);
    let line = String::from_utf8_lossy(&out.stdout);
    let line = line.lines().next().unwrap_or_default().to_owned();
    serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("mt {}: not a reply ({e}): {}", all.join(" "), text(&out)))
}

/// A deploy of `image` signed with `key` at `at_ms`, as a value to send.
fn signed_deploy(
    key: &SigningKey,
    id: &str,
    image: &str,
    actor: &str,
    at_ms: i64,
) -> serde_json::Value {
    let cmd = Deploy {
        command_id: Some(id.into()),
        signature: None,
        service: "web".into(),
        image: image.into(),
        strategy: None,
        override_rollout: false,
        actor: Some(actor.into()),
        reason: Some("e2e".into()),
    };
    let mut value = serde_json::to_value(cmd).unwrap();
    let signature = security::sign(key, "deploy", &value, at_ms).unwrap();
    value["signature"] = serde_json::to_value(signature).unwrap();
    value
}

async fn send(cluster: &Cluster, verb: &str, value: &serde_json::Value) -> Reply {
    cluster
        .bus
        .request(
            &subject::command(verb),
            value,
            Encoding::MsgPack,
            Duration::from_secs(10),
        )
        .await
        .unwrap()
}

/// The `SecurityDefined` event of the log, and its metadata, as
/// `mt audit export` gives them.
fn security_defined(cluster: &Cluster) -> (Event, Meta) {
    let export = cluster.mt_ok(&["audit", "export"]);
    let defined: LoggedEvent = export
        .lines()
        .filter_map(|l| serde_json::from_str::<LoggedEvent>(l).ok())
        .find(|e| e.event_type == "SecurityDefined")
        .expect("SecurityDefined in the log");
    assert_eq!(defined.stream, "_cluster");
    let event = serde_json::from_str(&defined.payload).unwrap();
    (event, serde_json::from_str(&defined.metadata).unwrap())
}

fn kind(reply: &Reply) -> Option<RejectKind> {
    reply.rejection_kind()
}

async fn every_refusal_by_kind_and_the_proven_actor(db: Db) {
    let cluster = Cluster::start(db).await;
    let ana = key_new(&cluster, "ana");
    let dee = key_new(&cluster, "dee");
    let eve = key_new(&cluster, "eve");
    let config = secured_config(&[("ana", &ana, "admin"), ("dee", &dee, "deployer")]);
    let file = cluster.path().join("mentat.yaml");
    std::fs::write(&file, &config).unwrap();
    let file = file.to_str().unwrap();

    // The apply that turns signing on: refused unsigned, and signed by a
    // key it does not list; accepted signed by an admin it lists.
    let reply = reply_of(&cluster, None, &["apply", "-f", file]);
    assert_eq!(kind(&reply), Some(RejectKind::Unsigned), "{reply:?}");
    let reply = reply_of(&cluster, Some(&eve.file), &["apply", "-f", file]);
    assert_eq!(kind(&reply), Some(RejectKind::UnknownKey), "{reply:?}");
    let reply = reply_of(&cluster, Some(&dee.file), &["apply", "-f", file]);
    assert_eq!(kind(&reply), Some(RejectKind::Unauthorised), "{reply:?}");
    let none = cluster.try_history("web").await;
    assert!(
        none.is_err_and(|e| e.contains("UnknownService")),
        "nothing applied yet"
    );
    let reply = reply_of(&cluster, Some(&ana.file), &["apply", "-f", file]);
    assert_eq!(kind(&reply), None, "{reply:?}");
    // Recorded in the log, with the admin who signed it.
    let (event, meta) = security_defined(&cluster);
    assert!(
        matches!(&event, Event::SecurityDefined { security, .. } if security.require_signed_commands && security.operators.len() == 2),
        "{event:?}"
    );
    assert_eq!(meta.actor.as_deref(), Some("ana"));
    assert_eq!(meta.signed.map(|s| s.operator), Some("ana".to_owned()));
    let before = cluster.events("web").await.len();

    // Each refusal, by its kind.
    let deploy = ["deploy", "web", "--image", "v1", "--no-wait"];
    let reply = reply_of(&cluster, None, &deploy);
    assert_eq!(kind(&reply), Some(RejectKind::Unsigned), "{reply:?}");
    let reply = reply_of(&cluster, Some(&eve.file), &deploy);
    assert_eq!(kind(&reply), Some(RejectKind::UnknownKey), "{reply:?}");
    let mut tampered = signed_deploy(&dee.secret, "c-tampered", "v1", "dee", mentat_bus::now_ms());
    tampered["image"] = "v666".into();
    let reply = send(&cluster, "deploy", &tampered).await;
    assert_eq!(kind(&reply), Some(RejectKind::BadSignature), "{reply:?}");
    let six_minutes_ago = mentat_bus::now_ms() - 6 * 60 * 1000;
    let stale = signed_deploy(&dee.secret, "c-stale", "v1", "dee", six_minutes_ago);
    let reply = send(&cluster, "deploy", &stale).await;
    assert_eq!(kind(&reply), Some(RejectKind::StaleSignature), "{reply:?}");
    let reply = reply_of(&cluster, Some(&dee.file), &["stop", "web:web-1"]);
    assert_eq!(kind(&reply), Some(RejectKind::Unauthorised), "{reply:?}");
    // Nothing changed, and a refused command did not take its id: the same
    // id, properly signed, is carried out.
    assert_eq!(cluster.events("web").await.len(), before);

    // A deploy signed by dee that says it is from mallory.
    let forged = signed_deploy(
        &dee.secret,
        "c-tampered",
        "v1",
        "mallory",
        mentat_bus::now_ms(),
    );
    let first = send(&cluster, "deploy", &forged).await;
    let Reply::Accepted {
        deployment_id: Some(id),
        ..
    } = &first
    else {
        panic!("a signed deploy is accepted: {first:?}\n{}", cluster.logs());
    };
    // Sent again with the same id: the first reply, nothing more.
    let again = send(&cluster, "deploy", &forged).await;
    assert_eq!(again, first);
    let record = cluster
        .wait_deployment("web", id, Duration::from_secs(120))
        .await;
    assert_eq!(record.actor.as_deref(), Some("dee"), "{record:?}");
    let envelopes = cluster.envelopes("web").await;
    let started: Vec<_> = envelopes
        .iter()
        .filter(|e| matches!(e.event, Event::DeploymentStarted { .. }))
        .collect();
    assert_eq!(started.len(), 1, "the replay started nothing");
    let meta = &started[0].meta;
    assert_eq!(meta.actor.as_deref(), Some("dee"));
    let signed = meta.signed.as_ref().expect("the signature is in the log");
    assert_eq!(
        (signed.operator.as_str(), signed.key.as_str()),
        ("dee", dee.public.as_str())
    );
    signed
        .verify(meta.causation_id.as_deref().unwrap())
        .expect("the audit can check it again");

    // mt history names the proven actor too, and says it was signed.
    let history = cluster.mt_ok(&["history", "web"]);
    assert!(
        history.contains("dee") && !history.contains("mallory"),
        "{history}"
    );
    let events = cluster.mt_ok(&["history", "web", "--events"]);
    assert!(events.contains("signed_by=deployer:"), "{events}");
    let why = cluster.mt_ok(&["audit", "why", id]);
    assert!(
        why.contains("by dee (signed_by=deployer:"),
        "mt audit why names the signed actor: {why}"
    );
}

on_both_databases!(every_refusal_by_kind_and_the_proven_actor);

/// With `--admin-key`, only that key turns signing on, whoever the block
/// lists; and it keeps the way back once signing is on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_planners_admin_key_alone_turns_signing_on() {
    // Given a key made beforehand and given to the planner
    let dir = tempfile::tempdir().unwrap();
    let root = SigningKey::from_bytes(&[42; 32]);
    let root_file = dir.path().join("root.key");
    std::fs::write(&root_file, format!("{}\n", hex::encode(root.to_bytes()))).unwrap();
    let mut perms = std::fs::metadata(&root_file).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    std::fs::set_permissions(&root_file, perms).unwrap();
    let root_hex = mentat_domain::audit::key_hex(&root.verifying_key());
    let planner = ["--admin-key", root_hex.as_str()];
    let args = Args {
        planner: &planner,
        ..Args::default()
    };
    let cluster = Cluster::start_with(Db::Sqlite, args).await;
    // And a block whose only admin is ana
    let ana = key_new(&cluster, "ana");
    let file = cluster.path().join("mentat.yaml");
    std::fs::write(&file, secured_config(&[("ana", &ana, "admin")])).unwrap();
    let file = file.to_str().unwrap();
    // When ana turns it on: refused, she is no admin key of the planner's
    let reply = reply_of(&cluster, Some(&ana.file), &["apply", "-f", file]);
    assert_eq!(kind(&reply), Some(RejectKind::Unauthorised), "{reply:?}");
    // When the planner's key does: applied, recorded under that key
    let reply = reply_of(&cluster, Some(&root_file), &["apply", "-f", file]);
    assert_eq!(kind(&reply), None, "{reply:?}");
    let (_, meta) = security_defined(&cluster);
    assert_eq!(meta.actor, Some(security::admin_key_name(&root_hex)));
    // And from then on ana, an admin of the block, may stop, unsigned may not
    let reply = reply_of(&cluster, None, &["stop", "web:web-1"]);
    assert_eq!(kind(&reply), Some(RejectKind::Unsigned), "{reply:?}");
    let reply = reply_of(&cluster, Some(&ana.file), &["stop", "web:web-1"]);
    assert_eq!(
        kind(&reply),
        Some(RejectKind::UnknownInstance),
        "authorised, then decided: {reply:?}"
    );
}
