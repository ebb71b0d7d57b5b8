//! The release commands: create, deploy, promote, roll back; and the
//! release `mt deploy` of one service is recorded as.
//!
//! Each checks everything before deciding anything: an unknown tag,
//! environment or service, a release that lacks a service the environment
//! runs, a protected environment's rules, all reject the command (by kind,
//! naming the culprit) and nothing is recorded.

use std::collections::BTreeMap;

use crate::command::{RejectKind, Rejection};
use crate::environment::{self, EnvironmentSpec};
use crate::event::{Event, RELEASES_STREAM};
use crate::limits::{secs_to_ms, shown, MAX_IMAGE_BYTES};
use crate::planner::decide::deployment_started;
use crate::planner::state::VerdictKind;
use crate::planner::{Append, Decision, ServiceState, World};
use crate::release::react::{turn_back_all, TurnBack};
use crate::release::{
    diff, DeployStarted, How, Member, ReleaseCreate, ReleaseDeploy, ReleasePromote,
    ReleaseRollback, Snapshot, Step,
};
use crate::spec::{ServiceSpec, Strategy};

/// True when `tag` is usable: 1-128 characters of A-Z, a-z, 0-9, `.`, `_`,
/// `-` and `+`, starting with a letter or digit.
pub fn is_valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && tag.len() <= super::MAX_TAG_BYTES
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'))
}

fn reject(kind: RejectKind, reason: impl Into<String>) -> Decision {
    Decision::Reject(Rejection::new(kind, reason))
}

/// The environment `name` as declared (the default one alone when no
/// block was applied), or the rejection naming it.
fn environment(world: &World, name: &str) -> Result<EnvironmentSpec, Rejection> {
    let declared = environment::declared_or_default(world.environments.as_ref());
    declared.get(name).cloned().ok_or_else(|| {
        Rejection::new(
            RejectKind::UnknownEnvironment,
            format!(
                "unknown environment `{}`; declared: {}",
                shown(name),
                declared.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        )
    })
}

/// The release tagged `tag`, or the rejection naming it.
fn release<'w>(world: &'w World, tag: &str) -> Result<&'w Snapshot, Rejection> {
    world
        .releases
        .by_tag
        .get(tag)
        .map(|r| &r.snapshot)
        .ok_or_else(|| {
            Rejection::new(
                RejectKind::UnknownRelease,
                format!(
                    "unknown release `{}`: mt release list shows them",
                    shown(tag)
                ),
            )
        })
}

/// `release_create`: the snapshot, from the file given or what is applied.
pub fn create(world: &World, c: &ReleaseCreate, deployment_id: &str, now_ms: i64) -> Decision {
    match snapshot(world, c, now_ms) {
        Err(rejection) => Decision::Reject(rejection),
        Ok(snapshot) => {
            let tag = snapshot.tag.clone();
            let hash = snapshot.hash.clone();
            let created = Event::ReleaseCreated(snapshot.clone());
            let Some(env) = &c.deploy_to else {
                return Decision::Accept {
                    appends: vec![Append {
                        stream: RELEASES_STREAM.to_owned(),
                        events: vec![created],
                    }],
                    deployment_id: None,
                    message: format!("release {tag} created ({})", &hash[..12]),
                };
            };
            let deploy = ReleaseDeploy {
                command_id: None,
                signature: None,
                tag: tag.clone(),
                environment: env.clone(),
                force: false,
                actor: c.actor.clone(),
                reason: c.reason.clone(),
            };
            let mut scratch = world.clone();
            scratch
                .releases
                .apply(&created, now_ms, &crate::Meta::default());
            match deploy_checked(&scratch, &deploy, deployment_id, now_ms, How::Deploy) {
                Decision::Accept {
                    mut appends,
                    deployment_id,
                    message,
                } => {
                    appends[0].events.insert(0, created);
                    Decision::Accept {
                        appends,
                        deployment_id,
                        message: format!("release {tag} created ({}); {message}", &hash[..12]),
                    }
                }
                rejected => rejected,
            }
        }
    }
}

