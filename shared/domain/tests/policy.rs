//! Given/when/then scenarios for a service's `audit` policy: a command
//! without the actor or the reason the service requires is rejected,
//! naming the missing field, and changes nothing; the policy itself is
//! validated when it is applied.

mod common;

use common::Sim;
use mentat_domain::command::{Apply, Command, Control, Deploy, RejectKind, Rejection, Rollback};
use mentat_domain::spec::{AuditSpec, ServiceSpec};

fn apply(spec: ServiceSpec, actor: Option<&str>) -> Command {
    Command::Apply(Apply {
        command_id: None,
        signature: None,
        services: vec![spec],
        source: None,
        actor: actor.map(str::to_owned),
        reason: None,
        cluster: None,
        security: None,
        notify: None,
        environments: None,
    })
}

/// `web` (three replicas serving v1) with `audit` as its policy.
fn serving_with(audit: AuditSpec) -> Sim {
    let mut sim = Sim::new(3, 1);
    sim.deploy("v1").expect("v1 accepted");
    sim.run(80);
    let spec = ServiceSpec {
        audit,
        ..sim.world.services["web"].spec.clone().expect("web defined")
    };
    sim.command(&apply(spec, Some("ana")))
        .expect("policy applied");
    sim
}

fn missing<T: std::fmt::Debug>(result: Result<T, Rejection>, field: &str) {
    let rejection = result.expect_err("rejected");
    assert_eq!(rejection.kind, RejectKind::Invalid, "{rejection}");
    assert!(
        rejection.reason.starts_with(&format!("{field}: ")),
        "`{field}` not named first in {rejection}"
    );
}

fn deploy(actor: Option<&str>) -> Command {
    Command::Deploy(Deploy {
        command_id: None,
        signature: None,
        service: "web".into(),
        image: "v2".into(),
        strategy: None,
        override_rollout: false,
        actor: actor.map(str::to_owned),
        reason: None,
    })
}

fn rollback(reason: Option<&str>) -> Command {
    Command::Rollback(Rollback {
        command_id: None,
        signature: None,
        service: "web".into(),
        actor: Some("ana".into()),
        reason: reason.map(str::to_owned),
    })
}

#[test]
fn require_actor_rejects_a_command_with_no_actor_or_a_blank_one() {
    // Given web requires an actor
    let mut sim = serving_with(AuditSpec {
        require_actor: true,
        ..AuditSpec::default()
    });
    let before = sim.log.len();
    // When a deploy comes with none, or a blank one, it is rejected naming `actor`
    missing(sim.command(&deploy(None)), "actor");
    missing(sim.command(&deploy(Some("  "))), "actor");
    // And nothing was recorded
    assert_eq!(sim.log.len(), before);
    // When it names one, it is accepted
    sim.command(&deploy(Some("ana"))).expect("accepted");
}

#[test]
fn require_reason_for_rejects_only_the_verbs_listed() {
    // Given web requires a reason for rollback and abort
    let mut sim = serving_with(AuditSpec {
        require_reason_for: vec!["rollback".into(), "abort".into()],
        ..AuditSpec::default()
    });
    // A deploy needs none
    sim.command(&deploy(Some("ana"))).expect("deploy accepted");
    sim.run(80);
    // A rollback without one is rejected naming `reason`, and with one accepted
    missing(sim.command(&rollback(None)), "reason");
    assert!(!sim.in_flight(), "nothing started");
    sim.command(&rollback(Some("bad release")))
        .expect("rollback accepted");
    // An abort of that rollback without one is rejected too
    let abort = |reason: Option<&str>| {
        Command::Abort(Control {
            command_id: None,
            signature: None,
            service: "web".into(),
            actor: Some("ana".into()),
            reason: reason.map(str::to_owned),
        })
    };
    missing(sim.command(&abort(None)), "reason");
    assert!(sim.in_flight(), "the rollback goes on");
    sim.command(&abort(Some("wrong call")))
        .expect("abort accepted");
}

#[test]
fn a_policy_naming_no_command_is_refused_at_apply() {
    let mut sim = Sim::new(3, 1);
    let spec = ServiceSpec {
        audit: AuditSpec {
            require_reason_for: vec!["rollback".into(), "reboot".into(), "rollback".into()],
            ..AuditSpec::default()
        },
        ..sim.world.services["web"].spec.clone().expect("web defined")
    };
    let rejection = sim.command(&apply(spec, Some("ana"))).expect_err("refused");
    assert_eq!(rejection.kind, RejectKind::Invalid, "{rejection}");
    assert!(
        rejection
            .reason
            .contains("services.web.audit.require_reason_for[1]: `reboot` is not a command"),
        "{rejection}"
    );
    assert!(
        rejection
            .reason
            .contains("services.web.audit.require_reason_for[2]: `rollback` is listed twice"),
        "{rejection}"
    );
}

#[test]
fn a_definition_without_a_policy_serialises_as_before() {
    let sim = Sim::new(3, 1);
    let spec = sim.world.services["web"].spec.clone().expect("web defined");
    let json = serde_json::to_value(&spec).expect("json");
    assert!(json.get("audit").is_none(), "{json}");
}
