//! Service specifications: what `mentat.yaml` declares for each service.
//!
//! Every field of the `deploy` block is optional; the defaults are those of
//! the deploy-strategies document (rolling, `max_unavailable` 1,
//! `health_timeout_secs` 10, `auto_revert` true, `canary_percent` 10,
//! `standby_secs` 600). [`ServiceSpec::validate`] reports every impossible
//! value with the path of the field that holds it.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One service as declared in the config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Service name: lowercase letters, digits and `-`, used in subjects and host names.
    pub name: String,
    /// How many replicas serve traffic once a deployment completes.
    pub replicas: u32,
    /// How a replica is started.
    pub run: RunSpec,
    /// Readiness probe.
    #[serde(default)]
    pub health: HealthSpec,
    /// Deployment settings.
    #[serde(default)]
    pub deploy: DeploySpec,
    /// How the router serves it.
    #[serde(default)]
    pub route: RouteSpec,
}

/// How the router serves a service: under which host name, in which
/// environment's routing table, and whether clients stick to a version.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RouteSpec {
    /// Environment whose routing table holds the service; a request chooses
    /// one with the `X-Environment` header. Empty means `production`.
    pub environment: String,
    /// Name in the Host header (`<host>.<domain>`); empty means the service name.
    pub host: String,
    /// Sticky sessions: requests with the same key reach the same version
    /// while the weights hold.
    pub sticky: Option<Sticky>,
}

/// The environment a request without `X-Environment` uses.
pub const DEFAULT_ENVIRONMENT: &str = "production";

impl RouteSpec {
    /// The environment, `production` when none is set.
    pub fn environment(&self) -> &str {
        if self.environment.is_empty() {
            DEFAULT_ENVIRONMENT
        } else {
            &self.environment
        }
    }

    /// The host name under the router's domain, the service name when none is set.
    pub fn host<'a>(&'a self, service: &'a str) -> &'a str {
        if self.host.is_empty() {
            service
        } else {
            &self.host
        }
    }
}

/// Where the router finds a client's sticky-session key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Sticky {
    /// The value of this cookie.
    Cookie(String),
    /// The value of this request header.
    Header(String),
}

/// How the executor starts one replica. `{image}` and `{port}` are
/// substituted in `command`, `args` and the values of `env`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// Program and leading arguments, for example `["mentat-demo-app"]`.
    pub command: Vec<String>,
    /// Further arguments appended after `command`.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variables set for the replica (besides `PORT`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// Readiness probe: `healthy_after` consecutive passes make a replica
/// healthy, `unhealthy_after` consecutive failures make it unhealthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSpec {
    /// HTTP path probed with GET; a 2xx answer is a pass.
    pub path: String,
    /// Time between probes, in milliseconds.
    pub interval_ms: u64,
    /// Consecutive passes before a replica counts as healthy.
    pub healthy_after: u32,
    /// Consecutive failures before a replica counts as unhealthy.
    pub unhealthy_after: u32,
    /// Limits on the traffic each version serves, judged by the
    /// health-watcher from the routers' statistics.
    pub thresholds: Thresholds,
    /// How long a deployment keeps watching the new version after its last
    /// replica took traffic, before it completes; a breach in that window
    /// still reverts it.
    pub bake_secs: u64,
}

impl Default for HealthSpec {
    fn default() -> Self {
        Self {
            path: "/health".to_owned(),
            interval_ms: 500,
            healthy_after: 2,
            unhealthy_after: 3,
            thresholds: Thresholds::default(),
            bake_secs: 60,
        }
    }
}

/// Traffic limits of a version, over a sliding window. Each version of a
/// service is judged on its own; with `compare_to_baseline`, a version that
/// shares the service's traffic with others (a canary) breaches only when
/// it is also `max_degradation_percent` worse than the others over the
/// same window, so a spike that hits every version alike reverts nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// Judge traffic at all; when false, no breach is ever reported and
    /// canary steps advance on their bake time alone.
    pub enabled: bool,
    /// Highest share of 5xx answers over the window, 1 to 100.
    pub error_rate_percent: u32,
    /// Highest 99th-percentile latency over the window, in milliseconds.
    pub latency_p99_ms: u64,
    /// Length of the sliding window, in seconds.
    pub window_secs: u64,
    /// Fewer requests than this in a window is "no data": never a pass, never a breach.
    pub min_requests: u64,
    /// Judge a version that shares traffic against the other versions.
    pub compare_to_baseline: bool,
    /// How much worse than the baseline, in percent, counts as a breach.
    pub max_degradation_percent: u32,
    /// Synthetic requests per second the health-watcher sends to a version
    /// whose window has no data (0: none).
    pub idle_probe_rps: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            enabled: true,
            error_rate_percent: 5,
            latency_p99_ms: 500,
            window_secs: 10,
            min_requests: 50,
            compare_to_baseline: true,
            max_degradation_percent: 50,
            idle_probe_rps: 0,
        }
    }
}