fn snapshot(world: &World, c: &ReleaseCreate, now_ms: i64) -> Result<Snapshot, Rejection> {
    if !is_valid_tag(&c.tag) {
        return Err(Rejection::invalid(format!(
            "tag: `{}` must be 1-128 characters of A-Z, a-z, 0-9, ., _, - and +, starting with a letter or digit",
            shown(&c.tag)
        )));
    }
    if world.releases.by_tag.contains_key(&c.tag) {
        return Err(Rejection::new(
            RejectKind::TagTaken,
            format!(
                "release {} exists: a release never changes; create another tag",
                c.tag
            ),
        ));
    }
    if let Some(env) = &c.deploy_to {
        environment(world, env)?;
    }
    let services: Vec<ServiceSpec> = match &c.services {
        Some(file) => {
            if let Some(envs) = &c.environments {
                if let Some(problem) = environment::validate(envs).into_iter().next() {
                    return Err(Rejection::invalid(problem));
                }
            }
            let declared = c.environments.as_ref().or(world.environments.as_ref());
            let expanded = environment::expand(file, declared)
                .map_err(|p| Rejection::invalid(p.join("; ")))?;
            if let Some(e) = expanded.iter().flat_map(|s| s.validate()).next() {
                return Err(Rejection::invalid(e.to_string()));
            }
            expanded
        }
        None => world
            .services
            .values()
            .filter_map(|s| s.spec.clone())
            .collect(),
    };
    if services.is_empty() {
        return Err(Rejection::invalid(
            "services: none defined; apply a service file or give one with -f",
        ));
    }
    let mut images = BTreeMap::new();
    for (service, image) in &c.images {
        let known = services
            .iter()
            .any(|s| environment::split(&s.name).0 == service);
        if !known {
            return Err(Rejection::new(
                RejectKind::UnknownService,
                format!(
                    "images: no service `{}` in the release to give an image to",
                    shown(service)
                ),
            ));
        }
        if image.trim().is_empty() || image.len() > MAX_IMAGE_BYTES {
            return Err(Rejection::invalid(format!(
                "images.{service}: must be 1-{MAX_IMAGE_BYTES} bytes"
            )));
        }
        images.insert(service.clone(), image.clone());
    }
    for spec in &services {
        let service = environment::split(&spec.name).0;
        if images.contains_key(service) {
            continue;
        }
        // What the service serves: in the default environment first.
        let serving = world
            .services
            .get(service)
            .and_then(|s| s.image.clone())
            .or_else(|| world.services.get(&spec.name).and_then(|s| s.image.clone()));
        match serving {
            Some(image) => {
                images.insert(service.to_owned(), image);
            }
            None => {
                return Err(Rejection::invalid(format!(
                    "images.{service}: {service} serves no image yet; give --image {service}=REF"
                )))
            }
        }
    }
    let mut services = services;
    services.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Snapshot {
        tag: c.tag.clone(),
        description: c.description.clone(),
        hash: diff::hash(&services, &images),
        services,
        images,
        derived_from: None,
        at_ms: now_ms,
    })
}

/// `release_deploy`.
pub fn deploy(world: &World, c: &ReleaseDeploy, deployment_id: &str, now_ms: i64) -> Decision {
    deploy_checked(world, c, deployment_id, now_ms, How::Deploy)
}

/// The rules of the environment `c` deploys to, then [`start`].
fn deploy_checked(
    world: &World,
    c: &ReleaseDeploy,
    deployment_id: &str,
    now_ms: i64,
    how: How,
) -> Decision {
    let snapshot = match release(world, &c.tag) {
        Ok(s) => s,
        Err(r) => return Decision::Reject(r),
    };
    let env = match environment(world, &c.environment) {
        Ok(e) => e,
        Err(r) => return Decision::Reject(r),
    };
    let blank = c.reason.as_deref().is_none_or(|r| r.trim().is_empty());
    if env.protected && blank {
        return reject(
            RejectKind::Invalid,
            format!(
                "reason: {} is protected: a deployment to it needs --reason",
                c.environment
            ),
        );
    }
    if c.force && blank {
        return reject(RejectKind::Invalid, "reason: --force needs --reason");
    }
    let mut forced = false;
    if let (true, Some(from)) = (env.protected, &env.promote_from) {
        let went_through = world
            .releases
            .environments
            .get(from)
            .is_some_and(|e| e.served.contains(&c.tag));
        if !went_through {
            if !c.force {
                return reject(
                    RejectKind::NotPromoted,
                    format!(
                        "{} is protected: release {} never served in {from} (its promote_from); deploy it there first, or give --force with a reason",
                        c.environment, c.tag
                    ),
                );
            }
            forced = true;
        }
    }
    start(
        world,
        snapshot,
        &c.environment,
        how,
        forced,
        deployment_id,
        now_ms,
    )
}

