//! Environments: the `environments:` block of a service file, and how a
//! service is run once in each environment it is listed for.
//!
//! Every service runs separately in each of its environments: its own
//! replicas, routing table, deployments and history. Inside the planner a
//! service in an environment is one service, keyed `web@staging`; the
//! default environment (`production`) keeps the bare name, so `web` and
//! `web@production` are the same service and a file without an
//! `environments:` block reads, applies and hashes as before.
//!
//! [`expand`] turns the services of a file into one definition per service
//! and environment, with the environment's overrides of `replicas`,
//! `run.env` and `health` applied; everything else is the service's.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::limits::{shown, MAX_DURATION_SECS};
use crate::spec::{is_valid_name, HealthSpec, ServiceSpec, DEFAULT_ENVIRONMENT};

/// Most environments a file declares.
pub const MAX_ENVIRONMENTS: usize = 16;

/// One environment of the `environments:` block.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct EnvironmentSpec {
    /// Deploying to it needs a reason, and only a release that was
    /// deployed in `promote_from` may be deployed to it (unless forced,
    /// which is recorded).
    pub protected: bool,
    /// The environment a release must have been deployed to first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promote_from: Option<String>,
    /// How long a release must have served in `promote_from`, with no
    /// threshold breach, before it is promoted here.
    pub min_soak_secs: u64,
}

/// The `environments:` block: environments by name.
pub type Environments = BTreeMap<String, EnvironmentSpec>;

/// A service's overrides for one environment
/// (`services.web.environments.staging`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct EnvironmentOverride {
    /// Replicas in this environment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// Variables added to (or replacing those of) `run.env`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<RunOverride>,
    /// The readiness probe and thresholds in this environment (the whole
    /// block, unset fields at their defaults).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthSpec>,
}

/// The part of `run` an environment may change.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RunOverride {
    /// Variables added to the service's `run.env`, replacing those of the
    /// same name.
    pub env: BTreeMap<String, String>,
}

/// The service key of `service` in `environment`: `web` in the default
/// environment, `web@staging` in any other.
pub fn service_key(service: &str, environment: &str) -> String {
    if environment == DEFAULT_ENVIRONMENT || environment.is_empty() {
        service.to_owned()
    } else {
        format!("{service}@{environment}")
    }
}

/// The service and environment a reference (`web`, `web@staging`,
/// `web@production`) names.
pub fn split(reference: &str) -> (&str, &str) {
    match reference.split_once('@') {
        Some((service, environment)) => (service, environment),
        None => (reference, DEFAULT_ENVIRONMENT),
    }
}

/// The key a reference names: `web@production` is `web`.
pub fn normalise(reference: &str) -> String {
    let (service, environment) = split(reference);
    service_key(service, environment)
}

/// True when `reference` is a service name, or one followed by `@` and an
/// environment name.
pub fn is_valid_reference(reference: &str) -> bool {
    let (service, environment) = split(reference);
    is_valid_name(service) && is_valid_name(environment)
}

/// The environments of `declared`, or the default one alone when the file
/// has no block.
pub fn declared_or_default(declared: Option<&Environments>) -> Environments {
    match declared {
        Some(envs) => envs.clone(),
        None => BTreeMap::from([(DEFAULT_ENVIRONMENT.to_owned(), EnvironmentSpec::default())]),
    }
}

/// Problems of the `environments:` block, as `environments.<name>...: message`.
pub fn validate(envs: &Environments) -> Vec<String> {
    let mut out = Vec::new();
    if envs.is_empty() {
        out.push("environments: is empty: declare at least one environment".to_owned());
    }
    if envs.len() > MAX_ENVIRONMENTS {
        out.push(format!(
            "environments: {} environments, at most {MAX_ENVIRONMENTS}",
            envs.len()
        ));
    }
    for (name, env) in envs {
        if !is_valid_name(name) {
            out.push(format!(
                "environments.{}: the name must be 1-63 characters of a-z, 0-9 and -, starting with a letter",
                shown(name)
            ));
            continue;
        }
        if let Some(from) = &env.promote_from {
            if from == name {
                out.push(format!(
                    "environments.{name}.promote_from: an environment cannot promote from itself"
                ));
            } else if !envs.contains_key(from) {
                out.push(format!(
                    "environments.{name}.promote_from: unknown environment `{}`",
                    shown(from)
                ));
            }
        }
        if env.min_soak_secs > MAX_DURATION_SECS {
            out.push(format!(
                "environments.{name}.min_soak_secs: {} is over {MAX_DURATION_SECS}",
                env.min_soak_secs
            ));
        }
        if env.min_soak_secs > 0 && env.promote_from.is_none() {
            out.push(format!(
                "environments.{name}.min_soak_secs: needs promote_from (soaked where?)"
            ));
        }
    }
    out
}