/// Deployment strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Replace replicas in batches of `max_unavailable`.
    Rolling,
    /// Start a full new set, switch traffic at once, keep the old set on standby.
    BlueGreen,
    /// Send a share of traffic to a few new replicas until an operator decides.
    Canary,
}

impl Strategy {
    /// The name used in config files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Rolling => "rolling",
            Strategy::BlueGreen => "blue-green",
            Strategy::Canary => "canary",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rolling" => Ok(Strategy::Rolling),
            "blue-green" => Ok(Strategy::BlueGreen),
            "canary" => Ok(Strategy::Canary),
            other => Err(format!(
                "unknown strategy `{other}`: expected rolling, blue-green or canary"
            )),
        }
    }
}

/// The `deploy` block of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DeploySpec {
    /// rolling | blue-green | canary.
    pub strategy: Strategy,
    /// Replicas replaced at once by a rolling deployment.
    pub max_unavailable: u32,
    /// How long new replicas may take to become healthy.
    pub health_timeout_secs: u64,
    /// Roll back to the previous image automatically when a deployment fails.
    pub auto_revert: bool,
    /// Share of traffic sent to the canary (canary only).
    pub canary_percent: u32,
    /// How long the old set stays on standby (blue-green only).
    pub standby_secs: u64,
    /// Canary only: traffic steps advanced automatically after each bake
    /// time while the deployment stays healthy; the canary is promoted after
    /// the last one. Empty: one step at `canary_percent`, held until an
    /// operator promotes or aborts.
    pub steps: Vec<CanaryStep>,
    /// Longest time any phase of a deployment may go without progress (a
    /// timed wait such as a bake or the standby does not count) before the
    /// deployment is reverted, or held when `auto_revert` is off.
    pub progress_deadline_secs: u64,
}

/// One step of a canary: the share of traffic and how long it bakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CanaryStep {
    /// Share of the service's traffic sent to the canary, 1 to 100.
    pub percent: u32,
    /// How long the step runs, while healthy, before the next one.
    #[serde(default)]
    pub bake_secs: u64,
}

impl Default for DeploySpec {
    fn default() -> Self {
        Self {
            strategy: Strategy::Rolling,
            max_unavailable: 1,
            health_timeout_secs: 10,
            auto_revert: true,
            canary_percent: 10,
            standby_secs: 600,
            steps: Vec::new(),
            progress_deadline_secs: 600,
        }
    }
}

impl DeploySpec {
    /// The canary's traffic steps: `steps`, or one step at `canary_percent`
    /// with no bake time.
    pub fn canary_steps(&self) -> Vec<CanaryStep> {
        if self.steps.is_empty() {
            vec![CanaryStep {
                percent: self.canary_percent,
                bake_secs: 0,
            }]
        } else {
            self.steps.clone()
        }
    }

    /// Why a deployment with `strategy` cannot run with these settings, as
    /// `(field, message)`; `None` when it can.
    pub fn unusable_for(&self, strategy: Strategy) -> Option<(&'static str, String)> {
        if strategy == Strategy::Canary && self.steps.is_empty() && self.canary_percent == 0 {
            return Some((
                "canary_percent",
                "is 0, so a canary would receive no traffic; set 1 to 100 or give steps".into(),
            ));
        }
        None
    }

    fn problems(&self, replicas: u32) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        let mut err = |field: &str, message: String| out.push((field.to_owned(), message));
        if self.max_unavailable == 0 {
            err("max_unavailable", "must be at least 1".into());
        } else if self.max_unavailable > replicas {
            err(
                "max_unavailable",
                format!(
                    "{} is larger than replicas ({replicas})",
                    self.max_unavailable
                ),
            );
        }
        if self.health_timeout_secs == 0 {
            err("health_timeout_secs", "must be at least 1".into());
        }
        if self.canary_percent > 100 {
            err(
                "canary_percent",
                format!("{} is over 100", self.canary_percent),
            );
        }
        if self.progress_deadline_secs == 0 {
            err("progress_deadline_secs", "must be at least 1".into());
        }
        let mut last = 0;
        for (i, step) in self.steps.iter().enumerate() {
            if step.percent == 0 || step.percent > 100 {
                err(
                    &format!("steps[{i}].percent"),
                    format!("{} must be 1 to 100", step.percent),
                );
            } else if step.percent <= last {
                err(
                    &format!("steps[{i}].percent"),
                    format!(
                        "{} does not increase on the step before ({last}); steps must increase",
                        step.percent
                    ),
                );
            }
            last = last.max(step.percent);
        }
        if let Some((field, message)) = self.unusable_for(self.strategy) {
            err(field, message);
        }
        out
    }
}