/// `release_promote`: the release serving in `from`, soaked there, to `to`.
pub fn promote(world: &World, c: &ReleasePromote, deployment_id: &str, now_ms: i64) -> Decision {
    if let Err(r) = release(world, &c.tag).and(environment(world, &c.from)) {
        return Decision::Reject(r);
    }
    let target = match environment(world, &c.to) {
        Ok(e) => e,
        Err(r) => return Decision::Reject(r),
    };
    let Some((live, since)) = world.releases.live(&c.from).filter(|(t, _)| *t == c.tag) else {
        return reject(
            RejectKind::WrongPhase,
            format!(
                "release {} is not deployed in {}; only a release serving there is promoted from it",
                c.tag, c.from
            ),
        );
    };
    let soak = secs_to_ms(target.min_soak_secs);
    if target.promote_from.as_deref() == Some(c.from.as_str()) && now_ms - since < soak {
        return reject(
            RejectKind::WrongPhase,
            format!(
                "release {live} has served in {} for {}s; {} needs {}s (min_soak_secs)",
                c.from,
                (now_ms - since).max(0) / 1000,
                c.to,
                target.min_soak_secs
            ),
        );
    }
    if let Some(service) = breached_since(world, &c.from, live, since) {
        return reject(
            RejectKind::WrongPhase,
            format!(
                "release {live} breached a threshold in {} ({service}) since it serves there; not promoted",
                c.from
            ),
        );
    }
    let deploy = ReleaseDeploy {
        command_id: None,
        signature: None,
        tag: c.tag.clone(),
        environment: c.to.clone(),
        force: false,
        actor: c.actor.clone(),
        reason: c.reason.clone(),
    };
    deploy_checked(world, &deploy, deployment_id, now_ms, How::Promote)
}

/// A service of `environment` whose release image breached a threshold
/// since `since`.
fn breached_since(world: &World, environment: &str, tag: &str, since: i64) -> Option<String> {
    let snapshot = &world.releases.by_tag.get(tag)?.snapshot;
    snapshot.members(environment).find_map(|spec| {
        let image = snapshot.image_of(&spec.name)?;
        let v = world.services.get(&spec.name)?.verdicts.get(image)?;
        (matches!(v.kind, VerdictKind::Breach(_)) && v.since_ms >= since).then(|| spec.name.clone())
    })
}

/// `release_rollback`: while the previous release is warm, one switch
/// back to it; otherwise a deployment of the release named (or the one
/// before the live one).
pub fn rollback(world: &World, c: &ReleaseRollback, deployment_id: &str, now_ms: i64) -> Decision {
    if let Err(r) = environment(world, &c.environment) {
        return Decision::Reject(r);
    }
    if c.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
        return reject(RejectKind::Invalid, "reason: a rollback needs --reason");
    }
    if let Some(to) = &c.to {
        if let Err(r) = release(world, to) {
            return Decision::Reject(r);
        }
    }
    let env = world.releases.environments.get(&c.environment);
    if let Some(d) = env.and_then(|e| e.in_flight.as_ref()) {
        let warm = d.switched_at_ms.is_some()
            && d.started.previous.is_some()
            && (c.to.is_none() || c.to == d.started.previous);
        if !warm {
            return reject(
                RejectKind::DeploymentInFlight,
                format!(
                    "release {} is being deployed to {}; roll back once it switched (to {}), or wait for it",
                    d.started.tag,
                    c.environment,
                    d.started.previous.as_deref().unwrap_or("nothing")
                ),
            );
        }
        let appends = turn_back_all(world, d, TurnBack::RolledBack, "rolled back", now_ms);
        return Decision::Accept {
            appends,
            deployment_id: Some(d.started.deployment_id.clone()),
            message: format!(
                "{} switched back to {} (warm); {} rolled back",
                c.environment,
                d.started.previous.as_deref().unwrap_or_default(),
                d.started.tag
            ),
        };
    }
    let live = world.releases.live(&c.environment).map(|(t, _)| t);
    let to = c.to.clone().or_else(|| {
        env.and_then(|e| e.served.iter().rev().find(|t| Some(t.as_str()) != live))
            .cloned()
    });
    let Some(to) = to else {
        return reject(
            RejectKind::NothingToDo,
            format!("{} has no previous release to roll back to", c.environment),
        );
    };
    let Ok(snapshot) = release(world, &to) else {
        return reject(
            RejectKind::UnknownRelease,
            format!("unknown release `{to}`"),
        );
    };
    start(
        world,
        snapshot,
        &c.environment,
        How::Rollback,
        false,
        deployment_id,
        now_ms,
    )
}

