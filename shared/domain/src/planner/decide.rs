//! Decisions: what the planner does about a command, and what it does next
//! given the state of a service and the time.
//!
//! [`handle`] turns a command into events or a rejection. [`react`] looks at
//! one service and returns the next events of the deployment in flight (or
//! of keeping the service at its declared size): it is level-triggered, so a
//! planner restarted from the log simply calls it again and carries on.

use crate::command::{Apply, Command, Deploy, RejectKind, Rejection, Rollback};
use crate::event::{Event, EventEnvelope, Meta, Plan};
use crate::limits::{check_command, shown};
use crate::planner::routes::route_change;
use crate::planner::state::{Phase, ServiceState, World};
use crate::planner::steady::{reconcile, serving, stop_drained, stop_retired};
use crate::planner::{canary, control, deployment, hosts, traffic};
use crate::spec::{ServiceSpec, Strategy};
use crate::{environment, release, rollout};

/// Settings of the planner that are not part of any service's spec.
/// Recorded by each leader in its `PlannerLeaderElected`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct Settings {
    /// How long to wait for a router's drained fact before stopping a replica anyway.
    pub drain_timeout_ms: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            drain_timeout_ms: 30_000,
        }
    }
}

/// Events to append to one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Append {
    /// Stream (service name or hosts).
    pub stream: String,
    /// Events, in order.
    pub events: Vec<Event>,
}

/// What a command decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Append these and reply accepted.
    Accept {
        /// Appends, one per stream.
        appends: Vec<Append>,
        /// Deployment started, if any.
        deployment_id: Option<String>,
        /// What was done, for the reply.
        message: String,
    },
    /// Reply rejected; nothing changes.
    Reject(Rejection),
}

/// A rejection of the given kind, as a decision.
pub(crate) fn reject(kind: RejectKind, reason: impl Into<String>) -> Decision {
    Decision::Reject(Rejection::new(kind, reason))
}

/// Decide about a command. `deployment_id` is the id a deployment started by
/// this command will have; `now_ms` is the time the command is handled.
/// A command out of the bounds of [`crate::limits`] is rejected first.
pub fn handle(world: &World, command: &Command, deployment_id: &str, now_ms: i64) -> Decision {
    let command = &command.normalised();
    if let Err(rejection) = check_command(command) {
        return Decision::Reject(rejection);
    }
    if let Err(rejection) = check_policy(world, command) {
        return Decision::Reject(rejection);
    }
    match command {
        Command::Apply(apply) => handle_apply(world, apply),
        Command::Deploy(deploy) => handle_deploy(world, deploy, deployment_id, now_ms),
        Command::Rollback(rollback) => handle_rollback(world, rollback, deployment_id, now_ms),
        Command::Pause(c) => control::pause(world, c),
        Command::Resume(c) => control::resume(world, c, now_ms),
        Command::Abort(c) => control::abort(world, c, "aborted", now_ms),
        Command::Promote(c) => control::promote(world, c),
        Command::Weight(c) => traffic::weight(world, c),
        Command::Route(c) => traffic::route(world, c),
        Command::Spawn(c) => traffic::spawn(world, c),
        Command::Stop(c) => traffic::stop(world, c),
        Command::ReleaseHosts(c) => hosts::release(world, c),
        Command::RolloutStart(c) => rollout::start(world, c, deployment_id, now_ms),
        Command::RolloutPause(c)
        | Command::RolloutResume(c)
        | Command::RolloutCancel(c)
        | Command::RolloutRollbackAll(c) => rollout::control(world, command.verb(), c, now_ms),
        Command::ReleaseCreate(c) => release::create(world, c, deployment_id, now_ms),
        Command::ReleaseDeploy(c) => release::deploy(world, c, deployment_id, now_ms),
        Command::ReleasePromote(c) => release::promote(world, c, deployment_id, now_ms),
        Command::ReleaseRollback(c) => release::rollback(world, c, deployment_id, now_ms),
    }
}

