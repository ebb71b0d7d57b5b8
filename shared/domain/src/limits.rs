//! Bounds on everything a command or a service spec carries, in one place.
//!
//! Every number and string that arrives from outside has a bound, checked
//! when it arrives: [`check_command`] before [`crate::planner::handle`]
//! decides anything, [`crate::spec::ServiceSpec::validate`] for each service
//! of an apply, and the planner's intake refuses a message longer than
//! [`MAX_COMMAND_BYTES`] before decoding it. A command out of its bounds is
//! rejected as [`RejectKind::Invalid`] with a reason that names the field
//! and the bound, and never echoes an oversized value back.
//!
//! The bounds keep the log, the replies and the planner's memory small
//! whatever a sender tries: no value is ever used to size an allocation.
//! Events recorded before these bounds may still hold larger numbers; the
//! planner's arithmetic on them saturates (see [`secs_to_ms`]) and no batch
//! places more than [`MAX_REPLICAS`] replicas.
//!
//! `schemas/README.md` lists these bounds as a table; keep the two in step.

use crate::command::{Command, RejectKind, Rejection};

/// Largest command message the planner decodes, in bytes (JSON or MessagePack).
pub const MAX_COMMAND_BYTES: usize = 256 * 1024;

/// Most replicas a service may declare.
pub const MAX_REPLICAS: u32 = 1000;
/// Highest percentage (canary shares, error rates).
pub const MAX_PERCENT: u32 = 100;
/// Highest router weight an operator can give an instance.
pub const MAX_WEIGHT: u32 = 100;
/// Longest duration in seconds (timeouts, bake, standby, windows): 24 h.
pub const MAX_DURATION_SECS: u64 = 24 * 60 * 60;
/// Longest duration in milliseconds (probe interval, latency threshold): 24 h.
pub const MAX_DURATION_MS: u64 = MAX_DURATION_SECS * 1000;
/// Most consecutive probes `healthy_after` and `unhealthy_after` may ask for.
pub const MAX_CONSECUTIVE_PROBES: u32 = 100;
/// Highest `min_requests` of a traffic window.
pub const MAX_MIN_REQUESTS: u64 = 1_000_000;
/// Highest `max_degradation_percent` (1000: ten times worse than the baseline).
pub const MAX_DEGRADATION_PERCENT: u32 = 1000;
/// Highest `idle_probe_rps`.
pub const MAX_IDLE_PROBE_RPS: u32 = 100;
/// Most canary steps.
pub const MAX_CANARY_STEPS: usize = 20;
/// Most services in one apply.
pub const MAX_SERVICES_PER_APPLY: usize = 100;

/// Longest name: services, environments, host names, spawned instance ids
/// (a DNS label).
pub const MAX_NAME_BYTES: usize = 63;
/// Longest service reference a command names: a name, `@` and an
/// environment name (`web@staging`).
pub const MAX_SERVICE_REF_BYTES: usize = 2 * MAX_NAME_BYTES + 1;
/// Longest instance id a command names (a replica id is its service's
/// name, `-` and a number).
pub const MAX_INSTANCE_BYTES: usize = 128;
/// Longest image reference.
pub const MAX_IMAGE_BYTES: usize = 512;
/// Longest `command_id`.
pub const MAX_COMMAND_ID_BYTES: usize = 128;
/// Longest `actor`.
pub const MAX_ACTOR_BYTES: usize = 128;
/// Longest `reason`.
pub const MAX_REASON_BYTES: usize = 1024;
/// Longest `source` of an apply (the config file's path).
pub const MAX_SOURCE_BYTES: usize = 1024;
/// Longest health probe path.
pub const MAX_HEALTH_PATH_BYTES: usize = 512;
/// Longest sticky-session cookie or header name.
pub const MAX_STICKY_KEY_BYTES: usize = 128;
/// Most entries of `run.command`, and of `run.args`.
pub const MAX_ARGV_ENTRIES: usize = 64;
/// Most bytes of `run.command`, and of `run.args`, all entries together.
pub const MAX_ARGV_BYTES: usize = 8 * 1024;
/// Most variables in `run.env`.
pub const MAX_ENV_ENTRIES: usize = 64;
/// Most bytes of `run.env`, names and values together.
pub const MAX_ENV_BYTES: usize = 16 * 1024;
/// Most `{image}` placeholders in `run`, so substituting an image cannot
/// make a replica's start request much larger than its spec.
pub const MAX_IMAGE_PLACEHOLDERS: usize = 8;

