use serde::Serialize;
use serde_json::json;

use super::*;
use crate::command::{Apply, Deploy, Stop};

const NOW: i64 = 1_800_000_000_000;

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn operator(name: &str, n: u8, role: Role) -> Operator {
    Operator {
        name: name.into(),
        key: key_hex(&key(n).verifying_key()),
        role,
    }
}

/// ana (key 1) admin, olu (key 2) operator, dee (key 3) deployer.
fn security(required: bool) -> SecuritySpec {
    SecuritySpec {
        require_signed_commands: required,
        operators: vec![
            operator("ana", 1, Role::Admin),
            operator("olu", 2, Role::Operator),
            operator("dee", 3, Role::Deployer),
        ],
    }
}

fn deploy(actor: &str) -> Deploy {
    Deploy {
        command_id: Some("c-1".into()),
        signature: None,
        service: "web".into(),
        image: "v2".into(),
        strategy: None,
        override_rollout: false,
        actor: Some(actor.into()),
        reason: None,
    }
}

fn stop() -> Stop {
    Stop {
        command_id: Some("c-2".into()),
        signature: None,
        service: "web".into(),
        instance: "web-1".into(),
        actor: None,
        reason: None,
    }
}

fn apply(security: Option<SecuritySpec>) -> Apply {
    Apply {
        command_id: Some("c-3".into()),
        signature: None,
        services: Vec::new(),
        cluster: None,
        security,
        notify: None,
        environments: None,
        source: None,
        actor: None,
        reason: None,
    }
}

/// `cmd` as sent on `verb`, signed with key `n` at `at_ms` when given: the
/// command as the planner decodes it, and the digest of what arrived.
fn sent<C: Serialize + serde::de::DeserializeOwned>(
    cmd: &C,
    verb: &str,
    signer: Option<(u8, i64)>,
    wrap: fn(C) -> Command,
) -> (Command, String) {
    let mut value = serde_json::to_value(cmd).expect("a command serialises");
    if let Some((n, at_ms)) = signer {
        let signature = sign(&key(n), verb, &value, at_ms).expect("has a command id");
        value["signature"] = serde_json::to_value(signature).expect("serialises");
    }
    let digest = content_sha256(&value);
    let decoded: C = serde_json::from_value(value).expect("decodes");
    (wrap(decoded), digest)
}

fn set_signature(command: &mut Command, sig: CommandSignature) {
    match command {
        Command::Deploy(c) => c.signature = Some(sig),
        Command::Stop(c) => c.signature = Some(sig),
        Command::Apply(c) => c.signature = Some(sig),
        other => panic!("not used here: {other:?}"),
    }
}

/// Trust in `current` alone, the planner given no admin key.
fn only(current: Option<&SecuritySpec>) -> Trust<'_> {
    Trust {
        current,
        admin_keys: &[],
    }
}

fn kind(r: Result<Option<SignedBy>, Rejection>) -> Option<RejectKind> {
    r.err().map(|e| e.kind)
}