/// The `audit` policy of every service the command is about, as defined
/// when it comes: a missing actor, or a missing reason for a verb that
/// needs one, rejects it (kind `invalid`, naming the field).
fn check_policy(world: &World, command: &Command) -> Result<(), Rejection> {
    let (actor, reason) = command.actor_reason();
    let verb = command.verb();
    for service in command.services() {
        let Some(spec) = world.services.get(service).and_then(|s| s.spec.as_ref()) else {
            continue;
        };
        if let Some(field) = spec.audit.missing(verb, actor, reason) {
            let rule = match field {
                "actor" => "audit.require_actor".to_owned(),
                _ => format!("audit.require_reason_for lists `{verb}`"),
            };
            return Err(Rejection::invalid(format!(
                "{field}: `{}` requires one ({rule}); give --{field}",
                shown(service)
            )));
        }
    }
    Ok(())
}

fn handle_apply(world: &World, apply: &Apply) -> Decision {
    if apply.services.is_empty() {
        return Decision::Reject(Rejection::invalid("the config defines no services"));
    }
    let mut errors: Vec<String> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for spec in &apply.services {
        if !seen.insert(spec.name.as_str()) {
            errors.push(format!("services.{}: defined twice", shown(&spec.name)));
        }
        if spec.name.contains('@') {
            errors.push(format!(
                "services.{}: a service name has no `@`; list its environments under `environments:`",
                shown(&spec.name)
            ));
        }
    }
    if let Some(envs) = &apply.environments {
        errors.extend(environment::validate(envs));
    }
    let declared = apply.environments.as_ref().or(world.environments.as_ref());
    let services = match environment::expand(&apply.services, declared) {
        Ok(services) => services,
        Err(problems) => {
            errors.extend(problems);
            Vec::new()
        }
    };
    for spec in &services {
        errors.extend(spec.validate().iter().map(ToString::to_string));
    }
    if let Some(cluster) = &apply.cluster {
        errors.extend(cluster.validate().iter().map(ToString::to_string));
    }
    if let Some(security) = &apply.security {
        errors.extend(security.validate().iter().map(ToString::to_string));
    }
    if let Some(notify) = &apply.notify {
        errors.extend(
            crate::notify::validate(notify)
                .iter()
                .map(ToString::to_string),
        );
    }
    if !errors.is_empty() {
        return reject(
            RejectKind::Invalid,
            format!(
                "nothing applied; the config has {} error(s):\n{}",
                errors.len(),
                errors.join("\n")
            ),
        );
    }
    let changed: Vec<&ServiceSpec> = services
        .iter()
        .filter(|spec| world.services.get(&spec.name).and_then(|s| s.spec.as_ref()) != Some(spec))
        .collect();
    let mut appends: Vec<Append> = changed
        .iter()
        .map(|spec| Append {
            stream: spec.name.clone(),
            events: vec![Event::ServiceDefined {
                spec: (*spec).clone(),
                source: apply.source.clone(),
            }],
        })
        .collect();
    let mut names: Vec<&str> = changed.iter().map(|s| s.name.as_str()).collect();
    // A file without a cluster (or security) block leaves those settings as
    // they are. Who may change the security block was checked before
    // (`security::authorise`).
    let mut settings = Vec::new();
    if let Some(cluster) = apply.cluster.filter(|c| world.cluster != Some(*c)) {
        settings.push(Event::ClusterDefined {
            cluster,
            source: apply.source.clone(),
        });
        names.push("the cluster settings");
    }
    if let Some(security) = apply
        .security
        .as_ref()
        .filter(|s| world.security.as_ref() != Some(*s))
    {
        settings.push(Event::SecurityDefined {
            security: security.clone(),
            source: apply.source.clone(),
        });
        names.push("the security settings");
    }
    if let Some(environments) = apply
        .environments
        .as_ref()
        .filter(|e| world.environments.as_ref() != Some(*e))
    {
        settings.push(Event::EnvironmentsDefined {
            environments: environments.clone(),
            source: apply.source.clone(),
        });
        names.push("the environments");
    }
    if !settings.is_empty() {
        appends.push(Append {
            stream: crate::event::CLUSTER_STREAM.to_owned(),
            events: settings,
        });
    }
    if let Some(webhooks) = apply.notify.as_ref().filter(|n| **n != world.notify) {
        appends.push(Append {
            stream: crate::event::NOTIFY_STREAM.to_owned(),
            events: vec![Event::NotifyDefined {
                webhooks: webhooks.clone(),
                source: apply.source.clone(),
            }],
        });
        names.push("the webhooks");
    }
    let message = if names.is_empty() {
        "no change: every service is already defined this way".to_owned()
    } else {
        format!("applied {}", names.join(", "))
    };
    Decision::Accept {
        appends,
        deployment_id: None,
        message,
    }
}