/// Most labels a service may carry.
pub const MAX_LABELS: usize = 16;
/// Longest label key or value (and each side of a rollout's selector).
pub const MAX_LABEL_BYTES: usize = 63;
/// Most targets of one fleet rollout.
pub const MAX_ROLLOUT_TARGETS: usize = 1000;
/// Most services a rollout may name with `services`.
pub const MAX_ROLLOUT_SERVICES: usize = MAX_ROLLOUT_TARGETS;
/// Most waves of one fleet rollout.
pub const MAX_WAVES: usize = 20;
/// Longest selector of a rollout (`key=value`).
pub const MAX_SELECTOR_BYTES: usize = 2 * MAX_LABEL_BYTES + 1;

/// Longest router id, host name or listen address in a router heartbeat.
pub const MAX_ROUTER_FIELD_BYTES: usize = 253;
/// Most services a router heartbeat may report route versions for.
pub const MAX_ROUTER_SERVICES: usize = 10_000;

/// Check a router heartbeat's bounds (any NATS client can publish one);
/// the name of the first field out of bounds.
pub fn check_router_heartbeat(beat: &crate::event::RouterHeartbeat) -> Result<(), &'static str> {
    let fields = [
        ("router", &beat.router),
        ("host", &beat.host),
        ("listen", &beat.listen),
    ];
    for (name, value) in fields {
        if value.is_empty() || value.len() > MAX_ROUTER_FIELD_BYTES {
            return Err(name);
        }
    }
    let long = |s: &String| s.len() > MAX_INSTANCE_BYTES;
    if beat.switches.len() > 16
        || beat.switches.iter().any(|s| {
            long(&s.id) || s.services.len() > MAX_SERVICES_PER_APPLY || s.services.iter().any(long)
        })
    {
        return Err("switches");
    }
    if beat.applied.len() > MAX_ROUTER_SERVICES
        || beat.applied.keys().any(|k| k.len() > MAX_SERVICE_REF_BYTES)
    {
        return Err("applied");
    }
    Ok(())
}

/// Lowercase `name`, replace every character outside a-z, 0-9 and `-` with
/// `-`, trim dashes at both ends and cut at 63 characters.
pub fn sanitise_host_id(name: &str) -> String {
    let mapped: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' => c,
            _ => '-',
        })
        .collect();
    let trimmed: String = mapped.trim_matches('-').chars().take(63).collect();
    let trimmed = trimmed.trim_end_matches('-');
    if trimmed.is_empty() {
        "localhost".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// True when `id` is usable as a host id: it appears in NATS subjects, in
/// an executor's durable consumer's name and in a directory name.
pub fn is_valid_host_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_NAME_BYTES
        && id.chars().all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-'))
}

/// Longest advertised address in a heartbeat (an IPv6 address in text).
pub const MAX_IP_BYTES: usize = 45;

/// A host heartbeat's fields against their bounds, as it arrives from the
/// bus: the name of the first field out of bounds. `subject_host` is the
/// host its subject (`mentat.host.heartbeat.<host>`) names; the payload
/// must name the same.
pub fn check_host_heartbeat(
    beat: &crate::event::HostHeartbeat,
    subject_host: &str,
) -> Result<(), &'static str> {
    if !is_valid_host_id(&beat.host) || beat.host != subject_host {
        return Err("host");
    }
    let bad_ip = |ip: &String| ip.len() > MAX_IP_BYTES || ip.parse::<std::net::IpAddr>().is_err();
    if beat.ip.as_ref().is_some_and(bad_ip) {
        return Err("ip");
    }
    Ok(())
}

