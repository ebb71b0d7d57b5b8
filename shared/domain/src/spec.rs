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

use crate::limits::{
    shown, too_long, MAX_ARGV_BYTES, MAX_ARGV_ENTRIES, MAX_CANARY_STEPS, MAX_CONSECUTIVE_PROBES,
    MAX_DEGRADATION_PERCENT, MAX_DURATION_MS, MAX_DURATION_SECS, MAX_ENV_BYTES, MAX_ENV_ENTRIES,
    MAX_HEALTH_PATH_BYTES, MAX_IDLE_PROBE_RPS, MAX_IMAGE_PLACEHOLDERS, MAX_LABELS, MAX_LABEL_BYTES,
    MAX_MIN_REQUESTS, MAX_PERCENT, MAX_REPLICAS, MAX_STICKY_KEY_BYTES,
};

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
    /// What every command about the service must carry. Absent from
    /// definitions that set none, so definitions from before it read and
    /// hash the same.
    #[serde(default, skip_serializing_if = "AuditSpec::is_default")]
    pub audit: AuditSpec,
    /// Labels a fleet rollout selects services by (`mt rollout start
    /// --select kind=edge`). Absent from definitions that set none, so
    /// definitions from before it read and hash the same.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The environments the service runs in, each with its overrides
    /// (see [`crate::environment`]); empty: every declared environment.
    /// Absent from definitions that set none, so definitions from before
    /// it read and hash the same.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environments: BTreeMap<String, crate::environment::EnvironmentOverride>,
}

/// The `audit` block of a service: what its commands must say about who
/// and why. The planner rejects a command that falls short (kind
/// `invalid`, naming the missing field) and changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSpec {
    /// Every command about the service must name its actor.
    pub require_actor: bool,
    /// Commands of these verbs (`rollback`, `abort`, `weight`, `route`,
    /// `stop`, or any other verb of `mentat.cmd.<verb>`) must give a reason.
    pub require_reason_for: Vec<String>,
}

impl AuditSpec {
    /// True when the block sets nothing.
    pub fn is_default(&self) -> bool {
        *self == AuditSpec::default()
    }