/// One impossible value in a spec, with the dotted path of its field
/// (for example `services.web.deploy.max_unavailable`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FieldError {
    /// Dotted path of the field, from the top of the config file.
    pub path: String,
    /// What is wrong and what would be accepted.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// True when `name` can be used as a service name: 1 to 63 characters of
/// `a-z`, `0-9` and `-`, starting with a letter. Such names are safe in NATS
/// subjects and in DNS labels.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z'))
        && name.len() <= 63
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-'))
}

impl ServiceSpec {
    /// Every impossible value in this spec; empty when the spec is valid.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let base = format!("services.{}", self.name);
        let mut err = |field: &str, message: String| {
            errors.push(FieldError {
                path: format!("{base}.{field}"),
                message,
            })
        };
        if !is_valid_name(&self.name) {
            err(
                "",
                format!(
                    "service name `{}` must be 1-63 characters of a-z, 0-9 and -, starting with a letter",
                    self.name
                ),
            );
        }
        if self.replicas == 0 {
            err("replicas", "must be at least 1".into());
        }
        if self.run.command.is_empty() || self.run.command[0].trim().is_empty() {
            err("run.command", "must name a program to run".into());
        }
        let h = &self.health;
        if !h.path.starts_with('/') {
            err("health.path", format!("`{}` must start with /", h.path));
        }
        if h.interval_ms < 10 {
            err("health.interval_ms", "must be at least 10".into());
        }
        if h.healthy_after == 0 {
            err("health.healthy_after", "must be at least 1".into());
        }
        if h.unhealthy_after == 0 {
            err("health.unhealthy_after", "must be at least 1".into());
        }
        let t = &h.thresholds;
        if t.enabled {
            if t.error_rate_percent == 0 || t.error_rate_percent > 100 {
                err(
                    "health.thresholds.error_rate_percent",
                    format!("{} must be 1 to 100", t.error_rate_percent),
                );
            }
            if t.latency_p99_ms == 0 {
                err(
                    "health.thresholds.latency_p99_ms",
                    "must be at least 1".into(),
                );
            }
            if t.window_secs == 0 {
                err("health.thresholds.window_secs", "must be at least 1".into());
            }
            if t.min_requests == 0 {
                err(
                    "health.thresholds.min_requests",
                    "must be at least 1".into(),
                );
            }
            if t.compare_to_baseline && t.max_degradation_percent == 0 {
                err(
                    "health.thresholds.max_degradation_percent",
                    "must be at least 1 when compare_to_baseline is on".into(),
                );
            }
            if h.bake_secs > 0 && h.bake_secs < t.window_secs {
                err(
                    "health.bake_secs",
                    format!(
                        "{} is shorter than one window (thresholds.window_secs {}): nothing could be judged",
                        h.bake_secs, t.window_secs
                    ),
                );
            }
            for (i, step) in self.deploy.steps.iter().enumerate() {
                if step.bake_secs < t.window_secs {
                    err(
                        &format!("deploy.steps[{i}].bake_secs"),
                        format!(
                            "{} is shorter than one window (health.thresholds.window_secs {}): the step could never be judged",
                            step.bake_secs, t.window_secs
                        ),
                    );
                }
            }
        }
        for (field, message) in self.deploy.problems(self.replicas) {
            err(&format!("deploy.{field}"), message);
        }
        let r = &self.route;
        if !r.environment.is_empty() && !is_valid_name(&r.environment) {
            err(
                "route.environment",
                format!(
                    "`{}` must be 1-63 characters of a-z, 0-9 and -, starting with a letter",
                    r.environment
                ),
            );
        }
        if !r.host.is_empty() && !is_valid_name(&r.host) {
            err(
                "route.host",
                format!(
                    "`{}` must be 1-63 characters of a-z, 0-9 and -, starting with a letter",
                    r.host
                ),
            );
        }
        match &r.sticky {
            Some(Sticky::Cookie(name)) | Some(Sticky::Header(name))
                if name.is_empty()
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && b != b';' && b != b'=' && b != b':') =>
            {
                err(
                    "route.sticky",
                    format!("`{name}` is not a usable cookie or header name"),
                );
            }
            _ => {}
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ServiceSpec {
        ServiceSpec {
            name: "web".into(),
            replicas: 3,
            run: RunSpec {
                command: vec!["mentat-demo-app".into()],
                args: vec![],
                env: BTreeMap::new(),
            },
            health: HealthSpec::default(),
            deploy: DeploySpec::default(),
            route: RouteSpec::default(),
        }
    }