#[test]
fn the_canonical_content_sorts_keys_drops_the_signature_and_ignores_the_encoding() {
    // Given the same fields written in two orders, one with a signature
    let a = json!({"service":"web","image":"v2","command_id":"c","n":{"b":1,"a":[true,null]}});
    let b = json!({"n":{"a":[true,null],"b":1},"command_id":"c","signature":{"key":"k"},"image":"v2","service":"web"});
    // Then both give the same canonical text, keys sorted, no whitespace
    assert_eq!(
        canonical(&a),
        r#"{"command_id":"c","image":"v2","n":{"a":[true,null],"b":1},"service":"web"}"#
    );
    assert_eq!(canonical(&a), canonical(&b));
    assert_eq!(content_sha256(&a), content_sha256(&b));
    // And MessagePack decoded to a value gives the same as JSON
    let packed = rmp_serde::to_vec_named(&a).expect("packs");
    let unpacked: serde_json::Value = rmp_serde::from_slice(&packed).expect("unpacks");
    assert_eq!(canonical(&unpacked), canonical(&a));
    // And a changed value, or a nested `signature`, changes it
    let c = json!({"service":"web","image":"v3","command_id":"c","n":{"b":1,"a":[true,null]}});
    assert_ne!(content_sha256(&a), content_sha256(&c));
    let nested = json!({"x":{"signature":1}});
    assert_eq!(canonical(&nested), r#"{"x":{"signature":1}}"#);
    // And strings are escaped as JSON does
    assert_eq!(canonical(&json!({"a":"\"\n"})), r#"{"a":"\"\n"}"#);
}

#[test]
fn a_signed_command_proves_its_operator_whatever_its_actor_says() {
    // Given signing required, and a deploy by dee claiming to be ana
    let s = security(true);
    let (cmd, digest) = sent(&deploy("ana"), "deploy", Some((3, NOW)), Command::Deploy);
    // When it is authorised
    let signed = authorise(only(Some(&s)), &cmd, &digest, NOW + 1000)
        .expect("authorised")
        .expect("signed");
    // Then the proven sender is dee, as a deployer
    assert_eq!(
        (signed.operator.as_str(), signed.role),
        ("dee", Role::Deployer)
    );
    assert_eq!(signed.verb, "deploy");
    assert_eq!(signed.at_ms, NOW);
    // And the record verifies again later with the command id, and only with it
    signed.verify("c-1").expect("verifies");
    assert!(signed.verify("c-9").is_err());
}

#[test]
fn each_refusal_has_its_kind() {
    let s = security(true);
    // Unsigned, while required
    let (cmd, digest) = sent(&deploy("x"), "deploy", None, Command::Deploy);
    assert_eq!(
        kind(authorise(only(Some(&s)), &cmd, &digest, NOW)),
        Some(RejectKind::Unsigned)
    );
    // Signed by a key nobody listed
    let (cmd, digest) = sent(&deploy("x"), "deploy", Some((9, NOW)), Command::Deploy);
    assert_eq!(
        kind(authorise(only(Some(&s)), &cmd, &digest, NOW)),
        Some(RejectKind::UnknownKey)
    );
    // Changed after it was signed: the digest of what arrived differs
    let (cmd, _) = sent(&deploy("x"), "deploy", Some((3, NOW)), Command::Deploy);
    let other = content_sha256(&json!({"service":"web","image":"v666"}));
    assert_eq!(
        kind(authorise(only(Some(&s)), &cmd, &other, NOW)),
        Some(RejectKind::BadSignature)
    );
    // Signed as deploy, sent as another verb
    let (cmd, digest) = sent(&stop(), "deploy", Some((1, NOW)), Command::Stop);
    assert_eq!(
        kind(authorise(only(Some(&s)), &cmd, &digest, NOW)),
        Some(RejectKind::BadSignature)
    );
    // More than 5 minutes either way; exactly 5 minutes is still fresh
    let (cmd, digest) = sent(&deploy("x"), "deploy", Some((3, NOW)), Command::Deploy);
    for (now, expected) in [
        (
            NOW + MAX_SIGNATURE_AGE_MS + 1,
            Some(RejectKind::StaleSignature),
        ),
        (
            NOW - MAX_SIGNATURE_AGE_MS - 1,
            Some(RejectKind::StaleSignature),
        ),
        (NOW + MAX_SIGNATURE_AGE_MS, None),
        (NOW - MAX_SIGNATURE_AGE_MS, None),
    ] {
        assert_eq!(
            kind(authorise(only(Some(&s)), &cmd, &digest, now)),
            expected,
            "{now}"
        );
    }
    // A deployer may not stop; an admin may
    let (cmd, digest) = sent(&stop(), "stop", Some((3, NOW)), Command::Stop);
    let e = authorise(only(Some(&s)), &cmd, &digest, NOW).expect_err("refused");
    assert_eq!(e.kind, RejectKind::Unauthorised);
    assert!(e.reason.contains("dee is a deployer"), "{e}");
    let (cmd, digest) = sent(&stop(), "stop", Some((1, NOW)), Command::Stop);
    assert!(authorise(only(Some(&s)), &cmd, &digest, NOW).is_ok());
    // A signed command without a command id is invalid
    let mut no_id = deploy("x");
    no_id.command_id = None;
    let mut cmd = Command::Deploy(no_id);
    set_signature(
        &mut cmd,
        CommandSignature {
            key: s.operators[0].key.clone(),
            at_ms: NOW,
            signature: "00".repeat(64),
        },
    );
    assert_eq!(
        kind(authorise(only(Some(&s)), &cmd, "", NOW)),
        Some(RejectKind::Invalid)
    );
}

#[test]
fn without_required_signing_unsigned_commands_pass_and_signatures_are_still_checked() {
    for current in [None, Some(security(false))] {
        let (cmd, digest) = sent(&stop(), "stop", None, Command::Stop);
        assert_eq!(
            authorise(only(current.as_ref()), &cmd, &digest, NOW),
            Ok(None)
        );
        let (cmd, digest) = sent(&stop(), "stop", Some((3, NOW)), Command::Stop);
        let expected = match current {
            None => RejectKind::UnknownKey,
            Some(_) => RejectKind::Unauthorised,
        };
        assert_eq!(
            kind(authorise(only(current.as_ref()), &cmd, &digest, NOW)),
            Some(expected)
        );
    }
}

#[test]
fn the_roles_form_a_ladder() {
    let table = [
        ("deploy", Role::Deployer),
        ("rollback", Role::Deployer),
        ("pause", Role::Deployer),
        ("resume", Role::Deployer),
        ("abort", Role::Deployer),
        ("promote", Role::Deployer),
        ("rollout_pause", Role::Deployer),
        ("rollout_resume", Role::Deployer),
        ("rollout_cancel", Role::Deployer),
        ("release_deploy", Role::Deployer),
        ("release_promote", Role::Deployer),
        ("release_rollback", Role::Deployer),
        ("release_create", Role::Operator),
        ("apply", Role::Operator),
        ("rollout_start", Role::Operator),
        ("rollout_rollback_all", Role::Operator),
        ("weight", Role::Operator),
        ("spawn", Role::Operator),
        ("release_hosts", Role::Operator),
        ("stop", Role::Admin),
        ("route", Role::Admin),
    ];
    assert_eq!(table.len(), Command::VERBS.len());
    for (verb, least) in table {
        assert_eq!(Role::least_for(verb), least, "{verb}");
        for role in [Role::Deployer, Role::Operator, Role::Admin] {
            assert_eq!(role.may(verb), role >= least, "{role} {verb}");
        }
    }
    assert!(
        !Role::Operator.may("launch"),
        "an unknown verb needs an admin"
    );
}

#[test]
fn only_an_admin_changes_the_security_block() {
    let s = security(true);
    // An operator may apply the block as it is, not a changed one
    let (cmd, digest) = sent(
        &apply(Some(s.clone())),
        "apply",
        Some((2, NOW)),
        Command::Apply,
    );
    assert!(authorise(only(Some(&s)), &cmd, &digest, NOW).is_ok());
    let (cmd, digest) = sent(&apply(None), "apply", Some((2, NOW)), Command::Apply);
    assert!(authorise(only(Some(&s)), &cmd, &digest, NOW).is_ok());
    let off = security(false);
    let (cmd, digest) = sent(
        &apply(Some(off.clone())),
        "apply",
        Some((2, NOW)),
        Command::Apply,
    );
    let e = authorise(only(Some(&s)), &cmd, &digest, NOW).expect_err("refused");
    assert_eq!(e.kind, RejectKind::Unauthorised);
    // An admin may turn it off
    let (cmd, digest) = sent(&apply(Some(off)), "apply", Some((1, NOW)), Command::Apply);
    assert!(authorise(only(Some(&s)), &cmd, &digest, NOW).is_ok());
}

#[test]
fn the_apply_that_turns_signing_on_is_signed_by_an_admin_it_lists() {
    let on = security(true);
    for current in [None, Some(security(false))] {
        let current = current.as_ref();
        // Unsigned: refused, nothing recorded
        let (cmd, digest) = sent(&apply(Some(on.clone())), "apply", None, Command::Apply);
        assert_eq!(
            kind(authorise(only(current), &cmd, &digest, NOW)),
            Some(RejectKind::Unsigned)
        );
        // An attacker's key, not in the block it brings
        let mut theirs = on.clone();
        theirs.operators[0] = operator("eve", 7, Role::Admin);
        let (cmd, digest) = sent(
            &apply(Some(on.clone())),
            "apply",
            Some((7, NOW)),
            Command::Apply,
        );
        assert_eq!(
            kind(authorise(only(current), &cmd, &digest, NOW)),
            Some(RejectKind::UnknownKey)
        );
        // A deployer it lists
        let (cmd, digest) = sent(
            &apply(Some(on.clone())),
            "apply",
            Some((3, NOW)),
            Command::Apply,
        );
        assert_eq!(
            kind(authorise(only(current), &cmd, &digest, NOW)),
            Some(RejectKind::Unauthorised)
        );
        // An admin it lists
        let (cmd, digest) = sent(
            &apply(Some(on.clone())),
            "apply",
            Some((1, NOW)),
            Command::Apply,
        );
        let signed = authorise(only(current), &cmd, &digest, NOW).expect("authorised");
        assert_eq!(signed.map(|s| s.operator), Some("ana".to_owned()));
        // And an attacker who lists their own key gets in only where nothing
        // was locked yet: the owner's next apply (an admin of theirs) wins back
        let (cmd, digest) = sent(
            &apply(Some(theirs.clone())),
            "apply",
            Some((7, NOW)),
            Command::Apply,
        );
        assert!(authorise(only(current), &cmd, &digest, NOW).is_ok());
        let (cmd, digest) = sent(
            &apply(Some(theirs)),
            "apply",
            Some((7, NOW)),
            Command::Apply,
        );
        assert_eq!(
            kind(authorise(only(Some(&on)), &cmd, &digest, NOW)),
            Some(RejectKind::UnknownKey),
            "once on, only listed keys count"
        );
    }
}

#[test]
fn an_impossible_block_names_its_field() {
    let paths =
        |s: &SecuritySpec| -> Vec<String> { s.validate().into_iter().map(|e| e.path).collect() };
    assert!(paths(&security(true)).is_empty());
    let mut s = security(true);
    s.operators[1].key = "zz".into();
    s.operators[2].name = " dee".into();
    assert_eq!(
        paths(&s),
        ["security.operators[1].key", "security.operators[2].name"]
    );
    let mut s = security(false);
    s.operators[1].name = "ana".into();
    s.operators[2].key = s.operators[1].key.clone();
    s.operators[0].key = s.operators[0].key.to_uppercase();
    assert_eq!(
        paths(&s),
        [
            "security.operators[0].key",
            "security.operators[1].name",
            "security.operators[2].key"
        ]
    );
    let mut s = security(true);
    s.operators.retain(|o| o.role != Role::Admin);
    assert_eq!(paths(&s), ["security.require_signed_commands"]);
    assert!(paths(&security(false)).is_empty());
}

#[test]
fn the_planners_admin_keys_alone_turn_signing_on_and_can_always_change_it() {
    let on = security(true);
    let root = vec![key_hex(&key(8).verifying_key())];
    let trust = |current| Trust {
        current,
        admin_keys: &root,
    };
    // An admin the block lists is not enough to turn it on
    let (cmd, digest) = sent(
        &apply(Some(on.clone())),
        "apply",
        Some((1, NOW)),
        Command::Apply,
    );
    let e = authorise(trust(None), &cmd, &digest, NOW).expect_err("refused");
    assert_eq!(e.kind, RejectKind::Unauthorised);
    assert!(e.reason.contains("--admin-key"), "{e}");
    // The planner's key is, listed or not
    let (cmd, digest) = sent(
        &apply(Some(on.clone())),
        "apply",
        Some((8, NOW)),
        Command::Apply,
    );
    let signed = authorise(trust(None), &cmd, &digest, NOW)
        .expect("authorised")
        .expect("signed");
    assert_eq!(signed.operator, admin_key_name(&root[0]));
    assert_eq!(signed.role, Role::Admin);
    // And once on, it still changes the block (the way back)
    let (cmd, digest) = sent(
        &apply(Some(security(false))),
        "apply",
        Some((8, NOW)),
        Command::Apply,
    );
    assert!(authorise(trust(Some(&on)), &cmd, &digest, NOW).is_ok());
    // While a listed deployer signing with its own key stays a deployer
    let (cmd, digest) = sent(&stop(), "stop", Some((3, NOW)), Command::Stop);
    assert_eq!(
        kind(authorise(trust(Some(&on)), &cmd, &digest, NOW)),
        Some(RejectKind::Unauthorised)
    );
}