/// The service's state and spec, or the reason a command about it is
/// rejected because the service is not defined.
pub(crate) fn defined<'w>(
    world: &'w World,
    service: &str,
) -> Result<(&'w ServiceState, &'w ServiceSpec), Rejection> {
    let Some((state, spec)) = world
        .services
        .get(service)
        .and_then(|s| s.spec.as_ref().map(|spec| (s, spec)))
    else {
        let known: Vec<&str> = world
            .services
            .iter()
            .filter(|(_, s)| s.spec.is_some())
            .map(|(n, _)| n.as_str())
            .collect();
        return Err(Rejection::new(RejectKind::UnknownService, format!(
            "unknown service `{service}`: apply a config that defines it first (mt apply -f mentat.yaml); known services: {}",
            if known.is_empty() { "none".to_owned() } else { known.join(", ") }
        )));
    };
    Ok((state, spec))
}

/// The service's state and spec, or the reason a new deployment of it is rejected.
fn deployable<'w>(
    world: &'w World,
    service: &str,
) -> Result<(&'w ServiceState, &'w ServiceSpec), Rejection> {
    let (state, spec) = defined(world, service)?;
    if let Some(d) = &state.deployment {
        return Err(Rejection::new(
            RejectKind::DeploymentInFlight,
            format!(
                "deployment {} of {service} (image {}) is in flight; wait for it to finish",
                d.id, d.image
            ),
        ));
    }
    // A spec recorded before the bounds of `limits` may be out of them.
    if let Some(error) = spec.validate().first() {
        return Err(Rejection::invalid(format!(
            "the spec of {service} in the log is not valid ({error}); apply a corrected config first"
        )));
    }
    if !world.hosts.values().any(|h| h.live) {
        return Err(Rejection::new(
            RejectKind::NoCapacity,
            "no executor host is alive to run replicas: start mentat-executor (mt up starts one)",
        ));
    }
    Ok((state, spec))
}

fn handle_deploy(world: &World, deploy: &Deploy, deployment_id: &str, now_ms: i64) -> Decision {
    let (state, spec) = match deployable(world, &deploy.service) {
        Ok(found) => found,
        Err(reason) => return Decision::Reject(reason),
    };
    if deploy.image.trim().is_empty() {
        return Decision::Reject(Rejection::invalid("image must not be empty"));
    }
    let strategy = deploy.strategy.unwrap_or(spec.deploy.strategy);
    if let Some((field, message)) = spec.deploy.unusable_for(strategy) {
        return reject(
            RejectKind::Invalid,
            format!(
                "cannot deploy {} with strategy {strategy}: services.{}.deploy.{field} {message}",
                deploy.service, deploy.service
            ),
        );
    }
    if strategy == Strategy::Canary && state.image.is_none() {
        return reject(RejectKind::WrongPhase, format!(
            "{} has no serving version for a canary to run beside; deploy the first image with --strategy rolling or blue-green",
            deploy.service
        ));
    }
    let overridden = match rollout::guard_deploy(
        world,
        &deploy.service,
        deploy.override_rollout,
        deployment_id,
    ) {
        Ok(recorded) => recorded,
        Err(rejection) => return Decision::Reject(rejection),
    };
    let up_to_date = state.image.as_deref() == Some(deploy.image.as_str())
        && serving(state).filter(|r| r.image == deploy.image).count() as u32 >= spec.replicas;
    if up_to_date {
        return reject(
            RejectKind::NothingToDo,
            format!(
                "{} already runs image {} on all {} replicas; nothing to do",
                deploy.service, deploy.image, spec.replicas
            ),
        );
    }
    // Recorded as a release derived from the environment's live one.
    let derived =
        match release::derive_from_deploy(world, spec, &deploy.image, deployment_id, now_ms) {
            Ok(derived) => derived,
            Err(rejection) => return Decision::Reject(rejection),
        };
    let decision = start_deployment(
        state,
        spec,
        &deploy.image,
        strategy,
        false,
        deployment_id,
        now_ms,
    );
    let decision = match (decision, derived) {
        (
            Decision::Accept {
                mut appends,
                deployment_id,
                message,
            },
            Some((derived, tag)),
        ) => {
            appends.push(derived);
            Decision::Accept {
                appends,
                deployment_id,
                message: format!("{message}; recorded as release {tag}"),
            }
        }
        (decision, _) => decision,
    };
    match (decision, overridden) {
        (
            Decision::Accept {
                mut appends,
                deployment_id,
                message,
            },
            Some(recorded),
        ) => {
            appends.push(recorded);
            Decision::Accept {
                appends,
                deployment_id,
                message: format!("{message}; outside the rollout in flight (overridden)"),
            }
        }
        (decision, _) => decision,
    }
}

