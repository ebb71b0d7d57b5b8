//! Every message on the bus has a JSON Schema in `schemas/`, generated from
//! its Rust type. This test fails when a schema and its type drift; run it
//! with `UPDATE_SCHEMAS=1` to regenerate the files after changing a type.

use std::path::PathBuf;

use mentat_domain::audit::{
    Anchor, AnchorReply, AnchorRequest, AuditExportQuery, AuditExportReply, AuditKeyQuery,
    AuditKeyReply, AuditStateQuery, AuditStateReply, AuditVerifyQuery, AuditVerifyReply,
    LoggedEvent,
};
use mentat_domain::command::{
    Apply, Control, Deploy, HistoryQuery, HistoryReply, ReleaseHosts, Reply, Rollback, Route,
    Spawn, StatusQuery, StatusReply, Stop, Weight,
};
use mentat_domain::event::{Event, EventEnvelope, Fact, HostHeartbeat, RouterHeartbeat};
use mentat_domain::release::{
    ReleaseCreate, ReleaseDeploy, ReleasePromote, ReleaseQuery, ReleaseReply, ReleaseRollback,
};
use mentat_domain::replay::{AuditReplayQuery, AuditReplayReply, ReplayReport};
use mentat_domain::rollout::{RolloutControl, RolloutQuery, RolloutReply, RolloutStart};
use mentat_domain::stats::TrafficStats;
use schemars::schema_for;

fn schemas() -> Vec<(&'static str, schemars::Schema)> {
    vec![
        ("cmd.deploy.json", schema_for!(Deploy)),
        ("cmd.rollback.json", schema_for!(Rollback)),
        ("cmd.apply.json", schema_for!(Apply)),
        ("cmd.control.json", schema_for!(Control)),
        ("cmd.weight.json", schema_for!(Weight)),
        ("cmd.route.json", schema_for!(Route)),
        ("cmd.spawn.json", schema_for!(Spawn)),
        ("cmd.stop.json", schema_for!(Stop)),
        ("cmd.release_hosts.json", schema_for!(ReleaseHosts)),
        ("reply.json", schema_for!(Reply)),
        ("query.status.json", schema_for!(StatusQuery)),
        ("query.status.reply.json", schema_for!(StatusReply)),
        ("query.history.json", schema_for!(HistoryQuery)),
        ("query.history.reply.json", schema_for!(HistoryReply)),
        ("event.json", schema_for!(Event)),
        ("event-envelope.json", schema_for!(EventEnvelope)),
        ("fact.json", schema_for!(Fact)),
        ("host-heartbeat.json", schema_for!(HostHeartbeat)),
        ("router-heartbeat.json", schema_for!(RouterHeartbeat)),
        ("stats.json", schema_for!(TrafficStats)),
        ("query.audit_verify.json", schema_for!(AuditVerifyQuery)),
        (
            "query.audit_verify.reply.json",
            schema_for!(AuditVerifyReply),
        ),
        ("query.audit_export.json", schema_for!(AuditExportQuery)),
        (
            "query.audit_export.reply.json",
            schema_for!(AuditExportReply),
        ),
        ("query.audit_state.json", schema_for!(AuditStateQuery)),
        ("query.audit_state.reply.json", schema_for!(AuditStateReply)),
        ("query.audit_key.json", schema_for!(AuditKeyQuery)),
        ("query.audit_key.reply.json", schema_for!(AuditKeyReply)),
        ("audit.anchor.json", schema_for!(AnchorRequest)),
        ("audit.anchor.reply.json", schema_for!(AnchorReply)),
        ("anchor.json", schema_for!(Anchor)),
        ("logged-event.json", schema_for!(LoggedEvent)),
        ("audit-replay.json", schema_for!(ReplayReport)),
        ("query.audit_replay.json", schema_for!(AuditReplayQuery)),
        (
            "query.audit_replay.reply.json",
            schema_for!(AuditReplayReply),
        ),
        ("cmd.rollout_start.json", schema_for!(RolloutStart)),
        ("cmd.rollout_control.json", schema_for!(RolloutControl)),
        ("query.rollout.json", schema_for!(RolloutQuery)),
        ("query.rollout.reply.json", schema_for!(RolloutReply)),
        ("cmd.release_create.json", schema_for!(ReleaseCreate)),
        ("cmd.release_deploy.json", schema_for!(ReleaseDeploy)),
        ("cmd.release_promote.json", schema_for!(ReleasePromote)),
        ("cmd.release_rollback.json", schema_for!(ReleaseRollback)),
        ("query.release.json", schema_for!(ReleaseQuery)),
        ("query.release.reply.json", schema_for!(ReleaseReply)),
    ]
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

#[test]
fn schemas_match_the_types() {
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
    let mut drifted = Vec::new();
    for (file, schema) in schemas() {
        let path = dir().join(file);
        let generated = serde_json::to_string_pretty(&schema).expect("schema serialises") + "\n";
        if update {
            std::fs::write(&path, &generated).expect("write schema");
            continue;
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        if on_disk != generated {
            drifted.push(file);
        }
    }
    assert!(
        drifted.is_empty(),
        "schemas differ from their Rust types: {drifted:?}; regenerate with UPDATE_SCHEMAS=1 cargo test -p mentat-domain --test schemas"
    );
}

#[test]
fn every_schema_file_is_generated() {
    let known: Vec<&str> = schemas().iter().map(|(f, _)| *f).collect();
    for entry in std::fs::read_dir(dir()).expect("schemas dir") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name.ends_with(".json") {
            assert!(
                known.contains(&name.as_str()),
                "{name} is not generated from any type"
            );
        }
    }
}