    /// The field a command of `verb` with this `actor` and `reason` lacks
    /// under this policy (`actor`, `reason`), if any. Blank counts as
    /// missing.
    pub fn missing(
        &self,
        verb: &str,
        actor: Option<&str>,
        reason: Option<&str>,
    ) -> Option<&'static str> {
        let blank = |v: Option<&str>| v.is_none_or(|v| v.trim().is_empty());
        if self.require_actor && blank(actor) {
            return Some("actor");
        }
        if self.require_reason_for.iter().any(|v| v == verb) && blank(reason) {
            return Some("reason");
        }
        None
    }

    fn problems(&self, out: &mut Problems) {
        let verbs = crate::command::Command::VERBS;
        let mut seen = std::collections::BTreeSet::new();
        for (i, verb) in self.require_reason_for.iter().enumerate() {
            let field = format!("audit.require_reason_for[{i}]");
            if !verbs.contains(&verb.as_str()) {
                out.push((
                    field,
                    format!(
                        "`{}` is not a command; expected one of {}",
                        shown(verb),
                        verbs.join(", ")
                    ),
                ));
            } else if !seen.insert(verb) {
                out.push((field, format!("`{verb}` is listed twice")));
            }
        }
    }
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

    /// The host name under the router's domain, the service name (without
    /// its `@environment`) when none is set.
    pub fn host<'a>(&'a self, service: &'a str) -> &'a str {
        if self.host.is_empty() {
            crate::environment::split(service).0
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
        if self.canary_percent > MAX_PERCENT {
            err(
                "canary_percent",
                format!("{} is over {MAX_PERCENT}", self.canary_percent),
            );
        }
        if self.progress_deadline_secs == 0 {
            err("progress_deadline_secs", "must be at least 1".into());
        }
        for (field, secs) in [
            ("health_timeout_secs", self.health_timeout_secs),
            ("standby_secs", self.standby_secs),
            ("progress_deadline_secs", self.progress_deadline_secs),
        ] {
            over(&mut out, field, secs, MAX_DURATION_SECS);
        }
        // Too many steps is one problem, not one per step.
        let steps: &[CanaryStep] = if self.steps.len() > MAX_CANARY_STEPS {
            out.push((
                "steps".into(),
                format!("{} steps, at most {MAX_CANARY_STEPS}", self.steps.len()),
            ));
            &[]
        } else {
            &self.steps
        };
        let mut err = |field: &str, message: String| out.push((field.to_owned(), message));
        let mut last = 0;
        for (i, step) in steps.iter().enumerate() {
            if step.bake_secs > MAX_DURATION_SECS {
                err(
                    &format!("steps[{i}].bake_secs"),
                    format!("{} is over {MAX_DURATION_SECS}", step.bake_secs),
                );
            }
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

/// What a service name must be, for the reasons that reject one.
const NAME_RULE: &str = "must be 1-63 characters of a-z, 0-9 and -, starting with a letter";

/// Impossible values of part of a spec, as `(field, message)` with the
/// field's path below the service.
type Problems = Vec<(String, String)>;

/// `value` over its bound `max` is a problem of `field`.
fn over<T: PartialOrd + fmt::Display>(out: &mut Problems, field: &str, value: T, max: T) {
    if value > max {
        out.push((field.to_owned(), format!("{value} is over {max}")));
    }
}

/// A list of strings over `max_entries` entries or `max_bytes` bytes in
/// all is a problem of `field`.
fn list_over(
    out: &mut Problems,
    field: &str,
    list: &[String],
    max_entries: usize,
    max_bytes: usize,
) {
    let bytes: usize = list.iter().map(String::len).sum();
    if list.len() > max_entries {
        out.push((
            field.to_owned(),
            format!("{} entries, at most {max_entries}", list.len()),
        ));
    } else if bytes > max_bytes {
        out.push((
            field.to_owned(),
            format!("{bytes} bytes, at most {max_bytes}"),
        ));
    }
}

impl ServiceSpec {
    /// Every impossible value in this spec, each out-of-bounds value
    /// included (see [`crate::limits`]); empty when the spec is valid.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut out: Problems = Vec::new();
        if !self.name_fits_environment() {
            out.push((
                String::new(),
                format!("service name `{}` {NAME_RULE}", shown(&self.name)),
            ));
        }
        if !(1..=MAX_REPLICAS).contains(&self.replicas) {
            out.push((
                "replicas".into(),
                format!("must be 1-{MAX_REPLICAS}, not {}", self.replicas),
            ));
        }
        self.run.problems(&mut out);
        self.health.problems(&self.deploy.steps, &mut out);
        for (field, message) in self.deploy.problems(self.replicas) {
            out.push((format!("deploy.{field}"), message));
        }
        self.route.problems(&mut out);
        self.audit.problems(&mut out);
        labels_problems(&self.labels, &mut out);
        let base = format!("services.{}", shown(&self.name));
        out.into_iter()
            .map(|(field, message)| FieldError {
                path: format!("{base}.{field}"),
                message,
            })
            .collect()
    }
}

/// True when `text` can be a label key or value: 1 to
/// [`MAX_LABEL_BYTES`] characters of `a-z`, `A-Z`, `0-9`, `-`, `_` and
/// `.`, starting with a letter or a digit.
impl ServiceSpec {
    /// The name is valid: a plain name, or (one environment's definition of
    /// a service, see [`crate::environment::expand`]) a name, `@` and the
    /// environment of its route.
    fn name_fits_environment(&self) -> bool {
        match self.name.split_once('@') {
            None => is_valid_name(&self.name),
            Some((service, env)) => {
                is_valid_name(service) && is_valid_name(env) && env == self.route.environment()
            }
        }
    }
}

pub fn is_valid_label(text: &str) -> bool {
    let mut chars = text.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && text.len() <= MAX_LABEL_BYTES
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// What a label key or value must be, for the reasons that reject one.
pub const LABEL_RULE: &str =
    "must be 1-63 characters of a-z, A-Z, 0-9, -, _ and ., starting with a letter or a digit";

fn labels_problems(labels: &BTreeMap<String, String>, out: &mut Problems) {
    if labels.len() > MAX_LABELS {
        out.push((
            "labels".into(),
            format!("{} labels, at most {MAX_LABELS}", labels.len()),
        ));
        return;
    }
    for (key, value) in labels {
        if !is_valid_label(key) {
            out.push((
                "labels".into(),
                format!("key `{}` {LABEL_RULE}", shown(key)),
            ));
        } else if !is_valid_label(value) {
            out.push((
                format!("labels.{key}"),
                format!("`{}` {LABEL_RULE}", shown(value)),
            ));
        }
    }
}

impl RunSpec {
    fn problems(&self, out: &mut Problems) {
        if self.command.is_empty() || self.command[0].trim().is_empty() {
            out.push(("run.command".into(), "must name a program to run".into()));
        }
        list_over(
            out,
            "run.command",
            &self.command,
            MAX_ARGV_ENTRIES,
            MAX_ARGV_BYTES,
        );
        list_over(
            out,
            "run.args",
            &self.args,
            MAX_ARGV_ENTRIES,
            MAX_ARGV_BYTES,
        );
        let bytes: usize = self.env.iter().map(|(k, v)| k.len() + v.len()).sum();
        if self.env.len() > MAX_ENV_ENTRIES {
            out.push((
                "run.env".into(),
                format!("{} variables, at most {MAX_ENV_ENTRIES}", self.env.len()),
            ));
        } else if bytes > MAX_ENV_BYTES {
            out.push((
                "run.env".into(),
                format!("{bytes} bytes, at most {MAX_ENV_BYTES}"),
            ));
        }
        let placeholders: usize = (self.command.iter())
            .chain(&self.args)
            .chain(self.env.values())
            .map(|s| s.matches("{image}").count())
            .sum();
        if placeholders > MAX_IMAGE_PLACEHOLDERS {
            out.push((
                "run".into(),
                format!(
                    "`{{image}}` appears {placeholders} times, at most {MAX_IMAGE_PLACEHOLDERS}"
                ),
            ));
        }
    }
}

impl HealthSpec {
    /// Problems of the health block, and of the canary `steps` that must
    /// bake long enough for it to judge them.
    fn problems(&self, steps: &[CanaryStep], out: &mut Problems) {
        let mut err = |field: &str, message: String| out.push((field.to_owned(), message));
        if let Some(problem) = too_long(&self.path, MAX_HEALTH_PATH_BYTES) {
            err("health.path", problem);
        } else if !self.path.starts_with('/') {
            err("health.path", format!("`{}` must start with /", self.path));
        }
        if self.interval_ms < 10 {
            err("health.interval_ms", "must be at least 10".into());
        }
        if self.healthy_after == 0 {
            err("health.healthy_after", "must be at least 1".into());
        }
        if self.unhealthy_after == 0 {
            err("health.unhealthy_after", "must be at least 1".into());
        }
        over(out, "health.interval_ms", self.interval_ms, MAX_DURATION_MS);
        over(
            out,
            "health.healthy_after",
            self.healthy_after,
            MAX_CONSECUTIVE_PROBES,
        );
        over(
            out,
            "health.unhealthy_after",
            self.unhealthy_after,
            MAX_CONSECUTIVE_PROBES,
        );
        self.thresholds.problems(out);
        over(out, "health.bake_secs", self.bake_secs, MAX_DURATION_SECS);
        let t = &self.thresholds;
        if !t.enabled {
            return;
        }
        if self.bake_secs > 0 && self.bake_secs < t.window_secs {
            out.push((
                "health.bake_secs".into(),
                format!(
                    "{} is shorter than one window (thresholds.window_secs {}): nothing could be judged",
                    self.bake_secs, t.window_secs
                ),
            ));
        }
        // Too many steps is one problem of `deploy.steps`, not one per step.
        let steps = if steps.len() > MAX_CANARY_STEPS {
            &[]
        } else {
            steps
        };
        for (i, step) in steps.iter().enumerate() {
            if step.bake_secs < t.window_secs {
                out.push((
                    format!("deploy.steps[{i}].bake_secs"),
                    format!(
                        "{} is shorter than one window (health.thresholds.window_secs {}): the step could never be judged",
                        step.bake_secs, t.window_secs
                    ),
                ));
            }
        }
    }
}

impl Thresholds {
    /// Problems of the thresholds: the bounds always, the values that could
    /// judge nothing only when they are enabled.
    fn problems(&self, out: &mut Problems) {
        let on = self.enabled;
        let field = |name: &str| format!("health.thresholds.{name}");
        if self.error_rate_percent > MAX_PERCENT || (on && self.error_rate_percent == 0) {
            out.push((
                field("error_rate_percent"),
                format!("{} must be 1 to 100", self.error_rate_percent),
            ));
        }
        if on && self.latency_p99_ms == 0 {
            out.push((field("latency_p99_ms"), "must be at least 1".into()));
        }
        over(
            out,
            &field("latency_p99_ms"),
            self.latency_p99_ms,
            MAX_DURATION_MS,
        );
        if on && self.window_secs == 0 {
            out.push((field("window_secs"), "must be at least 1".into()));
        }
        over(
            out,
            &field("window_secs"),
            self.window_secs,
            MAX_DURATION_SECS,
        );
        if on && self.min_requests == 0 {
            out.push((field("min_requests"), "must be at least 1".into()));
        }
        over(
            out,
            &field("min_requests"),
            self.min_requests,
            MAX_MIN_REQUESTS,
        );
        if on && self.compare_to_baseline && self.max_degradation_percent == 0 {
            out.push((
                field("max_degradation_percent"),
                "must be at least 1 when compare_to_baseline is on".into(),
            ));
        }
        over(
            out,
            &field("max_degradation_percent"),
            self.max_degradation_percent,
            MAX_DEGRADATION_PERCENT,
        );
        over(
            out,
            &field("idle_probe_rps"),
            self.idle_probe_rps,
            MAX_IDLE_PROBE_RPS,
        );
    }
}

impl RouteSpec {
    fn problems(&self, out: &mut Problems) {
        if !self.environment.is_empty() && !is_valid_name(&self.environment) {
            out.push((
                "route.environment".into(),
                format!("`{}` {NAME_RULE}", shown(&self.environment)),
            ));
        }
        if !self.host.is_empty() && !is_valid_name(&self.host) {
            out.push((
                "route.host".into(),
                format!("`{}` {NAME_RULE}", shown(&self.host)),
            ));
        }
        let (Some(Sticky::Cookie(name)) | Some(Sticky::Header(name))) = &self.sticky else {
            return;
        };
        if let Some(problem) = too_long(name, MAX_STICKY_KEY_BYTES) {
            out.push(("route.sticky".into(), problem));
        } else if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b';' && b != b'=' && b != b':')
        {
            out.push((
                "route.sticky".into(),
                format!("`{name}` is not a usable cookie or header name"),
            ));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn spec() -> ServiceSpec {
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
            audit: AuditSpec::default(),
            labels: BTreeMap::new(),
            environments: BTreeMap::new(),
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
    fn labels_are_bounded_and_named_when_wrong() {
        // Given a service with good labels
        let mut s = spec();
        s.labels = BTreeMap::from([
            ("kind".into(), "edge".into()),
            ("tier".into(), "v1.2_a".into()),
        ]);
        assert!(s.validate().is_empty(), "{:?}", s.validate());
        // When a key and a value break the rule
        s.labels.insert("Bad key".into(), "x".into());
        s.labels.insert("zone".into(), "-west".into());
        let paths: Vec<_> = s.validate().into_iter().map(|e| e.path).collect();
        // Then each is named
        assert_eq!(paths, ["services.web.labels", "services.web.labels.zone"]);
        // And too many labels is one problem
        s.labels = (0..=crate::limits::MAX_LABELS)
            .map(|i| (format!("k{i}"), "v".to_owned()))
            .collect();
        let errors = s.validate();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].message, "17 labels, at most 16");
        assert!(!is_valid_label(&"a".repeat(64)));
        assert!(is_valid_label(&"a".repeat(63)));
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
    fn replicas_of_4294967295_are_rejected_naming_replicas() {
        // Given a spec declaring u32::MAX replicas
        let mut s = spec();
        s.replicas = u32::MAX;
        s.deploy.max_unavailable = 1;
        // When it is validated
        let errors = s.validate();
        // Then the one error names replicas and its bound
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, "services.web.replicas");
        assert!(
            errors[0].message.starts_with("must be 1-1000"),
            "{}",
            errors[0]
        );
        s.replicas = MAX_REPLICAS;
        assert!(s.validate().is_empty(), "the bound itself is allowed");
    }

    #[test]
    fn every_value_over_its_bound_is_named() {
        // Given a spec with every bounded field one past its bound
        let mut s = spec();
        let long = |n: usize| "a".repeat(n + 1);
        s.run.command = vec![long(MAX_ARGV_BYTES)];
        s.run.args = vec![String::new(); MAX_ARGV_ENTRIES + 1];
        s.run.env = (0..=MAX_ENV_ENTRIES)
            .map(|i| (format!("V{i}"), String::new()))
            .collect();
        s.health.path = format!("/{}", long(MAX_HEALTH_PATH_BYTES));
        s.health.interval_ms = MAX_DURATION_MS + 1;
        s.health.healthy_after = MAX_CONSECUTIVE_PROBES + 1;
        s.health.unhealthy_after = MAX_CONSECUTIVE_PROBES + 1;
        let t = &mut s.health.thresholds;
        t.error_rate_percent = MAX_PERCENT + 1;
        t.latency_p99_ms = MAX_DURATION_MS + 1;
        t.window_secs = MAX_DURATION_SECS + 1;
        t.min_requests = MAX_MIN_REQUESTS + 1;
        t.max_degradation_percent = MAX_DEGRADATION_PERCENT + 1;
        t.idle_probe_rps = MAX_IDLE_PROBE_RPS + 1;
        s.health.bake_secs = MAX_DURATION_SECS + 2;
        s.deploy.health_timeout_secs = MAX_DURATION_SECS + 1;
        s.deploy.standby_secs = MAX_DURATION_SECS + 1;
        s.deploy.progress_deadline_secs = MAX_DURATION_SECS + 1;
        s.route.sticky = Some(Sticky::Header(long(MAX_STICKY_KEY_BYTES)));
        // When it is validated
        let paths: Vec<_> = s.validate().into_iter().map(|e| e.path).collect();
        // Then each of them is named, once
        assert_eq!(
            paths,
            [
                "services.web.run.command",
                "services.web.run.args",
                "services.web.run.env",
                "services.web.health.path",
                "services.web.health.interval_ms",
                "services.web.health.healthy_after",
                "services.web.health.unhealthy_after",
                "services.web.health.thresholds.error_rate_percent",
                "services.web.health.thresholds.latency_p99_ms",
                "services.web.health.thresholds.window_secs",
                "services.web.health.thresholds.min_requests",
                "services.web.health.thresholds.max_degradation_percent",
                "services.web.health.thresholds.idle_probe_rps",
                "services.web.health.bake_secs",
                "services.web.deploy.health_timeout_secs",
                "services.web.deploy.standby_secs",
                "services.web.deploy.progress_deadline_secs",
                "services.web.route.sticky",
            ]
        );
    }

    #[test]
    fn values_at_their_bounds_are_valid() {
        // Given a spec with every bounded field at its bound
        let mut s = spec();
        s.replicas = MAX_REPLICAS;
        s.run.command = vec!["a".repeat(MAX_ARGV_BYTES)];
        s.run.args = vec![String::new(); MAX_ARGV_ENTRIES];
        s.run.env = (0..MAX_ENV_ENTRIES)
            .map(|i| (format!("V{i}"), String::new()))
            .collect();
        s.health.path = "/".repeat(MAX_HEALTH_PATH_BYTES);
        s.health.interval_ms = MAX_DURATION_MS;
        s.health.healthy_after = MAX_CONSECUTIVE_PROBES;
        s.health.unhealthy_after = MAX_CONSECUTIVE_PROBES;
        let t = &mut s.health.thresholds;
        t.error_rate_percent = MAX_PERCENT;
        t.latency_p99_ms = MAX_DURATION_MS;
        t.window_secs = MAX_DURATION_SECS;
        t.min_requests = MAX_MIN_REQUESTS;
        t.max_degradation_percent = MAX_DEGRADATION_PERCENT;
        t.idle_probe_rps = MAX_IDLE_PROBE_RPS;
        s.health.bake_secs = MAX_DURATION_SECS;
        s.deploy.health_timeout_secs = MAX_DURATION_SECS;
        s.deploy.standby_secs = MAX_DURATION_SECS;
        s.deploy.progress_deadline_secs = MAX_DURATION_SECS;
        s.deploy.steps = (1..=MAX_CANARY_STEPS as u32)
            .map(|percent| CanaryStep {
                percent,
                bake_secs: MAX_DURATION_SECS,
            })
            .collect();
        s.route.sticky = Some(Sticky::Header("h".repeat(MAX_STICKY_KEY_BYTES)));
        // When it is validated, then nothing is wrong
        assert_eq!(s.validate(), []);
    }

    #[test]
    fn lists_over_their_bound_are_one_error_each() {
        // Given more canary steps than the bound, each of them wrong too
        let mut s = spec();
        s.deploy.steps = vec![
            CanaryStep {
                percent: 0,
                bake_secs: 0,
            };
            MAX_CANARY_STEPS + 1
        ];
        // And a run that substitutes the image more often than allowed
        s.run.env = (0..=MAX_IMAGE_PLACEHOLDERS)
            .map(|i| (format!("V{i}"), "{image}".to_owned()))
            .collect();
        // When it is validated
        let errors = s.validate();
        // Then each list is one error
        let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["services.web.run", "services.web.deploy.steps"]);
        assert_eq!(errors[1].message, "21 steps, at most 20");
    }

    #[test]
    fn a_huge_name_is_not_echoed_into_every_error() {
        // Given a spec whose name is 300 KB, and another error
        let mut s = spec();
        s.name = "w".repeat(300_000);
        s.replicas = 0;
        s.deploy.max_unavailable = 0;
        // When it is validated
        let errors = s.validate();
        // Then the name and the replicas are named, in a few hundred bytes
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[1].path.ends_with(".replicas"), "{}", errors[1].path);
        let size: usize = errors.iter().map(|e| e.to_string().len()).sum();
        assert!(size < 1000, "{size} bytes of errors");
    }

    #[test]
    fn names_must_be_subject_and_dns_safe() {
        assert!(is_valid_name("web-2"));
        for bad in ["", "Web", "2web", "a.b", "a*", "a b"] {
            assert!(!is_valid_name(bad), "{bad:?} accepted");
        }
    }
}