fn handle_rollback(
    world: &World,
    rollback: &Rollback,
    deployment_id: &str,
    now_ms: i64,
) -> Decision {
    if let Ok((state, _)) = defined(world, &rollback.service) {
        if state.deployment.is_some() {
            let control = crate::command::Control {
                command_id: rollback.command_id.clone(),
                signature: rollback.signature.clone(),
                service: rollback.service.clone(),
                actor: rollback.actor.clone(),
                reason: rollback.reason.clone(),
            };
            return control::abort(world, &control, "rolled back", now_ms);
        }
    }
    let (state, spec) = match deployable(world, &rollback.service) {
        Ok(found) => found,
        Err(reason) => return Decision::Reject(reason),
    };
    let Some(previous) = state.previous_image() else {
        return reject(
            RejectKind::NothingToDo,
            format!(
                "{} has no previous image in its history to roll back to",
                rollback.service
            ),
        );
    };
    // A rollback goes straight to every replica: a canary of the old image
    // would wait for a decision nobody needs.
    let strategy = match spec.deploy.strategy {
        Strategy::Canary => Strategy::Rolling,
        other => other,
    };
    start_deployment(state, spec, previous, strategy, true, deployment_id, now_ms)
}

/// The `DeploymentStarted` of `spec`'s service to `image`, as a decision.
pub(crate) fn start_deployment(
    state: &ServiceState,
    spec: &ServiceSpec,
    image: &str,
    strategy: Strategy,
    rollback: bool,
    deployment_id: &str,
    now_ms: i64,
) -> Decision {
    let event = deployment_started(
        state,
        spec,
        image,
        strategy,
        rollback,
        deployment_id,
        now_ms,
    );
    Decision::Accept {
        appends: vec![Append {
            stream: spec.name.clone(),
            events: vec![event],
        }],
        deployment_id: Some(deployment_id.to_owned()),
        message: format!(
            "{} of {} to {image} started ({strategy})",
            if rollback { "rollback" } else { "deployment" },
            spec.name
        ),
    }
}

/// The `DeploymentStarted` of `spec`'s service to `image`.
pub(crate) fn deployment_started(
    state: &ServiceState,
    spec: &ServiceSpec,
    image: &str,
    strategy: Strategy,
    rollback: bool,
    deployment_id: &str,
    now_ms: i64,
) -> Event {
    let d = &spec.deploy;
    let steps = d.canary_steps();
    let top = steps
        .iter()
        .map(|s| s.percent)
        .max()
        .unwrap_or(d.canary_percent);
    let plan = Plan {
        canary_replicas: canary::replicas_for(spec.replicas, top),
        canary_percent: d.canary_percent,
        steps: d.steps.clone(),
        standby_secs: d.standby_secs,
        progress_deadline_secs: d.progress_deadline_secs,
        health_timeout_secs: d.health_timeout_secs,
        bake_secs: spec.health.bake_secs,
        thresholds: spec.health.thresholds.enabled,
        release: None,
    };
    Event::DeploymentStarted {
        deployment_id: deployment_id.to_owned(),
        service: spec.name.clone(),
        image: image.to_owned(),
        previous_image: state.image.clone(),
        strategy,
        batch_size: d.max_unavailable.max(1),
        replicas: spec.replicas,
        auto_revert: d.auto_revert,
        rollback,
        at_ms: now_ms,
        plan,
    }
}
/// Most decisions [`react`] chains before it stops; a decision that keeps
/// producing events beyond this is a bug, and the rest waits for the next call.
const MAX_CHAIN: usize = 64;