/// Deploy `snapshot` to `environment`: its definitions in place where no
/// new process is needed, and a gated blue-green deployment of every
/// member that needs new replicas; `ReleaseDeployStarted` with them, in
/// one transaction. With nothing to start, the release switches at once.
pub(crate) fn start(
    world: &World,
    snapshot: &Snapshot,
    environment: &str,
    how: How,
    forced: bool,
    deployment_id: &str,
    now_ms: i64,
) -> Decision {
    let members: Vec<&ServiceSpec> = snapshot.members(environment).collect();
    if members.is_empty() {
        return reject(
            RejectKind::Invalid,
            format!("release {} has no service in {environment}", snapshot.tag),
        );
    }
    // The environment's services that the release lacks.
    let missing: Vec<&str> = world
        .services
        .iter()
        .filter(|(_, s)| {
            s.spec
                .as_ref()
                .is_some_and(|s| s.route.environment() == environment)
        })
        .filter(|(key, _)| !members.iter().any(|m| &m.name == *key))
        .map(|(key, _)| key.as_str())
        .collect();
    if !missing.is_empty() {
        return reject(
            RejectKind::UnknownService,
            format!(
                "release {} lacks {}, which {environment} runs; create a release that has every service",
                snapshot.tag,
                missing.join(", ")
            ),
        );
    }
    let live = world.releases.live(environment).map(|(t, _)| t.to_owned());
    if live.as_deref() == Some(snapshot.tag.as_str()) {
        return reject(
            RejectKind::NothingToDo,
            format!("{environment} serves release {} already", snapshot.tag),
        );
    }
    if let Some(d) = world.releases.in_flight(environment) {
        return reject(
            RejectKind::DeploymentInFlight,
            format!(
                "release {} is being deployed to {environment}; wait for it",
                d.started.tag
            ),
        );
    }
    let mut appends = Vec::new();
    let mut list = Vec::new();
    let mut needs_host = false;
    for (i, spec) in members.iter().enumerate() {
        let image = snapshot.image_of(&spec.name).unwrap_or_default().to_owned();
        let empty = ServiceState::default();
        let state = world.services.get(&spec.name).unwrap_or(&empty);
        if let Some(d) = &state.deployment {
            return reject(
                RejectKind::DeploymentInFlight,
                format!(
                    "deployment {} of {} is in flight; wait for it to finish",
                    d.id, spec.name
                ),
            );
        }
        let mut events = Vec::new();
        let replaces = state.spec.clone().filter(|s| s != *spec);
        if state.spec.as_ref() != Some(*spec) {
            events.push(Event::ServiceDefined {
                spec: (*spec).clone(),
                source: Some(format!("release {}", snapshot.tag)),
            });
        }
        let member_id =
            needs_processes(state, spec, &image).then(|| format!("{deployment_id}.{}", i + 1));
        if let Some(id) = &member_id {
            needs_host = true;
            let mut started =
                deployment_started(state, spec, &image, Strategy::BlueGreen, false, id, now_ms);
            if let Event::DeploymentStarted { plan, .. } = &mut started {
                plan.release = Some(deployment_id.to_owned());
            }
            events.push(started);
        }
        if !events.is_empty() {
            appends.push(Append {
                stream: spec.name.clone(),
                events,
            });
        }
        list.push(Member {
            service: spec.name.clone(),
            image,
            deployment_id: member_id,
            replaces,
        });
    }
    if needs_host && !world.hosts.values().any(|h| h.live) {
        return reject(
            RejectKind::NoCapacity,
            "no executor host is alive to run replicas: start mentat-executor",
        );
    }
    let starting = list.iter().filter(|m| m.deployment_id.is_some()).count();
    let mut events = vec![Event::ReleaseDeployStarted(DeployStarted {
        deployment_id: deployment_id.to_owned(),
        tag: snapshot.tag.clone(),
        environment: environment.to_owned(),
        previous: live,
        members: list,
        how,
        forced,
        at_ms: now_ms,
    })];
    if starting == 0 {
        // Definitions only: they took effect as they were recorded.
        let step = Step {
            deployment_id: deployment_id.to_owned(),
            tag: snapshot.tag.clone(),
            environment: environment.to_owned(),
            at_ms: now_ms,
        };
        events.push(Event::ReleaseSwitched(step.clone()));
        events.push(Event::ReleaseDeployCompleted(step));
    }
    appends.insert(
        0,
        Append {
            stream: RELEASES_STREAM.to_owned(),
            events,
        },
    );
    Decision::Accept {
        appends,
        deployment_id: Some(deployment_id.to_owned()),
        message: format!(
            "release {} to {environment} started: {starting} of {} service(s) start new replicas{}",
            snapshot.tag,
            members.len(),
            if forced { " (forced)" } else { "" }
        ),
    }
}