/// One definition per service and environment it is listed for, keyed
/// [`service_key`], or every problem found (each naming its field).
///
/// A file with no `environments:` block whose services list none is
/// returned as it is. Otherwise a service runs in the environments it
/// lists (each must be declared), or in every declared one when it lists
/// none; its `route.environment` must be left unset.
pub fn expand(
    services: &[ServiceSpec],
    declared: Option<&Environments>,
) -> Result<Vec<ServiceSpec>, Vec<String>> {
    if declared.is_none() && services.iter().all(|s| s.environments.is_empty()) {
        return Ok(services.to_vec());
    }
    let envs = declared_or_default(declared);
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for spec in services {
        let base = format!("services.{}", shown(&spec.name));
        if !spec.route.environment.is_empty() {
            problems.push(format!(
                "{base}.route.environment: list the service's environments under `environments:` instead"
            ));
            continue;
        }
        for name in spec.environments.keys() {
            if !envs.contains_key(name) {
                problems.push(format!(
                    "{base}.environments.{}: unknown environment `{}`; declared: {}",
                    shown(name),
                    shown(name),
                    envs.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        let listed: Vec<&String> = if spec.environments.is_empty() {
            envs.keys().collect()
        } else {
            spec.environments
                .keys()
                .filter(|e| envs.contains_key(*e))
                .collect()
        };
        for env in listed {
            out.push(instance(spec, env));
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// `spec` as it runs in `environment`, its overrides applied.
fn instance(spec: &ServiceSpec, environment: &str) -> ServiceSpec {
    let mut one = spec.clone();
    one.environments = BTreeMap::new();
    one.name = service_key(&spec.name, environment);
    if environment != DEFAULT_ENVIRONMENT {
        one.route.environment = environment.to_owned();
    }
    if let Some(o) = spec.environments.get(environment) {
        if let Some(replicas) = o.replicas {
            one.replicas = replicas;
        }
        if let Some(run) = &o.run {
            one.run.env.extend(run.env.clone());
        }
        if let Some(health) = &o.health {
            one.health = health.clone();
        }
    }
    one
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::tests::spec;

    fn envs() -> Environments {
        BTreeMap::from([
            ("staging".to_owned(), EnvironmentSpec::default()),
            (
                "production".to_owned(),
                EnvironmentSpec {
                    protected: true,
                    promote_from: Some("staging".into()),
                    min_soak_secs: 60,
                },
            ),
        ])
    }

    #[test]
    fn a_file_without_environments_is_unchanged() {
        let services = vec![spec()];
        assert_eq!(expand(&services, None).expect("unchanged"), services);
    }

    #[test]
    fn each_service_runs_once_per_environment_with_its_overrides() {
        let mut web = spec();
        web.environments.insert(
            "staging".into(),
            EnvironmentOverride {
                replicas: Some(1),
                run: Some(RunOverride {
                    env: BTreeMap::from([("LOG".into(), "debug".into())]),
                }),
                health: None,
            },
        );
        web.environments
            .insert("production".into(), EnvironmentOverride::default());
        let out = expand(&[web.clone()], Some(&envs())).expect("expanded");
        let names: Vec<&str> = out.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["web", "web@staging"]);
        let production = &out[0];
        assert_eq!(production.replicas, 3);
        assert_eq!(production.route.environment(), "production");
        let mut plain = web.clone();
        plain.environments.clear();
        assert_eq!(
            *production, plain,
            "production reads as the file without the block"
        );
        let staging = &out[1];
        assert_eq!(staging.replicas, 1);
        assert_eq!(staging.route.environment(), "staging");
        assert_eq!(staging.route.host(&staging.name), "web");
        assert_eq!(
            staging.run.env.get("LOG").map(String::as_str),
            Some("debug")
        );
        assert!(staging.validate().is_empty(), "{:?}", staging.validate());
    }

    #[test]
    fn a_service_listing_no_environment_runs_in_every_one() {
        let out = expand(&[spec()], Some(&envs())).expect("expanded");
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn an_unknown_environment_is_named() {
        let mut web = spec();
        web.environments
            .insert("qa".into(), EnvironmentOverride::default());
        let problems = expand(&[web], Some(&envs())).expect_err("unknown");
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].starts_with("services.web.environments.qa:"),
            "{problems:?}"
        );
        assert!(problems[0].contains("`qa`"));
    }

    #[test]
    fn references_name_a_service_and_an_environment() {
        assert_eq!(split("web"), ("web", "production"));
        assert_eq!(split("web@staging"), ("web", "staging"));
        assert_eq!(normalise("web@production"), "web");
        assert_eq!(normalise("web@staging"), "web@staging");
        assert!(is_valid_reference("web@staging"));
        assert!(!is_valid_reference("web@"));
        assert!(!is_valid_reference("web@Staging"));
        assert!(!is_valid_reference("@staging"));
    }

    #[test]
    fn the_block_is_checked() {
        let mut bad = envs();
        bad.get_mut("production").expect("declared").promote_from = Some("qa".into());
        bad.insert("Bad".into(), EnvironmentSpec::default());
        let problems = validate(&bad);
        assert!(problems
            .iter()
            .any(|p| p.starts_with("environments.production.promote_from")));
        assert!(problems.iter().any(|p| p.starts_with("environments.Bad")));
        assert!(validate(&envs()).is_empty());
    }
}