/// The next events for `service` at `now_ms`, as one decision: each step's
/// events are folded into a copy of the state and the next step decided on
/// that, until nothing follows (so a switch of traffic and the events it
/// leads to are appended together). Empty when nothing is to be done until
/// another fact arrives or [`next_deadline`] passes.
///
/// The steps are chained on [`World::for_deciding`], a copy without the
/// history no decision reads; debug builds (every test) check that the
/// whole world decides the same.
pub fn react(world: &World, service: &str, now_ms: i64, settings: Settings) -> Vec<Event> {
    let events = chain(world, service, now_ms, settings, World::for_deciding);
    debug_assert_eq!(
        events,
        chain(world, service, now_ms, settings, World::clone),
        "deciding on a copy without history changed the decision"
    );
    events
}

/// [`react`]'s chain of steps, each folded into a copy of `world` made by
/// `copy` before the next is decided.
fn chain(
    world: &World,
    service: &str,
    now_ms: i64,
    settings: Settings,
    copy: fn(&World) -> World,
) -> Vec<Event> {
    let mut scratch: Option<World> = None;
    let mut events = Vec::new();
    for _ in 0..MAX_CHAIN {
        let step = react_once(scratch.as_ref().unwrap_or(world), service, now_ms, settings);
        if step.is_empty() {
            break;
        }
        let next = scratch.get_or_insert_with(|| copy(world));
        for event in &step {
            next.apply(&EventEnvelope {
                id: String::new(),
                position: next.position,
                stream: service.to_owned(),
                version: 0,
                schema_version: crate::event::SCHEMA_VERSION,
                recorded_at_ms: now_ms,
                meta: Meta::default(),
                event: event.clone(),
            });
        }
        events.extend(step);
    }
    events
}

fn react_once(world: &World, service: &str, now_ms: i64, settings: Settings) -> Vec<Event> {
    let Some(state) = world.services.get(service) else {
        return Vec::new();
    };
    let Some(spec) = state.spec.as_ref() else {
        return Vec::new();
    };
    let mut events = hosts::react(world, state, spec);
    if events.is_empty() {
        events = match &state.deployment {
            Some(d) => deployment::react(world, state, spec, d, now_ms),
            None => reconcile(world, state, spec),
        };
    }
    if events.is_empty() {
        events.extend(route_change(state, spec, &hosts::unavailable(world)));
    }
    if events.is_empty() {
        events.extend(stop_retired(state, spec));
    }
    if events.is_empty() {
        events.extend(stop_drained(world, state, spec, now_ms, settings));
    }
    events
}

/// The earliest time at which [`react`] may decide something without a new fact.
pub fn next_deadline(world: &World, service: &str, settings: Settings) -> Option<i64> {
    let state = world.services.get(service)?;
    if state
        .spec
        .as_ref()
        .is_some_and(|spec| hosts::pending(world, state, spec))
    {
        // Host loss has something to do now (a hold was released, room appeared).
        return Some(i64::MIN);
    }
    let d = state.deployment.as_ref().filter(|d| d.paused.is_none());
    let batch_deadline = d
        .and_then(|d| d.batch.as_ref())
        .filter(|b| !b.switched)
        .map(|b| b.deadline_ms);
    let phase_deadline = d.and_then(deployment::deadline);
    let timed_wait = d.and_then(deployment::timed_wait_until);
    let drain_deadline = state
        .replicas
        .values()
        .filter(|r| r.phase == Phase::Draining)
        .filter_map(|r| r.drain_since_ms)
        .map(|t| t + settings.drain_timeout_ms)
        .min();
    [batch_deadline, phase_deadline, timed_wait, drain_deadline]
        .into_iter()
        .flatten()
        .min()
}