/// True when `spec` with `image` needs new processes: anything a replica
/// was started with differs (image, command, arguments, environment), or
/// the count.
fn needs_processes(state: &ServiceState, spec: &ServiceSpec, image: &str) -> bool {
    let Some(current) = &state.spec else {
        return true;
    };
    state.image.as_deref() != Some(image)
        || current.run != spec.run
        || current.replicas != spec.replicas
        || state
            .replicas
            .values()
            .any(|r| r.image != image && !r.spawned)
}

/// `mt deploy` of one service, in an environment that serves a release:
/// the release it is recorded as (derived from the live one, this service
/// on `image`) and its tag; `None` when the environment serves no release.
/// Rejected while a release deployment is in flight there.
pub fn derive_from_deploy(
    world: &World,
    spec: &ServiceSpec,
    image: &str,
    deployment_id: &str,
    now_ms: i64,
) -> Result<Option<(Append, String)>, Rejection> {
    let env = spec.route.environment();
    if let Some(d) = world.releases.in_flight(env) {
        return Err(Rejection::new(
            RejectKind::DeploymentInFlight,
            format!(
                "release {} is being deployed to {env}; wait for it",
                d.started.tag
            ),
        ));
    }
    let Some((live, _)) = world.releases.live(env) else {
        return Ok(None);
    };
    let Some(base) = world.releases.by_tag.get(live) else {
        return Ok(None);
    };
    let mut n = world.releases.order.len() + 1;
    let tag = loop {
        let tag = format!("{live}+{n}");
        if !world.releases.by_tag.contains_key(&tag) && is_valid_tag(&tag) {
            break tag;
        }
        n += 1;
        if n > world.releases.order.len() + 1000 {
            return Ok(None);
        }
    };
    let service = environment::split(&spec.name).0.to_owned();
    let mut snapshot = base.snapshot.clone();
    snapshot.images.insert(service, image.to_owned());
    if let Some(s) = snapshot.services.iter_mut().find(|s| s.name == spec.name) {
        *s = spec.clone();
    }
    snapshot.tag = tag.clone();
    snapshot.description = Some(format!("mt deploy {} --image {image}", spec.name));
    snapshot.derived_from = Some(live.to_owned());
    snapshot.hash = diff::hash(&snapshot.services, &snapshot.images);
    snapshot.at_ms = now_ms;
    let started = DeployStarted {
        deployment_id: format!("{deployment_id}.release"),
        tag: tag.clone(),
        environment: env.to_owned(),
        previous: Some(live.to_owned()),
        members: vec![Member {
            service: spec.name.clone(),
            image: image.to_owned(),
            deployment_id: Some(deployment_id.to_owned()),
            replaces: None,
        }],
        how: How::Derived,
        forced: false,
        at_ms: now_ms,
    };
    Ok(Some((
        Append {
            stream: RELEASES_STREAM.to_owned(),
            events: vec![
                Event::ReleaseCreated(snapshot),
                Event::ReleaseDeployStarted(started),
            ],
        },
        tag,
    )))
}