/// `secs` in milliseconds, for adding to a time in ms: saturates instead of
/// overflowing on a number recorded before the bounds.
pub fn secs_to_ms(secs: u64) -> i64 {
    i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1000)
}

/// `value`'s length against `max`: `None` when within, else the problem
/// (without the value, which may be huge).
pub(crate) fn too_long(value: &str, max: usize) -> Option<String> {
    (value.len() > max).then(|| format!("{} bytes, at most {max}", value.len()))
}

/// `value` as it can be shown in a reason: cut after [`MAX_NAME_BYTES`]
/// bytes (at a character boundary) when longer.
pub(crate) fn shown(value: &str) -> String {
    if value.len() <= MAX_NAME_BYTES {
        return value.to_owned();
    }
    let mut end = MAX_NAME_BYTES;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &value[..end], value.len())
}

/// Every string a command carries against its bound, before it is handled.
/// The rejection names the first field out of bounds. The services of an
/// apply are checked field by field by [`crate::spec::ServiceSpec::validate`].
pub fn check_command(command: &Command) -> Result<(), Rejection> {
    let (command_id, actor, reason) = (
        command.command_id(),
        command.actor_reason().0,
        command.actor_reason().1,
    );
    let mut fields: Vec<(&str, Option<&str>, usize)> = vec![
        ("command_id", command_id, MAX_COMMAND_ID_BYTES),
        ("actor", actor, MAX_ACTOR_BYTES),
        ("reason", reason, MAX_REASON_BYTES),
    ];
    match command {
        Command::Deploy(c) => {
            fields.push(("service", Some(&c.service), MAX_SERVICE_REF_BYTES));
            fields.push(("image", Some(&c.image), MAX_IMAGE_BYTES));
        }
        Command::Rollback(c) => fields.push(("service", Some(&c.service), MAX_SERVICE_REF_BYTES)),
        Command::Apply(c) => {
            if c.services.len() > MAX_SERVICES_PER_APPLY {
                return Err(invalid(
                    "services",
                    format!(
                        "{} services, at most {MAX_SERVICES_PER_APPLY} in one apply",
                        c.services.len()
                    ),
                ));
            }
            fields.push(("source", c.source.as_deref(), MAX_SOURCE_BYTES));
        }
        Command::Pause(c) | Command::Resume(c) | Command::Abort(c) | Command::Promote(c) => {
            fields.push(("service", Some(&c.service), MAX_SERVICE_REF_BYTES));
        }
        Command::Weight(c) => {
            if c.weight > MAX_WEIGHT {
                return Err(invalid(
                    "weight",
                    format!("{} is over {MAX_WEIGHT}", c.weight),
                ));
            }
            fields.push(("service", Some(&c.service), MAX_SERVICE_REF_BYTES));
            fields.push(("instance", Some(&c.instance), MAX_INSTANCE_BYTES));
        }
        Command::Route(c) => {
            fields.push(("service", Some(&c.service), MAX_SERVICE_REF_BYTES));
            fields.push(("from", Some(&c.from), MAX_IMAGE_BYTES));
            fields.push(("to", Some(&c.to), MAX_IMAGE_BYTES));
        }
        Command::Spawn(c) => {
            fields.push(("service", Some(&c.service), MAX_SERVICE_REF_BYTES));
            fields.push(("id", Some(&c.id), MAX_NAME_BYTES));
            fields.push(("image", c.image.as_deref(), MAX_IMAGE_BYTES));
        }
        Command::Stop(c) => {
            fields.push(("service", Some(&c.service), MAX_SERVICE_REF_BYTES));
            fields.push(("instance", Some(&c.instance), MAX_INSTANCE_BYTES));
        }
        Command::ReleaseHosts(_) => {}
        Command::RolloutStart(c) => {
            if c.services.len() > MAX_ROLLOUT_SERVICES {
                return Err(invalid(
                    "services",
                    format!(
                        "{} services, at most {MAX_ROLLOUT_SERVICES}",
                        c.services.len()
                    ),
                ));
            }
            // No waves means the default ones.
            if !c.waves.is_empty() {
                if let Err(problem) = crate::rollout::waves::check(&c.waves, MAX_WAVES) {
                    return Err(invalid("waves", problem));
                }
            }
            if let Some(secs) = c.wave_bake_secs.filter(|s| *s > MAX_DURATION_SECS) {
                return Err(invalid(
                    "wave_bake_secs",
                    format!("{secs} is over {MAX_DURATION_SECS}"),
                ));
            }
            fields.push(("image", Some(&c.image), MAX_IMAGE_BYTES));
            fields.push(("select", c.select.as_deref(), MAX_SELECTOR_BYTES));
            fields.push(("environment", c.environment.as_deref(), MAX_NAME_BYTES));
            if let Some(long) = c.services.iter().find(|s| s.len() > MAX_NAME_BYTES) {
                fields.push(("services", Some(long), MAX_NAME_BYTES));
            }
        }
        Command::RolloutPause(_)
        | Command::RolloutResume(_)
        | Command::RolloutCancel(_)
        | Command::RolloutRollbackAll(_) => {}
        Command::ReleaseCreate(c) => {
            use crate::release::{MAX_DESCRIPTION_BYTES, MAX_TAG_BYTES};
            let services = c.services.as_ref().map_or(0, Vec::len);
            if services > MAX_SERVICES_PER_APPLY || c.images.len() > MAX_SERVICES_PER_APPLY {
                return Err(invalid(
                    "services",
                    format!("at most {MAX_SERVICES_PER_APPLY} services and images in a release"),
                ));
            }
            fields.push(("tag", Some(&c.tag), MAX_TAG_BYTES));
            fields.push((
                "description",
                c.description.as_deref(),
                MAX_DESCRIPTION_BYTES,
            ));
            fields.push(("deploy_to", c.deploy_to.as_deref(), MAX_NAME_BYTES));
            for (service, image) in &c.images {
                fields.push(("images", Some(service), MAX_NAME_BYTES));
                fields.push(("images", Some(image), MAX_IMAGE_BYTES));
            }
        }
        Command::ReleaseDeploy(c) => {
            fields.push(("tag", Some(&c.tag), crate::release::MAX_TAG_BYTES));
            fields.push(("environment", Some(&c.environment), MAX_NAME_BYTES));
        }
        Command::ReleasePromote(c) => {
            fields.push(("tag", Some(&c.tag), crate::release::MAX_TAG_BYTES));
            fields.push(("from", Some(&c.from), MAX_NAME_BYTES));
            fields.push(("to", Some(&c.to), MAX_NAME_BYTES));
        }
        Command::ReleaseRollback(c) => {
            fields.push(("environment", Some(&c.environment), MAX_NAME_BYTES));
            fields.push(("to", c.to.as_deref(), crate::release::MAX_TAG_BYTES));
        }
    }
    for (field, value, max) in fields {
        if let Some(problem) = value.and_then(|v| too_long(v, max)) {
            return Err(invalid(field, problem));
        }
    }
    Ok(())
}