    #[test]
    fn defaults_are_those_of_the_strategies_document() {
        let d = DeploySpec::default();
        assert_eq!(d.strategy, Strategy::Rolling);
        assert_eq!(d.max_unavailable, 1);
        assert_eq!(d.health_timeout_secs, 10);
        assert!(d.auto_revert);
        assert_eq!(d.canary_percent, 10);
        assert_eq!(d.standby_secs, 600);
        assert!(spec().validate().is_empty());
    }

    #[test]
    fn impossible_values_name_their_field() {
        let mut s = spec();
        s.replicas = 0;
        s.deploy.canary_percent = 101;
        let paths: Vec<_> = s.validate().into_iter().map(|e| e.path).collect();
        assert_eq!(
            paths,
            [
                "services.web.replicas",
                "services.web.deploy.max_unavailable",
                "services.web.deploy.canary_percent"
            ]
        );
    }

    #[test]
    fn contradictory_strategy_settings_are_rejected() {
        let mut s = spec();
        s.deploy.strategy = Strategy::Canary;
        s.deploy.canary_percent = 0;
        s.deploy.progress_deadline_secs = 0;
        let paths: Vec<_> = s.validate().into_iter().map(|e| e.path).collect();
        assert_eq!(
            paths,
            [
                "services.web.deploy.progress_deadline_secs",
                "services.web.deploy.canary_percent"
            ]
        );
        s.deploy.progress_deadline_secs = 600;
        s.deploy.steps = [5, 25, 25, 101]
            .into_iter()
            .map(|percent| CanaryStep {
                percent,
                bake_secs: 10,
            })
            .collect();
        let paths: Vec<_> = s.validate().into_iter().map(|e| e.path).collect();
        assert_eq!(
            paths,
            [
                "services.web.deploy.steps[2].percent",
                "services.web.deploy.steps[3].percent"
            ],
            "with steps, canary_percent 0 is not used"
        );
    }

    #[test]
    fn thresholds_that_cannot_judge_anything_are_rejected() {
        let mut s = spec();
        s.health.thresholds.error_rate_percent = 0;
        s.health.thresholds.max_degradation_percent = 0;
        s.health.bake_secs = 5;
        s.deploy.steps = vec![CanaryStep {
            percent: 10,
            bake_secs: 3,
        }];
        let paths: Vec<_> = s.validate().into_iter().map(|e| e.path).collect();
        assert_eq!(
            paths,
            [
                "services.web.health.thresholds.error_rate_percent",
                "services.web.health.thresholds.max_degradation_percent",
                "services.web.health.bake_secs",
                "services.web.deploy.steps[0].bake_secs"
            ]
        );
        s.health.thresholds.enabled = false;
        assert!(s.validate().is_empty(), "disabled thresholds judge nothing");
    }

    #[test]
    fn route_names_and_sticky_keys_must_be_usable() {
        let mut s = spec();
        s.route.environment = "Staging".into();
        s.route.host = "a.b".into();
        s.route.sticky = Some(Sticky::Cookie("a=b".into()));
        let paths: Vec<_> = s.validate().into_iter().map(|e| e.path).collect();
        assert_eq!(
            paths,
            [
                "services.web.route.environment",
                "services.web.route.host",
                "services.web.route.sticky"
            ]
        );
        assert_eq!(RouteSpec::default().environment(), "production");
        assert_eq!(RouteSpec::default().host("web"), "web");
    }

    #[test]
    fn names_must_be_subject_and_dns_safe() {
        assert!(is_valid_name("web-2"));
        for bad in ["", "Web", "2web", "a.b", "a*", "a b"] {
            assert!(!is_valid_name(bad), "{bad:?} accepted");
        }
    }
}