fn invalid(field: &str, problem: String) -> Rejection {
    Rejection::new(RejectKind::Invalid, format!("{field}: {problem}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Apply, Control, Deploy, Spawn, Weight};

    #[test]
    fn a_host_heartbeat_names_its_own_host_within_bounds() {
        let beat = |host: &str, ip: Option<&str>| crate::event::HostHeartbeat {
            host: host.to_owned(),
            capacity: 4,
            running: 0,
            at_ms: 0,
            ip: ip.map(str::to_owned),
        };
        let check =
            |b: &crate::event::HostHeartbeat, subject: &str| check_host_heartbeat(b, subject);
        assert_eq!(check(&beat("h1", Some("10.0.0.7")), "h1"), Ok(()));
        assert_eq!(check(&beat("h1", Some("fd00::7")), "h1"), Ok(()));
        assert_eq!(check(&beat("h1", None), "h1"), Ok(()));
        assert_eq!(check(&beat("h1", None), "h2"), Err("host"));
        assert_eq!(
            check(&beat(&"h".repeat(64), None), &"h".repeat(64)),
            Err("host")
        );
        assert_eq!(check(&beat("H1", None), "H1"), Err("host"));
        assert_eq!(check(&beat("", None), ""), Err("host"));
        assert_eq!(check(&beat("h1", Some("10.0.0.7; x")), "h1"), Err("ip"));
        assert_eq!(check(&beat("h1", Some(&"1".repeat(46))), "h1"), Err("ip"));
    }

    fn deploy(image: &str) -> Command {
        Command::Deploy(Deploy {
            command_id: None,
            signature: None,
            service: "web".into(),
            image: image.into(),
            strategy: None,
            override_rollout: false,
            actor: None,
            reason: None,
        })
    }

    /// The rejection of `command`, which must be an invalid one naming `field`.
    fn invalid_naming(command: &Command, field: &str) -> Rejection {
        let rejection = check_command(command).expect_err("out of bounds");
        assert_eq!(rejection.kind, RejectKind::Invalid);
        assert!(
            rejection.reason.starts_with(&format!("{field}: ")),
            "{}",
            rejection.reason
        );
        rejection
    }

    #[test]
    fn an_image_over_its_bound_is_invalid_and_named_without_echoing_it() {
        // Given a deploy of a 900 KB image
        let command = deploy(&"x".repeat(900_000));
        // When it is checked
        let rejection = invalid_naming(&command, "image");
        // Then the reason names the field and the bound, and is short
        assert_eq!(rejection.reason, "image: 900000 bytes, at most 512");
        // And an image at the bound passes
        assert_eq!(check_command(&deploy(&"x".repeat(MAX_IMAGE_BYTES))), Ok(()));
    }

    #[test]
    fn every_string_field_of_a_command_is_bounded() {
        let long = "a".repeat(5000);
        let control = |c: Control| Command::Pause(c);
        let base = Control {
            command_id: None,
            signature: None,
            service: "web".into(),
            actor: None,
            reason: None,
        };
        let cases = [
            (
                control(Control {
                    command_id: Some(long.clone()),
                    signature: None,
                    ..base.clone()
                }),
                "command_id",
            ),
            (
                control(Control {
                    actor: Some(long.clone()),
                    ..base.clone()
                }),
                "actor",
            ),
            (
                control(Control {
                    reason: Some(long.clone()),
                    ..base.clone()
                }),
                "reason",
            ),
            (
                control(Control {
                    service: long.clone(),
                    ..base.clone()
                }),
                "service",
            ),
            (
                Command::Spawn(Spawn {
                    command_id: None,
                    signature: None,
                    service: "web".into(),
                    id: "green".into(),
                    image: Some(long.clone()),
                    actor: None,
                    reason: None,
                }),
                "image",
            ),
            (
                Command::Apply(Apply {
                    command_id: None,
                    signature: None,
                    services: Vec::new(),
                    cluster: None,
                    security: None,
                    notify: None,
                    environments: None,
                    source: Some(long.clone()),
                    actor: None,
                    reason: None,
                }),
                "source",
            ),
        ];
        for (command, field) in &cases {
            invalid_naming(command, field);
        }
        assert_eq!(check_command(&control(base)), Ok(()));
    }

    #[test]
    fn a_weight_over_100_is_invalid() {
        let weight = |weight| {
            Command::Weight(Weight {
                command_id: None,
                signature: None,
                service: "web".into(),
                instance: "web-1".into(),
                weight,
                actor: None,
                reason: None,
            })
        };
        invalid_naming(&weight(u32::MAX), "weight");
        assert_eq!(check_command(&weight(MAX_WEIGHT)), Ok(()));
    }

    #[test]
    fn durations_saturate_instead_of_overflowing() {
        assert_eq!(secs_to_ms(600), 600_000);
        assert_eq!(secs_to_ms(u64::MAX), i64::MAX);
        assert_eq!(secs_to_ms(u64::MAX / 2), i64::MAX);
    }

    #[test]
    fn long_values_are_cut_when_shown() {
        assert_eq!(shown("web"), "web");
        let cut = shown(&"é".repeat(1000));
        assert!(cut.len() < 100, "{cut}");
        assert!(cut.ends_with("… (2000 bytes)"), "{cut}");
    }
}
